//! The hub over the core's table: §2.13's rules end to end (finished campaigns, the size
//! bound, revocation racing a handshake), and a multi-threaded stress test that checks every
//! delivery.

#[path = "server_support.rs"]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use misar_proto::event::decode_inbox;
use misar_proto::event::{EventClass, InboxEvent};
use misar_proto::message::Message;
use misar_proto::server::{ServerConfig, ServerOutput};
use misar_proto::streams::PublishError as Refusal;
use misar_proto_tokio::hub::{Feed, Hub, HubConfig, PublishError};
use misar_proto_tokio::server::DriverConfig;

use support::*;

fn refusal(result: Result<misar_proto_tokio::hub::PublishReport, PublishError>) -> Refusal {
    match result {
        Err(PublishError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_finished_campaign_refuses_publishes_and_every_late_joiner_gets_its_terminal_event() {
    within(async {
        let hub = Hub::new(HubConfig::default());
        let server = TestServer::with_defaults(hub.clone()).await;
        let id = campaign("c1");
        let done = completed("c1");
        hub.publish_campaign(&id, &done).await.unwrap();
        // The worker race: a stray progress after the terminal event is refused, typed, and
        // so is a second terminal event.
        assert_eq!(
            refusal(hub.publish_campaign(&id, &progress("c1", 999)).await),
            Refusal::Finished {
                campaign: id.clone()
            }
        );
        assert!(matches!(
            refusal(hub.publish_campaign(&id, &completed("c1")).await),
            Refusal::Finished { .. }
        ));
        // Two late joiners: the terminal event, then 1000 (never a wait forever).
        for account in ["a1", "a2"] {
            let mut late = connect(server.addr, "/mail/ws/campaigns/c1", account).await;
            let transcript = read_to_end(&mut late).await;
            assert_eq!(transcript.texts, [campaign_text(&done)]);
            assert_eq!(transcript.close, Some(1000));
        }
        // One serialization per publish that passed validation (the stream refused two after
        // that); no publish reached anyone (the late joiners got the cached terminal event at
        // their subscribe, which is not a publish's delivery).
        let stats = hub.stats();
        assert_eq!((stats.encodes, stats.delivered), (3, 0));
    })
    .await;
}

#[tokio::test]
async fn an_event_over_max_event_bytes_is_refused_before_anything_is_sent() {
    within(async {
        let hub = Hub::new(HubConfig {
            max_event_bytes: 1024,
            ..HubConfig::default()
        });
        let (peer, _task) = serve_mem(
            &hub,
            inbox("a1"),
            ServerConfig::default(),
            DriverConfig::default(),
        );
        let big = email(1, 2000);
        let len = big.encode().len();
        assert_eq!(
            refusal(hub.publish_inbox(&account("a1"), &big).await),
            Refusal::TooLarge { len, max: 1024 }
        );
        let small = email(2, 900);
        assert_eq!(
            hub.publish_inbox(&account("a1"), &small)
                .await
                .unwrap()
                .delivered,
            1
        );
        // The first thing the client gets is the small one: nothing of the big one went out.
        assert_eq!(text(&peer.recv().await), small.encode().bytes());
        // The default bound is 64 KiB.
        assert_eq!(HubConfig::default().max_event_bytes, 64 << 10);
        assert!(
            Hub::try_new(HubConfig {
                max_event_bytes: 0,
                ..HubConfig::default()
            })
            .is_err()
        );
    })
    .await;
}

#[tokio::test]
async fn a_revocation_while_the_hooks_run_closes_the_late_subscriber_at_once() {
    within(async {
        let hub = Hub::new(HubConfig::default());
        // A campaign handshake: the mark, then its hooks answer "owned", then the ownership
        // changes, then it subscribes.
        let mark = hub.mark();
        hub.revoke_campaign(&campaign("c1"));
        let feed = hub
            .subscribe(campaign_request("a1", "c1"), mark, &ServerConfig::default())
            .unwrap();
        // Anything published now does not reach it.
        let _ = hub
            .publish_campaign(&campaign("c1"), &progress("c1", 1))
            .await
            .unwrap();
        let outputs = drain_now(&feed);
        assert_eq!(outputs.len(), 1, "{outputs:?}");
        assert_eq!(close_code(&outputs[0]), 4403);
        // A handshake that began after the revocation is served.
        let fresh = sub(&hub, campaign_request("a2", "c1")).unwrap();
        hub.publish_campaign(&campaign("c1"), &progress("c1", 2))
            .await
            .unwrap();
        let outputs = drain_now(&fresh);
        assert_eq!(
            outputs.iter().map(text).collect::<Vec<_>>(),
            [progress("c1", 2).encode().bytes()]
        );
        // An account revocation during the hooks: 4401.
        let mark = hub.mark();
        hub.revoke(&account("a3"));
        let feed = hub
            .subscribe(inbox("a3"), mark, &ServerConfig::default())
            .unwrap();
        assert_eq!(close_code(&drain_now(&feed)[0]), 4401);
    })
    .await;
}

/// What the session has for the transport right now.
fn drain_now(feed: &Feed) -> Vec<Message> {
    let mut session = feed.session().lock().unwrap();
    std::iter::from_fn(|| session.poll_output())
        .filter_map(|output| match output {
            ServerOutput::Transmit(Message::Ping(_)) => None,
            ServerOutput::Transmit(message) => Some(message),
            _ => None,
        })
        .collect()
}

/// Reads events out of a feed's session as a driver would, until `expected` events came;
/// returns their subjects in the order received.
async fn consume(feed: Feed, expected: usize) -> Vec<String> {
    let mut subjects = Vec::with_capacity(expected);
    while subjects.len() < expected {
        let notified = feed.notified();
        {
            let mut session = feed.session().lock().unwrap();
            while let Some(output) = session.poll_output() {
                if let ServerOutput::Transmit(Message::Text(bytes)) = output {
                    match decode_inbox(&bytes) {
                        Ok(InboxEvent::EmailReceived(e)) => subjects.push(e.subject),
                        other => panic!("not one of ours: {other:?}"),
                    }
                }
            }
            assert_eq!(session.close_cause(), None, "a subscriber closed");
        }
        if subjects.len() < expected {
            notified.await;
        }
    }
    subjects
}

/// Many publishers and subscribers on a multi-thread runtime, with subscribers coming and
/// going on other streams meanwhile: every subscriber gets every event of its stream exactly
/// once, each publisher's events in its order, and all subscribers of a stream in the same
/// order (one lock per stream); the counts return to zero.
#[test]
fn stress_many_publishers_and_subscribers_on_a_multi_thread_runtime() {
    const STREAMS: usize = 8;
    const PER_STREAM: usize = 6;
    const PUBLISHERS: usize = 4;
    const EVENTS: usize = 250; // per publisher, spread over the streams
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hub = Hub::new(HubConfig::default());
        let roomy = roomy(PUBLISHERS * EVENTS);
        // Each stream's expected count: publisher p sends event i to stream i % STREAMS.
        let per_stream: Vec<usize> = (0..STREAMS)
            .map(|s| PUBLISHERS * (0..EVENTS).filter(|i| i % STREAMS == s).count())
            .collect();
        let mut consumers = Vec::new();
        for (s, &expected) in per_stream.iter().enumerate() {
            for _ in 0..PER_STREAM {
                let feed = hub
                    .subscribe(inbox(&format!("acct{s}")), hub.mark(), &roomy)
                    .unwrap();
                consumers.push((s, tokio::spawn(consume(feed, expected))));
            }
        }
        // Churn: connections of other accounts come and go all along.
        let churn = {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0..500 {
                    let feed = sub(&hub, inbox(&format!("churn{}", i % 7))).unwrap();
                    if i % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    drop(feed);
                }
            })
        };
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let hub = hub.clone();
                tokio::spawn(async move {
                    for i in 0..EVENTS {
                        let event = subject_event(&format!("p{p}-{i}"));
                        let report = hub
                            .publish_inbox(&account(&format!("acct{}", i % STREAMS)), &event)
                            .await
                            .unwrap();
                        assert_eq!(report.delivered, PER_STREAM);
                        if i % 16 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for publisher in publishers {
            publisher.await.unwrap();
        }
        churn.await.unwrap();
        let mut orders: HashMap<usize, Vec<String>> = HashMap::new();
        for (s, consumer) in consumers {
            let subjects = tokio::time::timeout(Duration::from_secs(30), consumer)
                .await
                .expect("every event arrives")
                .unwrap();
            assert_eq!(subjects.len(), per_stream[s]);
            // Exactly once, each publisher in order.
            let mut next = [0usize; PUBLISHERS];
            for subject in &subjects {
                let (p, i) = parse_subject(subject);
                assert_eq!(i % STREAMS, s, "{subject} on stream {s}");
                assert!(i >= next[p], "{subject} out of order or twice");
                next[p] = i + 1;
            }
            // The same order for every subscriber of the stream.
            match orders.get(&s) {
                Some(first) => assert_eq!(first, &subjects, "stream {s}"),
                None => {
                    orders.insert(s, subjects);
                }
            }
        }
        let stats = hub.stats();
        assert_eq!(stats.connections, 0);
        // Idle streams are forgotten but for their §2.11 history (each stream got events).
        assert_eq!(
            stats.streams, stats.history_streams,
            "idle streams are forgotten"
        );
        assert!(stats.history_bytes > 0);
        assert_eq!(stats.delivered, (PUBLISHERS * EVENTS * PER_STREAM) as u64);
        assert_eq!(stats.overflowed, 0);
    });
    // The events are ordinary inbox events (never coalesced).
    assert_eq!(subject_event("x").encode().class(), EventClass::Ordinary);
}

fn subject_event(subject: &str) -> InboxEvent {
    match email(0, 0) {
        InboxEvent::EmailReceived(mut e) => {
            e.subject = subject.to_owned();
            InboxEvent::EmailReceived(e)
        }
        other => other,
    }
}

fn parse_subject(subject: &str) -> (usize, usize) {
    let (p, i) = subject
        .strip_prefix('p')
        .and_then(|rest| rest.split_once('-'))
        .unwrap_or_else(|| panic!("not ours: {subject}"));
    (p.parse().unwrap(), i.parse().unwrap())
}
