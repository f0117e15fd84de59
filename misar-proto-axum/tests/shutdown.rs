//! Graceful shutdown (§2.9): every socket gets 1001, `axum::serve` returns once they are gone,
//! new handshakes are refused meanwhile, and a peer that never answers is dropped after the
//! grace period.

mod common;

use std::time::Duration;

use common::*;
use misar_proto::handshake::RejectionStyle;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001_then_serve_returns() {
    let mut server = TestServer::start().await;
    let mut sockets = vec![
        server
            .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
            .await,
        server
            .connect(&format!("/mail/ws/inbox?token={BOB_KEY}"), &[])
            .await,
        server
            .connect(
                &format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}"),
                &[&bearer(ALICE_KEY)],
            )
            .await,
    ];
    assert_eq!(server.shutdown.active_connections(), 3);
    assert_eq!(server.connections(), 3);

    server.trigger_shutdown();
    for socket in &mut sockets {
        let (texts, close) = read_until_close(socket).await;
        assert!(texts.is_empty());
        assert_eq!(close, Some(1001));
    }
    // The clients answered the close: everything ends well before the 2 s grace.
    let served = tokio::time::timeout(Duration::from_secs(2), server.task.take().unwrap())
        .await
        .expect("axum::serve returned within the grace period")
        .expect("the server task did not panic");
    assert!(served.is_ok(), "{served:?}");
    assert_eq!(server.shutdown.active_connections(), 0);
    assert_eq!(server.connections(), 0);
    assert!(server.shutdown.is_shutting_down());
}

/// Reads until EOF; returns the bytes. Never writes: a peer that does not answer the close.
async fn read_to_eof(stream: &mut tokio::net::TcpStream, mut seen: Vec<u8>) -> Vec<u8> {
    let mut chunk = [0u8; 512];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The close code of the first close frame (opcode 8, unmasked, short) in `bytes`.
fn close_code(bytes: &[u8]) -> Option<u16> {
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let opcode = bytes[at] & 0x0F;
        let len = usize::from(bytes[at + 1] & 0x7F);
        if len > 125 {
            return None; // no large frames are expected here
        }
        let payload = bytes.get(at + 2..at + 2 + len)?;
        if opcode == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
        at += 2 + len;
    }
    None
}

#[tokio::test]
async fn peers_that_never_answer_are_dropped_after_the_grace() {
    let server = TestServer::start_with(hub_config(), |b| {
        b.shutdown_grace(Duration::from_millis(300))
            .rejection_style(RejectionStyle::Auto)
    })
    .await;
    // An accepted connection, and a rejected one (close 4401, then a 5 s close grace that the
    // shutdown must cut short); neither client ever writes.
    let mut silent = Vec::new();
    for path in [
        "/mail/ws/inbox?token=msk_test_alice_0123456789",
        "/mail/ws/inbox?token=msk_unknown",
    ] {
        let (response, upgraded) =
            exchange(server.addr, upgrade_request(path, &[]).as_bytes()).await;
        assert_eq!(response.status, 101, "{path}");
        silent.push(upgraded.unwrap());
    }
    assert_eq!(server.shutdown.active_connections(), 2);

    let shutdown = server.shutdown.clone();
    let report = tokio::spawn(async move { shutdown.shutdown().await });
    let mut outcomes = Vec::new();
    for (mut stream, rest) in silent {
        let bytes = tokio::time::timeout(Duration::from_secs(5), read_to_eof(&mut stream, rest))
            .await
            .expect("the server dropped the socket within 5 s");
        outcomes.push(close_code(&bytes));
    }
    assert_eq!(outcomes, [Some(1001), Some(4401)]);
    let report = tokio::time::timeout(Duration::from_secs(5), report)
        .await
        .expect("shutdown returned")
        .unwrap();
    assert_eq!(report.connections, 2);
    assert!(report.dropped >= 1, "{report:?}");
    assert_eq!(server.shutdown.active_connections(), 0);
}

#[tokio::test]
async fn handshakes_during_a_shutdown_get_503() {
    let server =
        TestServer::start_with(hub_config(), |b| b.shutdown_grace(Duration::from_secs(3))).await;
    // A silent client keeps the shutdown in its grace period while we knock.
    let (response, upgraded) = exchange(
        server.addr,
        upgrade_request("/mail/ws/inbox", &[&bearer(ALICE_KEY)]).as_bytes(),
    )
    .await;
    assert_eq!(response.status, 101);
    let (mut stream, rest) = upgraded.unwrap();
    let shutdown = server.shutdown.clone();
    let running = tokio::spawn(async move { shutdown.shutdown().await });
    // The 1001 arrived, so the shutdown has begun.
    let mut seen = rest;
    let mut chunk = [0u8; 256];
    while close_code(&seen).is_none() {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "dropped before the close frame");
        seen.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(close_code(&seen), Some(1001));

    let response = server.refused("/mail/ws/inbox", &[&bearer(BOB_KEY)]).await;
    assert_eq!(response.status, 503);
    assert!(response.header("retry-after").is_some());
    drop(stream);
    let report = running.await.unwrap();
    assert_eq!(report.connections, 1);
}
