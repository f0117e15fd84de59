//! # Bring your own transport
//!
//! The sans-IO core driven over an in-memory transport — two `std::sync::mpsc` channels —
//! with no WebSocket library and no async runtime: the path of users who plug `misar-proto`
//! into another WebSocket implementation, another runtime, or a test harness.
//!
//! A transport only has to carry **whole messages** ([`Message`] out of a session, turned into
//! [`Incoming`] for the other one). A driver only has to follow the **drain rule**: after every
//! input, drain the session's outputs; then wait for the next input or until the session's
//! `poll_timeout`, and call `handle_timeout`. Time is whatever instant the driver passes in.
//!
//! Here the server thread runs the pre-upgrade handshake (answering the key and ownership
//! questions from tables, comparing keys in constant time), then a [`ServerSession`]; the main
//! thread runs a [`ClientSession`] subscribed to one campaign; a publisher thread plays the
//! application that reports the campaign's progress. The server pings every 50 ms and the
//! client answers; after the terminal event the server closes with 1000 and the client
//! finishes.
//!
//! Run it: `cargo run -p misar-tests --example custom_transport`.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use misar_proto::auth::{AccountId, ApiKey};
use misar_proto::client::{ClientConfig, ClientEvent, ClientOutcome, ClientSession};
use misar_proto::close::Disconnect;
use misar_proto::event::{CampaignEvent, Completed, EncodedEvent, Event, Progress};
use misar_proto::handshake::{self, Accepted, HandshakeConfig, Rejected, Step};
use misar_proto::message::{Incoming, Message, ReceivedClose};
use misar_proto::route::{CampaignId, Channel};
use misar_proto::server::{CloseSummary, ServerConfig, ServerOutput, ServerSession};

/// The embedder's key table (in real life: a database of key hashes).
const KEYS: &[(&str, &str)] = &[
    ("msk_example_alice_key", "alice"),
    ("msk_example_bob_key", "bob"),
];
/// Which account owns which campaign.
const CAMPAIGNS: &[(&str, &str)] = &[("spring-sale", "alice")];

/// What the server's driver waits on: a message from the transport, or a command from the
/// application (one channel, so one blocking `recv_timeout` serves both).
pub enum ServerInput {
    /// A message the client sent.
    Message(Message),
    /// An event the application publishes to this connection.
    Publish(EncodedEvent),
}

/// What happened, for `main` to print and for the test suite to check.
#[derive(Debug)]
pub struct Report {
    /// The events the client received, in order.
    pub events: Vec<Event>,
    /// Pings the server sent that the client saw (and answered).
    pub pings: usize,
    /// How the client's connection ended, and the core's advice.
    pub client_end: Option<(Disconnect, ClientOutcome)>,
    /// The server session's account of the close.
    pub server_end: Option<CloseSummary>,
}

/// A message as the receiving session takes it. `None` for a kind this version of the core
/// does not know (`Message` is non-exhaustive).
pub fn incoming(message: Message) -> Option<Incoming> {
    Some(match message {
        Message::Text(text) => Incoming::Text(text),
        Message::Binary(data) => Incoming::Binary(data),
        Message::Ping(data) => Incoming::Ping(data),
        Message::Pong(data) => Incoming::Pong(data),
        Message::Close(frame) => Incoming::Close(match frame {
            Some(frame) => ReceivedClose {
                code: Some(frame.code.as_u16()),
                reason: frame.reason.as_str().to_owned().into(),
            },
            None => ReceivedClose {
                code: None,
                reason: Default::default(),
            },
        }),
        _ => return None,
    })
}

/// The pre-upgrade decision: the core asks, the tables answer.
pub fn decide(request: &http::request::Parts) -> Result<Accepted, Rejected> {
    let mut step = handshake::start(&HandshakeConfig::default(), request);
    loop {
        step = match step {
            Step::NeedsAuthentication(question) => {
                // Every stored key is compared, in constant time, whatever matched (§2.10).
                let mut account = None;
                for (stored, owner) in KEYS {
                    if question.key().ct_eq_str(stored) && account.is_none() {
                        account = Some(AccountId::from(*owner));
                    }
                }
                match account {
                    Some(account) => question.authenticated(account),
                    None => Step::Rejected(question.unknown_key()),
                }
            }
            Step::NeedsOwnership(question) => {
                // An unknown campaign gets the same answer as a foreign one.
                let owned = CAMPAIGNS.iter().any(|(campaign, owner)| {
                    question.campaign().as_str() == *campaign
                        && question.account().as_str() == *owner
                });
                if owned {
                    Step::Accepted(question.grant())
                } else {
                    Step::Rejected(question.deny())
                }
            }
            Step::Accepted(accepted) => return Ok(accepted),
            Step::Rejected(rejected) => return Err(rejected),
        }
    }
}

/// The server's connection driver: the drain rule over the channels. Dropping `to_client` is
/// how this transport closes its "socket".
pub fn drive_server(
    mut session: ServerSession,
    input: Receiver<ServerInput>,
    to_client: Sender<Message>,
) -> CloseSummary {
    let mut to_client = Some(to_client);
    loop {
        // 1. Drain every output.
        while let Some(output) = session.poll_output() {
            match output {
                ServerOutput::Transmit(message) => {
                    if let Some(to_client) = &to_client {
                        // A send to a client that is gone is lost, as on a socket.
                        let _ = to_client.send(message);
                    }
                }
                ServerOutput::DropTransport => to_client = None,
                ServerOutput::Closed(summary) => return summary,
                _ => {}
            }
        }
        // 2. Wait for an input or the session's next deadline.
        let wait = session
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |deadline| {
                deadline.saturating_duration_since(Instant::now())
            });
        match input.recv_timeout(wait) {
            Ok(ServerInput::Message(message)) => {
                if let Some(message) = incoming(message) {
                    session.handle_message(message, Instant::now());
                }
            }
            Ok(ServerInput::Publish(event)) => {
                // An overflow makes the session close with 1013 by itself.
                let _ = session.enqueue(event, Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => session.handle_timeout(Instant::now()),
            Err(RecvTimeoutError::Disconnected) => session.handle_transport_closed(Instant::now()),
        }
    }
}

/// The client's driver: the same rule, plus acting on the session's events.
pub fn drive_client(
    client: &mut ClientSession,
    from_server: &Receiver<Message>,
    to_server: &Sender<ServerInput>,
    report: &mut Report,
) {
    loop {
        while let Some(message) = client.poll_transmit() {
            let _ = to_server.send(ServerInput::Message(message));
        }
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Event(event) => report.events.push(event),
                ClientEvent::Invalid(error) => eprintln!("ignored a message: {error}"),
                ClientEvent::Disconnected {
                    disconnect,
                    outcome,
                } => report.client_end = Some((disconnect, outcome)),
                _ => {}
            }
        }
        if report.client_end.is_some() {
            // The session's last words (the echo of the server's close) go out, then the
            // transport is let go.
            while let Some(message) = client.poll_transmit() {
                let _ = to_server.send(ServerInput::Message(message));
            }
            return;
        }
        let wait = client
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |deadline| {
                deadline.saturating_duration_since(Instant::now())
            });
        match from_server.recv_timeout(wait) {
            Ok(message) => {
                report.pings += usize::from(matches!(message, Message::Ping(_)));
                if let Some(message) = incoming(message) {
                    client.handle_message(message, Instant::now());
                }
            }
            Err(RecvTimeoutError::Timeout) => client.handle_timeout(Instant::now()),
            Err(RecvTimeoutError::Disconnected) => client.handle_transport_closed(Instant::now()),
        }
    }
}

/// A seed for the client's reconnect jitter. The core has no random source of its own; any
/// per-client unpredictable value does (here the standard library's OS-seeded hasher keys).
pub fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

/// The campaign's progress as the application publishes it: `steps` updates, then completion.
pub fn campaign_events(campaign: &CampaignId, steps: u64) -> Vec<CampaignEvent> {
    let mut events: Vec<CampaignEvent> = (1..=steps)
        .map(|step| {
            CampaignEvent::Progress(Progress::new(
                campaign.clone(),
                step * 100,
                steps * 100,
                step * 98,
                step * 2,
                step * 40,
            ))
        })
        .collect();
    events.push(CampaignEvent::Completed(Completed::new(
        campaign.clone(),
        steps * 100,
        steps * 98,
        steps * 2,
        steps * 40,
    )));
    events
}

/// Runs the whole exchange: handshake, events, heartbeat, close.
pub fn run() -> Result<Report, String> {
    let key = ApiKey::parse("msk_example_alice_key").map_err(|e| e.to_string())?;
    let campaign = CampaignId::new("spring-sale").map_err(|e| e.to_string())?;
    let config = ClientConfig {
        // The server's heartbeat, so that the client's liveness window matches it.
        ping_interval: Duration::from_millis(50),
        pong_timeout: Duration::from_millis(200),
        ..ClientConfig::new("ws://in-memory.example/mail/ws", key)
    };
    let mut client = ClientSession::new(config, Channel::Campaign(campaign.clone()), jitter_seed());
    let mut report = Report {
        events: Vec::new(),
        pings: 0,
        client_end: None,
        server_end: None,
    };

    // The "HTTP" phase: the request head goes over, the status and body come back.
    let request = client.handshake_request().map_err(|e| e.to_string())?;
    let head = request.into_parts().0;
    let (to_server, server_input) = mpsc::channel::<ServerInput>();
    let (to_client, from_server) = mpsc::channel::<Message>();
    let session = match decide(&head) {
        Ok(accepted) => {
            let server_config = ServerConfig {
                ping_interval: Duration::from_millis(50),
                pong_timeout: Duration::from_millis(200),
                ..ServerConfig::default()
            };
            ServerSession::new(accepted, server_config, Instant::now())
        }
        Err(rejected) => {
            let response = rejected.into_response();
            let failure = client
                .handle_handshake_response(response.status(), response.body(), Instant::now())
                .err()
                .map(|f| format!("refused with {}: {:?}", f.status(), f.outcome()));
            return Err(failure.unwrap_or_else(|| "refused".into()));
        }
    };
    client
        .handle_handshake_response(http::StatusCode::SWITCHING_PROTOCOLS, b"", Instant::now())
        .map_err(|f| format!("status {}", f.status()))?;
    let server = thread::spawn(move || drive_server(session, server_input, to_client));

    // The application publishes the campaign's progress (encoded once each), one update
    // every 20 ms: long enough for the heartbeat to run a few times.
    let publisher = {
        let to_server = to_server.clone();
        thread::spawn(move || {
            for event in campaign_events(&campaign, 10) {
                thread::sleep(Duration::from_millis(20));
                if to_server
                    .send(ServerInput::Publish(event.encode()))
                    .is_err()
                {
                    return;
                }
            }
        })
    };

    drive_client(&mut client, &from_server, &to_server, &mut report);
    drop(to_server);
    publisher.join().map_err(|_| "the publisher panicked")?;
    report.server_end = Some(server.join().map_err(|_| "the server panicked")?);
    Ok(report)
}

fn main() -> Result<(), String> {
    let report = run()?;
    for event in &report.events {
        match event {
            Event::Campaign(CampaignEvent::Progress(p)) => {
                println!("progress: {}/{} sent", p.sent, p.total);
            }
            Event::Campaign(CampaignEvent::Completed(c)) => {
                println!("completed: {} sent, {} delivered", c.sent, c.delivered);
            }
            other => println!("{other:?}"),
        }
    }
    println!("pings answered: {}", report.pings);
    println!("client: {:?}", report.client_end);
    println!("server: {:?}", report.server_end);
    Ok(())
}
