//! The metrics of issue 15 end to end over loopback: exact counts for known actions (a
//! `metrics-util` DebuggingRecorder local to each test's thread, served by a current-thread
//! runtime so every task records into it). The observer and the span: `tests/observer.rs`.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use misar_proto::auth::AccountId;
use misar_proto::event::{
    CampaignEvent, Completed, EmailReceived, InboxEvent, Progress, Timestamp,
};
use misar_proto::route::CampaignId;
use misar_proto_tokio::metrics::names;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;

fn email(n: usize) -> InboxEvent {
    InboxEvent::EmailReceived(EmailReceived::new(
        format!("sender{n}@example.com"),
        format!("message {n}"),
        Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
    ))
}

fn progress(sent: u64) -> CampaignEvent {
    CampaignEvent::Progress(Progress::new(
        CampaignId::new(ALICE_CAMPAIGN).unwrap(),
        sent,
        100,
        sent,
        0,
        0,
    ))
}

fn completed() -> CampaignEvent {
    CampaignEvent::Completed(Completed::new(
        CampaignId::new(ALICE_CAMPAIGN).unwrap(),
        100,
        99,
        1,
        10,
    ))
}

/// Runs `test` on a current-thread runtime with `recorder` as this thread's recorder.
fn with_recorder<F: std::future::Future<Output = ()>>(recorder: &DebuggingRecorder, test: F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(recorder, || runtime.block_on(test));
}

/// The series seen so far, by name and sorted labels. A `DebuggingRecorder` snapshot drains
/// what it reports (counters and gauges are swapped to 0, histograms emptied), so each read
/// adds the snapshot to these totals (the gauges here only move by increments).
struct Metrics {
    snapshotter: Snapshotter,
    counters: Mutex<HashMap<String, u64>>,
    gauges: Mutex<HashMap<String, f64>>,
    histograms: Mutex<HashMap<String, Vec<f64>>>,
    /// Every label value and whether each family was described.
    seen: Mutex<Vec<(String, Vec<String>, bool)>>,
}

fn series(name: &str, labels: impl IntoIterator<Item = (String, String)>) -> String {
    let mut labels: Vec<String> = labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

impl Metrics {
    fn new(snapshotter: Snapshotter) -> Self {
        Self {
            snapshotter,
            counters: Mutex::default(),
            gauges: Mutex::default(),
            histograms: Mutex::default(),
            seen: Mutex::default(),
        }
    }

    fn refresh(&self) {
        for (key, unit, help, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            self.seen.lock().unwrap().push((
                key.name().to_owned(),
                labels.iter().map(|(_, v)| v.clone()).collect(),
                unit.is_some() || help.is_some(),
            ));
            let id = series(key.name(), labels);
            match value {
                DebugValue::Counter(n) => {
                    *self.counters.lock().unwrap().entry(id).or_default() += n
                }
                DebugValue::Gauge(n) => {
                    *self.gauges.lock().unwrap().entry(id).or_default() += n.into_inner()
                }
                DebugValue::Histogram(values) => self
                    .histograms
                    .lock()
                    .unwrap()
                    .entry(id)
                    .or_default()
                    .extend(values.into_iter().map(|v| v.into_inner())),
            }
        }
    }

    fn key(name: &str, labels: &[(&str, &str)]) -> String {
        series(
            name,
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.refresh();
        let counters = self.counters.lock().unwrap();
        counters.get(&Self::key(name, labels)).copied().unwrap_or(0)
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.refresh();
        let gauges = self.gauges.lock().unwrap();
        gauges.get(&Self::key(name, labels)).copied().unwrap_or(0.0)
    }

    fn histogram(&self, name: &str) -> Vec<f64> {
        self.refresh();
        let histograms = self.histograms.lock().unwrap();
        histograms
            .get(&Self::key(name, &[]))
            .cloned()
            .unwrap_or_default()
    }
}

/// Polls (yielding to the server's tasks) until `done`, for at most 5 s.
async fn eventually(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn known_actions_give_exact_counts() {
    let recorder = DebuggingRecorder::new();
    let metrics = Metrics::new(recorder.snapshotter());
    let snap = &metrics;
    with_recorder(&recorder, async move {
        misar_proto_tokio::metrics::describe();
        let server = TestServer::start().await;

        // Refusals: no key, an unknown key, a path that is no channel, another's campaign.
        assert_eq!(server.refused("/mail/ws/inbox", &[]).await.status, 403);
        let unknown = bearer("msk_test_nobody_0000000000");
        assert_eq!(
            server.refused("/mail/ws/inbox", &[&unknown]).await.status,
            403
        );
        assert_eq!(server.refused("/mail/ws/nothing", &[]).await.status, 404);
        let campaign = format!("/mail/ws/campaigns/{BOB_CAMPAIGN}");
        assert_eq!(
            server
                .refused(&campaign, &[&bearer(ALICE_KEY)])
                .await
                .status,
            403
        );
        let handshakes = |outcome| snap.counter(names::HANDSHAKES, &[("outcome", outcome)]);
        assert_eq!(handshakes("unauthorized"), 2);
        assert_eq!(handshakes("not_found"), 1);
        assert_eq!(handshakes("forbidden"), 1);
        assert_eq!(handshakes("accepted"), 0);

        // Two inbox connections of one account, three events published to it.
        let mut first = server
            .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
            .await;
        let mut second = server
            .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
            .await;
        assert_eq!(handshakes("accepted"), 2);
        let open = |channel| snap.gauge(names::CONNECTIONS_OPEN, &[("channel", channel)]);
        assert_eq!(open("inbox"), 2.0);
        let alice = AccountId::new("alice");
        for n in 0..3 {
            let report = server.hub.publish_inbox(&alice, &email(n)).await.unwrap();
            assert_eq!(report.delivered, 2);
        }
        assert_eq!(snap.counter(names::DELIVERIES, &[("channel", "inbox")]), 6);
        assert_eq!(
            snap.counter(
                names::EVENTS_PUBLISHED,
                &[("channel", "inbox"), ("type", "email_received")]
            ),
            3
        );
        for socket in [&mut first, &mut second] {
            for _ in 0..3 {
                next_text(socket).await;
            }
        }
        // One batch per connection at least, each measured.
        eventually(|| snap.histogram(names::PUBLISH_TO_FLUSH).len() >= 2).await;
        assert!(
            snap.histogram(names::PUBLISH_TO_FLUSH)
                .iter()
                .all(|s| (0.0..5.0).contains(s))
        );

        // The client closes one with 1000.
        first
            .close(Some(CloseFrame {
                code: WsCode::Normal,
                reason: "".into(),
            }))
            .await
            .unwrap();
        let _ = read_until_close(&mut first).await;
        eventually(|| snap.counter(names::CLOSES, &[("code", "1000"), ("by", "client")]) == 1)
            .await;
        eventually(|| open("inbox") == 1.0).await;

        // A campaign: two progress updates queued back to back (the second supersedes the
        // first before the driver runs: this runtime has one thread), then its end.
        let path = format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}");
        let mut watcher = server.connect(&path, &[&bearer(ALICE_KEY)]).await;
        assert_eq!(open("campaign"), 1.0);
        let id = CampaignId::new(ALICE_CAMPAIGN).unwrap();
        server
            .hub
            .publish_campaign(&id, &progress(10))
            .await
            .unwrap();
        server
            .hub
            .publish_campaign(&id, &progress(20))
            .await
            .unwrap();
        server
            .hub
            .publish_campaign(&id, &completed())
            .await
            .unwrap();
        let (texts, code) = read_until_close(&mut watcher).await;
        assert_eq!(code, Some(1000));
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[0].contains("\"sent\":20"), "{texts:?}");
        eventually(|| snap.counter(names::CLOSES, &[("code", "1000"), ("by", "server")]) == 1)
            .await;
        assert_eq!(snap.counter(names::PROGRESS_COALESCED, &[]), 1);
        assert_eq!(
            snap.counter(
                names::EVENTS_PUBLISHED,
                &[("channel", "campaign"), ("type", "progress")]
            ),
            2
        );
        assert_eq!(
            snap.counter(
                names::EVENTS_PUBLISHED,
                &[("channel", "campaign"), ("type", "completed")]
            ),
            1
        );
        // Both progress updates and the end were queued: 3 deliveries, depths 1, 1 (the
        // second superseded the first) and 2.
        assert_eq!(
            snap.counter(names::DELIVERIES, &[("channel", "campaign")]),
            3
        );
        // One depth sample per batch a driver took: each connection's whole queue (3 inbox
        // events on each of two connections, the campaign's coalesced progress and its end),
        // so the samples add up to the 8 events written.
        let depths = snap.histogram(names::QUEUE_DEPTH);
        assert_eq!(depths.iter().sum::<f64>(), 8.0, "{depths:?}");
        assert_eq!(depths.iter().copied().fold(0.0, f64::max), 3.0);
        eventually(|| open("campaign") == 0.0).await;
        assert_eq!(handshakes("accepted"), 3);
        assert_eq!(snap.counter(names::QUEUE_OVERFLOWS, &[]), 0);
        assert_eq!(snap.counter(names::WRITE_TIMEOUTS, &[]), 0);
        drop(second);

        // No label value is an account, a campaign id, a key or a path.
        snap.refresh();
        for (name, values, described) in snap.seen.lock().unwrap().iter() {
            assert!(name.starts_with("misar_"), "{name}");
            for value in values {
                for secret in ["alice", "bob", ALICE_KEY, ALICE_CAMPAIGN, "/mail"] {
                    assert!(!value.contains(secret), "{name} {values:?}");
                }
            }
            // `describe` gave each family its text (the local recorder keeps them).
            assert!(described, "{name} undescribed");
        }
    });
}

#[test]
fn a_slow_consumer_is_counted_as_an_overflow_and_a_1013() {
    let recorder = DebuggingRecorder::new();
    let metrics = Metrics::new(recorder.snapshotter());
    let snap = &metrics;
    with_recorder(&recorder, async move {
        let server = TestServer::start_with(hub_config(), |builder| {
            builder.server_config(misar_proto::server::ServerConfig {
                max_queued_events: 2,
                ..misar_proto::server::ServerConfig::default()
            })
        })
        .await;
        let mut slow = server
            .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
            .await;
        let alice = AccountId::new("alice");
        let mut overflowed = 0;
        // Back to back on this thread: the driver does not run in between.
        for n in 0..3 {
            overflowed += server
                .hub
                .publish_inbox(&alice, &email(n))
                .await
                .unwrap()
                .overflowed;
        }
        assert_eq!(overflowed, 1);
        let (_, code) = read_until_close(&mut slow).await;
        assert_eq!(code, Some(1013));
        eventually(|| snap.counter(names::CLOSES, &[("code", "1013"), ("by", "server")]) == 1)
            .await;
        assert_eq!(snap.counter(names::QUEUE_OVERFLOWS, &[]), 1);
        assert_eq!(snap.counter(names::DELIVERIES, &[("channel", "inbox")]), 2);
    });
}

#[test]
fn resumes_are_counted_recovered_or_not_with_the_events_replayed() {
    let recorder = DebuggingRecorder::new();
    let metrics = Metrics::new(recorder.snapshotter());
    let snap = &metrics;
    with_recorder(&recorder, async move {
        let server = TestServer::start().await;
        let auth = bearer(ALICE_KEY);
        let resume = |value: &str| format!("Misar-Resume: {value}");
        let frame = |text: String| -> misar_proto::resume::ResumeFrame {
            misar_proto::resume::ResumeFrame::decode(text.as_bytes()).unwrap()
        };
        let mut first = server
            .connect("/mail/ws/inbox", &[&auth, &resume("new")])
            .await;
        let epoch = frame(next_text(&mut first).await).epoch;
        let alice = AccountId::new("alice");
        for n in 0..3 {
            server.hub.publish_inbox(&alice, &email(n)).await.unwrap();
        }
        let offsets: Vec<u64> = {
            let mut out = Vec::new();
            for _ in 0..3 {
                let text = next_text(&mut first).await;
                out.push(misar_proto::resume::event_offset(text.as_bytes()).unwrap());
            }
            out
        };
        drop(first);
        // From the first event: the other two are replayed.
        let mut again = server
            .connect(
                "/mail/ws/inbox",
                &[&auth, &resume(&format!("{epoch}:{}", offsets[0]))],
            )
            .await;
        assert!(frame(next_text(&mut again).await).recovered);
        next_text(&mut again).await;
        next_text(&mut again).await;
        // Another epoch: not recovered.
        let mut other = server
            .connect("/mail/ws/inbox", &[&auth, &resume("another:1")])
            .await;
        assert!(!frame(next_text(&mut other).await).recovered);
        let resumes = |recovered| snap.counter(names::RESUMES, &[("recovered", recovered)]);
        assert_eq!(resumes("true"), 2, "`new` and the recovered one");
        assert_eq!(resumes("false"), 1);
        assert_eq!(snap.counter(names::REPLAYED_EVENTS, &[]), 2);
    });
}
