//! The Redis broker's metrics (issue 15) against a real redis-server: events relayed, the
//! SUBSCRIBE latency, and a Redis restart counted as one gap and one reconnect. A
//! `metrics-util` DebuggingRecorder is this thread's recorder, and the runtime is a
//! current-thread one, so every task records into it.

mod redis_node;
mod redis_util;
#[path = "server_support.rs"]
mod support;

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use misar_proto_tokio::metrics::names;
use redis_node::node;
use redis_util::{RedisServer, available};
use support::*;

/// Totals over snapshots (a snapshot drains the counters it reports).
#[derive(Default)]
struct Totals {
    counters: HashMap<String, u64>,
    histograms: HashMap<String, usize>,
}

impl Totals {
    fn add(&mut self, snapshotter: &Snapshotter) {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let name = key.key().name().to_owned();
            match value {
                DebugValue::Counter(n) => *self.counters.entry(name).or_default() += n,
                DebugValue::Histogram(values) => {
                    *self.histograms.entry(name).or_default() += values.len();
                }
                DebugValue::Gauge(_) => {}
            }
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

#[test]
fn relayed_events_subscribe_latency_gaps_and_reconnects_are_counted() {
    if !available("redis metrics") {
        return;
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(within(async {
            let mut totals = Totals::default();
            let mut redis = RedisServer::start().await;
            let a = node(&redis).await;
            let mut alice = connect(a.server.addr, "/mail/ws/inbox", "alice").await;
            a.broker.sync().await;
            for n in 0..3 {
                let event = email(n, 0);
                a.hub
                    .publish_inbox(&account("alice"), &event)
                    .await
                    .unwrap();
                assert_eq!(next_text(&mut alice).await, inbox_text(&event));
            }
            totals.add(&snapshotter);
            assert_eq!(totals.counter(names::REDIS_RELAYED), 3);
            assert!(
                totals
                    .histograms
                    .get(names::REDIS_SUBSCRIBE)
                    .copied()
                    .unwrap_or(0)
                    >= 1
            );
            assert_eq!(totals.counter(names::REDIS_GAPS), 0);

            redis.kill().await;
            a.broker.disconnected().await;
            redis.restart().await;
            a.broker.connected().await;
            a.broker.sync().await;
            totals.add(&snapshotter);
            assert_eq!(totals.counter(names::REDIS_GAPS), 1);
            assert_eq!(totals.counter(names::REDIS_RECONNECTS), 1);
            let event = email(9, 0);
            a.hub
                .publish_inbox(&account("alice"), &event)
                .await
                .unwrap();
            assert_eq!(next_text(&mut alice).await, inbox_text(&event));
            totals.add(&snapshotter);
            assert_eq!(totals.counter(names::REDIS_RELAYED), 4);
        }));
    });
}
