//! The client's WebSocket handshake, written here rather than left to tungstenite.
//!
//! tungstenite's client handshake logs the whole request it writes — `Authorization`,
//! `Sec-WebSocket-Protocol` and the URL's query included — as a `trace` record of the `log`
//! target `tungstenite::handshake::client`. No subscriber setting of ours can keep that record
//! from an embedder's logger, so the request never goes through it (§2.10): this module writes
//! the request head itself, reads and checks the response head (RFC 6455 §4.1), and hands the
//! socket, with whatever frames followed the head, to tungstenite as an open connection
//! ([`WebSocketStream::from_partially_read`]). Nothing here logs.

use std::io;

use bytes::Bytes;
use http::StatusCode;
use http::header::{
    CONNECTION, CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use misar_proto::auth::SUBPROTOCOL;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// An open connection.
pub(super) type Connection = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest response head read (status line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// The most headers a response head may have.
const MAX_HEADERS: usize = 64;
/// The longest refusal body read (the §2.3 JSON is a few dozen bytes).
const MAX_BODY: usize = 4096;

/// Why a handshake did not open a connection. No variant holds the request, the URL or a
/// header value of the request.
#[derive(Debug)]
pub(super) enum HandshakeError {
    /// TCP, TLS or reading/writing failed.
    Io(io::Error),
    /// A `wss://` URL without the `rustls-tls` feature.
    #[cfg_attr(feature = "rustls-tls", allow(dead_code))]
    TlsUnavailable,
    /// The server's answer is not a valid WebSocket handshake response.
    Protocol(&'static str),
    /// The server answered with another status than 101.
    Refused {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

impl From<io::Error> for HandshakeError {
    fn from(error: io::Error) -> Self {
        HandshakeError::Io(error)
    }
}

/// Connects to the request's host, performs the handshake, and returns the open connection
/// with the response's status and headers.
pub(super) async fn connect(
    request: http::Request<()>,
    config: WebSocketConfig,
) -> Result<(Connection, HeaderMap), HandshakeError> {
    let uri = request.uri();
    let tls = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => {
            return Err(HandshakeError::Protocol(
                "the URL's scheme is not ws or wss",
            ));
        }
    };
    let host = uri
        .host()
        .ok_or(HandshakeError::Protocol("the URL has no host"))?;
    // `[::1]` in a URL, `::1` to connect to.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let socket = TcpStream::connect((host.as_str(), port)).await?;
    socket.set_nodelay(true)?;
    let mut stream = if tls {
        wrap_tls(socket, &host).await?
    } else {
        MaybeTlsStream::Plain(socket)
    };

    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or(HandshakeError::Protocol(
            "the request has no Sec-WebSocket-Key",
        ))?;
    let offered_protocols = request.headers().contains_key(SEC_WEBSOCKET_PROTOCOL);
    stream.write_all(&request_head(&request)).await?;
    stream.flush().await?;
    drop(request);

    let (status, headers, tail) = read_head(&mut stream).await?;
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = read_body(&mut stream, &headers, tail).await;
        return Err(HandshakeError::Refused {
            status,
            headers,
            body,
        });
    }
    check_upgrade(&headers, &key, offered_protocols).map_err(HandshakeError::Protocol)?;
    let connection =
        WebSocketStream::from_partially_read(stream, tail, Role::Client, Some(config)).await;
    Ok((connection, headers))
}

#[cfg(feature = "rustls-tls")]
async fn wrap_tls(
    socket: TcpStream,
    host: &str,
) -> Result<MaybeTlsStream<TcpStream>, HandshakeError> {
    use std::sync::{Arc, OnceLock};

    use rustls::pki_types::ServerName;

    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    super::driver::install_tls_provider();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| HandshakeError::Protocol("the URL's host is not a valid TLS server name"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, socket)
        .await?;
    Ok(MaybeTlsStream::Rustls(stream))
}

#[cfg(not(feature = "rustls-tls"))]
async fn wrap_tls(
    _socket: TcpStream,
    _host: &str,
) -> Result<MaybeTlsStream<TcpStream>, HandshakeError> {
    Err(HandshakeError::TlsUnavailable)
}

/// `GET <path?query> HTTP/1.1`, then every header of the request.
fn request_head(request: &http::Request<()>) -> Vec<u8> {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"GET ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        head.extend_from_slice(canonical(name).as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Header names as most servers print them (some compare them case-sensitively, wrongly).
fn canonical(name: &HeaderName) -> &str {
    match name.as_str() {
        "host" => "Host",
        "connection" => "Connection",
        "upgrade" => "Upgrade",
        "sec-websocket-version" => "Sec-WebSocket-Version",
        "sec-websocket-key" => "Sec-WebSocket-Key",
        "sec-websocket-protocol" => "Sec-WebSocket-Protocol",
        "authorization" => "Authorization",
        other => other,
    }
}

/// Reads until a complete response head; returns its status, headers, and the bytes read past
/// it.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), HandshakeError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        match response.parse(&buffer) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response
                    .code
                    .and_then(|code| StatusCode::from_u16(code).ok())
                    .ok_or(HandshakeError::Protocol("invalid status code"))?;
                let mut headers = HeaderMap::with_capacity(response.headers.len());
                for header in response.headers.iter() {
                    let name = HeaderName::from_bytes(header.name.as_bytes())
                        .map_err(|_| HandshakeError::Protocol("invalid header name"))?;
                    let value = HeaderValue::from_bytes(header.value)
                        .map_err(|_| HandshakeError::Protocol("invalid header value"))?;
                    headers.append(name, value);
                }
                let tail = buffer.split_off(len);
                return Ok((status, headers, tail));
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(HandshakeError::Protocol("response head too long"));
            }
            Err(_) => return Err(HandshakeError::Protocol("malformed response head")),
        }
    }
}

/// The body of a refusal, up to `Content-Length` (or the end of the stream), at most
/// [`MAX_BODY`] bytes. Best effort: a read error ends it.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    headers: &HeaderMap,
    mut body: Vec<u8>,
) -> Bytes {
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let want = length.unwrap_or(MAX_BODY + 1).min(MAX_BODY + 1);
    let mut chunk = [0u8; 1024];
    while body.len() < want {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(want);
    Bytes::from(body)
}

/// RFC 6455 §4.1's checks of a 101, and §2.12's: a client that offered subprotocols gets
/// exactly `misar.v1` back (never its bearer entry); one that offered none gets none.
fn check_upgrade(
    headers: &HeaderMap,
    key: &HeaderValue,
    offered_protocols: bool,
) -> Result<(), &'static str> {
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|text| {
                text.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(UPGRADE, "websocket") {
        return Err("no `Upgrade: websocket` in the 101");
    }
    if !has_token(CONNECTION, "upgrade") {
        return Err("no `Connection: upgrade` in the 101");
    }
    let expected = derive_accept_key(key.as_bytes());
    if headers.get(SEC_WEBSOCKET_ACCEPT).map(HeaderValue::as_bytes) != Some(expected.as_bytes()) {
        return Err("wrong Sec-WebSocket-Accept in the 101");
    }
    let mut echoed = headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter();
    match (offered_protocols, echoed.next(), echoed.next()) {
        (false, None, _) => Ok(()),
        (true, Some(value), None) if value.as_bytes() == SUBPROTOCOL.as_bytes() => Ok(()),
        (true, None, _) => Err("the 101 echoes no subprotocol"),
        _ => Err("the 101 echoes another subprotocol than misar.v1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_101_is_checked() {
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let good = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", accept),
        ];
        assert!(check_upgrade(&headers(&good), &key, false).is_ok());
        let mut echo = good.to_vec();
        echo.push(("sec-websocket-protocol", "misar.v1"));
        assert!(check_upgrade(&headers(&echo), &key, true).is_ok());
        // An echo nobody asked for, no echo, the bearer entry echoed.
        assert!(check_upgrade(&headers(&echo), &key, false).is_err());
        assert!(check_upgrade(&headers(&good), &key, true).is_err());
        let mut bearer = good.to_vec();
        bearer.push(("sec-websocket-protocol", "misar.bearer.msk_x"));
        assert!(check_upgrade(&headers(&bearer), &key, true).is_err());
        let wrong = [
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-accept", "AAAA"),
        ];
        assert!(check_upgrade(&headers(&wrong), &key, false).is_err());
    }

    #[tokio::test]
    async fn head_and_tail_are_split() {
        let wire =
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\nretry-after: 3\r\n\r\nhello extra";
        let mut reader = &wire[..];
        let (status, headers, tail) = read_head(&mut reader).await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["retry-after"], "3");
        let body = read_body(&mut reader, &headers, tail).await;
        assert_eq!(&body[..], b"hello");
    }

    #[test]
    fn the_request_head_is_http_1_1() {
        let request = http::Request::get("ws://h:1/mail/ws/inbox?a=1")
            .header("host", "h:1")
            .header("sec-websocket-key", "k")
            .body(())
            .unwrap();
        let head = String::from_utf8(request_head(&request)).unwrap();
        assert_eq!(
            head,
            "GET /mail/ws/inbox?a=1 HTTP/1.1\r\nHost: h:1\r\nSec-WebSocket-Key: k\r\n\r\n"
        );
    }
}
