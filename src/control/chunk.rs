//! Reassembles chunked `CheckinExpected` messages.
//!
//! When both sides support `CheckinChunking`, the agent splits a large expected message:
//! every piece carries the same `units_timestamp`, the first also carries the non-unit
//! fields, and a last piece with that timestamp and no units closes the set. A message
//! without a timestamp is whole. A piece older than the set being built is ignored; a
//! newer one abandons it and starts over.

use crate::proto::agent::CheckinExpected;

/// Collects pieces until a set is complete.
#[derive(Debug, Default)]
pub struct ExpectedAssembler {
    building: Option<CheckinExpected>,
}

fn stamp(message: &CheckinExpected) -> Option<(i64, i32)> {
    message
        .units_timestamp
        .as_ref()
        .map(|ts| (ts.seconds, ts.nanos))
}

impl ExpectedAssembler {
    /// Feeds one received message; returns a complete expected message when there is one.
    pub fn push(&mut self, message: CheckinExpected) -> Option<CheckinExpected> {
        let Some(incoming) = stamp(&message) else {
            self.building = None;
            return Some(message);
        };
        match self.building.as_mut() {
            None => {
                if !message.units.is_empty() {
                    self.building = Some(message);
                }
                None
            }
            Some(building) => {
                let current = stamp(building);
                if Some(incoming) < current {
                    None
                } else if Some(incoming) > current {
                    self.building = (!message.units.is_empty()).then_some(message);
                    None
                } else if message.units.is_empty() {
                    self.building.take()
                } else {
                    building.units.extend(message.units);
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::agent::UnitExpected;

    fn piece(seconds: Option<i64>, units: &[&str], features_idx: u64) -> CheckinExpected {
        CheckinExpected {
            units: units
                .iter()
                .map(|id| UnitExpected {
                    id: (*id).into(),
                    ..UnitExpected::default()
                })
                .collect(),
            units_timestamp: seconds.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
            features_idx,
            ..CheckinExpected::default()
        }
    }

    fn ids(message: &CheckinExpected) -> Vec<&str> {
        message.units.iter().map(|u| u.id.as_str()).collect()
    }

    #[test]
    fn whole_messages_pass_through() {
        let mut assembler = ExpectedAssembler::default();
        let out = assembler.push(piece(None, &["a"], 0)).unwrap();
        assert_eq!(ids(&out), vec!["a"]);
    }

    #[test]
    fn pieces_are_joined_until_the_empty_terminator() {
        let mut assembler = ExpectedAssembler::default();
        assert!(assembler.push(piece(Some(10), &["a", "b"], 7)).is_none());
        assert!(assembler.push(piece(Some(10), &["c"], 0)).is_none());
        let out = assembler.push(piece(Some(10), &[], 0)).unwrap();
        assert_eq!(ids(&out), vec!["a", "b", "c"]);
        assert_eq!(
            out.features_idx, 7,
            "non-unit fields come from the first piece"
        );
    }

    #[test]
    fn older_pieces_are_ignored_and_newer_ones_restart() {
        let mut assembler = ExpectedAssembler::default();
        assembler.push(piece(Some(10), &["a"], 0));
        assert!(assembler.push(piece(Some(9), &["old"], 0)).is_none());
        assert!(assembler.push(piece(Some(9), &[], 0)).is_none());
        assembler.push(piece(Some(11), &["x"], 0));
        assert!(
            assembler.push(piece(Some(10), &[], 0)).is_none(),
            "terminator of the abandoned set"
        );
        let out = assembler.push(piece(Some(11), &[], 0)).unwrap();
        assert_eq!(ids(&out), vec!["x"]);
    }

    #[test]
    fn a_stray_terminator_yields_nothing() {
        let mut assembler = ExpectedAssembler::default();
        assert!(assembler.push(piece(Some(5), &[], 0)).is_none());
    }
}
