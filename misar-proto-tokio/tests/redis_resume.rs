//! §2.11 over Redis, end to end: two nodes (each a hub + Redis broker + WebSocket server on
//! loopback) on a real `redis-server` started by each test, and a raw WebSocket client that
//! opts in with the `Misar-Resume` header. Without `redis-server` installed these tests print
//! a notice and pass, unless `MISAR_REQUIRE_SERVICES=1`.

mod redis_node;
mod redis_util;
#[path = "server_support.rs"]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use misar_proto::streams::HistoryConfig;
use misar_proto_tokio::hub::redis::RedisConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use redis_node::{Node, connect_resume, events, node_with, resume_frame, split_offset};
use redis_util::{RedisServer, available};
use support::*;

fn config(max_events: usize) -> RedisConfig {
    RedisConfig {
        history: HistoryConfig {
            max_events,
            ..HistoryConfig::default()
        },
        ..redis_node::config()
    }
}

async fn node(redis: &RedisServer, max_events: usize) -> Node {
    node_with(redis, config(max_events)).await
}

/// Reads until the connection ends; returns the close code and any texts before it.
async fn until_closed(client: &mut Client) -> (Vec<String>, Option<u16>) {
    let mut texts = Vec::new();
    let mut code = None;
    // On to the end of the stream, so the client's answer to the close is sent.
    while let Some(message) = client.next().await {
        match message {
            Ok(WsMessage::Text(text)) => texts.push(text.as_str().to_owned()),
            Ok(WsMessage::Close(frame)) => code = frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (texts, code)
}

// ----- resume on any node -----

#[tokio::test]
async fn a_client_switching_nodes_and_surviving_a_node_restart_loses_nothing() {
    if !available("resume across nodes") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let mut nodes = vec![node(&redis, 256).await, node(&redis, 256).await];
        let alice = account("alice");
        let mut published: Vec<String> = Vec::new();
        let mut seen: Vec<(String, u64)> = Vec::new();
        let mut n = 0;

        let mut client =
            connect_resume(nodes[0].server.addr, "/mail/ws/inbox", "alice", "new").await;
        let frame = resume_frame(&mut client).await;
        assert!(frame.recovered);
        assert_eq!(frame.offset, 0, "an empty stream starts at 0");
        let epoch = frame.epoch.clone();
        let mut position = frame.position();
        for round in 0..8 {
            // The client is on nodes[0]. Live events, published from the other node.
            for _ in 0..3 {
                let event = email(n, 0);
                n += 1;
                nodes[1].hub.publish_inbox(&alice, &event).await.unwrap();
                published.push(inbox_text(&event));
            }
            let live = events(&mut client, 3).await;
            position.offset = live.last().unwrap().1;
            seen.extend(live);
            if round == 4 {
                // The client's node restarts (a deploy: 1001 to everyone); a new one takes
                // its place on the same Redis.
                let old = nodes.remove(0);
                let (shutdown, (texts, code)) = tokio::join!(
                    old.hub.shutdown(Duration::from_secs(2)),
                    until_closed(&mut client)
                );
                assert_eq!(shutdown.remaining, 0);
                assert!(texts.is_empty(), "{texts:?}");
                assert_eq!(code, Some(1001));
                nodes.insert(0, node(&redis, 256).await);
            } else {
                close(&mut client).await;
            }
            // Published while the client is away, from both nodes.
            let missed = 5;
            for i in 0..missed {
                let event = email(n, 0);
                n += 1;
                nodes[i % 2]
                    .hub
                    .publish_inbox(&alice, &event)
                    .await
                    .unwrap();
                published.push(inbox_text(&event));
            }
            // It comes back on the other node.
            let addr = nodes[1].server.addr;
            client = connect_resume(addr, "/mail/ws/inbox", "alice", &position.to_string()).await;
            let frame = resume_frame(&mut client).await;
            assert!(frame.recovered, "round {round}: {frame:?}");
            assert_eq!(frame.epoch, epoch);
            assert_eq!(
                frame.offset, position.offset,
                "a recovered position is echoed"
            );
            let replay = events(&mut client, missed).await;
            position.offset = replay.last().unwrap().1;
            seen.extend(replay);
            // The next round's live events go to the node the client is on now.
            nodes.swap(0, 1);
        }
        // 0 lost, 0 duplicated, in order; offsets strictly increasing.
        let texts: Vec<String> = seen.iter().map(|(text, _)| text.clone()).collect();
        assert_eq!(texts, published);
        assert!(seen.windows(2).all(|w| w[0].1 < w[1].1), "{seen:?}");
        let resumes: u64 = nodes.iter().map(|node| node.broker.stats().resumes).sum();
        assert!(resumes >= 4);
        let recovered: u64 = nodes.iter().map(|node| node.hub.stats().recovered).sum();
        assert!(recovered >= 4);
    })
    .await;
}

#[tokio::test]
async fn plain_clients_get_the_exact_section_2_4_bytes_and_opted_in_ones_the_offset() {
    if !available("plain and opted-in clients") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let a = node(&redis, 256).await;
        let b = node(&redis, 256).await;
        let mut plain = connect(b.server.addr, "/mail/ws/inbox", "alice").await;
        let mut opted = connect_resume(a.server.addr, "/mail/ws/inbox", "alice", "new").await;
        let frame = resume_frame(&mut opted).await;
        b.broker.sync().await;
        let event = email(1, 3);
        a.hub
            .publish_inbox(&account("alice"), &event)
            .await
            .unwrap();
        assert_eq!(next_text(&mut plain).await, inbox_text(&event));
        let text = next_text(&mut opted).await;
        let (bare, offset) = split_offset(&text);
        assert_eq!(bare, inbox_text(&event));
        assert_eq!(offset, frame.offset + 1);

        // A campaign's late joiner (`new`) gets the latest progress first, with its offset,
        // on a node that never delivered it.
        let p = progress("c1", 10);
        a.hub.publish_campaign(&campaign("c1"), &p).await.unwrap();
        let mut late = connect_resume(b.server.addr, "/mail/ws/campaigns/c1", "alice", "new").await;
        let frame = resume_frame(&mut late).await;
        assert!(frame.recovered);
        assert_eq!(frame.offset, 1);
        assert_eq!(
            split_offset(&next_text(&mut late).await),
            (campaign_text(&p), 1)
        );
        let mut late_plain = connect(b.server.addr, "/mail/ws/campaigns/c1", "bob").await;
        assert_eq!(next_text(&mut late_plain).await, campaign_text(&p));
        let done = completed("c1");
        a.hub
            .publish_campaign(&campaign("c1"), &done)
            .await
            .unwrap();
        let (texts, code) = until_closed(&mut late).await;
        assert_eq!(texts.len(), 1);
        assert_eq!(split_offset(&texts[0]), (campaign_text(&done), 2));
        assert_eq!(code, Some(1000));
        let (texts, code) = until_closed(&mut late_plain).await;
        assert_eq!(texts, [campaign_text(&done)]);
        assert_eq!(code, Some(1000));
    })
    .await;
}

// ----- what cannot be recovered is said -----

#[tokio::test]
async fn a_trimmed_or_foreign_position_is_not_recovered_then_live() {
    if !available("trimmed history") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let a = node(&redis, 3).await;
        let b = node(&redis, 3).await;
        let alice = account("alice");
        let mut client = connect_resume(a.server.addr, "/mail/ws/inbox", "alice", "new").await;
        let frame = resume_frame(&mut client).await;
        let epoch = frame.epoch.clone();
        close(&mut client).await;
        let mut texts = Vec::new();
        for i in 0..6 {
            let event = email(i, 0);
            a.hub.publish_inbox(&alice, &event).await.unwrap();
            texts.push(inbox_text(&event));
        }
        // Exactly the last 3 are held (MAXLEN, exact): 4..=6.
        let mut client = connect_resume(
            b.server.addr,
            "/mail/ws/inbox",
            "alice",
            &format!("{epoch}:3"),
        )
        .await;
        let frame = resume_frame(&mut client).await;
        assert!(frame.recovered);
        let replay = events(&mut client, 3).await;
        assert_eq!(
            replay,
            vec![
                (texts[3].clone(), 4),
                (texts[4].clone(), 5),
                (texts[5].clone(), 6)
            ]
        );
        close(&mut client).await;
        let mut latest = 6;
        for (value, why) in [
            (format!("{epoch}:2"), "trimmed"),
            (format!("{epoch}:0"), "trimmed"),
            (format!("{epoch}:99"), "ahead"),
            ("other-epoch:6".to_owned(), "another epoch"),
        ] {
            let mut client = connect_resume(b.server.addr, "/mail/ws/inbox", "alice", &value).await;
            let frame = resume_frame(&mut client).await;
            assert!(!frame.recovered, "{why}: {frame:?}");
            assert_eq!(
                (frame.epoch.clone(), frame.offset),
                (epoch.clone(), latest),
                "{why}"
            );
            // Then live, nothing replayed.
            let event = email(100, 0);
            a.hub.publish_inbox(&alice, &event).await.unwrap();
            latest += 1;
            let (text, offset) = split_offset(&next_text(&mut client).await);
            assert_eq!(text, inbox_text(&event));
            assert_eq!(offset, latest, "{why}");
            close(&mut client).await;
        }
        assert!(b.hub.stats().not_recovered >= 4);
    })
    .await;
}

#[tokio::test]
async fn a_redis_restarted_without_persistence_is_not_recovered_then_live() {
    if !available("redis restart") {
        return;
    }
    within(async {
        let mut redis = RedisServer::start().await;
        let a = node(&redis, 256).await;
        let alice = account("alice");
        let mut plain = connect(a.server.addr, "/mail/ws/inbox", "alice").await;
        let mut client = connect_resume(a.server.addr, "/mail/ws/inbox", "alice", "new").await;
        let old = resume_frame(&mut client).await;
        for i in 0..2 {
            let event = email(i, 0);
            a.hub.publish_inbox(&alice, &event).await.unwrap();
            assert_eq!(
                split_offset(&next_text(&mut client).await).0,
                inbox_text(&event)
            );
            assert_eq!(next_text(&mut plain).await, inbox_text(&event));
        }
        // The history is gone with Redis (`--save '' --appendonly no`).
        redis.restart().await;
        // The node noticed: its opted-in client would otherwise miss the gap silently.
        let (texts, code) = until_closed(&mut client).await;
        assert!(texts.is_empty(), "{texts:?}");
        assert_eq!(code, Some(1001));
        a.broker.connected().await;
        let position = format!("{}:2", old.epoch);
        let mut client = connect_resume(a.server.addr, "/mail/ws/inbox", "alice", &position).await;
        let frame = resume_frame(&mut client).await;
        assert!(!frame.recovered, "{frame:?}");
        assert_ne!(frame.epoch, old.epoch, "a new epoch");
        assert_eq!(frame.offset, 0);
        // Then live, in the new epoch, for both kinds of clients.
        let event = email(9, 0);
        loop {
            // The publishing side reconnects on demand (its backoff may refuse once).
            match a.hub.publish_inbox(&alice, &event).await {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert_eq!(
            split_offset(&next_text(&mut client).await),
            (inbox_text(&event), 1)
        );
        assert_eq!(next_text(&mut plain).await, inbox_text(&event));
        // The next resume in the new epoch recovers.
        close(&mut client).await;
        let mut client = connect_resume(
            a.server.addr,
            "/mail/ws/inbox",
            "alice",
            &format!("{}:1", frame.epoch),
        )
        .await;
        assert!(resume_frame(&mut client).await.recovered);
    })
    .await;
}

#[tokio::test]
async fn a_crowd_resuming_from_one_position_gets_the_replay_each() {
    if !available("a crowd resuming at once") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let a = node(&redis, 256).await;
        let b = node(&redis, 256).await;
        let alice = account("alice");
        let mut client = connect_resume(a.server.addr, "/mail/ws/inbox", "alice", "new").await;
        let epoch = resume_frame(&mut client).await.epoch;
        close(&mut client).await;
        let mut texts = Vec::new();
        for i in 0..5 {
            let event = email(i, 0);
            a.hub.publish_inbox(&alice, &event).await.unwrap();
            texts.push(inbox_text(&event));
        }
        // Twenty connections from one position at once (they share reads in a batch), and
        // one from another position among them.
        let position = format!("{epoch}:2");
        let other = format!("{epoch}:4");
        let crowd = (0..21).map(|i| {
            let value = if i == 10 {
                other.clone()
            } else {
                position.clone()
            };
            let addr = b.server.addr;
            async move {
                let mut client = connect_resume(addr, "/mail/ws/inbox", "alice", &value).await;
                let frame = resume_frame(&mut client).await;
                let n = if i == 10 { 1 } else { 3 };
                let replay = events(&mut client, n).await;
                (frame, replay, client)
            }
        });
        let results = futures_util::future::join_all(crowd).await;
        for (i, (frame, replay, _client)) in results.iter().enumerate() {
            assert!(frame.recovered, "{i}");
            let from = if i == 10 { 4 } else { 2 };
            assert_eq!(frame.offset, from);
            let expected: Vec<(String, u64)> = (from..5)
                .map(|o| (texts[o as usize].clone(), o + 1))
                .collect();
            assert_eq!(replay, &expected, "connection {i}");
        }
        // Then live, once each.
        let event = email(9, 0);
        a.hub.publish_inbox(&alice, &event).await.unwrap();
        for (_, _, mut client) in results {
            assert_eq!(
                split_offset(&next_text(&mut client).await),
                (inbox_text(&event), 6)
            );
        }
    })
    .await;
}

#[tokio::test]
async fn entries_past_the_age_bound_are_not_replayed() {
    if !available("the age bound") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let config = RedisConfig {
            history: HistoryConfig {
                max_age: Duration::from_millis(1_000),
                ..HistoryConfig::default()
            },
            ..redis_node::config()
        };
        let a = node_with(&redis, config).await;
        let alice = account("alice");
        let mut client = connect_resume(a.server.addr, "/mail/ws/inbox", "alice", "new").await;
        let epoch = resume_frame(&mut client).await.epoch;
        close(&mut client).await;
        let mut texts = Vec::new();
        let mut publish = |i| {
            let event = email(i, 0);
            texts.push(inbox_text(&event));
            event
        };
        // Offsets 1 and 2, then 3 after 0.7 s, then 4 after 0.7 s more: at the resume, 1 and 2
        // are about 1.4 s old (past the bound), 3 about 0.7 s (within it).
        for i in 0..2 {
            a.hub.publish_inbox(&alice, &publish(i)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        a.hub.publish_inbox(&alice, &publish(2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        a.hub.publish_inbox(&alice, &publish(3)).await.unwrap();

        let mut client = connect_resume(
            a.server.addr,
            "/mail/ws/inbox",
            "alice",
            &format!("{epoch}:2"),
        )
        .await;
        let frame = resume_frame(&mut client).await;
        assert!(frame.recovered, "everything after 2 is within the bound");
        assert_eq!(
            events(&mut client, 2).await,
            vec![(texts[2].clone(), 3), (texts[3].clone(), 4)]
        );
        close(&mut client).await;
        let mut client = connect_resume(
            a.server.addr,
            "/mail/ws/inbox",
            "alice",
            &format!("{epoch}:1"),
        )
        .await;
        let frame = resume_frame(&mut client).await;
        assert!(!frame.recovered, "2 is past the age bound");
        assert_eq!(frame.offset, 4);
    })
    .await;
}

/// A resume read that Redis fails (here: the history key holds a string, so the script's
/// `XRANGE` errors) closes the connection with 1011, counted, never a silent start; the next
/// attempt, once the history is readable again, resumes.
#[tokio::test]
async fn a_resume_read_that_redis_fails_closes_with_1011() {
    if !available("failed resume read") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let a = node(&redis, 256).await;
        let alice = account("alice");
        let mut client = connect_resume(a.server.addr, "/mail/ws/inbox", "alice", "new").await;
        let frame = resume_frame(&mut client).await;
        a.hub.publish_inbox(&alice, &email(0, 0)).await.unwrap();
        let (_, offset) = split_offset(&next_text(&mut client).await);
        close(&mut client).await;
        let position = format!("{}:{offset}", frame.epoch);

        let mut raw = redis_util::raw(&redis.url()).await;
        let history = "misar:history:{inbox:alice}";
        let saved: Vec<u8> = redis::cmd("DUMP")
            .arg(history)
            .query_async(&mut raw)
            .await
            .unwrap();
        let () = redis::cmd("SET")
            .arg(history)
            .arg("not a stream")
            .query_async(&mut raw)
            .await
            .unwrap();
        let errors = a.broker.stats().resume_errors;
        let mut failing = connect_resume(a.server.addr, "/mail/ws/inbox", "alice", &position).await;
        let (texts, code) = until_closed(&mut failing).await;
        assert!(texts.is_empty(), "{texts:?}");
        assert_eq!(code, Some(1011));
        assert_eq!(a.broker.stats().resume_errors, errors + 1);

        // Readable again: the same position resumes, nothing missed.
        let () = redis::cmd("RESTORE")
            .arg(history)
            .arg(0)
            .arg(saved)
            .arg("REPLACE")
            .query_async(&mut raw)
            .await
            .unwrap();
        let mut back = connect_resume(a.server.addr, "/mail/ws/inbox", "alice", &position).await;
        let frame = resume_frame(&mut back).await;
        assert!(frame.recovered, "{frame:?}");
        let event = email(1, 0);
        a.hub.publish_inbox(&alice, &event).await.unwrap();
        assert_eq!(
            split_offset(&next_text(&mut back).await).0,
            inbox_text(&event)
        );
    })
    .await;
}
