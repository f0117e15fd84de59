//! The demo server: the MisarMail real-time endpoints with fixture accounts, a browser page,
//! endpoints to publish events by hand, and simulated activity.
//!
//! ```text
//! cargo run --release -p misar-proto-axum --example demo -- [--addr 127.0.0.1:8080]
//!     [--ping-interval-ms 30000] [--pong-timeout-ms 30000] [--reject-style http|close|auto]
//!     [--no-simulation] [--redis redis://127.0.0.1:6379 | --redis-cluster URL,URL,...]
//!     [--max-connections 10000] [--max-connections-per-account 100]
//!     [--handshake-timeout-ms 10000] [--hook-timeout-ms 5000] [--max-pending-handshakes 1024]
//! ```
//!
//! `--redis` (built with `--features redis`) fans events out through Redis instead of the
//! in-process hub, so several demo processes share them: publish on one, a client of another
//! receives it. (Campaigns the simulation creates are known to the process that made them
//! only; the fixture campaigns are known to all.)
//!
//! - `GET /`: the page (connects with `?token=`, lists inbox events, shows campaign progress).
//! - `GET /mail/ws/inbox`, `GET /mail/ws/campaigns/{id}`: the WebSocket channels.
//! - `POST /dev/publish/inbox/{account}`, `POST /dev/publish/campaigns/{id}`: publish a JSON
//!   event (202), or get 400 (bad event) / 404 (unknown account or campaign).
//! - `GET /metrics`: the libraries' metrics in the Prometheus text format (README's table);
//!   the page's "Server" panel reads it every second.
//! - `GET /dev/stats`: `{"hookCalls":N,"connections":N}` (authorizer calls so far, open
//!   WebSockets), for load tests; `POST /dev/hooks/release` lets the calls held by the hidden
//!   `--hold-hooks` flag go on.
//!
//! Fixtures: `alice` (key `msk_demo_alice`) owns campaign
//! `11111111-1111-4111-8111-111111111111`; `bob` (key `msk_demo_bob`) owns
//! `22222222-2222-4222-8222-222222222222`. SIGINT/SIGTERM: every socket gets close 1001, and
//! the process exits 0.

mod clock;
mod metrics;
mod publish;
mod redis;
mod simulation;

use std::collections::VecDeque;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::header::CACHE_CONTROL;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use clap::{Parser, ValueEnum};
use misar_proto::auth::{AccountId, ApiKey};
use misar_proto::handshake::RejectionStyle;
use misar_proto::route::CampaignId;
use misar_proto::server::ServerConfig;
use misar_proto_axum::{Authorizer, AuthorizerError, MemoryAuthorizer, MisarWs, ShutdownHandle};
use misar_proto_tokio::hub::{Hub, HubConfig};
use tokio::signal::unix::{SignalKind, signal};

/// The page, embedded: plain HTML and JavaScript, no build step.
const PAGE: &str = include_str!("index.html");

/// Alice's fixture campaign.
pub const ALICE_CAMPAIGN: &str = "11111111-1111-4111-8111-111111111111";
/// Bob's fixture campaign.
pub const BOB_CAMPAIGN: &str = "22222222-2222-4222-8222-222222222222";

/// Campaigns created while running (simulated or announced by hand) that keep an owner; older
/// ones are forgotten so memory stays bounded.
const MAX_RUNTIME_CAMPAIGNS: usize = 256;

/// The MisarMail real-time demo server.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "The MisarMail real-time demo server: open http://ADDR/ in a browser.",
    after_help = "Keys: msk_demo_alice (account alice, campaign 11111111-1111-4111-8111-111111111111), \
msk_demo_bob (account bob, campaign 22222222-2222-4222-8222-222222222222).\n\
Publish: POST /dev/publish/inbox/{account}, POST /dev/publish/campaigns/{id} with a JSON event."
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the line printed says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Milliseconds between two pings.
    #[arg(long, default_value_t = 30_000)]
    ping_interval_ms: u64,
    /// Milliseconds to wait for a pong before closing with 1001.
    #[arg(long, default_value_t = 30_000)]
    pong_timeout_ms: u64,
    /// Most events queued for one connection; one more closes it with 1013 (a slow consumer).
    #[arg(long, default_value_t = ServerConfig::default().max_queued_events)]
    max_queued_events: usize,
    /// How unauthenticated/unauthorized requests are refused: `http` (403 before the upgrade),
    /// `close` (upgrade, then close 4401/4403), `auto` (`close` for `?token=` clients).
    #[arg(long, value_enum, default_value_t = Style::Http)]
    reject_style: Style,
    /// No simulated activity: only what is published through `/dev/publish/...`.
    #[arg(long)]
    no_simulation: bool,
    /// Pace of the simulation in milliseconds: a campaign moves one step per tick, inbox
    /// events come every 8 ticks.
    #[arg(long, default_value_t = 500, hide = true)]
    tick_ms: u64,
    /// Milliseconds a shutdown waits for close handshakes before dropping connections.
    #[arg(long, default_value_t = 5_000)]
    shutdown_grace_ms: u64,
    /// Most WebSocket connections in total (more get 503 with Retry-After).
    #[arg(long, default_value_t = HubConfig::default().max_connections)]
    max_connections: usize,
    /// Most WebSocket connections of one account (more get 429): raise it to load-test one
    /// account with many clients.
    #[arg(long, default_value_t = HubConfig::default().max_connections_per_account)]
    max_connections_per_account: usize,
    /// Milliseconds a connection may take to send a complete request head, and may stay idle
    /// between requests; then it is closed.
    #[arg(long, default_value_t = 10_000)]
    handshake_timeout_ms: u64,
    /// Milliseconds one authorizer call may take; a slower one fails the handshake with 503.
    #[arg(long, default_value_t = 5_000)]
    hook_timeout_ms: u64,
    /// Most handshakes waiting on the authorizer at once; more get 503 with Retry-After.
    #[arg(long, default_value_t = misar_proto_axum::DEFAULT_MAX_PENDING_HANDSHAKES)]
    max_pending_handshakes: usize,
    /// Make every authorizer call take this long (a slow database, for load tests).
    #[arg(long, default_value_t = 0, hide = true)]
    hook_delay_ms: u64,
    /// Hold every authorizer call until `POST /dev/hooks/release` (for load tests).
    #[arg(long, hide = true)]
    hold_hooks: bool,
    /// Fan out through the Redis at this URL (e.g. redis://127.0.0.1:6379), so several demo
    /// processes share events. Needs the demo built with `--features redis`.
    #[arg(long, value_name = "URL", conflicts_with = "redis_cluster")]
    redis: Option<String>,
    /// Fan out through the Redis Cluster with these seed nodes (comma-separated, e.g.
    /// redis://127.0.0.1:7000,redis://127.0.0.1:7001): sharded pub/sub, Redis 7 or later.
    /// Needs the demo built with `--features redis`.
    #[arg(long, value_name = "URL,URL,...")]
    redis_cluster: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Style {
    Http,
    Close,
    Auto,
}

impl From<Style> for RejectionStyle {
    fn from(style: Style) -> Self {
        match style {
            Style::Http => RejectionStyle::Http,
            Style::Close => RejectionStyle::CloseAfterUpgrade,
            Style::Auto => RejectionStyle::Auto,
        }
    }
}

/// What the demo's own routes share.
pub struct Demo {
    hub: Hub,
    authorizer: Arc<MemoryAuthorizer>,
    runtime_campaigns: Mutex<VecDeque<CampaignId>>,
}

impl Demo {
    /// Gives `campaign` to `account`, forgetting the oldest campaign created at run time when
    /// there are too many.
    pub fn add_campaign(&self, campaign: CampaignId, account: AccountId) {
        self.authorizer.grant_campaign(campaign.clone(), account);
        let mut created = self
            .runtime_campaigns
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        created.push_back(campaign);
        while created.len() > MAX_RUNTIME_CAMPAIGNS {
            if let Some(old) = created.pop_front() {
                self.authorizer.remove_campaign(&old);
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    // Signal handlers first: a SIGTERM right after the "listening" line must already be ours.
    let (mut interrupt, mut terminate) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };

    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let hub_config = HubConfig {
        shutdown_grace: grace,
        max_connections: args.max_connections,
        max_connections_per_account: args.max_connections_per_account,
        ..HubConfig::default()
    };
    let redis = match (&args.redis, &args.redis_cluster) {
        (Some(url), _) => Some((url.as_str(), false)),
        (None, Some(urls)) => Some((urls.as_str(), true)),
        (None, None) => None,
    };
    let hub = match redis {
        None => Hub::new(hub_config),
        Some((url, cluster)) => match redis::redis_hub(url, cluster, hub_config).await {
            Ok(hub) => hub,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let authorizer = Arc::new(
        MemoryAuthorizer::new()
            .with_key("msk_demo_alice", "alice")
            .with_key("msk_demo_bob", "bob")
            .with_campaign(ALICE_CAMPAIGN, "alice")
            .with_campaign(BOB_CAMPAIGN, "bob"),
    );
    let demo = Arc::new(Demo {
        hub: hub.clone(),
        authorizer: Arc::clone(&authorizer),
        runtime_campaigns: Mutex::new(VecDeque::new()),
    });

    let hooks = Arc::new(DemoAuthorizer {
        tables: Arc::clone(&authorizer),
        delay: Duration::from_millis(args.hook_delay_ms),
        calls: AtomicU64::new(0),
        hold: args.hold_hooks,
        released: tokio::sync::watch::channel(0).0,
    });
    let misar = MisarWs::builder(hub, Arc::clone(&hooks))
        .rejection_style(args.reject_style.into())
        .hook_timeout(Duration::from_millis(args.hook_timeout_ms))
        .max_pending_handshakes(args.max_pending_handshakes)
        .server_config(ServerConfig {
            ping_interval: Duration::from_millis(args.ping_interval_ms),
            pong_timeout: Duration::from_millis(args.pong_timeout_ms),
            max_queued_events: args.max_queued_events,
            ..ServerConfig::default()
        })
        .shutdown_grace(grace)
        .build();
    let prometheus = match metrics::install() {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("cannot install the metrics recorder: {error}");
            return ExitCode::FAILURE;
        }
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/metrics", get(move || metrics::render(prometheus.clone())))
        .route("/dev/publish/inbox/{account}", post(publish::inbox))
        .route("/dev/publish/campaigns/{id}", post(publish::campaign))
        .with_state(Arc::clone(&demo))
        .route(
            "/dev/stats",
            get({
                let hooks = Arc::clone(&hooks);
                let shutdown = misar.shutdown_handle();
                move || stats(hooks, shutdown)
            }),
        )
        .route(
            "/dev/hooks/release",
            post({
                let hooks = Arc::clone(&hooks);
                move || async move {
                    hooks.released.send_modify(|n| *n += 1);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .merge(misar.router())
        .layer(middleware::from_fn(log_request));

    let listener = match tokio::net::TcpListener::bind(&args.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("cannot read the listening address: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on http://{addr}");
    let _ = stdout.flush();

    if !args.no_simulation {
        let tick = Duration::from_millis(args.tick_ms.max(1));
        tokio::spawn(simulation::run(Arc::clone(&demo), tick));
    }

    let signalled = async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    };
    let shutdown = misar.shutdown_handle();
    // `misar_proto_axum::serve`, not `axum::serve`: it closes connections that do not send a
    // request head within the handshake timeout (§2.14).
    match misar_proto_axum::serve(listener, app)
        .handshake_timeout(Duration::from_millis(args.handshake_timeout_ms))
        .with_graceful_shutdown(shutdown.on_signal(signalled))
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The fixture tables behind the hooks, with an optional delay and a call counter.
struct DemoAuthorizer {
    tables: Arc<MemoryAuthorizer>,
    delay: Duration,
    calls: AtomicU64,
    /// `--hold-hooks`: every call waits for the next `POST /dev/hooks/release`.
    hold: bool,
    released: tokio::sync::watch::Sender<u64>,
}

impl DemoAuthorizer {
    async fn enter(&self) {
        let mut released = self.released.subscribe();
        let entered_at = *released.borrow_and_update();
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.hold {
            let _ = released.wait_for(|n| *n > entered_at).await.map(|_| ());
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

impl Authorizer for DemoAuthorizer {
    async fn authenticate(&self, key: &ApiKey) -> Result<Option<AccountId>, AuthorizerError> {
        self.enter().await;
        self.tables.authenticate(key).await
    }

    async fn owns_campaign(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
    ) -> Result<bool, AuthorizerError> {
        self.enter().await;
        self.tables.owns_campaign(account, campaign).await
    }
}

async fn stats(hooks: Arc<DemoAuthorizer>, shutdown: ShutdownHandle) -> Response {
    let body = format!(
        r#"{{"hookCalls":{},"connections":{}}}"#,
        hooks.calls.load(Ordering::Relaxed),
        shutdown.active_connections()
    );
    (
        [
            (CACHE_CONTROL, "no-store"),
            (axum::http::header::CONTENT_TYPE, "application/json"),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    ([(CACHE_CONTROL, "no-store")], Html(PAGE)).into_response()
}

/// One log line per request: method, path and status. Never the query: it may hold a key.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    response
}
