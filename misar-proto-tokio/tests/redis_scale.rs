//! Issue "Scale-out" against real redis-server processes: lossless at subscribe
//! (`Feed::ready`), the bounded path from Redis to the hub, batched publishing, and honest
//! publish reports.

mod redis_node;
mod redis_util;
#[path = "server_support.rs"]
mod support;

use std::collections::HashSet;
use std::error::Error as _;
use std::time::Duration;

use misar_proto::server::ServerConfig;
use misar_proto_tokio::hub::redis::{RedisBroker, RedisBrokerError, RedisConfig};
use misar_proto_tokio::hub::{Feed, Hub, HubConfig};
use misar_proto_tokio::server::{DriverConfig, serve_connection};

use redis_node::{config, publish_until_received};
use redis_util::{RedisServer, SlowLink, available, raw};
use support::*;

/// A node (hub + broker) without a WebSocket server: the tests drive feeds directly.
async fn hub_on(url: &str, config: RedisConfig) -> (Hub, std::sync::Arc<RedisBroker>) {
    let broker = RedisBroker::connect(url, config).await.unwrap();
    (
        Hub::with_broker(HubConfig::default(), broker.clone()),
        broker,
    )
}

/// Serves `feed` over an in-memory transport; the peer reads what the client would.
fn serve(feed: Feed) -> (MemPeer, tokio::task::JoinHandle<()>) {
    let (transport, peer) = mem_pair();
    let task = tokio::spawn(async move {
        let _ = serve_connection(transport, feed, DriverConfig::default()).await;
    });
    (peer, task)
}

/// Every event published after `Feed::ready` resolved reaches the connection, even when the
/// node's own commands reach Redis late (a slow link): without waiting, the same publish is
/// lost (the control), so the test would see a broken gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_another_node_right_after_ready_is_never_missed() {
    if !available("lossless at subscribe") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        // Node B's commands (its SUBSCRIBE included) reach Redis 150 ms late.
        let slow = SlowLink::start(redis.port(), Duration::from_millis(150)).await;
        let (a, _broker_a) = hub_on(&redis.url(), config()).await;
        let (b, _broker_b) = hub_on(&slow.url(), config()).await;

        // The control: served at once, the event published right away is lost.
        let feed = b
            .subscribe(inbox("early"), b.mark(), &ServerConfig::default())
            .unwrap();
        let (peer, task) = serve(feed);
        let report = a
            .publish_inbox(&account("early"), &email(0, 10))
            .await
            .unwrap();
        assert_eq!(report.receivers, Some(0), "nobody was subscribed yet");
        let marker = email(1, 10);
        // Once B is subscribed (its SUBSCRIBE got there), a later event arrives; the first
        // never does.
        assert!(publish_until_received(&a, "early", &marker, Duration::from_secs(10)).await);
        assert_eq!(text(&peer.recv().await), marker.encode().bytes());
        task.abort();

        // With the gate: 8 fresh streams, each published to the moment `ready` resolves.
        for i in 0..8 {
            let name = format!("acct-{i}");
            let feed = b
                .subscribe(inbox(&name), b.mark(), &ServerConfig::default())
                .unwrap();
            feed.ready().await.unwrap();
            let event = email(i, 10);
            let report = a.publish_inbox(&account(&name), &event).await.unwrap();
            assert_eq!(report.receivers, Some(1));
            let (peer, task) = serve(feed);
            assert_eq!(text(&peer.recv().await), event.encode().bytes());
            task.abort();
        }
    })
    .await;
}

/// While Redis is unreachable, a new stream's subscription cannot be confirmed: `ready`
/// fails with a typed error within `subscribe_timeout` (the adapters answer 503).
#[tokio::test]
async fn ready_fails_with_a_typed_error_while_redis_is_away() {
    if !available("ready while Redis is away") {
        return;
    }
    within(async {
        let mut redis = RedisServer::start().await;
        let (hub, broker) = hub_on(
            &redis.url(),
            RedisConfig {
                subscribe_timeout: Duration::from_millis(300),
                ..config()
            },
        )
        .await;
        redis.kill().await;
        broker.disconnected().await;
        let feed = hub
            .subscribe(inbox("alice"), hub.mark(), &ServerConfig::default())
            .unwrap();
        let error = feed.ready().await.unwrap_err();
        assert!(matches!(
            error
                .source()
                .and_then(|s| s.downcast_ref::<RedisBrokerError>()),
            Some(RedisBrokerError::NotSubscribed)
        ));
        // Back: the same stream is confirmed and ready.
        redis.restart().await;
        broker.connected().await;
        feed.ready().await.unwrap();
    })
    .await;
}

/// A node that cannot keep up (its subscriber task is stuck behind a connection's lock)
/// holds at most its bound; reaching it drops the subscription (a counted gap) and the node
/// resubscribes and delivers again once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
// On purpose: the held session lock is what keeps the node from keeping up (the test body runs
// on the runtime's own thread, the subscriber task blocks on a worker).
#[allow(clippy::await_holding_lock)]
async fn a_node_that_cannot_keep_up_stays_within_its_bound_and_recovers() {
    if !available("bounded inbound path") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let max_bytes = 64 * 1024;
        let (hub, broker) = hub_on(
            &redis.url(),
            RedisConfig {
                inbound_max_messages: 100_000,
                inbound_max_bytes: max_bytes,
                ..config()
            },
        )
        .await;
        let feed = hub
            .subscribe(inbox("alice"), hub.mark(), &ServerConfig::default())
            .unwrap();
        feed.ready().await.unwrap();
        let event = email(0, 1000);
        let framed = {
            let mut message = b"e1:1\n".to_vec();
            message.extend_from_slice(event.encode().bytes());
            message
        };
        {
            // Hold the session: the subscriber task blocks on its first delivery.
            let held = feed.session().lock().unwrap();
            let mut publisher = raw(&redis.url()).await;
            // 4 MiB of messages, pipelined: far past the 64 KiB bound.
            let mut pipe = redis::pipe();
            for _ in 0..4000 {
                pipe.cmd("PUBLISH")
                    .arg("misar:{inbox:alice}")
                    .arg(&framed)
                    .ignore();
            }
            let () = pipe.query_async(&mut publisher).await.unwrap();
            // The driver keeps reading the flood; what waits for the stuck task grows to the
            // bound and no further.
            let filled = async {
                while broker.stats().inbound_peak_bytes < max_bytes - 2 * framed.len() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), filled)
                .await
                .expect("the flood reaches the node");
            // Everything Redis sent has been read by now or soon: the peak stays bounded.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let peak = broker.stats().inbound_peak_bytes;
            assert!(
                peak <= max_bytes + framed.len() + 256,
                "waiting bytes {peak} over the bound {max_bytes}"
            );
            drop(held);
        }
        // Released: the node notices the overflow, counts the gap and resubscribes.
        let recovered = async {
            loop {
                let stats = broker.stats();
                if stats.overflows >= 1 && stats.reconnects >= 1 && stats.connected {
                    return stats;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let stats = tokio::time::timeout(Duration::from_secs(20), recovered)
            .await
            .expect("the node recovers from the overflow");
        assert!(stats.gaps >= 1);
        assert!(stats.inbound_peak_bytes <= max_bytes + framed.len() + 256);
        assert!(hub.stats().gaps >= 1);
        broker.sync().await;
        feed.ready().await.unwrap();
        // Delivering again: a new event reaches the connection (after what it got before
        // the bound was hit).
        let after = email(1, 10);
        hub.publish_inbox(&account("alice"), &after).await.unwrap();
        let (peer, _task) = serve(feed);
        let expected = after.encode().bytes().clone();
        loop {
            let message = peer.recv().await;
            if *text(&message) == expected {
                break;
            }
        }
    })
    .await;
}

/// Concurrent publishes are batched into one script call per stream: every event is
/// numbered once (contiguous offsets), kept in the history, delivered once; a campaign's
/// events after its terminal one in the same batch are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_publishes_are_numbered_once_delivered_once_and_stop_at_a_terminal_event() {
    if !available("batched publishing") {
        return;
    }
    within(async {
        let redis = RedisServer::start().await;
        let (a, _ba) = hub_on(&redis.url(), config()).await;
        let (b, broker_b) = hub_on(&redis.url(), config()).await;
        let feed = b.subscribe(inbox("alice"), b.mark(), &roomy(4096)).unwrap();
        feed.ready().await.unwrap();
        let (peer, _task) = serve(feed);
        let count = 600;
        let publishes = (0..count).map(|i| {
            let a = a.clone();
            tokio::spawn(async move { a.publish_inbox(&account("alice"), &email(i, 20)).await })
        });
        for publish in futures_util::future::join_all(publishes).await {
            let report = publish.unwrap().unwrap();
            assert_eq!(report.receivers, Some(1));
        }
        let mut seen = HashSet::new();
        for _ in 0..count {
            assert!(seen.insert(text(&peer.recv().await).clone()), "a duplicate");
        }
        let expected: HashSet<_> = (0..count)
            .map(|i| email(i, 20).encode().bytes().clone())
            .collect();
        assert_eq!(seen, expected);
        let mut redis_conn = raw(&redis.url()).await;
        let offset: u64 = redis::cmd("HGET")
            .arg("misar:meta:{inbox:alice}")
            .arg("o")
            .query_async(&mut redis_conn)
            .await
            .unwrap();
        assert_eq!(offset, count as u64);
        let kept: u64 = redis::cmd("XLEN")
            .arg("misar:history:{inbox:alice}")
            .query_async(&mut redis_conn)
            .await
            .unwrap();
        assert_eq!(kept, 256);
        // Batched: fewer script calls than events, one PUBLISH per call (the first calls'
        // NOSCRIPT answers, before the script is loaded, are failed calls).
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut redis_conn)
            .await
            .unwrap();
        let field = |command: &str, name: &str| -> u64 {
            let line = stats
                .lines()
                .find(|line| line.starts_with(&format!("cmdstat_{command}:")))
                .unwrap_or_default();
            line.split([':', ','])
                .find_map(|part| part.strip_prefix(&format!("{name}=")))
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        let scripts = field("evalsha", "calls") - field("evalsha", "failed_calls");
        let publishes = field("publish", "calls");
        assert!(
            scripts > 0 && scripts < count as u64,
            "{scripts} script calls"
        );
        assert_eq!(publishes, scripts);
        assert_eq!(broker_b.stats().rejected, 0);

        // A campaign: a burst with the terminal event in the middle.
        let c1 = campaign("c1");
        let mut events = Vec::new();
        for i in 0..20u64 {
            events.push(if i == 10 {
                completed("c1")
            } else {
                progress("c1", i)
            });
        }
        let results = futures_util::future::join_all(events.into_iter().map(|event| {
            let a = a.clone();
            let c1 = c1.clone();
            tokio::spawn(async move { a.publish_campaign(&c1, &event).await.is_ok() })
        }))
        .await;
        let accepted = results.iter().filter(|r| *r.as_ref().unwrap()).count();
        let offset: u64 = redis::cmd("HGET")
            .arg("misar:meta:{campaign:c1}")
            .arg("o")
            .query_async(&mut redis_conn)
            .await
            .unwrap();
        // Whatever the batching, the accepted ones are exactly the numbered ones, and the
        // terminal event is the last of them.
        assert_eq!(offset, accepted as u64);
        let last: Vec<u8> = redis::cmd("GET")
            .arg("misar:last:{campaign:c1}")
            .query_async(&mut redis_conn)
            .await
            .unwrap();
        assert!(last.ends_with(completed("c1").encode().bytes()));
        assert!(
            a.publish_campaign(&c1, &progress("c1", 99)).await.is_err(),
            "finished"
        );
    })
    .await;
}
