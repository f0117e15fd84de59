//! Server and client sessions together on the deterministic `Pair` harness: heartbeat,
//! close codes and the client's advice, slow consumers, half-open connections. Virtual time
//! only; every duration below is exact.

use std::time::{Duration, Instant};

use bytes::Bytes;
use misar_proto::client::ClientSession;
use misar_proto::client::{ClientEvent, ClientOutcome, ClientState};
use misar_proto::close::{CloseCode, CloseFrame, Disconnect, Fatal, Pace};
use misar_proto::event::{
    CampaignEvent, Completed, EmailReceived, EncodedEvent, Event, InboxEvent, Progress, Timestamp,
    UnknownEvent,
};
use misar_proto::handshake::{self, HandshakeConfig, RejectAction, RejectionStyle, Step};
use misar_proto::message::Incoming;
use misar_proto::route::{CampaignId, Channel};
use misar_proto::server::{CloseCause, Ending, ServerConfig, ServerSession, SessionState};
use misar_proto::testing::{PAIR_JITTER_SEED, Pair};

/// The origin of virtual time (any instant will do; this is the only clock read).
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn campaign() -> Channel {
    Channel::Campaign(CampaignId::new("spring-sale").unwrap())
}

fn pair(channel: Channel) -> Pair {
    Pair::new(
        ServerConfig::default(),
        Pair::client_config(),
        channel,
        origin(),
    )
}

fn progress(sent: u64) -> EncodedEvent {
    CampaignEvent::Progress(Progress::new(cid("spring-sale"), sent, 1000, sent, 0, 0)).encode()
}

fn completed() -> EncodedEvent {
    CampaignEvent::Completed(
        Completed::new(cid("spring-sale"), 1000, 990, 10, 400)
            .with_completed_at(Timestamp::parse("2026-05-27T11:00:00Z").unwrap()),
    )
    .encode()
}

/// An event type from a newer server: ordinary (never coalesced, never dropped).
fn unknown(n: u64) -> EncodedEvent {
    let raw = format!(r#"{{"type":"delivery_paused","n":{n}}}"#);
    CampaignEvent::Unknown(UnknownEvent::new("delivery_paused", Bytes::from(raw))).encode()
}

fn email(subject: &str) -> EncodedEvent {
    InboxEvent::EmailReceived(EmailReceived::new(
        "ana@example.com",
        subject,
        Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
    ))
    .encode()
}

/// The decoded events the client reported, in order.
fn client_events(pair: &Pair) -> Vec<Event> {
    pair.client_events()
        .iter()
        .filter_map(|(_, e)| match e {
            ClientEvent::Event(event) => Some(event.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn pings_exactly_every_interval_and_each_is_answered() {
    let mut pair = pair(Channel::Inbox);
    pair.run_for(secs(301));
    let expected: Vec<Duration> = (1..=10).map(|k| secs(30 * k)).collect();
    assert_eq!(pair.ping_times(), expected);
    let pongs: Vec<Duration> = pair.client_sent().iter().map(|(at, _)| *at).collect();
    assert_eq!(pongs, expected);
    assert_eq!(pair.server().state(), SessionState::Open);
}

#[test]
fn pings_follow_a_shrunk_interval() {
    let config = ServerConfig {
        ping_interval: Duration::from_millis(20),
        pong_timeout: Duration::from_millis(50),
        ..ServerConfig::default()
    };
    let mut client = Pair::client_config();
    client.ping_interval = config.ping_interval;
    client.pong_timeout = config.pong_timeout;
    let mut pair = Pair::new(config, client, Channel::Inbox, origin());
    pair.run_for(Duration::from_millis(100));
    let expected: Vec<Duration> = (1..=5).map(|k| Duration::from_millis(20 * k)).collect();
    assert_eq!(pair.ping_times(), expected);
}

#[test]
fn silent_client_is_closed_1001_at_ping_plus_timeout_then_dropped_after_grace() {
    let mut pair = pair(Channel::Inbox);
    pair.silence_client();
    pair.run_to_end(secs(600));
    // With the default 30 s / 30 s the deadline of the first ping coincides with the second
    // ping: the close goes out instead of it.
    assert_eq!(pair.ping_times(), [secs(30)]);
    assert_eq!(
        pair.server_closes(),
        [(secs(60), Some(CloseCode::GoingAway))]
    );
    assert_eq!(pair.server_dropped_at(), Some(secs(65)));
    let (at, summary) = pair.server_closed().unwrap();
    assert_eq!(*at, secs(65));
    assert_eq!(summary.cause, CloseCause::HeartbeatTimeout);
    assert_eq!(summary.ending, Ending::GraceExpired);
    // The client got the close and was advised to come back.
    let (at, disconnect, outcome) = pair.client_disconnect().unwrap();
    assert_eq!(at, secs(60));
    assert_eq!(disconnect, Disconnect::Closed(CloseCode::GoingAway));
    assert!(matches!(
        outcome,
        ClientOutcome::Reconnect {
            pace: Pace::Normal,
            ..
        }
    ));
}

#[test]
fn silent_client_with_distinct_interval_and_timeout() {
    let config = ServerConfig {
        ping_interval: secs(10),
        pong_timeout: secs(25),
        close_grace: secs(3),
        ..ServerConfig::default()
    };
    let mut client = Pair::client_config();
    client.ping_interval = secs(10);
    client.pong_timeout = secs(25);
    let mut pair = Pair::new(config, client, Channel::Inbox, origin());
    pair.silence_client();
    pair.run_to_end(secs(600));
    // Pings at 10, 20, 30; the first one's deadline (10 + 25) closes.
    assert_eq!(pair.ping_times(), [secs(10), secs(20), secs(30)]);
    assert_eq!(
        pair.server_closes(),
        [(secs(35), Some(CloseCode::GoingAway))]
    );
    assert_eq!(pair.server_dropped_at(), Some(secs(38)));
}

#[test]
fn a_client_that_falls_silent_later_is_closed_relative_to_its_last_pong() {
    let mut pair = pair(Channel::Inbox);
    pair.run_for(secs(100)); // pongs at 30, 60, 90
    pair.silence_client();
    pair.run_to_end(secs(600));
    // The ping at 120 goes unanswered; its deadline is 150.
    assert_eq!(
        pair.server_closes(),
        [(secs(150), Some(CloseCode::GoingAway))]
    );
    assert_eq!(pair.server_dropped_at(), Some(secs(155)));
}

#[test]
fn polite_client_is_alive_after_24_virtual_hours() {
    let mut pair = pair(Channel::Inbox);
    pair.run_for(secs(24 * 3600));
    assert_eq!(pair.elapsed(), secs(24 * 3600));
    assert_eq!(pair.server().state(), SessionState::Open);
    assert_eq!(pair.client().state(), ClientState::Open);
    assert_eq!(pair.ping_times().len(), 24 * 120);
    assert!(pair.server_closes().is_empty());
    assert!(pair.client_events().is_empty());
}

#[test]
fn events_reach_the_client_decoded_and_in_order() {
    let mut pair = pair(Channel::Inbox);
    for subject in ["one", "two", "three"] {
        pair.enqueue(email(subject)).unwrap();
    }
    pair.settle();
    let subjects: Vec<String> = client_events(&pair)
        .into_iter()
        .map(|e| match e {
            Event::Inbox(InboxEvent::EmailReceived(e)) => e.subject,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(subjects, ["one", "two", "three"]);
}

#[test]
fn shutdown_closes_1001_and_the_client_advises_a_jittered_reconnect() {
    let mut delays = Vec::new();
    for seed in 0..20 {
        let client = ClientSession::new(Pair::client_config(), Channel::Inbox, seed);
        let mut pair = Pair::connect(client, ServerConfig::default(), origin()).unwrap();
        pair.run_for(secs(45));
        pair.shutdown();
        assert!(pair.run_to_end(secs(10)));
        assert_eq!(
            pair.server_closes(),
            [(secs(45), Some(CloseCode::GoingAway))]
        );
        let (at, disconnect, outcome) = pair.client_disconnect().unwrap();
        assert_eq!(at, secs(45));
        assert_eq!(disconnect, Disconnect::Closed(CloseCode::GoingAway));
        let ClientOutcome::Reconnect { delay, pace } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(pace, Pace::Normal);
        // Up for 45 s > one ping interval: the backoff was reset, so the window is the base.
        assert!(delay <= Duration::from_millis(500), "{delay:?}");
        delays.push(delay);
        // The client echoed the close: a clean close handshake, dropped at once.
        let (closed_at, summary) = pair.server_closed().unwrap();
        assert_eq!(*closed_at, secs(45));
        assert_eq!(summary.cause, CloseCause::Shutdown);
        assert_eq!(summary.ending, Ending::Handshake);
    }
    delays.sort();
    delays.dedup();
    assert!(delays.len() >= 15, "jitter spreads the clients: {delays:?}");
}

#[test]
fn reconnect_after_shutdown_serves_again() {
    let mut pair = pair(Channel::Inbox);
    pair.run_for(secs(10));
    pair.shutdown();
    pair.run_to_end(secs(10));
    let Some((_, _, ClientOutcome::Reconnect { delay, .. })) = pair.client_disconnect() else {
        panic!("expected a reconnect")
    };
    pair.run_for(delay);
    pair.reconnect(ServerConfig::default()).unwrap();
    let reconnected_at = pair.elapsed();
    pair.enqueue(email("after restart")).unwrap();
    pair.run_for(secs(31));
    assert_eq!(pair.client().state(), ClientState::Open);
    assert_eq!(client_events(&pair).len(), 1);
    assert_eq!(pair.ping_times(), [reconnected_at + secs(30)]);
}

#[test]
fn revoke_4401_stops_the_client() {
    let mut pair = pair(Channel::Inbox);
    pair.enqueue(email("not for you anymore")).unwrap();
    pair.revoke(CloseCode::Unauthorized).unwrap();
    pair.run_to_end(secs(10));
    assert!(
        client_events(&pair).is_empty(),
        "revocation discards queued events"
    );
    assert_eq!(
        pair.server_closes(),
        [(secs(0), Some(CloseCode::Unauthorized))]
    );
    let (_, disconnect, outcome) = pair.client_disconnect().unwrap();
    assert_eq!(disconnect, Disconnect::Closed(CloseCode::Unauthorized));
    assert_eq!(outcome, ClientOutcome::Stop(Fatal::Unauthorized));
    assert_eq!(pair.client().state(), ClientState::Done);
    assert!(pair.client().handshake_request().is_err());
}

#[test]
fn revoke_4403_stops_a_campaign_subscriber() {
    let mut pair = pair(campaign());
    pair.revoke(CloseCode::Forbidden).unwrap();
    pair.run_to_end(secs(10));
    let (_, _, outcome) = pair.client_disconnect().unwrap();
    assert_eq!(outcome, ClientOutcome::Stop(Fatal::Forbidden));
}

#[test]
fn terminal_event_closes_1000_and_the_client_finishes() {
    let mut pair = pair(campaign());
    pair.run_for(secs(5));
    pair.enqueue(progress(500)).unwrap();
    pair.enqueue(completed()).unwrap();
    assert!(pair.run_to_end(secs(10)));
    let events = client_events(&pair);
    assert!(matches!(events[0], Event::Campaign(CampaignEvent::Progress(ref p)) if p.sent == 500));
    assert!(matches!(
        events[1],
        Event::Campaign(CampaignEvent::Completed(_))
    ));
    assert_eq!(events.len(), 2);
    assert!(pair.client().saw_terminal_event());
    assert_eq!(pair.server_closes(), [(secs(5), Some(CloseCode::Normal))]);
    let (_, disconnect, outcome) = pair.client_disconnect().unwrap();
    assert_eq!(disconnect, Disconnect::Closed(CloseCode::Normal));
    assert_eq!(outcome, ClientOutcome::Finish);
    assert_eq!(pair.client().state(), ClientState::Done);
    let (_, summary) = pair.server_closed().unwrap();
    assert_eq!(summary.cause, CloseCause::Finished);
    assert_eq!(summary.ending, Ending::Handshake);
    assert_eq!(summary.events_sent, 2);
}

#[test]
fn a_1000_without_a_terminal_event_is_no_finish_the_campaign_client_reconnects() {
    let mut pair = pair(campaign());
    pair.run_for(secs(5));
    pair.enqueue(progress(500)).unwrap();
    pair.run_for(secs(1));
    // Something in between (a proxy, a load balancer draining) closes with 1000.
    let now = pair.now();
    pair.server_mut()
        .close(CloseFrame::new(CloseCode::Normal), now);
    assert!(pair.run_to_end(secs(10)));
    assert_eq!(pair.server_closes(), [(secs(6), Some(CloseCode::Normal))]);
    assert!(!pair.client().saw_terminal_event());
    let (at, disconnect, outcome) = pair.client_disconnect().unwrap();
    assert_eq!(at, secs(6));
    assert_eq!(disconnect, Disconnect::Closed(CloseCode::Normal));
    let ClientOutcome::Reconnect { delay, pace } = outcome else {
        panic!("a 1000 without a terminal event must reconnect: {outcome:?}")
    };
    assert_eq!(pace, Pace::Normal);
    // The first attempt's window (the backoff's base), as after any other lost connection.
    assert!(delay <= Duration::from_millis(500), "{delay:?}");
    assert_eq!(pair.client().state(), ClientState::Idle);

    // It comes back after the delay, gets the campaign's end, and only then finishes.
    pair.run_for(delay);
    pair.reconnect(ServerConfig::default()).unwrap();
    pair.enqueue(completed()).unwrap();
    assert!(pair.run_to_end(secs(10)));
    let (_, disconnect, outcome) = pair.client_disconnect().unwrap();
    assert_eq!(disconnect, Disconnect::Closed(CloseCode::Normal));
    assert_eq!(outcome, ClientOutcome::Finish);
    assert_eq!(pair.client().state(), ClientState::Done);
    let events = client_events(&pair);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(
        events[1],
        Event::Campaign(CampaignEvent::Completed(_))
    ));
}

#[test]
fn slow_consumer_gets_coalesced_progress_then_1013() {
    let config = ServerConfig {
        max_queued_events: 8,
        ..ServerConfig::default()
    };
    let mut pair = Pair::new(config, Pair::client_config(), campaign(), origin());
    // The socket is full: 100 progress updates coalesce into the newest.
    pair.block_server_writes(true);
    for sent in 1..=100 {
        pair.enqueue(progress(sent)).unwrap();
    }
    assert_eq!(pair.server().queued_events(), 1);
    pair.block_server_writes(false);
    pair.settle();
    let sent: Vec<u64> = client_events(&pair)
        .into_iter()
        .map(|e| match e {
            Event::Campaign(CampaignEvent::Progress(p)) => p.sent,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sent, [100]);

    // Blocked again: ordinary events cannot coalesce, and the ninth overflows.
    pair.block_server_writes(true);
    pair.enqueue(progress(101)).unwrap();
    for n in 0..7 {
        pair.enqueue(unknown(n)).unwrap();
    }
    assert!(pair.enqueue(unknown(7)).is_err());
    assert_eq!(
        pair.server().queued_events(),
        0,
        "the queue is freed at once"
    );
    pair.block_server_writes(false);
    pair.run_to_end(secs(10));
    assert_eq!(client_events(&pair).len(), 1, "nothing more was delivered");
    assert_eq!(
        pair.server_closes(),
        [(secs(0), Some(CloseCode::TryAgainLater))]
    );
    let (_, summary) = pair.server_closed().unwrap();
    assert_eq!(summary.cause, CloseCause::SlowConsumer);
    assert_eq!(summary.unsent_events, 8);
    let (_, _, outcome) = pair.client_disconnect().unwrap();
    assert!(matches!(
        outcome,
        ClientOutcome::Reconnect {
            pace: Pace::Longer,
            ..
        }
    ));
}

#[test]
fn half_open_server_is_declared_dead_at_interval_plus_timeout() {
    let mut pair = pair(Channel::Inbox);
    pair.half_open_server();
    pair.run_until(secs(600), |p| p.client().state() != ClientState::Open);
    let (at, disconnect, outcome) = pair.client_disconnect().unwrap();
    assert_eq!(at, secs(60));
    assert_eq!(disconnect, Disconnect::Dropped);
    assert!(matches!(
        outcome,
        ClientOutcome::Reconnect {
            pace: Pace::Normal,
            ..
        }
    ));
    // The server sent its ping at 30 into the void, and does not know yet.
    assert_eq!(pair.ping_times(), [secs(30)]);
}

#[test]
fn half_open_later_counts_from_the_last_message_received() {
    let mut pair = pair(Channel::Inbox);
    pair.run_for(secs(95)); // pings received at 30, 60, 90
    pair.half_open_server();
    pair.run_until(secs(600), |p| p.client().state() != ClientState::Open);
    assert_eq!(pair.client_disconnect().unwrap().0, secs(150));
}

#[test]
fn oversized_client_message_closes_1009() {
    let mut pair = pair(Channel::Inbox);
    pair.inject_to_server(Incoming::Text(Bytes::from(vec![b'x'; 4096])));
    pair.settle();
    assert_eq!(pair.server().state(), SessionState::Open);
    pair.inject_to_server(Incoming::Text(Bytes::from(vec![b'x'; 4097])));
    pair.run_to_end(secs(10));
    assert_eq!(
        pair.server_closes(),
        [(secs(0), Some(CloseCode::MessageTooBig))]
    );
    let (_, _, outcome) = pair.client_disconnect().unwrap();
    assert!(matches!(
        outcome,
        ClientOutcome::Reconnect {
            pace: Pace::Normal,
            ..
        }
    ));
}

#[test]
fn message_flood_closes_1008() {
    let mut pair = pair(Channel::Inbox);
    for _ in 0..17 {
        pair.inject_to_server(Incoming::Text(Bytes::from_static(b"hello?")));
    }
    pair.run_to_end(secs(10));
    assert_eq!(
        pair.server_closes(),
        [(secs(0), Some(CloseCode::PolicyViolation))]
    );
    assert_eq!(
        pair.server_closed().unwrap().1.cause,
        CloseCause::TooManyMessages
    );
}

#[test]
fn close_after_upgrade_session_only_sends_its_code() {
    let config = HandshakeConfig::default().with_rejection_style(RejectionStyle::CloseAfterUpgrade);
    let head = http::Request::get("/mail/ws/inbox?token=msk_revoked_key")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let Step::NeedsAuthentication(question) = handshake::start(&config, &head) else {
        panic!("a well-formed key is asked about")
    };
    let RejectAction::UpgradeThenClose(close) = question.unknown_key().action() else {
        panic!("CloseAfterUpgrade style")
    };
    let t0 = origin();
    let server = ServerSession::rejected(close, ServerConfig::default(), t0);
    let client = ClientSession::new(Pair::client_config(), Channel::Inbox, PAIR_JITTER_SEED);
    let mut pair = Pair::from_sessions(server, client, t0);
    pair.enqueue(email("never sent")).unwrap_err();
    pair.run_to_end(secs(60));
    assert_eq!(pair.server_sent().len(), 1, "{:?}", pair.server_sent());
    assert_eq!(
        pair.server_closes(),
        [(secs(0), Some(CloseCode::Unauthorized))]
    );
    assert!(pair.ping_times().is_empty());
    let (_, summary) = pair.server_closed().unwrap();
    assert_eq!(summary.cause, CloseCause::Rejected);
    assert_eq!(summary.ending, Ending::Handshake);
    let (_, _, outcome) = pair.client_disconnect().unwrap();
    assert_eq!(outcome, ClientOutcome::Stop(Fatal::Unauthorized));
}

#[test]
fn killed_transport_ends_both_sides() {
    let mut pair = pair(Channel::Inbox);
    pair.run_for(secs(40));
    pair.enqueue(email("lost")).unwrap();
    pair.kill_transport();
    pair.settle();
    let (_, summary) = pair.server_closed().unwrap();
    assert_eq!(summary.cause, CloseCause::TransportClosed);
    assert_eq!(summary.unsent_events, 1);
    assert!(!summary.close_sent);
    let (at, disconnect, outcome) = pair.client_disconnect().unwrap();
    assert_eq!((at, disconnect), (secs(40), Disconnect::Dropped));
    assert!(matches!(outcome, ClientOutcome::Reconnect { .. }));
}

#[test]
fn client_close_is_answered_by_the_server() {
    let mut pair = pair(Channel::Inbox);
    pair.run_for(secs(3));
    pair.client_close();
    assert!(pair.run_to_end(secs(10)));
    let (_, summary) = pair.server_closed().unwrap();
    assert_eq!(summary.cause, CloseCause::PeerClosed);
    assert_eq!(summary.ending, Ending::Handshake);
    assert_eq!(pair.server_closes(), [(secs(3), Some(CloseCode::Normal))]);
    let (_, disconnect, outcome) = pair.client_disconnect().unwrap();
    assert_eq!(disconnect, Disconnect::Closed(CloseCode::Normal));
    assert_eq!(outcome, ClientOutcome::Finish);
}

#[test]
fn query_style_clients_are_accepted_too() {
    let mut config = Pair::client_config();
    config.auth = misar_proto::client::AuthStyle::Query;
    let mut pair = Pair::new(ServerConfig::default(), config, campaign(), origin());
    assert_eq!(
        pair.server().credential_source(),
        Some(misar_proto::auth::CredentialSource::Query)
    );
    assert_eq!(
        pair.server().campaign().map(CampaignId::as_str),
        Some("spring-sale")
    );
    pair.run_for(secs(31));
    assert_eq!(pair.ping_times().len(), 1);
}

// ----- the fan-out table's rules, end to end through both sessions -----

mod table {
    use super::*;
    use misar_proto::auth::AccountId;
    use misar_proto::streams::{
        PublishError, PublishRules, StreamKey, Streams, StreamsConfig, SubscribeError,
        validate_relayed,
    };
    use misar_proto::testing::PAIR_ACCOUNT;

    fn key() -> StreamKey {
        StreamKey::Campaign(CampaignId::new("spring-sale").unwrap())
    }

    fn account() -> AccountId {
        AccountId::from(PAIR_ACCOUNT)
    }

    fn table() -> Streams<u32> {
        Streams::new(StreamsConfig::default(), misar_proto::testing::test_epoch()).unwrap()
    }

    fn completed_event() -> CampaignEvent {
        misar_proto::event::decode_campaign(completed().bytes()).unwrap()
    }

    fn progress_event(sent: u64) -> CampaignEvent {
        misar_proto::event::decode_campaign(progress(sent).bytes()).unwrap()
    }

    #[test]
    fn a_late_joiner_of_a_finished_campaign_gets_the_terminal_event_and_finishes() {
        let t0 = origin();
        let mut t = table();
        let id = CampaignId::new("spring-sale").unwrap();
        let _ = t.publish_campaign(&id, &progress_event(10), t0).unwrap();
        let done = t.publish_campaign(&id, &completed_event(), t0).unwrap();
        // The stray progress of the worker race is refused: it never reaches anyone.
        assert!(matches!(
            t.publish_campaign(&id, &progress_event(20), t0),
            Err(PublishError::Finished { .. })
        ));
        let joined = t.subscribe(&account(), &key(), t.mark(), 1, t0).unwrap();
        assert_eq!(joined.first.as_ref(), Some(&done.event));
        let mut pair = pair(campaign());
        pair.enqueue(joined.first.unwrap()).unwrap();
        assert!(pair.run_to_end(secs(10)));
        assert_eq!(client_events(&pair), [Event::Campaign(completed_event())]);
        let (_, disconnect, outcome) = pair.client_disconnect().unwrap();
        assert_eq!(disconnect, Disconnect::Closed(CloseCode::Normal));
        assert_eq!(outcome, ClientOutcome::Finish);
    }

    #[test]
    fn a_revocation_racing_the_hooks_stops_the_client() {
        let t0 = origin();
        let mut t = table();
        let mark = t.mark();
        let _ = t.revoke_campaign(&CampaignId::new("spring-sale").unwrap(), t0);
        let joined = t.subscribe(&account(), &key(), mark, 1, t0).unwrap();
        assert_eq!(joined.revoked, Some(CloseCode::Forbidden));
        let mut pair = pair(campaign());
        pair.revoke(joined.revoked.unwrap()).unwrap();
        assert!(pair.run_to_end(secs(10)));
        let (_, disconnect, outcome) = pair.client_disconnect().unwrap();
        assert_eq!(disconnect, Disconnect::Closed(CloseCode::Forbidden));
        assert_eq!(outcome, ClientOutcome::Stop(Fatal::Forbidden));
        assert!(pair.server_texts().is_empty());
    }

    #[test]
    fn limits_oversize_and_newer_types() {
        let t0 = origin();
        let mut t = Streams::<u32>::new(
            StreamsConfig {
                max_connections_per_account: 1,
                publish: PublishRules {
                    max_event_bytes: 200,
                },
                ..StreamsConfig::default()
            },
            misar_proto::testing::test_epoch(),
        )
        .unwrap();
        let _ = t.subscribe(&account(), &key(), t.mark(), 1, t0).unwrap();
        assert!(matches!(
            t.subscribe(&account(), &key(), t.mark(), 2, t0),
            Err(SubscribeError::TooManyForAccount { limit: 1 })
        ));
        // Over the bound: refused, nothing for anyone.
        let mut pair = pair(campaign());
        let big = CampaignEvent::Failed(misar_proto::event::Failed::new(
            CampaignId::new("spring-sale").unwrap(),
            "x".repeat(300),
        ));
        let id = CampaignId::new("spring-sale").unwrap();
        assert!(matches!(
            t.publish_campaign(&id, &big, t0),
            Err(PublishError::TooLarge { max: 200, .. })
        ));
        // A newer node's event type, relayed: forwarded unchanged, decoded as unknown.
        let newer = unknown(7);
        let relayed = validate_relayed(&key(), newer.bytes().clone(), &t.config().publish).unwrap();
        let delivery = t.deliver(&key(), relayed, t0).unwrap();
        assert_eq!(delivery.recipients, [1]);
        pair.enqueue(delivery.event).unwrap();
        pair.run_for(secs(1));
        assert_eq!(pair.server_texts(), [newer.bytes().clone()]);
        assert!(pair.client_events().iter().any(|(_, e)| matches!(
            e,
            ClientEvent::Event(Event::Campaign(CampaignEvent::Unknown(u))) if u.kind == "delivery_paused"
        )));
    }
}

/// A campaign id from a literal the test knows to be valid.
fn cid(id: &str) -> misar_proto::route::CampaignId {
    misar_proto::route::CampaignId::new(id).expect("a valid campaign id")
}
