//! The hub: fan-out, encode once, revocation, shutdown, late joiners, limits, the broker seam.

#[path = "server_support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use misar_proto::event::{CampaignEvent, EncodedEvent, InboxEvent, UnknownEvent};
use misar_proto::message::Message;
use misar_proto::server::{CloseCause, ServerConfig};
use misar_proto::streams::HistoryConfig;
use misar_proto::streams::PublishError as Refusal;
use misar_proto_tokio::hub::{
    Broker, BrokerError, BrokerFuture, Hub, HubConfig, HubDelivery, LocalBroker, PublishError,
    StreamKey, SubscribeError,
};
use misar_proto_tokio::server::{ConnectionEnd, DriverConfig};
use tokio_tungstenite::tungstenite;

use support::*;

fn config(edit: impl FnOnce(&mut HubConfig)) -> HubConfig {
    let mut config = HubConfig::default();
    edit(&mut config);
    config
}

// ----- fan-out and encode once -----

#[tokio::test]
async fn fan_out_to_1000_sockets_encodes_each_event_once() {
    within(async {
        const CLIENTS: usize = 1000;
        const EVENTS: usize = 20;
        let hub = Hub::new(config(|c| c.max_connections_per_account = CLIENTS));
        let server = TestServer::start(hub.clone(), roomy(64), DriverConfig::default()).await;
        let mut readers = Vec::new();
        for _ in 0..CLIENTS {
            let mut client = connect(server.addr, "/mail/ws/inbox", "a1").await;
            readers.push(tokio::spawn(async move {
                let mut texts = Vec::with_capacity(EVENTS);
                for _ in 0..EVENTS {
                    texts.push(next_text(&mut client).await);
                }
                texts
            }));
        }
        assert_eq!(hub.connection_count(), CLIENTS);

        let events: Vec<_> = (0..EVENTS).map(|i| email(i, 200)).collect();
        for event in &events {
            let report = hub.publish_inbox(&account("a1"), event).await.unwrap();
            assert_eq!(report.delivered, CLIENTS);
            tokio::task::yield_now().await;
        }
        let expected: Vec<String> = events.iter().map(inbox_text).collect();
        for reader in readers {
            assert_eq!(reader.await.unwrap(), expected);
        }
        let stats = hub.stats();
        assert_eq!(stats.encodes, EVENTS as u64);
        assert_eq!(stats.delivered, (EVENTS * CLIENTS) as u64);
    })
    .await;
}

#[tokio::test]
async fn every_recipient_gets_the_same_bytes() {
    within(async {
        const CLIENTS: usize = 1000;
        let hub = Hub::new(config(|c| c.max_connections_per_account = CLIENTS));
        let peers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                serve_mem(
                    &hub,
                    inbox("a1"),
                    ServerConfig::default(),
                    DriverConfig::default(),
                )
                .0
            })
            .collect();
        for i in 0..5 {
            hub.publish_inbox(&account("a1"), &email(i, 100))
                .await
                .unwrap();
            let mut first: Option<Bytes> = None;
            for peer in &peers {
                let got = text(&peer.recv().await).clone();
                match &first {
                    // Not equal contents: the very same buffer (no per-recipient copy).
                    Some(first) => assert_eq!(got.as_ptr(), first.as_ptr()),
                    None => first = Some(got),
                }
            }
        }
        assert_eq!(hub.stats().encodes, 5);
    })
    .await;
}

#[tokio::test]
async fn publishes_that_cannot_be_validated_are_refused() {
    let hub = Hub::new(HubConfig::default());
    let unknown = UnknownEvent::new(
        "future_thing",
        Bytes::from_static(br#"{"type":"future_thing"}"#),
    );
    let error = hub
        .publish_inbox(&account("a1"), &InboxEvent::Unknown(unknown.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, PublishError::Refused(Refusal::UnknownType { kind }) if kind == "future_thing"),
        "{error}"
    );
    let error = hub
        .publish_campaign(&campaign("c1"), &CampaignEvent::Unknown(unknown))
        .await
        .unwrap_err();
    assert!(
        matches!(error, PublishError::Refused(Refusal::UnknownType { .. })),
        "{error}"
    );
    let error = hub
        .publish_campaign(&campaign("c1"), &progress("c2", 1))
        .await
        .unwrap_err();
    match error {
        PublishError::Refused(Refusal::CampaignMismatch { target, found }) => {
            assert_eq!(target, campaign("c1"));
            assert_eq!(found, "c2");
        }
        other => panic!("{other}"),
    }
    // Nothing was encoded, nothing cached.
    let stats = hub.stats();
    assert_eq!((stats.encodes, stats.cached_campaigns), (0, 0));
}

// ----- revocation -----

#[tokio::test]
async fn revoke_closes_the_accounts_connections_with_4401_and_campaign_revocation_4403() {
    within(async {
        let hub = Hub::new(HubConfig::default());
        let mut server = TestServer::start(
            hub.clone(),
            ServerConfig::default(),
            DriverConfig::default(),
        )
        .await;
        let mut a1_inbox = connect(server.addr, "/mail/ws/inbox", "a1").await;
        let mut a1_campaign = connect(server.addr, "/mail/ws/campaigns/c1", "a1").await;
        let mut a2_inbox = connect(server.addr, "/mail/ws/inbox", "a2").await;
        let mut a2_campaign = connect(server.addr, "/mail/ws/campaigns/c1", "a2").await;
        assert_eq!(hub.account_connection_count(&account("a1")), 2);

        hub.revoke(&account("a1"));
        for client in [&mut a1_inbox, &mut a1_campaign] {
            let transcript = read_to_end(client).await;
            assert_eq!(transcript.close, Some(4401));
            assert!(transcript.texts.is_empty());
        }
        for _ in 0..2 {
            assert_eq!(server.next_end().await.summary().cause, CloseCause::Revoked);
        }
        assert_eq!(hub.account_connection_count(&account("a1")), 0);

        // The other account is untouched.
        let event = email(1, 0);
        hub.publish_inbox(&account("a2"), &event).await.unwrap();
        assert_eq!(next_text(&mut a2_inbox).await, inbox_text(&event));

        // An ownership change closes the campaign's subscribers with 4403, and only them.
        hub.revoke_campaign(&campaign("c1"));
        assert_eq!(read_to_end(&mut a2_campaign).await.close, Some(4403));
        let event = email(2, 0);
        hub.publish_inbox(&account("a2"), &event).await.unwrap();
        assert_eq!(next_text(&mut a2_inbox).await, inbox_text(&event));
        assert_eq!(hub.account_connection_count(&account("a2")), 1);
    })
    .await;
}

// ----- shutdown -----

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001_and_counts_return_to_zero() {
    within(async {
        let hub = Hub::new(HubConfig::default());
        let mut server = TestServer::start(
            hub.clone(),
            ServerConfig::default(),
            DriverConfig::default(),
        )
        .await;
        let mut readers = Vec::new();
        for i in 0..20 {
            let path = if i % 2 == 0 {
                "/mail/ws/inbox".to_owned()
            } else {
                format!("/mail/ws/campaigns/c{i}")
            };
            let mut client = connect(server.addr, &path, &format!("a{}", i % 5)).await;
            readers.push(tokio::spawn(async move { read_to_end(&mut client).await }));
        }
        assert_eq!(hub.connection_count(), 20);

        let report = hub.shutdown(Duration::from_secs(5)).await;
        assert_eq!((report.connections, report.remaining), (20, 0));
        assert_eq!(hub.connection_count(), 0);
        assert_eq!(hub.stats().streams, 0);
        for reader in readers {
            assert_eq!(reader.await.unwrap().close, Some(1001));
        }
        for _ in 0..20 {
            let end = server.next_end().await;
            assert!(matches!(end, ConnectionEnd::Closed(_)), "{end:?}");
            assert_eq!(end.summary().cause, CloseCause::Shutdown);
        }
        // No new connections once shutting down: an HTTP 503 before the upgrade.
        assert!(matches!(
            sub(&hub, inbox("a9")),
            Err(SubscribeError::ShuttingDown { .. })
        ));
        let refused = connect_with(server.addr, "/mail/ws/inbox", "a9", None)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, tungstenite::Error::Http(r) if r.status() == 503),
            "{refused}"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_connections_left_after_the_grace() {
    within_virtual(async {
        let hub = Hub::new(HubConfig::default());
        let mut tasks = Vec::new();
        let mut peers = Vec::new();
        for i in 0..3 {
            let (peer, task) = serve_mem(
                &hub,
                inbox(&format!("a{i}")),
                ServerConfig::default(),
                DriverConfig::default(),
            );
            // Stuck writing: neither the close frame nor anything else gets out.
            peer.set_blocked(true);
            peers.push(peer);
            tasks.push(task);
        }
        tokio::task::yield_now().await;
        let start = tokio::time::Instant::now();
        let report = hub.shutdown(Duration::from_secs(1)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!((report.connections, report.remaining), (3, 3));
        for task in tasks {
            let end = task.await.unwrap();
            assert!(matches!(end, ConnectionEnd::Aborted(_)), "{end:?}");
            assert_eq!(end.summary().cause, CloseCause::Shutdown);
        }
        // At once, not after the write timeout.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(hub.connection_count(), 0);
    })
    .await;
}

// ----- late joiners -----

#[tokio::test]
async fn a_late_joiner_gets_the_latest_progress_then_the_terminal_event() {
    within(async {
        let hub = Hub::new(HubConfig::default());
        let server = TestServer::with_defaults(hub.clone()).await;
        let id = campaign("c1");
        for sent in [10, 20] {
            assert_eq!(
                hub.publish_campaign(&id, &progress("c1", sent))
                    .await
                    .unwrap()
                    .delivered,
                0
            );
        }
        let mut early = connect(server.addr, "/mail/ws/campaigns/c1", "a1").await;
        assert_eq!(
            next_text(&mut early).await,
            campaign_text(&progress("c1", 20))
        );

        let done = completed("c1");
        hub.publish_campaign(&id, &done).await.unwrap();
        let transcript = read_to_end(&mut early).await;
        assert_eq!(transcript.texts, [campaign_text(&done)]);
        assert_eq!(transcript.close, Some(1000));

        // After the end, a newcomer gets the terminal event and the close 1000.
        let mut late = connect(server.addr, "/mail/ws/campaigns/c1", "a2").await;
        let transcript = read_to_end(&mut late).await;
        assert_eq!(transcript.texts, [campaign_text(&done)]);
        assert_eq!(transcript.close, Some(1000));
    })
    .await;
}

#[tokio::test]
async fn the_cache_forgets_the_least_recently_updated_campaign() {
    within(async {
        // Without §2.11 history, which would keep every stream that has events.
        let hub = Hub::new(config(|c| {
            c.last_progress_cache = 2;
            c.history = HistoryConfig::none();
        }));
        for (id, sent) in [("c1", 1), ("c2", 1), ("c3", 1), ("c1", 2), ("c4", 1)] {
            hub.publish_campaign(&campaign(id), &progress(id, sent))
                .await
                .unwrap();
        }
        // c1 (updated again before c4) and c4 stay; c2 and c3 were forgotten.
        assert_eq!(hub.stats().cached_campaigns, 2);
        assert_eq!(hub.stats().streams, 2);
        for (id, cached) in [("c1", Some(2)), ("c4", Some(1)), ("c2", None), ("c3", None)] {
            let (peer, _task) = serve_mem(
                &hub,
                campaign_request("a1", id),
                ServerConfig::default(),
                DriverConfig::default(),
            );
            // A terminal event supersedes nothing: a cached progress would come before it.
            hub.publish_campaign(&campaign(id), &completed(id))
                .await
                .unwrap();
            let mut expected = Vec::new();
            if let Some(sent) = cached {
                expected.push(progress(id, sent).encode().bytes().clone());
            }
            expected.push(completed(id).encode().bytes().clone());
            let mut got = Vec::new();
            for _ in 0..expected.len() {
                got.push(text(&peer.recv().await).clone());
            }
            assert_eq!(got, expected, "{id}");
            assert_eq!(close_code(&peer.recv().await), 1000);
        }
    })
    .await;
}

// ----- limits -----

#[tokio::test]
async fn connection_limits_per_account_and_in_total_are_exact() {
    let hub = Hub::new(config(|c| {
        c.max_connections_per_account = 2;
        c.max_connections = 3;
        c.retry_after = Duration::from_secs(7);
    }));
    let first = sub(&hub, inbox("a1")).unwrap();
    let second = sub(&hub, campaign_request("a1", "c1")).unwrap();
    assert_eq!(
        sub(&hub, inbox("a1")).unwrap_err(),
        SubscribeError::TooManyForAccount { limit: 2 }
    );
    let third = sub(&hub, inbox("a2")).unwrap();
    assert_eq!(
        sub(&hub, inbox("a3")).unwrap_err(),
        SubscribeError::TooManyConnections {
            limit: 3,
            retry_after: Duration::from_secs(7)
        }
    );
    assert_eq!(hub.connection_count(), 3);
    assert_eq!(hub.account_connection_count(&account("a1")), 2);

    // A feed dropped without ever being served (a failed upgrade) frees its place.
    drop(second);
    assert_eq!(hub.connection_count(), 2);
    assert_eq!(hub.account_connection_count(&account("a1")), 1);
    let fourth = sub(&hub, inbox("a3")).unwrap();
    assert_eq!(fourth.stream(), &StreamKey::Inbox(account("a3")));
    assert_eq!(hub.stats().refused, 2);

    drop((first, third, fourth));
    assert_eq!(hub.connection_count(), 0);
    assert_eq!(hub.account_connection_count(&account("a1")), 0);
    assert_eq!(hub.stats().streams, 0);
}

#[tokio::test]
async fn limits_are_answered_before_the_upgrade() {
    within(async {
        let hub = Hub::new(config(|c| {
            c.max_connections_per_account = 1;
            c.max_connections = 2;
        }));
        let server = TestServer::start(
            hub.clone(),
            ServerConfig::default(),
            DriverConfig::default(),
        )
        .await;
        let _a1 = connect(server.addr, "/mail/ws/inbox", "a1").await;
        let refused = connect_with(server.addr, "/mail/ws/inbox", "a1", None)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, tungstenite::Error::Http(r) if r.status() == 429),
            "{refused}"
        );
        let _a2 = connect(server.addr, "/mail/ws/inbox", "a2").await;
        let refused = connect_with(server.addr, "/mail/ws/inbox", "a3", None)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, tungstenite::Error::Http(r) if r.status() == 503),
            "{refused}"
        );
        assert_eq!(hub.connection_count(), 2);
    })
    .await;
}

// ----- the broker seam -----

#[tokio::test]
async fn hubs_sharing_a_broker_behave_like_nodes() {
    within(async {
        let broker = Arc::new(LocalBroker::new());
        let node_a = Hub::with_broker(HubConfig::default(), broker.clone());
        let node_b = Hub::with_broker(HubConfig::default(), broker);
        let (on_a, _task_a) = serve_mem(
            &node_a,
            inbox("a1"),
            ServerConfig::default(),
            DriverConfig::default(),
        );
        let (on_b, _task_b) = serve_mem(
            &node_b,
            inbox("a1"),
            ServerConfig::default(),
            DriverConfig::default(),
        );

        let event = email(1, 0);
        let report = node_a.publish_inbox(&account("a1"), &event).await.unwrap();
        assert_eq!(report.delivered, 2);
        let from_a = text(&on_a.recv().await).clone();
        let from_b = text(&on_b.recv().await).clone();
        assert_eq!(from_a, event.encode().bytes());
        assert_eq!(from_a.as_ptr(), from_b.as_ptr());
        assert_eq!((node_a.stats().encodes, node_b.stats().encodes), (1, 0));
        assert_eq!((node_a.stats().delivered, node_b.stats().delivered), (1, 1));
    })
    .await;
}

/// A broker that records the seam's calls and can be made to fail.
#[derive(Default)]
struct Recording {
    local: LocalBroker,
    calls: Mutex<Vec<String>>,
    failing: std::sync::atomic::AtomicBool,
}

impl Broker for Recording {
    fn attach(&self, delivery: HubDelivery) {
        self.calls.lock().unwrap().push("attach".into());
        self.local.attach(delivery);
    }
    fn publish(&self, stream: StreamKey, event: EncodedEvent) -> BrokerFuture<'_> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("publish {stream:?}"));
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Box::pin(async { Err(BrokerError::new("redis is down")) });
        }
        self.local.publish(stream, event)
    }
    fn stream_opened(&self, stream: &StreamKey) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("opened {stream:?}"));
    }
    fn stream_closed(&self, stream: &StreamKey) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("closed {stream:?}"));
    }
}

#[tokio::test]
async fn the_broker_sees_streams_open_and_close_and_its_failures_surface() {
    let broker = Arc::new(Recording::default());
    let hub = Hub::with_broker(HubConfig::default(), broker.clone());
    let first = sub(&hub, campaign_request("a1", "c1")).unwrap();
    let second = sub(&hub, campaign_request("a2", "c1")).unwrap();
    hub.publish_campaign(&campaign("c1"), &progress("c1", 1))
        .await
        .unwrap();
    drop(first);
    drop(second);
    broker
        .failing
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let error = hub
        .publish_campaign(&campaign("c1"), &progress("c1", 2))
        .await
        .unwrap_err();
    assert!(matches!(error, PublishError::Broker(_)));
    assert_eq!(error.to_string(), "broker failed: redis is down");

    let stream = format!("{:?}", StreamKey::Campaign(campaign("c1")));
    assert_eq!(
        *broker.calls.lock().unwrap(),
        [
            "attach".to_owned(),
            format!("opened {stream}"),
            format!("publish {stream}"),
            format!("closed {stream}"),
            format!("publish {stream}"),
        ]
    );
    let _ = Message::Ping(Bytes::new());
}

#[tokio::test]
async fn connections_leave_in_any_order_and_the_rest_keep_receiving() {
    // Without §2.11 history, which would keep the inbox stream for its events.
    let hub = Hub::new(config(|c| {
        c.max_connections_per_account = 64;
        c.history = HistoryConfig::none();
    }));
    let mut feeds: Vec<Option<_>> = (0..50)
        .map(|i| {
            let accepted = if i % 2 == 0 {
                inbox("a1")
            } else {
                campaign_request("a1", "c1")
            };
            Some(sub(&hub, accepted).unwrap())
        })
        .collect();
    // A fixed scramble of 0..50 (7 is coprime with 50).
    let order: Vec<usize> = (0..50).map(|i| (i * 7 + 3) % 50).collect();
    for (gone, &index) in order.iter().enumerate() {
        feeds[index] = None;
        let left = 50 - gone - 1;
        assert_eq!(hub.connection_count(), left);
        assert_eq!(hub.account_connection_count(&account("a1")), left);
        let inbox_left = feeds.iter().step_by(2).filter(|f| f.is_some()).count();
        let report = hub
            .publish_inbox(&account("a1"), &email(gone, 0))
            .await
            .unwrap();
        assert_eq!(report.delivered, inbox_left);
    }
    assert_eq!(hub.stats().streams, 0);
}
