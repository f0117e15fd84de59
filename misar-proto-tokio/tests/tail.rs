//! The `tail` example end to end: the built binary against a tokio-tungstenite server on
//! loopback (real time; each test takes well under a second).

mod client_util;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use client_util::{KEY, TestServer, at, completed, email, progress, resume_frame};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// Upper bound for anything a test waits for: a hang fails the test instead of the suite.
const PATIENCE: Duration = Duration::from_secs(30);

/// The example binary, built once per test run in this test's own target directory and
/// profile (`CARGO_BIN_EXE_*` does not exist for examples).
fn tail_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/tail-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "misar-proto-tokio",
                "--example",
                "tail",
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "building the tail example failed");
        profile_dir
            .join("examples")
            .join(format!("tail{}", std::env::consts::EXE_SUFFIX))
    })
}

fn tail(args: &[&str]) -> Child {
    Command::new(tail_binary())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits for the process and returns its status, stdout and stderr.
async fn finish(child: Child) -> (ExitStatus, String, String) {
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("tail did not exit")
        .unwrap();
    (
        output.status,
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn json_prints_the_frames_as_received_and_exits_0_after_the_terminal_event() {
    tail_binary();
    let server = TestServer::bind().await;
    let url = format!("{}/campaigns/c-9", server.base_url());
    let child = tail(&["--url", &url, "--key", KEY, "--json"]);

    let unknown = r#"{"type":"paused","campaignId":"c-9","until":{"at":"later","n":[1,2.50]}}"#;
    let spaced = "{ \"type\": \"progress\",\n  \"campaignId\": \"c-9\", \"sent\": 7, \"total\": 10,\n  \"delivered\": 7, \"bounced\": 0, \"opened\": 3, \"note\": \"a b\" }";
    let frames = [
        progress("c-9", 5, 10),
        unknown.to_owned(),
        spaced.to_owned(),
        completed("c-9", 10),
    ];
    let mut conn = within(server.accept()).await;
    assert_eq!(conn.seen.path_and_query, "/mail/ws/campaigns/c-9");
    assert_eq!(
        conn.seen.authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    for frame in &frames {
        conn.send(frame).await;
    }
    conn.close(1000, "campaign finished").await;
    assert_eq!(within(conn.expect_close()).await, Some(1000));

    let (status, stdout, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    let expected = [
        frames[0].clone(),
        frames[1].clone(),
        r#"{"type":"progress","campaignId":"c-9","sent":7,"total":10,"delivered":7,"bounced":0,"opened":3,"note":"a b"}"#.to_owned(),
        frames[3].clone(),
    ];
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
    assert!(stderr.contains("connected to"), "{stderr}");
    assert!(!stderr.contains(KEY) && !stdout.contains(KEY));
}

#[tokio::test]
async fn a_1000_before_the_terminal_event_reconnects_and_the_terminal_event_exits_0() {
    tail_binary();
    let server = TestServer::bind().await;
    let url = format!("{}/campaigns/c-9", server.base_url());
    let child = tail(&["--url", &url, "--key", KEY, "--json"]);

    let mut first = within(server.accept()).await;
    first.send(&progress("c-9", 5, 10)).await;
    first.close(1000, "").await;
    assert_eq!(within(first.expect_close()).await, Some(1000));
    // tail did not stop at the 1000: it comes back for the rest of the campaign.
    let mut second = within(server.accept()).await;
    assert_eq!(second.seen.path_and_query, "/mail/ws/campaigns/c-9");
    second.send(&completed("c-9", 10)).await;
    second.close(1000, "campaign finished").await;
    assert_eq!(within(second.expect_close()).await, Some(1000));

    let (status, stdout, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [progress("c-9", 5, 10), completed("c-9", 10)]
    );
    assert!(
        stderr.contains("closed the connection with 1000 (normal closure); reconnecting in"),
        "{stderr}"
    );
    assert!(stderr.contains("reconnected to"), "{stderr}");
}

#[tokio::test]
async fn http_403_exits_2_with_the_servers_reason_and_no_retry() {
    tail_binary();
    let server = TestServer::bind().await;
    let url = format!("{}/campaigns/not-mine", server.base_url());
    let child = tail(&["--url", &url, "--key", KEY]);

    within(server.reject(
        403,
        r#"{"error":"forbidden","closeCode":4403,"message":"campaign not found"}"#,
    ))
    .await;
    let (status, stdout, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("HTTP 403"), "{stderr}");
    assert!(stderr.contains("campaign not found"), "{stderr}");
    assert!(!stderr.contains(KEY));
    assert!(stdout.is_empty());
    // The process is gone; a retry would already be waiting in the backlog.
    assert!(
        server
            .next_attempt(Duration::from_millis(100))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn close_4401_exits_2_and_query_token_sends_the_key_in_the_url() {
    tail_binary();
    let server = TestServer::bind().await;
    let url = format!("{}/inbox", server.base_url());
    let child = tail(&["--url", &url, "--key", KEY, "--query-token"]);

    let mut conn = within(server.accept()).await;
    assert_eq!(
        conn.seen.path_and_query,
        format!("/mail/ws/inbox?token={KEY}")
    );
    assert_eq!(conn.seen.authorization, None);
    conn.close(4401, "key revoked").await;
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("4401"), "{stderr}");
    assert!(stderr.contains("key revoked"), "{stderr}");
    assert!(!stderr.contains(KEY));
    assert!(
        server
            .next_attempt(Duration::from_millis(100))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn close_4403_exits_2() {
    tail_binary();
    let server = TestServer::bind().await;
    let url = format!("{}/campaigns/c-1", server.base_url());
    let child = tail(&["--url", &url, "--key", KEY]);

    let mut conn = within(server.accept()).await;
    conn.close(4403, "").await;
    let (status, _, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("4403"), "{stderr}");
    assert!(stderr.contains("campaign does not belong"), "{stderr}");
}

#[tokio::test]
async fn bad_arguments_exit_2_without_echoing_the_key() {
    tail_binary();
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "--url",
                "ws://127.0.0.1:9/mail/ws/inbox",
                "--key",
                "msk_bad key!",
            ],
            "--key",
        ),
        (
            &[
                "--url",
                "ws://127.0.0.1:9/mail/ws/inbox",
                "--key",
                "sk_live_123",
            ],
            "--key",
        ),
        (
            &["--url", "http://127.0.0.1:9/mail/ws/inbox", "--key", KEY],
            "--url",
        ),
        (
            &["--url", "ws://127.0.0.1:9/mail/ws", "--key", KEY],
            "--url",
        ),
        (&["--url", "ws://127.0.0.1:9/mail/ws/inbox"], "--key"),
    ];
    for (args, mentions) in cases {
        let (status, stdout, stderr) = finish(tail(args)).await;
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(!stderr.contains("bad key!") && !stderr.contains("sk_live_123"));
        assert!(!stderr.contains(KEY));
    }
}

#[cfg(unix)]
#[tokio::test]
async fn reconnect_is_reported_and_ctrl_c_closes_with_1000() {
    tail_binary();
    let server = TestServer::bind().await;
    let url = format!("{}/inbox", server.base_url());
    let mut child = tail(&["--url", &url, "--key", KEY]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut first = within(server.accept()).await;
    first.send(&email(1)).await;
    first.close(1001, "restarting").await;
    let mut second = within(server.accept()).await;
    second.send(&email(2)).await;

    let readable = |n: usize| {
        format!("2026-05-27T10:15:00Z  email_received  from sender{n}@example.com: Message {n}")
    };
    assert_eq!(within(stdout.next_line()).await.unwrap(), Some(readable(1)));
    assert_eq!(within(stdout.next_line()).await.unwrap(), Some(readable(2)));

    // SIGINT, as Ctrl-C sends it.
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill").args(["-INT", &pid]).status().await;
    assert!(killed.unwrap().success());
    assert_eq!(within(second.expect_close()).await, Some(1000));
    drop(second);

    let status = within(child.wait()).await.unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(within(stdout.next_line()).await.unwrap(), None);
    assert!(
        stderr.contains("closed the connection with 1001 (going away); reconnecting in"),
        "{stderr}"
    );
    assert!(stderr.contains("reconnected to"), "{stderr}");
    assert!(!stderr.contains(KEY));
}

#[tokio::test]
async fn retry_after_is_waited_and_shown_and_the_subprotocol_carries_the_key() {
    tail_binary();
    let server = TestServer::bind().await;
    let url = format!("{}/inbox", server.base_url());
    let mut child = tail(&["--url", &url, "--key", KEY, "--auth", "subprotocol"]);
    let seen =
        within(server.reject_with(503, r#"{"error":"overloaded"}"#, &[("retry-after", "1")])).await;
    assert_eq!(
        seen.protocols.as_deref(),
        Some(format!("misar.v1, misar.bearer.{KEY}").as_str())
    );
    assert_eq!(seen.authorization, None);
    assert_eq!(seen.path_and_query, "/mail/ws/inbox");
    // The next attempt comes after the server's second, not a drawn delay of up to 2 s.
    let refused = std::time::Instant::now();
    let mut conn = within(server.accept()).await;
    let waited = refused.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    conn.send(&email(1)).await;
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = within(stdout.next_line()).await.unwrap().unwrap();
    assert!(
        line.contains("email_received") || line.contains("from"),
        "{line}"
    );
    child.start_kill().unwrap();
    let (_, _, stderr) = finish(child).await;
    assert!(
        stderr.contains("reconnecting in 1.0s (the server's Retry-After)"),
        "{stderr}"
    );
    assert!(!stderr.contains(KEY));
}

#[tokio::test]
async fn tail_resumes_by_default_and_says_not_recovered_on_stderr() {
    tail_binary();
    let server = TestServer::bind().await;
    let url = format!("{}/campaigns/c-7", server.base_url());
    let child = tail(&["--url", &url, "--key", KEY, "--json"]);

    let mut first = within(server.accept()).await;
    assert_eq!(first.seen.resume.as_deref(), Some("new"));
    first.send(&resume_frame("e1", 0, true)).await;
    first.send(&at(&progress("c-7", 1, 10), 4)).await;
    // Gone without a close: tail reconnects from the last event it got.
    drop(first);
    let mut second = within(server.accept()).await;
    assert_eq!(second.seen.resume.as_deref(), Some("e1:4"));
    second.send(&resume_frame("e2", 9, false)).await;
    second.send(&at(&completed("c-7", 10), 10)).await;
    second.close(1000, "campaign finished").await;

    let (status, stdout, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            at(&progress("c-7", 1, 10), 4),
            at(&completed("c-7", 10), 10)
        ],
        "--json prints each event as received, offset included"
    );
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("not recovered"))
        .collect();
    assert_eq!(notes.len(), 1, "stderr: {stderr}");
    assert!(notes[0].contains("e2:9"), "{}", notes[0]);
}

#[tokio::test]
async fn no_resume_sends_no_resume_value() {
    tail_binary();
    let server = TestServer::bind().await;
    let url = format!("{}/campaigns/c-8", server.base_url());
    let child = tail(&["--url", &url, "--key", KEY, "--json", "--no-resume"]);
    let mut conn = within(server.accept()).await;
    assert_eq!(conn.seen.resume, None);
    conn.send(&completed("c-8", 3)).await;
    conn.close(1000, "campaign finished").await;
    let (status, stdout, stderr) = finish(child).await;
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout.lines().collect::<Vec<_>>(), [completed("c-8", 3)]);
    assert!(!stderr.contains("not recovered"), "stderr: {stderr}");
}
