//! When to try again: transient failures (connect errors, timeouts, 5xx, 408, 429) are retried
//! with exponential backoff, capped, with full jitter; anything else is final.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Tries after the first before giving up. With the defaults, a chunk keeps trying for about
    /// five minutes: long enough to ride out a flapping link, short enough to report a dead one.
    pub max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retries: 12,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based): random in [cap/2, cap] where cap
    /// doubles from `first_delay` up to `max_delay`; at least what the server asked for.
    pub fn delay(&self, attempt: u32, server_asked: Option<Duration>) -> Duration {
        let cap = self
            .first_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        let half = cap / 2;
        let jittered = half + rand::rng().random_range(Duration::ZERO..=half);
        jittered.max(server_asked.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_honour_the_server() {
        let policy = RetryPolicy::default();
        for attempt in 1..20 {
            let d = policy.delay(attempt, None);
            assert!(d <= policy.max_delay);
            assert!(d >= policy.first_delay / 2);
        }
        assert!(policy.delay(10, None) >= policy.max_delay / 2);
        assert!(policy.delay(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
    }
}
