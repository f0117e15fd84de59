//! B7 "many streams" (issue 12, item 7): many inbox streams and one large campaign at once,
//! in one process.
//!
//! `--accounts` accounts hold one inbox connection each, and `--campaign-subscribers`
//! connections (of accounts `0, 1, 2, ...`) watch one campaign. `--publishers` tasks publish
//! `email_received` events to random accounts through the library API (`Hub::publish_inbox`)
//! while one task publishes the campaign's `progress` (`Hub::publish_campaign`), each at a
//! fixed rate (`--inbox-rate`, `--campaign-rate`) or in a loop (rate 0), everything on one
//! multi-thread tokio runtime of `--workers` threads.
//!
//! 20,000 sockets do not fit this machine's open-file limit in one process, so the connections
//! are in memory: each is served by the library's real driver (`serve_connection`, with the
//! session and its queue bounds, coalescing and heartbeat) over a bounded in-memory pipe
//! (`transport.rs`), whose other end is a client task that reads the publish stamp out of each
//! event (`client.rs`). `--server naive` runs the same over a hub of one `broadcast` channel
//! per account and one for the campaign (`naive.rs`).
//!
//! Reported (one JSON line on stdout, a summary on stderr): inbox publish-to-receive p50/p99,
//! inbox events/s received, campaign events/s published and deliveries/s received, the time a
//! publish call takes, memory per connection and CPU. Every call into our hub is in
//! `hub_api.rs`, the one file to update when the hub's API changes.
#![forbid(unsafe_code)]
#![recursion_limit = "256"] // the one big json! of the report

mod client;
#[allow(dead_code)] // shared with the load generator, which uses all of it
#[path = "../loadgen/histogram.rs"]
mod histogram;
mod hub_api;
mod naive;
#[allow(dead_code)] // shared with the load generator, which uses all of it
#[path = "../loadgen/procfs.rs"]
mod procfs;
mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use misar_proto::auth::AccountId;
use misar_proto::event::{CampaignEvent, EmailReceived, InboxEvent, Progress, Timestamp};
use misar_proto::route::CampaignId;
use misar_proto::server::ServerConfig;
use misar_proto_tokio::hub::Hub;
use misar_proto_tokio::server::DriverConfig;
use misar_tests::bench;
use serde_json::{Value, json};

use crate::client::{Clock, Ends, Kind};
use crate::histogram::Histogram;
use crate::naive::{NaiveChannel, NaiveEmail, NaiveHub, NaiveProgress};
use crate::procfs::{CoreWindow, CpuWindow};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CAMPAIGN: &str = "b7-campaign";
const FROM: &str = "bench@example.com";
const RECEIVED_AT: &str = "2026-05-27T10:15:00Z";

/// Which hub serves the connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ServerKind {
    /// misar-proto-tokio's `Hub` and `serve_connection`.
    Ours,
    /// One `tokio::sync::broadcast` channel per account and one for the campaign.
    Naive,
}

#[derive(Debug, Parser)]
#[command(about = "B7 many streams: inbox events to many accounts while a campaign fans out")]
struct Args {
    /// The hub under test.
    #[arg(long, value_enum, default_value = "ours")]
    server: ServerKind,
    /// Accounts, one inbox connection each.
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Connections subscribed to the one campaign (of accounts 0, 1, 2, ...).
    #[arg(long, default_value_t = 10_000)]
    campaign_subscribers: usize,
    /// Tasks publishing inbox events to random accounts.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Inbox events per second, all publishers together (a fixed offered load: compare
    /// latency and CPU); 0: each publishes in a loop, yielding to the scheduler after every
    /// event (the saturation variant: how many get through, which depends on how often the
    /// scheduler polls the publishers).
    #[arg(long, default_value_t = 50_000)]
    inbox_rate: u64,
    /// Campaign `progress` events per second (100: 1,000,000 deliveries/s offered to 10,000
    /// subscribers); 0: in a loop, yielding after every event (the stress variant).
    #[arg(long, default_value_t = 100)]
    campaign_rate: u64,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Publishing before the window opens, seconds.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Longest wait after the window for events still under way, seconds.
    #[arg(long, default_value_t = 3)]
    drain_secs: u64,
    /// Inbox event size in bytes (the subject is padded).
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Messages a connection's in-memory pipe holds unread (its "socket buffer").
    #[arg(long, default_value_t = 256)]
    pipe_capacity: usize,
    /// Server ping interval, milliseconds (the library's default 30 s).
    #[arg(long, default_value_t = 30_000)]
    ping_ms: u64,
    /// Capacity of each of the naive peer's broadcast channels (naive_axum's 1024).
    #[arg(long, default_value_t = 1024)]
    naive_capacity: usize,
    /// The `server` field of the JSON line (default: `misar` or `naive`).
    #[arg(long)]
    name: Option<String>,
}

/// The hub under test, as the publishers see it.
#[derive(Clone)]
enum Target {
    Ours(Hub),
    Naive(Arc<NaiveHub>),
}

impl Target {
    fn connection_count(&self) -> usize {
        match self {
            Target::Ours(hub) => hub_api::connection_count(hub),
            Target::Naive(hub) => hub.connection_count(),
        }
    }
}

/// What every publisher shares.
struct Plan {
    target: Target,
    clock: Arc<Clock>,
    stop: AtomicBool,
    accounts: Vec<AccountId>,
    account_names: Vec<String>,
    campaign: CampaignId,
    subject: String,
    received_at: Timestamp,
}

/// What one publisher did inside the window.
#[derive(Default)]
struct Published {
    events: u64,
    /// Deliveries the hub reported (queued for a connection / receivers reached).
    reported: u64,
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(&args));
    // 20,000 parked connections need no orderly teardown.
    runtime.shutdown_background();
    result
}

async fn run(args: &Args) -> Result<(), BoxError> {
    let pid = std::process::id();
    let clock = Arc::new(Clock::new());
    let ends = Arc::new(Ends::default());
    let conns = args.accounts.saturating_add(args.campaign_subscribers);
    if args.accounts == 0 {
        return Err("--accounts must be at least 1".into());
    }
    let ping = Duration::from_millis(args.ping_ms.max(1));
    let target = match args.server {
        ServerKind::Ours => Target::Ours(hub_api::new_hub(conns)),
        ServerKind::Naive => Target::Naive(NaiveHub::new(args.naive_capacity, ping)),
    };
    let name = args.name.clone().unwrap_or_else(|| {
        match args.server {
            ServerKind::Ours => "misar",
            ServerKind::Naive => "naive",
        }
        .to_owned()
    });
    let conn_config = hub_api::ConnConfig {
        server: ServerConfig {
            ping_interval: ping,
            ..ServerConfig::default()
        },
        driver: DriverConfig::default(),
    };
    let account_names: Vec<String> = (0..args.accounts).map(|i| format!("acct{i}")).collect();
    let accounts: Vec<AccountId> = account_names
        .iter()
        .map(|n| AccountId::new(n.as_str()))
        .collect();
    let rss_start = rss_kib(pid);

    // Connect: every inbox, then the campaign's subscribers.
    let connect_started = Instant::now();
    let campaign_path = format!("/mail/ws/campaigns/{CAMPAIGN}");
    for i in 0..conns {
        let (kind, account) = if i < args.accounts {
            (Kind::Inbox, &account_names[i])
        } else {
            (
                Kind::Campaign,
                &account_names[(i - args.accounts) % args.accounts],
            )
        };
        let (server_end, client_end) = transport::pair(args.pipe_capacity);
        match &target {
            Target::Ours(hub) => {
                let path = match kind {
                    Kind::Inbox => bench::INBOX_PATH,
                    Kind::Campaign => campaign_path.as_str(),
                };
                let accepted = hub_api::accept(path, &format!("msk_{account}"))?;
                let connection = hub_api::serve(hub, accepted, server_end, &conn_config)?;
                tokio::spawn(connection);
            }
            Target::Naive(hub) => {
                let channel = match kind {
                    Kind::Inbox => NaiveChannel::Inbox(account),
                    Kind::Campaign => NaiveChannel::Campaign,
                };
                hub.connect(channel, server_end);
            }
        }
        tokio::spawn(client::run(
            client_end,
            kind,
            Arc::clone(&clock),
            Arc::clone(&ends),
        ));
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    // Let every driver take its first poll (ours attaches its session then).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = target.connection_count();
    let rss_conns = rss_kib(pid);
    let per_conn = rss_start
        .zip(rss_conns)
        .map(|(a, b)| b.saturating_sub(a) * 1024 / conns.max(1) as u64);
    eprintln!(
        "[{name}] {connected} of {conns} connections ({} inbox, {} campaign) in {connect_secs:.2} s; \
         RSS {} -> {} KiB ({} B/conn)",
        args.accounts,
        args.campaign_subscribers,
        show(rss_start),
        show(rss_conns),
        show(per_conn),
    );

    let plan = Arc::new(Plan {
        target,
        clock: Arc::clone(&clock),
        stop: AtomicBool::new(false),
        accounts,
        account_names,
        campaign: CampaignId::new(CAMPAIGN)?,
        subject: "x".repeat(args.size.saturating_sub(bare_inbox_len())),
        received_at: Timestamp::parse(RECEIVED_AT)?,
    });

    // Publish: warm-up, then the window.
    let publishers = args.publishers.max(1);
    let per_task_rate = (args.inbox_rate > 0).then(|| args.inbox_rate as f64 / publishers as f64);
    let mut inbox_tasks = Vec::new();
    for p in 0..publishers {
        let plan = Arc::clone(&plan);
        inbox_tasks.push(tokio::spawn(publish_inbox_loop(
            plan,
            p as u64,
            per_task_rate,
        )));
    }
    let campaign_rate = (args.campaign_rate > 0).then_some(args.campaign_rate as f64);
    let campaign_task = (args.campaign_subscribers > 0)
        .then(|| tokio::spawn(publish_campaign_loop(Arc::clone(&plan), campaign_rate)));

    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let own_cpu = CpuWindow::start(pid);
    let cores: Vec<CoreWindow> = (0..num_cores()).filter_map(CoreWindow::start).collect();
    let window_started = Instant::now();
    let start_ns = clock.open_window();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let end_ns = clock.close_window();
    let window_secs = window_started.elapsed().as_secs_f64();
    let cpu_pct = own_cpu.as_ref().and_then(CpuWindow::percent);
    let core_busy: Vec<f64> = cores
        .iter()
        .filter_map(|c| c.percent().map(|(busy, _)| round1(busy)))
        .collect();
    let rss_peak = procfs::vm_kib(pid, "VmHWM").ok();
    plan.stop.store(true, Ordering::Relaxed);

    let mut inbox = Published::default();
    let call_latency = Histogram::new();
    for task in inbox_tasks {
        let (published, calls) = task.await?;
        inbox.events += published.events;
        inbox.reported += published.reported;
        call_latency.merge(&calls);
    }
    let campaign = match campaign_task {
        Some(task) => task.await?,
        None => Published::default(),
    };

    // Wait for what is under way (the window's events), until nothing new arrives.
    let drain_started = Instant::now();
    let mut last = received(&client::all_stats());
    while drain_started.elapsed() < Duration::from_secs(args.drain_secs) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = received(&client::all_stats());
        if now == last {
            break;
        }
        last = now;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let (inbox_received, campaign_received) = last;
    let stats = client::all_stats();
    let inbox_latency = Histogram::new();
    let campaign_latency = Histogram::new();
    for thread in &stats {
        inbox_latency.merge(&thread.inbox);
        campaign_latency.merge(&thread.campaign);
    }
    let secs = (end_ns.saturating_sub(start_ns)) as f64 / 1e9;
    let per_sec = |n: u64| round1(n as f64 / secs.max(1e-9));
    let offered = campaign
        .events
        .saturating_mul(args.campaign_subscribers as u64);
    let closes: serde_json::Map<String, Value> = ends
        .closes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(code, n)| (code.to_string(), json!(n)))
        .collect();

    let record = json!({
        "scenario": "B7",
        "server": name,
        "conns": conns,
        "accounts": args.accounts,
        "campaign_subscribers": args.campaign_subscribers,
        "publishers": publishers,
        "workers": args.workers,
        "inbox_rate": args.inbox_rate,
        "campaign_rate": args.campaign_rate,
        "size": args.size,
        "pipe_capacity": args.pipe_capacity,
        "window_secs": round2(window_secs),
        "warmup_secs": args.warmup_secs,
        "drain_secs": round2(drain_secs),
        "connected": connected,
        "inbox_published": inbox.events,
        "inbox_received": inbox_received,
        "inbox_missing": inbox.events.saturating_sub(inbox_received),
        "inbox_events_per_sec": per_sec(inbox_received),
        "inbox_p50_us": micros(inbox_latency.quantile(0.5)),
        "inbox_p99_us": micros(inbox_latency.quantile(0.99)),
        "inbox_p999_us": micros(inbox_latency.quantile(0.999)),
        "inbox_max_us": micros(inbox_latency.max()),
        "inbox_publish_call_p50_us": micros(call_latency.quantile(0.5)),
        "inbox_publish_call_p99_us": micros(call_latency.quantile(0.99)),
        "inbox_publish_call_p999_us": micros(call_latency.quantile(0.999)),
        "inbox_publish_call_max_us": micros(call_latency.max()),
        "campaign_published": campaign.events,
        "campaign_events_per_sec": per_sec(campaign.events),
        "campaign_reported_deliveries": campaign.reported,
        "campaign_offered_deliveries": offered,
        "campaign_received": campaign_received,
        "campaign_deliveries_per_sec": per_sec(campaign_received),
        "campaign_p50_us": micros(campaign_latency.quantile(0.5)),
        "campaign_p99_us": micros(campaign_latency.quantile(0.99)),
        "events_per_sec": per_sec(inbox_received.saturating_add(campaign_received)),
        "cpu_pct": cpu_pct.map(round1),
        "core_busy_pct": core_busy,
        "rss_start_kib": rss_start,
        "rss_conns_kib": rss_conns,
        "rss_per_conn_bytes": per_conn,
        "rss_peak_kib": rss_peak,
        "closes": closes,
        "dropped": ends.dropped.load(Ordering::Relaxed),
        "unreadable": ends.unreadable.load(Ordering::Relaxed),
        "unix_time": bench::unix_now_ns() / 1_000_000_000,
    });
    println!("{record}");
    eprintln!(
        "[{name}] B7 {} accounts + {} campaign subscribers, {publishers} publishers, {} workers, \
         {:.1} s window:\n  \
         inbox:    {} events/s received ({} published, {} missing), publish->receive p50 {} us, \
         p99 {} us, p99.9 {} us; publish call p50 {} us, p99 {} us, max {} us\n  \
         campaign: {} events/s published, {} deliveries/s received (of {} offered), \
         p50 {} us, p99 {} us\n  \
         CPU {}% of one core (cores busy {:?} %), RSS peak {} KiB; closes {:?}, dropped {}",
        args.accounts,
        args.campaign_subscribers,
        args.workers,
        secs,
        per_sec(inbox_received),
        inbox.events,
        inbox.events.saturating_sub(inbox_received),
        micros(inbox_latency.quantile(0.5)),
        micros(inbox_latency.quantile(0.99)),
        micros(inbox_latency.quantile(0.999)),
        micros(call_latency.quantile(0.5)),
        micros(call_latency.quantile(0.99)),
        micros(call_latency.max()),
        per_sec(campaign.events),
        per_sec(campaign_received),
        offered,
        micros(campaign_latency.quantile(0.5)),
        micros(campaign_latency.quantile(0.99)),
        show(cpu_pct.map(round1)),
        core_busy,
        show(rss_peak),
        closes,
        ends.dropped.load(Ordering::Relaxed),
    );
    Ok(())
}

/// Inbox events and campaign deliveries received so far (stamped inside the window).
fn received(stats: &[Arc<client::ThreadStats>]) -> (u64, u64) {
    stats.iter().fold((0, 0), |(i, c), s| {
        (i + s.inbox.count(), c + s.campaign.count())
    })
}

/// The length of an inbox event with an empty subject and typical stamps, so that `--size`
/// is about the frame's size.
fn bare_inbox_len() -> usize {
    let event = InboxEvent::EmailReceived(
        EmailReceived::new(
            FROM,
            String::new(),
            Timestamp::parse(RECEIVED_AT).unwrap_or_else(|_| unreachable!()),
        )
        .with_message_id(format!("bench-{}-{}", 1_000_000u64, 10_000_000_000u64)),
    );
    event.encode().len()
}

/// Publishes inbox events to random accounts until told to stop; what it did inside the
/// window, and how long each publish call took.
async fn publish_inbox_loop(
    plan: Arc<Plan>,
    index: u64,
    rate: Option<f64>,
) -> (Published, Histogram) {
    let mut rng = XorShift::new(index);
    let mut published = Published::default();
    let calls = Histogram::new();
    let started = Instant::now();
    let mut seq = index << 48;
    let mut sent = 0u64;
    let n = plan.accounts.len() as u64;
    while !plan.stop.load(Ordering::Relaxed) {
        if let Some(rate) = rate {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if sent >= due {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        let account = (rng.next() % n) as usize;
        seq += 1;
        let stamp = plan.clock.now_ns();
        let message_id = format!("bench-{seq}-{stamp}");
        let reported = match &plan.target {
            Target::Ours(hub) => {
                let event = InboxEvent::EmailReceived(
                    EmailReceived::new(FROM, plan.subject.clone(), plan.received_at.clone())
                        .with_message_id(message_id),
                );
                hub_api::publish_inbox(hub, &plan.accounts[account], &event).await
            }
            Target::Naive(hub) => hub.publish_inbox(
                &plan.account_names[account],
                &NaiveEmail {
                    kind: "email_received",
                    from: FROM,
                    subject: &plan.subject,
                    received_at: RECEIVED_AT,
                    message_id,
                },
            ),
        };
        let done = plan.clock.now_ns();
        sent += 1;
        if plan.clock.in_window(stamp) {
            published.events += 1;
            published.reported += reported as u64;
            calls.record(done.saturating_sub(stamp));
        }
        if rate.is_none() || sent % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    (published, calls)
}

/// Publishes the campaign's `progress` until told to stop (`sent` carries the stamp).
async fn publish_campaign_loop(plan: Arc<Plan>, rate: Option<f64>) -> Published {
    let mut published = Published::default();
    let started = Instant::now();
    let mut seq = 0u64;
    while !plan.stop.load(Ordering::Relaxed) {
        if let Some(rate) = rate {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if seq >= due {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        seq += 1;
        let stamp = plan.clock.now_ns();
        let reported = match &plan.target {
            Target::Ours(hub) => {
                let event = CampaignEvent::Progress(Progress::new(
                    plan.campaign.clone(),
                    stamp,
                    stamp,
                    seq,
                    0,
                    0,
                ));
                hub_api::publish_campaign(hub, &plan.campaign, &event).await
            }
            Target::Naive(hub) => hub.publish_campaign(&NaiveProgress {
                kind: "progress",
                campaign_id: CAMPAIGN,
                sent: stamp,
                total: stamp,
                delivered: seq,
                bounced: 0,
                opened: 0,
            }),
        };
        if plan.clock.in_window(stamp) {
            published.events += 1;
            published.reported += reported as u64;
        }
        tokio::task::yield_now().await;
    }
    published
}

/// A small, fast, deterministic generator (xorshift64*), one per publisher.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn rss_kib(pid: u32) -> Option<u64> {
    procfs::vm_kib(pid, "VmRSS").ok()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn micros(ns: u64) -> f64 {
    round1(ns as f64 / 1000.0)
}

fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}
