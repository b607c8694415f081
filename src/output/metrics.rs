//! Counters of one output: requests, events acknowledged, retried, dead-lettered, by status.

use super::elasticsearch::bulk::ItemOutcome;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Shared mutable state by design: every worker counts here; readers take snapshots.
#[derive(Default)]
pub struct OutputMetrics {
    requests: AtomicU64,
    request_failures: AtomicU64,
    latency_ms_total: AtomicU64,
    events_acked: AtomicU64,
    events_retried: AtomicU64,
    events_dead_lettered: AtomicU64,
    events_duplicate: AtomicU64,
    events_dropped: AtomicU64,
    /// Item and request statuses other than 2xx, counted by status.
    failed_by_status: Mutex<BTreeMap<u16, u64>>,
}

/// A copy of the counters, for diagnostics and `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutputMetricsSnapshot {
    /// Requests sent.
    pub requests: u64,
    /// Requests without a 2xx answer.
    pub request_failures: u64,
    /// Mean request latency in milliseconds.
    pub mean_latency_ms: u64,
    /// Sum of request latencies in milliseconds.
    pub latency_ms_total: u64,
    /// Events acknowledged to the queue (delivered or dead-lettered).
    pub events_acked: u64,
    /// Event sends that will be retried.
    pub events_retried: u64,
    /// Events sent to the dead letter queue.
    pub events_dead_lettered: u64,
    /// Items answered 409 (already indexed by an earlier send).
    pub events_duplicate: u64,
    /// Events of removed inputs skipped on purpose (`on_remove: drop`).
    pub events_dropped: u64,
    /// Failures by HTTP status (items and whole requests).
    pub failed_by_status: BTreeMap<u16, u64>,
}

impl OutputMetrics {
    /// A request finished after `latency`: `Ok` for a 2xx answer, else `Err` with its
    /// status, or `Err(None)` when no answer came (refused, reset, timed out), which is a
    /// failure too.
    pub fn request(&self, latency: Duration, answer: Result<(), Option<u16>>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency_ms_total
            .fetch_add(latency.as_millis() as u64, Ordering::Relaxed);
        if let Err(status) = answer {
            self.request_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(status) = status {
                self.count_status(status);
            }
        }
    }

    /// An item's outcome.
    pub fn item(&self, outcome: &ItemOutcome) {
        match outcome {
            ItemOutcome::Indexed => {}
            ItemOutcome::AlreadyIndexed => {
                self.events_duplicate.fetch_add(1, Ordering::Relaxed);
            }
            ItemOutcome::Retry(reason) | ItemOutcome::Reject(reason) => {
                self.count_status(reason.status.unwrap_or(0));
            }
        }
    }

    fn count_status(&self, status: u16) {
        let mut map = self
            .failed_by_status
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *map.entry(status).or_default() += 1;
    }

    /// Events acknowledged.
    pub fn acked(&self, events: u64) {
        self.events_acked.fetch_add(events, Ordering::Relaxed);
    }

    /// Events to be sent again.
    pub fn retried(&self, events: u64) {
        self.events_retried.fetch_add(events, Ordering::Relaxed);
    }

    /// Events dead-lettered.
    pub fn dead_lettered(&self, events: u64) {
        self.events_dead_lettered
            .fetch_add(events, Ordering::Relaxed);
    }

    /// Events dropped on purpose.
    pub fn dropped(&self, events: u64) {
        self.events_dropped.fetch_add(events, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> OutputMetricsSnapshot {
        let requests = self.requests.load(Ordering::Relaxed);
        let latency_ms_total = self.latency_ms_total.load(Ordering::Relaxed);
        OutputMetricsSnapshot {
            requests,
            latency_ms_total,
            request_failures: self.request_failures.load(Ordering::Relaxed),
            mean_latency_ms: latency_ms_total.checked_div(requests).unwrap_or(0),
            events_acked: self.events_acked.load(Ordering::Relaxed),
            events_retried: self.events_retried.load(Ordering::Relaxed),
            events_dead_lettered: self.events_dead_lettered.load(Ordering::Relaxed),
            events_duplicate: self.events_duplicate.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            failed_by_status: self
                .failed_by_status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}
