//! [`Message`]: a whole WebSocket message, the unit sessions consume and produce.
//!
//! The WebSocket library does framing, masking and fragmentation; the core works on whole
//! messages. Payloads are [`Bytes`] so an event encoded once is shared by every connection.

use bytes::Bytes;

use crate::close::CloseFrame;

/// A whole WebSocket message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// A text message. The payload is UTF-8 (the WebSocket library validated it on receipt;
    /// the core only sends encoded JSON).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping with its payload (at most 125 bytes).
    Ping(Bytes),
    /// A pong with its payload (at most 125 bytes).
    Pong(Bytes),
    /// A close frame; `None` is a close without a status code.
    Close(Option<CloseFrame>),
}

/// A close frame as received: the raw code may be one that must not be sent.
///
/// Sessions take this on input so that a peer sending 1005/1006/1015 or an unassigned code is
/// a protocol error they can answer (with 1002), not something the transport had to reject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedClose {
    /// The raw code, `None` for a close frame without a payload.
    pub code: Option<u16>,
    /// The reason as received (possibly longer than allowed, possibly not UTF-8 when the
    /// transport does not check it).
    pub reason: Bytes,
}

/// A message received from the peer, as the sessions take it.
///
/// Like [`Message`], except that a close frame carries the raw code (see [`ReceivedClose`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A text message.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame (`None` code = a close frame without status).
    Close(ReceivedClose),
}

impl From<Message> for Incoming {
    /// A message as sent, as the receiving session takes it (for in-memory transports, test
    /// harnesses and adapters whose library already has whole messages): the one conversion
    /// of the crate, used by `Pair` and the example transports.
    fn from(message: Message) -> Self {
        match message {
            Message::Text(payload) => Incoming::Text(payload),
            Message::Binary(payload) => Incoming::Binary(payload),
            Message::Ping(payload) => Incoming::Ping(payload),
            Message::Pong(payload) => Incoming::Pong(payload),
            Message::Close(frame) => Incoming::Close(match frame {
                Some(frame) => ReceivedClose {
                    code: Some(frame.code.as_u16()),
                    reason: Bytes::copy_from_slice(frame.reason.as_str().as_bytes()),
                },
                None => ReceivedClose {
                    code: None,
                    reason: Bytes::new(),
                },
            }),
        }
    }
}

/// A transport-level failure that is the peer's fault, as a transport reports it to the
/// session ([`ServerSession::handle_violation`](crate::server::ServerSession::handle_violation)).
///
/// The WebSocket library detects these while reading; which close code answers them is the
/// session's decision (RFC 6455 §7.4.1, §2.8), so every transport gets the same answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Violation {
    /// A message or frame over the transport's size limit (answered with 1009).
    MessageTooBig,
    /// A frame that breaks the WebSocket protocol: reserved bits, an unmasked client frame,
    /// a fragmented or oversized control frame, an unknown opcode... (answered with 1002).
    Protocol,
    /// A text message that is not UTF-8 (answered with 1007).
    InvalidUtf8,
}
