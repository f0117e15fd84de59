//! The Redis broker against a real `redis-server` started by each test on a free loopback
//! port: two (or three) nodes in one process, each a hub + broker + WebSocket server, with
//! real WebSocket clients. Without `redis-server` installed these tests print a notice and
//! pass, unless `MISAR_REQUIRE_SERVICES=1`.

mod redis_node;
mod redis_util;
#[path = "server_support.rs"]
mod support;

use std::error::Error as _;

use misar_proto::streams::PublishError as Refusal;
use misar_proto_tokio::hub::redis::{RedisBroker, RedisBrokerError};
use misar_proto_tokio::hub::{PublishError, Revocation};

use redis_node::{config, node};
use redis_util::{RedisServer, available, raw};
use support::*;

/// One node of a deployment: a hub on a Redis broker, served over loopback WebSockets.
// ----- cross-node delivery -----

#[tokio::test]
async fn events_published_on_any_node_reach_the_subscribers_of_every_node() {
    if !available("cross-node delivery") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let mut a = node(&redis).await;
        let mut b = node(&redis).await;
        let mut alice_a = connect(a.server.addr, "/mail/ws/inbox", "alice").await;
        let mut alice_b = connect(b.server.addr, "/mail/ws/inbox", "alice").await;
        let mut c1_b = connect(b.server.addr, "/mail/ws/campaigns/c1", "alice").await;
        a.broker.sync().await;
        b.broker.sync().await;
        // A node subscribes to the streams it has subscribers of, and only those.
        assert_eq!(a.broker.stats().subscribed_streams, 1);
        assert_eq!(b.broker.stats().subscribed_streams, 2);

        // Publishes from both nodes, interleaved: everyone sees them in publish order.
        let mut expected = Vec::new();
        for i in 0..20 {
            let event = email(i, 40);
            let publisher = if i % 2 == 0 { &a.hub } else { &b.hub };
            let report = publisher
                .publish_inbox(&account("alice"), &event)
                .await
                .unwrap();
            // Deliveries happen when Redis hands the event back, on each node.
            assert_eq!(report.delivered, 0);
            expected.push(inbox_text(&event));
        }
        for client in [&mut alice_a, &mut alice_b] {
            for text in &expected {
                assert_eq!(&next_text(client).await, text);
            }
        }

        // A campaign published on A reaches its subscriber on B, and its end closes it.
        let p = progress("c1", 10);
        a.hub.publish_campaign(&campaign("c1"), &p).await.unwrap();
        assert_eq!(next_text(&mut c1_b).await, campaign_text(&p));
        let done = completed("c1");
        a.hub
            .publish_campaign(&campaign("c1"), &done)
            .await
            .unwrap();
        let transcript = read_to_end(&mut c1_b).await;
        assert_eq!(transcript.texts, [campaign_text(&done)]);
        assert_eq!(transcript.close, Some(1000));

        // Encoded once per node at most: a node serialized what it published and nothing
        // it received (received bytes are checked and passed on as they are).
        assert_eq!(a.hub.stats().encodes, 10 + 2);
        assert_eq!(b.hub.stats().encodes, 10);
        // A got the 20 inbox events back from Redis, not the campaign's (not subscribed).
        assert_eq!(a.broker.stats().received, 20);
        assert_eq!(b.broker.stats().received, 22);
        assert_eq!(a.broker.stats().published, 12);
        assert_eq!((a.hub.stats().delivered, b.hub.stats().delivered), (20, 22));

        // The last subscriber leaving a node unsubscribes it upstream.
        close(&mut alice_a).await;
        close(&mut alice_b).await;
        a.server.next_end().await;
        b.server.next_end().await;
        b.server.next_end().await;
        a.broker.sync().await;
        b.broker.sync().await;
        assert_eq!(a.broker.stats().subscribed_streams, 0);
        assert_eq!(b.broker.stats().subscribed_streams, 0);
        assert_eq!(a.broker.stats().gaps + b.broker.stats().gaps, 0);
    })
    .await;
}

// ----- revocation -----

#[tokio::test]
async fn a_revocation_on_one_node_closes_the_connections_of_every_node() {
    if !available("revocation propagation") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let a = node(&redis).await;
        let b = node(&redis).await;
        let mut alice_a = connect(a.server.addr, "/mail/ws/inbox", "alice").await;
        let mut alice_b = connect(b.server.addr, "/mail/ws/inbox", "alice").await;
        let mut alice_c1_b = connect(b.server.addr, "/mail/ws/campaigns/c1", "alice").await;
        let mut bob_b = connect(b.server.addr, "/mail/ws/inbox", "bob").await;
        let mut carol_c2_a = connect(a.server.addr, "/mail/ws/campaigns/c2", "carol").await;
        let mut dave_c2_b = connect(b.server.addr, "/mail/ws/campaigns/c2", "dave").await;
        a.broker.sync().await;
        b.broker.sync().await;

        a.hub
            .revoke_everywhere(Revocation::Account(account("alice")))
            .await
            .unwrap();
        for client in [&mut alice_a, &mut alice_b, &mut alice_c1_b] {
            let transcript = read_to_end(client).await;
            assert_eq!(transcript.close, Some(4401));
            assert!(transcript.texts.is_empty());
        }
        // Applied on both nodes (A applied it locally, and again when Redis echoed it).
        assert_eq!(a.broker.stats().revocations, 1);
        assert_eq!(b.broker.stats().revocations, 1);

        // Bob, on the same node, is untouched.
        let event = email(1, 0);
        a.hub.publish_inbox(&account("bob"), &event).await.unwrap();
        assert_eq!(next_text(&mut bob_b).await, inbox_text(&event));

        // An ownership change: 4403 for the campaign's subscribers on every node.
        b.hub
            .revoke_everywhere(Revocation::Campaign(campaign("c2")))
            .await
            .unwrap();
        assert_eq!(read_to_end(&mut carol_c2_a).await.close, Some(4403));
        assert_eq!(read_to_end(&mut dave_c2_b).await.close, Some(4403));
        assert_eq!(b.hub.connection_count(), 1);
    })
    .await;
}

// ----- the shared latest-event cache -----

#[tokio::test]
async fn a_late_joiner_on_any_node_gets_the_latest_progress_then_the_terminal_event() {
    if !available("shared late-joiner cache") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let a = node(&redis).await;
        let b = node(&redis).await;

        // Published on A while nobody anywhere listens to c1.
        let p1 = progress("c1", 100);
        a.hub.publish_campaign(&campaign("c1"), &p1).await.unwrap();
        // Kept in Redis with a TTL.
        let mut direct = raw(&redis.url()).await;
        let ttl: i64 = redis::cmd("PTTL")
            .arg("misar:last:{campaign:c1}")
            .query_async(&mut direct)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 3_600_000, "PTTL {ttl}");

        // A late joiner on B gets it, fetched from Redis, once.
        let mut first = connect(b.server.addr, "/mail/ws/campaigns/c1", "alice").await;
        assert_eq!(next_text(&mut first).await, campaign_text(&p1));
        b.broker.sync().await;
        assert_eq!(b.broker.stats().fetched, 1);
        let p2 = progress("c1", 200);
        a.hub.publish_campaign(&campaign("c1"), &p2).await.unwrap();
        assert_eq!(next_text(&mut first).await, campaign_text(&p2));

        // A second joiner on B gets p2 from B's own hub (the stream is open there: no fetch).
        let mut second = connect(b.server.addr, "/mail/ws/campaigns/c1", "bob").await;
        assert_eq!(next_text(&mut second).await, campaign_text(&p2));
        assert_eq!(b.broker.stats().fetched, 1);

        // The terminal event ends both, then is what every later joiner gets, on any node.
        let done = completed("c1");
        a.hub
            .publish_campaign(&campaign("c1"), &done)
            .await
            .unwrap();
        for client in [&mut first, &mut second] {
            let transcript = read_to_end(client).await;
            assert_eq!(transcript.texts, [campaign_text(&done)]);
            assert_eq!(transcript.close, Some(1000));
        }
        let c = node(&redis).await;
        for joiner in [a.server.addr, c.server.addr] {
            let mut late = connect(joiner, "/mail/ws/campaigns/c1", "carol").await;
            let transcript = read_to_end(&mut late).await;
            assert_eq!(transcript.texts, [campaign_text(&done)]);
            assert_eq!(transcript.close, Some(1000));
        }
        assert_eq!(a.hub.stats().encodes, 3);
        assert_eq!(c.hub.stats().encodes, 0);
    })
    .await;
}

#[tokio::test]
async fn a_finished_campaign_refuses_publishes_on_every_node_and_its_terminal_event_sticks() {
    if !available("finished campaigns") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let a = node(&redis).await;
        let b = node(&redis).await;
        let done = completed("c1");
        a.hub
            .publish_campaign(&campaign("c1"), &done)
            .await
            .unwrap();
        // The worker race of issue 12: a stray progress after the terminal event, from the
        // node that published it and from another one. Redis decides: refused, typed.
        for node in [&a, &b] {
            let error = node
                .hub
                .publish_campaign(&campaign("c1"), &progress("c1", 50))
                .await
                .unwrap_err();
            assert!(
                matches!(error.refusal(), Some(Refusal::Finished { campaign: c }) if c == &campaign("c1")),
                "{error}"
            );
        }
        // Nothing replaced the shared terminal event: a late joiner on B gets it, then 1000.
        let mut late = connect(b.server.addr, "/mail/ws/campaigns/c1", "alice").await;
        let transcript = read_to_end(&mut late).await;
        assert_eq!(transcript.texts, [campaign_text(&done)]);
        assert_eq!(transcript.close, Some(1000));
        // Other campaigns are not affected.
        a.hub
            .publish_campaign(&campaign("c2"), &progress("c2", 1))
            .await
            .unwrap();
    })
    .await;
}

// ----- Redis going away -----

#[tokio::test]
async fn a_redis_restart_fails_publishes_keeps_clients_and_recovers_with_a_counted_gap() {
    if !available("redis restart") {
        return;
    }
    within(async {
        let mut redis = RedisServer::start().await;
        let a = node(&redis).await;
        let b = node(&redis).await;
        let mut alice_b = connect(b.server.addr, "/mail/ws/inbox", "alice").await;
        let mut c1_b = connect(b.server.addr, "/mail/ws/campaigns/c1", "alice").await;
        b.broker.sync().await;
        let e1 = email(1, 0);
        a.hub.publish_inbox(&account("alice"), &e1).await.unwrap();
        assert_eq!(next_text(&mut alice_b).await, inbox_text(&e1));

        redis.kill().await;
        a.broker.disconnected().await;
        b.broker.disconnected().await;
        for node in [&a, &b] {
            assert_eq!(node.broker.stats().gaps, 1);
            assert_eq!(node.hub.stats().gaps, 1);
            assert!(!node.broker.is_connected());
        }

        // Publishing fails, with a typed error, never silently.
        let e2 = email(2, 0);
        let error = a
            .hub
            .publish_inbox(&account("alice"), &e2)
            .await
            .unwrap_err();
        let PublishError::Broker(broker_error) = &error else {
            panic!("expected a broker error, got {error:?}");
        };
        let cause = broker_error
            .source()
            .and_then(|s| s.downcast_ref::<RedisBrokerError>())
            .expect("the cause is a RedisBrokerError");
        assert!(
            matches!(
                cause,
                RedisBrokerError::Connect(_)
                    | RedisBrokerError::Disconnected { .. }
                    | RedisBrokerError::ConnectionLost
            ),
            "{cause:?}"
        );
        assert!(error.to_string().contains("redis"), "{error}");
        assert!(a.broker.stats().publish_errors >= 1);
        // A revocation cannot propagate either, and says so (it was applied locally).
        assert!(
            a.hub
                .revoke_everywhere(Revocation::Account(account("nobody")))
                .await
                .is_err()
        );

        // The WebSocket clients stay connected through the outage.
        assert_eq!(b.hub.connection_count(), 2);

        redis.restart().await;
        a.broker.connected().await;
        b.broker.connected().await;
        b.broker.sync().await;
        assert_eq!(b.broker.stats().subscribed_streams, 2);
        assert_eq!(b.broker.stats().reconnects, 1);

        // Delivery resumes on the same sockets; the event that failed to publish never
        // shows up.
        let e3 = email(3, 0);
        a.hub.publish_inbox(&account("alice"), &e3).await.unwrap();
        assert_eq!(next_text(&mut alice_b).await, inbox_text(&e3));
        let p = progress("c1", 5);
        a.hub.publish_campaign(&campaign("c1"), &p).await.unwrap();
        assert_eq!(next_text(&mut c1_b).await, campaign_text(&p));
        assert_eq!(b.hub.stats().gaps, 1);
        assert_eq!(b.hub.connection_count(), 2);
    })
    .await;
}

#[tokio::test]
async fn connecting_to_nothing_fails_with_a_typed_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = RedisBroker::connect(&format!("redis://127.0.0.1:{port}"), config())
        .await
        .unwrap_err();
    assert!(matches!(error, RedisBrokerError::Connect(_)), "{error:?}");
    let error = RedisBroker::connect("http://example.com", config())
        .await
        .unwrap_err();
    assert!(
        matches!(error, RedisBrokerError::InvalidUrl(_)),
        "{error:?}"
    );
    // A password in the URL never shows in an error.
    let error = RedisBroker::connect(
        &format!("redis://user:s3cret-pass@127.0.0.1:{port}"),
        config(),
    )
    .await
    .unwrap_err();
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(" / {cause} / {cause:?}"));
        source = cause.source();
    }
    assert!(!text.contains("s3cret"), "{text}");
}

// ----- what a node refuses to pass on -----

#[tokio::test]
async fn messages_that_are_not_valid_events_are_dropped_and_counted() {
    if !available("invalid messages") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let a = node(&redis).await;
        let mut alice = connect(a.server.addr, "/mail/ws/inbox", "alice").await;
        let mut c1 = connect(a.server.addr, "/mail/ws/campaigns/c1", "alice").await;
        let mut bob = connect(a.server.addr, "/mail/ws/inbox", "bob").await;
        a.broker.sync().await;

        // What a misconfigured foreign publisher could put on our channels.
        let mut direct = raw(&redis.url()).await;
        let good_campaign_event = campaign_text(&progress("c1", 1));
        // A type newer than this node is relayed unchanged (§2.13: a rolling upgrade loses
        // nothing); the rest is not an inbox event and is dropped.
        let newer: &[u8] = br#"{"type":"calendar_invite","when":"now"}"#;
        let inbox_garbage: [&[u8]; 5] = [
            b"not json",
            newer,
            // Valid, but not in the compact wire form.
            br#" {"type":"complaint","email":"x@example.com","complainedAt":"2026-05-27T10:15:00Z"}"#,
            // A campaign event on an inbox channel.
            good_campaign_event.as_bytes(),
            br#"{"type":"bounce","bouncedAt":"2026-05-27T10:15:00Z"}"#,
        ];
        for message in inbox_garbage {
            // Framed as the publish script does (`<epoch>:<offset>\n<json>`): the JSON is
            // what is refused.
            let mut framed = b"foreign:1\n".to_vec();
            framed.extend_from_slice(message);
            let _: i64 = redis::cmd("PUBLISH")
                .arg("misar:{inbox:alice}")
                .arg(framed)
                .query_async(&mut direct)
                .await
                .unwrap();
        }
        // A campaign event about another campaign, and an unreadable revocation.
        for (channel, message) in [
            (
                "misar:{campaign:c1}",
                format!("foreign:1\n{}", campaign_text(&progress("c9", 1))).into_bytes(),
            ),
            ("misar:revoke", b"everyone".to_vec()),
            // Not framed with a position, or framed badly: refused before the JSON is read.
            ("misar:{campaign:c1}", campaign_text(&progress("c1", 1)).into_bytes()),
            (
                "misar:{campaign:c1}",
                format!("e:01\n{}", campaign_text(&progress("c1", 1))).into_bytes(),
            ),
            ("misar:{campaign:c1}", b"e:1\n".to_vec()),
        ] {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(message)
                .query_async(&mut direct)
                .await
                .unwrap();
        }

        // A batch (one event per line, offsets from the first): its bad line is dropped, the
        // others, a newer type included, are relayed unchanged and in order.
        let bobs = inbox_text(&email(7, 0));
        let batch = [
            &b"foreign:1\n"[..],
            newer,
            b"\nnot json\n",
            bobs.as_bytes(),
        ]
        .concat();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("misar:{inbox:bob}")
            .arg(batch)
            .query_async(&mut direct)
            .await
            .unwrap();
        assert_eq!(next_text(&mut bob).await.as_bytes(), newer);
        assert_eq!(next_text(&mut bob).await, bobs);

        let event = email(1, 0);
        a.hub
            .publish_inbox(&account("alice"), &event)
            .await
            .unwrap();
        assert_eq!(next_text(&mut alice).await.as_bytes(), newer);
        assert_eq!(next_text(&mut alice).await, inbox_text(&event));
        let p = progress("c1", 2);
        a.hub.publish_campaign(&campaign("c1"), &p).await.unwrap();
        assert_eq!(next_text(&mut c1).await, campaign_text(&p));
        let stats = a.broker.stats();
        assert_eq!(stats.rejected, 10);
        assert_eq!(stats.received, 5);
        assert_eq!(stats.revocations, 0);
        assert_eq!(a.hub.connection_count(), 3);
    })
    .await;
}
