//! A deterministic test harness: a [`ServerSession`] and a [`ClientSession`] joined by
//! in-memory queues and a virtual clock (quinn-proto's `Pair`, str0m's progress loop).
//!
//! Available with the `testing` cargo feature (and in this crate's own unit tests). Nothing
//! sleeps and nothing reads a clock: the caller gives the origin instant, and time only moves
//! when nothing is left to deliver, straight to the earliest timer of either session.
//!
//! [`Pair::new`] runs the real handshake ([`crate::handshake::start`]) on the request the
//! client builds, approving its key and any campaign, so every pair also checks that the
//! client's request is one the server accepts.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use misar_proto::client::ClientOutcome;
//! use misar_proto::close::{CloseCode, Disconnect};
//! use misar_proto::route::Channel;
//! use misar_proto::server::ServerConfig;
//! use misar_proto::testing::Pair;
//!
//! let mut pair = Pair::new(ServerConfig::default(), Pair::client_config(), Channel::Inbox, misar_proto::testing::virtual_epoch());
//! pair.run_for(Duration::from_secs(100));
//! assert_eq!(pair.ping_times(), [30, 60, 90].map(Duration::from_secs));
//!
//! pair.shutdown();
//! pair.run_for(Duration::from_secs(10));
//! let (_, disconnect, outcome) = pair.client_disconnect().unwrap();
//! assert_eq!(disconnect, Disconnect::Closed(CloseCode::GoingAway));
//! assert!(matches!(outcome, ClientOutcome::Reconnect { .. }));
//! ```
//!
//! Faults: [`silence_client`](Pair::silence_client) (the client's messages are lost, so it
//! never answers a ping), [`half_open_server`](Pair::half_open_server) (the server's messages
//! are lost and its drops go unnoticed), [`block_server_writes`](Pair::block_server_writes)
//! (a slow consumer: the server's driver cannot write, so events pile up in the session's
//! queue), [`kill_transport`](Pair::kill_transport) (both sides see the connection end).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::{AccountId, ApiKey};
use crate::client::{ClientConfig, ClientEvent, ClientOutcome, ClientSession, HandshakeFailure};
use crate::close::{CloseCode, Disconnect};
use crate::event::EncodedEvent;
use crate::handshake::{self, HandshakeConfig, RejectAction, Step};
use crate::message::{Incoming, Message};
use crate::route::Channel;
use crate::server::{
    CloseSummary, EnqueueError, NotARevocationCode, ServerConfig, ServerOutput, ServerSession,
    SessionState,
};

/// An arbitrary origin for virtual time in tests and examples.
///
/// An epoch for tests (§2.11), the same every call: tests that restart a table on purpose
/// pass another one ([`crate::resume::Epoch::new`]).
pub fn test_epoch() -> crate::resume::Epoch {
    crate::resume::Epoch::new("test-epoch").unwrap_or_else(|_| unreachable!("a valid epoch"))
}

/// `std::time::Instant` has no constructor other than reading the clock, so test support reads
/// it here, once per call, and only to get *some* instant: every later time is this origin plus
/// a virtual offset. This is the crate's single clock read, and it exists only with the
/// `testing` feature or under `cfg(test)`; sessions and codecs never read a clock.
#[allow(clippy::disallowed_methods)]
pub fn virtual_epoch() -> Instant {
    Instant::now()
}

/// The base URL of [`Pair::client_config`]; the default mount prefix on a fake host.
pub const PAIR_URL: &str = "ws://pair.test/mail/ws";
/// The key of [`Pair::client_config`].
pub const PAIR_KEY: &str = "msk_pair_test_key";
/// The jitter seed of the clients [`Pair::new`] builds (fixed, so runs are reproducible).
pub const PAIR_JITTER_SEED: u64 = 0x5eed;
/// The account the pair's key-check hook resolves every key to.
pub const PAIR_ACCOUNT: &str = "pair-account";

/// Turns a message as sent into the message as received (the crate's one conversion,
/// [`Incoming::from`]).
pub fn to_incoming(message: Message) -> Incoming {
    Incoming::from(message)
}

/// A server session and a client session on a virtual clock.
#[derive(Debug)]
pub struct Pair {
    server: ServerSession,
    client: ClientSession,
    start: Instant,
    now: Instant,
    to_client: VecDeque<Message>,
    to_server: VecDeque<Incoming>,
    client_to_server_up: bool,
    server_to_client_up: bool,
    server_writes_blocked: bool,
    /// The connection the two queues belong to is still up.
    transport_up: bool,
    server_dropped: bool,
    client_dropped: bool,
    server_sent: Vec<(Duration, Message)>,
    client_sent: Vec<(Duration, Message)>,
    client_events: Vec<(Duration, ClientEvent)>,
    server_closed: Option<(Duration, CloseSummary)>,
    server_dropped_at: Option<Duration>,
}

/// The pair's client could not connect (the handshake refused it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The client could not build its request.
    #[error("request: {0}")]
    Request(#[from] crate::client::RequestError),
    /// The server refused the request before the upgrade.
    #[error("handshake: {0}")]
    Refused(#[from] HandshakeFailure),
    /// The handshake's rejection came with a status the client took for a success.
    #[error("rejection with unexpected status {0}")]
    UnexpectedStatus(u16),
}

impl Pair {
    /// The client configuration pairs are made for: [`PAIR_URL`], [`PAIR_KEY`] in the
    /// `Authorization` header, and pings answered by the session (the in-memory transport
    /// does not answer them). The client's jitter seed is [`PAIR_JITTER_SEED`]. It does not
    /// opt in to §2.11 ([`ClientConfig::resume`] off): a pair has no streams table to resume
    /// from, so an opted-in client would wait for a resume frame no one sends. (Resume is
    /// tested with the table and both sessions in `tests/resume_props.rs`.)
    pub fn client_config() -> ClientConfig {
        let key = ApiKey::parse(PAIR_KEY).unwrap_or_else(|_| unreachable!("a valid test key"));
        let mut config = ClientConfig::new(PAIR_URL, key);
        config.answer_pings = true;
        config.resume = false;
        config
    }

    /// Connects a client for `channel` to a server at `start`, through the real handshake.
    ///
    /// # Panics
    /// If the handshake refuses the client (a test setup error); see [`Pair::try_new`].
    pub fn new(
        server_config: ServerConfig,
        client_config: ClientConfig,
        channel: Channel,
        start: Instant,
    ) -> Self {
        match Self::try_new(server_config, client_config, channel, start) {
            Ok(pair) => pair,
            Err(error) => panic!("the pair could not connect: {error}"),
        }
    }

    /// Like [`Pair::new`], returning the handshake's refusal instead of panicking.
    pub fn try_new(
        server_config: ServerConfig,
        client_config: ClientConfig,
        channel: Channel,
        start: Instant,
    ) -> Result<Self, ConnectError> {
        let client = ClientSession::new(client_config, channel, PAIR_JITTER_SEED);
        Self::connect(client, server_config, start)
    }

    /// Connects a client session built by the caller (e.g. with a jitter seed of its own) to a
    /// server at `start`, through the real handshake.
    pub fn connect(
        mut client: ClientSession,
        server_config: ServerConfig,
        start: Instant,
    ) -> Result<Self, ConnectError> {
        let server = Self::accept(
            &mut client,
            server_config,
            &HandshakeConfig::default(),
            start,
        )?;
        Ok(Self::from_sessions(server, client, start))
    }

    /// A pair of sessions built by the caller (e.g. a [`ServerSession::rejected`] one). The
    /// client, if idle, is told the handshake succeeded at `start`.
    pub fn from_sessions(server: ServerSession, mut client: ClientSession, start: Instant) -> Self {
        if client.state() == crate::client::ClientState::Idle {
            // A 101 is always accepted by an idle session.
            let _ =
                client.handle_handshake_response(http::StatusCode::SWITCHING_PROTOCOLS, b"", start);
        }
        Self {
            server,
            client,
            start,
            now: start,
            to_client: VecDeque::new(),
            to_server: VecDeque::new(),
            client_to_server_up: true,
            server_to_client_up: true,
            server_writes_blocked: false,
            transport_up: true,
            server_dropped: false,
            client_dropped: false,
            server_sent: Vec::new(),
            client_sent: Vec::new(),
            client_events: Vec::new(),
            server_closed: None,
            server_dropped_at: None,
        }
    }

    /// Runs the handshake for the client's next request and returns the server session, or
    /// reports the refusal to the client.
    fn accept(
        client: &mut ClientSession,
        server_config: ServerConfig,
        handshake_config: &HandshakeConfig,
        now: Instant,
    ) -> Result<ServerSession, ConnectError> {
        let (head, ()) = client.handshake_request()?.into_parts();
        let mut step = handshake::start(handshake_config, &head);
        let server = loop {
            step = match step {
                Step::NeedsAuthentication(question) => {
                    question.authenticated(AccountId::from(PAIR_ACCOUNT))
                }
                Step::NeedsOwnership(question) => Step::Accepted(question.grant()),
                Step::Accepted(accepted) => break ServerSession::new(accepted, server_config, now),
                Step::Rejected(rejected) => match rejected.action() {
                    RejectAction::UpgradeThenClose(close) => {
                        break ServerSession::rejected(close, server_config, now);
                    }
                    RejectAction::Respond(response) => {
                        let status = response.status();
                        return match client.handle_handshake_response(status, response.body(), now)
                        {
                            Err(failure) => Err(ConnectError::Refused(failure)),
                            Ok(()) => Err(ConnectError::UnexpectedStatus(status.as_u16())),
                        };
                    }
                },
            };
        };
        client
            .handle_handshake_response(http::StatusCode::SWITCHING_PROTOCOLS, b"", now)
            .map_err(ConnectError::Refused)?;
        Ok(server)
    }

    /// Connects the client again (after a disconnect it was advised to reconnect from) to a
    /// fresh server session, at the current virtual time. Links are restored; logs are kept.
    pub fn reconnect(&mut self, server_config: ServerConfig) -> Result<(), ConnectError> {
        let server = Self::accept(
            &mut self.client,
            server_config,
            &HandshakeConfig::default(),
            self.now,
        )?;
        self.server = server;
        self.to_client.clear();
        self.to_server.clear();
        self.client_to_server_up = true;
        self.server_to_client_up = true;
        self.server_writes_blocked = false;
        self.transport_up = true;
        self.server_dropped = false;
        self.client_dropped = false;
        self.server_closed = None;
        self.server_dropped_at = None;
        Ok(())
    }

    // ----- clock -----

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the pair was made.
    pub fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.start)
    }

    // ----- the sessions -----

    /// The server session.
    pub fn server(&self) -> &ServerSession {
        &self.server
    }

    /// The server session, to call it directly (then [`step`](Self::step) as usual).
    pub fn server_mut(&mut self) -> &mut ServerSession {
        &mut self.server
    }

    /// The client session.
    pub fn client(&self) -> &ClientSession {
        &self.client
    }

    /// The client session, to call it directly.
    pub fn client_mut(&mut self) -> &mut ClientSession {
        &mut self.client
    }

    // ----- commands, at the current virtual time -----

    /// Queues an event on the server session.
    pub fn enqueue(&mut self, event: EncodedEvent) -> Result<(), EnqueueError> {
        self.server.enqueue(event, self.now)
    }

    /// Server shutdown (1001).
    pub fn shutdown(&mut self) {
        self.server.shutdown(self.now);
    }

    /// Server revocation (4401 or 4403).
    pub fn revoke(&mut self, code: CloseCode) -> Result<(), NotARevocationCode> {
        self.server.revoke(code, self.now)
    }

    /// The client application closes (1000).
    pub fn client_close(&mut self) {
        self.client.close(self.now);
    }

    /// Puts a message on the wire to the server as if the client's transport had sent it
    /// (the client session itself only sends pongs and closes).
    pub fn inject_to_server(&mut self, message: Incoming) {
        if self.transport_up {
            self.to_server.push_back(message);
        }
    }

    /// Puts a message on the wire to the client as if the server's transport had sent it.
    pub fn inject_to_client(&mut self, message: Message) {
        if self.transport_up {
            self.to_client.push_back(message);
        }
    }

    // ----- faults -----

    /// From now on, everything the client sends is lost (it never answers a ping, and its
    /// drop of the connection goes unnoticed by the server).
    pub fn silence_client(&mut self) {
        self.client_to_server_up = false;
    }

    /// From now on, everything the server sends is lost, and its drop of the connection goes
    /// unnoticed by the client: a half-open connection as the client sees it.
    pub fn half_open_server(&mut self) {
        self.server_to_client_up = false;
    }

    /// While `blocked`, the server's driver cannot write: its outputs stay in the session
    /// (events queue and coalesce) until unblocked.
    pub fn block_server_writes(&mut self, blocked: bool) {
        self.server_writes_blocked = blocked;
    }

    /// The connection ends under both sides at once (a reset).
    pub fn kill_transport(&mut self) {
        self.to_client.clear();
        self.to_server.clear();
        self.end_transport();
    }

    // ----- running -----

    /// One unit of progress: move outputs to the wire, or deliver one message in each
    /// direction, or propagate a dropped transport, or — when nothing is in flight — advance
    /// the clock to the earliest timer of either session and fire it. Returns `false` when
    /// there is nothing left to do at all.
    pub fn step(&mut self) -> bool {
        self.step_within(None)
    }

    /// Delivers everything in flight without moving the clock.
    pub fn settle(&mut self) {
        while self.step_now() {}
    }

    /// Runs for `duration` of virtual time: every timer due up to then fires, and the clock
    /// ends exactly at `now + duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let Some(until) = self.now.checked_add(duration) else {
            return;
        };
        while self.step_within(Some(until)) {}
        self.settle();
        self.now = self.now.max(until);
    }

    /// Steps until `done` holds (checked after every step, with every output already moved
    /// to the wire and the logs) or `limit` of virtual time has passed; returns whether `done`
    /// held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let until = self.now.checked_add(limit);
        loop {
            // Harvest outputs first, so the predicate sees the logs as up to date as the
            // sessions' states.
            self.pump();
            if done(self) {
                return true;
            }
            if !self.step_within(until) {
                return done(self);
            }
        }
    }

    /// Steps until the server session is closed and the client has no connection, or
    /// `limit` of virtual time has passed; returns whether both ended.
    pub fn run_to_end(&mut self, limit: Duration) -> bool {
        self.run_until(limit, |pair| {
            pair.server.state() == SessionState::Closed
                && pair.client.state() != crate::client::ClientState::Open
                && pair.client.state() != crate::client::ClientState::Closing
        })
    }

    fn step_within(&mut self, until: Option<Instant>) -> bool {
        if self.step_now() {
            return true;
        }
        let server_due = self.server.poll_timeout();
        let client_due = self.client.poll_timeout();
        let Some(due) = [server_due, client_due].into_iter().flatten().min() else {
            return false;
        };
        if until.is_some_and(|until| due > until) {
            return false;
        }
        self.now = self.now.max(due);
        if server_due.is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
        if client_due.is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
        true
    }

    /// Progress without moving the clock.
    fn step_now(&mut self) -> bool {
        if self.pump() {
            return true;
        }
        let mut delivered = false;
        if let Some(message) = self.to_client.pop_front() {
            self.client.handle_message(to_incoming(message), self.now);
            delivered = true;
        }
        if let Some(message) = self.to_server.pop_front() {
            self.server.handle_message(message, self.now);
            delivered = true;
        }
        if delivered {
            return true;
        }
        // A side that dropped the transport: the other side notices once what was in flight
        // has arrived (and only if the path from the dropping side still works).
        if self.transport_up && self.server_dropped && self.to_client.is_empty() {
            self.transport_up = false;
            if self.server_to_client_up {
                self.client.handle_transport_closed(self.now);
            }
            return true;
        }
        if self.transport_up && self.client_dropped && self.to_server.is_empty() {
            self.transport_up = false;
            if self.client_to_server_up {
                self.server.handle_transport_closed(self.now);
            }
            return true;
        }
        false
    }

    /// Moves every output of both sessions onto the wire (or into the logs). Returns whether
    /// anything moved.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let at = self.elapsed();
        if !self.server_writes_blocked {
            while let Some(output) = self.server.poll_output() {
                moved = true;
                match output {
                    ServerOutput::Transmit(message) => {
                        if self.transport_up && self.server_to_client_up {
                            self.to_client.push_back(message.clone());
                        }
                        self.server_sent.push((at, message));
                    }
                    ServerOutput::DropTransport => {
                        self.server_dropped = true;
                        self.server_dropped_at = Some(at);
                    }
                    ServerOutput::Closed(summary) => self.server_closed = Some((at, summary)),
                }
            }
        }
        while let Some(message) = self.client.poll_transmit() {
            moved = true;
            if self.transport_up && self.client_to_server_up {
                self.to_server.push_back(to_incoming(message.clone()));
            }
            self.client_sent.push((at, message));
        }
        while let Some(event) = self.client.poll_event() {
            moved = true;
            if matches!(event, ClientEvent::Disconnected { .. }) {
                // The client's driver drops the transport after a disconnect.
                self.client_dropped = true;
            }
            self.client_events.push((at, event));
        }
        moved
    }

    fn end_transport(&mut self) {
        if !self.transport_up {
            return;
        }
        self.transport_up = false;
        self.client.handle_transport_closed(self.now);
        self.server.handle_transport_closed(self.now);
    }

    // ----- what happened -----

    /// Every message the server transmitted, with the virtual time since the start.
    pub fn server_sent(&self) -> &[(Duration, Message)] {
        &self.server_sent
    }

    /// Every message the client transmitted.
    pub fn client_sent(&self) -> &[(Duration, Message)] {
        &self.client_sent
    }

    /// Every event the client reported.
    pub fn client_events(&self) -> &[(Duration, ClientEvent)] {
        &self.client_events
    }

    /// When the server closed, with its summary.
    pub fn server_closed(&self) -> Option<&(Duration, CloseSummary)> {
        self.server_closed.as_ref()
    }

    /// When the server asked its driver to drop the transport.
    pub fn server_dropped_at(&self) -> Option<Duration> {
        self.server_dropped_at
    }

    /// When the server sent each ping.
    pub fn ping_times(&self) -> Vec<Duration> {
        self.server_sent
            .iter()
            .filter(|(_, m)| matches!(m, Message::Ping(_)))
            .map(|(at, _)| *at)
            .collect()
    }

    /// The close frames the server sent: when, and the code (`None` for a code-less close).
    pub fn server_closes(&self) -> Vec<(Duration, Option<CloseCode>)> {
        self.server_sent
            .iter()
            .filter_map(|(at, m)| match m {
                Message::Close(frame) => Some((*at, frame.as_ref().map(|f| f.code))),
                _ => None,
            })
            .collect()
    }

    /// The payloads of the text messages the server sent, in order.
    pub fn server_texts(&self) -> Vec<Bytes> {
        self.server_sent
            .iter()
            .filter_map(|(_, m)| match m {
                Message::Text(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    /// The client's latest disconnect: when, how, and its advice.
    pub fn client_disconnect(&self) -> Option<(Duration, Disconnect, ClientOutcome)> {
        self.client_events.iter().rev().find_map(|(at, e)| match e {
            ClientEvent::Disconnected {
                disconnect,
                outcome,
            } => Some((*at, disconnect.clone(), *outcome)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ReceivedClose;

    fn origin() -> Instant {
        crate::testing::virtual_epoch()
    }

    #[test]
    fn to_incoming_keeps_codes_and_reasons() {
        let frame = crate::close::CloseFrame::new(CloseCode::TryAgainLater);
        assert_eq!(
            to_incoming(Message::Close(Some(frame))),
            Incoming::Close(ReceivedClose {
                code: Some(1013),
                reason: Bytes::from_static(b"slow consumer"),
            })
        );
        assert_eq!(
            to_incoming(Message::Close(None)),
            Incoming::Close(ReceivedClose {
                code: None,
                reason: Bytes::new()
            })
        );
    }

    #[test]
    fn idle_pair_only_pings() {
        let mut pair = Pair::new(
            ServerConfig::default(),
            Pair::client_config(),
            Channel::Inbox,
            origin(),
        );
        pair.run_for(Duration::from_secs(61));
        assert_eq!(pair.elapsed(), Duration::from_secs(61));
        assert_eq!(pair.ping_times().len(), 2);
        assert_eq!(pair.client_sent().len(), 2, "two pongs");
        assert!(pair.client_events().is_empty());
    }
}
