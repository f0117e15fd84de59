//! Unit tests of the server session, driven by hand with virtual time. The session-pair tests
//! (client and server together) live in `tests/pair_*.rs`.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::auth::{AccountId, CredentialSource};
use crate::event::{EncodedEvent, EventClass};
use crate::route::{CampaignId, Channel};

fn origin() -> Instant {
    crate::testing::virtual_epoch()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn accepted(channel: Channel) -> Accepted {
    Accepted::for_tests(AccountId::from("acct"), channel, CredentialSource::Header)
}

fn campaign() -> Channel {
    Channel::Campaign(CampaignId::new("c-1").unwrap())
}

fn session(config: ServerConfig, t0: Instant) -> ServerSession {
    ServerSession::new(accepted(campaign()), config, t0)
}

fn event(text: &str, class: EventClass) -> EncodedEvent {
    EncodedEvent::from_parts_for_tests(Bytes::copy_from_slice(text.as_bytes()), class)
}

fn drain(session: &mut ServerSession) -> Vec<ServerOutput> {
    std::iter::from_fn(|| session.poll_output()).collect()
}

fn close_code(output: &ServerOutput) -> Option<u16> {
    match output {
        ServerOutput::Transmit(Message::Close(Some(frame))) => Some(frame.code.as_u16()),
        _ => None,
    }
}

fn texts(outputs: &[ServerOutput]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            ServerOutput::Transmit(Message::Text(b)) => Some(String::from_utf8_lossy(b).into()),
            _ => None,
        })
        .collect()
}

fn summary(outputs: &[ServerOutput]) -> &CloseSummary {
    match outputs.last() {
        Some(ServerOutput::Closed(summary)) => summary,
        other => panic!("expected Closed last, got {other:?}"),
    }
}

fn peer_close(code: Option<u16>) -> Incoming {
    Incoming::Close(ReceivedClose {
        code,
        reason: Bytes::new(),
    })
}

#[test]
fn defaults_match_the_contract() {
    let c = ServerConfig::default();
    assert_eq!(c.ping_interval, secs(30));
    assert_eq!(c.pong_timeout, secs(30));
    assert_eq!(c.close_grace, secs(5));
    assert_eq!(c.max_client_message, 4096);
    assert_eq!((c.max_queued_events, c.max_queued_bytes), (256, 1 << 20));
}

#[test]
fn getters_expose_the_capability() {
    let t0 = origin();
    let s = session(ServerConfig::default(), t0);
    assert_eq!(s.account().map(AccountId::as_str), Some("acct"));
    assert_eq!(s.channel(), Some(&campaign()));
    assert_eq!(s.campaign().map(CampaignId::as_str), Some("c-1"));
    assert_eq!(s.credential_source(), Some(CredentialSource::Header));
    assert_eq!(s.state(), SessionState::Open);
    assert_eq!(s.close_cause(), None);
}

#[test]
fn first_ping_after_one_interval_then_on_schedule() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), Some(t0 + secs(30)));
    // Early wake-ups do nothing.
    s.handle_timeout(t0 + secs(29));
    assert!(drain(&mut s).is_empty());
    for k in 1..=5u64 {
        let due = s.poll_timeout().unwrap();
        assert_eq!(due, t0 + secs(30 * k));
        s.handle_timeout(due);
        assert_eq!(
            drain(&mut s),
            [ServerOutput::Transmit(Message::Ping(Bytes::new()))]
        );
        s.handle_message(
            Incoming::Pong(Bytes::new()),
            due + Duration::from_millis(20),
        );
    }
}

#[test]
fn the_pong_deadline_is_set_by_a_ping_and_cleared_by_a_pong_or_the_close() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    assert_eq!(s.pong_deadline(), None, "no ping sent yet");
    s.handle_timeout(t0 + secs(30));
    drain(&mut s);
    assert_eq!(s.pong_deadline(), Some(t0 + secs(60)));
    s.handle_message(Incoming::Pong(Bytes::new()), t0 + secs(31));
    assert_eq!(s.pong_deadline(), None);
    s.handle_timeout(t0 + secs(60));
    drain(&mut s);
    assert_eq!(s.pong_deadline(), Some(t0 + secs(90)));
    s.shutdown(t0 + secs(61));
    assert_eq!(s.pong_deadline(), None, "closing: the heartbeat is over");
}

#[test]
fn late_driver_gets_one_ping_not_a_burst() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.handle_timeout(t0 + secs(3600));
    let pings = drain(&mut s);
    assert_eq!(pings.len(), 1);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(3630)));
}

#[test]
fn silent_peer_gets_1001_at_ping_plus_timeout_then_drop_after_grace() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.handle_timeout(t0 + secs(30));
    drain(&mut s);
    // With interval == timeout, the deadline coincides with the next ping: close wins.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(60)));
    s.handle_timeout(t0 + secs(60));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(close_code(&out[0]), Some(1001));
    assert_eq!(s.state(), SessionState::Closing);
    assert_eq!(s.close_cause(), Some(CloseCause::HeartbeatTimeout));
    assert_eq!(s.poll_timeout(), Some(t0 + secs(65)));
    s.handle_timeout(t0 + secs(64));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(t0 + secs(65));
    let out = drain(&mut s);
    assert_eq!(out[0], ServerOutput::DropTransport);
    let sum = summary(&out);
    assert_eq!(sum.ending, Ending::GraceExpired);
    assert_eq!(sum.sent_code, Some(CloseCode::GoingAway));
    assert_eq!(s.state(), SessionState::Closed);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn shorter_timeout_closes_before_the_next_ping() {
    let t0 = origin();
    let config = ServerConfig {
        ping_interval: secs(30),
        pong_timeout: secs(10),
        ..ServerConfig::default()
    };
    let mut s = session(config, t0);
    s.handle_timeout(t0 + secs(30));
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(40)));
    s.handle_timeout(t0 + secs(40));
    assert_eq!(close_code(&drain(&mut s)[0]), Some(1001));
}

#[test]
fn any_pong_counts_and_a_late_pong_after_close_does_not_reopen() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.handle_timeout(t0 + secs(30));
    drain(&mut s);
    // A pong with an unrelated payload counts.
    s.handle_message(
        Incoming::Pong(Bytes::from_static(b"whatever")),
        t0 + secs(59),
    );
    s.handle_timeout(t0 + secs(60));
    assert_eq!(drain(&mut s).len(), 1); // the next ping, not a close
    assert_eq!(s.state(), SessionState::Open);
    s.handle_timeout(t0 + secs(90));
    assert_eq!(close_code(&drain(&mut s)[0]), Some(1001));
    s.handle_message(Incoming::Pong(Bytes::new()), t0 + secs(91));
    assert_eq!(s.state(), SessionState::Closing);
    assert!(drain(&mut s).is_empty());
}

#[test]
fn ping_is_answered_with_the_latest_payload() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.handle_message(Incoming::Ping(Bytes::from_static(b"a")), t0);
    s.handle_message(Incoming::Ping(Bytes::from_static(b"b")), t0);
    assert_eq!(
        drain(&mut s),
        [ServerOutput::Transmit(Message::Pong(Bytes::from_static(
            b"b"
        )))]
    );
}

#[test]
fn oversized_ping_is_a_protocol_error() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.handle_message(Incoming::Ping(Bytes::from(vec![0; 125])), t0);
    assert_eq!(drain(&mut s).len(), 1);
    s.handle_message(Incoming::Ping(Bytes::from(vec![0; 126])), t0);
    assert_eq!(close_code(&drain(&mut s)[0]), Some(1002));
}

#[test]
fn client_message_size_limit_is_inclusive() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.handle_message(Incoming::Text(Bytes::from(vec![b'x'; 4096])), t0);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.state(), SessionState::Open);
    s.handle_message(Incoming::Binary(Bytes::from(vec![0; 4097])), t0);
    let out = drain(&mut s);
    assert_eq!(close_code(&out[0]), Some(1009));
    assert_eq!(s.close_cause(), Some(CloseCause::MessageTooBig));
}

#[test]
fn flood_closes_with_1008_but_pongs_are_free() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    for _ in 0..1000 {
        s.handle_message(Incoming::Pong(Bytes::new()), t0);
    }
    for _ in 0..16 {
        s.handle_message(Incoming::Text(Bytes::from_static(b"hi")), t0);
    }
    assert_eq!(s.state(), SessionState::Open);
    s.handle_message(Incoming::Text(Bytes::from_static(b"hi")), t0);
    assert_eq!(close_code(&drain(&mut s)[0]), Some(1008));
    assert_eq!(s.close_cause(), Some(CloseCause::TooManyMessages));
}

#[test]
fn steady_slow_messages_are_fine() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    for i in 0..10_000 {
        s.handle_message(Incoming::Text(Bytes::from_static(b"hi")), t0 + secs(i));
    }
    assert_eq!(s.state(), SessionState::Open);
}

#[test]
fn peer_close_is_echoed_then_dropped() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.enqueue(event("e", EventClass::Ordinary), t0).unwrap();
    s.handle_message(peer_close(Some(4000)), t0);
    let out = drain(&mut s);
    assert_eq!(close_code(&out[0]), Some(4000));
    assert_eq!(out[1], ServerOutput::DropTransport);
    let sum = summary(&out);
    assert_eq!(sum.cause, CloseCause::PeerClosed);
    assert_eq!(sum.ending, Ending::Handshake);
    assert_eq!(sum.unsent_events, 1);
    assert_eq!(sum.received.as_ref().and_then(|r| r.code), Some(4000));
    assert_eq!(sum.sent_code.map(CloseCode::as_u16), Some(4000));
    assert_eq!(sum.decided_code, None, "an echo is no decision");
    assert_eq!(out.len(), 3);
}

#[test]
fn the_decided_code_is_reported_when_the_frame_never_went_out() {
    let t0 = origin();
    let config = ServerConfig {
        max_queued_events: 1,
        ..ServerConfig::default()
    };
    let mut s = session(config, t0);
    s.enqueue(event("a", EventClass::Ordinary), t0).unwrap();
    assert!(s.enqueue(event("b", EventClass::Ordinary), t0).is_err());
    // The socket is full: the transport dies before the 1013 can be written.
    s.handle_transport_closed(t0);
    let out = drain(&mut s);
    let sum = summary(&out);
    assert_eq!(sum.cause, CloseCause::SlowConsumer);
    assert!(!sum.close_sent);
    assert_eq!(sum.sent_code, None);
    assert_eq!(sum.decided_code, Some(CloseCode::TryAgainLater));
}

#[test]
fn forbidden_close_codes_are_answered_with_1002_and_codeless_with_codeless() {
    for bad in [1005, 1006, 1015, 999, 2000, 5000] {
        let t0 = origin();
        let mut s = session(ServerConfig::default(), t0);
        s.handle_message(peer_close(Some(bad)), t0);
        assert_eq!(close_code(&drain(&mut s)[0]), Some(1002), "code {bad}");
    }
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.handle_message(peer_close(None), t0);
    let out = drain(&mut s);
    assert_eq!(out[0], ServerOutput::Transmit(Message::Close(None)));
    assert_eq!(summary(&out).sent_code, None);
    assert!(summary(&out).close_sent);
}

#[test]
fn our_close_then_reply_completes_the_handshake_and_ignores_the_rest() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.shutdown(t0);
    assert_eq!(close_code(&drain(&mut s)[0]), Some(1001));
    // Data and pings after our close are ignored (no pong is sent after a close).
    s.handle_message(Incoming::Ping(Bytes::new()), t0 + secs(1));
    s.handle_message(Incoming::Text(Bytes::from(vec![0; 100_000])), t0 + secs(1));
    assert!(drain(&mut s).is_empty());
    s.handle_message(peer_close(Some(1001)), t0 + secs(2));
    let out = drain(&mut s);
    assert_eq!(out[0], ServerOutput::DropTransport);
    assert_eq!(summary(&out).ending, Ending::Handshake);
    assert_eq!(summary(&out).cause, CloseCause::Shutdown);
    // Closed: everything is ignored, nothing comes out.
    s.handle_message(peer_close(Some(1000)), t0 + secs(3));
    s.handle_timeout(t0 + secs(100));
    s.handle_transport_closed(t0 + secs(101));
    s.shutdown(t0 + secs(102));
    assert_eq!(
        s.enqueue(event("x", EventClass::Ordinary), t0),
        Err(EnqueueError::Closing)
    );
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn crossing_closes_complete_without_a_second_frame() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.shutdown(t0);
    // The peer's close arrives before ours went out: ours is the answer.
    s.handle_message(peer_close(Some(1000)), t0);
    let out = drain(&mut s);
    assert_eq!(close_code(&out[0]), Some(1001));
    assert_eq!(out[1], ServerOutput::DropTransport);
    assert_eq!(summary(&out).ending, Ending::Handshake);
    assert_eq!(out.len(), 3);
}

#[test]
fn transport_closed_ends_silently() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.enqueue(event("e", EventClass::Ordinary), t0).unwrap();
    s.handle_transport_closed(t0 + secs(1));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1, "{out:?}");
    let sum = summary(&out);
    assert_eq!(sum.cause, CloseCause::TransportClosed);
    assert_eq!(sum.ending, Ending::TransportClosed);
    assert!(!sum.close_sent);
    assert_eq!(sum.unsent_events, 1);
}

#[test]
fn transport_closed_while_closing_skips_the_frame_and_the_drop() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.shutdown(t0);
    s.handle_transport_closed(t0);
    let out = drain(&mut s);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(summary(&out).ending, Ending::TransportClosed);
    assert!(!summary(&out).close_sent);
}

#[test]
fn events_flow_in_order_after_control_frames() {
    let t0 = origin();
    let mut s = ServerSession::new(accepted(Channel::Inbox), ServerConfig::default(), t0);
    for name in ["a", "b", "c"] {
        s.enqueue(event(name, EventClass::Ordinary), t0).unwrap();
    }
    s.handle_message(Incoming::Ping(Bytes::from_static(b"p")), t0);
    assert_eq!((s.queued_events(), s.queued_bytes()), (3, 3));
    let out = drain(&mut s);
    assert_eq!(
        out[0],
        ServerOutput::Transmit(Message::Pong(Bytes::from_static(b"p")))
    );
    assert_eq!(texts(&out), ["a", "b", "c"]);
    assert_eq!((s.queued_events(), s.queued_bytes()), (0, 0));
    assert_eq!(s.events_sent(), 3);
}

#[test]
fn encoded_bytes_are_shared_not_copied() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    let e = event("shared", EventClass::Ordinary);
    s.enqueue(e.clone(), t0).unwrap();
    match s.poll_output() {
        Some(ServerOutput::Transmit(Message::Text(bytes))) => {
            assert_eq!(bytes.as_ptr(), e.bytes().as_ptr())
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn terminal_event_is_sent_then_1000() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.enqueue(event("p1", EventClass::Progress), t0).unwrap();
    s.enqueue(event("done", EventClass::Terminal), t0).unwrap();
    assert_eq!(
        s.enqueue(event("p2", EventClass::Progress), t0),
        Err(EnqueueError::AfterTerminal)
    );
    assert_eq!(s.state(), SessionState::Open);
    s.handle_timeout(t0 + secs(2));
    let out = drain(&mut s);
    assert_eq!(texts(&out), ["p1", "done"]);
    assert_eq!(close_code(&out[2]), Some(1000));
    assert_eq!(s.close_cause(), Some(CloseCause::Finished));
    // The grace counts from the latest instant the session was given.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(7)));
}

#[test]
fn overflow_closes_1013_and_frees_the_queue() {
    let t0 = origin();
    let config = ServerConfig {
        max_queued_events: 4,
        ..ServerConfig::default()
    };
    let mut s = session(config, t0);
    for i in 0..4 {
        s.enqueue(event(&format!("o{i}"), EventClass::Ordinary), t0)
            .unwrap();
    }
    // Progress coalesces but still needs a slot of its own.
    assert_eq!(
        s.enqueue(event("p", EventClass::Progress), t0),
        Err(EnqueueError::Overflow {
            events: 4,
            bytes: 8
        })
    );
    assert_eq!((s.queued_events(), s.queued_bytes()), (0, 0));
    let out = drain(&mut s);
    assert_eq!(texts(&out), Vec::<String>::new());
    assert_eq!(close_code(&out[0]), Some(1013));
    assert_eq!(s.close_cause(), Some(CloseCause::SlowConsumer));
    s.handle_timeout(t0 + secs(5));
    let out = drain(&mut s);
    assert_eq!(summary(&out).unsent_events, 4);
}

#[test]
fn byte_bound_overflow() {
    let t0 = origin();
    let config = ServerConfig {
        max_queued_bytes: 10,
        ..ServerConfig::default()
    };
    let mut s = session(config, t0);
    s.enqueue(event("0123456789", EventClass::Ordinary), t0)
        .unwrap();
    assert!(matches!(
        s.enqueue(event("x", EventClass::Ordinary), t0),
        Err(EnqueueError::Overflow { .. })
    ));
}

#[test]
fn progress_is_coalesced_while_the_transport_is_busy() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    for i in 0..1000 {
        s.enqueue(event(&format!("p{i}"), EventClass::Progress), t0)
            .unwrap();
    }
    assert_eq!(s.queued_events(), 1);
    assert_eq!(texts(&drain(&mut s)), ["p999"]);
}

#[test]
fn shutdown_discards_the_queue_and_is_idempotent() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.enqueue(event("a", EventClass::Ordinary), t0).unwrap();
    s.shutdown(t0);
    s.shutdown(t0);
    s.close(CloseFrame::new(CloseCode::InternalError), t0);
    assert_eq!(s.revoke(CloseCode::Unauthorized, t0), Ok(()));
    let out = drain(&mut s);
    let closes: Vec<_> = out.iter().filter_map(close_code).collect();
    assert_eq!(closes, [1001]);
    assert!(texts(&out).is_empty());
}

#[test]
fn revoke_accepts_only_4401_and_4403() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    for code in [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::TryAgainLater,
    ] {
        assert_eq!(s.revoke(code, t0), Err(NotARevocationCode { code }));
    }
    assert_eq!(s.state(), SessionState::Open);
    s.enqueue(event("secret", EventClass::Ordinary), t0)
        .unwrap();
    s.revoke(CloseCode::Forbidden, t0).unwrap();
    let out = drain(&mut s);
    assert!(texts(&out).is_empty(), "nothing reaches a revoked client");
    assert_eq!(close_code(&out[0]), Some(4403));
    assert_eq!(s.close_cause(), Some(CloseCause::Revoked));
}

#[test]
fn application_close_sends_its_frame() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    let frame = CloseFrame {
        code: CloseCode::InternalError,
        reason: CloseReason::new("db down").unwrap(),
    };
    s.close(frame.clone(), t0);
    assert_eq!(
        drain(&mut s),
        [ServerOutput::Transmit(Message::Close(Some(frame)))]
    );
}

#[test]
fn nothing_is_sent_while_closing_except_the_close() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.handle_timeout(t0 + secs(30)); // a ping becomes due ...
    s.handle_message(Incoming::Ping(Bytes::new()), t0 + secs(30)); // ... and a pong
    s.shutdown(t0 + secs(30)); // ... but the close was decided before the drain
    let out = drain(&mut s);
    assert_eq!(close_code(&out[0]), Some(1001));
    assert_eq!(out.len(), 1);
}

fn rejection(code: u16) -> CloseAfterUpgrade {
    use crate::handshake::{self, HandshakeConfig, RejectAction, RejectionStyle, Step};
    let config = HandshakeConfig::default().with_rejection_style(RejectionStyle::CloseAfterUpgrade);
    let uri = if code == 4401 {
        "/mail/ws/inbox?token=bad"
    } else {
        "/mail/ws/campaigns/c1?token=msk_key"
    };
    let head = http::Request::get(uri).body(()).unwrap().into_parts().0;
    let rejected = match handshake::start(&config, &head) {
        Step::Rejected(rejected) => rejected,
        Step::NeedsAuthentication(q) => match q.authenticated(AccountId::from("a")) {
            Step::NeedsOwnership(q) => q.deny(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    match rejected.action() {
        RejectAction::UpgradeThenClose(close) => close,
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejected_session_only_sends_its_code() {
    for code in [4401, 4403] {
        let t0 = origin();
        let mut s = ServerSession::rejected(rejection(code), ServerConfig::default(), t0);
        assert_eq!(s.state(), SessionState::Closing);
        assert_eq!(s.account(), None);
        assert_eq!(
            s.enqueue(event("x", EventClass::Ordinary), t0),
            Err(EnqueueError::Closing)
        );
        s.handle_message(Incoming::Ping(Bytes::new()), t0);
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        assert_eq!(close_code(&out[0]), Some(code));
        assert_eq!(s.poll_timeout(), Some(t0 + secs(5)));
        s.handle_message(peer_close(Some(code)), t0 + secs(1));
        let out = drain(&mut s);
        assert_eq!(out[0], ServerOutput::DropTransport);
        assert_eq!(summary(&out).cause, CloseCause::Rejected);
        assert_eq!(summary(&out).ending, Ending::Handshake);
    }
}

#[test]
fn rejected_session_drops_after_grace_when_unanswered() {
    let t0 = origin();
    let mut s = ServerSession::rejected(rejection(4401), ServerConfig::default(), t0);
    drain(&mut s);
    s.handle_timeout(t0 + secs(5));
    let out = drain(&mut s);
    assert_eq!(out[0], ServerOutput::DropTransport);
    assert_eq!(summary(&out).ending, Ending::GraceExpired);
}

#[test]
fn grace_expiry_before_the_close_went_out_drops_without_sending() {
    let t0 = origin();
    let mut s = session(ServerConfig::default(), t0);
    s.shutdown(t0);
    // The driver could not write (full socket) until after the grace.
    s.handle_timeout(t0 + secs(5));
    let out = drain(&mut s);
    assert_eq!(out[0], ServerOutput::DropTransport);
    assert!(!summary(&out).close_sent);
    assert_eq!(out.len(), 2);
}

#[test]
fn absurd_durations_do_not_panic() {
    let t0 = origin();
    let config = ServerConfig {
        ping_interval: Duration::MAX,
        pong_timeout: Duration::MAX,
        close_grace: Duration::MAX,
        client_message_refill: Duration::MAX,
        ..ServerConfig::default()
    };
    let mut s = session(config, t0);
    assert_eq!(s.poll_timeout(), None);
    s.handle_message(Incoming::Text(Bytes::new()), t0);
    s.shutdown(t0);
    assert_eq!(close_code(&drain(&mut s)[0]), Some(1001));

    let config = ServerConfig {
        ping_interval: Duration::ZERO,
        pong_timeout: Duration::ZERO,
        close_grace: Duration::ZERO,
        client_message_refill: Duration::ZERO,
        client_message_burst: 0,
        max_queued_events: 0,
        max_queued_bytes: 0,
        max_client_message: 0,
    };
    let mut s = session(config, t0);
    // A zero interval is clamped so the driver never spins.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(1)));
    assert!(s.enqueue(event("x", EventClass::Ordinary), t0).is_err());
}

#[test]
fn clock_going_backwards_is_tolerated() {
    let t0 = origin() + secs(100);
    let mut s = session(ServerConfig::default(), t0);
    s.handle_timeout(t0 + secs(30));
    drain(&mut s);
    s.handle_message(Incoming::Pong(Bytes::new()), t0 - secs(50));
    s.handle_timeout(t0);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.state(), SessionState::Open);
}

#[test]
fn an_idle_session_is_small() {
    // §5: a few KiB per idle connection at most. The session itself is a few hundred bytes,
    // and its queue allocates nothing until an event waits in it.
    assert!(std::mem::size_of::<ServerSession>() <= 1024);
    let s = session(ServerConfig::default(), origin());
    assert_eq!(s.queue.slots_capacity(), 0);
}

#[test]
fn transport_violations_close_with_the_contract_codes() {
    use crate::message::{ReceivedClose, Violation};
    for (violation, cause, code) in [
        (
            Violation::MessageTooBig,
            CloseCause::MessageTooBig,
            CloseCode::MessageTooBig,
        ),
        (
            Violation::Protocol,
            CloseCause::ProtocolError,
            CloseCode::ProtocolError,
        ),
        (
            Violation::InvalidUtf8,
            CloseCause::InvalidPayload,
            CloseCode::InvalidPayload,
        ),
    ] {
        let t0 = origin();
        let mut s = session(ServerConfig::default(), t0);
        s.handle_violation(violation, t0);
        assert_eq!(s.close_cause(), Some(cause));
        assert_eq!(
            s.poll_output(),
            Some(ServerOutput::Transmit(Message::Close(Some(
                CloseFrame::new(code)
            ))))
        );
        // A second violation while closing changes nothing; the peer's close completes it.
        s.handle_violation(Violation::Protocol, t0);
        s.handle_message(
            Incoming::Close(ReceivedClose {
                code: Some(code.as_u16()),
                reason: Bytes::new(),
            }),
            t0,
        );
        assert_eq!(s.poll_output(), Some(ServerOutput::DropTransport));
        let Some(ServerOutput::Closed(summary)) = s.poll_output() else {
            panic!("not closed")
        };
        assert_eq!(summary.cause, cause);
        assert_eq!(summary.sent_code, Some(code));
    }
}

// ----- §2.11: an opted-in session -----

mod resume {
    use super::*;
    use crate::resume::{Epoch, ResumeFrame, ResumeRequest};

    fn opted_in(t0: Instant) -> ServerSession {
        let accepted = accepted(campaign()).with_resume(Some(ResumeRequest::New));
        ServerSession::new(accepted, ServerConfig::default(), t0)
    }

    fn at(text: &str, class: EventClass, offset: u64) -> EncodedEvent {
        event(text, class).with_offset(offset)
    }

    fn frame(offset: u64, recovered: bool) -> ResumeFrame {
        ResumeFrame {
            epoch: Epoch::new("e").unwrap(),
            offset,
            recovered,
        }
    }

    #[test]
    fn nothing_is_sent_before_the_resume_frame_and_the_seam_has_no_duplicate() {
        let t0 = origin();
        let mut s = opted_in(t0);
        assert!(!s.resume_started(), "pending until the decision");
        // Live events arrive while the decision is pending (a broker reading its history).
        s.enqueue(at(r#"{"type":"x","n":3}"#, EventClass::Ordinary, 3), t0)
            .unwrap();
        s.enqueue(at(r#"{"type":"x","n":4}"#, EventClass::Ordinary, 4), t0)
            .unwrap();
        assert!(
            texts(&drain(&mut s)).is_empty(),
            "held until the resume frame"
        );
        // The replay (2..=3) overlaps the live events at 3.
        let replay = [
            at(r#"{"type":"x","n":2}"#, EventClass::Ordinary, 2),
            at(r#"{"type":"x","n":3}"#, EventClass::Ordinary, 3),
        ];
        s.start_resume(&frame(1, true), replay, None, t0).unwrap();
        assert!(s.resume_started());
        // A late copy of 4 from the live channel, then 5.
        s.enqueue(at(r#"{"type":"x","n":4}"#, EventClass::Ordinary, 4), t0)
            .unwrap();
        s.enqueue(at(r#"{"type":"x","n":5}"#, EventClass::Ordinary, 5), t0)
            .unwrap();
        assert_eq!(
            texts(&drain(&mut s)),
            vec![
                r#"{"type":"resume","epoch":"e","offset":1,"recovered":true}"#,
                r#"{"type":"x","n":2,"offset":2}"#,
                r#"{"type":"x","n":3,"offset":3}"#,
                r#"{"type":"x","n":4,"offset":4}"#,
                r#"{"type":"x","n":5,"offset":5}"#,
            ]
        );
        assert_eq!(
            s.start_resume(&frame(1, true), [], None, t0),
            Err(ResumeStartError::AlreadyStarted)
        );
    }

    #[test]
    fn a_replay_passes_the_queue_bound_and_coalesces_progress() {
        let t0 = origin();
        let config = ServerConfig {
            max_queued_events: 2,
            ..ServerConfig::default()
        };
        let accepted = accepted(campaign()).with_resume(Some(ResumeRequest::New));
        let mut s = ServerSession::new(accepted, config, t0);
        let replay = [
            at(r#"{"type":"progress","sent":1}"#, EventClass::Progress, 1),
            at(r#"{"type":"other"}"#, EventClass::Ordinary, 2),
            at(r#"{"type":"progress","sent":2}"#, EventClass::Progress, 3),
            at(r#"{"type":"progress","sent":3}"#, EventClass::Progress, 4),
            at(r#"{"type":"completed"}"#, EventClass::Terminal, 5),
        ];
        s.start_resume(&frame(0, true), replay, None, t0).unwrap();
        assert_eq!(
            s.enqueue(at(r#"{"type":"late"}"#, EventClass::Ordinary, 6), t0),
            Err(EnqueueError::AfterTerminal)
        );
        let out = drain(&mut s);
        assert_eq!(
            texts(&out),
            vec![
                r#"{"type":"resume","epoch":"e","offset":0,"recovered":true}"#,
                // Superseded by a later replayed progress: left out (§2.11 allows it).
                r#"{"type":"other","offset":2}"#,
                r#"{"type":"progress","sent":3,"offset":4}"#,
                r#"{"type":"completed","offset":5}"#,
            ]
        );
        assert!(out.iter().any(|o| close_code(o) == Some(1000)));
    }

    #[test]
    fn the_late_joiner_event_is_kept_whatever_its_offset() {
        let t0 = origin();
        let mut s = opted_in(t0);
        let first = at(r#"{"type":"progress","sent":7}"#, EventClass::Progress, 7);
        s.start_resume(&frame(9, false), [], Some(first), t0)
            .unwrap();
        s.enqueue(
            at(r#"{"type":"progress","sent":8}"#, EventClass::Progress, 8),
            t0,
        )
        .unwrap();
        s.enqueue(at(r#"{"type":"x"}"#, EventClass::Ordinary, 10), t0)
            .unwrap();
        assert_eq!(
            texts(&drain(&mut s)),
            vec![
                r#"{"type":"resume","epoch":"e","offset":9,"recovered":false}"#,
                r#"{"type":"progress","sent":7,"offset":7}"#,
                r#"{"type":"x","offset":10}"#,
            ]
        );
    }

    #[test]
    fn a_plain_session_cannot_be_started() {
        let t0 = origin();
        let mut s = session(ServerConfig::default(), t0);
        assert_eq!(
            s.start_resume(&frame(0, true), [], None, t0),
            Err(ResumeStartError::NotOptedIn)
        );
        s.enqueue(event(r#"{"type":"x"}"#, EventClass::Ordinary), t0)
            .unwrap();
        assert_eq!(texts(&drain(&mut s)), vec![r#"{"type":"x"}"#]);
    }
}
