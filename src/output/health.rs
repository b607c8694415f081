//! Output health: healthy on success, degraded after a grace period of failures, and
//! degraded at once while the queue cannot store events (a full disk).

use super::OutputHealth;
use crate::queue::QueueHealth;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Turns successes and failures of an output's workers into [`OutputHealth`].
///
/// Shared mutable state by design: every worker of one output reports here. The lock
/// guards two fields for a few instructions and is never held across an `.await`.
pub struct HealthTracker {
    degraded_after: Duration,
    failing: Mutex<Option<Failing>>,
    health: watch::Sender<OutputHealth>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    last_error: String,
}

impl HealthTracker {
    /// A tracker that reports DEGRADED once failures have lasted `degraded_after` with no
    /// success between (at the first failure when it is zero).
    pub fn new(degraded_after: Duration) -> (Self, watch::Receiver<OutputHealth>) {
        let (health, receiver) = watch::channel(OutputHealth::Healthy);
        (
            HealthTracker {
                degraded_after,
                failing: Mutex::new(None),
                health,
            },
            receiver,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failing>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request succeeded: healthy at once.
    pub fn success(&self) {
        *self.lock() = None;
        self.health.send_if_modified(|h| {
            let changed = *h != OutputHealth::Healthy;
            *h = OutputHealth::Healthy;
            changed
        });
    }

    /// A request failed with `reason`.
    pub fn failure(&self, reason: String, now: Instant) {
        {
            let mut failing = self.lock();
            match failing.as_mut() {
                Some(f) => f.last_error = reason,
                None => {
                    *failing = Some(Failing {
                        since: now,
                        last_error: reason,
                    })
                }
            }
        }
        self.check(now);
    }

    /// Reports DEGRADED when failures have lasted long enough; call it on a timer too, so
    /// that a long backoff does not delay the report.
    pub fn check(&self, now: Instant) {
        let message = {
            let failing = self.lock();
            match failing.as_ref() {
                Some(f) if now.duration_since(f.since) >= self.degraded_after => {
                    let secs = now.duration_since(f.since).as_secs();
                    if self.degraded_after.is_zero() {
                        f.last_error.clone()
                    } else {
                        format!("no successful request for {secs}s: {}", f.last_error)
                    }
                }
                _ => return,
            }
        };
        self.health.send_if_modified(|h| {
            // Keep the first wording of a long outage unless the cause changes, so the
            // agent is not sent a new message every second.
            let same_cause = matches!(h, OutputHealth::Degraded(old) if old.split_once(": ").map(|x| x.1) == message.split_once(": ").map(|x| x.1));
            if same_cause {
                return false;
            }
            *h = OutputHealth::Degraded(message.clone());
            true
        });
    }
}

/// The health the OUTPUT unit reports: the queue's failure, when it has one, comes first
/// (`queue: <reason>`), as no event can be accepted until it is fixed; otherwise the
/// output's own health.
pub fn combine(output: &OutputHealth, queue: &QueueHealth) -> OutputHealth {
    match queue {
        QueueHealth::Failing(reason) => {
            OutputHealth::Degraded(format!("queue: {reason}; new events are refused"))
        }
        QueueHealth::Healthy => output.clone(),
    }
}

/// Keeps `combined` equal to [`combine`] of the two watches until `cancel` or until the
/// output's watch closes. The queue's watch may close at once (the memory queue never
/// fails); it is then treated as healthy for good.
pub async fn merge(
    mut output: watch::Receiver<OutputHealth>,
    mut queue: watch::Receiver<QueueHealth>,
    combined: watch::Sender<OutputHealth>,
    cancel: CancellationToken,
) {
    let mut queue_open = true;
    loop {
        let next = combine(&output.borrow_and_update(), &queue.borrow_and_update());
        combined.send_if_modified(|current| {
            let changed = *current != next;
            *current = next;
            changed
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = output.changed() => if changed.is_err() { return },
            changed = queue.changed(), if queue_open => if changed.is_err() { queue_open = false },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_queue_degrades_the_output_with_its_reason() {
        let full = QueueHealth::Failing("No space left on device (os error 28)".into());
        match combine(&OutputHealth::Healthy, &full) {
            OutputHealth::Degraded(message) => {
                assert!(message.starts_with("queue: No space left"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let degraded = OutputHealth::Degraded("401".into());
        assert_eq!(combine(&degraded, &QueueHealth::Healthy), degraded);
    }

    #[test]
    fn degraded_only_after_the_grace_period_and_healthy_on_success() {
        let (tracker, health) = HealthTracker::new(Duration::from_secs(30));
        let start = Instant::now();
        tracker.failure("connection refused".into(), start);
        tracker.check(start + Duration::from_secs(29));
        assert_eq!(*health.borrow(), OutputHealth::Healthy);
        tracker.failure("401 Unauthorized".into(), start + Duration::from_secs(31));
        match &*health.borrow() {
            OutputHealth::Degraded(message) => {
                assert!(message.contains("401 Unauthorized"), "{message}");
                assert!(message.contains("31s"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        tracker.success();
        assert_eq!(*health.borrow(), OutputHealth::Healthy);
        // A new outage starts a new grace period.
        tracker.failure("refused".into(), start + Duration::from_secs(40));
        assert_eq!(*health.borrow(), OutputHealth::Healthy);
    }

    #[test]
    fn zero_grace_degrades_at_once() {
        let (tracker, health) = HealthTracker::new(Duration::ZERO);
        tracker.failure("disk full".into(), Instant::now());
        assert_eq!(*health.borrow(), OutputHealth::Degraded("disk full".into()));
    }
}
