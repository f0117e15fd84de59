//! Benchmark peer: the WebSocket server a team writes from axum's documentation.
//!
//! Deliberately ordinary, because it is the baseline our server is measured against
//! (issue 8): `WebSocketUpgrade` with its default settings, a tokio `broadcast` channel of
//! `String` (so every recipient clones the payload), the docs' split into a send task and a
//! receive task, one `send` per event (which flushes each frame), a ping interval, and no
//! authentication at all: `?token=` is accepted unread.
//!
//! It speaks the benchmark control API of `bench/README.md`:
//! `GET /mail/ws/inbox`, `POST /bench/broadcast?count=K&size=S`, `GET /bench/stats`.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use misar_tests::bench;
use serde::Deserialize;
use tokio::sync::broadcast;

/// Command line; the environment variables are the runner's (`bench/run`) convention.
#[derive(Debug, Parser)]
#[command(about = "Naive axum WebSocket server (benchmark peer)")]
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
    /// Capacity of the broadcast channel (a receiver further behind skips events).
    #[arg(long, default_value_t = 1024)]
    channel_capacity: usize,
    /// Set TCP_NODELAY on accepted sockets. Off by default, as in axum's examples; on, it shows
    /// what Nagle's algorithm changes in the fan-out numbers.
    #[arg(long, env = "BENCH_NODELAY")]
    nodelay: bool,
}

#[derive(Clone)]
struct AppState {
    tx: broadcast::Sender<String>,
    ping: Duration,
    seq: Arc<AtomicU64>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let (tx, _) = broadcast::channel(args.channel_capacity.max(1));
    let state = AppState {
        tx,
        ping: Duration::from_millis(args.ping_ms.max(1)),
        seq: Arc::new(AtomicU64::new(0)),
    };
    let app = Router::new()
        .route(bench::INBOX_PATH, get(ws_handler))
        .route(bench::BROADCAST_PATH, post(broadcast_handler))
        .route(bench::STATS_PATH, get(stats_handler))
        .with_state(state);
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "naive-axum listening on {addr}, ping every {} ms, TCP_NODELAY {}",
        args.ping_ms, args.nodelay
    );
    let nodelay = args.nodelay;
    let listener = listener.tap_io(move |tcp| {
        if nodelay {
            // A socket that refuses the option still serves, only with Nagle's algorithm on.
            let _ = tcp.set_nodelay(true);
        }
    });
    axum::serve(listener, app).await
}

async fn ws_handler(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.on_upgrade(move |socket| handle_socket(socket, state))
}

async fn handle_socket(socket: WebSocket, state: AppState) {
    let (mut sender, mut receiver) = socket.split();
    let mut rx = state.tx.subscribe();
    // Set by the receive task on every pong, cleared by the send task on every ping: a ping
    // that finds it still clear means the previous one went unanswered for a whole interval.
    let pong_seen = Arc::new(AtomicBool::new(true));
    let pong_seen_rx = Arc::clone(&pong_seen);
    let ping = state.ping;

    let mut send_task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(ping);
        ticker.tick().await; // the first tick is immediate; ping one interval from now
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Ok(text) => {
                        if sender.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = ticker.tick() => {
                    if !pong_seen.swap(false, Ordering::Relaxed) {
                        let close = CloseFrame { code: 1001, reason: "heartbeat timeout".into() };
                        let _ = sender.send(Message::Close(Some(close))).await;
                        break;
                    }
                    if sender.send(Message::Ping(Bytes::new())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut recv_task = tokio::spawn(async move {
        while let Some(Ok(msg)) = receiver.next().await {
            if let Message::Pong(_) = msg {
                pong_seen_rx.store(true, Ordering::Relaxed);
            }
        }
    });
    tokio::select! {
        _ = &mut send_task => recv_task.abort(),
        _ = &mut recv_task => send_task.abort(),
    }
}

#[derive(Debug, Deserialize)]
struct BroadcastParams {
    #[serde(default = "default_count")]
    count: u32,
    #[serde(default = "default_size")]
    size: usize,
}

fn default_count() -> u32 {
    100
}

fn default_size() -> usize {
    200
}

async fn broadcast_handler(
    State(state): State<AppState>,
    Query(params): Query<BroadcastParams>,
) -> Response {
    if params.count > bench::MAX_BROADCAST_COUNT || params.size > bench::MAX_EVENT_SIZE {
        return (StatusCode::BAD_REQUEST, "count or size too large").into_response();
    }
    let recipients = state.tx.receiver_count();
    for _ in 0..params.count {
        let seq = state.seq.fetch_add(1, Ordering::Relaxed);
        let frame = bench::event_frame(seq, bench::unix_now_ns(), params.size);
        // An error only means nobody is subscribed: publishing to no one is not a failure.
        let _ = state.tx.send(frame);
    }
    Json(serde_json::json!({ "published": params.count, "recipients": recipients })).into_response()
}

async fn stats_handler(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "connections": state.tx.receiver_count() }))
}
