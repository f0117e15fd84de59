//! The parts of the hub's broker seam the Redis broker relies on, checked with in-process
//! brokers (no Redis needed): revocation through the broker, catch-up delivery that skips
//! what a hub already has, and gap reporting.

#[path = "server_support.rs"]
mod support;

use std::sync::{Arc, Mutex};

use misar_proto::server::ServerConfig;
use misar_proto_tokio::hub::{
    Broker, BrokerError, BrokerFuture, Hub, HubConfig, HubDelivery, LocalBroker, Revocation,
    StreamKey,
};
use misar_proto_tokio::server::DriverConfig;

use support::*;

#[tokio::test]
async fn revoke_everywhere_reaches_every_hub_of_the_broker() {
    within(async {
        let broker = Arc::new(LocalBroker::new());
        let node_a = Hub::with_broker(HubConfig::default(), broker.clone());
        let node_b = Hub::with_broker(HubConfig::default(), broker);
        let config = || (ServerConfig::default(), DriverConfig::default());
        let (s, d) = config();
        let (alice_a, _ta) = serve_mem(&node_a, inbox("alice"), s, d);
        let (s, d) = config();
        let (alice_b, _tb) = serve_mem(&node_b, campaign_request("alice", "c1"), s, d);
        let (s, d) = config();
        let (bob_b, _tc) = serve_mem(&node_b, campaign_request("bob", "c1"), s, d);

        node_a
            .revoke_everywhere(Revocation::Account(account("alice")))
            .await
            .unwrap();
        assert_eq!(close_code(&alice_a.recv().await), 4401);
        assert_eq!(close_code(&alice_b.recv().await), 4401);

        // Bob still receives; then a campaign revocation closes him with 4403.
        let event = progress("c1", 1);
        node_a
            .publish_campaign(&campaign("c1"), &event)
            .await
            .unwrap();
        assert_eq!(text(&bob_b.recv().await), event.encode().bytes());
        node_a
            .revoke_everywhere(Revocation::Campaign(campaign("c1")))
            .await
            .unwrap();
        assert_eq!(close_code(&bob_b.recv().await), 4403);
    })
    .await;
}

/// A broker that keeps the hubs' deliveries for the test to drive, and implements nothing
/// optional (so `revoke` is the trait's default).
#[derive(Default)]
struct Manual {
    hubs: Mutex<Vec<HubDelivery>>,
}

impl Broker for Manual {
    fn attach(&self, delivery: HubDelivery) {
        self.hubs.lock().unwrap().push(delivery);
    }
    fn publish(
        &self,
        stream: StreamKey,
        event: misar_proto::event::EncodedEvent,
    ) -> BrokerFuture<'_> {
        let hubs = self.hubs.lock().unwrap().clone();
        Box::pin(async move {
            let mut total = misar_proto_tokio::hub::PublishReport::default();
            for hub in hubs {
                total.delivered += hub
                    .deliver(&stream, event.clone())
                    .map_err(BrokerError::refused)?
                    .delivered;
            }
            Ok(total)
        })
    }
}

impl Manual {
    fn delivery(&self) -> HubDelivery {
        self.hubs.lock().unwrap()[0].clone()
    }
}

#[tokio::test]
async fn a_broker_that_cannot_propagate_a_revocation_says_so_after_the_local_one() {
    within(async {
        let broker = Arc::new(Manual::default());
        let hub = Hub::with_broker(HubConfig::default(), broker);
        let (alice, _task) = serve_mem(
            &hub,
            inbox("alice"),
            ServerConfig::default(),
            DriverConfig::default(),
        );
        let error = hub
            .revoke_everywhere(Revocation::Account(account("alice")))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("does not propagate"), "{error}");
        // The local part happened anyway.
        assert_eq!(close_code(&alice.recv().await), 4401);
    })
    .await;
}

#[tokio::test]
async fn catch_up_delivery_skips_what_the_hub_already_caches() {
    within(async {
        let broker = Arc::new(Manual::default());
        let hub = Hub::with_broker(HubConfig::default(), broker.clone());
        let delivery = broker.delivery();
        let (peer, _task) = serve_mem(
            &hub,
            campaign_request("alice", "c1"),
            ServerConfig::default(),
            DriverConfig::default(),
        );
        let stream = StreamKey::Campaign(campaign("c1"));
        let p1 = progress("c1", 1).encode();
        let p2 = progress("c1", 2).encode();

        // (Each event is read before the next is delivered: `progress` would coalesce.)
        // Nothing cached: the fetched event is delivered (and cached).
        assert_eq!(
            delivery
                .deliver_latest(&stream, p1.clone())
                .unwrap()
                .delivered,
            1
        );
        assert_eq!(text(&peer.recv().await), p1.bytes());
        // The same bytes again (the fetch raced a message that carried them): skipped.
        assert_eq!(
            delivery
                .deliver_latest(&stream, p1.clone())
                .unwrap()
                .delivered,
            0
        );
        // Different bytes: delivered.
        assert_eq!(
            delivery
                .deliver_latest(&stream, p2.clone())
                .unwrap()
                .delivered,
            1
        );
        assert_eq!(text(&peer.recv().await), p2.bytes());
        // The ordinary path never skips.
        assert_eq!(delivery.deliver(&stream, p2.clone()).unwrap().delivered, 1);
        assert_eq!(text(&peer.recv().await), p2.bytes());
        assert_eq!(hub.stats().cached_campaigns, 1);
    })
    .await;
}

#[tokio::test]
async fn gaps_reported_by_the_broker_are_counted_by_the_hub() {
    let broker = Arc::new(Manual::default());
    let hub = Hub::with_broker(HubConfig::default(), broker.clone());
    assert_eq!(hub.stats().gaps, 0);
    broker.delivery().report_gap();
    broker.delivery().report_gap();
    assert_eq!(hub.stats().gaps, 2);
    // A hub that is gone is not kept alive by its broker, and reporting to it is a no-op.
    drop(hub);
    let delivery = broker.delivery();
    assert!(!delivery.is_alive());
    delivery.report_gap();
    delivery.revoke(&Revocation::Account(account("alice")));
}
