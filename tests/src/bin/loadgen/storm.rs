//! B8 "reconnect storm" (issue 13): N clients on two broker-backed nodes (the demo with
//! `--redis`), one node restarted, events published during the gap, every dropped client
//! reconnecting at once; how long until all are live again and what they recovered.
//!
//! The load generator owns the two node processes (`--node-cmd`, `{port}` replaced by each of
//! `--ports`): it starts both, connects client *i* to node *i* mod 2 on account *(i / 2)* mod
//! the number of `--accounts` (so each node serves every stream), publishes one warm-up event
//! per stream and waits for every client to have it, then:
//!
//! 1. sends SIGTERM to node 0 (its clients get close 1001) and waits for it to exit;
//! 2. publishes `--events` events to each stream through node 1 (the gap);
//! 3. starts node 0 again on the same port and waits until it listens;
//! 4. lets every dropped client reconnect at once, client *i* to node *(i / 4)* mod 2 (half
//!    to each), with its last position (`--resume`: `Misar-Resume: <epoch>:<offset>`) or with
//!    no resume value; a refused attempt is retried after `--retry-ms`;
//! 5. measures the time until every one is live (`--resume`: its `resume` frame arrived;
//!    otherwise: its handshake completed), and until each has every gap event;
//! 6. publishes one more event per stream through node 0 and waits until all N have it (every
//!    client really is subscribed again).
//!
//! The events carry `bench-<seq>-<ns>` in `messageId`, so a client counts the gap's events by
//! sequence number (lost and duplicated ones alike) with or without offsets.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use misar_tests::bench;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::procfs::CpuWindow;
use crate::ws::{Batch, ClientKind, Conn, ConnectParams, Event};
use crate::{BoxError, count, deadline_after, emit, snapshot, wait_until};

#[derive(Debug, Args)]
pub struct StormArgs {
    /// Address the nodes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The two nodes' ports; node 0 (the first) is the one restarted.
    #[arg(long, value_delimiter = ',', default_value = "19811,19812")]
    ports: Vec<u16>,
    /// Shell command that runs one node in the foreground, `{port}` standing for its port,
    /// e.g. `target/release/examples/demo --redis redis://127.0.0.1:16379 --addr
    /// 127.0.0.1:{port} --no-simulation --max-connections 20000
    /// --max-connections-per-account 20000`.
    #[arg(long)]
    node_cmd: String,
    /// Directory for the nodes' logs.
    #[arg(long, default_value = "target/bench/storm")]
    log_dir: PathBuf,
    /// `account:key` pairs; clients are spread over them, and each is a stream published to.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "alice:msk_demo_alice,bob:msk_demo_bob"
    )]
    accounts: Vec<String>,
    /// Upgrade path.
    #[arg(long, default_value = bench::INBOX_PATH)]
    path: String,
    /// Clients in all (half on each node).
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Events published to each stream while node 0 is down.
    #[arg(long, default_value_t = 100)]
    events: u64,
    /// Approximate size of an event's subject, in bytes.
    #[arg(long, default_value_t = 120)]
    size: usize,
    /// Opt in (DESIGN.md §2.11): connect with `Misar-Resume: new`, reconnect with the last
    /// position seen.
    #[arg(long)]
    resume: bool,
    /// Handshakes in flight at once while opening the first connections.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Reconnections in flight at once during the storm; 0: all at once.
    #[arg(long, default_value_t = 0)]
    storm_concurrency: usize,
    /// Pause before retrying a refused or failed reconnection, in milliseconds.
    #[arg(long, default_value_t = 100)]
    retry_ms: u64,
    /// Longest wait of each phase, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// Initial read buffer per connection, in bytes.
    #[arg(long, default_value_t = 4096)]
    read_buf: usize,
    /// Name in the output.
    #[arg(long, default_value = "demo-redis")]
    server_name: String,
    /// The redis-server's process id, to report its CPU during the storm.
    #[arg(long)]
    redis_pid: Option<u32>,
}

/// What the driver reads of one client.
#[derive(Default)]
struct ClientStat {
    /// Events received (not counting `resume` frames).
    received: AtomicU64,
    /// Events of the gap received.
    gap_received: AtomicU64,
    /// Events of the final check received.
    after_received: AtomicU64,
    /// Events whose sequence number was not above the previous one (duplicates, reordering).
    duplicates: AtomicU64,
    /// Connected and, when opted in, its `resume` frame received.
    live: AtomicBool,
    /// Connections that became live.
    lives: AtomicU64,
    /// Wall clock (ns) when the latest connection became live.
    live_at_ns: AtomicU64,
    /// Wall clock (ns) when the last gap event arrived.
    gap_done_ns: AtomicU64,
    /// The latest `resume` frame's `recovered`: 0 none yet, 1 true, 2 false.
    recovered: AtomicU8,
    /// Failed reconnection attempts.
    retries: AtomicU64,
}

/// What every client shares.
struct Shared {
    /// Sequence numbers of the gap's events: `gap_lo..gap_hi`.
    gap_lo: AtomicU64,
    gap_hi: AtomicU64,
    /// Sequence numbers from here on are the final check's.
    after_lo: AtomicU64,
    /// Gap events each stream gets.
    gap_events: u64,
    /// How connections ended, counted.
    ended: Mutex<BTreeMap<String, u64>>,
    /// Why reconnection attempts failed, counted.
    errors: Mutex<BTreeMap<String, u64>>,
    /// `resume` frames that could not be read.
    bad_resume: AtomicU64,
}

/// A node process.
struct Node {
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Node {
    fn start(&mut self, args: &StormArgs, tag: &str) -> Result<(), BoxError> {
        std::fs::create_dir_all(&args.log_dir)?;
        self.starts += 1;
        let log_path = args
            .log_dir
            .join(format!("{tag}-node{}-start{}.log", self.port, self.starts));
        let log = File::create(&log_path)?;
        let command = args.node_cmd.replace("{port}", &self.port.to_string());
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM, then waits for the exit (at most `limit`, then SIGKILL), letting the clients
    /// run meanwhile (they answer the node's close frames).
    async fn stop(&mut self, limit: Duration) -> Result<(), BoxError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        let deadline = deadline_after(limit);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                return Err("node did not exit after SIGTERM".into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Only on an early return: do not leave a node running.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_listening(addr: SocketAddr, limit: Duration) -> Result<(), BoxError> {
    let deadline = deadline_after(limit);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing listens on {addr}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes one `email_received` event with marker `seq` to `account` through `addr`.
async fn publish(addr: SocketAddr, account: &str, seq: u64, size: usize) -> Result<(), BoxError> {
    let body = json!({
        "type": "email_received",
        "from": "storm@example.com",
        "subject": "x".repeat(size),
        "receivedAt": "2026-05-27T10:15:00Z",
        "messageId": format!("bench-{seq}-{}", bench::unix_now_ns()),
    })
    .to_string();
    let path = format!("/dev/publish/inbox/{account}");
    crate::control::request_with_body(addr, "POST", &path, &body, Duration::from_secs(10)).await?;
    Ok(())
}

/// The offset at the end of an opted-in event: `…,"offset":N}`.
fn trailing_offset(payload: &[u8]) -> Option<u64> {
    const FIELD: &[u8] = b"\"offset\":";
    let start = payload.windows(FIELD.len()).rposition(|w| w == FIELD)?;
    let digits = payload.get(start.checked_add(FIELD.len())?..)?;
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(digits.get(..n)?).ok()?.parse().ok()
}

/// `{"type":"resume","epoch":"E","offset":N,"recovered":B}` → (E, N, B).
fn parse_resume(payload: &[u8]) -> Option<(String, u64, bool)> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    if value["type"] != "resume" {
        return None;
    }
    Some((
        value["epoch"].as_str()?.to_owned(),
        value["offset"].as_u64()?,
        value["recovered"].as_bool()?,
    ))
}

/// What a client task remembers across its connections.
struct Client {
    stat: Arc<ClientStat>,
    shared: Arc<Shared>,
    resume: bool,
    position: Option<(String, u64)>,
    last_seq: Option<u64>,
}

impl Client {
    fn on_event(&mut self, event: Event<'_>) {
        match event {
            Event::Resume(payload) => match parse_resume(payload) {
                Some((epoch, offset, recovered)) => {
                    self.position = Some((epoch, offset));
                    self.stat
                        .recovered
                        .store(if recovered { 1 } else { 2 }, Ordering::Relaxed);
                    self.mark_live(bench::unix_now_ns());
                }
                None => {
                    self.shared.bad_resume.fetch_add(1, Ordering::Relaxed);
                }
            },
            Event::Text(payload) => {
                let stat = &self.stat;
                stat.received.fetch_add(1, Ordering::Relaxed);
                if let (Some(offset), Some(position)) =
                    (trailing_offset(payload), self.position.as_mut())
                {
                    position.1 = offset;
                }
                let Some(marker) = bench::parse_marker(payload) else {
                    return;
                };
                if self.last_seq.is_some_and(|last| marker.seq <= last) {
                    stat.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                self.last_seq = Some(marker.seq);
                let shared = &self.shared;
                let (lo, hi) = (
                    shared.gap_lo.load(Ordering::Relaxed),
                    shared.gap_hi.load(Ordering::Relaxed),
                );
                if (lo..hi).contains(&marker.seq) {
                    let got = stat.gap_received.fetch_add(1, Ordering::Relaxed) + 1;
                    if got == shared.gap_events {
                        stat.gap_done_ns
                            .store(bench::unix_now_ns(), Ordering::Relaxed);
                    }
                }
                if marker.seq >= shared.after_lo.load(Ordering::Relaxed) {
                    stat.after_received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::Binary | Event::Ping => {}
        }
    }

    fn mark_live(&self, now: u64) {
        self.stat.live_at_ns.store(now, Ordering::Relaxed);
        self.stat.lives.fetch_add(1, Ordering::Relaxed);
        self.stat.live.store(true, Ordering::Relaxed);
    }

    /// The `Misar-Resume` value of the next connection.
    fn resume_value(&self) -> Option<String> {
        if !self.resume {
            return None;
        }
        Some(
            self.position
                .as_ref()
                .map_or_else(|| "new".to_owned(), |(e, o)| format!("{e}:{o}")),
        )
    }

    /// Reads until the connection ends; returns why.
    async fn read(&mut self, conn: &mut Conn) -> String {
        loop {
            let result = conn.read_batch(|event| self.on_event(event)).await;
            match result {
                Ok(Batch::Open) => {}
                Ok(Batch::Closed(code)) => {
                    return code.map_or_else(|| "close:none".to_owned(), |c| format!("close:{c}"));
                }
                Err(e) => return e.label(),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn client_task(
    index: usize,
    mut client: Client,
    first: Arc<ConnectParams>,
    storm: Arc<ConnectParams>,
    permits: Arc<Semaphore>,
    storm_permits: Option<Arc<Semaphore>>,
    mut go: watch::Receiver<bool>,
    retry: Duration,
    limit: Duration,
) {
    let seed = u32::try_from(index).unwrap_or(u32::MAX);
    let mut params = first;
    let mut attempt_permits = Some(permits);
    loop {
        let resume = client.resume_value();
        let permit = match &attempt_permits {
            Some(p) => Arc::clone(p).acquire_owned().await.ok(),
            None => None,
        };
        let attempt =
            tokio::time::timeout(limit, Conn::connect_with(&params, resume.as_deref(), seed)).await;
        drop(permit);
        let mut conn = match attempt {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                count(&client.shared.errors, e.label());
                client.stat.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(retry).await;
                continue;
            }
            Err(_) => {
                count(&client.shared.errors, "connect timeout".to_owned());
                client.stat.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        if !client.resume {
            client.mark_live(bench::unix_now_ns());
        }
        let end = client.read(&mut conn).await;
        client.stat.live.store(false, Ordering::Relaxed);
        count(&client.shared.ended, end);
        drop(conn);
        // Wait for the storm, then reconnect to the storm's node.
        let _ = go.wait_for(|&g| g).await;
        params = Arc::clone(&storm);
        attempt_permits = storm_permits.clone();
    }
}

fn quantile_ms(sorted: &[u64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(rank).map(|&ns| (ns as f64 / 1e5).round() / 10.0)
}

pub async fn run(args: StormArgs) -> Result<(), BoxError> {
    let [port0, port1] = args.ports[..] else {
        return Err("--ports takes exactly two ports".into());
    };
    let accounts: Vec<(String, String)> = args
        .accounts
        .iter()
        .map(|pair| {
            pair.split_once(':')
                .map(|(a, k)| (a.to_owned(), k.to_owned()))
                .ok_or_else(|| format!("--accounts: {pair} is not account:key"))
        })
        .collect::<Result<_, _>>()?;
    if accounts.is_empty() {
        return Err("--accounts is empty".into());
    }
    let tag = if args.resume { "resume" } else { "plain" };
    let addr0 = SocketAddr::new(args.host, port0);
    let addr1 = SocketAddr::new(args.host, port1);
    let limit = Duration::from_secs(args.timeout_secs);
    let mut node0 = Node {
        port: port0,
        child: None,
        starts: 0,
    };
    let mut node1 = Node {
        port: port1,
        child: None,
        starts: 0,
    };
    node0.start(&args, tag)?;
    node1.start(&args, tag)?;
    wait_listening(addr0, limit).await?;
    wait_listening(addr1, limit).await?;

    let shared = Arc::new(Shared {
        gap_lo: AtomicU64::new(u64::MAX),
        gap_hi: AtomicU64::new(u64::MAX),
        after_lo: AtomicU64::new(u64::MAX),
        gap_events: args.events,
        ended: Mutex::new(BTreeMap::new()),
        errors: Mutex::new(BTreeMap::new()),
        bad_resume: AtomicU64::new(0),
    });
    let params = |addr: SocketAddr, key: &str| {
        Arc::new(ConnectParams {
            addr,
            path: format!("{}?token={key}", args.path),
            read_buf: args.read_buf,
            rcvbuf: None,
            kind: ClientKind::Raw,
            resume: None,
        })
    };
    let (go_tx, go_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let storm_permits =
        (args.storm_concurrency > 0).then(|| Arc::new(Semaphore::new(args.storm_concurrency)));
    let addrs = [addr0, addr1];
    let mut stats = Vec::with_capacity(args.conns);
    let started = Instant::now();
    for index in 0..args.conns {
        let stream = (index / 2) % accounts.len();
        let key = accounts.get(stream).map_or("", |(_, k)| k.as_str());
        let first = params(addrs[index % 2], key);
        let storm = params(addrs[(index / 4) % 2], key);
        let stat = Arc::new(ClientStat::default());
        stats.push(Arc::clone(&stat));
        let client = Client {
            stat,
            shared: Arc::clone(&shared),
            resume: args.resume,
            position: None,
            last_seq: None,
        };
        tokio::spawn(client_task(
            index,
            client,
            first,
            storm,
            Arc::clone(&permits),
            storm_permits.clone(),
            go_rx.clone(),
            Duration::from_millis(args.retry_ms),
            limit,
        ));
    }
    let all_live = |stats: &[Arc<ClientStat>]| {
        stats
            .iter()
            .filter(|s| s.live.load(Ordering::Relaxed))
            .count()
    };
    if !wait_until(limit, || all_live(&stats) >= args.conns).await {
        return Err(format!(
            "only {} of {} clients connected",
            all_live(&stats),
            args.conns
        )
        .into());
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "[{}] storm ({tag}): {} clients live in {connect_secs:.1} s",
        args.server_name, args.conns
    );
    // Warm-up: one event per stream, received by all, so every client holds a position (and
    // is certainly subscribed).
    let mut seq = 0u64;
    for (account, _) in &accounts {
        publish(addr1, account, seq, args.size).await?;
        seq += 1;
    }
    if !wait_until(limit, || {
        stats
            .iter()
            .all(|s| s.received.load(Ordering::Relaxed) >= 1)
    })
    .await
    {
        return Err("warm-up event not received by every client".into());
    }

    // 1. Node 0 goes down.
    let affected: Vec<usize> = (0..args.conns).step_by(2).collect();
    let kill_at = Instant::now();
    node0.stop(limit).await?;
    let down_ms = kill_at.elapsed().as_secs_f64() * 1e3;
    let dropped = wait_until(Duration::from_secs(10), || {
        affected.iter().all(|&i| {
            stats
                .get(i)
                .is_some_and(|s| !s.live.load(Ordering::Relaxed))
        })
    })
    .await;
    if !dropped {
        eprintln!("warning: not every client of node 0 saw its connection end");
    }
    let closes = snapshot(&shared.ended);

    // 2. The gap: events published through node 1.
    shared.gap_lo.store(seq, Ordering::Relaxed);
    shared
        .gap_hi
        .store(seq + args.events * accounts.len() as u64, Ordering::Relaxed);
    let publish_at = Instant::now();
    for _ in 0..args.events {
        for (account, _) in &accounts {
            publish(addr1, account, seq, args.size).await?;
            seq += 1;
        }
    }
    let publish_ms = publish_at.elapsed().as_secs_f64() * 1e3;
    let unaffected_ok = wait_until(limit, || {
        (1..args.conns).step_by(2).all(|i| {
            stats
                .get(i)
                .is_some_and(|s| s.gap_received.load(Ordering::Relaxed) >= args.events)
        })
    })
    .await;

    // 3. Node 0 comes back on the same port.
    node0.start(&args, tag)?;
    wait_listening(addr0, limit).await?;
    let gap_ms = kill_at.elapsed().as_secs_f64() * 1e3;

    // 4. The storm. CPU of every process involved, from here until all recovered.
    let pids = [
        ("node0", node0.child.as_ref().map(Child::id)),
        ("node1", node1.child.as_ref().map(Child::id)),
        ("redis", args.redis_pid),
        ("loadgen", Some(std::process::id())),
    ];
    let cpu: Vec<(&str, Option<CpuWindow>)> = pids
        .iter()
        .map(|&(name, pid)| (name, pid.and_then(CpuWindow::start)))
        .collect();
    let go_ns = bench::unix_now_ns();
    go_tx.send_replace(true);
    let relive = |i: &usize| {
        stats
            .get(*i)
            .is_some_and(|s| s.live.load(Ordering::Relaxed) && s.lives.load(Ordering::Relaxed) >= 2)
    };
    let all_back = wait_until(limit, || affected.iter().all(relive)).await;
    let back = affected.iter().filter(|i| relive(i)).count();
    let all_recovered = if args.resume {
        wait_until(limit, || {
            affected.iter().all(|&i| {
                stats
                    .get(i)
                    .is_some_and(|s| s.gap_received.load(Ordering::Relaxed) >= args.events)
            })
        })
        .await
    } else {
        false
    };
    let storm_cpu: serde_json::Map<String, Value> = cpu
        .iter()
        .map(|(name, window)| {
            let pct = window.as_ref().and_then(CpuWindow::percent);
            (
                (*name).to_owned(),
                json!(pct.map(|p| (p * 10.0).round() / 10.0)),
            )
        })
        .collect();
    let storm_secs = (bench::unix_now_ns().saturating_sub(go_ns)) as f64 / 1e9;

    // 6. Everyone subscribed again: one more event per stream through the restarted node.
    shared.after_lo.store(seq, Ordering::Relaxed);
    let after_at = bench::unix_now_ns();
    for (account, _) in &accounts {
        publish(addr0, account, seq, args.size).await?;
        seq += 1;
    }
    let after_ok = wait_until(limit, || {
        stats
            .iter()
            .all(|s| s.after_received.load(Ordering::Relaxed) >= 1)
    })
    .await;
    let after_ms = (bench::unix_now_ns().saturating_sub(after_at)) as f64 / 1e6;
    // A moment for late duplicates.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut live_ns: Vec<u64> = affected
        .iter()
        .filter_map(|&i| stats.get(i))
        .filter(|s| s.lives.load(Ordering::Relaxed) >= 2)
        .map(|s| s.live_at_ns.load(Ordering::Relaxed).saturating_sub(go_ns))
        .collect();
    live_ns.sort_unstable();
    let mut recovered_ns: Vec<u64> = affected
        .iter()
        .filter_map(|&i| stats.get(i))
        .filter(|s| s.gap_received.load(Ordering::Relaxed) >= args.events)
        .map(|s| s.gap_done_ns.load(Ordering::Relaxed).saturating_sub(go_ns))
        .collect();
    recovered_ns.sort_unstable();
    let sum = |f: &dyn Fn(&ClientStat) -> u64, set: &[usize]| -> u64 {
        set.iter().filter_map(|&i| stats.get(i)).map(|s| f(s)).sum()
    };
    let replayed = sum(&|s| s.gap_received.load(Ordering::Relaxed), &affected);
    let expected = args.events * affected.len() as u64;
    let recovered_true = affected
        .iter()
        .filter_map(|&i| stats.get(i))
        .filter(|s| {
            s.recovered.load(Ordering::Relaxed) == 1 && s.lives.load(Ordering::Relaxed) >= 2
        })
        .count();
    let recovered_false = affected
        .iter()
        .filter_map(|&i| stats.get(i))
        .filter(|s| s.recovered.load(Ordering::Relaxed) == 2)
        .count();
    let all: Vec<usize> = (0..args.conns).collect();
    let duplicates = sum(&|s| s.duplicates.load(Ordering::Relaxed), &all);
    let retries = sum(&|s| s.retries.load(Ordering::Relaxed), &all);
    let unaffected: Vec<usize> = (1..args.conns).step_by(2).collect();
    let unaffected_gap = sum(&|s| s.gap_received.load(Ordering::Relaxed), &unaffected);

    let record = json!({
        "scenario": "B8",
        "server": args.server_name,
        "resume": args.resume,
        "conns": args.conns,
        "streams": accounts.len(),
        "affected": affected.len(),
        "connect_secs": (connect_secs * 10.0).round() / 10.0,
        "closes_seen": closes,
        "kill_to_exit_ms": down_ms.round(),
        "gap_events_per_stream": args.events,
        "gap_publish_ms": publish_ms.round(),
        "gap_ms": gap_ms.round(),
        "unaffected_got_gap": unaffected_ok,
        "unaffected_gap_received": unaffected_gap,
        "unaffected_gap_expected": args.events * unaffected.len() as u64,
        "all_back": all_back,
        "back": back,
        "live_p50_ms": quantile_ms(&live_ns, 0.5),
        "live_p99_ms": quantile_ms(&live_ns, 0.99),
        "live_all_ms": quantile_ms(&live_ns, 1.0),
        "retries": retries,
        "retry_errors": snapshot(&shared.errors),
        "recovered_true": recovered_true,
        "recovered_false": recovered_false,
        "bad_resume_frames": shared.bad_resume.load(Ordering::Relaxed),
        "replayed_received": replayed,
        "replayed_expected": expected,
        "lost": expected.saturating_sub(replayed),
        "all_recovered": all_recovered,
        "recovered_p50_ms": quantile_ms(&recovered_ns, 0.5),
        "recovered_p99_ms": quantile_ms(&recovered_ns, 0.99),
        "recovered_all_ms": quantile_ms(&recovered_ns, 1.0),
        "duplicates": duplicates,
        "storm_window_secs": (storm_secs * 1000.0).round() / 1000.0,
        "storm_cpu_pct": storm_cpu,
        "after_all_received": after_ok,
        "after_ms": (after_ms * 10.0).round() / 10.0,
        "unix_time": bench::unix_now_ns() / 1_000_000_000,
    });
    emit(&record);
    eprintln!(
        "[{}] B8 storm ({tag}): {} of {} dropped clients live again in {} ms (p50 {} ms, p99 {} ms, {retries} retries); recovered:true {recovered_true}, false {recovered_false}; gap events received {replayed} of {expected} ({} lost, {} ms until all), {duplicates} duplicates; final event reached all: {after_ok} in {after_ms:.1} ms",
        args.server_name,
        back,
        affected.len(),
        crate::show(quantile_ms(&live_ns, 1.0)),
        crate::show(quantile_ms(&live_ns, 0.5)),
        crate::show(quantile_ms(&live_ns, 0.99)),
        expected.saturating_sub(replayed),
        crate::show(quantile_ms(&recovered_ns, 1.0)),
    );
    node0.stop(limit).await?;
    node1.stop(limit).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_trailing_offset_and_the_resume_frame() {
        let event = br#"{"type":"email_received","messageId":"bench-3-9","offset":42}"#;
        assert_eq!(trailing_offset(event), Some(42));
        assert_eq!(trailing_offset(br#"{"type":"x"}"#), None);
        let frame = br#"{"type":"resume","epoch":"e-1","offset":7,"recovered":false}"#;
        assert_eq!(parse_resume(frame), Some(("e-1".to_owned(), 7, false)));
        assert_eq!(parse_resume(br#"{"type":"email_received"}"#), None);
    }
}
