//! # Bring your own transport
//!
//! The core and the hub driven over an in-memory transport — two channels — with no
//! WebSocket library: the path of users who plug `misar-proto` into another WebSocket
//! implementation, another runtime, or a test harness.
//!
//! A transport only has to carry **whole messages** ([`Message`] out of a session, turned into
//! [`Incoming`] with `Incoming::from` for the other one). A driver only has to follow the
//! **drain rule**: after every input, drain the session's outputs; then wait for the next
//! input, the hub's wake-up or the session's `poll_timeout`, and call `handle_timeout`.
//!
//! Here the server runs the pre-upgrade handshake (answering the key and ownership questions
//! from tables, comparing keys in constant time) and subscribes to a [`Hub`], which creates
//! the connection's session; its hand-written driver uses the three pieces of a [`Feed`]
//! (`session`, `notified`, `is_aborted`) instead of `serve_connection`. The main thread runs
//! a [`ClientSession`] subscribed to one campaign with the real clock and `std::sync::mpsc`;
//! a publisher thread plays the application that reports the campaign's progress through
//! `Hub::publish_campaign`. The server pings every 50 ms and the client answers; after the
//! terminal event the server closes with 1000 and the client finishes.
//!
//! Run it: `cargo run -p misar-tests --example custom_transport`.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use misar_proto::auth::{AccountId, ApiKey};
use misar_proto::client::{ClientConfig, ClientEvent, ClientOutcome, ClientSession};
use misar_proto::close::Disconnect;
use misar_proto::event::{CampaignEvent, Completed, Event, Progress};
use misar_proto::handshake::{self, Accepted, HandshakeConfig, Rejected, Step};
use misar_proto::message::{Incoming, Message};
use misar_proto::route::{CampaignId, Channel};
use misar_proto::server::{CloseSummary, ServerConfig, ServerOutput};
use misar_proto_tokio::hub::{Feed, Hub, HubConfig};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// The embedder's key table (in real life: a database of key hashes).
const KEYS: &[(&str, &str)] = &[
    ("msk_example_alice_key", "alice"),
    ("msk_example_bob_key", "bob"),
];
/// Which account owns which campaign.
const CAMPAIGNS: &[(&str, &str)] = &[("spring-sale", "alice")];

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
    /// The server's answer to the client's opt-in to missed-event recovery (§2.11).
    pub resumed: Option<misar_proto::resume::ResumeFrame>,
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

/// Locks the session (a panic elsewhere cannot leave it half-updated).
fn lock(
    session: &Mutex<misar_proto::server::ServerSession>,
) -> MutexGuard<'_, misar_proto::server::ServerSession> {
    session.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The server's connection driver: the drain rule over the channels, woken by the client's
/// messages, the hub (events, revocation, shutdown) and the session's timers. Dropping
/// `to_client` is how this transport closes its "socket".
pub async fn drive_server(
    feed: Feed,
    mut input: UnboundedReceiver<Message>,
    to_client: Sender<Message>,
) -> CloseSummary {
    let mut to_client = Some(to_client);
    let mut input_open = true;
    loop {
        // 1. Drain every output (the hub queues into the same session meanwhile).
        let deadline = {
            let mut session = lock(feed.session());
            if feed.is_aborted() {
                session.handle_transport_closed(Instant::now());
            }
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
            session.poll_timeout()
        };
        // 2. Wait for an input, the hub, or the session's next deadline. (A wake-up that came
        // while we were draining is kept by the `Notify`, so none is lost.)
        let far = Instant::now() + Duration::from_secs(3600);
        let sleep = tokio::time::sleep_until(deadline.unwrap_or(far).into());
        tokio::select! {
            () = feed.notified() => {}
            message = input.recv(), if input_open => match message {
                Some(message) => lock(feed.session()).handle_message(Incoming::from(message), Instant::now()),
                None => {
                    input_open = false;
                    lock(feed.session()).handle_transport_closed(Instant::now());
                }
            },
            () = sleep => lock(feed.session()).handle_timeout(Instant::now()),
        }
    }
}

/// The client's driver: the same rule, plus acting on the session's events.
pub fn drive_client(
    client: &mut ClientSession,
    from_server: &Receiver<Message>,
    to_server: &UnboundedSender<Message>,
    report: &mut Report,
) {
    loop {
        while let Some(message) = client.poll_transmit() {
            let _ = to_server.send(message);
        }
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Event(event) => report.events.push(event),
                // The first frame of an opted-in connection (the default): what follows is
                // everything after the position the client sent (`recovered: true`), or it
                // may have missed events and refetches its state (`recovered: false`).
                ClientEvent::Resumed(frame) => report.resumed = Some(frame),
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
                let _ = to_server.send(message);
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
                client.handle_message(Incoming::from(message), Instant::now());
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
        resumed: None,
    };

    // The "HTTP" phase: the request head goes over, the status and body come back.
    let hub = Hub::new(HubConfig::default());
    let request = client.handshake_request().map_err(|e| e.to_string())?;
    let head = request.into_parts().0;
    let (to_server, server_input) = unbounded_channel::<Message>();
    let (to_client, from_server) = mpsc::channel::<Message>();
    // Before the hooks run: a revocation while they do is not lost.
    let mark = hub.mark();
    let feed = match decide(&head) {
        Ok(accepted) => {
            let server_config = ServerConfig {
                ping_interval: Duration::from_millis(50),
                pong_timeout: Duration::from_millis(200),
                ..ServerConfig::default()
            };
            // Counts the connection and creates its session; a refusal would be an HTTP
            // 429/503 here, before the upgrade.
            hub.subscribe(accepted, mark, &server_config)
                .map_err(|e| e.to_string())?
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
    // The server's side needs a timer and wake-ups: one current-thread runtime, on its thread.
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| e.to_string())
    };
    let server_runtime = runtime()?;
    let server =
        thread::spawn(move || server_runtime.block_on(drive_server(feed, server_input, to_client)));

    // The application publishes the campaign's progress (encoded once each) through the hub,
    // one update every 20 ms: long enough for the heartbeat to run a few times.
    let publisher = {
        let hub = hub.clone();
        let publisher_runtime = runtime()?;
        thread::spawn(move || {
            let campaign = CampaignId::new("spring-sale").expect("a valid id");
            for event in campaign_events(&campaign, 10) {
                thread::sleep(Duration::from_millis(20));
                if publisher_runtime
                    .block_on(hub.publish_campaign(&campaign, &event))
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
