//! The reconnecting client over real loopback sockets, against a tokio-tungstenite server
//! written here. The clock is tokio's paused one: backoff delays and the liveness window pass
//! instantly, and elapsed times are exact.

mod client_util;

use std::time::Duration;

use client_util::{KEY, TestServer, at, completed, email, progress, resume_frame};
use futures_util::StreamExt;
use misar_proto::auth::ApiKey;
use misar_proto::backoff::BackoffConfig;
use misar_proto::client::AuthStyle;
use misar_proto::close::{CloseCode, Disconnect, Fatal};
use misar_proto::event::{Event, decode_campaign, decode_inbox};
use misar_proto::route::CampaignId;
use misar_proto_tokio::client::{
    Client, ClientBuilder, ReconnectPolicy, SubscriptionError, Update, Updates,
};
use tokio::time::Instant;

/// A client that does not opt in to §2.11 (this test server sends no resume frames unless a
/// test scripts them; the tests of resume opt in).
fn builder(server: &TestServer) -> ClientBuilder {
    resuming(server).resume(false)
}

/// A client with the default: opted in to §2.11.
fn resuming(server: &TestServer) -> ClientBuilder {
    Client::builder(server.base_url(), ApiKey::parse(KEY).unwrap()).jitter_seed(7)
}

fn inbox(frame: &str) -> Event {
    decode_inbox(frame.as_bytes()).unwrap().into()
}

fn campaign(frame: &str) -> Event {
    decode_campaign(frame.as_bytes()).unwrap().into()
}

/// The next update, which must be an event; returns it.
async fn next_event(updates: &mut Updates) -> Event {
    match updates.next().await {
        Some(Ok(Update::Event { event, .. })) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn expect_connected(updates: &mut Updates) {
    match updates.next().await {
        Some(Ok(Update::Connected)) => {}
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// The next update, which must be `Reconnecting`; returns its cause and attempt number.
async fn expect_reconnecting(updates: &mut Updates) -> (Disconnect, Duration, u32) {
    match updates.next().await {
        Some(Ok(Update::Reconnecting {
            cause,
            after,
            attempt,
            ..
        })) => (cause, after, attempt),
        other => panic!("expected Reconnecting, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn header_auth_and_delivery_in_order() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();
    let frames: Vec<String> = (0..50).map(email).collect();

    let script = tokio::spawn({
        let frames = frames.clone();
        async move {
            let mut conn = server.accept().await;
            for frame in &frames {
                conn.send(frame).await;
            }
            (server, conn)
        }
    });

    let mut sub = client.subscribe_inbox();
    for frame in &frames {
        assert_eq!(sub.next().await.unwrap().unwrap(), inbox(frame));
    }
    let (_server, conn) = script.await.unwrap();
    assert_eq!(conn.seen.path_and_query, "/mail/ws/inbox");
    assert_eq!(
        conn.seen.authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[tokio::test(start_paused = true)]
async fn query_auth_puts_the_key_in_the_token_parameter() {
    let server = TestServer::bind().await;
    let client = builder(&server).auth(AuthStyle::Query).build().unwrap();
    let id = CampaignId::new("spring-sale").unwrap();

    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&progress("spring-sale", 1, 10)).await;
        conn.seen
    });
    let mut sub = client.subscribe_campaign(id);
    assert_eq!(
        sub.next().await.unwrap().unwrap(),
        campaign(&progress("spring-sale", 1, 10))
    );
    let seen = script.await.unwrap();
    assert_eq!(
        seen.path_and_query,
        format!("/mail/ws/campaigns/spring-sale?token={KEY}")
    );
    assert_eq!(seen.authorization, None);
}

#[tokio::test(start_paused = true)]
async fn reconnects_after_1001_and_keeps_order() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();

    let script = tokio::spawn(async move {
        let mut first = server.accept().await;
        first.send(&email(1)).await;
        first.close(1001, "going away").await;
        // The client answers the close before it lets the connection go.
        assert_eq!(first.expect_close().await, Some(1001));
        let mut second = server.accept().await;
        second.send(&email(2)).await;
        (server, second)
    });

    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    assert_eq!(next_event(&mut updates).await, inbox(&email(1)));
    let (cause, after, attempt) = expect_reconnecting(&mut updates).await;
    assert_eq!(cause, Disconnect::Closed(CloseCode::GoingAway));
    assert!(after <= Duration::from_millis(500), "{after:?}");
    assert_eq!(attempt, 1);
    expect_connected(&mut updates).await;
    assert_eq!(next_event(&mut updates).await, inbox(&email(2)));
    let (_server, _conn) = script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reconnects_after_a_dropped_connection() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();

    let script = tokio::spawn(async move {
        let mut first = server.accept().await;
        first.send(&email(1)).await;
        drop(first); // no close frame: the TCP connection just ends
        let mut second = server.accept().await;
        second.send(&email(2)).await;
        (server, second)
    });

    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    assert_eq!(next_event(&mut updates).await, inbox(&email(1)));
    let (cause, _, _) = expect_reconnecting(&mut updates).await;
    assert_eq!(cause, Disconnect::Dropped);
    expect_connected(&mut updates).await;
    assert_eq!(next_event(&mut updates).await, inbox(&email(2)));
    let (_server, _conn) = script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn inbox_reconnects_after_1000_and_503_is_retried() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();

    let script = tokio::spawn(async move {
        let mut first = server.accept().await;
        first.close(1000, "").await;
        server.reject(503, r#"{"error":"unavailable"}"#).await;
        let mut third = server.accept().await;
        third.send(&email(3)).await;
        (server, third)
    });

    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    let (cause, _, attempt) = expect_reconnecting(&mut updates).await;
    assert_eq!(cause, Disconnect::Closed(CloseCode::Normal));
    assert_eq!(attempt, 1);
    let (cause, _, attempt) = expect_reconnecting(&mut updates).await;
    assert_eq!(cause, Disconnect::HandshakeRejected { status: 503 });
    assert_eq!(attempt, 2);
    expect_connected(&mut updates).await;
    assert_eq!(next_event(&mut updates).await, inbox(&email(3)));
    let (_server, _conn) = script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn http_403_ends_with_the_body_and_no_retry() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();
    let body = r#"{"error":"forbidden","closeCode":4403,"message":"campaign not found"}"#;

    let script = tokio::spawn(async move {
        server.reject(403, body).await;
        // A retry would come within the first backoff windows; a minute is plenty.
        assert!(server.next_attempt(Duration::from_secs(60)).await.is_none());
    });

    let mut sub = client.subscribe_campaign(CampaignId::new("not-mine").unwrap());
    let error = sub.next().await.unwrap().unwrap_err();
    match &error {
        SubscriptionError::Rejected {
            status,
            fatal,
            rejection,
        } => {
            assert_eq!(*status, 403);
            assert_eq!(*fatal, Fatal::HandshakeForbidden);
            let rejection = rejection.as_ref().expect("the JSON body");
            assert_eq!(rejection.error, "forbidden");
            assert_eq!(rejection.close_code, Some(4403));
            assert_eq!(rejection.message.as_deref(), Some("campaign not found"));
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(error.is_auth_failure());
    assert!(!error.to_string().contains(KEY));
    assert!(sub.next().await.is_none());
    script.await.unwrap();
}

async fn fatal_close(code: u16, expected: CloseCode, fatal: Fatal) {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();

    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&email(1)).await;
        conn.close(code, "revoked").await;
        assert!(server.next_attempt(Duration::from_secs(60)).await.is_none());
    });

    let mut sub = client.subscribe_inbox();
    assert_eq!(sub.next().await.unwrap().unwrap(), inbox(&email(1)));
    let error = sub.next().await.unwrap().unwrap_err();
    assert_eq!(
        error,
        SubscriptionError::Closed {
            code: expected,
            fatal,
            reason: "revoked".into(),
        }
    );
    assert!(error.is_auth_failure());
    assert!(sub.next().await.is_none());
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_4401_is_fatal() {
    fatal_close(4401, CloseCode::Unauthorized, Fatal::Unauthorized).await;
}

#[tokio::test(start_paused = true)]
async fn close_4403_is_fatal() {
    fatal_close(4403, CloseCode::Forbidden, Fatal::Forbidden).await;
}

#[tokio::test(start_paused = true)]
async fn silent_server_is_replaced_after_interval_plus_timeout() {
    let server = TestServer::bind().await;
    let backoff = BackoffConfig {
        base: Duration::from_millis(100),
        cap: Duration::from_millis(100),
    };
    let client = builder(&server)
        .heartbeat(Duration::from_secs(2), Duration::from_secs(3))
        .backoff(backoff)
        .build()
        .unwrap();

    let script = tokio::spawn(async move {
        let first = server.accept().await;
        let opened = Instant::now();
        // Silent from here on: no events, no pings; the connection stays open.
        let second = server.accept().await;
        let replaced = opened.elapsed();
        drop(first);
        (server, second, replaced)
    });

    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    let (cause, after, _) = expect_reconnecting(&mut updates).await;
    assert_eq!(cause, Disconnect::Dropped);
    expect_connected(&mut updates).await;
    let (_server, _second, replaced) = script.await.unwrap();
    // Declared dead at 2 s + 3 s, then the drawn backoff delay (tokio's timers round up to
    // the next millisecond).
    let expected = Duration::from_secs(5) + after;
    assert!(
        replaced >= expected && replaced - expected < Duration::from_millis(2),
        "replaced after {replaced:?}, expected {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn pings_keep_a_quiet_connection_alive() {
    let server = TestServer::bind().await;
    let client = builder(&server)
        .heartbeat(Duration::from_secs(2), Duration::from_secs(3))
        .build()
        .unwrap();

    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        // 20 s of pings every 2 s: four times the liveness window, and never a data message.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            conn.ping().await;
        }
        conn.send(&email(1)).await;
        (server, conn)
    });

    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    // Had the client declared the server dead, a Reconnecting would come first.
    assert_eq!(next_event(&mut updates).await, inbox(&email(1)));
    let (_server, _conn) = script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn campaign_ends_after_its_terminal_event() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();

    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&progress("c-1", 5, 10)).await;
        conn.send(&completed("c-1", 10)).await;
        conn.close(1000, "campaign finished").await;
        assert_eq!(conn.expect_close().await, Some(1000));
        assert!(server.next_attempt(Duration::from_secs(60)).await.is_none());
    });

    let mut sub = client.subscribe_campaign(CampaignId::new("c-1").unwrap());
    assert_eq!(
        sub.next().await.unwrap().unwrap(),
        campaign(&progress("c-1", 5, 10))
    );
    assert_eq!(
        sub.next().await.unwrap().unwrap(),
        campaign(&completed("c-1", 10))
    );
    assert!(sub.next().await.is_none());
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn campaign_1000_without_a_terminal_event_reconnects_with_backoff() {
    // A proxy (or a draining load balancer) closes with 1000 too: no finish without the
    // campaign's terminal event.
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();

    let script = tokio::spawn(async move {
        let mut first = server.accept().await;
        first.send(&progress("c-1", 5, 10)).await;
        first.close(1000, "").await;
        assert_eq!(first.expect_close().await, Some(1000));
        let mut second = server.accept().await;
        assert_eq!(second.seen.path_and_query, "/mail/ws/campaigns/c-1");
        second.send(&progress("c-1", 8, 10)).await;
        second.close(1000, "").await;
        assert_eq!(second.expect_close().await, Some(1000));
        let mut third = server.accept().await;
        third.send(&completed("c-1", 10)).await;
        third.close(1000, "campaign finished").await;
        assert_eq!(third.expect_close().await, Some(1000));
        // Finished: no fourth attempt.
        assert!(server.next_attempt(Duration::from_secs(60)).await.is_none());
    });

    let mut updates = client
        .subscribe_campaign(CampaignId::new("c-1").unwrap())
        .updates();
    expect_connected(&mut updates).await;
    assert_eq!(
        next_event(&mut updates).await,
        campaign(&progress("c-1", 5, 10))
    );
    let (cause, after, attempt) = expect_reconnecting(&mut updates).await;
    assert_eq!(cause, Disconnect::Closed(CloseCode::Normal));
    assert!(after <= Duration::from_millis(500), "{after:?}");
    assert_eq!(attempt, 1);
    expect_connected(&mut updates).await;
    assert_eq!(
        next_event(&mut updates).await,
        campaign(&progress("c-1", 8, 10))
    );
    // A second one in a row backs off further, as on the inbox.
    let (cause, after, attempt) = expect_reconnecting(&mut updates).await;
    assert_eq!(cause, Disconnect::Closed(CloseCode::Normal));
    assert!(after <= Duration::from_millis(1000), "{after:?}");
    assert_eq!(attempt, 2);
    expect_connected(&mut updates).await;
    assert_eq!(
        next_event(&mut updates).await,
        campaign(&completed("c-1", 10))
    );
    assert!(updates.next().await.is_none());
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn campaign_1000_without_a_terminal_event_and_no_reconnects_gives_up() {
    let server = TestServer::bind().await;
    let client = builder(&server)
        .reconnect(ReconnectPolicy::Never)
        .build()
        .unwrap();
    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&progress("c-1", 5, 10)).await;
        conn.close(1000, "").await;
        assert_eq!(conn.expect_close().await, Some(1000));
    });
    let mut sub = client.subscribe_campaign(CampaignId::new("c-1").unwrap());
    assert_eq!(
        sub.next().await.unwrap().unwrap(),
        campaign(&progress("c-1", 5, 10))
    );
    // Not a normal end (`None`): the subscription did not see its campaign finish.
    match sub.next().await {
        Some(Err(SubscriptionError::GaveUp { cause, .. })) => {
            assert_eq!(cause, Disconnect::Closed(CloseCode::Normal));
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    assert!(sub.next().await.is_none());
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_sends_1000_and_ends_the_stream() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();

    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&email(1)).await;
        // Reading the client's close makes tungstenite queue the answer; the next read
        // flushes it and sees the end.
        let code = conn.expect_close().await;
        assert!(conn.next_message().await.is_none());
        assert!(server.next_attempt(Duration::from_secs(60)).await.is_none());
        code
    });

    let mut sub = client.subscribe_inbox();
    assert_eq!(sub.next().await.unwrap().unwrap(), inbox(&email(1)));
    let started = Instant::now();
    sub.close().await;
    // The server's answer ended it, not the 5 s close grace.
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(sub.next().await.is_none());
    assert_eq!(script.await.unwrap(), Some(1000));
}

#[tokio::test(start_paused = true)]
async fn close_while_waiting_to_reconnect_ends_at_once() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();

    let script = tokio::spawn(async move {
        server.reject(503, "").await;
        assert!(server.next_attempt(Duration::from_secs(60)).await.is_none());
    });

    let mut updates = client.subscribe_inbox().updates();
    let (cause, _, _) = expect_reconnecting(&mut updates).await;
    assert_eq!(cause, Disconnect::HandshakeRejected { status: 503 });
    updates.close().await;
    assert!(updates.next().await.is_none());
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn undecodable_messages_do_not_end_the_stream() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();

    let script = tokio::spawn(async move {
        for _ in 0..2 {
            let mut conn = server.accept().await;
            conn.send("not json").await;
            conn.send(r#"{"type":"email_received","from":1}"#).await;
            conn.send_binary(b"\x00\x01").await;
            conn.send(&email(1)).await;
            conn.close(1001, "").await;
        }
    });

    // As events only: the bad messages are skipped.
    let mut sub = client.subscribe_inbox();
    assert_eq!(sub.next().await.unwrap().unwrap(), inbox(&email(1)));
    drop(sub);

    // As updates: each one is reported, with what was received.
    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    for expected in [
        &b"not json"[..],
        br#"{"type":"email_received","from":1}"#,
        b"\x00\x01",
    ] {
        match updates.next().await {
            Some(Ok(Update::Invalid { raw, .. })) => assert_eq!(raw.as_ref(), expected),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    match updates.next().await {
        Some(Ok(Update::Event { event, raw, .. })) => {
            assert_eq!(event, inbox(&email(1)));
            assert_eq!(raw.as_ref(), email(1).as_bytes());
        }
        other => panic!("expected an event, got {other:?}"),
    }
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn oversized_message_fails_the_connection_per_the_builder_limit() {
    let server = TestServer::bind().await;
    let client = builder(&server).max_message_size(1024).build().unwrap();
    let big = format!(
        r#"{{"type":"email_received","from":"a@b.c","subject":"{}","receivedAt":"2026-05-27T10:15:00Z"}}"#,
        "x".repeat(2000)
    );

    let script = tokio::spawn(async move {
        let mut first = server.accept().await;
        first.send(&big).await;
        let mut second = server.accept().await;
        second.send(&email(2)).await;
        (server, first, second)
    });

    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    let (cause, _, _) = expect_reconnecting(&mut updates).await;
    assert_eq!(cause, Disconnect::Dropped);
    expect_connected(&mut updates).await;
    assert_eq!(next_event(&mut updates).await, inbox(&email(2)));
    let _ = script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reconnect_policy_never_gives_up_at_the_first_end() {
    let server = TestServer::bind().await;
    let client = builder(&server)
        .reconnect(ReconnectPolicy::Never)
        .build()
        .unwrap();

    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.close(1001, "").await;
        assert!(server.next_attempt(Duration::from_secs(60)).await.is_none());
    });

    let mut sub = client.subscribe_inbox();
    assert_eq!(
        sub.next().await.unwrap().unwrap_err(),
        SubscriptionError::GaveUp {
            attempts: 0,
            cause: Disconnect::Closed(CloseCode::GoingAway),
        }
    );
    assert!(sub.next().await.is_none());
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn reconnect_policy_up_to_counts_attempts_in_a_row() {
    let server = TestServer::bind().await;
    let client = builder(&server)
        .reconnect(ReconnectPolicy::UpTo(2))
        .build()
        .unwrap();

    let script = tokio::spawn(async move {
        for _ in 0..3 {
            server.reject(502, "").await;
        }
        assert!(
            server
                .next_attempt(Duration::from_secs(120))
                .await
                .is_none()
        );
    });

    let mut updates = client.subscribe_inbox().updates();
    assert_eq!(expect_reconnecting(&mut updates).await.2, 1);
    assert_eq!(expect_reconnecting(&mut updates).await.2, 2);
    assert_eq!(
        updates.next().await.unwrap().unwrap_err(),
        SubscriptionError::GaveUp {
            attempts: 2,
            cause: Disconnect::HandshakeRejected { status: 502 },
        }
    );
    assert!(updates.next().await.is_none());
    script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn retry_after_of_429_and_503_is_the_next_delay_capped_by_the_backoff_cap() {
    let server = TestServer::bind().await;
    let client = builder(&server)
        .backoff(BackoffConfig {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
        })
        .build()
        .unwrap();
    let script = tokio::spawn(async move {
        server
            .reject_with(503, r#"{"error":"overloaded"}"#, &[("retry-after", "7")])
            .await;
        let after_503 = Instant::now();
        server
            .reject_with(
                429,
                r#"{"error":"too_many_connections"}"#,
                &[("retry-after", "3600")],
            )
            .await;
        let after_429 = Instant::now();
        let conn = server.accept().await;
        (server, conn, after_503, after_429, Instant::now())
    });
    let mut updates = client.subscribe_inbox().updates();
    for (status, after, asked) in [(503, 7, 7), (429, 20, 3600)] {
        match updates.next().await {
            Some(Ok(Update::Reconnecting {
                cause,
                after: delay,
                retry_after,
                ..
            })) => {
                assert_eq!(cause, Disconnect::HandshakeRejected { status });
                assert_eq!(delay, Duration::from_secs(after));
                assert_eq!(retry_after, Some(Duration::from_secs(asked)));
            }
            other => panic!("expected Reconnecting, got {other:?}"),
        }
    }
    expect_connected(&mut updates).await;
    let (_server, _conn, after_503, after_429, connected) = script.await.unwrap();
    // The paused clock makes the waits exact.
    assert!(after_429 - after_503 >= Duration::from_secs(7));
    assert!(connected - after_429 >= Duration::from_secs(20));
    assert!(connected - after_429 < Duration::from_secs(21));
}

#[tokio::test(start_paused = true)]
async fn the_subprotocol_style_needs_the_misar_v1_echo() {
    let server = TestServer::bind().await;
    let client = builder(&server)
        .auth(AuthStyle::Subprotocol)
        .build()
        .unwrap();
    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&email(1)).await;
        (server, conn)
    });
    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    assert_eq!(next_event(&mut updates).await, inbox(&email(1)));
    let (_server, conn) = script.await.unwrap();
    assert_eq!(
        conn.seen.protocols.as_deref(),
        Some(format!("misar.v1, misar.bearer.{KEY}").as_str())
    );
    assert!(!conn.seen.path_and_query.contains("token"));
}

// ----- missed-event recovery (§2.11) -----

#[tokio::test(start_paused = true)]
async fn resume_is_on_by_default_and_every_reconnect_asks_from_the_last_event_seen() {
    let server = TestServer::bind().await;
    let client = resuming(&server).build().unwrap();
    let script = tokio::spawn(async move {
        let mut first = server.accept().await;
        first.send(&resume_frame("e1", 0, true)).await;
        first.send(&at(&email(1), 3)).await;
        first.send(&at(&email(2), 8)).await;
        drop(first); // no close: a drop
        let mut second = server.accept().await;
        second.send(&resume_frame("e1", 8, true)).await;
        second.send(&at(&email(3), 9)).await;
        (server, second)
    });
    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    let position = |text: &str| misar_proto::resume::Position::parse(text).unwrap();
    match updates.next().await {
        Some(Ok(Update::Resumed { position: p })) => assert_eq!(p, position("e1:0")),
        other => panic!("expected Resumed, got {other:?}"),
    }
    for (n, offset) in [(1, 3), (2, 8)] {
        match updates.next().await {
            Some(Ok(Update::Event {
                event,
                offset: o,
                raw,
            })) => {
                assert_eq!(event, inbox(&email(n)));
                assert_eq!(o, Some(offset));
                assert_eq!(raw, at(&email(n), offset).as_bytes());
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }
    assert_eq!(updates.position(), Some(&position("e1:8")));
    expect_reconnecting(&mut updates).await;
    expect_connected(&mut updates).await;
    assert!(matches!(
        updates.next().await,
        Some(Ok(Update::Resumed { .. }))
    ));
    assert_eq!(next_event(&mut updates).await, inbox(&email(3)));
    assert_eq!(updates.position(), Some(&position("e1:9")));
    let (_server, second) = script.await.unwrap();
    assert_eq!(second.seen.resume.as_deref(), Some("e1:8"));
}

#[tokio::test(start_paused = true)]
async fn the_first_connection_sends_new() {
    let server = TestServer::bind().await;
    let client = resuming(&server).build().unwrap();
    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&resume_frame("e1", 5, true)).await;
        conn.send(&at(&email(1), 6)).await;
        conn.seen
    });
    let mut sub = client.subscribe_inbox();
    assert_eq!(sub.next().await.unwrap().unwrap(), inbox(&email(1)));
    assert_eq!(
        sub.position().map(ToString::to_string).as_deref(),
        Some("e1:6")
    );
    assert_eq!(script.await.unwrap().resume.as_deref(), Some("new"));
}

#[tokio::test(start_paused = true)]
async fn recovered_false_is_a_non_final_error_of_the_subscription_then_events_go_on() {
    let server = TestServer::bind().await;
    let client = resuming(&server).build().unwrap();
    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&resume_frame("e2", 41, false)).await;
        conn.send(&at(&email(1), 42)).await;
        (server, conn)
    });
    let id = misar_proto::resume::Position::parse("old:7").unwrap();
    let mut sub = client.subscribe_from(misar_proto::route::Channel::Inbox, id);
    match sub.next().await {
        Some(Err(error @ SubscriptionError::NotRecovered { .. })) => {
            assert!(!error.is_final());
            assert!(error.to_string().contains("not recovered"), "{error}");
            let SubscriptionError::NotRecovered { position } = error else {
                unreachable!()
            };
            assert_eq!(position.map(|p| p.to_string()).as_deref(), Some("e2:41"));
        }
        other => panic!("expected NotRecovered, got {other:?}"),
    }
    assert_eq!(sub.next().await.unwrap().unwrap(), inbox(&email(1)));
    assert_eq!(
        sub.position().map(ToString::to_string).as_deref(),
        Some("e2:42")
    );
    let (_server, conn) = script.await.unwrap();
    assert_eq!(conn.seen.resume.as_deref(), Some("old:7"));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_ignores_the_opt_in_is_reported_not_hidden() {
    let server = TestServer::bind().await;
    let client = resuming(&server).build().unwrap();
    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&email(1)).await;
        (server, conn)
    });
    let mut sub = client.subscribe_inbox();
    match sub.next().await {
        Some(Err(SubscriptionError::NotRecovered { position: None })) => {}
        other => panic!("expected NotRecovered without a position, got {other:?}"),
    }
    assert_eq!(sub.next().await.unwrap().unwrap(), inbox(&email(1)));
    assert_eq!(sub.position(), None);
    let _ = script.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn resume_off_sends_no_value() {
    let server = TestServer::bind().await;
    let client = builder(&server).build().unwrap();
    let script = tokio::spawn(async move {
        let mut conn = server.accept().await;
        conn.send(&email(1)).await;
        conn.seen
    });
    let mut sub = client.subscribe_inbox();
    assert_eq!(sub.next().await.unwrap().unwrap(), inbox(&email(1)));
    assert_eq!(script.await.unwrap().resume, None);
}

#[tokio::test(start_paused = true)]
async fn a_400_is_final() {
    let server = TestServer::bind().await;
    let client = resuming(&server).build().unwrap();
    let body =
        r#"{"error":"bad_request","message":"the resume value is not new or <epoch>:<offset>"}"#;
    let script = tokio::spawn(async move {
        server.reject(400, body).await;
        // No second attempt, however long we wait.
        server
            .next_attempt(Duration::from_secs(3600))
            .await
            .is_none()
    });
    let mut sub = client.subscribe_inbox();
    match sub.next().await {
        Some(Err(error @ SubscriptionError::Rejected { status: 400, .. })) => {
            assert!(error.is_final());
        }
        other => panic!("expected the 400, got {other:?}"),
    }
    assert!(sub.next().await.is_none());
    assert!(script.await.unwrap(), "the client retried a 400");
}
