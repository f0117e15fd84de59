//! Properties of the event codec: round trips for arbitrary events of both channels, and no
//! panic on arbitrary bytes, arbitrary objects, or arbitrary mutations of valid encodings.

use misar_proto::close::ChannelKind;
use misar_proto::event::{
    Bounce, BounceType, CampaignCompleted, CampaignEvent, CampaignStarted, Cancelled, Complaint,
    Completed, DecodeError, Decoder, EmailReceived, Event, Failed, FieldError, InboxEvent,
    Progress, Timestamp, UnknownEvent, Unsubscribe,
};
use misar_proto::route::{CampaignId, MAX_CAMPAIGN_ID_LEN};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

const KNOWN: [&str; 10] = [
    "email_received",
    "bounce",
    "complaint",
    "unsubscribe",
    "campaign_started",
    "campaign_completed",
    "progress",
    "completed",
    "failed",
    "cancelled",
];

/// No size limit in the properties: quickcheck's strings are what they are.
const BIG: Decoder = Decoder::new(usize::MAX);

fn pick(g: &mut Gen, n: usize) -> usize {
    usize::arbitrary(g) % n
}

fn text(g: &mut Gen) -> String {
    // Arbitrary unicode (control characters, quotes, backslashes, astral planes) with a bias
    // towards the characters that need escaping.
    match pick(g, 4) {
        0 => {
            let parts = [
                "\"", "\\", "\n", "\u{0}", "\u{1f}", "\u{7f}", "é", "🦀", "\u{2028}", "a",
            ];
            (0..pick(g, 12))
                .map(|_| parts[pick(g, parts.len())])
                .collect()
        }
        _ => String::arbitrary(g),
    }
}

/// A valid campaign id: 1–128 characters of `[A-Za-z0-9_-]`, biased towards the edges
/// (one character, the longest, the two punctuation characters, UUIDs).
fn campaign_id(g: &mut Gen) -> CampaignId {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let len = match pick(g, 5) {
        0 => 1,
        1 => MAX_CAMPAIGN_ID_LEN,
        2 => 36,
        _ => 1 + pick(g, MAX_CAMPAIGN_ID_LEN),
    };
    let id: String = (0..len)
        .map(|_| {
            let at = if pick(g, 8) == 0 {
                ALPHABET.len() - 1 - pick(g, 2) // '_' or '-'
            } else {
                pick(g, ALPHABET.len())
            };
            char::from(ALPHABET[at])
        })
        .collect();
    CampaignId::new(&id).unwrap_or_else(|e| panic!("generated {id:?} is valid: {e}"))
}

fn count(g: &mut Gen) -> u64 {
    match pick(g, 5) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::from(u32::arbitrary(g)),
        _ => u64::arbitrary(g),
    }
}

fn opt<T>(g: &mut Gen, f: impl FnOnce(&mut Gen) -> T) -> Option<T> {
    bool::arbitrary(g).then(|| f(g))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A valid RFC 3339 timestamp in any of its allowed spellings.
fn timestamp(g: &mut Gen) -> Timestamp {
    let year = if bool::arbitrary(g) {
        2000 + pick(g, 4) as u32 * 100
    } else {
        pick(g, 10_000) as u32
    };
    let month = 1 + pick(g, 12) as u32;
    let day = 1 + pick(g, days_in_month(year, month) as usize) as u32;
    let t = if bool::arbitrary(g) { 'T' } else { 't' };
    let (h, m, s) = (pick(g, 24), pick(g, 60), pick(g, 61));
    let frac: String = match pick(g, 3) {
        0 => String::new(),
        _ => {
            let digits: String = (0..1 + pick(g, 12))
                .map(|_| char::from(b'0' + pick(g, 10) as u8))
                .collect();
            format!(".{digits}")
        }
    };
    let offset = match pick(g, 4) {
        0 => "Z".to_owned(),
        1 => "z".to_owned(),
        _ => format!(
            "{}{:02}:{:02}",
            if bool::arbitrary(g) { '+' } else { '-' },
            pick(g, 24),
            pick(g, 60)
        ),
    };
    let s = format!("{year:04}-{month:02}-{day:02}{t}{h:02}:{m:02}:{s:02}{frac}{offset}");
    Timestamp::parse(&s).unwrap_or_else(|e| panic!("generated {s} is valid: {e}"))
}

fn bounce_type(g: &mut Gen) -> BounceType {
    match pick(g, 3) {
        0 => BounceType::Hard,
        1 => BounceType::Soft,
        // `from_wire` turns "hard"/"soft" into the named variants, as decoding does.
        _ => BounceType::from_wire(&text(g)),
    }
}

fn json_value(g: &mut Gen, depth: usize) -> String {
    match pick(g, if depth == 0 { 5 } else { 7 }) {
        0 => "null".to_owned(),
        1 => bool::arbitrary(g).to_string(),
        2 => i64::arbitrary(g).to_string(),
        3 => format!("{:e}", f64::from(i32::arbitrary(g)) / 7.0),
        4 => serde_json::to_string(&text(g)).unwrap(),
        5 => {
            let items: Vec<String> = (0..pick(g, 4)).map(|_| json_value(g, depth - 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let items: Vec<String> = (0..pick(g, 4))
                .map(|_| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(&text(g)).unwrap(),
                        json_value(g, depth - 1)
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// An event whose type no version knows: an object with `type` (first or not) and more.
fn unknown(g: &mut Gen) -> UnknownEvent {
    let mut kind = text(g);
    if KNOWN.contains(&kind.as_str()) {
        kind.push('?');
    }
    let mut entries = vec![format!(
        "\"type\":{}",
        serde_json::to_string(&kind).unwrap()
    )];
    for _ in 0..pick(g, 4) {
        let mut key = text(g);
        if key == "type" {
            key.push('!');
        }
        entries.push(format!(
            "{}:{}",
            serde_json::to_string(&key).unwrap(),
            json_value(g, 2)
        ));
    }
    if bool::arbitrary(g) {
        entries.rotate_left(1);
    }
    let raw = format!("{{{}}}", entries.join(","));
    UnknownEvent::new(kind, raw.into())
}

fn inbox(g: &mut Gen) -> InboxEvent {
    match pick(g, 7) {
        0 => {
            let mut e = EmailReceived::new(text(g), text(g), timestamp(g));
            e.message_id = opt(g, text);
            e.to = opt(g, text);
            e.into()
        }
        1 => {
            let mut e = Bounce::new(text(g), timestamp(g));
            e.bounce_type = opt(g, bounce_type);
            e.reason = opt(g, text);
            e.campaign_id = opt(g, campaign_id);
            e.into()
        }
        2 => {
            let mut e = Complaint::new(text(g), timestamp(g));
            e.campaign_id = opt(g, campaign_id);
            e.into()
        }
        3 => {
            let mut e = Unsubscribe::new(text(g), timestamp(g));
            e.campaign_id = opt(g, campaign_id);
            e.into()
        }
        4 => CampaignStarted::new(campaign_id(g), text(g), count(g), timestamp(g)).into(),
        5 => CampaignCompleted::new(
            campaign_id(g),
            text(g),
            count(g),
            count(g),
            count(g),
            timestamp(g),
        )
        .into(),
        _ => InboxEvent::Unknown(unknown(g)),
    }
}

fn campaign(g: &mut Gen) -> CampaignEvent {
    match pick(g, 5) {
        0 => Progress::new(
            campaign_id(g),
            count(g),
            count(g),
            count(g),
            count(g),
            count(g),
        )
        .into(),
        1 => {
            let mut e = Completed::new(campaign_id(g), count(g), count(g), count(g), count(g));
            e.completed_at = opt(g, timestamp);
            e.into()
        }
        2 => {
            let mut e = Failed::new(campaign_id(g), text(g));
            e.sent = opt(g, count);
            e.failed_at = opt(g, timestamp);
            e.into()
        }
        3 => {
            let mut e = Cancelled::new(campaign_id(g));
            e.sent = opt(g, count);
            e.cancelled_at = opt(g, timestamp);
            e.into()
        }
        _ => CampaignEvent::Unknown(unknown(g)),
    }
}

#[derive(Clone, Debug)]
struct AnyEvent(Event);

impl Arbitrary for AnyEvent {
    fn arbitrary(g: &mut Gen) -> Self {
        AnyEvent(if bool::arbitrary(g) {
            inbox(g).into()
        } else {
            campaign(g).into()
        })
    }
}

fn is_unknown(e: &Event) -> bool {
    matches!(
        e,
        Event::Inbox(InboxEvent::Unknown(_)) | Event::Campaign(CampaignEvent::Unknown(_))
    )
}

fn run<A: quickcheck::Testable>(tests: u64, prop: A) {
    QuickCheck::new().tests(tests).quickcheck(prop);
}

#[test]
fn round_trip_for_arbitrary_events() {
    fn prop(e: AnyEvent) -> bool {
        let e = e.0;
        let encoded = e.encode();
        let back = BIG.decode(e.channel(), encoded.bytes());
        let channel_enum = match &e {
            Event::Inbox(i) => {
                BIG.inbox(encoded.bytes()).map(Event::from) == Ok(e.clone())
                    && i.encode() == encoded
            }
            Event::Campaign(c) => {
                BIG.campaign(encoded.bytes()).map(Event::from) == Ok(e.clone())
                    && c.encode() == encoded
            }
            _ => false,
        };
        back == Ok(e.clone()) && channel_enum && encoded.class() == e.class()
    }
    run(2000, prop as fn(AnyEvent) -> bool);
}

#[test]
fn encodings_are_compact_json_with_type_first() {
    fn prop(e: AnyEvent) -> TestResult {
        let e = e.0;
        if is_unknown(&e) {
            return TestResult::discard();
        }
        let encoded = e.encode();
        let prefix = format!("{{\"type\":\"{}\",", e.type_name());
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(encoded.bytes()) else {
            return TestResult::failed();
        };
        // Compact: re-serializing the parsed value (keys sorted) gives the same length.
        let reserialized = serde_json::to_vec(&value).unwrap();
        // Another producer's order (`type` is rarely first once sorted) and pretty printing.
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        TestResult::from_bool(
            encoded.bytes().starts_with(prefix.as_bytes())
                && !encoded.bytes().contains(&b'\n')
                && reserialized.len() == encoded.len()
                && BIG.decode(e.channel(), &reserialized) == Ok(e.clone())
                && BIG.decode(e.channel(), &pretty) == Ok(e.clone()),
        )
    }
    run(1000, prop as fn(AnyEvent) -> TestResult);
}

#[test]
fn events_never_decode_on_the_other_channel() {
    fn prop(e: AnyEvent) -> TestResult {
        let e = e.0;
        if is_unknown(&e) {
            return TestResult::discard();
        }
        let other = match e.channel() {
            ChannelKind::Inbox => ChannelKind::Campaign,
            ChannelKind::Campaign => ChannelKind::Inbox,
        };
        let got = BIG.decode(other, e.encode().bytes());
        TestResult::from_bool(
            matches!(got, Err(DecodeError::WrongChannel { kind }) if kind == e.type_name()),
        )
    }
    run(500, prop as fn(AnyEvent) -> TestResult);
}

/// A string as a `campaignId`: decoded when it is a campaign id, otherwise refused with a
/// field error naming `campaignId`, on every type that has one (required or optional).
#[test]
fn campaign_ids_decode_only_when_valid() {
    fn prop(valid: bool, which: u8, seed: String) -> bool {
        let mut g = Gen::new(64);
        let id = if valid {
            campaign_id(&mut g).to_string()
        } else {
            // Anything goes, and a crafted near miss half the time.
            match seed.len() % 4 {
                0 => String::new(),
                1 => "a".repeat(MAX_CAMPAIGN_ID_LEN + 1),
                2 => format!("ok{seed}/"),
                _ => seed,
            }
        };
        let quoted = serde_json::to_string(&id).unwrap();
        let (channel, frame) = match which % 4 {
            0 => (
                ChannelKind::Campaign,
                format!(r#"{{"type":"cancelled","campaignId":{quoted}}}"#),
            ),
            1 => (
                ChannelKind::Campaign,
                format!(r#"{{"type":"failed","error":"e","campaignId":{quoted},"sent":1}}"#),
            ),
            2 => (
                ChannelKind::Inbox,
                format!(
                    r#"{{"type":"complaint","email":"a","campaignId":{quoted},"complainedAt":"2026-05-27T10:15:00Z"}}"#
                ),
            ),
            _ => (
                ChannelKind::Inbox,
                format!(
                    r#"{{"type":"campaign_started","campaignId":{quoted},"campaignName":"n","total":1,"startedAt":"2026-05-27T10:15:00Z"}}"#
                ),
            ),
        };
        let got = BIG.decode(channel, frame.as_bytes());
        match CampaignId::new(&id) {
            Ok(expected) => got.is_ok_and(|e| e.campaign_id() == Some(&expected)),
            Err(reason) => {
                got == Err(DecodeError::InvalidField {
                    field: "campaignId",
                    reason: FieldError::CampaignId(reason),
                })
            }
        }
    }
    run(2000, prop as fn(bool, u8, String) -> bool);
}

/// Whatever decodes must re-encode to something that decodes to the same event.
fn stable(channel: ChannelKind, bytes: &[u8]) -> bool {
    match BIG.decode(channel, bytes) {
        Ok(e) => BIG.decode(channel, e.encode().bytes()) == Ok(e),
        Err(e) => !e.to_string().is_empty(),
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    fn prop(bytes: Vec<u8>) -> bool {
        stable(ChannelKind::Inbox, &bytes)
            && stable(ChannelKind::Campaign, &bytes)
            && Decoder::new(8).inbox(&bytes).is_err()
                == (bytes.len() > 8 || BIG.inbox(&bytes).is_err())
    }
    run(5000, prop as fn(Vec<u8>) -> bool);
}

/// An object made of the real field names with values of every JSON type: reaches the
/// typed-error paths that random bytes almost never do.
#[derive(Clone, Debug)]
struct AnyObject(String);

impl Arbitrary for AnyObject {
    fn arbitrary(g: &mut Gen) -> Self {
        const KEYS: [&str; 25] = [
            "type",
            "from",
            "subject",
            "receivedAt",
            "messageId",
            "to",
            "email",
            "bounceType",
            "reason",
            "campaignId",
            "bouncedAt",
            "complainedAt",
            "unsubscribedAt",
            "campaignName",
            "total",
            "startedAt",
            "sent",
            "delivered",
            "opened",
            "completedAt",
            "bounced",
            "error",
            "failedAt",
            "cancelledAt",
            "other",
        ];
        let mut entries = Vec::new();
        if bool::arbitrary(g) {
            let ty = if pick(g, 5) == 0 {
                text(g)
            } else {
                KNOWN[pick(g, KNOWN.len())].to_owned()
            };
            entries.push(format!("\"type\":{}", serde_json::to_string(&ty).unwrap()));
        }
        for _ in 0..pick(g, 10) {
            let key = KEYS[pick(g, KEYS.len())];
            let value = match pick(g, 7) {
                0 => format!("\"{}\"", timestamp(g)),
                1 => count(g).to_string(),
                2 => format!("\"{}\"", ["hard", "soft", "x"][pick(g, 3)]),
                3 => format!("\"{}\"", campaign_id(g)),
                _ => json_value(g, 2),
            };
            entries.push(format!("\"{key}\":{value}"));
        }
        if pick(g, 4) == 0 && !entries.is_empty() {
            entries.rotate_left(1);
        }
        AnyObject(format!("{{{}}}", entries.join(",")))
    }
}

#[test]
fn arbitrary_objects_never_panic() {
    fn prop(o: AnyObject) -> bool {
        stable(ChannelKind::Inbox, o.0.as_bytes()) && stable(ChannelKind::Campaign, o.0.as_bytes())
    }
    run(5000, prop as fn(AnyObject) -> bool);
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

impl Arbitrary for Mutation {
    fn arbitrary(g: &mut Gen) -> Self {
        let interesting = [
            b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', b'-', b'.', b'e', b'0', b'n', 0xff,
            0xc3,
        ];
        let byte = if bool::arbitrary(g) {
            interesting[pick(g, interesting.len())]
        } else {
            u8::arbitrary(g)
        };
        match pick(g, 5) {
            0 => Mutation::Flip(usize::arbitrary(g), byte),
            1 => Mutation::Insert(usize::arbitrary(g), byte),
            2 => Mutation::Remove(usize::arbitrary(g)),
            3 => Mutation::Truncate(usize::arbitrary(g)),
            _ => Mutation::Duplicate(usize::arbitrary(g), usize::arbitrary(g)),
        }
    }
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match *m {
        Mutation::Flip(at, b) => {
            if let Some(x) = bytes.get_mut(at % n) {
                *x ^= b | 1;
            }
        }
        Mutation::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
        Mutation::Remove(at) => {
            if !bytes.is_empty() {
                bytes.remove(at % n);
            }
        }
        Mutation::Truncate(at) => bytes.truncate(at % n),
        Mutation::Duplicate(at, len) => {
            let start = at % n;
            let end = (start + len % 16).min(bytes.len());
            if start <= end {
                let piece = bytes[start..end].to_vec();
                bytes.splice(start..start, piece);
            }
        }
    }
}

#[test]
fn mutated_encodings_never_panic() {
    fn prop(e: AnyEvent, mutations: Vec<Mutation>) -> bool {
        let mut bytes = e.0.encode().bytes().to_vec();
        for m in mutations.iter().take(4) {
            mutate(&mut bytes, m);
        }
        stable(ChannelKind::Inbox, &bytes) && stable(ChannelKind::Campaign, &bytes)
    }
    run(5000, prop as fn(AnyEvent, Vec<Mutation>) -> bool);
}
