//! Retry delays: exponential from an initial to a maximum delay, with jitter.

use std::time::Duration;

/// Doubles its delay after each failure up to `max`; each delay is drawn from
/// `[d/2, d]` so that many shippers failing together do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    init: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `init`, never above `max`.
    pub fn new(init: Duration, max: Duration) -> Self {
        Backoff {
            init,
            max: max.max(init),
            current: init,
        }
    }

    /// The delay before the next retry; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to `init` after a success.
    pub fn reset(&mut self) {
        self.current = self.init;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let ceilings = [1, 2, 4, 8, 8, 8];
        for ceiling in ceilings {
            let delay = backoff.next_delay();
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }
}
