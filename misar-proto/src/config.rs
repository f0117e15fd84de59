//! Checking configurations: [`ConfigError`], what `validate` returns.
//!
//! The sessions never refuse a configuration (their constructors are infallible and clamp
//! what would make them spin, as documented on each), but several values make no sense — a
//! zero pong timeout closes every connection at its first ping, a zero backoff base
//! reconnects in a tight loop — and would otherwise misbehave silently. Check a configuration
//! where it is built, before it is used:
//!
//! - [`ServerConfig::validate`](crate::server::ServerConfig::validate),
//! - [`ClientConfig::validate`](crate::client::ClientConfig::validate),
//! - [`BackoffConfig::validate`](crate::backoff::BackoffConfig::validate).
//!
//! Each documents its rules and why. The adapters call them in their builders.
//!
//! ```
//! use std::time::Duration;
//! use misar_proto::config::{ConfigError, ConfigProblem};
//! use misar_proto::server::ServerConfig;
//!
//! assert_eq!(ServerConfig::default().validate(), Ok(()));
//! let config = ServerConfig { pong_timeout: Duration::ZERO, ..ServerConfig::default() };
//! let error = config.validate().unwrap_err();
//! assert_eq!((error.field, error.problem), ("pong_timeout", ConfigProblem::Zero));
//! assert_eq!(error.to_string(), "invalid configuration: `pong_timeout` must not be zero");
//! ```

use std::fmt;
use std::time::Duration;

/// A configuration value that is refused, with the field it is in.
///
/// Holds no secret: only the field's name and what is wrong with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
#[error("invalid configuration: `{field}` {problem}")]
pub struct ConfigError {
    /// The field, by its Rust name (`"pong_timeout"`; a nested one as `"backoff.base"`).
    pub field: &'static str,
    /// What is wrong with its value.
    pub problem: ConfigProblem,
}

impl ConfigError {
    /// An error about `field` (for adapters that check settings of their own the same way).
    pub fn new(field: &'static str, problem: ConfigProblem) -> Self {
        Self { field, problem }
    }
}

/// What is wrong with a configuration value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// The value is zero (a zero duration, count or size).
    Zero,
    /// A duration below the smallest one the session honours.
    BelowMinimum {
        /// The smallest accepted value.
        minimum: Duration,
    },
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigProblem::Zero => f.write_str("must not be zero"),
            ConfigProblem::BelowMinimum { minimum } => write!(f, "must be at least {minimum:?}"),
        }
    }
}

/// `Err` naming `field` when `value` is zero.
pub(crate) fn nonzero_duration(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::new(field, ConfigProblem::Zero))
    } else {
        Ok(())
    }
}

/// `Err` naming `field` when `value` is zero.
pub(crate) fn nonzero_count(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::new(field, ConfigProblem::Zero))
    } else {
        Ok(())
    }
}

/// `Err` naming `field` when `value` is below `minimum`.
pub(crate) fn at_least(
    field: &'static str,
    value: Duration,
    minimum: Duration,
) -> Result<(), ConfigError> {
    if value < minimum {
        Err(ConfigError::new(
            field,
            ConfigProblem::BelowMinimum { minimum },
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_the_problem() {
        let e = ConfigError::new("backoff.base", ConfigProblem::Zero);
        assert_eq!(
            e.to_string(),
            "invalid configuration: `backoff.base` must not be zero"
        );
        let e = ConfigError::new(
            "ping_interval",
            ConfigProblem::BelowMinimum {
                minimum: Duration::from_millis(1),
            },
        );
        assert_eq!(
            e.to_string(),
            "invalid configuration: `ping_interval` must be at least 1ms"
        );
    }

    #[test]
    fn helpers() {
        assert!(nonzero_duration("f", Duration::from_nanos(1)).is_ok());
        assert_eq!(
            nonzero_duration("f", Duration::ZERO),
            Err(ConfigError::new("f", ConfigProblem::Zero))
        );
        assert!(nonzero_count("f", 1).is_ok());
        assert!(nonzero_count("f", 0).is_err());
        let min = Duration::from_millis(1);
        assert!(at_least("f", min, min).is_ok());
        assert_eq!(
            at_least("f", min - Duration::from_nanos(1), min),
            Err(ConfigError::new(
                "f",
                ConfigProblem::BelowMinimum { minimum: min }
            ))
        );
    }
}
