//! Outputs: read batches from the queue, deliver them, acknowledge them, report health.
//!
//! An output runs as one owned task per OUTPUT unit config. It never drops a record: a
//! batch is acknowledged only once delivered; a failed delivery is retried with backoff
//! and turns the output's health to degraded with the reason; so does a queue that cannot
//! store events (a full disk: `queue: <reason>`, see `health::merge`). Stopping an output lets the
//! batch in hand finish or hands it back to the queue ([`crate::queue::Queue::rewind`]).

mod backoff;
mod divert;
pub mod document;
pub mod elasticsearch;
mod file;
mod health;
mod ledger;
mod metrics;

pub use backoff::Backoff;
pub use divert::{Diversions, DivertTo};
pub use document::{event_document, DocumentError};
pub use file::FileOutput;
pub use health::HealthTracker;
pub use ledger::AckLedger;
pub use metrics::{OutputMetrics, OutputMetricsSnapshot};

use crate::config::OutputKind;
use crate::dlq::{DeadLetters, DlqEntry, Reason};
use crate::queue::{GenerationId, Queue, Record, Seq};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most records per batch handed to an output.
const BATCH_EVENTS: usize = 2048;
/// Most payload bytes per batch handed to an output.
const BATCH_BYTES: usize = 4 << 20;

/// What an output says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputHealth {
    /// Delivering.
    Healthy,
    /// Not delivering, and why.
    Degraded(String),
}

/// What the supervisor and the output tasks share about drains.
#[derive(Debug, Default)]
pub struct Drains {
    /// Records of stopped inputs to dead-letter or drop instead of sending.
    pub diversions: Diversions,
    /// Records acknowledged ahead of the queue's acknowledged prefix.
    pub ledger: AckLedger,
}

/// One OUTPUT unit config: the unit, its `config_state_idx`, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputGeneration {
    /// The OUTPUT unit.
    pub unit_id: String,
    /// Its config idx.
    pub config_idx: u64,
    /// The output it describes (with its credentials).
    pub kind: OutputKind,
}

/// A running output task; dropping it does not stop the task, [`OutputTask::stop`] does.
pub struct OutputTask {
    cancel: CancellationToken,
    join: JoinHandle<()>,
    /// Merges the queue's health into the output's; stopped with `cancel`.
    health_merge: JoinHandle<()>,
    health: watch::Receiver<OutputHealth>,
}

impl OutputTask {
    /// Starts the output `current` describes, reading from `queue`. Records accepted under
    /// one of the `earlier` generations are sent with that generation's credentials where
    /// the output supports it. Records it rejects for good go to `dead_letters` (or are
    /// dropped and counted when there is no DLQ). It counts into `metrics`, which outlives
    /// it: the process's counters span every output generation.
    ///
    /// # Errors
    /// The output cannot be built from its config (e.g. an unreadable CA file); the message
    /// names the key.
    pub fn spawn(
        current: &OutputGeneration,
        earlier: &[OutputGeneration],
        queue: Arc<dyn Queue>,
        dead_letters: Option<DeadLetters>,
        drains: Arc<Drains>,
        revision: u64,
        metrics: Arc<OutputMetrics>,
    ) -> Result<Self, String> {
        let cancel = CancellationToken::new();
        let degraded_after = match &current.kind {
            OutputKind::File(_) => Duration::ZERO,
            OutputKind::Elasticsearch(es) => es.degraded_timeout.get(),
        };
        let (tracker, output_health) = HealthTracker::new(degraded_after);
        let tracker = Arc::new(tracker);
        let queue_health = queue.health();
        let context = LoopContext {
            acked: queue.acked(),
            queue,
            health: tracker.clone(),
            cancel: cancel.clone(),
            dead_letters,
            drains,
            revision,
        };
        let join = match &current.kind {
            OutputKind::File(config) => {
                let output = FileOutput::new(config.clone());
                tokio::spawn(run_loop(output, context, metrics))
            }
            OutputKind::Elasticsearch(config) => {
                let clients = elasticsearch::prepare(current, config, earlier)
                    .map_err(|err| err.to_string())?;
                tokio::spawn(elasticsearch::run(
                    config.clone(),
                    clients,
                    context,
                    tracker,
                    metrics,
                ))
            }
        };
        // Spawned once the output is built, so a config error leaves no task behind.
        let (combined, health) = watch::channel(OutputHealth::Healthy);
        let health_merge = tokio::spawn(health::merge(
            output_health,
            queue_health,
            combined,
            cancel.clone(),
        ));
        Ok(OutputTask {
            cancel,
            join,
            health_merge,
            health,
        })
    }

    /// Watches the output's health.
    pub fn health(&self) -> watch::Receiver<OutputHealth> {
        self.health.clone()
    }

    /// Stops the task and waits for it; the batch in hand is finished or handed back.
    pub async fn stop(self) {
        self.cancel.cancel();
        if let Err(err) = self.join.await {
            tracing::error!(error = %err, "output task ended abnormally");
        }
        let _ = self.health_merge.await;
    }
}

/// A record the output can never deliver, and why.
#[derive(Debug)]
pub struct Rejected {
    /// The record.
    pub record: Record,
    /// Why: this goes into the dead letter entry.
    pub reason: Reason,
}

/// A destination a batch of records can be delivered to.
#[async_trait::async_trait]
pub trait Deliver: Send + 'static {
    /// Delivers the batch or fails as a whole (a failure is retried by the caller). On
    /// success, returns the records that can never be delivered, for the DLQ.
    async fn deliver(&mut self, records: &[Record]) -> Result<Vec<Rejected>, String>;
    /// Short description for logs, e.g. `file /var/out.ndjson`.
    fn describe(&self) -> String;
}

/// What the output loop works with besides its destination.
#[derive(Clone)]
pub(crate) struct LoopContext {
    queue: Arc<dyn Queue>,
    /// The queue's acknowledged prefix.
    acked: watch::Receiver<Seq>,
    health: Arc<HealthTracker>,
    cancel: CancellationToken,
    dead_letters: Option<DeadLetters>,
    drains: Arc<Drains>,
    revision: u64,
}

impl LoopContext {
    /// Acknowledges `records` (sequence number and generation each) to the queue as
    /// contiguous ranges, and notes them for the drains of their units.
    fn ack(&self, records: &mut [(Seq, GenerationId)]) {
        if records.is_empty() {
            return;
        }
        records.sort_unstable();
        let mut first = records[0].0;
        let mut last = first;
        for &(seq, _) in &records[1..] {
            if seq == last + 1 || seq == last {
                last = seq;
            } else {
                self.queue.ack(first, last);
                first = seq;
                last = seq;
            }
        }
        self.queue.ack(first, last);
        let prefix = *self.acked.borrow();
        self.drains.ledger.note(records, prefix);
    }

    /// Resolves when the diversion rules change (a drain timed out): a retry waiting in
    /// its backoff looks at them at once.
    async fn diversions_changed(&self, seen: &mut watch::Receiver<u64>) {
        if seen.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Applies the diversion rules to `records`: dead-letters and drops what they say and
/// returns the records still to send, with the records it handled (to be acknowledged by
/// the caller). Records the DLQ failed to store are handled by neither: they come back
/// with the records still to send, so they stay unacknowledged until stored or delivered.
async fn divert(
    context: &LoopContext,
    metrics: &OutputMetrics,
    records: Vec<Record>,
) -> (Vec<Record>, Vec<(Seq, GenerationId)>) {
    let (mut keep, handled, unstored) = divert_detailed(context, metrics, records).await;
    if !unstored.is_empty() {
        keep.extend(unstored);
        keep.sort_unstable_by_key(|r| r.seq);
    }
    (keep, handled)
}

/// [`divert`], returning apart the records to dead-letter that the DLQ failed to store.
async fn divert_detailed(
    context: &LoopContext,
    metrics: &OutputMetrics,
    records: Vec<Record>,
) -> (Vec<Record>, Vec<(Seq, GenerationId)>, Vec<Record>) {
    let split = context
        .drains
        .diversions
        .split(context.queue.as_ref(), records);
    let mut handled: Vec<(Seq, GenerationId)> = split.dropped;
    if !handled.is_empty() {
        metrics.dropped(handled.len() as u64);
        tracing::info!(
            events = handled.len(),
            "queued events of a removed input dropped (on_remove: drop)"
        );
    }
    let mut stored: Vec<(Seq, GenerationId)> = split
        .dead_letter
        .iter()
        .map(|r| (r.record.seq, r.record.generation))
        .collect();
    let count = stored.len();
    let unstored: Vec<Record> = dead_letter(context, split.dead_letter)
        .await
        .into_iter()
        .map(|r| r.record)
        .collect();
    stored.retain(|(seq, _)| !unstored.iter().any(|r| r.seq == *seq));
    metrics.dead_lettered((count - unstored.len()) as u64);
    handled.extend(stored);
    (split.keep, handled, unstored)
}

/// Dead-letters `rejected` (before their batch is acknowledged, so none is lost between).
/// Returns those the DLQ could not store (its files failed): the caller must not
/// acknowledge them.
async fn dead_letter(context: &LoopContext, rejected: Vec<Rejected>) -> Vec<Rejected> {
    if rejected.is_empty() {
        return Vec::new();
    }
    let Some(dead_letters) = &context.dead_letters else {
        tracing::warn!(
            events = rejected.len(),
            "undeliverable events dropped: the dead letter queue is disabled (dlq.enabled: false)"
        );
        return Vec::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let entries = rejected
        .iter()
        .map(|r| {
            let generation = context.queue.generation(r.record.generation);
            DlqEntry {
                event: r.record.payload.clone(),
                reason: r.reason.clone(),
                input_unit: generation
                    .as_ref()
                    .map(|g| g.input_unit.clone())
                    .unwrap_or_default(),
                output_unit: generation.map(|g| g.output_unit).unwrap_or_default(),
                revision: context.revision,
                dead_lettered_at_ms: now,
            }
        })
        .collect::<Vec<_>>();
    let count = entries.len();
    let (outcome, failed) = dead_letters.dead_letter(entries).await;
    tracing::warn!(
        events = count,
        stored = outcome.written,
        refused = outcome.refused,
        failed = outcome.failed,
        "undeliverable events dead-lettered"
    );
    let mut rejected: Vec<Option<Rejected>> = rejected.into_iter().map(Some).collect();
    failed
        .into_iter()
        .filter_map(|i| rejected.get_mut(i)?.take())
        .collect()
}

/// Why records wait: the DLQ could not store some of them (with its last error).
fn dlq_failure(context: &LoopContext) -> String {
    let last_error = context
        .dead_letters
        .as_ref()
        .and_then(|d| d.metrics().last_error)
        .unwrap_or_else(|| "unknown error".into());
    format!("dead letter queue cannot store undeliverable events (they stay queued): {last_error}")
}

async fn run_loop<D: Deliver>(mut output: D, context: LoopContext, metrics: Arc<OutputMetrics>) {
    let LoopContext {
        queue,
        health,
        cancel,
        ..
    } = &context;
    tracing::info!(output = %output.describe(), "output started");
    let mut delivered: u64 = 0;
    loop {
        let batch = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            batch = queue.read(BATCH_EVENTS, BATCH_BYTES) => batch,
        };
        let Some(batch) = batch else { break };
        let (first, last) = match (batch.first(), batch.last()) {
            (Some(first), Some(last)) => (first.seq, last.seq),
            _ => continue,
        };
        let mut ids: Vec<(Seq, GenerationId)> =
            batch.iter().map(|r| (r.seq, r.generation)).collect();
        let mut rules = context.drains.diversions.subscribe();
        let mut backoff = Duration::from_millis(100);
        let mut batch = batch;
        loop {
            let (keep, mut handled, unstored) = divert_detailed(&context, &metrics, batch).await;
            // What the rules handled is acknowledged now, so a rewind never diverts it twice.
            if !handled.is_empty() {
                let gone: std::collections::HashSet<Seq> = handled.iter().map(|h| h.0).collect();
                ids.retain(|(seq, _)| !gone.contains(seq));
                context.ack(&mut handled);
            }
            batch = keep;
            // Whatever the DLQ could not store goes round again after a pause; the rest of
            // the batch is acknowledged only once each of its records is handled.
            let reason = if !unstored.is_empty() {
                batch.extend(unstored);
                batch.sort_unstable_by_key(|r| r.seq);
                dlq_failure(&context)
            } else if batch.is_empty() {
                context.ack(&mut ids);
                break;
            } else {
                match output.deliver(&batch).await {
                    Ok(rejected) => {
                        let count = rejected.len();
                        let unstored = dead_letter(&context, rejected).await;
                        metrics.dead_lettered((count - unstored.len()) as u64);
                        if unstored.is_empty() {
                            context.ack(&mut ids);
                            metrics.acked(batch.len() as u64);
                            delivered += batch.len() as u64;
                            health.success();
                            tracing::debug!(first, last, delivered, "batch delivered");
                            break;
                        }
                        // Delivered (or stored) now, so not written twice by another reader.
                        let held: Vec<Record> = unstored.into_iter().map(|r| r.record).collect();
                        let kept: std::collections::HashSet<Seq> =
                            held.iter().map(|r| r.seq).collect();
                        let (mut done, rest): (Vec<_>, Vec<_>) =
                            ids.into_iter().partition(|(seq, _)| !kept.contains(seq));
                        context.ack(&mut done);
                        ids = rest;
                        batch = held;
                        dlq_failure(&context)
                    }
                    Err(reason) => reason,
                }
            };
            tracing::warn!(output = %output.describe(), %reason, retry_in_ms = backoff.as_millis() as u64, "delivery failed; will retry");
            health.failure(reason, std::time::Instant::now());
            tokio::select! {
                _ = cancel.cancelled() => {
                    // What of this batch is not acknowledged goes to the next reader.
                    queue.rewind();
                    tracing::info!(output = %output.describe(), delivered, "output stopped");
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
                _ = context.diversions_changed(&mut rules) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
    tracing::info!(output = %output.describe(), delivered, "output stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, FileOutputConfig};
    use crate::dlq::{DeadLetterQueue, DlqSettings, StoragePolicy, SystemClock};
    use crate::queue::disk::OsIo;
    use crate::queue::{Generation, MemoryQueue, SegmentIo};
    use prost::Message;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// DLQ file I/O whose `fdatasync` fails while `fail` is set.
    #[derive(Default)]
    struct FlakySync {
        fail: AtomicBool,
    }

    impl SegmentIo for FlakySync {
        fn write_all_at(
            &self,
            file: &std::fs::File,
            buf: &[u8],
            offset: u64,
        ) -> std::io::Result<()> {
            OsIo.write_all_at(file, buf, offset)
        }

        fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(5));
            }
            OsIo.sync_data(file)
        }
    }

    async fn until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Issue 14, 2.8: an undeliverable record whose DLQ write fails its `fdatasync` is not
    /// acknowledged: it stays queued and is dead-lettered (once) when the DLQ works again.
    #[tokio::test]
    async fn scenario_2_8_a_record_is_not_acknowledged_when_its_dlq_sync_fails() {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(FlakySync::default());
        io.fail.store(true, Ordering::SeqCst);
        let store = DeadLetterQueue::open_with_io(
            DlqSettings {
                dir: dir.path().join("dlq"),
                max_bytes: 1 << 20,
                storage_policy: StoragePolicy::DropNewer,
                retain_age: None,
                flush_interval: Duration::from_secs(5),
            },
            Arc::new(SystemClock),
            io.clone(),
        )
        .unwrap();
        let dead_letters = DeadLetters::new(store);
        let queue: Arc<dyn Queue> = Arc::new(MemoryQueue::new(100, 1 << 20));
        let gen = queue.register(Generation {
            input_unit: "in".into(),
            output_unit: "out".into(),
            output_config_idx: 1,
        });
        let good = crate::proto::shipper::messages::Event::default().encode_to_vec();
        queue
            .append(vec![
                (gen, good.clone().into()),
                (gen, bytes::Bytes::from_static(b"\xff\xff\xff")),
                (gen, good.into()),
            ])
            .await
            .unwrap();
        let out = dir.path().join("events.ndjson");
        let output = FileOutput::new(FileOutputConfig {
            path: out.clone(),
            rotate_every_bytes: ByteSize(1 << 20),
            number_of_files: 2,
        });
        let (tracker, _health) = HealthTracker::new(Duration::ZERO);
        let cancel = CancellationToken::new();
        let context = LoopContext {
            queue: queue.clone(),
            health: Arc::new(tracker),
            cancel: cancel.clone(),
            acked: queue.acked(),
            dead_letters: Some(dead_letters.clone()),
            drains: Arc::new(Drains::default()),
            revision: 1,
        };
        let task = tokio::spawn(run_loop(
            output,
            context,
            Arc::new(OutputMetrics::default()),
        ));
        until("the DLQ sync failed", || {
            dead_letters
                .metrics()
                .last_error
                .is_some_and(|e| e.contains("fdatasync"))
        })
        .await;
        until("the good records written", || {
            std::fs::read_to_string(&out).is_ok_and(|t| t.lines().count() == 2)
        })
        .await;
        // The records around it are acknowledged, it is not.
        let mut acked = queue.acked();
        tokio::time::timeout(Duration::from_secs(10), acked.wait_for(|a| *a >= 1))
            .await
            .expect("the delivered record acknowledged")
            .unwrap();
        assert_eq!(
            *acked.borrow(),
            1,
            "the undeliverable record was acknowledged"
        );
        assert_eq!(dead_letters.metrics().entries, 0);

        io.fail.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(60), acked.wait_for(|a| *a == 3))
            .await
            .expect("acknowledged once the DLQ works")
            .unwrap();
        assert_eq!(dead_letters.metrics().entries, 1);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().lines().count(),
            2,
            "the delivered records were not written twice"
        );
        cancel.cancel();
        task.await.unwrap();
    }
}
