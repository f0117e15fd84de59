//! Shared fixtures of the end-to-end suite: the axum router served by `misar_proto_axum::serve` on a
//! loopback port with table-driven hooks, the tokio `Client` configured to match, event
//! builders, and waits that fail the test instead of sleeping and hoping.
//!
//! `raw` holds the clients that misbehave (a hand-written frame peer and tokio-tungstenite),
//! `proxy` a loopback TCP proxy that can black-hole or sever its connections.
// Each test binary uses a different part of the fixtures.
#![allow(dead_code)]

pub mod proxy;
pub mod raw;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use misar_proto::auth::{AccountId, ApiKey};
use misar_proto::close::Disconnect;
use misar_proto::event::{
    CampaignEvent, Cancelled, Completed, EmailReceived, Event, Failed, InboxEvent, Progress,
    Timestamp,
};
use misar_proto::route::CampaignId;
use misar_proto::server::ServerConfig;
use misar_proto_axum::{
    Authorizer, AuthorizerError, MemoryAuthorizer, MisarWs, MisarWsBuilder, ShutdownHandle,
    ShutdownReport,
};
use misar_proto_tokio::client::{Client, ClientBuilder, SubscriptionError, Update, Updates};
use misar_proto_tokio::hub::{Hub, HubConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any single wait may take before the test fails. Generous: it only bounds a
/// hang, it is never what a test measures.
pub const LIMIT: Duration = Duration::from_secs(30);

pub const ALICE: &str = "alice";
pub const BOB: &str = "bob";
pub const ALICE_KEY: &str = "msk_e2e_alice_0123456789abcdef";
pub const BOB_KEY: &str = "msk_e2e_bob_fedcba9876543210";
pub const ALICE_CAMPAIGN: &str = "camp-alice";
pub const ALICE_CAMPAIGN_2: &str = "camp-alice-2";
pub const BOB_CAMPAIGN: &str = "camp-bob";

/// The heartbeat of most tests: short enough to see several pings in a test, long enough that a
/// polite client on a loaded 2-core machine never misses a pong deadline.
pub const PING: Duration = Duration::from_millis(100);
pub const PONG: Duration = Duration::from_secs(1);
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

pub fn key(key: &str) -> ApiKey {
    ApiKey::parse(key).expect("a syntactically valid test key")
}

pub fn acct(account: &str) -> AccountId {
    AccountId::from(account)
}

pub fn cid(campaign: &str) -> CampaignId {
    CampaignId::new(campaign).expect("a valid test campaign id")
}

// ----- hooks -----

/// The embedder's hooks: in-memory tables, switches that make them fail (database down), and
/// call counters (to prove a request was refused before the hook was asked).
#[derive(Debug)]
pub struct TestAuth {
    pub tables: MemoryAuthorizer,
    pub fail_keys: AtomicBool,
    pub fail_ownership: AtomicBool,
    pub key_checks: AtomicUsize,
    pub ownership_checks: AtomicUsize,
}

impl TestAuth {
    /// Alice and Bob, each with a key and campaigns.
    pub fn new() -> Self {
        Self::with_tables(
            MemoryAuthorizer::new()
                .with_key(ALICE_KEY, ALICE)
                .with_key(BOB_KEY, BOB)
                .with_campaign(ALICE_CAMPAIGN, ALICE)
                .with_campaign(ALICE_CAMPAIGN_2, ALICE)
                .with_campaign(BOB_CAMPAIGN, BOB),
        )
    }

    pub fn with_tables(tables: MemoryAuthorizer) -> Self {
        Self {
            tables,
            fail_keys: AtomicBool::new(false),
            fail_ownership: AtomicBool::new(false),
            key_checks: AtomicUsize::new(0),
            ownership_checks: AtomicUsize::new(0),
        }
    }

    pub fn key_checks(&self) -> usize {
        self.key_checks.load(Ordering::SeqCst)
    }

    pub fn ownership_checks(&self) -> usize {
        self.ownership_checks.load(Ordering::SeqCst)
    }

    /// Makes the key hook (and/or the ownership hook) fail, as with its database down.
    pub fn set_failing(&self, keys: bool, ownership: bool) {
        self.fail_keys.store(keys, Ordering::SeqCst);
        self.fail_ownership.store(ownership, Ordering::SeqCst);
    }
}

impl Default for TestAuth {
    fn default() -> Self {
        Self::new()
    }
}

impl Authorizer for TestAuth {
    async fn authenticate(&self, key: &ApiKey) -> Result<Option<AccountId>, AuthorizerError> {
        self.key_checks.fetch_add(1, Ordering::SeqCst);
        if self.fail_keys.load(Ordering::SeqCst) {
            return Err(AuthorizerError::new("key database unreachable"));
        }
        self.tables.authenticate(key).await
    }

    async fn owns_campaign(
        &self,
        account: &AccountId,
        campaign: &CampaignId,
    ) -> Result<bool, AuthorizerError> {
        self.ownership_checks.fetch_add(1, Ordering::SeqCst);
        if self.fail_ownership.load(Ordering::SeqCst) {
            return Err(AuthorizerError::new("campaign database unreachable"));
        }
        self.tables.owns_campaign(account, campaign).await
    }
}

// ----- server -----

/// The sessions' settings of most tests: the short heartbeat above, default queue bounds and
/// client-message limits.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        ping_interval: PING,
        pong_timeout: PONG,
        close_grace: CLOSE_GRACE,
        ..ServerConfig::default()
    }
}

/// What a test server is made of; `Default` is the common case.
pub struct ServerOptions {
    pub hub: HubConfig,
    pub server: ServerConfig,
    pub auth: Arc<TestAuth>,
    /// `127.0.0.1:0` unless a test restarts a server on the port of a previous one.
    pub addr: SocketAddr,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            hub: HubConfig {
                shutdown_grace: Duration::from_secs(2),
                ..HubConfig::default()
            },
            server: server_config(),
            auth: Arc::new(TestAuth::new()),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

pub type Builder = MisarWsBuilder<Arc<TestAuth>>;

/// The router served by `misar_proto_axum::serve` on a loopback port, with graceful shutdown wired the way
/// the adapter's docs tell embedders to.
pub struct Server {
    pub addr: SocketAddr,
    pub hub: Hub,
    pub auth: Arc<TestAuth>,
    pub shutdown: ShutdownHandle,
    pub config: ServerConfig,
    /// The prefix clients connect under.
    pub prefix: String,
    trigger: Option<oneshot::Sender<()>>,
    report: Option<oneshot::Receiver<ShutdownReport>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    /// Default options, no builder changes.
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default(), |b| b).await
    }

    /// `configure` adjusts the builder after the options were applied.
    pub async fn start_with(
        options: ServerOptions,
        configure: impl FnOnce(Builder) -> Builder,
    ) -> Self {
        let hub = Hub::new(options.hub);
        let builder = MisarWs::builder(hub.clone(), Arc::clone(&options.auth))
            .server_config(options.server.clone());
        let misar = configure(builder).build();
        let shutdown = misar.shutdown_handle();
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let (trigger, triggered) = oneshot::channel::<()>();
        let (report_tx, report) = oneshot::channel();
        let handle = shutdown.clone();
        // What `ShutdownHandle::on_signal` does, keeping the report for the test.
        let signal = async move {
            let _ = triggered.await;
            let _ = report_tx.send(handle.shutdown().await);
        };
        let app = misar.router();
        // Served as the README says: with the §2.14 bounds before the upgrade.
        let task = tokio::spawn(async move {
            misar_proto_axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
        });
        Server {
            addr,
            hub,
            auth: options.auth,
            shutdown,
            config: options.server,
            prefix: "/mail/ws".to_owned(),
            trigger: Some(trigger),
            report: Some(report),
            task: Some(task),
        }
    }

    /// The base URL for the client: `ws://127.0.0.1:<port>/mail/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, self.prefix)
    }

    /// A client for `key` whose heartbeat matches the server's, not opted in to §2.11 (the
    /// suite checks the §2.4 frames as sent to such clients; see
    /// [`resuming_client`](Self::resuming_client)).
    pub fn client(&self, api_key: &str) -> ClientBuilder {
        self.resuming_client(api_key).resume(false)
    }

    /// [`client`](Self::client) with the client's default: opted in to §2.11.
    pub fn resuming_client(&self, api_key: &str) -> ClientBuilder {
        Client::builder(self.url(), key(api_key))
            .heartbeat(self.config.ping_interval, self.config.pong_timeout)
            .close_grace(CLOSE_GRACE)
            .connect_timeout(Duration::from_secs(5))
    }

    /// Graceful shutdown: fires the signal, returns the shutdown's report once the server
    /// has returned (so its listener is closed).
    pub async fn stop(&mut self) -> ShutdownReport {
        if let Some(trigger) = self.trigger.take() {
            let _ = trigger.send(());
        }
        let report = match self.report.take() {
            Some(report) => within("the shutdown report", report)
                .await
                .expect("the shutdown ran"),
            None => ShutdownReport::default(),
        };
        if let Some(task) = self.task.take() {
            within("the server to return", task)
                .await
                .expect("the serve task did not panic")
                .expect("the server returned Ok");
        }
        report
    }

    /// Whether the server is still running.
    pub fn is_serving(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Waits until the hub counts `n` connections (the router counts a connection from its
    /// `subscribe`, before the 101 is sent).
    pub async fn wait_connections(&self, n: usize) -> Duration {
        let hub = self.hub.clone();
        wait_until(&format!("{n} connection(s) in the hub"), move || {
            hub.connection_count() == n
        })
        .await
    }

    /// Waits until the hub and the router's tracker both count no connection.
    pub async fn wait_idle(&self) -> Duration {
        let hub = self.hub.clone();
        let shutdown = self.shutdown.clone();
        wait_until("no connection left", move || {
            hub.connection_count() == 0 && shutdown.active_connections() == 0
        })
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ----- waiting -----

/// Awaits `future`, failing the test after [`LIMIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {what}"),
    }
}

/// Polls `condition` until it holds (failing the test after [`LIMIT`]); returns how long it
/// took. For state with no notification to wait on (counters).
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if condition() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < LIMIT,
            "timed out after {LIMIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Tasks alive in the current runtime.
pub fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Resident memory of this process, from `/proc/self/status` (`None` where there is none).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ----- client updates -----

/// The next update; fails the test on an error, the end of the stream, or a timeout.
pub async fn next_update(updates: &mut Updates) -> Update {
    match within("the next update", updates.next()).await {
        Some(Ok(update)) => update,
        Some(Err(error)) => panic!("the subscription failed: {error} ({error:?})"),
        None => panic!("the subscription ended"),
    }
}

pub async fn expect_connected(updates: &mut Updates) {
    match next_update(updates).await {
        Update::Connected => {}
        other => panic!("expected Connected, got {other:?}"),
    }
}

/// The next update, which must be an event.
pub async fn next_event(updates: &mut Updates) -> Event {
    match next_update(updates).await {
        Update::Event { event, .. } => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The next update, which must be `Reconnecting`: its cause, delay and attempt number.
pub async fn expect_reconnecting(updates: &mut Updates) -> (Disconnect, Duration, u32) {
    match next_update(updates).await {
        Update::Reconnecting {
            cause,
            after,
            attempt,
            ..
        } => (cause, after, attempt),
        other => panic!("expected Reconnecting, got {other:?}"),
    }
}

/// The next item, which must be the final error; the stream must then be over.
pub async fn expect_error(updates: &mut Updates) -> SubscriptionError {
    match within("the subscription's error", updates.next()).await {
        Some(Err(error)) => {
            let after = within("the end after the error", updates.next()).await;
            assert!(after.is_none(), "items after the final error: {after:?}");
            error
        }
        other => panic!("expected the subscription's error, got {other:?}"),
    }
}

/// A refusal in either style: an HTTP refusal ends the stream at once; a close after the
/// upgrade comes after `Connected`.
pub async fn expect_refused(updates: &mut Updates) -> SubscriptionError {
    match within("the refusal", updates.next()).await {
        Some(Ok(Update::Connected)) => expect_error(updates).await,
        Some(Err(error)) => {
            let after = within("the end after the error", updates.next()).await;
            assert!(after.is_none(), "items after the final error: {after:?}");
            error
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The stream must end normally (a campaign's terminal event, or `close`).
pub async fn expect_finished(updates: &mut Updates) {
    let next = within("the end of the subscription", updates.next()).await;
    assert!(next.is_none(), "expected the end, got {next:?}");
}

// ----- events -----

pub fn ts(text: &str) -> Timestamp {
    Timestamp::parse(text).expect("a valid RFC 3339 test timestamp")
}

/// An inbox event tagged with its stream and sequence number (in `subject`: `tag#seq`).
pub fn email(tag: &str, seq: u64) -> InboxEvent {
    InboxEvent::EmailReceived(EmailReceived::new(
        "sender@example.com",
        format!("{tag}#{seq}"),
        ts("2026-05-27T10:15:00Z"),
    ))
}

/// An inbox event of about `size` bytes once encoded.
pub fn big_email(tag: &str, seq: u64, size: usize) -> InboxEvent {
    let mut event = email(tag, seq);
    if let InboxEvent::EmailReceived(e) = &mut event {
        let pad = size.saturating_sub(120);
        e.to = Some("x".repeat(pad));
    }
    event
}

/// The `(tag, seq)` of an event built by [`email`].
pub fn email_tag(event: &Event) -> Option<(String, u64)> {
    match event {
        Event::Inbox(InboxEvent::EmailReceived(e)) => {
            let (tag, seq) = e.subject.rsplit_once('#')?;
            Some((tag.to_owned(), seq.parse().ok()?))
        }
        _ => None,
    }
}

pub fn progress(campaign: &str, sent: u64, total: u64) -> CampaignEvent {
    CampaignEvent::Progress(Progress::new(cid(campaign), sent, total, sent, 0, sent / 2))
}

pub fn completed(campaign: &str, sent: u64) -> CampaignEvent {
    CampaignEvent::Completed(
        Completed::new(cid(campaign), sent, sent, 0, sent / 2)
            .with_completed_at(ts("2026-05-27T11:00:00Z")),
    )
}

pub fn failed(campaign: &str) -> CampaignEvent {
    CampaignEvent::Failed(
        Failed::new(cid(campaign), "smtp relay refused the batch")
            .with_sent(12)
            .with_failed_at(ts("2026-05-27T11:00:00Z")),
    )
}

pub fn cancelled(campaign: &str) -> CampaignEvent {
    CampaignEvent::Cancelled(Cancelled::new(cid(campaign)))
}

/// The `sent` count of a `progress` event.
pub fn progress_sent(event: &Event) -> Option<u64> {
    match event {
        Event::Campaign(CampaignEvent::Progress(p)) => Some(p.sent),
        _ => None,
    }
}

/// Percentiles of a sample (sorted in place): min, p50, p90, max.
pub fn spread(sample: &mut [Duration]) -> [Duration; 4] {
    sample.sort();
    let at = |q: f64| {
        let last = sample.len().saturating_sub(1);
        let index = ((last as f64) * q).round() as usize;
        sample.get(index).copied().unwrap_or_default()
    };
    [at(0.0), at(0.5), at(0.9), at(1.0)]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
