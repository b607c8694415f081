//! Counters and gauges of the running shipper, and the ways to read them: `GET /stats`
//! (JSON), `GET /metrics` (Prometheus text), `GET /shipper` (what Elastic Agent's
//! self-monitoring scrapes, see [`agent`]), the periodic `metrics` log line, DIAGNOSTICS.
//!
//! # Data flow
//! The pipeline's owner (the supervisor in managed mode, `main` in standalone mode) answers
//! a [`SnapshotRequest`] with a [`PipelineSnapshot`]: raw figures read at one instant (unit
//! states, drains, queue stats, the process-lifetime output counters, DLQ metrics). The
//! [`sampler`] task asks for one every second and turns it into [`Stats`] with what needs
//! history ([`History`]: write and acknowledge rates over the last 10 s, the age of the
//! oldest unacknowledged event), publishes it on a `watch` channel and logs the metrics line
//! with deltas every `logging.metrics.period`. The HTTP endpoint ([`http`]) and DIAGNOSTICS
//! only read that channel: a slow or hostile scraper never reaches the data path or the
//! supervisor, and the figures it sees are at most a second old.
//!
//! # Invariants
//! - Nothing here holds a credential: snapshots carry states, counts and messages that were
//!   already safe to log.
//! - Every loop is paced by a timer and every wait for the owner has a deadline.

pub mod agent;
mod history;
pub mod http;
pub mod prometheus;
pub mod sampler;
mod snapshot;

pub use history::History;
pub(crate) use snapshot::unix_ms_now;
pub use snapshot::{
    DrainSnapshot, OutputSnapshot, PipelineSnapshot, QueueView, Stats, Transition, UnitSnapshot,
};

/// How the sampler asks the pipeline's owner for figures: it sends the reply end.
pub type SnapshotRequest = tokio::sync::oneshot::Sender<PipelineSnapshot>;

/// The latest [`Stats`], `None` until the first sample.
pub type StatsWatch = tokio::sync::watch::Receiver<Option<std::sync::Arc<Stats>>>;
