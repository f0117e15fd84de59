//! Missed-event recovery (§2.11) end to end, in memory: the axum router on a loopback port and
//! tokio-tungstenite clients that send `Misar-Resume` by hand (so what is checked is the wire,
//! not our client's reading of it).
//!
//! - 1,000 events published while the client's connection is killed (TCP reset) at 20
//!   pseudo-random points: every event arrives once, in order;
//! - a client that does not opt in gets the §2.4 bytes, byte for byte; an opted-in one the same
//!   bytes with `,"offset":N` before the closing brace;
//! - `recovered: false` for another epoch, a trimmed offset and an offset ahead, then live
//!   events;
//! - every bad value of §2.11 → HTTP 400 `bad_request`, before authentication, never an upgrade.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::raw::{Ws, bearer, ws_connect, ws_next_text, ws_refusal};
use common::*;
use misar_proto::streams::HistoryConfig;
use misar_proto_tokio::hub::HubConfig;
use serde_json::Value;
use tokio_tungstenite::MaybeTlsStream;

const INBOX: &str = "/mail/ws/inbox";

async fn connect_resuming(server: &Server, value: &str) -> Ws {
    let authorization = bearer(ALICE_KEY);
    let headers = [
        ("authorization", authorization.as_str()),
        ("misar-resume", value),
    ];
    match ws_connect(server.addr, INBOX, &headers).await {
        Ok(ws) => ws,
        Err(refusal) => panic!("refused with {}", refusal.status),
    }
}

/// The first frame of an opted-in connection, checked for its shape: (epoch, offset, recovered).
async fn resume_frame(ws: &mut Ws) -> (String, u64, bool) {
    let text = ws_next_text(ws).await;
    let value: Value = serde_json::from_str(&text).expect("JSON");
    let object = value.as_object().expect("an object");
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 4, "{text}");
    assert_eq!(value["type"], "resume", "{text}");
    (
        value["epoch"].as_str().expect("epoch").to_owned(),
        value["offset"].as_u64().expect("offset"),
        value["recovered"].as_bool().expect("recovered"),
    )
}

/// An event frame of an opted-in connection: its sequence number (`subject` is `tag#seq`) and
/// its offset, which must be the last member.
fn event_of(text: &str) -> (u64, u64) {
    let value: Value = serde_json::from_str(text).expect("JSON");
    let offset = value["offset"].as_u64().expect("an offset");
    assert!(text.ends_with(&format!(",\"offset\":{offset}}}")), "{text}");
    let subject = value["subject"].as_str().expect("a subject");
    let seq = subject.rsplit_once('#').expect("tag#seq").1;
    (seq.parse().expect("a number"), offset)
}

/// Ends the connection the way a crashed client does: a TCP reset, no close frame.
fn kill(ws: Ws) {
    if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
        let _ = stream.set_zero_linger();
    }
    drop(ws);
}

/// A small deterministic generator (splitmix64), so a failure names its kill points.
fn kill_points(seed: u64, count: usize, below: u64) -> Vec<u64> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut points = std::collections::BTreeSet::new();
    while points.len() < count {
        points.insert(1 + next() % (below - 1));
    }
    points.into_iter().collect()
}

#[tokio::test]
async fn a_thousand_events_across_twenty_killed_connections_arrive_once_in_order() {
    const EVENTS: u64 = 1_000;
    // The publisher never runs more than this far ahead of what the client got: every gap
    // stays well inside the default history (256 events) whatever the scheduling.
    const LEAD: u64 = 100;
    let server = Server::start().await;
    let seed = 0x5eed_2026;
    let kills = kill_points(seed, 20, EVENTS);

    let received = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    // Publishing starts once the client's first connection is subscribed (`new`: what came
    // before is not owed).
    let (subscribed, start) = tokio::sync::oneshot::channel::<()>();
    let mut subscribed = Some(subscribed);
    let publisher = tokio::spawn({
        let hub = server.hub.clone();
        let received = Arc::clone(&received);
        let published = Arc::clone(&published);
        async move {
            let _ = start.await;
            for seq in 0..EVENTS {
                while seq >= received.load(Ordering::Acquire) + LEAD {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                hub.publish_inbox(&acct(ALICE), &email("r", seq))
                    .await
                    .expect("published");
                published.store(seq + 1, Ordering::Release);
                if seq % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    });

    let mut got: Vec<u64> = Vec::with_capacity(EVENTS as usize);
    let mut position: Option<(String, u64)> = None;
    let mut reconnects = 0;
    let mut pending_kills = kills.iter().copied().peekable();
    within("1,000 events across 20 kills", async {
        while (got.len() as u64) < EVENTS {
            let value = match &position {
                Some((epoch, offset)) => format!("{epoch}:{offset}"),
                None => "new".to_owned(),
            };
            let mut ws = connect_resuming(&server, &value).await;
            let (epoch, offset, recovered) = resume_frame(&mut ws).await;
            assert!(
                recovered,
                "reconnect {reconnects} from {value} was not recovered"
            );
            if let Some((old_epoch, old_offset)) = &position {
                assert_eq!(&epoch, old_epoch, "the epoch changed without a restart");
                assert_eq!(
                    offset, *old_offset,
                    "recovered: the client's offset is echoed"
                );
            }
            position = Some((epoch.clone(), offset));
            if let Some(subscribed) = subscribed.take() {
                let _ = subscribed.send(());
            }
            loop {
                let text = ws_next_text(&mut ws).await;
                let (seq, offset) = event_of(&text);
                if let Some((_, last)) = &position {
                    assert!(offset > *last, "offsets increase: {offset} after {last}");
                }
                got.push(seq);
                position = Some((epoch.clone(), offset));
                received.store(got.len() as u64, Ordering::Release);
                if got.len() as u64 == EVENTS {
                    break;
                }
                if pending_kills.peek() == Some(&(got.len() as u64)) {
                    pending_kills.next();
                    kill(ws);
                    reconnects += 1;
                    // Stay away until events were published meanwhile: every reconnect has
                    // something to recover.
                    let owed = (got.len() as u64 + 5).min(EVENTS);
                    while published.load(Ordering::Acquire) < owed {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    break;
                }
            }
        }
    })
    .await;
    publisher.await.expect("the publisher finished");
    assert_eq!(reconnects, 20, "kill points {kills:?}");
    let expected: Vec<u64> = (0..EVENTS).collect();
    let lost = expected.iter().filter(|seq| !got.contains(seq)).count();
    assert_eq!(lost, 0, "lost events (seed {seed:#x})");
    assert_eq!(got, expected, "duplicated or out of order (seed {seed:#x})");
    assert!(server.hub.stats().recovered >= 20);
    assert_eq!(server.hub.stats().not_recovered, 0);
}

#[tokio::test]
async fn a_client_that_does_not_opt_in_gets_the_plain_bytes() {
    let server = Server::start().await;
    let authorization = bearer(ALICE_KEY);
    let mut plain = ws_connect(
        server.addr,
        INBOX,
        &[("authorization", authorization.as_str())],
    )
    .await
    .expect("upgraded");
    let mut opted = connect_resuming(&server, "new").await;
    let (_, start, recovered) = resume_frame(&mut opted).await;
    assert!(recovered);
    server.wait_connections(2).await;

    let events = [email("p", 1), email("p", 2)];
    for event in &events {
        server
            .hub
            .publish_inbox(&acct(ALICE), event)
            .await
            .expect("published");
    }
    let mut last = start;
    for event in &events {
        let expected = String::from_utf8(event.encode().bytes().to_vec()).expect("UTF-8");
        assert_eq!(
            ws_next_text(&mut plain).await,
            expected,
            "§2.4, byte for byte"
        );
        let text = ws_next_text(&mut opted).await;
        let (_, offset) = event_of(&text);
        assert!(offset > last);
        last = offset;
        let without = text.replace(&format!(",\"offset\":{offset}}}"), "}");
        assert_eq!(
            without, expected,
            "the opted-in frame is the plain one plus its offset"
        );
    }
}

#[tokio::test]
async fn another_epoch_a_trimmed_offset_and_an_offset_ahead_are_not_recovered() {
    let server = Server::start_with(
        ServerOptions {
            hub: HubConfig {
                history: HistoryConfig {
                    max_events: 4,
                    ..HistoryConfig::default()
                },
                ..ServerOptions::default().hub
            },
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;
    let epoch = server.hub.epoch().to_string();
    // Ten events with no subscriber: the history keeps the last four.
    let mut first = connect_resuming(&server, "new").await;
    let (_, zero, _) = resume_frame(&mut first).await;
    let mut offsets = Vec::new();
    for seq in 0..10 {
        server
            .hub
            .publish_inbox(&acct(ALICE), &email("t", seq))
            .await
            .expect("published");
        offsets.push(event_of(&ws_next_text(&mut first).await).1);
    }
    assert!(offsets[0] > zero);
    let mut latest = *offsets.last().expect("ten offsets");
    drop(first);
    server.wait_connections(0).await;

    // A position whose successors are all held is recovered: the last four are.
    let mut ws = connect_resuming(&server, &format!("{epoch}:{}", offsets[6])).await;
    let (_, echoed, recovered) = resume_frame(&mut ws).await;
    assert!(recovered);
    assert_eq!(echoed, offsets[6]);
    for seq in 7..10 {
        assert_eq!(
            event_of(&ws_next_text(&mut ws).await),
            (seq, offsets[seq as usize])
        );
    }
    drop(ws);
    server.wait_connections(0).await;

    let other_epoch = format!("x{}", &epoch[..epoch.len().min(30)]);
    let cases = [
        ("another epoch", format!("{other_epoch}:{}", offsets[8])),
        ("a trimmed offset", format!("{epoch}:{}", offsets[1])),
        ("an offset ahead", format!("{epoch}:{}", latest + 1_000)),
    ];
    for (what, value) in cases {
        let mut ws = connect_resuming(&server, &value).await;
        let frame = resume_frame(&mut ws).await;
        assert_eq!(frame, (epoch.clone(), latest, false), "{what}: {value}");
        // Then live events, as for any late joiner.
        server.wait_connections(1).await;
        server
            .hub
            .publish_inbox(&acct(ALICE), &email("live", 0))
            .await
            .expect("published");
        let (seq, offset) = event_of(&ws_next_text(&mut ws).await);
        assert_eq!(seq, 0, "{what}");
        assert!(offset > latest, "{what}");
        // The live event is the latest of the next case.
        latest = offset;
        drop(ws);
        server.wait_connections(0).await;
    }
    assert_eq!(server.hub.stats().not_recovered, 3);
}

#[tokio::test]
async fn every_bad_resume_value_is_a_400_before_authentication() {
    let server = Server::start().await;
    let authorization = bearer(ALICE_KEY);
    let too_long = format!("{}:1", "e".repeat(33));
    let bad_values = [
        "",
        "NEW",
        "new ",
        "e1",
        "e1:",
        ":5",
        "e1:-1",
        "e1:+1",
        "e1:01",
        "e1:1.5",
        "e1:18446744073709551616",
        "e 1:5",
        "e1:5:6",
        "é1:5",
        too_long.as_str(),
    ];
    let keys_checked = server.auth.key_checks();
    for value in bad_values {
        let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let query = format!("{INBOX}?resume={encoded}");
        // In the header (when it can be one), in the query, with and without a key.
        let mut attempts: Vec<(String, Vec<(&str, &str)>)> = vec![
            (
                query.clone(),
                vec![("authorization", authorization.as_str())],
            ),
            (query.clone(), vec![]),
        ];
        if http::HeaderValue::from_str(value).is_ok() && value.trim() == value {
            attempts.push((
                INBOX.to_owned(),
                vec![
                    ("authorization", authorization.as_str()),
                    ("misar-resume", value),
                ],
            ));
        }
        for (path, headers) in attempts {
            let refusal = ws_refusal(server.addr, &path, &headers).await;
            assert_eq!(refusal.status, 400, "{value:?} at {path} {headers:?}");
            let body = refusal.json();
            assert_eq!(body["error"], "bad_request", "{value:?}");
            assert!(body["message"].is_string(), "{value:?}");
        }
    }
    // Ambiguous: two values, or both places disagreeing.
    let ambiguous: [(String, Vec<(&str, &str)>); 3] = [
        (
            format!("{INBOX}?resume=new&resume=new"),
            vec![("authorization", authorization.as_str())],
        ),
        (
            INBOX.to_owned(),
            vec![
                ("authorization", authorization.as_str()),
                ("misar-resume", "new"),
                ("misar-resume", "e1:5"),
            ],
        ),
        (
            format!("{INBOX}?resume=e1%3A5"),
            vec![
                ("authorization", authorization.as_str()),
                ("misar-resume", "e1:6"),
            ],
        ),
    ];
    for (path, headers) in ambiguous {
        let refusal = ws_refusal(server.addr, &path, &headers).await;
        assert_eq!(refusal.status, 400, "{path} {headers:?}");
        assert_eq!(refusal.json()["error"], "bad_request");
    }
    assert_eq!(
        server.auth.key_checks(),
        keys_checked,
        "a bad resume value is refused before the key is looked at"
    );

    // Both places agreeing is one value; `new` in the query is what browsers send.
    let path = format!("{INBOX}?resume=new");
    for headers in [
        vec![
            ("authorization", authorization.as_str()),
            ("misar-resume", "new"),
        ],
        vec![("authorization", authorization.as_str())],
    ] {
        let mut ws = ws_connect(server.addr, &path, &headers)
            .await
            .expect("upgraded");
        let (_, _, recovered) = resume_frame(&mut ws).await;
        assert!(recovered);
    }
}
