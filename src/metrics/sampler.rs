//! The sampling task: one snapshot a second into [`Stats`], and the periodic metrics line.

use super::history::History;
use super::snapshot::Stats;
use super::{PipelineSnapshot, SnapshotRequest, StatsWatch};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How often the pipeline's owner is asked for figures.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How long the owner may take to answer before the sample is skipped.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// Hands a request to the pipeline's owner; false when the owner is gone or busy.
pub type Ask = Box<dyn Fn(SnapshotRequest) -> bool + Send + Sync>;

/// Starts sampling; `log_period` is `logging.metrics.period` (`None`: no metrics line).
/// Returns the watch that `/stats`, `/metrics` and DIAGNOSTICS read.
pub fn spawn(
    ask: Ask,
    log_period: Option<Duration>,
    shutdown: CancellationToken,
) -> (StatsWatch, tokio::task::JoinHandle<()>) {
    let (publish, stats) = watch::channel(None);
    let join = tokio::spawn(run(ask, log_period, publish, shutdown));
    (stats, join)
}

async fn run(
    ask: Ask,
    log_period: Option<Duration>,
    publish: watch::Sender<Option<Arc<Stats>>>,
    shutdown: CancellationToken,
) {
    let mut history = History::new(Instant::now());
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged: Option<(Instant, Arc<Stats>)> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let Some(snapshot) = sample(&ask).await else {
            continue;
        };
        let now = Instant::now();
        let stats = Arc::new(history.observe(now, snapshot));
        publish.send_replace(Some(stats.clone()));
        let Some(period) = log_period else { continue };
        match &logged {
            None => logged = Some((now, stats)),
            Some((at, _)) if now.duration_since(*at) + SAMPLE_EVERY / 2 < period => {}
            Some((at, before)) => {
                log_line(now.duration_since(*at), before, &stats);
                logged = Some((now, stats));
            }
        }
    }
}

async fn sample(ask: &Ask) -> Option<PipelineSnapshot> {
    let (reply, answer) = oneshot::channel();
    if !ask(reply) {
        return None;
    }
    tokio::time::timeout(ANSWER_WITHIN, answer)
        .await
        .ok()
        .and_then(Result::ok)
}

/// The Beats-style line: gauges now, counters as deltas since the previous line.
fn log_line(period: Duration, before: &Stats, now: &Stats) {
    let queue = |s: &Stats| s.queue.as_ref().map(|q| (q.stats.head, q.stats.acked));
    let (written, acked) = match (queue(before), queue(now)) {
        (Some((h0, a0)), Some((h1, a1))) => (h1.saturating_sub(h0), a1.saturating_sub(a0)),
        (None, Some((h1, a1))) => (h1, a1),
        _ => (0, 0),
    };
    let (m0, m1) = (&before.output.metrics, &now.output.metrics);
    let q = now.queue.as_ref();
    tracing::info!(
        target: "agent_shipper::metrics",
        period_ms = period.as_millis() as u64,
        queue_events = q.map(|q| q.stats.events).unwrap_or(0),
        queue_bytes = q.map(|q| q.stats.bytes).unwrap_or(0),
        queue_oldest_unacked_age_ms = q.map(|q| q.oldest_unacked_age_ms).unwrap_or(0),
        events_written = written,
        events_acked = acked,
        output_requests = m1.requests.saturating_sub(m0.requests),
        output_request_failures = m1.request_failures.saturating_sub(m0.request_failures),
        output_events_acked = m1.events_acked.saturating_sub(m0.events_acked),
        output_events_retried = m1.events_retried.saturating_sub(m0.events_retried),
        output_events_dead_lettered = m1.events_dead_lettered.saturating_sub(m0.events_dead_lettered),
        output_events_dropped = m1.events_dropped.saturating_sub(m0.events_dropped),
        dlq_events = now.dlq.as_ref().map(|d| d.entries).unwrap_or(0),
        drains = now.drains.len() as u64,
        "metrics"
    );
}
