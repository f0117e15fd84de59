//! Shared helpers of the server and hub tests (included with `#[path]`; as a test target of
//! its own it is empty).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use misar_proto::auth::AccountId;
use misar_proto::event::{
    CampaignEvent, Completed, EmailReceived, InboxEvent, Progress, Timestamp,
};
use misar_proto::handshake::{self, Accepted, HandshakeConfig, Step};
use misar_proto::message::{Incoming, Message};
use misar_proto::route::CampaignId;
use misar_proto::server::ServerConfig;
use misar_proto_tokio::hub::{Feed, Hub, SubscribeError};
use misar_proto_tokio::server::{
    ConnectionEnd, DriverConfig, TungsteniteTransport, recommended_websocket_config,
    serve_connection,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

// ----- requests and events -----

/// The head of a request for `path` authenticated with `key`.
pub fn head(path: &str, key: &str) -> http::request::Parts {
    http::Request::get(path)
        .header("authorization", format!("Bearer {key}"))
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// Runs the real handshake: key `msk_<account>` belongs to `<account>`; every campaign is
/// owned except those starting with `foreign`.
pub fn decide(parts: &http::request::Parts) -> Option<Accepted> {
    let step = match handshake::start(&HandshakeConfig::default(), parts) {
        Step::NeedsAuthentication(question) => {
            let account = question.key().expose().strip_prefix("msk_")?.to_owned();
            question.authenticated(AccountId::new(account))
        }
        other => other,
    };
    match step {
        Step::Accepted(accepted) => Some(accepted),
        Step::NeedsOwnership(question) => {
            if question.campaign().as_str().starts_with("foreign") {
                None
            } else {
                Some(question.grant())
            }
        }
        _ => None,
    }
}

/// An accepted inbox request for `account`.
pub fn inbox(account: &str) -> Accepted {
    decide(&head("/mail/ws/inbox", &format!("msk_{account}"))).unwrap()
}

/// An accepted campaign request.
pub fn campaign_request(account: &str, campaign: &str) -> Accepted {
    decide(&head(
        &format!("/mail/ws/campaigns/{campaign}"),
        &format!("msk_{account}"),
    ))
    .unwrap()
}

/// A campaign id (must be valid).
pub fn campaign(id: &str) -> CampaignId {
    CampaignId::new(id).unwrap()
}

/// An account id.
pub fn account(id: &str) -> AccountId {
    AccountId::new(id)
}

/// An inbox event whose subject is `s<i>` padded to about `pad` bytes.
pub fn email(i: usize, pad: usize) -> InboxEvent {
    let mut subject = format!("s{i}");
    if subject.len() < pad {
        subject.push_str(&"x".repeat(pad - subject.len()));
    }
    InboxEvent::EmailReceived(EmailReceived::new(
        "ada@example.com",
        subject,
        Timestamp::parse("2026-05-27T10:15:00Z").unwrap(),
    ))
}

/// A `progress` of `campaign` with `sent` sent.
pub fn progress(campaign: &str, sent: u64) -> CampaignEvent {
    CampaignEvent::Progress(Progress::new(
        self::campaign(campaign),
        sent,
        1000,
        sent,
        0,
        0,
    ))
}

/// The `completed` of `campaign`.
pub fn completed(campaign: &str) -> CampaignEvent {
    CampaignEvent::Completed(Completed::new(self::campaign(campaign), 1000, 990, 10, 300))
}

/// The text an inbox event is sent as.
pub fn inbox_text(event: &InboxEvent) -> String {
    String::from_utf8(event.encode().bytes().to_vec()).unwrap()
}

/// The text a campaign event is sent as.
pub fn campaign_text(event: &CampaignEvent) -> String {
    String::from_utf8(event.encode().bytes().to_vec()).unwrap()
}

/// The tokio clock as the core takes it.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

// ----- a real server on loopback -----

/// A tokio-tungstenite server on 127.0.0.1 that runs the handshake, subscribes to the hub
/// before completing the upgrade, and serves each connection with `serve_connection`.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    ends: mpsc::UnboundedReceiver<ConnectionEnd>,
}

impl TestServer {
    /// Listens on an ephemeral port and serves every connection in its own task.
    pub async fn start(hub: Hub, config: ServerConfig, driver: DriverConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ends_tx, ends) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (hub, config, driver, ends_tx) =
                    (hub.clone(), config.clone(), driver.clone(), ends_tx.clone());
                tokio::spawn(async move {
                    if let Some(end) = serve_one(hub, tcp, config, driver).await {
                        let _ = ends_tx.send(end);
                    }
                });
            }
        });
        TestServer { addr, ends }
    }

    /// A server with the library's default session and driver settings.
    pub async fn with_defaults(hub: Hub) -> TestServer {
        Self::start(hub, ServerConfig::default(), DriverConfig::default()).await
    }

    /// The next connection to end, as `serve_connection` reported it.
    pub async fn next_end(&mut self) -> ConnectionEnd {
        self.ends.recv().await.unwrap()
    }
}

async fn serve_one(
    hub: Hub,
    tcp: TcpStream,
    config: ServerConfig,
    driver: DriverConfig,
) -> Option<ConnectionEnd> {
    let mut admitted: Option<Feed> = None;
    let mark = hub.mark();
    // The signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let mut builder = http::Request::builder()
            .method(request.method().clone())
            .uri(request.uri().clone());
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        let parts = builder.body(()).unwrap().into_parts().0;
        let Some(accepted) = decide(&parts) else {
            return Err(refuse(403));
        };
        match hub.subscribe(accepted, mark, &config) {
            Ok(feed) => {
                admitted = Some(feed);
                Ok(response)
            }
            Err(SubscribeError::TooManyForAccount { .. }) => Err(refuse(429)),
            Err(_) => Err(refuse(503)),
        }
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        tcp,
        callback,
        Some(recommended_websocket_config()),
    )
    .await;
    let feed = admitted?;
    let ws = ws.ok()?;
    Some(serve_connection(TungsteniteTransport::new(ws), feed, driver).await)
}

fn refuse(status: u16) -> ErrorResponse {
    let mut response = http::Response::new(None);
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
    response
}

/// A tokio-tungstenite client.
pub type Client = WebSocketStream<TcpStream>;

/// Connects to `path` with key `msk_<account>`.
pub async fn connect(addr: SocketAddr, path: &str, account: &str) -> Client {
    connect_with(addr, path, account, None).await.unwrap()
}

/// Connects with an optional small receive buffer (a peer whose kernel buffer fills fast).
pub async fn connect_with(
    addr: SocketAddr,
    path: &str,
    account: &str,
    recv_buffer: Option<u32>,
) -> Result<Client, tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let tcp = socket.connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer msk_{account}").parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
    Ok(ws)
}

/// What a client read, up to the end of the connection.
#[derive(Debug, Default)]
pub struct Transcript {
    /// The text messages, in order.
    pub texts: Vec<String>,
    /// How many pings came.
    pub pings: usize,
    /// The close code received, if a close frame came.
    pub close: Option<u16>,
}

/// Reads (answering pings, as tungstenite does while reading) until the connection ends.
pub async fn read_to_end(client: &mut Client) -> Transcript {
    let mut transcript = Transcript::default();
    while let Some(message) = client.next().await {
        match message {
            Ok(WsMessage::Text(text)) => transcript.texts.push(text.as_str().to_owned()),
            Ok(WsMessage::Ping(_)) => transcript.pings += 1,
            Ok(WsMessage::Close(frame)) => {
                transcript.close = frame.map(|f| u16::from(f.code));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    transcript
}

/// The next text message (pings are answered and skipped).
pub async fn next_text(client: &mut Client) -> String {
    loop {
        match client.next().await {
            Some(Ok(WsMessage::Text(text))) => return text.as_str().to_owned(),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Closes politely (1000) and waits for the server's answer.
pub async fn close(client: &mut Client) {
    client.close(None).await.unwrap();
    while let Some(Ok(_)) = client.next().await {}
}

// ----- an in-memory transport -----

/// The error of the in-memory transport.
#[derive(Debug, thiserror::Error)]
#[error("in-memory transport failed")]
pub struct MemError(Option<misar_proto::message::Violation>);

impl misar_proto_tokio::server::TransportError for MemError {
    fn violation(&self) -> Option<misar_proto::message::Violation> {
        self.0
    }
}

#[derive(Default)]
struct MemState {
    /// Writes wait while this is set (a peer that stopped reading).
    blocked: bool,
    /// Writes fail while this is set.
    failing: bool,
    waker: Option<Waker>,
    /// A write is waiting for `blocked` to clear.
    writer_waiting: bool,
    sent: VecDeque<Message>,
    flushes: usize,
    /// Each flush takes this long (a slow link).
    flush_delay: Option<std::time::Duration>,
}

#[derive(Default)]
struct MemShared {
    state: Mutex<MemState>,
    sent: Notify,
}

/// The server's end: a `Stream` of what the peer sends, a `Sink` the peer reads.
pub struct MemTransport {
    incoming: mpsc::UnboundedReceiver<Result<Incoming, MemError>>,
    shared: Arc<MemShared>,
    /// The flush in progress on a slow link.
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The test's end.
pub struct MemPeer {
    outgoing: Option<mpsc::UnboundedSender<Result<Incoming, MemError>>>,
    shared: Arc<MemShared>,
}

/// A connected in-memory transport and its peer.
pub fn mem_pair() -> (MemTransport, MemPeer) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(MemShared::default());
    (
        MemTransport {
            incoming: rx,
            shared: Arc::clone(&shared),
            delay: None,
        },
        MemPeer {
            outgoing: Some(tx),
            shared,
        },
    )
}

impl MemPeer {
    /// Sends a message to the server.
    pub fn send(&self, message: Incoming) {
        if let Some(tx) = &self.outgoing {
            let _ = tx.send(Ok(message));
        }
    }

    /// Makes the server's next read fail as a transport reports a peer's broken rule.
    pub fn send_violation(&self, violation: misar_proto::message::Violation) {
        if let Some(tx) = &self.outgoing {
            let _ = tx.send(Err(MemError(Some(violation))));
        }
    }

    /// Ends the server's stream (EOF).
    pub fn hang_up(&mut self) {
        self.outgoing = None;
    }

    /// Stops (or resumes) accepting the server's writes.
    pub fn set_blocked(&self, blocked: bool) {
        let mut state = self.shared.state.lock().unwrap();
        state.blocked = blocked;
        if !blocked {
            if let Some(waker) = state.waker.take() {
                waker.wake();
            }
        }
    }

    /// Makes every flush take `delay` (tokio's clock).
    pub fn set_flush_delay(&self, delay: std::time::Duration) {
        self.shared.state.lock().unwrap().flush_delay = Some(delay);
    }

    /// Makes the server's writes fail.
    pub fn set_failing(&self, failing: bool) {
        self.shared.state.lock().unwrap().failing = failing;
    }

    /// The next message the server sent.
    pub async fn recv(&self) -> Message {
        loop {
            let notified = self.shared.sent.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(message) = self.try_recv() {
                return message;
            }
            notified.await;
        }
    }

    /// The next message the server sent, if any.
    pub fn try_recv(&self) -> Option<Message> {
        self.shared.state.lock().unwrap().sent.pop_front()
    }

    /// Lets other tasks run until the server's writer is stuck on the blocked transport.
    pub async fn until_writer_waits(&self) {
        for _ in 0..10_000 {
            if self.shared.state.lock().unwrap().writer_waiting {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the writer never blocked");
    }

    /// Everything sent so far.
    pub fn drain(&self) -> Vec<Message> {
        self.shared.state.lock().unwrap().sent.drain(..).collect()
    }

    /// How many flushes completed.
    pub fn flushes(&self) -> usize {
        self.shared.state.lock().unwrap().flushes
    }
}

impl Stream for MemTransport {
    type Item = Result<Incoming, MemError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx)
    }
}

impl MemTransport {
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        let mut state = self.shared.state.lock().unwrap();
        if state.failing {
            return Poll::Ready(Err(MemError(None)));
        }
        if state.blocked {
            state.waker = Some(cx.waker().clone());
            state.writer_waiting = true;
            return Poll::Pending;
        }
        state.writer_waiting = false;
        Poll::Ready(Ok(()))
    }
}

impl Sink<Message> for MemTransport {
    type Error = MemError;
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        self.poll_writable(cx)
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), MemError> {
        self.shared.state.lock().unwrap().sent.push_back(item);
        self.shared.sent.notify_one();
        Ok(())
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        let delay = self.shared.state.lock().unwrap().flush_delay;
        if let Some(delay) = delay {
            let sleep = self
                .delay
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.delay = None;
        }
        let ready = self.poll_writable(cx);
        if let Poll::Ready(Ok(())) = ready {
            self.shared.state.lock().unwrap().flushes += 1;
        }
        ready
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), MemError>> {
        Poll::Ready(Ok(()))
    }
}

/// Serves `accepted` over an in-memory transport in a task; returns the peer and the task.
pub fn serve_mem(
    hub: &Hub,
    accepted: Accepted,
    config: ServerConfig,
    driver: DriverConfig,
) -> (MemPeer, tokio::task::JoinHandle<ConnectionEnd>) {
    let feed = hub.subscribe(accepted, hub.mark(), &config).unwrap();
    let (transport, peer) = mem_pair();
    let task = tokio::spawn(serve_connection(transport, feed, driver));
    (peer, task)
}

/// The text of a sent message (panics on anything else).
pub fn text(message: &Message) -> &Bytes {
    match message {
        Message::Text(bytes) => bytes,
        other => panic!("expected text, got {other:?}"),
    }
}

/// The close code of a sent message (panics on anything else).
pub fn close_code(message: &Message) -> u16 {
    match message {
        Message::Close(Some(frame)) => frame.code.as_u16(),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Whether `sub` is a subsequence of `all`.
pub fn is_subsequence<T: PartialEq>(sub: &[T], all: &[T]) -> bool {
    let mut all = all.iter();
    sub.iter()
        .all(|item| all.any(|candidate| candidate == item))
}

/// Sends `messages` on a client (unused helper kept for symmetry with `read_to_end`).
pub async fn send_all(client: &mut Client, messages: Vec<WsMessage>) {
    for message in messages {
        client.send(message).await.unwrap();
    }
}

/// Fails the test instead of hanging it (real time: 30 s).
pub async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(30), future)
        .await
        .expect("the test took too long")
}

/// Like [`within`], for tests on tokio's paused clock (the bound is virtual time).
pub async fn within_virtual<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(3600), future)
        .await
        .expect("the test ran for an hour of virtual time")
}

/// Serves `hub` with the default driver to one client (account `a1`) with a small receive
/// buffer that never reads, and publishes 512 events of 32 KiB to it: the server's writes
/// stall once the kernel's buffers are full. Returns how that connection ended and how long
/// it took (on a paused clock, virtual time).
pub async fn stall_writes(hub: &Hub) -> (ConnectionEnd, std::time::Duration) {
    let mut server = TestServer::start(hub.clone(), roomy(4096), DriverConfig::default()).await;
    let _client = connect_with(server.addr, "/mail/ws/inbox", "a1", Some(8 << 10))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    for i in 0..512 {
        hub.publish_inbox(&account("a1"), &email(i, 32 << 10))
            .await
            .unwrap();
        tokio::task::yield_now().await;
    }
    (server.next_end().await, start.elapsed())
}

/// A server config with room for `events` queued events.
pub fn roomy(events: usize) -> ServerConfig {
    ServerConfig {
        max_queued_events: events,
        max_queued_bytes: 256 << 20,
        ..ServerConfig::default()
    }
}

/// Subscribes with a fresh mark and the default session settings.
pub fn sub(hub: &Hub, accepted: Accepted) -> Result<Feed, SubscribeError> {
    hub.subscribe(accepted, hub.mark(), &ServerConfig::default())
}
