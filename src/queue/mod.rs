//! The queue between the Producer API and the output: a FIFO of records with sequence numbers.
//!
//! # What it owns
//! Every accepted event becomes a [`Record`] with a sequence number one higher than the
//! last (the event id that inputs see), the [`GenerationId`] it was accepted under, and
//! its payload (the protobuf-encoded `Event`). Sequence numbers start at 1; 0 means "none".
//!
//! # Invariants
//! - Appends are all-or-prefix: a full queue accepts the events that fit and says why it
//!   stopped ([`AppendStop`]); it never drops.
//! - Readers get records in sequence order, each record once (several readers share one
//!   cursor). Acks may come out of order; the queue tracks the contiguous acknowledged
//!   prefix and only then frees records.
//! - `persisted` is the highest sequence such that it and every earlier one is safe (for
//!   the memory queue: acknowledged by the output). `acked` is the acknowledged prefix.
//! - The generation table names, for each generation, the input unit and output unit (and
//!   its config idx) the records were accepted under. It never holds credentials.
//! - Two implementations share this trait: [`MemoryQueue`] (bounded, lost on crash) and
//!   [`DiskQueue`] (durable; its module documents the format and recovery).
//! - Sealing an input unit is atomic with respect to appends: after [`Queue::seal_input`]
//!   returns the barrier, no record of that input gets a sequence number, so the input is
//!   drained exactly when the acknowledged prefix reaches the barrier.

pub mod disk;
mod generations;
mod memory;

pub use disk::{DiskError, DiskOptions, DiskQueue, Durability, SegmentIo};
pub use memory::MemoryQueue;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

/// A record's sequence number; also the event id the Producer API reports.
pub type Seq = u64;

/// Index into the queue's generation table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GenerationId(pub u32);

/// The units an event was accepted under. Names only, never secrets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    /// The INPUT unit the event's input belongs to (empty in standalone mode).
    pub input_unit: String,
    /// The OUTPUT unit that was active.
    pub output_unit: String,
    /// That output unit's `config_state_idx`.
    pub output_config_idx: u64,
}

/// One queued event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub seq: Seq,
    /// The generation it was accepted under.
    pub generation: GenerationId,
    /// The protobuf-encoded `Event`.
    pub payload: Bytes,
}

/// Removes from `batch` (in sequence order) the records that `acked_ahead` (acknowledged
/// ranges past the prefix, first → last) covers: a rewind must not hand out again what a
/// faster worker already acknowledged. Linear in the batch plus the ranges.
pub(crate) fn skip_acked_ahead(
    batch: &mut Vec<Record>,
    acked_ahead: &std::collections::BTreeMap<Seq, Seq>,
) {
    if acked_ahead.is_empty() {
        return;
    }
    let mut ranges = acked_ahead.iter().peekable();
    // The highest end of the ranges that start at or before the record: ranges may overlap.
    let mut covered: Seq = 0;
    batch.retain(|record| {
        while let Some((&start, &end)) = ranges.peek() {
            if start > record.seq {
                break;
            }
            covered = covered.max(end);
            ranges.next();
        }
        record.seq > covered
    });
}

/// Why an append accepted fewer events than it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendStop {
    /// The queue is full: try the rest again later.
    Full,
    /// The next event belongs to an input unit that is stopping: do not retry as is.
    Sealed {
        /// The input unit that no longer accepts events.
        input_unit: String,
    },
    /// The next event is larger than a queue record can be: never retry it.
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The queue's storage failed (no space left on device, an I/O error): nothing after
    /// the accepted prefix was written; try the rest again later.
    Storage {
        /// The OS error, e.g. `no space left on device (os error 28)`.
        reason: String,
    },
}

/// Whether the queue can store what it is given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QueueHealth {
    /// Writes succeed (or none was tried since the last success).
    #[default]
    Healthy,
    /// The last write failed, and why; appends are refused until a write succeeds again.
    Failing(String),
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// How many events, from the front, were accepted.
    pub accepted: usize,
    /// The sequence number of the last accepted event; `None` when none was.
    pub last_seq: Option<Seq>,
    /// Why the rest was not accepted, when `accepted` is short.
    pub stopped_by: Option<AppendStop>,
}

/// Where a drain ends and how much is left before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The drain is done once the acknowledged prefix reaches this sequence.
    pub seq: Seq,
    /// Unacknowledged records of the drained thing right now.
    pub pending: u64,
}

/// Figures for `/stats` and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// `memory` or `disk`.
    pub kind: &'static str,
    /// Records held (unacknowledged).
    pub events: u64,
    /// Bytes held: payload bytes in memory, file bytes on disk.
    pub bytes: u64,
    /// The most `bytes` may reach (`queue.mem.max_bytes` or `queue.disk.max_size`).
    pub max_bytes: u64,
    /// Last sequence number written.
    pub head: Seq,
    /// Contiguous acknowledged prefix.
    pub acked: Seq,
    /// The oldest unacknowledged sequence number, if any.
    pub oldest_unacked: Option<Seq>,
    /// Group-commit writes (disk).
    pub write_batches: u64,
    /// `fdatasync` calls (disk).
    pub fsyncs: u64,
    /// Damaged segments renamed aside (disk).
    pub quarantined_segments: u64,
    /// Records lost to damage (disk).
    pub corrupted_events: u64,
}

/// Errors that end an operation for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue was closed for shutdown; nothing more is accepted.
    #[error("the queue is closed for shutdown")]
    Closed,
}

impl QueueError {
    /// Whether the same append may succeed later (never, for a closed queue).
    pub fn is_retryable(&self) -> bool {
        match self {
            QueueError::Closed => false,
        }
    }
}

/// The queue interface shared by the memory queue and (later) the disk queue.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Interns a generation and returns its id; the same generation gets the same id.
    fn register(&self, generation: Generation) -> GenerationId;

    /// The generation behind an id.
    fn generation(&self, id: GenerationId) -> Option<Generation>;

    /// Appends events in order, accepting a prefix; resolves once they are as safe as this
    /// queue makes them.
    ///
    /// # Errors
    /// [`QueueError::Closed`] after [`Queue::close`].
    async fn append(&self, events: Vec<(GenerationId, Bytes)>) -> Result<Appended, QueueError>;

    /// Waits for records after the read cursor and returns up to `max_events` of them
    /// (at least one, and no more than `max_bytes` unless the first alone is larger).
    /// Returns `None` once the queue is closed and every record was handed out.
    ///
    /// Cancel safety: cancelling before it resolves loses no record.
    async fn read(&self, max_events: usize, max_bytes: usize) -> Option<Vec<Record>>;

    /// Acknowledges the records `first..=last` (delivered, or dead-lettered on purpose).
    fn ack(&self, first: Seq, last: Seq);

    /// Hands every unacknowledged record out again, from the oldest; used when a reader
    /// gives up on a batch it could not deliver (its output is being replaced).
    fn rewind(&self);

    /// The generations that still have unacknowledged records (records acknowledged
    /// ahead of the prefix may still be counted), in the order they were registered.
    fn pending_generations(&self) -> Vec<(Generation, u64)>;

    /// Refuses further events of `input_unit` and returns its drain barrier.
    fn seal_input(&self, input_unit: &str) -> Barrier;

    /// Accepts events of `input_unit` again (the agent configured it anew).
    fn unseal_input(&self, input_unit: &str);

    /// Unacknowledged records of `input_unit`.
    fn pending_for_input(&self, input_unit: &str) -> u64;

    /// The barrier for everything accepted so far: the write head.
    fn barrier_all(&self) -> Barrier;

    /// Watches the contiguous acknowledged prefix.
    fn acked(&self) -> watch::Receiver<Seq>;

    /// Watches the persisted index reported to inputs.
    fn persisted(&self) -> watch::Receiver<Seq>;

    /// Watches whether the queue can store appends. The memory queue never fails: its
    /// watch stays [`QueueHealth::Healthy`] (and its sender is gone at once).
    fn health(&self) -> watch::Receiver<QueueHealth> {
        watch::channel(QueueHealth::Healthy).1
    }

    /// Stops accepting appends; readers drain what is left, then get `None`.
    fn close(&self);

    /// Makes the queue's state durable (final sync and checkpoint) and stops its
    /// background work; call after [`Queue::close`] and after the readers are done.
    async fn persist(&self);

    /// Current figures.
    fn stats(&self) -> QueueStats;

    /// Names this queue's sequence space: the same for as long as its sequence numbers
    /// stay unique (a disk queue keeps it across restarts, a memory queue has a new one
    /// per process). Outputs combine it with a record's sequence number into an id that
    /// is stable across resends and never reused by another queue.
    fn identity(&self) -> &str;
}
