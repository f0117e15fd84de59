//! The Redis broker on a real Redis Cluster: three masters, no replicas, started by the test
//! from the Debian packages (`redis-server --cluster-enabled yes` ×3, then
//! `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`). Two nodes of ours,
//! each a hub + cluster broker + WebSocket server on loopback. Without `redis-server` the
//! test prints a notice and passes, unless `MISAR_REQUIRE_SERVICES=1`.

mod redis_node;
mod redis_util;
#[path = "server_support.rs"]
mod support;

use std::error::Error as _;
use std::time::Duration;

use misar_proto_tokio::hub::PublishError;
use misar_proto_tokio::hub::redis::RedisBrokerError;

use redis_node::{
    cluster_node, config, connect_resume, events, publish_until_received, resume_frame,
};
use redis_util::{RedisCluster, available, raw};
use support::*;

/// Accounts whose inbox streams live on masters 0, 1 and 2 (one each), by asking the cluster.
async fn one_account_per_master(cluster: &RedisCluster) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; cluster.nodes.len()];
    for i in 0.. {
        let name = format!("acct-{i}");
        let owner = cluster
            .owner_of(format!("misar:{{inbox:{name}}}").as_bytes())
            .await;
        if found[owner].is_none() {
            found[owner] = Some(name);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.into_iter().map(Option::unwrap).collect()
}

/// Whether `client` reads `text` (after whatever came before it) within 5 s of each message.
async fn reads(client: &mut Client, text: &str) -> bool {
    while let Ok(next) = tokio::time::timeout(Duration::from_secs(5), next_text(client)).await {
        if next == text {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_master_cluster_delivers_resumes_and_survives_a_master_restart() {
    if !available("redis cluster") {
        return;
    }
    // Longer than `within`: the cluster forms, loses a master and takes it back.
    tokio::time::timeout(Duration::from_secs(120), async {
        let mut cluster = RedisCluster::start(3).await;
        let urls = cluster.urls();
        let a = cluster_node(&urls, config()).await;
        let b = cluster_node(&urls, config()).await;
        let accounts = one_account_per_master(&cluster).await;

        // Cross-node delivery, one stream per master, plus a campaign.
        let mut clients = Vec::new();
        for name in &accounts {
            clients.push(connect(b.server.addr, "/mail/ws/inbox", name).await);
        }
        let mut c1 = connect(b.server.addr, "/mail/ws/campaigns/c1", "acct-0").await;
        b.broker.sync().await;
        assert_eq!(b.broker.stats().subscribed_streams, 4);
        for round in 0..3 {
            for (name, client) in accounts.iter().zip(clients.iter_mut()) {
                let event = email(round, 20);
                let report = a.hub.publish_inbox(&account(name), &event).await.unwrap();
                // Honest: delivered later, on the one node subscribed.
                assert_eq!((report.delivered, report.receivers), (0, Some(1)));
                assert_eq!(next_text(client).await, inbox_text(&event));
            }
        }
        let event = progress("c1", 5);
        a.hub
            .publish_campaign(&campaign("c1"), &event)
            .await
            .unwrap();
        assert_eq!(next_text(&mut c1).await, campaign_text(&event));
        let mut late = connect(a.server.addr, "/mail/ws/campaigns/c1", "acct-1").await;
        // The late joiner on the other node gets the shared latest `progress` (read from the
        // campaign's master, by its hash tag).
        assert_eq!(next_text(&mut late).await, campaign_text(&event));

        // Resume on the cluster: an opted-in client on A, events while it is away, back on B.
        let victim = accounts[0].clone();
        let mut resuming = connect_resume(a.server.addr, "/mail/ws/inbox", &victim, "new").await;
        let frame = resume_frame(&mut resuming).await;
        let first = email(100, 10);
        a.hub
            .publish_inbox(&account(&victim), &first)
            .await
            .unwrap();
        let got = events(&mut resuming, 1).await;
        assert_eq!(got[0].0, inbox_text(&first));
        let position = format!("{}:{}", frame.epoch, got[0].1);
        drop(resuming);
        let missed: Vec<_> = (101..104).map(|i| email(i, 10)).collect();
        for event in &missed {
            a.hub.publish_inbox(&account(&victim), event).await.unwrap();
        }
        let mut back = connect_resume(b.server.addr, "/mail/ws/inbox", &victim, &position).await;
        let frame = resume_frame(&mut back).await;
        assert!(frame.recovered, "{frame:?}");
        let replay = events(&mut back, 3).await;
        assert_eq!(
            replay.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(),
            missed.iter().map(inbox_text).collect::<Vec<_>>()
        );
        drop(back);

        // One master killed: its streams' publishes fail with a typed error, the other
        // masters' streams keep flowing, node B counts a gap.
        let down = 1;
        let gaps_before = b.broker.stats().gaps;
        cluster.nodes[down].kill().await;
        let failure = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match a
                    .hub
                    .publish_inbox(&account(&accounts[down]), &email(200, 10))
                    .await
                {
                    Err(error) => return error,
                    // Sent before the kill was noticed: it reached nobody or went nowhere.
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("a publish to the dead master fails");
        let PublishError::Broker(error) = failure else {
            panic!("expected a broker error, got {failure:?}")
        };
        assert!(
            error
                .source()
                .is_some_and(|source| source.downcast_ref::<RedisBrokerError>().is_some()),
            "{error:?}"
        );
        let gap = tokio::time::timeout(Duration::from_secs(15), async {
            while b.broker.stats().gaps == gaps_before {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(gap.is_ok(), "node B counts the master's loss as a gap");
        // A stream of a master that is up still gets its events.
        let alive = (down + 1) % 3;
        let during = email(300, 10);
        let sent = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if a.hub
                    .publish_inbox(&account(&accounts[alive]), &during)
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(sent.is_ok(), "the other masters keep publishing");
        assert!(
            reads(&mut clients[alive], &inbox_text(&during)).await,
            "the other masters keep delivering"
        );

        // Restarted (empty, same port, same nodes.conf: it takes its slots back).
        cluster.nodes[down].restart().await;
        cluster.wait_ok().await;
        let after = email(400, 10);
        let delivered =
            publish_until_received(&a.hub, &accounts[down], &after, Duration::from_secs(30)).await;
        assert!(delivered, "publishes succeed and reach node B again");
        assert!(
            reads(&mut clients[down], &inbox_text(&after)).await,
            "the client of the restarted master's stream is live again"
        );
        // The restarted master lost its history (no persistence): a resume there is told so.
        let stale = format!("{}:{}", frame.epoch, 3);
        let mut told =
            connect_resume(b.server.addr, "/mail/ws/inbox", &accounts[down], &stale).await;
        let answer = resume_frame(&mut told).await;
        assert!(!answer.recovered);
    })
    .await
    .expect("the cluster test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_slot_moves_to_another_master_is_followed() {
    if !available("redis cluster resharding") {
        return;
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        let cluster = RedisCluster::start(3).await;
        let urls = cluster.urls();
        let a = cluster_node(&urls, config()).await;
        let b = cluster_node(&urls, config()).await;
        let channel = b"misar:{inbox:alice}";
        let slot = cluster.slot_of(channel).await;
        let from = cluster.owner_of(channel).await;
        let to = (from + 1) % 3;
        let mut client = connect(b.server.addr, "/mail/ws/inbox", "alice").await;
        b.broker.sync().await;
        let before = email(1, 10);
        a.hub
            .publish_inbox(&account("alice"), &before)
            .await
            .unwrap();
        assert_eq!(next_text(&mut client).await, inbox_text(&before));
        let gaps = b.broker.stats().gaps;

        cluster.move_slot(slot, from, to).await;
        assert_eq!(cluster.owner_of(channel).await, to);
        // Node B was told (a `sunsubscribe` from the old owner): a counted gap, then it
        // subscribes on the new owner; publishes reach the client again.
        let after = email(2, 10);
        let delivered =
            publish_until_received(&a.hub, "alice", &after, Duration::from_secs(20)).await;
        assert!(delivered, "node B subscribes on the slot's new owner");
        assert!(reads(&mut client, &inbox_text(&after)).await);
        assert!(b.broker.stats().gaps > gaps, "the move is counted as a gap");
        // The stream's history and offsets moved with the slot: numbering goes on.
        let mut connection = raw(&cluster.nodes[to].url()).await;
        let offset: u64 = redis::cmd("HGET")
            .arg("misar:meta:{inbox:alice}")
            .arg("o")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(offset >= 2, "offset {offset}");
    })
    .await
    .expect("the resharding test took too long");
}
