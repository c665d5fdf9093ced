//! When to try again: transient failures (connect errors, timeouts, 5xx, 408, 429) are retried
//! with exponential backoff, capped, with full jitter, for as long as the policy says (by
//! default for ever: an outage costs time, never a delivery); anything else is final.

use std::time::{Duration, Instant};

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    /// The longest wait between two tries (default 5 minutes).
    pub max_delay: Duration,
    /// How long a step may keep failing before it gives up (`None`, the default: never).
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(300),
            give_up_after: None,
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

    /// The delay before trying again a request that failed while others to the same service
    /// succeed (some storage requests failing, not the service down): short, without growth,
    /// so that the unlucky ones do not trail far behind: random in [first/10, first/5].
    pub fn delay_while_answering(&self, server_asked: Option<Duration>) -> Duration {
        let low = self.first_delay / 10;
        let jittered = low + rand::rng().random_range(Duration::ZERO..=low);
        jittered.max(server_asked.unwrap_or_default())
    }

    /// Whether a step failing since `since` has failed for too long.
    pub fn gives_up(&self, since: Instant) -> bool {
        self.give_up_after.is_some_and(|d| since.elapsed() >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_honour_the_server() {
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            let d = policy.delay(attempt, None);
            assert!(d <= policy.max_delay);
            assert!(d >= policy.first_delay / 2);
        }
        assert!(policy.delay(20, None) >= policy.max_delay / 2);
        assert!(policy.delay(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
    }

    #[test]
    fn by_default_a_step_never_gives_up() {
        let long_ago = Instant::now() - Duration::from_secs(30 * 24 * 3600);
        assert!(!RetryPolicy::default().gives_up(long_ago));
        let impatient = RetryPolicy {
            give_up_after: Some(Duration::from_secs(60)),
            ..RetryPolicy::default()
        };
        assert!(impatient.gives_up(long_ago));
        assert!(!impatient.gives_up(Instant::now()));
    }
}
