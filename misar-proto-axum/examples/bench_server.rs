//! Our server under the benchmark control API of `bench/README.md`: the misar-proto-axum
//! router and hub, as an embedder would mount them, plus `/bench/broadcast` and `/bench/stats`.
//!
//! ```text
//! BENCH_PORT=9000 BENCH_PING_MS=1000 cargo run --release -p misar-proto-axum --example bench_server
//! ```
//!
//! Every connection uses the key `msk_bench_0123456789abcdef`, which the authorizer maps to one
//! account, so one publish reaches every subscriber.

// The demo's recorder setup, shared so that the benchmark measures what the demo runs (its
// `render` route is the demo's only).
#[allow(dead_code)]
#[path = "demo/metrics.rs"]
mod demo_metrics;
// The demo's `--redis` setup, the same file.
#[path = "demo/redis.rs"]
mod demo_redis;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::Parser;
use misar_proto::auth::AccountId;
use misar_proto::event::{EmailReceived, InboxEvent, Timestamp};
use misar_proto_axum::{MemoryAuthorizer, MisarWs, WsBuffers};
use misar_proto_tokio::hub::{Hub, HubConfig};
use serde_json::json;

const KEY: &str = "msk_bench_0123456789abcdef";
const ACCOUNT: &str = "bench";
const MAX_COUNT: u32 = 1_000_000;
const MAX_SIZE: usize = 1 << 20;
const RECEIVED_AT: &str = "2026-05-27T10:15:00Z";

/// Command line; the environment variables are the benchmark runner's convention.
#[derive(Debug, Parser)]
#[command(about = "misar-proto-axum server under the benchmark control API")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BENCH_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on.
    #[arg(long, env = "BENCH_PORT", default_value_t = 9000)]
    port: u16,
    /// Interval between server pings, in milliseconds.
    #[arg(long, env = "BENCH_PING_MS", default_value_t = 30_000)]
    ping_ms: u64,
    /// Set TCP_NODELAY on accepted sockets (the default: the driver writes a whole batch per
    /// system call, so Nagle's algorithm would only delay the last segment of a burst).
    /// `--nodelay false` shows what it changes.
    #[arg(long, env = "BENCH_NODELAY", default_value_t = true, action = clap::ArgAction::Set)]
    nodelay: bool,
    /// Install a Prometheus recorder as the demo does (`examples/demo/metrics.rs`: buckets,
    /// `describe`, upkeep every 5 s) and render the text once per second into a sink, as a
    /// scraper would (issue 15's overhead benchmark). Without it, whatever the libraries record
    /// goes to the facade's no-op recorder. The recording itself is compiled in when the
    /// `metrics` feature of misar-proto-tokio is on (this crate's dev-dependency turns it on).
    #[arg(long, env = "BENCH_METRICS")]
    metrics: bool,
    /// Fan out through the Redis at this URL (or, with `--redis-cluster`, the Redis Cluster
    /// with these comma-separated seeds): every event goes to Redis and back (built with
    /// `--features redis`).
    #[arg(long, env = "BENCH_REDIS")]
    redis: Option<String>,
    /// `--redis` names Redis Cluster seed nodes.
    #[arg(long, env = "BENCH_REDIS_CLUSTER")]
    redis_cluster: bool,
    /// Publish a burst's events all at once (every publish in flight, in order of issue)
    /// instead of one after the other: what lets the Redis broker batch them. The in-memory
    /// hub delivers each during its call either way.
    #[arg(long, env = "BENCH_PIPELINED")]
    pipelined: bool,
}

struct Bench {
    hub: Hub,
    pipelined: bool,
    account: AccountId,
    seq: AtomicU64,
    /// Length of an event with an empty subject and one-digit `seq` and `sentAtNs`.
    bare_len: usize,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.metrics {
        install_metrics().map_err(std::io::Error::other)?;
    }
    let config = HubConfig {
        max_connections_per_account: 1_000_000,
        max_connections: 1_000_000,
        ..HubConfig::default()
    };
    let hub = match &args.redis {
        None => Hub::new(config),
        Some(url) => demo_redis::redis_hub(url, args.redis_cluster, config)
            .await
            .map_err(std::io::Error::other)?,
    };
    let authorizer = MemoryAuthorizer::new().with_key(KEY, ACCOUNT);
    let misar = MisarWs::builder(hub.clone(), authorizer)
        .ping_interval(Duration::from_millis(args.ping_ms.max(1)))
        // Events up to the control API's 1 MiB must fit the bounded write buffer; everything
        // else is the library's defaults.
        .websocket_buffers(WsBuffers {
            max_write_buffer_size: MAX_SIZE + (8 << 10),
            ..WsBuffers::default()
        })
        .build();
    let bench = Arc::new(Bench {
        hub,
        pipelined: args.pipelined,
        account: AccountId::from(ACCOUNT),
        seq: AtomicU64::new(0),
        bare_len: event(0, 0, 0).encode().len(),
    });
    let app = Router::new()
        .route("/bench/broadcast", post(broadcast))
        .route("/bench/stats", get(stats))
        .with_state(bench)
        .merge(misar.router());
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "misar-axum listening on {addr}, ping every {} ms",
        args.ping_ms
    );
    let nodelay = args.nodelay;
    let listener = listener.tap_io(move |tcp| {
        if nodelay {
            let _ = tcp.set_nodelay(true);
        }
    });
    let shutdown = misar.shutdown_handle();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.on_signal(async {
            let _ = tokio::signal::ctrl_c().await;
        }))
        .await
}

/// `--metrics`: the demo's recorder (examples/demo/metrics.rs, the same file), plus a simulated
/// scraper that renders the text format once per second and keeps only its length.
fn install_metrics() -> Result<(), String> {
    let handle = demo_metrics::install()?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut rendered = 0usize;
        loop {
            tick.tick().await;
            rendered = rendered.wrapping_add(std::hint::black_box(handle.render()).len());
        }
    });
    eprintln!("metrics: Prometheus recorder installed, rendered once per second");
    Ok(())
}

fn event(seq: u64, sent_at_ns: u64, pad: usize) -> InboxEvent {
    InboxEvent::EmailReceived(
        EmailReceived::new(
            "bench@example.com",
            "x".repeat(pad),
            Timestamp::parse(RECEIVED_AT).unwrap_or_else(|_| unreachable!()),
        )
        .with_message_id(format!("bench-{seq}-{sent_at_ns}")),
    )
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[derive(serde::Deserialize)]
struct BroadcastParams {
    count: Option<u32>,
    size: Option<usize>,
}

async fn broadcast(
    State(bench): State<Arc<Bench>>,
    Query(params): Query<BroadcastParams>,
) -> Response {
    let count = params.count.unwrap_or(100);
    let size = params.size.unwrap_or(200);
    if count > MAX_COUNT || size > MAX_SIZE {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "count <= 1000000 and size <= 1048576" })),
        )
            .into_response();
    }
    let events: Vec<InboxEvent> = (0..count)
        .map(|_| {
            let seq = bench.seq.fetch_add(1, Ordering::Relaxed);
            let sent_at_ns = unix_now_ns();
            let bare = bench.bare_len - 2 + digits(seq) + digits(sent_at_ns);
            event(seq, sent_at_ns, size.saturating_sub(bare))
        })
        .collect();
    let reports = if bench.pipelined {
        // Issued in order (each future's first poll queues its publish), all in flight.
        futures_util::future::join_all(
            events
                .iter()
                .map(|event| bench.hub.publish_inbox(&bench.account, event)),
        )
        .await
    } else {
        let mut reports = Vec::with_capacity(events.len());
        for event in &events {
            reports.push(bench.hub.publish_inbox(&bench.account, event).await);
        }
        reports
    };
    let mut recipients = 0;
    for report in reports {
        match report {
            Ok(report) => recipients = recipients.max(report.delivered),
            Err(e) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "error": e.to_string() })),
                )
                    .into_response();
            }
        }
    }
    Json(json!({ "published": count, "recipients": recipients })).into_response()
}

async fn stats(State(bench): State<Arc<Bench>>) -> Response {
    Json(json!({ "connections": bench.hub.connection_count() })).into_response()
}
