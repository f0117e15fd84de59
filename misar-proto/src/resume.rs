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
//! The other halves: [`ResumeFrame`], the first frame of an opted-in connection, and
//! [`decide`], the recovery decision every stream makes from its epoch, its latest offset and
//! the oldest offset it still holds (the in-memory table's history, or a broker's).

use std::fmt;
use std::io::Write as _;

use bytes::Bytes;
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
pub struct Epoch(std::sync::Arc<str>);

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

/// The first text frame of an opted-in connection (§2.11):
/// `{"type":"resume","epoch":"E","offset":N,"recovered":true|false}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResumeFrame {
    /// The stream's epoch now.
    pub epoch: Epoch,
    /// Recovered: the client's offset, echoed (or, for `new`, the latest offset). Not
    /// recovered: the stream's latest offset (0 when empty).
    pub offset: u64,
    /// Whether every event after the client's position follows (`false`: some may be gone;
    /// the application refetches its state out of band).
    pub recovered: bool,
}

/// The `type` of the [`ResumeFrame`].
pub const RESUME_FRAME_TYPE: &str = "resume";

impl ResumeFrame {
    /// The position the client holds once it has this frame: `<epoch>:<offset>`.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset: self.offset,
        }
    }

    /// The compact JSON text of the frame.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(64 + self.epoch.as_str().len());
        // Epochs are `[A-Za-z0-9_-]`: nothing to escape. Writing to a Vec cannot fail.
        let _ = write!(
            out,
            r#"{{"type":"resume","epoch":"{}","offset":{},"recovered":{}}}"#,
            self.epoch, self.offset, self.recovered
        );
        Bytes::from(out)
    }

    /// Decodes a text frame as a resume frame. Like §2.4 decoding, unknown fields are ignored;
    /// a frame of another `type` is [`ResumeFrameError::NotResume`].
    pub fn decode(text: &[u8]) -> Result<ResumeFrame, ResumeFrameError> {
        #[derive(serde::Deserialize)]
        struct Wire<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            epoch: Option<std::borrow::Cow<'a, str>>,
            offset: Option<u64>,
            recovered: Option<bool>,
        }
        #[derive(serde::Deserialize)]
        struct Kind<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let wire: Wire<'_> = match serde_json::from_slice(text) {
            Ok(wire) => wire,
            // Which: a resume frame gone wrong, or another message (one more parse, only on
            // a frame that is not a valid resume frame anyway).
            Err(_) => {
                return Err(match serde_json::from_slice::<Kind<'_>>(text) {
                    Ok(kind) if kind.kind == RESUME_FRAME_TYPE => ResumeFrameError::Malformed,
                    _ => ResumeFrameError::NotResume,
                });
            }
        };
        if wire.kind != RESUME_FRAME_TYPE {
            return Err(ResumeFrameError::NotResume);
        }
        let epoch = wire.epoch.ok_or(ResumeFrameError::Missing("epoch"))?;
        let epoch = Epoch::new(&epoch).map_err(|_| ResumeFrameError::InvalidEpoch)?;
        Ok(ResumeFrame {
            epoch,
            offset: wire.offset.ok_or(ResumeFrameError::Missing("offset"))?,
            recovered: wire
                .recovered
                .ok_or(ResumeFrameError::Missing("recovered"))?,
        })
    }
}

/// Why a text frame is not a valid [`ResumeFrame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeFrameError {
    /// `"type":"resume"`, but a field has the wrong JSON type (or a key appears twice).
    #[error("a resume frame with a field of the wrong type")]
    Malformed,
    /// Not a resume frame: not a JSON object with `"type":"resume"` (another type, no type,
    /// not JSON).
    #[error("not a resume frame")]
    NotResume,
    /// A required field is missing.
    #[error("resume frame without `{0}`")]
    Missing(&'static str),
    /// The epoch is not 1–32 characters of `[A-Za-z0-9_-]`.
    #[error("resume frame with an invalid epoch")]
    InvalidEpoch,
}

/// Why a stream could not recover a position (the frame says `recovered: false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotRecovered {
    /// The position is of another epoch (the history behind it may be lost).
    OtherEpoch,
    /// Events after the position were trimmed from the history (count, age or total budget).
    Trimmed,
    /// The position is ahead of the stream's latest offset.
    Ahead,
}

/// What a stream decided for a resume request: the first frame, and which events follow.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Recovery {
    /// The frame to send first.
    pub frame: ResumeFrame,
    /// Replay every held event with an offset above this one, in order, before live events
    /// (`None`: replay nothing; for `new` and an unrecovered position, the §2.7 late-joiner
    /// event comes first instead).
    pub replay_after: Option<u64>,
    /// Why the position could not be recovered (`None` when `frame.recovered`).
    pub not_recovered: Option<NotRecovered>,
}

/// The recovery decision of §2.11 for a stream in `epoch` whose latest offset is `latest` (0:
/// no event yet) and whose events up to offset `lost_through` may exist but are not all held
/// any more (trimmed, expired, or before the stream's memory began; 0 when nothing was ever
/// lost). A position is recovered when it is in this epoch, not ahead of `latest`, and not
/// below `lost_through`: every event after it is then held. Offsets need not be contiguous.
///
/// ```
/// use misar_proto::resume::{decide, Epoch, NotRecovered, Position, ResumeRequest};
///
/// let epoch = Epoch::new("e1")?;
/// let at = |offset| ResumeRequest::From(Position { epoch: epoch.clone(), offset });
/// // Latest is 9; events up to 4 were trimmed, 5..=9 are held.
/// assert_eq!(decide(&at(6), &epoch, 9, 4).replay_after, Some(6));
/// assert_eq!(decide(&at(4), &epoch, 9, 4).replay_after, Some(4));
/// assert_eq!(decide(&at(3), &epoch, 9, 4).not_recovered, Some(NotRecovered::Trimmed));
/// assert_eq!(decide(&at(10), &epoch, 9, 4).not_recovered, Some(NotRecovered::Ahead));
/// let recovery = decide(&ResumeRequest::New, &epoch, 9, 4);
/// assert!(recovery.frame.recovered && recovery.frame.offset == 9 && recovery.replay_after.is_none());
/// # Ok::<(), misar_proto::resume::ResumeError>(())
/// ```
pub fn decide(request: &ResumeRequest, epoch: &Epoch, latest: u64, lost_through: u64) -> Recovery {
    let outcome = match request {
        ResumeRequest::New => Ok(None),
        ResumeRequest::From(position) if position.epoch != *epoch => Err(NotRecovered::OtherEpoch),
        ResumeRequest::From(position) if position.offset > latest => Err(NotRecovered::Ahead),
        ResumeRequest::From(position) if position.offset < lost_through => {
            Err(NotRecovered::Trimmed)
        }
        ResumeRequest::From(position) => Ok(Some(position.offset)),
    };
    match outcome {
        Ok(after) => Recovery {
            frame: ResumeFrame {
                epoch: epoch.clone(),
                offset: after.unwrap_or(latest),
                recovered: true,
            },
            replay_after: after,
            not_recovered: None,
        },
        Err(reason) => Recovery {
            frame: ResumeFrame {
                epoch: epoch.clone(),
                offset: latest,
                recovered: false,
            },
            replay_after: None,
            not_recovered: Some(reason),
        },
    }
}

/// The `"offset":N` an opted-in connection's event carries (§2.11), `None` when it has none
/// (or an `offset` that is not a u64).
///
/// Our servers put it last (`...,"offset":N}`), which is read from the end of the text without
/// parsing it again; an event from another producer that puts it elsewhere costs one more
/// parse of the text, which only looks for the top-level `offset`. The text is expected to have
/// decoded as an event already (this does not validate it).
///
/// ```
/// use misar_proto::resume::event_offset;
///
/// assert_eq!(event_offset(br#"{"type":"unsubscribe","email":"a@b","offset":42}"#), Some(42));
/// assert_eq!(event_offset(br#"{"offset": 7, "type":"unsubscribe","email":"a@b"}"#), Some(7));
/// assert_eq!(event_offset(br#"{"type":"unsubscribe","email":"a@b"}"#), None);
/// assert_eq!(event_offset(br#"{"type":"x","meta":{"offset":3}}"#), None);
/// ```
pub fn event_offset(text: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"offset\":";
    let body = text.trim_ascii_end().strip_suffix(b"}")?;
    let digits_at = body
        .iter()
        .rposition(|b| !b.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let (head, digits) = body.split_at(digits_at);
    let canonical = !digits.is_empty() && (digits == b"0" || digits[0] != b'0');
    let member = head
        .strip_suffix(KEY)
        .is_some_and(|before| matches!(before.last(), Some(b',' | b'{')));
    if canonical && member {
        // A `"offset":N}` at the very end of a valid JSON object is a top-level member: a
        // nested one would be followed by the nested object's own `}`.
        let digits = std::str::from_utf8(digits).ok()?;
        if let Ok(offset) = digits.parse() {
            return Some(offset);
        }
    }
    if !text.windows(8).any(|w| w == b"\"offset\"") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Wire {
        offset: Option<u64>,
    }
    serde_json::from_slice::<Wire>(text).ok()?.offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_offset_reads_the_top_level_member_only() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (br#"{"type":"a","offset":0}"#, Some(0)),
            (
                br#"{"type":"a","offset":18446744073709551615}"#,
                Some(u64::MAX),
            ),
            (br#"{"type":"a","offset":18446744073709551616}"#, None),
            (br#"{"type":"a","offset":01}"#, None),
            (br#"{"type":"a","offset":-1}"#, None),
            (br#"{"type":"a","offset":"5"}"#, None),
            (br#"{"type":"a","offset":5} "#, Some(5)),
            (br#"{"type":"a","offset" : 5 }"#, Some(5)),
            (br#"{"a\"offset":5}"#, None),
            (br#"{"type":"a","m":{"offset":5}}"#, None),
            (br#"{"type":"a","m":{"x":1,"offset":5}}"#, None),
            // Duplicates: the last wins, as with JavaScript's JSON.parse.
            (br#"{"offset":5,"offset":6}"#, Some(6)),
            (br#"{"type":"a","s":"\"offset\":5}"}"#, None),
            (b"", None),
            (b"}", None),
            (b"5}", None),
            (br#""offset":5}"#, None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                event_offset(text),
                *expected,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

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
    fn frames() {
        let frame = ResumeFrame {
            epoch: Epoch::new("e-1").unwrap(),
            offset: 42,
            recovered: false,
        };
        let text = frame.encode();
        assert_eq!(
            &text[..],
            br#"{"type":"resume","epoch":"e-1","offset":42,"recovered":false}"#
        );
        assert_eq!(ResumeFrame::decode(&text), Ok(frame));
        assert_eq!(
            ResumeFrame::decode(br#"{"type":"progress","campaignId":"c"}"#),
            Err(ResumeFrameError::NotResume)
        );
        assert_eq!(
            ResumeFrame::decode(br#"{"type":"resume","epoch":"e","offset":1}"#),
            Err(ResumeFrameError::Missing("recovered"))
        );
        assert_eq!(
            ResumeFrame::decode(br#"{"type":"resume","epoch":"e.1","offset":1,"recovered":true}"#),
            Err(ResumeFrameError::InvalidEpoch)
        );
        assert_eq!(
            ResumeFrame::decode(br#"{"type":"resume","epoch":"e","offset":-1,"recovered":true}"#),
            Err(ResumeFrameError::Malformed)
        );
        for other in [
            &b"[1]"[..],
            b"",
            b"not json",
            br#"{"offset":1}"#,
            br#"{"type":"x","type":"resume"}"#,
        ] {
            assert_eq!(ResumeFrame::decode(other), Err(ResumeFrameError::NotResume));
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
