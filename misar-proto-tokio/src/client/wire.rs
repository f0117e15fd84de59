//! Conversions between tungstenite's messages and the core's, and the upgrade headers
//! tungstenite expects on a prebuilt request.

use http::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use misar_proto::client::RequestError;
use misar_proto::message::{Incoming, Message};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame as WsCloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

/// A message read from tungstenite, as the session takes it (the crate's one conversion).
pub(super) fn incoming(message: WsMessage) -> Option<Incoming> {
    crate::server::incoming_from_tungstenite(message)
}

/// A message of the session, as tungstenite sends it. `None` for a text payload that is not
/// UTF-8 (the client session never sends text; this only keeps the conversion total).
pub(super) fn outgoing(message: Message) -> Option<WsMessage> {
    Some(match message {
        Message::Text(payload) => WsMessage::Text(payload.try_into().ok()?),
        Message::Binary(payload) => WsMessage::Binary(payload),
        Message::Ping(payload) => WsMessage::Ping(payload),
        Message::Pong(payload) => WsMessage::Pong(payload),
        Message::Close(frame) => WsMessage::Close(frame.map(|frame| WsCloseFrame {
            code: WsCloseCode::from(frame.code.as_u16()),
            reason: frame.reason.as_str().into(),
        })),
        _ => return None,
    })
}

/// Adds the upgrade headers to the core's request. tungstenite passes a prebuilt
/// `http::Request` through untouched and refuses one without `Sec-WebSocket-Key`; the core
/// leaves these to the WebSocket library because they are per attempt (a fresh key each time).
pub(super) fn upgrade_request(
    mut request: http::Request<()>,
) -> Result<http::Request<()>, RequestError> {
    let key = HeaderValue::from_str(&generate_key()).map_err(|_| RequestError::Build)?;
    let headers = request.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.insert(SEC_WEBSOCKET_KEY, key);
    Ok(request)
}

/// A received close reason as text for an error message: lossy UTF-8, control characters
/// dropped (it ends up on terminals and in logs).
pub(super) fn reason_text(reason: &[u8]) -> String {
    String::from_utf8_lossy(reason)
        .chars()
        .filter(|c| !c.is_control())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use misar_proto::close::{CloseCode, CloseFrame};
    use misar_proto::message::ReceivedClose;

    #[test]
    fn close_frames_round_trip_their_codes() {
        let out = outgoing(Message::Close(Some(CloseFrame::new(CloseCode::Normal)))).unwrap();
        let WsMessage::Close(Some(frame)) = &out else {
            panic!("not a close: {out:?}")
        };
        assert_eq!(u16::from(frame.code), 1000);
        let back = incoming(out).unwrap();
        assert_eq!(
            back,
            Incoming::Close(ReceivedClose {
                code: Some(1000),
                reason: Bytes::from_static(b"campaign finished"),
            })
        );
        assert_eq!(
            incoming(WsMessage::Close(None)).unwrap(),
            Incoming::Close(ReceivedClose {
                code: None,
                reason: Bytes::new()
            })
        );
    }

    #[test]
    fn upgrade_headers_are_added_with_a_fresh_key() {
        let request = http::Request::get("ws://h/x").body(()).unwrap();
        let a = upgrade_request(request.clone()).unwrap();
        let b = upgrade_request(request).unwrap();
        assert_eq!(a.headers()[UPGRADE], "websocket");
        assert_eq!(a.headers()[CONNECTION], "Upgrade");
        assert_eq!(a.headers()[SEC_WEBSOCKET_VERSION], "13");
        assert_ne!(
            a.headers()[SEC_WEBSOCKET_KEY],
            b.headers()[SEC_WEBSOCKET_KEY]
        );
    }

    #[test]
    fn reason_text_drops_control_characters() {
        assert_eq!(reason_text(b"key\x1b[31m revoked\n"), "key[31m revoked");
        assert_eq!(reason_text(&[0xff, b'a']), "\u{fffd}a");
    }
}
