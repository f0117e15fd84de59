//! Answering a WebSocket handshake and serving the upgraded socket ourselves.
//!
//! axum's `WebSocketUpgrade` still validates the handshake (method, `Connection`, `Upgrade`,
//! `Sec-WebSocket-Version`, `Sec-WebSocket-Key`), but its `on_upgrade` hands over an axum
//! `WebSocket`, whose transport cannot be chosen. We take our own clone of hyper's pending
//! upgrade instead and build the WebSocket over a [`WriteCoalescer`], for two reasons measured
//! in `BENCHMARKS.md`:
//!
//! - **One system call per batch, and no idle write buffer.** The driver hands a batch of
//!   frames to the WebSocket library, then flushes once. tungstenite's own write buffer would
//!   gather them too, but keeps its capacity forever: every connection that was ever busy
//!   would hold it while idle. The coalescer releases its buffer at every flush.
//! - **No UTF-8 check per recipient.** axum's `Message::Text` needs a `Utf8Bytes`, so every
//!   recipient's copy of an event was validated again; [`TungsteniteTransport`] sends the
//!   shared payload as a text frame as it is (the core only sends its own encoded JSON).

use std::future::Future;

use axum::body::Body;
use axum::response::Response;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderValue, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use misar_proto_tokio::server::{TungsteniteTransport, WriteCoalescer};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::Instrument;

use crate::buffers::WsBuffers;

/// The transport an upgraded connection is served over.
pub(crate) type Socket = TungsteniteTransport<WriteCoalescer<TokioIo<Upgraded>>>;

/// A WebSocket handshake that axum's extractor found valid, not answered yet.
#[derive(Debug)]
pub(crate) struct Upgrade {
    on_upgrade: OnUpgrade,
    /// `Sec-WebSocket-Key` (HTTP/1.1); `None` for HTTP/2's extended CONNECT, which has none.
    key: Option<HeaderValue>,
    /// The subprotocol to echo (`misar.v1`, §2.12), if any.
    echo: Option<&'static str>,
}

impl Upgrade {
    /// The pending upgrade and the client's key.
    pub(crate) fn new(on_upgrade: OnUpgrade, key: Option<HeaderValue>) -> Self {
        Self {
            on_upgrade,
            key,
            echo: None,
        }
    }

    /// Echoes `subprotocol` in `Sec-WebSocket-Protocol` (the core's decision: `misar.v1` when
    /// the client offered it).
    pub(crate) fn echo(mut self, subprotocol: Option<&'static str>) -> Self {
        self.echo = subprotocol;
        self
    }

    /// Answers the handshake and, once hyper hands the socket over, runs `serve` on it in a
    /// task (instrumented with the current span). If the upgrade fails, `serve` is dropped
    /// without being called (dropping what it holds: a hub slot, a shutdown guard).
    pub(crate) fn respond<F, Fut>(self, buffers: WsBuffers, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Upgrade {
            on_upgrade,
            key,
            echo,
        } = self;
        tokio::spawn(
            async move {
                let upgraded = match on_upgrade.await {
                    Ok(upgraded) => upgraded,
                    Err(error) => {
                        tracing::debug!(%error, "upgrade failed");
                        return;
                    }
                };
                let io = WriteCoalescer::new(TokioIo::new(upgraded), buffers.write_buffer_size);
                let socket =
                    WebSocketStream::from_raw_socket(io, Role::Server, Some(buffers.config()))
                        .await;
                serve(TungsteniteTransport::new(socket)).await;
            }
            .instrument(tracing::Span::current()),
        );
        switching_protocols(key.as_ref(), echo)
    }
}

/// 101 with the accept key (HTTP/1.1), or an empty 200 (HTTP/2, RFC 8441); either with the
/// echoed subprotocol.
fn switching_protocols(key: Option<&HeaderValue>, echo: Option<&'static str>) -> Response {
    let mut response = Response::new(Body::empty());
    if let Some(echo) = echo {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(echo));
    }
    let Some(key) = key else {
        return response;
    };
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    // Base64 of a SHA-1: always a valid header value.
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // The example of RFC 6455 §1.3.
        let key = HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==");
        let response = switching_protocols(Some(&key), None);
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let headers = response.headers();
        assert_eq!(
            headers[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(headers[UPGRADE], "websocket");
        assert_eq!(headers[CONNECTION], "upgrade");
        assert!(headers.get(SEC_WEBSOCKET_PROTOCOL).is_none());
        assert_eq!(switching_protocols(None, None).status(), StatusCode::OK);
        let echoed = switching_protocols(Some(&key), Some("misar.v1"));
        assert_eq!(echoed.headers()[SEC_WEBSOCKET_PROTOCOL], "misar.v1");
    }
}
