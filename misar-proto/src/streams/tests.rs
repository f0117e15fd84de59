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
    Streams::new(StreamsConfig::default(), crate::testing::test_epoch()).unwrap()
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
    let mut t = Streams::<u32>::new(
        StreamsConfig {
            last_event_cache: 2,
            // History would keep every stream: this test is about the cache alone.
            history: HistoryConfig::none(),
            ..StreamsConfig::default()
        },
        crate::testing::test_epoch(),
    )
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
    let mut t = Streams::<u32>::new(
        StreamsConfig {
            max_connections_per_account: 2,
            max_connections: 3,
            ..StreamsConfig::default()
        },
        crate::testing::test_epoch(),
    )
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
    let mut t = Streams::<u32>::new(config, crate::testing::test_epoch()).unwrap();
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
    let other =
        Streams::<u32>::new(StreamsConfig::default(), crate::testing::test_epoch()).unwrap();
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
    // Publishing to a stream nobody listens to keeps its history only (§2.11)...
    let d = t.publish_inbox(&a, &email("x"), now).unwrap();
    assert!(d.recipients.is_empty());
    assert_eq!(t.stream_count(), 1);
    assert_eq!(t.stream(&key).map(|s| s.history_len()), Some(1));
    // ... until it is older than the history's age bound.
    t.expire(now + Duration::from_secs(599));
    assert_eq!(t.stream_count(), 1);
    t.expire(now + Duration::from_secs(600));
    assert_eq!(t.stream_count(), 0);
    assert_eq!(t.history().bytes(), 0);
    // Without history, nothing is kept at all.
    let mut t = Streams::<u32>::new(
        StreamsConfig {
            history: HistoryConfig::none(),
            ..StreamsConfig::default()
        },
        crate::testing::test_epoch(),
    )
    .unwrap();
    let _ = t.publish_inbox(&a, &email("x"), now).unwrap();
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
            Streams::<u32>::new(config, crate::testing::test_epoch()).unwrap_err(),
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

// ----- §2.11: offsets, history, the resume decision -----

mod resume {
    use super::*;
    use crate::resume::{NotRecovered, Position, ResumeRequest};
    use crate::testing::test_epoch;

    fn at(offset: u64) -> ResumeRequest {
        ResumeRequest::From(Position {
            epoch: test_epoch(),
            offset,
        })
    }

    fn texts(events: &[EncodedEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8(e.bytes().to_vec()).unwrap())
            .collect()
    }

    /// Subscribes connection `conn` opted in with `request`; returns the start.
    fn resume(
        t: &mut Streams<u32>,
        key: &StreamKey,
        conn: u32,
        request: &ResumeRequest,
    ) -> (ConnectionId, Recovered) {
        let account = match key {
            StreamKey::Inbox(a) => a.clone(),
            StreamKey::Campaign(_) => account("a"),
        };
        let s = t
            .subscribe_with(
                &account,
                key,
                t.mark(),
                conn,
                Some(request),
                virtual_epoch(),
            )
            .unwrap();
        assert_eq!(
            s.first, None,
            "an opted-in start holds the late-joiner event"
        );
        (s.id, s.resume.unwrap())
    }

    #[test]
    fn plain_and_opted_in_subscribers_get_their_own_encoding() {
        let now = virtual_epoch();
        let mut t = table();
        let a = account("a");
        let key = StreamKey::Inbox(a.clone());
        let _plain = t.subscribe(&a, &key, t.mark(), 1, now).unwrap();
        let (_, start) = resume(&mut t, &key, 2, &ResumeRequest::New);
        assert!(start.recovery.frame.recovered);
        assert_eq!(
            start.recovery.frame.offset, 0,
            "an empty stream starts at 0"
        );
        assert!(start.replay.is_empty() && start.first.is_none());

        let d = t.publish_inbox(&a, &email("hi"), now).unwrap();
        assert_eq!(d.recipients, vec![1]);
        assert_eq!(d.resuming, vec![2]);
        // The plain bytes are §2.4's, byte for byte; the opted-in ones add the offset last.
        assert_eq!(d.event, email("hi").encode());
        let plain = String::from_utf8(d.event.bytes().to_vec()).unwrap();
        let offset = d.resumable.offset().unwrap();
        assert_eq!(
            texts(std::slice::from_ref(&d.resumable)),
            vec![format!(
                "{},\"offset\":{offset}}}",
                &plain[..plain.len() - 1]
            )]
        );
        assert_eq!(
            crate::event::decode_inbox(d.resumable.bytes()),
            Ok(email("hi"))
        );
    }

    #[test]
    fn a_position_gets_every_missed_event_in_order() {
        let now = virtual_epoch();
        let mut t = table();
        let a = account("a");
        let key = StreamKey::Inbox(a.clone());
        let (id, _) = resume(&mut t, &key, 1, &ResumeRequest::New);
        let seen = t.publish_inbox(&a, &email("1"), now).unwrap().resumable;
        let _ = t.unsubscribe(id);
        let missed: Vec<EncodedEvent> = ["2", "3", "4"]
            .iter()
            .map(|s| t.publish_inbox(&a, &email(s), now).unwrap().resumable)
            .collect();
        let (_, start) = resume(&mut t, &key, 2, &at(seen.offset().unwrap()));
        assert!(start.recovery.frame.recovered);
        assert_eq!(
            start.recovery.frame.offset,
            seen.offset().unwrap(),
            "echoed"
        );
        assert_eq!(start.replay, missed);
        assert_eq!(start.first, None);
        // At the latest offset: recovered, nothing to replay.
        let latest = missed[2].offset().unwrap();
        let (_, start) = resume(&mut t, &key, 3, &at(latest));
        assert!(start.recovery.frame.recovered && start.replay.is_empty());
        // Ahead, or another epoch: not recovered, the latest offset given.
        for (request, reason) in [
            (at(latest + 1), NotRecovered::Ahead),
            (
                ResumeRequest::From(Position {
                    epoch: crate::resume::Epoch::new("older").unwrap(),
                    offset: 1,
                }),
                NotRecovered::OtherEpoch,
            ),
        ] {
            let (_, start) = resume(&mut t, &key, 4, &request);
            assert!(!start.recovery.frame.recovered);
            assert_eq!(start.recovery.not_recovered, Some(reason));
            assert_eq!(start.recovery.frame.offset, latest);
            assert!(start.replay.is_empty());
        }
    }

    #[test]
    fn trimmed_history_is_not_recovered() {
        let now = virtual_epoch();
        let mut t = Streams::<u32>::new(
            StreamsConfig {
                history: HistoryConfig {
                    max_events: 2,
                    ..HistoryConfig::default()
                },
                ..StreamsConfig::default()
            },
            test_epoch(),
        )
        .unwrap();
        let a = account("a");
        let key = StreamKey::Inbox(a.clone());
        let offsets: Vec<u64> = (0..4)
            .map(|i| {
                t.publish_inbox(&a, &email(&i.to_string()), now)
                    .unwrap()
                    .resumable
                    .offset()
                    .unwrap()
            })
            .collect();
        // Held: the last two. A client at the second-to-last-but-one still gets both.
        let (_, start) = resume(&mut t, &key, 1, &at(offsets[1]));
        assert!(start.recovery.frame.recovered);
        assert_eq!(start.replay.len(), 2);
        let (_, start) = resume(&mut t, &key, 2, &at(offsets[0]));
        assert_eq!(start.recovery.not_recovered, Some(NotRecovered::Trimmed));
        assert_eq!(start.recovery.frame.offset, offsets[3]);
        // And by age: ten minutes later nothing is held.
        let later = now + Duration::from_secs(600);
        let s = t
            .subscribe_with(&a, &key, t.mark(), 3, Some(&at(offsets[2])), later)
            .unwrap();
        assert_eq!(
            s.resume.unwrap().recovery.not_recovered,
            Some(NotRecovered::Trimmed)
        );
    }

    #[test]
    fn the_byte_budget_drops_the_tables_oldest_first() {
        let now = virtual_epoch();
        let one = email("x").encode().len() + ",\"offset\":1".len();
        let mut t = Streams::<u32>::new(
            StreamsConfig {
                history: HistoryConfig {
                    max_bytes: 3 * one + 2,
                    ..HistoryConfig::default()
                },
                ..StreamsConfig::default()
            },
            test_epoch(),
        )
        .unwrap();
        let (a, b) = (account("a"), account("b"));
        let first_a = t.publish_inbox(&a, &email("x"), now).unwrap().resumable;
        let _ = t.publish_inbox(&b, &email("x"), now).unwrap();
        let _ = t.publish_inbox(&a, &email("x"), now).unwrap();
        assert_eq!(
            t.stream(&StreamKey::Inbox(a.clone()))
                .unwrap()
                .history_len(),
            2
        );
        // The fourth event crosses the budget: a's first (the table's oldest) goes.
        let _ = t.publish_inbox(&b, &email("x"), now).unwrap();
        assert!(t.history().bytes() <= 3 * one + 2);
        let key = StreamKey::Inbox(a.clone());
        assert_eq!(t.stream(&key).unwrap().history_len(), 1);
        assert_eq!(
            t.stream(&StreamKey::Inbox(b.clone()))
                .unwrap()
                .history_len(),
            2
        );
        assert_eq!(
            t.stream(&key).unwrap().lost_through(),
            first_a.offset().unwrap()
        );
    }

    #[test]
    fn a_dropped_stream_still_resumes_at_its_latest_offset() {
        let now = virtual_epoch();
        let mut t = Streams::<u32>::new(
            StreamsConfig {
                history: HistoryConfig {
                    max_events: 0,
                    remembered_streams: 1,
                    ..HistoryConfig::default()
                },
                ..StreamsConfig::default()
            },
            test_epoch(),
        )
        .unwrap();
        let a = account("a");
        let ka = StreamKey::Inbox(a.clone());
        let (id, _) = resume(&mut t, &ka, 1, &ResumeRequest::New);
        let seen = t.publish_inbox(&a, &email("x"), now).unwrap().resumable;
        let _ = t.unsubscribe(id);
        assert_eq!(t.stream_count(), 0, "nothing kept but the latest offset");
        let (id, start) = resume(&mut t, &ka, 2, &at(seen.offset().unwrap()));
        assert!(start.recovery.frame.recovered);
        let _ = t.unsubscribe(id);
    }

    #[test]
    fn a_forgotten_stream_starts_at_the_horizon() {
        let now = virtual_epoch();
        let mut t = Streams::<u32>::new(
            StreamsConfig {
                history: HistoryConfig {
                    max_events: 0,
                    remembered_streams: 1,
                    ..HistoryConfig::default()
                },
                ..StreamsConfig::default()
            },
            test_epoch(),
        )
        .unwrap();
        // Nobody listens and nothing is held: only each stream's latest offset is kept, for
        // one stream at most.
        let offsets: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|a| {
                t.publish_inbox(&account(a), &email("x"), now)
                    .unwrap()
                    .resumable
                    .offset()
                    .unwrap()
            })
            .collect();
        assert_eq!(t.history().remembered_streams(), 1);
        assert_eq!(t.stream_count(), 0);
        // a and b were forgotten: a's new stream starts at b's offset, and a's position
        // cannot be vouched for.
        let (_, start) = resume(&mut t, &StreamKey::Inbox(account("a")), 1, &at(offsets[0]));
        assert_eq!(start.recovery.not_recovered, Some(NotRecovered::Trimmed));
        assert_eq!(start.recovery.frame.offset, offsets[1]);
        // c is remembered.
        let (_, start) = resume(&mut t, &StreamKey::Inbox(account("c")), 2, &at(offsets[2]));
        assert!(start.recovery.frame.recovered);
        // A position below an event published while nobody listened is not at the latest.
        let (_, start) = resume(
            &mut t,
            &StreamKey::Inbox(account("c")),
            3,
            &at(offsets[2] - 1),
        );
        assert_eq!(start.recovery.not_recovered, Some(NotRecovered::Trimmed));
    }

    #[test]
    fn a_finished_campaign_ends_with_its_terminal_event() {
        let now = virtual_epoch();
        let mut t = table();
        let c = campaign("c1");
        let key = StreamKey::Campaign(c.clone());
        let p1 = t
            .publish_campaign(&c, &progress("c1", 1), now)
            .unwrap()
            .resumable;
        let _ = t.publish_campaign(&c, &progress("c1", 2), now).unwrap();
        let p3 = t
            .publish_campaign(&c, &progress("c1", 3), now)
            .unwrap()
            .resumable;
        // `new`: the latest progress first, in its opted-in encoding.
        let (_, start) = resume(&mut t, &key, 1, &ResumeRequest::New);
        assert_eq!(start.first, Some(p3.clone()));
        assert_eq!(start.recovery.frame.offset, p3.offset().unwrap());
        let done = t
            .publish_campaign(&c, &completed("c1"), now)
            .unwrap()
            .resumable;
        // From p1: the replay (the session leaves the superseded progress out), ending
        // with the terminal event.
        let (_, start) = resume(&mut t, &key, 2, &at(p1.offset().unwrap()));
        assert_eq!(start.replay.last(), Some(&done));
        assert_eq!(start.first, None);
        // At the terminal event already: it is sent again, so the channel still ends.
        let (_, start) = resume(&mut t, &key, 3, &at(done.offset().unwrap()));
        assert!(start.recovery.frame.recovered && start.replay.is_empty());
        assert_eq!(start.first, Some(done));
    }

    #[test]
    fn a_restart_follows_the_brokers_new_epoch() {
        let now = virtual_epoch();
        let c = campaign("c1");
        let key = StreamKey::Campaign(c.clone());
        let mut stream: Stream<u32> = Stream::new(key, 0);
        let history = crate::streams::HistoryConfig::default();
        let first = Epoch::new("e1").unwrap();
        assert_eq!(stream.epoch(), None);
        let _ = stream.restart(first.clone());
        assert_eq!(stream.epoch(), Some(&first));
        let _ = stream.join_as(ConnectionId(1), 1, true);
        let event = validate_campaign(&c, &progress("c1", 1), &PublishRules::default()).unwrap();
        let _ = stream.publish(event.clone(), 7, now, &history).unwrap();
        assert!(matches!(
            stream.publish(event.clone(), 3, now, &history),
            Err(PublishError::StaleOffset { .. })
        ));
        // The broker's history is gone: its offsets start again, in a new epoch.
        let second = Epoch::new("e2").unwrap();
        let change = stream.restart(second.clone());
        assert!(change.freed > 0, "the old epoch's history is dropped");
        assert_eq!((stream.latest(), stream.lost_through()), (0, 0));
        assert_eq!(stream.history_len(), 0);
        assert_eq!(stream.epoch(), Some(&second));
        assert_eq!(stream.resuming().len(), 1, "subscribers stay");
        assert!(stream.cached().is_some(), "the late-joiner event stays");
        let fanout = stream.publish(event, 1, now, &history).unwrap();
        assert_eq!(fanout.resumable.offset(), Some(1));
    }
}
