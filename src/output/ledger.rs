//! Which records each generation had acknowledged ahead of the queue's acknowledged prefix,
//! so that a unit's drain is decided by that unit's own records.
//!
//! The queue counts a generation's records as unacknowledged until the contiguous prefix
//! passes them: one record of another input answered 429 forever would hold every drain
//! behind it. Output workers note here each record they acknowledge (delivered, dead-lettered,
//! dropped); the supervisor subtracts those above the prefix from the queue's count.
//!
//! The figure is never too low: the queue's count is read first (at prefix P1), then the
//! prefix (P2 ≥ P1), and only records noted here above P2 are subtracted, each of which the
//! queue still counted at P1. A record noted twice (a resend after a rewind) counts once.

use crate::queue::{GenerationId, Seq};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::watch;

/// Acknowledged records above the prefix, by generation, as disjoint inclusive ranges.
///
/// Shared mutable state by design: every output worker writes, the supervisor reads. The
/// lock is held for map updates only, never across an `.await`.
#[derive(Debug)]
pub struct AckLedger {
    ahead: Mutex<HashMap<GenerationId, BTreeMap<Seq, Seq>>>,
    /// Bumped when a record is noted above the prefix: the supervisor looks again.
    changed: watch::Sender<u64>,
}

impl Default for AckLedger {
    fn default() -> Self {
        AckLedger {
            ahead: Mutex::new(HashMap::new()),
            changed: watch::Sender::new(0),
        }
    }
}

fn insert(ranges: &mut BTreeMap<Seq, Seq>, seq: Seq) {
    if let Some((_, &end)) = ranges.range(..=seq).next_back() {
        if end >= seq {
            return;
        }
    }
    let mut start = seq;
    let mut end = seq;
    if let Some((&s, &e)) = ranges.range(..seq).next_back() {
        if e + 1 == seq {
            start = s;
        }
    }
    if let Some(&e) = ranges.get(&(seq + 1)) {
        ranges.remove(&(seq + 1));
        end = e;
    }
    ranges.insert(start, end);
}

/// Records of `ranges` above `prefix`.
fn count_above(ranges: &BTreeMap<Seq, Seq>, prefix: Seq) -> u64 {
    ranges
        .iter()
        .filter(|(_, &end)| end > prefix)
        .map(|(&start, &end)| end - start.max(prefix + 1) + 1)
        .sum()
}

impl AckLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GenerationId, BTreeMap<Seq, Seq>>> {
        self.ahead.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes `acked` (sequence number and generation of each record acknowledged), given
    /// the queue's acknowledged prefix after their ack; forgets what the prefix passed.
    pub fn note(&self, acked: &[(Seq, GenerationId)], prefix: Seq) {
        let mut ahead = self.lock();
        let mut any = false;
        for &(seq, generation) in acked.iter().filter(|(seq, _)| *seq > prefix) {
            insert(ahead.entry(generation).or_default(), seq);
            any = true;
        }
        prune(&mut ahead, prefix);
        drop(ahead);
        if any {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Records acknowledged above `prefix`, by generation (generations with none left out).
    pub fn acked_above(&self, prefix: Seq) -> Vec<(GenerationId, u64)> {
        let mut ahead = self.lock();
        prune(&mut ahead, prefix);
        ahead
            .iter()
            .map(|(generation, ranges)| (*generation, count_above(ranges, prefix)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Wakes when a record is noted above the prefix.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Forgets the ranges the prefix passed.
fn prune(ahead: &mut HashMap<GenerationId, BTreeMap<Seq, Seq>>, prefix: Seq) {
    ahead.retain(|_, ranges| {
        while let Some((&start, &end)) = ranges.first_key_value() {
            if start > prefix {
                break;
            }
            ranges.pop_first();
            if end > prefix {
                ranges.insert(prefix + 1, end);
                break;
            }
        }
        !ranges.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: GenerationId = GenerationId(0);
    const B: GenerationId = GenerationId(1);

    #[test]
    fn counts_each_record_once_above_the_prefix() {
        let ledger = AckLedger::default();
        let mut changed = ledger.subscribe();
        ledger.note(&[(5, A), (6, A), (8, A), (7, B)], 2);
        assert!(changed.has_changed().unwrap());
        changed.borrow_and_update();
        // A resend after a rewind notes 5 and 6 again.
        ledger.note(&[(6, A), (5, A)], 2);
        let sorted = |mut v: Vec<(GenerationId, u64)>| {
            v.sort();
            v
        };
        assert_eq!(sorted(ledger.acked_above(2)), vec![(A, 3), (B, 1)]);
        assert_eq!(sorted(ledger.acked_above(6)), vec![(A, 1), (B, 1)]);
        assert_eq!(ledger.acked_above(7), vec![(A, 1)]);
        assert!(ledger.acked_above(8).is_empty());
        // Below the prefix: nothing to note, nobody woken.
        changed.borrow_and_update();
        ledger.note(&[(3, A)], 8);
        assert!(!changed.has_changed().unwrap());
        assert!(ledger.acked_above(8).is_empty());
    }

    #[test]
    fn ranges_merge_in_any_order() {
        let mut ranges = BTreeMap::new();
        for seq in [10, 12, 11, 14, 13, 9] {
            insert(&mut ranges, seq);
        }
        assert_eq!(ranges.into_iter().collect::<Vec<_>>(), vec![(9, 14)]);
    }
}
