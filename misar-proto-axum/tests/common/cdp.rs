//! A minimal Chrome DevTools Protocol client: launches headless Chromium, opens a page, and
//! evaluates JavaScript in it (awaiting promises, so waiting for the DOM is event-driven).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where Debian's package installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A running headless Chromium driven over its DevTools WebSocket.
pub struct Browser {
    child: Child,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    profile: PathBuf,
    /// Events that arrived while waiting for a reply, for [`Browser::wait_event`].
    events: VecDeque<Value>,
}

impl Browser {
    /// Launches Chromium with a fresh profile. `Ok(None)` when it is not installed.
    pub async fn launch() -> Result<Option<Browser>, String> {
        if !std::path::Path::new(CHROMIUM).exists() {
            return Ok(None);
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let profile =
            std::env::temp_dir().join(format!("misar-chromium-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&profile).map_err(|e| format!("profile dir: {e}"))?;
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1100,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group, so the helpers it starts are ended with it.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("spawn chromium: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(at) = line.find("ws://") {
                    return Some(line[at..].trim().to_owned());
                }
            }
            None
        })
        .await
        .map_err(|_| "chromium did not print its DevTools address within 30 s".to_owned())?
        .ok_or("chromium exited before printing its DevTools address")?;
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| format!("connect to DevTools: {e}"))?;
        Ok(Some(Browser {
            child,
            socket,
            next_id: 0,
            profile,
            events: VecDeque::new(),
        }))
    }

    /// Calls `method` (on a page's `session`, or on the browser) and returns its result.
    pub async fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            request["sessionId"] = json!(session);
        }
        self.socket
            .send(WsMessage::text(request.to_string()))
            .await
            .map_err(|e| format!("send {method}: {e}"))?;
        loop {
            let message = self
                .socket
                .next()
                .await
                .ok_or_else(|| format!("DevTools closed during {method}"))?
                .map_err(|e| format!("DevTools read: {e}"))?;
            let WsMessage::Text(text) = message else {
                continue;
            };
            let reply: Value =
                serde_json::from_str(text.as_str()).map_err(|e| format!("DevTools JSON: {e}"))?;
            if reply.get("method").is_some() {
                if self.events.len() >= 1000 {
                    self.events.pop_front();
                }
                self.events.push_back(reply);
                continue;
            }
            if reply["id"] != json!(id) {
                continue; // another call's reply
            }
            if let Some(error) = reply.get("error") {
                return Err(format!("{method} failed: {error}"));
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Opens `url` in a new tab and waits for its `load` event; returns the session to talk
    /// to it. (Evaluating before the load could run in the initial blank document, whose
    /// context the navigation destroys.)
    pub async fn open(&mut self, url: &str) -> Result<String, String> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"].as_str().ok_or("no targetId")?.to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or("no sessionId")?
            .to_owned();
        self.call(Some(&session), "Page.enable", json!({})).await?;
        self.events.clear();
        self.call(Some(&session), "Page.navigate", json!({ "url": url }))
            .await?;
        self.wait_event(&session, "Page.loadEventFired", Duration::from_secs(30))
            .await?;
        Ok(session)
    }

    /// Waits for the event `method` of `session` (or takes it from those already received).
    pub async fn wait_event(
        &mut self,
        session: &str,
        method: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let matches = |event: &Value| {
            event["method"] == json!(method) && event["sessionId"] == json!(session)
        };
        if let Some(at) = self.events.iter().position(matches) {
            return self.events.remove(at).ok_or_else(|| "gone".to_owned());
        }
        tokio::time::timeout(timeout, async {
            loop {
                let message = self
                    .socket
                    .next()
                    .await
                    .ok_or_else(|| format!("DevTools closed while waiting for {method}"))?
                    .map_err(|e| format!("DevTools read: {e}"))?;
                let WsMessage::Text(text) = message else {
                    continue;
                };
                let event: Value = serde_json::from_str(text.as_str())
                    .map_err(|e| format!("DevTools JSON: {e}"))?;
                if matches(&event) {
                    return Ok(event);
                }
            }
        })
        .await
        .map_err(|_| format!("no {method} within {timeout:?}"))?
    }

    /// Evaluates `expression` in the page (awaiting it if it is a promise) and returns its
    /// value; a thrown exception is an `Err` with its text.
    pub async fn eval(&mut self, session: &str, expression: &str) -> Result<Value, String> {
        let result = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            let text = exception["exception"]["description"]
                .as_str()
                .or(exception["text"].as_str())
                .unwrap_or("exception");
            return Err(text.to_owned());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Waits until the JavaScript `condition` is truthy, re-checking on every DOM change (a
    /// `MutationObserver`, no polling); fails after `timeout`. Returns the truthy value.
    pub async fn wait_for(
        &mut self,
        session: &str,
        condition: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let ms = timeout.as_millis();
        let expression = format!(
            r#"new Promise((resolve, reject) => {{
                const check = () => {{ try {{ return ({condition}); }} catch (e) {{ return false; }} }};
                const first = check();
                if (first) {{ resolve(first); return; }}
                const observer = new MutationObserver(() => {{
                    const value = check();
                    if (value) {{ observer.disconnect(); clearTimeout(timer); resolve(value); }}
                }});
                observer.observe(document, {{ subtree: true, childList: true, attributes: true, characterData: true }});
                const timer = setTimeout(() => {{
                    observer.disconnect();
                    reject(new Error("timed out after {ms} ms waiting for: " + {condition_json}));
                }}, {ms});
            }})"#,
            condition_json = json!(condition),
        );
        self.eval(session, &expression).await
    }

    /// A PNG screenshot of the page.
    pub async fn screenshot(&mut self, session: &str) -> Result<Vec<u8>, String> {
        let shot = self
            .call(
                Some(session),
                "Page.captureScreenshot",
                json!({ "format": "png" }),
            )
            .await?;
        decode_base64(shot["data"].as_str().ok_or("no data")?)
    }

    /// Closes the browser and removes its profile.
    pub async fn close(mut self) {
        let _ = self.call(None, "Browser.close", json!({})).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // End the whole process group (Chromium's helpers too), then the profile.
        if let Some(pid) = self.child.id() {
            // bash's builtin `kill`: no dependency on a `kill` binary being installed.
            let _ = std::process::Command::new("bash")
                .args(["-c", "kill -KILL -- \"-$0\"", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | value(c).ok_or("not base64")?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
