//! §2.10 end to end: API keys never appear in logs (every level, server and client), in
//! `Debug`/`Display` output, or in error messages, through accepted connections, refusals of
//! every kind and a revocation.
//!
//! Its own test binary: it installs a global `tracing` subscriber that captures everything.
//! (tungstenite's own `log` records are not bridged here; the client documents that its
//! `trace` level must stay off in setups that bridge them.)

mod common;

use std::sync::Arc;

use common::raw::ws_refusal;
use common::*;
use misar_proto::client::AuthStyle;
use misar_proto::handshake::RejectionStyle;

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_10_keys_never_appear_in_logs_debug_output_or_errors() {
    let capture = Capture::default();
    let sink = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    // The only test of this binary: the global subscriber sees every thread and task.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let unknown = "msk_e2e_secret_unknown_key_77";
    let server = Server::start_with(ServerOptions::default(), |b| {
        b.rejection_style(RejectionStyle::Auto)
    })
    .await;
    let mut texts = Vec::new();

    // Accepted by header and by query, events delivered, a revocation.
    let alice = server.client(ALICE_KEY).build().unwrap();
    let alice_query = server
        .client(ALICE_KEY)
        .auth(AuthStyle::Query)
        .build()
        .unwrap();
    let mut a = alice.subscribe_inbox().updates();
    let mut b = alice_query.subscribe_inbox().updates();
    expect_connected(&mut a).await;
    expect_connected(&mut b).await;
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("s", 1))
        .await
        .unwrap();
    next_event(&mut a).await;
    next_event(&mut b).await;
    texts.push(format!("{alice:?} {alice_query:?} {a:?} {b:?}"));
    server.hub.revoke(&acct(ALICE));
    for updates in [&mut a, &mut b] {
        let error = expect_error(updates).await;
        texts.push(format!("{error} {error:?}"));
    }
    // Refused: unknown key both ways, foreign campaign, failing hook.
    for style in [AuthStyle::Header, AuthStyle::Query] {
        let stranger = server.client(unknown).auth(style).build().unwrap();
        let error = expect_refused(&mut stranger.subscribe_inbox().updates()).await;
        texts.push(format!("{stranger:?} {error} {error:?}"));
    }
    let error = expect_error(&mut alice.subscribe_campaign(cid(BOB_CAMPAIGN)).updates()).await;
    texts.push(format!("{error} {error:?}"));
    server.auth.set_failing(true, false);
    let refusal = ws_refusal(server.addr, &format!("/mail/ws/inbox?token={BOB_KEY}"), &[]).await;
    assert_eq!(refusal.status, 503);
    texts.push(String::from_utf8_lossy(&refusal.body).into_owned());
    texts.push(format!("{:?}", key(BOB_KEY)));
    texts.push(format!("{:?}", server.hub));

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("misar_ws"), "the capture works: {logs}");
    for secret in [ALICE_KEY, BOB_KEY, unknown] {
        assert!(!logs.contains(secret), "a key in the logs:\n{logs}");
        for text in &texts {
            assert!(!text.contains(secret), "a key in {text}");
        }
    }
    let redacted = texts.iter().any(|t| t.contains("msk_…"));
    assert!(redacted, "keys are shown redacted: {texts:?}");
}
