//! `client_session`: a [`ClientSession`] driven by a structured sequence of handshake
//! responses, server messages, commands and time jumps, across reconnects.
//!
//! Input: a [`ClientSetup`] then [`ClientOp`]s until the input ends (at most [`MAX_OPS`]), in
//! `arbitrary`'s layout. The harness follows the drain rule: after every operation it drains
//! `poll_transmit` and `poll_event`.
//!
//! A model that knows only what §2.5/§2.6 say (and the session's documented contract) runs
//! alongside. Checked, whatever the sequence (misuse included, e.g. a `101` while connected):
//! - each text or binary message on an open connection yields exactly one event, equal to an
//!   independent decode; nothing is reported from a connection that is not open;
//! - each connection that ends yields exactly one [`ClientEvent::Disconnected`], with the
//!   disconnect that happened and the advice of §2.6: `Finish` after a terminal event or our
//!   own close, `Stop` for 4401/4403/HTTP 403, otherwise a reconnect whose delay is the
//!   backoff's next draw (reset once a connection stayed up one `ping_interval`);
//! - a server's close is echoed once; our close is 1000; pings are answered (when configured)
//!   with their payload; nothing is sent on a connection that is not open;
//! - `poll_timeout` is exactly the liveness deadline (`ping_interval + pong_timeout` after the
//!   last message) or the close wait while connected, `None` otherwise; a silent server is
//!   declared dead exactly then;
//! - `Done` is final; handshake requests carry the key and path the server side reads back;
//! - whatever happened, `close` and the close grace end the subscription;
//! - §2.11, when the setup opts in: every handshake request carries `Misar-Resume` with `new`
//!   until a position is known, then the last position seen (the resume frame's, moved by the
//!   `offset` of each event after it); the first text frame of each connection is the answer
//!   (`Resumed`; `Invalid` then `ResumeUnanswered` for a broken resume frame;
//!   `ResumeUnanswered` then the event for anything else), and `event_offset` names each
//!   event's offset only on a connection whose opt-in was answered. Without the opt-in there
//!   is no header and no resume frame is special.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use misar_proto::auth::{ApiKey, CredentialSource, extract_credentials};
use misar_proto::backoff::{Backoff, BackoffConfig};
use misar_proto::client::{
    AuthStyle, ClientConfig, ClientEvent, ClientOutcome, ClientSession, ClientState,
    InvalidMessage, RequestError,
};
use misar_proto::close::{Advice, ChannelKind, CloseCode, Disconnect, advise};
use misar_proto::event::{CampaignEvent, Cancelled, Completed, Decoder, Event, Failed, Progress};
use misar_proto::message::{Incoming, Message, ReceivedClose};
use misar_proto::resume::{ResumeFrame, ResumeFrameError, event_offset, extract_resume};
use misar_proto::route::{CampaignId, Channel, Routes};

use crate::samples;
use crate::server_session::Unit;
use crate::{encode_enum, encode_struct};

/// Operations per input, at most.
pub const MAX_OPS: usize = 512;

/// Server base URLs: valid ones in several shapes, and each kind of invalid one.
pub const URLS: [&str; 11] = [
    "wss://api.misar.io/mail/ws",
    "ws://127.0.0.1:8080/mail/ws/",
    "WSS://Example.COM:443/realtime?x=1&y",
    "ws://[::1]:9000",
    "wss://host/mail/ws?token=msk_other",
    "https://api.misar.io/mail/ws",
    "wss://user:pw@host/mail/ws",
    "wss://host/mail/ws#fragment",
    "not a url",
    "wss:///no-host",
    "ws://h/a%20b",
];

/// Campaign ids to subscribe to.
pub const CAMPAIGNS: [&str; 3] = ["c-42", "11111111-1111-4111-8111-111111111111", "_"];

fn key(index: u8) -> ApiKey {
    let text = match index % 4 {
        0 => "msk_live_0123456789abcd".to_owned(),
        1 => "msk_a".to_owned(),
        2 => format!("msk_{}", "x".repeat(252)),
        _ => "msk_-_".to_owned(),
    };
    match ApiKey::parse(&text) {
        Ok(key) => key,
        Err(e) => panic!("fixed key refused: {e}"),
    }
}

/// The session's configuration.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ClientSetup {
    pub url: u8,
    pub key: u8,
    pub query_auth: bool,
    /// `None`: the inbox; `Some(i)`: campaign `CAMPAIGNS[i % 3]`.
    pub campaign: Option<u8>,
    pub ping_interval_ms: u16,
    pub pong_timeout_ms: u16,
    pub close_grace_ms: u16,
    pub max_message: u16,
    pub backoff_base_ms: u16,
    pub backoff_cap_ms: u16,
    pub jitter_seed: u64,
    pub answer_pings: bool,
    pub resume: bool,
}
encode_struct!(ClientSetup {
    url,
    key,
    query_auth,
    campaign,
    ping_interval_ms,
    pong_timeout_ms,
    close_grace_ms,
    max_message,
    backoff_base_ms,
    backoff_cap_ms,
    jitter_seed,
    answer_pings,
    resume,
});

impl ClientSetup {
    /// §2.5/§2.6 defaults on the first URL and key.
    pub fn typical(campaign: Option<u8>) -> Self {
        Self {
            url: 0,
            key: 0,
            query_auth: false,
            campaign,
            ping_interval_ms: 30_000,
            pong_timeout_ms: 30_000,
            close_grace_ms: 5_000,
            max_message: 65_535,
            backoff_base_ms: 500,
            backoff_cap_ms: 30_000,
            jitter_seed: 7,
            answer_pings: true,
            resume: false,
        }
    }

    fn channel(&self) -> Channel {
        match self.campaign {
            None => Channel::Inbox,
            Some(i) => {
                let id = CAMPAIGNS
                    .get(usize::from(i) % CAMPAIGNS.len())
                    .copied()
                    .unwrap_or("c");
                match CampaignId::new(id) {
                    Ok(id) => Channel::Campaign(id),
                    Err(e) => panic!("fixed campaign id: {e}"),
                }
            }
        }
    }

    fn config(&self) -> ClientConfig {
        let url = URLS
            .get(usize::from(self.url) % URLS.len())
            .copied()
            .unwrap_or("");
        let mut config = ClientConfig::new(url, key(self.key));
        // The key byte's top bit picks the subprotocol over the header (the key itself is
        // chosen modulo the table).
        config.auth = if self.query_auth {
            AuthStyle::Query
        } else if self.key & 0x80 != 0 {
            AuthStyle::Subprotocol
        } else {
            AuthStyle::Header
        };
        config.ping_interval = ms(self.ping_interval_ms);
        config.pong_timeout = ms(self.pong_timeout_ms);
        config.close_grace = ms(self.close_grace_ms);
        config.max_message = usize::from(self.max_message);
        config.backoff = BackoffConfig {
            base: ms(self.backoff_base_ms),
            cap: ms(self.backoff_cap_ms),
        };
        config.answer_pings = self.answer_pings;
        config.resume = self.resume;
        config
    }
}

fn ms(value: u16) -> Duration {
    Duration::from_millis(u64::from(value))
}

/// A text frame from the server.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One of [`samples::frames`].
    Sample {
        /// Which (modulo their number).
        index: u8,
    },
    /// A sample cut short at byte `at`.
    Cut {
        /// Which sample.
        index: u8,
        /// Where to cut.
        at: u16,
    },
    /// A terminal campaign event (`completed`, `failed`, `cancelled` by `kind % 3`).
    Terminal {
        /// Which terminal type.
        kind: u8,
    },
    /// A `progress` event.
    Progress {
        /// Its `sent` count.
        sent: u32,
    },
    /// `len` copies of `byte`.
    Junk {
        /// Length.
        len: u16,
        /// The byte.
        byte: u8,
    },
    /// A resume frame (§2.11) with epoch `EPOCHS[epoch % 4]` (the last one invalid).
    Resume {
        /// Which epoch.
        epoch: u8,
        /// Its offset.
        offset: u64,
        /// Its `recovered`.
        recovered: bool,
    },
    /// A sample with `,"offset":N` before its last byte, as opted-in events carry it.
    WithOffset {
        /// Which sample.
        index: u8,
        /// The offset.
        offset: u64,
    },
}
encode_enum!(Frame, 7;
    Sample { index } => 0,
    Cut { index, at } => 1,
    Terminal { kind } => 2,
    Progress { sent } => 3,
    Junk { len, byte } => 4,
    Resume { epoch, offset, recovered } => 5,
    WithOffset { index, offset } => 6,
);

/// Epochs of the resume frames built here: three valid ones and an invalid one.
pub const EPOCHS: [&str; 4] = ["e1", "Epoch_2-x", "z", "bad epoch"];

/// The campaign of the frames built here (`c-42`, as in the samples).
fn campaign() -> CampaignId {
    match CampaignId::new(CAMPAIGNS[0]) {
        Ok(id) => id,
        Err(e) => panic!("fixed campaign id: {e}"),
    }
}

impl Frame {
    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let frames = samples::frames();
        let pick = |index: u8| {
            frames
                .get(usize::from(index) % frames.len().max(1))
                .cloned()
                .unwrap_or_default()
        };
        match self {
            Frame::Sample { index } => pick(*index),
            Frame::Cut { index, at } => {
                let mut frame = pick(*index);
                frame.truncate(usize::from(*at));
                frame
            }
            Frame::Terminal { kind } => {
                let campaign_id = campaign();
                let event = match kind % 3 {
                    0 => CampaignEvent::Completed(Completed::new(campaign_id, 3, 3, 0, 1)),
                    1 => CampaignEvent::Failed(Failed::new(campaign_id, "relay down").with_sent(1)),
                    _ => CampaignEvent::Cancelled(Cancelled::new(campaign_id)),
                };
                event.encode().bytes().to_vec()
            }
            Frame::Progress { sent } => CampaignEvent::Progress(Progress::new(
                campaign(),
                u64::from(*sent),
                1 << 33,
                0,
                0,
                0,
            ))
            .encode()
            .bytes()
            .to_vec(),
            Frame::Junk { len, byte } => vec![*byte; usize::from(*len)],
            Frame::Resume {
                epoch,
                offset,
                recovered,
            } => {
                let epoch = EPOCHS[usize::from(*epoch) % EPOCHS.len()];
                format!(
                    r#"{{"type":"resume","epoch":"{epoch}","offset":{offset},"recovered":{recovered}}}"#
                )
                .into_bytes()
            }
            Frame::WithOffset { index, offset } => {
                let mut frame = pick(*index);
                let last = frame.pop();
                frame.extend_from_slice(format!(",\"offset\":{offset}").as_bytes());
                frame.extend(last);
                frame
            }
        }
    }
}

/// The body of a refused handshake.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// One of [`samples::REJECTION_BODIES`].
    Sample {
        /// Which (modulo their number).
        index: u8,
    },
    /// `len` copies of `byte`.
    Junk {
        /// Length.
        len: u16,
        /// The byte.
        byte: u8,
    },
}
encode_enum!(Body, 3; Empty => 0, Sample { index } => 1, Junk { len, byte } => 2);

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Empty => Vec::new(),
            Body::Sample { index } => samples::REJECTION_BODIES
                .get(usize::from(*index) % samples::REJECTION_BODIES.len())
                .map(|s| s.as_bytes().to_vec())
                .unwrap_or_default(),
            Body::Junk { len, byte } => vec![*byte; usize::from(*len)],
        }
    }

    /// The `error` field, when the body is a valid §2.3 rejection.
    fn expected_error(&self) -> Option<&'static str> {
        match self {
            Body::Sample { index } => match usize::from(*index) % samples::REJECTION_BODIES.len() {
                0 => Some("unauthorized"),
                1 => Some("forbidden"),
                2 => Some("unavailable"),
                _ => None,
            },
            _ => None,
        }
    }
}

/// One step of the scenario.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum ClientOp {
    /// `handshake_request()`.
    Request,
    /// The handshake succeeded (101).
    Accept,
    /// The handshake got another status (`status` as is, invalid ones become 500).
    Refuse {
        /// HTTP status.
        status: u16,
        /// The response body.
        body: Body,
    },
    /// The connection could not be made.
    ConnectFailed,
    /// A text message.
    Text {
        /// Its payload.
        frame: Frame,
    },
    /// A binary message.
    Binary {
        /// Its length.
        len: u16,
    },
    /// A ping.
    Ping {
        /// Payload length.
        len: u8,
    },
    /// A pong.
    Pong {
        /// Payload length.
        len: u8,
    },
    /// The server's close frame.
    ServerClose {
        /// Its code, if any (any `u16`).
        code: Option<u16>,
        /// Its reason's length.
        reason_len: u8,
    },
    /// The transport ended.
    TransportClosed,
    /// The application ends the subscription.
    Close,
    /// Time passes.
    Advance {
        /// How much.
        amount: u16,
        /// In which unit.
        unit: Unit,
    },
    /// `handle_timeout(now)`.
    Timeout,
    /// Jump to `poll_timeout()` (if any, and later), then `handle_timeout`.
    UntilDeadline,
}
encode_enum!(ClientOp, 14;
    Request => 0,
    Accept => 1,
    Refuse { status, body } => 2,
    ConnectFailed => 3,
    Text { frame } => 4,
    Binary { len } => 5,
    Ping { len } => 6,
    Pong { len } => 7,
    ServerClose { code, reason_len } => 8,
    TransportClosed => 9,
    Close => 10,
    Advance { amount, unit } => 11,
    Timeout => 12,
    UntilDeadline => 13,
);

/// Reads an input: the setup, then operations until the input ends.
pub fn parse(data: &[u8]) -> Option<(ClientSetup, Vec<ClientOp>)> {
    let mut u = Unstructured::new(data);
    let setup = ClientSetup::arbitrary(&mut u).ok()?;
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match ClientOp::arbitrary(&mut u) {
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
pub struct ClientReport {
    /// Every outcome, in order: disconnects, refused handshakes, failed connects.
    pub outcomes: Vec<ClientOutcome>,
    /// Events delivered (decoded or invalid; not disconnects).
    pub events: usize,
    /// Messages transmitted.
    pub transmitted: Vec<Message>,
    /// The state before the final close.
    pub state: ClientState,
}

/// Runs a parsed scenario, checking every invariant.
pub fn run_scenario(setup: &ClientSetup, ops: &[ClientOp]) -> ClientReport {
    let mut harness = Harness::new(setup);
    for op in ops {
        harness.apply(op);
    }
    let state = harness.session.state();
    let report = ClientReport {
        outcomes: harness.outcomes.clone(),
        events: harness.events,
        transmitted: harness.transmitted.clone(),
        state,
    };
    harness.finish();
    report
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Open { since: Instant },
    Closing { since: Instant, until: Instant },
    Done,
}

struct Harness {
    session: ClientSession,
    channel: Channel,
    config: ClientConfig,
    decoder: Decoder,
    now: Instant,
    /// The model.
    phase: Phase,
    backoff: Backoff,
    terminal_seen: bool,
    liveness: Option<Instant>,
    terminal_close: Option<Instant>,
    last_outcome: Option<ClientOutcome>,
    request: Option<Result<(), RequestError>>,
    /// §2.11: the open connection opted in and its first text frame is still to come.
    awaiting_resume: bool,
    /// §2.11: the open connection's opt-in was answered (its events carry offsets).
    resumed: bool,
    /// §2.11: the last position seen, `epoch:offset`.
    position: Option<String>,
    /// What the current operation should produce (with the offset each event must report).
    expected_events: VecDeque<(ClientEvent, Option<u64>)>,
    expected_transmits: VecDeque<Message>,
    /// For the report.
    outcomes: Vec<ClientOutcome>,
    events: usize,
    transmitted: Vec<Message>,
}

impl Harness {
    fn new(setup: &ClientSetup) -> Self {
        let config = setup.config();
        let channel = setup.channel();
        let session = ClientSession::new(config.clone(), channel.clone(), setup.jitter_seed);
        assert_eq!(session.state(), ClientState::Idle);
        assert_eq!(session.channel(), &channel);
        assert_eq!(session.poll_timeout(), None);
        Self {
            decoder: Decoder::new(config.max_message),
            backoff: Backoff::new(config.backoff, setup.jitter_seed),
            session,
            channel,
            config,
            // Any instant will do as the origin of virtual time.
            now: Instant::now(),
            phase: Phase::Idle,
            terminal_seen: false,
            liveness: None,
            terminal_close: None,
            last_outcome: None,
            request: None,
            awaiting_resume: false,
            resumed: false,
            position: None,
            expected_events: VecDeque::new(),
            expected_transmits: VecDeque::new(),
            outcomes: Vec::new(),
            events: 0,
            transmitted: Vec::new(),
        }
    }

    fn kind(&self) -> ChannelKind {
        self.channel.kind()
    }

    fn window(&self) -> Duration {
        self.config
            .ping_interval
            .saturating_add(self.config.pong_timeout)
            .max(Duration::from_millis(1))
    }

    /// §2.6 for a connection (or attempt) that ended: records and returns the outcome.
    fn conclude(&mut self, disconnect: &Disconnect, since: Option<Instant>) -> ClientOutcome {
        let outcome = if self.terminal_seen {
            ClientOutcome::Finish
        } else {
            match advise(disconnect, self.kind(), false) {
                Advice::Finish => ClientOutcome::Finish,
                Advice::Stop(fatal) => ClientOutcome::Stop(fatal),
                Advice::Reconnect(pace) => {
                    let healthy = since.is_some_and(|since| {
                        self.now.saturating_duration_since(since) >= self.config.ping_interval
                    });
                    if healthy {
                        self.backoff.reset();
                    }
                    let delay = self.backoff.next_delay(pace);
                    assert!(delay <= self.config.backoff.cap, "delay over the cap");
                    ClientOutcome::Reconnect { delay, pace }
                }
                other => panic!("unexpected advice {other:?}"),
            }
        };
        self.record(outcome)
    }

    fn record(&mut self, outcome: ClientOutcome) -> ClientOutcome {
        self.outcomes.push(outcome);
        self.phase = match outcome {
            ClientOutcome::Reconnect { .. } => Phase::Idle,
            _ => Phase::Done,
        };
        self.last_outcome = Some(outcome);
        outcome
    }

    /// The current connection ends with `disconnect` (`forced`: our own close was under way).
    fn end(&mut self, disconnect: Disconnect, forced: bool) {
        let since = match self.phase {
            Phase::Open { since } | Phase::Closing { since, .. } => Some(since),
            _ => None,
        };
        self.liveness = None;
        self.terminal_close = None;
        let outcome = if forced {
            self.record(ClientOutcome::Finish)
        } else {
            self.conclude(&disconnect, since)
        };
        self.awaiting_resume = false;
        self.resumed = false;
        self.expect(ClientEvent::Disconnected {
            disconnect,
            outcome,
        });
    }

    fn expect(&mut self, event: ClientEvent) {
        self.expected_events.push_back((event, None));
    }

    /// Forgets the connection without an event (a new attempt was reported).
    fn abandon(&mut self) {
        self.liveness = None;
        self.terminal_close = None;
        self.awaiting_resume = false;
        self.resumed = false;
        self.phase = Phase::Idle;
    }

    /// §2.11: the first text frame of an opted-in connection. `true`: it was the answer
    /// (or a broken one), and is not an event.
    fn resume_answer(&mut self, payload: &[u8]) -> bool {
        self.awaiting_resume = false;
        match ResumeFrame::decode(payload) {
            Ok(frame) => {
                self.position = Some(format!("{}:{}", frame.epoch, frame.offset));
                self.resumed = true;
                self.expect(ClientEvent::Resumed(frame));
                true
            }
            Err(ResumeFrameError::NotResume) => {
                self.expect(ClientEvent::ResumeUnanswered);
                false
            }
            Err(error) => {
                self.expect(ClientEvent::Invalid(InvalidMessage::Resume(error)));
                self.expect(ClientEvent::ResumeUnanswered);
                true
            }
        }
    }

    fn begin_close(&mut self) {
        if let Phase::Open { since } = self.phase {
            self.liveness = None;
            self.terminal_close = None;
            self.phase = Phase::Closing {
                since,
                until: self.now + self.config.close_grace,
            };
            self.expected_transmits.push_back(Message::Close(Some(
                misar_proto::close::CloseFrame {
                    code: CloseCode::Normal,
                    reason: Default::default(),
                },
            )));
        }
    }

    fn apply(&mut self, op: &ClientOp) {
        match op {
            ClientOp::Request => self.request(),
            ClientOp::Accept => self.response(101, &Body::Empty),
            ClientOp::Refuse { status, body } => self.response(*status, body),
            ClientOp::ConnectFailed => {
                let outcome = self.session.handle_connect_failed(self.now);
                let expected = if self.phase == Phase::Done {
                    self.last_outcome.unwrap_or(ClientOutcome::Finish)
                } else {
                    self.abandon();
                    self.conclude(&Disconnect::ConnectFailed, None)
                };
                assert_eq!(outcome, expected, "connect failure");
            }
            ClientOp::Text { frame } => {
                let payload = frame.bytes();
                self.session
                    .handle_message(Incoming::Text(Bytes::from(payload.clone())), self.now);
                if let Phase::Open { .. } = self.phase {
                    self.liveness = Some(self.now + self.window());
                    if self.awaiting_resume && self.resume_answer(&payload) {
                        self.drain_and_compare();
                        return;
                    }
                    let item = match self.decoder.decode(self.kind(), &payload) {
                        Ok(event) => {
                            if let Event::Campaign(campaign) = &event
                                && campaign.is_terminal()
                                && !self.terminal_seen
                            {
                                self.terminal_seen = true;
                                self.terminal_close = Some(self.now + self.config.close_grace);
                            }
                            // The offset counts once the opt-in was answered.
                            let offset = event_offset(&payload).filter(|_| self.resumed);
                            if let (Some(offset), Some(position)) = (offset, &mut self.position) {
                                let epoch = position.rsplit_once(':').map_or("", |(e, _)| e);
                                *position = format!("{epoch}:{offset}");
                            }
                            (ClientEvent::Event(event), offset)
                        }
                        Err(error) => (ClientEvent::Invalid(InvalidMessage::Decode(error)), None),
                    };
                    self.expected_events.push_back(item);
                }
            }
            ClientOp::Binary { len } => {
                self.session.handle_message(
                    Incoming::Binary(Bytes::from(vec![0; usize::from(*len)])),
                    self.now,
                );
                if let Phase::Open { .. } = self.phase {
                    self.liveness = Some(self.now + self.window());
                    self.expect(ClientEvent::Invalid(InvalidMessage::Binary {
                        len: usize::from(*len),
                    }));
                }
            }
            ClientOp::Ping { len } => {
                let payload = Bytes::from(vec![b'p'; usize::from(*len)]);
                self.session
                    .handle_message(Incoming::Ping(payload.clone()), self.now);
                if let Phase::Open { .. } = self.phase {
                    self.liveness = Some(self.now + self.window());
                    if self.config.answer_pings {
                        self.expected_transmits.push_back(Message::Pong(payload));
                    }
                }
            }
            ClientOp::Pong { len } => {
                self.session.handle_message(
                    Incoming::Pong(Bytes::from(vec![b'q'; usize::from(*len)])),
                    self.now,
                );
                if let Phase::Open { .. } = self.phase {
                    self.liveness = Some(self.now + self.window());
                }
            }
            ClientOp::ServerClose { code, reason_len } => {
                let received = ReceivedClose {
                    code: *code,
                    reason: Bytes::from(vec![b'r'; usize::from(*reason_len)]),
                };
                self.session
                    .handle_message(Incoming::Close(received), self.now);
                let disconnect = match code.map(CloseCode::from_wire) {
                    Some(Ok(code)) => Disconnect::Closed(code),
                    _ => Disconnect::ClosedWithoutCode,
                };
                match self.phase {
                    Phase::Open { .. } => {
                        let echo = match code.map(CloseCode::from_wire) {
                            None => None,
                            Some(Ok(code)) => Some(misar_proto::close::CloseFrame {
                                code,
                                reason: Default::default(),
                            }),
                            Some(Err(_)) => Some(misar_proto::close::CloseFrame::new(
                                CloseCode::ProtocolError,
                            )),
                        };
                        self.end(disconnect, false);
                        self.expected_transmits.push_back(Message::Close(echo));
                    }
                    Phase::Closing { .. } => self.end(disconnect, true),
                    _ => {}
                }
            }
            ClientOp::TransportClosed => {
                self.session.handle_transport_closed(self.now);
                match self.phase {
                    Phase::Open { .. } => self.end(Disconnect::Dropped, false),
                    Phase::Closing { .. } => self.end(Disconnect::Dropped, true),
                    _ => {}
                }
            }
            ClientOp::Close => {
                self.session.close(self.now);
                match self.phase {
                    Phase::Open { .. } => self.begin_close(),
                    Phase::Idle => {
                        self.record(ClientOutcome::Finish);
                    }
                    _ => {}
                }
            }
            ClientOp::Advance { amount, unit } => {
                self.now = self
                    .now
                    .checked_add(unit.duration(*amount))
                    .unwrap_or(self.now);
            }
            ClientOp::Timeout => self.timeout(),
            ClientOp::UntilDeadline => {
                if let Some(deadline) = self.session.poll_timeout() {
                    self.now = self.now.max(deadline);
                }
                self.timeout();
            }
        }
        self.drain_and_compare();
    }

    /// The deadline the model expects `poll_timeout` to name.
    fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { .. } => match (self.liveness, self.terminal_close) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            Phase::Closing { until, .. } => Some(until),
            _ => None,
        }
    }

    /// `handle_timeout(now)`, then (after draining) again while the deadline is not past `now`:
    /// a zero close grace takes one more round; more than three would be a busy loop.
    fn timeout(&mut self) {
        for round in 0..3 {
            if round > 0 {
                self.drain_and_compare();
            }
            self.session.handle_timeout(self.now);
            match self.phase {
                Phase::Open { .. } => {
                    if self.liveness.is_some_and(|at| at <= self.now) {
                        self.end(Disconnect::Dropped, false);
                    } else if self.terminal_close.is_some_and(|at| at <= self.now) {
                        self.begin_close();
                    }
                }
                Phase::Closing { until, .. } if until <= self.now => {
                    self.end(Disconnect::Dropped, true);
                }
                _ => {}
            }
            if self.deadline().is_none_or(|at| at > self.now) {
                return;
            }
        }
        panic!("busy loop: the deadline stays at or before now after handling it");
    }

    fn request(&mut self) {
        let result = self.session.handshake_request();
        if self.phase == Phase::Done {
            assert_eq!(result.err(), Some(RequestError::Ended));
            return;
        }
        let summary = result.as_ref().map(|_| ()).map_err(Clone::clone);
        if let Err(error) = &summary {
            assert_ne!(error, &RequestError::Ended, "Ended while not done");
            let _ = error.to_string();
        }
        // The same configuration always gives the same answer.
        match &self.request {
            Some(previous) => assert_eq!(previous, &summary, "handshake_request changed its mind"),
            None => self.request = Some(summary),
        }
        let Ok(request) = result else {
            return;
        };
        assert_eq!(request.method(), http::Method::GET);
        assert!(request.headers().contains_key(http::header::HOST));
        // The server side must read back the very key and channel.
        let (parts, ()) = request.into_parts();
        let credentials = extract_credentials(&parts);
        let Ok(credentials) = credentials else {
            panic!("the server refuses the client's credentials: {credentials:?}");
        };
        assert_eq!(&credentials.key, &self.config.key);
        let source = match self.config.auth {
            AuthStyle::Query => CredentialSource::Query,
            AuthStyle::Subprotocol => CredentialSource::Subprotocol,
            _ => CredentialSource::Header,
        };
        assert_eq!(credentials.source, source);
        let base_path = self
            .config
            .url
            .parse::<http::Uri>()
            .map(|uri| uri.path().to_owned())
            .unwrap_or_default();
        assert_eq!(
            Routes::new(&base_path).resolve(parts.uri.path()),
            Ok(self.channel.clone()),
            "the server routes the client's request elsewhere"
        );
        // §2.11: the server reads back `new` or the last position, or nothing.
        let expected = self
            .config
            .resume
            .then(|| self.position.clone().unwrap_or_else(|| "new".to_owned()));
        let sent = extract_resume(&parts)
            .unwrap_or_else(|e| panic!("the server refuses the client's resume value: {e}"));
        assert_eq!(sent.map(|r| r.to_string()), expected, "the resume value");
    }

    fn response(&mut self, status: u16, body: &Body) {
        let status =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let code = status.as_u16();
        let result = self
            .session
            .handle_handshake_response(status, &body.bytes(), self.now);
        if self.phase == Phase::Done {
            let Err(failure) = result else {
                panic!("a finished session accepted a handshake");
            };
            assert_eq!(
                failure.outcome(),
                self.last_outcome.unwrap_or(ClientOutcome::Finish)
            );
            return;
        }
        self.abandon();
        if code == 101 {
            assert_eq!(result, Ok(()));
            self.phase = Phase::Open { since: self.now };
            self.liveness = Some(self.now + self.window());
            self.awaiting_resume = self.config.resume;
            return;
        }
        let outcome = self.conclude(&Disconnect::HandshakeRejected { status: code }, None);
        let Err(failure) = result else {
            panic!("HTTP {code} opened the connection");
        };
        assert_eq!(failure.status(), code);
        assert_eq!(failure.outcome(), outcome, "advice after HTTP {code}");
        assert_eq!(
            failure.is_fatal(),
            matches!(outcome, ClientOutcome::Stop(_))
        );
        let _ = failure.to_string();
        if let Some(error) = body.expected_error() {
            assert_eq!(failure.rejection().map(|r| r.error.as_str()), Some(error));
        }
        if matches!(body, Body::Empty) {
            assert!(failure.rejection().is_none());
        }
    }

    fn drain_and_compare(&mut self) {
        let mut transmits = Vec::new();
        while let Some(message) = self.session.poll_transmit() {
            transmits.push(message);
            assert!(transmits.len() <= 4, "poll_transmit does not run dry");
        }
        self.transmitted.extend(transmits.iter().cloned());
        let expected: Vec<Message> = self.expected_transmits.drain(..).collect();
        match (transmits.as_slice(), expected.as_slice()) {
            // Our own close: the code is the contract, the reason is free.
            ([Message::Close(Some(got))], [Message::Close(Some(want))])
                if want.code == CloseCode::Normal && want.reason.as_str().is_empty() =>
            {
                assert_eq!(got.code, want.code);
            }
            _ => assert_eq!(transmits, expected, "transmitted"),
        }
        let mut events = Vec::new();
        let mut offsets = Vec::new();
        while let Some(event) = self.session.poll_event() {
            events.push(event);
            offsets.push(self.session.event_offset());
            assert!(events.len() <= 4, "poll_event does not run dry");
        }
        self.events += events
            .iter()
            .filter(|e| !matches!(e, ClientEvent::Disconnected { .. }))
            .count();
        let (expected, expected_offsets): (Vec<ClientEvent>, Vec<Option<u64>>) =
            self.expected_events.drain(..).unzip();
        assert_eq!(events, expected, "events");
        assert_eq!(offsets, expected_offsets, "event offsets");
        assert_eq!(
            self.session.position().map(ToString::to_string),
            self.position.clone().filter(|_| self.config.resume),
            "the position"
        );

        let state = match self.phase {
            Phase::Idle => ClientState::Idle,
            Phase::Open { .. } => ClientState::Open,
            Phase::Closing { .. } => ClientState::Closing,
            Phase::Done => ClientState::Done,
        };
        assert_eq!(self.session.state(), state);
        assert_eq!(self.session.last_outcome(), self.last_outcome);
        assert_eq!(self.session.saw_terminal_event(), self.terminal_seen);
        assert_eq!(self.session.backoff().attempts(), self.backoff.attempts());
        assert_eq!(
            self.session.poll_timeout(),
            self.deadline(),
            "poll_timeout in {state:?}"
        );
    }

    /// Whatever happened, closing and waiting out the grace ends the subscription.
    fn finish(&mut self) {
        self.apply(&ClientOp::Close);
        self.now += self.config.close_grace;
        self.apply(&ClientOp::Timeout);
        assert_eq!(self.session.state(), ClientState::Done);
        assert_eq!(
            self.session.handshake_request().err(),
            Some(RequestError::Ended)
        );
        assert_eq!(self.session.poll_timeout(), None);
    }
}
