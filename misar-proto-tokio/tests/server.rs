//! `serve_connection`: over real loopback sockets (tokio-tungstenite on both ends) and over an
//! in-memory transport where the exact sequence of writes matters.

#[path = "server_support.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use misar_proto::close::CloseCode;
use misar_proto::message::{Incoming, Message};
use misar_proto::server::{CloseCause, Ending, ServerConfig};
use misar_proto_tokio::hub::{Hub, HubConfig};
use misar_proto_tokio::server::{ConnectionEnd, DriverConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use support::*;

fn hub() -> Hub {
    Hub::new(HubConfig::default())
}

// ----- over loopback sockets -----

#[tokio::test]
async fn events_arrive_in_publish_order() {
    within(async {
        let hub = hub();
        let mut server = TestServer::start(hub.clone(), roomy(1024), DriverConfig::default()).await;
        let mut first = connect(server.addr, "/mail/ws/inbox", "a1").await;
        let mut second = connect(server.addr, "/mail/ws/inbox", "a1").await;
        let mut other = connect(server.addr, "/mail/ws/inbox", "a2").await;

        // Published back to back, without giving the connections a chance to run: they queue.
        let events: Vec<_> = (0..300).map(|i| email(i, 0)).collect();
        for event in &events {
            let report = hub.publish_inbox(&account("a1"), event).await.unwrap();
            assert_eq!(report.delivered, 2);
        }
        let expected: Vec<String> = events.iter().map(inbox_text).collect();
        for client in [&mut first, &mut second] {
            let mut got = Vec::new();
            for _ in 0..expected.len() {
                got.push(next_text(client).await);
            }
            assert_eq!(got, expected);
        }

        // The other account got none of it: its first message is what it is sent now.
        let mine = email(1000, 0);
        hub.publish_inbox(&account("a2"), &mine).await.unwrap();
        assert_eq!(next_text(&mut other).await, inbox_text(&mine));

        for client in [&mut first, &mut second, &mut other] {
            close(client).await;
        }
        for _ in 0..3 {
            let end = server.next_end().await;
            assert!(matches!(end, ConnectionEnd::Closed(_)), "{end:?}");
            assert_eq!(end.summary().cause, CloseCause::PeerClosed);
            assert_eq!(end.summary().ending, Ending::Handshake);
        }
        assert_eq!(hub.connection_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn campaign_progress_coalesces_then_terminal_closes_1000() {
    within(async {
        let hub = hub();
        let mut server = TestServer::start(hub.clone(), roomy(64), DriverConfig::default()).await;
        let mut client = connect(server.addr, "/mail/ws/campaigns/c1", "a1").await;
        let id = campaign("c1");
        let mut published = Vec::new();
        for sent in 1..=50 {
            let event = progress("c1", sent);
            hub.publish_campaign(&id, &event).await.unwrap();
            published.push(campaign_text(&event));
        }
        let done = completed("c1");
        hub.publish_campaign(&id, &done).await.unwrap();
        published.push(campaign_text(&done));

        let transcript = read_to_end(&mut client).await;
        // A subsequence in publish order, ending with the newest progress and the terminal event.
        assert!(
            is_subsequence(&transcript.texts, &published),
            "{:?}",
            transcript.texts
        );
        assert!(
            transcript.texts.len() < published.len(),
            "nothing was coalesced"
        );
        assert_eq!(
            transcript.texts[transcript.texts.len() - 2..],
            published[49..]
        );
        assert_eq!(transcript.close, Some(1000));
        let end = server.next_end().await;
        assert_eq!(end.summary().cause, CloseCause::Finished);
        assert_eq!(end.summary().sent_code, Some(CloseCode::Normal));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn pings_come_at_the_interval_and_pongs_keep_the_connection() {
    within_virtual(async {
        let hub = hub();
        let _server = TestServer::start(
            hub.clone(),
            ServerConfig::default(),
            DriverConfig::default(),
        )
        .await;
        let mut client = connect(_server.addr, "/mail/ws/inbox", "a1").await;
        let start = tokio::time::Instant::now();
        let mut pings = Vec::new();
        // tungstenite answers each ping while we read.
        while pings.len() < 4 {
            match client.next().await {
                Some(Ok(WsMessage::Ping(_))) => pings.push(start.elapsed()),
                other => panic!("unexpected {other:?}"),
            }
        }
        for (i, at) in pings.iter().enumerate() {
            let due = Duration::from_secs(30 * (i as u64 + 1));
            assert!(
                *at >= due - Duration::from_millis(5) && *at <= due + Duration::from_millis(5),
                "ping {i} at {at:?}"
            );
        }
        // Still open after two minutes: an event gets through.
        let event = email(1, 0);
        assert_eq!(
            hub.publish_inbox(&account("a1"), &event)
                .await
                .unwrap()
                .delivered,
            1
        );
        assert_eq!(next_text(&mut client).await, inbox_text(&event));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_closed_1001_after_the_pong_timeout() {
    within_virtual(async {
        let hub = hub();
        let mut server = TestServer::start(
            hub.clone(),
            ServerConfig::default(),
            DriverConfig::default(),
        )
        .await;
        // Never reads, so never answers a ping.
        let mut client = connect(server.addr, "/mail/ws/inbox", "a1").await;
        let start = tokio::time::Instant::now();

        let end = server.next_end().await;
        let waited = start.elapsed();
        let summary = end.summary();
        assert!(matches!(end, ConnectionEnd::Closed(_)), "{end:?}");
        assert_eq!(summary.cause, CloseCause::HeartbeatTimeout);
        assert_eq!(summary.sent_code, Some(CloseCode::GoingAway));
        // Ping at 30 s, no pong by 60 s → close 1001; no answer within the 5 s grace → dropped.
        assert_eq!(summary.ending, Ending::GraceExpired);
        assert!(
            waited >= Duration::from_secs(65) && waited < Duration::from_secs(66),
            "{waited:?}"
        );
        assert_eq!(hub.connection_count(), 0);

        // What the peer finds when it finally reads: one ping, then the close 1001.
        let transcript = read_to_end(&mut client).await;
        assert_eq!(transcript.pings, 1);
        assert_eq!(transcript.close, Some(1001));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_hits_the_write_timeout() {
    within_virtual(async {
        let hub = hub();
        let (end, elapsed) = stall_writes(&hub).await;
        assert!(matches!(end, ConnectionEnd::WriteTimeout(_)), "{end:?}");
        // Long before the heartbeat (ping at 30 s) could have noticed.
        assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
        assert!(end.summary().events_sent < 512);
        assert_eq!(hub.connection_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_slow_consumer_gets_1013_and_the_fast_ones_get_everything() {
    within(async {
        let hub = hub();
        let config = ServerConfig {
            max_queued_events: 8,
            ..ServerConfig::default()
        };
        let driver = DriverConfig {
            write_timeout: Duration::from_secs(60),
            ..DriverConfig::default()
        };
        let mut server = TestServer::start(hub.clone(), config, driver).await;
        let mut slow = connect_with(server.addr, "/mail/ws/inbox", "a1", Some(8 << 10))
            .await
            .unwrap();

        const FAST: usize = 3;
        const EVENTS: usize = 1536;
        let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut readers = Vec::new();
        for _ in 0..FAST {
            let mut client = connect(server.addr, "/mail/ws/inbox", "a1").await;
            let progress_tx = progress_tx.clone();
            readers.push(tokio::spawn(async move {
                let mut texts = Vec::new();
                for _ in 0..EVENTS {
                    texts.push(next_text(&mut client).await);
                    let _ = progress_tx.send(());
                }
                close(&mut client).await;
                texts
            }));
        }

        let events: Vec<_> = (0..EVENTS).map(|i| email(i, 8 << 10)).collect();
        let mut overflowed = 0;
        for event in &events {
            let report = hub.publish_inbox(&account("a1"), event).await.unwrap();
            overflowed += report.overflowed;
            // Each fast reader has this event before the next is published.
            for _ in 0..FAST {
                progress_rx.recv().await.unwrap();
            }
        }
        let expected: Vec<String> = events.iter().map(inbox_text).collect();
        for reader in readers {
            assert_eq!(reader.await.unwrap(), expected);
        }
        assert_eq!(overflowed, 1);
        assert_eq!(hub.stats().overflowed, 1);

        // The slow one now reads: a prefix of the events, then 1013.
        let transcript = read_to_end(&mut slow).await;
        assert!(transcript.texts.len() < EVENTS);
        assert_eq!(transcript.texts[..], expected[..transcript.texts.len()]);
        assert_eq!(transcript.close, Some(1013));
        let mut causes = Vec::new();
        for _ in 0..FAST + 1 {
            causes.push(server.next_end().await.summary().cause);
        }
        assert_eq!(
            causes
                .iter()
                .filter(|c| **c == CloseCause::SlowConsumer)
                .count(),
            1
        );
        assert_eq!(
            causes
                .iter()
                .filter(|c| **c == CloseCause::PeerClosed)
                .count(),
            FAST
        );
    })
    .await;
}

#[tokio::test]
async fn client_messages_go_through_the_session() {
    within(async {
        let hub = hub();
        let mut server = TestServer::start(
            hub.clone(),
            ServerConfig::default(),
            DriverConfig::default(),
        )
        .await;
        let mut client = connect(server.addr, "/mail/ws/inbox", "a1").await;

        // A ping is answered once (tungstenite's pong; the session's is not sent twice): the
        // next message after the pong is the event published after it.
        client
            .send(WsMessage::Ping(Bytes::from_static(b"hi")))
            .await
            .unwrap();
        match client.next().await {
            Some(Ok(WsMessage::Pong(payload))) => assert_eq!(&payload[..], b"hi"),
            other => panic!("expected the pong, got {other:?}"),
        }
        let event = email(1, 0);
        hub.publish_inbox(&account("a1"), &event).await.unwrap();
        match client.next().await {
            Some(Ok(WsMessage::Text(text))) => assert_eq!(text.as_str(), inbox_text(&event)),
            other => panic!("expected the event, got {other:?}"),
        }

        // A small text is ignored; one over the 4 KiB limit is answered with 1009.
        client.send(WsMessage::text("hello")).await.unwrap();
        client
            .send(WsMessage::text("x".repeat(5000)))
            .await
            .unwrap();
        let transcript = read_to_end(&mut client).await;
        assert!(transcript.texts.is_empty());
        assert_eq!(transcript.close, Some(1009));
        let end = server.next_end().await;
        assert_eq!(end.summary().cause, CloseCause::MessageTooBig);
    })
    .await;
}

#[tokio::test]
async fn a_dropped_peer_ends_the_connection() {
    within(async {
        let hub = hub();
        let mut server = TestServer::start(
            hub.clone(),
            ServerConfig::default(),
            DriverConfig::default(),
        )
        .await;
        let client = connect(server.addr, "/mail/ws/inbox", "a1").await;
        assert_eq!(hub.connection_count(), 1);
        drop(client);
        let end = server.next_end().await;
        assert_eq!(end.summary().cause, CloseCause::TransportClosed);
        assert!(!end.summary().close_sent);
        assert_eq!(hub.connection_count(), 0);
    })
    .await;
}

// ----- over an in-memory transport -----

#[tokio::test]
async fn one_flush_per_batch() {
    within(async {
        let hub = hub();
        let driver = DriverConfig {
            max_batch: 4,
            ..DriverConfig::default()
        };
        let (peer, _task) = serve_mem(&hub, inbox("a1"), roomy(64), driver);
        peer.set_blocked(true);
        let events: Vec<_> = (0..10).map(|i| email(i, 0)).collect();
        hub.publish_inbox(&account("a1"), &events[0]).await.unwrap();
        // The driver took the first event and is stuck writing it; the rest queue meanwhile.
        peer.until_writer_waits().await;
        for event in &events[1..] {
            hub.publish_inbox(&account("a1"), event).await.unwrap();
        }
        peer.set_blocked(false);
        let mut got = Vec::new();
        for _ in 0..10 {
            got.push(text(&peer.recv().await).clone());
        }
        let expected: Vec<Bytes> = events.iter().map(|e| e.encode().bytes().clone()).collect();
        assert_eq!(got, expected);
        // [0], then the nine queued ones in batches of at most four: 4 + 4 + 1.
        assert_eq!(peer.flushes(), 4);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_blocked_write_times_out() {
    within_virtual(async {
        let hub = hub();
        let (peer, task) = serve_mem(
            &hub,
            inbox("a1"),
            ServerConfig::default(),
            DriverConfig::default(),
        );
        peer.set_blocked(true);
        let start = tokio::time::Instant::now();
        hub.publish_inbox(&account("a1"), &email(0, 0))
            .await
            .unwrap();
        let end = task.await.unwrap();
        assert!(matches!(end, ConnectionEnd::WriteTimeout(_)), "{end:?}");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(end.summary().cause, CloseCause::TransportClosed);
        assert_eq!(hub.connection_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_failing_transport_is_reported() {
    within(async {
        let hub = hub();
        let (peer, task) = serve_mem(
            &hub,
            inbox("a1"),
            ServerConfig::default(),
            DriverConfig::default(),
        );
        peer.set_failing(true);
        hub.publish_inbox(&account("a1"), &email(0, 0))
            .await
            .unwrap();
        let end = task.await.unwrap();
        match &end {
            ConnectionEnd::TransportError { error, .. } => {
                assert_eq!(error.to_string(), "in-memory transport failed");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(hub.connection_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn commands_get_through_a_full_queue() {
    within(async {
        let hub = hub();
        let config = ServerConfig {
            max_queued_events: 4,
            ..ServerConfig::default()
        };
        let (peer, task) = serve_mem(&hub, inbox("a1"), config, DriverConfig::default());
        peer.set_blocked(true);
        hub.publish_inbox(&account("a1"), &email(0, 0))
            .await
            .unwrap();
        peer.until_writer_waits().await;
        // The queue holds exactly its bound: full, not overflowing.
        for i in 1..=4 {
            let report = hub
                .publish_inbox(&account("a1"), &email(i, 0))
                .await
                .unwrap();
            assert_eq!((report.delivered, report.overflowed), (1, 0));
        }
        hub.revoke(&account("a1"));
        peer.set_blocked(false);
        // The event that was being written, then the revocation; the queued four are dropped.
        assert_eq!(text(&peer.recv().await), email(0, 0).encode().bytes());
        assert_eq!(close_code(&peer.recv().await), 4401);
        peer.send(Incoming::Close(misar_proto::message::ReceivedClose {
            code: Some(4401),
            reason: Bytes::new(),
        }));
        let end = task.await.unwrap();
        assert_eq!(end.summary().cause, CloseCause::Revoked);
        assert_eq!(end.summary().unsent_events, 4);
        assert_eq!(end.summary().ending, Ending::Handshake);
    })
    .await;
}

/// Serves an existing feed over an in-memory transport.
fn serve_feed(feed: misar_proto_tokio::hub::Feed) -> MemPeer {
    let (transport, peer) = mem_pair();
    tokio::spawn(misar_proto_tokio::server::serve_connection(
        transport,
        feed,
        DriverConfig::default(),
    ));
    peer
}

#[tokio::test]
async fn events_before_the_upgrade_queue_in_the_session_in_order() {
    within(async {
        let hub = hub();
        let feed = hub
            .subscribe(inbox("a1"), hub.mark(), &ServerConfig::default())
            .unwrap();
        // Published during the "upgrade": straight into the session's one queue.
        let events: Vec<_> = (0..3).map(|i| email(i, 0)).collect();
        for event in &events {
            assert_eq!(
                hub.publish_inbox(&account("a1"), event)
                    .await
                    .unwrap()
                    .delivered,
                1
            );
        }
        assert_eq!(feed.session().lock().unwrap().queued_events(), 3);
        let peer = serve_feed(feed);
        for event in &events {
            assert_eq!(text(&peer.recv().await), event.encode().bytes());
        }
    })
    .await;
}

#[tokio::test]
async fn overflow_and_commands_before_the_upgrade_are_the_sessions() {
    within(async {
        let hub = hub();
        // The session's own bound applies from the subscribe on (no second buffer): three
        // events for a two-event queue close it with 1013 as soon as it is served.
        let small = ServerConfig {
            max_queued_events: 2,
            ..ServerConfig::default()
        };
        let feed = hub.subscribe(inbox("a1"), hub.mark(), &small).unwrap();
        let mut overflowed = 0;
        for i in 0..3 {
            overflowed += hub
                .publish_inbox(&account("a1"), &email(i, 0))
                .await
                .unwrap()
                .overflowed;
        }
        assert_eq!(overflowed, 1);
        assert_eq!(close_code(&serve_feed(feed).recv().await), 1013);

        // Revoked before it is served: 4401 and nothing else.
        let feed = hub
            .subscribe(inbox("a2"), hub.mark(), &ServerConfig::default())
            .unwrap();
        hub.publish_inbox(&account("a2"), &email(0, 0))
            .await
            .unwrap();
        hub.revoke(&account("a2"));
        assert_eq!(close_code(&serve_feed(feed).recv().await), 4401);

        // Revoked while its hooks ran (the mark is older than the revocation): 4401 at once.
        let mark = hub.mark();
        hub.revoke(&account("a3"));
        let feed = hub
            .subscribe(inbox("a3"), mark, &ServerConfig::default())
            .unwrap();
        hub.publish_inbox(&account("a3"), &email(0, 0))
            .await
            .unwrap();
        assert_eq!(close_code(&serve_feed(feed).recv().await), 4401);
    })
    .await;
}

#[tokio::test]
async fn a_transports_violations_are_answered_by_the_session_not_the_driver() {
    use misar_proto::message::Violation;
    within(async {
        let hub = hub();
        // Not tungstenite: the in-memory transport reports the peer's fault through
        // `TransportError::violation`, and the session picks the code and the cause.
        for (violation, code, cause) in [
            (Violation::MessageTooBig, 1009, CloseCause::MessageTooBig),
            (Violation::Protocol, 1002, CloseCause::ProtocolError),
            (Violation::InvalidUtf8, 1007, CloseCause::InvalidPayload),
        ] {
            let (peer, task) = serve_mem(
                &hub,
                inbox("a1"),
                ServerConfig::default(),
                DriverConfig::default(),
            );
            peer.send_violation(violation);
            assert_eq!(close_code(&peer.recv().await), code);
            peer.send(Incoming::Close(misar_proto::message::ReceivedClose {
                code: Some(code),
                reason: Bytes::new(),
            }));
            let end = task.await.unwrap();
            assert!(matches!(end, ConnectionEnd::Closed(_)), "{end:?}");
            assert_eq!(end.summary().cause, cause);
            assert_eq!(end.summary().sent_code.map(|c| c.as_u16()), Some(code));
        }
    })
    .await;
}

#[tokio::test]
async fn the_peer_hanging_up_ends_the_connection() {
    within(async {
        let hub = hub();
        let (mut peer, task) = serve_mem(
            &hub,
            inbox("a1"),
            ServerConfig::default(),
            DriverConfig::default(),
        );
        peer.hang_up();
        let end = task.await.unwrap();
        assert!(matches!(end, ConnectionEnd::Closed(_)), "{end:?}");
        assert_eq!(end.summary().cause, CloseCause::TransportClosed);
        assert_eq!(end.summary().ending, Ending::TransportClosed);
        assert!(
            peer.drain().is_empty(),
            "nothing is sent to a transport that ended"
        );
        let _ = Message::Ping(Bytes::new());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_keeps_running_while_events_stream() {
    within_virtual(async {
        let hub = hub();
        let (peer, task) = serve_mem(&hub, inbox("a1"), roomy(1 << 16), DriverConfig::default());
        // Every flush takes 100 ms and an event comes every 50 ms: the driver always has
        // something to write and never waits idle.
        peer.set_flush_delay(Duration::from_millis(100));
        let publisher = {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0..6000 {
                    hub.publish_inbox(&account("a1"), &email(i, 0))
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let start = tokio::time::Instant::now();
        let mut pings = Vec::new();
        let mut texts = 0;
        // Five minutes of streaming; the peer answers every ping at once.
        while start.elapsed() < Duration::from_secs(300) {
            match peer.recv().await {
                Message::Ping(payload) => {
                    pings.push(start.elapsed());
                    peer.send(Incoming::Pong(payload));
                }
                Message::Text(_) => texts += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(texts > 1000, "{texts}");
        // A ping every 30 s (give or take a write), and no heartbeat timeout.
        assert!((9..=10).contains(&pings.len()), "{pings:?}");
        for pair in pings.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(29_500) && gap <= Duration::from_millis(30_500),
                "{pings:?}"
            );
        }
        assert!(!task.is_finished());
        publisher.abort();
    })
    .await;
}
