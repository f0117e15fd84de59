//! Fault injection over real loopback sockets: clients that die, go half-open or stop
//! reading, a server that restarts, hooks that fail, a foreign `Origin`.
//!
//! Every test prints what it measured (times, memory, reconnect spread): run
//! `cargo test -p misar-tests --test faults -- --nocapture` to read them. Assertions are on
//! order, codes and counts; the only time bounds are the contract's own (e.g. "freed within
//! the heartbeat window"), checked with room to spare.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::raw::{RawPeer, bearer};
use common::*;
use futures_util::StreamExt;
use misar_proto::auth::AccountId;
use misar_proto::close::{CloseCode, Disconnect};
use misar_proto::event::{Event, decode_inbox};
use misar_proto::server::ServerConfig;
use misar_proto_axum::MemoryAuthorizer;
use misar_proto_tokio::client::{Client, ReconnectPolicy, SubscriptionError, Update, Updates};
use misar_proto_tokio::server::DriverConfig;
use tokio::sync::watch;

fn alice_auth() -> [(&'static str, String); 1] {
    [("Authorization", bearer(ALICE_KEY))]
}

fn h<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// A heartbeat window of about two seconds: ping every 500 ms, pong within 1 s, 500 ms to
/// answer a close.
fn heartbeat_config() -> ServerConfig {
    ServerConfig {
        ping_interval: Duration::from_millis(500),
        pong_timeout: Duration::from_secs(1),
        close_grace: Duration::from_millis(500),
        ..ServerConfig::default()
    }
}

fn window(config: &ServerConfig) -> Duration {
    config.ping_interval + config.pong_timeout + config.close_grace
}

/// Publishes to `account` every millisecond or so until told to stop; returns the count.
fn steady_publisher(
    server: &Server,
    account: &str,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<u64>) {
    let hub = server.hub.clone();
    let account = AccountId::from(account);
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut seq = 0;
        while !*stopped.borrow_and_update() {
            hub.publish_inbox(&account, &email("steady", seq))
                .await
                .unwrap();
            seq += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seq
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_client_killed_mid_stream_is_freed_within_the_heartbeat_window() {
    let config = heartbeat_config();
    let server = Server::start_with(
        ServerOptions {
            server: config.clone(),
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;
    let (stop, publisher) = steady_publisher(&server, ALICE);

    // The tokio client, reading a steady stream, dropped mid-stream (its socket closes).
    let client = server.client(ALICE_KEY).build().unwrap();
    let mut inbox = client.subscribe_inbox().updates();
    expect_connected(&mut inbox).await;
    let reader = tokio::spawn(async move {
        let mut last = None;
        for _ in 0..100 {
            let event = next_event(&mut inbox).await;
            let (_, seq) = email_tag(&event).unwrap();
            if let Some(last) = last {
                assert!(seq > last, "in order");
            }
            last = Some(seq);
        }
        // Still subscribed while this task is alive: it is aborted below.
        std::future::pending::<()>().await;
    });
    server.wait_connections(1).await;
    // Wait for the stream to be flowing, then kill the reader mid-stream.
    let hub = server.hub.clone();
    wait_until("100 events delivered", move || hub.stats().delivered >= 100).await;
    reader.abort();
    let killed = Instant::now();
    let _ = reader.await;
    server.wait_idle().await;
    let client_freed = killed.elapsed();

    // A raw peer reading frames, killed with unread data pending: a TCP reset.
    let mut peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&alice_auth()))
        .await
        .unwrap();
    for _ in 0..50 {
        within("a frame", peer.read_frame()).await.expect("a frame");
    }
    peer.kill();
    let killed = Instant::now();
    server.wait_idle().await;
    let reset_freed = killed.elapsed();

    stop.send_replace(true);
    let published = publisher.await.unwrap();
    let window = window(&config);
    assert!(client_freed < window, "{client_freed:?}");
    assert!(reset_freed < window, "{reset_freed:?}");
    println!(
        "fault killed client: {published} events published meanwhile; connection freed {:.1} ms \
         after the client was dropped (FIN), {:.1} ms after a raw peer was reset (RST); \
         heartbeat window {:.0} ms",
        ms(client_freed),
        ms(reset_freed),
        ms(window)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_half_open_client_is_freed_within_the_heartbeat_window() {
    let config = heartbeat_config();
    let server = Server::start_with(
        ServerOptions {
            server: config.clone(),
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;
    let (stop, publisher) = steady_publisher(&server, ALICE);

    // Upgraded, then nothing: no reads, no pongs, no close; the socket stays open.
    let peer = RawPeer::connect(server.addr, "/mail/ws/inbox", &h(&alice_auth()))
        .await
        .unwrap();
    let upgraded = Instant::now();
    server.wait_idle().await;
    let raw_freed = upgraded.elapsed();
    drop(peer);

    // The network dies under a tokio client: a proxy in between stops forwarding both ways
    // (both ends half-open). The server frees its side by its heartbeat; the client declares
    // the server dead after its liveness window. (It is told not to reconnect, so that the
    // server's count shows the dead connection alone; s2.5 covers the reconnect.)
    let proxy = Proxy::start(server.addr).await;
    let client = Client::builder(format!("ws://{}/mail/ws", proxy.addr), key(ALICE_KEY))
        .resume(false)
        .heartbeat(config.ping_interval, config.pong_timeout)
        .reconnect(ReconnectPolicy::Never)
        .build()
        .unwrap();
    let mut inbox = client.subscribe_inbox().updates();
    expect_connected(&mut inbox).await;
    next_event(&mut inbox).await;
    proxy.blackhole();
    let cut = Instant::now();
    let watcher = tokio::spawn(async move {
        loop {
            match within("the client's verdict", inbox.next()).await {
                Some(Ok(Update::Event { .. })) => {}
                Some(Err(error)) => return (cut.elapsed(), error),
                other => panic!("{other:?}"),
            }
        }
    });
    server.wait_idle().await;
    let server_freed = cut.elapsed();
    let (detected, error) = within("the client", watcher).await.unwrap();
    assert!(
        matches!(
            error,
            SubscriptionError::GaveUp {
                cause: Disconnect::Dropped,
                ..
            }
        ),
        "{error:?}"
    );
    stop.send_replace(true);
    publisher.await.unwrap();

    let window = window(&config);
    assert!(
        raw_freed >= config.ping_interval + config.pong_timeout,
        "{raw_freed:?}"
    );
    assert!(raw_freed < window + Duration::from_secs(1), "{raw_freed:?}");
    let liveness = config.ping_interval + config.pong_timeout;
    assert!(detected < liveness + Duration::from_secs(1), "{detected:?}");
    assert!(
        server_freed < window + Duration::from_secs(1),
        "{server_freed:?}"
    );
    println!(
        "fault half-open: a silent raw client was freed {:.0} ms after its upgrade (ping {:?} + \
         pong timeout {:?} + close grace {:?} = {:.0} ms); behind a black-holed proxy the client \
         declared the server dead after {:.0} ms (liveness window {:.0} ms) and the server freed \
         the dead connection after {:.0} ms",
        ms(raw_freed),
        config.ping_interval,
        config.pong_timeout,
        config.close_grace,
        ms(window),
        ms(detected),
        ms(liveness),
        ms(server_freed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_half_open_client_under_load_is_dropped_by_the_write_timeout() {
    // A half-open peer that a heavy stream is addressed to: once the socket's buffers are
    // full the server cannot even write its ping or its close, so what frees the connection
    // is the driver's write timeout.
    let config = ServerConfig {
        max_queued_bytes: 256 << 10,
        ..heartbeat_config()
    };
    let write_timeout = Duration::from_secs(1);
    let server = Server::start_with(
        ServerOptions {
            server: config.clone(),
            ..ServerOptions::default()
        },
        |b| {
            b.driver_config(DriverConfig {
                write_timeout,
                ..DriverConfig::default()
            })
        },
    )
    .await;
    let peer =
        RawPeer::connect_small_buffer(server.addr, "/mail/ws/inbox", &h(&alice_auth()), 4096)
            .await
            .unwrap();
    let rss_start = rss_bytes().unwrap_or(0);
    let upgraded = Instant::now();
    let mut overflowed_at = None;
    let mut published = 0u64;
    while server.hub.connection_count() > 0 {
        let report = server
            .hub
            .publish_inbox(&acct(ALICE), &big_email(ALICE, published, 16 << 10))
            .await
            .unwrap();
        published += 1;
        if report.overflowed > 0 {
            overflowed_at = Some(upgraded.elapsed());
        }
        assert!(upgraded.elapsed() < LIMIT, "never freed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let freed = upgraded.elapsed();
    server.wait_idle().await;
    let rss_end = rss_bytes().unwrap_or(0);
    drop(peer);
    let overflowed_at = overflowed_at.expect("the queue overflowed");
    assert!(
        freed < window(&config) + write_timeout + Duration::from_secs(1),
        "{freed:?}"
    );
    println!(
        "fault half-open under load: {published} events of 16 KiB ({:.1} MiB) addressed to a \
         peer that reads nothing; its queue overflowed (1013, unwritable) after {:.0} ms; the \
         connection was freed {:.0} ms after the upgrade (write timeout {write_timeout:?}, \
         heartbeat window {:.0} ms); RSS {:+.1} MiB",
        mib(published * (16 << 10)),
        ms(overflowed_at),
        ms(freed),
        ms(window(&config)),
        (rss_end as f64 - rss_start as f64) / (1024.0 * 1024.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_slow_consumer_among_fast_ones_is_closed_1013_and_memory_stays_bounded() {
    const FAST: usize = 4;
    const SIZE: usize = 16 << 10;
    const AFTER_OVERFLOW: u64 = 1000;
    let config = ServerConfig {
        // The slow peer never answers pings: the heartbeat must not be what closes it.
        ping_interval: Duration::from_secs(60),
        pong_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    };
    let server = Server::start_with(
        ServerOptions {
            server: config.clone(),
            ..ServerOptions::default()
        },
        // A long write timeout: the slow peer reads again at the end and must then find the
        // close 1013 rather than a connection dropped for a stalled write.
        |b| {
            b.driver_config(DriverConfig {
                write_timeout: Duration::from_secs(120),
                ..DriverConfig::default()
            })
        },
    )
    .await;

    // The slow one: upgraded, a small receive buffer, and it does not read.
    let mut slow =
        RawPeer::connect_small_buffer(server.addr, "/mail/ws/inbox", &h(&alice_auth()), 4096)
            .await
            .unwrap();
    // The fast ones: tokio clients read in their own tasks and report how far they got.
    let mut fast = Vec::new();
    for _ in 0..FAST {
        let client = server.client(ALICE_KEY).build().unwrap();
        let mut inbox = client.subscribe_inbox().updates();
        expect_connected(&mut inbox).await;
        let (progress_tx, progress_rx) = watch::channel(None::<u64>);
        let task = tokio::spawn(async move {
            let mut seqs = Vec::new();
            loop {
                match next_update(&mut inbox).await {
                    Update::Event { event, .. } => {
                        let (_, seq) = email_tag(&event).unwrap();
                        if seq == u64::MAX {
                            return (seqs, inbox);
                        }
                        seqs.push(seq);
                        progress_tx.send_replace(Some(seq));
                    }
                    other => panic!("a fast client was disturbed: {other:?}"),
                }
            }
        });
        fast.push((progress_rx, task));
    }
    server.wait_connections(FAST + 1).await;

    let rss_start = rss_bytes().unwrap_or(0);
    let mut overflow_at = None;
    let mut rss_at_overflow = 0;
    let mut published = 0u64;
    for seq in 0u64.. {
        let report = server
            .hub
            .publish_inbox(&acct(ALICE), &big_email(ALICE, seq, SIZE))
            .await
            .unwrap();
        published = seq + 1;
        if overflow_at.is_some() {
            assert_eq!(
                report.delivered, FAST,
                "after the overflow: the fast ones only"
            );
        } else {
            assert_eq!(report.delivered + report.overflowed, FAST + 1);
        }
        if report.overflowed > 0 {
            overflow_at = Some(seq);
            rss_at_overflow = rss_bytes().unwrap_or(0);
        }
        // At the fast clients' pace: each has this event before the next is published.
        for (progress, _) in &fast {
            let mut progress = progress.clone();
            within("a fast client", progress.wait_for(|got| *got == Some(seq)))
                .await
                .unwrap();
        }
        match overflow_at {
            Some(at) if seq >= at + AFTER_OVERFLOW => break,
            None => assert!(
                seq < 4096,
                "no overflow after {} MiB",
                (seq as usize * SIZE) >> 20
            ),
            _ => {}
        }
    }
    let overflow_at = overflow_at.unwrap();
    let rss_end = rss_bytes().unwrap_or(0);

    server
        .hub
        .publish_inbox(&acct(ALICE), &email(ALICE, u64::MAX))
        .await
        .unwrap();
    for (_, task) in fast {
        let (seqs, _inbox) = within("a fast client", task).await.unwrap();
        assert_eq!(
            seqs,
            (0..published).collect::<Vec<_>>(),
            "everything, in order"
        );
    }

    // The slow peer reads at last: the events that were in flight, in order, then 1013.
    let seen = slow.read_until_close().await;
    assert_eq!(seen.close, Some(Some(1013)), "{:?}", seen.opcodes);
    let slow_seqs: Vec<u64> = seen
        .texts
        .iter()
        .map(|text| {
            email_tag(&Event::Inbox(decode_inbox(text.as_bytes()).unwrap()))
                .unwrap()
                .1
        })
        .collect();
    assert_eq!(slow_seqs, (0..slow_seqs.len() as u64).collect::<Vec<_>>());
    assert!((slow_seqs.len() as u64) <= overflow_at);
    let stats = server.hub.stats();
    assert_eq!(stats.overflowed, 1);

    let after_bytes = AFTER_OVERFLOW * SIZE as u64;
    let growth_after = rss_end.saturating_sub(rss_at_overflow);
    assert!(
        growth_after < after_bytes / 2,
        "memory grew by {:.1} MiB while {:.1} MiB were published after the overflow",
        mib(growth_after),
        mib(after_bytes)
    );
    println!(
        "fault slow consumer: {FAST} fast clients got all {published} events of {} KiB \
         ({:.1} MiB each), in order; the unread connection overflowed at event {overflow_at} \
         ({:.1} MiB published: kernel buffers + WebSocket write buffer + the 1 MiB queue), \
         received {} events then close 1013; RSS {:.1} MiB at start, {:.1} MiB at the overflow \
         (+{:.1}), {:.1} MiB after {AFTER_OVERFLOW} more events ({:.1} MiB) were published \
         (+{:.1})",
        SIZE >> 10,
        mib(published * SIZE as u64),
        mib((overflow_at + 1) * SIZE as u64),
        slow_seqs.len(),
        mib(rss_start),
        mib(rss_at_overflow),
        mib(rss_at_overflow.saturating_sub(rss_start)),
        mib(rss_end),
        mib(after_bytes),
        mib(growth_after)
    );
}

/// What one client saw of the restart.
struct Timeline {
    first_delay: Duration,
    closed_at: Instant,
    reconnected_at: Instant,
    /// Attempts that failed before the server was back (connect refused, 503).
    failed_attempts: Vec<Disconnect>,
}

async fn follow_restart(mut updates: Updates, ready: tokio::sync::mpsc::Sender<()>) -> Timeline {
    expect_connected(&mut updates).await;
    ready.send(()).await.unwrap();
    let (cause, first_delay, _) = expect_reconnecting(&mut updates).await;
    let closed_at = Instant::now();
    assert_eq!(cause, Disconnect::Closed(CloseCode::GoingAway));
    let mut failed_attempts = Vec::new();
    loop {
        match next_update(&mut updates).await {
            Update::Connected => break,
            Update::Reconnecting { cause, .. } => failed_attempts.push(cause),
            other => panic!("{other:?}"),
        }
    }
    let reconnected_at = Instant::now();
    // The broadcast after the restart arrives on the new connection.
    next_event(&mut updates).await;
    Timeline {
        first_delay,
        closed_at,
        reconnected_at,
        failed_attempts,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_server_restart_sends_1001_and_clients_reconnect_with_a_jittered_spread() {
    const CLIENTS: usize = 100;
    const ACCOUNTS: usize = 10;
    let mut tables = MemoryAuthorizer::new();
    for a in 0..ACCOUNTS {
        tables = tables.with_key(format!("msk_restart_{a}"), format!("acct-{a}"));
    }
    let auth = Arc::new(TestAuth::with_tables(tables));
    let config = ServerConfig {
        ping_interval: Duration::from_millis(200),
        pong_timeout: Duration::from_secs(1),
        ..server_config()
    };
    let options = |addr| ServerOptions {
        server: config.clone(),
        auth: Arc::clone(&auth),
        addr,
        ..ServerOptions::default()
    };
    let mut first = Server::start_with(options(([127, 0, 0, 1], 0).into()), |b| b).await;
    let addr = first.addr;

    // Default backoff (500 ms base, full jitter), as users get it.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(CLIENTS);
    let mut followers = Vec::new();
    for n in 0..CLIENTS {
        let client = Client::builder(first.url(), key(&format!("msk_restart_{}", n % ACCOUNTS)))
            .resume(false)
            .heartbeat(config.ping_interval, config.pong_timeout)
            .build()
            .unwrap();
        followers.push(tokio::spawn(follow_restart(
            client.subscribe_inbox().updates(),
            ready_tx.clone(),
        )));
    }
    for _ in 0..CLIENTS {
        within("every client connected", ready_rx.recv())
            .await
            .unwrap();
    }
    first.wait_connections(CLIENTS).await;
    // Connections that stayed up one ping interval are healthy: their backoff starts over.
    tokio::time::sleep(config.ping_interval).await;

    let restart = Instant::now();
    let report = first.stop().await;
    assert_eq!(report.connections, CLIENTS);
    assert_eq!(report.dropped, 0, "every client answered the close");
    let second = Server::start_with(options(addr), |b| b).await;
    let down_for = restart.elapsed();
    second.wait_connections(CLIENTS).await;
    let all_back = restart.elapsed();
    for a in 0..ACCOUNTS {
        second
            .hub
            .publish_inbox(&acct(&format!("acct-{a}")), &email("after-restart", 1))
            .await
            .unwrap();
    }
    let mut timelines = Vec::new();
    for follower in followers {
        timelines.push(within("a client", follower).await.unwrap());
    }

    let mut delays: Vec<Duration> = timelines.iter().map(|t| t.first_delay).collect();
    let mut reconnects: Vec<Duration> = timelines
        .iter()
        .map(|t| t.reconnected_at - t.closed_at)
        .collect();
    let mut closes: Vec<Duration> = timelines.iter().map(|t| t.closed_at - restart).collect();
    let refused = timelines
        .iter()
        .filter(|t| !t.failed_attempts.is_empty())
        .count();
    let [d_min, d_p50, d_p90, d_max] = spread(&mut delays);
    let [r_min, r_p50, r_p90, r_max] = spread(&mut reconnects);
    let [_, _, _, c_max] = spread(&mut closes);
    assert!(
        d_max <= Duration::from_millis(500),
        "first delays are drawn from the 500 ms base window: {d_max:?}"
    );
    assert!(
        d_max - d_min >= Duration::from_millis(100),
        "jitter spreads the reconnects: {d_min:?}..{d_max:?}"
    );
    println!(
        "fault server restart: {CLIENTS} clients got 1001 within {:.0} ms of the shutdown; the \
         new server was listening {:.0} ms after it began; first backoff delays min {:.0} / p50 \
         {:.0} / p90 {:.0} / max {:.0} ms (spread {:.0} ms); time from close to reconnected min \
         {:.0} / p50 {:.0} / p90 {:.0} / max {:.0} ms; {refused} clients had a failed attempt \
         first (server not yet back); all {CLIENTS} back {:.0} ms after the restart began",
        ms(c_max),
        ms(down_for),
        ms(d_min),
        ms(d_p50),
        ms(d_p90),
        ms(d_max),
        ms(d_max - d_min),
        ms(r_min),
        ms(r_p50),
        ms(r_p90),
        ms(r_max),
        ms(all_back)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_failing_hooks_refuse_with_503_and_never_upgrade() {
    let server = Server::start().await;
    server.auth.set_failing(true, true);
    // Clients keep trying (fast backoff, to see many refusals in little time).
    let mut watchers = Vec::new();
    for n in 0..10 {
        let client = server
            .client(ALICE_KEY)
            .backoff(misar_proto::backoff::BackoffConfig {
                base: Duration::from_millis(20),
                cap: Duration::from_millis(100),
            })
            .build()
            .unwrap();
        let mut updates = if n % 2 == 0 {
            client.subscribe_inbox().updates()
        } else {
            client.subscribe_campaign(cid(ALICE_CAMPAIGN)).updates()
        };
        let (refusals_tx, refusals) = watch::channel(0usize);
        let task = tokio::spawn(async move {
            loop {
                match next_update(&mut updates).await {
                    Update::Reconnecting {
                        cause: Disconnect::HandshakeRejected { status: 503 },
                        ..
                    } => {
                        refusals_tx.send_modify(|n| *n += 1);
                    }
                    Update::Connected => return (*refusals_tx.borrow(), Instant::now(), updates),
                    other => panic!("{other:?}"),
                }
            }
        });
        watchers.push((refusals, task));
    }
    // A raw handshake sees the 503 itself: no 101, a JSON body.
    for path in ["/mail/ws/inbox", "/mail/ws/campaigns/camp-alice"] {
        let refusal = match RawPeer::connect(server.addr, path, &h(&alice_auth())).await {
            Err(refusal) => refusal,
            Ok(_) => panic!("{path}: upgraded while the hooks fail"),
        };
        assert_eq!(refusal.status, 503, "{path}");
        assert!(refusal.json()["error"].is_string());
    }
    // Every client was refused at least three times.
    for (refusals, _) in &watchers {
        let mut refusals = refusals.clone();
        within("refusals", refusals.wait_for(|n| *n >= 3))
            .await
            .unwrap();
    }
    assert_eq!(server.hub.connection_count(), 0, "nothing was upgraded");
    assert_eq!(server.shutdown.active_connections(), 0);
    assert_eq!(server.hub.stats().connections, 0);
    let attempts = server.auth.key_checks();

    server.auth.set_failing(false, false);
    let fixed = Instant::now();
    let mut refused_total = 0;
    let mut recovered = Duration::ZERO;
    let mut keep = Vec::new();
    for (_, task) in watchers {
        let (refused, at, updates) = within("a client to recover", task).await.unwrap();
        refused_total += refused;
        recovered = recovered.max(at.saturating_duration_since(fixed));
        keep.push(updates);
    }
    server.wait_connections(10).await;
    println!(
        "fault failing hooks: {attempts} handshakes refused with 503 while the hooks failed \
         ({refused_total} seen by 10 clients), none upgraded; after the hooks recovered every \
         client was connected within {:.0} ms",
        ms(recovered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_a_refused_origin_gets_403_before_any_hook_or_upgrade() {
    let server = Server::start_with(ServerOptions::default(), |b| {
        b.allowed_origins(["https://app.example.com"])
    })
    .await;
    // A page on another site opening a socket with the victim's token (browsers send cookies
    // and the page's Origin; they cannot forge the Origin).
    let path = format!("/mail/ws/inbox?token={ALICE_KEY}");
    let mut refusals = 0;
    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
    ] {
        match RawPeer::connect(server.addr, &path, &[("Origin", origin)]).await {
            Err(refusal) => {
                assert_eq!(refusal.status, 403, "{origin}");
                assert_eq!(refusal.header("cache-control"), Some("no-store"));
                refusals += 1;
            }
            Ok(_) => panic!("{origin}: upgraded"),
        }
    }
    // Two Origin headers are refused too.
    let twice = RawPeer::connect(
        server.addr,
        &path,
        &[
            ("Origin", "https://app.example.com"),
            ("Origin", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(twice.err().map(|r| r.status), Some(403));
    assert_eq!(server.auth.key_checks(), 0, "refused before the key hook");
    assert_eq!(server.shutdown.active_connections(), 0, "no upgrade");

    let mut ok = RawPeer::connect(server.addr, &path, &[("Origin", "https://app.example.com")])
        .await
        .expect("the allowed origin upgrades");
    server
        .hub
        .publish_inbox(&acct(ALICE), &email("origin", 1))
        .await
        .unwrap();
    let frame = loop {
        let frame = within("the event", ok.read_frame()).await.expect("a frame");
        if frame.text().is_some() {
            break frame;
        }
    };
    assert_eq!(&frame.payload[..], &email("origin", 1).encode().bytes()[..]);
    println!(
        "fault refused origin: {} foreign-origin upgrades refused with 403, 0 hook calls, 0 \
         upgrades; the allowed origin was served",
        refusals + 1
    );
}
