//! [`TungsteniteTransport`]: tokio-tungstenite's `WebSocketStream` as the driver's transport.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, Stream, ready};
use misar_proto::message::{Incoming, Message, ReceivedClose, Violation};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::{self, Error as WsError};

/// A tokio-tungstenite server WebSocket as a `Stream` of [`Incoming`] and a `Sink` of
/// [`Message`], for [`serve_connection`](super::serve_connection).
///
/// tungstenite answers pings and close frames by itself, so two of the session's outputs
/// are absorbed here: a [`Message::Pong`] is not sent again, and a close frame that echoes
/// the peer's (tungstenite already did) is not an error. Text payloads are sent as they are
/// (no second UTF-8 check: the core only sends its own encoded JSON).
#[derive(Debug)]
pub struct TungsteniteTransport<S> {
    inner: WebSocketStream<S>,
}

impl<S> TungsteniteTransport<S> {
    /// Wraps an accepted (server-side) WebSocket.
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self { inner }
    }

    /// The WebSocket.
    pub fn get_ref(&self) -> &WebSocketStream<S> {
        &self.inner
    }

    /// The WebSocket back.
    pub fn into_inner(self) -> WebSocketStream<S> {
        self.inner
    }
}

/// tungstenite settings for a server with many mostly idle connections.
///
/// tungstenite's defaults allocate a 128 KiB read buffer per connection up front and never
/// bound the write buffer; these read in 4 KiB chunks, flush at 16 KiB, refuse to buffer more
/// than 2 MiB for a peer that does not read (the write then fails and the connection ends),
/// and cap incoming messages and frames at 64 KiB. That cap is above the session's own limit
/// (`ServerConfig::max_client_message`, 4 KiB), so a moderately oversized client message is
/// answered with 1009 by the session; a huge one is cut off by tungstenite first.
pub fn recommended_websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(16 << 10)
        .max_write_buffer_size(2 << 20)
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10))
}

/// A message read from tungstenite, as the core's sessions take it (`None` for a raw frame,
/// which reading never yields). The one conversion of the crate: the server transport and
/// the client both use it.
pub fn incoming_from_tungstenite(message: tungstenite::Message) -> Option<Incoming> {
    Some(match message {
        tungstenite::Message::Text(text) => Incoming::Text(text.into()),
        tungstenite::Message::Binary(data) => Incoming::Binary(data),
        tungstenite::Message::Ping(data) => Incoming::Ping(data),
        tungstenite::Message::Pong(data) => Incoming::Pong(data),
        tungstenite::Message::Close(frame) => Incoming::Close(match frame {
            Some(frame) => ReceivedClose {
                code: Some(u16::from(frame.code)),
                reason: frame.reason.into(),
            },
            None => ReceivedClose {
                code: None,
                reason: Default::default(),
            },
        }),
        tungstenite::Message::Frame(_) => return None,
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for TungsteniteTransport<S> {
    type Item = Result<Incoming, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                Some(Ok(message)) => {
                    if let Some(message) = incoming_from_tungstenite(message) {
                        return Poll::Ready(Some(Ok(message)));
                    }
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TungsteniteTransport<S> {
    /// Flushes the byte stream under tungstenite. When tungstenite answers the peer's close it
    /// writes the echo into the stream and then reports the connection closed *without*
    /// flushing the stream; over a buffering stream (`WriteCoalescer`) the echo would stay in
    /// the buffer and the peer would see 1006 instead of its close answered.
    fn flush_stream(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(self.inner.get_mut())
            .poll_flush(cx)
            .map_err(WsError::Io)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for TungsteniteTransport<S> {
    type Error = WsError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.inner).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        let inner = Pin::new(&mut self.inner);
        match item {
            // A frame, not `Message::Text`: that would check the UTF-8 again, per recipient.
            Message::Text(data) => inner.start_send(tungstenite::Message::Frame(Frame::message(
                data,
                OpCode::Data(Data::Text),
                true,
            ))),
            Message::Binary(data) => inner.start_send(tungstenite::Message::Binary(data)),
            Message::Ping(data) => inner.start_send(tungstenite::Message::Ping(data)),
            // tungstenite already answered the ping.
            Message::Pong(_) => Ok(()),
            Message::Close(frame) => {
                let frame = frame.map(|frame| CloseFrame {
                    code: CloseCode::from(frame.code.as_u16()),
                    reason: frame.reason.as_str().into(),
                });
                match inner.start_send(tungstenite::Message::Close(frame)) {
                    // The peer closed first and tungstenite echoed its close already.
                    Err(WsError::Protocol(ProtocolError::SendAfterClosing))
                    | Err(WsError::AlreadyClosed)
                    | Err(WsError::ConnectionClosed) => Ok(()),
                    other => other,
                }
            }
            _ => Err(WsError::Io(std::io::Error::other(
                "a message kind this adapter does not know",
            ))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.flush_stream(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        ready!(Pin::new(&mut self.inner).poll_close(cx))?;
        self.flush_stream(cx)
    }
}

impl super::TransportError for WsError {
    /// tungstenite's read errors that are the peer's fault: a message or frame over the size
    /// limit, invalid UTF-8 in a text message, a broken frame. Anything else (I/O, a closed
    /// connection, a failed write) means the transport is gone.
    fn violation(&self) -> Option<Violation> {
        match self {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                Some(Violation::MessageTooBig)
            }
            WsError::Utf8(_) => Some(Violation::InvalidUtf8),
            WsError::Protocol(
                ProtocolError::NonZeroReservedBits
                | ProtocolError::UnmaskedFrameFromClient
                | ProtocolError::FragmentedControlFrame
                | ProtocolError::ControlFrameTooBig
                | ProtocolError::UnknownControlFrameType(_)
                | ProtocolError::UnknownDataFrameType(_)
                | ProtocolError::UnexpectedContinueFrame
                | ProtocolError::ExpectedFragment(_)
                | ProtocolError::InvalidOpcode(_)
                | ProtocolError::InvalidCloseSequence,
            ) => Some(Violation::Protocol),
            _ => None,
        }
    }
}
