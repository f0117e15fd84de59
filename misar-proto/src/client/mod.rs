//! The client side: [`ClientSession`], one subscription to one channel across reconnects.
//!
//! Like the server session it does no I/O and reads no clock. For each connection attempt the
//! driver builds the request with [`ClientSession::handshake_request`], connects with its
//! WebSocket library, and reports the response with
//! [`ClientSession::handle_handshake_response`]. Then it feeds messages in, drains
//! [`ClientSession::poll_event`] and [`ClientSession::poll_transmit`], and wakes up at
//! [`ClientSession::poll_timeout`]. When a connection ends the session emits
//! [`ClientEvent::Disconnected`] with the §2.6 advice: finish, reconnect after a jittered
//! delay, or stop for good. A campaign subscription finishes once its terminal event arrived
//! (however the connection then ends); a close 1000 without one is no finish (proxies close
//! with 1000 too) and is retried with backoff, as on the inbox.
//!
//! ```text
//!             handshake 101                       server close / drop / dead
//!   Idle ─────────────────────────► Open ────────────────────────────────────► Idle (reconnect)
//!    ▲  handshake ≠ 101 (retryable)   │ close()                               └► Done (finish/stop)
//!    └────────────────────────────────┤
//!                                     ▼
//!                                  Closing ── server's close / grace ──► Done (finish)
//! ```
//!
//! Missed events (§2.11): by default ([`ClientConfig::resume`]) every handshake carries
//! `Misar-Resume` — `new`, then the last position seen — and the first frame of each
//! connection is the server's answer, reported as [`ClientEvent::Resumed`] (`recovered:
//! false` when events may have been missed) or [`ClientEvent::ResumeUnanswered`] (a server
//! without §2.11). The session keeps the position ([`ClientSession::position`]) from that
//! frame and the `"offset"` of each event after it ([`ClientSession::event_offset`]).
//!
//! Liveness (§2.5): the server pings every `ping_interval`, so a connection on which nothing
//! at all arrived for `ping_interval + pong_timeout` is half-open; the session declares it
//! dead ([`Disconnect::Dropped`]) and advises a reconnect.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use misar_proto::auth::ApiKey;
//! use misar_proto::client::{ClientConfig, ClientEvent, ClientOutcome, ClientSession};
//! use misar_proto::close::{CloseCode, Disconnect};
//! use misar_proto::event::{CampaignEvent, Event};
//! use misar_proto::message::{Incoming, ReceivedClose};
//! use misar_proto::route::{CampaignId, Channel};
//!
//! let key = ApiKey::parse("msk_example_key").unwrap();
//! let config = ClientConfig::new("wss://api.misar.io/mail/ws", key);
//! let channel = Channel::Campaign(CampaignId::new("spring-sale").unwrap());
//! let mut client = ClientSession::new(config, channel, 0x5eed); // the caller's jitter seed
//!
//! let request = client.handshake_request().unwrap();
//! assert_eq!(request.uri(), "wss://api.misar.io/mail/ws/campaigns/spring-sale");
//! assert_eq!(request.headers()["misar-resume"], "new"); // opted in to §2.11
//! let now = misar_proto::testing::virtual_epoch(); // any instant: the session never reads a clock
//! client.handle_handshake_response(http::StatusCode::SWITCHING_PROTOCOLS, b"", now).unwrap();
//!
//! let answer = br#"{"type":"resume","epoch":"e7","offset":0,"recovered":true}"#;
//! client.handle_message(Incoming::Text(answer.as_slice().into()), now);
//! let frame = br#"{"type":"completed","campaignId":"spring-sale","sent":3,"delivered":3,"bounced":0,"opened":1,"offset":4}"#;
//! client.handle_message(Incoming::Text(frame.as_slice().into()), now);
//! client.handle_message(Incoming::Close(ReceivedClose { code: Some(1000), reason: Default::default() }), now);
//!
//! assert!(matches!(client.poll_event(), Some(ClientEvent::Resumed(f)) if f.recovered));
//! assert!(matches!(
//!     client.poll_event(),
//!     Some(ClientEvent::Event(Event::Campaign(CampaignEvent::Completed(_))))
//! ));
//! assert_eq!(
//!     client.poll_event(),
//!     Some(ClientEvent::Disconnected {
//!         disconnect: Disconnect::Closed(CloseCode::Normal),
//!         outcome: ClientOutcome::Finish,
//!     })
//! );
//! assert_eq!(client.position().map(|p| p.to_string()).as_deref(), Some("e7:4"));
//! // The close is echoed before the transport is let go.
//! assert!(client.poll_transmit().is_some());
//! ```

mod request;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::ApiKey;
use crate::backoff::{Backoff, BackoffConfig};
use crate::close::{Advice, CloseCode, CloseFrame, CloseReason, Disconnect, Fatal, Pace, advise};
use crate::config::{ConfigError, nonzero_count, nonzero_duration};
use crate::event::{DEFAULT_MAX_LEN, DecodeError, Decoder, Event};
use crate::message::{Incoming, Message, ReceivedClose};
use crate::resume::{self, Position, ResumeFrame, ResumeFrameError, ResumeRequest};
use crate::route::Channel;
use crate::server::timers::TimerTable;

pub use request::{AuthStyle, HandshakeFailure, RejectionBody, RequestError};

/// The shortest liveness window: a zero window would declare every connection dead at once
/// and ask the driver to wake up in a busy loop.
const MIN_LIVENESS: Duration = Duration::from_millis(1);

/// Settings of a client session. Check one you build with [`validate`](Self::validate).
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's base URL, `ws://` or `wss://`, up to the mount prefix
    /// (e.g. `wss://api.misar.io/mail/ws`). The channel's path is appended.
    pub url: String,
    /// The API key.
    pub key: ApiKey,
    /// Where the key goes: `Authorization` header (default), `?token=`, or the
    /// `misar.bearer.` subprotocol.
    pub auth: AuthStyle,
    /// The server's ping interval (30 s); liveness and the backoff reset are measured in it.
    pub ping_interval: Duration,
    /// The server's pong timeout (30 s): nothing received for `ping_interval + pong_timeout`
    /// → the server is declared dead.
    pub pong_timeout: Duration,
    /// After sending a close (or seeing a terminal event), how long to wait for the server's
    /// close (5 s).
    pub close_grace: Duration,
    /// Longest event accepted by the decoder (64 KiB); longer ones are reported as
    /// [`ClientEvent::Invalid`].
    pub max_message: usize,
    /// Reconnect backoff (500 ms base, 30 s cap).
    pub backoff: BackoffConfig,
    /// Whether the session answers pings itself (via [`ClientSession::poll_transmit`]).
    /// `true` by default; set `false` for WebSocket libraries that answer pings on their own
    /// (tungstenite does), or the server gets two pongs.
    pub answer_pings: bool,
    /// Whether to opt in to missed-event recovery (§2.11), `true` by default: every handshake
    /// carries `Misar-Resume` (`new`, then the last position seen), so a reconnect receives
    /// what was published while the connection was down, or is told it cannot
    /// ([`ClientEvent::Resumed`] with `recovered: false`).
    pub resume: bool,
}

impl ClientConfig {
    /// A configuration with the defaults of §2.5/§2.6.
    pub fn new(url: impl Into<String>, key: ApiKey) -> Self {
        Self {
            url: url.into(),
            key,
            auth: AuthStyle::Header,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(30),
            close_grace: Duration::from_secs(5),
            max_message: DEFAULT_MAX_LEN,
            backoff: BackoffConfig::default(),
            answer_pings: true,
            resume: true,
        }
    }

    /// Checks the settings (not the URL: [`ClientSession::handshake_request`] reports URL
    /// problems as [`RequestError`]s); the first refused field, in declaration order, is
    /// reported.
    ///
    /// | field | refused | why |
    /// |---|---|---|
    /// | `ping_interval` | zero | every connection would count as healthy at once, so the backoff would start over at every disconnect and a server that accepts and drops would be hammered; and the liveness window would be the pong timeout alone |
    /// | `pong_timeout` | zero | the liveness window would be exactly the server's ping interval: any latency and the live server is declared dead just before each ping, a reconnect loop |
    /// | `close_grace` | zero | the client would never wait for the server's close: after a terminal event it would close itself at once, and its own close handshakes could never complete |
    /// | `max_message` | zero | every event is over the limit ([`ClientEvent::Invalid`]); a transport that applies the same limit (tungstenite) fails every connection, a reconnect loop |
    /// | `backoff.base`, `backoff.cap` | zero | every reconnect delay is zero: a tight reconnect loop (see [`BackoffConfig::validate`]) |
    ///
    /// [`ClientSession::new`] does not call this; it only keeps the liveness window at 1 ms
    /// or more. Adapters validate where they build their configuration (the async `Client`
    /// builder's `build` does).
    ///
    /// ```
    /// use std::time::Duration;
    /// use misar_proto::auth::ApiKey;
    /// use misar_proto::client::ClientConfig;
    ///
    /// let mut config = ClientConfig::new("wss://api.misar.io/mail/ws", ApiKey::parse("msk_k").unwrap());
    /// assert!(config.validate().is_ok());
    /// config.backoff.cap = Duration::ZERO;
    /// assert_eq!(config.validate().unwrap_err().field, "backoff.cap");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        nonzero_duration("ping_interval", self.ping_interval)?;
        nonzero_duration("pong_timeout", self.pong_timeout)?;
        nonzero_duration("close_grace", self.close_grace)?;
        nonzero_count(
            "max_message",
            u64::try_from(self.max_message).unwrap_or(u64::MAX),
        )?;
        self.backoff.validate_as("backoff.base", "backoff.cap")
    }

    /// The liveness window: `ping_interval + pong_timeout`, at least 1 ms.
    pub fn liveness_window(&self) -> Duration {
        self.ping_interval
            .saturating_add(self.pong_timeout)
            .max(MIN_LIVENESS)
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL's query may hold anything (a misplaced key included): print without it.
        let url = self.url.split(['?', '#']).next().unwrap_or("");
        f.debug_struct("ClientConfig")
            .field("url", &url)
            .field("key", &self.key)
            .field("auth", &self.auth)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("close_grace", &self.close_grace)
            .field("max_message", &self.max_message)
            .field("backoff", &self.backoff)
            .field("answer_pings", &self.answer_pings)
            .field("resume", &self.resume)
            .finish()
    }
}

/// What the client should do after a connection ended or failed (§2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientOutcome {
    /// Done: the campaign reached its terminal event, or the application closed.
    Finish,
    /// Connect again after `delay` (drawn by the session's [`Backoff`]).
    Reconnect {
        /// How long to wait.
        delay: Duration,
        /// The pace the advice asked for.
        pace: Pace,
    },
    /// Retrying cannot succeed.
    Stop(Fatal),
}

/// A message from the server that is not an event of this channel. The session stays up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// A text message that does not decode as an event of the channel.
    #[error("undecodable event: {0}")]
    Decode(#[from] DecodeError),
    /// The first frame of an opted-in connection says `"type":"resume"` but is not a valid
    /// resume frame (§2.11). [`ClientEvent::ResumeUnanswered`] follows.
    #[error("invalid resume frame: {0}")]
    Resume(#[from] ResumeFrameError),
    /// A binary message (the protocol only sends text).
    #[error("unexpected binary message of {len} bytes")]
    Binary {
        /// Its length.
        len: usize,
    },
}

/// What the session reports to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A decoded event.
    Event(Event),
    /// A message that could not be used; the connection stays up.
    Invalid(InvalidMessage),
    /// The server's answer to the opt-in (§2.11), the first message of an opted-in connection.
    /// `recovered: true`: every event after the position the session sent follows, then live
    /// events (for a first connection, `new`, what follows is live). `recovered: false`:
    /// events may have been missed (another epoch, history trimmed, an offset ahead): the
    /// application refetches its state out of band. Either way the session now holds the
    /// frame's position ([`ClientSession::position`]).
    Resumed(ResumeFrame),
    /// The session opted in, but the server's first message was not a resume frame (a server
    /// without §2.11): whether events were missed is unknown, as if `recovered: false`. The
    /// session keeps its last position and asks again on the next reconnect.
    ResumeUnanswered,
    /// The connection ended. The driver drops the transport (after sending what
    /// [`ClientSession::poll_transmit`] still has), then acts on `outcome`.
    Disconnected {
        /// How it ended.
        disconnect: Disconnect,
        /// What to do next.
        outcome: ClientOutcome,
    },
}

/// The coarse state of a client session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientState {
    /// No connection: before the first handshake, or between a disconnect and the next
    /// attempt.
    Idle,
    /// Connected.
    Open,
    /// The client sent a close and waits for the server's.
    Closing,
    /// Finished or stopped; no more connections.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Open { since: Instant },
    Closing { since: Instant },
    Done,
}

#[derive(Clone, Copy)]
enum Timer {
    /// Nothing received for the liveness window → dead.
    Liveness = 0,
    /// Open: the server did not close after a terminal event; Closing: it did not answer our
    /// close.
    Close = 1,
}
const TIMERS: usize = 2;

/// One subscription to one channel, across reconnects.
///
/// - **getters**: [`state`](Self::state), [`channel`](Self::channel),
///   [`saw_terminal_event`](Self::saw_terminal_event), [`last_outcome`](Self::last_outcome);
/// - **connection**: [`handshake_request`](Self::handshake_request),
///   [`handle_handshake_response`](Self::handle_handshake_response),
///   [`handle_connect_failed`](Self::handle_connect_failed);
/// - **inputs**: [`handle_message`](Self::handle_message),
///   [`handle_transport_closed`](Self::handle_transport_closed),
///   [`handle_timeout`](Self::handle_timeout);
/// - **command**: [`close`](Self::close);
/// - **outputs**: [`poll_event`](Self::poll_event), [`poll_transmit`](Self::poll_transmit),
///   [`poll_timeout`](Self::poll_timeout).
///
/// Drain rule: after every call, drain `poll_transmit` and `poll_event` to `None`, then wait
/// for the next message or `poll_timeout`.
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    channel: Channel,
    decoder: Decoder,
    backoff: Backoff,
    phase: Phase,
    timers: TimerTable<TIMERS>,
    events: VecDeque<(ClientEvent, Option<u64>)>,
    /// The offset of the event [`poll_event`](Self::poll_event) returned last.
    polled_offset: Option<u64>,
    /// The last position seen (the resume frame's, then each event's offset in its epoch).
    position: Option<Position>,
    /// This connection opted in and its first text frame has not arrived yet.
    awaiting_resume: bool,
    /// This connection opted in and the server answered: its events carry offsets.
    resumed: bool,
    pending_pong: Option<Bytes>,
    /// The close frame to transmit (`Some(None)`: a close without a code).
    pending_close: Option<Option<CloseFrame>>,
    terminal_seen: bool,
    last_outcome: Option<ClientOutcome>,
}

impl ClientSession {
    /// A session for `channel`, not yet connected, whose backoff jitter comes from a
    /// splitmix64 generator seeded with `jitter_seed` ([`Backoff::new`]).
    ///
    /// The core has no random source of its own (it reads no clock and no operating-system
    /// entropy): the caller supplies the seed. Give every session a different, unpredictable
    /// one (from the OS's random source, or a per-process random hasher as the async adapter
    /// does): sessions sharing a seed draw the same delays, so a crowd of clients that lost
    /// the same server would come back in waves. Fix it in tests for reproducible delays.
    pub fn new(config: ClientConfig, channel: Channel, jitter_seed: u64) -> Self {
        let backoff = Backoff::new(config.backoff, jitter_seed);
        Self::with_backoff(config, channel, backoff)
    }

    /// A session with a backoff of the caller's (e.g. [`Backoff::with_random`] over an
    /// injected random source). `config.backoff` is then unused.
    pub fn with_backoff(config: ClientConfig, channel: Channel, backoff: Backoff) -> Self {
        Self {
            decoder: Decoder::new(config.max_message),
            config,
            channel,
            backoff,
            phase: Phase::Idle,
            timers: TimerTable::new(),
            events: VecDeque::new(),
            polled_offset: None,
            position: None,
            awaiting_resume: false,
            resumed: false,
            pending_pong: None,
            pending_close: None,
            terminal_seen: false,
            last_outcome: None,
        }
    }

    // ----- getters -----

    /// Idle, open, closing or done.
    pub fn state(&self) -> ClientState {
        match self.phase {
            Phase::Idle => ClientState::Idle,
            Phase::Open { .. } => ClientState::Open,
            Phase::Closing { .. } => ClientState::Closing,
            Phase::Done => ClientState::Done,
        }
    }

    /// The channel subscribed to.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Whether a terminal campaign event (`completed`, `failed`, `cancelled`) arrived: the
    /// subscription then finishes however the connection ends.
    pub fn saw_terminal_event(&self) -> bool {
        self.terminal_seen
    }

    /// The advice given for the latest disconnect or failed attempt.
    pub fn last_outcome(&self) -> Option<ClientOutcome> {
        self.last_outcome
    }

    /// The backoff (e.g. to read how many attempts were made since the last reset).
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The last position seen (§2.11): the resume frame's, then the offset of each event
    /// received since, in the frame's epoch. `None` before the first answer of the server
    /// (or when [`ClientConfig::resume`] is off). The next handshake resumes from it.
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// The resume value the next handshake sends: `None` when [`ClientConfig::resume`] is
    /// off, `new` before any position is known, else the last position.
    pub fn resume_request(&self) -> Option<ResumeRequest> {
        if !self.config.resume {
            return None;
        }
        Some(match &self.position {
            Some(position) => ResumeRequest::From(position.clone()),
            None => ResumeRequest::New,
        })
    }

    /// The `"offset"` of the event [`poll_event`](Self::poll_event) returned last, when it
    /// was a [`ClientEvent::Event`] of an opted-in connection (`None` otherwise).
    pub fn event_offset(&self) -> Option<u64> {
        self.polled_offset
    }

    // ----- commands on the position -----

    /// Resumes from `position` on the next handshake (e.g. one the application stored), as if
    /// it had been seen on this session. Has no effect when [`ClientConfig::resume`] is off.
    pub fn resume_from(&mut self, position: Position) {
        self.position = Some(position);
    }

    // ----- connection -----

    /// The handshake request for the next connection attempt: `GET` of
    /// `{url}{channel path}` with `Host`, the key (`Authorization: Bearer`, marked
    /// sensitive, `Sec-WebSocket-Protocol: misar.v1, misar.bearer.<key>`, marked sensitive, or
    /// `?token=`) and, when [`ClientConfig::resume`] is on, `Misar-Resume`
    /// ([`resume_request`](Self::resume_request)). The WebSocket library adds its own upgrade headers
    /// (`Sec-WebSocket-Key` and friends) — with tungstenite, build its request from this
    /// one's URI and copy these headers over.
    pub fn handshake_request(&self) -> Result<http::Request<()>, RequestError> {
        if self.phase == Phase::Done {
            return Err(RequestError::Ended);
        }
        request::build(
            &self.config.url,
            &self.config.key,
            self.config.auth,
            &self.channel,
            self.resume_request().as_ref(),
        )
    }

    /// The HTTP response to the handshake, without its headers: see
    /// [`handle_handshake_response_with_headers`](Self::handle_handshake_response_with_headers),
    /// which also honours `Retry-After`.
    pub fn handle_handshake_response(
        &mut self,
        status: http::StatusCode,
        body: &[u8],
        now: Instant,
    ) -> Result<(), HandshakeFailure> {
        self.handle_handshake_response_with_headers(status, &http::HeaderMap::new(), body, now)
    }

    /// The HTTP response to the handshake. `101` opens the connection; any other status is a
    /// failure carrying the advice: a 403 (or another final 4xx) stops for good, with the
    /// server's JSON body when it sent one; other statuses reconnect after a backoff delay.
    /// A 429 or 503 with `Retry-After: <seconds>` reconnects after that wait instead, capped
    /// by the backoff's cap (§2.14); the attempt still counts in the backoff.
    ///
    /// (Checking the upgrade headers of a 101 — `Sec-WebSocket-Accept`, and the echo of
    /// `misar.v1` for [`AuthStyle::Subprotocol`] — is the WebSocket library's job.)
    pub fn handle_handshake_response_with_headers(
        &mut self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: &[u8],
        now: Instant,
    ) -> Result<(), HandshakeFailure> {
        let code = status.as_u16();
        let retry_after = match code {
            429 | 503 => request::retry_after(headers),
            _ => None,
        };
        if self.phase == Phase::Done {
            return Err(HandshakeFailure {
                status: code,
                rejection: None,
                outcome: self.last_outcome.unwrap_or(ClientOutcome::Finish),
                retry_after,
            });
        }
        if status == http::StatusCode::SWITCHING_PROTOCOLS {
            self.reset_connection();
            self.phase = Phase::Open { since: now };
            self.awaiting_resume = self.config.resume;
            self.refresh_liveness(now);
            return Ok(());
        }
        self.reset_connection();
        self.phase = Phase::Idle;
        let outcome = self.conclude_paced(
            Disconnect::HandshakeRejected { status: code },
            now,
            None,
            retry_after,
        );
        Err(HandshakeFailure {
            status: code,
            rejection: request::RejectionBody::parse(body),
            outcome,
            retry_after,
        })
    }

    /// The connection could not be made (refused, DNS, TLS, timeout): reconnect with backoff.
    pub fn handle_connect_failed(&mut self, now: Instant) -> ClientOutcome {
        if self.phase == Phase::Done {
            return self.last_outcome.unwrap_or(ClientOutcome::Finish);
        }
        self.reset_connection();
        self.phase = Phase::Idle;
        self.conclude(Disconnect::ConnectFailed, now, None)
    }

    // ----- inputs -----

    /// A message from the server. Any message proves the server alive. Text is decoded into
    /// [`ClientEvent::Event`] (or [`ClientEvent::Invalid`]); a ping is answered when
    /// [`ClientConfig::answer_pings`] is set; a close is answered and ends the connection.
    pub fn handle_message(&mut self, message: Incoming, now: Instant) {
        match self.phase {
            Phase::Open { .. } => {}
            Phase::Closing { .. } => {
                // We are leaving: only the server's answer to our close matters.
                if let Incoming::Close(received) = message {
                    let disconnect = disconnect_of(&received);
                    self.end_connection(disconnect, now, Some(ClientOutcome::Finish));
                }
                return;
            }
            Phase::Idle | Phase::Done => return,
        }
        self.refresh_liveness(now);
        match message {
            Incoming::Text(payload) => {
                if std::mem::take(&mut self.awaiting_resume) && self.take_resume_frame(&payload) {
                    return;
                }
                let item = match self.decoder.decode(self.channel.kind(), &payload) {
                    Ok(event) => {
                        if let Event::Campaign(campaign) = &event {
                            if campaign.is_terminal() && !self.terminal_seen {
                                self.terminal_seen = true;
                                // The server closes with 1000 right after; if it does not,
                                // close ourselves once the grace is over.
                                let grace = self.config.close_grace;
                                self.timers.set_after(Timer::Close as usize, now, grace);
                            }
                        }
                        let offset = self.note_offset(&payload);
                        (ClientEvent::Event(event), offset)
                    }
                    Err(error) => (ClientEvent::Invalid(InvalidMessage::Decode(error)), None),
                };
                self.events.push_back(item);
            }
            Incoming::Binary(payload) => {
                self.push(ClientEvent::Invalid(InvalidMessage::Binary {
                    len: payload.len(),
                }));
            }
            Incoming::Ping(payload) => {
                if self.config.answer_pings {
                    self.pending_pong = Some(payload);
                }
            }
            Incoming::Pong(_) => {}
            Incoming::Close(received) => {
                let reply = crate::server::close_reply(&received);
                let disconnect = disconnect_of(&received);
                self.end_connection(disconnect, now, None);
                self.pending_close = Some(reply);
            }
        }
    }

    /// The transport ended without (or after) a close: a drop, unless the session already
    /// concluded the connection.
    pub fn handle_transport_closed(&mut self, now: Instant) {
        match self.phase {
            Phase::Open { .. } => self.end_connection(Disconnect::Dropped, now, None),
            Phase::Closing { .. } => {
                self.end_connection(Disconnect::Dropped, now, Some(ClientOutcome::Finish));
            }
            Phase::Idle | Phase::Done => {}
        }
    }

    /// Fires the timers due at `now`: the liveness deadline (the server is declared dead),
    /// the wait for the server's close after a terminal event (the client closes with 1000),
    /// or the wait for the answer to our close.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Open { .. } => {
                if self.timers.is_due(Timer::Liveness as usize, now) {
                    self.end_connection(Disconnect::Dropped, now, None);
                } else if self.timers.is_due(Timer::Close as usize, now) {
                    self.close(now);
                }
            }
            Phase::Closing { .. } => {
                if self.timers.is_due(Timer::Close as usize, now) {
                    self.end_connection(Disconnect::Dropped, now, Some(ClientOutcome::Finish));
                }
            }
            Phase::Idle | Phase::Done => {}
        }
    }

    // ----- command -----

    /// Ends the subscription: on an open connection, sends close 1000 and waits up to
    /// `close_grace` for the server's close; otherwise finishes at once. Either way the
    /// outcome is [`ClientOutcome::Finish`].
    pub fn close(&mut self, now: Instant) {
        match self.phase {
            Phase::Open { since } => {
                self.phase = Phase::Closing { since };
                self.pending_pong = None;
                self.pending_close = Some(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: CloseReason::default(),
                }));
                self.timers.clear_all();
                let grace = self.config.close_grace;
                self.timers.set_after(Timer::Close as usize, now, grace);
            }
            Phase::Idle => {
                self.phase = Phase::Done;
                self.last_outcome = Some(ClientOutcome::Finish);
            }
            Phase::Closing { .. } | Phase::Done => {}
        }
    }

    // ----- outputs -----

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let (event, offset) = self.events.pop_front()?;
        self.polled_offset = offset;
        Some(event)
    }

    /// The next message to send: a close (our own, or the answer to the server's), or a pong.
    /// Nothing follows a close.
    pub fn poll_transmit(&mut self) -> Option<Message> {
        if let Some(frame) = self.pending_close.take() {
            self.pending_pong = None;
            return Some(Message::Close(frame));
        }
        match self.phase {
            Phase::Open { .. } => self.pending_pong.take().map(Message::Pong),
            _ => None,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next (`None` when no
    /// connection is up: the reconnect delay is the driver's to wait).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.earliest()
    }

    // ----- internals -----

    fn refresh_liveness(&mut self, now: Instant) {
        let window = self.config.liveness_window();
        self.timers.set_after(Timer::Liveness as usize, now, window);
    }

    fn push(&mut self, event: ClientEvent) {
        self.events.push_back((event, None));
    }

    /// The first text frame of an opted-in connection: the resume frame takes the position
    /// and is reported (`true`: consumed). Anything else means the server did not answer the
    /// opt-in: reported, and the frame is then decoded as an event (`false`).
    fn take_resume_frame(&mut self, payload: &[u8]) -> bool {
        match ResumeFrame::decode(payload) {
            Ok(frame) => {
                self.position = Some(frame.position());
                self.resumed = true;
                self.push(ClientEvent::Resumed(frame));
                true
            }
            // Not a resume frame at all: an event (or garbage the decoder reports).
            Err(ResumeFrameError::NotResume) => {
                self.push(ClientEvent::ResumeUnanswered);
                false
            }
            Err(error) => {
                self.push(ClientEvent::Invalid(InvalidMessage::Resume(error)));
                self.push(ClientEvent::ResumeUnanswered);
                true
            }
        }
    }

    /// The offset of an event of an answered opt-in; it becomes the position in the epoch the
    /// resume frame named.
    fn note_offset(&mut self, payload: &[u8]) -> Option<u64> {
        if !self.resumed {
            return None;
        }
        let offset = resume::event_offset(payload)?;
        if let Some(position) = &mut self.position {
            position.offset = offset;
        }
        Some(offset)
    }

    /// Forgets the previous connection's leftovers.
    fn reset_connection(&mut self) {
        self.awaiting_resume = false;
        self.resumed = false;
        self.timers.clear_all();
        self.pending_pong = None;
        self.pending_close = None;
    }

    /// Ends the current connection and queues [`ClientEvent::Disconnected`].
    fn end_connection(
        &mut self,
        disconnect: Disconnect,
        now: Instant,
        forced: Option<ClientOutcome>,
    ) {
        let since = match self.phase {
            Phase::Open { since } | Phase::Closing { since } => Some(since),
            Phase::Idle | Phase::Done => None,
        };
        self.reset_connection();
        self.phase = Phase::Idle;
        let outcome = match forced {
            Some(outcome) => self.record(outcome),
            None => self.conclude(disconnect.clone(), now, since),
        };
        self.push(ClientEvent::Disconnected {
            disconnect,
            outcome,
        });
    }

    /// The advice for `disconnect`, with a backoff delay; moves to `Done` when final.
    fn conclude(
        &mut self,
        disconnect: Disconnect,
        now: Instant,
        connected_since: Option<Instant>,
    ) -> ClientOutcome {
        self.conclude_paced(disconnect, now, connected_since, None)
    }

    /// [`conclude`](Self::conclude), with the server's `Retry-After` replacing the drawn
    /// delay (capped by the backoff's cap).
    fn conclude_paced(
        &mut self,
        disconnect: Disconnect,
        now: Instant,
        connected_since: Option<Instant>,
        retry_after: Option<Duration>,
    ) -> ClientOutcome {
        // After a terminal event the campaign is over (any end finishes); without one, a
        // close 1000 is no finish and the session reconnects (§2.6).
        let outcome = match advise(&disconnect, self.channel.kind(), self.terminal_seen) {
            Advice::Finish => ClientOutcome::Finish,
            Advice::Stop(fatal) => ClientOutcome::Stop(fatal),
            Advice::Reconnect(pace) => {
                // A connection that stayed up one ping interval was healthy: start over.
                let healthy = connected_since.is_some_and(|since| {
                    now.saturating_duration_since(since) >= self.config.ping_interval
                });
                if healthy {
                    self.backoff.reset();
                }
                // Drawn either way, so the attempt counts and the window widens.
                let drawn = self.backoff.next_delay(pace);
                let delay = match retry_after {
                    Some(wait) => wait.min(self.backoff.config().cap),
                    None => drawn,
                };
                ClientOutcome::Reconnect { delay, pace }
            }
        };
        self.record(outcome)
    }

    fn record(&mut self, outcome: ClientOutcome) -> ClientOutcome {
        if !matches!(outcome, ClientOutcome::Reconnect { .. }) {
            self.phase = Phase::Done;
        }
        self.last_outcome = Some(outcome);
        outcome
    }
}

/// How a received close frame is reported: with its code when the code may be sent.
fn disconnect_of(received: &ReceivedClose) -> Disconnect {
    match received.code.map(CloseCode::from_wire) {
        Some(Ok(code)) => Disconnect::Closed(code),
        Some(Err(_)) | None => Disconnect::ClosedWithoutCode,
    }
}

#[cfg(test)]
mod tests;
