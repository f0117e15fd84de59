//! Reconnect delays (§2.6): exponential backoff with full jitter.
//!
//! Attempt `n` (counting from 0 since the last [`Backoff::reset`]) waits a delay drawn
//! uniformly from `[0, min(cap, start × 2ⁿ)]`, where `start` is the configured base for
//! [`Pace::Normal`] and four times the base for [`Pace::Longer`] (the server said it is
//! overloaded). "Full jitter" spreads a crowd of clients that lost the same server over the
//! whole window instead of having them return in waves.
//!
//! The type is pure: randomness comes from a seeded generator (a splitmix64 written here)
//! whose seed the caller supplies, or from a closure the caller supplies — never from an
//! ambient source (this crate reads no OS entropy) — and the caller decides when a connection
//! was healthy long enough to [`reset`](Backoff::reset) it (the client session does so after
//! one `ping_interval`).
//!
//! ```
//! use std::time::Duration;
//! use misar_proto::backoff::{Backoff, BackoffConfig};
//! use misar_proto::close::Pace;
//!
//! let mut backoff = Backoff::new(BackoffConfig::default(), 7);
//! for attempt in 0..12 {
//!     let delay = backoff.next_delay(Pace::Normal);
//!     // The window doubles from 500 ms and stops growing at the 30 s cap.
//!     let window = Duration::from_millis(500 << attempt).min(Duration::from_secs(30));
//!     assert!(delay <= window);
//! }
//! backoff.reset();
//! assert!(backoff.next_delay(Pace::Normal) <= Duration::from_millis(500));
//! ```

use std::fmt;
use std::time::Duration;

use crate::close::Pace;
use crate::config::{ConfigError, nonzero_duration};

/// How much larger the starting window is for [`Pace::Longer`] than for [`Pace::Normal`].
pub const LONGER_PACE_FACTOR: u32 = 4;

/// The exponent stops growing here: 2³¹ × any sane base is far above any sane cap, and the
/// attempt counter must not overflow the shift.
const MAX_EXPONENT: u32 = 31;

/// Base and cap of the backoff window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackoffConfig {
    /// The window of the first attempt (500 ms by default).
    pub base: Duration,
    /// The largest window (30 s by default). A cap below the base makes every window the cap.
    pub cap: Duration,
}

impl BackoffConfig {
    /// Checks the configuration: a zero `base` or a zero `cap` makes every delay zero, so a
    /// client would reconnect in a tight loop, and a crowd of clients would return all at
    /// once (the backoff would not back off). A `cap` below the `base` is accepted: every
    /// window is then the cap (a constant window, still jittered).
    ///
    /// [`Backoff::new`] does not call this (zero delays are what it then draws).
    ///
    /// ```
    /// use std::time::Duration;
    /// use misar_proto::backoff::BackoffConfig;
    ///
    /// assert!(BackoffConfig::default().validate().is_ok());
    /// let error = BackoffConfig { base: Duration::ZERO, ..Default::default() }.validate();
    /// assert_eq!(error.unwrap_err().field, "base");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_as("base", "cap")
    }

    /// [`validate`](Self::validate) with the fields named as given (for a nested config).
    pub(crate) fn validate_as(
        &self,
        base: &'static str,
        cap: &'static str,
    ) -> Result<(), ConfigError> {
        nonzero_duration(base, self.base)?;
        nonzero_duration(cap, self.cap)
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

/// Exponential backoff with full jitter. See the [module docs](self).
pub struct Backoff {
    config: BackoffConfig,
    attempt: u32,
    random: Random,
}

enum Random {
    Seeded(SplitMix64),
    Injected(Box<dyn FnMut() -> u64 + Send>),
}

impl Random {
    fn next(&mut self) -> u64 {
        match self {
            Random::Seeded(rng) => rng.next_u64(),
            Random::Injected(f) => f(),
        }
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("config", &self.config)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Backoff {
    /// A backoff whose jitter comes from a splitmix64 generator seeded with `seed`.
    ///
    /// Give each client a different seed (e.g. from the operating system's random source):
    /// clients sharing a seed draw the same delays, which defeats the jitter.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            attempt: 0,
            random: Random::Seeded(SplitMix64::new(seed)),
        }
    }

    /// A backoff whose jitter comes from `random` (each call must return a uniformly
    /// distributed `u64`).
    pub fn with_random(config: BackoffConfig, random: Box<dyn FnMut() -> u64 + Send>) -> Self {
        Self {
            config,
            attempt: 0,
            random: Random::Injected(random),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// How many delays were drawn since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay for `pace`: `min(cap, start × 2^attempts)`.
    pub fn window(&self, pace: Pace) -> Duration {
        let start = match pace {
            Pace::Normal => self.config.base,
            Pace::Longer => self.config.base.saturating_mul(LONGER_PACE_FACTOR),
        };
        let growth = 1u32 << self.attempt.min(MAX_EXPONENT);
        start.saturating_mul(growth).min(self.config.cap)
    }

    /// Draws the next delay, uniformly from `[0, window(pace)]`, and widens the window of the
    /// following attempt.
    pub fn next_delay(&mut self, pace: Pace) -> Duration {
        let window = self.window(pace);
        self.attempt = self.attempt.saturating_add(1);
        // Windows beyond u64 nanoseconds (584 years) are clamped; nobody waits that long.
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let span = u128::from(window_nanos) + 1;
        // Multiply-shift maps a uniform u64 onto [0, span) without a modulo's bias worth
        // speaking of, and without a division.
        let scaled = (u128::from(self.random.next()) * span) >> 64;
        Duration::from_nanos(u64::try_from(scaled).unwrap_or(window_nanos))
    }

    /// Starts over from the base window (after a connection stayed up long enough).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to spread reconnects;
/// not for anything secret.
#[derive(Clone, Debug)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A backoff whose random source always returns `value`.
    fn constant(value: u64) -> Backoff {
        Backoff::with_random(BackoffConfig::default(), Box::new(move || value))
    }

    #[test]
    fn default_config_is_the_contract() {
        let config = BackoffConfig::default();
        assert_eq!(config.base, ms(500));
        assert_eq!(config.cap, Duration::from_secs(30));
    }

    #[test]
    fn window_doubles_then_stops_at_cap() {
        let mut backoff = Backoff::new(BackoffConfig::default(), 1);
        let mut windows = Vec::new();
        for _ in 0..10 {
            windows.push(backoff.window(Pace::Normal));
            backoff.next_delay(Pace::Normal);
        }
        assert_eq!(
            windows,
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
            .map(ms)
        );
    }

    #[test]
    fn extreme_random_values_hit_both_ends_of_the_window() {
        assert_eq!(constant(0).next_delay(Pace::Normal), Duration::ZERO);
        assert_eq!(constant(u64::MAX).next_delay(Pace::Normal), ms(500));
        let mut max = constant(u64::MAX);
        max.next_delay(Pace::Normal);
        assert_eq!(max.next_delay(Pace::Normal), ms(1000));
        // Half of the range lands in the middle of the window.
        assert_eq!(constant(1 << 63).next_delay(Pace::Normal), ms(250));
    }

    #[test]
    fn delays_stay_within_window_for_many_seeds() {
        for seed in 0..200 {
            let mut backoff = Backoff::new(BackoffConfig::default(), seed);
            for _ in 0..40 {
                let window = backoff.window(Pace::Normal);
                let delay = backoff.next_delay(Pace::Normal);
                assert!(delay <= window, "seed {seed}: {delay:?} > {window:?}");
                assert!(delay <= Duration::from_secs(30));
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        // Full jitter: 1000 clients on their first attempt are spread over the whole window,
        // not bunched at its end.
        let delays: Vec<Duration> = (0..1000)
            .map(|seed| Backoff::new(BackoffConfig::default(), seed).next_delay(Pace::Normal))
            .collect();
        let low = delays.iter().filter(|d| **d < ms(250)).count();
        assert!((400..=600).contains(&low), "{low} of 1000 below half");
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 900);
    }

    #[test]
    fn same_seed_same_delays() {
        let mut a = Backoff::new(BackoffConfig::default(), 42);
        let mut b = Backoff::new(BackoffConfig::default(), 42);
        let mut c = Backoff::new(BackoffConfig::default(), 43);
        let da: Vec<_> = (0..8).map(|_| a.next_delay(Pace::Normal)).collect();
        let db: Vec<_> = (0..8).map(|_| b.next_delay(Pace::Normal)).collect();
        let dc: Vec<_> = (0..8).map(|_| c.next_delay(Pace::Normal)).collect();
        assert_eq!(da, db);
        assert_ne!(da, dc);
    }

    #[test]
    fn reset_returns_to_base() {
        let mut backoff = constant(u64::MAX);
        for _ in 0..5 {
            backoff.next_delay(Pace::Normal);
        }
        assert_eq!(backoff.attempts(), 5);
        assert_eq!(backoff.window(Pace::Normal), ms(16000));
        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        assert_eq!(backoff.next_delay(Pace::Normal), ms(500));
    }

    #[test]
    fn longer_pace_starts_four_times_higher_and_shares_the_cap() {
        let mut backoff = constant(u64::MAX);
        assert_eq!(backoff.next_delay(Pace::Longer), ms(2000));
        assert_eq!(backoff.next_delay(Pace::Longer), ms(4000));
        // The attempt counter is shared: a normal attempt after two longer ones is the third.
        assert_eq!(backoff.next_delay(Pace::Normal), ms(2000));
        for _ in 0..10 {
            backoff.next_delay(Pace::Longer);
        }
        assert_eq!(backoff.next_delay(Pace::Longer), Duration::from_secs(30));
    }

    #[test]
    fn custom_base_and_cap() {
        let config = BackoffConfig {
            base: ms(10),
            cap: ms(35),
        };
        let mut backoff = Backoff::with_random(config, Box::new(|| u64::MAX));
        let delays: Vec<_> = (0..4).map(|_| backoff.next_delay(Pace::Normal)).collect();
        assert_eq!(delays, [10, 20, 35, 35].map(ms));
        // A cap below the base caps everything.
        let config = BackoffConfig {
            base: ms(100),
            cap: ms(50),
        };
        let mut backoff = Backoff::with_random(config, Box::new(|| u64::MAX));
        assert_eq!(backoff.next_delay(Pace::Longer), ms(50));
    }

    #[test]
    fn extreme_configs_do_not_panic() {
        let config = BackoffConfig {
            base: Duration::MAX,
            cap: Duration::MAX,
        };
        let mut backoff = Backoff::with_random(config, Box::new(|| u64::MAX));
        for _ in 0..100 {
            let delay = backoff.next_delay(Pace::Longer);
            assert_eq!(delay, Duration::from_nanos(u64::MAX));
        }
        let zero = BackoffConfig {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        };
        let mut backoff = Backoff::new(zero, 3);
        assert_eq!(backoff.next_delay(Pace::Normal), Duration::ZERO);
        // The attempt counter saturates instead of overflowing.
        let mut backoff = Backoff::new(BackoffConfig::default(), 9);
        backoff.attempt = u32::MAX;
        assert!(backoff.next_delay(Pace::Normal) <= Duration::from_secs(30));
        assert_eq!(backoff.attempts(), u32::MAX);
    }

    #[test]
    fn validation_refuses_zero_base_and_cap_only() {
        use crate::config::ConfigProblem;
        assert_eq!(BackoffConfig::default().validate(), Ok(()));
        let zero_base = BackoffConfig {
            base: Duration::ZERO,
            cap: ms(10),
        };
        let zero_cap = BackoffConfig {
            base: ms(10),
            cap: Duration::ZERO,
        };
        for (config, field) in [(zero_base, "base"), (zero_cap, "cap")] {
            let error = config.validate().unwrap_err();
            assert_eq!((error.field, error.problem), (field, ConfigProblem::Zero));
            // What it would do: every delay is zero, however many attempts failed.
            let mut backoff = Backoff::new(config, 1);
            for _ in 0..10 {
                assert_eq!(backoff.next_delay(Pace::Longer), Duration::ZERO);
            }
        }
        let cap_below_base = BackoffConfig {
            base: ms(100),
            cap: ms(50),
        };
        assert_eq!(cap_below_base.validate(), Ok(()));
    }

    #[test]
    fn debug_does_not_dump_the_random_source() {
        let backoff = Backoff::new(BackoffConfig::default(), 5);
        let text = format!("{backoff:?}");
        assert!(text.starts_with("Backoff {"), "{text}");
        assert!(text.contains("attempt: 0"));
    }
}
