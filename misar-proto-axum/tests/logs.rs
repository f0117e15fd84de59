//! §2.10: no key and no `token=` query ever reaches a log line. Every log record of the process
//! (the adapter's, the hub's, axum's, and the WebSocket library's `log` records), at TRACE
//! level, is captured while keys travel in headers and queries, accepted and refused.

mod common;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use common::*;
use misar_proto::auth::AccountId;
use misar_proto::event::{EmailReceived, InboxEvent, Timestamp};
use misar_proto::handshake::RejectionStyle;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const UNKNOWN_KEY: &str = "msk_unknown_secret_7777";

#[tokio::test]
async fn keys_never_reach_the_logs() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let mut server =
        TestServer::start_with(hub_config(), |b| b.rejection_style(RejectionStyle::Auto)).await;
    // Accepted, with the key in the header and in the query.
    let mut header = server
        .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    let mut query = server
        .connect(
            &format!("/mail/ws/campaigns/{BOB_CAMPAIGN}?token={BOB_KEY}"),
            &[],
        )
        .await;
    // Refused: unknown key (HTTP and close styles), malformed, conflicting, foreign campaign.
    server
        .refused("/mail/ws/inbox", &[&bearer(UNKNOWN_KEY)])
        .await;
    let mut closed = server
        .connect(&format!("/mail/ws/inbox?token={UNKNOWN_KEY}"), &[])
        .await;
    assert_eq!(read_until_close(&mut closed).await.1, Some(4401));
    server
        .refused(
            "/mail/ws/inbox",
            &[&format!("Authorization: Basic {ALICE_KEY}")],
        )
        .await;
    server
        .refused(
            &format!("/mail/ws/inbox?token={BOB_KEY}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
    server
        .refused(
            &format!("/mail/ws/campaigns/{BOB_CAMPAIGN}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
    // A failing hook logs its error.
    server.auth.fail_keys.store(true, Ordering::SeqCst);
    server
        .refused(
            &format!("/mail/ws/inbox?x={ALICE_KEY}"),
            &[&bearer(ALICE_KEY)],
        )
        .await;
    server.auth.fail_keys.store(false, Ordering::SeqCst);
    // Events flow, then everything shuts down.
    let event = InboxEvent::EmailReceived(EmailReceived::new(
        "a@example.com",
        "hello",
        Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
    ));
    server
        .hub
        .publish_inbox(&AccountId::from("alice"), &event)
        .await
        .unwrap();
    next_text(&mut header).await;
    server.trigger_shutdown();
    assert_eq!(read_until_close(&mut header).await.1, Some(1001));
    assert_eq!(read_until_close(&mut query).await.1, Some(1001));
    let _ = server.task.take().unwrap().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The capture works and saw the handshakes (so the absence below means something).
    for expected in [
        "path=/mail/ws/inbox",
        "upgrading",
        "refused before the upgrade",
        "refused: upgrading to close",
        "key check failed",
        "shutdown complete",
    ] {
        assert!(
            logs.contains(expected),
            "no {expected:?} in the logs:\n{logs}"
        );
    }
    for secret in [ALICE_KEY, BOB_KEY, UNKNOWN_KEY, "token="] {
        if let Some(at) = logs.find(secret) {
            let line_start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
            panic!("{secret:?} in a log line: {}", &logs[line_start..line_end]);
        }
    }
}
