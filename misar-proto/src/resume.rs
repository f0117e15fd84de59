//! Resume positions (§2.11): the `resume` query parameter and the `Misar-Resume` header.
//!
//! This is the parsing half of missed-event recovery: what a client asks for, with every
//! refusal of §2.11 typed. A value is `new` (first connection) or a position
//! `<epoch>:<offset>` (the last event seen); several values, or both places disagreeing, are
//! refused, and so is any other syntax (offset: decimal, no sign, no leading zeros, within
//! u64). Each refusal is an HTTP 400 before authentication is decided.
//!
//! ```
//! use misar_proto::resume::{extract_resume, Position, ResumeRequest};
//!
//! let head = http::Request::get("/mail/ws/inbox?resume=e1%3A42")
//!     .body(())
//!     .unwrap()
//!     .into_parts()
//!     .0;
//! let wanted = extract_resume(&head)?;
//! assert_eq!(wanted, Some(ResumeRequest::From(Position::parse("e1:42")?)));
//! # Ok::<(), misar_proto::resume::ResumeError>(())
//! ```
//!
//! Not yet wired into the handshake: the server side (offsets, history, the first `resume`
//! frame) builds on the fan-out table ([`crate::streams`]).

use std::fmt;

use http::HeaderMap;

/// The header that carries a resume value (§2.11).
pub const RESUME_HEADER: &str = "misar-resume";

/// The query parameter that carries a resume value (§2.11).
pub const RESUME_PARAMETER: &str = "resume";

/// The longest epoch: 32 characters of `[A-Za-z0-9_-]`.
pub const MAX_EPOCH_LEN: usize = 32;

/// Longer encoded values are refused before decoding (`new`, or an epoch, `:` and a u64, each
/// percent-encoded at most three bytes per character).
const MAX_ENCODED_VALUE_LEN: usize = 3 * (MAX_EPOCH_LEN + 1 + 20);

/// A stream's epoch: its offsets are only compared within one epoch.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(Box<str>);

impl Epoch {
    /// An epoch: 1–32 characters of `[A-Za-z0-9_-]`.
    pub fn new(epoch: &str) -> Result<Epoch, ResumeError> {
        let valid = !epoch.is_empty()
            && epoch.len() <= MAX_EPOCH_LEN
            && epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Epoch(epoch.into()))
        } else {
            Err(ResumeError::InvalidEpoch)
        }
    }

    /// The epoch as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({:?})", &*self.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A position in a stream: `<epoch>:<offset>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// The stream's epoch.
    pub epoch: Epoch,
    /// The offset of the last event seen.
    pub offset: u64,
}

impl Position {
    /// Parses `<epoch>:<offset>` (offset: decimal, no sign, no leading zeros, within u64).
    pub fn parse(value: &str) -> Result<Position, ResumeError> {
        let (epoch, offset) = value.split_once(':').ok_or(ResumeError::Syntax)?;
        let epoch = Epoch::new(epoch)?;
        let canonical = !offset.is_empty()
            && offset.bytes().all(|b| b.is_ascii_digit())
            && (offset == "0" || !offset.starts_with('0'));
        if !canonical {
            return Err(ResumeError::InvalidOffset);
        }
        let offset = offset.parse().map_err(|_| ResumeError::OffsetOutOfRange)?;
        Ok(Position { epoch, offset })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResumeRequest {
    /// `new`: a first connection; what follows is live.
    New,
    /// The last event the client saw.
    From(Position),
}

impl ResumeRequest {
    /// Parses a resume value: `new` or a position.
    pub fn parse(value: &str) -> Result<ResumeRequest, ResumeError> {
        if value == "new" {
            return Ok(ResumeRequest::New);
        }
        Position::parse(value).map(ResumeRequest::From)
    }
}

impl fmt::Display for ResumeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumeRequest::New => f.write_str("new"),
            ResumeRequest::From(position) => position.fmt(f),
        }
    }
}

/// Why a resume value was refused: each is an HTTP 400 (`bad_request`) before
/// authentication, never an upgrade, and the client does not retry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// More than one `resume` query parameter.
    #[error("more than one resume parameter")]
    SeveralParameters,
    /// More than one `Misar-Resume` header.
    #[error("more than one Misar-Resume header")]
    SeveralHeaders,
    /// The parameter and the header are both present and differ.
    #[error("the resume parameter and the Misar-Resume header disagree")]
    Conflicting,
    /// Neither `new` nor `<epoch>:<offset>`.
    #[error("a resume value is `new` or `<epoch>:<offset>`")]
    Syntax,
    /// The epoch is not 1–32 characters of `[A-Za-z0-9_-]`.
    #[error("the epoch is not 1-32 characters of [A-Za-z0-9_-]")]
    InvalidEpoch,
    /// The offset is not decimal digits without sign or leading zeros.
    #[error("the offset is not a decimal number without sign or leading zeros")]
    InvalidOffset,
    /// The offset does not fit in a u64.
    #[error("the offset does not fit in 64 bits")]
    OffsetOutOfRange,
    /// The header's value is not visible ASCII.
    #[error("the Misar-Resume header is not visible ASCII")]
    NotAscii,
    /// The value is longer than any valid one.
    #[error("the resume value is too long")]
    TooLong,
}

/// The resume value a request carries, from the `resume` query parameter or the
/// `Misar-Resume` header (`None`: the client did not opt in).
pub fn extract_resume(parts: &http::request::Parts) -> Result<Option<ResumeRequest>, ResumeError> {
    let query = match parts.uri.query() {
        Some(query) => from_query(query)?,
        None => None,
    };
    let header = from_header(&parts.headers)?;
    match (query, header) {
        (Some(a), Some(b)) if a != b => Err(ResumeError::Conflicting),
        (Some(value), _) | (None, Some(value)) => ResumeRequest::parse(&value).map(Some),
        (None, None) => Ok(None),
    }
}

/// The value of the single `resume` parameter, decoded.
fn from_query(query: &str) -> Result<Option<String>, ResumeError> {
    let mut found: Option<&str> = None;
    for pair in query.split('&') {
        let raw_name = pair.split_once('=').map_or(pair, |(name, _)| name);
        // `+` decodes to a space, never part of `resume`: plain percent-decoding suffices.
        let named = raw_name.len() <= 3 * RESUME_PARAMETER.len()
            && percent_encoding::percent_decode_str(raw_name).eq(RESUME_PARAMETER.bytes());
        if named && found.replace(pair).is_some() {
            return Err(ResumeError::SeveralParameters);
        }
    }
    let Some(pair) = found else {
        return Ok(None);
    };
    let raw_value = pair.split_once('=').map_or("", |(_, value)| value);
    if raw_value.len() > MAX_ENCODED_VALUE_LEN {
        return Err(ResumeError::TooLong);
    }
    Ok(form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(_, value)| value.into_owned()))
}

/// The value of the single `Misar-Resume` header.
fn from_header(headers: &HeaderMap) -> Result<Option<String>, ResumeError> {
    let mut values = headers.get_all(RESUME_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ResumeError::SeveralHeaders);
    }
    if value.len() > MAX_ENCODED_VALUE_LEN {
        return Err(ResumeError::TooLong);
    }
    let value = value.to_str().map_err(|_| ResumeError::NotAscii)?;
    Ok(Some(value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str, headers: &[&str]) -> http::request::Parts {
        let mut builder = http::Request::get(uri);
        for value in headers {
            builder = builder.header(RESUME_HEADER, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn position(epoch: &str, offset: u64) -> ResumeRequest {
        ResumeRequest::From(Position {
            epoch: Epoch::new(epoch).unwrap(),
            offset,
        })
    }

    #[test]
    fn values() {
        assert_eq!(ResumeRequest::parse("new"), Ok(ResumeRequest::New));
        assert_eq!(ResumeRequest::parse("e-1_X:0"), Ok(position("e-1_X", 0)));
        assert_eq!(
            ResumeRequest::parse(&format!("e:{}", u64::MAX)),
            Ok(position("e", u64::MAX))
        );
        let epoch32 = "a".repeat(32);
        assert_eq!(
            ResumeRequest::parse(&format!("{epoch32}:7")),
            Ok(position(&epoch32, 7))
        );
        for (value, error) in [
            ("", ResumeError::Syntax),
            ("New", ResumeError::Syntax),
            ("e", ResumeError::Syntax),
            (":1", ResumeError::InvalidEpoch),
            ("e.1:1", ResumeError::InvalidEpoch),
            (&*format!("{}:1", "a".repeat(33)), ResumeError::InvalidEpoch),
            ("e:", ResumeError::InvalidOffset),
            ("e:01", ResumeError::InvalidOffset),
            ("e:+1", ResumeError::InvalidOffset),
            ("e:-1", ResumeError::InvalidOffset),
            ("e:1 ", ResumeError::InvalidOffset),
            ("e:1:2", ResumeError::InvalidOffset),
            ("e:18446744073709551616", ResumeError::OffsetOutOfRange),
        ] {
            assert_eq!(ResumeRequest::parse(value), Err(error), "{value:?}");
        }
        for value in ["new", "e:0", "ep0ch_-:123"] {
            assert_eq!(ResumeRequest::parse(value).unwrap().to_string(), value);
        }
    }

    #[test]
    fn places() {
        assert_eq!(extract_resume(&head("/x", &[])), Ok(None));
        assert_eq!(
            extract_resume(&head("/x?resume=new", &[])),
            Ok(Some(ResumeRequest::New))
        );
        assert_eq!(
            extract_resume(&head("/x?token=t&r%65sume=e%3A5", &[])),
            Ok(Some(position("e", 5)))
        );
        assert_eq!(
            extract_resume(&head("/x", &["e:5"])),
            Ok(Some(position("e", 5)))
        );
        // Both places, agreeing: fine; disagreeing: refused.
        assert_eq!(
            extract_resume(&head("/x?resume=e:5", &["e:5"])),
            Ok(Some(position("e", 5)))
        );
        assert_eq!(
            extract_resume(&head("/x?resume=e:5", &["e:6"])),
            Err(ResumeError::Conflicting)
        );
        assert_eq!(
            extract_resume(&head("/x?resume=new&resume=new", &[])),
            Err(ResumeError::SeveralParameters)
        );
        assert_eq!(
            extract_resume(&head("/x", &["new", "new"])),
            Err(ResumeError::SeveralHeaders)
        );
        assert_eq!(
            extract_resume(&head("/x?resume=", &[])),
            Err(ResumeError::Syntax)
        );
        assert_eq!(
            extract_resume(&head(&format!("/x?resume={}", "1".repeat(200)), &[])),
            Err(ResumeError::TooLong)
        );
        // Names that only look alike are not the parameter.
        assert_eq!(
            extract_resume(&head("/x?resumes=new&resum=e:1", &[])),
            Ok(None)
        );
    }
}
