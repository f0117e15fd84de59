//! Accepted connections end to end over loopback: events in order and per tenant, the close
//! after a terminal event, heartbeats, the limits of §2.8, and revocation.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use misar_proto::auth::AccountId;
use misar_proto::event::{
    CampaignEvent, Completed, EmailReceived, InboxEvent, Progress, Timestamp,
};
use misar_proto::route::CampaignId;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn email(n: usize) -> InboxEvent {
    InboxEvent::EmailReceived(EmailReceived::new(
        format!("sender{n}@example.com"),
        format!("message {n}"),
        Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
    ))
}

fn progress(campaign: &str, sent: u64) -> CampaignEvent {
    CampaignEvent::Progress(Progress::new(
        CampaignId::new(campaign).unwrap(),
        sent,
        100,
        sent,
        0,
        0,
    ))
}

fn completed(campaign: &str) -> CampaignEvent {
    CampaignEvent::Completed(Completed::new(
        CampaignId::new(campaign).unwrap(),
        100,
        99,
        1,
        10,
    ))
}

fn text_of(bytes: &bytes::Bytes) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn inbox_events_arrive_intact_in_order_and_only_to_their_account() {
    let server = TestServer::start().await;
    let mut alice_header = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    let mut alice_query = server
        .connect(&format!("/mail/ws/inbox?token={ALICE_KEY}"), &[])
        .await;
    let mut bob = server.connect("/mail/ws/inbox", &[&bearer(BOB_KEY)]).await;
    assert_eq!(server.connections(), 3);

    let alice = AccountId::from("alice");
    let mut expected = Vec::new();
    for n in 0..50 {
        let event = email(n);
        expected.push(text_of(event.encode().bytes()));
        let report = server.hub.publish_inbox(&alice, &event).await.unwrap();
        assert_eq!(report.delivered, 2);
    }
    let for_bob = email(999);
    server
        .hub
        .publish_inbox(&AccountId::from("bob"), &for_bob)
        .await
        .unwrap();

    for socket in [&mut alice_header, &mut alice_query] {
        for want in &expected {
            assert_eq!(&next_text(socket).await, want);
        }
    }
    // Bob's first message is his own event: none of alice's reached him.
    assert_eq!(next_text(&mut bob).await, text_of(for_bob.encode().bytes()));
}

#[tokio::test]
async fn a_campaign_channel_ends_with_1000_after_its_terminal_event() {
    let server = TestServer::start().await;
    let campaign = CampaignId::new(ALICE_CAMPAIGN).unwrap();
    // A late joiner first gets the latest progress the hub knows.
    server
        .hub
        .publish_campaign(&campaign, &progress(ALICE_CAMPAIGN, 10))
        .await
        .unwrap();
    let mut socket = server
        .connect(
            &format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
    let first = next_text(&mut socket).await;
    assert_eq!(
        first,
        text_of(progress(ALICE_CAMPAIGN, 10).encode().bytes())
    );

    for sent in [20, 30, 40] {
        server
            .hub
            .publish_campaign(&campaign, &progress(ALICE_CAMPAIGN, sent))
            .await
            .unwrap();
    }
    server
        .hub
        .publish_campaign(&campaign, &completed(ALICE_CAMPAIGN))
        .await
        .unwrap();
    let (texts, close) = read_until_close(&mut socket).await;
    assert_eq!(close, Some(1000));
    let (last, progresses) = texts.split_last().expect("the terminal event");
    assert_eq!(last, &text_of(completed(ALICE_CAMPAIGN).encode().bytes()));
    // Progress may be coalesced, never reordered.
    let sent: Vec<u64> = progresses
        .iter()
        .map(|t| {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["sent"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "{sent:?}");
    assert!(sent.last().is_none_or(|&s| s == 40), "{sent:?}");
}

#[tokio::test]
async fn pings_are_sent_and_an_answering_client_stays_connected() {
    let server = TestServer::start_with(hub_config(), |b| {
        b.ping_interval(Duration::from_millis(20))
            .pong_timeout(Duration::from_millis(60))
    })
    .await;
    let mut socket = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    // tungstenite answers each ping while we read; ten pings span several pong timeouts.
    let mut pings = 0;
    while pings < 10 {
        match tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut socket),
        )
        .await
        .expect("a ping within 5 s")
        {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            Some(Ok(WsMessage::Close(frame))) => panic!("closed: {frame:?}"),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.connections(), 1);
}

/// Reads raw server frames (never masked) without ever answering; returns the opcodes seen
/// and the close code.
async fn silent_client(
    stream: &mut tokio::net::TcpStream,
    mut buffer: Vec<u8>,
) -> (Vec<u8>, Option<u16>) {
    let mut opcodes = Vec::new();
    loop {
        // Parse every complete frame in the buffer.
        loop {
            if buffer.len() < 2 {
                break;
            }
            let opcode = buffer[0] & 0x0F;
            let (len, header) = match buffer[1] & 0x7F {
                126 if buffer.len() >= 4 => {
                    (u16::from_be_bytes([buffer[2], buffer[3]]) as usize, 4)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if buffer.len() < header + len {
                break;
            }
            let payload: Vec<u8> = buffer.drain(..header + len).skip(header).collect();
            opcodes.push(opcode);
            if opcode == 0x8 {
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                return (opcodes, code);
            }
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return (opcodes, None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_with_1001() {
    let server = TestServer::start_with(hub_config(), |b| {
        b.ping_interval(Duration::from_millis(30))
            .pong_timeout(Duration::from_millis(60))
    })
    .await;
    let (response, upgraded) = exchange(
        server.addr,
        upgrade_request("/mail/ws/inbox", &[&bearer(ALICE_KEY)]).as_bytes(),
    )
    .await;
    assert_eq!(response.status, 101);
    let (mut stream, rest) = upgraded.unwrap();
    let (opcodes, code) =
        tokio::time::timeout(Duration::from_secs(5), silent_client(&mut stream, rest))
            .await
            .expect("closed within 5 s");
    assert_eq!(opcodes.first(), Some(&0x9), "a ping first: {opcodes:?}");
    assert_eq!(code, Some(1001), "{opcodes:?}");
}

#[tokio::test]
async fn a_client_message_over_4_kib_is_closed_with_1009() {
    let server = TestServer::start().await;
    let mut socket = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    socket
        .send(WsMessage::text("x".repeat(4097)))
        .await
        .unwrap();
    assert_eq!(read_until_close(&mut socket).await.1, Some(1009));
    // At the limit, a message is ignored.
    let mut socket = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    socket
        .send(WsMessage::text("x".repeat(4096)))
        .await
        .unwrap();
    socket.close(None).await.unwrap();
    let (_, close) = read_until_close(&mut socket).await;
    assert_ne!(close, Some(1009));
}

#[tokio::test]
async fn too_many_client_messages_are_closed_with_1008() {
    let server = TestServer::start().await;
    let mut socket = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    for _ in 0..40 {
        if socket.feed(WsMessage::text("hi")).await.is_err() {
            break;
        }
    }
    let _ = socket.flush().await;
    assert_eq!(read_until_close(&mut socket).await.1, Some(1008));
}

#[tokio::test]
async fn connections_per_account_are_limited_with_429() {
    let mut config = hub_config();
    config.max_connections_per_account = 2;
    let server = TestServer::start_with(config, |b| b).await;
    let _a = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    let _b = server
        .connect(
            &format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
    let response = server
        .refused("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    assert_eq!(response.status, 429);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.json()["error"], "too_many_connections");
    // Other accounts are not affected.
    let _c = server.connect("/mail/ws/inbox", &[&bearer(BOB_KEY)]).await;
}

#[tokio::test]
async fn total_connections_are_limited_with_503_and_retry_after() {
    let mut config = hub_config();
    config.max_connections = 2;
    config.retry_after = Duration::from_secs(7);
    let server = TestServer::start_with(config, |b| b).await;
    let _a = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    let _b = server.connect("/mail/ws/inbox", &[&bearer(BOB_KEY)]).await;
    let response = server.refused("/mail/ws/inbox", &[&bearer(BOB_KEY)]).await;
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("7"));
    assert_eq!(response.json()["error"], "overloaded");
}

#[tokio::test]
async fn an_inbound_message_over_the_websocket_limit_ends_the_connection() {
    let server = TestServer::start().await;
    let mut socket = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    // Over the 64 KiB max message: the WebSocket layer refuses it without buffering it all.
    let _ = socket.send(WsMessage::binary(vec![0u8; 100 << 10])).await;
    let (_, close) = read_until_close(&mut socket).await;
    assert_ne!(close, Some(1000), "{close:?}");
}

#[tokio::test]
async fn revoking_an_account_closes_its_connections_with_4401() {
    let server = TestServer::start().await;
    let mut alice = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    let mut bob = server.connect("/mail/ws/inbox", &[&bearer(BOB_KEY)]).await;
    server.hub.revoke(&AccountId::from("alice"));
    assert_eq!(read_until_close(&mut alice).await.1, Some(4401));
    // Bob still gets events.
    server
        .hub
        .publish_inbox(&AccountId::from("bob"), &email(1))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut bob).await,
        text_of(email(1).encode().bytes())
    );
}
