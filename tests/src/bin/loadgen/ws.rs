//! The load generator's WebSocket clients.
//!
//! `Raw` (the default) does the client handshake itself and then parses server frames straight
//! out of its read buffer: a server's frames are unmasked, so counting them and answering pings
//! takes a header parse, no copy and no allocation per frame. The load generator has one core,
//! like the server, and must stay well below saturation while the server is at 100 %, or it
//! would measure itself. `Tungstenite` goes through tokio-tungstenite, as a cross-check that the
//! raw client counts the same thing.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Largest frame payload accepted from a server; the benchmark's are about 200 bytes.
const MAX_FRAME: usize = 16 << 20;
/// Largest HTTP response head accepted in the handshake.
const MAX_HEAD: usize = 16 * 1024;

/// Which client implementation a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// Hand-written handshake and frame parser: cheapest per frame.
    Raw,
    /// tokio-tungstenite 0.29 (small read buffer), as a cross-check.
    Tungstenite,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// The server's address.
    pub addr: SocketAddr,
    /// Path and query of the upgrade request, e.g. `/mail/ws/inbox?token=msk_...`.
    pub path: String,
    /// Initial size of a connection's read buffer.
    pub read_buf: usize,
    /// `SO_RCVBUF` to set before connecting (a small one makes a slow reader fill up sooner).
    pub rcvbuf: Option<u32>,
    /// Which client.
    pub kind: ClientKind,
    /// `Misar-Resume` value sent in the handshake (DESIGN.md §2.11): `new` or
    /// `<epoch>:<offset>`. Then the server's first text frame is its `resume` frame, handed
    /// to the caller as [`Event::Resume`].
    pub resume: Option<String>,
}

/// Why a connection failed or ended.
#[derive(Debug)]
pub enum WsError {
    Io(io::Error),
    Eof,
    Status(u16),
    BadHandshake(&'static str),
    Protocol(&'static str),
    Tungstenite(String),
}

impl WsError {
    /// A short label to count errors by.
    pub fn label(&self) -> String {
        match self {
            Self::Io(e) => format!("io:{:?}", e.kind()),
            Self::Eof => "eof".to_owned(),
            Self::Status(code) => format!("http:{code}"),
            Self::BadHandshake(what) => format!("handshake:{what}"),
            Self::Protocol(what) => format!("protocol:{what}"),
            Self::Tungstenite(what) => format!("tungstenite:{what}"),
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl From<io::Error> for WsError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<tungstenite::Error> for WsError {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            tungstenite::Error::Io(e) => Self::Io(e),
            tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Self::Eof,
            tungstenite::Error::Http(response) => Self::Status(response.status().as_u16()),
            tungstenite::Error::Protocol(p) => Self::Tungstenite(format!("{p:?}")),
            other => Self::Tungstenite(other.to_string()),
        }
    }
}

/// What a read hands to its caller.
pub enum Event<'a> {
    /// A complete text message (for a fragmented one: its last fragment).
    Text(&'a [u8]),
    /// The first text message of an opted-in connection: the server's `resume` frame.
    Resume(&'a [u8]),
    /// A complete binary message.
    Binary,
    /// A ping, already answered.
    Ping,
}

/// The connection's state after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Still open.
    Open,
    /// The server sent a close frame with this code (answered, if we had not closed first).
    Closed(Option<u16>),
}

/// One client connection of either kind.
pub enum Conn {
    Raw(Box<RawConn>),
    /// The stream, and whether the next text message is the `resume` frame.
    Tungstenite(Box<tokio_tungstenite::WebSocketStream<TcpStream>>, bool),
}

impl Conn {
    /// Connects and completes the WebSocket handshake (checking `Sec-WebSocket-Accept`).
    pub async fn connect(params: &ConnectParams, seed: u32) -> Result<Self, WsError> {
        Self::connect_with(params, params.resume.as_deref(), seed).await
    }

    /// As [`Conn::connect`], with this `Misar-Resume` value instead of `params.resume`.
    pub async fn connect_with(
        params: &ConnectParams,
        resume: Option<&str>,
        seed: u32,
    ) -> Result<Self, WsError> {
        let stream = tcp_connect(params).await?;
        match params.kind {
            ClientKind::Raw => Ok(Self::Raw(Box::new(
                RawConn::handshake(stream, params, resume, seed).await?,
            ))),
            ClientKind::Tungstenite => {
                use tokio_tungstenite::tungstenite::client::IntoClientRequest;
                let url = format!("ws://{}{}", params.addr, params.path);
                let mut request = url.into_client_request()?;
                if let Some(value) = resume {
                    let value = value
                        .parse()
                        .map_err(|_| WsError::BadHandshake("resume value is not a header"))?;
                    request.headers_mut().insert("misar-resume", value);
                }
                let config = WebSocketConfig::default()
                    .read_buffer_size(params.read_buf)
                    .write_buffer_size(0);
                let (ws, _) =
                    tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                        .await?;
                Ok(Self::Tungstenite(Box::new(ws), resume.is_some()))
            }
        }
    }

    /// Waits for data, then hands every complete message read to `on_event`.
    pub async fn read_batch(
        &mut self,
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<Batch, WsError> {
        match self {
            Self::Raw(raw) => raw.read_batch(on_event).await,
            Self::Tungstenite(ws, resume_pending) => match ws.next().await {
                // tungstenite queues the pong itself and flushes it on the next read.
                Some(Ok(tungstenite::Message::Ping(_))) => {
                    on_event(Event::Ping);
                    Ok(Batch::Open)
                }
                Some(Ok(tungstenite::Message::Text(text))) => {
                    if std::mem::take(resume_pending) {
                        on_event(Event::Resume(text.as_bytes()));
                    } else {
                        on_event(Event::Text(text.as_bytes()));
                    }
                    Ok(Batch::Open)
                }
                Some(Ok(tungstenite::Message::Binary(_))) => {
                    on_event(Event::Binary);
                    Ok(Batch::Open)
                }
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    Ok(Batch::Closed(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => Ok(Batch::Open),
                Some(Err(e)) => Err(e.into()),
                None => Err(WsError::Eof),
            },
        }
    }

    /// Starts the closing handshake with `code`.
    pub async fn close(&mut self, code: u16) -> Result<(), WsError> {
        match self {
            Self::Raw(raw) => raw.close(code).await,
            Self::Tungstenite(ws, _) => {
                let frame = tungstenite::protocol::CloseFrame {
                    code: code.into(),
                    reason: "".into(),
                };
                ws.send(tungstenite::Message::Close(Some(frame))).await?;
                Ok(())
            }
        }
    }
}

async fn tcp_connect(params: &ConnectParams) -> Result<TcpStream, WsError> {
    let socket = if params.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(size) = params.rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    let stream = socket.connect(params.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The hand-written client: a read buffer with the unparsed bytes in `start..end`.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes needed from `start` before the next frame can be parsed.
    need: usize,
    /// Frames to write after a batch (pongs, close).
    out: Vec<u8>,
    /// xorshift32 state for mask keys (clients must mask; the key's quality does not matter here).
    mask_state: u32,
    /// `Some(is_text)` while a fragmented message is open.
    fragment: Option<bool>,
    close_sent: bool,
    /// The next text message is the server's `resume` frame (§2.11).
    resume_pending: bool,
}

impl RawConn {
    async fn handshake(
        mut stream: TcpStream,
        params: &ConnectParams,
        resume: Option<&str>,
        seed: u32,
    ) -> Result<Self, WsError> {
        let key = generate_key();
        let resume_header = resume.map_or_else(String::new, |v| format!("Misar-Resume: {v}\r\n"));
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{resume_header}\r\n",
            params.path, params.addr
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; params.read_buf.max(4096)];
        let mut end = 0;
        let head_end = loop {
            let free = buf.get_mut(end..).unwrap_or_default();
            if free.is_empty() {
                if buf.len() >= MAX_HEAD {
                    return Err(WsError::BadHandshake("response head too large"));
                }
                buf.resize(MAX_HEAD, 0);
                continue;
            }
            let n = stream.read(free).await?;
            if n == 0 {
                return Err(WsError::Eof);
            }
            end = end.saturating_add(n);
            let filled = buf.get(..end).unwrap_or_default();
            if let Some(pos) = filled.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos.saturating_add(4);
            }
        };
        let head = std::str::from_utf8(buf.get(..head_end).unwrap_or_default())
            .map_err(|_| WsError::BadHandshake("response head is not UTF-8"))?;
        check_response(head, &key)?;
        Ok(Self {
            stream,
            buf,
            start: head_end,
            end,
            need: 2,
            out: Vec::new(),
            mask_state: seed | 1,
            fragment: None,
            close_sent: false,
            resume_pending: resume.is_some(),
        })
    }

    async fn read_batch(&mut self, mut on_event: impl FnMut(Event<'_>)) -> Result<Batch, WsError> {
        loop {
            let (progressed, closed) = self.parse(&mut on_event)?;
            if !self.out.is_empty() {
                self.stream.write_all(&self.out).await?;
                self.out.clear();
            }
            if let Some(code) = closed {
                return Ok(Batch::Closed(code));
            }
            if progressed {
                return Ok(Batch::Open);
            }
            self.fill().await?;
        }
    }

    /// Parses every complete frame in the buffer. Returns whether any was consumed, and the
    /// close code if a close frame was (parsing stops there).
    #[allow(clippy::type_complexity)]
    fn parse(
        &mut self,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(bool, Option<Option<u16>>), WsError> {
        let mut progressed = false;
        let mut closed = None;
        while closed.is_none() {
            let avail = self.buf.get(self.start..self.end).unwrap_or_default();
            let Some(header) = parse_header(avail)? else {
                self.need = 14;
                break;
            };
            let total = header
                .len
                .checked_add(header.payload)
                .ok_or(WsError::Protocol("frame length overflows"))?;
            if avail.len() < total {
                self.need = total;
                break;
            }
            let payload = avail.get(header.len..total).unwrap_or_default();
            match header.opcode {
                0x1 if header.fin && self.resume_pending => {
                    self.resume_pending = false;
                    on_event(Event::Resume(payload));
                }
                0x1 | 0x2 if header.fin => on_event(message(header.opcode == 0x1, payload)),
                0x1 | 0x2 => self.fragment = Some(header.opcode == 0x1),
                0x0 if header.fin => {
                    let is_text = self
                        .fragment
                        .take()
                        .ok_or(WsError::Protocol("continuation without a message"))?;
                    on_event(message(is_text, payload));
                }
                0x0 => {}
                0x8 => {
                    let code = payload
                        .get(..2)
                        .and_then(|c| <[u8; 2]>::try_from(c).ok())
                        .map(u16::from_be_bytes);
                    if !self.close_sent {
                        let echo = code.map(u16::to_be_bytes);
                        let echo = echo.as_ref().map_or(&[][..], |e| &e[..]);
                        push_frame(&mut self.out, &mut self.mask_state, 0x8, echo);
                        self.close_sent = true;
                    }
                    closed = Some(code);
                }
                0x9 => {
                    push_frame(&mut self.out, &mut self.mask_state, 0xA, payload);
                    on_event(Event::Ping);
                }
                0xA => {}
                _ => return Err(WsError::Protocol("unknown opcode")),
            }
            self.start = self.start.saturating_add(total);
            self.need = 2;
            progressed = true;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok((progressed, closed))
    }

    /// Reads once from the socket, first making room for the frame being waited for.
    async fn fill(&mut self) -> Result<(), WsError> {
        let room = self.buf.len().saturating_sub(self.start);
        if self.end == self.buf.len() || room < self.need {
            self.buf.copy_within(self.start..self.end, 0);
            self.end = self.end.saturating_sub(self.start);
            self.start = 0;
            if self.buf.len() < self.need {
                self.buf.resize(self.need, 0);
            }
        }
        let free = self.buf.get_mut(self.end..).unwrap_or_default();
        if free.is_empty() {
            return Err(WsError::Protocol("read buffer full"));
        }
        let n = self.stream.read(free).await?;
        if n == 0 {
            return Err(WsError::Eof);
        }
        self.end = self.end.saturating_add(n);
        Ok(())
    }

    async fn close(&mut self, code: u16) -> Result<(), WsError> {
        if !self.close_sent {
            push_frame(
                &mut self.out,
                &mut self.mask_state,
                0x8,
                &code.to_be_bytes(),
            );
            self.close_sent = true;
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

fn message(is_text: bool, payload: &[u8]) -> Event<'_> {
    if is_text {
        Event::Text(payload)
    } else {
        Event::Binary
    }
}

/// Checks a handshake response head: status 101 and the accept key derived from ours.
fn check_response(head: &str, key: &str) -> Result<(), WsError> {
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or(WsError::BadHandshake("no status line"))?;
    if status != 101 {
        return Err(WsError::Status(status));
    }
    let accept = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, value)| value.trim())
        .ok_or(WsError::BadHandshake("no Sec-WebSocket-Accept"))?;
    if accept != derive_accept_key(key.as_bytes()) {
        return Err(WsError::BadHandshake("wrong Sec-WebSocket-Accept"));
    }
    Ok(())
}

/// A parsed frame header.
#[derive(Debug, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    /// Header length in bytes.
    len: usize,
    /// Payload length in bytes.
    payload: usize,
}

/// Parses a server frame header; `Ok(None)` if `bytes` does not hold all of it yet.
fn parse_header(bytes: &[u8]) -> Result<Option<Header>, WsError> {
    let (Some(&b0), Some(&b1)) = (bytes.first(), bytes.get(1)) else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err(WsError::Protocol("masked server frame"));
    }
    if b0 & 0x70 != 0 {
        return Err(WsError::Protocol("reserved bits set"));
    }
    let (len, payload) = match b1 & 0x7f {
        126 => match bytes.get(2..4) {
            Some(&[a, b]) => (4, u64::from(u16::from_be_bytes([a, b]))),
            _ => return Ok(None),
        },
        127 => match bytes.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (10, u64::from_be_bytes(b)),
            None => return Ok(None),
        },
        short => (2, u64::from(short)),
    };
    let payload = usize::try_from(payload)
        .ok()
        .filter(|&p| p <= MAX_FRAME)
        .ok_or(WsError::Protocol("frame too large"))?;
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        len,
        payload,
    }))
}

/// Appends a masked client frame (FIN set) to `out`.
fn push_frame(out: &mut Vec<u8>, mask_state: &mut u32, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match u16::try_from(payload.len()) {
        Ok(len @ 0..=125) => out.push(0x80 | len as u8),
        Ok(len) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    // xorshift32: any key will do, a server only has to unmask with it.
    let mut x = *mask_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *mask_state = x;
    let mask = x.to_be_bytes();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_form() {
        assert_eq!(parse_header(&[0x81]).ok(), Some(None));
        let h = parse_header(&[0x81, 5]).ok().flatten();
        assert_eq!(
            h,
            Some(Header {
                fin: true,
                opcode: 1,
                len: 2,
                payload: 5
            })
        );
        assert_eq!(parse_header(&[0x01, 126, 1]).ok(), Some(None));
        let h = parse_header(&[0x01, 126, 1, 0]).ok().flatten();
        assert_eq!(
            h,
            Some(Header {
                fin: false,
                opcode: 1,
                len: 4,
                payload: 256
            })
        );
        let h = parse_header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0])
            .ok()
            .flatten();
        assert_eq!(h.map(|h| (h.len, h.payload)), Some((10, 65536)));
        assert!(parse_header(&[0x82, 127, 0xff, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_header(&[0x81, 0x85]).is_err(), "masked");
        assert!(parse_header(&[0xC1, 5]).is_err(), "RSV1");
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        let mut out = Vec::new();
        let mut state = 7;
        push_frame(&mut out, &mut state, 0xA, b"hello");
        assert_eq!(out.first(), Some(&0x8A));
        assert_eq!(out.get(1), Some(&(0x80 | 5)));
        let mask = out.get(2..6).expect("mask");
        let unmasked: Vec<u8> = out
            .get(6..)
            .expect("payload")
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(unmasked, b"hello");
    }

    #[test]
    fn handshake_response_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_response(good, key).is_ok());
        let forbidden = "HTTP/1.1 403 Forbidden\r\n\r\n";
        assert!(matches!(
            check_response(forbidden, key),
            Err(WsError::Status(403))
        ));
        let wrong = good.replace("s3pP", "XXXX");
        assert!(matches!(
            check_response(&wrong, key),
            Err(WsError::BadHandshake(_))
        ));
    }
}
