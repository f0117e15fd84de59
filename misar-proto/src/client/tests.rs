//! Unit tests of the client session, driven by hand with virtual time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use super::*;
use crate::close::{CloseCode, Disconnect, Fatal, Pace};
use crate::event::{CampaignEvent, InboxEvent};
use crate::route::CampaignId;

fn origin() -> Instant {
    crate::testing::virtual_epoch()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A session that does not opt in to §2.11: the tests of `mod resume` opt in.
fn config() -> ClientConfig {
    let mut config = ClientConfig::new(
        "wss://api.example.com/mail/ws",
        ApiKey::parse("msk_client_key_9876").unwrap(),
    );
    config.resume = false;
    config
}

/// The jitter seed of the sessions whose delays the tests do not look at.
const SEED: u64 = 42;

fn campaign() -> Channel {
    Channel::Campaign(CampaignId::new("c-1").unwrap())
}

/// A session whose jitter always picks the top of the window, so delays are exact.
fn client(channel: Channel) -> ClientSession {
    let config = config();
    let backoff = Backoff::with_random(config.backoff, Box::new(|| u64::MAX));
    ClientSession::with_backoff(config, channel, backoff)
}

fn open(channel: Channel, now: Instant) -> ClientSession {
    let mut c = client(channel);
    c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", now)
        .unwrap();
    c
}

fn events(c: &mut ClientSession) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn close_msg(code: Option<u16>) -> Incoming {
    Incoming::Close(ReceivedClose {
        code,
        reason: Bytes::new(),
    })
}

fn text(s: &str) -> Incoming {
    Incoming::Text(Bytes::copy_from_slice(s.as_bytes()))
}

const PROGRESS: &str = r#"{"type":"progress","campaignId":"c-1","sent":1,"total":9,"delivered":1,"bounced":0,"opened":0}"#;
const FAILED: &str = r#"{"type":"failed","campaignId":"c-1","error":"smtp down"}"#;
const EMAIL: &str = r#"{"type":"email_received","from":"a@b.c","subject":"hi","receivedAt":"2026-05-27T10:15:00Z"}"#;

fn disconnected(c: &mut ClientSession) -> (Disconnect, ClientOutcome) {
    match events(c).pop() {
        Some(ClientEvent::Disconnected {
            disconnect,
            outcome,
        }) => (disconnect, outcome),
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

#[test]
fn fresh_session_is_idle_with_no_timer() {
    let c = client(Channel::Inbox);
    assert_eq!(c.state(), ClientState::Idle);
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(
        c.handshake_request().unwrap().uri(),
        "wss://api.example.com/mail/ws/inbox"
    );
}

#[test]
fn switching_protocols_opens_and_arms_liveness() {
    let t0 = origin();
    let c = open(Channel::Inbox, t0);
    assert_eq!(c.state(), ClientState::Open);
    assert_eq!(c.poll_timeout(), Some(t0 + secs(60)));
}

#[test]
fn forbidden_handshake_is_fatal_with_the_body() {
    let t0 = origin();
    let mut c = client(campaign());
    let body = br#"{"error":"forbidden","closeCode":4403,"message":"campaign not owned"}"#;
    let failure = c
        .handle_handshake_response(StatusCode::FORBIDDEN, body, t0)
        .unwrap_err();
    assert_eq!(failure.status(), 403);
    assert!(failure.is_fatal());
    assert_eq!(
        failure.outcome(),
        ClientOutcome::Stop(Fatal::HandshakeForbidden)
    );
    assert_eq!(failure.rejection().unwrap().close_code, Some(4403));
    assert_eq!(c.state(), ClientState::Done);
    assert_eq!(c.handshake_request().unwrap_err(), RequestError::Ended);
    assert!(!failure.to_string().contains("msk_"));
    // Nothing revives a finished session.
    assert!(
        c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", t0)
            .is_err()
    );
    assert_eq!(c.state(), ClientState::Done);
}

#[test]
fn forbidden_without_a_body_is_still_fatal() {
    let t0 = origin();
    let mut c = client(Channel::Inbox);
    let failure = c
        .handle_handshake_response(StatusCode::FORBIDDEN, b"nope", t0)
        .unwrap_err();
    assert!(failure.is_fatal());
    assert_eq!(failure.rejection(), None);
}

#[test]
fn server_errors_back_off_and_grow() {
    let t0 = origin();
    let mut c = client(Channel::Inbox);
    let mut delays = Vec::new();
    for _ in 0..4 {
        let failure = c
            .handle_handshake_response(StatusCode::SERVICE_UNAVAILABLE, b"", t0)
            .unwrap_err();
        assert!(!failure.is_fatal());
        match failure.outcome() {
            ClientOutcome::Reconnect { delay, pace } => {
                assert_eq!(pace, Pace::Normal);
                delays.push(delay);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.state(), ClientState::Idle);
    }
    assert_eq!(delays, [ms(500), ms(1000), ms(2000), ms(4000)]);
    assert_eq!(
        c.handle_connect_failed(t0),
        ClientOutcome::Reconnect {
            delay: ms(8000),
            pace: Pace::Normal
        }
    );
}

#[test]
fn too_many_requests_backs_off_longer() {
    let t0 = origin();
    let mut c = client(Channel::Inbox);
    let failure = c
        .handle_handshake_response(StatusCode::TOO_MANY_REQUESTS, b"", t0)
        .unwrap_err();
    assert_eq!(
        failure.outcome(),
        ClientOutcome::Reconnect {
            delay: ms(2000),
            pace: Pace::Longer
        }
    );
}

#[test]
fn events_are_decoded_for_the_channel() {
    let t0 = origin();
    let mut c = open(Channel::Inbox, t0);
    c.handle_message(text(EMAIL), t0);
    c.handle_message(text(PROGRESS), t0); // a campaign event on the inbox
    c.handle_message(text("{not json"), t0);
    c.handle_message(Incoming::Binary(Bytes::from_static(b"\x00\x01")), t0);
    let got = events(&mut c);
    assert!(matches!(
        &got[0],
        ClientEvent::Event(Event::Inbox(InboxEvent::EmailReceived(e))) if e.from == "a@b.c"
    ));
    assert!(matches!(
        &got[1],
        ClientEvent::Invalid(InvalidMessage::Decode(DecodeError::WrongChannel { .. }))
    ));
    assert!(matches!(
        &got[2],
        ClientEvent::Invalid(InvalidMessage::Decode(DecodeError::Syntax { .. }))
    ));
    assert_eq!(
        got[3],
        ClientEvent::Invalid(InvalidMessage::Binary { len: 2 })
    );
    assert_eq!(c.state(), ClientState::Open);
}

#[test]
fn oversized_event_is_reported_not_fatal() {
    let t0 = origin();
    let mut cfg = config();
    cfg.max_message = 64;
    let mut c = ClientSession::new(cfg, Channel::Inbox, SEED);
    c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", t0)
        .unwrap();
    c.handle_message(text(EMAIL), t0);
    assert!(matches!(
        events(&mut c)[..],
        [ClientEvent::Invalid(InvalidMessage::Decode(
            DecodeError::TooLarge { .. }
        ))]
    ));
    assert_eq!(c.state(), ClientState::Open);
}

#[test]
fn pings_are_answered_unless_the_transport_does_it() {
    let t0 = origin();
    let mut c = open(Channel::Inbox, t0);
    c.handle_message(Incoming::Ping(Bytes::from_static(b"x")), t0);
    assert_eq!(
        c.poll_transmit(),
        Some(Message::Pong(Bytes::from_static(b"x")))
    );
    assert_eq!(c.poll_transmit(), None);

    let mut cfg = config();
    cfg.answer_pings = false;
    let mut c = ClientSession::new(cfg, Channel::Inbox, SEED);
    c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", t0)
        .unwrap();
    c.handle_message(Incoming::Ping(Bytes::new()), t0);
    assert_eq!(c.poll_transmit(), None);
    // It still counts as a sign of life.
    assert_eq!(c.poll_timeout(), Some(t0 + secs(60)));
}

#[test]
fn silent_server_is_declared_dead_at_the_window() {
    let t0 = origin();
    let mut c = open(Channel::Inbox, t0);
    c.handle_message(Incoming::Ping(Bytes::new()), t0 + secs(30));
    assert_eq!(c.poll_timeout(), Some(t0 + secs(90)));
    c.handle_timeout(t0 + secs(89));
    assert_eq!(c.state(), ClientState::Open);
    c.handle_timeout(t0 + secs(90));
    let (disconnect, outcome) = disconnected(&mut c);
    assert_eq!(disconnect, Disconnect::Dropped);
    assert!(matches!(outcome, ClientOutcome::Reconnect { .. }));
    assert_eq!(c.state(), ClientState::Idle);
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.poll_transmit(), None, "a dead server gets no close");
}

#[test]
fn server_close_is_echoed_and_advised() {
    let cases = [
        (
            Channel::Inbox,
            Some(1001),
            Some(1001),
            Disconnect::Closed(CloseCode::GoingAway),
        ),
        (
            Channel::Inbox,
            Some(1006),
            Some(1002),
            Disconnect::ClosedWithoutCode,
        ),
        (Channel::Inbox, None, None, Disconnect::ClosedWithoutCode),
    ];
    for (channel, code, reply, expected) in cases {
        let t0 = origin();
        let mut c = open(channel, t0);
        c.handle_message(close_msg(code), t0);
        let (disconnect, outcome) = disconnected(&mut c);
        assert_eq!(disconnect, expected);
        assert!(matches!(outcome, ClientOutcome::Reconnect { .. }));
        match c.poll_transmit() {
            Some(Message::Close(frame)) => {
                assert_eq!(frame.map(|f| f.code.as_u16()), reply)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.poll_transmit(), None);
    }
}

#[test]
fn revocation_stops_and_slow_consumer_backs_off_longer() {
    let t0 = origin();
    let mut c = open(Channel::Inbox, t0);
    c.handle_message(close_msg(Some(4401)), t0);
    assert_eq!(
        disconnected(&mut c).1,
        ClientOutcome::Stop(Fatal::Unauthorized)
    );
    assert_eq!(c.state(), ClientState::Done);

    let mut c = open(Channel::Inbox, t0);
    c.handle_message(close_msg(Some(1013)), t0);
    assert_eq!(
        disconnected(&mut c).1,
        ClientOutcome::Reconnect {
            delay: ms(2000),
            pace: Pace::Longer
        }
    );
}

#[test]
fn normal_close_after_a_terminal_event_finishes_a_campaign() {
    let t0 = origin();
    let mut c = open(campaign(), t0);
    c.handle_message(text(PROGRESS), t0);
    c.handle_message(text(FAILED), t0);
    c.handle_message(close_msg(Some(1000)), t0 + ms(10));
    assert_eq!(
        disconnected(&mut c),
        (Disconnect::Closed(CloseCode::Normal), ClientOutcome::Finish)
    );
    assert_eq!(c.state(), ClientState::Done);
    // The close is echoed, and no further connection is made.
    assert!(matches!(
        c.poll_transmit(),
        Some(Message::Close(Some(f))) if f.code == CloseCode::Normal
    ));
    assert_eq!(c.handshake_request().unwrap_err(), RequestError::Ended);
}

#[test]
fn normal_close_without_a_terminal_event_reconnects_a_campaign_with_backoff() {
    // A proxy or load balancer closes with 1000 too: that is no finish.
    let t0 = origin();
    let mut c = open(campaign(), t0);
    c.handle_message(text(PROGRESS), t0);
    c.handle_message(close_msg(Some(1000)), t0 + ms(10));
    assert_eq!(
        disconnected(&mut c),
        (
            Disconnect::Closed(CloseCode::Normal),
            ClientOutcome::Reconnect {
                delay: ms(500),
                pace: Pace::Normal
            }
        )
    );
    assert_eq!(c.state(), ClientState::Idle);
    assert!(!c.saw_terminal_event());
    // The next attempt asks for the same campaign; the backoff grows like the inbox's.
    assert_eq!(
        c.handshake_request().unwrap().uri(),
        "wss://api.example.com/mail/ws/campaigns/c-1"
    );
    c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", t0 + secs(1))
        .unwrap();
    c.handle_message(close_msg(Some(1000)), t0 + secs(1));
    assert_eq!(
        disconnected(&mut c).1,
        ClientOutcome::Reconnect {
            delay: ms(1000),
            pace: Pace::Normal
        }
    );
    // Then the campaign's end arrives on a later connection and finishes it.
    c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", t0 + secs(3))
        .unwrap();
    c.handle_message(text(FAILED), t0 + secs(3));
    c.handle_message(close_msg(Some(1000)), t0 + secs(3));
    assert_eq!(disconnected(&mut c).1, ClientOutcome::Finish);
}

#[test]
fn normal_close_reconnects_the_inbox() {
    let t0 = origin();
    let mut c = open(Channel::Inbox, t0);
    c.handle_message(close_msg(Some(1000)), t0);
    assert_eq!(
        disconnected(&mut c).1,
        ClientOutcome::Reconnect {
            delay: ms(500),
            pace: Pace::Normal
        }
    );
}

#[test]
fn terminal_event_then_drop_still_finishes() {
    let t0 = origin();
    let mut c = open(campaign(), t0);
    c.handle_message(text(PROGRESS), t0);
    assert!(!c.saw_terminal_event());
    c.handle_message(text(FAILED), t0);
    assert!(c.saw_terminal_event());
    c.handle_transport_closed(t0);
    let got = events(&mut c);
    assert!(matches!(
        &got[1],
        ClientEvent::Event(Event::Campaign(CampaignEvent::Failed(_)))
    ));
    assert_eq!(
        got[2],
        ClientEvent::Disconnected {
            disconnect: Disconnect::Dropped,
            outcome: ClientOutcome::Finish
        }
    );
    assert_eq!(c.state(), ClientState::Done);
}

#[test]
fn terminal_event_without_server_close_makes_the_client_close() {
    let t0 = origin();
    let mut c = open(campaign(), t0);
    c.handle_message(text(FAILED), t0);
    events(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + secs(5)));
    c.handle_timeout(t0 + secs(5));
    assert_eq!(c.state(), ClientState::Closing);
    assert!(matches!(
        c.poll_transmit(),
        Some(Message::Close(Some(f))) if f.code == CloseCode::Normal
    ));
    assert_eq!(c.poll_timeout(), Some(t0 + secs(10)));
    c.handle_timeout(t0 + secs(10));
    assert_eq!(
        disconnected(&mut c),
        (Disconnect::Dropped, ClientOutcome::Finish)
    );
}

#[test]
fn client_close_waits_for_the_answer() {
    let t0 = origin();
    let mut c = open(Channel::Inbox, t0);
    c.handle_message(Incoming::Ping(Bytes::new()), t0);
    c.close(t0);
    assert!(matches!(
        c.poll_transmit(),
        Some(Message::Close(Some(f))) if f.code == CloseCode::Normal && f.reason.as_str().is_empty()
    ));
    assert_eq!(c.poll_transmit(), None, "no pong after our close");
    // Events arriving after our close are dropped.
    c.handle_message(text(EMAIL), t0);
    assert!(events(&mut c).is_empty());
    c.handle_message(close_msg(Some(1000)), t0 + secs(1));
    assert_eq!(
        disconnected(&mut c),
        (Disconnect::Closed(CloseCode::Normal), ClientOutcome::Finish)
    );
    assert_eq!(
        c.poll_transmit(),
        None,
        "the answer to our close is not answered"
    );
    assert_eq!(c.state(), ClientState::Done);
}

#[test]
fn close_while_idle_finishes_at_once() {
    let t0 = origin();
    let mut c = client(Channel::Inbox);
    c.close(t0);
    assert_eq!(c.state(), ClientState::Done);
    assert_eq!(c.last_outcome(), Some(ClientOutcome::Finish));
    assert_eq!(c.poll_transmit(), None);
}

#[test]
fn backoff_resets_after_a_healthy_connection() {
    let t0 = origin();
    let mut c = client(Channel::Inbox);
    for _ in 0..3 {
        c.handle_connect_failed(t0);
    }
    assert_eq!(c.backoff().attempts(), 3);
    // A connection that dies before one ping interval does not reset the backoff ...
    c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", t0)
        .unwrap();
    c.handle_transport_closed(t0 + secs(29));
    assert_eq!(
        disconnected(&mut c).1,
        ClientOutcome::Reconnect {
            delay: ms(4000),
            pace: Pace::Normal
        }
    );
    // ... one that stayed up for it does.
    c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", t0 + secs(40))
        .unwrap();
    c.handle_message(Incoming::Ping(Bytes::new()), t0 + secs(60));
    c.handle_transport_closed(t0 + secs(70));
    assert_eq!(
        disconnected(&mut c).1,
        ClientOutcome::Reconnect {
            delay: ms(500),
            pace: Pace::Normal
        }
    );
}

#[test]
fn seeded_jitter_is_reproducible_and_bounded() {
    let t0 = origin();
    let run = |seed| {
        let mut c = ClientSession::new(config(), Channel::Inbox, seed);
        (0..10)
            .map(|_| match c.handle_connect_failed(t0) {
                ClientOutcome::Reconnect { delay, .. } => delay,
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    assert!(run(3).iter().all(|d| *d <= secs(30)));
}

#[test]
fn jitter_comes_from_the_seed_alone() {
    // No ambient randomness in the core: sessions given the same seed draw the same delays,
    // sessions given different seeds (almost always) differ.
    let t0 = origin();
    let draw = |seed| ClientSession::new(config(), Channel::Inbox, seed).handle_connect_failed(t0);
    let same: std::collections::HashSet<_> = (0..20).map(|_| draw(SEED)).collect();
    assert_eq!(same.len(), 1);
    let different: std::collections::HashSet<_> = (0..20).map(draw).collect();
    assert!(different.len() > 15, "{different:?}");
}

#[test]
fn inputs_while_idle_are_ignored() {
    let t0 = origin();
    let mut c = client(Channel::Inbox);
    c.handle_message(text(EMAIL), t0);
    c.handle_message(close_msg(Some(1001)), t0);
    c.handle_transport_closed(t0);
    c.handle_timeout(t0 + secs(1000));
    assert!(events(&mut c).is_empty());
    assert_eq!(c.poll_transmit(), None);
    assert_eq!(c.state(), ClientState::Idle);
}

#[test]
fn debug_hides_the_key_and_the_query() {
    let mut cfg = config();
    cfg.url = "wss://h/mail/ws?token=msk_leaked_secret".into();
    let text = format!("{cfg:?}");
    assert!(!text.contains("msk_client_key_9876"), "{text}");
    assert!(!text.contains("leaked"), "{text}");
    assert!(text.contains("wss://h/mail/ws"));
    let session = ClientSession::new(config(), Channel::Inbox, SEED);
    assert!(!format!("{session:?}").contains("msk_client_key_9876"));
}

#[test]
fn the_default_config_is_valid() {
    assert_eq!(config().validate(), Ok(()));
}

#[test]
fn each_config_rule_names_its_field() {
    use crate::config::ConfigProblem;
    type Edit = fn(&mut ClientConfig);
    let cases: [(Edit, &str); 6] = [
        (|c| c.ping_interval = Duration::ZERO, "ping_interval"),
        (|c| c.pong_timeout = Duration::ZERO, "pong_timeout"),
        (|c| c.close_grace = Duration::ZERO, "close_grace"),
        (|c| c.max_message = 0, "max_message"),
        (|c| c.backoff.base = Duration::ZERO, "backoff.base"),
        (|c| c.backoff.cap = Duration::ZERO, "backoff.cap"),
    ];
    for (edit, field) in cases {
        let mut c = config();
        edit(&mut c);
        let error = c.validate().unwrap_err();
        assert_eq!((error.field, error.problem), (field, ConfigProblem::Zero));
        assert!(!error.to_string().contains("msk_"), "{error}");
    }
    // The smallest accepted values.
    let mut c = config();
    c.ping_interval = Duration::from_nanos(1);
    c.pong_timeout = Duration::from_nanos(1);
    c.close_grace = Duration::from_nanos(1);
    c.max_message = 1;
    c.backoff.base = Duration::from_nanos(1);
    c.backoff.cap = Duration::from_nanos(1);
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn zero_ping_interval_would_reset_the_backoff_at_every_disconnect() {
    // Why `ping_interval` 0 is refused: a connection that opens and drops at once counts as
    // healthy, so the window never grows.
    let mut config = config();
    config.ping_interval = Duration::ZERO;
    let backoff = Backoff::with_random(config.backoff, Box::new(|| u64::MAX));
    let mut c = ClientSession::with_backoff(config, Channel::Inbox, backoff);
    let t0 = origin();
    for _ in 0..5 {
        c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", t0)
            .unwrap();
        c.handle_transport_closed(t0);
        let (_, outcome) = disconnected(&mut c);
        assert_eq!(
            outcome,
            ClientOutcome::Reconnect {
                delay: ms(500),
                pace: Pace::Normal
            }
        );
    }
}
fn with_retry_after(value: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_str(value).unwrap(),
    );
    headers
}

#[test]
fn retry_after_of_429_and_503_is_the_next_delay_capped_by_the_backoff_cap() {
    let t0 = origin();
    for status in [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let mut c = client(Channel::Inbox);
        let failure = c
            .handle_handshake_response_with_headers(status, &with_retry_after("7"), b"", t0)
            .unwrap_err();
        assert_eq!(failure.retry_after(), Some(secs(7)));
        assert!(matches!(
            failure.outcome(),
            ClientOutcome::Reconnect { delay, .. } if delay == secs(7)
        ));
        // The attempt counts: the window grew as after a drawn delay.
        assert_eq!(c.backoff().attempts(), 1);
        // Longer than the cap (30 s): the cap.
        let failure = c
            .handle_handshake_response_with_headers(status, &with_retry_after("3600"), b"", t0)
            .unwrap_err();
        assert!(matches!(
            failure.outcome(),
            ClientOutcome::Reconnect { delay, .. } if delay == secs(30)
        ));
        // Zero: at once.
        let failure = c
            .handle_handshake_response_with_headers(status, &with_retry_after("0"), b"", t0)
            .unwrap_err();
        assert!(matches!(
            failure.outcome(),
            ClientOutcome::Reconnect { delay, .. } if delay == Duration::ZERO
        ));
        // Without the header (or with a date): the drawn delay (the top of the window here).
        let failure = c
            .handle_handshake_response_with_headers(
                status,
                &with_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
                b"",
                t0,
            )
            .unwrap_err();
        assert_eq!(failure.retry_after(), None);
        let window = c.backoff().window(Pace::Longer).max(ms(1));
        let ClientOutcome::Reconnect { delay, .. } = failure.outcome() else {
            panic!("{failure:?}")
        };
        assert!(delay > secs(0) && delay <= secs(30) && window >= ms(1));
    }
}

#[test]
fn retry_after_is_ignored_on_other_statuses() {
    let t0 = origin();
    let mut c = client(Channel::Inbox);
    let failure = c
        .handle_handshake_response_with_headers(
            StatusCode::BAD_GATEWAY,
            &with_retry_after("20"),
            b"",
            t0,
        )
        .unwrap_err();
    assert_eq!(failure.retry_after(), None);
    // The first window of a normal pace: 500 ms.
    assert!(matches!(
        failure.outcome(),
        ClientOutcome::Reconnect { delay, .. } if delay == ms(500)
    ));
    let mut c = client(Channel::Inbox);
    let failure = c
        .handle_handshake_response_with_headers(
            StatusCode::FORBIDDEN,
            &with_retry_after("20"),
            b"",
            t0,
        )
        .unwrap_err();
    assert!(failure.is_fatal());
}

#[test]
fn subprotocol_style_request() {
    let mut config = config();
    config.auth = AuthStyle::Subprotocol;
    let c = ClientSession::new(config, Channel::Inbox, SEED);
    let request = c.handshake_request().unwrap();
    let offer = &request.headers()[http::header::SEC_WEBSOCKET_PROTOCOL];
    assert_eq!(offer, "misar.v1, misar.bearer.msk_client_key_9876");
    assert!(offer.is_sensitive());
    assert!(!format!("{request:?}").contains("msk_client_key_9876"));
}

mod resume {
    use super::*;
    use crate::resume::{Position, RESUME_HEADER, ResumeFrame};

    fn opted_in(channel: Channel) -> ClientSession {
        let mut config = config();
        config.resume = true;
        ClientSession::new(config, channel, SEED)
    }

    fn connect(c: &mut ClientSession, now: Instant) -> String {
        let request = c.handshake_request().unwrap();
        let value = request.headers()[RESUME_HEADER]
            .to_str()
            .unwrap()
            .to_owned();
        c.handle_handshake_response(StatusCode::SWITCHING_PROTOCOLS, b"", now)
            .unwrap();
        value
    }

    fn with_offset(event: &str, offset: u64) -> String {
        format!("{},\"offset\":{offset}}}", &event[..event.len() - 1])
    }

    #[test]
    fn the_default_opts_in_and_resumes_from_the_last_event_seen() {
        let now = origin();
        let mut c = ClientSession::new(
            ClientConfig::new("wss://h/ws", ApiKey::parse("msk_client_key_9876").unwrap()),
            Channel::Inbox,
            SEED,
        );
        assert!(c.config().resume);
        assert_eq!(c.resume_request(), Some(ResumeRequest::New));
        assert_eq!(connect(&mut c, now), "new");

        c.handle_message(
            text(r#"{"type":"resume","epoch":"e1","offset":7,"recovered":true}"#),
            now,
        );
        c.handle_message(text(&with_offset(EMAIL, 9)), now);
        c.handle_message(text(&with_offset(EMAIL, 12)), now);
        let frame = ResumeFrame {
            epoch: crate::resume::Epoch::new("e1").unwrap(),
            offset: 7,
            recovered: true,
        };
        assert_eq!(c.poll_event(), Some(ClientEvent::Resumed(frame)));
        assert_eq!(c.event_offset(), None);
        assert!(matches!(c.poll_event(), Some(ClientEvent::Event(_))));
        assert_eq!(c.event_offset(), Some(9));
        assert!(matches!(c.poll_event(), Some(ClientEvent::Event(_))));
        assert_eq!(c.event_offset(), Some(12));
        assert_eq!(c.position(), Some(&Position::parse("e1:12").unwrap()));

        c.handle_transport_closed(now);
        let _ = events(&mut c);
        assert_eq!(connect(&mut c, now + secs(1)), "e1:12");
    }

    #[test]
    fn recovered_false_is_reported_and_moves_the_position_to_the_latest() {
        let now = origin();
        let mut c = opted_in(Channel::Inbox);
        c.resume_from(Position::parse("old:40").unwrap());
        assert_eq!(connect(&mut c, now), "old:40");
        c.handle_message(
            text(r#"{"type":"resume","epoch":"e2","offset":3,"recovered":false}"#),
            now,
        );
        match events(&mut c).as_slice() {
            [ClientEvent::Resumed(frame)] => assert!(!frame.recovered),
            other => panic!("expected the not-recovered frame, got {other:?}"),
        }
        assert_eq!(c.position(), Some(&Position::parse("e2:3").unwrap()));
    }

    #[test]
    fn a_server_without_resume_is_reported_and_its_first_event_kept() {
        let now = origin();
        let mut c = opted_in(Channel::Inbox);
        c.resume_from(Position::parse("e1:5").unwrap());
        connect(&mut c, now);
        c.handle_message(text(EMAIL), now);
        // A later `offset` on a connection whose opt-in went unanswered is not a position.
        c.handle_message(text(&with_offset(EMAIL, 99)), now);
        let got = events(&mut c);
        assert_eq!(got[0], ClientEvent::ResumeUnanswered);
        assert!(matches!(got[1], ClientEvent::Event(_)));
        assert!(matches!(got[2], ClientEvent::Event(_)));
        assert_eq!(c.event_offset(), None);
        assert_eq!(c.position(), Some(&Position::parse("e1:5").unwrap()));
    }

    #[test]
    fn a_broken_resume_frame_is_invalid_and_unanswered() {
        let now = origin();
        let mut c = opted_in(Channel::Inbox);
        connect(&mut c, now);
        c.handle_message(
            text(r#"{"type":"resume","epoch":"bad epoch!","offset":1,"recovered":true}"#),
            now,
        );
        let got = events(&mut c);
        assert!(
            matches!(got[0], ClientEvent::Invalid(InvalidMessage::Resume(_))),
            "{got:?}"
        );
        assert_eq!(got[1], ClientEvent::ResumeUnanswered);
        assert_eq!(got.len(), 2);
        assert_eq!(c.position(), None);
        // A later resume frame is no answer: decoded as an event of an unknown type.
        c.handle_message(
            text(r#"{"type":"resume","epoch":"e","offset":1,"recovered":true}"#),
            now,
        );
        assert!(matches!(events(&mut c).as_slice(), [ClientEvent::Event(_)]));
        assert_eq!(c.position(), None);
    }

    #[test]
    fn a_bad_request_is_fatal() {
        let now = origin();
        let mut c = opted_in(Channel::Inbox);
        c.handshake_request().unwrap();
        let body = br#"{"error":"bad_request","message":"several resume values"}"#;
        let failure = c
            .handle_handshake_response(StatusCode::BAD_REQUEST, body, now)
            .unwrap_err();
        assert!(matches!(failure.outcome(), ClientOutcome::Stop(_)));
        assert_eq!(c.state(), ClientState::Done);
    }

    #[test]
    fn turning_resume_off_sends_no_header_and_reads_no_frame() {
        let now = origin();
        let mut c = open(Channel::Inbox, now);
        assert_eq!(c.resume_request(), None);
        let mut idle = client(Channel::Inbox);
        let request = idle.handshake_request().unwrap();
        assert!(request.headers().get(RESUME_HEADER).is_none());
        c.handle_message(text(&with_offset(EMAIL, 4)), now);
        assert!(matches!(events(&mut c).as_slice(), [ClientEvent::Event(_)]));
        assert_eq!(c.event_offset(), None);
        idle.resume_from(Position::parse("e:1").unwrap());
        assert_eq!(idle.resume_request(), None);
    }
}
