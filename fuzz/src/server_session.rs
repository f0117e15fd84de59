//! `server_session`: a [`ServerSession`] driven by a structured sequence of client messages,
//! application commands and time jumps.
//!
//! Input: a [`ServerSetup`] then [`ServerOp`]s until the input ends (at most [`MAX_OPS`]), in
//! `arbitrary`'s layout. By default the harness drains every output after each operation, as
//! the driving loop says; [`ServerOp::Hold`] stops that (a transport that is not writable) and
//! [`ServerOp::Drain`] then drains a few outputs at a time.
//!
//! A model of what the session was told runs alongside and checks, whatever the sequence:
//! - at most one close frame is transmitted, nothing (no text, ping, pong) after it, and
//!   nothing at all after [`ServerOutput::Closed`], which comes exactly once, last;
//! - the close frame matches the first reason to close (1001 shutdown or heartbeat, 1013
//!   overflow, 1009 too big, 1008 too many, 1002 protocol, 1000 after a terminal event,
//!   4401/4403 revocation or rejection, the application's frame, the echo of the peer's);
//! - events go out in publish order, only superseded `progress` events missing (§2.7); the
//!   queue never exceeds its bounds and `enqueue` answers as the model predicts;
//! - a ping is answered with the latest ping's payload, before any event; pings are at most
//!   one per `ping_interval`; the heartbeat closes only after `pong_timeout` without a pong;
//!   the close grace ends the session only once it elapsed;
//! - `DropTransport` at most once, never after the transport ended; the summary agrees with
//!   what was output;
//! - after a full drain, `poll_timeout` is `Some` while the session is not closed, and
//!   handling the timeout it names moves it past `now` (no busy loop);
//! - a session shut down and given its close grace always reaches `Closed`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use misar_proto::auth::{AccountId, CredentialSource};
use misar_proto::close::{CloseCode, CloseFrame, CloseReason, MAX_CLOSE_REASON_BYTES};
use misar_proto::event::{EncodedEvent, EventClass};
use misar_proto::handshake::{
    self, Accepted, CloseAfterUpgrade, HandshakeConfig, RejectAction, RejectionStyle, Step,
};
use misar_proto::message::{Incoming, Message, ReceivedClose};
use misar_proto::route::{CampaignId, Channel};
use misar_proto::server::{
    CloseCause, CloseSummary, Ending, EnqueueError, ServerConfig, ServerOutput, ServerSession,
    SessionState,
};

use crate::samples;
use crate::{encode_enum, encode_struct};

/// Operations per input, at most (keeps every input fast).
pub const MAX_OPS: usize = 512;

/// What the session serves.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// An accepted inbox request.
    Inbox,
    /// An accepted campaign request.
    Campaign,
    /// A `CloseAfterUpgrade` rejection with 4401.
    Rejected4401,
    /// A `CloseAfterUpgrade` rejection with 4403.
    Rejected4403,
}
encode_enum!(Serve, 4; Inbox => 0, Campaign => 1, Rejected4401 => 2, Rejected4403 => 3);

/// The session's configuration, in small units so the fuzzer crosses every bound.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ServerSetup {
    pub serve: Serve,
    pub ping_interval_ms: u16,
    pub pong_timeout_ms: u16,
    pub close_grace_ms: u16,
    pub max_queued_events: u8,
    pub max_queued_bytes: u16,
    pub max_client_message: u16,
    pub burst: u8,
    pub refill_ms: u16,
}
encode_struct!(ServerSetup {
    serve,
    ping_interval_ms,
    pong_timeout_ms,
    close_grace_ms,
    max_queued_events,
    max_queued_bytes,
    max_client_message,
    burst,
    refill_ms,
});

impl ServerSetup {
    /// The defaults of §2.5–§2.8, scaled down to milliseconds where they are times.
    pub fn typical(serve: Serve) -> Self {
        Self {
            serve,
            ping_interval_ms: 30_000,
            pong_timeout_ms: 30_000,
            close_grace_ms: 5_000,
            max_queued_events: 16,
            max_queued_bytes: 4096,
            max_client_message: 4096,
            burst: 16,
            refill_ms: 1000,
        }
    }

    fn config(&self) -> ServerConfig {
        ServerConfig {
            ping_interval: ms(self.ping_interval_ms),
            pong_timeout: ms(self.pong_timeout_ms),
            close_grace: ms(self.close_grace_ms),
            max_queued_events: usize::from(self.max_queued_events),
            max_queued_bytes: usize::from(self.max_queued_bytes),
            max_client_message: usize::from(self.max_client_message),
            client_message_burst: u32::from(self.burst),
            client_message_refill: ms(self.refill_ms),
        }
    }
}

fn ms(value: u16) -> Duration {
    Duration::from_millis(u64::from(value))
}

/// How the queue treats an enqueued event.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Class {
    Ordinary,
    Progress,
    Terminal,
}
encode_enum!(Class, 3; Ordinary => 0, Progress => 1, Terminal => 2);

/// The unit of a time jump.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Unit {
    Millis,
    Seconds,
    Minutes,
}
encode_enum!(Unit, 3; Millis => 0, Seconds => 1, Minutes => 2);

impl Unit {
    /// `amount` of this unit.
    pub fn duration(self, amount: u16) -> Duration {
        let amount = u64::from(amount);
        match self {
            Unit::Millis => Duration::from_millis(amount),
            Unit::Seconds => Duration::from_secs(amount),
            Unit::Minutes => Duration::from_secs(amount * 60),
        }
    }
}

/// One step of the scenario.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum ServerOp {
    /// A client text message of `len` bytes.
    Text {
        /// Payload length.
        len: u16,
    },
    /// A client binary message of `len` bytes.
    Binary {
        /// Payload length.
        len: u16,
    },
    /// A client ping with a `len`-byte payload.
    Ping {
        /// Payload length.
        len: u8,
    },
    /// A client pong.
    Pong {
        /// Payload length.
        len: u8,
    },
    /// The client's close frame.
    PeerClose {
        /// Its code, if any (any `u16`, valid or not).
        code: Option<u16>,
        /// Its reason's length.
        reason_len: u8,
    },
    /// The transport ended.
    TransportClosed,
    /// The application enqueues an event of `len` bytes and `class`.
    Enqueue {
        /// Queue class.
        class: Class,
        /// Payload length (at least the few bytes of a sequence number).
        len: u16,
    },
    /// The application enqueues a real encoded event (one per type, see [`samples::events`]).
    EnqueueEvent {
        /// Which one (modulo the number of samples).
        sample: u8,
    },
    /// Graceful shutdown.
    Shutdown,
    /// Revocation with `code` (only 4401 and 4403 are accepted).
    Revoke {
        /// The code asked for.
        code: u16,
    },
    /// The application closes with its own frame.
    Close {
        /// The code (a code that may not be sent becomes 1000).
        code: u16,
        /// The reason's length (truncated to 123 bytes).
        reason_len: u8,
    },
    /// Time passes, nothing is called.
    Advance {
        /// How much.
        amount: u16,
        /// In which unit.
        unit: Unit,
    },
    /// `handle_timeout(now)`.
    Timeout,
    /// Jump to `poll_timeout()` (if later than now), then `handle_timeout`.
    UntilDeadline,
    /// The next call is given a time `ms` earlier than now (a clock going backwards).
    Rewind {
        /// How much earlier.
        ms: u16,
    },
    /// Toggle holding outputs back (the transport is not writable).
    Hold,
    /// Drain at most `max` outputs (0: all).
    Drain {
        /// How many.
        max: u8,
    },
}
encode_enum!(ServerOp, 17;
    Text { len } => 0,
    Binary { len } => 1,
    Ping { len } => 2,
    Pong { len } => 3,
    PeerClose { code, reason_len } => 4,
    TransportClosed => 5,
    Enqueue { class, len } => 6,
    EnqueueEvent { sample } => 7,
    Shutdown => 8,
    Revoke { code } => 9,
    Close { code, reason_len } => 10,
    Advance { amount, unit } => 11,
    Timeout => 12,
    UntilDeadline => 13,
    Rewind { ms } => 14,
    Hold => 15,
    Drain { max } => 16,
);

/// Reads an input: the setup, then operations until the input ends.
pub fn parse(data: &[u8]) -> Option<(ServerSetup, Vec<ServerOp>)> {
    let mut u = Unstructured::new(data);
    let setup = ServerSetup::arbitrary(&mut u).ok()?;
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match ServerOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Some((setup, ops))
}

/// The target's body.
pub fn run(data: &[u8]) {
    if let Some((setup, ops)) = parse(data) {
        let _ = run_scenario(&setup, &ops);
    }
}

/// How a scenario went (for tests of the seeds themselves).
#[derive(Clone, Debug)]
pub struct ServerReport {
    /// The session's summary.
    pub summary: CloseSummary,
    /// Whether the scenario itself closed the session (rather than the final shutdown).
    pub closed_by_scenario: bool,
    /// Pings transmitted.
    pub pings: u64,
    /// Pongs transmitted.
    pub pongs: u64,
}

/// Runs a parsed scenario, checking every invariant.
pub fn run_scenario(setup: &ServerSetup, ops: &[ServerOp]) -> ServerReport {
    let mut harness = Harness::new(setup);
    for op in ops {
        harness.apply(op);
    }
    let closed_by_scenario = harness.closed.is_some();
    harness.finish();
    let Some(summary) = harness.closed.clone() else {
        panic!("finish() left the session open");
    };
    ServerReport {
        summary,
        closed_by_scenario,
        pings: harness.pings_sent,
        pongs: harness.pongs_sent,
    }
}

/// The `CloseAfterUpgrade` rejection with `code`, obtained through the public handshake.
fn rejection(code: u16) -> CloseAfterUpgrade {
    let config = HandshakeConfig::new().with_rejection_style(RejectionStyle::CloseAfterUpgrade);
    let head = |uri: &str, auth: Option<&str>| {
        let mut request = http::Request::get(uri);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        match request.body(()) {
            Ok(request) => request.into_parts().0,
            Err(e) => panic!("fixed request: {e}"),
        }
    };
    let rejected = if code == 4401 {
        match handshake::start(&config, &head("/mail/ws/inbox", None)) {
            Step::Rejected(rejected) => rejected,
            other => panic!("a request without credentials was not rejected: {other:?}"),
        }
    } else {
        let step = handshake::start(
            &config,
            &head("/mail/ws/campaigns/c-1", Some("Bearer msk_fuzz")),
        );
        let Step::NeedsAuthentication(question) = step else {
            panic!("a well-formed request was not asked about: {step:?}");
        };
        let Step::NeedsOwnership(question) = question.authenticated(AccountId::from("a")) else {
            panic!("a campaign request skipped the ownership question");
        };
        question.deny()
    };
    match rejected.action() {
        RejectAction::UpgradeThenClose(close) => {
            assert_eq!(close.code().as_u16(), code);
            close
        }
        other => panic!("CloseAfterUpgrade answered over HTTP: {other:?}"),
    }
}

/// What the model expects of the queue: the events not yet handed out, in order.
#[derive(Debug, Default)]
struct ModelQueue {
    events: VecDeque<(Bytes, EventClass)>,
    bytes: usize,
}

impl ModelQueue {
    fn has_progress(&self) -> Option<usize> {
        self.events
            .iter()
            .position(|(_, class)| *class == EventClass::Progress)
    }
}

struct Harness {
    session: ServerSession,
    setup: ServerSetup,
    config: ServerConfig,
    start: Instant,
    /// The driver's clock.
    now: Instant,
    /// The latest time given to the session (it never goes back).
    session_now: Instant,
    /// Subtracted from `now` for the next call.
    rewind: Duration,
    hold: bool,
    seq: u64,

    queue: ModelQueue,
    terminal_enqueued: bool,
    terminal_sent: bool,
    texts_sent: u64,
    pings_sent: u64,
    pongs_sent: u64,
    expected_pong: Option<Bytes>,
    last_pong: Instant,
    counted_messages: u64,
    too_big_seen: bool,
    bad_ping_seen: bool,

    /// Set when the model sees the session leave `Open`.
    decided: Option<Decision>,
    /// Inputs that decide a close, recorded when they arrive while open.
    first_peer_close: Option<Option<u16>>,
    first_app_frame: Option<CloseFrame>,
    first_revoke: Option<CloseCode>,
    shutdown_called: bool,

    close_sent: Option<Option<CloseFrame>>,
    peer_close_received: bool,
    transport_closed: bool,
    drop_seen: bool,
    closed: Option<CloseSummary>,
}

#[derive(Debug)]
struct Decision {
    cause: CloseCause,
    at: Instant,
    unsent: usize,
}

impl Harness {
    fn new(setup: &ServerSetup) -> Self {
        // Any instant will do as the origin of virtual time.
        let start = Instant::now();
        let config = setup.config();
        let session = match setup.serve {
            Serve::Inbox => ServerSession::new(
                Accepted::for_tests(
                    AccountId::from("acct"),
                    Channel::Inbox,
                    CredentialSource::Header,
                ),
                config.clone(),
                start,
            ),
            Serve::Campaign => {
                let campaign = match CampaignId::new("c-42") {
                    Ok(id) => id,
                    Err(e) => panic!("fixed campaign id: {e}"),
                };
                ServerSession::new(
                    Accepted::for_tests(
                        AccountId::from("acct"),
                        Channel::Campaign(campaign),
                        CredentialSource::Query,
                    ),
                    config.clone(),
                    start,
                )
            }
            Serve::Rejected4401 => ServerSession::rejected(rejection(4401), config.clone(), start),
            Serve::Rejected4403 => ServerSession::rejected(rejection(4403), config.clone(), start),
        };
        let rejected = matches!(setup.serve, Serve::Rejected4401 | Serve::Rejected4403);
        assert_eq!(session.account().is_none(), rejected);
        assert_eq!(session.channel().is_none(), rejected);
        // The session may clamp; the model uses what is in force.
        let in_force = session.config().clone();
        assert!(in_force.ping_interval >= Duration::from_millis(1));
        let mut harness = Self {
            session,
            setup: setup.clone(),
            config: in_force,
            start,
            now: start,
            session_now: start,
            rewind: Duration::ZERO,
            hold: false,
            seq: 0,
            queue: ModelQueue::default(),
            terminal_enqueued: false,
            terminal_sent: false,
            texts_sent: 0,
            pings_sent: 0,
            pongs_sent: 0,
            expected_pong: None,
            last_pong: start,
            counted_messages: 0,
            too_big_seen: false,
            bad_ping_seen: false,
            decided: None,
            first_peer_close: None,
            first_app_frame: None,
            first_revoke: None,
            shutdown_called: false,
            close_sent: None,
            peer_close_received: false,
            transport_closed: false,
            drop_seen: false,
            closed: None,
        };
        harness.observe();
        harness.drain_all();
        harness
    }

    /// The time to give the session for the next call.
    fn call_time(&mut self) -> Instant {
        let at = self
            .now
            .checked_sub(std::mem::take(&mut self.rewind))
            .unwrap_or(self.now);
        self.session_now = self.session_now.max(at);
        at
    }

    fn state(&self) -> SessionState {
        self.session.state()
    }

    fn apply(&mut self, op: &ServerOp) {
        let before = self.state();
        match *op {
            ServerOp::Text { len } | ServerOp::Binary { len } => {
                let payload = Bytes::from(vec![b'x'; usize::from(len)]);
                let message = match op {
                    ServerOp::Text { .. } => Incoming::Text(payload),
                    _ => Incoming::Binary(payload),
                };
                let at = self.call_time();
                self.session.handle_message(message, at);
                if before == SessionState::Open {
                    if usize::from(len) > self.config.max_client_message {
                        self.too_big_seen = true;
                        assert_eq!(self.session.close_cause(), Some(CloseCause::MessageTooBig));
                    } else {
                        self.counted_messages += 1;
                        self.check_counted();
                    }
                }
            }
            ServerOp::Ping { len } => {
                let payload = Bytes::from(vec![b'p'; usize::from(len)]);
                let at = self.call_time();
                self.session
                    .handle_message(Incoming::Ping(payload.clone()), at);
                if before == SessionState::Open {
                    if usize::from(len) > 125 {
                        self.bad_ping_seen = true;
                        assert_eq!(self.session.close_cause(), Some(CloseCause::ProtocolError));
                    } else {
                        self.counted_messages += 1;
                        self.check_counted();
                        if self.state() == SessionState::Open {
                            self.expected_pong = Some(payload);
                        }
                    }
                }
            }
            ServerOp::Pong { len } => {
                let at = self.call_time();
                self.session.handle_message(
                    Incoming::Pong(Bytes::from(vec![b'q'; usize::from(len)])),
                    at,
                );
                if before == SessionState::Open {
                    self.last_pong = self.session_now;
                    assert_eq!(
                        self.state(),
                        SessionState::Open,
                        "a pong closed the session"
                    );
                }
            }
            ServerOp::PeerClose { code, reason_len } => {
                let at = self.call_time();
                let received = ReceivedClose {
                    code,
                    reason: Bytes::from(vec![b'r'; usize::from(reason_len)]),
                };
                self.session.handle_message(Incoming::Close(received), at);
                match before {
                    SessionState::Open => {
                        self.first_peer_close = Some(code);
                        self.peer_close_received = true;
                        assert_eq!(self.session.close_cause(), Some(CloseCause::PeerClosed));
                    }
                    SessionState::Closing => self.peer_close_received = true,
                    _ => {}
                }
            }
            ServerOp::TransportClosed => {
                let at = self.call_time();
                self.session.handle_transport_closed(at);
                if before != SessionState::Closed {
                    self.transport_closed = true;
                }
                if before == SessionState::Open {
                    assert_eq!(
                        self.session.close_cause(),
                        Some(CloseCause::TransportClosed)
                    );
                }
            }
            ServerOp::Enqueue { class, len } => {
                self.seq += 1;
                let mut payload = format!("{:08}", self.seq).into_bytes();
                payload.resize(payload.len().max(usize::from(len)), b'.');
                let class = match class {
                    Class::Ordinary => EventClass::Ordinary,
                    Class::Progress => EventClass::Progress,
                    Class::Terminal => EventClass::Terminal,
                };
                self.enqueue(EncodedEvent::from_parts_for_tests(
                    Bytes::from(payload),
                    class,
                ));
            }
            ServerOp::EnqueueEvent { sample } => {
                let events = samples::encoded();
                let index = usize::from(sample) % events.len().max(1);
                if let Some(event) = events.get(index) {
                    self.enqueue(event.clone());
                }
            }
            ServerOp::Shutdown => {
                let at = self.call_time();
                self.session.shutdown(at);
                if before == SessionState::Open {
                    self.shutdown_called = true;
                    assert_eq!(self.session.close_cause(), Some(CloseCause::Shutdown));
                }
            }
            ServerOp::Revoke { code } => {
                let code = CloseCode::from_wire(code).unwrap_or(CloseCode::GoingAway);
                let revocation = matches!(code, CloseCode::Unauthorized | CloseCode::Forbidden);
                let cause_before = self.session.close_cause();
                // A refused revocation is a no-op, clock included: only an accepted one tells
                // the session the time.
                let session_now = self.session_now;
                let at = self.call_time();
                if !revocation {
                    self.session_now = session_now;
                }
                let result = self.session.revoke(code, at);
                assert_eq!(result.is_ok(), revocation, "revoke({code})");
                if !revocation {
                    assert_eq!(
                        self.state(),
                        before,
                        "a refused revocation changed the state"
                    );
                    assert_eq!(self.session.close_cause(), cause_before);
                } else if before == SessionState::Open {
                    self.first_revoke = Some(code);
                    assert_eq!(self.session.close_cause(), Some(CloseCause::Revoked));
                }
            }
            ServerOp::Close { code, reason_len } => {
                let code = CloseCode::from_wire(code).unwrap_or(CloseCode::Normal);
                let frame = CloseFrame {
                    code,
                    reason: CloseReason::truncated(&"why".repeat(usize::from(reason_len))),
                };
                let at = self.call_time();
                self.session.close(frame.clone(), at);
                if before == SessionState::Open {
                    self.first_app_frame = Some(frame);
                    assert_eq!(self.session.close_cause(), Some(CloseCause::Application));
                }
            }
            ServerOp::Advance { amount, unit } => {
                self.now = self
                    .now
                    .checked_add(unit.duration(amount))
                    .unwrap_or(self.now);
            }
            ServerOp::Timeout => self.timeout(),
            ServerOp::UntilDeadline => {
                if let Some(deadline) = self.session.poll_timeout() {
                    self.now = self.now.max(deadline);
                }
                self.timeout();
            }
            ServerOp::Rewind { ms: back } => self.rewind = ms(back),
            ServerOp::Hold => self.hold = !self.hold,
            ServerOp::Drain { max } => {
                if max == 0 {
                    self.drain_all();
                } else {
                    for _ in 0..max {
                        if !self.poll_one() {
                            break;
                        }
                    }
                }
            }
        }
        self.observe();
        if !self.hold {
            self.drain_all();
        }
    }

    fn check_counted(&self) {
        // Up to `burst` messages always pass; the limiter may only close after more.
        if self.session.close_cause() == Some(CloseCause::TooManyMessages) {
            assert!(
                self.counted_messages > u64::from(self.setup.burst),
                "rate limit hit after {} messages with a burst of {}",
                self.counted_messages,
                self.setup.burst
            );
        }
    }

    fn enqueue(&mut self, event: EncodedEvent) {
        let before = self.state();
        let at = self.call_time();
        let class = event.class();
        let bytes = event.bytes().clone();
        let result = self.session.enqueue(event, at);
        if before != SessionState::Open {
            assert_eq!(result, Err(EnqueueError::Closing));
            return;
        }
        if self.terminal_enqueued {
            assert_eq!(result, Err(EnqueueError::AfterTerminal));
            return;
        }
        let superseded = match class {
            EventClass::Progress => self.queue.has_progress(),
            _ => None,
        };
        let (events, total) = match superseded
            .and_then(|i| self.queue.events.get(i))
            .map(|(old, _)| old.len())
        {
            Some(old) => (
                self.queue.events.len(),
                self.queue.bytes - old + bytes.len(),
            ),
            None => (self.queue.events.len() + 1, self.queue.bytes + bytes.len()),
        };
        if events > self.config.max_queued_events || total > self.config.max_queued_bytes {
            assert_eq!(
                result,
                Err(EnqueueError::Overflow {
                    events: self.queue.events.len(),
                    bytes: self.queue.bytes,
                })
            );
            assert_eq!(self.session.close_cause(), Some(CloseCause::SlowConsumer));
            return;
        }
        assert_eq!(result, Ok(()), "enqueue refused within the bounds");
        if let Some(index) = superseded
            && let Some((old, _)) = self.queue.events.remove(index)
        {
            self.queue.bytes -= old.len();
        }
        self.queue.bytes += bytes.len();
        self.queue.events.push_back((bytes, class));
        self.terminal_enqueued = class == EventClass::Terminal;
    }

    fn timeout(&mut self) {
        let at = self.call_time();
        self.session.handle_timeout(at);
        self.observe();
        if self.hold {
            return;
        }
        self.drain_all();
        // A driver that handles the timeout it was given must not be asked again for the
        // same instant over and over (at most a couple of immediate follow-ups, e.g. a zero
        // close grace).
        for _ in 0..3 {
            match self.session.poll_timeout() {
                Some(deadline) if deadline <= self.session_now => {
                    let at = self.session_now;
                    self.session.handle_timeout(at);
                    self.observe();
                    self.drain_all();
                }
                _ => break,
            }
        }
        if let Some(deadline) = self.session.poll_timeout() {
            assert!(
                deadline > self.session_now,
                "busy loop: poll_timeout stays at or before now after handling it"
            );
        }
    }

    /// Notices the session leaving `Open` and checks the timing of time-driven closes.
    fn observe(&mut self) {
        let state = self.state();
        let queued = self.session.queued_events();
        assert!(queued <= self.config.max_queued_events);
        assert!(self.session.queued_bytes() <= self.config.max_queued_bytes);
        if self.decided.is_none() && state != SessionState::Open {
            let Some(cause) = self.session.close_cause() else {
                panic!("the session left Open without a cause");
            };
            self.decided = Some(Decision {
                cause,
                at: self.session_now,
                unsent: self.queue.events.len(),
            });
            self.queue = ModelQueue::default();
            self.expected_pong = None;
            match cause {
                CloseCause::HeartbeatTimeout => {
                    let timeout = self.config.pong_timeout;
                    assert!(
                        self.session_now >= self.last_pong + timeout,
                        "heartbeat timeout less than pong_timeout after the last pong"
                    );
                    assert!(
                        self.session_now >= self.start + self.config.ping_interval + timeout,
                        "heartbeat timeout before a ping could have gone unanswered"
                    );
                }
                CloseCause::TooManyMessages => {
                    assert!(self.counted_messages > u64::from(self.setup.burst));
                }
                CloseCause::MessageTooBig => assert!(self.too_big_seen),
                CloseCause::ProtocolError => assert!(self.bad_ping_seen),
                CloseCause::Finished => assert!(self.terminal_sent),
                CloseCause::Shutdown => assert!(self.shutdown_called),
                CloseCause::Revoked => assert!(self.first_revoke.is_some()),
                CloseCause::Application => assert!(self.first_app_frame.is_some()),
                CloseCause::PeerClosed => assert!(self.first_peer_close.is_some()),
                CloseCause::TransportClosed => assert!(self.transport_closed),
                CloseCause::Rejected => {
                    assert!(matches!(
                        self.setup.serve,
                        Serve::Rejected4401 | Serve::Rejected4403
                    ));
                }
                CloseCause::SlowConsumer => {}
                other => panic!("unexpected cause {other:?}"),
            }
        }
        if state != SessionState::Open {
            assert_eq!(queued, 0, "events queued after the close was decided");
            assert_eq!(self.session.queued_bytes(), 0);
        } else {
            assert_eq!(queued, self.queue.events.len());
            assert_eq!(self.session.queued_bytes(), self.queue.bytes);
        }
        assert_eq!(self.session.events_sent(), self.texts_sent);
        let elapsed = self.session_now.saturating_duration_since(self.start);
        let intervals = elapsed.as_nanos() / self.config.ping_interval.as_nanos().max(1);
        assert!(
            u128::from(self.pings_sent) <= intervals,
            "{} pings in {elapsed:?} with an interval of {:?}",
            self.pings_sent,
            self.config.ping_interval
        );
    }

    /// The close frame the first decision calls for.
    fn expected_close(&self, cause: CloseCause) -> Option<Option<CloseFrame>> {
        let frame = |code| Some(Some(CloseFrame::new(code)));
        match cause {
            CloseCause::HeartbeatTimeout | CloseCause::Shutdown => frame(CloseCode::GoingAway),
            CloseCause::Revoked => self.first_revoke.and_then(frame),
            CloseCause::Finished => frame(CloseCode::Normal),
            CloseCause::SlowConsumer => frame(CloseCode::TryAgainLater),
            CloseCause::MessageTooBig => frame(CloseCode::MessageTooBig),
            CloseCause::TooManyMessages => frame(CloseCode::PolicyViolation),
            CloseCause::ProtocolError => frame(CloseCode::ProtocolError),
            CloseCause::Application => self.first_app_frame.clone().map(Some),
            CloseCause::Rejected => match self.setup.serve {
                Serve::Rejected4401 => frame(CloseCode::Unauthorized),
                _ => frame(CloseCode::Forbidden),
            },
            CloseCause::PeerClosed => match self.first_peer_close {
                Some(None) => Some(None),
                Some(Some(raw)) => Some(Some(match CloseCode::from_wire(raw) {
                    Ok(code) => CloseFrame {
                        code,
                        reason: CloseReason::default(),
                    },
                    Err(_) => CloseFrame::new(CloseCode::ProtocolError),
                })),
                None => None,
            },
            // Nothing can be sent on a transport that is gone.
            _ => None,
        }
    }

    fn drain_all(&mut self) {
        let mut guard = 0;
        while self.poll_one() {
            guard += 1;
            // Outputs are bounded by the queue plus a few control messages.
            assert!(
                guard <= self.config.max_queued_events + 8,
                "poll_output does not run dry"
            );
        }
        if self.hold {
            return;
        }
        match self.state() {
            SessionState::Closed => assert_eq!(self.session.poll_timeout(), None),
            _ => assert!(
                self.session.poll_timeout().is_some(),
                "no timer set while {:?} after a full drain",
                self.state()
            ),
        }
    }

    /// Polls one output and checks it; `false` when there was none.
    fn poll_one(&mut self) -> bool {
        let before = self.state();
        let Some(output) = self.session.poll_output() else {
            return false;
        };
        assert!(self.closed.is_none(), "output after Closed: {output:?}");
        match output {
            ServerOutput::Transmit(message) => {
                assert!(
                    self.close_sent.is_none(),
                    "transmitted after the close frame: {message:?}"
                );
                match message {
                    Message::Text(payload) => {
                        assert_eq!(before, SessionState::Open, "text while {before:?}");
                        assert!(self.expected_pong.is_none(), "an event overtook the pong");
                        let Some((expected, class)) = self.queue.events.pop_front() else {
                            panic!("an event the model did not expect went out");
                        };
                        assert_eq!(payload, expected, "events out of publish order");
                        self.queue.bytes -= expected.len();
                        self.texts_sent += 1;
                        if class == EventClass::Terminal {
                            self.terminal_sent = true;
                            assert_eq!(
                                self.session.close_cause(),
                                Some(CloseCause::Finished),
                                "a terminal event must end the session"
                            );
                        }
                        self.observe();
                    }
                    Message::Ping(payload) => {
                        assert_eq!(before, SessionState::Open, "ping while {before:?}");
                        assert!(payload.len() <= 125);
                        self.pings_sent += 1;
                    }
                    Message::Pong(payload) => {
                        assert_eq!(before, SessionState::Open, "pong while {before:?}");
                        self.pongs_sent += 1;
                        let expected = self.expected_pong.take();
                        assert_eq!(Some(payload), expected, "pong without its ping");
                    }
                    Message::Close(frame) => {
                        assert_eq!(
                            before,
                            SessionState::Closing,
                            "close frame while {before:?}"
                        );
                        assert!(!self.transport_closed, "close frame on a dead transport");
                        if let Some(frame) = &frame {
                            assert!(frame.reason.as_str().len() <= MAX_CLOSE_REASON_BYTES);
                        }
                        let Some(decision) = &self.decided else {
                            panic!("close frame before any decision");
                        };
                        let expected = self.expected_close(decision.cause);
                        assert_eq!(
                            Some(&frame),
                            expected.as_ref(),
                            "close frame for {:?}",
                            decision.cause
                        );
                        self.close_sent = Some(frame);
                    }
                    other => panic!("the server transmitted {other:?}"),
                }
            }
            ServerOutput::DropTransport => {
                assert_eq!(before, SessionState::Closing);
                assert!(!self.drop_seen, "DropTransport twice");
                assert!(
                    !self.transport_closed,
                    "DropTransport after the transport ended"
                );
                self.drop_seen = true;
            }
            ServerOutput::Closed(summary) => {
                assert_eq!(before, SessionState::Closing);
                self.check_summary(&summary);
                self.closed = Some(summary);
                assert_eq!(self.state(), SessionState::Closed);
                assert_eq!(self.session.poll_timeout(), None);
                assert_eq!(self.session.poll_output(), None);
            }
            other => panic!("unexpected output {other:?}"),
        }
        true
    }

    fn check_summary(&self, summary: &CloseSummary) {
        let Some(decision) = &self.decided else {
            panic!("Closed without a decision");
        };
        assert_eq!(summary.cause, decision.cause);
        assert_eq!(summary.unsent_events, decision.unsent);
        assert_eq!(summary.events_sent, self.texts_sent);
        assert_eq!(summary.close_sent, self.close_sent.is_some());
        assert_eq!(
            summary.sent_code,
            self.close_sent.clone().flatten().map(|f| f.code)
        );
        if self.terminal_sent {
            assert_eq!(summary.cause, CloseCause::Finished);
        }
        match summary.ending {
            Ending::Handshake => {
                assert!(summary.close_sent && self.peer_close_received);
                assert!(summary.received.is_some());
            }
            Ending::TransportClosed => {
                assert!(self.transport_closed);
                assert!(!self.drop_seen);
            }
            Ending::GraceExpired => {
                assert!(
                    self.session_now >= decision.at + self.config.close_grace,
                    "grace ended early"
                );
            }
            other => panic!("unexpected ending {other:?}"),
        }
        if summary.ending != Ending::TransportClosed {
            assert!(
                self.drop_seen || self.transport_closed,
                "ended without dropping the transport"
            );
        }
        if summary.received.is_some() {
            assert!(self.peer_close_received);
        }
    }

    /// Shuts down whatever is left and lets the close grace pass: every session must end.
    fn finish(&mut self) {
        self.hold = false;
        self.rewind = Duration::ZERO;
        self.drain_all();
        if self.state() == SessionState::Closed {
            return;
        }
        if self.state() == SessionState::Open {
            self.shutdown_called = true;
        }
        let at = self.call_time();
        self.session.shutdown(at);
        self.observe();
        self.drain_all();
        self.now = self.session_now + self.config.close_grace;
        self.timeout();
        assert_eq!(
            self.state(),
            SessionState::Closed,
            "a shut-down session outlived its close grace"
        );
        assert!(self.closed.is_some());
    }
}
