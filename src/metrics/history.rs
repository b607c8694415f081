//! What a single snapshot cannot tell: rates over a window and the oldest event's age.
//!
//! Sans-IO: time comes in as an argument, so tests drive it with made-up instants.

use super::snapshot::{unix_ms_now, OutputView, PipelineSnapshot, QueueView, Stats};
use crate::queue::Seq;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Rates are averaged over this much recent history.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Bound on the write-time marks kept for the oldest event's age; thinned (every other
/// mark dropped, the oldest kept) when reached, so precision degrades but memory does not.
const MAX_WRITE_MARKS: usize = 4096;

/// Recent queue positions, fed one snapshot at a time.
pub struct History {
    started: Instant,
    /// `(when, head, acked)` over the last [`RATE_WINDOW`], oldest first.
    positions: VecDeque<(Instant, Seq, Seq)>,
    /// `(when, head)` each time the head moved: by `when`, every record up to `head` had
    /// been written. Marks wholly below the oldest unacknowledged record are dropped.
    write_marks: VecDeque<(Instant, Seq)>,
    /// Set after the first write mark: later marks are stamped with their sample's time.
    marked_once: bool,
    /// Samples at which the queue was full (see [`QueueView::full_samples`]).
    full_samples: u64,
}

/// Whether the queue holds 90% or more of its byte limit: from there on a publish may be
/// refused at any moment (the figure Elastic's Go shipper reported as `is_full`).
pub fn is_full(stats: &crate::queue::QueueStats) -> bool {
    stats.max_bytes > 0 && stats.bytes.saturating_mul(10) >= stats.max_bytes.saturating_mul(9)
}

impl History {
    /// Empty history; ages of records already queued count from `started`.
    pub fn new(started: Instant) -> Self {
        History {
            started,
            positions: VecDeque::new(),
            write_marks: VecDeque::new(),
            marked_once: false,
            full_samples: 0,
        }
    }

    /// Records `snapshot`, taken at `now`, and returns the stats it gives.
    pub fn observe(&mut self, now: Instant, snapshot: PipelineSnapshot) -> Stats {
        let queue = snapshot.queue.map(|stats| {
            if self
                .positions
                .back()
                .is_some_and(|&(_, head, acked)| stats.head < head || stats.acked < acked)
            {
                // A new queue (sequence numbers went back): the old history means nothing.
                self.positions.clear();
                self.write_marks.clear();
            }
            self.positions.push_back((now, stats.head, stats.acked));
            while self
                .positions
                .front()
                .is_some_and(|&(when, _, _)| now.duration_since(when) > RATE_WINDOW)
            {
                self.positions.pop_front();
            }
            let (write_rate_per_s, ack_rate_per_s) = self.rates();
            let oldest_unacked_age_ms = self.oldest_age(now, stats.head, stats.oldest_unacked);
            if is_full(&stats) {
                self.full_samples += 1;
            }
            QueueView {
                full_samples: self.full_samples,
                stats,
                oldest_unacked_age_ms,
                write_rate_per_s,
                ack_rate_per_s,
            }
        });
        Stats {
            version: env!("CARGO_PKG_VERSION"),
            taken_at_unix_ms: unix_ms_now(),
            uptime_ms: now.duration_since(self.started).as_millis() as u64,
            units: snapshot.units,
            drains: snapshot.drains,
            queue,
            output: OutputView {
                current: snapshot.output,
                metrics: snapshot.output_metrics,
            },
            dlq: snapshot.dlq,
        }
    }

    fn rates(&self) -> (f64, f64) {
        let (Some(&(t0, head0, acked0)), Some(&(t1, head1, acked1))) =
            (self.positions.front(), self.positions.back())
        else {
            return (0.0, 0.0);
        };
        let seconds = t1.duration_since(t0).as_secs_f64();
        if seconds <= 0.0 {
            return (0.0, 0.0);
        }
        (
            (head1 - head0) as f64 / seconds,
            (acked1 - acked0) as f64 / seconds,
        )
    }

    fn oldest_age(&mut self, now: Instant, head: Seq, oldest_unacked: Option<Seq>) -> u64 {
        if self.write_marks.back().is_none_or(|&(_, h)| head > h) {
            // The first mark stands for everything queued before sampling began.
            let when = if self.marked_once { now } else { self.started };
            self.marked_once = true;
            self.write_marks.push_back((when, head));
        }
        let Some(oldest) = oldest_unacked else {
            // Nothing pending: keep only the newest mark.
            while self.write_marks.len() > 1 {
                self.write_marks.pop_front();
            }
            return 0;
        };
        while self.write_marks.len() > 1 && self.write_marks[0].1 < oldest {
            self.write_marks.pop_front();
        }
        if self.write_marks.len() > MAX_WRITE_MARKS {
            let mut index = 0;
            self.write_marks.retain(|_| {
                index += 1;
                index % 2 == 1
            });
        }
        self.write_marks
            .front()
            .map(|&(when, _)| now.duration_since(when).as_millis() as u64)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueStats;

    fn snapshot(head: Seq, acked: Seq) -> PipelineSnapshot {
        PipelineSnapshot {
            queue: Some(QueueStats {
                kind: "disk",
                events: head - acked,
                head,
                acked,
                oldest_unacked: (acked < head).then_some(acked + 1),
                ..QueueStats::default()
            }),
            ..PipelineSnapshot::default()
        }
    }

    #[test]
    fn rates_are_events_per_second_over_the_window() {
        let start = Instant::now();
        let mut history = History::new(start);
        history.observe(start, snapshot(0, 0));
        let stats = history.observe(start + Duration::from_secs(2), snapshot(2000, 1000));
        let queue = stats.queue.unwrap();
        assert_eq!(queue.write_rate_per_s, 1000.0);
        assert_eq!(queue.ack_rate_per_s, 500.0);
        // Twenty seconds on with nothing moving, the window holds no movement.
        let mut now = start + Duration::from_secs(2);
        let mut last = None;
        for _ in 0..20 {
            now += Duration::from_secs(1);
            last = Some(history.observe(now, snapshot(2000, 1000)));
        }
        let queue = last.unwrap().queue.unwrap();
        assert_eq!((queue.write_rate_per_s, queue.ack_rate_per_s), (0.0, 0.0));
    }

    #[test]
    fn oldest_age_follows_the_oldest_pending_write() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut history = History::new(start);
        // 100 events queued before sampling: their age counts from the start.
        let age = |stats: Stats| stats.queue.unwrap().oldest_unacked_age_ms;
        assert_eq!(age(history.observe(at(1), snapshot(100, 0))), 1000);
        // 100 more at 5 s; at 8 s the first 100 are acknowledged: the oldest is from 5 s.
        assert_eq!(age(history.observe(at(5), snapshot(200, 0))), 5000);
        assert_eq!(age(history.observe(at(8), snapshot(200, 100))), 3000);
        // All acknowledged: age 0; new events later age from when they appeared.
        assert_eq!(age(history.observe(at(9), snapshot(200, 200))), 0);
        assert_eq!(age(history.observe(at(10), snapshot(250, 200))), 0);
        assert_eq!(age(history.observe(at(13), snapshot(250, 200))), 3000);
    }

    #[test]
    fn marks_stay_bounded_while_nothing_is_acknowledged() {
        let start = Instant::now();
        let mut history = History::new(start);
        for second in 1..=(3 * MAX_WRITE_MARKS as u64) {
            let stats = history.observe(start + Duration::from_secs(second), snapshot(second, 0));
            assert_eq!(
                stats.queue.unwrap().oldest_unacked_age_ms,
                second * 1000,
                "the oldest mark is never thinned away"
            );
        }
        assert!(history.write_marks.len() <= MAX_WRITE_MARKS + 1);
    }

    #[test]
    fn a_new_queue_resets_history() {
        let start = Instant::now();
        let mut history = History::new(start);
        history.observe(start, snapshot(5000, 5000));
        let stats = history.observe(start + Duration::from_secs(1), snapshot(10, 0));
        assert_eq!(stats.queue.unwrap().write_rate_per_s, 0.0);
    }
}
