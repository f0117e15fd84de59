//! Constructors of the event structs.
//!
//! The structs are `#[non_exhaustive]`, so §2.4 can gain optional fields without breaking
//! code outside this crate: build a value with `new` (its required fields, in wire order)
//! and the `with_*` methods (its optional fields); read and change fields directly.
//!
//! ```
//! use misar_proto::event::{BounceType, Bounce, Timestamp};
//!
//! let at = Timestamp::parse("2026-05-27T10:15:00Z")?;
//! let mut bounce = Bounce::new("x@example.com", at).with_bounce_type(BounceType::Hard);
//! bounce.reason = Some("mailbox full".into());
//! assert_eq!(bounce.bounce_type, Some(BounceType::Hard));
//! # Ok::<(), misar_proto::event::TimestampError>(())
//! ```

use bytes::Bytes;

use super::{
    Bounce, BounceType, CampaignCompleted, CampaignStarted, Cancelled, Complaint, Completed,
    EmailReceived, Failed, Progress, Timestamp, UnknownEvent, Unsubscribe,
};
use crate::route::CampaignId;

impl EmailReceived {
    /// An `email_received` with its required fields and no optional one.
    pub fn new(
        from: impl Into<String>,
        subject: impl Into<String>,
        received_at: Timestamp,
    ) -> Self {
        Self {
            from: from.into(),
            subject: subject.into(),
            received_at,
            message_id: None,
            to: None,
        }
    }

    /// With `messageId`.
    #[must_use]
    pub fn with_message_id(mut self, message_id: impl Into<String>) -> Self {
        self.message_id = Some(message_id.into());
        self
    }

    /// With `to`.
    #[must_use]
    pub fn with_to(mut self, to: impl Into<String>) -> Self {
        self.to = Some(to.into());
        self
    }
}

impl Bounce {
    /// A `bounce` with its required fields and no optional one.
    pub fn new(email: impl Into<String>, bounced_at: Timestamp) -> Self {
        Self {
            email: email.into(),
            bounce_type: None,
            reason: None,
            campaign_id: None,
            bounced_at,
        }
    }

    /// With `bounceType`.
    #[must_use]
    pub fn with_bounce_type(mut self, bounce_type: BounceType) -> Self {
        self.bounce_type = Some(bounce_type);
        self
    }

    /// With `reason`.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// With `campaignId`.
    #[must_use]
    pub fn with_campaign_id(mut self, campaign_id: CampaignId) -> Self {
        self.campaign_id = Some(campaign_id);
        self
    }
}

impl Complaint {
    /// A `complaint` with its required fields and no optional one.
    pub fn new(email: impl Into<String>, complained_at: Timestamp) -> Self {
        Self {
            email: email.into(),
            campaign_id: None,
            complained_at,
        }
    }

    /// With `campaignId`.
    #[must_use]
    pub fn with_campaign_id(mut self, campaign_id: CampaignId) -> Self {
        self.campaign_id = Some(campaign_id);
        self
    }
}

impl Unsubscribe {
    /// An `unsubscribe` with its required fields and no optional one.
    pub fn new(email: impl Into<String>, unsubscribed_at: Timestamp) -> Self {
        Self {
            email: email.into(),
            campaign_id: None,
            unsubscribed_at,
        }
    }

    /// With `campaignId`.
    #[must_use]
    pub fn with_campaign_id(mut self, campaign_id: CampaignId) -> Self {
        self.campaign_id = Some(campaign_id);
        self
    }
}

impl CampaignStarted {
    /// A `campaign_started` (it has no optional field).
    pub fn new(
        campaign_id: CampaignId,
        campaign_name: impl Into<String>,
        total: u64,
        started_at: Timestamp,
    ) -> Self {
        Self {
            campaign_id,
            campaign_name: campaign_name.into(),
            total,
            started_at,
        }
    }
}

impl CampaignCompleted {
    /// A `campaign_completed` (it has no optional field). The counts come in wire order:
    /// `sent`, `delivered`, `opened`.
    pub fn new(
        campaign_id: CampaignId,
        campaign_name: impl Into<String>,
        sent: u64,
        delivered: u64,
        opened: u64,
        completed_at: Timestamp,
    ) -> Self {
        Self {
            campaign_id,
            campaign_name: campaign_name.into(),
            sent,
            delivered,
            opened,
            completed_at,
        }
    }
}

impl Progress {
    /// A `progress` (it has no optional field). The counts come in wire order: `sent`,
    /// `total`, `delivered`, `bounced`, `opened`.
    pub fn new(
        campaign_id: CampaignId,
        sent: u64,
        total: u64,
        delivered: u64,
        bounced: u64,
        opened: u64,
    ) -> Self {
        Self {
            campaign_id,
            sent,
            total,
            delivered,
            bounced,
            opened,
        }
    }
}

impl Completed {
    /// A `completed` with its required fields and no `completedAt`. The counts come in wire
    /// order: `sent`, `delivered`, `bounced`, `opened`.
    pub fn new(
        campaign_id: CampaignId,
        sent: u64,
        delivered: u64,
        bounced: u64,
        opened: u64,
    ) -> Self {
        Self {
            campaign_id,
            sent,
            delivered,
            bounced,
            opened,
            completed_at: None,
        }
    }

    /// With `completedAt`.
    #[must_use]
    pub fn with_completed_at(mut self, completed_at: Timestamp) -> Self {
        self.completed_at = Some(completed_at);
        self
    }
}

impl Failed {
    /// A `failed` with its required fields and no optional one.
    pub fn new(campaign_id: CampaignId, error: impl Into<String>) -> Self {
        Self {
            campaign_id,
            error: error.into(),
            sent: None,
            failed_at: None,
        }
    }

    /// With `sent`.
    #[must_use]
    pub fn with_sent(mut self, sent: u64) -> Self {
        self.sent = Some(sent);
        self
    }

    /// With `failedAt`.
    #[must_use]
    pub fn with_failed_at(mut self, failed_at: Timestamp) -> Self {
        self.failed_at = Some(failed_at);
        self
    }
}

impl Cancelled {
    /// A `cancelled` with its required field and no optional one.
    pub fn new(campaign_id: CampaignId) -> Self {
        Self {
            campaign_id,
            sent: None,
            cancelled_at: None,
        }
    }

    /// With `sent`.
    #[must_use]
    pub fn with_sent(mut self, sent: u64) -> Self {
        self.sent = Some(sent);
        self
    }

    /// With `cancelledAt`.
    #[must_use]
    pub fn with_cancelled_at(mut self, cancelled_at: Timestamp) -> Self {
        self.cancelled_at = Some(cancelled_at);
        self
    }
}

impl UnknownEvent {
    /// An event of type `kind` whose whole JSON object is `raw`, unchecked: `raw` must hold one
    /// JSON object whose `type` is `kind`, or its receivers will not decode it (decoding is
    /// what builds checked values).
    pub fn new(kind: impl Into<String>, raw: Bytes) -> Self {
        Self {
            kind: kind.into(),
            raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CampaignEvent, InboxEvent, decode_campaign, decode_inbox};

    fn at() -> Timestamp {
        Timestamp::parse("2026-05-27T10:15:00Z").unwrap()
    }

    fn cid() -> CampaignId {
        CampaignId::new("c-1").unwrap()
    }

    #[test]
    fn constructors_set_what_they_are_given_and_nothing_else() {
        let e = EmailReceived::new("a@x", "s", at());
        assert_eq!((e.message_id.as_deref(), e.to.as_deref()), (None, None));
        let e = e.with_message_id("m").with_to("t");
        assert_eq!(e.message_id.as_deref(), Some("m"));
        assert_eq!(e.to.as_deref(), Some("t"));
        assert_eq!((e.from.as_str(), e.subject.as_str()), ("a@x", "s"));

        let p = Progress::new(cid(), 1, 2, 3, 4, 5);
        assert_eq!(
            (p.sent, p.total, p.delivered, p.bounced, p.opened),
            (1, 2, 3, 4, 5)
        );
        let c = Completed::new(cid(), 1, 2, 3, 4);
        assert_eq!((c.sent, c.delivered, c.bounced, c.opened), (1, 2, 3, 4));
        assert_eq!(c.completed_at, None);
        let c = CampaignCompleted::new(cid(), "n", 1, 2, 3, at());
        assert_eq!((c.sent, c.delivered, c.opened), (1, 2, 3));
    }

    #[test]
    fn built_events_round_trip() {
        let inbox: Vec<InboxEvent> = vec![
            EmailReceived::new("a@x", "s", at())
                .with_message_id("m")
                .with_to("t")
                .into(),
            Bounce::new("a@x", at())
                .with_bounce_type(BounceType::Soft)
                .with_reason("r")
                .with_campaign_id(cid())
                .into(),
            Complaint::new("a@x", at()).with_campaign_id(cid()).into(),
            Unsubscribe::new("a@x", at()).with_campaign_id(cid()).into(),
            CampaignStarted::new(cid(), "n", 9, at()).into(),
            CampaignCompleted::new(cid(), "n", 3, 2, 1, at()).into(),
        ];
        for e in inbox {
            assert_eq!(decode_inbox(e.encode().bytes()), Ok(e));
        }
        let campaign: Vec<CampaignEvent> = vec![
            Progress::new(cid(), 1, 2, 3, 4, 5).into(),
            Completed::new(cid(), 1, 2, 3, 4)
                .with_completed_at(at())
                .into(),
            Failed::new(cid(), "e")
                .with_sent(7)
                .with_failed_at(at())
                .into(),
            Cancelled::new(cid())
                .with_sent(7)
                .with_cancelled_at(at())
                .into(),
        ];
        for e in campaign {
            assert_eq!(decode_campaign(e.encode().bytes()), Ok(e));
        }
        let raw = Bytes::from_static(br#"{"type":"new_thing"}"#);
        let unknown = InboxEvent::Unknown(UnknownEvent::new("new_thing", raw.clone()));
        assert_eq!(decode_inbox(&raw), Ok(unknown));
    }
}
