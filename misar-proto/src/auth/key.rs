//! [`ApiKey`]: the `msk_` key of §2.2, redacted in every textual form.

use std::fmt;

/// Longest key body after the `msk_` prefix.
pub const MAX_KEY_BODY_LEN: usize = 252;
/// The prefix every key carries.
pub const KEY_PREFIX: &str = "msk_";

/// A syntactically valid API key: `msk_` followed by 1–252 characters of `[A-Za-z0-9_-]`.
///
/// The key never appears in `Debug` or `Display` output — only `msk_…` and its last four
/// characters (`msk_…abcd`), enough to tell keys apart in a log. Equality is constant-time in
/// the length of the shorter key's bytes so comparing keys does not leak how many leading
/// characters matched. Use [`ApiKey::expose`] to hand the key to a lookup.
///
/// ```
/// use misar_proto::auth::ApiKey;
/// let key = ApiKey::parse("msk_live_0123456789abcd").unwrap();
/// assert_eq!(format!("{key}"), "msk_…abcd");
/// assert_eq!(format!("{key:?}"), "ApiKey(msk_…abcd)");
/// assert!(ApiKey::parse("sk_live").is_err());
/// ```
#[derive(Clone)]
pub struct ApiKey(Box<str>);

/// Why a string is not an API key. Carries no part of the string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySyntaxError {
    /// The key does not start with `msk_`.
    #[error("API key does not start with `msk_`")]
    MissingPrefix,
    /// Nothing follows `msk_`.
    #[error("API key has nothing after `msk_`")]
    Empty,
    /// More than 252 characters follow `msk_`.
    #[error("API key is longer than msk_ + {MAX_KEY_BODY_LEN} characters")]
    TooLong,
    /// A character outside `[A-Za-z0-9_-]`.
    #[error("API key holds a character outside [A-Za-z0-9_-]")]
    InvalidCharacter,
}

impl ApiKey {
    /// Checks the syntax of §2.2.
    pub fn parse(key: &str) -> Result<Self, KeySyntaxError> {
        let body = key
            .strip_prefix(KEY_PREFIX)
            .ok_or(KeySyntaxError::MissingPrefix)?;
        if body.is_empty() {
            return Err(KeySyntaxError::Empty);
        }
        if body.len() > MAX_KEY_BODY_LEN {
            return Err(KeySyntaxError::TooLong);
        }
        if !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(KeySyntaxError::InvalidCharacter);
        }
        Ok(Self(key.into()))
    }

    /// The full key, for the key-check lookup. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The redacted form: `msk_…` and the last four characters (fewer for a short key).
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(self)
    }

    /// Constant-time comparison against a candidate string (e.g. a stored key).
    pub fn ct_eq_str(&self, other: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), other.as_bytes())
    }
}

/// Display adapter returned by [`ApiKey::redacted`].
pub struct Redacted<'a>(&'a ApiKey);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = &self.0.0[KEY_PREFIX.len()..];
        // Show at most 4 trailing characters, and never more than half of a short key.
        let shown = (body.len() / 2).min(4);
        write!(f, "{KEY_PREFIX}…{}", &body[body.len() - shown..])
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.redacted())
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.redacted().fmt(f)
    }
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for ApiKey {}

impl std::str::FromStr for ApiKey {
    type Err = KeySyntaxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// first differ. `black_box` keeps the optimizer from turning the fold into an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_of_section_2_2() {
        assert!(ApiKey::parse("msk_a").is_ok());
        assert!(ApiKey::parse("msk_A-z_0").is_ok());
        assert!(ApiKey::parse(&format!("msk_{}", "x".repeat(252))).is_ok());
        assert_eq!(
            ApiKey::parse(&format!("msk_{}", "x".repeat(253))),
            Err(KeySyntaxError::TooLong)
        );
        assert_eq!(ApiKey::parse("msk_"), Err(KeySyntaxError::Empty));
        assert_eq!(ApiKey::parse("MSK_abc"), Err(KeySyntaxError::MissingPrefix));
        assert_eq!(ApiKey::parse(""), Err(KeySyntaxError::MissingPrefix));
        for bad in [
            "msk_a b", "msk_a.b", "msk_a+b", "msk_é", "msk_a\0", "msk_a/",
        ] {
            assert_eq!(
                ApiKey::parse(bad),
                Err(KeySyntaxError::InvalidCharacter),
                "{bad}"
            );
        }
    }

    #[test]
    fn redaction_never_shows_the_secret_part() {
        let key = ApiKey::parse("msk_supersecretvalue9876").unwrap();
        for text in [format!("{key}"), format!("{key:?}"), format!("{key:#?}")] {
            assert!(!text.contains("supersecret"), "{text}");
            assert!(text.contains("msk_…9876"), "{text}");
        }
        // Short keys reveal at most half their body.
        assert_eq!(ApiKey::parse("msk_ab").unwrap().to_string(), "msk_…b");
        assert_eq!(ApiKey::parse("msk_a").unwrap().to_string(), "msk_…");
    }

    #[test]
    fn equality() {
        let a = ApiKey::parse("msk_abc").unwrap();
        assert_eq!(a, ApiKey::parse("msk_abc").unwrap());
        assert_ne!(a, ApiKey::parse("msk_abd").unwrap());
        assert_ne!(a, ApiKey::parse("msk_abcd").unwrap());
        assert!(a.ct_eq_str("msk_abc"));
        assert!(!a.ct_eq_str("msk_ab"));
    }
}
