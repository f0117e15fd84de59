//! The `ConnectionObserver` of the builder and the `misar_connection` span, end to end over
//! loopback (one test in this binary: its tracing subscriber is the thread's default, and no
//! other test thread races it for the callsites' interest).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use misar_proto::auth::{AccountId, CredentialSource};
use misar_proto::event::{CampaignEvent, Completed};
use misar_proto::route::{CampaignId, Channel};
use misar_proto::server::{CloseCause, CloseSummary};
use misar_proto_axum::{ConnectionInfo, ConnectionObserver};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;

fn completed() -> CampaignEvent {
    CampaignEvent::Completed(Completed::new(
        CampaignId::new(ALICE_CAMPAIGN).unwrap(),
        100,
        99,
        1,
        10,
    ))
}

/// Polls (yielding to the server's tasks) until `done`, for at most 5 s.
async fn eventually(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the observer saw.
#[derive(Debug, Default)]
struct Seen {
    opened: Vec<ConnectionInfo>,
    closed: Vec<(ConnectionInfo, CloseSummary, Duration)>,
}

struct Recording(Arc<Mutex<Seen>>);

impl ConnectionObserver for Recording {
    fn opened(&self, info: &ConnectionInfo) {
        // An embedder's log line from inside the connection: it carries the span.
        tracing::info!("observer: opened");
        self.0.lock().unwrap().opened.push(info.clone());
    }
    fn closed(&self, info: &ConnectionInfo, summary: &CloseSummary, served: Duration) {
        self.0
            .lock()
            .unwrap()
            .closed
            .push((info.clone(), summary.clone(), served));
    }
}

/// A tracing layer keeping, for every event, the names and fields of its spans.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Record>>>);

/// An event's fields, and its spans (innermost first) with their fields.
type Record = (String, Vec<String>);

#[derive(Default)]
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!("{}={} ", field.name(), value));
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut message = Fields::default();
        event.record(&mut message);
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<Fields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default();
                        format!("{}{{{}}}", span.name(), fields.trim_end())
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push((message.0, spans));
    }
}

#[test]
fn the_observer_sees_open_and_close_and_logs_carry_the_connection_span() {
    use tracing_subscriber::layer::SubscriberExt;

    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let observer = Recording(Arc::clone(&seen));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let server =
                TestServer::start_with(hub_config(), move |builder| builder.observer(observer))
                    .await;
            // Refused: never opened.
            assert_eq!(server.refused("/mail/ws/inbox", &[]).await.status, 403);

            let mut inbox = server
                .connect("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
                .await;
            eventually(|| seen.lock().unwrap().opened.len() == 1).await;
            inbox
                .close(Some(CloseFrame {
                    code: WsCode::Normal,
                    reason: "".into(),
                }))
                .await
                .unwrap();
            let _ = read_until_close(&mut inbox).await;
            eventually(|| seen.lock().unwrap().closed.len() == 1).await;

            let path = format!("/mail/ws/campaigns/{ALICE_CAMPAIGN}?token={ALICE_KEY}");
            let mut watcher = server.connect(&path, &[]).await;
            let id = CampaignId::new(ALICE_CAMPAIGN).unwrap();
            server
                .hub
                .publish_campaign(&id, &completed())
                .await
                .unwrap();
            let (_, code) = read_until_close(&mut watcher).await;
            assert_eq!(code, Some(1000));
            eventually(|| seen.lock().unwrap().closed.len() == 2).await;
        });
    });

    let seen = seen.lock().unwrap();
    assert_eq!(seen.opened.len(), 2);
    let inbox = &seen.opened[0];
    assert_eq!(inbox.account, AccountId::new("alice"));
    assert_eq!(inbox.channel, Channel::Inbox);
    assert_eq!(inbox.credential_source, CredentialSource::Header);
    assert_eq!(inbox.channel_kind(), "inbox");
    let (info, summary, served) = &seen.closed[0];
    assert_eq!(info, inbox);
    assert_eq!(summary.cause, CloseCause::PeerClosed);
    assert_eq!(summary.received.as_ref().and_then(|r| r.code), Some(1000));
    assert!(*served < Duration::from_secs(10));

    let (info, summary, _) = &seen.closed[1];
    assert_eq!(info.channel_kind(), "campaign");
    assert_eq!(info.credential_source, CredentialSource::Query);
    assert_eq!(summary.cause, CloseCause::Finished);
    assert_eq!(summary.sent_code.map(|c| c.as_u16()), Some(1000));
    assert_eq!(summary.events_sent, 1);
    for info in &seen.opened {
        let debug = format!("{info:?}");
        assert!(!debug.contains(ALICE_KEY), "{debug}");
        assert!(!debug.contains("msk_"), "{debug}");
    }

    // The observer's log line carries the connection's span, with the account and kind.
    let records = spans.0.lock().unwrap();
    let opened: Vec<_> = records
        .iter()
        .filter(|(message, _)| message.contains("observer: opened"))
        .collect();
    assert_eq!(opened.len(), 2, "{records:?}");
    let connection = opened[0]
        .1
        .iter()
        .find(|span| span.starts_with("misar_connection"))
        .unwrap_or_else(|| panic!("no misar_connection span: {:?}", opened[0]));
    assert_eq!(connection, "misar_connection{account=alice channel=inbox}");
    assert!(
        opened[1]
            .1
            .iter()
            .any(|span| span == "misar_connection{account=alice channel=campaign}")
    );
    // No record anywhere carries the key.
    for (message, spans) in records.iter() {
        assert!(!message.contains(ALICE_KEY), "{message}");
        for span in spans {
            assert!(!span.contains(ALICE_KEY), "{span}");
        }
    }
}
