//! The server side of one connection: [`ServerSession`].
//!
//! A session is a state machine with no I/O and no clock. The driver feeds it what arrived
//! (`handle_*`), tells it what the application wants (commands), and moves what it asks for
//! to the transport (`poll_*`). Time is passed in with every call that can start a timer.
//!
//! ```text
//!            enqueue / ping / pong                    (peer's close | grace expired)
//!   new ──► Open ──────────────────────► Closing ─────────────────────────────────► Closed
//!            │  shutdown 1001, revoke 4401/4403, close,     │ close frame out first,
//!            │  heartbeat timeout 1001, overflow 1013,      │ then DropTransport,
//!            │  too big 1009, too many 1008, terminal 1000, │ then Closed(summary)
//!            │  peer's close (echoed)                       │
//!            └── transport ended ──────────────────────────►│ (nothing sent)
//!   rejected(CloseAfterUpgrade) ──────────────────► Closing (sends 4401/4403 only)
//! ```
//!
//! # The driving loop
//!
//! After **every** `handle_*` or command call, drain [`ServerSession::poll_output`] until it
//! returns `None`, then sleep until [`ServerSession::poll_timeout`] (or until the next message
//! or command, whichever comes first) and call [`ServerSession::handle_timeout`]. Stop after
//! [`ServerOutput::Closed`]. A driver whose transport is not ready to write may stop draining
//! and resume when it is: the outputs wait, and events keep queueing (and coalescing) meanwhile.
//!
//! ```
//! use std::collections::VecDeque;
//! use std::time::{Duration, Instant};
//!
//! use misar_proto::auth::AccountId;
//! use misar_proto::close::CloseCode;
//! use misar_proto::handshake::{self, HandshakeConfig, Step};
//! use misar_proto::message::{Incoming, Message, ReceivedClose};
//! use misar_proto::server::{ServerConfig, ServerOutput, ServerSession, SessionState};
//!
//! // The handshake accepted a request (see `misar_proto::handshake`).
//! let head = http::Request::get("/mail/ws/inbox")
//!     .header("authorization", "Bearer msk_example")
//!     .body(())
//!     .unwrap()
//!     .into_parts()
//!     .0;
//! let Step::NeedsAuthentication(question) = handshake::start(&HandshakeConfig::default(), &head)
//! else { unreachable!() };
//! let Step::Accepted(accepted) = question.authenticated(AccountId::from("acct-1"))
//! else { unreachable!() };
//!
//! // A virtual clock and an in-memory "socket", so the example runs in no time.
//! let start = misar_proto::testing::virtual_epoch(); // any instant: the session never reads a clock
//! let mut now = start;
//! let mut shut_down = false;
//! let mut wire: Vec<Message> = Vec::new();
//! let mut from_peer: VecDeque<Incoming> = VecDeque::new();
//!
//! let mut session = ServerSession::new(accepted, ServerConfig::default(), now);
//! 'run: loop {
//!     // 1. Drain every output.
//!     while let Some(output) = session.poll_output() {
//!         match output {
//!             ServerOutput::Transmit(message) => {
//!                 // A polite peer answers our pings and our close at once.
//!                 match &message {
//!                     Message::Ping(_) => from_peer.push_back(Incoming::Pong(Default::default())),
//!                     Message::Close(Some(frame)) => from_peer.push_back(Incoming::Close(
//!                         ReceivedClose { code: Some(frame.code.as_u16()), reason: Default::default() },
//!                     )),
//!                     _ => {}
//!                 }
//!                 wire.push(message);
//!             }
//!             ServerOutput::DropTransport => { /* close the socket */ }
//!             ServerOutput::Closed(summary) => {
//!                 println!("session over: {summary:?}");
//!                 break 'run;
//!             }
//!             _ => {}
//!         }
//!     }
//!     // 2. Feed the next input or command, or else wait for the next timer.
//!     if let Some(message) = from_peer.pop_front() {
//!         session.handle_message(message, now);
//!     } else if !shut_down && now >= start + Duration::from_secs(90) {
//!         shut_down = true;
//!         session.shutdown(now); // the application's command
//!     } else if let Some(deadline) = session.poll_timeout() {
//!         now = deadline; // a real driver sleeps until the deadline (or the next input)
//!         session.handle_timeout(now);
//!     }
//! }
//! // Pings at 30, 60 and 90 s, then the close 1001 of the shutdown, answered by the peer.
//! let pings = wire.iter().filter(|m| matches!(m, Message::Ping(_))).count();
//! assert_eq!(pings, 3);
//! assert!(matches!(wire.last(), Some(Message::Close(Some(f))) if f.code == CloseCode::GoingAway));
//! assert_eq!(session.state(), SessionState::Closed);
//! ```

mod limits;
mod queue;
pub(crate) mod timers;
mod validate;

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::{AccountId, CredentialSource};
use crate::close::{CloseCode, CloseFrame, CloseReason};
use crate::event::{EncodedEvent, EventClass};
use crate::handshake::{Accepted, CloseAfterUpgrade};
use crate::message::{Incoming, Message, ReceivedClose, Violation};
use crate::resume::ResumeFrame;
use crate::route::{CampaignId, Channel};

use limits::TokenBucket;
use queue::OutboundQueue;
use timers::TimerTable;

/// The largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The shortest ping interval: a zero interval would ask the driver to wake up in a busy loop.
const MIN_PING_INTERVAL: Duration = Duration::from_millis(1);

/// Settings of a server session. `Default` gives the values of §2.5–§2.8.
///
/// Check a configuration you build with [`validate`](Self::validate): a session accepts any
/// values, and some (a zero pong timeout, zero queue bounds, ...) would misbehave silently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// A ping is sent every `ping_interval` (30 s). Values below 1 ms are treated as 1 ms.
    pub ping_interval: Duration,
    /// No pong within this long after a ping → close 1001 (30 s).
    pub pong_timeout: Duration,
    /// After sending a close frame, how long to wait for the peer's close before dropping the
    /// transport (5 s).
    pub close_grace: Duration,
    /// The outbound queue holds at most this many events (256); one more → close 1013.
    pub max_queued_events: usize,
    /// The outbound queue holds at most this many payload bytes (1 MiB); more → close 1013.
    pub max_queued_bytes: usize,
    /// A client text or binary message over this many bytes → close 1009 (4 KiB).
    pub max_client_message: usize,
    /// Client messages (text, binary and pings; pongs are free) may come in bursts of this
    /// many (16) ...
    pub client_message_burst: u32,
    /// ... and then at one per `client_message_refill` (1 s) on average; more → close 1008.
    /// The protocol is server-push, so a well-behaved client sends (almost) nothing.
    pub client_message_refill: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(5),
            max_queued_events: 256,
            max_queued_bytes: 1 << 20,
            max_client_message: 4 << 10,
            client_message_burst: 16,
            client_message_refill: Duration::from_secs(1),
        }
    }
}

/// The coarse state of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// Serving: events flow, the heartbeat runs.
    Open,
    /// A close was decided; remaining outputs (the close frame, `DropTransport`, `Closed`)
    /// are being drained or the peer's close is awaited.
    Closing,
    /// [`ServerOutput::Closed`] was handed out; the session outputs nothing more and ignores
    /// every input.
    Closed,
}

/// What the session asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerOutput {
    /// Send this message.
    Transmit(Message),
    /// Close the transport now (after the close handshake, or when the peer did not answer
    /// within the grace period). Not emitted when the transport already ended.
    DropTransport,
    /// The session is over; always the last output.
    Closed(CloseSummary),
}

/// Why a session closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCause {
    /// No pong within `pong_timeout` of a ping (1001).
    HeartbeatTimeout,
    /// [`ServerSession::shutdown`] (1001).
    Shutdown,
    /// [`ServerSession::revoke`] (4401 or 4403).
    Revoked,
    /// A terminal campaign event was sent (1000).
    Finished,
    /// The outbound queue overflowed (1013).
    SlowConsumer,
    /// A client message over `max_client_message`, or over the transport's own limit
    /// ([`Violation::MessageTooBig`]) (1009).
    MessageTooBig,
    /// Client messages over the rate limit (1008).
    TooManyMessages,
    /// The client broke the WebSocket protocol, e.g. a ping payload over 125 bytes, or a frame
    /// its transport reported as a [`Violation::Protocol`] (1002).
    ProtocolError,
    /// The client sent a text message that is not UTF-8 ([`Violation::InvalidUtf8`], 1007).
    InvalidPayload,
    /// [`ServerSession::close`] with an application-chosen frame.
    Application,
    /// A session built by [`ServerSession::rejected`] (4401 or 4403).
    Rejected,
    /// The peer sent a close frame first.
    PeerClosed,
    /// The transport ended before either side sent a close frame.
    TransportClosed,
}

/// How the connection ended after the close was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ending {
    /// Both close frames were exchanged.
    Handshake,
    /// The peer did not answer our close within `close_grace`; we dropped the transport.
    GraceExpired,
    /// The transport ended before the close handshake completed.
    TransportClosed,
}

/// What a finished session reports (for logs and metrics). Contains no secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseSummary {
    /// Why the session closed.
    pub cause: CloseCause,
    /// How it ended.
    pub ending: Ending,
    /// Whether we transmitted a close frame.
    pub close_sent: bool,
    /// The code of the close frame we transmitted (`None`: none, or a code-less echo).
    pub sent_code: Option<CloseCode>,
    /// The code the session decided to close with, whether or not the frame got out (a slow
    /// consumer's 1013 often cannot: its socket is full). `None` when the session decided
    /// nothing (the peer closed first, the transport ended) or closed without a code.
    pub decided_code: Option<CloseCode>,
    /// The peer's close frame, if one arrived.
    pub received: Option<ReceivedClose>,
    /// Events still queued when the close was decided, which were discarded.
    pub unsent_events: usize,
    /// Events handed to the transport over the session's life.
    pub events_sent: u64,
}

/// Why [`ServerSession::enqueue`] did not queue an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The session is closing or closed; the event was dropped.
    #[error("the session is closing; the event was not queued")]
    Closing,
    /// A terminal campaign event was already queued; the channel ends with it.
    #[error("a terminal event was already queued; nothing may follow it")]
    AfterTerminal,
    /// The queue would exceed a bound; the session now closes with 1013.
    #[error("outbound queue full ({events} events, {bytes} bytes queued); closing with 1013")]
    Overflow {
        /// Events that were queued.
        events: usize,
        /// Payload bytes that were queued.
        bytes: usize,
    },
}

/// Why [`ServerSession::start_resume`] was refused (a driver's mistake, not the peer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeStartError {
    /// The client did not opt in ([`Accepted::resume`] is `None`).
    #[error("the client did not opt in to resume")]
    NotOptedIn,
    /// The session was started already.
    #[error("the resume decision was given already")]
    AlreadyStarted,
    /// The session is closing or closed.
    #[error("the session is closing")]
    Closing,
}

/// [`ServerSession::revoke`] was given a code that is not a revocation code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("revocation closes with 4401 or 4403, not {code}")]
pub struct NotARevocationCode {
    /// The refused code.
    pub code: CloseCode,
}

/// Who the session serves.
#[derive(Debug)]
enum Role {
    Serving(Accepted),
    Rejecting,
}

/// The heartbeat's and the close's timers.
#[derive(Clone, Copy)]
enum Timer {
    Ping = 0,
    PongDeadline = 1,
    CloseGrace = 2,
}
const TIMERS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    Closing,
    Closed,
}

/// Progress of the close, meaningful once the phase is `Closing`.
#[derive(Debug, Default)]
struct CloseState {
    cause: Option<CloseCause>,
    /// The close frame still to transmit (`Some(None)`: a close without a code).
    to_send: Option<Option<CloseFrame>>,
    close_sent: bool,
    sent_code: Option<CloseCode>,
    decided_code: Option<CloseCode>,
    received: Option<ReceivedClose>,
    transport_gone: bool,
    ending: Option<Ending>,
    drop_pending: bool,
    unsent_events: usize,
}

/// The server side of one connection.
///
/// Built only from the handshake's [`Accepted`] capability (or, for a `CloseAfterUpgrade`
/// rejection, from [`CloseAfterUpgrade`]). Methods, in the order a driver meets them:
///
/// - **getters**: [`state`](Self::state), [`account`](Self::account),
///   [`channel`](Self::channel), [`queued_events`](Self::queued_events),
///   [`queued_bytes`](Self::queued_bytes), ...
/// - **inputs**: [`handle_message`](Self::handle_message),
///   [`handle_violation`](Self::handle_violation),
///   [`handle_transport_closed`](Self::handle_transport_closed),
///   [`handle_timeout`](Self::handle_timeout);
/// - **commands**: [`enqueue`](Self::enqueue), [`shutdown`](Self::shutdown),
///   [`revoke`](Self::revoke), [`close`](Self::close);
/// - **outputs**: [`poll_output`](Self::poll_output), [`poll_timeout`](Self::poll_timeout).
///
/// See the [module docs](self) for the state diagram and the driving loop.
///
/// Guarantees, whatever the inputs: nothing panics; at most one close frame is transmitted
/// and nothing is transmitted after it; every work item is O(1); the queue never holds more
/// than the configured events and bytes; nothing is output after [`ServerOutput::Closed`].
#[derive(Debug)]
pub struct ServerSession {
    role: Role,
    config: ServerConfig,
    phase: Phase,
    /// The latest instant the driver told us about.
    now: Instant,
    timers: TimerTable<TIMERS>,
    queue: OutboundQueue,
    limiter: TokenBucket,
    /// Payload of the latest ping to answer (only the latest needs an answer, RFC 6455 §5.5.3).
    pending_pong: Option<Bytes>,
    pending_ping: bool,
    terminal_queued: bool,
    events_sent: u64,
    close: CloseState,
    resume: ResumeState,
}

/// Where an opted-in session (§2.11) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResumeState {
    /// Not opted in: plain §2.4 frames.
    Off,
    /// Opted in; the stream's decision has not come yet: events queue but nothing is sent
    /// (the `resume` frame must be first).
    Pending,
    /// The `resume` frame is queued; `floor` is the highest offset queued so far, and an
    /// event at or below it is the seam's duplicate (a replay and the live channel overlap
    /// for a moment on a multi-node broker) and is dropped.
    Active { floor: u64 },
}

impl ServerSession {
    /// A session serving the accepted request, opened at `now` (the first ping is due at
    /// `now + ping_interval`).
    ///
    /// The configuration is not validated (see [`ServerConfig::validate`] for what it would
    /// refuse): as a defence, `ping_interval` is clamped to at least 1 ms and
    /// `client_message_refill` to at least 1 ns, and other refused values have the effects
    /// documented there.
    pub fn new(accepted: Accepted, config: ServerConfig, now: Instant) -> Self {
        let resume = if accepted.resume().is_some() {
            ResumeState::Pending
        } else {
            ResumeState::Off
        };
        let mut session = Self::build(Role::Serving(accepted), config, now);
        session.resume = resume;
        let interval = session.config.ping_interval;
        session
            .timers
            .set_after(Timer::Ping as usize, now, interval);
        session
    }

    /// A session for a `CloseAfterUpgrade` rejection: it sends the rejection's close code
    /// (4401 or 4403) and nothing else, waits up to `close_grace` for the peer's close, and
    /// ends.
    pub fn rejected(reject: CloseAfterUpgrade, config: ServerConfig, now: Instant) -> Self {
        let mut session = Self::build(Role::Rejecting, config, now);
        session.begin_close(
            CloseCause::Rejected,
            Some(CloseFrame::new(reject.code())),
            now,
        );
        session
    }

    fn build(role: Role, mut config: ServerConfig, now: Instant) -> Self {
        config.ping_interval = config.ping_interval.max(MIN_PING_INTERVAL);
        Self {
            role,
            queue: OutboundQueue::new(config.max_queued_events, config.max_queued_bytes),
            limiter: TokenBucket::new(
                config.client_message_burst,
                config.client_message_refill,
                now,
            ),
            config,
            phase: Phase::Open,
            now,
            timers: TimerTable::new(),
            pending_pong: None,
            pending_ping: false,
            terminal_queued: false,
            events_sent: 0,
            close: CloseState::default(),
            resume: ResumeState::Off,
        }
    }

    // ----- getters -----

    /// Open, closing or closed.
    pub fn state(&self) -> SessionState {
        match self.phase {
            Phase::Open => SessionState::Open,
            Phase::Closing => SessionState::Closing,
            Phase::Closed => SessionState::Closed,
        }
    }

    /// The authenticated account (`None` for a [`rejected`](Self::rejected) session).
    pub fn account(&self) -> Option<&AccountId> {
        self.accepted().map(Accepted::account)
    }

    /// The channel served (`None` for a rejected session).
    pub fn channel(&self) -> Option<&Channel> {
        self.accepted().map(Accepted::channel)
    }

    /// The campaign, on a campaign channel.
    pub fn campaign(&self) -> Option<&CampaignId> {
        self.accepted().and_then(Accepted::campaign)
    }

    /// Where the client's key came from.
    pub fn credential_source(&self) -> Option<CredentialSource> {
        self.accepted().map(Accepted::credential_source)
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Events queued and not yet handed to the transport.
    pub fn queued_events(&self) -> usize {
        self.queue.len()
    }

    /// Payload bytes queued and not yet handed to the transport.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes()
    }

    /// Events handed to the transport so far.
    pub fn events_sent(&self) -> u64 {
        self.events_sent
    }

    /// Queued `progress` events superseded by a newer one (§2.7 coalescing, also within a
    /// §2.11 replay) over the session's life, for metrics.
    pub fn progress_coalesced(&self) -> u64 {
        self.queue.coalesced()
    }

    /// Why the session is closing or closed (`None` while open).
    pub fn close_cause(&self) -> Option<CloseCause> {
        self.close.cause
    }

    /// When the heartbeat gives up on the peer: the deadline of the pong awaited for the
    /// latest ping (`None` when no ping is unanswered, and once closing).
    ///
    /// A driver that is about to call [`handle_timeout`](Self::handle_timeout) reads what the
    /// peer already sent first only when this is due (or the session is closing), so that a
    /// pong already received counts; an ordinary ping tick needs no read.
    pub fn pong_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open => self.timers.get(Timer::PongDeadline as usize),
            Phase::Closing | Phase::Closed => None,
        }
    }

    fn accepted(&self) -> Option<&Accepted> {
        match &self.role {
            Role::Serving(accepted) => Some(accepted),
            Role::Rejecting => None,
        }
    }

    // ----- inputs -----

    /// A message from the client.
    ///
    /// Text and binary messages are ignored (the protocol is server-push) but counted: one
    /// over `max_client_message` closes with 1009, too many close with 1008. A ping is
    /// answered with a pong (and counted); a pong satisfies the heartbeat. A close is
    /// answered with a close echoing its code (1002 when the code may not be sent), then the
    /// transport is dropped. After the session sent its own close only the peer's close
    /// matters; once closed, everything is ignored.
    pub fn handle_message(&mut self, message: Incoming, now: Instant) {
        self.advance(now);
        match self.phase {
            Phase::Open => self.handle_open_message(message),
            Phase::Closing => {
                if let Incoming::Close(received) = message {
                    self.peer_close_while_closing(received);
                }
            }
            Phase::Closed => {}
        }
    }

    fn handle_open_message(&mut self, message: Incoming) {
        let now = self.now;
        match message {
            Incoming::Text(payload) | Incoming::Binary(payload) => {
                if payload.len() > self.config.max_client_message {
                    self.close_with(CloseCause::MessageTooBig, CloseCode::MessageTooBig);
                } else if !self.limiter.take(now) {
                    self.close_with(CloseCause::TooManyMessages, CloseCode::PolicyViolation);
                }
            }
            Incoming::Ping(payload) => {
                if payload.len() > MAX_CONTROL_PAYLOAD {
                    self.close_with(CloseCause::ProtocolError, CloseCode::ProtocolError);
                } else if !self.limiter.take(now) {
                    self.close_with(CloseCause::TooManyMessages, CloseCode::PolicyViolation);
                } else {
                    self.pending_pong = Some(payload);
                }
            }
            Incoming::Pong(_) => {
                // Any pong counts, whatever its payload and whether or not a ping is pending.
                self.timers.clear(Timer::PongDeadline as usize);
            }
            Incoming::Close(received) => {
                let reply = close_reply(&received);
                self.begin_close(CloseCause::PeerClosed, reply, now);
                self.close.received = Some(received);
            }
        }
    }

    /// The peer's close after we decided to close: it completes the close handshake (or, if
    /// our close is still waiting to go out, that close will complete it). A second close
    /// from the peer is ignored.
    fn peer_close_while_closing(&mut self, received: ReceivedClose) {
        if self.close.received.is_some() || self.close.ending.is_some() {
            return;
        }
        self.close.received = Some(received);
        if self.close.close_sent {
            self.finish(Ending::Handshake);
        }
    }

    /// The transport found the peer at fault while reading (see [`Violation`]): the session
    /// closes with 1009, 1002 or 1007 (and records the matching [`CloseCause`]), so the peer
    /// learns why instead of seeing its connection drop. The transport must still be able to
    /// write; one that cannot reports [`handle_transport_closed`](Self::handle_transport_closed)
    /// instead. Once closing, a violation ends nothing more (the close grace still runs).
    pub fn handle_violation(&mut self, violation: Violation, now: Instant) {
        self.advance(now);
        if self.phase != Phase::Open {
            return;
        }
        let (cause, code) = match violation {
            Violation::MessageTooBig => (CloseCause::MessageTooBig, CloseCode::MessageTooBig),
            Violation::Protocol => (CloseCause::ProtocolError, CloseCode::ProtocolError),
            Violation::InvalidUtf8 => (CloseCause::InvalidPayload, CloseCode::InvalidPayload),
        };
        self.close_with(cause, code);
    }

    /// The transport ended (EOF, reset, error). The session ends without sending anything.
    pub fn handle_transport_closed(&mut self, now: Instant) {
        self.advance(now);
        match self.phase {
            Phase::Open => {
                self.begin_close(CloseCause::TransportClosed, None, now);
                self.close.to_send = None;
                self.close.transport_gone = true;
                self.finish(Ending::TransportClosed);
            }
            Phase::Closing => {
                self.close.transport_gone = true;
                if self.close.ending.is_none() {
                    self.finish(Ending::TransportClosed);
                }
                self.close.drop_pending = false;
                self.close.to_send = None;
            }
            Phase::Closed => {}
        }
    }

    /// Fires the timers due at `now`: a ping, the heartbeat's close 1001, or the end of the
    /// close grace. Harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        let now = self.now;
        match self.phase {
            Phase::Open => {
                // The pong deadline first: when it coincides with the next ping, the peer is
                // already late and gets the close, not another ping.
                if self.timers.is_due(Timer::PongDeadline as usize, now) {
                    self.close_with(CloseCause::HeartbeatTimeout, CloseCode::GoingAway);
                    return;
                }
                if let Some(due) = self
                    .timers
                    .get(Timer::Ping as usize)
                    .filter(|due| *due <= now)
                {
                    self.pending_ping = true;
                    // Keep the schedule (no drift when the driver wakes late), but never
                    // schedule into the past (no burst of pings after a long stall).
                    let interval = self.config.ping_interval;
                    let next = due
                        .checked_add(interval)
                        .filter(|next| *next > now)
                        .or_else(|| now.checked_add(interval));
                    self.timers.set(Timer::Ping as usize, next);
                    if self.timers.get(Timer::PongDeadline as usize).is_none() {
                        let timeout = self.config.pong_timeout;
                        self.timers
                            .set_after(Timer::PongDeadline as usize, now, timeout);
                    }
                }
            }
            Phase::Closing => {
                if self.close.ending.is_none()
                    && self.timers.is_due(Timer::CloseGrace as usize, now)
                {
                    self.close.to_send = None;
                    self.finish(Ending::GraceExpired);
                }
            }
            Phase::Closed => {}
        }
    }

    // ----- commands -----

    /// Queues an encoded event for the client.
    ///
    /// A `progress` supersedes a queued, unsent one (see the queue rules in the
    /// [module docs](self)). An event that would cross the queue's bounds is refused and the
    /// session closes with 1013 (the queue is discarded). After a terminal event nothing more
    /// is accepted; once it is handed to the transport the session closes with 1000.
    pub fn enqueue(&mut self, event: EncodedEvent, now: Instant) -> Result<(), EnqueueError> {
        self.advance(now);
        if self.phase != Phase::Open {
            return Err(EnqueueError::Closing);
        }
        if self.terminal_queued {
            return Err(EnqueueError::AfterTerminal);
        }
        let offset = event.offset();
        if let (ResumeState::Active { floor }, Some(offset)) = (self.resume, offset) {
            if offset <= floor {
                // Already queued (by the replay): the seam's duplicate.
                return Ok(());
            }
        }
        let is_terminal = event.class() == EventClass::Terminal;
        match self.queue.push(event) {
            Ok(()) => {
                self.terminal_queued = is_terminal;
                if let (ResumeState::Active { floor }, Some(offset)) = (&mut self.resume, offset) {
                    *floor = offset;
                }
                Ok(())
            }
            Err(queue::Overflow) => {
                let error = EnqueueError::Overflow {
                    events: self.queue.len(),
                    bytes: self.queue.bytes(),
                };
                self.close_with(CloseCause::SlowConsumer, CloseCode::TryAgainLater);
                Err(error)
            }
        }
    }

    /// Starts an opted-in session (§2.11) with its stream's decision: queues the `resume`
    /// frame first, then the `replay` (the missed events, in order: the stream's history
    /// after the client's position), then `first` (the §2.7 late-joiner event, for `new` and
    /// an unrecovered position), then the live events that were queued while the decision
    /// was pending, and from then on every event above the highest offset queued.
    ///
    /// Events at or below that offset are duplicates of the seam (a replay read from a broker
    /// overlaps the live channel) and are dropped, once; `first` is kept whatever its offset.
    /// Within the replay, a `progress` superseded by a later one is left out (the queue's
    /// coalescing, which §2.11 allows). The replay and `first` are queued past the queue's
    /// bounds (the stream's history bounds them, and their bytes are the history's, shared);
    /// live events stay bounded. A terminal event ends what is queued (the session then closes
    /// with 1000 after sending it).
    pub fn start_resume<I>(
        &mut self,
        frame: &ResumeFrame,
        replay: I,
        first: Option<EncodedEvent>,
        now: Instant,
    ) -> Result<(), ResumeStartError>
    where
        I: IntoIterator<Item = EncodedEvent>,
    {
        self.advance(now);
        match self.resume {
            ResumeState::Pending => {}
            ResumeState::Off => return Err(ResumeStartError::NotOptedIn),
            ResumeState::Active { .. } => return Err(ResumeStartError::AlreadyStarted),
        }
        if self.phase != Phase::Open {
            return Err(ResumeStartError::Closing);
        }
        let waiting = self.queue.drain();
        self.terminal_queued = false;
        self.queue
            .push_past_bounds(EncodedEvent::control(frame.encode()));
        let mut floor = frame.offset;
        let mut queue_one = |session: &mut Self, event: EncodedEvent, always: bool| {
            if session.terminal_queued {
                return;
            }
            match event.offset() {
                Some(offset) if !always && offset <= floor => return,
                Some(offset) => floor = floor.max(offset),
                None => {}
            }
            session.terminal_queued = event.class() == EventClass::Terminal;
            session.queue.push_past_bounds(event);
        };
        for event in replay {
            queue_one(self, event, false);
        }
        if let Some(event) = first {
            queue_one(self, event, true);
        }
        for event in waiting {
            queue_one(self, event, false);
        }
        self.resume = ResumeState::Active { floor };
        Ok(())
    }

    /// Whether this session opted in (§2.11) and its `resume` frame is queued or sent (the
    /// stream's decision was given with [`start_resume`](Self::start_resume)). A multi-node
    /// broker uses it to tell the connections that hold a position in a stream's epoch from
    /// those still waiting for their decision.
    pub fn resume_started(&self) -> bool {
        matches!(self.resume, ResumeState::Active { .. })
    }

    /// Graceful shutdown: close 1001 (the client reconnects elsewhere or later). Queued events
    /// are discarded. Does nothing if the session is already closing.
    pub fn shutdown(&mut self, now: Instant) {
        self.advance(now);
        self.close_with(CloseCause::Shutdown, CloseCode::GoingAway);
    }

    /// Revocation: close with 4401 (key revoked) or 4403 (campaign ownership revoked); any
    /// other code is refused. Queued events are discarded, so nothing more reaches a client
    /// that lost its rights. Does nothing if the session is already closing.
    pub fn revoke(&mut self, code: CloseCode, now: Instant) -> Result<(), NotARevocationCode> {
        if !matches!(code, CloseCode::Unauthorized | CloseCode::Forbidden) {
            return Err(NotARevocationCode { code });
        }
        self.advance(now);
        self.close_with(CloseCause::Revoked, code);
        Ok(())
    }

    /// Closes with an application-chosen frame. Queued events are discarded. Does nothing if
    /// the session is already closing.
    pub fn close(&mut self, frame: CloseFrame, now: Instant) {
        self.advance(now);
        self.begin_close(CloseCause::Application, Some(frame), now);
    }

    // ----- outputs -----

    /// The next thing to do. Control frames (pong, ping) go before queued events; once a
    /// close is decided, only the close frame, then `DropTransport`, then `Closed` follow.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        match self.phase {
            Phase::Open => self.poll_open(),
            Phase::Closing => self.poll_closing(),
            Phase::Closed => None,
        }
    }

    fn poll_open(&mut self) -> Option<ServerOutput> {
        if let Some(payload) = self.pending_pong.take() {
            return Some(ServerOutput::Transmit(Message::Pong(payload)));
        }
        if std::mem::take(&mut self.pending_ping) {
            return Some(ServerOutput::Transmit(Message::Ping(Bytes::new())));
        }
        if self.resume == ResumeState::Pending {
            // The `resume` frame goes first; it is not decided yet.
            return None;
        }
        let event = self.queue.pop()?;
        self.events_sent = self.events_sent.saturating_add(1);
        if event.class() == EventClass::Terminal {
            // The campaign is over: the close 1000 follows the event (its grace counts from
            // the latest instant we were given, i.e. this drain's).
            let now = self.now;
            self.begin_close(
                CloseCause::Finished,
                Some(CloseFrame::new(CloseCode::Normal)),
                now,
            );
        }
        Some(ServerOutput::Transmit(Message::Text(event.into_bytes())))
    }

    fn poll_closing(&mut self) -> Option<ServerOutput> {
        if let Some(frame) = self.close.to_send.take() {
            self.close.close_sent = true;
            self.close.sent_code = frame.as_ref().map(|f| f.code);
            if self.close.received.is_some() {
                // Our close answers the peer's (or crossed it): the handshake is complete.
                self.finish(Ending::Handshake);
            }
            return Some(ServerOutput::Transmit(Message::Close(frame)));
        }
        if std::mem::take(&mut self.close.drop_pending) {
            return Some(ServerOutput::DropTransport);
        }
        let ending = self.close.ending?;
        self.phase = Phase::Closed;
        Some(ServerOutput::Closed(CloseSummary {
            cause: self.close.cause.unwrap_or(CloseCause::Application),
            ending,
            close_sent: self.close.close_sent,
            sent_code: self.close.sent_code,
            decided_code: self.close.decided_code,
            received: self.close.received.take(),
            unsent_events: self.close.unsent_events,
            events_sent: self.events_sent,
        }))
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next. `Some` until the
    /// session is closed (barring durations too large for `Instant`); `None` afterwards.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            _ => self.timers.earliest(),
        }
    }

    // ----- internals -----

    fn advance(&mut self, now: Instant) {
        // Tolerate a caller's clock going backwards: time never decreases here.
        self.now = self.now.max(now);
    }

    fn close_with(&mut self, cause: CloseCause, code: CloseCode) {
        let now = self.now;
        self.begin_close(cause, Some(CloseFrame::new(code)), now);
    }

    /// Decides to close with `frame` (`None`: a close without a code). Only the first
    /// decision counts.
    fn begin_close(&mut self, cause: CloseCause, frame: Option<CloseFrame>, now: Instant) {
        if self.phase != Phase::Open {
            return;
        }
        self.phase = Phase::Closing;
        self.close.cause = Some(cause);
        // An echo of the peer's close is no decision of ours.
        self.close.decided_code = match cause {
            CloseCause::PeerClosed => None,
            _ => frame.as_ref().map(|f| f.code),
        };
        self.close.to_send = Some(frame);
        self.close.unsent_events = self.queue.clear();
        self.pending_pong = None;
        self.pending_ping = false;
        self.timers.clear_all();
        let grace = self.config.close_grace;
        self.timers
            .set_after(Timer::CloseGrace as usize, now.max(self.now), grace);
    }

    fn finish(&mut self, ending: Ending) {
        if self.close.ending.is_some() {
            return;
        }
        self.close.ending = Some(ending);
        self.close.drop_pending = !self.close.transport_gone;
        self.timers.clear_all();
    }
}

/// The close frame answering a received one (RFC 6455 §5.5.1): the same code with no
/// reason, a code-less close for a code-less one, and 1002 for a code that may not be sent.
pub(crate) fn close_reply(received: &ReceivedClose) -> Option<CloseFrame> {
    received.code.map(|raw| match CloseCode::from_wire(raw) {
        Ok(code) => CloseFrame {
            code,
            reason: CloseReason::default(),
        },
        Err(_) => CloseFrame::new(CloseCode::ProtocolError),
    })
}

#[cfg(test)]
mod tests;
