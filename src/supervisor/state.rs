//! The unit state machine: one pure function decides every transition.
//!
//! Sans-IO in the manner of quinn-proto: [`step`] takes the current [`Phase`] and a
//! [`UnitEvent`] and returns the next phase plus the [`Action`]s the async shell must
//! perform. Nothing here touches a socket, a clock or a queue, so the whole table is
//! tested below without a runtime.
//!
//! ```text
//!  Starting ──ConfigReceived──► Configuring ──ConfigApplied──► Healthy ◄──OutputHealthy── Degraded
//!                                   │   ▲                        │  └──────OutputTrouble──────►┘
//!                    ConfigRejected │   └──ConfigReceived────────┘
//!                                   ▼
//!                                 Failed
//!  any running phase ──StopExpected──► Stopping{pending} ──DrainFinished──► Stopped
//! ```

use std::fmt;

/// Where a unit is in its life; what the agent sees is derived from this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Known to the agent, no config applied yet.
    Starting,
    /// Applying the config with this `config_state_idx`.
    Configuring {
        /// The idx being applied.
        idx: u64,
    },
    /// Config applied and working.
    Healthy,
    /// Working, but the output is in trouble.
    Degraded {
        /// Why, in words a person can act on.
        reason: String,
    },
    /// The config was refused; the unit does nothing until a new config arrives.
    Failed {
        /// Names the key and the reason.
        reason: String,
    },
    /// Expected STOPPED; delivering what was queued under this unit.
    Stopping {
        /// Events still to be drained.
        pending: u64,
    },
    /// Drained and stopped.
    Stopped {
        /// What the drain did, e.g. "drained 1200 events".
        summary: String,
    },
}

/// The seven states of the control protocol, in its numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportedState {
    /// STARTING = 0
    Starting = 0,
    /// CONFIGURING = 1
    Configuring = 1,
    /// HEALTHY = 2
    Healthy = 2,
    /// DEGRADED = 3
    Degraded = 3,
    /// FAILED = 4
    Failed = 4,
    /// STOPPING = 5
    Stopping = 5,
    /// STOPPED = 6
    Stopped = 6,
}

impl fmt::Display for ReportedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ReportedState::Starting => "STARTING",
            ReportedState::Configuring => "CONFIGURING",
            ReportedState::Healthy => "HEALTHY",
            ReportedState::Degraded => "DEGRADED",
            ReportedState::Failed => "FAILED",
            ReportedState::Stopping => "STOPPING",
            ReportedState::Stopped => "STOPPED",
        };
        f.write_str(name)
    }
}

impl Phase {
    /// The protocol state this phase is reported as.
    pub fn reported(&self) -> ReportedState {
        match self {
            Phase::Starting => ReportedState::Starting,
            Phase::Configuring { .. } => ReportedState::Configuring,
            Phase::Healthy => ReportedState::Healthy,
            Phase::Degraded { .. } => ReportedState::Degraded,
            Phase::Failed { .. } => ReportedState::Failed,
            Phase::Stopping { .. } => ReportedState::Stopping,
            Phase::Stopped { .. } => ReportedState::Stopped,
        }
    }

    /// The human message reported beside the state.
    pub fn message(&self) -> String {
        match self {
            Phase::Starting => "starting".into(),
            Phase::Configuring { idx } => format!("applying configuration {idx}"),
            Phase::Healthy => "healthy".into(),
            Phase::Degraded { reason } => format!("degraded: {reason}"),
            Phase::Failed { reason } => format!("failed: {reason}"),
            Phase::Stopping { pending } => format!("stopping: draining {pending} queued events"),
            Phase::Stopped { summary } => format!("stopped: {summary}"),
        }
    }

    fn is_stopping_or_stopped(&self) -> bool {
        matches!(self, Phase::Stopping { .. } | Phase::Stopped { .. })
    }
}

/// Something that happened to a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitEvent {
    /// The agent sent a config with this idx (new, or changed).
    ConfigReceived {
        /// Its `config_state_idx`.
        idx: u64,
    },
    /// The shell applied the config with this idx.
    ConfigApplied {
        /// Its `config_state_idx`.
        idx: u64,
    },
    /// The config with this idx failed validation or could not be applied.
    ConfigRejected {
        /// Its `config_state_idx`.
        idx: u64,
        /// Names the key and the reason.
        reason: String,
    },
    /// The output has had no success for too long.
    OutputTrouble {
        /// Why (connection refused, 401, …).
        reason: String,
    },
    /// The output succeeded again.
    OutputHealthy,
    /// The agent expects the unit STOPPED; this many events are queued under it.
    StopExpected {
        /// Events to drain before STOPPED.
        pending: u64,
    },
    /// The drain moved on; this many events are left.
    DrainProgress {
        /// Events still to drain.
        pending: u64,
    },
    /// Every event queued under the unit is delivered (or deliberately dead-lettered).
    DrainFinished {
        /// What the drain did.
        summary: String,
    },
}

/// Work the async shell must do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Validate and apply the unit's config with this idx, then feed back
    /// [`UnitEvent::ConfigApplied`] or [`UnitEvent::ConfigRejected`].
    ApplyConfig {
        /// The idx to apply.
        idx: u64,
    },
    /// Refuse new events for the unit and start its drain; feed back progress and
    /// [`UnitEvent::DrainFinished`].
    BeginDrain,
}

/// The outcome of one [`step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The phase after the event (equal to the old one when nothing changed).
    pub next: Phase,
    /// What the shell must do now.
    pub actions: Vec<Action>,
}

/// Decides the next phase of a unit; the only place that does.
pub fn step(current: &Phase, event: UnitEvent) -> Step {
    let stay = || Step {
        next: current.clone(),
        actions: Vec::new(),
    };
    let go = |next: Phase, actions: Vec<Action>| Step { next, actions };
    match (current, event) {
        // A stopping unit finishes its drain before anything else; a stopped one may be
        // brought back by a new config (the agent re-added it before forgetting it).
        (Phase::Stopping { .. }, UnitEvent::ConfigReceived { .. }) => stay(),
        (_, UnitEvent::ConfigReceived { idx }) => go(
            Phase::Configuring { idx },
            vec![Action::ApplyConfig { idx }],
        ),
        (Phase::Configuring { idx }, UnitEvent::ConfigApplied { idx: applied })
            if *idx == applied =>
        {
            go(Phase::Healthy, Vec::new())
        }
        (
            Phase::Configuring { idx },
            UnitEvent::ConfigRejected {
                idx: rejected,
                reason,
            },
        ) if *idx == rejected => go(Phase::Failed { reason }, Vec::new()),
        (Phase::Healthy, UnitEvent::OutputTrouble { reason }) => {
            go(Phase::Degraded { reason }, Vec::new())
        }
        (Phase::Degraded { reason: old }, UnitEvent::OutputTrouble { reason })
            if *old != reason =>
        {
            go(Phase::Degraded { reason }, Vec::new())
        }
        (Phase::Degraded { .. }, UnitEvent::OutputHealthy) => go(Phase::Healthy, Vec::new()),
        (phase, UnitEvent::StopExpected { pending }) if !phase.is_stopping_or_stopped() => {
            go(Phase::Stopping { pending }, vec![Action::BeginDrain])
        }
        (Phase::Stopping { pending: old }, UnitEvent::DrainProgress { pending })
            if *old != pending =>
        {
            go(Phase::Stopping { pending }, Vec::new())
        }
        (Phase::Stopping { .. }, UnitEvent::DrainFinished { summary }) => {
            go(Phase::Stopped { summary }, Vec::new())
        }
        _ => stay(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_phases() -> Vec<Phase> {
        vec![
            Phase::Starting,
            Phase::Configuring { idx: 3 },
            Phase::Healthy,
            Phase::Degraded { reason: "r".into() },
            Phase::Failed { reason: "f".into() },
            Phase::Stopping { pending: 5 },
            Phase::Stopped {
                summary: "s".into(),
            },
        ]
    }

    #[test]
    fn new_unit_goes_starting_configuring_healthy() {
        let step1 = step(&Phase::Starting, UnitEvent::ConfigReceived { idx: 1 });
        assert_eq!(step1.next, Phase::Configuring { idx: 1 });
        assert_eq!(step1.actions, vec![Action::ApplyConfig { idx: 1 }]);
        let step2 = step(&step1.next, UnitEvent::ConfigApplied { idx: 1 });
        assert_eq!(step2.next, Phase::Healthy);
        assert!(step2.actions.is_empty());
    }

    #[test]
    fn rejected_config_fails_with_the_reason() {
        let reason = "invalid config key `queue.mem.events`: must be greater than 0".to_string();
        let next = step(
            &Phase::Configuring { idx: 2 },
            UnitEvent::ConfigRejected {
                idx: 2,
                reason: reason.clone(),
            },
        )
        .next;
        assert_eq!(
            next,
            Phase::Failed {
                reason: reason.clone()
            }
        );
        assert!(next.message().contains("queue.mem.events"));
        // A failed unit recovers with the next config.
        let again = step(&next, UnitEvent::ConfigReceived { idx: 3 });
        assert_eq!(again.next, Phase::Configuring { idx: 3 });
    }

    #[test]
    fn stale_apply_results_are_ignored() {
        let phase = Phase::Configuring { idx: 4 };
        assert_eq!(
            step(&phase, UnitEvent::ConfigApplied { idx: 3 }).next,
            phase
        );
        let rejected = UnitEvent::ConfigRejected {
            idx: 3,
            reason: "x".into(),
        };
        assert_eq!(step(&phase, rejected).next, phase);
    }

    #[test]
    fn output_trouble_degrades_and_success_heals() {
        let degraded = step(
            &Phase::Healthy,
            UnitEvent::OutputTrouble {
                reason: "401".into(),
            },
        )
        .next;
        assert_eq!(
            degraded,
            Phase::Degraded {
                reason: "401".into()
            }
        );
        let reworded = step(
            &degraded,
            UnitEvent::OutputTrouble {
                reason: "refused".into(),
            },
        )
        .next;
        assert_eq!(
            reworded,
            Phase::Degraded {
                reason: "refused".into()
            }
        );
        assert_eq!(
            step(&degraded, UnitEvent::OutputHealthy).next,
            Phase::Healthy
        );
        // Health reports do not move units that are not running normally.
        for phase in [
            Phase::Starting,
            Phase::Failed { reason: "f".into() },
            Phase::Stopping { pending: 1 },
        ] {
            assert_eq!(
                step(&phase, UnitEvent::OutputTrouble { reason: "x".into() }).next,
                phase
            );
            assert_eq!(step(&phase, UnitEvent::OutputHealthy).next, phase);
        }
    }

    #[test]
    fn stop_from_every_running_phase_drains_first() {
        for phase in all_phases() {
            let result = step(&phase, UnitEvent::StopExpected { pending: 7 });
            if phase.is_stopping_or_stopped() {
                assert_eq!(result.next, phase, "stop must not restart a drain");
                assert!(result.actions.is_empty());
            } else {
                assert_eq!(result.next, Phase::Stopping { pending: 7 });
                assert_eq!(result.actions, vec![Action::BeginDrain]);
                assert_eq!(result.next.reported(), ReportedState::Stopping);
                assert!(result.next.message().contains("draining 7"));
            }
        }
    }

    #[test]
    fn stopped_only_after_the_drain_finishes() {
        let stopping = Phase::Stopping { pending: 10 };
        let progressed = step(&stopping, UnitEvent::DrainProgress { pending: 4 }).next;
        assert_eq!(progressed, Phase::Stopping { pending: 4 });
        let finished = step(
            &progressed,
            UnitEvent::DrainFinished {
                summary: "drained 10 events".into(),
            },
        );
        assert_eq!(finished.next.reported(), ReportedState::Stopped);
        // Nothing but a drain finish moves a stopping unit, not even a new config.
        for event in [
            UnitEvent::ConfigReceived { idx: 9 },
            UnitEvent::ConfigApplied { idx: 9 },
            UnitEvent::OutputHealthy,
            UnitEvent::StopExpected { pending: 1 },
        ] {
            assert_eq!(step(&stopping, event).next, stopping);
        }
        // Drain events mean nothing outside a drain.
        for phase in all_phases()
            .into_iter()
            .filter(|p| !matches!(p, Phase::Stopping { .. }))
        {
            assert_eq!(
                step(
                    &phase,
                    UnitEvent::DrainFinished {
                        summary: "x".into()
                    }
                )
                .next,
                phase
            );
            assert_eq!(
                step(&phase, UnitEvent::DrainProgress { pending: 0 }).next,
                phase
            );
        }
    }

    #[test]
    fn a_stopped_unit_can_be_configured_again() {
        let stopped = Phase::Stopped {
            summary: "drained".into(),
        };
        assert_eq!(
            step(&stopped, UnitEvent::ConfigReceived { idx: 5 }).next,
            Phase::Configuring { idx: 5 }
        );
    }

    #[test]
    fn reported_states_use_protocol_numbers() {
        let numbers: Vec<i32> = all_phases().iter().map(|p| p.reported() as i32).collect();
        assert_eq!(numbers, vec![0, 1, 2, 3, 4, 5, 6]);
    }
}
