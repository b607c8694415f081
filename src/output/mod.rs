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
/// the caller).
async fn divert(
    context: &LoopContext,
    metrics: &OutputMetrics,
    records: Vec<Record>,
) -> (Vec<Record>, Vec<(Seq, GenerationId)>) {
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
    handled.extend(
        split
            .dead_letter
            .iter()
            .map(|r| (r.record.seq, r.record.generation)),
    );
    metrics.dead_lettered(split.dead_letter.len() as u64);
    dead_letter(context, split.dead_letter).await;
    (split.keep, handled)
}

/// Dead-letters `rejected` (before their batch is acknowledged, so none is lost between).
async fn dead_letter(context: &LoopContext, rejected: Vec<Rejected>) {
    if rejected.is_empty() {
        return;
    }
    let Some(dead_letters) = &context.dead_letters else {
        tracing::warn!(
            events = rejected.len(),
            "undeliverable events dropped: the dead letter queue is disabled (dlq.enabled: false)"
        );
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let entries = rejected
        .into_iter()
        .map(|r| {
            let generation = context.queue.generation(r.record.generation);
            DlqEntry {
                event: r.record.payload,
                reason: r.reason,
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
    let outcome = dead_letters.dead_letter(entries).await;
    tracing::warn!(
        events = count,
        stored = outcome.written,
        refused = outcome.refused,
        "undeliverable events dead-lettered"
    );
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
            let (keep, _) = divert(&context, &metrics, batch).await;
            batch = keep;
            if batch.is_empty() {
                context.ack(&mut ids);
                break;
            }
            match output.deliver(&batch).await {
                Ok(rejected) => {
                    metrics.dead_lettered(rejected.len() as u64);
                    dead_letter(&context, rejected).await;
                    context.ack(&mut ids);
                    metrics.acked(batch.len() as u64);
                    delivered += batch.len() as u64;
                    health.success();
                    tracing::debug!(first, last, delivered, "batch delivered");
                    break;
                }
                Err(reason) => {
                    tracing::warn!(output = %output.describe(), %reason, retry_in_ms = backoff.as_millis() as u64, "delivery failed; will retry");
                    health.failure(reason, std::time::Instant::now());
                    tokio::select! {
                        _ = cancel.cancelled() => {
                            // Nothing of this batch was acknowledged: let the next reader have it.
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
        }
    }
    tracing::info!(output = %output.describe(), delivered, "output stopped");
}
