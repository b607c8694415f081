//! When observed units are checked in: a state change at once, a message-only change (a
//! drain's "N events pending") at most once per [`MESSAGE_GAP`].
//!
//! Sans-IO: the caller passes the time in, so the rule is tested on made-up instants. The
//! agent answers every check-in of an unsettled component with the whole expected state,
//! so a check-in per acknowledged batch during a drain costs the agent a full reply each;
//! the state changes that it acts on (STOPPING, STOPPED, an applied idx) are never held.

use crate::supervisor::{ObservedUnit, ReportedState, UnitKey};
use std::time::{Duration, Instant};

/// Least time between two check-ins that carry only message or payload changes.
pub const MESSAGE_GAP: Duration = Duration::from_secs(1);

/// What to do with the observed units now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Check in now.
    Now,
    /// Only the message changed: check in at this instant unless something else is sent
    /// first.
    At(Instant),
    /// Nothing differs from what was last sent.
    Nothing,
}

/// What a check-in is judged by: the units, their states and applied idx; not messages.
type Shape = Vec<(UnitKey, ReportedState, u64)>;

fn shape(units: &[ObservedUnit]) -> Shape {
    units
        .iter()
        .map(|u| (u.key.clone(), u.state, u.config_idx))
        .collect()
}

/// Remembers the last check-in and decides when the next one is due.
#[derive(Debug)]
pub struct CheckinPacer {
    gap: Duration,
    /// When the last check-in went and the units it carried.
    last: Option<(Instant, Vec<ObservedUnit>)>,
}

impl CheckinPacer {
    /// A pacer holding message-only changes for `gap` after the last check-in.
    pub fn new(gap: Duration) -> Self {
        CheckinPacer { gap, last: None }
    }

    /// Whether `units`, observed at `now`, should be checked in now, later or not at all.
    pub fn decide(&self, units: &[ObservedUnit], now: Instant) -> Pace {
        let Some((sent_at, sent)) = &self.last else {
            return Pace::Now;
        };
        if sent.as_slice() == units {
            return Pace::Nothing;
        }
        if shape(sent) != shape(units) {
            return Pace::Now;
        }
        let due = *sent_at + self.gap;
        if now >= due {
            Pace::Now
        } else {
            Pace::At(due)
        }
    }

    /// Records that `units` were checked in at `now` (for any reason: a change, the
    /// heartbeat, new indices to echo).
    pub fn sent(&mut self, units: Vec<ObservedUnit>, now: Instant) {
        self.last = Some((now, units));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::UnitKind;

    fn unit(id: &str, state: ReportedState, message: &str) -> ObservedUnit {
        ObservedUnit {
            key: UnitKey {
                id: id.into(),
                kind: UnitKind::Input,
            },
            state,
            message: message.into(),
            config_idx: 3,
            payload: None,
        }
    }

    fn draining(pending: u64) -> Vec<ObservedUnit> {
        vec![unit(
            "b",
            ReportedState::Stopping,
            &format!("draining {pending} events"),
        )]
    }

    #[test]
    fn the_first_checkin_goes_at_once() {
        let pacer = CheckinPacer::new(MESSAGE_GAP);
        assert_eq!(pacer.decide(&draining(10), Instant::now()), Pace::Now);
    }

    #[test]
    fn message_only_changes_wait_for_the_gap_then_go() {
        let t0 = Instant::now();
        let mut pacer = CheckinPacer::new(MESSAGE_GAP);
        pacer.sent(draining(1000), t0);
        let soon = t0 + Duration::from_millis(10);
        assert_eq!(
            pacer.decide(&draining(900), soon),
            Pace::At(t0 + MESSAGE_GAP)
        );
        assert_eq!(
            pacer.decide(&draining(800), t0 + Duration::from_millis(999)),
            Pace::At(t0 + MESSAGE_GAP)
        );
        assert_eq!(pacer.decide(&draining(700), t0 + MESSAGE_GAP), Pace::Now);
    }

    #[test]
    fn a_payload_change_alone_is_paced_like_a_message() {
        let t0 = Instant::now();
        let mut pacer = CheckinPacer::new(MESSAGE_GAP);
        let mut before = draining(5);
        pacer.sent(before.clone(), t0);
        before[0].payload = Some(serde_json::json!({"pending_events": 4}));
        assert!(matches!(
            pacer.decide(&before, t0 + Duration::from_millis(1)),
            Pace::At(_)
        ));
    }

    #[test]
    fn state_changes_go_at_once_even_right_after_a_checkin() {
        let t0 = Instant::now();
        let mut pacer = CheckinPacer::new(MESSAGE_GAP);
        pacer.sent(draining(1000), t0);
        let soon = t0 + Duration::from_millis(1);
        let stopped = vec![unit("b", ReportedState::Stopped, "drained 1000 events")];
        assert_eq!(pacer.decide(&stopped, soon), Pace::Now);
        let mut new_idx = draining(1000);
        new_idx[0].config_idx = 4;
        assert_eq!(pacer.decide(&new_idx, soon), Pace::Now);
        let mut more = draining(1000);
        more.push(unit("c", ReportedState::Starting, ""));
        assert_eq!(pacer.decide(&more, soon), Pace::Now, "a unit appeared");
        assert_eq!(pacer.decide(&[], soon), Pace::Now, "every unit went");
    }

    #[test]
    fn what_was_already_sent_is_not_sent_again() {
        let t0 = Instant::now();
        let mut pacer = CheckinPacer::new(MESSAGE_GAP);
        pacer.sent(draining(7), t0);
        assert_eq!(
            pacer.decide(&draining(7), t0 + Duration::from_secs(5)),
            Pace::Nothing
        );
    }

    #[test]
    fn a_drain_of_ten_seconds_with_an_ack_every_millisecond_checks_in_about_ten_times() {
        let t0 = Instant::now();
        let mut pacer = CheckinPacer::new(MESSAGE_GAP);
        pacer.sent(draining(10_000), t0);
        let mut deferred: Option<Instant> = None;
        let mut checkins = 0;
        for ms in 1..=10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            let units = draining(10_000 - ms);
            // The caller's timer: a deferred check-in fires once its instant has come.
            if deferred.is_some_and(|at| at <= now) {
                deferred = None;
                pacer.sent(units.clone(), now);
                checkins += 1;
                continue;
            }
            match pacer.decide(&units, now) {
                Pace::Now => {
                    pacer.sent(units, now);
                    checkins += 1;
                }
                Pace::At(at) => deferred = Some(deferred.map_or(at, |d| d.min(at))),
                Pace::Nothing => {}
            }
        }
        assert!((9..=11).contains(&checkins), "{checkins} check-ins");
    }
}
