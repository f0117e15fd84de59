//! A scriptable WebSocket server on loopback for the client and `tail` tests: plain
//! tokio-tungstenite, so these tests do not depend on this crate's server driver.
// Each test crate uses a different part.
#![allow(dead_code)]
// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The key every test uses.
pub const KEY: &str = "msk_test_client_key_0042";

/// What the server saw of a handshake request.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Path and query of the request line.
    pub path_and_query: String,
    /// The `Authorization` header, when there was one.
    pub authorization: Option<String>,
    /// The `Sec-WebSocket-Protocol` header, when there was one.
    pub protocols: Option<String>,
    /// The `Misar-Resume` header (§2.11), when there was one.
    pub resume: Option<String>,
}

impl Seen {
    fn of(request: &Request) -> Self {
        Self {
            path_and_query: request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            authorization: request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            protocols: request
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            resume: request
                .headers()
                .get("misar-resume")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// An event frame as an opted-in connection carries it (§2.11): `,"offset":N` before the last
/// brace.
pub fn at(frame: &str, offset: u64) -> String {
    format!("{},\"offset\":{offset}}}", &frame[..frame.len() - 1])
}

/// The first frame of an opted-in connection (§2.11).
pub fn resume_frame(epoch: &str, offset: u64, recovered: bool) -> String {
    format!(r#"{{"type":"resume","epoch":"{epoch}","offset":{offset},"recovered":{recovered}}}"#)
}

/// A listener on 127.0.0.1 with a random port.
pub struct TestServer {
    listener: TcpListener,
}

impl TestServer {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self { listener }
    }

    /// `ws://127.0.0.1:<port>/mail/ws`: the base URL (mount prefix) for the client.
    pub fn base_url(&self) -> String {
        format!("ws://{}/mail/ws", self.listener.local_addr().unwrap())
    }

    /// Accepts the next connection and upgrades it.
    pub async fn accept(&self) -> Conn {
        let (stream, _) = self.listener.accept().await.unwrap();
        let mut seen = Seen::default();
        let ws =
            tokio_tungstenite::accept_hdr_async(stream, |req: &Request, mut resp: Response| {
                seen = Seen::of(req);
                // As the protocol's servers do (§2.12): echo `misar.v1` when offered.
                if seen
                    .protocols
                    .as_deref()
                    .is_some_and(|p| p.split(',').any(|e| e.trim() == "misar.v1"))
                {
                    resp.headers_mut()
                        .insert("sec-websocket-protocol", "misar.v1".parse().unwrap());
                }
                Ok(resp)
            })
            .await
            .unwrap();
        Conn { ws, seen }
    }

    /// Accepts the next connection and refuses its handshake with `status` and a JSON `body`.
    pub async fn reject(&self, status: u16, body: &str) -> Seen {
        self.reject_with(status, body, &[]).await
    }

    /// [`reject`](Self::reject), with more response headers.
    pub async fn reject_with(&self, status: u16, body: &str, headers: &[(&str, &str)]) -> Seen {
        let extra: Vec<(http::HeaderName, http::HeaderValue)> = headers
            .iter()
            .map(|(n, v)| (n.parse().unwrap(), v.parse().unwrap()))
            .collect();
        let (stream, _) = self.listener.accept().await.unwrap();
        let mut seen = Seen::default();
        let body = body.to_owned();
        let result = tokio_tungstenite::accept_hdr_async(stream, |req: &Request, _| {
            seen = Seen::of(req);
            let mut response = ErrorResponse::new(Some(body));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
                .headers_mut()
                .insert("cache-control", "no-store".parse().unwrap());
            for (name, value) in extra {
                response.headers_mut().insert(name, value);
            }
            Err(response)
        })
        .await;
        assert!(result.is_err());
        seen
    }

    /// A connection attempt within `within`, if any (with a paused clock the wait is free).
    pub async fn next_attempt(&self, within: Duration) -> Option<TcpStream> {
        tokio::time::timeout(within, self.listener.accept())
            .await
            .ok()
            .map(|accepted| accepted.unwrap().0)
    }
}

/// One upgraded connection, server side.
pub struct Conn {
    pub ws: WebSocketStream<TcpStream>,
    pub seen: Seen,
}

impl Conn {
    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, payload: &[u8]) {
        self.ws
            .send(Message::binary(payload.to_vec()))
            .await
            .unwrap();
    }

    pub async fn ping(&mut self) {
        self.ws
            .send(Message::Ping(Vec::new().into()))
            .await
            .unwrap();
    }

    /// Sends a close frame with `code` and `reason`.
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        self.ws.send(Message::Close(Some(frame))).await.unwrap();
    }

    /// The next data or close message from the client (pongs skipped); `None` at the end.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Pong(_) | Message::Ping(_))) => {}
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Waits for the client's close frame; returns its code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        match self.next_message().await {
            Some(Message::Close(frame)) => frame.map(|f| u16::from(f.code)),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// An `email_received` frame, distinguishable by `n`.
pub fn email(n: usize) -> String {
    format!(
        r#"{{"type":"email_received","from":"sender{n}@example.com","subject":"Message {n}","receivedAt":"2026-05-27T10:15:00Z"}}"#
    )
}

/// A campaign `progress` frame.
pub fn progress(campaign: &str, sent: u64, total: u64) -> String {
    format!(
        r#"{{"type":"progress","campaignId":"{campaign}","sent":{sent},"total":{total},"delivered":{sent},"bounced":0,"opened":1}}"#
    )
}

/// A campaign `completed` frame.
pub fn completed(campaign: &str, sent: u64) -> String {
    format!(
        r#"{{"type":"completed","campaignId":"{campaign}","sent":{sent},"delivered":{sent},"bounced":0,"opened":2,"completedAt":"2026-05-27T11:00:00Z"}}"#
    )
}
