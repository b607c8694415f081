//! The mock agent's view of the component: expected units, observed units, and the rules
//! of PROTOCOL.md §1 that decide when to reply and when a revision is acknowledged.
//!
//! Pure bookkeeping with no I/O, so the rules are testable on their own; the gRPC service
//! and the process supervisor in this module's siblings feed it and act on its output.

use super::{AckMode, AgentEvent, Revision, UnitSpec};
use agent_shipper::control::convert::json_to_struct;
use agent_shipper::proto::agent::{
    CheckinExpected, CheckinObserved, State, UnitExpected, UnitExpectedConfig, UnitType,
};
use std::collections::{BTreeMap, BTreeSet};

/// Units are keyed by (id, type).
pub type UnitKey = (String, i32);

#[derive(Debug, Clone)]
struct ExpectedUnit {
    state: State,
    idx: u64,
    config: serde_json::Value,
    log_level: i32,
    revision: u64,
}

/// What the unit last reported for one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedView {
    /// Reported state.
    pub state: State,
    /// Reported message.
    pub message: String,
    /// Echoed config idx.
    pub idx: u64,
    /// Reported payload, as JSON.
    pub payload: Option<serde_json::Value>,
}

/// The agent's bookkeeping for one component.
pub struct Core {
    ack_mode: AckMode,
    expected: BTreeMap<UnitKey, ExpectedUnit>,
    observed: BTreeMap<UnitKey, ObservedView>,
    next_idx: u64,
    /// Revisions waiting for their stopped units to report STOPPED.
    pending_acks: Vec<(u64, BTreeSet<UnitKey>)>,
    acknowledged: Vec<u64>,
    /// Check-ins whose only news was a unit's message or payload.
    message_only_checkins: u64,
    /// Units left out of expected messages for now (a test's way to send one later).
    withheld: BTreeSet<UnitKey>,
}

/// Human name of a unit type number.
pub fn type_name(kind: i32) -> &'static str {
    if kind == UnitType::Output as i32 {
        "output"
    } else {
        "input"
    }
}

impl Core {
    /// Empty bookkeeping; `ack_mode` says when revisions are acknowledged.
    pub fn new(ack_mode: AckMode) -> Self {
        Core {
            ack_mode,
            expected: BTreeMap::new(),
            observed: BTreeMap::new(),
            next_idx: 1,
            pending_acks: Vec::new(),
            acknowledged: Vec::new(),
            message_only_checkins: 0,
            withheld: BTreeSet::new(),
        }
    }

    /// Leaves the unit out of expected messages (`hold`) or puts it back; the real agent
    /// never does this: tests use it to send a unit's config later than the others.
    pub fn withhold(&mut self, id: &str, kind: i32, hold: bool) {
        let key = (id.to_string(), kind);
        if hold {
            self.withheld.insert(key);
        } else {
            self.withheld.remove(&key);
        }
    }

    /// Check-ins so far that changed only units' messages or payloads (same units, same
    /// states, same idx): what a drain's progress costs the agent.
    pub fn message_only_checkins(&self) -> u64 {
        self.message_only_checkins
    }

    /// Revisions acknowledged so far, in order.
    pub fn acknowledged(&self) -> &[u64] {
        &self.acknowledged
    }

    /// The last observed view of a unit.
    pub fn observed(&self, id: &str, kind: i32) -> Option<&ObservedView> {
        self.observed.get(&(id.to_string(), kind))
    }

    /// Whether the unit is still in the expected set.
    pub fn is_expected(&self, id: &str, kind: i32) -> bool {
        self.expected.contains_key(&(id.to_string(), kind))
    }

    /// The config the unit is expected to run with.
    pub fn expected_config(&self, id: &str, kind: i32) -> Option<serde_json::Value> {
        self.expected
            .get(&(id.to_string(), kind))
            .map(|unit| unit.config.clone())
    }

    /// A new process reports nothing yet: forget what the old one said.
    pub fn process_restarted(&mut self) {
        self.observed.clear();
    }

    /// Makes `revision` the policy: new units HEALTHY, changed ones get a new idx, missing
    /// ones expected STOPPED.
    pub fn apply(&mut self, revision: &Revision) -> Vec<AgentEvent> {
        let mut events = vec![AgentEvent::RevisionApplied(revision.number)];
        let wanted: BTreeSet<UnitKey> = revision.units.iter().map(UnitSpec::key).collect();
        let mut stopping = BTreeSet::new();
        for (key, unit) in self.expected.iter_mut() {
            if !wanted.contains(key) && unit.state != State::Stopped {
                unit.state = State::Stopped;
                stopping.insert(key.clone());
            }
        }
        for spec in &revision.units {
            let key = spec.key();
            // Re-added before it reported STOPPED: no earlier revision waits for it any more.
            for (_, waiting) in self.pending_acks.iter_mut() {
                waiting.remove(&key);
            }
            let idx = match self.expected.get(&key) {
                Some(old) if old.config == spec.config && old.state != State::Stopped => old.idx,
                _ => {
                    self.next_idx += 1;
                    self.next_idx
                }
            };
            self.expected.insert(
                key,
                ExpectedUnit {
                    state: State::Healthy,
                    idx,
                    config: spec.config.clone(),
                    log_level: spec.log_level as i32,
                    revision: revision.number,
                },
            );
        }
        self.pending_acks.push((revision.number, stopping));
        if self.ack_mode == AckMode::Immediately {
            let revisions: Vec<u64> = self
                .pending_acks
                .drain(..)
                .map(|(number, _)| number)
                .collect();
            for number in revisions {
                self.acknowledged.push(number);
                events.push(AgentEvent::RevisionAcknowledged(number));
            }
        } else {
            self.acknowledge_settled(&mut events);
        }
        events
    }

    /// Changes only the log level of a unit (the idx stays, as with the real agent).
    pub fn set_log_level(&mut self, id: &str, kind: i32, level: i32) -> bool {
        match self.expected.get_mut(&(id.to_string(), kind)) {
            Some(unit) => {
                unit.log_level = level;
                true
            }
            None => false,
        }
    }

    /// Acknowledges, in revision order, every revision whose stopped units all reported
    /// STOPPED; a revision never overtakes an earlier one still waiting.
    fn acknowledge_settled(&mut self, events: &mut Vec<AgentEvent>) {
        while let Some((revision, waiting)) = self.pending_acks.first() {
            if !waiting.is_empty() {
                break;
            }
            let revision = *revision;
            self.pending_acks.remove(0);
            self.acknowledged.push(revision);
            events.push(AgentEvent::RevisionAcknowledged(revision));
        }
    }

    /// Settled: same units, same idx and same state on both sides.
    pub fn is_settled(&self) -> bool {
        self.expected.len() == self.observed.len()
            && self.expected.iter().all(|(key, expected)| {
                self.observed.get(key).is_some_and(|observed| {
                    observed.idx == expected.idx && observed.state == expected.state
                })
            })
    }

    /// The expected message; a unit's config is included only while its echoed idx differs.
    pub fn expected_message(&self) -> CheckinExpected {
        let units = self
            .expected
            .iter()
            .filter(|(key, _)| !self.withheld.contains(*key))
            .map(|((id, kind), unit)| {
                let echoed = self.observed.get(&(id.clone(), *kind)).map(|o| o.idx);
                UnitExpected {
                    id: id.clone(),
                    r#type: *kind,
                    state: unit.state as i32,
                    config_state_idx: unit.idx,
                    config: (echoed != Some(unit.idx)).then(|| UnitExpectedConfig {
                        source: Some(json_to_struct(&unit.config)),
                        id: id.clone(),
                        r#type: unit
                            .config
                            .get("type")
                            .and_then(|t| t.as_str())
                            .unwrap_or_default()
                            .to_string(),
                        revision: unit.revision,
                        ..UnitExpectedConfig::default()
                    }),
                    log_level: unit.log_level,
                }
            })
            .collect();
        CheckinExpected {
            units,
            ..CheckinExpected::default()
        }
    }

    /// Takes one check-in. Returns what changed and whether the agent replies.
    pub fn on_checkin(
        &mut self,
        message: &CheckinObserved,
        first: bool,
    ) -> (Vec<AgentEvent>, bool) {
        let mut events = Vec::new();
        let mut seen = BTreeMap::new();
        for unit in &message.units {
            let key = (unit.id.clone(), unit.r#type);
            let view = ObservedView {
                state: State::try_from(unit.state).unwrap_or(State::Failed),
                message: unit.message.clone(),
                idx: unit.config_state_idx,
                payload: unit
                    .payload
                    .as_ref()
                    .map(agent_shipper::control::convert::struct_to_json),
            };
            let changed = self.observed.get(&key).is_none_or(|old| {
                old.state != view.state || old.message != view.message || old.idx != view.idx
            });
            if changed {
                events.push(AgentEvent::UnitObserved {
                    id: unit.id.clone(),
                    kind: unit.r#type,
                    state: view.state,
                    message: view.message.clone(),
                });
            }
            if !self.expected.contains_key(&key) && view.state != State::Stopped && changed {
                events.push(AgentEvent::UnexpectedUnit {
                    id: unit.id.clone(),
                    kind: unit.r#type,
                });
            }
            seen.insert(key, view);
        }
        let same_shape = seen.len() == self.observed.len()
            && seen.iter().all(|(key, view)| {
                self.observed
                    .get(key)
                    .is_some_and(|old| old.state == view.state && old.idx == view.idx)
            });
        if !first && same_shape && seen != self.observed {
            self.message_only_checkins += 1;
        }
        self.observed = seen;

        // Units that reached STOPPED while expected STOPPED are dropped from the model.
        let stopped: Vec<UnitKey> = self
            .expected
            .iter()
            .filter(|(key, unit)| {
                unit.state == State::Stopped
                    && self
                        .observed
                        .get(*key)
                        .is_some_and(|o| o.state == State::Stopped)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stopped {
            self.expected.remove(key);
            for (_, waiting) in self.pending_acks.iter_mut() {
                waiting.remove(key);
            }
        }
        self.acknowledge_settled(&mut events);
        let reply = first || !self.is_settled();
        (events, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_shipper::proto::agent::UnitObserved;
    use serde_json::json;

    fn revision(number: u64, units: &[(&str, UnitType)]) -> Revision {
        Revision {
            number,
            units: units
                .iter()
                .map(|(id, kind)| UnitSpec {
                    id: (*id).into(),
                    kind: *kind,
                    config: json!({"rev": number, "id": id}),
                    log_level: agent_shipper::proto::agent::UnitLogLevel::Info,
                })
                .collect(),
        }
    }

    fn report(core: &Core, states: &[(&str, UnitType, State)]) -> CheckinObserved {
        let expected = core.expected_message();
        CheckinObserved {
            units: states
                .iter()
                .map(|(id, kind, state)| UnitObserved {
                    id: (*id).into(),
                    r#type: *kind as i32,
                    state: *state as i32,
                    config_state_idx: expected
                        .units
                        .iter()
                        .find(|u| u.id == *id)
                        .map(|u| u.config_state_idx)
                        .unwrap_or(0),
                    ..UnitObserved::default()
                })
                .collect(),
            ..CheckinObserved::default()
        }
    }

    #[test]
    fn replies_to_the_first_checkin_and_then_only_while_unsettled() {
        let mut core = Core::new(AckMode::AfterStopped);
        core.apply(&revision(1, &[("out", UnitType::Output)]));
        let (_, reply) = core.on_checkin(&CheckinObserved::default(), true);
        assert!(reply);
        let healthy = report(&core, &[("out", UnitType::Output, State::Healthy)]);
        assert!(!core.on_checkin(&healthy, false).1, "settled: no reply");
        let configuring = report(&core, &[("out", UnitType::Output, State::Configuring)]);
        assert!(core.on_checkin(&configuring, false).1);
    }

    #[test]
    fn config_is_sent_only_while_the_echoed_idx_differs() {
        let mut core = Core::new(AckMode::AfterStopped);
        core.apply(&revision(1, &[("out", UnitType::Output)]));
        assert!(core.expected_message().units[0].config.is_some());
        core.on_checkin(
            &report(&core, &[("out", UnitType::Output, State::Healthy)]),
            false,
        );
        assert!(core.expected_message().units[0].config.is_none());
    }

    #[test]
    fn revision_is_acknowledged_only_after_stopped_units_report_stopped() {
        let mut core = Core::new(AckMode::AfterStopped);
        core.apply(&revision(
            1,
            &[
                ("out", UnitType::Output),
                ("a", UnitType::Input),
                ("b", UnitType::Input),
            ],
        ));
        let events = core.apply(&revision(
            2,
            &[("out", UnitType::Output), ("a", UnitType::Input)],
        ));
        assert!(!events.contains(&AgentEvent::RevisionAcknowledged(2)));
        let stopping = report(
            &core,
            &[
                ("out", UnitType::Output, State::Healthy),
                ("a", UnitType::Input, State::Healthy),
                ("b", UnitType::Input, State::Stopping),
            ],
        );
        let (events, _) = core.on_checkin(&stopping, false);
        assert!(!events.contains(&AgentEvent::RevisionAcknowledged(2)));
        let stopped = report(
            &core,
            &[
                ("out", UnitType::Output, State::Healthy),
                ("a", UnitType::Input, State::Healthy),
                ("b", UnitType::Input, State::Stopped),
            ],
        );
        let (events, reply) = core.on_checkin(&stopped, false);
        assert!(events.contains(&AgentEvent::RevisionAcknowledged(2)));
        assert!(reply, "the unit list changed, so the agent tells the unit");
        assert!(!core.is_expected("b", UnitType::Input as i32));
    }

    #[test]
    fn a_removed_unit_is_expected_stopped_with_its_config_idx_unchanged() {
        let mut core = Core::new(AckMode::Immediately);
        core.apply(&revision(
            1,
            &[("a", UnitType::Input), ("b", UnitType::Input)],
        ));
        let before = core.expected_message();
        let idx_of = |message: &CheckinExpected| {
            message
                .units
                .iter()
                .find(|u| u.id == "b")
                .map(|u| (u.config_state_idx, u.state))
        };
        core.apply(&revision(2, &[("a", UnitType::Input)]));
        let (idx, state) = idx_of(&core.expected_message()).unwrap();
        assert_eq!(Some(idx), idx_of(&before).map(|(idx, _)| idx));
        assert_eq!(state, State::Stopped as i32);
    }

    #[test]
    fn unit_re_added_before_stopped_does_not_block_acknowledgements() {
        let mut core = Core::new(AckMode::AfterStopped);
        core.apply(&revision(
            1,
            &[("a", UnitType::Input), ("b", UnitType::Input)],
        ));
        core.apply(&revision(2, &[("a", UnitType::Input)]));
        let events = core.apply(&revision(
            3,
            &[("a", UnitType::Input), ("b", UnitType::Input)],
        ));
        assert!(events.contains(&AgentEvent::RevisionAcknowledged(2)));
        assert!(events.contains(&AgentEvent::RevisionAcknowledged(3)));
        assert_eq!(core.acknowledged(), &[1, 2, 3]);
    }

    #[test]
    fn later_revisions_wait_behind_an_earlier_one_still_draining() {
        let mut core = Core::new(AckMode::AfterStopped);
        core.apply(&revision(
            1,
            &[("a", UnitType::Input), ("b", UnitType::Input)],
        ));
        core.apply(&revision(2, &[("a", UnitType::Input)]));
        let events = core.apply(&revision(
            3,
            &[("a", UnitType::Input), ("c", UnitType::Input)],
        ));
        assert!(!events
            .iter()
            .any(|e| matches!(e, AgentEvent::RevisionAcknowledged(_))));
        let stopped = report(
            &core,
            &[
                ("a", UnitType::Input, State::Healthy),
                ("b", UnitType::Input, State::Stopped),
            ],
        );
        let (events, _) = core.on_checkin(&stopped, false);
        assert!(events.contains(&AgentEvent::RevisionAcknowledged(2)));
        assert!(events.contains(&AgentEvent::RevisionAcknowledged(3)));
    }

    #[test]
    fn checkins_changing_only_a_message_are_counted() {
        let mut core = Core::new(AckMode::AfterStopped);
        core.apply(&revision(1, &[("b", UnitType::Input)]));
        let mut stopping = report(&core, &[("b", UnitType::Input, State::Stopping)]);
        core.on_checkin(&stopping, false);
        stopping.units[0].message = "draining 10 events".into();
        core.on_checkin(&stopping, false);
        core.on_checkin(&stopping, false);
        assert_eq!(core.message_only_checkins(), 1, "a repeat is no news");
        let stopped = report(&core, &[("b", UnitType::Input, State::Stopped)]);
        core.on_checkin(&stopped, false);
        assert_eq!(
            core.message_only_checkins(),
            1,
            "a state change is not counted"
        );
    }

    #[test]
    fn real_agent_mode_acknowledges_at_once() {
        let mut core = Core::new(AckMode::Immediately);
        core.apply(&revision(1, &[("a", UnitType::Input)]));
        let events = core.apply(&revision(2, &[]));
        assert!(events.contains(&AgentEvent::RevisionAcknowledged(2)));
    }
}
