//! §2.1–§2.3 at the HTTP level: raw handshakes over TCP, checking the status, the headers, the
//! JSON body, that no 101 was sent on a refusal, and which hooks were asked.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use misar_proto::handshake::RejectionStyle;

fn assert_refusal(response: &RawResponse, status: u16, error: &str, close_code: Option<u64>) {
    let raw = String::from_utf8_lossy(&response.raw);
    assert_eq!(response.status, status, "{raw}");
    assert_eq!(response.header("cache-control"), Some("no-store"), "{raw}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["error"], error, "{body}");
    match close_code {
        Some(code) => {
            assert_eq!(body["closeCode"], code, "{body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
        None => assert!(body.get("closeCode").is_none(), "{body}"),
    }
    // Never a key, whatever was sent.
    let text = String::from_utf8_lossy(&response.raw);
    for key in [ALICE_KEY, BOB_KEY, "msk_unknown", "msk_nobody", "msk_bad"] {
        assert!(!text.contains(key), "{text}");
    }
}

// ----- §2.1 endpoints -----

#[tokio::test]
async fn both_channels_upgrade() {
    let server = TestServer::start().await;
    server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    server
        .connect(
            &format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
    assert_eq!(server.auth.checks(), (2, 1));
}

#[tokio::test]
async fn other_paths_under_the_prefix_are_404_before_authentication() {
    let server = TestServer::start().await;
    let long_id = "a".repeat(129);
    for path in [
        "/mail/ws",
        "/mail/ws/",
        "/mail/ws/inbox/",
        "/mail/ws/inboxes",
        "/mail/ws/campaigns",
        "/mail/ws/campaigns/",
        "/mail/ws/campaigns/a/b",
        "/mail/ws/campaigns/bad.id",
        "/mail/ws/campaigns/bad%2Fid",
        "/mail/ws/campaigns/%FF",
        &format!("/mail/ws/campaigns/{long_id}"),
        "/mail/ws/other",
    ] {
        // With a valid key, with a bad one, and with none: always 404.
        for headers in [vec![bearer(ALICE_KEY)], vec![bearer("msk_nobody")], vec![]] {
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let response = server.refused(path, &headers).await;
            assert_refusal(&response, 404, "not_found", None);
        }
    }
    assert_eq!(server.auth.checks(), (0, 0), "routing is decided first");
}

#[tokio::test]
async fn campaign_ids_are_percent_decoded_and_up_to_128_characters() {
    let server = TestServer::start().await;
    // `%2D` is `-`: the id is `camp-alice`.
    server
        .connect("/mail/ws/campaigns/camp%2Dalice", &[&bearer(ALICE_KEY)])
        .await;
    // 128 characters is a valid id (unknown here, so 403 — routing passed).
    let id = "b".repeat(128);
    let response = server
        .refused(&format!("/mail/ws/campaigns/{id}"), &[&bearer(ALICE_KEY)])
        .await;
    assert_refusal(&response, 403, "forbidden", Some(4403));
}

#[tokio::test]
async fn the_prefix_is_configurable() {
    let server = TestServer::start_with(hub_config(), |b| b.prefix("/realtime/v1")).await;
    server
        .connect("/realtime/v1/inbox", &[&bearer(ALICE_KEY)])
        .await;
    let response = server
        .refused("/realtime/v1/nothing", &[&bearer(ALICE_KEY)])
        .await;
    assert_refusal(&response, 404, "not_found", None);
    // The default prefix is not served any more (axum's own 404: not our route).
    let response = server
        .refused("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    assert_eq!(response.status, 404);
}

#[tokio::test]
async fn the_router_can_be_nested() {
    let server = TestServer::start_mounted(
        hub_config(),
        |b| b,
        |router| axum::Router::new().nest("/api", router),
    )
    .await;
    server
        .connect("/api/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    let response = server
        .refused("/api/mail/ws/campaigns/camp-bob", &[&bearer(ALICE_KEY)])
        .await;
    assert_refusal(&response, 403, "forbidden", Some(4403));
}

#[tokio::test]
async fn other_methods_get_405() {
    let server = TestServer::start().await;
    let response = request(
        server.addr,
        "POST",
        "/mail/ws/inbox",
        &[&bearer(ALICE_KEY)],
        b"",
    )
    .await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET"));
    assert_eq!(server.auth.checks(), (0, 0));
}

#[tokio::test]
async fn an_authorized_request_that_is_not_an_upgrade_gets_426() {
    let server = TestServer::start().await;
    let response = request(
        server.addr,
        "GET",
        "/mail/ws/inbox",
        &[&bearer(ALICE_KEY)],
        b"",
    )
    .await;
    assert_eq!(response.status, 426);
    assert_eq!(response.header("upgrade"), Some("websocket"));
    assert_eq!(server.connections(), 0, "no hub slot taken");
}

// ----- §2.2 authentication -----

#[tokio::test]
async fn header_and_query_credentials_are_accepted() {
    let server = TestServer::start().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        server
            .connect(
                "/mail/ws/inbox",
                &[&format!("Authorization: {scheme} {ALICE_KEY}")],
            )
            .await;
    }
    server
        .connect(&format!("/mail/ws/inbox?token={ALICE_KEY}"), &[])
        .await;
    // Percent-encoded (`%5F` is `_`), among other parameters.
    let encoded = ALICE_KEY.replace('_', "%5F");
    server
        .connect(&format!("/mail/ws/inbox?x=1&token={encoded}&y"), &[])
        .await;
    // The same key in both places.
    server
        .connect(
            &format!("/mail/ws/inbox?token={ALICE_KEY}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
}

#[tokio::test]
async fn ambiguous_or_malformed_credentials_are_refused_without_asking_the_hook() {
    let server = TestServer::start().await;
    let too_long = format!("msk_{}", "k".repeat(253));
    let cases: Vec<(String, Vec<String>)> = vec![
        ("/mail/ws/inbox".into(), vec![]),
        (
            format!("/mail/ws/inbox?token={BOB_KEY}"),
            vec![bearer(ALICE_KEY)],
        ),
        (
            "/mail/ws/inbox".into(),
            vec![bearer(ALICE_KEY), bearer(ALICE_KEY)],
        ),
        (
            format!("/mail/ws/inbox?token={ALICE_KEY}&token={ALICE_KEY}"),
            vec![],
        ),
        (
            "/mail/ws/inbox".into(),
            vec![format!("Authorization: Basic {ALICE_KEY}")],
        ),
        (
            "/mail/ws/inbox".into(),
            vec!["Authorization: Bearer".into()],
        ),
        (
            "/mail/ws/inbox".into(),
            vec!["Authorization: Bearer sk_live_123".into()],
        ),
        (
            "/mail/ws/inbox".into(),
            vec!["Authorization: Bearer msk_".into()],
        ),
        (
            "/mail/ws/inbox".into(),
            vec!["Authorization: Bearer msk_bad.key".into()],
        ),
        ("/mail/ws/inbox".into(), vec![bearer(&too_long)]),
        ("/mail/ws/inbox?token=".into(), vec![]),
        ("/mail/ws/inbox?token=msk_a%20b".into(), vec![]),
        (format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}"), vec![]),
    ];
    for (path, headers) in &cases {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let response = server.refused(path, &headers).await;
        assert_refusal(&response, 403, "unauthorized", Some(4401));
    }
    assert_eq!(server.auth.checks(), (0, 0));
}

#[tokio::test]
async fn an_unknown_key_is_refused_after_the_hook() {
    let server = TestServer::start().await;
    let response = server
        .refused("/mail/ws/inbox", &[&bearer("msk_unknown_key")])
        .await;
    assert_refusal(&response, 403, "unauthorized", Some(4401));
    let response = server
        .refused("/mail/ws/inbox?token=msk_unknown_key", &[])
        .await;
    assert_refusal(&response, 403, "unauthorized", Some(4401));
    assert_eq!(server.auth.checks(), (2, 0));
}

#[tokio::test]
async fn foreign_and_unknown_campaigns_get_the_same_answer() {
    let server = TestServer::start().await;
    let foreign = server
        .refused(
            &format!("/mail/ws/campaigns/{BOB_CAMPAIGN}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
    let unknown = server
        .refused("/mail/ws/campaigns/no-such-campaign", &[&bearer(ALICE_KEY)])
        .await;
    assert_refusal(&foreign, 403, "forbidden", Some(4403));
    assert_eq!(foreign.body, unknown.body, "no existence oracle");
    assert_eq!(foreign.headers.len(), unknown.headers.len());
    assert_eq!(server.auth.checks(), (2, 2));
}

#[tokio::test]
async fn a_failing_hook_fails_closed_with_503() {
    let server = TestServer::start().await;
    server.auth.fail_keys.store(true, Ordering::SeqCst);
    let response = server
        .refused("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    assert_refusal(&response, 503, "unavailable", None);
    server.auth.fail_keys.store(false, Ordering::SeqCst);
    server.auth.fail_ownership.store(true, Ordering::SeqCst);
    let response = server
        .refused(
            &format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
    assert_refusal(&response, 503, "unavailable", None);
    // Also in the close style: a failure is never delivered as an upgrade.
    let server = TestServer::start_with(hub_config(), |b| {
        b.rejection_style(RejectionStyle::CloseAfterUpgrade)
    })
    .await;
    server.auth.fail_keys.store(true, Ordering::SeqCst);
    let response = server.refused("/mail/ws/inbox?token=msk_any", &[]).await;
    assert_refusal(&response, 503, "unavailable", None);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn the_origin_allowlist() {
    let server = TestServer::start_with(hub_config(), |b| {
        b.allowed_origins(["https://app.example.com"])
    })
    .await;
    server
        .connect(
            "/mail/ws/inbox",
            &[&bearer(ALICE_KEY), "Origin: https://app.example.com"],
        )
        .await;
    // Not a browser: no Origin, allowed.
    server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    let response = server
        .refused(
            "/mail/ws/inbox",
            &[&bearer(ALICE_KEY), "Origin: https://evil.example"],
        )
        .await;
    assert_refusal(&response, 403, "origin_forbidden", None);
    assert_eq!(
        server.auth.checks(),
        (2, 0),
        "a refused origin asks no hook"
    );
}

// ----- §2.3 rejection styles -----

#[tokio::test]
async fn close_after_upgrade_closes_with_4401_and_4403() {
    let server = TestServer::start_with(hub_config(), |b| {
        b.rejection_style(RejectionStyle::CloseAfterUpgrade)
    })
    .await;
    for (path, headers, code) in [
        ("/mail/ws/inbox".to_owned(), vec![], 4401),
        ("/mail/ws/inbox?token=msk_unknown".to_owned(), vec![], 4401),
        (
            "/mail/ws/inbox".to_owned(),
            vec![bearer("msk_unknown")],
            4401,
        ),
        (
            format!("/mail/ws/campaigns/{BOB_CAMPAIGN}?token={ALICE_KEY}"),
            vec![],
            4403,
        ),
        (
            format!("/mail/ws/campaigns/{BOB_CAMPAIGN}"),
            vec![bearer(ALICE_KEY)],
            4403,
        ),
    ] {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut socket = server.connect(&path, &headers).await;
        let (texts, close) = read_until_close(&mut socket).await;
        assert!(texts.is_empty(), "{path}: {texts:?}");
        assert_eq!(close, Some(code), "{path}");
    }
    // Rejected sockets take no hub slot.
    assert_eq!(server.connections(), 0);
    // 404 and other non-auth failures stay HTTP.
    let response = server.refused("/mail/ws/nope?token=msk_unknown", &[]).await;
    assert_refusal(&response, 404, "not_found", None);
    // A request that cannot be upgraded gets the HTTP form.
    let response = request(
        server.addr,
        "GET",
        "/mail/ws/inbox?token=msk_unknown",
        &[],
        b"",
    )
    .await;
    assert_refusal(&response, 403, "unauthorized", Some(4401));
}

#[tokio::test]
async fn auto_style_closes_for_query_clients_and_answers_http_to_header_clients() {
    let server =
        TestServer::start_with(hub_config(), |b| b.rejection_style(RejectionStyle::Auto)).await;
    let mut socket = server
        .connect("/mail/ws/inbox?token=msk_unknown", &[])
        .await;
    assert_eq!(read_until_close(&mut socket).await.1, Some(4401));
    let mut socket = server
        .connect(
            &format!("/mail/ws/campaigns/{BOB_CAMPAIGN}?token={ALICE_KEY}"),
            &[],
        )
        .await;
    assert_eq!(read_until_close(&mut socket).await.1, Some(4403));
    let response = server
        .refused("/mail/ws/inbox", &[&bearer("msk_unknown")])
        .await;
    assert_refusal(&response, 403, "unauthorized", Some(4401));
    let response = server
        .refused(
            &format!("/mail/ws/campaigns/{BOB_CAMPAIGN}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
    assert_refusal(&response, 403, "forbidden", Some(4403));
    // No credentials at all: nothing says it is a browser, so HTTP.
    let response = server.refused("/mail/ws/inbox", &[]).await;
    assert_refusal(&response, 403, "unauthorized", Some(4401));
}

#[tokio::test]
async fn close_style_rejections_fall_back_to_http_at_the_connection_limit() {
    let config = misar_proto_tokio::hub::HubConfig {
        max_connections: 1,
        ..hub_config()
    };
    let server = TestServer::start_with(config, |b| {
        b.rejection_style(RejectionStyle::CloseAfterUpgrade)
    })
    .await;
    let _held = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    let response = server
        .refused("/mail/ws/inbox?token=msk_unknown", &[])
        .await;
    assert_refusal(&response, 403, "unauthorized", Some(4401));
}
