//! §2.10 end to end: API keys never appear in any log record (every level, every target, the
//! `log` records of the WebSocket library included, server and client), in `Debug`/`Display`
//! output, or in error messages — in every auth style (header, query, subprotocol), accepted,
//! refused, revoked, and with a failing hook, in the `Http` and `Auto` rejection styles.
//!
//! Its own test binary: it installs the global `tracing` subscriber (at TRACE, every target)
//! and bridges the `log` crate into it, and captures everything. A canary key logged on
//! purpose through both proves that the capture would catch a leak.
//!
//! It speaks raw HTTP for the requests the Rust client would never send (malformed keys,
//! conflicting places, a bearer entry without `misar.v1`): tungstenite's own client handshake
//! logs the whole request at trace level, so this test must not use it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use misar_proto::client::AuthStyle;
use misar_proto::handshake::RejectionStyle;
use misar_proto_tokio::client::Update;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing_subscriber::util::SubscriberInitExt;

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The secrets of `secrets` that occur in `text`, by their body (`msk_` excluded: a
/// redacted `msk_…abcd` is fine, and a key split by a formatter is still found by its body).
fn leaked<'a>(text: &str, secrets: &[&'a str]) -> Vec<&'a str> {
    secrets
        .iter()
        .copied()
        .filter(|secret| text.contains(secret.trim_start_matches("msk_")))
        .collect()
}

/// A handshake over plain TCP, not tungstenite's client (which logs the request): the status.
async fn raw_handshake(addr: std::net::SocketAddr, path: &str, headers: &[String]) -> u16 {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buffer = [0u8; 1024];
    within("a raw handshake's answer", async {
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

const STYLES: [AuthStyle; 3] = [AuthStyle::Header, AuthStyle::Query, AuthStyle::Subprotocol];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_10_keys_never_appear_in_logs_debug_output_or_errors() {
    let capture = Capture::default();
    let sink = capture.clone();
    // `try_init` also installs the `log` → `tracing` bridge (tracing-log), at TRACE: the
    // records of tungstenite and of every other `log` user are captured too.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish()
        .try_init()
        .expect("the only subscriber of this binary");

    // The canaries: a key through `log` (where tungstenite's handshake record went) and one
    // through `tracing`. The check below must see both.
    let canary_log = "msk_canary_through_the_log_crate_0001";
    let canary_tracing = "msk_canary_through_tracing_0002";
    log::trace!(target: "tungstenite::handshake::client", "Request: \"GET /?token={canary_log}\"");
    tracing::trace!(target: "h2::codec", key = canary_tracing, "a leak");
    let logs = capture.text();
    assert_eq!(
        leaked(&logs, &[canary_log, canary_tracing]),
        [canary_log, canary_tracing],
        "the capture sees both log and tracing records:\n{logs}"
    );
    let before_test = logs.len();

    let unknown = "msk_e2e_secret_unknown_key_77";
    let malformed = "msk_e2e_secret_malformed.key";
    let mut texts = Vec::new();
    for rejection in [RejectionStyle::Http, RejectionStyle::Auto] {
        let server =
            Server::start_with(ServerOptions::default(), |b| b.rejection_style(rejection)).await;
        // Accepted in every style, an event delivered, then a revocation.
        let mut alices = Vec::new();
        for style in STYLES {
            let client = server.client(ALICE_KEY).auth(style).build().unwrap();
            let mut updates = client.subscribe_inbox().updates();
            expect_connected(&mut updates).await;
            texts.push(format!("{client:?} {updates:?}"));
            alices.push(updates);
        }
        server.wait_connections(3).await;
        server
            .hub
            .publish_inbox(&acct(ALICE), &email("s", 1))
            .await
            .unwrap();
        for updates in &mut alices {
            next_event(updates).await;
        }
        server.hub.revoke(&acct(ALICE));
        for updates in &mut alices {
            let error = expect_error(updates).await;
            texts.push(format!("{error} {error:?}"));
        }
        for style in STYLES {
            // An unknown key, a foreign campaign.
            let stranger = server.client(unknown).auth(style).build().unwrap();
            let error = expect_refused(&mut stranger.subscribe_inbox().updates()).await;
            texts.push(format!("{stranger:?} {error} {error:?}"));
            let bob = server.client(BOB_KEY).auth(style).build().unwrap();
            let error =
                expect_refused(&mut bob.subscribe_campaign(cid(ALICE_CAMPAIGN)).updates()).await;
            texts.push(format!("{error} {error:?}"));
            // A failing hook: 503, and the client retries.
            server.auth.set_failing(true, false);
            let mut updates = bob.subscribe_inbox().updates();
            match within("a reconnect after a 503", updates.next()).await {
                Some(Ok(Update::Reconnecting { cause, .. })) => {
                    texts.push(format!("{cause:?}"));
                }
                other => panic!("expected a reconnect after the 503, got {other:?}"),
            }
            updates.close().await;
            server.auth.set_failing(false, false);
        }
        // What the Rust client never sends: malformed keys, places that disagree, a bearer
        // entry without `misar.v1`, several bearer entries.
        let cases: [(String, Vec<String>); 6] = [
            (format!("/mail/ws/inbox?token={malformed}"), vec![]),
            (
                "/mail/ws/inbox".into(),
                vec![format!("Authorization: Bearer {malformed}")],
            ),
            (
                "/mail/ws/inbox".into(),
                vec![format!(
                    "Sec-WebSocket-Protocol: misar.v1, misar.bearer.{malformed}"
                )],
            ),
            (
                format!("/mail/ws/inbox?token={unknown}"),
                vec![format!(
                    "Sec-WebSocket-Protocol: misar.v1, misar.bearer.{BOB_KEY}"
                )],
            ),
            (
                "/mail/ws/inbox".into(),
                vec![format!("Sec-WebSocket-Protocol: misar.bearer.{BOB_KEY}")],
            ),
            (
                "/mail/ws/inbox".into(),
                vec![format!(
                    "Sec-WebSocket-Protocol: misar.v1, misar.bearer.{BOB_KEY}, misar.bearer.{unknown}"
                )],
            ),
        ];
        for (path, headers) in &cases {
            let status = raw_handshake(server.addr, path, headers).await;
            assert!(
                [101, 400, 403].contains(&status),
                "{status} for {path} {headers:?}"
            );
        }
        texts.push(format!("{:?}", server.hub));
        drop(server);
    }
    texts.push(format!("{:?}", key(BOB_KEY)));
    // Let the connection tasks' last records (closes, drops) be written.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = capture.text();
    let logs = &logs[before_test..];
    assert!(logs.contains("misar_ws"), "the capture works: {logs}");
    assert!(
        logs.contains("tungstenite"),
        "tungstenite's `log` records are captured: {logs}"
    );
    for secret in [ALICE_KEY, BOB_KEY, unknown, malformed] {
        assert!(
            leaked(logs, &[secret]).is_empty(),
            "{secret} in the logs:\n{logs}"
        );
        for text in &texts {
            assert!(leaked(text, &[secret]).is_empty(), "{secret} in {text}");
        }
    }
    assert!(!logs.contains("token="), "a query in the logs:\n{logs}");
    assert!(
        !logs.contains("misar.bearer.msk"),
        "a bearer entry in the logs:\n{logs}"
    );
    let redacted = texts.iter().any(|t| t.contains("msk_…"));
    assert!(redacted, "keys are shown redacted: {texts:?}");
}
