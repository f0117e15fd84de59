//! Events (§2.4): the ten types, their JSON encoding, and forward-compatible decoding.
//!
//! - Types: [`InboxEvent`] (six types) and [`CampaignEvent`] (four), both keeping a `type`
//!   they do not know as [`UnknownEvent`]; [`Event`] is either.
//! - Encoding: [`InboxEvent::encode`], [`CampaignEvent::encode`], [`Event::encode`] write
//!   compact JSON, `type` first, once, into an [`EncodedEvent`] that every connection shares.
//! - Decoding: [`decode_inbox`], [`decode_campaign`], [`decode`] or a [`Decoder`] with its own
//!   size limit. Unknown fields are ignored, an unknown `type` is kept, anything else wrong is a
//!   [`DecodeError`] naming the field.
//! - Campaign ids: every field that holds one (`campaignId` of `bounce`, `complaint`,
//!   `unsubscribe`, `campaign_started`, `campaign_completed` and of the four campaign-channel
//!   types) is a [`CampaignId`] (1–128 characters of `[A-Za-z0-9_-]`, as in the channel's
//!   path, §2.1): a frame whose `campaignId` is not one is refused with
//!   [`DecodeError::InvalidField`] naming `campaignId` ([`FieldError::CampaignId`]), and the
//!   `campaign_id()` accessors return `Option<&CampaignId>`.
//! - Building: the event structs are `#[non_exhaustive]` (§2.4 may gain optional fields):
//!   build one with its `new` (the required fields, in wire order) and `with_*` methods (the
//!   optional ones), e.g. [`EmailReceived::new`]; fields stay public to read and change.
//! - Relaying: [`crate::streams::validate_relayed`] wraps bytes another node encoded (checked
//!   by one decode, not re-encoded).
//!
//! ```
//! use misar_proto::event::{decode_campaign, CampaignEvent, EventClass, Progress};
//! use misar_proto::route::CampaignId;
//!
//! let campaign = CampaignId::new("c-42")?;
//! // campaignId, sent, total, delivered, bounced, opened
//! let event = CampaignEvent::Progress(Progress::new(campaign.clone(), 2500, 10000, 2480, 20, 450));
//! let encoded = event.encode();
//! assert_eq!(
//!     encoded.bytes().as_ref(),
//!     br#"{"type":"progress","campaignId":"c-42","sent":2500,"total":10000,"delivered":2480,"bounced":20,"opened":450}"#
//! );
//! assert_eq!(encoded.class(), EventClass::Progress);
//! assert_eq!(decode_campaign(encoded.bytes()), Ok(event.clone()));
//! assert_eq!(event.campaign_id(), Some(&campaign));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Write as _;

use bytes::Bytes;

use crate::route::CampaignId;

mod build;
mod decode;
mod encode;
mod error;
mod timestamp;

pub use decode::{DEFAULT_MAX_LEN, Decoder, decode, decode_campaign, decode_inbox};
pub use error::{DecodeError, Expected, FieldError, JsonType};
pub use timestamp::{Timestamp, TimestampError};

/// `bounceType` of a bounce.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BounceType {
    /// `"hard"`: permanent.
    Hard,
    /// `"soft"`: transient.
    Soft,
    /// Any other value a newer server sends (kept, so nothing is lost). Decoding never puts
    /// `"hard"` or `"soft"` here; build values with [`BounceType::from_wire`] to keep that so.
    Other(String),
}

impl BounceType {
    /// The bounce type for a wire value: `"hard"`, `"soft"`, or any other value kept as is.
    pub fn from_wire(value: &str) -> Self {
        match value {
            "hard" => BounceType::Hard,
            "soft" => BounceType::Soft,
            other => BounceType::Other(other.to_owned()),
        }
    }
}

/// `email_received`: a new inbound email.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmailReceived {
    /// `from`.
    pub from: String,
    /// `subject`.
    pub subject: String,
    /// `receivedAt`.
    pub received_at: Timestamp,
    /// `messageId?`.
    pub message_id: Option<String>,
    /// `to?`.
    pub to: Option<String>,
}

/// `bounce`: an outbound email bounced.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bounce {
    /// `email`.
    pub email: String,
    /// `bounceType?`.
    pub bounce_type: Option<BounceType>,
    /// `reason?`.
    pub reason: Option<String>,
    /// `campaignId?`.
    pub campaign_id: Option<CampaignId>,
    /// `bouncedAt`.
    pub bounced_at: Timestamp,
}

/// `complaint`: a spam complaint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Complaint {
    /// `email`.
    pub email: String,
    /// `campaignId?`.
    pub campaign_id: Option<CampaignId>,
    /// `complainedAt`.
    pub complained_at: Timestamp,
}

/// `unsubscribe`: a contact unsubscribed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unsubscribe {
    /// `email`.
    pub email: String,
    /// `campaignId?`.
    pub campaign_id: Option<CampaignId>,
    /// `unsubscribedAt`.
    pub unsubscribed_at: Timestamp,
}

/// `campaign_started`: a campaign send began.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CampaignStarted {
    /// `campaignId`.
    pub campaign_id: CampaignId,
    /// `campaignName`.
    pub campaign_name: String,
    /// `total`.
    pub total: u64,
    /// `startedAt`.
    pub started_at: Timestamp,
}

/// `campaign_completed`: a campaign send finished (inbox summary).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CampaignCompleted {
    /// `campaignId`.
    pub campaign_id: CampaignId,
    /// `campaignName`.
    pub campaign_name: String,
    /// `sent`.
    pub sent: u64,
    /// `delivered`.
    pub delivered: u64,
    /// `opened`.
    pub opened: u64,
    /// `completedAt`.
    pub completed_at: Timestamp,
}

/// `progress`: periodic send progress (coalescable).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// `campaignId`.
    pub campaign_id: CampaignId,
    /// `sent`.
    pub sent: u64,
    /// `total`.
    pub total: u64,
    /// `delivered`.
    pub delivered: u64,
    /// `bounced`.
    pub bounced: u64,
    /// `opened`.
    pub opened: u64,
}

/// `completed`: terminal, the send finished.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completed {
    /// `campaignId`.
    pub campaign_id: CampaignId,
    /// `sent`.
    pub sent: u64,
    /// `delivered`.
    pub delivered: u64,
    /// `bounced`.
    pub bounced: u64,
    /// `opened`.
    pub opened: u64,
    /// `completedAt?`.
    pub completed_at: Option<Timestamp>,
}

/// `failed`: terminal, the send failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failed {
    /// `campaignId`.
    pub campaign_id: CampaignId,
    /// `error`.
    pub error: String,
    /// `sent?`.
    pub sent: Option<u64>,
    /// `failedAt?`.
    pub failed_at: Option<Timestamp>,
}

/// `cancelled`: terminal, the campaign was cancelled.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Cancelled {
    /// `campaignId`.
    pub campaign_id: CampaignId,
    /// `sent?`.
    pub sent: Option<u64>,
    /// `cancelledAt?`.
    pub cancelled_at: Option<Timestamp>,
}

/// An event whose `type` this version does not know, kept as received.
///
/// Encoding writes `raw` back unchanged, so a relay forwards events newer than itself intact.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownEvent {
    /// The `type` field.
    pub kind: String,
    /// The whole JSON object as received (the frame's bytes, surrounding whitespace included).
    /// Encoding writes it back unchecked: a value built by hand must hold one JSON object
    /// whose `type` is `kind`, or its receivers will not decode it.
    pub raw: Bytes,
}

/// An event of the inbox channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InboxEvent {
    /// `email_received`.
    EmailReceived(EmailReceived),
    /// `bounce`.
    Bounce(Bounce),
    /// `complaint`.
    Complaint(Complaint),
    /// `unsubscribe`.
    Unsubscribe(Unsubscribe),
    /// `campaign_started`.
    CampaignStarted(CampaignStarted),
    /// `campaign_completed`.
    CampaignCompleted(CampaignCompleted),
    /// A `type` this version does not know.
    Unknown(UnknownEvent),
}

/// An event of a campaign channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CampaignEvent {
    /// `progress`.
    Progress(Progress),
    /// `completed` (terminal).
    Completed(Completed),
    /// `failed` (terminal).
    Failed(Failed),
    /// `cancelled` (terminal).
    Cancelled(Cancelled),
    /// A `type` this version does not know.
    Unknown(UnknownEvent),
}

/// An event of either channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// From the inbox channel.
    Inbox(InboxEvent),
    /// From a campaign channel.
    Campaign(CampaignEvent),
}

/// How a queued event may be treated by a connection's outbound queue (§2.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventClass {
    /// Never dropped, never reordered.
    Ordinary,
    /// A campaign `progress`: a queued, unsent one is replaced by a newer one.
    Progress,
    /// `completed`/`failed`/`cancelled`: sent, then the session closes with 1000.
    Terminal,
}

/// An event encoded once, shared by every connection it is sent to (cloning is a refcount).
///
/// One made by `encode` is compact JSON, `type` first, with no raw newline (string contents
/// are escaped), so brokers may frame several on one line each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEvent {
    bytes: Bytes,
    class: EventClass,
    /// The stream offset this encoding carries (§2.11's `,"offset":N`), for the encoding
    /// sent to opted-in connections; `None` for the plain §2.4 bytes.
    offset: Option<u64>,
}

impl EncodedEvent {
    /// Wraps bytes known to hold one compact event of `class` (the encoder's output, or bytes
    /// checked by [`crate::streams::validate_relayed`]).
    pub(crate) fn new(bytes: Bytes, class: EventClass) -> Self {
        Self {
            bytes,
            class,
            offset: None,
        }
    }

    /// The encoding for opted-in connections (§2.11): the same object with one more field,
    /// last, `,"offset":N`. Built once per event and shared by every opted-in connection; the
    /// plain bytes stay as they are for the others. Called on an encoding that already
    /// carries an offset, it returns that encoding unchanged (an event has one offset).
    pub fn with_offset(&self, offset: u64) -> EncodedEvent {
        if self.offset.is_some() {
            return self.clone();
        }
        let plain = self.bytes.as_ref();
        // Every encoding is one compact JSON object: its last byte is the closing brace.
        let body = plain.strip_suffix(b"}").unwrap_or(plain);
        let mut out = Vec::with_capacity(body.len() + OFFSET_FIELD.len() + 21);
        out.extend_from_slice(body);
        out.extend_from_slice(OFFSET_FIELD);
        // Writing to a Vec cannot fail.
        let _ = write!(out, "{offset}}}");
        EncodedEvent {
            bytes: Bytes::from(out),
            class: self.class,
            offset: Some(offset),
        }
    }

    /// The offset this encoding carries: `Some` for the opted-in encoding
    /// ([`with_offset`](Self::with_offset)), `None` for the plain §2.4 bytes.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// A control frame that is not an event (the §2.11 `resume` frame): queued in order with
    /// the events, never coalesced, carrying no offset.
    pub(crate) fn control(bytes: Bytes) -> Self {
        Self::new(bytes, EventClass::Ordinary)
    }

    /// The compact JSON text (UTF-8, ready for a text frame).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    /// The compact JSON text, taking it out (no refcount traffic, unlike `bytes().clone()`).
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
    /// How the outbound queue treats it.
    pub fn class(&self) -> EventClass {
        self.class
    }
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// Whether the payload is empty (never, for an encoded event).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// Test and fuzzing constructor from raw parts. Not part of the public API.
    #[cfg(any(test, fuzzing))]
    #[doc(hidden)]
    pub fn from_parts_for_tests(bytes: Bytes, class: EventClass) -> Self {
        Self::new(bytes, class)
    }
}

/// The field §2.11 appends to an event on an opted-in connection.
const OFFSET_FIELD: &[u8] = b",\"offset\":";

impl InboxEvent {
    /// The wire `type` (for an unknown event, the `type` it came with).
    pub fn type_name(&self) -> &str {
        match self {
            InboxEvent::Unknown(e) => &e.kind,
            known => known.known_type_name().unwrap_or_default(),
        }
    }

    /// The wire `type` of a type this version knows (`None` for [`InboxEvent::Unknown`]): a
    /// bounded set, e.g. for a metric label.
    pub fn known_type_name(&self) -> Option<&'static str> {
        Some(match self {
            InboxEvent::EmailReceived(_) => "email_received",
            InboxEvent::Bounce(_) => "bounce",
            InboxEvent::Complaint(_) => "complaint",
            InboxEvent::Unsubscribe(_) => "unsubscribe",
            InboxEvent::CampaignStarted(_) => "campaign_started",
            InboxEvent::CampaignCompleted(_) => "campaign_completed",
            InboxEvent::Unknown(_) => return None,
        })
    }

    /// The campaign the event is about, when it names one.
    pub fn campaign_id(&self) -> Option<&CampaignId> {
        match self {
            InboxEvent::Bounce(e) => e.campaign_id.as_ref(),
            InboxEvent::Complaint(e) => e.campaign_id.as_ref(),
            InboxEvent::Unsubscribe(e) => e.campaign_id.as_ref(),
            InboxEvent::CampaignStarted(e) => Some(&e.campaign_id),
            InboxEvent::CampaignCompleted(e) => Some(&e.campaign_id),
            InboxEvent::EmailReceived(_) | InboxEvent::Unknown(_) => None,
        }
    }

    /// Inbox events are never coalesced nor terminal: always [`EventClass::Ordinary`].
    pub fn class(&self) -> EventClass {
        EventClass::Ordinary
    }
}

impl CampaignEvent {
    /// The wire `type` (for an unknown event, the `type` it came with).
    pub fn type_name(&self) -> &str {
        match self {
            CampaignEvent::Unknown(e) => &e.kind,
            known => known.known_type_name().unwrap_or_default(),
        }
    }

    /// The wire `type` of a type this version knows (`None` for [`CampaignEvent::Unknown`]):
    /// a bounded set, e.g. for a metric label.
    pub fn known_type_name(&self) -> Option<&'static str> {
        Some(match self {
            CampaignEvent::Progress(_) => "progress",
            CampaignEvent::Completed(_) => "completed",
            CampaignEvent::Failed(_) => "failed",
            CampaignEvent::Cancelled(_) => "cancelled",
            CampaignEvent::Unknown(_) => return None,
        })
    }

    /// The campaign the event is about (`None` only for an unknown event).
    pub fn campaign_id(&self) -> Option<&CampaignId> {
        match self {
            CampaignEvent::Progress(e) => Some(&e.campaign_id),
            CampaignEvent::Completed(e) => Some(&e.campaign_id),
            CampaignEvent::Failed(e) => Some(&e.campaign_id),
            CampaignEvent::Cancelled(e) => Some(&e.campaign_id),
            CampaignEvent::Unknown(_) => None,
        }
    }

    /// `completed`, `failed` or `cancelled`: the campaign channel closes with 1000 after it.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            CampaignEvent::Completed(_) | CampaignEvent::Failed(_) | CampaignEvent::Cancelled(_)
        )
    }

    /// How an outbound queue treats it: `progress` is coalescable, the three terminal types
    /// are terminal, an unknown type is ordinary (never dropped, never ends the session).
    pub fn class(&self) -> EventClass {
        match self {
            CampaignEvent::Progress(_) => EventClass::Progress,
            CampaignEvent::Completed(_)
            | CampaignEvent::Failed(_)
            | CampaignEvent::Cancelled(_) => EventClass::Terminal,
            CampaignEvent::Unknown(_) => EventClass::Ordinary,
        }
    }
}

impl Event {
    /// The wire `type`.
    pub fn type_name(&self) -> &str {
        match self {
            Event::Inbox(e) => e.type_name(),
            Event::Campaign(e) => e.type_name(),
        }
    }

    /// The campaign the event is about, when it names one.
    pub fn campaign_id(&self) -> Option<&CampaignId> {
        match self {
            Event::Inbox(e) => e.campaign_id(),
            Event::Campaign(e) => e.campaign_id(),
        }
    }

    /// How an outbound queue treats it.
    pub fn class(&self) -> EventClass {
        match self {
            Event::Inbox(e) => e.class(),
            Event::Campaign(e) => e.class(),
        }
    }

    /// The channel the event belongs to.
    pub fn channel(&self) -> crate::close::ChannelKind {
        match self {
            Event::Inbox(_) => crate::close::ChannelKind::Inbox,
            Event::Campaign(_) => crate::close::ChannelKind::Campaign,
        }
    }
}

/// `From` each event struct into its channel's enum and into [`Event`].
macro_rules! from_variant {
    ($($ty:ident => $enum:ident),* $(,)?) => {$(
        impl From<$ty> for $enum {
            fn from(e: $ty) -> Self {
                $enum::$ty(e)
            }
        }
        impl From<$ty> for Event {
            fn from(e: $ty) -> Self {
                Event::from($enum::$ty(e))
            }
        }
    )*};
}

from_variant!(
    EmailReceived => InboxEvent,
    Bounce => InboxEvent,
    Complaint => InboxEvent,
    Unsubscribe => InboxEvent,
    CampaignStarted => InboxEvent,
    CampaignCompleted => InboxEvent,
    Progress => CampaignEvent,
    Completed => CampaignEvent,
    Failed => CampaignEvent,
    Cancelled => CampaignEvent,
);

impl From<InboxEvent> for Event {
    fn from(e: InboxEvent) -> Self {
        Event::Inbox(e)
    }
}

impl From<CampaignEvent> for Event {
    fn from(e: CampaignEvent) -> Self {
        Event::Campaign(e)
    }
}
