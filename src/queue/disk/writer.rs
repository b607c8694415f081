//! The writer thread (group commit, segment rolling, checkpoints) and recovery at open.

use super::checkpoint::Checkpoint;
use super::frame;
use super::segment::{self, SegmentMeta, HEADER_LEN, LOST_GENERATION};
use super::{
    CachedRecord, Counters, DiskError, DiskOptions, Durability, SegmentIo, SegmentState, Shared,
    State, WriterMsg,
};
use crate::queue::generations::GenerationTable;
use crate::queue::{AppendStop, Appended, GenerationId, QueueError, QueueHealth, Record, Seq};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Gather appends up to this many bytes into one write.
const GROUP_BYTES: usize = 1 << 20;
/// Checkpoint at most this often, unless the queue is full: each checkpoint costs two
/// fsyncs and a journal commit, which at 10 per second halved throughput (queue-bench).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often the writer wakes up when idle (interval syncs, pending checkpoints).
const TICK: Duration = Duration::from_millis(50);

/// The segment being appended to.
pub(super) struct ActiveSegment {
    file: File,
    meta: SegmentMeta,
}

/// What `recover` found.
pub(super) struct Recovered {
    pub(super) state: State,
    pub(super) active: ActiveSegment,
    /// The copy of `queue.id` in the checkpoint.
    pub(super) checkpoint_id: Option<String>,
    /// Why the files cannot prove that no sequence number given out before is given
    /// out again (then the queue takes a new `queue.id`).
    pub(super) unproven: Option<String>,
}

fn quarantine(io: &dyn SegmentIo, dir: &Path, first: Seq, reason: &str) -> Result<(), DiskError> {
    let from = segment::segment_path(dir, first);
    let mut n = 0;
    let to = loop {
        let candidate = dir.join(format!("{first:020}.seg.corrupt-{n}"));
        if !candidate.exists() {
            break candidate;
        }
        n += 1;
    };
    io.rename(&from, &to)
        .map_err(|err| DiskError::io(&from, err))?;
    let _ = io.remove_file(&segment::meta_path(dir, first));
    segment::sync_dir_with(io, dir)?;
    tracing::error!(path = %to.display(), reason, "queue segment is damaged: quarantined (kept for inspection, not deleted)");
    Ok(())
}

fn create_segment(io: &dyn SegmentIo, dir: &Path, first: Seq) -> Result<ActiveSegment, DiskError> {
    let path = segment::segment_path(dir, first);
    // An active segment has no summary; one left from an earlier run would be stale.
    let _ = io.remove_file(&segment::meta_path(dir, first));
    // Queue files hold events: owner-only.
    let file = io.create(&path).map_err(|err| DiskError::io(&path, err))?;
    io.write_all_at(&file, &segment::header(first), 0)
        .map_err(|err| DiskError::io(&path, err))?;
    io.sync_all(&file)
        .map_err(|err| DiskError::io(&path, err))?;
    segment::sync_dir_with(io, dir)?;
    Ok(ActiveSegment {
        file,
        meta: SegmentMeta::empty(first),
    })
}

/// Rebuilds the state from the files in `options.dir` and starts a new active segment.
pub(super) fn recover(options: &DiskOptions, io: &dyn SegmentIo) -> Result<Recovered, DiskError> {
    let dir = &options.dir;
    let (checkpoint, checkpoint_problem) = match Checkpoint::load(dir) {
        Ok(Some(checkpoint)) => (Some(checkpoint), None),
        Ok(None) => (None, Some("checkpoint.json is missing".to_string())),
        Err(err) => {
            tracing::error!(error = %err, "queue checkpoint unusable: treating every record on disk as unacknowledged (some may be delivered again; none is lost)");
            (None, Some(format!("checkpoint unusable: {err}")))
        }
    };
    let checkpoint_id = checkpoint.as_ref().and_then(|c| c.queue_id.clone());
    let (mut acked, table) = checkpoint
        .map(|c| (c.acked, c.generations))
        .unwrap_or_default();
    let mut firsts = Vec::new();
    // Every segment name, quarantined ones too, says that the numbers before its first
    // were given out: numbering goes on after them even when their records are gone.
    let mut floor: Seq = 0;
    let mut any_segment = false;
    for entry in std::fs::read_dir(dir).map_err(|err| DiskError::io(dir, err))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first) = segment::parse_segment_name(name) {
            firsts.push(first);
        } else if segment::parse_quarantined_name(name).is_none() {
            continue;
        }
        let first = segment::parse_segment_name(name)
            .or_else(|| segment::parse_quarantined_name(name))
            .unwrap_or(0);
        any_segment = true;
        floor = floor.max(first.saturating_sub(1));
    }
    firsts.sort_unstable();
    let mut unproven = None;

    let mut generations = GenerationTable::from_list(table);
    let mut segments = BTreeMap::new();
    let mut runs = VecDeque::new();
    let mut bytes_on_disk = 0;
    let mut head: Option<Seq> = None;
    let mut acked_ahead = BTreeMap::new();
    // Numbers with no record in any file: readers skip them.
    let mut burned = BTreeMap::new();
    let mut counters = Counters::default();
    for (index, &first) in firsts.iter().enumerate() {
        let path = segment::segment_path(dir, first);
        let is_tail = index + 1 == firsts.len();
        let known = if is_tail {
            None
        } else {
            SegmentMeta::load(dir, first)
        };
        let meta = match known {
            Some(meta) => meta,
            None => match segment::scan(&path) {
                Ok(scan) => {
                    if let Some(damage) = scan.damage {
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(|err| DiskError::io(&path, err))?;
                        let len = file
                            .metadata()
                            .map_err(|err| DiskError::io(&path, err))?
                            .len();
                        io.set_len(&file, scan.valid_len)
                            .map_err(|err| DiskError::io(&path, err))?;
                        io.sync_all(&file)
                            .map_err(|err| DiskError::io(&path, err))?;
                        tracing::warn!(path = %path.display(), damage, dropped_bytes = len - scan.valid_len, kept_through_seq = scan.meta.last_seq, "truncated the damaged end of a queue segment");
                    }
                    // Sealed from now on: remember the summary so the next open skips the scan.
                    if let Err(err) = scan.meta.store(dir, io) {
                        tracing::warn!(error = %err, "could not store a segment summary; it will be scanned again");
                    }
                    scan.meta
                }
                // Unreadable (bad header, or the OS cannot read it): set it aside rather
                // than fail every start.
                Err(err) => {
                    quarantine(io, dir, first, &err.to_string())?;
                    counters.quarantined_segments += 1;
                    if is_tail {
                        unproven = Some(format!(
                            "the last segment (from sequence {first}) is unreadable: how far its numbers went is unknown"
                        ));
                    }
                    continue;
                }
            },
        };
        if is_tail && meta.last_seq < meta.first_seq {
            // An empty tail (no append since the last start): the new active segment
            // takes its place.
            let _ = io.remove_file(&path);
            let _ = io.remove_file(&segment::meta_path(dir, first));
            continue;
        }
        if meta.last_seq <= acked && meta.last_seq + 1 >= meta.first_seq {
            // Every record acknowledged before the crash; the deletion did not happen yet.
            let _ = io.remove_file(&path);
            let _ = io.remove_file(&segment::meta_path(dir, first));
            continue;
        }
        let expected_first = head.map(|h| h + 1).unwrap_or(acked + 1);
        if meta.first_seq > expected_first {
            if head.is_none() {
                // Nothing before this segment is on disk: it was all acknowledged.
                acked = meta.first_seq - 1;
            } else {
                let lost = meta.first_seq - expected_first;
                tracing::error!(
                    first = expected_first,
                    last = meta.first_seq - 1,
                    "queue records missing between segments: counted as lost"
                );
                counters.corrupted_events += lost;
                acked_ahead.insert(expected_first, meta.first_seq - 1);
                burned.insert(expected_first, meta.first_seq - 1);
                runs.push_back((GenerationId(LOST_GENERATION), lost));
            }
        }
        let mut seq = meta.first_seq;
        for &(generation, count) in &meta.generations {
            let end = seq + count - 1;
            let start = seq.max(acked + 1);
            seq += count;
            if end < start {
                continue;
            }
            if generation == LOST_GENERATION {
                // Unreadable records: counted, and acknowledged so the prefix moves past them.
                counters.corrupted_events += end - start + 1;
                acked_ahead.insert(start, end);
            } else {
                // Records whose table entry was lost with a damaged checkpoint.
                generations.ensure(GenerationId(generation));
                if let Some(g) = generations.get_mut(GenerationId(generation)) {
                    g.last_seq = end;
                    g.unacked += end - start + 1;
                }
            }
            match runs.back_mut() {
                Some((last, n)) if *last == GenerationId(generation) => *n += end - start + 1,
                _ => runs.push_back((GenerationId(generation), end - start + 1)),
            }
        }
        bytes_on_disk += meta.bytes;
        head = Some(head.unwrap_or(acked).max(meta.last_seq));
        segments.insert(
            first,
            SegmentState {
                last_seq: meta.last_seq,
                bytes: meta.bytes,
                sealed: true,
                corrupt: meta.has_losses(),
            },
        );
    }
    let mut head = head.unwrap_or(acked).max(acked);
    if floor > head {
        if head == acked {
            // Nothing after the acknowledged prefix is left, up to a segment's name:
            // those numbers were acknowledged (their segments deleted) or never written.
            acked = floor;
        } else {
            let lost = floor - head;
            tracing::error!(
                first = head + 1,
                last = floor,
                "queue records of a quarantined segment are missing: counted as lost"
            );
            counters.corrupted_events += lost;
            acked_ahead.insert(head + 1, floor);
            burned.insert(head + 1, floor);
            runs.push_back((GenerationId(LOST_GENERATION), lost));
        }
        head = floor;
    }
    if unproven.is_none() && !any_segment {
        unproven = checkpoint_problem;
    }
    let active = create_segment(io, dir, head + 1)?;
    segments.insert(
        head + 1,
        SegmentState {
            last_seq: head,
            bytes: HEADER_LEN as u64,
            sealed: false,
            corrupt: false,
        },
    );
    bytes_on_disk += HEADER_LEN as u64;
    let mut state = State {
        assigned: head,
        head,
        durable: head,
        acked,
        acked_ahead,
        burned,
        in_flight: false,
        barrier_in_flight: false,
        next_read: acked + 1,
        cache: VecDeque::new(),
        cache_bytes: 0,
        segments,
        bytes_on_disk,
        generations,
        runs,
        closed: false,
        counters,
    };
    state.advance_acked();
    tracing::info!(
        path = %dir.display(),
        segments = state.segments.len(),
        unacked_events = state.head - state.acked,
        bytes = state.bytes_on_disk,
        "disk queue opened"
    );
    Ok(Recovered {
        state,
        active,
        checkpoint_id,
        unproven,
    })
}

/// The writer thread's loop; returns on `Close` or when every sender is gone.
pub(super) fn run(
    shared: Arc<Shared>,
    mut active: ActiveSegment,
    rx: Receiver<WriterMsg>,
    checkpoint_now: bool,
) {
    let mut writer = Writer {
        shared,
        unsynced: false,
        last_sync: Instant::now(),
        acked_moved: false,
        last_checkpoint: Instant::now(),
        full: false,
        failure: None,
    };
    if checkpoint_now {
        // The checkpoint does not hold this queue.id yet: keep a copy before any record.
        writer.checkpoint(&active);
    }
    loop {
        let first = match rx.recv_timeout(TICK) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut appends = Vec::new();
        let mut appended_bytes = 0;
        let mut close = None;
        let mut next = first;
        while let Some(message) = next.take() {
            match message {
                WriterMsg::Append { events, reply } => {
                    appended_bytes += events.iter().map(|(_, p)| p.len()).sum::<usize>();
                    appends.push((events, reply));
                }
                // Before any gathered append could use the new generation.
                WriterMsg::Generations => writer.checkpoint(&active),
                WriterMsg::Acked => writer.acked_moved = true,
                WriterMsg::Close(done) => {
                    close = Some(done);
                    break;
                }
                #[cfg(test)]
                WriterMsg::Abandon => return,
                #[cfg(test)]
                WriterMsg::Checkpoint => writer.checkpoint(&active),
            }
            if appended_bytes < GROUP_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !appends.is_empty() {
            writer.write_batch(&mut active, appends);
        }
        writer.maybe_sync(&mut active, false);
        // A full queue frees space only by checkpointing: do it as soon as acks move.
        if writer.acked_moved
            && (writer.full || writer.last_checkpoint.elapsed() >= CHECKPOINT_EVERY)
        {
            writer.checkpoint(&active);
        }
        if let Some(done) = close {
            writer.maybe_sync(&mut active, true);
            writer.checkpoint(&active);
            let _ = done.send(());
            return;
        }
    }
    writer.maybe_sync(&mut active, true);
    writer.checkpoint(&active);
}

struct Writer {
    shared: Arc<Shared>,
    unsynced: bool,
    last_sync: Instant,
    acked_moved: bool,
    last_checkpoint: Instant,
    /// An append was refused for space since the last checkpoint.
    full: bool,
    /// Why the last write failed, until one works again.
    failure: Option<String>,
}

/// One producer's append as the writer receives it: the events and where to answer.
type PendingAppend = (
    Vec<(GenerationId, Bytes)>,
    oneshot::Sender<Result<Appended, QueueError>>,
);

/// One producer's request, with what was assigned to it.
struct Planned {
    reply: oneshot::Sender<Result<Appended, QueueError>>,
    seqs: Vec<Seq>,
    stop: Option<AppendStop>,
}

impl Writer {
    fn dir(&self) -> &Path {
        &self.shared.options.dir
    }

    /// Assigns sequence numbers, writes, syncs, publishes, answers.
    fn write_batch(&mut self, active: &mut ActiveSegment, appends: Vec<PendingAppend>) {
        let options = &self.shared.options;
        let mut plans = Vec::with_capacity(appends.len());
        let mut frames: Vec<(Seq, GenerationId, Bytes)> = Vec::new();
        let mut prior_last: HashMap<GenerationId, Seq> = HashMap::new();
        {
            let mut state = self.shared.lock();
            let mut pending_bytes = 0u64;
            let mut full = false;
            // Follow the active segment's fill so rolls (each a new header) are budgeted.
            let mut active_bytes = active.meta.bytes;
            for (events, reply) in appends {
                let mut seqs = Vec::with_capacity(events.len());
                let mut stop = None;
                for (generation, payload) in events {
                    // Unknown ids cannot be routed; sealed inputs are draining.
                    if let Some(refusal) = state.generations.refusal(generation) {
                        stop = Some(refusal);
                        break;
                    }
                    if payload.len() > frame::MAX_BODY - frame::BODY_HEADER {
                        stop = Some(AppendStop::TooLarge {
                            bytes: payload.len(),
                        });
                        break;
                    }
                    let len = frame::encoded_len(payload.len()) as u64;
                    let rolls = active_bytes > HEADER_LEN as u64
                        && active_bytes + len > options.segment_size;
                    let needed = len + if rolls { HEADER_LEN as u64 } else { 0 };
                    // An event that could never fit is let into an empty queue, so it cannot
                    // wedge the input forever; everything else keeps to the budget.
                    let never_fits = needed + 2 * HEADER_LEN as u64 > options.max_size;
                    let exempt = never_fits && state.assigned == state.acked && pending_bytes == 0;
                    if full
                        || (!exempt
                            && state.bytes_on_disk + pending_bytes + needed > options.max_size)
                    {
                        full = true;
                        self.full = true;
                        stop = Some(AppendStop::Full);
                        break;
                    }
                    pending_bytes += needed;
                    active_bytes = if rolls {
                        HEADER_LEN as u64 + len
                    } else {
                        active_bytes + len
                    };
                    state.assigned += 1;
                    let seq = state.assigned;
                    if let Some(gen_state) = state.generations.get_mut(generation) {
                        prior_last.entry(generation).or_insert(gen_state.last_seq);
                        gen_state.last_seq = seq;
                        gen_state.unacked += 1;
                    }
                    state.push_run(generation);
                    seqs.push(seq);
                    frames.push((seq, generation, payload));
                }
                plans.push(Planned { reply, seqs, stop });
            }
            // Seals and barriers taken from now until the write is done may count frames
            // that a failure takes back (see `roll_back`).
            state.in_flight = !frames.is_empty();
        }

        let committed = self.write_frames(active, &frames);
        if committed < frames.len() {
            self.roll_back(&frames[committed..], &frames[..committed], &prior_last);
        }
        {
            let mut state = self.shared.lock();
            state.in_flight = false;
            state.barrier_in_flight = false;
        }
        let committed_head = frames.get(committed.wrapping_sub(1)).map(|f| f.0);
        for plan in plans {
            let accepted = plan
                .seqs
                .iter()
                .take_while(|seq| committed_head.is_some_and(|h| **seq <= h))
                .count();
            let stopped_by = if accepted < plan.seqs.len() {
                Some(AppendStop::Storage {
                    reason: self
                        .failure
                        .clone()
                        .unwrap_or_else(|| "the queue write failed".into()),
                })
            } else {
                plan.stop
            };
            let last_seq = accepted.checked_sub(1).map(|i| plan.seqs[i]);
            let _ = plan.reply.send(Ok(Appended {
                accepted,
                last_seq,
                stopped_by,
            }));
        }
    }

    /// Writes frames segment by segment; returns how many are committed (written, synced
    /// per the durability mode, and visible to readers).
    fn write_frames(
        &mut self,
        active: &mut ActiveSegment,
        frames: &[(Seq, GenerationId, Bytes)],
    ) -> usize {
        let segment_size = self.shared.options.segment_size;
        let mut committed = 0;
        let mut buf = Vec::new();
        let mut cached = Vec::new();
        for (index, (seq, generation, payload)) in frames.iter().enumerate() {
            let len = frame::encoded_len(payload.len()) as u64;
            let has_records = active.meta.last_seq >= active.meta.first_seq;
            // Numbers burned by a failed write (`roll_back`) are not in any segment: the
            // next segment starts after them, so no segment has a hole in it.
            let after_burned = *seq != active.meta.last_seq + 1;
            if after_burned || (has_records && active.meta.bytes + len > segment_size) {
                if !self.commit_chunk(active, &mut buf, &mut cached, true) {
                    return committed;
                }
                committed = index;
                if !self.seal_and_roll(active, *seq) {
                    return committed;
                }
            }
            cached.push(CachedRecord {
                record: Record {
                    seq: *seq,
                    generation: *generation,
                    payload: payload.clone(),
                },
            });
            frame::encode(&mut buf, *seq, generation.0, payload);
            active.meta.push(*seq, generation.0, len as usize);
        }
        let sync = self.shared.options.durability == Durability::Batch;
        if !buf.is_empty() && !self.commit_chunk(active, &mut buf, &mut cached, sync) {
            return committed;
        }
        frames.len()
    }

    /// Writes `buf` to the active segment (and syncs when `sync`), then publishes the
    /// records in `cached`. On failure the segment is cut back and nothing is published.
    fn commit_chunk(
        &mut self,
        active: &mut ActiveSegment,
        buf: &mut Vec<u8>,
        cached: &mut Vec<CachedRecord>,
        sync: bool,
    ) -> bool {
        let path = segment::segment_path(self.dir(), active.meta.first_seq);
        let before = active.meta.bytes - buf.len() as u64;
        // Positional: after a failed write the file position is unknown, the summary's is not.
        let io = &self.shared.io;
        let result = io.write_all_at(&active.file, buf, before).and_then(|()| {
            if sync {
                io.sync_data(&active.file)
            } else {
                Ok(())
            }
        });
        if let Err(err) = result {
            tracing::error!(path = %path.display(), error = %err, "queue write failed: appends are refused (backpressure) until it works again");
            self.failed(format!("cannot write {}: {err}", path.display()));
            // Cut back whatever part of the chunk landed, so the file stays a clean prefix.
            let _ = self.shared.io.set_len(&active.file, before);
            let mut restored = recount(&active.meta, cached.len() as u64);
            restored.bytes = before;
            active.meta = restored;
            buf.clear();
            cached.clear();
            return false;
        }
        if !sync {
            self.unsynced = true;
        }
        self.recovered();
        let written = buf.len() as u64;
        buf.clear();
        let Some(last) = cached.last().map(|c| c.record.seq) else {
            return true;
        };
        {
            let mut state = self.shared.lock();
            state.head = last;
            if sync {
                state.durable = last;
                state.counters.fsyncs += 1;
            }
            state.counters.write_batches += 1;
            state.bytes_on_disk += written;
            if let Some(segment) = state.segments.get_mut(&active.meta.first_seq) {
                segment.last_seq = last;
                segment.bytes = active.meta.bytes;
            }
            for record in cached.drain(..) {
                state.cache_bytes += record.record.payload.len() as u64;
                state.cache.push_back(record);
            }
            // Keep the in-memory tail bounded, but never drop what a reader has not seen
            // unless the bound forces it (then the reader goes to disk).
            while state.cache_bytes > self.shared.options.read_ahead {
                match state.cache.pop_front() {
                    Some(old) => state.cache_bytes -= old.record.payload.len() as u64,
                    None => break,
                }
            }
        }
        if sync {
            self.shared.persisted_tx.send_replace(last);
        }
        self.shared.records_ready.notify_waiters();
        true
    }

    /// Seals the active segment (its data is synced by the caller) and starts the next.
    fn seal_and_roll(&mut self, active: &mut ActiveSegment, next_first: Seq) -> bool {
        let dir = self.dir().to_path_buf();
        if let Err(err) = active.meta.store(&dir, &*self.shared.io) {
            tracing::warn!(error = %err, "could not store a segment summary; it will be scanned at the next open");
        }
        match create_segment(&*self.shared.io, &dir, next_first) {
            Ok(next) => {
                let mut state = self.shared.lock();
                if let Some(old) = state.segments.get_mut(&active.meta.first_seq) {
                    old.sealed = true;
                }
                state.segments.insert(
                    next_first,
                    SegmentState {
                        last_seq: next_first - 1,
                        bytes: HEADER_LEN as u64,
                        sealed: false,
                        corrupt: false,
                    },
                );
                state.bytes_on_disk += HEADER_LEN as u64;
                drop(state);
                *active = next;
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot start a new queue segment: appends are refused until it works");
                self.failed(format!("cannot start a new segment: {err}"));
                // The old segment stays active: its summary must not claim it is complete.
                let _ = self
                    .shared
                    .io
                    .remove_file(&segment::meta_path(&dir, active.meta.first_seq));
                false
            }
        }
    }

    /// A write failed: remember why and report the queue as failing.
    fn failed(&mut self, reason: String) {
        self.shared.health_tx.send_if_modified(|health| {
            let new = QueueHealth::Failing(reason.clone());
            let changed = *health != new;
            *health = new;
            changed
        });
        self.failure = Some(reason);
    }

    /// A write worked: the queue is healthy again.
    fn recovered(&mut self) {
        if self.failure.take().is_some() {
            tracing::info!("queue writes work again: appends are accepted");
        }
        self.shared.health_tx.send_if_modified(|health| {
            let changed = *health != QueueHealth::Healthy;
            *health = QueueHealth::Healthy;
            changed
        });
    }

    /// Undoes the assignment of frames that were not written.
    fn roll_back(
        &mut self,
        unwritten: &[(Seq, GenerationId, Bytes)],
        written: &[(Seq, GenerationId, Bytes)],
        prior_last: &HashMap<GenerationId, Seq>,
    ) {
        let mut state = self.shared.lock();
        let Some(first_unwritten) = unwritten.first().map(|f| f.0) else {
            return;
        };
        if state.barrier_in_flight {
            // A drain barrier taken during the write may point at these numbers; taken
            // back, no record would ever reach it and the drain would never end. Burn them
            // instead: acknowledged, skipped by readers, never written (the next write
            // starts a new segment after them), never given to another record.
            let last = unwritten[unwritten.len() - 1].0;
            state.acked_ahead.insert(first_unwritten, last);
            state.burned.insert(first_unwritten, last);
            state.head = state.head.max(last);
            if state.advance_acked() {
                let acked = state.acked;
                drop(state);
                self.shared.publish_acked(acked);
            }
            return;
        }
        state.assigned = first_unwritten - 1;
        for (_, generation, _) in unwritten.iter().rev() {
            if let Some(g) = state.generations.get_mut(*generation) {
                g.unacked -= 1;
            }
            if let Some((_, count)) = state.runs.back_mut() {
                *count -= 1;
                if *count == 0 {
                    state.runs.pop_back();
                }
            }
        }
        for (generation, prior) in prior_last {
            let last_written = written
                .iter()
                .rev()
                .find(|f| f.1 == *generation)
                .map(|f| f.0);
            if let Some(g) = state.generations.get_mut(*generation) {
                g.last_seq = last_written.unwrap_or(*prior);
            }
        }
    }

    /// In interval mode, syncs when the interval passed (or always when `force`).
    fn maybe_sync(&mut self, active: &mut ActiveSegment, force: bool) {
        let due = match self.shared.options.durability {
            Durability::Batch => force,
            Durability::Interval(interval) => force || self.last_sync.elapsed() >= interval,
        };
        if !(due && self.unsynced) {
            return;
        }
        match self.shared.io.sync_data(&active.file) {
            Ok(()) => {
                self.unsynced = false;
                self.last_sync = Instant::now();
                let durable = {
                    let mut state = self.shared.lock();
                    state.durable = state.head;
                    state.counters.fsyncs += 1;
                    state.head
                };
                self.shared.persisted_tx.send_replace(durable);
                // Readers wait for synced records (interval mode).
                self.shared.records_ready.notify_waiters();
            }
            Err(err) => tracing::error!(error = %err, "queue fdatasync failed; will retry"),
        }
    }

    /// Writes the checkpoint, then deletes (or quarantines) segments it fully covers.
    fn checkpoint(&mut self, active: &ActiveSegment) {
        self.last_checkpoint = Instant::now();
        let dir = self.dir().to_path_buf();
        let (acked, table, doomed) = {
            let state = self.shared.lock();
            let doomed: Vec<(Seq, bool)> = state
                .segments
                .iter()
                .filter(|(first, s)| {
                    s.sealed && s.last_seq <= state.acked && **first != active.meta.first_seq
                })
                .map(|(first, s)| (*first, s.corrupt))
                .collect();
            (state.acked, state.generations.list(), doomed)
        };
        let shared_io = self.shared.io.clone();
        let io = &*shared_io;
        let checkpoint = Checkpoint::new(acked, table, &self.shared.identity);
        let mut doomed = doomed;
        if let Err(err) = checkpoint.store(&dir, io) {
            // A queue that filled its own disk cannot write its checkpoint (ENOSPC) until it
            // frees space, and frees space only after a checkpoint: free what is safe to
            // free without one, then try again (see `free_without_checkpoint`).
            doomed = self.free_without_checkpoint(doomed);
            if let Err(err) = checkpoint.store(&dir, io) {
                tracing::error!(error = %err, "cannot write the queue checkpoint; segments not needed for numbering are freed, the rest are kept until it works (retried every second)");
                self.acked_moved = true;
                self.full = false;
                return;
            }
            tracing::warn!(first_error = %err, "queue checkpoint written after freeing acknowledged segments");
        }
        self.acked_moved = false;
        self.full = false;
        if doomed.is_empty() {
            return;
        }
        let mut removed = Vec::new();
        for (first, corrupt) in doomed {
            let result = if corrupt {
                quarantine(io, &dir, first, "frames failed their checksum when read")
            } else {
                let path = segment::segment_path(&dir, first);
                let _ = io.remove_file(&segment::meta_path(&dir, first));
                io.remove_file(&path)
                    .map_err(|err| DiskError::io(&path, err))
            };
            match result {
                Ok(()) => removed.push((first, corrupt)),
                Err(err) => {
                    tracing::warn!(error = %err, "could not remove an acknowledged segment; will retry");
                    self.acked_moved = true;
                }
            }
        }
        let _ = segment::sync_dir_with(io, &dir);
        let mut state = self.shared.lock();
        for (first, corrupt) in removed {
            if let Some(segment) = state.segments.remove(&first) {
                state.bytes_on_disk -= segment.bytes;
            }
            if corrupt {
                state.counters.quarantined_segments += 1;
            }
        }
    }

    /// Deletes fully acknowledged segments while the checkpoint cannot be written; returns
    /// those it left for the next checkpoint.
    ///
    /// Safe without a durable checkpoint because recovery, finding nothing on disk before
    /// the first segment left, counts everything before that segment's `first_seq` (in its
    /// name) as acknowledged, and numbers new records after the last one on disk. So:
    /// - only a prefix is deleted, oldest first, stopping at the first failure (a gap
    ///   between kept segments would read as lost records);
    /// - the newest segment holding records is always kept, even when acknowledged: with
    ///   only an empty active segment left, an old checkpoint would restart the numbering
    ///   below sequence numbers already delivered (their `_id`s would collide);
    /// - corrupt segments are renamed aside as usual (a renamed file is not a segment at
    ///   recovery, so for numbering that is a deletion too).
    ///
    /// A crash before a later checkpoint delivers some acknowledged records of the kept
    /// segments again, under the same sequence numbers (an idempotent resend).
    fn free_without_checkpoint(&mut self, doomed: Vec<(Seq, bool)>) -> Vec<(Seq, bool)> {
        let dir = self.dir().to_path_buf();
        let newest_with_records = {
            let state = self.shared.lock();
            state
                .segments
                .iter()
                .rev()
                .find(|(first, s)| s.last_seq >= **first)
                .map(|(first, _)| *first)
        };
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        for (first, corrupt) in doomed {
            if !kept.is_empty() || Some(first) == newest_with_records {
                kept.push((first, corrupt));
                continue;
            }
            let io = &*self.shared.io;
            let result = if corrupt {
                quarantine(io, &dir, first, "frames failed their checksum when read")
            } else {
                let path = segment::segment_path(&dir, first);
                io.remove_file(&path)
                    .map_err(|err| DiskError::io(&path, err))
            };
            match result {
                Ok(()) => {
                    let _ = io.remove_file(&segment::meta_path(&dir, first));
                    removed.push((first, corrupt));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not remove an acknowledged segment; will retry");
                    kept.push((first, corrupt));
                }
            }
        }
        if removed.is_empty() {
            return kept;
        }
        let _ = segment::sync_dir_with(&*self.shared.io, &dir);
        let mut state = self.shared.lock();
        let mut freed = 0;
        for (first, corrupt) in &removed {
            if let Some(segment) = state.segments.remove(first) {
                state.bytes_on_disk -= segment.bytes;
                freed += segment.bytes;
            }
            if *corrupt {
                state.counters.quarantined_segments += 1;
            }
        }
        drop(state);
        tracing::warn!(
            segments = removed.len(),
            bytes = freed,
            "queue checkpoint cannot be written: freed acknowledged segments without it"
        );
        kept
    }
}

/// The summary of the first `meta`'s records minus the last `drop` ones.
fn recount(meta: &SegmentMeta, drop: u64) -> SegmentMeta {
    let mut out = SegmentMeta::empty(meta.first_seq);
    let keep = (meta.last_seq + 1 - meta.first_seq).saturating_sub(drop);
    let mut left = keep;
    for &(generation, count) in &meta.generations {
        let take = count.min(left);
        if take == 0 {
            break;
        }
        out.generations.push((generation, take));
        left -= take;
    }
    out.last_seq = meta.first_seq + keep - 1;
    out
}
