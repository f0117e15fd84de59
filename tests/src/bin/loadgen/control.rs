//! The benchmark control API client (`bench/README.md`): one HTTP/1.1 request per connection,
//! written by hand because it is three lines of protocol and keeps an HTTP client crate out.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use misar_tests::bench;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest control response read; the real ones are a few dozen bytes.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Why a control request failed.
#[derive(Debug)]
pub enum ControlError {
    Io(std::io::Error),
    Timeout,
    Malformed,
    Status(u16, String),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "control request failed: {e}"),
            Self::Timeout => f.write_str("control request timed out"),
            Self::Malformed => f.write_str("control response is not HTTP with a JSON body"),
            Self::Status(code, body) => write!(f, "control request answered {code}: {body}"),
        }
    }
}

impl std::error::Error for ControlError {}

/// Sends `method path` and returns the JSON body of a 2xx answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    request_with_body(addr, method, path, "", timeout).await
}

/// Sends `method path` with a JSON `body` and returns the JSON body of a 2xx answer.
pub async fn request_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    tokio::time::timeout(timeout, request_inner(addr, method, path, body))
        .await
        .map_err(|_| ControlError::Timeout)?
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<serde_json::Value, ControlError> {
    let mut stream = TcpStream::connect(addr).await.map_err(ControlError::Io)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(ControlError::Io)?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE)
        .read_to_end(&mut response)
        .await
        .map_err(ControlError::Io)?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or(ControlError::Malformed)?;
    let (_, body) = text.split_once("\r\n\r\n").ok_or(ControlError::Malformed)?;
    if !(200..300).contains(&status) {
        return Err(ControlError::Status(status, body.trim().to_owned()));
    }
    // The JSON object between the first `{` and the last `}`: this also reads a body sent with
    // chunked transfer encoding (one chunk), which a server may choose over Content-Length.
    let json = body
        .find('{')
        .zip(body.rfind('}'))
        .and_then(|(from, to)| body.get(from..=to))
        .ok_or(ControlError::Malformed)?;
    serde_json::from_str(json).map_err(|_| ControlError::Malformed)
}

/// `GET /bench/stats` → the number of connections the next broadcast reaches.
pub async fn connections(addr: SocketAddr) -> Result<u64, ControlError> {
    let value = request(addr, "GET", bench::STATS_PATH, Duration::from_secs(10)).await?;
    value["connections"].as_u64().ok_or(ControlError::Malformed)
}

/// `POST /bench/broadcast?count=..&size=..`; returns once the server has published them all.
pub async fn broadcast(
    addr: SocketAddr,
    count: u32,
    size: usize,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let path = format!("{}?count={count}&size={size}", bench::BROADCAST_PATH);
    request(addr, "POST", &path, timeout).await
}
