//! Hand-written HTTP/1.1 over a tokio `TcpStream`: what a client outside this project sends,
//! byte for byte, and exactly what came back (status line, headers, body, and whether a 101
//! was ever sent).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single exchange, so a broken server fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed HTTP response head and body.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (per `Content-Length`, or up to EOF).
    pub body: Vec<u8>,
    /// Everything received, for assertions on the raw bytes.
    pub raw: Vec<u8>,
}

impl RawResponse {
    /// The value of the first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Whether the server ever sent a `101` status line.
    pub fn saw_101(&self) -> bool {
        String::from_utf8_lossy(&self.raw).contains("HTTP/1.1 101")
    }
}

/// The handshake request of a WebSocket client, with `extra` header lines (`"Name: value"`).
pub fn upgrade_request(path_and_query: &str, extra: &[&str]) -> String {
    let mut request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// A plain request with `Connection: close`, `extra` header lines and a body.
pub fn plain_request(method: &str, path: &str, extra: &[&str], body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> (u16, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Sends `request` and reads the response. For a `101` the read stops after the head and the
/// stream is returned, so the caller can speak WebSocket on it.
pub async fn exchange(
    addr: SocketAddr,
    request: &[u8],
) -> (RawResponse, Option<(TcpStream, Vec<u8>)>) {
    tokio::time::timeout(IO_TIMEOUT, exchange_inner(addr, request))
        .await
        .expect("HTTP exchange timed out")
}

async fn exchange_inner(
    addr: SocketAddr,
    request: &[u8],
) -> (RawResponse, Option<(TcpStream, Vec<u8>)>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "connection closed before a full response head: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let (status, headers) = parse_head(&raw[..head_end]);
    let mut response = RawResponse {
        status,
        headers,
        body: Vec::new(),
        raw: Vec::new(),
    };
    if status == 101 {
        let rest = raw[head_end..].to_vec();
        response.raw = raw[..head_end].to_vec();
        return (response, Some((stream, rest)));
    }
    let length = response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    loop {
        let have = raw.len() - head_end;
        if length.is_some_and(|l| have >= l) {
            break;
        }
        let n = stream.read(&mut buf).await.expect("read body");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    response.body = raw[head_end..].to_vec();
    if let Some(l) = length {
        response.body.truncate(l);
    }
    response.raw = raw;
    (response, None)
}

/// A plain request; the response must not be an upgrade.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[&str],
    body: &[u8],
) -> RawResponse {
    let (response, upgraded) = exchange(addr, &plain_request(method, path, extra, body)).await;
    assert!(upgraded.is_none(), "unexpected upgrade");
    response
}
