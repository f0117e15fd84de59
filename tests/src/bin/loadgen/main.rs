//! Load generator for the server benchmarks of issue 8 (`bench/run` drives it; the contract a
//! server under test implements is `bench/README.md`).
//!
//! Subcommands, one per kind of measurement:
//! - `idle`: N connections that each answer at least one ping, then the server's RSS growth per
//!   connection (B2) and, optionally, its CPU over a window while it keeps pinging them (B4);
//! - `fanout`: N subscribers, bursts of K events through `POST /bench/broadcast`, deliveries per
//!   second and publish-to-receive latency (B3), optionally with slow readers (B5);
//! - `upgrades`: a loop of connect, handshake and close (B6);
//! - `storm`: a reconnect storm after one of two broker-backed nodes restarts (B8, issue 13);
//! - `criterion`: B1's results (the codec bench of `misar-proto`) as JSON lines;
//! - `report`: the table, with ratios, of the JSON lines the others printed.
//!
//! Every measurement prints one JSON line on stdout and a human summary on stderr.
#![forbid(unsafe_code)]

mod control;
mod criterion;
mod histogram;
mod procfs;
mod report;
mod storm;
mod ws;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use misar_tests::bench;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use crate::histogram::Histogram;
use crate::procfs::{CoreWindow, CpuWindow};
use crate::ws::{Batch, ClientKind, Conn, ConnectParams, Event, WsError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(about = "Load generator for the misar-proto benchmarks (issue 8)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Idle connections: RSS per connection (B2), and CPU while pinging them (B4).
    Idle(IdleArgs),
    /// Fan-out of bursts of events to N subscribers (B3; B5 with --slow).
    Fanout(FanoutArgs),
    /// Handshakes per second: connect, upgrade, close, in a loop (B6).
    Upgrades(UpgradeArgs),
    /// Reconnect storm after a node restart, with or without resume (B8).
    Storm(storm::StormArgs),
    /// Prints criterion's results of the codec bench (B1) as JSON lines.
    Criterion(criterion::CriterionArgs),
    /// Prints the table of a file of JSON lines written by the other subcommands.
    Report(report::ReportArgs),
}

/// Options every measurement shares.
#[derive(Debug, Clone, Args)]
struct Common {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Server port.
    #[arg(long, env = "BENCH_PORT")]
    port: u16,
    /// Upgrade path.
    #[arg(long, default_value = bench::INBOX_PATH)]
    path: String,
    /// API key sent as `?token=`; every connection uses the same one, so a server that routes
    /// events per account reaches all of them with one publish.
    #[arg(long, default_value = "msk_bench_0123456789abcdef")]
    token: String,
    /// The server's process id, to read its RSS and CPU time from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// The CPU core the server is pinned to, to report that core's busy and softirq time.
    #[arg(long)]
    server_core: Option<usize>,
    /// The server's name in the output.
    #[arg(long, default_value = "server")]
    server_name: String,
    /// Client implementation.
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    client: ClientKind,
    /// Handshakes in flight at once while opening connections.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Time limit of one connection's connect and handshake, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    connect_timeout_ms: u64,
    /// Initial read buffer per connection, in bytes.
    #[arg(long, default_value_t = 8192)]
    read_buf: usize,
    /// Opt every connection in to resume (DESIGN.md §2.11): send `Misar-Resume: new`, expect
    /// the server's `resume` frame first (counted apart, not as a delivery). Events then carry
    /// `,"offset":N`.
    #[arg(long)]
    resume: bool,
}

impl Common {
    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    fn params(&self, rcvbuf: Option<u32>) -> ConnectParams {
        ConnectParams {
            addr: self.addr(),
            path: format!("{}?token={}", self.path, self.token),
            read_buf: self.read_buf,
            rcvbuf,
            kind: self.client,
            resume: self.resume.then(|| "new".to_owned()),
        }
    }

    fn client_name(&self) -> &'static str {
        match self.client {
            ClientKind::Raw => "raw",
            ClientKind::Tungstenite => "tungstenite",
        }
    }
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Longest wait for every connection to have answered a ping, in seconds.
    #[arg(long, default_value_t = 90)]
    ping_wait_secs: u64,
    /// Pause after the last first ping before reading the RSS, in milliseconds.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// Then measure the server's CPU over this many seconds (B4); 0 skips it.
    #[arg(long, default_value_t = 0)]
    cpu_secs: u64,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Subscribers.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Events per burst.
    #[arg(long, default_value_t = 100)]
    events: u32,
    /// Approximate size of an event, in bytes.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Measured bursts.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Unmeasured bursts first (allocator, JIT).
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Subscribers (the first ones opened) that never read until the end (B5).
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// SO_RCVBUF of a slow subscriber's socket, in bytes, so its backlog reaches the server
    /// sooner; 0 keeps the system's default.
    #[arg(long, default_value_t = 4096)]
    slow_rcvbuf: u32,
    /// Longest wait for one burst to be delivered, in seconds.
    #[arg(long, default_value_t = 60)]
    round_timeout_secs: u64,
}

#[derive(Debug, Args)]
struct UpgradeArgs {
    #[command(flatten)]
    common: Common,
    /// How long to loop, in seconds.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Handshake loops running at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Report(args) => return report::run(args),
        Command::Criterion(args) => return criterion::run(args),
        _ => {}
    }
    // One thread: `bench/run` pins the load generator to its own core, and a single-threaded
    // runtime spends nothing on cross-thread wake-ups.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Idle(args) => idle(args).await,
            Command::Fanout(args) => fanout(args).await,
            Command::Upgrades(args) => upgrades(args).await,
            Command::Storm(args) => storm::run(args).await,
            Command::Report(_) | Command::Criterion(_) => Ok(()),
        }
    })
}

/// Counters every connection task adds to.
struct Shared {
    /// Text messages received by the connections that read.
    delivered: AtomicU64,
    /// Payload bytes of those.
    bytes: AtomicU64,
    /// Messages whose sequence number was not above the connection's previous one.
    out_of_order: AtomicU64,
    /// Messages without a bench marker.
    unmarked: AtomicU64,
    /// Connections that have received at least one ping.
    pinged: AtomicU64,
    /// Pings received (and answered) in all.
    pings: AtomicU64,
    /// Wall clock (ns) of the latest read that brought a text message.
    last_recv_ns: AtomicU64,
    /// `delivered` value at which `reached` is notified.
    target: AtomicU64,
    reached: Notify,
    /// Publish-to-receive latency, ns: from the server's stamp of each event.
    latency: Histogram,
    /// Burst-to-receive latency, ns: from the moment the burst was requested.
    burst_latency: Histogram,
    /// Wall clock (ns) at which the current burst was requested.
    burst_start_ns: AtomicU64,
    /// Connections established and not yet ended.
    open: AtomicU64,
    /// Why connections ended (close code, EOF, error), counted.
    ended: Mutex<BTreeMap<String, u64>>,
    /// Messages the slow subscribers read once they resumed.
    slow_frames: AtomicU64,
    /// How the slow subscribers ended, counted.
    slow_end: Mutex<BTreeMap<String, u64>>,
    /// Slow subscribers done draining.
    slow_done: AtomicU64,
    /// `resume` frames received (opted-in connections, §2.11).
    resume_frames: AtomicU64,
}

impl Shared {
    fn new() -> Self {
        Self {
            delivered: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            unmarked: AtomicU64::new(0),
            pinged: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            last_recv_ns: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
            latency: Histogram::new(),
            burst_latency: Histogram::new(),
            burst_start_ns: AtomicU64::new(0),
            open: AtomicU64::new(0),
            ended: Mutex::new(BTreeMap::new()),
            slow_frames: AtomicU64::new(0),
            slow_end: Mutex::new(BTreeMap::new()),
            slow_done: AtomicU64::new(0),
            resume_frames: AtomicU64::new(0),
        }
    }

    fn add_delivered(&self, n: u64) {
        let before = self.delivered.fetch_add(n, Ordering::Relaxed);
        let target = self.target.load(Ordering::Relaxed);
        if before < target && before.saturating_add(n) >= target {
            self.reached.notify_one();
        }
    }
}

fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
    // A poisoned map only means another task panicked mid-insert; the counts are still usable.
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(key).or_insert(0) += 1;
}

fn snapshot(map: &Mutex<BTreeMap<String, u64>>) -> BTreeMap<String, u64> {
    map.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// What one connection remembers between reads.
#[derive(Default)]
struct ConnState {
    last_seq: Option<u64>,
    pinged: bool,
}

impl ConnState {
    /// Accounts one batch of events read at `now_ns`.
    fn account(&mut self, shared: &Shared, events: &mut Vec<Observed>, now_ns: u64) {
        let mut texts = 0u64;
        let mut bytes = 0u64;
        let burst_start = shared.burst_start_ns.load(Ordering::Relaxed);
        for event in events.drain(..) {
            match event {
                Observed::Text { len, marker } => {
                    texts += 1;
                    bytes = bytes.saturating_add(len);
                    match marker {
                        Some(m) => {
                            shared.latency.record(now_ns.saturating_sub(m.sent_at_ns));
                            shared
                                .burst_latency
                                .record(now_ns.saturating_sub(burst_start));
                            if self.last_seq.is_some_and(|last| m.seq <= last) {
                                shared.out_of_order.fetch_add(1, Ordering::Relaxed);
                            }
                            self.last_seq = Some(m.seq);
                        }
                        None => {
                            shared.unmarked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Observed::Resume => {
                    shared.resume_frames.fetch_add(1, Ordering::Relaxed);
                }
                Observed::Ping => {
                    shared.pings.fetch_add(1, Ordering::Relaxed);
                    if !self.pinged {
                        self.pinged = true;
                        shared.pinged.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        if texts > 0 {
            shared.last_recv_ns.fetch_max(now_ns, Ordering::Relaxed);
            shared.bytes.fetch_add(bytes, Ordering::Relaxed);
            shared.add_delivered(texts);
        }
    }
}

/// An event copied out of the read buffer: just what the counters need.
enum Observed {
    Text {
        len: u64,
        marker: Option<bench::Marker>,
    },
    Resume,
    Ping,
}

fn observe(events: &mut Vec<Observed>, event: Event<'_>) {
    match event {
        Event::Text(payload) => events.push(Observed::Text {
            len: payload.len() as u64,
            marker: bench::parse_marker(payload),
        }),
        Event::Resume(_) => events.push(Observed::Resume),
        Event::Binary => {}
        Event::Ping => events.push(Observed::Ping),
    }
}

/// Reads until the connection ends; returns why.
async fn read_until_end(conn: &mut Conn, shared: &Shared, state: &mut ConnState) -> String {
    let mut events = Vec::new();
    loop {
        let result = conn.read_batch(|event| observe(&mut events, event)).await;
        // One clock read per socket read: every frame of a read arrived at the same moment.
        let now = bench::unix_now_ns();
        state.account(shared, &mut events, now);
        match result {
            Ok(Batch::Open) => {}
            Ok(Batch::Closed(code)) => {
                return code.map_or_else(|| "close:none".to_owned(), |c| format!("close:{c}"));
            }
            Err(e) => return e.label(),
        }
    }
}

/// A slow subscriber: connected, reads nothing until `resume`, then drains what it can.
async fn slow_reader(mut conn: Conn, shared: Arc<Shared>, mut resume: watch::Receiver<bool>) {
    // An error only means the sender is gone, which also means: stop waiting.
    let _ = resume.wait_for(|&go| go).await;
    let mut events = Vec::new();
    let end = loop {
        let read = conn.read_batch(|event| observe(&mut events, event));
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Err(_) => break "still open".to_owned(),
            Ok(result) => {
                let texts = events
                    .drain(..)
                    .filter(|e| matches!(e, Observed::Text { .. }))
                    .count();
                shared
                    .slow_frames
                    .fetch_add(texts as u64, Ordering::Relaxed);
                match result {
                    Ok(Batch::Open) => {}
                    Ok(Batch::Closed(code)) => {
                        break code
                            .map_or_else(|| "close:none".to_owned(), |c| format!("close:{c}"));
                    }
                    Err(e) => break e.label(),
                }
            }
        }
    };
    count(&shared.slow_end, end);
    shared.slow_done.fetch_add(1, Ordering::Relaxed);
}

/// The connections of one measurement.
struct Pool {
    shared: Arc<Shared>,
    ok: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    slow_ok: u64,
    connect_secs: f64,
    resume: watch::Sender<bool>,
}

impl Pool {
    /// Opens `conns` connections, the first `slow` of them slow readers, and returns once every
    /// one has connected or failed.
    async fn open(common: &Common, conns: usize, slow: usize, slow_rcvbuf: u32) -> Self {
        let shared = Arc::new(Shared::new());
        let permits = Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<(bool, Result<(), String>)>();
        let (resume, resume_rx) = watch::channel(false);
        let timeout = Duration::from_millis(common.connect_timeout_ms);
        let fast = Arc::new(common.params(None));
        let slow_params = Arc::new(common.params((slow_rcvbuf > 0).then_some(slow_rcvbuf)));
        let started = Instant::now();
        for index in 0..conns {
            let is_slow = index < slow;
            let params = Arc::clone(if is_slow { &slow_params } else { &fast });
            let shared = Arc::clone(&shared);
            let permits = Arc::clone(&permits);
            let ready = ready_tx.clone();
            let resume = resume_rx.clone();
            tokio::spawn(async move {
                let permit = permits.acquire_owned().await;
                let seed = u32::try_from(index).unwrap_or(u32::MAX);
                let conn = tokio::time::timeout(timeout, Conn::connect(&params, seed)).await;
                drop(permit);
                let mut conn = match conn {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => {
                        let _ = ready.send((is_slow, Err(e.label())));
                        return;
                    }
                    Err(_) => {
                        let _ = ready.send((is_slow, Err("connect timeout".to_owned())));
                        return;
                    }
                };
                shared.open.fetch_add(1, Ordering::Relaxed);
                let _ = ready.send((is_slow, Ok(())));
                drop(ready);
                if is_slow {
                    slow_reader(conn, shared, resume).await;
                } else {
                    let mut state = ConnState::default();
                    let end = read_until_end(&mut conn, &shared, &mut state).await;
                    count(&shared.ended, end);
                    shared.open.fetch_sub(1, Ordering::Relaxed);
                }
            });
        }
        drop(ready_tx);
        let (mut ok, mut failed, mut slow_ok) = (0u64, 0u64, 0u64);
        let mut errors = BTreeMap::new();
        while let Some((is_slow, result)) = ready_rx.recv().await {
            match result {
                Ok(()) => {
                    ok += 1;
                    slow_ok += u64::from(is_slow);
                }
                Err(label) => {
                    failed += 1;
                    *errors.entry(label).or_insert(0) += 1;
                }
            }
        }
        Self {
            shared,
            ok,
            failed,
            errors,
            slow_ok,
            connect_secs: started.elapsed().as_secs_f64(),
            resume,
        }
    }

    fn connects_per_sec(&self) -> f64 {
        per_sec(self.ok, self.connect_secs)
    }
}

fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn micros(ns: u64) -> f64 {
    round1(ns as f64 / 1000.0)
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|pid| procfs::vm_kib(pid, "VmRSS").ok())
}

fn emit(record: &Value) {
    println!("{record}");
}

fn header(scenario: &str, common: &Common, conns: usize) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert("scenario".into(), json!(scenario));
    map.insert("server".into(), json!(common.server_name));
    map.insert("client".into(), json!(common.client_name()));
    if common.resume {
        map.insert("resume".into(), json!(true));
    }
    map.insert("conns".into(), json!(conns));
    map.insert(
        "unix_time".into(),
        json!(bench::unix_now_ns() / 1_000_000_000),
    );
    map
}

/// Now plus `limit`, or a year from now for a limit too large to add.
fn deadline_after(limit: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(limit)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = deadline_after(limit);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn idle(args: IdleArgs) -> Result<(), BoxError> {
    let common = &args.common;
    let rss_before = rss_kib(common.pid);
    let pool = Pool::open(common, args.conns, 0, 0).await;
    let shared = Arc::clone(&pool.shared);
    eprintln!(
        "[{}] idle: {} connected, {} failed in {:.1} s; waiting for every connection's first ping",
        common.server_name, pool.ok, pool.failed, pool.connect_secs
    );
    let wait_start = Instant::now();
    let all_pinged = wait_until(Duration::from_secs(args.ping_wait_secs), || {
        shared.pinged.load(Ordering::Relaxed) >= pool.ok
    })
    .await;
    let ping_wait = wait_start.elapsed();
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let rss_after = rss_kib(common.pid);
    let pinged = shared.pinged.load(Ordering::Relaxed);
    let growth = rss_before.zip(rss_after).map(|(b, a)| a.saturating_sub(b));
    let per_conn = growth.and_then(|g| g.saturating_mul(1024).checked_div(pinged));

    let mut b2 = header("B2", common, args.conns);
    b2.extend([
        ("conns_ok".into(), json!(pool.ok)),
        ("conns_failed".into(), json!(pool.failed)),
        ("connect_errors".into(), json!(pool.errors)),
        (
            "connects_per_sec".into(),
            json!(round1(pool.connects_per_sec())),
        ),
        ("pinged".into(), json!(pinged)),
        ("all_pinged".into(), json!(all_pinged)),
        ("ping_wait_ms".into(), json!(ping_wait.as_millis() as u64)),
        ("rss_before_kib".into(), json!(rss_before)),
        ("rss_after_kib".into(), json!(rss_after)),
        ("rss_per_conn_bytes".into(), json!(per_conn)),
        ("ended".into(), json!(snapshot(&shared.ended))),
    ]);
    emit(&Value::Object(b2));
    eprintln!(
        "[{}] B2 idle memory: {pinged} of {} connections pinged ({}); RSS {} -> {} KiB: {} bytes per connection",
        common.server_name,
        pool.ok,
        if all_pinged {
            "all"
        } else {
            "NOT ALL: timed out"
        },
        show(rss_before),
        show(rss_after),
        show(per_conn),
    );

    if args.cpu_secs > 0 {
        let pings_before = shared.pings.load(Ordering::Relaxed);
        let probe = CpuProbe::start(common);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.cpu_secs)).await;
        let secs = started.elapsed().as_secs_f64();
        let (server_pct, cpu_fields) = probe.finish();
        let pings = shared
            .pings
            .load(Ordering::Relaxed)
            .saturating_sub(pings_before);
        let open = shared.open.load(Ordering::Relaxed);
        let ping_rate = per_sec(pings, secs) / open.max(1) as f64;
        let mut b4 = header("B4", common, args.conns);
        b4.extend([
            ("conns_ok".into(), json!(pool.ok)),
            ("window_secs".into(), json!(round1(secs))),
            ("pings".into(), json!(pings)),
            (
                "pings_per_conn_per_sec".into(),
                json!((ping_rate * 100.0).round() / 100.0),
            ),
            ("open_at_end".into(), json!(open)),
            ("ended".into(), json!(snapshot(&shared.ended))),
        ]);
        b4.extend(cpu_fields);
        emit(&Value::Object(b4));
        eprintln!(
            "[{}] B4 heartbeat: server CPU {}% of one core over {secs:.0} s; {pings} pings ({ping_rate:.2}/conn/s), {open} still open",
            common.server_name,
            show(server_pct.map(round2)),
        );
    }
    Ok(())
}

fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

/// The CPU figures of a measurement window: the server's own time, the load generator's own
/// time (near 100 % means it, not the server, was the limit) and the server's core as a whole.
struct CpuProbe {
    server: Option<CpuWindow>,
    own: Option<CpuWindow>,
    core: Option<CoreWindow>,
}

impl CpuProbe {
    fn start(common: &Common) -> Self {
        Self {
            server: common.pid.and_then(CpuWindow::start),
            own: CpuWindow::start(std::process::id()),
            core: common.server_core.and_then(CoreWindow::start),
        }
    }

    /// The server's CPU percent, and every figure as JSON fields.
    fn finish(&self) -> (Option<f64>, Vec<(String, Value)>) {
        let server = self.server.as_ref().and_then(CpuWindow::percent);
        let own = self.own.as_ref().and_then(CpuWindow::percent);
        let core = self.core.as_ref().and_then(CoreWindow::percent);
        let fields = vec![
            ("server_cpu_pct".into(), json!(server.map(round2))),
            ("loadgen_cpu_pct".into(), json!(own.map(round1))),
            (
                "server_core_busy_pct".into(),
                json!(core.map(|c| round1(c.0))),
            ),
            (
                "server_core_softirq_pct".into(),
                json!(core.map(|c| round1(c.1))),
            ),
        ];
        if own.is_some_and(|p| p > 90.0) {
            eprintln!(
                "warning: the load generator used {:.0}% of its core: it may be the limit",
                own.unwrap_or(0.0)
            );
        }
        (server, fields)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One measured burst.
struct Round {
    expected: u64,
    delivered: u64,
    elapsed_ns: u64,
}

async fn fanout(args: FanoutArgs) -> Result<(), BoxError> {
    let common = &args.common;
    let scenario = if args.slow > 0 { "B5" } else { "B3" };
    let rss_before = rss_kib(common.pid);
    let pool = Pool::open(common, args.conns, args.slow, args.slow_rcvbuf).await;
    let shared = Arc::clone(&pool.shared);
    eprintln!(
        "[{}] fanout: {} connected, {} failed in {:.1} s",
        common.server_name, pool.ok, pool.failed, pool.connect_secs
    );
    // The server subscribes a socket after its handshake completes: wait until it counts all of
    // them, or a broadcast could miss the last few.
    let addr = common.addr();
    let deadline = deadline_after(Duration::from_secs(30));
    loop {
        match control::connections(addr).await {
            Ok(n) if n >= pool.ok => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(n) => {
                eprintln!("warning: server counts {n} of {} connections", pool.ok);
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }

    let fast = pool.ok.saturating_sub(pool.slow_ok);
    let expected = fast.saturating_mul(u64::from(args.events));
    let bursts = args.warmup.saturating_add(args.rounds);
    let slow_expected = u64::from(bursts).saturating_mul(u64::from(args.events));
    let mut rounds = Vec::new();
    let mut cpu = None;
    for round in 0..bursts {
        if round == args.warmup {
            shared.latency.reset();
            shared.burst_latency.reset();
            shared.bytes.store(0, Ordering::Relaxed);
            shared.out_of_order.store(0, Ordering::Relaxed);
            shared.unmarked.store(0, Ordering::Relaxed);
            cpu = Some(CpuProbe::start(common));
        }
        let base = shared.delivered.load(Ordering::Relaxed);
        let target = base.saturating_add(expected);
        shared.target.store(target, Ordering::Relaxed);
        let started_ns = bench::unix_now_ns();
        shared.burst_start_ns.store(started_ns, Ordering::Relaxed);
        let timeout = Duration::from_secs(args.round_timeout_secs);
        control::broadcast(addr, args.events, args.size, timeout).await?;
        let reached = {
            let shared = Arc::clone(&shared);
            tokio::time::timeout(timeout, async move {
                // A permit may be left over from an earlier round: re-check after each wake-up.
                while shared.delivered.load(Ordering::Relaxed) < target {
                    shared.reached.notified().await;
                }
            })
            .await
            .is_ok()
        };
        let delivered = shared
            .delivered
            .load(Ordering::Relaxed)
            .saturating_sub(base);
        let elapsed_ns = shared
            .last_recv_ns
            .load(Ordering::Relaxed)
            .saturating_sub(started_ns);
        if !reached {
            eprintln!("warning: round {round}: {delivered} of {expected} delivered in time");
        }
        if round >= args.warmup {
            rounds.push(Round {
                expected,
                delivered,
                elapsed_ns,
            });
        }
    }
    let (server_pct, cpu_fields) = cpu.map(|probe| probe.finish()).unwrap_or_default();
    let rss_peak = common.pid.and_then(|pid| procfs::vm_kib(pid, "VmHWM").ok());
    let rss_after = rss_kib(common.pid);

    let total_expected: u64 = rounds.iter().map(|r| r.expected).sum();
    let total_delivered: u64 = rounds.iter().map(|r| r.delivered).sum();
    let total_ns: u64 = rounds.iter().map(|r| r.elapsed_ns).sum();
    let rate = per_sec(total_delivered, total_ns as f64 / 1e9);
    let round_rates: Vec<u64> = rounds
        .iter()
        .map(|r| per_sec(r.delivered, r.elapsed_ns as f64 / 1e9).round() as u64)
        .collect();
    let lat = &shared.latency;
    let burst = &shared.burst_latency;
    let mean_bytes = shared
        .bytes
        .load(Ordering::Relaxed)
        .checked_div(total_delivered)
        .unwrap_or(0);

    let mut record = header(scenario, common, args.conns);
    record.extend([
        ("conns_ok".into(), json!(pool.ok)),
        ("conns_failed".into(), json!(pool.failed)),
        ("connect_errors".into(), json!(pool.errors)),
        ("events".into(), json!(args.events)),
        ("size".into(), json!(args.size)),
        ("mean_frame_bytes".into(), json!(mean_bytes)),
        ("rounds".into(), json!(args.rounds)),
        ("expected".into(), json!(total_expected)),
        ("delivered".into(), json!(total_delivered)),
        (
            "missing".into(),
            json!(total_expected.saturating_sub(total_delivered)),
        ),
        (
            "out_of_order".into(),
            json!(shared.out_of_order.load(Ordering::Relaxed)),
        ),
        (
            "unmarked".into(),
            json!(shared.unmarked.load(Ordering::Relaxed)),
        ),
        ("deliveries_per_sec".into(), json!(rate.round() as u64)),
        ("round_rates".into(), json!(round_rates)),
        ("p50_us".into(), json!(micros(lat.quantile(0.5)))),
        ("p99_us".into(), json!(micros(lat.quantile(0.99)))),
        ("max_us".into(), json!(micros(lat.max()))),
        ("mean_us".into(), json!(micros(lat.mean()))),
        ("burst_p50_us".into(), json!(micros(burst.quantile(0.5)))),
        ("burst_p99_us".into(), json!(micros(burst.quantile(0.99)))),
        ("rss_before_kib".into(), json!(rss_before)),
        ("rss_peak_kib".into(), json!(rss_peak)),
        ("rss_after_kib".into(), json!(rss_after)),
        ("resume".into(), json!(common.resume)),
        (
            "resume_frames".into(),
            json!(shared.resume_frames.load(Ordering::Relaxed)),
        ),
    ]);
    record.extend(cpu_fields);

    if pool.slow_ok > 0 {
        // Let the slow subscribers read what reached them and see how the server ended them.
        pool.resume.send_replace(true);
        let slow_ok = pool.slow_ok;
        wait_until(Duration::from_secs(30), || {
            shared.slow_done.load(Ordering::Relaxed) >= slow_ok
        })
        .await;
        record.extend([
            ("slow".into(), json!(pool.slow_ok)),
            ("slow_expected".into(), json!(slow_expected)),
            ("slow_rcvbuf".into(), json!(args.slow_rcvbuf)),
            (
                "slow_frames".into(),
                json!(shared.slow_frames.load(Ordering::Relaxed)),
            ),
            ("slow_end".into(), json!(snapshot(&shared.slow_end))),
        ]);
    }
    record.insert("ended".into(), json!(snapshot(&shared.ended)));
    emit(&Value::Object(record));
    eprintln!(
        "[{}] {scenario} fan-out: {} subscribers x {} events of {} B: {total_delivered}/{total_expected} delivered, {:.0} deliveries/s; publish-to-receive p50 {} us p99 {} us max {} us; burst-to-receive p50 {} us p99 {} us; server CPU {}%",
        common.server_name,
        fast,
        args.events,
        mean_bytes,
        rate,
        micros(lat.quantile(0.5)),
        micros(lat.quantile(0.99)),
        micros(lat.max()),
        micros(burst.quantile(0.5)),
        micros(burst.quantile(0.99)),
        show(server_pct.map(round1)),
    );
    if pool.slow_ok > 0 {
        eprintln!(
            "[{}] B5 slow consumers: {} read {} frames (of {} published to each) after resuming; ended {:?}; server RSS peak {} KiB",
            common.server_name,
            pool.slow_ok,
            shared.slow_frames.load(Ordering::Relaxed),
            slow_expected,
            snapshot(&shared.slow_end),
            show(rss_peak),
        );
    }
    Ok(())
}

/// One handshake cycle: connect, upgrade, close, wait for the server's close or EOF.
async fn upgrade_once(params: &ConnectParams, seed: u32) -> Result<(), WsError> {
    let mut conn = Conn::connect(params, seed).await?;
    conn.close(1000).await?;
    loop {
        match conn.read_batch(|_| {}).await {
            Ok(Batch::Open) => {}
            Ok(Batch::Closed(_)) | Err(WsError::Eof) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

async fn upgrades(args: UpgradeArgs) -> Result<(), BoxError> {
    let common = &args.common;
    let params = Arc::new(common.params(None));
    let probe = CpuProbe::start(common);
    let started = Instant::now();
    let deadline = deadline_after(Duration::from_secs(args.secs));
    let limit = Duration::from_millis(common.connect_timeout_ms);
    let mut workers = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let params = Arc::clone(&params);
        workers.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut seed = u32::try_from(worker).unwrap_or(0);
            while Instant::now() < deadline {
                seed = seed.wrapping_add(0x9E37_79B9);
                match tokio::time::timeout(limit, upgrade_once(&params, seed)).await {
                    Ok(Ok(())) => ok += 1,
                    Ok(Err(e)) => *errors.entry(e.label()).or_insert(0) += 1,
                    Err(_) => *errors.entry("timeout".to_owned()).or_insert(0) += 1,
                }
            }
            (ok, errors)
        }));
    }
    let mut ok = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        let (n, errs) = worker.await?;
        ok += n;
        for (label, n) in errs {
            *errors.entry(label).or_insert(0) += n;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let failed: u64 = errors.values().sum();
    let rate = per_sec(ok, secs);
    let (server_pct, cpu_fields) = probe.finish();
    let mut record = header("B6", common, args.concurrency);
    record.extend([
        ("secs".into(), json!(round1(secs))),
        ("upgrades".into(), json!(ok)),
        ("failed".into(), json!(failed)),
        ("errors".into(), json!(errors)),
        ("upgrades_per_sec".into(), json!(rate.round() as u64)),
    ]);
    record.extend(cpu_fields);
    emit(&Value::Object(record));
    eprintln!(
        "[{}] B6 upgrades: {ok} in {secs:.1} s = {rate:.0}/s ({failed} failed), {} at once; server CPU {}%",
        common.server_name,
        args.concurrency,
        show(server_pct.map(round1)),
    );
    Ok(())
}
