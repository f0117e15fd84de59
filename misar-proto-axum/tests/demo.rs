//! The `demo` example's contract, run as a separate process: the `listening on` line, the
//! fixtures, the publish endpoints, rejection styles, heartbeat, simulation, SIGTERM → 1001
//! and exit 0, and no key in its logs.

mod common;

use std::time::Duration;

use common::demo::DemoProcess;
use common::*;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

const ALICE: &str = "msk_demo_alice";
const BOB: &str = "msk_demo_bob";
const ALICE_CAMPAIGN: &str = "11111111-1111-4111-8111-111111111111";
const BOB_CAMPAIGN: &str = "22222222-2222-4222-8222-222222222222";

async fn ws(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[&str],
) -> (RawResponse, Option<WebSocketStream<TcpStream>>) {
    let (response, upgraded) = exchange(addr, upgrade_request(path, headers).as_bytes()).await;
    let socket = match upgraded {
        Some((stream, rest)) => {
            Some(WebSocketStream::from_partially_read(stream, rest, Role::Client, None).await)
        }
        None => None,
    };
    (response, socket)
}

async fn connect(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[&str],
) -> WebSocketStream<TcpStream> {
    let (response, socket) = ws(addr, path, headers).await;
    assert_eq!(
        response.status,
        101,
        "{path}: {}",
        String::from_utf8_lossy(&response.raw)
    );
    socket.unwrap()
}

async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> RawResponse {
    request(
        addr,
        "POST",
        path,
        &["Content-Type: application/json"],
        body.as_bytes(),
    )
    .await
}

fn assert_no_keys(logs: &str) {
    for secret in [ALICE, BOB, "msk_wrong_key", "token="] {
        assert!(
            !logs.contains(secret),
            "{secret:?} in the demo's logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn fixtures_publish_endpoints_and_sigterm() {
    let mut demo = DemoProcess::start(&["--no-simulation", "--shutdown-grace-ms", "1000"]).await;
    let addr = demo.addr;

    // The page.
    let page = request(addr, "GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("<script>") && html.contains("msk_demo_alice"));

    // Fixtures: each account reaches its own campaign, not the other's; 403 before upgrade.
    let mut inbox = connect(addr, &format!("/mail/ws/inbox?token={ALICE}"), &[]).await;
    let mut campaign = connect(
        addr,
        &format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}"),
        &[&bearer(ALICE)],
    )
    .await;
    let _bob = connect(
        addr,
        &format!("/mail/ws/campaigns/{BOB_CAMPAIGN}?token={BOB}"),
        &[],
    )
    .await;
    let (refused, socket) = ws(
        addr,
        &format!("/mail/ws/campaigns/{BOB_CAMPAIGN}"),
        &[&bearer(ALICE)],
    )
    .await;
    assert!(socket.is_none() && !refused.saw_101());
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["closeCode"], 4403);
    let (refused, socket) = ws(addr, "/mail/ws/inbox?token=msk_wrong_key", &[]).await;
    assert!(socket.is_none());
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["closeCode"], 4401);

    // Publish → 202 and fan-out, intact.
    let email = r#"{"type":"email_received","from":"carol@example.com","subject":"Hi","receivedAt":"2026-05-27T10:15:00Z"}"#;
    let published = post(addr, "/dev/publish/inbox/alice", email).await;
    assert_eq!(
        published.status,
        202,
        "{}",
        String::from_utf8_lossy(&published.body)
    );
    // What the node knows: in memory, every delivery happened during the call.
    let answer = published.json();
    assert_eq!(answer["accepted"], true);
    assert_eq!(answer["delivered"], 1);
    assert!(answer["receivingNodes"].is_null(), "{answer}");
    assert_eq!(next_text(&mut inbox).await, email);
    let progress = format!(
        r#"{{"type":"progress","campaignId":"{ALICE_CAMPAIGN}","sent":2500,"total":10000,"delivered":2480,"bounced":20,"opened":450}}"#
    );
    let published = post(
        addr,
        &format!("/dev/publish/campaigns/{ALICE_CAMPAIGN}"),
        &progress,
    )
    .await;
    assert_eq!(published.status, 202);
    assert_eq!(next_text(&mut campaign).await, progress);
    let completed = format!(
        r#"{{"type":"completed","campaignId":"{ALICE_CAMPAIGN}","sent":10000,"delivered":9855,"bounced":145,"opened":2340}}"#
    );
    assert_eq!(
        post(
            addr,
            &format!("/dev/publish/campaigns/{ALICE_CAMPAIGN}"),
            &completed
        )
        .await
        .status,
        202
    );
    let (texts, close) = read_until_close(&mut campaign).await;
    assert_eq!(texts, std::slice::from_ref(&completed));
    assert_eq!(close, Some(1000));

    // §2.13: the campaign is finished. A stray progress (a worker race) gets 409, and a client
    // joining afterwards gets the terminal event and 1000, not the stale progress.
    let stray = post(
        addr,
        &format!("/dev/publish/campaigns/{ALICE_CAMPAIGN}"),
        &progress,
    )
    .await;
    assert_eq!(
        stray.status,
        409,
        "{}",
        String::from_utf8_lossy(&stray.body)
    );
    assert_eq!(stray.json()["error"], "finished");
    let mut late = connect(
        addr,
        &format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}?token={ALICE}"),
        &[],
    )
    .await;
    let (texts, close) = read_until_close(&mut late).await;
    assert_eq!(texts, [completed]);
    assert_eq!(close, Some(1000));
    // Over the 64 KiB bound: 413 (the demo has no guard of its own; the hub refuses it).
    let huge = format!(
        r#"{{"type":"email_received","from":"x@example.com","subject":"{}","receivedAt":"2026-05-27T10:15:00Z"}}"#,
        "x".repeat(70_000)
    );
    let response = post(addr, "/dev/publish/inbox/alice", &huge).await;
    assert!(matches!(response.status, 400 | 413), "{}", response.status);

    // Bad events → 400 with a JSON error; unknown account or campaign → 404.
    for (path, body) in [
        ("/dev/publish/inbox/alice", "{not json"),
        ("/dev/publish/inbox/alice", r#"{"type":"calendar_invite"}"#),
        (
            "/dev/publish/inbox/alice",
            r#"{"type":"progress","campaignId":"c"}"#,
        ),
        (
            "/dev/publish/inbox/alice",
            r#"{"type":"bounce","bouncedAt":"2026-05-27T10:15:00Z"}"#,
        ),
        (
            &format!("/dev/publish/campaigns/{ALICE_CAMPAIGN}"),
            r#"{"type":"email_received"}"#,
        ),
        (
            &format!("/dev/publish/campaigns/{ALICE_CAMPAIGN}"),
            r#"{"type":"paused","campaignId":"x"}"#,
        ),
    ] {
        let response = post(addr, path, body).await;
        assert_eq!(response.status, 400, "{path} {body}");
        assert!(response.json()["error"].is_string());
    }
    for path in [
        "/dev/publish/inbox/mallory",
        "/dev/publish/campaigns/33333333-3333-4333-8333-333333333333",
        "/dev/publish/campaigns/not%20an%20id",
    ] {
        let response = post(addr, path, email).await;
        assert_eq!(response.status, 404, "{path}");
        assert!(response.json()["error"].is_string());
    }

    // SIGTERM: 1001 to every socket, then exit 0.
    demo.signal("TERM");
    assert_eq!(read_until_close(&mut inbox).await.1, Some(1001));
    let status = demo.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    let logs = demo.stderr();
    assert!(logs.contains("SIGTERM"), "{logs}");
    assert_no_keys(&logs);
}

#[tokio::test]
async fn close_style_heartbeat_and_sigint() {
    let mut demo = DemoProcess::start(&[
        "--no-simulation",
        "--reject-style",
        "close",
        "--ping-interval-ms",
        "50",
        "--pong-timeout-ms",
        "100",
        "--shutdown-grace-ms",
        "1000",
    ])
    .await;
    let addr = demo.addr;
    let mut socket = connect(addr, "/mail/ws/inbox?token=msk_wrong_key", &[]).await;
    assert_eq!(read_until_close(&mut socket).await.1, Some(4401));
    let mut socket = connect(
        addr,
        &format!("/mail/ws/campaigns/{BOB_CAMPAIGN}?token={ALICE}"),
        &[],
    )
    .await;
    assert_eq!(read_until_close(&mut socket).await.1, Some(4403));

    // A client that never answers pings is closed with 1001.
    let (response, upgraded) = exchange(
        addr,
        upgrade_request(&format!("/mail/ws/inbox?token={ALICE}"), &[]).as_bytes(),
    )
    .await;
    assert_eq!(response.status, 101);
    let (mut silent, mut seen) = upgraded.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 256];
        loop {
            // Server frames are unmasked and short here: [opcode, len, payload...].
            let mut at = 0;
            while at + 2 <= seen.len() {
                let len = usize::from(seen[at + 1] & 0x7F);
                if seen[at] & 0x0F == 0x8 && seen.len() >= at + 4 {
                    return Some(u16::from_be_bytes([seen[at + 2], seen[at + 3]]));
                }
                at += 2 + len;
            }
            let n = silent.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("closed within 5 s");
    assert_eq!(code, Some(1001));

    // An answering client stays, and SIGINT closes it with 1001; exit 0.
    let mut live = connect(addr, &format!("/mail/ws/inbox?token={BOB}"), &[]).await;
    demo.signal("INT");
    assert_eq!(read_until_close(&mut live).await.1, Some(1001));
    assert!(demo.wait(Duration::from_secs(10)).await.success());
    assert_no_keys(&demo.stderr());
}

#[tokio::test]
async fn simulated_campaigns_start_progress_and_complete() {
    let mut demo = DemoProcess::start(&["--tick-ms", "40", "--shutdown-grace-ms", "1000"]).await;
    let addr = demo.addr;
    let mut inbox = connect(addr, &format!("/mail/ws/inbox?token={ALICE}"), &[]).await;
    // Wait for a campaign to start; then follow it to its end on its own channel.
    let campaign_id = loop {
        let text = next_text(&mut inbox).await;
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        if event["type"] == "campaign_started" {
            break event["campaignId"].as_str().unwrap().to_owned();
        }
    };
    let mut campaign = connect(
        addr,
        &format!("/mail/ws/campaigns/{campaign_id}?token={ALICE}"),
        &[],
    )
    .await;
    // Bob does not own it.
    let (refused, _) = ws(
        addr,
        &format!("/mail/ws/campaigns/{campaign_id}?token={BOB}"),
        &[],
    )
    .await;
    assert_eq!(refused.status, 403);
    let (texts, close) = read_until_close(&mut campaign).await;
    assert_eq!(close, Some(1000));
    let last: serde_json::Value = serde_json::from_str(texts.last().expect("events")).unwrap();
    assert_eq!(last["type"], "completed");
    assert_eq!(last["campaignId"], campaign_id.as_str());
    // Progress (if we joined early enough to see any) counts up to the total sent.
    for text in &texts[..texts.len() - 1] {
        let progress: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(progress["type"], "progress");
        assert_eq!(progress["total"], last["sent"]);
    }
    demo.signal("TERM");
    assert!(demo.wait(Duration::from_secs(10)).await.success());
}
