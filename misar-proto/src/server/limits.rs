//! The client-message rate limit (§2.8): a token bucket refilled lazily from `now`.
//!
//! No timer is needed: the bucket is brought up to date when a message arrives, in O(1).

use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens at most, one more every `refill_every`.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    tokens: u32,
    burst: u32,
    refill_every: Duration,
    /// The instant the current token count was valid at; refills are counted from here so
    /// that partial refill periods are not lost between messages.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket. A zero `refill_every` is treated as one nanosecond.
    pub(crate) fn new(burst: u32, refill_every: Duration, now: Instant) -> Self {
        Self {
            tokens: burst,
            burst,
            refill_every: refill_every.max(Duration::from_nanos(1)),
            updated: now,
        }
    }

    /// Takes one token; `false` when the bucket is empty (the message is over the limit).
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        match self.tokens.checked_sub(1) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated);
        let period = self.refill_every.as_nanos();
        let earned = elapsed.as_nanos() / period;
        if earned == 0 {
            return;
        }
        let missing = u128::from(self.burst.saturating_sub(self.tokens));
        if earned >= missing {
            self.tokens = self.burst;
            self.updated = now;
        } else {
            // `earned < missing <= u32::MAX`, and `earned` periods fit in `elapsed`.
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned);
            self.updated = self
                .refill_every
                .checked_mul(earned)
                .and_then(|spent| self.updated.checked_add(spent))
                .unwrap_or(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Instant {
        crate::testing::virtual_epoch()
    }

    #[test]
    fn burst_then_refuse() {
        let t0 = origin();
        let mut bucket = TokenBucket::new(3, Duration::from_secs(1), t0);
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(!bucket.take(t0));
        assert!(!bucket.take(t0 + Duration::from_millis(999)));
        assert!(bucket.take(t0 + Duration::from_secs(1)));
        assert!(!bucket.take(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn partial_periods_accumulate() {
        let t0 = origin();
        let mut bucket = TokenBucket::new(1, Duration::from_secs(1), t0);
        assert!(bucket.take(t0));
        // Messages at 0.6 s and 1.2 s: the first is refused, the second gets the token earned
        // at 1.0 s (the 0.6 s check must not restart the period).
        assert!(!bucket.take(t0 + Duration::from_millis(600)));
        assert!(bucket.take(t0 + Duration::from_millis(1200)));
        // The bucket was full from 1.0 s to 1.2 s (nothing accrues beyond the burst), so the
        // next token is earned one period after 1.2 s.
        assert!(!bucket.take(t0 + Duration::from_millis(2000)));
        assert!(bucket.take(t0 + Duration::from_millis(2200)));
    }

    #[test]
    fn refill_never_exceeds_burst() {
        let t0 = origin();
        let mut bucket = TokenBucket::new(2, Duration::from_millis(10), t0);
        let later = t0 + Duration::from_secs(3600);
        assert!(bucket.take(later));
        assert!(bucket.take(later));
        assert!(!bucket.take(later));
    }

    #[test]
    fn degenerate_settings() {
        let t0 = origin();
        let mut none = TokenBucket::new(0, Duration::from_secs(1), t0);
        assert!(!none.take(t0 + Duration::from_secs(10)));
        let mut fast = TokenBucket::new(1, Duration::ZERO, t0);
        assert!(fast.take(t0));
        assert!(fast.take(t0 + Duration::from_nanos(1)));
        let mut slow = TokenBucket::new(1, Duration::MAX, t0);
        assert!(slow.take(t0));
        assert!(!slow.take(t0 + Duration::from_secs(1 << 40)));
        // Time going backwards is treated as no time passing.
        let mut bucket = TokenBucket::new(1, Duration::from_secs(1), t0 + Duration::from_secs(5));
        assert!(bucket.take(t0));
        assert!(!bucket.take(t0));
    }
}
