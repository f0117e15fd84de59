//! Cross-node fan-out through Redis against the in-process hub: throughput and latency, end
//! to end over loopback WebSockets, in one run (ratios, not absolute numbers, are the point).
//!
//! ```text
//! cargo run --release -p misar-proto-tokio --features redis --example redis_bench -- \
//!     [--events 20000] [--subscribers 10] [--rate 2000] [--latency-events 5000] \
//!     [--concurrency 32] [--redis redis://127.0.0.1:6379] [--cluster [--cluster-urls URL,URL,…]]
//! ```
//!
//! Without `--redis` it starts its own `redis-server` on a free loopback port (Debian package
//! `redis-server`). Two setups, same clients:
//!
//! - `memory`: one hub ([`Hub::new`]); the publisher and the clients are on the same node.
//! - `redis`: two hubs on two [`RedisBroker`]s; publishing on node A, every client on node B.
//! - `cluster` (with `--cluster`): the same on a Redis Cluster of three masters (started from
//!   the Debian packages unless `--cluster-urls` names one).
//!
//! Two phases per setup:
//!
//! - throughput: `--concurrency` tasks publish `--events` inbox events as fast as they can;
//!   the clock stops when every client has read every event;
//! - latency: `--latency-events` events at a steady `--rate` per second; each delivery's
//!   latency runs from just before the publish call to the client reading the frame.

#[path = "../tests/server_support.rs"]
#[allow(unused_imports)]
mod support;

#[path = "../tests/redis_util/mod.rs"]
mod redis_util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use misar_proto::auth::AccountId;
use misar_proto::event::{EmailReceived, InboxEvent, Timestamp, decode_inbox};
use misar_proto_tokio::hub::redis::{RedisBroker, RedisConfig};
use misar_proto_tokio::hub::{Hub, HubConfig};
use misar_proto_tokio::server::DriverConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Parser, Debug)]
#[command(about = "Redis broker vs in-process hub: throughput and latency")]
struct Args {
    /// Events published in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// WebSocket clients subscribed to the published inbox.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Publishing tasks in the throughput phase.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Events per second in the latency phase.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    /// Events published in the latency phase.
    #[arg(long, default_value_t = 5_000)]
    latency_events: u64,
    /// An existing Redis to use instead of starting one.
    #[arg(long)]
    redis: Option<String>,
    /// Events of history Redis keeps per stream for resuming clients (256, the default; 0:
    /// none, to see what the history costs).
    #[arg(long, default_value_t = 256)]
    history_events: usize,
    /// Also measure through a Redis Cluster of three masters.
    #[arg(long)]
    cluster: bool,
    /// An existing Redis Cluster's seeds (comma-separated) instead of starting one.
    #[arg(long)]
    cluster_urls: Option<String>,
}

/// Where events are published, and where the clients connect.
struct Setup {
    name: &'static str,
    publisher: Hub,
    server: support::TestServer,
    /// Kept alive for the run.
    _nodes: Vec<Hub>,
    brokers: Vec<Arc<RedisBroker>>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut _own_redis = None;
    let url = match &args.redis {
        Some(url) => url.clone(),
        None => {
            if !redis_util::available("redis_bench") {
                return Err("redis-server is needed (or pass --redis URL)".into());
            }
            let server = redis_util::RedisServer::start().await;
            let url = server.url();
            _own_redis = Some(server);
            url
        }
    };
    println!(
        "events {} · subscribers {} · concurrency {} · latency phase {} events at {}/s",
        args.events, args.subscribers, args.concurrency, args.latency_events, args.rate
    );
    println!(
        "{:<8} {:>14} {:>16} {:>9} {:>9} {:>9} {:>9}",
        "setup", "events/s", "deliveries/s", "p50 µs", "p99 µs", "max µs", "lost"
    );
    let mut _own_cluster = None;
    let cluster_urls = match (&args.cluster_urls, args.cluster) {
        (Some(urls), _) => Some(urls.clone()),
        (None, true) => {
            let cluster = redis_util::RedisCluster::start(3).await;
            let urls = cluster.urls();
            _own_cluster = Some(cluster);
            Some(urls)
        }
        (None, false) => None,
    };
    let mut names = vec!["memory", "redis"];
    if cluster_urls.is_some() {
        names.push("cluster");
    }
    let mut results = Vec::new();
    for name in names {
        let setup = setup(
            name,
            &url,
            cluster_urls.as_deref().unwrap_or_default(),
            args.history_events,
        )
        .await?;
        let throughput = throughput(&setup, &args).await?;
        let latency = latency(&setup, &args).await?;
        println!(
            "{:<8} {:>14.0} {:>16.0} {:>9} {:>9} {:>9} {:>9}",
            setup.name,
            throughput,
            throughput * args.subscribers as f64,
            latency.p50,
            latency.p99,
            latency.max,
            latency.lost
        );
        for broker in &setup.brokers {
            let stats = broker.stats();
            if stats.gaps > 0 || stats.rejected > 0 {
                println!("  warning: {stats:?}");
            }
        }
        results.push((throughput, latency));
    }
    if let [(memory, memory_latency), others @ ..] = &results[..] {
        for ((throughput, latency), name) in others.iter().zip(["redis", "cluster"]) {
            println!(
                "{name} / memory: throughput {:.2}×, p99 latency {:.1}×",
                throughput / memory,
                latency.p99 as f64 / (memory_latency.p99.max(1)) as f64
            );
        }
    }
    Ok(())
}

async fn setup(
    name: &'static str,
    url: &str,
    cluster_urls: &str,
    history_events: usize,
) -> Result<Setup, Box<dyn std::error::Error>> {
    let config = HubConfig::default();
    let roomy = support::roomy(1 << 20);
    Ok(match name {
        "memory" => {
            let hub = Hub::new(config);
            let server =
                support::TestServer::start(hub.clone(), roomy, DriverConfig::default()).await;
            Setup {
                name,
                publisher: hub.clone(),
                server,
                _nodes: vec![hub],
                brokers: Vec::new(),
            }
        }
        _ => {
            // A distinct prefix per run, so a shared Redis holds nothing from a previous one.
            let cluster = name == "cluster";
            let redis_config = RedisConfig {
                prefix: format!("misar-bench-{}", std::process::id()),
                cluster,
                history: misar_proto::streams::HistoryConfig {
                    max_events: history_events,
                    ..misar_proto::streams::HistoryConfig::default()
                },
                ..RedisConfig::default()
            };
            let url = if cluster { cluster_urls } else { url };
            let broker_a = RedisBroker::connect(url, redis_config.clone()).await?;
            let broker_b = RedisBroker::connect(url, redis_config).await?;
            let node_a = Hub::with_broker(config.clone(), broker_a.clone());
            let node_b = Hub::with_broker(config, broker_b.clone());
            let server =
                support::TestServer::start(node_b.clone(), roomy, DriverConfig::default()).await;
            Setup {
                name,
                publisher: node_a.clone(),
                server,
                _nodes: vec![node_a, node_b],
                brokers: vec![broker_a, broker_b],
            }
        }
    })
}

/// An inbox event carrying its number in `messageId`.
fn event(number: u64) -> InboxEvent {
    InboxEvent::EmailReceived(
        EmailReceived::new(
            "bench@example.com",
            "A subject of a typical length for an email notification",
            Timestamp::parse("2026-05-27T10:15:00Z").unwrap_or_else(|_| unreachable!()),
        )
        .with_message_id(number.to_string()),
    )
}

/// Connects `setup`'s clients (account `bench`) and waits until every node is subscribed.
async fn clients(setup: &Setup, count: usize, account: &str) -> Vec<support::Client> {
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(support::connect(setup.server.addr, "/mail/ws/inbox", account).await);
    }
    for broker in &setup.brokers {
        broker.sync().await;
    }
    clients
}

/// Reads `expected` events on `client`; returns each event's number and when it was read
/// (nanoseconds since `origin`).
async fn read(mut client: support::Client, expected: u64, origin: Instant) -> Vec<(u64, u64)> {
    let mut seen = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    while (seen.len() as u64) < expected {
        match client.next().await {
            Some(Ok(WsMessage::Text(text))) => {
                let at = origin.elapsed().as_nanos() as u64;
                if let Ok(InboxEvent::EmailReceived(e)) = decode_inbox(text.as_bytes()) {
                    let number = e.message_id.and_then(|id| id.parse().ok()).unwrap_or(0);
                    seen.push((number, at));
                }
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    seen
}

/// Events per second each client received, publishing as fast as possible.
async fn throughput(setup: &Setup, args: &Args) -> Result<f64, Box<dyn std::error::Error>> {
    let account = "bench-throughput";
    let clients = clients(setup, args.subscribers, account).await;
    let origin = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(read(client, args.events, origin)))
        .collect();
    let started = Instant::now();
    let per_task = args.events / args.concurrency.max(1);
    let mut publishers = Vec::new();
    for task in 0..args.concurrency.max(1) {
        let hub = setup.publisher.clone();
        let count = if task == 0 {
            args.events - per_task * (args.concurrency.max(1) - 1)
        } else {
            per_task
        };
        publishers.push(tokio::spawn(async move {
            let account = AccountId::new(account);
            for i in 0..count {
                hub.publish_inbox(&account, &event(task * 1_000_000 + i))
                    .await?;
            }
            Ok::<_, misar_proto_tokio::hub::PublishError>(())
        }));
    }
    for publisher in publishers {
        publisher.await??;
    }
    let mut received = 0;
    for reader in readers {
        received += reader.await?.len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    if received as u64 != args.events * args.subscribers as u64 {
        return Err(format!("only {received} deliveries arrived").into());
    }
    Ok(args.events as f64 / elapsed)
}

struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
    lost: u64,
}

/// Publish-to-read latency at a steady rate.
async fn latency(setup: &Setup, args: &Args) -> Result<Latency, Box<dyn std::error::Error>> {
    let account = "bench-latency";
    let clients = clients(setup, args.subscribers, account).await;
    let origin = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new(
        (0..args.latency_events)
            .map(|_| AtomicU64::new(u64::MAX))
            .collect(),
    );
    let readers: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_secs(60),
                read(client, args.latency_events, origin),
            ))
        })
        .collect();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1) as u32);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let account_id = AccountId::new(account);
    for i in 0..args.latency_events {
        ticker.tick().await;
        if let Some(slot) = sent.get(i as usize) {
            slot.store(origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        // Not awaited in line: the next tick must not wait for Redis's answer.
        let hub = setup.publisher.clone();
        let account = account_id.clone();
        tokio::spawn(async move { hub.publish_inbox(&account, &event(i)).await });
    }
    let mut latencies = Vec::new();
    let mut lost = 0;
    for reader in readers {
        let seen = reader.await?.unwrap_or_default();
        lost += args.latency_events.saturating_sub(seen.len() as u64);
        for (number, at) in seen {
            if let Some(sent) = sent.get(number as usize) {
                let sent = sent.load(Ordering::Relaxed);
                latencies.push(at.saturating_sub(sent) / 1000);
            }
        }
    }
    latencies.sort_unstable();
    let pick = |q: f64| -> u64 {
        if latencies.is_empty() {
            return 0;
        }
        let index = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[index.min(latencies.len() - 1)]
    };
    Ok(Latency {
        p50: pick(0.50),
        p99: pick(0.99),
        max: latencies.last().copied().unwrap_or(0),
        lost,
    })
}
