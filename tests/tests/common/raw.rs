//! Clients that do what a polite client never does.
//!
//! - [`RawPeer`]: a TCP socket that performs the WebSocket upgrade by hand and then reads and
//!   writes frames itself. It never answers a ping or a close unless told to, can stop reading
//!   altogether (half-open), and can send anything: garbage, unmasked frames, reserved close
//!   codes.
//! - [`ws_connect`]: tokio-tungstenite's client, for impolite *messages* over a correct
//!   WebSocket (floods, oversized or binary messages) and for reading refusals (status,
//!   headers, body).

use std::net::SocketAddr;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::within;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// An HTTP response to a handshake that was not upgraded.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Refusal {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON body.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "a JSON body: {e}: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The status code of a close frame (`None`: not a close, or a close without a code).
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload.as_slice()) {
            (OP_CLOSE, [a, b, ..]) => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        (self.opcode == OP_TEXT)
            .then(|| std::str::from_utf8(&self.payload).ok())
            .flatten()
    }
}

/// What a peer saw until the server closed (or the socket ended).
#[derive(Debug, Default)]
pub struct Seen {
    pub texts: Vec<String>,
    pub pings: usize,
    /// Opcodes in arrival order.
    pub opcodes: Vec<u8>,
    /// The close frame's code, `Some(None)` for a close without a code.
    pub close: Option<Option<u16>>,
}

/// A hand-driven WebSocket client over TCP.
pub struct RawPeer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawPeer {
    /// Upgrades `path` with `headers`; the peer, or the refusal.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<RawPeer, Refusal> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::upgrade(stream, addr, path, headers).await
    }

    /// Like [`connect`](Self::connect), with a small receive buffer: a peer that stops reading
    /// then holds little in its kernel buffer, so the server's side backs up sooner.
    pub async fn connect_small_buffer(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        recv_buffer: u32,
    ) -> Result<RawPeer, Refusal> {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .set_recv_buffer_size(recv_buffer)
            .expect("set SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        Self::upgrade(stream, addr, path, headers).await
    }

    async fn upgrade(
        mut stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<RawPeer, Refusal> {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the handshake");

        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(pos) = find(&buf, b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = within("the handshake response", stream.read(&mut chunk))
                .await
                .expect("read the handshake response");
            assert!(n > 0, "the server closed before answering the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line: {head:?}"));
        let rest = buf.split_off(head_end);
        if status == 101 {
            return Ok(RawPeer { stream, buf: rest });
        }
        let mut map = HeaderMap::new();
        for line in head.lines().skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.trim().as_bytes()),
                    HeaderValue::from_str(value.trim()),
                ) {
                    map.append(name, value);
                }
            }
        }
        let length: usize = map
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = rest;
        while body.len() < length {
            let mut chunk = [0u8; 4096];
            let n = within("the refusal's body", stream.read(&mut chunk))
                .await
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Err(Refusal {
            status,
            headers: map,
            body,
        })
    }

    /// The next frame, `None` once the socket ended (EOF or reset). Never answers anything.
    /// No timeout: wrap it in [`within`] or a timeout of the test's choosing.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 16 << 10];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads until the server's close frame, without answering pings; records what came.
    pub async fn read_until_close(&mut self) -> Seen {
        let mut seen = Seen::default();
        while let Some(frame) = within("the server's close", self.read_frame()).await {
            seen.opcodes.push(frame.opcode);
            match frame.opcode {
                OP_PING => seen.pings += 1,
                OP_TEXT => seen
                    .texts
                    .push(String::from_utf8_lossy(&frame.payload).into_owned()),
                OP_CLOSE => {
                    seen.close = Some(frame.close_code());
                    return seen;
                }
                _ => {}
            }
        }
        seen
    }

    /// Whether the server ends the socket (EOF or reset) without sending another frame.
    pub async fn ends_without_another_frame(&mut self) -> bool {
        within("the end of the socket", self.read_frame())
            .await
            .is_none()
    }

    /// Sends one final, masked frame.
    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let frame = client_frame(0x80 | opcode, payload, true);
        self.stream.write_all(&frame).await
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Kills the connection the way a crashed process's kernel does when unread data is
    /// pending: a TCP reset, no close frame, no FIN handshake.
    pub fn kill(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }

    /// Sends a close frame carrying `code` (any value: reserved ones included).
    pub async fn send_close(&mut self, code: u16) -> std::io::Result<()> {
        self.send_frame(OP_CLOSE, &code.to_be_bytes()).await
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Encodes one frame from a client: `first` is the first byte (FIN, RSV, opcode).
pub fn client_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(mask_bit | u8::try_from(n).expect("< 126")),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&u16::try_from(n).expect("<= 0xFFFF").to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// One whole frame from the start of `buf`, and how many bytes it took.
fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let [first, second, ..] = *buf else {
        return None;
    };
    let masked = second & 0x80 != 0;
    let (len, mut pos) = match second & 0x7F {
        126 => {
            let bytes: [u8; 2] = buf.get(2..4)?.try_into().ok()?;
            (u64::from(u16::from_be_bytes(bytes)), 4)
        }
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask: Option<[u8; 4]> = if masked {
        let mask = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(mask)
    } else {
        None
    };
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len)?;
    let mut payload = buf.get(pos..end)?.to_vec();
    if let Some(mask) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Some((
        Frame {
            fin: first & 0x80 != 0,
            opcode: first & 0x0F,
            payload,
        },
        end,
    ))
}

// ----- tokio-tungstenite -----

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket handshake with tokio-tungstenite; the socket, or the HTTP refusal.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, Refusal> {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("a valid request");
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            HeaderValue::from_str(value).expect("a header value"),
        );
    }
    match within("the handshake", tokio_tungstenite::connect_async(request)).await {
        Ok((ws, _response)) => Ok(ws),
        Err(WsError::Http(response)) => Err(Refusal {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.body().clone().unwrap_or_default(),
        }),
        Err(other) => panic!("the handshake failed: {other}"),
    }
}

/// The status of a handshake that must be refused.
pub async fn ws_refusal(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Refusal {
    match ws_connect(addr, path, headers).await {
        Ok(_) => panic!("{path}: upgraded, but a refusal was expected"),
        Err(refusal) => refusal,
    }
}

/// Reads until the server's close; tungstenite answers pings meanwhile, and keeps reading
/// after the close until the end so that its echo goes out (as a real client's does). The text
/// messages, and the close code (`None`: the socket ended without a close frame, or with one
/// without a code).
pub async fn ws_read_until_close(ws: &mut Ws) -> (Vec<String>, Option<u16>) {
    let mut texts = Vec::new();
    let code = within("the server's close", async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(WsMessage::Text(text)) => texts.push(text.as_str().to_owned()),
                Ok(WsMessage::Close(frame)) => {
                    while let Some(Ok(_)) = ws.next().await {}
                    return frame.map(|f| u16::from(f.code));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await;
    (texts, code)
}

/// The next text message (pings are answered while reading); fails on anything else ending.
pub async fn ws_next_text(ws: &mut Ws) -> String {
    within("a text message", async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => return text.as_str().to_owned(),
                Some(Ok(WsMessage::Close(frame))) => panic!("closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error: {e}"),
                None => panic!("socket ended"),
            }
        }
    })
    .await
}

pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}
