//! Properties of the sessions under arbitrary sequences of inputs, commands, partial drains
//! and time jumps (quickcheck):
//!
//! - nothing panics;
//! - at most one close frame is transmitted, and nothing is transmitted after it;
//! - `DropTransport` and `Closed` come at most once, `Closed` last, nothing after it;
//! - `poll_timeout()` is `Some` whenever the session is not closed (after a full drain);
//! - the queue never holds more than its bounds;
//! - the events transmitted are a subsequence of those accepted, in publish order; an
//!   accepted event is missing only if it was a `progress` superseded by a later one, or if
//!   the session closed while it was queued;
//! - a terminal event is followed by the close 1000.
//!
//! A second property runs the same kind of chaos on a whole `Pair` (faults included) and
//! checks both ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use misar_proto::client::{ClientEvent, ClientState};
use misar_proto::close::{CloseCode, CloseFrame};
use misar_proto::event::{
    CampaignEvent, Completed, EncodedEvent, EventClass, Progress, UnknownEvent,
};
use misar_proto::handshake::{self, HandshakeConfig, Step};
use misar_proto::message::{Incoming, Message, ReceivedClose};
use misar_proto::route::{CampaignId, Channel};
use misar_proto::server::{ServerConfig, ServerOutput, ServerSession, SessionState};
use misar_proto::testing::Pair;
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn pick<T: Copy>(g: &mut Gen, options: &[T]) -> T {
    *g.choose(options).unwrap()
}

fn small(g: &mut Gen, max: u64) -> u64 {
    u64::arbitrary(g) % (max + 1)
}

/// A server configuration with small, arbitrary bounds and timers.
#[derive(Clone, Debug)]
struct Config(ServerConfig);

impl Arbitrary for Config {
    fn arbitrary(g: &mut Gen) -> Self {
        Config(ServerConfig {
            ping_interval: Duration::from_millis(small(g, 5_000)),
            pong_timeout: Duration::from_millis(small(g, 5_000)),
            close_grace: Duration::from_millis(small(g, 2_000)),
            max_queued_events: small(g, 10) as usize,
            max_queued_bytes: 40 + small(g, 600) as usize,
            max_client_message: small(g, 200) as usize,
            client_message_burst: small(g, 5) as u32,
            client_message_refill: Duration::from_millis(small(g, 1_000)),
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Enqueue(EventClass),
    Text(u16),
    Binary(u16),
    Ping(u8),
    Pong,
    PeerClose(Option<u16>),
    TransportClosed,
    Shutdown,
    Revoke(u16),
    Close(u16),
    /// Advance the clock by this many ms, then `handle_timeout`.
    Advance(u32),
    /// Jump straight to `poll_timeout()` and fire it.
    FireTimer,
    /// Pull at most this many outputs (a driver with a full socket stops early).
    Drain(u8),
    /// Pull every output, as the drain rule says (when the socket can take it).
    DrainAll,
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let codes = [
            1000, 1001, 1002, 1005, 1006, 1011, 1013, 1015, 2999, 3000, 4401, 4403, 4999, 5000,
        ];
        match u8::arbitrary(g) % 18 {
            0..=2 => Op::Enqueue(pick(
                g,
                &[
                    EventClass::Ordinary,
                    EventClass::Progress,
                    EventClass::Progress,
                    EventClass::Terminal,
                ],
            )),
            3 => Op::Text(pick(g, &[0, 10, 199, 200, 201, 5000])),
            4 => Op::Binary(u16::arbitrary(g) % 300),
            5 => Op::Ping(pick(g, &[0, 4, 125, 126, 255])),
            6 => Op::Pong,
            7 => Op::PeerClose(if bool::arbitrary(g) {
                Some(pick(g, &codes))
            } else {
                None
            }),
            8 => Op::TransportClosed,
            9 => Op::Shutdown,
            10 => Op::Revoke(pick(g, &codes)),
            11 => Op::Close(pick(g, &codes)),
            12 => Op::Advance(pick(g, &[0, 1, 10, 500, 1_000, 5_000, 60_000, 3_600_000])),
            13 => Op::FireTimer,
            14 | 15 => Op::Drain(u8::arbitrary(g) % 4),
            _ => Op::DrainAll,
        }
    }
}

fn accepted_session(config: ServerConfig, now: Instant) -> ServerSession {
    let head = http::Request::get("/mail/ws/campaigns/c1")
        .header("authorization", "Bearer msk_prop_key")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let Step::NeedsAuthentication(question) = handshake::start(&HandshakeConfig::default(), &head)
    else {
        panic!("well-formed request")
    };
    let Step::NeedsOwnership(question) = question.authenticated("acct".into()) else {
        panic!("campaign channel")
    };
    ServerSession::new(question.grant(), config, now)
}

/// Event `n` of a class, with a payload that identifies it.
fn event(n: usize, class: EventClass) -> EncodedEvent {
    let n = n as u64;
    match class {
        EventClass::Progress => {
            CampaignEvent::Progress(Progress::new(cid("c1"), n, 1 << 20, 0, 0, 0)).encode()
        }
        EventClass::Terminal => {
            CampaignEvent::Completed(Completed::new(cid("c1"), n, 0, 0, 0)).encode()
        }
        _ => CampaignEvent::Unknown(UnknownEvent::new(
            "x",
            Bytes::from(format!(r#"{{"type":"x","n":{n}}}"#)),
        ))
        .encode(),
    }
}

/// What the checker remembers about the run.
#[derive(Default)]
struct Observed {
    /// Accepted events, in enqueue order: (class, transmitted?).
    accepted: Vec<(EventClass, bool)>,
    by_payload: HashMap<Bytes, usize>,
    /// Index into `accepted` of the last transmitted event.
    last_sent: Option<usize>,
    closes_sent: usize,
    drops: usize,
    closed: usize,
    transmits_after_close: usize,
    outputs_after_closed: usize,
    terminal_sent_awaiting_close: bool,
    failures: Vec<String>,
}

impl Observed {
    fn output(&mut self, output: ServerOutput) {
        if self.closed > 0 {
            self.outputs_after_closed += 1;
        }
        match output {
            ServerOutput::Transmit(message) => {
                if self.closes_sent > 0 {
                    self.transmits_after_close += 1;
                }
                if self.terminal_sent_awaiting_close {
                    match &message {
                        Message::Close(Some(f)) if f.code == CloseCode::Normal => {}
                        other => self
                            .failures
                            .push(format!("after a terminal event: {other:?}")),
                    }
                    self.terminal_sent_awaiting_close = false;
                }
                match message {
                    Message::Close(_) => self.closes_sent += 1,
                    Message::Text(payload) => match self.by_payload.get(&payload).copied() {
                        None => self
                            .failures
                            .push("transmitted an event never accepted".into()),
                        Some(index) => {
                            if self.last_sent.is_some_and(|last| index <= last) {
                                self.failures.push(format!("event {index} out of order"));
                            }
                            self.last_sent = Some(index);
                            if let Some(entry) = self.accepted.get_mut(index) {
                                entry.1 = true;
                                if entry.0 == EventClass::Terminal {
                                    self.terminal_sent_awaiting_close = true;
                                }
                            }
                        }
                    },
                    _ => {}
                }
            }
            ServerOutput::DropTransport => self.drops += 1,
            ServerOutput::Closed(_) => self.closed += 1,
            _ => {}
        }
    }
}

fn server_prop(Config(config): Config, ops: Vec<Op>) -> TestResult {
    run_server(config, ops)
}

fn run_server(config: ServerConfig, ops: Vec<Op>) -> TestResult {
    let t0 = origin();
    let mut now = t0;
    let mut session = accepted_session(config.clone(), now);
    let mut seen = Observed::default();
    let mut next_id = 0usize;

    let drain = |session: &mut ServerSession, seen: &mut Observed, limit: usize| {
        for _ in 0..limit {
            match session.poll_output() {
                Some(output) => seen.output(output),
                None => break,
            }
        }
    };

    for op in ops {
        match op {
            Op::Enqueue(class) => {
                let e = event(next_id, class);
                next_id += 1;
                let payload = e.bytes().clone();
                if session.enqueue(e, now).is_ok() {
                    seen.by_payload.insert(payload, seen.accepted.len());
                    seen.accepted.push((class, false));
                }
            }
            Op::Text(len) => {
                session.handle_message(Incoming::Text(Bytes::from(vec![b'x'; len.into()])), now)
            }
            Op::Binary(len) => {
                session.handle_message(Incoming::Binary(Bytes::from(vec![0; len.into()])), now)
            }
            Op::Ping(len) => {
                session.handle_message(Incoming::Ping(Bytes::from(vec![1; len.into()])), now)
            }
            Op::Pong => session.handle_message(Incoming::Pong(Bytes::new()), now),
            Op::PeerClose(code) => session.handle_message(
                Incoming::Close(ReceivedClose {
                    code,
                    reason: Bytes::from_static(b"bye"),
                }),
                now,
            ),
            Op::TransportClosed => session.handle_transport_closed(now),
            Op::Shutdown => session.shutdown(now),
            Op::Revoke(code) => {
                if let Ok(code) = CloseCode::from_wire(code) {
                    let accepted = session.revoke(code, now).is_ok();
                    let revocation = matches!(code, CloseCode::Unauthorized | CloseCode::Forbidden);
                    if accepted != revocation {
                        return TestResult::error(format!("revoke({code}) -> {accepted}"));
                    }
                }
            }
            Op::Close(code) => {
                if let Ok(code) = CloseCode::from_wire(code) {
                    session.close(CloseFrame::new(code), now);
                }
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(ms.into());
                session.handle_timeout(now);
            }
            Op::FireTimer => {
                if let Some(at) = session.poll_timeout() {
                    now = now.max(at);
                    session.handle_timeout(now);
                }
            }
            Op::Drain(n) => drain(&mut session, &mut seen, n.into()),
            Op::DrainAll => {
                drain(&mut session, &mut seen, usize::MAX);
                // After a full drain, as a driver following the drain rule sees it.
                if session.state() != SessionState::Closed && session.poll_timeout().is_none() {
                    return TestResult::error(format!("no timeout while {:?}", session.state()));
                }
            }
        }
        if session.queued_events() > config.max_queued_events
            || session.queued_bytes() > config.max_queued_bytes
        {
            return TestResult::error(format!(
                "queue over its bounds: {} events, {} bytes",
                session.queued_events(),
                session.queued_bytes()
            ));
        }
    }
    // Finish: the driver keeps firing timers; every session ends within its grace.
    session.shutdown(now);
    for _ in 0..10 {
        drain(&mut session, &mut seen, usize::MAX);
        match session.poll_timeout() {
            Some(at) => {
                now = now.max(at);
                session.handle_timeout(now);
            }
            None => break,
        }
    }
    drain(&mut session, &mut seen, usize::MAX);
    if session.state() != SessionState::Closed {
        return TestResult::error("the session did not end after shutdown and its grace");
    }
    if session.poll_output().is_some() || session.poll_timeout().is_some() {
        return TestResult::error("output or timer after Closed");
    }

    let mut problems = std::mem::take(&mut seen.failures);
    if seen.closes_sent > 1 {
        problems.push(format!("{} close frames", seen.closes_sent));
    }
    if seen.transmits_after_close > 0 {
        problems.push("transmitted after the close".into());
    }
    if seen.drops > 1 || seen.closed != 1 || seen.outputs_after_closed > 0 {
        problems.push(format!(
            "drops {}, closed {}, after closed {}",
            seen.drops, seen.closed, seen.outputs_after_closed
        ));
    }
    // Every accepted event that was not sent: a superseded progress, or discarded at close
    // (then nothing after it was sent).
    let last_sent = seen.last_sent;
    for (index, (class, sent)) in seen.accepted.iter().enumerate() {
        if *sent {
            continue;
        }
        let superseded = *class == EventClass::Progress
            && seen.accepted[index + 1..]
                .iter()
                .any(|(c, _)| *c == EventClass::Progress);
        let discarded = last_sent.is_none_or(|last| last < index);
        if !superseded && !discarded {
            problems.push(format!("event {index} ({class:?}) skipped"));
        }
    }
    if problems.is_empty() {
        TestResult::passed()
    } else {
        TestResult::error(problems.join("; "))
    }
}

#[test]
fn server_session_invariants_under_arbitrary_inputs() {
    QuickCheck::new()
        .tests(2_000)
        .rng(Gen::new(60))
        .quickcheck(server_prop as fn(Config, Vec<Op>) -> TestResult);
}

#[test]
fn default_config_invariants_under_arbitrary_inputs() {
    fn prop(ops: Vec<Op>) -> TestResult {
        run_server(ServerConfig::default(), ops)
    }
    QuickCheck::new()
        .tests(500)
        .rng(Gen::new(100))
        .quickcheck(prop as fn(Vec<Op>) -> TestResult);
}

/// Operations on a whole pair, faults included.
#[derive(Clone, Copy, Debug)]
enum PairOp {
    Enqueue(EventClass),
    Shutdown,
    Revoke(bool),
    ClientClose,
    SilenceClient,
    HalfOpen,
    Block(bool),
    Kill,
    ClientText(u16),
    ServerGarbage,
    RunFor(u32),
    Step,
}

impl Arbitrary for PairOp {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 14 {
            0..=2 => PairOp::Enqueue(pick(
                g,
                &[
                    EventClass::Ordinary,
                    EventClass::Progress,
                    EventClass::Terminal,
                ],
            )),
            3 => PairOp::Shutdown,
            4 => PairOp::Revoke(bool::arbitrary(g)),
            5 => PairOp::ClientClose,
            6 => PairOp::SilenceClient,
            7 => PairOp::HalfOpen,
            8 => PairOp::Block(bool::arbitrary(g)),
            9 => PairOp::Kill,
            10 => PairOp::ClientText(pick(g, &[1, 4096, 4097])),
            11 => PairOp::ServerGarbage,
            12 => PairOp::RunFor(pick(g, &[1, 1_000, 29_999, 30_000, 61_000, 600_000])),
            _ => PairOp::Step,
        }
    }
}

fn run_pair(ops: Vec<PairOp>) -> TestResult {
    let channel = Channel::Campaign(CampaignId::new("c1").unwrap());
    let mut pair = Pair::new(
        ServerConfig::default(),
        Pair::client_config(),
        channel,
        origin(),
    );
    let mut next_id = 0;
    for op in ops {
        match op {
            PairOp::Enqueue(class) => {
                let _ = pair.enqueue(event(next_id, class));
                next_id += 1;
            }
            PairOp::Shutdown => pair.shutdown(),
            PairOp::Revoke(auth) => {
                let code = if auth {
                    CloseCode::Unauthorized
                } else {
                    CloseCode::Forbidden
                };
                if pair.revoke(code).is_err() {
                    return TestResult::error("revocation code refused");
                }
            }
            PairOp::ClientClose => pair.client_close(),
            PairOp::SilenceClient => pair.silence_client(),
            PairOp::HalfOpen => pair.half_open_server(),
            PairOp::Block(blocked) => pair.block_server_writes(blocked),
            PairOp::Kill => pair.kill_transport(),
            PairOp::ClientText(len) => {
                pair.inject_to_server(Incoming::Text(Bytes::from(vec![b'a'; len.into()])))
            }
            PairOp::ServerGarbage => {
                pair.inject_to_client(Message::Text(Bytes::from_static(b"{]")))
            }
            PairOp::RunFor(ms) => pair.run_for(Duration::from_millis(ms.into())),
            PairOp::Step => {
                pair.step();
            }
        }
    }
    pair.block_server_writes(false);
    pair.shutdown();
    if !pair.run_to_end(Duration::from_secs(3600)) {
        return TestResult::error(format!(
            "no end: server {:?}, client {:?}",
            pair.server().state(),
            pair.client().state()
        ));
    }
    let server_closes = pair.server_closes().len();
    let transmitted_after_close = pair
        .server_sent()
        .iter()
        .skip_while(|(_, m)| !matches!(m, Message::Close(_)))
        .count();
    let client_closes = pair
        .client_sent()
        .iter()
        .filter(|(_, m)| matches!(m, Message::Close(_)))
        .count();
    let client_after_close = pair
        .client_sent()
        .iter()
        .skip_while(|(_, m)| !matches!(m, Message::Close(_)))
        .count();
    let disconnects = pair
        .client_events()
        .iter()
        .filter(|(_, e)| matches!(e, ClientEvent::Disconnected { .. }))
        .count();
    let ok = server_closes <= 1
        && transmitted_after_close <= 1
        && client_closes <= 1
        && client_after_close <= 1
        && disconnects == 1
        && matches!(pair.client().state(), ClientState::Idle | ClientState::Done)
        && pair.server_closed().is_some();
    if ok {
        TestResult::passed()
    } else {
        TestResult::error(format!(
            "server closes {server_closes} (+{transmitted_after_close}), client closes \
             {client_closes} (+{client_after_close}), disconnects {disconnects}, client {:?}",
            pair.client().state()
        ))
    }
}

#[test]
fn pair_invariants_under_arbitrary_faults() {
    QuickCheck::new()
        .tests(500)
        .rng(Gen::new(40))
        .quickcheck(run_pair as fn(Vec<PairOp>) -> TestResult);
}

/// A campaign id from a literal the test knows to be valid.
fn cid(id: &str) -> misar_proto::route::CampaignId {
    misar_proto::route::CampaignId::new(id).expect("a valid campaign id")
}
