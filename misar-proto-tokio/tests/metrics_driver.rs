//! The driver's own metric: a connection dropped for a stalled write counts once in
//! `misar_write_timeouts_total`. A `metrics-util` DebuggingRecorder is this thread's recorder
//! and the runtime a current-thread one on tokio's paused clock, so the 10 s write timeout
//! passes in virtual time.

#[path = "server_support.rs"]
mod support;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use misar_proto_tokio::hub::{Hub, HubConfig};
use misar_proto_tokio::metrics::names;
use misar_proto_tokio::server::ConnectionEnd;
use support::*;

#[test]
fn a_write_timeout_is_counted_once() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(within_virtual(async {
            let hub = Hub::new(HubConfig::default());
            let (end, _) = stall_writes(&hub).await;
            assert!(matches!(end, ConnectionEnd::WriteTimeout(_)), "{end:?}");
        }));
    });
    let timeouts: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == names::WRITE_TIMEOUTS)
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(timeouts, 1);
}
