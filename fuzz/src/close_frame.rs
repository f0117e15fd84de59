//! `close_frame`: a close frame's payload → code parsing, reasons and retry advice (§2.6).
//!
//! Input: the payload of a WebSocket close frame as it is on the wire: a big-endian `u16`
//! code, then the reason bytes (not necessarily UTF-8, not necessarily short). A payload of
//! fewer than two bytes has no code; its bytes are still tried as a reason. The code is also
//! tried as the HTTP status of a refused handshake.
//!
//! Checked: nothing panics; [`CloseCode::from_wire`] accepts exactly the sendable codes and
//! round-trips them; reserved codes (1005, 1006, 1015) are refused as such; reasons are
//! bounded to 123 bytes and truncated on a character boundary; [`advise`] follows the table of
//! §2.6 for both channels, with and without a terminal event (a campaign finishes only after
//! one: a 1000 alone reconnects).

use misar_proto::close::{
    Advice, ApplicationCode, ChannelKind, CloseCode, CloseFrame, CloseReason, Disconnect, Fatal,
    InvalidCloseCode, MAX_CLOSE_REASON_BYTES, Pace, advise,
};

const CHANNELS: [ChannelKind; 2] = [ChannelKind::Inbox, ChannelKind::Campaign];

/// The target's body.
pub fn run(data: &[u8]) {
    let reason = match data {
        [hi, lo, rest @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            check_code(code);
            check_handshake_status(code);
            rest
        }
        _ => data,
    };
    check_reason(reason);
    for channel in CHANNELS {
        for disconnect in [
            Disconnect::ClosedWithoutCode,
            Disconnect::Dropped,
            Disconnect::ConnectFailed,
        ] {
            let advice = advise(&disconnect, channel, false);
            assert!(
                matches!(advice, Advice::Reconnect(_)),
                "{disconnect:?} on {channel:?} must reconnect, got {advice:?}"
            );
            check_after_terminal(&disconnect, channel);
        }
    }
}

fn check_code(raw: u16) {
    match CloseCode::from_wire(raw) {
        Ok(code) => {
            assert_eq!(code.as_u16(), raw);
            assert_eq!(u16::from(code), raw);
            assert_eq!(CloseCode::try_from(raw), Ok(code));
            assert_eq!(code.to_string(), raw.to_string());
            assert!(
                !matches!(raw, 1005 | 1006 | 1015),
                "{raw} must never be sent"
            );
            assert!((1000..=4999).contains(&raw), "{raw} accepted");
            assert!(code.default_reason().len() <= MAX_CLOSE_REASON_BYTES);
            let frame = CloseFrame::new(code);
            assert_eq!(frame.code, code);
            assert_eq!(frame.reason.as_str(), code.default_reason());
            for channel in CHANNELS {
                check_advice(code, channel);
            }
        }
        Err(error) => {
            let _ = error.to_string();
            match error {
                InvalidCloseCode::Reserved(r) => {
                    assert_eq!(r, raw);
                    assert!(matches!(raw, 1005 | 1006 | 1015), "{raw} called reserved");
                }
                InvalidCloseCode::Unassigned(r) => {
                    assert_eq!(r, raw);
                    assert!(!matches!(raw, 1005 | 1006 | 1015));
                }
                other => panic!("unexpected error {other:?}"),
            }
            // Every code the server of §2.6 sends must parse.
            assert!(
                !matches!(
                    raw,
                    1000 | 1001 | 1002 | 1008 | 1009 | 1011 | 1013 | 4401 | 4403
                ),
                "{raw} refused"
            );
            // The application range is sendable as a whole.
            assert!(!(3000..=4999).contains(&raw), "{raw} refused");
        }
    }
    match ApplicationCode::new(raw) {
        Some(app) => {
            assert_eq!(app.get(), raw);
            assert!((3000..=4999).contains(&raw) && raw != 4401 && raw != 4403);
            assert_eq!(CloseCode::from_wire(raw), Ok(CloseCode::Other(app)));
        }
        None => assert!(!(3000..=4999).contains(&raw) || raw == 4401 || raw == 4403),
    }
}

/// §2.6: what a client does after the server closed with `code`.
fn check_advice(code: CloseCode, channel: ChannelKind) {
    let disconnect = Disconnect::Closed(code);
    check_after_terminal(&disconnect, channel);
    let advice = advise(&disconnect, channel, false);
    let expected = match (code, channel) {
        // Without a terminal event a 1000 is no finish, on either channel.
        (CloseCode::Normal, _)
        | (CloseCode::GoingAway, _)
        | (CloseCode::PolicyViolation, _)
        | (CloseCode::MessageTooBig, _) => Some(Advice::Reconnect(Pace::Normal)),
        (CloseCode::InternalError, _) | (CloseCode::TryAgainLater, _) => {
            Some(Advice::Reconnect(Pace::Longer))
        }
        (CloseCode::Unauthorized, _) => Some(Advice::Stop(Fatal::Unauthorized)),
        (CloseCode::Forbidden, _) => Some(Advice::Stop(Fatal::Forbidden)),
        _ => None,
    };
    match expected {
        Some(expected) => assert_eq!(advice, expected, "{code} on {channel:?}"),
        // Codes §2.6 does not list: reconnect at some pace, never finish nor stop.
        None => assert!(
            matches!(advice, Advice::Reconnect(_)),
            "{code} on {channel:?}: {advice:?}"
        ),
    }
}

/// After a terminal event a campaign finishes however the connection ends; the inbox has no
/// terminal events, so the flag changes nothing there.
fn check_after_terminal(disconnect: &Disconnect, channel: ChannelKind) {
    let advice = advise(disconnect, channel, true);
    match channel {
        ChannelKind::Campaign => assert_eq!(advice, Advice::Finish, "{disconnect:?}"),
        ChannelKind::Inbox => assert_eq!(advice, advise(disconnect, channel, false)),
    }
}

fn check_handshake_status(status: u16) {
    for channel in CHANNELS {
        let disconnect = Disconnect::HandshakeRejected { status };
        check_after_terminal(&disconnect, channel);
        let advice = advise(&disconnect, channel, false);
        match status {
            403 => assert_eq!(advice, Advice::Stop(Fatal::HandshakeForbidden)),
            500..=599 => assert!(
                matches!(advice, Advice::Reconnect(_)),
                "HTTP {status}: {advice:?}"
            ),
            _ => assert!(advice != Advice::Finish, "HTTP {status} cannot finish"),
        }
    }
}

fn check_reason(bytes: &[u8]) {
    let lossy = String::from_utf8_lossy(bytes);
    check_reason_text(&lossy);
    if let Ok(strict) = std::str::from_utf8(bytes) {
        check_reason_text(strict);
    }
}

fn check_reason_text(text: &str) {
    match CloseReason::new(text) {
        Ok(reason) => {
            assert!(text.len() <= MAX_CLOSE_REASON_BYTES);
            assert_eq!(reason.as_str(), text);
            assert_eq!(reason.to_string(), text);
        }
        Err(error) => {
            assert!(text.len() > MAX_CLOSE_REASON_BYTES);
            assert_eq!(error.len, text.len());
            let _ = error.to_string();
        }
    }
    let truncated = CloseReason::truncated(text);
    let kept = truncated.as_str();
    assert!(kept.len() <= MAX_CLOSE_REASON_BYTES);
    assert!(text.starts_with(kept));
    if text.len() <= MAX_CLOSE_REASON_BYTES {
        assert_eq!(kept, text);
    } else {
        // The longest prefix that ends on a character boundary: a UTF-8 character is at most
        // four bytes, so at most three bytes short of the limit.
        assert!(
            kept.len() > MAX_CLOSE_REASON_BYTES - 4,
            "kept {} bytes",
            kept.len()
        );
    }
    assert_eq!(CloseReason::new(kept).as_ref(), Ok(&truncated));
}
