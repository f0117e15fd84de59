//! The wire contract of `DESIGN.md` §2, row by row, end to end over real loopback sockets: the
//! axum router served by `axum::serve`, the tokio `Client` the way users meet it, and raw
//! clients (tokio-tungstenite, or frames written by hand) for what a polite client never does.
//!
//! Tests are named after their row (`s2_5_...` is §2.5). The HTTP-level details of §2.1–§2.3
//! and §2.8 (every credential combination, every status) are the adapter's own tests
//! (`misar-proto-axum/tests/`); here each row is checked as a client experiences it.
//!
//! Heartbeats are shortened to tens of milliseconds with real time; assertions are on order
//! and codes, and a time is only ever checked from below (a timer never fires early).

mod common;

use std::time::{Duration, Instant};

use common::raw::{
    OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawPeer, Ws, bearer, client_frame, ws_connect,
    ws_next_text, ws_read_until_close, ws_refusal,
};
use common::*;
use futures_util::{SinkExt, StreamExt};
use misar_proto::backoff::{Backoff, BackoffConfig};
use misar_proto::client::AuthStyle;
use misar_proto::close::{CloseCode, Disconnect, Fatal, Pace};
use misar_proto::event::{
    Bounce, BounceType, CampaignCompleted, CampaignStarted, Complaint, EmailReceived, Event,
    InboxEvent, UnknownEvent, Unsubscribe,
};
use misar_proto::handshake::RejectionStyle;
use misar_proto::server::ServerConfig;
use misar_proto::streams::PublishError as Refusal;
use misar_proto_tokio::client::{Client, ReconnectPolicy, SubscriptionError, Update, Updates};
use misar_proto_tokio::hub::{HubConfig, PublishError};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn auth_header(key: &str) -> [(&'static str, String); 1] {
    [("Authorization", bearer(key))]
}

/// Headers as the raw helpers take them.
fn h<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

async fn ws_alice_inbox(server: &Server) -> Ws {
    ws_connect(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY)))
        .await
        .expect("alice's inbox upgrades")
}

/// A close-after-upgrade refusal: the upgrade succeeds, then the only thing that comes is the
/// close.
async fn expect_connected_then_error(updates: &mut Updates) -> SubscriptionError {
    expect_connected(updates).await;
    expect_error(updates).await
}

/// Lower bounds on times seen from the client side allow this much: two frames sent exactly
/// `t` apart by the server can arrive a little less than `t` apart.
const SKEW: Duration = Duration::from_millis(40);

// ===== §2.1 Endpoints =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_1_inbox_and_campaign_endpoints_serve_and_everything_else_is_404_before_auth() {
    let server = Server::start().await;
    let alice = server.client(ALICE_KEY).build().unwrap();
    let mut inbox = alice.subscribe_inbox().updates();
    let mut campaign = alice.subscribe_campaign(cid(ALICE_CAMPAIGN)).updates();
    expect_connected(&mut inbox).await;
    expect_connected(&mut campaign).await;
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("a", 1))
        .await
        .unwrap();
    let step = progress(ALICE_CAMPAIGN, 1, 10);
    server
        .hub
        .publish_campaign(&cid(ALICE_CAMPAIGN), &step)
        .await
        .unwrap();
    assert_eq!(next_event(&mut inbox).await, Event::Inbox(email("a", 1)));
    assert_eq!(next_event(&mut campaign).await, Event::Campaign(step));

    // `{id}` is percent-decoded: `camp%2Dalice` is `camp-alice`.
    let mut ws = ws_connect(
        server.addr,
        "/mail/ws/campaigns/camp%2Dalice",
        &h(&auth_header(ALICE_KEY)),
    )
    .await
    .expect("a percent-encoded id names the same campaign");
    // A late joiner: the latest progress first (§2.7).
    let cached = progress(ALICE_CAMPAIGN, 1, 10);
    assert_eq!(
        ws_next_text(&mut ws).await.as_bytes(),
        &cached.encode().bytes()[..]
    );
    let step = progress(ALICE_CAMPAIGN, 2, 10);
    server
        .hub
        .publish_campaign(&cid(ALICE_CAMPAIGN), &step)
        .await
        .unwrap();
    assert_eq!(
        ws_next_text(&mut ws).await.as_bytes(),
        &step.encode().bytes()[..]
    );

    // Routing is decided before authentication: no credentials at all, still 404 (not 403),
    // and the key hook is never asked.
    let checks = server.auth.key_checks();
    let long_id = format!("/mail/ws/campaigns/{}", "x".repeat(129));
    for path in [
        "/mail/ws",
        "/mail/ws/",
        "/mail/ws/other",
        "/mail/ws/inbox/extra",
        "/mail/ws/campaigns/",
        "/mail/ws/campaigns/bad!id",
        "/mail/ws/campaigns/a%2Fb",
        long_id.as_str(),
    ] {
        let refusal = ws_refusal(server.addr, path, &[]).await;
        assert_eq!(refusal.status, 404, "{path}");
    }
    assert_eq!(server.auth.key_checks(), checks, "404s never ask the hook");

    // 128 characters is still an id (counted after decoding: 100 + 28 `%2D`s is 128):
    // routed, then refused as a campaign alice does not own.
    let longest = format!("/mail/ws/campaigns/{}", "x".repeat(128));
    let encoded = format!("/mail/ws/campaigns/{}{}", "x".repeat(100), "%2D".repeat(28));
    for path in [&longest, &encoded] {
        let refusal = ws_refusal(server.addr, path, &h(&auth_header(ALICE_KEY))).await;
        assert_eq!(refusal.status, 403, "{path}");
    }
    // Broken or non-ASCII escapes are not ids.
    for path in [
        "/mail/ws/campaigns/%zz",
        "/mail/ws/campaigns/%FF",
        "/mail/ws/campaigns/%C3%A9t%C3%A9",
    ] {
        let refusal = ws_refusal(server.addr, path, &h(&auth_header(ALICE_KEY))).await;
        assert_eq!(refusal.status, 404, "{path}");
    }

    // A client pointed at the wrong prefix is refused for good with the 404.
    let lost = Client::builder(format!("ws://{}/mail/wrong", server.addr), key(ALICE_KEY))
        .resume(false)
        .build()
        .unwrap();
    match expect_error(&mut lost.subscribe_inbox().updates()).await {
        SubscriptionError::Rejected { status: 404, .. } => {}
        other => panic!("expected a 404 refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_1_the_mount_prefix_is_configurable() {
    let mut server =
        Server::start_with(ServerOptions::default(), |b| b.prefix("/realtime/v2")).await;
    server.prefix = "/realtime/v2".to_owned();
    let alice = server.client(ALICE_KEY).build().unwrap();
    let mut inbox = alice.subscribe_inbox().updates();
    expect_connected(&mut inbox).await;
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("p", 1))
        .await
        .unwrap();
    assert_eq!(next_event(&mut inbox).await, Event::Inbox(email("p", 1)));
    let refusal = ws_refusal(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY))).await;
    assert_eq!(
        refusal.status, 404,
        "the default prefix is not served any more"
    );
}

// ===== §2.2 Authentication =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_2_header_and_query_credentials_both_authenticate() {
    let server = Server::start().await;
    let by_header = server.client(ALICE_KEY).build().unwrap();
    let by_query = server
        .client(ALICE_KEY)
        .auth(AuthStyle::Query)
        .build()
        .unwrap();
    let mut a = by_header.subscribe_inbox().updates();
    let mut b = by_query.subscribe_inbox().updates();
    expect_connected(&mut a).await;
    expect_connected(&mut b).await;
    assert_eq!(server.auth.key_checks(), 2, "one hook call per handshake");
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("both", 1))
        .await
        .unwrap();
    assert_eq!(next_event(&mut a).await, Event::Inbox(email("both", 1)));
    assert_eq!(next_event(&mut b).await, Event::Inbox(email("both", 1)));

    // The scheme is case-insensitive, and the same key in both places is not ambiguous.
    let lower = [("Authorization", format!("bearer {ALICE_KEY}"))];
    ws_connect(server.addr, "/mail/ws/inbox", &h(&lower))
        .await
        .expect("`bearer` is `Bearer`");
    let path = format!("/mail/ws/inbox?token={ALICE_KEY}");
    ws_connect(server.addr, &path, &h(&auth_header(ALICE_KEY)))
        .await
        .expect("the same key twice is one key");
    // `token=` is percent-decoded (`%5F` is `_`).
    let encoded = format!("/mail/ws/inbox?token={}", ALICE_KEY.replace('_', "%5F"));
    ws_connect(server.addr, &encoded, &[])
        .await
        .expect("a percent-encoded token is the same key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_2_ambiguous_or_malformed_credentials_are_refused_without_asking_the_hook() {
    let server = Server::start().await;
    let too_long = format!("msk_{}", "a".repeat(253));
    let cases: Vec<(String, Vec<(&str, String)>)> = vec![
        ("/mail/ws/inbox".into(), vec![]),
        (
            format!("/mail/ws/inbox?token={BOB_KEY}"),
            vec![("Authorization", bearer(ALICE_KEY))],
        ),
        (
            "/mail/ws/inbox".into(),
            vec![
                ("Authorization", bearer(ALICE_KEY)),
                ("Authorization", bearer(ALICE_KEY)),
            ],
        ),
        (
            format!("/mail/ws/inbox?token={ALICE_KEY}&token={ALICE_KEY}"),
            vec![],
        ),
        (
            "/mail/ws/inbox".into(),
            vec![("Authorization", format!("Basic {ALICE_KEY}"))],
        ),
        (
            "/mail/ws/inbox".into(),
            vec![("Authorization", bearer("msk_bad!key"))],
        ),
        (
            "/mail/ws/inbox".into(),
            vec![("Authorization", bearer("sk_live_123"))],
        ),
        (format!("/mail/ws/inbox?token={too_long}"), vec![]),
    ];
    for (path, headers) in &cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let refusal = ws_refusal(server.addr, path, &headers).await;
        assert_eq!(refusal.status, 403, "{path} {headers:?}");
        assert_eq!(refusal.json()["closeCode"], 4401, "{path} {headers:?}");
    }
    assert_eq!(server.auth.key_checks(), 0, "the hook was never asked");
    assert_eq!(server.shutdown.active_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_2_unknown_keys_and_foreign_or_unknown_campaigns_are_refused_alike() {
    let server = Server::start().await;
    let stranger = server.client("msk_e2e_nobody_knows_me").build().unwrap();
    match expect_error(&mut stranger.subscribe_inbox().updates()).await {
        SubscriptionError::Rejected {
            status: 403,
            fatal: Fatal::HandshakeForbidden,
            rejection: Some(body),
        } => {
            assert_eq!(body.error, "unauthorized");
            assert_eq!(body.close_code, Some(4401));
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    assert_eq!(server.auth.key_checks(), 1, "the hook decided");

    // Bob's campaign and a campaign nobody has: the same answer (no existence oracle).
    let alice = server.client(ALICE_KEY).build().unwrap();
    let foreign = expect_error(&mut alice.subscribe_campaign(cid(BOB_CAMPAIGN)).updates()).await;
    let unknown = expect_error(&mut alice.subscribe_campaign(cid("camp-nobody")).updates()).await;
    assert_eq!(foreign, unknown);
    match &foreign {
        SubscriptionError::Rejected {
            status: 403,
            rejection: Some(body),
            ..
        } => {
            assert_eq!(body.error, "forbidden");
            assert_eq!(body.close_code, Some(4403));
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    let a = ws_refusal(
        server.addr,
        "/mail/ws/campaigns/camp-bob",
        &h(&auth_header(ALICE_KEY)),
    )
    .await;
    let b = ws_refusal(
        server.addr,
        "/mail/ws/campaigns/camp-nobody",
        &h(&auth_header(ALICE_KEY)),
    )
    .await;
    assert_eq!(
        (a.status, &a.body),
        (b.status, &b.body),
        "byte-identical refusals"
    );
    assert_eq!(server.hub.connection_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_2_a_failing_hook_fails_closed_with_503_and_never_upgrades() {
    let server = Server::start().await;
    let alice = server
        .client(ALICE_KEY)
        .jitter_seed(5)
        .backoff(BackoffConfig {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
        })
        .build()
        .unwrap();

    server.auth.set_failing(true, false);
    let refusal = ws_refusal(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY))).await;
    assert_eq!(refusal.status, 503);
    let mut inbox = alice.subscribe_inbox().updates();
    let (cause, _, _) = expect_reconnecting(&mut inbox).await;
    assert_eq!(cause, Disconnect::HandshakeRejected { status: 503 });

    server.auth.set_failing(false, true);
    let refusal = ws_refusal(
        server.addr,
        "/mail/ws/campaigns/camp-alice",
        &h(&auth_header(ALICE_KEY)),
    )
    .await;
    assert_eq!(refusal.status, 503, "the ownership hook fails closed too");
    assert_eq!(server.hub.connection_count(), 0, "nothing was upgraded");
    assert_eq!(server.shutdown.active_connections(), 0);

    // The key hook works again: the waiting client gets in by itself.
    loop {
        match next_update(&mut inbox).await {
            Update::Connected => break,
            Update::Reconnecting { cause, .. } => {
                assert!(
                    matches!(cause, Disconnect::HandshakeRejected { status: 503 }),
                    "{cause:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let mut campaign = alice.subscribe_campaign(cid(ALICE_CAMPAIGN)).updates();
    let (cause, _, _) = expect_reconnecting(&mut campaign).await;
    assert_eq!(cause, Disconnect::HandshakeRejected { status: 503 });
    server.auth.set_failing(false, false);
    loop {
        match next_update(&mut campaign).await {
            Update::Connected => break,
            Update::Reconnecting { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.hub.connection_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_2_the_origin_allowlist_refuses_other_origins_with_403() {
    let server = Server::start_with(ServerOptions::default(), |b| {
        b.allowed_origins(["https://app.example.com"])
    })
    .await;
    let mut headers = auth_header(ALICE_KEY).to_vec();
    headers.push(("Origin", "https://evil.example".into()));
    let refusal = ws_refusal(server.addr, "/mail/ws/inbox", &h(&headers)).await;
    assert_eq!(refusal.status, 403);
    assert_eq!(
        server.auth.key_checks(),
        0,
        "refused before the key was looked at"
    );

    headers[1].1 = "https://APP.example.com".into();
    ws_connect(server.addr, "/mail/ws/inbox", &h(&headers))
        .await
        .expect("an allowed origin (case-insensitive)");
    // Not a browser (no Origin at all): the allowlist does not apply.
    let mut inbox = server
        .client(ALICE_KEY)
        .build()
        .unwrap()
        .subscribe_inbox()
        .updates();
    expect_connected(&mut inbox).await;
}

// ===== §2.3 Rejection styles =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_3_http_style_is_the_default_403_before_the_handshake_completes() {
    let server = Server::start().await;
    let unknown = ws_refusal(
        server.addr,
        "/mail/ws/inbox",
        &h(&auth_header("msk_e2e_unknown_key_1")),
    )
    .await;
    let foreign = ws_refusal(
        server.addr,
        "/mail/ws/campaigns/camp-bob",
        &h(&auth_header(ALICE_KEY)),
    )
    .await;
    for (refusal, error, code) in [
        (&unknown, "unauthorized", 4401),
        (&foreign, "forbidden", 4403),
    ] {
        assert_eq!(refusal.status, 403);
        assert_eq!(refusal.header("cache-control"), Some("no-store"));
        assert_eq!(refusal.header("content-type"), Some("application/json"));
        let body = refusal.json();
        assert_eq!(body["error"], error);
        assert_eq!(body["closeCode"], code);
        assert!(body["message"].is_string(), "{body}");
    }
    assert_eq!(server.shutdown.active_connections(), 0, "nothing upgraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_3_close_after_upgrade_closes_at_once_with_4401_or_4403() {
    let server = Server::start_with(ServerOptions::default(), |b| {
        b.rejection_style(RejectionStyle::CloseAfterUpgrade)
    })
    .await;
    let stranger = server.client("msk_e2e_unknown_key_2").build().unwrap();
    match expect_connected_then_error(&mut stranger.subscribe_inbox().updates()).await {
        SubscriptionError::Closed {
            code: CloseCode::Unauthorized,
            fatal: Fatal::Unauthorized,
            ..
        } => {}
        other => panic!("expected close 4401, got {other:?}"),
    }
    let alice = server.client(ALICE_KEY).build().unwrap();
    match expect_connected_then_error(&mut alice.subscribe_campaign(cid(BOB_CAMPAIGN)).updates())
        .await
    {
        SubscriptionError::Closed {
            code: CloseCode::Forbidden,
            fatal: Fatal::Forbidden,
            ..
        } => {}
        other => panic!("expected close 4403, got {other:?}"),
    }
    // On the wire: a 101, then a close and nothing else.
    let mut peer = RawPeer::connect(
        server.addr,
        "/mail/ws/inbox?token=msk_e2e_unknown_key_3",
        &[],
    )
    .await
    .expect("upgraded to be closed");
    let seen = peer.read_until_close().await;
    assert_eq!(seen.opcodes, vec![OP_CLOSE]);
    assert_eq!(seen.close, Some(Some(4401)));
    server.wait_idle().await;
    assert_eq!(
        server.hub.stats().connections,
        0,
        "rejections take no hub slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_3_auto_style_closes_for_query_clients_and_answers_403_to_header_clients() {
    let server = Server::start_with(ServerOptions::default(), |b| {
        b.rejection_style(RejectionStyle::Auto)
    })
    .await;
    let by_query = server
        .client("msk_e2e_unknown_key_4")
        .auth(AuthStyle::Query)
        .build()
        .unwrap();
    match expect_connected_then_error(&mut by_query.subscribe_inbox().updates()).await {
        SubscriptionError::Closed {
            code: CloseCode::Unauthorized,
            ..
        } => {}
        other => panic!("a browser-style client reads a close code: {other:?}"),
    }
    let by_header = server.client("msk_e2e_unknown_key_4").build().unwrap();
    match expect_error(&mut by_header.subscribe_inbox().updates()).await {
        SubscriptionError::Rejected { status: 403, .. } => {}
        other => panic!("a header client gets the HTTP refusal: {other:?}"),
    }
    let alice_by_query = server
        .client(ALICE_KEY)
        .auth(AuthStyle::Query)
        .build()
        .unwrap();
    match expect_connected_then_error(
        &mut alice_by_query
            .subscribe_campaign(cid(BOB_CAMPAIGN))
            .updates(),
    )
    .await
    {
        SubscriptionError::Closed {
            code: CloseCode::Forbidden,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
}

// ===== §2.4 Events =====

fn every_inbox_event() -> Vec<InboxEvent> {
    vec![
        email("all", 1),
        InboxEvent::EmailReceived(
            EmailReceived::new(
                "ada@example.com",
                "Ünïcödé \"quoted\" \\ and\nnewline",
                ts("2026-05-27T10:15:00.123+02:00"),
            )
            .with_message_id("<m1@example.com>")
            .with_to("team@example.com"),
        ),
        InboxEvent::Bounce(
            Bounce::new("gone@example.com", ts("2026-05-27T10:16:00Z"))
                .with_bounce_type(BounceType::Hard)
                .with_reason("550 no such user")
                .with_campaign_id(cid("camp-alice")),
        ),
        InboxEvent::Bounce(Bounce::new("later@example.com", ts("2026-05-27T10:16:30Z"))),
        InboxEvent::Complaint(
            Complaint::new("angry@example.com", ts("2026-05-27T10:17:00Z"))
                .with_campaign_id(cid("camp-alice")),
        ),
        InboxEvent::Unsubscribe(Unsubscribe::new(
            "bye@example.com",
            ts("2026-05-27T10:18:00Z"),
        )),
        InboxEvent::CampaignStarted(CampaignStarted::new(
            cid("camp-alice"),
            "May Newsletter",
            u64::MAX,
            ts("2026-05-27T10:19:00Z"),
        )),
        InboxEvent::CampaignCompleted(CampaignCompleted::new(
            cid("camp-alice"),
            "May Newsletter",
            10_000,
            9_855,
            2_340,
            ts("2026-05-27T11:00:00Z"),
        )),
    ]
}

/// `type` first, compact, camelCase keys: checks a frame's text.
fn assert_wire_shape(text: &str) {
    assert!(text.starts_with(r#"{"type":""#), "`type` first: {text}");
    let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
    let object = value.as_object().expect("an object");
    for (name, _) in object {
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric())
                && name.starts_with(|c: char| c.is_ascii_lowercase()),
            "camelCase field {name:?} in {text}"
        );
    }
    // Compact: re-serializing the parsed value (which only drops insignificant whitespace and
    // reorders nothing we check) is no shorter.
    assert_eq!(value.to_string().len(), text.len(), "compact: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_4_every_event_type_arrives_intact_as_one_compact_json_text_frame() {
    let server = Server::start().await;
    let alice = server.client(ALICE_KEY).build().unwrap();
    let mut inbox = alice.subscribe_inbox().updates();
    expect_connected(&mut inbox).await;
    let mut ws = ws_alice_inbox(&server).await;

    let events = every_inbox_event();
    for event in &events {
        server.hub.publish_inbox(&acct(ALICE), event).await.unwrap();
    }
    for event in &events {
        match next_update(&mut inbox).await {
            Update::Event {
                event: got, raw, ..
            } => {
                assert_eq!(got, Event::Inbox(event.clone()));
                assert_eq!(raw, event.encode().bytes().clone());
            }
            other => panic!("{other:?}"),
        }
        // The raw client sees text frames (tungstenite would refuse a text frame of invalid
        // UTF-8), each exactly the event's encoding.
        let text = ws_next_text(&mut ws).await;
        assert_eq!(text.as_bytes(), &event.encode().bytes()[..]);
        assert_wire_shape(&text);
    }
    // Optional fields are omitted when absent, never `null`.
    let bare = events[3].encode();
    let text = std::str::from_utf8(bare.bytes()).unwrap();
    assert!(
        !text.contains("null") && !text.contains("bounceType"),
        "{text}"
    );

    // The campaign channel: progress, then one terminal event per campaign (each ends its
    // channel with 1000, so three campaigns for the three terminal types).
    let tables = [
        (
            ALICE_CAMPAIGN,
            vec![
                progress(ALICE_CAMPAIGN, u64::MAX - 1, u64::MAX),
                completed(ALICE_CAMPAIGN, 7),
            ],
        ),
        (ALICE_CAMPAIGN_2, vec![failed(ALICE_CAMPAIGN_2)]),
        (BOB_CAMPAIGN, vec![cancelled(BOB_CAMPAIGN)]),
    ];
    let bob = server.client(BOB_KEY).build().unwrap();
    for (campaign, sequence) in tables {
        let client = if campaign == BOB_CAMPAIGN {
            &bob
        } else {
            &alice
        };
        let mut updates = client.subscribe_campaign(cid(campaign)).updates();
        expect_connected(&mut updates).await;
        for event in &sequence {
            server
                .hub
                .publish_campaign(&cid(campaign), event)
                .await
                .unwrap();
        }
        for event in &sequence {
            assert_eq!(
                next_event(&mut updates).await,
                Event::Campaign(event.clone())
            );
            assert_wire_shape(std::str::from_utf8(event.encode().bytes()).unwrap());
        }
        expect_finished(&mut updates).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_4_the_server_never_sends_what_it_cannot_validate() {
    let server = Server::start().await;
    let mut inbox = server
        .client(ALICE_KEY)
        .build()
        .unwrap()
        .subscribe_inbox()
        .updates();
    expect_connected(&mut inbox).await;
    let unknown = InboxEvent::Unknown(UnknownEvent::new(
        "email_opened",
        bytes::Bytes::from_static(br#"{"type":"email_opened"}"#),
    ));
    assert!(matches!(
        server.hub.publish_inbox(&acct(ALICE), &unknown).await,
        Err(PublishError::Refused(Refusal::UnknownType { .. }))
    ));
    assert!(matches!(
        server
            .hub
            .publish_campaign(&cid(ALICE_CAMPAIGN), &progress(BOB_CAMPAIGN, 1, 2))
            .await,
        Err(PublishError::Refused(Refusal::CampaignMismatch { .. }))
    ));
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("ok", 1))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut inbox).await,
        Event::Inbox(email("ok", 1)),
        "nothing before it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_4_client_decoding_is_forward_compatible() {
    // A newer server (written here with tokio-tungstenite: ours refuses to send what it cannot
    // validate) sends an unknown type, unknown fields, and a broken event.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let frames = [
        r#"{"type":"email_opened","openedAt":"2026-05-27T10:15:00Z"}"#,
        r#"{"type":"email_received","from":"a@example.com","subject":"s","receivedAt":"2026-05-27T10:15:00Z","priority":"high","labels":[1,{"x":null}]}"#,
        r#"{"type":"email_received","from":"a@example.com","receivedAt":"2026-05-27T10:15:00Z"}"#,
        r#"{"type":"email_received","from":"a@example.com","subject":"s","receivedAt":"yesterday"}"#,
        r#"{"type":"email_received","from":"a@example.com","subject":"last","receivedAt":"2026-05-27T10:15:00Z"}"#,
    ];
    let script = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        for frame in frames {
            ws.send(WsMessage::text(frame)).await.unwrap();
        }
        // Hold the connection until the client is done.
        while let Some(Ok(_)) = ws.next().await {}
    });
    let client = Client::builder(format!("ws://{addr}/mail/ws"), key(ALICE_KEY))
        .resume(false)
        .reconnect(ReconnectPolicy::Never)
        .build()
        .unwrap();
    let mut updates = client.subscribe_inbox().updates();
    expect_connected(&mut updates).await;
    match next_event(&mut updates).await {
        Event::Inbox(InboxEvent::Unknown(unknown)) => {
            assert_eq!(unknown.kind, "email_opened");
            assert_eq!(&unknown.raw[..], frames[0].as_bytes());
        }
        other => panic!("an unknown type is a value: {other:?}"),
    }
    match next_event(&mut updates).await {
        Event::Inbox(InboxEvent::EmailReceived(e)) => assert_eq!(e.subject, "s"),
        other => panic!("unknown fields are ignored: {other:?}"),
    }
    for field in ["subject", "receivedAt"] {
        match next_update(&mut updates).await {
            Update::Invalid { error, .. } => {
                assert!(
                    error.to_string().contains(field),
                    "names `{field}`: {error}"
                );
            }
            other => panic!("a broken event is reported, not fatal: {other:?}"),
        }
    }
    match next_event(&mut updates).await {
        Event::Inbox(InboxEvent::EmailReceived(e)) => assert_eq!(e.subject, "last"),
        other => panic!("the connection stayed up: {other:?}"),
    }
    updates.close().await;
    within("the scripted server", script).await.unwrap();
}

// ===== §2.5 Heartbeat =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_5_pings_every_interval_and_a_polite_client_stays_connected() {
    let server = Server::start().await;
    let alice = server.client(ALICE_KEY).build().unwrap();
    let mut inbox = alice.subscribe_inbox().updates();
    expect_connected(&mut inbox).await;
    // The client is polled all along (it answers pings as it reads); it must see nothing but
    // the event published at the end.
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            let update = next_update(&mut inbox).await;
            let done = matches!(update, Update::Event { .. });
            seen.push(update);
            if done {
                return (seen, inbox);
            }
        }
    });

    // A raw tungstenite client counts pings; tungstenite answers them while it reads.
    let mut ws = ws_connect(server.addr, "/mail/ws/inbox", &h(&auth_header(BOB_KEY)))
        .await
        .unwrap();
    let start = Instant::now();
    let mut pings = 0;
    while pings < 15 {
        match within("a ping", ws.next()).await {
            Some(Ok(WsMessage::Ping(payload))) => {
                assert!(payload.len() <= 125);
                pings += 1;
            }
            Some(Ok(WsMessage::Close(frame))) => panic!("a polite client was closed: {frame:?}"),
            other => assert!(matches!(other, Some(Ok(_))), "{other:?}"),
        }
    }
    let elapsed = start.elapsed();
    // 15 pings span more than the pong timeout: both clients answered in time.
    assert!(
        elapsed >= PING * 14,
        "pings came faster than the interval: {elapsed:?}"
    );
    assert!(elapsed > PONG, "{elapsed:?}");
    println!(
        "s2.5: 15 pings in {:.0} ms (interval {PING:?})",
        ms(elapsed)
    );

    assert_eq!(server.hub.connection_count(), 2);
    // Keep reading (and answering) in the background.
    let reader = tokio::spawn(async move { ws_read_until_close(&mut ws).await });
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("alive", 1))
        .await
        .unwrap();
    let (seen, _inbox) = within("the watcher", watcher).await.unwrap();
    assert_eq!(seen.len(), 1, "no reconnect while pings flowed: {seen:?}");
    assert_eq!(server.hub.connection_count(), 2);
    assert!(!reader.is_finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_5_any_pong_counts() {
    let config = ServerConfig {
        ping_interval: Duration::from_millis(50),
        pong_timeout: Duration::from_millis(150),
        ..server_config()
    };
    let server = Server::start_with(
        ServerOptions {
            server: config.clone(),
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;
    let mut peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY)))
        .await
        .unwrap();
    // This peer never answers a ping: it sends unsolicited pongs with a payload of its own,
    // every 40 ms (pongs are not rate-limited).
    let mut pings = 0;
    while pings < 20 {
        match tokio::time::timeout(Duration::from_millis(40), peer.read_frame()).await {
            Ok(Some(frame)) if frame.opcode == OP_PING => pings += 1,
            Ok(Some(frame)) => panic!("pongs of its own count, yet: {frame:?}"),
            Ok(None) => panic!("dropped"),
            Err(_) => peer.send_frame(OP_PONG, b"not an answer").await.unwrap(),
        }
    }
    // Twenty pings span several pong timeouts; still connected.
    assert_eq!(server.hub.connection_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_5_silent_client_closed_1001() {
    let config = ServerConfig {
        ping_interval: Duration::from_millis(50),
        pong_timeout: Duration::from_millis(150),
        close_grace: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = Server::start_with(
        ServerOptions {
            server: config.clone(),
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;
    let mut peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY)))
        .await
        .unwrap();
    let opened = Instant::now();
    // It never answers: not the pings, not the close.
    let first = within("the first ping", peer.read_frame())
        .await
        .expect("a frame");
    assert_eq!(first.opcode, OP_PING);
    let pinged = Instant::now();
    let seen = peer.read_until_close().await;
    let closed = Instant::now();
    assert_eq!(seen.close, Some(Some(1001)), "{seen:?}");
    assert!(
        seen.opcodes
            .iter()
            .all(|op| *op == OP_PING || *op == OP_CLOSE),
        "{seen:?}"
    );
    assert!(
        closed - pinged >= config.pong_timeout - SKEW,
        "closed before the pong timeout: {:?}",
        closed - pinged
    );
    // The close is not answered either: the server drops the socket after its close grace.
    assert!(peer.ends_without_another_frame().await);
    let ended = Instant::now();
    assert!(
        ended - closed >= config.close_grace - SKEW,
        "{:?}",
        ended - closed
    );
    server.wait_idle().await;
    println!(
        "s2.5 silent client: first ping {:.0} ms after the upgrade, close 1001 {:.0} ms after it, \
         socket dropped {:.0} ms after the close",
        ms(pinged - opened),
        ms(closed - pinged),
        ms(ended - closed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_5_the_client_replaces_a_silent_server_after_interval_plus_timeout() {
    let config = ServerConfig {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(300),
        close_grace: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = Server::start_with(
        ServerOptions {
            server: config.clone(),
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;
    let proxy = common::proxy::Proxy::start(server.addr).await;
    let client = Client::builder(format!("ws://{}/mail/ws", proxy.addr), key(ALICE_KEY))
        .resume(false)
        .heartbeat(config.ping_interval, config.pong_timeout)
        .backoff(BackoffConfig {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(1),
        })
        .build()
        .unwrap();
    let mut inbox = client.subscribe_inbox().updates();
    expect_connected(&mut inbox).await;
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("h", 1))
        .await
        .unwrap();
    assert_eq!(next_event(&mut inbox).await, Event::Inbox(email("h", 1)));

    // Half-open TCP: both sockets stay open, nothing gets through any more.
    proxy.blackhole();
    let cut = Instant::now();
    let (cause, _, _) = expect_reconnecting(&mut inbox).await;
    let detected = cut.elapsed();
    assert_eq!(cause, Disconnect::Dropped);
    // The last thing heard was at most one ping interval before the cut.
    assert!(
        detected >= config.pong_timeout - SKEW,
        "declared dead too early: {detected:?}"
    );
    expect_connected(&mut inbox).await;
    let reconnected = cut.elapsed();
    // The server, for its part, frees the old connection after its own heartbeat timeout.
    server.wait_connections(1).await;
    let freed = cut.elapsed();
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("h", 2))
        .await
        .unwrap();
    assert_eq!(next_event(&mut inbox).await, Event::Inbox(email("h", 2)));
    println!(
        "s2.5 silent server: client declared it dead after {:.0} ms (window {:?}), reconnected \
         at {:.0} ms; server freed the old connection at {:.0} ms",
        ms(detected),
        config.ping_interval + config.pong_timeout,
        ms(reconnected),
        ms(freed)
    );
}

// ===== §2.6 Close codes and what a client does =====

const SEED: u64 = 0x5eed;
const BACKOFF: BackoffConfig = BackoffConfig {
    base: Duration::from_millis(200),
    cap: Duration::from_secs(5),
};

/// The first delay a client seeded with [`SEED`] draws at `pace`.
fn first_delay(pace: Pace) -> Duration {
    Backoff::new(BACKOFF, SEED).next_delay(pace)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_6_a_campaign_finishes_after_its_terminal_event_and_1000() {
    let server = Server::start().await;
    let alice = server.client(ALICE_KEY).build().unwrap();
    let mut campaign = alice.subscribe_campaign(cid(ALICE_CAMPAIGN)).updates();
    expect_connected(&mut campaign).await;
    let mut ws = ws_connect(
        server.addr,
        "/mail/ws/campaigns/camp-alice",
        &h(&auth_header(ALICE_KEY)),
    )
    .await
    .unwrap();
    let sequence = [
        progress(ALICE_CAMPAIGN, 5, 10),
        completed(ALICE_CAMPAIGN, 10),
    ];
    for event in &sequence {
        server
            .hub
            .publish_campaign(&cid(ALICE_CAMPAIGN), event)
            .await
            .unwrap();
    }
    for event in &sequence {
        assert_eq!(
            next_event(&mut campaign).await,
            Event::Campaign(event.clone())
        );
    }
    expect_finished(&mut campaign).await;
    let (texts, code) = ws_read_until_close(&mut ws).await;
    assert_eq!(texts.len(), 2);
    assert_eq!(
        code,
        Some(1000),
        "the terminal event is followed by close 1000"
    );
    server.wait_idle().await;
    assert_eq!(
        server.auth.key_checks(),
        2,
        "the finished client did not come back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_6_a_client_closing_with_1000_is_answered_and_freed() {
    let server = Server::start().await;
    // A long close grace: had the server not answered, `close` would take all of it.
    let grace = Duration::from_secs(10);
    let alice = server.client(ALICE_KEY).close_grace(grace).build().unwrap();
    let mut inbox = alice.subscribe_inbox().updates();
    expect_connected(&mut inbox).await;
    let started = Instant::now();
    within("the client's close", inbox.close()).await;
    let took = started.elapsed();
    assert!(took < grace, "the server answered the close: {took:?}");
    expect_finished(&mut inbox).await;
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_6_4401_4403_and_http_403_stop_the_client_for_good() {
    let server = Server::start().await;
    let alice = server.client(ALICE_KEY).build().unwrap();
    let mut inbox = alice.subscribe_inbox().updates();
    let mut campaign = alice.subscribe_campaign(cid(ALICE_CAMPAIGN)).updates();
    expect_connected(&mut inbox).await;
    expect_connected(&mut campaign).await;

    server.hub.revoke_campaign(&cid(ALICE_CAMPAIGN));
    match expect_error(&mut campaign).await {
        SubscriptionError::Closed {
            code: CloseCode::Forbidden,
            fatal: Fatal::Forbidden,
            ..
        } => {}
        other => panic!("expected a final 4403, got {other:?}"),
    }
    server.hub.revoke(&acct(ALICE));
    match expect_error(&mut inbox).await {
        SubscriptionError::Closed {
            code: CloseCode::Unauthorized,
            fatal: Fatal::Unauthorized,
            ..
        } => {}
        other => panic!("expected a final 4401, got {other:?}"),
    }
    let stranger = server.client("msk_e2e_nobody_9").build().unwrap();
    let error = expect_error(&mut stranger.subscribe_inbox().updates()).await;
    assert!(error.is_auth_failure(), "{error:?}");
    server.wait_idle().await;
    assert_eq!(server.auth.key_checks(), 3, "no client tried again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_6_1006_503_and_1001_reconnect_with_normal_backoff() {
    let mut server = Server::start().await;
    let proxy = common::proxy::Proxy::start(server.addr).await;
    let via_proxy = Client::builder(format!("ws://{}/mail/ws", proxy.addr), key(ALICE_KEY))
        .resume(false)
        .heartbeat(PING, PONG)
        .backoff(BACKOFF)
        .jitter_seed(SEED)
        .build()
        .unwrap();
    let direct = server
        .client(ALICE_KEY)
        .backoff(BACKOFF)
        .jitter_seed(SEED)
        .build()
        .unwrap();
    let normal = first_delay(Pace::Normal);
    assert!(normal < first_delay(Pace::Longer));

    // 1006: the connection drops without a close frame.
    let mut dropped = via_proxy.subscribe_inbox().updates();
    expect_connected(&mut dropped).await;
    proxy.sever();
    assert_eq!(
        expect_reconnecting(&mut dropped).await,
        (Disconnect::Dropped, normal, 1)
    );
    expect_connected(&mut dropped).await;

    // HTTP 503 (a hook failing).
    server.auth.set_failing(true, false);
    let mut refused = direct.subscribe_inbox().updates();
    assert_eq!(
        expect_reconnecting(&mut refused).await,
        (Disconnect::HandshakeRejected { status: 503 }, normal, 1)
    );
    server.auth.set_failing(false, false);
    loop {
        match next_update(&mut refused).await {
            Update::Connected => break,
            Update::Reconnecting { .. } => {}
            other => panic!("{other:?}"),
        }
    }

    // 1001: the server shuts down.
    let mut going = direct.subscribe_inbox().updates();
    expect_connected(&mut going).await;
    let stopping = tokio::spawn(async move { server.stop().await });
    assert_eq!(
        expect_reconnecting(&mut going).await,
        (Disconnect::Closed(CloseCode::GoingAway), normal, 1)
    );
    within("the shutdown", stopping).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_6_1013_and_429_reconnect_with_longer_backoff() {
    let server = Server::start_with(
        ServerOptions {
            hub: HubConfig {
                max_connections_per_account: 1,
                ..HubConfig::default()
            },
            server: ServerConfig {
                // The slow client below is not polled: it must not be pinged out meanwhile.
                ping_interval: Duration::from_secs(30),
                pong_timeout: Duration::from_secs(30),
                max_queued_events: 32,
                max_queued_bytes: 256 << 10,
                ..ServerConfig::default()
            },
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;
    let alice = server
        .client(ALICE_KEY)
        .backoff(BACKOFF)
        .jitter_seed(SEED)
        .build()
        .unwrap();
    let longer = first_delay(Pace::Longer);

    // HTTP 429: alice's one connection is taken.
    let mut first = alice.subscribe_inbox().updates();
    expect_connected(&mut first).await;
    let mut second = alice.subscribe_campaign(cid(ALICE_CAMPAIGN)).updates();
    assert_eq!(
        expect_reconnecting(&mut second).await,
        (Disconnect::HandshakeRejected { status: 429 }, longer, 1)
    );
    drop(second);

    // 1013: `first` stops reading (it is not polled) while events keep coming.
    let (published, overflow_at) = overflow(&server, ALICE, |_| async {}).await;
    let events = read_until_reconnecting(&mut first).await;
    let (cause, after, attempt) = events.1;
    assert_eq!(
        (cause, after, attempt),
        (Disconnect::Closed(CloseCode::TryAgainLater), longer, 1)
    );
    let seqs: Vec<u64> = events.0.iter().map(|e| email_tag(e).unwrap().1).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "a prefix, in order"
    );
    assert!((seqs.len() as u64) < published);
    println!(
        "s2.6: the unread client overflowed at event {overflow_at} ({} KiB published); it had \
         received {} events before its close 1013",
        published * 16,
        seqs.len()
    );
}

/// Publishes 16 KiB events to `account`'s inbox until the hub reports an overflow (a client
/// that does not read), calling `after_each(seq)` after each publish; returns how many were
/// published and the sequence number that overflowed.
async fn overflow<F, Fut>(server: &Server, account: &str, mut after_each: F) -> (u64, u64)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for seq in 0..4096u64 {
        let report = server
            .hub
            .publish_inbox(&acct(account), &big_email(account, seq, 16 << 10))
            .await
            .unwrap();
        after_each(seq).await;
        if report.overflowed > 0 {
            return (seq + 1, seq);
        }
        // Let the connection tasks write what they can.
        tokio::task::yield_now().await;
    }
    panic!("no overflow after 64 MiB");
}

/// Events until the next `Reconnecting`, and that update.
async fn read_until_reconnecting(
    updates: &mut Updates,
) -> (Vec<Event>, (Disconnect, Duration, u32)) {
    let mut events = Vec::new();
    loop {
        match next_update(updates).await {
            Update::Event { event, .. } => events.push(event),
            Update::Reconnecting {
                cause,
                after,
                attempt,
                ..
            } => return (events, (cause, after, attempt)),
            other => panic!("{other:?}"),
        }
    }
}

// Regression: over `WriteCoalescer`, tungstenite's close echo stayed in the buffer (it reports
// the connection closed without flushing the stream); `TungsteniteTransport` now flushes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_6_a_client_close_is_echoed_and_a_reserved_or_invalid_code_answered_1002() {
    let server = Server::start().await;
    for (sent, answered) in [
        (1005, Some(1002)),
        (1006, Some(1002)),
        (1015, Some(1002)),
        (999, Some(1002)),
        (2999, Some(1002)),
        (1000, Some(1000)),
        (1001, Some(1001)),
        (4000, Some(4000)),
    ] {
        let mut peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY)))
            .await
            .unwrap();
        peer.send_close(sent).await.unwrap();
        let seen = peer.read_until_close().await;
        assert_eq!(
            seen.close,
            Some(answered),
            "a client close with {sent}: {seen:?}"
        );
        assert!(peer.ends_without_another_frame().await, "{sent}");
    }
    // A close without a code is answered without a code.
    let mut peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY)))
        .await
        .unwrap();
    peer.send_frame(OP_CLOSE, &[]).await.unwrap();
    assert_eq!(peer.read_until_close().await.close, Some(None));
    server.wait_idle().await;
}

// ===== §2.7 Delivery, slow consumers, late joiners =====

/// Inbox events of every type, distinct per `seq`.
fn mixed_inbox(seq: u64) -> InboxEvent {
    let at = ts("2026-05-27T10:15:00Z");
    match seq % 6 {
        0 => email("mixed", seq),
        1 => InboxEvent::Bounce(
            Bounce::new(format!("u{seq}@example.com"), at).with_bounce_type(BounceType::Soft),
        ),
        2 => InboxEvent::Complaint(Complaint::new(format!("u{seq}@example.com"), at)),
        3 => InboxEvent::Unsubscribe(
            Unsubscribe::new(format!("u{seq}@example.com"), at).with_campaign_id(cid("camp-alice")),
        ),
        4 => {
            InboxEvent::CampaignStarted(CampaignStarted::new(cid(&format!("c{seq}")), "n", seq, at))
        }
        _ => InboxEvent::CampaignCompleted(CampaignCompleted::new(
            cid(&format!("c{seq}")),
            "n",
            seq,
            seq,
            0,
            at,
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_7_events_reach_every_connection_in_publish_order() {
    const N: u64 = 200;
    let server = Server::start().await;
    let alice = server.client(ALICE_KEY).build().unwrap();
    let by_query = server
        .client(ALICE_KEY)
        .auth(AuthStyle::Query)
        .build()
        .unwrap();
    let mut a = alice.subscribe_inbox().updates();
    let mut b = by_query.subscribe_inbox().updates();
    expect_connected(&mut a).await;
    expect_connected(&mut b).await;
    let mut ws = ws_alice_inbox(&server).await;
    let hub = server.hub.clone();
    let publisher = tokio::spawn(async move {
        for seq in 0..N {
            hub.publish_inbox(&acct(ALICE), &mixed_inbox(seq))
                .await
                .unwrap();
            if seq % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    for seq in 0..N {
        let expected = Event::Inbox(mixed_inbox(seq));
        assert_eq!(next_event(&mut a).await, expected, "header client, #{seq}");
        assert_eq!(next_event(&mut b).await, expected, "query client, #{seq}");
        let text = ws_next_text(&mut ws).await;
        assert_eq!(
            text.as_bytes(),
            &mixed_inbox(seq).encode().bytes()[..],
            "raw client, #{seq}"
        );
    }
    publisher.await.unwrap();
    assert_eq!(server.hub.stats().overflowed, 0);
}

// current_thread on purpose: the publishing loops below never yield, so no connection task
// runs while they publish and the queues hold exactly what the §2.7 rules leave in them.
#[tokio::test]
async fn s2_7_progress_coalesces_while_terminal_and_inbox_events_are_never_dropped() {
    let server = Server::start().await;
    let alice = server.client(ALICE_KEY).build().unwrap();
    let mut campaign = alice.subscribe_campaign(cid(ALICE_CAMPAIGN)).updates();
    let mut inbox = alice.subscribe_inbox().updates();
    expect_connected(&mut campaign).await;
    expect_connected(&mut inbox).await;
    // One event each, received: both connections are now served (past the upgrade window).
    let campaign_id = cid(ALICE_CAMPAIGN);
    server
        .hub
        .publish_campaign(&campaign_id, &progress(ALICE_CAMPAIGN, 0, 1000))
        .await
        .unwrap();
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("c", 0))
        .await
        .unwrap();
    assert_eq!(progress_sent(&next_event(&mut campaign).await), Some(0));
    assert_eq!(next_event(&mut inbox).await, Event::Inbox(email("c", 0)));

    for sent in 1..=1000u64 {
        server
            .hub
            .publish_campaign(&campaign_id, &progress(ALICE_CAMPAIGN, sent, 1000))
            .await
            .unwrap();
        if sent % 10 == 0 {
            server
                .hub
                .publish_inbox(&acct(ALICE), &email("c", sent / 10))
                .await
                .unwrap();
        }
    }
    server
        .hub
        .publish_campaign(&campaign_id, &completed(ALICE_CAMPAIGN, 1000))
        .await
        .unwrap();

    // A thousand progress updates queued behind one another leave the latest; the terminal
    // event follows it, then the channel ends.
    assert_eq!(
        next_event(&mut campaign).await,
        Event::Campaign(progress(ALICE_CAMPAIGN, 1000, 1000))
    );
    assert_eq!(
        next_event(&mut campaign).await,
        Event::Campaign(completed(ALICE_CAMPAIGN, 1000))
    );
    expect_finished(&mut campaign).await;
    // Inbox events are never coalesced.
    for seq in 1..=100 {
        assert_eq!(next_event(&mut inbox).await, Event::Inbox(email("c", seq)));
    }
    assert_eq!(server.hub.stats().overflowed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_7_a_connection_whose_queue_overflows_is_closed_1013_and_nobody_else_is() {
    let server = Server::start_with(
        ServerOptions {
            server: ServerConfig {
                ping_interval: Duration::from_secs(30),
                pong_timeout: Duration::from_secs(30),
                max_queued_events: 32,
                max_queued_bytes: 256 << 10,
                ..ServerConfig::default()
            },
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;
    let alice = server.client(ALICE_KEY).build().unwrap();
    let mut slow = alice.subscribe_inbox().updates();
    expect_connected(&mut slow).await;
    let mut fast = alice.subscribe_inbox().updates();
    expect_connected(&mut fast).await;

    // The fast client reads in its own task and reports how far it got.
    let (progress_tx, progress_rx) = tokio::sync::watch::channel(None::<u64>);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            let event = next_event(&mut fast).await;
            let (_, seq) = email_tag(&event).expect("a tagged event");
            if seq == u64::MAX {
                return (seqs, fast);
            }
            seqs.push(seq);
            progress_tx.send_replace(Some(seq));
        }
    });
    // Publish at the fast client's pace; the slow one is never polled until the overflow.
    let mut delivered_after_overflow = Vec::new();
    let mut overflowed = false;
    let mut published = 0;
    for seq in 0..4096u64 {
        let report = server
            .hub
            .publish_inbox(&acct(ALICE), &big_email(ALICE, seq, 16 << 10))
            .await
            .unwrap();
        published = seq + 1;
        if overflowed {
            delivered_after_overflow.push(report.delivered);
        }
        if report.overflowed > 0 {
            overflowed = true;
        }
        let mut rx = progress_rx.clone();
        within("the fast client", rx.wait_for(|got| *got == Some(seq)))
            .await
            .unwrap();
        if delivered_after_overflow.len() == 20 {
            break;
        }
    }
    assert!(overflowed, "no overflow after {published} events");
    assert!(
        delivered_after_overflow.iter().all(|n| *n == 1),
        "after the overflow only the fast connection is delivered to: {delivered_after_overflow:?}"
    );
    server
        .hub
        .publish_inbox(&acct(ALICE), &email(ALICE, u64::MAX))
        .await
        .unwrap();
    let (fast_seqs, _fast) = within("the fast reader", reader).await.unwrap();
    assert_eq!(
        fast_seqs,
        (0..published).collect::<Vec<_>>(),
        "the fast client got everything, in order"
    );

    let (events, (cause, _, _)) = read_until_reconnecting(&mut slow).await;
    assert_eq!(cause, Disconnect::Closed(CloseCode::TryAgainLater));
    let slow_seqs: Vec<u64> = events.iter().map(|e| email_tag(e).unwrap().1).collect();
    assert_eq!(
        slow_seqs,
        (0..slow_seqs.len() as u64).collect::<Vec<_>>(),
        "a prefix in order"
    );
    assert_eq!(
        server.hub.stats().overflowed,
        1,
        "one connection overflowed"
    );
    println!(
        "s2.7: {published} events of 16 KiB; the unread connection received {} before close 1013",
        slow_seqs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_7_late_joiners_get_the_latest_progress_or_the_terminal_event() {
    let server = Server::start().await;
    let campaign_id = cid(ALICE_CAMPAIGN);
    for sent in [3, 7] {
        server
            .hub
            .publish_campaign(&campaign_id, &progress(ALICE_CAMPAIGN, sent, 10))
            .await
            .unwrap();
    }
    let alice = server.client(ALICE_KEY).build().unwrap();
    let mut early = alice.subscribe_campaign(campaign_id.clone()).updates();
    expect_connected(&mut early).await;
    assert_eq!(
        next_event(&mut early).await,
        Event::Campaign(progress(ALICE_CAMPAIGN, 7, 10))
    );
    server
        .hub
        .publish_campaign(&campaign_id, &completed(ALICE_CAMPAIGN, 10))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut early).await,
        Event::Campaign(completed(ALICE_CAMPAIGN, 10))
    );
    expect_finished(&mut early).await;

    // After the end: the terminal event, then close 1000.
    let mut late = alice.subscribe_campaign(campaign_id.clone()).updates();
    expect_connected(&mut late).await;
    assert_eq!(
        next_event(&mut late).await,
        Event::Campaign(completed(ALICE_CAMPAIGN, 10))
    );
    expect_finished(&mut late).await;
    let mut ws = ws_connect(
        server.addr,
        "/mail/ws/campaigns/camp-alice",
        &h(&auth_header(ALICE_KEY)),
    )
    .await
    .unwrap();
    let (texts, code) = ws_read_until_close(&mut ws).await;
    assert_eq!(texts.len(), 1);
    assert_eq!(code, Some(1000));
    // A campaign with nothing cached sends nothing first.
    let mut quiet = alice.subscribe_campaign(cid(ALICE_CAMPAIGN_2)).updates();
    expect_connected(&mut quiet).await;
    let step = progress(ALICE_CAMPAIGN_2, 1, 2);
    server
        .hub
        .publish_campaign(&cid(ALICE_CAMPAIGN_2), &step)
        .await
        .unwrap();
    assert_eq!(next_event(&mut quiet).await, Event::Campaign(step));
}

// ===== §2.8 Client → server messages, limits =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_8_client_messages_within_the_limits_are_ignored() {
    let server = Server::start().await;
    let mut ws = ws_alice_inbox(&server).await;
    ws.send(WsMessage::text("hello")).await.unwrap();
    ws.send(WsMessage::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    ws.send(WsMessage::text("x".repeat(4096))).await.unwrap();
    ws.send(WsMessage::Ping(bytes::Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("i", 1))
        .await
        .unwrap();
    // The server answered the ping (any order with the event) and stayed up.
    let mut saw_pong = false;
    let text = within("the event", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Pong(payload))) => {
                    saw_pong |= &payload[..] == b"are you there";
                }
                Some(Ok(WsMessage::Text(text))) => return text.as_str().to_owned(),
                Some(Ok(WsMessage::Close(frame))) => panic!("closed: {frame:?}"),
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert_eq!(text.as_bytes(), &email("i", 1).encode().bytes()[..]);
    if !saw_pong {
        match within("the pong", ws.next()).await {
            Some(Ok(WsMessage::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
            other => panic!("expected the pong: {other:?}"),
        }
    }
    assert_eq!(server.hub.connection_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_8_a_client_message_over_4_kib_is_closed_1009() {
    let server = Server::start().await;
    for message in [
        WsMessage::text("x".repeat(4097)),
        WsMessage::binary(vec![7u8; 5000]),
    ] {
        let mut ws = ws_alice_inbox(&server).await;
        ws.send(message).await.unwrap();
        let (_, code) = ws_read_until_close(&mut ws).await;
        assert_eq!(code, Some(1009));
    }
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_8_a_flood_of_client_messages_is_closed_1008() {
    let server = Server::start().await;
    let mut ws = ws_alice_inbox(&server).await;
    for n in 0..100 {
        // The server may close (and stop reading) before the flood is over.
        if ws.send(WsMessage::text(format!("spam {n}"))).await.is_err() {
            break;
        }
    }
    let (_, code) = ws_read_until_close(&mut ws).await;
    assert_eq!(code, Some(1008));
    // Pings count too (a ping flood is a flood).
    let mut ws = ws_alice_inbox(&server).await;
    for _ in 0..100 {
        if ws.send(WsMessage::Ping(bytes::Bytes::new())).await.is_err() {
            break;
        }
    }
    let (_, code) = ws_read_until_close(&mut ws).await;
    assert_eq!(code, Some(1008));
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_8_frames_over_the_websocket_limits_end_the_connection() {
    let server = Server::start().await;
    // A 100 KiB message: over the WebSocket layer's 64 KiB limit, cut off there.
    let mut ws = ws_alice_inbox(&server).await;
    let _ = ws.send(WsMessage::binary(vec![1u8; 100 << 10])).await;
    let (_, code) = ws_read_until_close(&mut ws).await;
    assert_eq!(
        code,
        Some(1009),
        "over the WebSocket layer's limit is still a 1009"
    );
    // A frame header announcing 1 GiB: refused from the header, nothing allocated for it.
    let mut peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY)))
        .await
        .unwrap();
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    peer.send_raw(&header).await.unwrap();
    let seen = peer.read_until_close().await;
    assert_eq!(seen.close, Some(Some(1009)), "{seen:?}");
    server.wait_idle().await;
}

// A read error that is the peer's fault (size limit, broken frame, invalid UTF-8) is answered
// with its close code before the connection ends, not with a silent drop (the peer would see
// 1006).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_8_a_message_over_the_websocket_limit_is_closed_1009() {
    let server = Server::start().await;
    let mut peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY)))
        .await
        .unwrap();
    peer.send_frame(OP_BINARY, &vec![1u8; 100 << 10])
        .await
        .unwrap();
    let seen = peer.read_until_close().await;
    assert_eq!(seen.close, Some(Some(1009)), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_8_protocol_violations_are_closed_1002_or_1007() {
    let server = Server::start().await;
    for (what, bytes, code) in [
        (
            "an unmasked frame",
            client_frame(0x80 | OP_TEXT, b"hi", false),
            1002,
        ),
        (
            "a reserved opcode",
            client_frame(0x80 | 0x3, b"?", true),
            1002,
        ),
        (
            "a 126-byte ping",
            client_frame(0x80 | OP_PING, &[0u8; 126], true),
            1002,
        ),
        (
            "invalid UTF-8 text",
            client_frame(0x80 | OP_TEXT, &[0xC3, 0x28], true),
            1007,
        ),
    ] {
        let mut peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY)))
            .await
            .unwrap();
        peer.send_raw(&bytes).await.unwrap();
        let seen = peer.read_until_close().await;
        assert_eq!(seen.close, Some(Some(code)), "{what}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_8_protocol_garbage_ends_the_connection() {
    let server = Server::start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", vec![0xFF; 64]),
        (
            "an unmasked frame",
            client_frame(0x80 | OP_TEXT, b"hi", false),
        ),
        ("a reserved opcode", client_frame(0x80 | 0x3, b"?", true)),
        (
            "RSV1 without an extension",
            client_frame(0x80 | 0x40 | OP_TEXT, b"hi", true),
        ),
        (
            "a 126-byte ping",
            client_frame(0x80 | OP_PING, &[0u8; 126], true),
        ),
        ("a fragmented ping", client_frame(OP_PING, b"p", true)),
        (
            "invalid UTF-8 text",
            client_frame(0x80 | OP_TEXT, &[0xC3, 0x28], true),
        ),
        (
            "a 1-byte close payload",
            client_frame(0x80 | OP_CLOSE, &[3], true),
        ),
        (
            "a continuation without a start",
            client_frame(0x80, b"orphan", true),
        ),
    ];
    for (what, bytes) in cases {
        let mut peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY)))
            .await
            .unwrap();
        peer.send_raw(&bytes).await.unwrap();
        let seen = peer.read_until_close().await;
        assert!(
            matches!(seen.close, None | Some(Some(1002)) | Some(Some(1007))),
            "{what}: {seen:?}"
        );
        assert!(seen.texts.is_empty(), "{what}");
    }
    server.wait_idle().await;
    let mut ws = ws_alice_inbox(&server).await;
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("after", 1))
        .await
        .unwrap();
    ws_next_text(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_8_connections_are_limited_per_account_429_and_in_total_503_with_retry_after() {
    let server = Server::start_with(
        ServerOptions {
            hub: HubConfig {
                max_connections_per_account: 2,
                max_connections: 3,
                retry_after: Duration::from_secs(7),
                ..HubConfig::default()
            },
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;
    let a1 = ws_alice_inbox(&server).await;
    let _a2 = ws_alice_inbox(&server).await;
    let refusal = ws_refusal(server.addr, "/mail/ws/inbox", &h(&auth_header(ALICE_KEY))).await;
    assert_eq!(refusal.status, 429);
    let _b1 = ws_connect(server.addr, "/mail/ws/inbox", &h(&auth_header(BOB_KEY)))
        .await
        .unwrap();
    let refusal = ws_refusal(server.addr, "/mail/ws/inbox", &h(&auth_header(BOB_KEY))).await;
    assert_eq!(refusal.status, 503);
    assert_eq!(refusal.header("retry-after"), Some("7"));
    assert_eq!(server.hub.connection_count(), 3);
    // A slot freed is a slot available.
    drop(a1);
    server.wait_connections(2).await;
    ws_alice_inbox(&server).await;
}

// ===== §2.9 Shutdown and revocation =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_9_shutdown_closes_every_connection_1001_and_no_task_outlives_it() {
    let baseline = alive_tasks();
    let grace = Duration::from_millis(400);
    let mut server = Server::start_with(
        ServerOptions {
            server: ServerConfig {
                // Longer than the shutdown's grace: a peer that never answers the close is
                // dropped by the shutdown, not by its session.
                close_grace: Duration::from_secs(5),
                ..server_config()
            },
            ..ServerOptions::default()
        },
        |b| b.shutdown_grace(grace),
    )
    .await;
    let mut clients = Vec::new();
    for (api_key, campaign) in [
        (ALICE_KEY, None),
        (ALICE_KEY, Some(ALICE_CAMPAIGN)),
        (ALICE_KEY, Some(ALICE_CAMPAIGN_2)),
        (BOB_KEY, None),
        (BOB_KEY, Some(BOB_CAMPAIGN)),
    ] {
        for _ in 0..4 {
            let client = server
                .client(api_key)
                .reconnect(ReconnectPolicy::Never)
                .build()
                .unwrap();
            let mut updates = match campaign {
                Some(c) => client.subscribe_campaign(cid(c)).updates(),
                None => client.subscribe_inbox().updates(),
            };
            expect_connected(&mut updates).await;
            // Polled all along, as an application does: the close is answered.
            clients.push(tokio::spawn(
                async move { expect_error(&mut updates).await },
            ));
        }
    }
    let mut polite = ws_alice_inbox(&server).await;
    let polite = tokio::spawn(async move { ws_read_until_close(&mut polite).await });
    let mut silent = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&auth_header(BOB_KEY)))
        .await
        .unwrap();
    let total = clients.len() + 2;
    server.wait_connections(total).await;

    let started = Instant::now();
    let report = server.stop().await;
    let took = started.elapsed();
    assert_eq!(report.connections, total);
    assert_eq!(
        report.dropped, 1,
        "only the peer that never answered was dropped"
    );
    assert!(
        took >= grace,
        "the shutdown waited for the silent peer: {took:?}"
    );
    assert_eq!(server.shutdown.active_connections(), 0);
    assert_eq!(server.hub.connection_count(), 0);
    assert!(!server.is_serving());

    for client in clients {
        match within("a client", client).await.unwrap() {
            SubscriptionError::GaveUp {
                cause: Disconnect::Closed(CloseCode::GoingAway),
                ..
            } => {}
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    assert_eq!(
        within("the polite client", polite).await.unwrap().1,
        Some(1001)
    );
    let seen = silent.read_until_close().await;
    assert_eq!(seen.close, Some(Some(1001)), "{seen:?}");
    assert!(silent.ends_without_another_frame().await);
    drop(server);
    let settled = wait_until("every task to end", || alive_tasks() <= baseline).await;
    println!(
        "s2.9: shutdown of {total} connections took {:.0} ms (grace {grace:?}, 1 dropped); \
         tasks back to {baseline} after {:.0} ms more",
        ms(took),
        ms(settled)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_9_shutdown_also_ends_sockets_upgraded_only_to_be_refused() {
    // Close-after-upgrade refusals hold a socket (no hub slot) while they wait for the
    // client's answer to 4401; one whose client never answers must not outlive a shutdown.
    let baseline = alive_tasks();
    let grace = Duration::from_millis(300);
    let mut server = Server::start_with(
        ServerOptions {
            server: ServerConfig {
                close_grace: Duration::from_secs(30),
                ..server_config()
            },
            ..ServerOptions::default()
        },
        |b| {
            b.rejection_style(RejectionStyle::CloseAfterUpgrade)
                .shutdown_grace(grace)
        },
    )
    .await;
    let mut refused = RawPeer::connect(server.addr, "/mail/ws/inbox?token=msk_e2e_nobody_5", &[])
        .await
        .expect("upgraded to be refused");
    let shutdown = server.shutdown.clone();
    wait_until("the refused socket to be tracked", move || {
        shutdown.active_connections() == 1
    })
    .await;
    let report = server.stop().await;
    assert_eq!(report.connections, 1);
    assert_eq!(report.dropped, 1);
    assert_eq!(server.shutdown.active_connections(), 0);
    let seen = refused.read_until_close().await;
    assert_eq!(seen.close, Some(Some(4401)));
    assert!(refused.ends_without_another_frame().await);
    drop(server);
    wait_until("every task to end", || alive_tasks() <= baseline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_9_revocation_closes_with_4401_or_4403_and_touches_nobody_else() {
    let server = Server::start().await;
    let alice = server.client(ALICE_KEY).build().unwrap();
    let bob = server.client(BOB_KEY).build().unwrap();
    let mut alice_inbox = alice.subscribe_inbox().updates();
    let mut alice_campaign = alice.subscribe_campaign(cid(ALICE_CAMPAIGN)).updates();
    let mut alice_campaign_2 = alice.subscribe_campaign(cid(ALICE_CAMPAIGN_2)).updates();
    let mut bob_inbox = bob.subscribe_inbox().updates();
    let mut bob_campaign = bob.subscribe_campaign(cid(BOB_CAMPAIGN)).updates();
    for updates in [
        &mut alice_inbox,
        &mut alice_campaign,
        &mut alice_campaign_2,
        &mut bob_inbox,
        &mut bob_campaign,
    ] {
        expect_connected(updates).await;
    }
    let mut raw = ws_alice_inbox(&server).await;

    // The campaign changes hands: its subscribers are closed with 4403, no one else.
    server
        .auth
        .tables
        .grant_campaign(cid(ALICE_CAMPAIGN), acct(BOB));
    server.hub.revoke_campaign(&cid(ALICE_CAMPAIGN));
    assert!(matches!(
        expect_error(&mut alice_campaign).await,
        SubscriptionError::Closed {
            code: CloseCode::Forbidden,
            ..
        }
    ));
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("r", 1))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut alice_inbox).await,
        Event::Inbox(email("r", 1))
    );
    // Read before the revocation: a revocation discards what is still queued.
    ws_next_text(&mut raw).await;

    // Alice's key is revoked: all her connections close with 4401.
    server.hub.revoke(&acct(ALICE));
    for updates in [&mut alice_inbox, &mut alice_campaign_2] {
        assert!(matches!(
            expect_error(updates).await,
            SubscriptionError::Closed {
                code: CloseCode::Unauthorized,
                ..
            }
        ));
    }
    let (texts, code) = ws_read_until_close(&mut raw).await;
    assert_eq!(code, Some(4401));
    assert!(texts.is_empty(), "{texts:?}");

    // Bob is untouched.
    server
        .hub
        .publish_inbox(&acct(BOB), &email("b", 1))
        .await
        .unwrap();
    let step = progress(BOB_CAMPAIGN, 1, 2);
    server
        .hub
        .publish_campaign(&cid(BOB_CAMPAIGN), &step)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut bob_inbox).await,
        Event::Inbox(email("b", 1))
    );
    assert_eq!(next_event(&mut bob_campaign).await, Event::Campaign(step));
    server.wait_connections(2).await;
}

/// A campaign id from a literal the test knows to be valid.
fn cid(id: &str) -> misar_proto::route::CampaignId {
    misar_proto::route::CampaignId::new(id).expect("a valid campaign id")
}
