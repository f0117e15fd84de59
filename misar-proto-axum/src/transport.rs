//! axum's [`WebSocket`] as a `Stream` of the core's [`Incoming`] and a `Sink` of its
//! [`Message`], the shape `serve_connection` drives.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::{self, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::{Sink, Stream};
use misar_proto::message::{Incoming, Message, ReceivedClose};

/// Why the transport failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The WebSocket failed (I/O error, protocol violation by the peer, write after close).
    #[error("websocket: {0}")]
    WebSocket(#[from] axum::Error),
    /// A text message to send was not UTF-8 (the core only sends encoded JSON, so this is a
    /// bug in whoever built the message).
    #[error("a text message to send is not UTF-8")]
    NotUtf8,
    /// A kind of message this version of the adapter cannot send.
    #[error("a message kind this adapter cannot send")]
    Unsupported,
}

/// An upgraded axum [`WebSocket`] speaking the core's message types.
///
/// Receiving maps every axum message to [`Incoming`] (a close frame keeps its raw code, so the
/// session judges it). Sending maps [`Message`] to axum's; a text payload is checked for UTF-8
/// once per send, which axum requires (the core's payloads always pass).
///
/// The WebSocket library answers pings and the peer's close frame by itself, so the session's
/// pongs are not sent again, and its echo of a close the peer started is a no-op.
#[derive(Debug)]
pub struct AxumTransport {
    socket: WebSocket,
    /// The peer's close frame arrived: the WebSocket library has already queued the echo.
    peer_closed: bool,
}

impl AxumTransport {
    /// Wraps an upgraded socket.
    pub fn new(socket: WebSocket) -> Self {
        Self {
            socket,
            peer_closed: false,
        }
    }

    /// The socket back.
    pub fn into_inner(self) -> WebSocket {
        self.socket
    }
}

/// axum's message → the core's.
pub(crate) fn incoming(message: ws::Message) -> Incoming {
    match message {
        ws::Message::Text(text) => Incoming::Text(Bytes::from(text)),
        ws::Message::Binary(data) => Incoming::Binary(data),
        ws::Message::Ping(data) => Incoming::Ping(data),
        ws::Message::Pong(data) => Incoming::Pong(data),
        ws::Message::Close(frame) => Incoming::Close(match frame {
            Some(frame) => ReceivedClose {
                code: Some(frame.code),
                reason: Bytes::from(frame.reason),
            },
            None => ReceivedClose {
                code: None,
                reason: Bytes::new(),
            },
        }),
    }
}

/// The core's message → axum's.
pub(crate) fn outgoing(message: Message) -> Result<ws::Message, TransportError> {
    Ok(match message {
        Message::Text(text) => {
            ws::Message::Text(Utf8Bytes::try_from(text).map_err(|_| TransportError::NotUtf8)?)
        }
        Message::Binary(data) => ws::Message::Binary(data),
        Message::Ping(data) => ws::Message::Ping(data),
        Message::Pong(data) => ws::Message::Pong(data),
        Message::Close(frame) => ws::Message::Close(frame.map(|frame| ws::CloseFrame {
            code: frame.code.as_u16(),
            reason: Utf8Bytes::from(frame.reason.as_str()),
        })),
        // `Message` is non-exhaustive: a kind this version does not know cannot be sent.
        _ => return Err(TransportError::Unsupported),
    })
}

impl Stream for AxumTransport {
    type Item = Result<Incoming, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(Pin::new(&mut self.socket).poll_next(cx));
        if let Some(Ok(ws::Message::Close(_))) = &item {
            self.peer_closed = true;
        }
        Poll::Ready(item.map(|result| result.map(incoming).map_err(TransportError::from)))
    }
}

impl Sink<Message> for AxumTransport {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.socket)
            .poll_ready(cx)
            .map_err(TransportError::from)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        match &item {
            // Already answered by the WebSocket library.
            Message::Pong(_) => return Ok(()),
            Message::Close(_) if self.peer_closed => return Ok(()),
            _ => {}
        }
        let message = outgoing(item)?;
        Pin::new(&mut self.socket)
            .start_send(message)
            .map_err(TransportError::from)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.socket)
            .poll_flush(cx)
            .map_err(TransportError::from)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.socket)
            .poll_close(cx)
            .map_err(TransportError::from)
    }
}

impl misar_proto_tokio::server::TransportError for TransportError {
    /// axum wraps tungstenite: its read errors that are the peer's fault (an oversized
    /// message, a broken frame, invalid UTF-8) are tungstenite's, judged as
    /// [`TungsteniteTransport`](misar_proto_tokio::server::TungsteniteTransport) judges them.
    fn violation(&self) -> Option<misar_proto::message::Violation> {
        let TransportError::WebSocket(error) = self else {
            return None;
        };
        let source = std::error::Error::source(error)?;
        source
            .downcast_ref::<tokio_tungstenite::tungstenite::Error>()
            .and_then(misar_proto_tokio::server::TransportError::violation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use misar_proto::close::{CloseCode, CloseFrame};

    #[test]
    fn close_frames_keep_their_raw_code() {
        let m = incoming(ws::Message::Close(Some(ws::CloseFrame {
            code: 1005,
            reason: Utf8Bytes::from("bye"),
        })));
        assert_eq!(
            m,
            Incoming::Close(ReceivedClose {
                code: Some(1005),
                reason: Bytes::from_static(b"bye")
            })
        );
        assert_eq!(
            incoming(ws::Message::Close(None)),
            Incoming::Close(ReceivedClose {
                code: None,
                reason: Bytes::new()
            })
        );
    }

    #[test]
    fn data_messages_map_both_ways() {
        assert_eq!(
            incoming(ws::Message::Text(Utf8Bytes::from("{}"))),
            Incoming::Text(Bytes::from_static(b"{}"))
        );
        assert_eq!(
            incoming(ws::Message::Binary(Bytes::from_static(b"\x00"))),
            Incoming::Binary(Bytes::from_static(b"\x00"))
        );
        match outgoing(Message::Text(Bytes::from_static(b"{\"a\":1}"))).unwrap() {
            ws::Message::Text(t) => assert_eq!(t.as_str(), "{\"a\":1}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outgoing(Message::Text(Bytes::from_static(b"\xff"))),
            Err(TransportError::NotUtf8)
        ));
        match outgoing(Message::Close(Some(CloseFrame::new(CloseCode::GoingAway)))).unwrap() {
            ws::Message::Close(Some(f)) => assert_eq!(f.code, 1001),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outgoing(Message::Ping(Bytes::new())).unwrap(),
            ws::Message::Ping(_)
        ));
    }
}
