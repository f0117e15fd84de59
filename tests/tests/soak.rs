//! The soak, sized for 2 cores and part of the normal run: 2,000 connections (1,800 inbox
//! subscriptions over 40 accounts, 200 campaign subscriptions over 20 campaigns) through the
//! axum router and the tokio client, 50 events each.
//!
//! Checked: nothing lost or reordered for connected consumers (inbox: all 50, in order;
//! campaign: increasing `progress`, then the terminal event and close 1000); every socket
//! closed at shutdown (each inbox client sees close 1001, the process's open descriptors come
//! back to where they were); no task left behind (tokio's count of alive tasks comes back to
//! its baseline). Prints the times and memory it measured.
//!
//! Its own test binary, so nothing else competes with it for the two cores.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use misar_proto::close::{CloseCode, Disconnect};
use misar_proto::event::{CampaignEvent, Event};
use misar_proto::server::ServerConfig;
use misar_proto_axum::MemoryAuthorizer;
use misar_proto_tokio::client::{ReconnectPolicy, SubscriptionError, Updates};
use misar_proto_tokio::hub::HubConfig;
use tokio::sync::mpsc;

const ACCOUNTS: usize = 40;
const INBOX_PER_ACCOUNT: usize = 45;
const CAMPAIGNS: usize = 20;
const PER_CAMPAIGN: usize = 10;
const CONNECTIONS: usize = ACCOUNTS * INBOX_PER_ACCOUNT + CAMPAIGNS * PER_CAMPAIGN;
const EVENTS: u64 = 50;
/// Connections opened at a time (the listener's backlog is 1,024).
const WAVE: usize = 250;

fn account(a: usize) -> String {
    format!("soak-acct-{a}")
}

fn api_key(a: usize) -> String {
    format!("msk_soak_{a}")
}

fn campaign(c: usize) -> String {
    format!("soak-camp-{c}")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// Client and server ends of every connection live in this process: 4,000 sockets, more than
/// a common default soft limit of 1,024 descriptors.
fn raise_fd_limit(needed: u64) {
    let raised = rlimit::increase_nofile_limit(needed).expect("read the open-files limit");
    assert!(
        raised >= needed,
        "the open-files limit is {raised} (hard limit); the soak needs {needed}"
    );
}

/// An inbox consumer: connects, reads its 50 events (checking tag and order), then waits for
/// the shutdown's close.
async fn inbox_consumer(
    mut updates: Updates,
    me: String,
    ready: mpsc::Sender<()>,
    done: Arc<AtomicUsize>,
) -> Result<(), String> {
    expect_connected(&mut updates).await;
    ready.send(()).await.map_err(|e| e.to_string())?;
    for expected in 0..EVENTS {
        let event = next_event(&mut updates).await;
        match email_tag(&event) {
            Some((tag, seq)) if tag == me && seq == expected => {}
            other => return Err(format!("{me}: expected #{expected}, got {other:?}")),
        }
    }
    done.fetch_add(1, Ordering::SeqCst);
    match expect_error(&mut updates).await {
        SubscriptionError::GaveUp {
            cause: Disconnect::Closed(CloseCode::GoingAway),
            ..
        } => Ok(()),
        other => Err(format!(
            "{me}: expected close 1001 at shutdown, got {other:?}"
        )),
    }
}

/// A campaign consumer: increasing progress, then the terminal event, then the channel's end.
async fn campaign_consumer(
    mut updates: Updates,
    me: String,
    ready: mpsc::Sender<()>,
    done: Arc<AtomicUsize>,
) -> Result<(), String> {
    expect_connected(&mut updates).await;
    ready.send(()).await.map_err(|e| e.to_string())?;
    let mut last = 0;
    loop {
        match next_event(&mut updates).await {
            Event::Campaign(CampaignEvent::Progress(p)) if p.campaign_id == me && p.sent > last => {
                last = p.sent;
            }
            Event::Campaign(CampaignEvent::Completed(c)) if c.campaign_id == me => break,
            other => return Err(format!("{me}: after progress {last}: {other:?}")),
        }
    }
    done.fetch_add(1, Ordering::SeqCst);
    expect_finished(&mut updates).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_2000_connections_50_events_each() {
    raise_fd_limit(2 * CONNECTIONS as u64 + 1024);
    let baseline_tasks = alive_tasks();
    let baseline_fds = open_fds();
    let rss_start = rss_bytes().unwrap_or(0);

    let mut tables = MemoryAuthorizer::new();
    for a in 0..ACCOUNTS {
        tables = tables.with_key(api_key(a), account(a));
    }
    for c in 0..CAMPAIGNS {
        tables = tables.with_campaign(&campaign(c), account(c % ACCOUNTS));
    }
    let config = ServerConfig {
        ping_interval: Duration::from_secs(1),
        pong_timeout: Duration::from_secs(5),
        close_grace: Duration::from_secs(2),
        ..ServerConfig::default()
    };
    let mut server = Server::start_with(
        ServerOptions {
            hub: HubConfig {
                shutdown_grace: Duration::from_secs(10),
                ..HubConfig::default()
            },
            server: config.clone(),
            auth: Arc::new(TestAuth::with_tables(tables)),
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;

    let clients: Vec<_> = (0..ACCOUNTS)
        .map(|a| {
            server
                .client(&api_key(a))
                .connect_timeout(Duration::from_secs(20))
                // Any end of a connection is a failure here, never hidden by a reconnect.
                .reconnect(ReconnectPolicy::Never)
                .build()
                .unwrap()
        })
        .collect();
    let done = Arc::new(AtomicUsize::new(0));
    let (ready_tx, mut ready_rx) = mpsc::channel(CONNECTIONS);
    let mut consumers = Vec::with_capacity(CONNECTIONS);
    let connect_start = Instant::now();
    let mut specs = Vec::with_capacity(CONNECTIONS);
    for a in 0..ACCOUNTS {
        for _ in 0..INBOX_PER_ACCOUNT {
            specs.push((a, None));
        }
    }
    for c in 0..CAMPAIGNS {
        for _ in 0..PER_CAMPAIGN {
            specs.push((c % ACCOUNTS, Some(c)));
        }
    }
    for wave in specs.chunks(WAVE) {
        for (a, c) in wave {
            let client = &clients[*a];
            let task = match c {
                None => tokio::spawn(inbox_consumer(
                    client.subscribe_inbox().updates(),
                    account(*a),
                    ready_tx.clone(),
                    Arc::clone(&done),
                )),
                Some(c) => tokio::spawn(campaign_consumer(
                    client.subscribe_campaign(cid(&campaign(*c))).updates(),
                    campaign(*c),
                    ready_tx.clone(),
                    Arc::clone(&done),
                )),
            };
            consumers.push(task);
        }
        for _ in 0..wave.len() {
            within("a wave of connections", ready_rx.recv())
                .await
                .unwrap();
        }
    }
    let connect_time = connect_start.elapsed();
    server.wait_connections(CONNECTIONS).await;
    let rss_connected = rss_bytes().unwrap_or(0);
    let fds_connected = open_fds();
    assert!(
        fds_connected >= baseline_fds + 2 * CONNECTIONS,
        "{fds_connected}"
    );

    let publish_start = Instant::now();
    for seq in 0..EVENTS {
        for a in 0..ACCOUNTS {
            let report = server
                .hub
                .publish_inbox(&acct(&account(a)), &email(&account(a), seq))
                .await
                .unwrap();
            assert_eq!(report.delivered, INBOX_PER_ACCOUNT);
        }
        for c in 0..CAMPAIGNS {
            let id = campaign(c);
            let event = if seq + 1 < EVENTS {
                progress(&id, seq + 1, EVENTS)
            } else {
                completed(&id, EVENTS)
            };
            let report = server
                .hub
                .publish_campaign(&cid(&id), &event)
                .await
                .unwrap();
            assert_eq!(report.delivered, PER_CAMPAIGN);
        }
        tokio::task::yield_now().await;
    }
    let publish_time = publish_start.elapsed();
    let counter = Arc::clone(&done);
    wait_until("every consumer to have its events", move || {
        counter.load(Ordering::SeqCst) == CONNECTIONS
    })
    .await;
    let delivery_time = publish_start.elapsed();
    let rss_delivered = rss_bytes().unwrap_or(0);
    let stats = server.hub.stats();
    assert_eq!(stats.overflowed, 0);
    assert_eq!(
        stats.encodes,
        EVENTS * (ACCOUNTS + CAMPAIGNS) as u64,
        "one encode per publish"
    );

    // The campaign channels closed themselves (1000); the inbox ones remain.
    server.wait_connections(ACCOUNTS * INBOX_PER_ACCOUNT).await;
    let shutdown_start = Instant::now();
    let report = server.stop().await;
    let shutdown_time = shutdown_start.elapsed();
    assert_eq!(report.connections, ACCOUNTS * INBOX_PER_ACCOUNT);
    assert_eq!(report.dropped, 0, "every client answered the close");
    let mut failures = Vec::new();
    for consumer in consumers {
        if let Err(error) = within("a consumer", consumer).await.unwrap() {
            failures.push(error);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(server.hub.connection_count(), 0);
    assert_eq!(server.shutdown.active_connections(), 0);
    drop(clients);
    drop(server);
    let tasks_settled = wait_until("every task to end", || alive_tasks() <= baseline_tasks).await;
    let fds_settled = wait_until("every socket to be closed", || open_fds() <= baseline_fds).await;

    println!(
        "soak: {CONNECTIONS} connections opened in {:.0} ms (waves of {WAVE}); {} events \
         published ({} deliveries) in {:.0} ms, all delivered {:.0} ms after the first publish; \
         shutdown of {} connections (close 1001, all answered) took {:.0} ms; RSS {:.1} MiB at \
         start, {:.1} MiB connected (+{:.1} KiB per connection: client and server ends and \
         their tasks together, mostly the tokio client's 128 KiB tungstenite read buffer), \
         {:.1} MiB after delivery; {} descriptors open at the peak; \
         tasks back to {baseline_tasks} and descriptors to {baseline_fds} within {:.0} ms",
        ms(connect_time),
        stats.encodes,
        stats.delivered,
        ms(publish_time),
        ms(delivery_time),
        report.connections,
        ms(shutdown_time),
        mib(rss_start),
        mib(rss_connected),
        rss_connected.saturating_sub(rss_start) as f64 / 1024.0 / CONNECTIONS as f64,
        mib(rss_delivered),
        fds_connected,
        ms(tasks_settled + fds_settled)
    );
}
