//! Decoding: one pass of serde_json straight into the event's struct, with typed errors.
//!
//! Our encoder always writes `type` first, so the fast path reads the first key, dispatches on
//! the type and deserializes the remaining entries into that type's fields, borrowing keys and
//! the type name from the input. When `type` is not first (another producer), a first pass
//! only looks for it (ignoring every other value) and a second pass decodes with the type
//! known; the input is bounded by the decoder's size limit, so that costs at most one more
//! parse of at most `max_len` bytes.
//!
//! serde's error type cannot carry our typed errors, so the visitors put the [`DecodeError`]
//! in a slot and abort the parse with an opaque serde error; the slot wins over whatever error
//! serde_json reports after that.
//!
//! The input is checked as UTF-8 once and parsed as `&str`, so serde_json does not check each
//! string again (see [`parse`]). The small per-field helpers are `#[inline(always)]`: left as
//! calls, they cost about 5% more instructions per event in profiles (callgrind, B1 events).
//!
//! Nesting is bounded: values we do not read are skipped by serde_json's iterative skipper
//! (its stack is one byte per level, within the size limit), and values we do read are
//! refused at once if they are arrays or objects.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    Bounce, BounceType, CampaignCompleted, CampaignEvent, CampaignStarted, Cancelled, Complaint,
    Completed, DecodeError, EmailReceived, Event, Expected, Failed, FieldError, InboxEvent,
    JsonType, Progress, Timestamp, UnknownEvent, Unsubscribe,
};
use crate::close::ChannelKind;
use crate::route::CampaignId;

/// The default size limit of a [`Decoder`]: 64 KiB.
pub const DEFAULT_MAX_LEN: usize = 64 * 1024;

/// A decoder with a size limit, checked before anything is parsed.
///
/// ```
/// use misar_proto::event::{DecodeError, Decoder, InboxEvent};
///
/// let decoder = Decoder::new(1024);
/// let frame = br#"{"type":"email_received","from":"ana@example.com","subject":"Hi","receivedAt":"2026-05-27T10:15:00Z"}"#;
/// match decoder.inbox(frame)? {
///     InboxEvent::EmailReceived(e) => assert_eq!(e.from, "ana@example.com"),
///     other => panic!("unexpected {other:?}"),
/// }
/// assert_eq!(
///     decoder.inbox(&[b' '; 2048]),
///     Err(DecodeError::TooLarge { len: 2048, max: 1024 })
/// );
/// # Ok::<(), DecodeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decoder {
    max_len: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LEN)
    }
}

impl Decoder {
    /// A decoder refusing frames longer than `max_len` bytes.
    pub const fn new(max_len: usize) -> Self {
        Self { max_len }
    }

    /// The size limit in bytes.
    pub const fn max_len(&self) -> usize {
        self.max_len
    }

    /// Decodes an event of the inbox channel.
    pub fn inbox(&self, bytes: &[u8]) -> Result<InboxEvent, DecodeError> {
        self.run::<InboxSide>(bytes)
    }

    /// Decodes an event of a campaign channel.
    pub fn campaign(&self, bytes: &[u8]) -> Result<CampaignEvent, DecodeError> {
        self.run::<CampaignSide>(bytes)
    }

    /// Decodes an event of the given channel.
    pub fn decode(&self, channel: ChannelKind, bytes: &[u8]) -> Result<Event, DecodeError> {
        match channel {
            ChannelKind::Inbox => self.inbox(bytes).map(Event::Inbox),
            ChannelKind::Campaign => self.campaign(bytes).map(Event::Campaign),
        }
    }

    fn run<S: Side>(&self, bytes: &[u8]) -> Result<S::Out, DecodeError> {
        if bytes.len() > self.max_len {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: self.max_len,
            });
        }
        let outcome = parse(bytes, |de, slot| {
            de::Deserializer::deserialize_any(
                de,
                TypeFirst::<S> {
                    slot,
                    side: PhantomData,
                },
            )
        })?;
        match outcome {
            Outcome::Event(event) => Ok(event),
            Outcome::Unknown(kind) => Ok(S::unknown(UnknownEvent {
                kind,
                raw: Bytes::copy_from_slice(bytes),
            })),
            Outcome::Found(kind) => parse(bytes, |de, slot| {
                de::Deserializer::deserialize_any(
                    de,
                    KnownType::<S> {
                        kind,
                        slot,
                        side: PhantomData,
                    },
                )
            }),
        }
    }
}

/// Decodes an event of the inbox channel with the default size limit ([`DEFAULT_MAX_LEN`]).
///
/// Unknown fields are ignored and an unknown `type` is kept as [`InboxEvent::Unknown`];
/// a campaign-channel type is refused.
///
/// ```
/// use misar_proto::event::{decode_inbox, DecodeError, InboxEvent};
///
/// let e = decode_inbox(br#"{"type":"campaign_completed","campaignId":"uuid","campaignName":"May Newsletter","sent":10000,"delivered":9855,"opened":2340,"completedAt":"2026-05-27T11:00:00Z"}"#)?;
/// assert_eq!(e.campaign_id().map(|id| id.as_str()), Some("uuid"));
///
/// let e = decode_inbox(br#"{"type":"calendar_invite","when":"soon"}"#)?;
/// assert!(matches!(e, InboxEvent::Unknown(u) if u.kind == "calendar_invite"));
///
/// assert_eq!(
///     decode_inbox(br#"{"type":"bounce","bouncedAt":"2026-05-27T10:15:00Z"}"#),
///     Err(DecodeError::MissingField { field: "email" })
/// );
/// assert_eq!(
///     decode_inbox(br#"{"type":"progress","campaignId":"c1"}"#),
///     Err(DecodeError::WrongChannel { kind: "progress" })
/// );
/// # Ok::<(), DecodeError>(())
/// ```
pub fn decode_inbox(bytes: &[u8]) -> Result<InboxEvent, DecodeError> {
    Decoder::default().inbox(bytes)
}

/// Decodes an event of a campaign channel with the default size limit ([`DEFAULT_MAX_LEN`]).
///
/// ```
/// use misar_proto::event::{decode_campaign, CampaignEvent, DecodeError, FieldError};
/// use misar_proto::route::CampaignIdError;
///
/// let e = decode_campaign(br#"{"type":"progress","campaignId":"uuid","sent":2500,"total":10000,"delivered":2480,"bounced":20,"opened":450}"#)?;
/// assert!(matches!(e, CampaignEvent::Progress(p) if p.sent == 2500 && p.total == 10000));
///
/// assert_eq!(
///     decode_campaign(br#"{"type":"cancelled","campaignId":"uuid","sent":-1}"#),
///     Err(DecodeError::InvalidField { field: "sent", reason: FieldError::Negative })
/// );
/// // A campaign id is 1–128 characters of [A-Za-z0-9_-], as in the channel's path.
/// assert_eq!(
///     decode_campaign(br#"{"type":"cancelled","campaignId":"a/b"}"#),
///     Err(DecodeError::InvalidField {
///         field: "campaignId",
///         reason: FieldError::CampaignId(CampaignIdError::InvalidCharacter { position: 1 }),
///     })
/// );
/// # Ok::<(), DecodeError>(())
/// ```
pub fn decode_campaign(bytes: &[u8]) -> Result<CampaignEvent, DecodeError> {
    Decoder::default().campaign(bytes)
}

/// Decodes an event of `channel` with the default size limit ([`DEFAULT_MAX_LEN`]).
pub fn decode(channel: ChannelKind, bytes: &[u8]) -> Result<Event, DecodeError> {
    Decoder::default().decode(channel, bytes)
}

type Slot = Option<DecodeError>;
type JsonDe<'de> = serde_json::Deserializer<serde_json::de::StrRead<'de>>;

/// Runs one parse of the whole input (trailing characters refused), preferring the typed error
/// a visitor left in the slot.
///
/// The input is checked as UTF-8 once, up front, and parsed as `&str`: serde_json then skips
/// its per-string UTF-8 check, which costs more than one pass over the whole frame (it was the
/// largest single cost of decoding in profiles).
fn parse<'de, T>(
    bytes: &'de [u8],
    run: impl FnOnce(&mut JsonDe<'de>, &mut Slot) -> Result<T, serde_json::Error>,
) -> Result<T, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| not_utf8(bytes, e.valid_up_to()))?;
    let mut slot = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let result = run(&mut de, &mut slot);
    if let Some(err) = slot {
        return Err(err);
    }
    let value = result.map_err(|e| syntax(&e))?;
    de.end().map_err(|e| syntax(&e))?;
    Ok(value)
}

/// The syntax error for input that is not UTF-8 from byte `at` on, positioned as serde_json
/// positions its own errors (1-based line, column counted in bytes).
fn not_utf8(bytes: &[u8], at: usize) -> DecodeError {
    let before = bytes.get(..at).unwrap_or(bytes);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    DecodeError::Syntax {
        line,
        column: at - line_start + 1,
        message: "invalid UTF-8".to_owned(),
    }
}

fn syntax(e: &serde_json::Error) -> DecodeError {
    let (line, column) = (e.line(), e.column());
    let text = e.to_string();
    // serde_json appends the position, which our variant carries in fields of its own.
    let message = match text.strip_suffix(&format!(" at line {line} column {column}")) {
        Some(m) => m.to_owned(),
        None => text,
    };
    DecodeError::Syntax {
        line,
        column,
        message,
    }
}

/// Records `err` and aborts the parse.
fn fail<T, E: de::Error>(slot: &mut Slot, err: DecodeError) -> Result<T, E> {
    *slot = Some(err);
    Err(E::custom("event rejected"))
}

/// A known event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    EmailReceived,
    Bounce,
    Complaint,
    Unsubscribe,
    CampaignStarted,
    CampaignCompleted,
    Progress,
    Completed,
    Failed,
    Cancelled,
}

impl Kind {
    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "email_received" => Kind::EmailReceived,
            "bounce" => Kind::Bounce,
            "complaint" => Kind::Complaint,
            "unsubscribe" => Kind::Unsubscribe,
            "campaign_started" => Kind::CampaignStarted,
            "campaign_completed" => Kind::CampaignCompleted,
            "progress" => Kind::Progress,
            "completed" => Kind::Completed,
            "failed" => Kind::Failed,
            "cancelled" => Kind::Cancelled,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::EmailReceived => "email_received",
            Kind::Bounce => "bounce",
            Kind::Complaint => "complaint",
            Kind::Unsubscribe => "unsubscribe",
            Kind::CampaignStarted => "campaign_started",
            Kind::CampaignCompleted => "campaign_completed",
            Kind::Progress => "progress",
            Kind::Completed => "completed",
            Kind::Failed => "failed",
            Kind::Cancelled => "cancelled",
        }
    }
}

/// Result of the first pass.
enum Outcome<T> {
    /// Decoded (the fast path).
    Event(T),
    /// An unknown `type`; the rest of the object was checked and ignored.
    Unknown(String),
    /// `type` was not first: its value, for a second pass.
    Found(Kind),
}

/// One channel's event enum: which types it has and how it keeps an unknown one.
trait Side {
    type Out;
    fn body<'de, A: MapAccess<'de>>(
        kind: Kind,
        map: A,
        slot: &mut Slot,
        type_seen: bool,
    ) -> Result<Self::Out, A::Error>;
    fn unknown(event: UnknownEvent) -> Self::Out;
}

struct InboxSide;
struct CampaignSide;

impl Side for InboxSide {
    type Out = InboxEvent;
    fn body<'de, A: MapAccess<'de>>(
        kind: Kind,
        map: A,
        slot: &mut Slot,
        type_seen: bool,
    ) -> Result<InboxEvent, A::Error> {
        match kind {
            Kind::EmailReceived => {
                read::<EmailReceivedFields, A>(map, slot, type_seen).map(InboxEvent::EmailReceived)
            }
            Kind::Bounce => read::<BounceFields, A>(map, slot, type_seen).map(InboxEvent::Bounce),
            Kind::Complaint => {
                read::<ComplaintFields, A>(map, slot, type_seen).map(InboxEvent::Complaint)
            }
            Kind::Unsubscribe => {
                read::<UnsubscribeFields, A>(map, slot, type_seen).map(InboxEvent::Unsubscribe)
            }
            Kind::CampaignStarted => read::<CampaignStartedFields, A>(map, slot, type_seen)
                .map(InboxEvent::CampaignStarted),
            Kind::CampaignCompleted => read::<CampaignCompletedFields, A>(map, slot, type_seen)
                .map(InboxEvent::CampaignCompleted),
            Kind::Progress | Kind::Completed | Kind::Failed | Kind::Cancelled => {
                fail(slot, DecodeError::WrongChannel { kind: kind.name() })
            }
        }
    }
    fn unknown(event: UnknownEvent) -> InboxEvent {
        InboxEvent::Unknown(event)
    }
}

impl Side for CampaignSide {
    type Out = CampaignEvent;
    fn body<'de, A: MapAccess<'de>>(
        kind: Kind,
        map: A,
        slot: &mut Slot,
        type_seen: bool,
    ) -> Result<CampaignEvent, A::Error> {
        match kind {
            Kind::Progress => {
                read::<ProgressFields, A>(map, slot, type_seen).map(CampaignEvent::Progress)
            }
            Kind::Completed => {
                read::<CompletedFields, A>(map, slot, type_seen).map(CampaignEvent::Completed)
            }
            Kind::Failed => {
                read::<FailedFields, A>(map, slot, type_seen).map(CampaignEvent::Failed)
            }
            Kind::Cancelled => {
                read::<CancelledFields, A>(map, slot, type_seen).map(CampaignEvent::Cancelled)
            }
            Kind::EmailReceived
            | Kind::Bounce
            | Kind::Complaint
            | Kind::Unsubscribe
            | Kind::CampaignStarted
            | Kind::CampaignCompleted => {
                fail(slot, DecodeError::WrongChannel { kind: kind.name() })
            }
        }
    }
    fn unknown(event: UnknownEvent) -> CampaignEvent {
        CampaignEvent::Unknown(event)
    }
}

/// Refuses every top-level value that is not an object (the visitors below share this).
macro_rules! not_an_object {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            fail(self.slot, DecodeError::NotAnObject)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            fail(self.slot, DecodeError::NotAnObject)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            fail(self.slot, DecodeError::NotAnObject)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            fail(self.slot, DecodeError::NotAnObject)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            fail(self.slot, DecodeError::NotAnObject)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            fail(self.slot, DecodeError::NotAnObject)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            fail(self.slot, DecodeError::NotAnObject)
        }
    };
}

/// The first pass: `type` first → decode at once; otherwise find `type`.
struct TypeFirst<'s, S> {
    slot: &'s mut Slot,
    side: PhantomData<S>,
}

impl<'de, S: Side> Visitor<'de> for TypeFirst<'_, S> {
    type Value = Outcome<S::Out>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    not_an_object!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let slot = self.slot;
        match map.next_key_seed(KeySeed::<TypeOnly>::new())? {
            None => fail(slot, DecodeError::MissingType),
            Some(Key::Type) => {
                let name = map.next_value_seed(TypeSeed { slot: &mut *slot })?;
                match Kind::from_name(&name) {
                    Some(kind) => S::body(kind, map, slot, true).map(Outcome::Event),
                    None => {
                        skip_rest(map, slot, true)?;
                        Ok(Outcome::Unknown(name.into_owned()))
                    }
                }
            }
            Some(_) => {
                map.next_value::<IgnoredAny>()?;
                let mut found: Option<Cow<'de, str>> = None;
                while let Some(key) = map.next_key_seed(KeySeed::<TypeOnly>::new())? {
                    if key == Key::Type {
                        if found.is_some() {
                            return fail(slot, DecodeError::DuplicateField { field: "type" });
                        }
                        found = Some(map.next_value_seed(TypeSeed { slot: &mut *slot })?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                match found {
                    None => fail(slot, DecodeError::MissingType),
                    Some(name) => Ok(match Kind::from_name(&name) {
                        Some(kind) => Outcome::Found(kind),
                        None => Outcome::Unknown(name.into_owned()),
                    }),
                }
            }
        }
    }
}

/// The second pass, with the type known.
struct KnownType<'s, S> {
    kind: Kind,
    slot: &'s mut Slot,
    side: PhantomData<S>,
}

impl<'de, S: Side> Visitor<'de> for KnownType<'_, S> {
    type Value = S::Out;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    not_an_object!();

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        S::body(self.kind, map, self.slot, false)
    }
}

/// Checks and ignores the rest of an object (only a second `type` is an error).
fn skip_rest<'de, A: MapAccess<'de>>(
    mut map: A,
    slot: &mut Slot,
    mut type_seen: bool,
) -> Result<(), A::Error> {
    while let Some(key) = map.next_key_seed(KeySeed::<TypeOnly>::new())? {
        if key == Key::Type {
            if type_seen {
                return fail(slot, DecodeError::DuplicateField { field: "type" });
            }
            type_seen = true;
        }
        map.next_value::<IgnoredAny>()?;
    }
    Ok(())
}

/// Reads the remaining entries of an object into `F`'s fields.
#[inline(always)]
fn read<'de, F: Fields, A: MapAccess<'de>>(
    mut map: A,
    slot: &mut Slot,
    mut type_seen: bool,
) -> Result<F::Out, A::Error> {
    let mut fields = F::default();
    while let Some(key) = map.next_key_seed(KeySeed::<F>::new())? {
        match key {
            Key::Type => {
                // On the second pass the first `type` is met here; the first pass already
                // checked its value.
                if type_seen {
                    return fail(slot, DecodeError::DuplicateField { field: "type" });
                }
                type_seen = true;
                map.next_value::<IgnoredAny>()?;
            }
            Key::Other => {
                map.next_value::<IgnoredAny>()?;
            }
            key => {
                if !fields.field(key, &mut map, slot)? {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }
    match fields.finish() {
        Ok(out) => Ok(out),
        Err(e) => fail(slot, e),
    }
}

/// Every field name of §2.4 (each type matches its own subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Type,
    From,
    Subject,
    ReceivedAt,
    MessageId,
    To,
    Email,
    BounceType,
    Reason,
    CampaignId,
    BouncedAt,
    ComplainedAt,
    UnsubscribedAt,
    CampaignName,
    Total,
    StartedAt,
    Sent,
    Delivered,
    Opened,
    CompletedAt,
    Bounced,
    Error,
    FailedAt,
    CancelledAt,
    Other,
}

/// Reads an object key as one of the keys `M` knows, without allocating.
///
/// Each event type matches only its own field names (as serde's derive does): the match is
/// shorter than one over all of §2.4's names.
struct KeySeed<M>(PhantomData<M>);

impl<M> KeySeed<M> {
    fn new() -> Self {
        KeySeed(PhantomData)
    }
}

/// Which keys a reader knows.
trait KeyMatch {
    fn key(name: &str) -> Key;
}

/// Knows `type` only (the first key, and objects whose fields we skip).
struct TypeOnly;

impl KeyMatch for TypeOnly {
    fn key(name: &str) -> Key {
        if name == "type" {
            Key::Type
        } else {
            Key::Other
        }
    }
}

impl<'de, M: KeyMatch> DeserializeSeed<'de> for KeySeed<M> {
    type Value = Key;
    #[inline(always)]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<M: KeyMatch> Visitor<'_> for KeySeed<M> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(M::key(key))
    }
}

fn found_type(found: JsonType) -> FieldError {
    FieldError::WrongType {
        expected: Expected::String,
        found,
    }
}

/// The value of `type`: a string, borrowed from the input unless it had escapes.
struct TypeSeed<'s> {
    slot: &'s mut Slot,
}

impl TypeSeed<'_> {
    fn wrong<T, E: de::Error>(self, found: JsonType) -> Result<T, E> {
        fail(
            self.slot,
            DecodeError::InvalidField {
                field: "type",
                reason: found_type(found),
            },
        )
    }
}

impl<'de> DeserializeSeed<'de> for TypeSeed<'_> {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TypeSeed<'_> {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event type")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.wrong(JsonType::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.wrong(JsonType::Bool)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        self.wrong(JsonType::Number)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        self.wrong(JsonType::Number)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        self.wrong(JsonType::Number)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        self.wrong(JsonType::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        self.wrong(JsonType::Object)
    }
}

/// A field value type: what it accepts from each JSON type.
trait FromWire: Sized {
    const EXPECTED: Expected;
    fn wrong(found: JsonType) -> FieldError {
        FieldError::WrongType {
            expected: Self::EXPECTED,
            found,
        }
    }
    fn from_str(_: &str) -> Result<Self, FieldError> {
        Err(Self::wrong(JsonType::String))
    }
    fn from_string(s: String) -> Result<Self, FieldError> {
        Self::from_str(&s)
    }
    fn from_u64(_: u64) -> Result<Self, FieldError> {
        Err(Self::wrong(JsonType::Number))
    }
    fn from_i64(_: i64) -> Result<Self, FieldError> {
        Err(Self::wrong(JsonType::Number))
    }
    fn from_f64(_: f64) -> Result<Self, FieldError> {
        Err(Self::wrong(JsonType::Number))
    }
}

impl FromWire for String {
    const EXPECTED: Expected = Expected::String;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        Ok(s.to_owned())
    }
    fn from_string(s: String) -> Result<Self, FieldError> {
        Ok(s)
    }
}

impl FromWire for Timestamp {
    const EXPECTED: Expected = Expected::String;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        Ok(Timestamp::parse(s)?)
    }
    fn from_string(s: String) -> Result<Self, FieldError> {
        Ok(Timestamp::parse_owned(s)?)
    }
}

impl FromWire for CampaignId {
    const EXPECTED: Expected = Expected::String;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        Ok(CampaignId::new(s)?)
    }
    fn from_string(s: String) -> Result<Self, FieldError> {
        Ok(CampaignId::from_string(s)?)
    }
}

impl FromWire for BounceType {
    const EXPECTED: Expected = Expected::String;
    fn from_str(s: &str) -> Result<Self, FieldError> {
        Ok(BounceType::from_wire(s))
    }
}

impl FromWire for u64 {
    const EXPECTED: Expected = Expected::Count;
    fn from_u64(v: u64) -> Result<Self, FieldError> {
        Ok(v)
    }
    fn from_i64(v: i64) -> Result<Self, FieldError> {
        // serde_json only reports negative integers this way.
        u64::try_from(v).map_err(|_| FieldError::Negative)
    }
    fn from_f64(v: f64) -> Result<Self, FieldError> {
        // serde_json hands over a float for a fraction, an exponent, `-0`, or an integer too
        // large for u64. Counts are integers written as such.
        const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
        if v < 0.0 {
            Err(FieldError::Negative)
        } else if v >= TWO_POW_64 && v.fract() == 0.0 {
            Err(FieldError::TooLarge)
        } else {
            Err(FieldError::NotAnInteger)
        }
    }
}

/// Reads one field's value as `T`; `null` is `None` when the field is optional.
struct ValueSeed<'s, T> {
    field: &'static str,
    optional: bool,
    slot: &'s mut Slot,
    out: PhantomData<T>,
}

impl<T> ValueSeed<'_, T> {
    fn done<E: de::Error>(self, value: Result<T, FieldError>) -> Result<Option<T>, E> {
        match value {
            Ok(v) => Ok(Some(v)),
            Err(reason) => fail(
                self.slot,
                DecodeError::InvalidField {
                    field: self.field,
                    reason,
                },
            ),
        }
    }
}

impl<'de, T: FromWire> DeserializeSeed<'de> for ValueSeed<'_, T> {
    type Value = Option<T>;
    #[inline(always)]
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        // `any` rather than `deserialize_str`/`_u64`, so a mistyped value reaches our visitor
        // (which names the field) instead of becoming serde_json's own untyped error.
        d.deserialize_any(self)
    }
}

impl<'de, T: FromWire> Visitor<'de> for ValueSeed<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", T::EXPECTED)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        if self.optional {
            Ok(None)
        } else {
            self.done(Err(T::wrong(JsonType::Null)))
        }
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        self.done(Err(T::wrong(JsonType::Bool)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.done(T::from_u64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.done(T::from_i64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.done(T::from_f64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.done(T::from_str(v))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.done(T::from_string(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        self.done(Err(T::wrong(JsonType::Array)))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        self.done(Err(T::wrong(JsonType::Object)))
    }
}

#[inline(always)]
fn required<'de, A: MapAccess<'de>, T: FromWire>(
    map: &mut A,
    slot: &mut Slot,
    place: &mut Option<T>,
    field: &'static str,
) -> Result<(), A::Error> {
    if place.is_some() {
        return fail(slot, DecodeError::DuplicateField { field });
    }
    *place = map.next_value_seed(ValueSeed {
        field,
        optional: false,
        slot,
        out: PhantomData,
    })?;
    Ok(())
}

#[inline(always)]
fn optional<'de, A: MapAccess<'de>, T: FromWire>(
    map: &mut A,
    slot: &mut Slot,
    place: &mut Option<Option<T>>,
    field: &'static str,
) -> Result<(), A::Error> {
    if place.is_some() {
        return fail(slot, DecodeError::DuplicateField { field });
    }
    *place = Some(map.next_value_seed(ValueSeed {
        field,
        optional: true,
        slot,
        out: PhantomData,
    })?);
    Ok(())
}

/// The fields of one event type being read.
trait Fields: Default + KeyMatch {
    type Out;
    /// Reads the value of `key` if it is one of this type's fields (`false`: it is not).
    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        key: Key,
        map: &mut A,
        slot: &mut Slot,
    ) -> Result<bool, A::Error>;
    /// The event, or the first missing required field in wire order.
    fn finish(self) -> Result<Self::Out, DecodeError>;
}

/// Declares one type's field accumulator; a field seen twice is an error, so an optional
/// field is `Option<Option<T>>` (seen with `null` ≠ not seen).
macro_rules! fields {
    ($name:ident => $out:ident {
        required { $($rf:ident: $rty:ty = $rkey:ident $rwire:literal),* $(,)? }
        optional { $($of:ident: $oty:ty = $okey:ident $owire:literal),* $(,)? }
    }) => {
        #[derive(Default)]
        struct $name {
            $($rf: Option<$rty>,)*
            $($of: Option<Option<$oty>>,)*
        }

        impl KeyMatch for $name {
            fn key(name: &str) -> Key {
                match name {
                    "type" => Key::Type,
                    $($rwire => Key::$rkey,)*
                    $($owire => Key::$okey,)*
                    _ => Key::Other,
                }
            }
        }

        impl Fields for $name {
            type Out = $out;
            fn field<'de, A: MapAccess<'de>>(
                &mut self,
                key: Key,
                map: &mut A,
                slot: &mut Slot,
            ) -> Result<bool, A::Error> {
                match key {
                    $(Key::$rkey => required(map, slot, &mut self.$rf, $rwire)?,)*
                    $(Key::$okey => optional(map, slot, &mut self.$of, $owire)?,)*
                    _ => return Ok(false),
                }
                Ok(true)
            }
            fn finish(self) -> Result<$out, DecodeError> {
                Ok($out {
                    $($rf: self.$rf.ok_or(DecodeError::MissingField { field: $rwire })?,)*
                    $($of: self.$of.flatten(),)*
                })
            }
        }
    };
}

fields!(EmailReceivedFields => EmailReceived {
    required {
        from: String = From "from",
        subject: String = Subject "subject",
        received_at: Timestamp = ReceivedAt "receivedAt",
    }
    optional {
        message_id: String = MessageId "messageId",
        to: String = To "to",
    }
});

fields!(BounceFields => Bounce {
    required {
        email: String = Email "email",
        bounced_at: Timestamp = BouncedAt "bouncedAt",
    }
    optional {
        bounce_type: BounceType = BounceType "bounceType",
        reason: String = Reason "reason",
        campaign_id: CampaignId = CampaignId "campaignId",
    }
});

fields!(ComplaintFields => Complaint {
    required {
        email: String = Email "email",
        complained_at: Timestamp = ComplainedAt "complainedAt",
    }
    optional {
        campaign_id: CampaignId = CampaignId "campaignId",
    }
});

fields!(UnsubscribeFields => Unsubscribe {
    required {
        email: String = Email "email",
        unsubscribed_at: Timestamp = UnsubscribedAt "unsubscribedAt",
    }
    optional {
        campaign_id: CampaignId = CampaignId "campaignId",
    }
});

fields!(CampaignStartedFields => CampaignStarted {
    required {
        campaign_id: CampaignId = CampaignId "campaignId",
        campaign_name: String = CampaignName "campaignName",
        total: u64 = Total "total",
        started_at: Timestamp = StartedAt "startedAt",
    }
    optional {}
});

fields!(CampaignCompletedFields => CampaignCompleted {
    required {
        campaign_id: CampaignId = CampaignId "campaignId",
        campaign_name: String = CampaignName "campaignName",
        sent: u64 = Sent "sent",
        delivered: u64 = Delivered "delivered",
        opened: u64 = Opened "opened",
        completed_at: Timestamp = CompletedAt "completedAt",
    }
    optional {}
});

fields!(ProgressFields => Progress {
    required {
        campaign_id: CampaignId = CampaignId "campaignId",
        sent: u64 = Sent "sent",
        total: u64 = Total "total",
        delivered: u64 = Delivered "delivered",
        bounced: u64 = Bounced "bounced",
        opened: u64 = Opened "opened",
    }
    optional {}
});

fields!(CompletedFields => Completed {
    required {
        campaign_id: CampaignId = CampaignId "campaignId",
        sent: u64 = Sent "sent",
        delivered: u64 = Delivered "delivered",
        bounced: u64 = Bounced "bounced",
        opened: u64 = Opened "opened",
    }
    optional {
        completed_at: Timestamp = CompletedAt "completedAt",
    }
});

fields!(FailedFields => Failed {
    required {
        campaign_id: CampaignId = CampaignId "campaignId",
        error: String = Error "error",
    }
    optional {
        sent: u64 = Sent "sent",
        failed_at: Timestamp = FailedAt "failedAt",
    }
});

fields!(CancelledFields => Cancelled {
    required {
        campaign_id: CampaignId = CampaignId "campaignId",
    }
    optional {
        sent: u64 = Sent "sent",
        cancelled_at: Timestamp = CancelledAt "cancelledAt",
    }
});
