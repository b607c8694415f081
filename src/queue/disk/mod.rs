//! The durable disk queue: segmented, append-only, checksummed, with group commit.
//!
//! # Life of a record
//! write → sync → read → ack → checkpoint → delete:
//! 1. `append` hands events to the one writer thread. The writer gathers every append
//!    waiting (group commit), assigns sequence numbers under the state lock (atomically
//!    with sealing, see `crate::queue`), encodes frames (`frame.rs`) into the active
//!    segment (`segment.rs`), writes them with one `write`, and makes them durable with one
//!    `fdatasync` per batch. Only then are the appends answered and `persisted` moved
//!    (`durability: batch`, the default). With `durability: interval` the appends are
//!    answered after the write and `persisted` moves at the next timed `fdatasync`;
//!    readers get only synced records, so the output never sends one a power loss can
//!    still take (its number would then go to a new event, answered 409).
//! 2. Written records also go into a bounded in-memory tail (`read_ahead` bytes). A reader
//!    that keeps up is served from it and never touches the disk; one that falls behind
//!    reads the segment files (`reader.rs`) from where it stopped.
//! 3. Acks may arrive out of order; the contiguous acknowledged prefix is tracked, written
//!    to `checkpoint.json` (`checkpoint.rs`, temp + fsync + rename, once a second, or as
//!    soon as acks move while the queue is full), and only then are segments whose
//!    records are all acknowledged deleted. After a crash, up to a second of acknowledged
//!    records is delivered again (the Elasticsearch output's `_id` makes that a 409).
//!
//! # When the disk fails (full disk, I/O error)
//! A failed write or sync is cut back (the segment stays a clean prefix of whole frames),
//! nothing of that batch is answered as accepted, the appends stop with
//! `AppendStop::Storage` naming the OS error (the Producer API answers it as
//! backpressure), and [`Queue::health`] turns `Failing` with the reason; the output
//! reports that as DEGRADED. Records written before stay readable and are delivered.
//! The next append is the probe: the first write that works turns the health back to
//! `Healthy`. The data I/O goes through [`SegmentIo`] so tests can inject `ENOSPC`.
//!
//! # Invariants
//! - A sequence number is never given to two records under one `queue.id` (the output's
//!   `_id` is `queue.id` + sequence). Recovery continues numbering after every segment
//!   name, quarantined and empty ones too; when it cannot prove that (an unusable
//!   checkpoint and no segment left, an unreadable last segment) it takes a new
//!   `queue.id` and says why at WARN. The checkpoint keeps a copy of `queue.id`, so a
//!   damaged id file is restored instead of giving the backlog new `_id`s.
//! - A drain barrier never points at a number that will have no record: numbers a failed
//!   write takes back after a barrier counted them are burned (acknowledged, skipped by
//!   readers, never reused) and the next segment starts after them.
//! - Record `n` is answered to its producer only after it is in the file (and, by default,
//!   synced). `persisted` never passes what is synced.
//! - A segment is deleted only after a durable checkpoint covers its last record, or,
//!   while the checkpoint cannot be written (a disk the queue filled itself), when it is
//!   fully acknowledged, every older one is gone and a newer segment holding records
//!   stays: recovery then infers the acknowledged prefix from that segment's name, and
//!   never numbers below it (`writer.rs`, `free_without_checkpoint`).
//! - Bytes on disk never exceed `max_size` by more than one frame; a full queue accepts a
//!   prefix of an append and says so (backpressure), it never drops.
//! - Memory is bounded by `read_ahead` plus the batches in flight, whatever the backlog.
//!
//! # What the power-loss harness proves
//! The tests run the queue on `power_loss::PowerLossIo`, which sees every write, sync,
//! create, rename, removal and directory fsync and can rewrite the directory to what a
//! power loss leaves (synced bytes only, or a torn prefix of the unsynced writes; entries
//! not made durable by a directory fsync revert). `crash_model.rs` drives random appends,
//! reads, out-of-order acks, seals, checkpoints, failing writes, damaged files and power
//! losses against a model and checks, after every step and reopen: every answered record
//! (`batch`) or every record `persisted` published (`interval`) is readable or
//! acknowledged; no sequence number names two payloads under one `queue.id`; no payload
//! is delivered under two `_id`s; no barrier exceeds the committed head. A SIGKILL test
//! cannot show these: after SIGKILL the page cache survives.
//!
//! # Recovery (`open`)
//! Take the lock file (`lock`, refused if another process holds it); read the checkpoint;
//! delete segments it covers; trust each sealed segment's `.meta` summary and scan only
//! segments without one (normally just the tail); truncate a torn tail at its last valid
//! frame; start a new active segment after the last record (and after every segment name).
//! A damaged checkpoint is logged and replaced by "nothing acknowledged" (records may be
//! delivered again under their old `_id`s; none is lost). A segment whose frames fail their checksum when read is counted, its readable
//! records are delivered, the unreadable ones are counted as lost, and once acknowledged
//! it is renamed aside (`.corrupt-N`), never deleted. The shipper never crash-loops on
//! its own files.

mod checkpoint;
pub(crate) mod frame;
mod io;
#[cfg(test)]
pub(crate) mod power_loss;
mod reader;
pub(crate) mod segment;
mod writer;

pub use io::{OsIo, SegmentIo};

/// The on-disk decoders, public only so that fuzz targets (`fuzz/`) and the regression
/// test over their findings (`tests/fuzz_regressions.rs`) reach them. Whatever the bytes,
/// they return a status or a typed error, and allocate no more than the bytes given
/// (frames) or the file's length (segments).
pub mod codec {
    pub use super::frame::{decode as decode_frame, encode as encode_frame, Frame, FrameStatus};
    pub use super::segment::{header as segment_header, scan as scan_segment, Scan, SegmentMeta};
}

use super::generations::GenerationTable;
use super::{
    Appended, Barrier, Generation, GenerationId, Queue, QueueError, QueueHealth, QueueStats,
    Record, Seq,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};

/// Errors of the disk queue's files.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An operating-system error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content is damaged.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process has the queue open.
    #[error("the queue at {0} is in use by another process (lock file held)")]
    Locked(PathBuf),
}

impl DiskError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        DiskError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// When appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// One `fdatasync` per write batch; appends are answered after it (the default).
    Batch,
    /// One `fdatasync` per interval; appends are answered after the write.
    Interval(Duration),
}

/// How to open a disk queue.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// The queue directory.
    pub dir: PathBuf,
    /// Most bytes of segment files on disk.
    pub max_size: u64,
    /// A segment is sealed and a new one started past this size.
    pub segment_size: u64,
    /// When appends become durable.
    pub durability: Durability,
    /// Bytes of recently written records kept in memory for readers.
    pub read_ahead: u64,
}

#[derive(Debug, Clone)]
struct SegmentState {
    last_seq: Seq,
    bytes: u64,
    sealed: bool,
    corrupt: bool,
}

struct CachedRecord {
    record: Record,
}

#[derive(Default, Clone, Copy)]
struct Counters {
    write_batches: u64,
    fsyncs: u64,
    quarantined_segments: u64,
    corrupted_events: u64,
}

/// State shared by appenders, the writer thread, readers and ackers. Shared mutable
/// state by design; the lock is held for bookkeeping only, never across I/O or `.await`.
struct State {
    /// Last sequence number handed out by the writer (maybe not yet written).
    assigned: Seq,
    /// Last sequence number in the files, visible to readers.
    head: Seq,
    /// Last sequence number made durable.
    durable: Seq,
    acked: Seq,
    acked_ahead: BTreeMap<Seq, Seq>,
    /// Numbers a failed write took back after a barrier counted them (`roll_back`):
    /// acknowledged, in no file, skipped by readers.
    burned: BTreeMap<Seq, Seq>,
    /// The writer is between assigning numbers and committing (or taking them back).
    in_flight: bool,
    /// A seal or barrier was taken while `in_flight`.
    barrier_in_flight: bool,
    next_read: Seq,
    cache: VecDeque<CachedRecord>,
    cache_bytes: u64,
    segments: BTreeMap<Seq, SegmentState>,
    bytes_on_disk: u64,
    generations: GenerationTable,
    /// Generations of the records after `acked`, run-length encoded, in order.
    runs: VecDeque<(GenerationId, u64)>,
    closed: bool,
    counters: Counters,
}

impl State {
    /// Moves the acknowledged prefix forward over every contiguous acked range.
    fn advance_acked(&mut self) -> bool {
        let before = self.acked;
        while let Some((&start, &end)) = self.acked_ahead.first_key_value() {
            if start > self.acked + 1 {
                break;
            }
            self.acked_ahead.pop_first();
            if end > self.acked {
                self.release_runs(end - self.acked);
                self.acked = end;
            }
        }
        while self
            .cache
            .front()
            .is_some_and(|c| c.record.seq <= self.acked)
        {
            if let Some(cached) = self.cache.pop_front() {
                self.cache_bytes -= cached.record.payload.len() as u64;
            }
        }
        self.next_read = self.next_read.max(self.acked + 1);
        self.acked != before
    }

    /// Moves the read position past numbers burned by a failed write.
    ///
    /// Over every range it reaches, not just the first: failed writes in a row burn
    /// adjacent ranges, and a position left on a burned number finds no record in the
    /// segment files, so the disk reader would wait out its no-progress back-off once per
    /// range. A range is kept until the acknowledged prefix passes it, not until the reader
    /// does: a rewind goes back before it, and without it the reader would stop there.
    fn skip_burned(&mut self) {
        while let Some((_, &end)) = self.burned.first_key_value() {
            if end > self.acked {
                break;
            }
            self.burned.pop_first();
        }
        // Ranges never overlap (a number is burned once): the one holding `next_read`
        // is the last that starts at or before it.
        while let Some((_, &end)) = self.burned.range(..=self.next_read).next_back() {
            if end < self.next_read {
                break;
            }
            self.next_read = end + 1;
        }
    }

    fn release_runs(&mut self, mut count: u64) {
        while count > 0 {
            let Some((generation, run)) = self.runs.front_mut() else {
                break;
            };
            let take = count.min(*run);
            *run -= take;
            count -= take;
            if let Some(g) = self.generations.get_mut(*generation) {
                g.unacked = g.unacked.saturating_sub(take);
            }
            if *run == 0 {
                self.runs.pop_front();
            }
        }
    }

    fn push_run(&mut self, generation: GenerationId) {
        match self.runs.back_mut() {
            Some((last, count)) if *last == generation => *count += 1,
            _ => self.runs.push_back((generation, 1)),
        }
    }
}

enum WriterMsg {
    Append {
        events: Vec<(GenerationId, Bytes)>,
        reply: oneshot::Sender<Result<Appended, QueueError>>,
    },
    /// The generation table grew: persist it before any record uses the new entry.
    Generations,
    /// The acknowledged prefix moved: checkpoint and delete segments soon.
    Acked,
    /// Final sync and checkpoint, then stop.
    Close(oneshot::Sender<()>),
    /// Stop at once, like a killed process (tests only).
    #[cfg(test)]
    Abandon,
    /// Checkpoint now (tests only: the model test's checkpoints).
    #[cfg(test)]
    Checkpoint,
}

struct Shared {
    options: DiskOptions,
    state: Mutex<State>,
    records_ready: Notify,
    persisted_tx: watch::Sender<Seq>,
    acked_tx: watch::Sender<Seq>,
    /// Whether the last write worked (a full disk makes it `Failing`).
    health_tx: watch::Sender<QueueHealth>,
    /// The writer's data I/O (fault injection in tests).
    io: Arc<dyn SegmentIo>,
    /// The writer's inbox, for readers that acknowledge unreadable records.
    writer_tx: Mutex<std_mpsc::Sender<WriterMsg>>,
    /// `queue.id`, copied into every checkpoint.
    identity: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes a new acknowledged prefix (never backwards, whatever the order two
    /// ackers get here in) and asks the writer for a checkpoint.
    fn publish_acked(&self, acked: Seq) {
        self.acked_tx.send_if_modified(|current| {
            let forward = acked > *current;
            if forward {
                *current = acked;
            }
            forward
        });
        if let Ok(writer) = self.writer_tx.lock() {
            let _ = writer.send(WriterMsg::Acked);
        }
    }
}

/// The queue's `queue.id`: the one in `dir`, else the checkpoint's copy, else a new one.
///
/// The rule is that a sequence number is never given to two events under one id (the
/// output's `_id`s are `queue.id` + sequence). When recovery cannot prove that
/// (`unproven` says why), the queue takes a new id. A new id while records are queued
/// gives them new `_id`s (they may be indexed twice), so a damaged id file is restored
/// from the checkpoint's copy when there is one.
fn choose_identity(
    dir: &Path,
    io: &dyn SegmentIo,
    checkpoint_id: Option<&str>,
    unproven: Option<&str>,
) -> Result<String, DiskError> {
    let valid = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let path = dir.join("queue.id");
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) if valid(text.trim()) => Some(text.trim().to_string()),
        Ok(_) => {
            tracing::warn!(path = %path.display(), "queue id file is damaged");
            None
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(DiskError::io(&path, err)),
    };
    let restored = checkpoint_id.filter(|id| valid(id));
    let id = match (unproven, existing, restored) {
        (None, Some(id), _) => return Ok(id),
        (None, None, Some(id)) => {
            tracing::warn!(path = %path.display(), "queue id file is damaged or missing: restored from the checkpoint's copy");
            id.to_string()
        }
        (None, None, None) => {
            if path.exists() {
                tracing::warn!(path = %path.display(), "queue id file is damaged and the checkpoint has no copy: taking a new queue.id (queued records may be indexed again under new _ids)");
            }
            uuid::Uuid::new_v4().simple().to_string()
        }
        (Some(reason), old, copy) => {
            if old.is_some() || copy.is_some() {
                tracing::warn!(path = %path.display(), reason, "cannot prove that no queue sequence number is given out twice: taking a new queue.id");
            }
            uuid::Uuid::new_v4().simple().to_string()
        }
    };
    segment::write_atomically(io, &path, id.as_bytes())?;
    Ok(id)
}

/// A durable queue in one directory.
pub struct DiskQueue {
    shared: Arc<Shared>,
    writer_tx: std_mpsc::Sender<WriterMsg>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    reader: tokio::sync::Mutex<reader::ReaderPos>,
    /// Held for the queue's lifetime: the OS lock that keeps a second process out.
    _lock: std::fs::File,
    /// Names the sequence space of this directory (`queue.id`), kept across restarts.
    identity: String,
}

impl DiskQueue {
    /// Opens (creating or recovering) the queue in `options.dir`. Blocking: call it from
    /// `spawn_blocking` or before the runtime starts.
    ///
    /// # Errors
    /// The directory cannot be created or locked, or a file cannot be read. Damaged data
    /// is not an error: it is truncated or quarantined and logged.
    pub fn open(options: DiskOptions) -> Result<Self, DiskError> {
        Self::open_with_io(options, Arc::new(OsIo))
    }

    /// [`DiskQueue::open`] with the writer's data I/O going through `io`: how tests make
    /// the disk fill up or fail.
    ///
    /// # Errors
    /// As [`DiskQueue::open`].
    pub fn open_with_io(options: DiskOptions, io: Arc<dyn SegmentIo>) -> Result<Self, DiskError> {
        let dir = options.dir.clone();
        crate::private_fs::create_private_dir(&dir).map_err(|err| DiskError::io(&dir, err))?;
        let lock_path = dir.join("lock");
        let lock = crate::private_fs::private_file()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|err| DiskError::io(&lock_path, err))?;
        lock.try_lock()
            .map_err(|_| DiskError::Locked(dir.clone()))?;

        let recovered = writer::recover(&options, &*io)?;
        let identity = choose_identity(
            &dir,
            &*io,
            recovered.checkpoint_id.as_deref(),
            recovered.unproven.as_deref(),
        )?;
        let checkpoint_now = recovered.checkpoint_id.as_deref() != Some(identity.as_str());
        let (persisted_tx, _) = watch::channel(recovered.state.durable);
        let (acked_tx, _) = watch::channel(recovered.state.acked);
        let (writer_tx, writer_rx) = std_mpsc::channel();
        let shared = Arc::new(Shared {
            options: options.clone(),
            state: Mutex::new(recovered.state),
            records_ready: Notify::new(),
            persisted_tx,
            acked_tx,
            health_tx: watch::channel(QueueHealth::Healthy).0,
            io,
            writer_tx: Mutex::new(writer_tx.clone()),
            identity: identity.clone(),
        });
        let writer_shared = shared.clone();
        let active = recovered.active;
        let handle = std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer::run(writer_shared, active, writer_rx, checkpoint_now))
            .map_err(|err| DiskError::io(&dir, err))?;
        Ok(DiskQueue {
            shared,
            writer_tx,
            writer: Mutex::new(Some(handle)),
            reader: tokio::sync::Mutex::new(reader::ReaderPos::default()),
            _lock: lock,
            identity,
        })
    }

    fn take_from_cache(
        state: &mut State,
        max_events: usize,
        max_bytes: usize,
    ) -> Option<Vec<Record>> {
        let front = state.cache.front()?.record.seq;
        if state.next_read < front {
            return None;
        }
        // By number, not position: burned numbers leave holes in the tail.
        let next_read = state.next_read;
        let start = state.cache.partition_point(|c| c.record.seq < next_read);
        let durable = state.durable;
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for cached in state
            .cache
            .iter()
            .skip(start)
            .take(max_events.max(1))
            .take_while(|c| c.record.seq <= durable)
        {
            if !batch.is_empty() && bytes + cached.record.payload.len() > max_bytes {
                break;
            }
            bytes += cached.record.payload.len();
            batch.push(cached.record.clone());
        }
        let last = batch.last()?.seq;
        state.next_read = last + 1;
        Some(batch)
    }
}

#[async_trait]
impl Queue for DiskQueue {
    fn register(&self, generation: Generation) -> GenerationId {
        let (id, added) = self.shared.lock().generations.register(generation);
        if added {
            let _ = self.writer_tx.send(WriterMsg::Generations);
        }
        id
    }

    fn generation(&self, id: GenerationId) -> Option<Generation> {
        self.shared
            .lock()
            .generations
            .get(id)
            .map(|g| g.generation.clone())
    }

    async fn append(&self, events: Vec<(GenerationId, Bytes)>) -> Result<Appended, QueueError> {
        if self.shared.lock().closed {
            return Err(QueueError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        self.writer_tx
            .send(WriterMsg::Append { events, reply })
            .map_err(|_| QueueError::Closed)?;
        answer.await.map_err(|_| QueueError::Closed)?
    }

    async fn read(&self, max_events: usize, max_bytes: usize) -> Option<Vec<Record>> {
        loop {
            let notified = self.shared.records_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let from = {
                let mut state = self.shared.lock();
                state.skip_burned();
                // Only what is synced: a power loss can take the rest, and its sequence
                // numbers would then go to new events (answered 409 under the old `_id`s).
                if state.next_read > state.durable {
                    // Closed: what is written is synced on the way out (`persist`).
                    if state.closed && state.next_read > state.head {
                        return None;
                    }
                    None
                } else if let Some(mut batch) =
                    Self::take_from_cache(&mut state, max_events, max_bytes)
                {
                    // After a rewind, what was acknowledged out of order is skipped.
                    super::skip_acked_ahead(&mut batch, &state.acked_ahead);
                    if batch.is_empty() {
                        continue;
                    }
                    return Some(batch);
                } else {
                    Some(state.next_read)
                }
            };
            let Some(from) = from else {
                notified.await;
                continue;
            };
            if let Some(mut batch) =
                reader::read_from_disk(&self.shared, &self.reader, from, max_events, max_bytes)
                    .await
            {
                super::skip_acked_ahead(&mut batch, &self.shared.lock().acked_ahead);
                if batch.is_empty() {
                    continue;
                }
                return Some(batch);
            }
            if self.shared.lock().next_read == from {
                // No progress (an I/O error, logged): try again shortly, not in a tight loop.
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }

    fn ack(&self, first: Seq, last: Seq) {
        if first > last {
            return;
        }
        let mut state = self.shared.lock();
        if last <= state.acked || last > state.head {
            return;
        }
        let start = first.max(state.acked + 1);
        let entry = state.acked_ahead.entry(start).or_insert(last);
        *entry = (*entry).max(last);
        if state.advance_acked() {
            let acked = state.acked;
            drop(state);
            self.shared.publish_acked(acked);
        }
    }

    fn rewind(&self) {
        let mut state = self.shared.lock();
        state.next_read = state.acked + 1;
        drop(state);
        self.shared.records_ready.notify_waiters();
    }

    fn pending_generations(&self) -> Vec<(Generation, u64)> {
        self.shared.lock().generations.pending_list()
    }

    fn seal_input(&self, input_unit: &str) -> Barrier {
        let mut state = self.shared.lock();
        state.barrier_in_flight |= state.in_flight;
        state.generations.seal(input_unit)
    }

    fn unseal_input(&self, input_unit: &str) {
        self.shared.lock().generations.unseal(input_unit);
    }

    fn pending_for_input(&self, input_unit: &str) -> u64 {
        self.shared.lock().generations.pending(input_unit)
    }

    fn barrier_all(&self) -> Barrier {
        let mut state = self.shared.lock();
        state.barrier_in_flight |= state.in_flight;
        Barrier {
            seq: state.assigned,
            pending: state.assigned - state.acked,
        }
    }

    fn acked(&self) -> watch::Receiver<Seq> {
        self.shared.acked_tx.subscribe()
    }

    fn persisted(&self) -> watch::Receiver<Seq> {
        self.shared.persisted_tx.subscribe()
    }

    fn health(&self) -> watch::Receiver<QueueHealth> {
        self.shared.health_tx.subscribe()
    }

    fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.records_ready.notify_waiters();
    }

    async fn persist(&self) {
        let (done, finished) = oneshot::channel();
        if self.writer_tx.send(WriterMsg::Close(done)).is_ok() {
            let _ = finished.await;
        }
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn stats(&self) -> QueueStats {
        let state = self.shared.lock();
        QueueStats {
            kind: "disk",
            events: state.head - state.acked,
            bytes: state.bytes_on_disk,
            max_bytes: self.shared.options.max_size,
            head: state.head,
            acked: state.acked,
            oldest_unacked: (state.head > state.acked).then_some(state.acked + 1),
            write_batches: state.counters.write_batches,
            fsyncs: state.counters.fsyncs,
            quarantined_segments: state.counters.quarantined_segments,
            corrupted_events: state.counters.corrupted_events,
        }
    }
}

#[cfg(test)]
impl DiskQueue {
    /// Stops the writer without a final sync or checkpoint and releases the lock: what a
    /// SIGKILL leaves behind (written data stays in the page cache, as after a crash).
    fn crash(self) {
        let _ = self.writer_tx.send(WriterMsg::Abandon);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
impl DiskQueue {
    /// Asks the writer for a checkpoint (and the deletions it allows) now.
    fn request_checkpoint(&self) {
        let _ = self.writer_tx.send(WriterMsg::Checkpoint);
    }
}

impl Drop for DiskQueue {
    fn drop(&mut self) {
        // Without `persist`, the writer still syncs and checkpoints on its way out.
        let _ = self.writer_tx.send(WriterMsg::Close(oneshot::channel().0));
    }
}

#[cfg(test)]
mod crash_model;
#[cfg(test)]
mod tests;
