//! The dead letter queue: events that can never be delivered, kept where a person can
//! see, count and replay them, with size and age retention.
//!
//! # What it owns
//! `<path.data>/dlq/`. Entries (`entry.rs`: the original event, the reason, the units,
//! the policy revision, the time) are frames in segments of the queue's format
//! (`queue/disk/frame.rs`, `segment.rs`). The head segment (`head.dlq.tmp`) is invisible
//! to readers; it is sealed, renamed to `<first-seq>-<count>-<newest-ms>.dlq`, on size,
//! every `flush_interval`, and on shutdown. The name carries what retention needs, so no
//! segment is read to decide its fate.
//!
//! # Retention (Logstash's rules, and what they missed)
//! - `max_bytes` bounds all segments: `drop_newer` (default) refuses a new entry that does
//!   not fit; `drop_older` deletes the oldest segments until it fits. Both count what
//!   they drop (`dropped_events`; Logstash did not count `drop_older`), with one log line
//!   per decision.
//! - `retain.age` deletes whole segments, oldest first, once their newest entry is older:
//!   checked on every write and on a timer ([`DeadLetters::spawn_timer`]), so an idle DLQ
//!   still expires. Counted as `expired_events`.
//! - Readers ([`DlqReader`]) see only sealed segments and move on when one is deleted
//!   under them. A crash mid-write leaves the head; the next open keeps its whole
//!   entries and seals it, cutting a torn tail (counted as `damaged_heads`).
//!
//! # Durability
//! A write is answered only after `fdatasync` of the head (and a directory fsync for a
//! new head, a seal or a rename), so the output acknowledges a record only once its entry
//! survives a power loss. Every file operation goes through a [`crate::queue::SegmentIo`],
//! so the power-loss model test (`queue/disk/crash_model.rs`) sees and checks them.

pub mod cli;
mod entry;
mod reader;
mod store;

pub use entry::{DlqEntry, EntryError, Reason};
pub use reader::{read_entries, DlqReader, SegmentEntries};
pub use store::{
    list_sealed, DeadLetterQueue, DlqMetrics, DlqSettings, SealedSegment, StoragePolicy,
    WriteOutcome,
};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Errors of the DLQ's files.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// The file is not there (deleted by retention, replay or purge).
    #[error("{0}: no such file")]
    NotFound(PathBuf),
    /// Any other I/O problem or unreadable header.
    #[error("{path}: {message}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl DlqError {
    fn io(path: &Path, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::NotFound {
            DlqError::NotFound(path.to_path_buf())
        } else {
            DlqError::Io {
                path: path.to_path_buf(),
                message: err.to_string(),
            }
        }
    }
}

/// Where "now" comes from, so retention can be tested on a controlled clock.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Pauses before each attempt to store entries the files failed to take (the first is
/// immediate): bounded, so a failing disk delays an output by well under a second per
/// batch before it backs off with the records unacknowledged.
const RETRY_PAUSES_MS: [u64; 3] = [0, 50, 200];

/// The one interface the output and the supervisor use to dead-letter events: async, so
/// the store's blocking writes run off the runtime threads.
#[derive(Clone)]
pub struct DeadLetters {
    store: Arc<DeadLetterQueue>,
}

impl DeadLetters {
    /// Wraps an open store.
    pub fn new(store: DeadLetterQueue) -> Self {
        DeadLetters {
            store: Arc::new(store),
        }
    }

    /// Stores entries; what does not fit is handled by the storage policy and counted.
    /// Entries the files fail to take (a failed write or `fdatasync`) are tried again a
    /// few times; the indices (into `entries`) of those still not stored are returned:
    /// their records must not be acknowledged.
    pub async fn dead_letter(&self, entries: Vec<DlqEntry>) -> (WriteOutcome, Vec<usize>) {
        let mut total = WriteOutcome::default();
        // Original index of each entry still to store.
        let mut pending: Vec<usize> = (0..entries.len()).collect();
        let entries = Arc::new(entries);
        for (attempt, pause_ms) in RETRY_PAUSES_MS.iter().enumerate() {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(*pause_ms)).await;
            }
            let store = self.store.clone();
            let all = entries.clone();
            let indices = pending.clone();
            let attempted = tokio::task::spawn_blocking(move || {
                let batch: Vec<DlqEntry> = indices.iter().map(|&i| all[i].clone()).collect();
                store.write_entries(&batch)
            })
            .await;
            let (outcome, failed) = match attempted {
                Ok(result) => result,
                Err(err) => {
                    tracing::error!(error = %err, "DLQ writer task failed");
                    break;
                }
            };
            total.written += outcome.written;
            total.refused += outcome.refused;
            pending = failed.iter().map(|&i| pending[i]).collect();
            if pending.is_empty() {
                break;
            }
        }
        total.failed = pending.len();
        (total, pending)
    }

    /// Seals the head and applies age retention every `period` until `stop`.
    pub fn spawn_timer(
        &self,
        period: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let store = store.clone();
                let _ = tokio::task::spawn_blocking(move || store.tick()).await;
            }
        })
    }

    /// Seals the head (shutdown).
    pub async fn flush(&self) {
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
    }

    /// Current figures.
    pub fn metrics(&self) -> DlqMetrics {
        self.store.metrics()
    }
}

#[cfg(test)]
mod tests;
