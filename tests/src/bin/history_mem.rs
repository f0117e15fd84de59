//! Issue 13, item 7: what the in-memory history (§2.11) costs in memory.
//!
//! Builds a [`Hub`] with [`HubConfig::default()`] (256 events and 10 minutes per stream,
//! 64 MiB in total), publishes `--events` typical inbox events (`email_received`, about
//! `--size` bytes encoded) to each of `--streams` accounts nobody is subscribed to, and reports
//! what the hub counts (`HubStats::history_bytes`, `history_streams`) against the process's
//! RSS growth (`/proc/self/statm`): per stream, per event, and the ratio of RSS to the counted
//! event bytes (the overhead of keeping them). One JSON line on stdout, a summary on stderr.
//!
//! ```text
//! cargo build --release -p misar-tests --bin history_mem
//! target/release/history_mem --streams 1000             # defaults per stream (256 x ~200 B)
//! target/release/history_mem --streams 2000             # past the 64 MiB budget
//! ```
//!
//! Run one size per process: the allocator keeps what an earlier size freed.
#![forbid(unsafe_code)]

use std::time::Instant;

use clap::Parser;
use misar_proto::auth::AccountId;
use misar_proto::event::{EmailReceived, InboxEvent, Timestamp};
use misar_proto_tokio::hub::{Hub, HubConfig};
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(about = "Memory of the in-memory resume history (issue 13)")]
struct Args {
    /// Streams (inbox accounts) to fill.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Events published to each stream (the default history keeps the last 256).
    #[arg(long, default_value_t = 256)]
    events: usize,
    /// Approximate encoded size of one event, in bytes.
    #[arg(long, default_value_t = 200)]
    size: usize,
}

const RECEIVED_AT: &str = "2026-05-27T10:15:00Z";

/// Resident set size of this process, in bytes.
fn rss_bytes() -> Result<u64, BoxError> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("statm: no resident field")?
        .parse()?;
    Ok(pages.saturating_mul(4096))
}

fn event(stream: usize, seq: usize, pad: usize) -> InboxEvent {
    let received = Timestamp::parse(RECEIVED_AT).unwrap_or_else(|_| unreachable!());
    InboxEvent::EmailReceived(
        EmailReceived::new("sender@example.com", "x".repeat(pad), received)
            .with_message_id(format!("msg-{stream}-{seq}")),
    )
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&args))
}

async fn run(args: &Args) -> Result<(), BoxError> {
    let config = HubConfig::default();
    let history = config.history.clone();
    let hub = Hub::new(config);
    // Pad the subject so that a typical event encodes to about `size` bytes.
    let bare = event(0, 0, 0).encode().len();
    let pad = args.size.saturating_sub(bare);
    let accounts: Vec<AccountId> = (0..args.streams)
        .map(|i| AccountId::from(format!("acct{i:06}").as_str()))
        .collect();
    let sample_len = event(args.streams, args.events, pad).encode().len();
    let rss_before = rss_bytes()?;
    let started = Instant::now();
    let mut published = 0u64;
    // Round-robin over the streams, so the byte budget (oldest first) trims fairly.
    for seq in 0..args.events {
        for (i, account) in accounts.iter().enumerate() {
            hub.publish_inbox(account, &event(i, seq, pad))
                .await
                .map_err(|e| format!("publish: {e}"))?;
            published += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes()?;
    let stats = hub.stats();
    let growth = rss_after.saturating_sub(rss_before);
    // The history holds the opted-in encoding: the plain one plus `,"offset":N`.
    let digits = published.checked_ilog10().map_or(1, |d| d as usize + 1);
    let stored_len = sample_len + ",\"offset\":".len() + digits;
    let held_events = stats.history_bytes / stored_len.max(1);
    let per_stream = growth as f64 / stats.history_streams.max(1) as f64;
    let per_event = growth as f64 / held_events.max(1) as f64;
    let ratio = growth as f64 / stats.history_bytes.max(1) as f64;
    let record = json!({
        "scenario": "history_mem",
        "streams": args.streams,
        "events_per_stream": args.events,
        "event_bytes": sample_len,
        "stored_event_bytes_approx": stored_len,
        "max_events": history.max_events,
        "max_bytes": history.max_bytes,
        "published": published,
        "publish_secs": (secs * 100.0).round() / 100.0,
        "history_bytes": stats.history_bytes,
        "history_streams": stats.history_streams,
        "held_events_approx": held_events,
        "hub_streams": stats.streams,
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        "rss_growth_bytes": growth,
        "rss_per_stream_bytes": per_stream.round(),
        "rss_per_held_event_bytes": per_event.round(),
        "rss_over_history_bytes": (ratio * 1000.0).round() / 1000.0,
    });
    println!("{record}");
    eprintln!(
        "history_mem: {} streams x {} events of {sample_len} B published; hub holds {} B in {} streams (~{held_events} events); RSS +{:.1} MiB: {per_stream:.0} B/stream, {per_event:.0} B/event, {ratio:.3}x the counted bytes",
        args.streams,
        args.events,
        stats.history_bytes,
        stats.history_streams,
        growth as f64 / (1 << 20) as f64,
    );
    Ok(())
}
