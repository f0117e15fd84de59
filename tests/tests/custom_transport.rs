//! The path of users who bring their own transport: the core (handshake, `ServerSession`,
//! `ClientSession`) driven over in-memory transports, with no WebSocket library at all.
//!
//! - The example `examples/custom_transport.rs` (threads, `std::sync::mpsc`, the real clock)
//!   is run as it is.
//! - The other tests drive both sessions over two `VecDeque`s with a virtual clock: hours of
//!   heartbeat in no time, and every §2.6 ending from the client's point of view.

#[path = "../examples/custom_transport.rs"]
// The example's `main` is not called here.
#[allow(dead_code)]
mod example;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use misar_proto::auth::ApiKey;
use misar_proto::client::{
    AuthStyle, ClientConfig, ClientEvent, ClientOutcome, ClientSession, ClientState,
};
use misar_proto::close::{CloseCode, Disconnect, Fatal, Pace};
use misar_proto::event::{CampaignEvent, EmailReceived, Event, InboxEvent, Progress, Timestamp};
use misar_proto::handshake::{HandshakeConfig, RejectAction, RejectionStyle, Step};
use misar_proto::message::Message;
use misar_proto::route::{CampaignId, Channel};
use misar_proto::server::{
    CloseCause, CloseSummary, Ending, ServerConfig, ServerOutput, ServerSession, SessionState,
};

/// The clients' jitter seed (fixed: the runs are reproducible).
const SEED: u64 = 11;

#[test]
fn custom_transport_example_runs_end_to_end() {
    let report = example::run().expect("the example runs");
    let expected: Vec<Event> = example::campaign_events(&cid("spring-sale"), 10)
        .into_iter()
        .map(Event::Campaign)
        .collect();
    assert_eq!(report.events, expected, "every event, in order");
    assert!(report.pings >= 1, "the heartbeat ran: {report:?}");
    assert_eq!(
        report.client_end,
        Some((Disconnect::Closed(CloseCode::Normal), ClientOutcome::Finish))
    );
    let server = report.server_end.expect("the server session ended");
    assert_eq!(server.cause, CloseCause::Finished);
    assert_eq!(server.sent_code, Some(CloseCode::Normal));
    assert_eq!(
        server.ending,
        Ending::Handshake,
        "the client answered the close"
    );
    // The resume frame (the client opts in by default, §2.11), then the 11 events.
    assert_eq!(server.events_sent, 12);
    let resumed = report.resumed.expect("the server answered the opt-in");
    assert!(resumed.recovered);
}

/// Both sessions joined by two queues, with a virtual clock: the smallest driver a user could
/// write around the core.
struct Link {
    server: ServerSession,
    client: ClientSession,
    to_client: VecDeque<Message>,
    to_server: VecDeque<Message>,
    now: Instant,
    start: Instant,
    /// The server dropped the transport / the client let it go.
    server_dropped: bool,
    client_dropped: bool,
    /// The client stopped reading (its process hangs): nothing reaches it, it sends nothing.
    client_frozen: bool,
    server_end: Option<CloseSummary>,
    client_events: Vec<Event>,
    client_end: Option<(Disconnect, ClientOutcome)>,
    pings: usize,
}

/// What a handshake over the link gave.
enum Handshake {
    Open(Box<Link>),
    /// An HTTP refusal: the status, and the client's advice.
    Refused(u16, ClientOutcome, Option<String>),
}

/// A client that does not opt in to §2.11 (these tests look at the seed contract's frames).
fn client_config(key: &str, auth: AuthStyle) -> ClientConfig {
    ClientConfig {
        auth,
        resume: false,
        ..ClientConfig::new(
            "wss://in-memory.example/mail/ws",
            ApiKey::parse(key).unwrap(),
        )
    }
}

impl Link {
    /// Runs the handshake of `client` against the example's tables in `style`.
    fn connect(mut client: ClientSession, style: RejectionStyle) -> Handshake {
        let start = Instant::now();
        let head = client.handshake_request().unwrap().into_parts().0;
        let config = HandshakeConfig::default().with_rejection_style(style);
        // The example's `decide` uses the default style; here the style varies, so the same
        // questions are answered inline.
        let mut step = misar_proto::handshake::start(&config, &head);
        let server = loop {
            step = match step {
                Step::NeedsAuthentication(q) => {
                    let account = ["msk_example_alice_key"]
                        .iter()
                        .any(|k| q.key().ct_eq_str(k))
                        .then(|| "alice".into());
                    match account {
                        Some(account) => q.authenticated(account),
                        None => Step::Rejected(q.unknown_key()),
                    }
                }
                Step::NeedsOwnership(q) => {
                    if q.campaign().as_str() == "spring-sale" {
                        Step::Accepted(q.grant())
                    } else {
                        Step::Rejected(q.deny())
                    }
                }
                Step::Accepted(accepted) => {
                    break ServerSession::new(accepted, ServerConfig::default(), start);
                }
                Step::Rejected(rejected) => match rejected.action() {
                    RejectAction::Respond(response) => {
                        let failure = client
                            .handle_handshake_response(response.status(), response.body(), start)
                            .expect_err("a refusal");
                        return Handshake::Refused(
                            failure.status(),
                            failure.outcome(),
                            failure.rejection().map(|r| r.error.clone()),
                        );
                    }
                    RejectAction::UpgradeThenClose(close) => {
                        break ServerSession::rejected(close, ServerConfig::default(), start);
                    }
                    other => panic!("{other:?}"),
                },
            }
        };
        client
            .handle_handshake_response(http::StatusCode::SWITCHING_PROTOCOLS, b"", start)
            .unwrap();
        Handshake::Open(Box::new(Link {
            server,
            client,
            to_client: VecDeque::new(),
            to_server: VecDeque::new(),
            now: start,
            start,
            server_dropped: false,
            client_dropped: false,
            client_frozen: false,
            server_end: None,
            client_events: Vec::new(),
            client_end: None,
            pings: 0,
        }))
    }

    /// Moves messages and drains both sessions until nothing moves (no time passes).
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(output) = self.server.poll_output() {
                moved = true;
                match output {
                    ServerOutput::Transmit(message) if !self.server_dropped => {
                        self.to_client.push_back(message);
                    }
                    ServerOutput::DropTransport => self.server_dropped = true,
                    ServerOutput::Closed(summary) => self.server_end = Some(summary),
                    _ => {}
                }
            }
            if !self.client_frozen && !self.client_dropped {
                while let Some(message) = self.client.poll_transmit() {
                    moved = true;
                    self.to_server.push_back(message);
                }
                while let Some(event) = self.client.poll_event() {
                    moved = true;
                    match event {
                        ClientEvent::Event(event) => self.client_events.push(event),
                        ClientEvent::Disconnected {
                            disconnect,
                            outcome,
                        } => {
                            // Last words out, then the transport is let go.
                            while let Some(message) = self.client.poll_transmit() {
                                self.to_server.push_back(message);
                            }
                            self.client_end = Some((disconnect, outcome));
                            self.client_dropped = true;
                        }
                        other => panic!("{other:?}"),
                    }
                }
                if let Some(message) = self.to_client.pop_front() {
                    moved = true;
                    self.pings += usize::from(matches!(message, Message::Ping(_)));
                    let message = misar_proto::message::Incoming::from(message);
                    self.client.handle_message(message, self.now);
                } else if self.server_dropped && self.client_end.is_none() {
                    // Everything the server wrote was read; then the socket's end.
                    moved = true;
                    self.client.handle_transport_closed(self.now);
                }
            }
            if let Some(message) = self.to_server.pop_front() {
                moved = true;
                if !self.server_dropped {
                    let message = misar_proto::message::Incoming::from(message);
                    self.server.handle_message(message, self.now);
                }
            } else if self.client_dropped
                && !self.server_dropped
                && self.server.state() != SessionState::Closed
            {
                moved = true;
                self.server_dropped = true;
                self.server.handle_transport_closed(self.now);
            }
            if !moved {
                return;
            }
        }
    }

    /// Settles, then jumps to the next deadline of either session; `false` when none is left
    /// before `limit` (time since the start).
    fn step(&mut self, limit: Duration) -> bool {
        self.settle();
        let client_deadline = (!self.client_frozen && !self.client_dropped)
            .then(|| self.client.poll_timeout())
            .flatten();
        let next = [self.server.poll_timeout(), client_deadline]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(next) if next <= self.start + limit => {
                self.now = self.now.max(next);
                self.server.handle_timeout(self.now);
                if !self.client_frozen && !self.client_dropped {
                    self.client.handle_timeout(self.now);
                }
                self.settle();
                true
            }
            _ => false,
        }
    }

    /// Runs every deadline within `duration`, then moves the clock to its end.
    fn run_for(&mut self, duration: Duration) {
        let target = self.elapsed() + duration;
        while self.step(target) {}
        self.now = self.now.max(self.start + target);
        self.settle();
    }

    fn run_to_end(&mut self, limit: Duration) {
        while self.step(limit) {}
        self.settle();
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

fn open(link: Handshake) -> Box<Link> {
    match link {
        Handshake::Open(link) => link,
        Handshake::Refused(status, outcome, _) => panic!("refused: {status} {outcome:?}"),
    }
}

fn email(n: u64) -> InboxEvent {
    InboxEvent::EmailReceived(EmailReceived::new(
        "ada@example.com",
        format!("#{n}"),
        Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
    ))
}

#[test]
fn custom_transport_hours_of_heartbeat_in_virtual_time() {
    let client = ClientSession::new(
        client_config("msk_example_alice_key", AuthStyle::Query),
        Channel::Inbox,
        SEED,
    );
    let mut link = open(Link::connect(client, RejectionStyle::Http));
    // Two hours with an event every now and then: a ping every 30 s, each answered.
    for n in 0..24 {
        link.server.enqueue(email(n).encode(), link.now).unwrap();
        link.run_for(Duration::from_secs(300));
    }
    assert!(link.elapsed() >= Duration::from_secs(2 * 3600));
    assert_eq!(link.pings, 240, "one ping every 30 s");
    assert_eq!(link.server.state(), SessionState::Open);
    assert_eq!(link.client.state(), ClientState::Open);
    let expected: Vec<Event> = (0..24).map(|n| Event::Inbox(email(n))).collect();
    assert_eq!(link.client_events, expected);

    // The client's process hangs: no more pongs. 30 s after the next ping, close 1001; 5 s
    // later the server drops the transport.
    link.client_frozen = true;
    let frozen_at = link.elapsed();
    link.run_to_end(frozen_at + Duration::from_secs(120));
    let end = link.server_end.clone().expect("the server gave up");
    assert_eq!(end.cause, CloseCause::HeartbeatTimeout);
    assert_eq!(end.sent_code, Some(CloseCode::GoingAway));
    assert_eq!(end.ending, Ending::GraceExpired);
    let gave_up_after = link.elapsed() - frozen_at;
    assert!(
        gave_up_after <= Duration::from_secs(30 + 30 + 5),
        "{gave_up_after:?}"
    );
    assert!(
        gave_up_after >= Duration::from_secs(30 + 5),
        "{gave_up_after:?}"
    );

    // The client wakes up: it reads the 1001 the server left, and is advised to reconnect.
    link.client_frozen = false;
    link.settle();
    assert_eq!(
        link.client_end.as_ref().map(|(d, _)| d.clone()),
        Some(Disconnect::Closed(CloseCode::GoingAway))
    );
    assert!(matches!(
        link.client_end,
        Some((
            _,
            ClientOutcome::Reconnect {
                pace: Pace::Normal,
                ..
            }
        ))
    ));
    // Another connection of the same session: a new handshake over a new transport.
    let client = std::mem::replace(
        &mut link.client,
        ClientSession::new(
            client_config("msk_example_alice_key", AuthStyle::Query),
            Channel::Inbox,
            SEED,
        ),
    );
    assert_eq!(client.state(), ClientState::Idle);
    let mut again = open(Link::connect(client, RejectionStyle::Http));
    again.server.enqueue(email(99).encode(), again.now).unwrap();
    again.settle();
    assert_eq!(again.client_events, vec![Event::Inbox(email(99))]);
}

#[test]
fn custom_transport_campaign_finishes_after_the_terminal_event() {
    let client = ClientSession::new(
        client_config("msk_example_alice_key", AuthStyle::Header),
        Channel::Campaign(CampaignId::new("spring-sale").unwrap()),
        SEED,
    );
    let mut link = open(Link::connect(client, RejectionStyle::Http));
    let events = example::campaign_events(&cid("spring-sale"), 3);
    // Queued faster than sent: the progress updates coalesce into the latest.
    for event in &events {
        link.server.enqueue(event.encode(), link.now).unwrap();
    }
    link.run_to_end(Duration::from_secs(60));
    let last_progress = events[events.len() - 2].clone();
    let terminal = events[events.len() - 1].clone();
    assert_eq!(
        link.client_events,
        vec![Event::Campaign(last_progress), Event::Campaign(terminal)]
    );
    assert_eq!(
        link.client_end,
        Some((Disconnect::Closed(CloseCode::Normal), ClientOutcome::Finish))
    );
    assert_eq!(link.client.state(), ClientState::Done);
    let end = link.server_end.expect("closed");
    assert_eq!(
        (end.cause, end.ending),
        (CloseCause::Finished, Ending::Handshake)
    );
    // The channel is over: nothing more is accepted.
    let late = CampaignEvent::Progress(Progress::new(cid("spring-sale"), 1, 1, 1, 0, 0));
    assert!(link.server.enqueue(late.encode(), link.now).is_err());
}

#[test]
fn custom_transport_refusals_and_revocation_reach_the_client() {
    // HTTP style: the client reads the 403 and its body, and stops.
    let client = ClientSession::new(
        client_config("msk_example_mallory_key", AuthStyle::Header),
        Channel::Inbox,
        SEED,
    );
    match Link::connect(client, RejectionStyle::Http) {
        Handshake::Refused(status, outcome, error) => {
            assert_eq!(status, 403);
            assert_eq!(outcome, ClientOutcome::Stop(Fatal::HandshakeForbidden));
            assert_eq!(error.as_deref(), Some("unauthorized"));
        }
        Handshake::Open(_) => panic!("upgraded"),
    }
    // Close-after-upgrade style: a session that only closes with 4401 / 4403.
    for (key, channel, code, fatal) in [
        (
            "msk_example_mallory_key",
            Channel::Inbox,
            CloseCode::Unauthorized,
            Fatal::Unauthorized,
        ),
        (
            "msk_example_alice_key",
            Channel::Campaign(CampaignId::new("not-hers").unwrap()),
            CloseCode::Forbidden,
            Fatal::Forbidden,
        ),
    ] {
        let client = ClientSession::new(client_config(key, AuthStyle::Query), channel, SEED);
        let mut link = open(Link::connect(client, RejectionStyle::CloseAfterUpgrade));
        link.run_to_end(Duration::from_secs(60));
        assert_eq!(
            link.client_end,
            Some((Disconnect::Closed(code), ClientOutcome::Stop(fatal)))
        );
        assert!(link.client_events.is_empty());
        let end = link.server_end.expect("closed");
        assert_eq!(end.cause, CloseCause::Rejected);
        assert_eq!(end.ending, Ending::Handshake);
    }
    // Revocation mid-session: queued events are discarded, the client stops.
    let client = ClientSession::new(
        client_config("msk_example_alice_key", AuthStyle::Header),
        Channel::Inbox,
        SEED,
    );
    let mut link = open(Link::connect(client, RejectionStyle::Http));
    link.server.enqueue(email(1).encode(), link.now).unwrap();
    link.settle();
    link.server.enqueue(email(2).encode(), link.now).unwrap();
    link.server
        .revoke(CloseCode::Unauthorized, link.now)
        .unwrap();
    link.run_to_end(Duration::from_secs(60));
    assert_eq!(link.client_events, vec![Event::Inbox(email(1))]);
    assert_eq!(
        link.client_end,
        Some((
            Disconnect::Closed(CloseCode::Unauthorized),
            ClientOutcome::Stop(Fatal::Unauthorized)
        ))
    );
    assert_eq!(link.server_end.map(|e| e.unsent_events), Some(1));
}

/// A campaign id from a literal the test knows to be valid.
fn cid(id: &str) -> misar_proto::route::CampaignId {
    misar_proto::route::CampaignId::new(id).expect("a valid campaign id")
}
