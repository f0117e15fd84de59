//! Isolation, as a property: many accounts and campaigns publishing concurrently over real
//! sockets, and no event ever reaches another account's or another campaign's socket; every
//! connection receives its stream in publish order (inbox: every event; campaign: the
//! `progress` updates it gets are increasing, as coalescing may skip some, and the terminal
//! event comes last).
//!
//! quickcheck draws the topology (accounts, inbox connections, campaigns, subscribers) and
//! the traffic; each case runs a fresh server and tokio clients.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use misar_proto::event::{CampaignEvent, Event, InboxEvent};
use misar_proto_axum::MemoryAuthorizer;
use misar_proto_tokio::client::{ReconnectPolicy, Update, Updates};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

#[derive(Clone, Debug)]
struct CampaignSpec {
    subscribers: u8,
    progress: u8,
    /// 0: completed, 1: failed, 2: cancelled.
    terminal: u8,
}

#[derive(Clone, Debug)]
struct AccountSpec {
    inbox_connections: u8,
    inbox_events: u8,
    campaigns: Vec<CampaignSpec>,
}

#[derive(Clone, Debug)]
struct Scenario {
    accounts: Vec<AccountSpec>,
}

fn between(g: &mut Gen, low: u8, high: u8) -> u8 {
    low + u8::arbitrary(g) % (high - low + 1)
}

impl Arbitrary for Scenario {
    fn arbitrary(g: &mut Gen) -> Self {
        let accounts = (0..between(g, 2, 6))
            .map(|_| AccountSpec {
                inbox_connections: between(g, 0, 3),
                inbox_events: between(g, 0, 60),
                campaigns: (0..between(g, 0, 3))
                    .map(|_| CampaignSpec {
                        subscribers: between(g, 1, 3),
                        progress: between(g, 0, 40),
                        terminal: between(g, 0, 2),
                    })
                    .collect(),
            })
            .collect();
        Scenario { accounts }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        // Drop one account at a time (keeping at least two: isolation needs neighbours).
        let accounts = self.accounts.clone();
        let count = if accounts.len() > 2 {
            accounts.len()
        } else {
            0
        };
        Box::new((0..count).map(move |skip| {
            let mut accounts = accounts.clone();
            accounts.remove(skip);
            Scenario { accounts }
        }))
    }
}

/// What a connection is subscribed to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stream {
    Inbox(String),
    Campaign(String),
}

/// Cases run so far: keys, accounts and campaign ids are unique per case.
static CASE: AtomicUsize = AtomicUsize::new(0);

fn account_name(case: usize, a: usize) -> String {
    format!("case{case}-acct{a}")
}

fn campaign_name(case: usize, a: usize, c: usize) -> String {
    format!("case{case}-acct{a}-camp{c}")
}

fn terminal(campaign: &str, kind: u8) -> CampaignEvent {
    match kind {
        0 => completed(campaign, 1_000),
        1 => failed(campaign),
        _ => cancelled(campaign),
    }
}

/// Reads one connection to the end of its stream and checks everything it got. Inbox
/// connections end at their fence event (published after everything else), campaign ones
/// when the channel closes after the terminal event.
async fn consume(
    mut updates: Updates,
    stream: Stream,
    expected_inbox: u64,
) -> Result<usize, String> {
    let mut received = 0;
    let mut last_progress = None;
    loop {
        let update = within(
            "the next update",
            futures_util::StreamExt::next(&mut updates),
        )
        .await;
        let event = match update {
            Some(Ok(Update::Event { event, .. })) => event,
            None => {
                return match stream {
                    Stream::Campaign(_) => {
                        Err(format!("{stream:?}: ended without its terminal event"))
                    }
                    Stream::Inbox(_) => Err(format!("{stream:?}: ended")),
                };
            }
            other => return Err(format!("{stream:?}: unexpected {other:?}")),
        };
        received += 1;
        match (&stream, &event) {
            (Stream::Inbox(account), Event::Inbox(InboxEvent::EmailReceived(_))) => {
                let (tag, seq) = email_tag(&event).ok_or("untagged")?;
                if &tag != account {
                    return Err(format!("{account}'s inbox received {tag}'s event #{seq}"));
                }
                if seq == u64::MAX {
                    if received as u64 != expected_inbox + 1 {
                        return Err(format!(
                            "{account}: {} events before the fence, expected {expected_inbox}",
                            received - 1
                        ));
                    }
                    return Ok(received);
                }
                if seq != received as u64 - 1 {
                    return Err(format!(
                        "{account}: event #{seq} arrived as the {received}th"
                    ));
                }
            }
            (Stream::Campaign(campaign), Event::Campaign(c)) => {
                if c.campaign_id().map(|id| id.as_str()) != Some(campaign.as_str()) {
                    return Err(format!(
                        "{campaign} received {:?}'s {}",
                        c.campaign_id(),
                        c.type_name()
                    ));
                }
                if let CampaignEvent::Progress(p) = c {
                    if last_progress.is_some_and(|last| p.sent <= last) {
                        return Err(format!(
                            "{campaign}: progress {} after {last_progress:?}",
                            p.sent
                        ));
                    }
                    last_progress = Some(p.sent);
                } else if c.is_terminal() {
                    // The channel must end right after it.
                    let next = within("the end", futures_util::StreamExt::next(&mut updates)).await;
                    return match next {
                        None => Ok(received),
                        other => Err(format!("{campaign}: after the terminal event: {other:?}")),
                    };
                }
            }
            (stream, event) => return Err(format!("{stream:?} received {event:?}")),
        }
    }
}

async fn run_case(scenario: Scenario) -> Result<(usize, usize), String> {
    let case = CASE.fetch_add(1, Ordering::SeqCst);
    let mut tables = MemoryAuthorizer::new();
    for (a, account) in scenario.accounts.iter().enumerate() {
        tables = tables.with_key(
            format!("msk_{}", account_name(case, a)),
            account_name(case, a),
        );
        for c in 0..account.campaigns.len() {
            tables = tables.with_campaign(&campaign_name(case, a, c), account_name(case, a));
        }
    }
    let server = Server::start_with(
        ServerOptions {
            auth: Arc::new(TestAuth::with_tables(tables)),
            ..ServerOptions::default()
        },
        |b| b,
    )
    .await;

    // Every consumer connects first (a connection only gets what is published after it).
    let mut consumers = Vec::new();
    for (a, account) in scenario.accounts.iter().enumerate() {
        let client = server
            .client(&format!("msk_{}", account_name(case, a)))
            .reconnect(ReconnectPolicy::Never)
            .build()
            .unwrap();
        for _ in 0..account.inbox_connections {
            let mut updates = client.subscribe_inbox().updates();
            expect_connected(&mut updates).await;
            let stream = Stream::Inbox(account_name(case, a));
            let expected = u64::from(account.inbox_events);
            consumers.push(tokio::spawn(consume(updates, stream, expected)));
        }
        for (c, campaign) in account.campaigns.iter().enumerate() {
            for _ in 0..campaign.subscribers {
                let id = campaign_name(case, a, c);
                let mut updates = client.subscribe_campaign(cid(&id)).updates();
                expect_connected(&mut updates).await;
                consumers.push(tokio::spawn(consume(updates, Stream::Campaign(id), 0)));
            }
        }
    }
    let connections = consumers.len();

    // One publisher per stream, all at once, yielding between publishes so they interleave.
    let mut publishers = Vec::new();
    for (a, account) in scenario.accounts.iter().enumerate() {
        let hub = server.hub.clone();
        let name = account_name(case, a);
        let events = u64::from(account.inbox_events);
        publishers.push(tokio::spawn(async move {
            for seq in 0..events {
                hub.publish_inbox(&acct(&name), &email(&name, seq))
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        }));
        for (c, campaign) in account.campaigns.iter().enumerate() {
            let hub = server.hub.clone();
            let id = campaign_name(case, a, c);
            let spec = campaign.clone();
            publishers.push(tokio::spawn(async move {
                for sent in 1..=u64::from(spec.progress) {
                    hub.publish_campaign(&cid(&id), &progress(&id, sent, 1_000))
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                }
                hub.publish_campaign(&cid(&id), &terminal(&id, spec.terminal))
                    .await
                    .unwrap();
            }));
        }
    }
    for publisher in publishers {
        publisher.await.map_err(|e| e.to_string())?;
    }
    // Fences: the last event of each inbox stream.
    for a in 0..scenario.accounts.len() {
        let name = account_name(case, a);
        server
            .hub
            .publish_inbox(&acct(&name), &email(&name, u64::MAX))
            .await
            .unwrap();
    }
    let mut events = 0;
    for consumer in consumers {
        events += within("a consumer", consumer)
            .await
            .map_err(|e| e.to_string())??;
    }
    let overflowed = server.hub.stats().overflowed;
    if overflowed > 0 {
        return Err(format!("{overflowed} connection(s) overflowed"));
    }
    Ok((connections, events))
}

static CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
static EVENTS: AtomicUsize = AtomicUsize::new(0);

fn isolation_holds(scenario: Scenario) -> TestResult {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(run_case(scenario)) {
        Ok((connections, events)) => {
            CONNECTIONS.fetch_add(connections, Ordering::SeqCst);
            EVENTS.fetch_add(events, Ordering::SeqCst);
            TestResult::passed()
        }
        Err(error) => TestResult::error(error),
    }
}

#[test]
fn isolation_no_event_crosses_accounts_or_campaigns_and_order_holds() {
    const CASES: u64 = 24;
    QuickCheck::new()
        .tests(CASES)
        .quickcheck(isolation_holds as fn(Scenario) -> TestResult);
    println!(
        "isolation: {CASES} cases, {} connections, {} events received, none misrouted",
        CONNECTIONS.load(Ordering::SeqCst),
        EVENTS.load(Ordering::SeqCst)
    );
}
