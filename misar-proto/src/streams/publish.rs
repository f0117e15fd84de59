//! Publish validation (§2.13): the one place that decides whether an event may be published
//! to a stream, for events published here and for bytes relayed from another node.
//!
//! Every check runs before anything is sent to anyone:
//! - the event belongs to the stream's channel, and a campaign event names the campaign it is
//!   published to;
//! - an event published here is of a type this version knows (a server does not originate what
//!   it cannot validate), while a **relayed** event of a newer type (a JSON object whose `type`
//!   is a string) is forwarded unchanged, so a rolling upgrade loses nothing;
//! - the encoding is at most [`PublishRules::max_event_bytes`] (64 KiB by default, below every
//!   connection's write bound).
//!
//! Whether a campaign is finished is the stream's decision ([`Stream::check`](super::Stream::check)),
//! not this module's: it depends on what was published before.

use bytes::Bytes;

use crate::event::{
    CampaignEvent, DEFAULT_MAX_LEN, DecodeError, Decoder, EncodedEvent, InboxEvent,
};
use crate::route::CampaignId;

use super::StreamKey;

/// The prefix every encoded event starts with: a compact object, `type` first (§2.4).
const CANONICAL_PREFIX: &[u8] = b"{\"type\":";

/// The default of [`PublishRules::max_event_bytes`]: 64 KiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = DEFAULT_MAX_LEN;

/// What a publish must satisfy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishRules {
    /// The largest encoded event, in bytes (64 KiB). Keep it below the connections' write
    /// bound, or every recipient's write of a large event would fail.
    pub max_event_bytes: usize,
}

impl Default for PublishRules {
    fn default() -> Self {
        Self {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// Why a publish was refused. Nothing was sent to anyone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// An event of a type this version does not know, published here: a server does not
    /// originate what it cannot validate. (Relayed events of newer types are forwarded.)
    #[error("refusing to publish an event of unknown type {kind:?}")]
    UnknownType {
        /// The event's `type`.
        kind: String,
    },
    /// A campaign event whose `campaignId` is not the campaign it was published to.
    #[error("the event is about campaign {found}, not {target}")]
    CampaignMismatch {
        /// The campaign published to.
        target: CampaignId,
        /// The event's `campaignId`.
        found: CampaignId,
    },
    /// The encoding is over [`PublishRules::max_event_bytes`].
    #[error("the event is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// The encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The campaign's terminal event (`completed`, `failed`, `cancelled`) was published: it
    /// is finished and takes no more events (the demo answers 409).
    #[error("campaign {campaign} is finished: its terminal event was published")]
    Finished {
        /// The finished campaign.
        campaign: CampaignId,
    },
    /// Relayed bytes that are not an event of the stream's channel (malformed JSON, a missing
    /// or mistyped field, an event of the other channel).
    #[error("not an event of this stream: {0}")]
    Malformed(#[from] DecodeError),
    /// Relayed bytes that are a valid event but not in the compact form of §2.4 (`{"type":`
    /// first, nothing around the object): relayed bytes go to clients unchanged, so they must
    /// already be in wire form.
    #[error("the event is not in its compact form (`{{\"type\":` first)")]
    NotCompact,
    /// The offset is not above the stream's latest (§2.11): a broker relayed the event twice,
    /// or out of order. Nothing was delivered.
    #[error("offset {offset} is not above the stream's latest, {latest}")]
    StaleOffset {
        /// The refused offset.
        offset: u64,
        /// The stream's latest offset.
        latest: u64,
    },
}

/// Encodes `event` once for an account's inbox, after checking it (§2.13).
///
/// ```
/// use misar_proto::event::{InboxEvent, UnknownEvent};
/// use misar_proto::streams::{validate_inbox, PublishError, PublishRules};
///
/// let unknown = InboxEvent::Unknown(UnknownEvent::new(
///     "calendar_invite",
///     bytes::Bytes::from_static(br#"{"type":"calendar_invite"}"#),
/// ));
/// assert!(matches!(
///     validate_inbox(&unknown, &PublishRules::default()),
///     Err(PublishError::UnknownType { .. })
/// ));
/// ```
pub fn validate_inbox(
    event: &InboxEvent,
    rules: &PublishRules,
) -> Result<EncodedEvent, PublishError> {
    if let InboxEvent::Unknown(unknown) = event {
        return Err(PublishError::UnknownType {
            kind: unknown.kind.clone(),
        });
    }
    within_bound(event.encode(), rules)
}

/// Encodes `event` once for `campaign`'s stream, after checking it (§2.13): a known type, and
/// a `campaignId` that is `campaign`.
pub fn validate_campaign(
    campaign: &CampaignId,
    event: &CampaignEvent,
    rules: &PublishRules,
) -> Result<EncodedEvent, PublishError> {
    if let CampaignEvent::Unknown(unknown) = event {
        return Err(PublishError::UnknownType {
            kind: unknown.kind.clone(),
        });
    }
    check_campaign_id(campaign, event)?;
    within_bound(event.encode(), rules)
}

/// Wraps bytes another node encoded for `stream`, after one decode to check and classify
/// them; the result shares `bytes` (no copy, no re-encoding).
///
/// Refused: bytes over the bound (checked before parsing), bytes not in compact form, bytes
/// that do not decode as an event of the stream's channel, a campaign event about another
/// campaign. An event of a type this version does not know, but that is a JSON object with a
/// string `type`, is accepted as an ordinary event (never coalesced, never terminal) and
/// forwarded unchanged.
///
/// ```
/// use misar_proto::event::EventClass;
/// use misar_proto::route::CampaignId;
/// use misar_proto::streams::{validate_relayed, PublishRules, StreamKey};
///
/// let stream = StreamKey::Campaign(CampaignId::new("c-42")?);
/// let newer = bytes::Bytes::from_static(br#"{"type":"paused","campaignId":"c-42"}"#);
/// let event = validate_relayed(&stream, newer.clone(), &PublishRules::default())?;
/// assert_eq!(event.bytes(), &newer);
/// assert_eq!(event.class(), EventClass::Ordinary);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn validate_relayed(
    stream: &StreamKey,
    bytes: Bytes,
    rules: &PublishRules,
) -> Result<EncodedEvent, PublishError> {
    if bytes.len() > rules.max_event_bytes {
        return Err(PublishError::TooLarge {
            len: bytes.len(),
            max: rules.max_event_bytes,
        });
    }
    if !(bytes.starts_with(CANONICAL_PREFIX) && bytes.ends_with(b"}")) {
        return Err(PublishError::NotCompact);
    }
    // Within the bound already: the decoder's own limit is the same one.
    let decoder = Decoder::new(rules.max_event_bytes);
    let class = match stream {
        StreamKey::Inbox(_) => decoder.inbox(&bytes)?.class(),
        StreamKey::Campaign(campaign) => {
            let event = decoder.campaign(&bytes)?;
            if !matches!(event, CampaignEvent::Unknown(_)) {
                check_campaign_id(campaign, &event)?;
            }
            event.class()
        }
    };
    Ok(EncodedEvent::new(bytes, class))
}

fn check_campaign_id(campaign: &CampaignId, event: &CampaignEvent) -> Result<(), PublishError> {
    match event.campaign_id() {
        Some(id) if id == campaign => Ok(()),
        Some(found) => Err(PublishError::CampaignMismatch {
            target: campaign.clone(),
            found: found.clone(),
        }),
        // Every known type names its campaign; only an unknown one has none.
        None => Err(PublishError::UnknownType {
            kind: event.type_name().to_owned(),
        }),
    }
}

fn within_bound(event: EncodedEvent, rules: &PublishRules) -> Result<EncodedEvent, PublishError> {
    if event.len() > rules.max_event_bytes {
        return Err(PublishError::TooLarge {
            len: event.len(),
            max: rules.max_event_bytes,
        });
    }
    Ok(event)
}
