//! The figures of one instant: what the pipeline's owner reports, and what `/stats` serves.

use crate::config::OnRemove;
use crate::dlq::DlqMetrics;
use crate::output::OutputMetricsSnapshot;
use crate::queue::{QueueStats, Seq};
use crate::supervisor::{ReportedState, UnitKind};
use serde::Serialize;

/// One unit as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitSnapshot {
    /// The unit id.
    pub id: String,
    /// `input` or `output`.
    #[serde(rename = "type")]
    pub kind: UnitKind,
    /// Its reported state.
    pub state: ReportedState,
    /// Its reported message.
    pub message: String,
    /// The `config_state_idx` it has applied (0 = none).
    pub config_idx: u64,
    /// The policy revision of its config (0 = none yet).
    pub revision: u64,
}

/// A unit draining its queued events (reported STOPPING).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrainSnapshot {
    /// The unit id.
    pub unit_id: String,
    /// `input` or `output`.
    pub unit_type: UnitKind,
    /// Events of the unit not yet acknowledged.
    pub pending_events: u64,
    /// The drain ends when the acknowledged prefix reaches this sequence number.
    pub barrier: Seq,
    /// How long the drain has been running.
    pub running_ms: u64,
    /// What happens to the unit's events (`drain`, `dead_letter`, `drop`).
    pub on_remove: OnRemove,
    /// The drain's time limit, if it has one.
    pub timeout_ms: Option<u64>,
}

/// The output currently delivering.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputSnapshot {
    /// The OUTPUT unit.
    pub unit_id: String,
    /// Its `config_state_idx`.
    pub config_idx: u64,
    /// `elasticsearch` or `file`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `healthy` or `degraded`.
    pub health: &'static str,
    /// Why it is degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
}

/// A unit state change, kept for DIAGNOSTICS (the same facts as its log line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The unit id.
    pub unit_id: String,
    /// `input` or `output`.
    pub unit_type: UnitKind,
    /// The state before.
    pub from: ReportedState,
    /// The state after.
    pub to: ReportedState,
    /// The unit's message after the change.
    pub reason: String,
    /// The policy revision of the unit's config.
    pub revision: u64,
    /// Events being drained, for STOPPING.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_events: Option<u64>,
}

/// Raw figures from the pipeline's owner, read at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineSnapshot {
    /// Every unit (empty in standalone mode).
    pub units: Vec<UnitSnapshot>,
    /// Units draining now.
    pub drains: Vec<DrainSnapshot>,
    /// The queue, once one exists.
    pub queue: Option<QueueStats>,
    /// The output delivering now, if any.
    pub output: Option<OutputSnapshot>,
    /// Output counters over the whole process run (every output generation).
    pub output_metrics: OutputMetricsSnapshot,
    /// The dead letter queue, once one exists.
    pub dlq: Option<DlqMetrics>,
}

/// The queue's figures plus what needs history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueView {
    /// The queue's own figures.
    #[serde(flatten)]
    pub stats: QueueStats,
    /// Milliseconds since the oldest unacknowledged event was written (0 when empty; events
    /// queued before this process started count from its start, so it is a lower bound).
    pub oldest_unacked_age_ms: u64,
    /// Events written per second over the last 10 s.
    pub write_rate_per_s: f64,
    /// Events acknowledged per second over the last 10 s.
    pub ack_rate_per_s: f64,
    /// Samples (one a second) at which the queue held 90% or more of `max_bytes`.
    pub full_samples: u64,
}

/// The output's counters and, when one runs, which one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputView {
    /// The output delivering now.
    #[serde(flatten)]
    pub current: Option<OutputSnapshot>,
    /// Counters over the process run.
    #[serde(flatten)]
    pub metrics: OutputMetricsSnapshot,
}

/// What `GET /stats` returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// The shipper's version.
    pub version: &'static str,
    /// Wall-clock time of the sample, milliseconds since the Unix epoch.
    pub taken_at_unix_ms: u64,
    /// Milliseconds since the process started sampling.
    pub uptime_ms: u64,
    /// Every unit.
    pub units: Vec<UnitSnapshot>,
    /// Drains in progress.
    pub drains: Vec<DrainSnapshot>,
    /// The queue, once one exists.
    pub queue: Option<QueueView>,
    /// The output.
    pub output: OutputView,
    /// The dead letter queue, once one exists.
    pub dlq: Option<DlqMetrics>,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
