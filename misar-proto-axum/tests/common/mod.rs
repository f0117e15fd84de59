//! Shared test fixtures: a server on a loopback port with table-driven hooks, raw HTTP, and
//! WebSocket helpers.
#![allow(dead_code)]

pub mod cdp;
pub mod demo;
pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use misar_proto::auth::{AccountId, ApiKey};
use misar_proto::route::CampaignId;
use misar_proto_axum::{
    Authorizer, AuthorizerError, MemoryAuthorizer, MisarWs, MisarWsBuilder, ShutdownHandle,
};
use misar_proto_tokio::hub::{Hub, HubConfig};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::Role;

#[allow(unused_imports)]
pub use self::http::{RawResponse, exchange, request, upgrade_request};

pub const ALICE_KEY: &str = "msk_test_alice_0123456789";
pub const BOB_KEY: &str = "msk_test_bob_9876543210";
pub const ALICE_CAMPAIGN: &str = "camp-alice";
pub const BOB_CAMPAIGN: &str = "camp-bob";

/// The hooks: in-memory tables, a switch to make them fail, and call counters.
#[derive(Debug)]
pub struct TestAuth {
    pub tables: MemoryAuthorizer,
    pub fail_keys: AtomicBool,
    pub fail_ownership: AtomicBool,
    pub key_checks: AtomicUsize,
    pub ownership_checks: AtomicUsize,
}

impl TestAuth {
    pub fn new() -> Self {
        Self {
            tables: MemoryAuthorizer::new()
                .with_key(ALICE_KEY, "alice")
                .with_key(BOB_KEY, "bob")
                .with_campaign(ALICE_CAMPAIGN, "alice")
                .with_campaign(BOB_CAMPAIGN, "bob"),
            fail_keys: AtomicBool::new(false),
            fail_ownership: AtomicBool::new(false),
            key_checks: AtomicUsize::new(0),
            ownership_checks: AtomicUsize::new(0),
        }
    }

    pub fn checks(&self) -> (usize, usize) {
        (
            self.key_checks.load(Ordering::SeqCst),
            self.ownership_checks.load(Ordering::SeqCst),
        )
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

/// A server on 127.0.0.1 with graceful shutdown wired like an embedder would.
pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    pub auth: Arc<TestAuth>,
    pub shutdown: ShutdownHandle,
    trigger: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Hub settings for tests: short grace so nothing waits long.
pub fn hub_config() -> HubConfig {
    HubConfig {
        shutdown_grace: Duration::from_secs(2),
        ..HubConfig::default()
    }
}

impl TestServer {
    /// Default settings except fast heartbeats.
    pub async fn start() -> Self {
        Self::start_with(hub_config(), |b| b).await
    }

    /// `configure` adjusts the builder; `mount` decides how the router joins the app.
    pub async fn start_with(
        config: HubConfig,
        configure: impl FnOnce(MisarWsBuilder<Arc<TestAuth>>) -> MisarWsBuilder<Arc<TestAuth>>,
    ) -> Self {
        Self::start_mounted(config, configure, |router| router).await
    }

    pub async fn start_mounted(
        config: HubConfig,
        configure: impl FnOnce(MisarWsBuilder<Arc<TestAuth>>) -> MisarWsBuilder<Arc<TestAuth>>,
        mount: impl FnOnce(axum::Router) -> axum::Router,
    ) -> Self {
        Self::start_on(Hub::new(config), configure, mount).await
    }

    /// On `hub` (built on a broker of the test's).
    pub async fn start_on(
        hub: Hub,
        configure: impl FnOnce(MisarWsBuilder<Arc<TestAuth>>) -> MisarWsBuilder<Arc<TestAuth>>,
        mount: impl FnOnce(axum::Router) -> axum::Router,
    ) -> Self {
        let auth = Arc::new(TestAuth::new());
        let misar: MisarWs = configure(MisarWs::builder(hub.clone(), Arc::clone(&auth))).build();
        let shutdown = misar.shutdown_handle();
        let app = mount(misar.router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, triggered) = tokio::sync::oneshot::channel::<()>();
        let signal = shutdown.on_signal(async move {
            let _ = triggered.await;
        });
        // Served as the README says an embedder should: with the §2.14 bounds.
        let task = tokio::spawn(async move {
            misar_proto_axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
        });
        TestServer {
            addr,
            hub,
            auth,
            shutdown,
            trigger: Some(trigger),
            task: Some(task),
        }
    }

    /// Fires the graceful-shutdown signal.
    pub fn trigger_shutdown(&mut self) {
        if let Some(trigger) = self.trigger.take() {
            let _ = trigger.send(());
        }
    }

    /// Sends a WebSocket handshake; the response and, for a 101, the client socket.
    pub async fn upgrade(
        &self,
        path: &str,
        headers: &[&str],
    ) -> (RawResponse, Option<WebSocketStream<TcpStream>>) {
        let (response, upgraded) =
            exchange(self.addr, upgrade_request(path, headers).as_bytes()).await;
        let socket = match upgraded {
            Some((stream, rest)) => {
                Some(WebSocketStream::from_partially_read(stream, rest, Role::Client, None).await)
            }
            None => None,
        };
        (response, socket)
    }

    /// A handshake that must succeed.
    pub async fn connect(&self, path: &str, headers: &[&str]) -> WebSocketStream<TcpStream> {
        let (response, socket) = self.upgrade(path, headers).await;
        assert_eq!(
            response.status,
            101,
            "{path}: {:?}",
            String::from_utf8_lossy(&response.body)
        );
        socket.unwrap()
    }

    /// A handshake that must be refused over HTTP, before any upgrade.
    pub async fn refused(&self, path: &str, headers: &[&str]) -> RawResponse {
        let (response, socket) = self.upgrade(path, headers).await;
        assert!(socket.is_none(), "{path}: upgraded");
        assert!(!response.saw_101(), "{path}: a 101 was sent");
        response
    }

    /// Waits until the hub counts `n` connections (a connection is counted at subscribe,
    /// i.e. before the 101 is sent, so this returns at once after `connect`).
    pub fn connections(&self) -> usize {
        self.hub.connection_count()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn bearer(key: &str) -> String {
    format!("Authorization: Bearer {key}")
}

/// What a client saw until the server closed: the text messages, then the close code
/// (`None`: the connection ended without a close frame).
pub async fn read_until_close(
    socket: &mut WebSocketStream<TcpStream>,
) -> (Vec<String>, Option<u16>) {
    let mut texts = Vec::new();
    let outcome = tokio::time::timeout(http::IO_TIMEOUT, async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(WsMessage::Text(text)) => texts.push(text.as_str().to_owned()),
                Ok(WsMessage::Close(frame)) => {
                    // Keep polling until the end: that sends tungstenite's echo of the close,
                    // completing the handshake as a real client does.
                    while let Some(Ok(_)) = socket.next().await {}
                    return frame.map(|f| u16::from(f.code));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("no close within the I/O timeout");
    (texts, outcome)
}

/// The next text message (pings are answered by tungstenite while reading).
pub async fn next_text(socket: &mut WebSocketStream<TcpStream>) -> String {
    tokio::time::timeout(http::IO_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Text(text))) => return text.as_str().to_owned(),
                Some(Ok(WsMessage::Close(frame))) => panic!("closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("socket error: {e}"),
                None => panic!("socket ended"),
            }
        }
    })
    .await
    .expect("no text message within the I/O timeout")
}
