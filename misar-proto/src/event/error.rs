//! Typed decoding errors: each names what was wrong, and the field when there is one.

use super::TimestampError;
use crate::route::CampaignIdError;

/// Why a text frame is not an event of the expected channel.
///
/// Fields are named by their wire name (`"receivedAt"`, not `received_at`). The first problem
/// met while reading the frame is the one reported; a type of the other channel is refused as
/// soon as `type` is read, without looking at the rest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is over the decoder's size limit; nothing was parsed.
    #[error("event of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Length of the frame.
        len: usize,
        /// The decoder's limit.
        max: usize,
    },
    /// Not well-formed JSON (including trailing characters after the object, invalid UTF-8 in
    /// a string, or a number out of range).
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the JSON parser found wrong.
        message: String,
    },
    /// Well-formed JSON, but not an object.
    #[error("an event must be a JSON object")]
    NotAnObject,
    /// The object has no `type` field.
    #[error("the event has no `type` field")]
    MissingType,
    /// A known event type of the other channel (e.g. `progress` on the inbox channel).
    #[error("`{kind}` is not an event of this channel")]
    WrongChannel {
        /// The event's `type`.
        kind: &'static str,
    },
    /// A required field is absent.
    #[error("missing field `{field}`")]
    MissingField {
        /// Wire name of the field.
        field: &'static str,
    },
    /// A field of the event's type is present but its value is not acceptable.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// Wire name of the field.
        field: &'static str,
        /// What is wrong with the value.
        reason: FieldError,
    },
    /// A field of the event's type (or `type` itself) appears twice.
    #[error("duplicate field `{field}`")]
    DuplicateField {
        /// Wire name of the field.
        field: &'static str,
    },
}

/// What is wrong with a field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The JSON type is not the expected one (`null` for a required field lands here too).
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the field must hold.
        expected: Expected,
        /// What it held.
        found: JsonType,
    },
    /// A count below zero.
    #[error("a count cannot be negative")]
    Negative,
    /// A count written with a fraction or an exponent (counts are integers).
    #[error("a count must be an integer")]
    NotAnInteger,
    /// A count above `u64::MAX`.
    #[error("a count must fit in 64 bits")]
    TooLarge,
    /// A timestamp that is not RFC 3339.
    #[error("{0}")]
    Timestamp(#[from] TimestampError),
    /// A `campaignId` that is not 1–128 characters of `[A-Za-z0-9_-]` (§2.1).
    #[error("{0}")]
    CampaignId(#[from] CampaignIdError),
}

/// The JSON type a field must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Expected {
    /// A string (plain text, an RFC 3339 timestamp, a campaign id, a `bounceType`, the
    /// `type`).
    String,
    /// A non-negative integer that fits in 64 bits.
    Count,
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expected::String => "a string",
            Expected::Count => "an unsigned integer",
        })
    }
}

/// The type of a JSON value, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JsonType {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl std::fmt::Display for JsonType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JsonType::Null => "null",
            JsonType::Bool => "a boolean",
            JsonType::Number => "a number",
            JsonType::String => "a string",
            JsonType::Array => "an array",
            JsonType::Object => "an object",
        })
    }
}
