//! The supervisor: the one place that decides unit states and owns the pipeline.
//!
//! # What it owns
//! Every unit's [`state::Phase`], the [`Pipeline`] (queue, output task, Producer API
//! listeners, routes) and the process log level. It receives typed expected units from
//! `control` ([`SupervisorCommand`]), drives each unit through the pure state machine in
//! [`state`], performs the resulting actions on the pipeline, and publishes the observed
//! units on a `watch` channel that `control` checks in.
//!
//! # Invariants
//! - A unit's state changes only through [`state::step`]; every change is logged as one
//!   structured line (target `agent_shipper::unit`) with unit id, type, from, to, reason,
//!   policy revision, and pending events while draining.
//! - A unit expected STOPPED reports STOPPING at once and STOPPED only when the queue's
//!   acknowledged prefix reaches its drain barrier (see `queue`).
//! - OUTPUT units are applied before INPUT units of the same expected message, so inputs
//!   route to the output generation that is current.

mod adopt;
mod pipeline;
mod runner;
pub mod state;

pub use pipeline::Pipeline;
pub use runner::Supervisor;

pub use state::{Phase, ReportedState};

use std::fmt;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// The two unit types of the control protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    /// Receives events from an input component.
    Input,
    /// Sends events to the output.
    Output,
}

impl fmt::Display for UnitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnitKind::Input => "input",
            UnitKind::Output => "output",
        })
    }
}

/// Units are keyed by id and type, as in the protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct UnitKey {
    /// The unit id.
    pub id: String,
    /// The unit type.
    pub kind: UnitKind,
}

/// Log levels the agent may ask for, least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// ERROR
    Error,
    /// WARN
    Warn,
    /// INFO
    #[default]
    Info,
    /// DEBUG
    Debug,
    /// TRACE
    Trace,
}

impl LogLevel {
    /// The directive for an `EnvFilter`.
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A unit's config as the agent sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitConfig {
    /// The unit's `source` block.
    pub source: serde_json::Value,
    /// The policy revision it came with.
    pub revision: u64,
}

/// What the agent expects of one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectedUnit {
    /// Which unit.
    pub key: UnitKey,
    /// True when the agent expects it STOPPED.
    pub stopped: bool,
    /// The agent's `config_state_idx`.
    pub config_idx: u64,
    /// The config, sent only while our echoed idx differs.
    pub config: Option<UnitConfig>,
    /// The log level the agent wants for it.
    pub log_level: LogLevel,
}

/// What we report for one unit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ObservedUnit {
    /// Which unit.
    pub key: UnitKey,
    /// Its reported state.
    pub state: ReportedState,
    /// Its message.
    pub message: String,
    /// The idx of the config it has applied (0 = none).
    pub config_idx: u64,
    /// Extra detail, e.g. `{"pending_events": 12}` while draining.
    pub payload: Option<serde_json::Value>,
}

/// Requests to the supervisor that need an answer.
#[derive(Debug)]
pub enum SupervisorCommand {
    /// What a DIAGNOSTICS action returns.
    Diagnostics(oneshot::Sender<DiagnosticsReport>),
    /// Figures for the metrics sampler.
    Snapshot(crate::metrics::SnapshotRequest),
}

/// The supervisor's part of a DIAGNOSTICS answer; `control` turns it into files.
#[derive(Debug, Clone)]
pub struct DiagnosticsReport {
    /// Units, log level and pipeline figures (`units.json`).
    pub units: serde_json::Value,
    /// The figures of this instant, for when the sampler has none yet.
    pub snapshot: crate::metrics::PipelineSnapshot,
    /// The effective configuration, secrets redacted (`config.json`).
    pub config: serde_json::Value,
    /// The most recent unit state changes, oldest first (`transitions.json`).
    pub transitions: Vec<crate::metrics::Transition>,
}

/// The latest complete set of expected units (a reassembled CheckinExpected); `None`
/// until the agent sent one. Latest wins: each set replaces the previous one whole.
pub type ExpectedSet = Option<Arc<Vec<ExpectedUnit>>>;

/// `control`'s ends of the channels to the supervisor. None of them blocks the sender:
/// expected units and observed units are `watch` channels, commands are answered quickly.
pub struct SupervisorLink {
    /// Where expected units go.
    pub expected: watch::Sender<ExpectedSet>,
    /// Questions for the supervisor.
    pub commands: mpsc::Sender<SupervisorCommand>,
    /// What to check in.
    pub observed: watch::Receiver<Vec<ObservedUnit>>,
}
