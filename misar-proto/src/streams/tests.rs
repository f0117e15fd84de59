//! Unit tests of the table's rules (the quickcheck model is in `tests/streams_props.rs`).

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::event::{
    CampaignEvent, Cancelled, Completed, EmailReceived, EventClass, Failed, InboxEvent, Progress,
    Timestamp, UnknownEvent,
};
use crate::testing::virtual_epoch;

fn campaign(id: &str) -> CampaignId {
    CampaignId::new(id).unwrap()
}

fn account(id: &str) -> AccountId {
    AccountId::from(id)
}

fn progress(id: &str, sent: u64) -> CampaignEvent {
    CampaignEvent::Progress(Progress::new(campaign(id), sent, 100, sent, 0, 0))
}

fn completed(id: &str) -> CampaignEvent {
    CampaignEvent::Completed(Completed::new(campaign(id), 100, 99, 1, 10))
}

fn email(subject: &str) -> InboxEvent {
    InboxEvent::EmailReceived(EmailReceived::new(
        "ana@example.com",
        subject,
        Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
    ))
}

fn table() -> Streams<u32> {
    Streams::new(StreamsConfig::default()).unwrap()
}

#[test]
fn terminal_sticks_and_finished_refuses() {
    let now = virtual_epoch();
    let mut t = table();
    let c = campaign("c1");
    let key = StreamKey::Campaign(c.clone());
    let _ = t.subscribe(&account("a"), &key, t.mark(), 1, now).unwrap();
    let done = t.publish_campaign(&c, &completed("c1"), now).unwrap();
    assert_eq!(done.recipients, vec![1]);
    assert_eq!(done.event.class(), EventClass::Terminal);
    // The worker race of issue 12: a stray progress after the terminal event.
    assert_eq!(
        t.publish_campaign(&c, &progress("c1", 50), now),
        Err(PublishError::Finished {
            campaign: c.clone()
        })
    );
    // Another terminal event does not replace the first either.
    let cancelled = CampaignEvent::Cancelled(Cancelled::new(campaign("c1")));
    assert!(matches!(
        t.publish_campaign(&c, &cancelled, now),
        Err(PublishError::Finished { .. })
    ));
    // A late joiner gets the terminal event, even with no subscriber left in between.
    let _ = t.unsubscribe(ConnectionId(0));
    let late = t.subscribe(&account("b"), &key, t.mark(), 2, now).unwrap();
    assert_eq!(late.first, Some(done.event));
}

#[test]
fn late_joiner_gets_the_latest_progress_even_with_no_subscriber() {
    let now = virtual_epoch();
    let mut t = table();
    let c = campaign("c1");
    let _ = t.publish_campaign(&c, &progress("c1", 1), now).unwrap();
    let latest = t.publish_campaign(&c, &progress("c1", 2), now).unwrap();
    assert!(latest.recipients.is_empty());
    let key = StreamKey::Campaign(c);
    let joined = t.subscribe(&account("a"), &key, t.mark(), 7, now).unwrap();
    assert_eq!(joined.first, Some(latest.event));
    assert!(joined.opened);
    // Inbox streams keep nothing.
    let inbox = StreamKey::Inbox(account("a"));
    let _ = t.publish_inbox(&account("a"), &email("x"), now).unwrap();
    let joined = t
        .subscribe(&account("a"), &inbox, t.mark(), 8, now)
        .unwrap();
    assert_eq!(joined.first, None);
}

#[test]
fn cache_is_bounded_least_recently_updated_first() {
    let now = virtual_epoch();
    let mut t = Streams::<u32>::new(StreamsConfig {
        last_event_cache: 2,
        ..StreamsConfig::default()
    })
    .unwrap();
    for id in ["c1", "c2", "c1", "c3"] {
        let _ = t
            .publish_campaign(&campaign(id), &progress(id, 1), now)
            .unwrap();
    }
    assert_eq!(t.cached_campaigns(), 2);
    assert!(t.stream(&StreamKey::Campaign(campaign("c2"))).is_none());
    assert!(t.stream(&StreamKey::Campaign(campaign("c1"))).is_some());
    assert_eq!(t.stream_count(), 2);
}

#[test]
fn limits_are_exact() {
    let now = virtual_epoch();
    let mut t = Streams::<u32>::new(StreamsConfig {
        max_connections_per_account: 2,
        max_connections: 3,
        ..StreamsConfig::default()
    })
    .unwrap();
    let inbox = |a: &str| StreamKey::Inbox(account(a));
    let a1 = t
        .subscribe(&account("a"), &inbox("a"), t.mark(), 1, now)
        .unwrap();
    let _ = t
        .subscribe(&account("a"), &inbox("a"), t.mark(), 2, now)
        .unwrap();
    assert_eq!(
        t.subscribe(&account("a"), &inbox("a"), t.mark(), 3, now),
        Err(SubscribeError::TooManyForAccount { limit: 2 })
    );
    let _ = t
        .subscribe(&account("b"), &inbox("b"), t.mark(), 4, now)
        .unwrap();
    let full = t.subscribe(&account("c"), &inbox("c"), t.mark(), 5, now);
    assert!(matches!(
        full,
        Err(SubscribeError::TooManyConnections { limit: 3, .. })
    ));
    assert_eq!(
        full.unwrap_err().retry_after(),
        Some(Duration::from_secs(5))
    );
    // Leaving frees a slot, exactly once.
    assert!(t.unsubscribe(a1.id).removed);
    assert!(!t.unsubscribe(a1.id).removed);
    assert_eq!(t.registry().total(), 2);
    let _ = t
        .subscribe(&account("c"), &inbox("c"), t.mark(), 6, now)
        .unwrap();
    // Shutdown refuses everything after it and lists everyone.
    let mut everyone = t.shutdown();
    everyone.sort();
    assert_eq!(everyone, vec![2, 4, 6]);
    assert!(matches!(
        t.subscribe(&account("d"), &inbox("d"), t.mark(), 7, now),
        Err(SubscribeError::ShuttingDown { .. })
    ));
}

#[test]
fn revocation_between_hooks_and_subscribe_is_not_lost() {
    let now = virtual_epoch();
    let mut t = table();
    let a = account("a");
    let c = campaign("c1");
    // The hooks of two handshakes run...
    let mark = t.mark();
    // ... the key and the campaign are revoked meanwhile (nobody connected yet) ...
    assert!(t.revoke_account(&a, now).is_empty());
    assert!(t.revoke_campaign(&c, now).is_empty());
    // ... and then they subscribe: both are closed at once, the account's code winning.
    let inbox = t
        .subscribe(&a, &StreamKey::Inbox(a.clone()), mark, 1, now)
        .unwrap();
    assert_eq!(inbox.revoked, Some(CloseCode::Unauthorized));
    let other = account("b");
    let camp = t
        .subscribe(&other, &StreamKey::Campaign(c.clone()), mark, 2, now)
        .unwrap();
    assert_eq!(camp.revoked, Some(CloseCode::Forbidden));
    // A handshake that started after the revocations is served.
    let fresh = t
        .subscribe(&a, &StreamKey::Inbox(a.clone()), t.mark(), 3, now)
        .unwrap();
    assert_eq!(fresh.revoked, None);
    // Other accounts are not affected by an old mark.
    let bystander = account("z");
    let ok = t
        .subscribe(
            &bystander,
            &StreamKey::Inbox(bystander.clone()),
            mark,
            4,
            now,
        )
        .unwrap();
    assert_eq!(ok.revoked, None);
    // Revocation reaches connected subscribers.
    assert_eq!(t.revoke_account(&a, now), vec![1, 3]);
    assert_eq!(t.revoke_campaign(&c, now), vec![2]);
}

#[test]
fn revocation_memory_is_bounded_and_old_marks_are_refused() {
    let now = virtual_epoch();
    let config = StreamsConfig {
        revocation_memory: Duration::from_secs(60),
        max_remembered_revocations: 3,
        ..StreamsConfig::default()
    };
    let mut t = Streams::<u32>::new(config).unwrap();
    let old = t.mark();
    for i in 0..10 {
        let _ = t.revoke_account(&account(&format!("r{i}")), now);
    }
    assert_eq!(t.registry().remembered_revocations(), 3);
    let a = account("a");
    let stale = t.subscribe(&a, &StreamKey::Inbox(a.clone()), old, 1, now);
    assert!(matches!(stale, Err(SubscribeError::StaleHandshake { .. })));
    // Within the count bound and the memory, a mark is judged exactly.
    let recent = t.mark();
    let _ = t.revoke_account(&account("r9"), now);
    let ok = t
        .subscribe(&a, &StreamKey::Inbox(a.clone()), recent, 2, now)
        .unwrap();
    assert_eq!(ok.revoked, None);
    // After the memory, everything is forgotten.
    let later = now + Duration::from_secs(61);
    let _ = t
        .subscribe(&a, &StreamKey::Inbox(a.clone()), t.mark(), 3, later)
        .unwrap();
    assert_eq!(t.registry().remembered_revocations(), 0);
    // A mark of another registry is never trusted.
    let other = Streams::<u32>::new(StreamsConfig::default()).unwrap();
    let foreign = Registry::<u32>::with_id(&StreamsConfig::default(), 9).mark();
    let _ = other;
    assert!(matches!(
        t.subscribe(&a, &StreamKey::Inbox(a.clone()), foreign, 4, later),
        Err(SubscribeError::StaleHandshake { .. })
    ));
}

#[test]
fn streams_are_forgotten_when_idle() {
    let now = virtual_epoch();
    let mut t = table();
    let a = account("a");
    let key = StreamKey::Inbox(a.clone());
    let s = t.subscribe(&a, &key, t.mark(), 1, now).unwrap();
    assert!(s.opened);
    let second = t.subscribe(&a, &key, t.mark(), 2, now).unwrap();
    assert!(!second.opened);
    assert!(!t.unsubscribe(s.id).closed);
    assert!(t.unsubscribe(second.id).closed);
    assert_eq!(t.stream_count(), 0);
    // Publishing to a stream nobody listens to keeps nothing.
    let d = t.publish_inbox(&a, &email("x"), now).unwrap();
    assert!(d.recipients.is_empty());
    assert_eq!(t.stream_count(), 0);
}

#[test]
fn publish_validation() {
    let rules = PublishRules::default();
    let c = campaign("c1");
    assert!(matches!(
        validate_campaign(&c, &progress("c2", 1), &rules),
        Err(PublishError::CampaignMismatch { found, .. }) if found.as_str() == "c2"
    ));
    let unknown = CampaignEvent::Unknown(UnknownEvent {
        kind: "paused".into(),
        raw: Bytes::from_static(br#"{"type":"paused","campaignId":"c1"}"#),
    });
    assert!(matches!(
        validate_campaign(&c, &unknown, &rules),
        Err(PublishError::UnknownType { kind }) if kind == "paused"
    ));
    // Size: the encoding is bounded; exactly at the bound passes.
    let encoded = email("x").encode();
    let exact = PublishRules {
        max_event_bytes: encoded.len(),
    };
    assert_eq!(validate_inbox(&email("x"), &exact), Ok(encoded.clone()));
    let below = PublishRules {
        max_event_bytes: encoded.len() - 1,
    };
    assert_eq!(
        validate_inbox(&email("x"), &below),
        Err(PublishError::TooLarge {
            len: encoded.len(),
            max: encoded.len() - 1
        })
    );
    let big = email(&"x".repeat(DEFAULT_MAX_EVENT_BYTES));
    assert!(matches!(
        validate_inbox(&big, &rules),
        Err(PublishError::TooLarge { .. })
    ));
    // The table applies the same rules.
    let mut t = table();
    assert!(matches!(
        t.publish_inbox(&account("a"), &big, virtual_epoch()),
        Err(PublishError::TooLarge { .. })
    ));
}

#[test]
fn relayed_events_are_checked_once_and_shared() {
    let rules = PublishRules::default();
    let c = campaign("c1");
    let key = StreamKey::Campaign(c.clone());
    let failed = CampaignEvent::Failed(Failed::new(campaign("c1"), "smtp")).encode();
    let got = validate_relayed(&key, failed.bytes().clone(), &rules).unwrap();
    assert_eq!(got, failed);
    assert_eq!(got.bytes().as_ptr(), failed.bytes().as_ptr(), "no copy");
    assert_eq!(got.class(), EventClass::Terminal);
    let p = progress("c1", 3).encode();
    assert_eq!(
        validate_relayed(&key, p.bytes().clone(), &rules)
            .unwrap()
            .class(),
        EventClass::Progress
    );
    // About another campaign.
    let other = progress("c2", 3).encode();
    assert!(matches!(
        validate_relayed(&key, other.bytes().clone(), &rules),
        Err(PublishError::CampaignMismatch { .. })
    ));
    // A newer type is relayed unchanged, as an ordinary event, on either channel.
    let newer = Bytes::from_static(br#"{"type":"paused","campaignId":"c1","until":"later"}"#);
    let got = validate_relayed(&key, newer.clone(), &rules).unwrap();
    assert_eq!((got.bytes(), got.class()), (&newer, EventClass::Ordinary));
    let inbox = StreamKey::Inbox(account("a"));
    let newer = Bytes::from_static(br#"{"type":"calendar_invite","at":1}"#);
    assert_eq!(
        validate_relayed(&inbox, newer.clone(), &rules)
            .unwrap()
            .bytes(),
        &newer
    );
    // A campaign event on the inbox stream, and the reverse.
    assert!(matches!(
        validate_relayed(&inbox, p.bytes().clone(), &rules),
        Err(PublishError::Malformed(_))
    ));
    assert!(matches!(
        validate_relayed(&key, email("x").encode().bytes().clone(), &rules),
        Err(PublishError::Malformed(_))
    ));
    // Not an object with a string type, not compact, too large.
    for bad in [
        &br#"{"type":1}"#[..],
        br#"{"type":"paused""#,
        br#"{"type":}"#,
        br#"{"type":"progress","campaignId":"c1"}"#,
    ] {
        assert!(
            matches!(
                validate_relayed(&key, Bytes::copy_from_slice(bad), &rules),
                Err(PublishError::Malformed(_) | PublishError::NotCompact)
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    for not_compact in [
        &br#" {"type":"cancelled","campaignId":"c1"}"#[..],
        br#"{"type":"cancelled","campaignId":"c1"} "#,
        br#"{"campaignId":"c1","type":"cancelled"}"#,
        b"",
    ] {
        assert_eq!(
            validate_relayed(&key, Bytes::copy_from_slice(not_compact), &rules),
            Err(PublishError::NotCompact)
        );
    }
    let small = PublishRules { max_event_bytes: 8 };
    assert_eq!(
        validate_relayed(&key, p.bytes().clone(), &small),
        Err(PublishError::TooLarge {
            len: p.len(),
            max: 8
        })
    );
}

#[test]
fn config_is_validated() {
    for (config, field) in [
        (
            StreamsConfig {
                max_connections: 0,
                ..StreamsConfig::default()
            },
            "max_connections",
        ),
        (
            StreamsConfig {
                max_connections_per_account: 0,
                ..StreamsConfig::default()
            },
            "max_connections_per_account",
        ),
    ] {
        assert_eq!(
            Streams::<u32>::new(config).unwrap_err(),
            StreamsConfigError::NoConnections { field }
        );
    }
    let no_events = StreamsConfig {
        publish: PublishRules { max_event_bytes: 0 },
        ..StreamsConfig::default()
    };
    assert_eq!(no_events.validate(), Err(StreamsConfigError::NoEvents));
    let no_memory = StreamsConfig {
        revocation_memory: Duration::ZERO,
        ..StreamsConfig::default()
    };
    assert!(matches!(
        no_memory.validate(),
        Err(StreamsConfigError::NoRevocationMemory { .. })
    ));
}
