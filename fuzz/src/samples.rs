//! Example frames and bodies: the seeds of `event_decode`, and what the session targets pick
//! from when they send an event, so the fuzzer reaches valid events without guessing JSON.

use std::sync::OnceLock;

use misar_proto::event::{
    Bounce, BounceType, CampaignCompleted, CampaignStarted, Cancelled, Complaint, Completed,
    EmailReceived, EncodedEvent, Event, Failed, Progress, Timestamp, Unsubscribe,
};
use misar_proto::route::CampaignId;

/// The protocol source's example events, as published (pretty-printed).
pub const SEED_EXAMPLES: [&str; 4] = [
    r#"{
  "type": "email_received",
  "from": "[email protected]",
  "subject": "Re: Your email",
  "receivedAt": "2026-05-27T10:15:00Z"
}"#,
    r#"{
  "type": "campaign_completed",
  "campaignId": "uuid",
  "campaignName": "May Newsletter",
  "sent": 10000,
  "delivered": 9855,
  "opened": 2340,
  "completedAt": "2026-05-27T11:00:00Z"
}"#,
    r#"{
  "type": "progress",
  "campaignId": "uuid",
  "sent": 2500,
  "total": 10000,
  "delivered": 2480,
  "bounced": 20,
  "opened": 450
}"#,
    r#"{
  "type": "completed",
  "campaignId": "uuid",
  "sent": 10000,
  "delivered": 9855,
  "bounced": 145,
  "opened": 2340
}"#,
];

/// Hand-written frames for the corners of §2.4: `type` not first, unknown fields and types,
/// escapes, nulls, wrong channels, and the usual ways to be wrong.
pub const HAND_WRITTEN: [&str; 30] = [
    r#"{"subject":"Hi","type":"email_received","from":"a@example.com","receivedAt":"2026-05-27T10:15:00+02:00"}"#,
    r#"{"type":"email_received","from":"a","subject":"","receivedAt":"2026-05-27t10:15:00.123456z","messageId":"<m@x>","to":"b@example.com","extra":{"nested":[1,2,{"x":null}]}}"#,
    r#"{"type":"bounce","email":"x@example.com","bounceType":"hard","reason":"550 no such user","campaignId":"c-1","bouncedAt":"2024-02-29T23:59:60Z"}"#,
    r#"{"type":"bounce","email":"x@example.com","bounceType":"blocked","bouncedAt":"2026-05-27T10:15:00-23:59"}"#,
    r#"{"type":"bounce","email":"x@example.com","bounceType":null,"reason":null,"bouncedAt":"2026-05-27T10:15:00Z"}"#,
    r#"{"type":"complaint","email":"\u0061\ud83e\udd80\/","complainedAt":"2026-05-27T10:15:00Z"}"#,
    r#"{"type":"unsubscribe","email":"u@example.com","campaignId":"c","unsubscribedAt":"2026-05-27T10:15:00Z"}"#,
    r#"{"type":"campaign_started","campaignId":"c","campaignName":"N","total":18446744073709551615,"startedAt":"2026-05-27T10:15:00Z"}"#,
    r#"{"type":"campaign_started","campaignId":"c","campaignName":"N","total":18446744073709551616,"startedAt":"2026-05-27T10:15:00Z"}"#,
    r#"{"type":"progress","campaignId":"c","sent":-1,"total":2,"delivered":1,"bounced":0,"opened":0}"#,
    r#"{"type":"progress","campaignId":"c","sent":1.5,"total":2,"delivered":1,"bounced":0,"opened":0}"#,
    r#"{"type":"progress","campaignId":"c","sent":"1","total":2,"delivered":1,"bounced":0,"opened":0}"#,
    r#"{"type":"completed","campaignId":"c","sent":1,"delivered":1,"bounced":0,"opened":0,"completedAt":"2026-02-30T00:00:00Z"}"#,
    r#"{"type":"failed","campaignId":"c","error":"smtp relay down","sent":12,"failedAt":"2026-05-27T10:15:00.5Z"}"#,
    r#"{"type":"failed","campaignId":"c","error":"e","error":"f"}"#,
    r#"{"type":"cancelled","campaignId":"c"}"#,
    r#"{"type":"cancelled","campaignId":"c","sent":null,"cancelledAt":null}"#,
    r#"{"type":"calendar_invite","when":"2026-06-01T09:00:00Z","who":["a","b"]}"#,
    r#"{"x":1,"type":"new","y":[[[[]]]]}"#,
    r#"{"type":""}"#,
    r#"{"type":"new","x":1,"type":"new"}"#,
    r#"{"Type":"bounce"}"#,
    r#"{"type":7}"#,
    r#"{"type":"Bounce","email":"a"}"#,
    r#"{"type":"complaint",}"#,
    r#"[{"type":"complaint"}]"#,
    r#"{"type":"campaign_started","campaignId":"c","total":1e400}"#,
    r#"{"type":"cancelled","campaignId":"c"} x"#,
    r#"  {"type" : "cancelled" , "campaignId" : "c"}  "#,
    r#"{"type":"unsubscribe","email":"u","unsubscribedAt":"2026-05-27T10:15:00Z","a":"\u0000\u001f\"\\"}"#,
];

fn ts(text: &str) -> Timestamp {
    match Timestamp::parse(text) {
        Ok(t) => t,
        Err(e) => panic!("sample timestamp {text}: {e}"),
    }
}

fn campaign(id: &str) -> CampaignId {
    match CampaignId::new(id) {
        Ok(id) => id,
        Err(e) => panic!("sample campaign id {id}: {e}"),
    }
}

/// One event of every type (with and without optional fields), built from the types.
pub fn events() -> Vec<Event> {
    let at = ts("2026-05-27T10:15:00Z");
    vec![
        EmailReceived::new(
            "ana@example.com",
            "Re: \"quotes\" \\ and\nnewlines \u{1f980}",
            at.clone(),
        )
        .with_message_id("<id@example.com>")
        .with_to("me@example.com")
        .into(),
        Bounce::new("x@example.com", at.clone())
            .with_bounce_type(BounceType::Soft)
            .with_campaign_id(campaign("c-42"))
            .into(),
        Complaint::new("x@example.com", ts("2026-05-27T10:15:00.25+05:30")).into(),
        Unsubscribe::new("x@example.com", at.clone())
            .with_campaign_id(campaign("c-42"))
            .into(),
        CampaignStarted::new(campaign("c-42"), "May Newsletter", 10_000, at.clone()).into(),
        CampaignCompleted::new(
            campaign("c-42"),
            "May Newsletter",
            10_000,
            9_855,
            2_340,
            at.clone(),
        )
        .into(),
        Progress::new(campaign("c-42"), 2_500, 10_000, 2_480, 20, 450).into(),
        Completed::new(campaign("c-42"), 10_000, 9_855, 145, 2_340)
            .with_completed_at(at.clone())
            .into(),
        Failed::new(campaign("c-42"), "relay refused")
            .with_failed_at(at)
            .into(),
        Cancelled::new(campaign("c-42")).with_sent(u64::MAX).into(),
    ]
}

/// Every sample frame: the protocol source's examples, the encoded events, the hand-written
/// corners. Built once (the session targets pick from it on every run).
pub fn frames() -> &'static [Vec<u8>] {
    static FRAMES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        let mut out: Vec<Vec<u8>> = SEED_EXAMPLES
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        out.extend(encoded().iter().map(|e| e.bytes().to_vec()));
        out.extend(HAND_WRITTEN.iter().map(|s| s.as_bytes().to_vec()));
        out
    })
}

/// [`events`], encoded once.
pub fn encoded() -> &'static [EncodedEvent] {
    static ENCODED: OnceLock<Vec<EncodedEvent>> = OnceLock::new();
    ENCODED.get_or_init(|| events().iter().map(Event::encode).collect())
}

/// Bodies of refused handshakes (§2.3), valid and not.
pub const REJECTION_BODIES: [&str; 5] = [
    r#"{"error":"unauthorized","closeCode":4401,"message":"unknown API key"}"#,
    r#"{"error":"forbidden","closeCode":4403,"message":"the campaign does not belong to this account"}"#,
    r#"{"error":"unavailable"}"#,
    r#"{"error":42}"#,
    "<html>Forbidden</html>",
];
