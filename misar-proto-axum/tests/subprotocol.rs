//! §2.12 over real sockets: the key in `Sec-WebSocket-Protocol`, the echo of exactly
//! `misar.v1`, 400 for a bearer entry without it, ambiguities refused without the hook, and
//! `Auto` treating a subprotocol client as a browser.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use misar_proto::auth::{AccountId, ApiKey};
use misar_proto::client::AuthStyle;
use misar_proto::event::{Event, decode_inbox};
use misar_proto::handshake::RejectionStyle;
use misar_proto_tokio::client::{Client, Update};

const EMAIL: &str = r#"{"type":"email_received","from":"ana@example.com","subject":"Hi","receivedAt":"2026-05-27T10:15:00Z"}"#;

fn offer(value: &str) -> String {
    format!("Sec-WebSocket-Protocol: {value}")
}

fn bearer_offer(key: &str) -> String {
    offer(&format!("misar.v1, misar.bearer.{key}"))
}

/// Every `Sec-WebSocket-Protocol` value of a response.
fn echoed(response: &RawResponse) -> Vec<&str> {
    response
        .headers
        .iter()
        .filter(|(name, _)| name == "sec-websocket-protocol")
        .map(|(_, value)| value.as_str())
        .collect()
}

#[tokio::test]
async fn a_good_key_upgrades_with_exactly_misar_v1_echoed_and_events_flow() {
    let server = TestServer::start().await;
    let (response, socket) = server
        .upgrade("/mail/ws/inbox", &[&bearer_offer(ALICE_KEY)])
        .await;
    assert_eq!(response.status, 101);
    assert_eq!(echoed(&response), ["misar.v1"]);
    assert!(!String::from_utf8_lossy(&response.raw).contains(ALICE_KEY));
    assert_eq!(server.auth.checks(), (1, 0));
    let mut socket = socket.unwrap();
    server
        .hub
        .publish_inbox(
            &AccountId::from("alice"),
            &decode_inbox(EMAIL.as_bytes()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(next_text(&mut socket).await, EMAIL);

    // The campaign channel too.
    let (response, _socket) = server
        .upgrade(
            &format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}"),
            &[&bearer_offer(ALICE_KEY)],
        )
        .await;
    assert_eq!(response.status, 101);
    assert_eq!(echoed(&response), ["misar.v1"]);
}

#[tokio::test]
async fn misar_v1_alone_is_served_and_echoed() {
    let server = TestServer::start().await;
    let (response, socket) = server
        .upgrade(
            "/mail/ws/inbox",
            &[&bearer(ALICE_KEY), &offer("chat, misar.v1")],
        )
        .await;
    assert_eq!(response.status, 101);
    assert_eq!(echoed(&response), ["misar.v1"]);
    assert!(socket.is_some());
    // No offer, no echo.
    let (response, _socket) = server
        .upgrade("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    assert_eq!(response.status, 101);
    assert!(echoed(&response).is_empty());
}

#[tokio::test]
async fn a_bad_key_is_403_over_http_and_4401_after_an_echoing_upgrade_in_auto_style() {
    let server = TestServer::start().await;
    let response = server
        .refused("/mail/ws/inbox", &[&bearer_offer("msk_nobody_at_all")])
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.json()["closeCode"], 4401);
    assert!(echoed(&response).is_empty());
    assert!(!String::from_utf8_lossy(&response.raw).contains("msk_nobody"));

    let server =
        TestServer::start_with(hub_config(), |b| b.rejection_style(RejectionStyle::Auto)).await;
    let (response, socket) = server
        .upgrade("/mail/ws/inbox", &[&bearer_offer("msk_nobody_at_all")])
        .await;
    assert_eq!(response.status, 101, "a browser: close after the upgrade");
    assert_eq!(echoed(&response), ["misar.v1"]);
    let (texts, code) = read_until_close(&mut socket.unwrap()).await;
    assert!(texts.is_empty());
    assert_eq!(code, Some(4401));
    // A foreign campaign: 4403, echoed too.
    let (response, socket) = server
        .upgrade(
            &format!("/mail/ws/campaigns/{BOB_CAMPAIGN}"),
            &[&bearer_offer(ALICE_KEY)],
        )
        .await;
    assert_eq!(echoed(&response), ["misar.v1"]);
    assert_eq!(read_until_close(&mut socket.unwrap()).await.1, Some(4403));
}

#[tokio::test]
async fn places_that_disagree_or_several_bearer_entries_never_reach_the_hook() {
    for style in [RejectionStyle::Http, RejectionStyle::Auto] {
        let server = TestServer::start_with(hub_config(), |b| b.rejection_style(style)).await;
        let cases: [(String, Vec<String>); 3] = [
            (
                format!("/mail/ws/inbox?token={BOB_KEY}"),
                vec![bearer_offer(ALICE_KEY)],
            ),
            (
                "/mail/ws/inbox".to_owned(),
                vec![
                    bearer_offer(ALICE_KEY),
                    offer(&format!("misar.bearer.{ALICE_KEY}")),
                ],
            ),
            (
                "/mail/ws/inbox".to_owned(),
                vec![bearer(BOB_KEY), bearer_offer(ALICE_KEY)],
            ),
        ];
        for (path, headers) in &cases {
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let (response, socket) = server.upgrade(path, &headers).await;
            let header_involved = headers.iter().any(|h| h.starts_with("Authorization"));
            if style == RejectionStyle::Auto && !header_involved {
                assert_eq!(response.status, 101, "{path} {headers:?}");
                assert_eq!(echoed(&response), ["misar.v1"]);
                assert_eq!(read_until_close(&mut socket.unwrap()).await.1, Some(4401));
            } else {
                assert_eq!(response.status, 403, "{path} {headers:?}");
                assert_eq!(response.json()["closeCode"], 4401);
            }
        }
        assert_eq!(server.auth.checks(), (0, 0), "no hook call");
    }
}

#[tokio::test]
async fn a_bearer_entry_without_misar_v1_is_400() {
    for style in [RejectionStyle::Http, RejectionStyle::CloseAfterUpgrade] {
        let server = TestServer::start_with(hub_config(), |b| b.rejection_style(style)).await;
        for value in [
            format!("misar.bearer.{ALICE_KEY}"),
            format!("chat, misar.bearer.{ALICE_KEY}"),
        ] {
            let response = server.refused("/mail/ws/inbox", &[&offer(&value)]).await;
            assert_eq!(response.status, 400);
            assert_eq!(response.json()["error"], "bad_request");
            assert_eq!(response.header("cache-control"), Some("no-store"));
            assert!(echoed(&response).is_empty());
            assert!(!String::from_utf8_lossy(&response.raw).contains(ALICE_KEY));
        }
        assert_eq!(server.auth.checks(), (0, 0));
    }
}

async fn next(updates: &mut misar_proto_tokio::client::Updates) -> Update {
    tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("an update in time")
        .expect("the stream goes on")
        .expect("no error")
}

#[tokio::test]
async fn the_rust_client_authenticates_with_the_subprotocol() {
    let server = TestServer::start().await;
    let key = ApiKey::parse(ALICE_KEY).unwrap();
    let client = Client::builder(format!("ws://{}/mail/ws", server.addr), key)
        .auth(AuthStyle::Subprotocol)
        .build()
        .unwrap();
    let mut updates = client.subscribe_inbox().updates();
    assert_eq!(next(&mut updates).await, Update::Connected);
    // Opted in to §2.11 by default: the server's answer comes first.
    assert!(matches!(next(&mut updates).await, Update::Resumed { .. }));
    server
        .hub
        .publish_inbox(
            &AccountId::from("alice"),
            &decode_inbox(EMAIL.as_bytes()).unwrap(),
        )
        .await
        .unwrap();
    match next(&mut updates).await {
        Update::Event { event, raw, offset } => {
            assert!(matches!(event, Event::Inbox(_)));
            let offset = offset.expect("an opted-in event carries its offset");
            let expected = format!("{},\"offset\":{offset}}}", &EMAIL[..EMAIL.len() - 1]);
            assert_eq!(&raw[..], expected.as_bytes());
        }
        other => panic!("{other:?}"),
    }
    updates.close().await;
}
