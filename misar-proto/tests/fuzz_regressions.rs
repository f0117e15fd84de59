//! Inputs found by the fuzz targets (`fuzz/`), replayed against the core's public API so that
//! `cargo test` keeps them covered without libFuzzer.
//!
//! Each test names the target and the input it came from. When a target finds a crash, the
//! minimised input goes here as a test (marked `#[ignore = "bug: ..."]` until the fix lands).

use std::time::{Duration, Instant};

use misar_proto::auth::AccountId;
use misar_proto::close::CloseCode;
use misar_proto::event::{InboxEvent, decode_campaign, decode_inbox};
use misar_proto::handshake::{self, HandshakeConfig, Step};
use misar_proto::message::Message;
use misar_proto::server::{
    CloseCause, Ending, ServerConfig, ServerOutput, ServerSession, SessionState,
};

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// `event_decode`: an unknown type whose object holds a number beyond `f64`
/// (`1e400`). It is valid JSON (RFC 8259 sets no range), so the frame is kept as an unknown
/// event — on both channels, byte for byte — even though `serde_json::Value` would refuse to
/// hold it; re-encoding writes it back unchanged and it decodes to the same value.
#[test]
fn unknown_event_with_out_of_range_number_is_kept_verbatim() {
    let frame = br#"{"type":"campaign_star~ed","campaignId":"c","total":1e400}"#;
    let Ok(InboxEvent::Unknown(unknown)) = decode_inbox(frame) else {
        panic!("not kept as unknown: {:?}", decode_inbox(frame));
    };
    assert_eq!(unknown.kind, "campaign_star~ed");
    assert_eq!(unknown.raw.as_ref(), frame);
    let event = InboxEvent::Unknown(unknown);
    let encoded = event.encode();
    assert_eq!(encoded.bytes().as_ref(), frame);
    assert_eq!(decode_inbox(encoded.bytes()), Ok(event));
    assert!(decode_campaign(frame).is_ok());
    // A known type with the same number is refused, as §2.4 requires of a count.
    assert!(decode_inbox(br#"{"type":"campaign_started","campaignId":"c","campaignName":"n","total":1e400,"startedAt":"2026-05-27T10:15:00Z"}"#).is_err());
}

/// `server_session`: the empty input, i.e. every setting zero (ping interval, pong timeout,
/// close grace, queue bounds, message size, burst, refill). The session must still run: a
/// ping interval clamped to 1 ms, and a shutdown that ends within its (zero) close grace.
#[test]
fn all_zero_server_config_still_shuts_down() {
    let start = origin();
    let head = http::Request::get("/mail/ws/inbox")
        .header("authorization", "Bearer msk_zero")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let Step::NeedsAuthentication(question) = handshake::start(&HandshakeConfig::default(), &head)
    else {
        panic!("a well-formed request was refused");
    };
    let Step::Accepted(accepted) = question.authenticated(AccountId::from("acct")) else {
        panic!("inbox not accepted");
    };
    let config = ServerConfig {
        ping_interval: Duration::ZERO,
        pong_timeout: Duration::ZERO,
        close_grace: Duration::ZERO,
        max_queued_events: 0,
        max_queued_bytes: 0,
        max_client_message: 0,
        client_message_burst: 0,
        client_message_refill: Duration::ZERO,
    };
    let mut session = ServerSession::new(accepted, config, start);
    assert_eq!(session.config().ping_interval, Duration::from_millis(1));
    assert_eq!(
        session.poll_timeout(),
        Some(start + Duration::from_millis(1))
    );

    session.shutdown(start);
    let Some(ServerOutput::Transmit(Message::Close(Some(frame)))) = session.poll_output() else {
        panic!("no close frame");
    };
    assert_eq!(frame.code, CloseCode::GoingAway);
    assert_eq!(session.poll_output(), None);
    // A zero grace is due at once: the driver's next wake-up ends the session.
    assert_eq!(session.poll_timeout(), Some(start));
    session.handle_timeout(start);
    assert_eq!(session.poll_output(), Some(ServerOutput::DropTransport));
    let Some(ServerOutput::Closed(summary)) = session.poll_output() else {
        panic!("not closed");
    };
    assert_eq!(summary.cause, CloseCause::Shutdown);
    assert_eq!(summary.ending, Ending::GraceExpired);
    assert_eq!(session.state(), SessionState::Closed);
    assert_eq!(session.poll_timeout(), None);
}
