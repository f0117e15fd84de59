//! Builds and runs the `demo` example as a separate process, as a user would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

static BINARY: OnceCell<PathBuf> = OnceCell::const_new();

/// Builds the example (a no-op when it is up to date) and returns its path, from cargo's own
/// report of the artifact.
pub async fn binary() -> PathBuf {
    BINARY
        .get_or_init(|| async {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
            let output = Command::new(cargo)
                .args([
                    "build",
                    "--example",
                    "demo",
                    "--message-format=json",
                    "--manifest-path",
                    manifest,
                ])
                .stderr(Stdio::inherit())
                .output()
                .await
                .expect("run cargo build");
            assert!(output.status.success(), "cargo build --example demo failed");
            let stdout = String::from_utf8_lossy(&output.stdout);
            stdout
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "demo")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo reported the demo executable")
        })
        .await
        .clone()
}

/// A running demo server.
pub struct DemoProcess {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl DemoProcess {
    /// Starts the demo on a free port with `args` added, and waits for its `listening on` line.
    pub async fn start(args: &[&str]) -> DemoProcess {
        Self::start_at("127.0.0.1:0", args).await
    }

    /// Starts the demo on `addr` (e.g. the address of a demo that just exited, to restart
    /// it) with `args` added, and waits for its `listening on` line.
    pub async fn start_at(addr: &str, args: &[&str]) -> DemoProcess {
        let mut child = Command::new(binary().await)
            .args(["--addr", addr])
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the demo");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut err_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the demo printed its first line within 30 s")
            .expect("read stdout")
            .expect("the demo printed a line");
        let addr = first
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("an address");
        DemoProcess {
            child,
            addr,
            stderr,
        }
    }

    /// Sends SIGTERM (or SIGINT).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running");
        // bash's builtin `kill`: no dependency on a `kill` binary being installed.
        let status = std::process::Command::new("bash")
            .args(["-c", "kill -\"$0\" \"$1\"", name, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("the demo exited in time")
            .expect("wait for the demo")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// The resident set size of the process, from /proc (Linux), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Everything the demo logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}
