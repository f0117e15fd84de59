//! The upgrade waits for the broker's promise (`Feed::ready`): a client gets its 101 only once
//! every event published from then on will reach it, and a 503 with `Retry-After` when the
//! broker cannot promise that. Checked with a broker whose readiness the test holds.

mod common;

use std::sync::Arc;

use common::*;
use misar_proto::auth::AccountId;
use misar_proto::event::{EmailReceived, InboxEvent, Timestamp};
use misar_proto_tokio::hub::{
    Broker, BrokerError, BrokerFuture, Hub, HubDelivery, LocalBroker, ReadyFuture, StreamKey,
};
use tokio::sync::{Notify, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The in-process broker, with `ready` held until the test answers (`Some(true)`: ready,
/// `Some(false)`: the upstream is unreachable).
struct Gate {
    inner: LocalBroker,
    answer: watch::Sender<Option<bool>>,
    asked: Notify,
}

impl Broker for Gate {
    fn attach(&self, delivery: HubDelivery) {
        self.inner.attach(delivery);
    }

    fn publish(
        &self,
        stream: StreamKey,
        event: misar_proto::event::EncodedEvent,
    ) -> BrokerFuture<'_> {
        self.inner.publish(stream, event)
    }

    fn ready<'a>(&'a self, _stream: &'a StreamKey) -> ReadyFuture<'a> {
        self.asked.notify_one();
        let mut answer = self.answer.subscribe();
        Box::pin(async move {
            let decided = *answer
                .wait_for(Option::is_some)
                .await
                .map_err(|_| BrokerError::new("gone"))?;
            match decided {
                Some(true) => Ok(()),
                _ => Err(BrokerError::new("upstream unreachable")),
            }
        })
    }
}

fn email() -> InboxEvent {
    InboxEvent::EmailReceived(EmailReceived::new(
        "ana@example.com",
        "queued while the subscription was confirmed",
        Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
    ))
}

async fn server(gate: &Arc<Gate>) -> TestServer {
    let hub = Hub::with_broker(hub_config(), gate.clone());
    TestServer::start_on(hub, |b| b, |router| router).await
}

fn gate() -> Arc<Gate> {
    Arc::new(Gate {
        inner: LocalBroker::new(),
        answer: watch::channel(None).0,
        asked: Notify::new(),
    })
}

#[tokio::test]
async fn the_101_waits_for_the_broker_and_nothing_published_meanwhile_is_lost() {
    let gate = gate();
    let server = server(&gate).await;
    let upgrade = tokio::spawn({
        let addr = server.addr;
        async move {
            exchange(
                addr,
                upgrade_request("/mail/ws/inbox", &[&bearer(ALICE_KEY)]).as_bytes(),
            )
            .await
        }
    });
    // The handler is waiting on the broker: the connection is counted, not yet upgraded.
    tokio::time::timeout(std::time::Duration::from_secs(10), gate.asked.notified())
        .await
        .expect("the adapter asks the broker before the upgrade");
    assert!(!upgrade.is_finished());
    assert_eq!(server.hub.connection_count(), 1);
    // Published in that window: queued in the session, sent after the 101.
    let event = email();
    server
        .hub
        .publish_inbox(&AccountId::from("alice"), &event)
        .await
        .unwrap();
    gate.answer.send_replace(Some(true));
    let (response, upgraded) = upgrade.await.unwrap();
    assert_eq!(response.status, 101);
    let (stream, rest) = upgraded.unwrap();
    let mut socket = WebSocketStream::from_partially_read(stream, rest, Role::Client, None).await;
    assert_eq!(
        next_text(&mut socket).await,
        String::from_utf8(event.encode().bytes().to_vec()).unwrap()
    );
}

#[tokio::test]
async fn a_broker_that_cannot_promise_gets_the_client_a_503_with_retry_after() {
    let gate = gate();
    let server = server(&gate).await;
    gate.answer.send_replace(Some(false));
    let (response, socket) = server
        .upgrade("/mail/ws/inbox", &[&bearer(ALICE_KEY)])
        .await;
    assert_eq!(response.status, 503);
    assert!(socket.is_none());
    assert!(response.header("retry-after").is_some());
    assert_eq!(response.json()["error"], "overloaded");
    // The slot was given back.
    assert_eq!(server.hub.connection_count(), 0);
}
