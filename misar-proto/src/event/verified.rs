//! [`EncodedEvent`] from bytes that already hold an encoded event, without re-serializing.
//!
//! A multi-node broker receives the bytes one node encoded (from Redis, say) and must hand
//! them to its local connections. Decoding them once checks that they are an event this
//! version knows and classifies it (ordinary, coalescable `progress`, terminal); the
//! [`EncodedEvent`] then wraps the *same* buffer, so a node spends one decode per event, not a
//! decode and an encode, and no copy.

use bytes::Bytes;

use super::{DecodeError, Decoder, EncodedEvent, InboxEvent};
use crate::route::CampaignId;

/// The prefix every encoded event starts with: a compact object, `type` first (§2.4).
const CANONICAL_PREFIX: &[u8] = b"{\"type\":";

/// Why bytes were not accepted as an encoded event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FromJsonError {
    /// Not an event of the channel (malformed, a missing or invalid field, ...).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An event of a type this version does not know: a server does not send what it cannot
    /// validate.
    #[error("refusing an event of unknown type {kind:?}")]
    UnknownType {
        /// The event's `type`.
        kind: String,
    },
    /// A campaign event whose `campaignId` is not the campaign it was meant for.
    #[error("the event is about campaign {found:?}, not {expected:?}")]
    CampaignMismatch {
        /// The campaign the bytes were received for.
        expected: CampaignId,
        /// The event's `campaignId`.
        found: CampaignId,
    },
    /// A valid event, but not laid out as [`encode`](InboxEvent::encode) writes it (compact,
    /// `type` first, nothing around the object): the bytes go to clients unchanged, so they
    /// must already be in the wire form of §2.4.
    #[error("the event is not in its compact form (`{{\"type\":` first)")]
    NotCompact,
}

impl EncodedEvent {
    /// Wraps `bytes`, an inbox event as [`InboxEvent::encode`] writes it, after decoding it
    /// once to check it. The result shares `bytes` (no copy, no re-encoding).
    ///
    /// Refused: anything that does not decode as an inbox event, an event of unknown type,
    /// and a layout other than the compact one (the check is that the object starts with
    /// `{"type":` and has nothing around it). There is no size limit: the bytes are already
    /// in memory.
    ///
    /// ```
    /// use misar_proto::event::{EncodedEvent, EventClass, FromJsonError};
    ///
    /// let bytes = bytes::Bytes::from_static(
    ///     br#"{"type":"complaint","email":"x@example.com","complainedAt":"2026-05-27T10:15:00Z"}"#,
    /// );
    /// let event = EncodedEvent::from_inbox_json(bytes.clone())?;
    /// assert_eq!(event.bytes(), &bytes);
    /// assert_eq!(event.class(), EventClass::Ordinary);
    ///
    /// let unknown = bytes::Bytes::from_static(br#"{"type":"calendar_invite"}"#);
    /// assert!(matches!(
    ///     EncodedEvent::from_inbox_json(unknown),
    ///     Err(FromJsonError::UnknownType { .. })
    /// ));
    /// # Ok::<(), FromJsonError>(())
    /// ```
    pub fn from_inbox_json(bytes: Bytes) -> Result<EncodedEvent, FromJsonError> {
        check_compact(&bytes)?;
        let event = unlimited().inbox(&bytes)?;
        if let InboxEvent::Unknown(unknown) = event {
            return Err(FromJsonError::UnknownType { kind: unknown.kind });
        }
        Ok(EncodedEvent {
            bytes,
            class: event.class(),
        })
    }

    /// Wraps `bytes`, an event of `campaign`'s channel as
    /// [`CampaignEvent::encode`](super::CampaignEvent::encode) writes it, after decoding it
    /// once to check and classify it (`progress` is coalescable; `completed`, `failed` and
    /// `cancelled` are terminal). The result shares `bytes`.
    ///
    /// Refused as [`from_inbox_json`](Self::from_inbox_json) refuses, and also an event whose
    /// `campaignId` is not `campaign`.
    ///
    /// ```
    /// use misar_proto::event::{EncodedEvent, EventClass, FromJsonError};
    /// use misar_proto::route::CampaignId;
    ///
    /// let campaign = CampaignId::new("c-42")?;
    /// let bytes = bytes::Bytes::from_static(br#"{"type":"completed","campaignId":"c-42","sent":3,"delivered":3,"bounced":0,"opened":1}"#);
    /// let event = EncodedEvent::from_campaign_json(bytes, &campaign)?;
    /// assert_eq!(event.class(), EventClass::Terminal);
    ///
    /// let other = CampaignId::new("c-7")?;
    /// let bytes = bytes::Bytes::from_static(br#"{"type":"cancelled","campaignId":"c-42"}"#);
    /// assert!(matches!(
    ///     EncodedEvent::from_campaign_json(bytes, &other),
    ///     Err(FromJsonError::CampaignMismatch { .. })
    /// ));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_campaign_json(
        bytes: Bytes,
        campaign: &CampaignId,
    ) -> Result<EncodedEvent, FromJsonError> {
        check_compact(&bytes)?;
        let event = unlimited().campaign(&bytes)?;
        match event.campaign_id() {
            Some(id) if id == campaign => {}
            Some(found) => {
                return Err(FromJsonError::CampaignMismatch {
                    expected: campaign.clone(),
                    found: found.clone(),
                });
            }
            // Every known campaign type names its campaign: only an unknown one has none.
            None => {
                return Err(FromJsonError::UnknownType {
                    kind: event.type_name().to_owned(),
                });
            }
        }
        Ok(EncodedEvent {
            bytes,
            class: event.class(),
        })
    }
}

/// The bytes were produced (and bounded) by whoever encoded them; a second limit here would
/// only make large events that one node accepted undeliverable on the others.
fn unlimited() -> Decoder {
    Decoder::new(usize::MAX)
}

/// `{"type":` first and `}` last: what the encoder writes, so the bytes can go to clients as
/// they are. (Decoding checks the rest of the object.)
fn check_compact(bytes: &[u8]) -> Result<(), FromJsonError> {
    if bytes.starts_with(CANONICAL_PREFIX) && bytes.ends_with(b"}") {
        Ok(())
    } else {
        Err(FromJsonError::NotCompact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        CampaignEvent, Cancelled, EmailReceived, EventClass, Failed, Progress, Timestamp,
        UnknownEvent,
    };

    fn campaign(id: &str) -> CampaignId {
        CampaignId::new(id).unwrap()
    }

    #[test]
    fn inbox_round_trip_shares_the_buffer() {
        let event = InboxEvent::EmailReceived(EmailReceived {
            from: "a@example.com".into(),
            subject: "\"quoted\" \u{1F980}".into(),
            received_at: Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
            message_id: Some("m-1".into()),
            to: None,
        });
        let encoded = event.encode();
        let wrapped = EncodedEvent::from_inbox_json(encoded.bytes().clone()).unwrap();
        assert_eq!(wrapped, encoded);
        // The same allocation, not a copy.
        assert_eq!(wrapped.bytes().as_ptr(), encoded.bytes().as_ptr());
    }

    #[test]
    fn campaign_classes() {
        let id = campaign("c1");
        let progress = CampaignEvent::Progress(Progress::new(id.clone(), 1, 2, 1, 0, 0)).encode();
        let failed = CampaignEvent::Failed(Failed::new(id.clone(), "smtp")).encode();
        let got = EncodedEvent::from_campaign_json(progress.bytes().clone(), &id).unwrap();
        assert_eq!(got.class(), EventClass::Progress);
        assert_eq!(got, progress);
        let got = EncodedEvent::from_campaign_json(failed.bytes().clone(), &id).unwrap();
        assert_eq!(got.class(), EventClass::Terminal);
    }

    #[test]
    fn refusals() {
        let id = campaign("c1");
        let cancelled = CampaignEvent::Cancelled(Cancelled::new(campaign("c2"))).encode();
        assert_eq!(
            EncodedEvent::from_campaign_json(cancelled.bytes().clone(), &id),
            Err(FromJsonError::CampaignMismatch {
                expected: id.clone(),
                found: campaign("c2")
            })
        );
        // A campaign event is not an inbox event, and the reverse.
        assert!(matches!(
            EncodedEvent::from_inbox_json(cancelled.bytes().clone()),
            Err(FromJsonError::Decode(DecodeError::WrongChannel { .. }))
        ));
        let unknown = InboxEvent::Unknown(UnknownEvent {
            kind: "new_thing".into(),
            raw: Bytes::from_static(br#"{"type":"new_thing","x":1}"#),
        })
        .encode();
        assert_eq!(
            EncodedEvent::from_inbox_json(unknown.bytes().clone()),
            Err(FromJsonError::UnknownType {
                kind: "new_thing".into()
            })
        );
        assert_eq!(
            EncodedEvent::from_campaign_json(unknown.bytes().clone(), &id),
            Err(FromJsonError::UnknownType {
                kind: "new_thing".into()
            })
        );
        for not_compact in [
            &br#" {"type":"cancelled","campaignId":"c1"}"#[..],
            br#"{"type":"cancelled","campaignId":"c1"} "#,
            br#"{"campaignId":"c1","type":"cancelled"}"#,
            br#"{ "type":"cancelled","campaignId":"c1"}"#,
            b"",
        ] {
            assert_eq!(
                EncodedEvent::from_campaign_json(Bytes::copy_from_slice(not_compact), &id),
                Err(FromJsonError::NotCompact),
                "{not_compact:?}"
            );
        }
        assert!(matches!(
            EncodedEvent::from_campaign_json(Bytes::from_static(br#"{"type":}"#), &id),
            Err(FromJsonError::Decode(DecodeError::Syntax { .. }))
        ));
        assert!(matches!(
            EncodedEvent::from_campaign_json(
                Bytes::from_static(br#"{"type":"progress","campaignId":"c1"}"#),
                &id
            ),
            Err(FromJsonError::Decode(DecodeError::MissingField { .. }))
        ));
    }

    #[test]
    fn no_size_limit() {
        let event = InboxEvent::EmailReceived(EmailReceived {
            from: "a@example.com".into(),
            subject: "x".repeat(super::super::DEFAULT_MAX_LEN * 2),
            received_at: Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
            message_id: None,
            to: None,
        })
        .encode();
        assert!(EncodedEvent::from_inbox_json(event.bytes().clone()).is_ok());
    }
}
