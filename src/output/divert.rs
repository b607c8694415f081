//! Records an output must not send: those of stopped input units whose queued events are
//! to be dead-lettered (`on_remove: dead_letter`, a `drain_timeout` that ran out) or
//! dropped (`on_remove: drop`).
//!
//! The supervisor sets a rule when a drain starts or times out; output workers consult
//! the rules for each batch, before every send, so a batch stuck in retries is diverted
//! at its next attempt (a new rule cuts a retry's backoff short). A diverted record is
//! acknowledged once it is in the DLQ (or counted as dropped), and the drain counts it
//! done (see [`super::AckLedger`]).

use super::Rejected;
use crate::dlq::Reason;
use crate::queue::{GenerationId, Queue, Record, Seq};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::sync::watch;

/// Where a diverted record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DivertTo {
    /// Into the dead letter queue with this reason.
    DeadLetter(Reason),
    /// Nowhere: skipped and counted.
    Drop,
}

#[derive(Debug)]
struct Rule {
    to: DivertTo,
    diverted: u64,
}

/// The rules by INPUT unit.
///
/// Shared mutable state by design: the supervisor writes, every output worker reads. The
/// lock is held for a map lookup per record, never across an `.await`; when no rule is
/// set a worker pays one atomic load per batch.
#[derive(Debug)]
pub struct Diversions {
    any: AtomicBool,
    rules: Mutex<HashMap<String, Rule>>,
    /// Bumped when a rule is set.
    version: watch::Sender<u64>,
}

impl Default for Diversions {
    fn default() -> Self {
        Diversions {
            any: AtomicBool::new(false),
            rules: Mutex::new(HashMap::new()),
            version: watch::Sender::new(0),
        }
    }
}

/// A batch split by the rules.
#[derive(Debug, Default)]
pub struct Diverted {
    /// Records to send.
    pub keep: Vec<Record>,
    /// Records for the DLQ.
    pub dead_letter: Vec<Rejected>,
    /// Records skipped on purpose (sequence number and generation).
    pub dropped: Vec<(Seq, GenerationId)>,
}

impl Diversions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Rule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, records of `input_unit` go to `to` instead of the output.
    pub fn set(&self, input_unit: &str, to: DivertTo) {
        let mut rules = self.lock();
        let diverted = rules.get(input_unit).map(|r| r.diverted).unwrap_or(0);
        rules.insert(input_unit.to_string(), Rule { to, diverted });
        self.any.store(true, Ordering::Release);
        drop(rules);
        self.version.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes when a rule is set.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Records of `input_unit` are sent again (the agent configured it anew).
    pub fn clear(&self, input_unit: &str) {
        let mut rules = self.lock();
        rules.remove(input_unit);
        self.any.store(!rules.is_empty(), Ordering::Release);
    }

    /// Whether no rule is set (the common case: nothing to look up).
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// How many records of `input_unit` were diverted so far.
    pub fn diverted(&self, input_unit: &str) -> u64 {
        self.lock().get(input_unit).map(|r| r.diverted).unwrap_or(0)
    }

    /// Splits `records` by the rules.
    pub fn split(&self, queue: &dyn Queue, records: Vec<Record>) -> Diverted {
        if !self.any.load(Ordering::Acquire) {
            return Diverted {
                keep: records,
                ..Diverted::default()
            };
        }
        let mut inputs: HashMap<GenerationId, Option<String>> = HashMap::new();
        let mut out = Diverted::default();
        let mut rules = self.lock();
        for record in records {
            let input = inputs
                .entry(record.generation)
                .or_insert_with(|| queue.generation(record.generation).map(|g| g.input_unit));
            let rule = input.as_ref().and_then(|input| rules.get_mut(input));
            match rule {
                None => out.keep.push(record),
                Some(rule) => {
                    rule.diverted += 1;
                    match &rule.to {
                        DivertTo::Drop => out.dropped.push((record.seq, record.generation)),
                        DivertTo::DeadLetter(reason) => out.dead_letter.push(Rejected {
                            record,
                            reason: reason.clone(),
                        }),
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Generation, MemoryQueue};
    use bytes::Bytes;

    #[test]
    fn records_of_a_diverted_input_are_split_off_and_counted() {
        let queue = MemoryQueue::new(100, 1 << 20);
        let a = queue.register(Generation {
            input_unit: "a".into(),
            output_unit: "out".into(),
            output_config_idx: 1,
        });
        let b = queue.register(Generation {
            input_unit: "b".into(),
            output_unit: "out".into(),
            output_config_idx: 1,
        });
        let record = |seq, generation| Record {
            seq,
            generation,
            payload: Bytes::new(),
        };
        let diversions = Diversions::default();
        let batch = vec![record(1, a), record(2, b), record(3, a)];
        assert_eq!(diversions.split(&queue, batch.clone()).keep.len(), 3);

        diversions.set("b", DivertTo::Drop);
        let split = diversions.split(&queue, batch.clone());
        assert_eq!(
            split.keep.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(split.dropped, vec![(2, b)]);

        let reason = Reason {
            status: None,
            error_type: "drain_timeout".into(),
            message: "late".into(),
        };
        diversions.set("a", DivertTo::DeadLetter(reason.clone()));
        let split = diversions.split(&queue, batch.clone());
        assert!(split.keep.is_empty());
        assert_eq!(split.dead_letter.len(), 2);
        assert_eq!(split.dead_letter[0].reason, reason);
        assert_eq!(diversions.diverted("a"), 2);
        assert_eq!(diversions.diverted("b"), 2);

        diversions.clear("a");
        diversions.clear("b");
        assert_eq!(diversions.split(&queue, batch).keep.len(), 3);
    }
}
