//! The supervisor's async shell: turns commands and pipeline signals into state-machine
//! events, performs the actions, logs transitions and publishes observed units.

use super::state::{self, Action, Phase, UnitEvent};
use super::{
    DiagnosticsReport, ExpectedSet, ExpectedUnit, LogLevel, ObservedUnit, Pipeline,
    SupervisorCommand, SupervisorLink, UnitConfig, UnitKey, UnitKind,
};
use crate::config::{InputUnitConfig, OnRemove, OutputConfig, UnknownKeys};
use crate::dlq::Reason;
use crate::logging::LogControl;
use crate::metrics::{DrainSnapshot, PipelineSnapshot, Transition, UnitSnapshot};
use crate::output::DivertTo;
use crate::output::OutputHealth;
use crate::queue::{Barrier, Seq};
use crate::storage::{DirLock, LockError};
use std::collections::{BTreeMap, VecDeque};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

struct UnitRecord {
    phase: Phase,
    applied_idx: u64,
    config: Option<UnitConfig>,
    log_level: LogLevel,
    drain: Option<Barrier>,
    /// When a drain with a `drain_timeout` must end, and that timeout.
    drain_deadline: Option<(tokio::time::Instant, std::time::Duration)>,
    /// Set once the drain timed out (its remaining events go to the DLQ).
    drain_timed_out: bool,
    /// After a timeout: when the drain ends even if the output has not diverted every
    /// record yet (it is stuck, or there is none).
    drain_grace_until: Option<tokio::time::Instant>,
    /// When drain progress was last logged (at most once a second).
    progress_logged: Option<std::time::Instant>,
    /// When the current drain began.
    drain_started: Option<std::time::Instant>,
}

/// How long after `drain_timeout` the output has to divert the records left before the
/// drain ends anyway; the rest are diverted when the output reaches them.
const DIVERT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How many unit state changes DIAGNOSTICS keeps.
const TRANSITIONS_KEPT: usize = 256;

/// Owns the units and the pipeline; see the module docs of [`crate::supervisor`].
pub struct Supervisor {
    units: BTreeMap<UnitKey, UnitRecord>,
    pipeline: Pipeline,
    observed: watch::Sender<Vec<ObservedUnit>>,
    log_control: Option<LogControl>,
    log_level: LogLevel,
    acked: Option<watch::Receiver<Seq>>,
    /// Wakes when records are acknowledged ahead of the prefix (a drain may be done).
    acked_ahead: watch::Receiver<u64>,
    /// When the acknowledged prefix last moved (for the ack → STOPPED latency).
    acked_moved_at: std::time::Instant,
    health: Option<watch::Receiver<OutputHealth>>,
    expected: watch::Receiver<ExpectedSet>,
    commands: mpsc::Receiver<SupervisorCommand>,
    /// The last [`TRANSITIONS_KEPT`] unit state changes, oldest first.
    transitions: VecDeque<Transition>,
    /// While another process holds the storage directory: the wait for its lock, and
    /// why units are not configured yet (reported as their message).
    storage_wait: Option<StorageWait>,
}

/// A wait for the storage directory's lock.
struct StorageWait {
    task: tokio::task::JoinHandle<Result<Option<DirLock>, LockError>>,
    reason: watch::Receiver<String>,
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What happened to the storage lock wait.
enum StorageEvent {
    /// The wait ended: the lock, a shutdown (`None`), or an error.
    Done(Result<Option<DirLock>, LockError>),
    /// The reason reported to the agent changed (another holder).
    Reason,
}

/// The next [`StorageEvent`]; pending while there is no wait.
async fn storage_event(wait: &mut Option<StorageWait>) -> StorageEvent {
    let Some(wait) = wait else {
        return std::future::pending().await;
    };
    tokio::select! {
        joined = &mut wait.task => StorageEvent::Done(match joined {
            Ok(outcome) => outcome,
            Err(err) => Err(LockError::Io {
                path: std::path::PathBuf::new(),
                source: std::io::Error::other(err.to_string()),
            }),
        }),
        Ok(()) = wait.reason.changed() => StorageEvent::Reason,
    }
}

async fn changed<T>(receiver: &mut Option<watch::Receiver<T>>) -> bool {
    match receiver {
        Some(receiver) => receiver.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// A supervisor over `pipeline`; `log_control` applies the agent's log levels (its
    /// base level, `-E logging.level`, holds while no unit names one). The returned link is
    /// `control`'s side of the channels.
    pub fn new(pipeline: Pipeline, log_control: Option<LogControl>) -> (Self, SupervisorLink) {
        let base_level = log_control
            .as_ref()
            .map(LogControl::base)
            .unwrap_or_default();
        let (observed, observed_rx) = watch::channel(Vec::new());
        let (expected_tx, expected) = watch::channel(None);
        let (commands_tx, commands) = mpsc::channel(8);
        let acked_ahead = pipeline.acked_ahead();
        let supervisor = Supervisor {
            units: BTreeMap::new(),
            pipeline,
            observed,
            log_control,
            log_level: base_level,
            acked: None,
            acked_ahead,
            acked_moved_at: std::time::Instant::now(),
            health: None,
            expected,
            commands,
            transitions: VecDeque::new(),
            storage_wait: None,
        };
        let link = SupervisorLink {
            expected: expected_tx,
            commands: commands_tx,
            observed: observed_rx,
        };
        (supervisor, link)
    }

    /// Runs until `shutdown` or until `control` is gone; returns the pipeline so the
    /// caller can shut it down within its deadline.
    pub async fn run(mut self, shutdown: CancellationToken) -> Pipeline {
        self.start_storage_wait(&shutdown);
        loop {
            let drain_deadline = self.next_drain_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = storage_event(&mut self.storage_wait) => {
                    let StorageEvent::Done(outcome) = event else {
                        // A new holder or reason: published below.
                        self.publish_observed();
                        continue;
                    };
                    self.storage_wait = None;
                    match outcome {
                        Ok(Some(lock)) => self.pipeline.storage_locked_by(lock),
                        Ok(None) => {}
                        // The configs are applied anyway: opening the queue names the error.
                        Err(err) => tracing::error!(error = %err, "cannot lock the storage directory"),
                    }
                    let expected = self.expected.borrow().clone();
                    if let Some(units) = expected {
                        self.reconcile(units.as_ref().clone()).await;
                    }
                }
                changed = self.expected.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let expected = self.expected.borrow_and_update().clone();
                    if let Some(units) = expected {
                        self.reconcile(units.as_ref().clone()).await;
                    }
                }
                Some(command) = self.commands.recv() => match command {
                    SupervisorCommand::Diagnostics(reply) => {
                        let _ = reply.send(DiagnosticsReport {
                            units: self.snapshot(),
                            snapshot: self.pipeline_snapshot(),
                            config: self.pipeline.effective_config(),
                            transitions: self.transitions.iter().cloned().collect(),
                        });
                    }
                    SupervisorCommand::Snapshot(reply) => {
                        let _ = reply.send(self.pipeline_snapshot());
                    }
                },
                alive = changed(&mut self.acked) => {
                    self.acked_moved_at = std::time::Instant::now();
                    self.pipeline.retire_own_handoff();
                    if !alive { self.acked = None; }
                    self.advance_drains().await;
                }
                Ok(()) = self.acked_ahead.changed() => {
                    self.advance_drains().await;
                }
                alive = changed(&mut self.health) => {
                    if !alive { self.health = None; }
                    self.apply_health().await;
                }
                _ = sleep_until(drain_deadline) => {
                    self.expire_drains().await;
                }
            }
            self.publish_observed();
        }
        tracing::info!(pending = self.pipeline.pending_all(), "supervisor stopping");
        self.pipeline
    }

    /// Takes the storage directory's lock, or starts waiting for it in the background:
    /// the process the agent is replacing may still be stopping on the same directory.
    fn start_storage_wait(&mut self, shutdown: &CancellationToken) {
        let error = match self.pipeline.lock_storage() {
            Ok(()) => {
                self.pipeline.start_adoption();
                return;
            }
            Err(err) if err.is_retryable() => err,
            // Opening the queue reports it (FAILED, naming the directory).
            Err(_) => return,
        };
        let dir = self.pipeline.layout().dir.clone();
        let (reason_tx, reason) = watch::channel(error.to_string());
        let shutdown = shutdown.clone();
        let task = tokio::spawn(async move {
            DirLock::acquire_waiting(&dir, &shutdown, |why| {
                reason_tx.send_replace(why.to_string());
            })
            .await
        });
        self.storage_wait = Some(StorageWait { task, reason });
    }

    async fn reconcile(&mut self, mut expected: Vec<ExpectedUnit>) {
        let wanted: std::collections::BTreeSet<UnitKey> =
            expected.iter().map(|u| u.key.clone()).collect();
        let gone: Vec<UnitKey> = self
            .units
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.forget(&key).await;
        }
        // The credentials of stopping outputs before any output starts: after a restart
        // the running output would otherwise read their queued records before it knows
        // them (a record only ever goes with its own generation's credentials).
        for unit in expected
            .iter()
            .filter(|u| u.key.kind == UnitKind::Output && u.stopped)
        {
            if let Some(config) = &unit.config {
                self.remember_output_config(&unit.key, unit.config_idx, config)
                    .await;
            }
        }
        // Outputs first: inputs route to the output generation that is current.
        // Stopping outputs after the running one, so that a drain barrier is taken on an
        // open queue (after a restart the queue opens with the first running output).
        expected.sort_by_key(|unit| (unit.key.kind != UnitKind::Output, unit.stopped));
        for unit in expected {
            self.reconcile_unit(unit).await;
        }
        self.apply_log_level();
        self.advance_drains().await;
    }

    async fn reconcile_unit(&mut self, unit: ExpectedUnit) {
        let key = unit.key.clone();
        let record = self.units.entry(key.clone()).or_insert_with(|| {
            tracing::info!(target: "agent_shipper::unit", { "unit.id" = %key.id, "unit.type" = %key.kind }, "unit added");
            UnitRecord {
                phase: Phase::Starting,
                applied_idx: 0,
                config: None,
                log_level: LogLevel::Info,
                drain: None,
                drain_deadline: None,
                drain_timed_out: false,
                drain_grace_until: None,
                progress_logged: None,
                drain_started: None,
            }
        });
        record.log_level = unit.log_level;
        if let Some(config) = unit.config {
            record.config = Some(config);
        }
        if unit.stopped {
            if key.kind == UnitKind::Output {
                self.remember_stopping_output(&key, unit.config_idx).await;
            }
            let pending = match key.kind {
                UnitKind::Input => self.pipeline.pending_for_input(&key.id),
                UnitKind::Output => self.pipeline.pending_all(),
            };
            self.fire(&key, UnitEvent::StopExpected { pending }).await;
            return;
        }
        let needs_config = unit.config_idx != record.applied_idx
            || matches!(record.phase, Phase::Stopped { .. } | Phase::Starting);
        if !needs_config {
            return;
        }
        if record.config.is_none() {
            tracing::warn!("unit.id" = %key.id, "unit.type" = %key.kind, idx = unit.config_idx, "the agent announced a config idx without sending the config; waiting for it");
            return;
        }
        if self.storage_wait.is_some() {
            // Applied once the lock is ours (the whole expected set is reconciled again).
            return;
        }
        self.fire(
            &key,
            UnitEvent::ConfigReceived {
                idx: unit.config_idx,
            },
        )
        .await;
    }

    /// Feeds one event to a unit's state machine and performs the actions, which may feed
    /// further events back.
    async fn fire(&mut self, key: &UnitKey, event: UnitEvent) {
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            let Some(record) = self.units.get_mut(key) else {
                return;
            };
            let step = state::step(&record.phase, event);
            let drain_progress_only = matches!(
                (&record.phase, &step.next),
                (Phase::Stopping { .. }, Phase::Stopping { .. })
            );
            if step.next != record.phase && !drain_progress_only {
                let revision = record.config.as_ref().map(|c| c.revision).unwrap_or(0);
                log_transition(key, &record.phase, &step.next, revision);
                if self.transitions.len() == TRANSITIONS_KEPT {
                    self.transitions.pop_front();
                }
                self.transitions.push_back(Transition {
                    at_unix_ms: crate::metrics::unix_ms_now(),
                    unit_id: key.id.clone(),
                    unit_type: key.kind,
                    from: record.phase.reported(),
                    to: step.next.reported(),
                    reason: step.next.message(),
                    revision,
                    pending_events: match &step.next {
                        Phase::Stopping { pending } => Some(*pending),
                        _ => None,
                    },
                });
            }
            record.phase = step.next;
            for action in step.actions {
                match action {
                    Action::ApplyConfig { idx } => {
                        let result = self.apply_config(key).await;
                        if let Some(record) = self.units.get_mut(key) {
                            record.applied_idx = idx;
                        }
                        events.push_back(match result {
                            Ok(()) => UnitEvent::ConfigApplied { idx },
                            Err(reason) => UnitEvent::ConfigRejected { idx, reason },
                        });
                    }
                    Action::BeginDrain => {
                        let barrier = match key.kind {
                            UnitKind::Input => self.pipeline.begin_input_drain(&key.id),
                            UnitKind::Output => self.pipeline.begin_output_drain(),
                        };
                        let (on_remove, drain_timeout) = self.input_drain_policy(key);
                        tracing::info!(target: "agent_shipper::unit", { "unit.id" = %key.id, "unit.type" = %key.kind, barrier = barrier.seq, pending_events = barrier.pending, on_remove = ?on_remove, drain_timeout_ms = drain_timeout.map(|t| t.as_millis() as u64) }, "drain started");
                        match on_remove {
                            OnRemove::Drain => {}
                            OnRemove::DeadLetter => self.pipeline.divert_input(
                                &key.id,
                                DivertTo::DeadLetter(Reason {
                                    status: None,
                                    error_type: "input_removed".into(),
                                    message: format!(
                                        "input unit {} was removed with on_remove: dead_letter",
                                        key.id
                                    ),
                                }),
                            ),
                            OnRemove::Drop => self.pipeline.divert_input(&key.id, DivertTo::Drop),
                        }
                        if let Some(record) = self.units.get_mut(key) {
                            record.drain = Some(barrier);
                            record.drain_started = Some(std::time::Instant::now());
                            record.drain_timed_out = false;
                            record.drain_grace_until = None;
                            record.drain_deadline =
                                drain_timeout.map(|t| (tokio::time::Instant::now() + t, t));
                        }
                    }
                }
            }
        }
    }

    /// An INPUT unit's `on_remove` and `drain_timeout` (defaults for outputs and units
    /// whose config cannot be read).
    fn input_drain_policy(&self, key: &UnitKey) -> (OnRemove, Option<std::time::Duration>) {
        if key.kind != UnitKind::Input {
            return (OnRemove::Drain, None);
        }
        self.units
            .get(key)
            .and_then(|r| r.config.as_ref())
            .and_then(|c| InputUnitConfig::from_value(c.source.clone()).ok())
            .map(|c| (c.on_remove, c.drain_timeout.map(|t| t.get())))
            .unwrap_or((OnRemove::Drain, None))
    }

    /// Keeps the config of an OUTPUT unit the agent expects STOPPED, so the records
    /// accepted under it are still sent with its credentials (after a restart too).
    async fn remember_stopping_output(&mut self, key: &UnitKey, config_idx: u64) {
        let Some(config) = self.units.get(key).and_then(|r| r.config.clone()) else {
            return;
        };
        self.remember_output_config(key, config_idx, &config).await;
    }

    /// [`Self::remember_stopping_output`] with the config at hand.
    async fn remember_output_config(
        &mut self,
        key: &UnitKey,
        config_idx: u64,
        config: &UnitConfig,
    ) {
        let (source, revision) = (config.source.clone(), config.revision);
        self.pipeline
            .note_output_source(&key.id, config_idx, source.clone());
        // Its warnings were logged when it was applied.
        match OutputConfig::parse(source, UnknownKeys::Warn).map(|parsed| parsed.config) {
            Ok(config) => {
                if let Err(err) = self
                    .pipeline
                    .remember_output(&key.id, config_idx, config, revision)
                    .await
                {
                    tracing::warn!("unit.id" = %key.id, "unit.type" = %key.kind, error = %err, "restarting the output with a stopping output's config failed");
                }
                self.acked = self.pipeline.acked();
                self.health = self.pipeline.health();
            }
            Err(err) => {
                tracing::warn!("unit.id" = %key.id, "unit.type" = %key.kind, error = %err, "the config of a stopping output is invalid; its events go with the current output's credentials")
            }
        }
    }

    fn next_drain_deadline(&self) -> Option<tokio::time::Instant> {
        self.units
            .values()
            .filter(|r| r.drain.is_some())
            .filter_map(|r| match r.drain_timed_out {
                false => r.drain_deadline.map(|(at, _)| at),
                true => r.drain_grace_until,
            })
            .min()
    }

    /// Drains past their `drain_timeout`: the events left go to the DLQ. Drains past the
    /// grace after that end now, whatever the output did meanwhile.
    async fn expire_drains(&mut self) {
        let now = tokio::time::Instant::now();
        let graceless: Vec<(UnitKey, Barrier)> = self
            .units
            .iter()
            .filter(|(_, r)| r.drain_timed_out && r.drain_grace_until.is_some_and(|t| t <= now))
            .filter_map(|(k, r)| r.drain.map(|barrier| (k.clone(), barrier)))
            .collect();
        for (key, barrier) in graceless {
            let acked = self.pipeline.acked_now();
            let left = self.pipeline.pending_for_input(&key.id);
            tracing::warn!(target: "agent_shipper::unit", { "unit.id" = %key.id, "unit.type" = %key.kind, pending_events = left }, "drain_timeout: the output did not divert every event in time; the drain ends, and the rest go to the dead letter queue when the output reaches them");
            self.finish_drain(&key, barrier, acked, left).await;
        }
        let expired: Vec<(UnitKey, std::time::Duration)> = self
            .units
            .iter()
            .filter(|(_, r)| !r.drain_timed_out && r.drain.is_some())
            .filter_map(|(k, r)| match r.drain_deadline {
                Some((at, timeout)) if at <= now => Some((k.clone(), timeout)),
                _ => None,
            })
            .collect();
        for (key, timeout) in expired {
            let left = self.pipeline.pending_for_input(&key.id);
            tracing::warn!(target: "agent_shipper::unit", { "unit.id" = %key.id, "unit.type" = %key.kind, pending_events = left, timeout_ms = timeout.as_millis() as u64 }, "drain_timeout reached; the events left go to the dead letter queue");
            self.pipeline.divert_input(
                &key.id,
                DivertTo::DeadLetter(Reason {
                    status: None,
                    error_type: "drain_timeout".into(),
                    message: format!(
                        "input unit {} did not drain within drain_timeout {}ms",
                        key.id,
                        timeout.as_millis()
                    ),
                }),
            );
            if let Some(record) = self.units.get_mut(&key) {
                record.drain_timed_out = true;
                record.drain_grace_until = Some(now + DIVERT_GRACE);
            }
        }
        // The diversion may have finished a drain at once (nothing was in flight).
        self.advance_drains().await;
    }

    async fn apply_config(&mut self, key: &UnitKey) -> Result<(), String> {
        let (source, revision) = self
            .units
            .get(key)
            .and_then(|r| r.config.as_ref())
            .map(|c| (c.source.clone(), c.revision))
            .ok_or_else(|| "no config received".to_string())?;
        match key.kind {
            UnitKind::Output => {
                // The agent writes the policy's output block as Fleet made it: a key this
                // output does not know is a warning, and the unit stays HEALTHY.
                let source_copy = source.clone();
                let parsed = OutputConfig::parse(source, UnknownKeys::Warn)
                    .map_err(|err| err.to_string())?;
                for warning in &parsed.warnings {
                    warning.log(Some(&key.id));
                }
                let config = parsed.config;
                let config_idx = self.pending_idx(key);
                self.pipeline
                    .note_output_source(&key.id, config_idx, source_copy);
                self.pipeline
                    .configure_output(&key.id, config_idx, revision, config)
                    .await?;
                self.acked = self.pipeline.acked();
                self.health = self.pipeline.health();
                Ok(())
            }
            UnitKind::Input => {
                // An `agent-shipper` input block is the policy input as written: keys we do
                // not use are warnings, as for OUTPUT blocks.
                let parsed = InputUnitConfig::parse(source).map_err(|err| err.to_string())?;
                for warning in &parsed.warnings {
                    warning.log(Some(&key.id));
                }
                self.pipeline.attach_input(&key.id, parsed.config).await
            }
        }
    }

    fn pending_idx(&self, key: &UnitKey) -> u64 {
        match self.units.get(key).map(|r| &r.phase) {
            Some(Phase::Configuring { idx }) => *idx,
            _ => 0,
        }
    }

    async fn forget(&mut self, key: &UnitKey) {
        if self.units.remove(key).is_none() {
            return;
        }
        tracing::info!(target: "agent_shipper::unit", { "unit.id" = %key.id, "unit.type" = %key.kind }, "unit forgotten (no longer expected)");
        match key.kind {
            UnitKind::Input => self.pipeline.detach_input(&key.id).await,
            UnitKind::Output => {
                self.pipeline.stop_output(&key.id).await;
                self.health = self.pipeline.health();
            }
        }
    }

    async fn advance_drains(&mut self) {
        let acked = self.pipeline.acked_now();
        let draining: Vec<(UnitKey, Barrier)> = self
            .units
            .iter()
            .filter_map(|(key, record)| record.drain.map(|barrier| (key.clone(), barrier)))
            .collect();
        for (key, barrier) in draining {
            // An input is drained once its own records are; an output once the prefix
            // passes the barrier (every record accepted before it stopped).
            let pending = match key.kind {
                UnitKind::Input => self.pipeline.pending_for_input(&key.id),
                UnitKind::Output => self.pipeline.pending_all(),
            };
            let drained = acked >= barrier.seq || (key.kind == UnitKind::Input && pending == 0);
            if drained {
                self.finish_drain(&key, barrier, acked, 0).await;
            } else {
                if let Some(record) = self.units.get_mut(&key) {
                    let due = record
                        .progress_logged
                        .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1));
                    if due {
                        record.progress_logged = Some(std::time::Instant::now());
                        tracing::info!(target: "agent_shipper::unit", { "unit.id" = %key.id, "unit.type" = %key.kind, pending_events = pending, barrier = barrier.seq, acked }, "drain progress");
                    }
                }
                self.fire(&key, UnitEvent::DrainProgress { pending }).await;
            }
        }
    }

    /// Ends a unit's drain and reports it STOPPED; `left` of its events are still queued
    /// (a drain ended by `drain_timeout` whose output did not divert them in time).
    async fn finish_drain(&mut self, key: &UnitKey, barrier: Barrier, acked: Seq, left: u64) {
        let mut timed_out = false;
        if let Some(record) = self.units.get_mut(key) {
            record.drain = None;
            record.drain_deadline = None;
            record.drain_grace_until = None;
            timed_out = std::mem::take(&mut record.drain_timed_out);
        }
        if key.kind == UnitKind::Output {
            self.pipeline.stop_output(&key.id).await;
            self.health = self.pipeline.health();
        }
        let diverted = match key.kind {
            UnitKind::Input => self.pipeline.diverted(&key.id),
            UnitKind::Output => 0,
        };
        let (on_remove, _) = self.input_drain_policy(key);
        let delivered = barrier.pending.saturating_sub(diverted + left);
        tracing::info!(target: "agent_shipper::unit", { "unit.id" = %key.id, "unit.type" = %key.kind, barrier = barrier.seq, acked, left_in_queue = left, ack_to_stopped_us = self.acked_moved_at.elapsed().as_micros() as u64 }, "drain finished");
        let summary = match (on_remove, timed_out) {
            (OnRemove::Drop, _) => format!(
                "drained {} queued events: {delivered} delivered, {diverted} dropped (on_remove: drop)",
                barrier.pending
            ),
            (OnRemove::DeadLetter, _) => format!(
                "drained {} queued events: {delivered} delivered, {diverted} dead-lettered (on_remove: dead_letter)",
                barrier.pending
            ),
            (OnRemove::Drain, true) if left > 0 => format!(
                "drain_timeout reached: {delivered} queued events delivered, {diverted} moved to the dead letter queue, {left} still queued go there when the output reaches them"
            ),
            (OnRemove::Drain, true) => format!(
                "drain_timeout reached: {delivered} queued events delivered, {diverted} moved to the dead letter queue"
            ),
            (OnRemove::Drain, false) => {
                format!("drained {} queued events", barrier.pending)
            }
        };
        self.fire(key, UnitEvent::DrainFinished { summary }).await;
    }

    async fn apply_health(&mut self) {
        let Some(health) = self.health.as_ref().map(|h| h.borrow().clone()) else {
            return;
        };
        let Some(unit_id) = self.pipeline.output_unit().map(str::to_string) else {
            return;
        };
        let key = UnitKey {
            id: unit_id,
            kind: UnitKind::Output,
        };
        let event = match health {
            OutputHealth::Healthy => UnitEvent::OutputHealthy,
            OutputHealth::Degraded(reason) => UnitEvent::OutputTrouble { reason },
        };
        self.fire(&key, event).await;
    }

    fn apply_log_level(&mut self) {
        let level = self
            .units
            .values()
            .map(|r| r.log_level)
            .max()
            .unwrap_or_else(|| {
                self.log_control
                    .as_ref()
                    .map(LogControl::base)
                    .unwrap_or_default()
            });
        if level != self.log_level {
            if let Some(control) = &self.log_control {
                control.set(level);
            }
            tracing::info!(from = ?self.log_level, to = ?level, "log level changed");
            self.log_level = level;
        }
    }

    fn observed_units(&self) -> Vec<ObservedUnit> {
        let waiting = self
            .storage_wait
            .as_ref()
            .map(|wait| wait.reason.borrow().clone());
        self.units
            .iter()
            .map(|(key, record)| ObservedUnit {
                key: key.clone(),
                state: record.phase.reported(),
                message: match (&waiting, &record.phase) {
                    (Some(reason), Phase::Starting | Phase::Configuring { .. }) => reason.clone(),
                    _ => record.phase.message(),
                },
                config_idx: record.applied_idx,
                payload: match &record.phase {
                    Phase::Stopping { pending } => {
                        Some(serde_json::json!({ "pending_events": pending }))
                    }
                    _ => None,
                },
            })
            .collect()
    }

    fn publish_observed(&self) {
        let units = self.observed_units();
        self.observed.send_if_modified(|current| {
            let changed = *current != units;
            if changed {
                *current = units;
            }
            changed
        });
    }

    fn pipeline_snapshot(&self) -> PipelineSnapshot {
        let mut snapshot = self.pipeline.snapshot();
        snapshot.units = self
            .units
            .iter()
            .map(|(key, record)| UnitSnapshot {
                id: key.id.clone(),
                kind: key.kind,
                state: record.phase.reported(),
                message: record.phase.message(),
                config_idx: record.applied_idx,
                revision: record.config.as_ref().map(|c| c.revision).unwrap_or(0),
            })
            .collect();
        snapshot.drains = self
            .units
            .iter()
            .filter_map(|(key, record)| {
                let Phase::Stopping { pending } = record.phase else {
                    return None;
                };
                let barrier = record.drain?;
                let (on_remove, timeout) = self.input_drain_policy(key);
                Some(DrainSnapshot {
                    unit_id: key.id.clone(),
                    unit_type: key.kind,
                    pending_events: pending,
                    barrier: barrier.seq,
                    running_ms: record
                        .drain_started
                        .map(|t| t.elapsed().as_millis() as u64)
                        .unwrap_or(0),
                    on_remove,
                    timeout_ms: timeout.map(|t| t.as_millis() as u64),
                })
            })
            .collect();
        snapshot
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "units": self.observed_units(),
            "log_level": self.log_level,
            "pipeline": self.pipeline.stats(),
        })
    }
}

fn log_transition(key: &UnitKey, from: &Phase, to: &Phase, revision: u64) {
    let reason = to.message();
    match to {
        Phase::Stopping { pending } => tracing::info!(
            target: "agent_shipper::unit",
            {
                "unit.id" = %key.id, "unit.type" = %key.kind,
                from = %from.reported(), to = %to.reported(),
                reason = %reason, revision, pending_events = pending
            },
            "unit state changed"
        ),
        _ => tracing::info!(
            target: "agent_shipper::unit",
            {
                "unit.id" = %key.id, "unit.type" = %key.kind,
                from = %from.reported(), to = %to.reported(),
                reason = %reason, revision
            },
            "unit state changed"
        ),
    }
}
