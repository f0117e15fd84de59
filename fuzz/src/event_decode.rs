//! `event_decode`: arbitrary bytes as a text frame → the event codec (§2.4).
//!
//! Input: the payload of one text frame, raw.
//!
//! Checked:
//! - decoding never panics, on either channel, with the default or a small size limit, and
//!   [`decode`] agrees with [`decode_inbox`] / [`decode_campaign`];
//! - the channels agree with each other: a known type of one channel is
//!   [`DecodeError::WrongChannel`] on the other, and a type neither knows is kept as the same
//!   unknown event on both;
//! - whatever decodes re-encodes to compact UTF-8 JSON (`type` first) that decodes to an equal
//!   value; `encode`, `encode_into` and [`Event::encode`] write the same bytes; an unknown
//!   event is written back exactly as received;
//! - [`Timestamp::parse`] keeps valid text as is, and what it accepts needs no escaping;
//! - the input, as text, is a `campaignId` exactly when [`CampaignId::new`] accepts it: the
//!   decoder then keeps it as is, and otherwise refuses it as an invalid `campaignId`;
//! - the input, as (lossy) text, round-trips through every kind of string field (the
//!   encoder's own escaping against serde_json's parser).

use misar_proto::close::ChannelKind;
use misar_proto::event::{
    Bounce, BounceType, CampaignEvent, Cancelled, DecodeError, Decoder, EmailReceived, Event,
    Failed, FieldError, InboxEvent, Timestamp, decode, decode_campaign, decode_inbox,
};
use misar_proto::route::CampaignId;

/// A limit small enough that the fuzzer crosses it often.
const SMALL_LIMIT: usize = 64;

/// The target's body.
pub fn run(data: &[u8]) {
    let inbox = decode_inbox(data);
    let campaign = decode_campaign(data);
    assert_eq!(
        decode(ChannelKind::Inbox, data),
        inbox.clone().map(Event::Inbox)
    );
    assert_eq!(
        decode(ChannelKind::Campaign, data),
        campaign.clone().map(Event::Campaign)
    );

    let small = Decoder::new(SMALL_LIMIT);
    if data.len() > SMALL_LIMIT {
        let too_large = DecodeError::TooLarge {
            len: data.len(),
            max: SMALL_LIMIT,
        };
        assert_eq!(small.inbox(data), Err(too_large.clone()));
        assert_eq!(small.campaign(data), Err(too_large));
    } else {
        assert_eq!(small.inbox(data), inbox);
        assert_eq!(small.campaign(data), campaign);
    }

    for error in [inbox.as_ref().err(), campaign.as_ref().err()]
        .into_iter()
        .flatten()
    {
        let _ = error.to_string();
    }

    check_channels_agree(&inbox, &campaign);
    if let Ok(event) = &inbox {
        check_round_trip(Event::Inbox(event.clone()), data);
    }
    if let Ok(event) = &campaign {
        check_round_trip(Event::Campaign(event.clone()), data);
    }

    if let Ok(text) = std::str::from_utf8(data) {
        check_timestamp(text);
        check_campaign_id(text);
    }
    check_string_fields(&String::from_utf8_lossy(data));
}

fn check_channels_agree(
    inbox: &Result<InboxEvent, DecodeError>,
    campaign: &Result<CampaignEvent, DecodeError>,
) {
    match (inbox, campaign) {
        (Ok(InboxEvent::Unknown(a)), other) => {
            assert_eq!(other, &Ok(CampaignEvent::Unknown(a.clone())));
        }
        (other, Ok(CampaignEvent::Unknown(b))) => {
            assert_eq!(other, &Ok(InboxEvent::Unknown(b.clone())));
        }
        (Ok(event), other) => {
            let kind = event.type_name();
            assert!(
                matches!(other, Err(DecodeError::WrongChannel { kind: k }) if *k == kind),
                "inbox `{kind}` on the campaign channel: {other:?}"
            );
        }
        (other, Ok(event)) => {
            let kind = event.type_name();
            assert!(
                matches!(other, Err(DecodeError::WrongChannel { kind: k }) if *k == kind),
                "campaign `{kind}` on the inbox channel: {other:?}"
            );
        }
        (Err(_), Err(_)) => {}
    }
}

fn check_round_trip(event: Event, input: &[u8]) {
    let encoded = event.encode();
    let bytes = encoded.bytes();
    assert_eq!(encoded.class(), event.class());
    assert_eq!(encoded.len(), bytes.len());
    assert!(!encoded.is_empty());
    assert!(std::str::from_utf8(bytes).is_ok(), "encoding is not UTF-8");

    let mut appended = b"prefix".to_vec();
    event.encode_into(&mut appended);
    assert_eq!(&appended[6..], &bytes[..]);

    let (unknown, channel_bytes) = match &event {
        Event::Inbox(e) => (
            matches!(e, InboxEvent::Unknown(_)),
            e.encode().bytes().clone(),
        ),
        Event::Campaign(e) => (
            matches!(e, CampaignEvent::Unknown(_)),
            e.encode().bytes().clone(),
        ),
        other => panic!("unexpected channel {other:?}"),
    };
    assert_eq!(&channel_bytes, bytes);

    if unknown {
        assert_eq!(
            &bytes[..],
            input,
            "an unknown event is written back as received"
        );
    } else {
        let head = format!("{{\"type\":\"{}\"", event.type_name());
        assert!(
            bytes.starts_with(head.as_bytes()),
            "`type` first: {}",
            String::from_utf8_lossy(bytes)
        );
        assert!(
            bytes.len() <= input.len(),
            "compact re-encoding longer than its input"
        );
    }

    // What we write ourselves must be plain JSON to any parser. (An unknown event is the
    // sender's text: valid JSON, but possibly beyond serde_json::Value, e.g. `1e400`.)
    if !unknown {
        let value: serde_json::Value = match serde_json::from_slice(bytes) {
            Ok(value) => value,
            Err(e) => panic!(
                "encoding is not JSON ({e}): {}",
                String::from_utf8_lossy(bytes)
            ),
        };
        assert_eq!(
            value.get("type").and_then(serde_json::Value::as_str),
            Some(event.type_name())
        );
    }

    let channel = event.channel();
    assert_eq!(decode(channel, bytes), Ok(event), "decode(encode(e)) != e");
}

fn check_timestamp(text: &str) {
    let Ok(timestamp) = Timestamp::parse(text) else {
        return;
    };
    assert_eq!(timestamp.as_str(), text);
    assert_eq!(timestamp.to_string(), text);
    // The encoder writes timestamps without escaping.
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
        "timestamp {text:?} would need escaping"
    );
    let event = Event::from(EmailReceived::new("a", "b", timestamp));
    assert_eq!(
        decode(ChannelKind::Inbox, event.encode().bytes()),
        Ok(event)
    );
}

fn check_campaign_id(text: &str) {
    let quoted = match serde_json::to_string(text) {
        Ok(quoted) => quoted,
        Err(e) => panic!("a string is always JSON: {e}"),
    };
    let frame = format!(r#"{{"type":"cancelled","campaignId":{quoted}}}"#);
    let got = Decoder::new(usize::MAX).campaign(frame.as_bytes());
    match CampaignId::new(text) {
        Ok(id) => {
            assert_eq!(id.as_str(), text);
            let event = CampaignEvent::Cancelled(Cancelled::new(id));
            assert_eq!(got, Ok(event.clone()));
            // Campaign ids are written without escaping.
            let encoded = event.encode();
            let expected = format!(r#"{{"type":"cancelled","campaignId":"{text}"}}"#);
            assert_eq!(encoded.bytes().as_ref(), expected.as_bytes());
        }
        Err(reason) => assert_eq!(
            got,
            Err(DecodeError::InvalidField {
                field: "campaignId",
                reason: FieldError::CampaignId(reason),
            })
        ),
    }
}

fn check_string_fields(text: &str) {
    let at = match Timestamp::parse("2026-05-27T10:15:00Z") {
        Ok(at) => at,
        Err(e) => panic!("fixed timestamp refused: {e}"),
    };
    let unlimited = Decoder::new(usize::MAX);
    let events = [
        Event::from(
            EmailReceived::new(text.to_owned(), text.to_owned(), at.clone())
                .with_message_id(text.to_owned())
                .with_to(String::new()),
        ),
        Event::from(
            Bounce::new(text.to_owned(), at)
                .with_bounce_type(BounceType::from_wire(text))
                .with_reason(text.to_owned()),
        ),
        Event::from(Failed::new(campaign("c-42"), text.to_owned()).with_sent(u64::MAX)),
    ];
    for event in events {
        let encoded = event.encode();
        assert_eq!(encoded.class(), event.class());
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(encoded.bytes());
        assert!(parsed.is_ok(), "not JSON: {:?}", encoded.bytes());
        assert_eq!(
            unlimited.decode(event.channel(), encoded.bytes()),
            Ok(event),
            "string field round trip"
        );
    }
}

/// A campaign id from a literal known to be valid.
fn campaign(id: &str) -> CampaignId {
    match CampaignId::new(id) {
        Ok(id) => id,
        Err(e) => panic!("fixed campaign id {id:?} refused: {e}"),
    }
}
