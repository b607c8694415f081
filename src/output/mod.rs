//! Outputs: read batches from the queue, deliver them, acknowledge them, report health.
//!
//! An output runs as one owned task per OUTPUT unit config. It never drops a record: a
//! batch is acknowledged only once delivered; a failed delivery is retried with backoff
//! and turns the output's health to degraded with the reason. Stopping an output lets the
//! batch in hand finish or hands it back to the queue ([`crate::queue::Queue::rewind`]).

mod document;
mod file;

pub use document::{event_document, DocumentError};
pub use file::FileOutput;

use crate::config::OutputKind;
use crate::queue::Queue;
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

/// A running output task; dropping it does not stop the task, [`OutputTask::stop`] does.
pub struct OutputTask {
    cancel: CancellationToken,
    join: JoinHandle<()>,
    health: watch::Receiver<OutputHealth>,
}

impl OutputTask {
    /// Starts the output described by `kind`, reading from `queue`.
    pub fn spawn(kind: &OutputKind, queue: Arc<dyn Queue>) -> Self {
        let cancel = CancellationToken::new();
        let (health_tx, health) = watch::channel(OutputHealth::Healthy);
        let join = match kind {
            OutputKind::File(config) => {
                let output = FileOutput::new(config.clone());
                tokio::spawn(run_loop(output, queue, health_tx, cancel.clone()))
            }
        };
        OutputTask {
            cancel,
            join,
            health,
        }
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
    }
}

/// A destination a batch of records can be delivered to.
#[async_trait::async_trait]
pub trait Deliver: Send + 'static {
    /// Delivers every record or fails as a whole; a failure is retried by the caller.
    async fn deliver(&mut self, records: &[crate::queue::Record]) -> Result<(), String>;
    /// Short description for logs, e.g. `file /var/out.ndjson`.
    fn describe(&self) -> String;
}

async fn run_loop<D: Deliver>(
    mut output: D,
    queue: Arc<dyn Queue>,
    health: watch::Sender<OutputHealth>,
    cancel: CancellationToken,
) {
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
        let mut backoff = Duration::from_millis(100);
        loop {
            match output.deliver(&batch).await {
                Ok(()) => {
                    queue.ack(first, last);
                    delivered += batch.len() as u64;
                    health.send_if_modified(|h| {
                        let changed = *h != OutputHealth::Healthy;
                        *h = OutputHealth::Healthy;
                        changed
                    });
                    tracing::debug!(first, last, delivered, "batch delivered");
                    break;
                }
                Err(reason) => {
                    tracing::warn!(output = %output.describe(), %reason, retry_in_ms = backoff.as_millis() as u64, "delivery failed; will retry");
                    health.send_replace(OutputHealth::Degraded(reason));
                    tokio::select! {
                        _ = cancel.cancelled() => {
                            // Nothing of this batch was acknowledged: let the next reader have it.
                            queue.rewind();
                            tracing::info!(output = %output.describe(), delivered, "output stopped");
                            return;
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    tracing::info!(output = %output.describe(), delivered, "output stopped");
}
