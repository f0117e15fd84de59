//! Events (§2.4): the ten types, their JSON encoding, and forward-compatible decoding.
//!
//! SKELETON: types fixed here; the codec arrives with issue 2.

use bytes::Bytes;

/// An RFC 3339 timestamp, kept exactly as written (so `decode(encode(e)) == e`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(Box<str>);

/// `bounceType` of a bounce.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BounceType {
    /// `"hard"`: permanent.
    Hard,
    /// `"soft"`: transient.
    Soft,
    /// Any other value a newer server sends (kept, so nothing is lost).
    Other(String),
}

/// `email_received`: a new inbound email.
#[derive(Clone, Debug, PartialEq, Eq)]
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
pub struct Bounce {
    /// `email`.
    pub email: String,
    /// `bounceType?`.
    pub bounce_type: Option<BounceType>,
    /// `reason?`.
    pub reason: Option<String>,
    /// `campaignId?`.
    pub campaign_id: Option<String>,
    /// `bouncedAt`.
    pub bounced_at: Timestamp,
}

/// `complaint`: a spam complaint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Complaint {
    /// `email`.
    pub email: String,
    /// `campaignId?`.
    pub campaign_id: Option<String>,
    /// `complainedAt`.
    pub complained_at: Timestamp,
}

/// `unsubscribe`: a contact unsubscribed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// `email`.
    pub email: String,
    /// `campaignId?`.
    pub campaign_id: Option<String>,
    /// `unsubscribedAt`.
    pub unsubscribed_at: Timestamp,
}

/// `campaign_started`: a campaign send began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignStarted {
    /// `campaignId`.
    pub campaign_id: String,
    /// `campaignName`.
    pub campaign_name: String,
    /// `total`.
    pub total: u64,
    /// `startedAt`.
    pub started_at: Timestamp,
}

/// `campaign_completed`: a campaign send finished (inbox summary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignCompleted {
    /// `campaignId`.
    pub campaign_id: String,
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
pub struct Progress {
    /// `campaignId`.
    pub campaign_id: String,
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
pub struct Completed {
    /// `campaignId`.
    pub campaign_id: String,
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
pub struct Failed {
    /// `campaignId`.
    pub campaign_id: String,
    /// `error`.
    pub error: String,
    /// `sent?`.
    pub sent: Option<u64>,
    /// `failedAt?`.
    pub failed_at: Option<Timestamp>,
}

/// `cancelled`: terminal, the campaign was cancelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cancelled {
    /// `campaignId`.
    pub campaign_id: String,
    /// `sent?`.
    pub sent: Option<u64>,
    /// `cancelledAt?`.
    pub cancelled_at: Option<Timestamp>,
}

/// An event whose `type` this version does not know, kept as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownEvent {
    /// The `type` field.
    pub kind: String,
    /// The whole JSON object as received.
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedEvent {
    bytes: Bytes,
    class: EventClass,
}

impl EncodedEvent {
    /// The compact JSON text.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
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
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn from_parts_for_tests(bytes: Bytes, class: EventClass) -> Self {
        Self { bytes, class }
    }
}
