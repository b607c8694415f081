//! The dead letter store: a head segment being written, sealed segments readers may see,
//! and the size and age retention rules.

use super::entry::DlqEntry;
use super::{Clock, DlqError};
use crate::queue::disk::frame;
use crate::queue::disk::segment::{self, HEADER_LEN};
use crate::queue::disk::{OsIo, SegmentIo};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The head segment's file name; it becomes visible to readers only when sealed.
pub const HEAD_NAME: &str = "head.dlq.tmp";

/// What to do when an entry does not fit in `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoragePolicy {
    /// Refuse the new entry (and count it): older entries are worth more. The default.
    #[default]
    DropNewer,
    /// Delete the oldest segments until the entry fits (FIFO), counting what they held.
    DropOlder,
}

impl StoragePolicy {
    /// The name as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            StoragePolicy::DropNewer => "drop_newer",
            StoragePolicy::DropOlder => "drop_older",
        }
    }
}

/// How the store behaves.
#[derive(Debug, Clone)]
pub struct DlqSettings {
    /// The DLQ directory.
    pub dir: PathBuf,
    /// Most bytes of segments (sealed and head).
    pub max_bytes: u64,
    /// What to do when full.
    pub storage_policy: StoragePolicy,
    /// Delete segments whose every entry is older than this.
    pub retain_age: Option<Duration>,
    /// Seal the head at least this often, so readers see entries.
    pub flush_interval: Duration,
}

impl DlqSettings {
    /// Head segments are sealed at this size: small enough that size retention deletes
    /// in steps of at most an eighth of the budget.
    pub(crate) fn segment_size(&self) -> u64 {
        (self.max_bytes / 8).clamp(HEADER_LEN as u64 * 2, 16 << 20)
    }
}

/// A sealed segment as named on disk: `<first-seq>-<count>-<newest-ms>.dlq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSegment {
    /// Sequence number of its first entry.
    pub first_seq: u64,
    /// Entries it holds.
    pub count: u64,
    /// When its newest entry was dead-lettered (ms since the epoch).
    pub newest_ms: u64,
    /// Its size.
    pub bytes: u64,
    /// Its path.
    pub path: PathBuf,
}

/// Parses a sealed segment's file name.
pub fn parse_sealed_name(name: &str) -> Option<(u64, u64, u64)> {
    let stem = name.strip_suffix(".dlq")?;
    let mut parts = stem.split('-');
    let first = parts.next()?.parse().ok()?;
    let count = parts.next()?.parse().ok()?;
    let newest = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((first, count, newest))
}

/// Every sealed segment in `dir`, oldest first.
pub fn list_sealed(dir: &Path) -> Result<Vec<SealedSegment>, DlqError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(DlqError::io(dir, err)),
    };
    let mut sealed: Vec<SealedSegment> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let (first_seq, count, newest_ms) = parse_sealed_name(&name)?;
            let bytes = entry.metadata().ok()?.len();
            Some(SealedSegment {
                first_seq,
                count,
                newest_ms,
                bytes,
                path: entry.path(),
            })
        })
        .collect();
    sealed.sort_by_key(|s| s.first_seq);
    Ok(sealed)
}

/// The DLQ's figures, named as Logstash names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DlqMetrics {
    /// Bytes of all segments.
    pub queue_size_in_bytes: u64,
    /// The configured bound.
    pub max_queue_size_in_bytes: u64,
    /// `drop_newer` or `drop_older`.
    pub storage_policy: &'static str,
    /// Entries held (sealed and head).
    pub entries: u64,
    /// Entries refused (drop_newer) or deleted to make room (drop_older).
    pub dropped_events: u64,
    /// Entries deleted by age retention.
    pub expired_events: u64,
    /// Heads a crash left torn, found at open: cut back to their last whole entry, or
    /// set aside (`head.dlq.corrupt`) when their header is unreadable. No torn entry is
    /// ever read.
    pub damaged_heads: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

struct Head {
    file: File,
    first_seq: u64,
    count: u64,
    bytes: u64,
    newest_ms: u64,
    opened_ms: u64,
}

/// The head as it was before a write's first unsynced entry.
#[derive(Default)]
struct HeadMark {
    /// Its size; `None` when there was no head (the write opens one).
    bytes: Option<u64>,
    newest_ms: u64,
}

impl HeadMark {
    fn of(state: &StoreState) -> Self {
        HeadMark {
            bytes: state.head.as_ref().map(|h| h.bytes),
            newest_ms: state.head.as_ref().map(|h| h.newest_ms).unwrap_or(0),
        }
    }
}

struct StoreState {
    head: Option<Head>,
    next_seq: u64,
    sealed: BTreeMap<u64, SealedSegment>,
    dropped_events: u64,
    expired_events: u64,
    damaged_heads: u64,
    last_error: Option<String>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOutcome {
    /// Entries stored.
    pub written: usize,
    /// Entries refused by `drop_newer` (or too big for the DLQ at all).
    pub refused: usize,
    /// Entries not stored because the DLQ's files failed (a write or `fdatasync`): none
    /// of them is kept or counted, so their records must not be acknowledged; try again.
    pub failed: usize,
}

/// The dead letter store. Blocking file I/O: call it from blocking contexts
/// ([`super::DeadLetters`] does that for async callers).
pub struct DeadLetterQueue {
    settings: DlqSettings,
    clock: Arc<dyn Clock>,
    /// Shared mutable state: writers and the retention timer; held for bookkeeping and
    /// the writes and syncs themselves, never across an `.await`.
    state: Mutex<StoreState>,
    /// The figures as of the last change, so a snapshot never waits for a write's
    /// `fdatasync` (the supervisor takes one for every check-in).
    figures: Mutex<DlqMetrics>,
    /// Every write, sync, rename, removal and directory sync of the DLQ's files: the OS,
    /// or in tests a fault injector or a power-loss recorder.
    io: Arc<dyn SegmentIo>,
}

impl DeadLetterQueue {
    /// Opens the DLQ in `settings.dir`, sealing a head left by a crash (its torn end cut).
    pub fn open(settings: DlqSettings, clock: Arc<dyn Clock>) -> Result<Self, DlqError> {
        Self::open_with_io(settings, clock, Arc::new(OsIo))
    }

    /// [`DeadLetterQueue::open`] with every file write, sync, rename and removal going
    /// through `io`: how tests make a sync slow or fail, or cut the power.
    pub fn open_with_io(
        settings: DlqSettings,
        clock: Arc<dyn Clock>,
        io: Arc<dyn SegmentIo>,
    ) -> Result<Self, DlqError> {
        let dir = settings.dir.clone();
        crate::private_fs::create_private_dir(&dir).map_err(|err| DlqError::io(&dir, err))?;
        let sealed: BTreeMap<u64, SealedSegment> = list_sealed(&dir)?
            .into_iter()
            .map(|s| (s.first_seq, s))
            .collect();
        let mut next_seq = sealed
            .values()
            .last()
            .map(|s| s.first_seq + s.count)
            .unwrap_or(1);
        let store = DeadLetterQueue {
            settings,
            clock,
            state: Mutex::new(StoreState {
                head: None,
                next_seq,
                sealed,
                dropped_events: 0,
                expired_events: 0,
                damaged_heads: 0,
                last_error: None,
            }),
            figures: Mutex::new(DlqMetrics::default()),
            io,
        };
        let head_path = dir.join(HEAD_NAME);
        if head_path.exists() {
            let recovered = store.recover_head(&head_path)?;
            next_seq = next_seq.max(recovered);
            store.lock().next_seq = next_seq;
        }
        store.publish(&store.lock());
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, StoreState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the DLQ directory's entries (new head, seals, removals) durable.
    fn sync_dir(&self) -> Result<(), DlqError> {
        segment::sync_dir_with(self.io.as_ref(), &self.settings.dir).map_err(|err| DlqError::Io {
            path: self.settings.dir.clone(),
            message: err.to_string(),
        })
    }

    /// Removes the head file (nothing of it is kept): durably, so a power loss does not
    /// bring back what it held.
    fn remove_head(&self, path: &Path) {
        let removed = self
            .io
            .remove_file(path)
            .map_err(|err| DlqError::io(path, err));
        if let Err(err) = removed.and_then(|()| self.sync_dir()) {
            tracing::warn!(error = %err, "cannot remove an empty DLQ head");
        }
    }

    /// Seals what a crashed writer left in the head; returns the next sequence number.
    fn recover_head(&self, path: &Path) -> Result<u64, DlqError> {
        let len = std::fs::metadata(path)
            .map_err(|err| DlqError::io(path, err))?
            .len();
        if len < HEADER_LEN as u64 {
            // Shorter than its header (the power went before the first sync): no entry of
            // it was ever answered, and none can be read.
            if len > 0 {
                self.lock().damaged_heads += 1;
                tracing::warn!(
                    bytes = len,
                    "DLQ head torn by a crash before its header was written: removed"
                );
            }
            self.remove_head(path);
            return Ok(1);
        }
        let scan = match segment::scan(path) {
            Ok(scan) => scan,
            Err(crate::queue::DiskError::Corrupt { reason, .. }) => {
                let aside = path.with_extension("corrupt");
                tracing::error!(path = %aside.display(), reason, "DLQ head from a crash is unreadable: set aside, not deleted");
                self.io
                    .rename(path, &aside)
                    .map_err(|err| DlqError::io(path, err))?;
                self.sync_dir()?;
                self.lock().damaged_heads += 1;
                return Ok(1);
            }
            Err(err) => {
                return Err(DlqError::Io {
                    path: path.to_path_buf(),
                    message: err.to_string(),
                });
            }
        };
        let count = scan.meta.last_seq + 1 - scan.meta.first_seq;
        if let Some(damage) = scan.damage {
            self.lock().damaged_heads += 1;
            tracing::warn!(
                damage,
                entries = count,
                "DLQ head torn by a crash: kept every whole entry"
            );
        }
        if count == 0 {
            self.remove_head(path);
            return Ok(scan.meta.first_seq);
        }
        if scan.damage.is_some() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|err| DlqError::io(path, err))?;
            self.io
                .set_len(&file, scan.valid_len)
                .map_err(|err| DlqError::io(path, err))?;
            self.io
                .sync_all(&file)
                .map_err(|err| DlqError::io(path, err))?;
        }
        let entries = super::reader::read_entries(path)?;
        let newest_ms = entries
            .iter()
            .map(|(_, e)| e.dead_lettered_at_ms)
            .max()
            .unwrap_or(0);
        let mut state = self.lock();
        self.seal_file(
            &mut state,
            path,
            scan.meta.first_seq,
            count,
            newest_ms,
            scan.valid_len,
        )?;
        Ok(scan.meta.first_seq + count)
    }

    fn seal_file(
        &self,
        state: &mut StoreState,
        from: &Path,
        first_seq: u64,
        count: u64,
        newest_ms: u64,
        bytes: u64,
    ) -> Result<(), DlqError> {
        let name = format!("{first_seq:020}-{count}-{newest_ms}.dlq");
        let to = self.settings.dir.join(name);
        self.io
            .rename(from, &to)
            .map_err(|err| DlqError::io(from, err))?;
        self.sync_dir()?;
        state.sealed.insert(
            first_seq,
            SealedSegment {
                first_seq,
                count,
                newest_ms,
                bytes,
                path: to,
            },
        );
        Ok(())
    }

    fn seal_head(&self, state: &mut StoreState) -> Result<(), DlqError> {
        let Some(head) = state.head.as_ref() else {
            return Ok(());
        };
        let path = self.settings.dir.join(HEAD_NAME);
        // On any failure the head stays as it is, to be sealed on a later try.
        self.io
            .sync_all(&head.file)
            .map_err(|err| DlqError::io(&path, err))?;
        let (first_seq, count, newest_ms, bytes) =
            (head.first_seq, head.count, head.newest_ms, head.bytes);
        self.seal_file(state, &path, first_seq, count, newest_ms, bytes)?;
        state.head = None;
        Ok(())
    }

    /// Sees segments deleted by someone else (`dlq replay`, `dlq purge`).
    fn refresh(&self, state: &mut StoreState) {
        state.sealed.retain(|_, s| s.path.exists());
    }

    fn total_bytes(state: &StoreState) -> u64 {
        state.sealed.values().map(|s| s.bytes).sum::<u64>()
            + state.head.as_ref().map(|h| h.bytes).unwrap_or(0)
    }

    /// Deletes sealed segments whose newest entry is older than `retain.age`.
    fn expire(&self, state: &mut StoreState) {
        let Some(age) = self.settings.retain_age else {
            return;
        };
        let cutoff = self.clock.now_ms().saturating_sub(age.as_millis() as u64);
        let expired: Vec<u64> = state
            .sealed
            .values()
            .filter(|s| s.newest_ms < cutoff)
            .map(|s| s.first_seq)
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut events = 0;
        for first in &expired {
            if let Some(segment) = state.sealed.remove(first) {
                match self.io.remove_file(&segment.path) {
                    Ok(()) => events += segment.count,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        state.last_error = Some(format!(
                            "cannot delete expired {}: {err}",
                            segment.path.display()
                        ));
                        state.sealed.insert(*first, segment);
                    }
                }
            }
        }
        state.expired_events += events;
        tracing::info!(segments = expired.len(), events, age = ?age, "DLQ age retention deleted expired entries");
    }

    /// Stores `entries`; applies the storage policy when they do not fit. Never blocks on
    /// anything but its own small writes.
    pub fn write(&self, entries: &[DlqEntry]) -> WriteOutcome {
        self.write_entries(entries).0
    }

    /// [`DeadLetterQueue::write`], also saying which entries (indices into `entries`)
    /// failed: those are neither kept nor counted, and can be written again.
    pub fn write_entries(&self, entries: &[DlqEntry]) -> (WriteOutcome, Vec<usize>) {
        let mut state = self.lock();
        self.refresh(&mut state);
        self.expire(&mut state);
        let mut outcome = WriteOutcome::default();
        let mut failed = Vec::new();
        let mut deleted_segments = 0;
        let mut deleted_events = 0;
        // Entries of this call in the head, not synced yet, and the head as it was before
        // the first of them: a failed sync cuts the head back there.
        let mut unsynced: Vec<usize> = Vec::new();
        let mut mark = HeadMark::default();
        for (index, entry) in entries.iter().enumerate() {
            let payload = entry.encode();
            let len = frame::encoded_len(payload.len()) as u64;
            let needed = len
                + if state.head.is_none() {
                    HEADER_LEN as u64
                } else {
                    0
                };
            if needed > self.settings.max_bytes {
                outcome.refused += 1;
                state.last_error = Some(format!(
                    "an entry of {len} bytes is larger than dlq.max_bytes"
                ));
                continue;
            }
            while Self::total_bytes(&state) + needed > self.settings.max_bytes {
                let oldest = state.sealed.keys().next().copied();
                match (self.settings.storage_policy, oldest) {
                    (StoragePolicy::DropOlder, Some(first)) => {
                        if let Some(segment) = state.sealed.remove(&first) {
                            match self.io.remove_file(&segment.path) {
                                Ok(()) => {
                                    deleted_segments += 1;
                                    deleted_events += segment.count;
                                }
                                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                                Err(err) => {
                                    // Still on disk: keep counting it, and stop making room.
                                    state.last_error = Some(format!(
                                        "cannot delete {}: {err}",
                                        segment.path.display()
                                    ));
                                    state.sealed.insert(first, segment);
                                    break;
                                }
                            }
                        }
                    }
                    (StoragePolicy::DropOlder, None)
                        if state.head.as_ref().is_some_and(|h| h.count > 0) =>
                    {
                        // Only the head is left: seal it so it can go too.
                        if let Err(err) = self.seal_head(&mut state) {
                            state.last_error = Some(err.to_string());
                            break;
                        }
                    }
                    _ => break,
                }
            }
            if Self::total_bytes(&state) + needed > self.settings.max_bytes {
                outcome.refused += 1;
                state.last_error =
                    Some("dead letter queue full (storage_policy drop_newer)".into());
                continue;
            }
            if state.head.is_none() {
                // Sealed (and synced) meanwhile: what this write put there is durable.
                unsynced.clear();
            }
            if unsynced.is_empty() {
                mark = HeadMark::of(&state);
            }
            match self.append(&mut state, &payload, entry.dead_lettered_at_ms) {
                Ok(()) => {
                    outcome.written += 1;
                    unsynced.push(index);
                }
                Err(err) => {
                    // Not in the file (cut back): to be tried again, not dropped.
                    failed.push(index);
                    state.last_error = Some(err.to_string());
                }
            }
        }
        if state.head.is_none() {
            unsynced.clear();
        }
        if let Some(head) = state.head.as_ref() {
            if let Err(err) = self.io.sync_data(&head.file) {
                state.last_error = Some(format!("DLQ fdatasync failed: {err}"));
                if !unsynced.is_empty() {
                    // Not durable, so not stored: cut them out, or the retry would store
                    // them twice.
                    self.cut_back(&mut state, &mark, unsynced.len() as u64);
                    outcome.written -= unsynced.len();
                    failed.append(&mut unsynced);
                }
            }
        }
        failed.sort_unstable();
        outcome.failed = failed.len();
        state.dropped_events += deleted_events + outcome.refused as u64;
        // One line per decision, with counts, not one per event.
        if deleted_segments > 0 {
            tracing::warn!(
                policy = "drop_older",
                segments = deleted_segments,
                events = deleted_events,
                "DLQ full: deleted the oldest entries to make room"
            );
        }
        if outcome.refused > 0 {
            tracing::warn!(policy = self.settings.storage_policy.as_str(), refused = outcome.refused, last_error = ?state.last_error, "DLQ full or failing: refused new entries");
        }
        if outcome.failed > 0 {
            tracing::error!(failed = outcome.failed, last_error = ?state.last_error, "DLQ write failed: entries not stored; their events stay queued to be tried again");
        }
        self.publish(&state);
        (outcome, failed)
    }

    /// Removes the last `count` entries from the head, back to `mark`.
    fn cut_back(&self, state: &mut StoreState, mark: &HeadMark, count: u64) {
        let path = self.settings.dir.join(HEAD_NAME);
        let Some(head) = state.head.as_mut() else {
            return;
        };
        let bytes = mark.bytes.unwrap_or(HEADER_LEN as u64);
        if let Err(err) = self.io.set_len(&head.file, bytes) {
            tracing::error!(path = %path.display(), error = %err, "cannot cut back the DLQ head after a failed sync");
        }
        head.bytes = bytes;
        head.count = head.count.saturating_sub(count);
        head.newest_ms = mark.newest_ms;
        state.next_seq -= count;
        if head.count == 0 && mark.bytes.is_none() {
            // Opened by this write: nothing of it remains.
            state.head = None;
            self.remove_head(&path);
        }
    }

    /// Makes the current figures what [`DeadLetterQueue::metrics`] answers.
    fn publish(&self, state: &StoreState) {
        let figures = DlqMetrics {
            queue_size_in_bytes: Self::total_bytes(state),
            max_queue_size_in_bytes: self.settings.max_bytes,
            storage_policy: self.settings.storage_policy.as_str(),
            entries: state.sealed.values().map(|s| s.count).sum::<u64>()
                + state.head.as_ref().map(|h| h.count).unwrap_or(0),
            dropped_events: state.dropped_events,
            expired_events: state.expired_events,
            damaged_heads: state.damaged_heads,
            last_error: state.last_error.clone(),
        };
        *self.figures.lock().unwrap_or_else(|p| p.into_inner()) = figures;
    }

    fn append(&self, state: &mut StoreState, payload: &[u8], at_ms: u64) -> Result<(), DlqError> {
        let path = self.settings.dir.join(HEAD_NAME);
        if state.head.is_none() {
            let first_seq = state.next_seq;
            // Owner-only, emptied if a failed write left one.
            let file = self
                .io
                .create(&path)
                .map_err(|err| DlqError::io(&path, err))?;
            self.io
                .write_all_at(&file, &segment::header(first_seq), 0)
                .map_err(|err| DlqError::io(&path, err))?;
            // The head's directory entry must survive a power loss like its data.
            self.sync_dir()?;
            state.head = Some(Head {
                file,
                first_seq,
                count: 0,
                bytes: HEADER_LEN as u64,
                newest_ms: 0,
                opened_ms: self.clock.now_ms(),
            });
        }
        let seq = state.next_seq;
        let mut buf = Vec::with_capacity(payload.len() + frame::FRAME_HEADER + frame::BODY_HEADER);
        frame::encode(&mut buf, seq, 0, payload);
        let head = state.head.as_mut().ok_or_else(|| DlqError::Io {
            path: path.clone(),
            message: "no head".into(),
        })?;
        // Positional, and cut back on failure: a torn entry must not sit before later ones.
        if let Err(err) = self.io.write_all_at(&head.file, &buf, head.bytes) {
            let _ = self.io.set_len(&head.file, head.bytes);
            return Err(DlqError::io(&path, err));
        }
        head.count += 1;
        head.bytes += buf.len() as u64;
        head.newest_ms = head.newest_ms.max(at_ms);
        state.next_seq += 1;
        if head.bytes >= self.settings.segment_size() {
            // The entry is written; a head that cannot be sealed now is synced at the end
            // of the write and sealed on a later try.
            if let Err(err) = self.seal_head(state) {
                state.last_error = Some(err.to_string());
            }
        }
        Ok(())
    }

    /// The timer's work: seal a head older than `flush_interval`, apply age retention.
    pub fn tick(&self) {
        let mut state = self.lock();
        self.refresh(&mut state);
        let due = state.head.as_ref().is_some_and(|h| {
            self.clock.now_ms().saturating_sub(h.opened_ms)
                >= self.settings.flush_interval.as_millis() as u64
        });
        if due {
            if let Err(err) = self.seal_head(&mut state) {
                state.last_error = Some(err.to_string());
            }
        }
        self.expire(&mut state);
        self.publish(&state);
    }

    /// Seals the head (shutdown).
    pub fn flush(&self) {
        let mut state = self.lock();
        if let Err(err) = self.seal_head(&mut state) {
            state.last_error = Some(err.to_string());
        }
        self.publish(&state);
    }

    /// Current figures, as of the last change: never waits for a write in progress.
    pub fn metrics(&self) -> DlqMetrics {
        self.figures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
