//! [`serve`]: `axum::serve` with the bounds of §2.14 before the upgrade.
//!
//! `axum::serve` sets no timer on its HTTP connections, so a client that opens a TCP
//! connection and sends nothing, or drips a request head one header line every few seconds,
//! holds a socket (and its buffers) forever; a few thousand exhaust a server's file
//! descriptors. [`serve`] is the same accept loop (over any axum `Listener`) and hyper's
//! HTTP/1.1 connections, with:
//!
//! - **`handshake_timeout`** (default 10 s): a connection that has not sent a complete
//!   request head within it — counted from the first byte awaited, however slowly the head
//!   drips — is closed; so is a kept-alive connection idle for that long (the wait for the
//!   next head is the same timer). hyper answers neither: the socket is just closed.
//! - **`max_head_bytes`** (default 16 KiB): the longest request head; a longer one gets
//!   HTTP 431. With it, a pending connection costs its socket plus a read buffer of at most
//!   this size (hyper starts at 8 KiB): see ARCHITECTURE.md for the measured figures.
//! - **credential headers marked sensitive** before the app sees the request:
//!   `Authorization` and `Sec-WebSocket-Protocol` values print as `Sensitive` in any `Debug`
//!   output (a tracing layer that logs headers, axum's extractors).
//! - graceful shutdown as `axum::serve`'s: stop accepting, let in-flight requests finish,
//!   close idle connections. Upgraded WebSockets are the [`ShutdownHandle`]'s
//!   (`crate::ShutdownHandle`): give [`Serve::with_graceful_shutdown`] its `on_signal` future,
//!   which closes them with 1001 first.
//!
//! The hooks' bounds (`hook_timeout`, `max_pending_handshakes`) are the router's: see
//! [`MisarWsBuilder`](crate::MisarWsBuilder).

use std::any::Any;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tower_service::Service;

/// The default `handshake_timeout` (§2.14).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default longest request head.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// hyper's smallest read buffer: heads up to this long are always accepted.
const MIN_HEAD_BYTES: usize = 8 * 1024;

/// Serves `app` on `listener` with the bounds of §2.14 on.
///
/// `listener` is any [`axum::serve::Listener`], as for `axum::serve`: a `TcpListener`
/// (whose connections get `TCP_NODELAY`), a `UnixListener`, a TLS acceptor of your own. Each
/// request gets the peer's address as [`ConnectInfo<L::Addr>`](ConnectInfo).
///
/// ```no_run
/// # async fn run(misar: misar_proto_axum::MisarWs) -> std::io::Result<()> {
/// let shutdown = misar.shutdown_handle();
/// let app = axum::Router::new().merge(misar.router());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// misar_proto_axum::serve(listener, app)
///     .with_graceful_shutdown(shutdown.on_signal(async {
///         let _ = tokio::signal::ctrl_c().await;
///     }))
///     .await
/// # }
/// ```
pub fn serve<L>(listener: L, app: Router) -> Serve<L>
where
    L: Listener,
    L::Addr: Clone + Send + Sync + 'static,
{
    Serve {
        listener,
        app,
        handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
        signal: None,
    }
}

/// The server [`serve`] returns: set the bounds, then `.await` it.
#[must_use = "a server does nothing until awaited"]
pub struct Serve<L> {
    listener: L,
    app: Router,
    handshake_timeout: Duration,
    max_head_bytes: usize,
    signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<L> std::fmt::Debug for Serve<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_head_bytes", &self.max_head_bytes)
            .field("graceful_shutdown", &self.signal.is_some())
            .finish_non_exhaustive()
    }
}

impl<L> Serve<L>
where
    L: Listener,
    L::Addr: Clone + Send + Sync + 'static,
{
    /// How long a connection may take to send a complete request head, and how long a
    /// kept-alive connection may stay idle (default 10 s). At least 1 ms.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The longest request head, in bytes (default 16 KiB, at least 8 KiB): longer ones get
    /// HTTP 431.
    pub fn max_head_bytes(mut self, bytes: usize) -> Self {
        self.max_head_bytes = bytes.max(MIN_HEAD_BYTES);
        self
    }

    /// Stops when `signal` resolves: no more connections are accepted, requests in flight
    /// finish, idle connections close; the future returned by `.await` resolves once every
    /// HTTP connection is gone. Give it
    /// [`ShutdownHandle::on_signal`](crate::ShutdownHandle::on_signal) so the WebSockets are
    /// closed with 1001 first.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.signal = Some(Box::pin(signal));
        self
    }

    async fn run(self) -> io::Result<()> {
        let Serve {
            mut listener,
            app,
            handshake_timeout,
            max_head_bytes,
            signal,
        } = self;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(handshake_timeout)
            .max_buf_size(max_head_bytes);
        let mut signal = signal.unwrap_or_else(|| Box::pin(std::future::pending()));
        let (stop, stopped) = watch::channel(false);
        // Every connection task holds a sender: `recv` returns `None` once all are gone.
        let (alive, mut all_gone) = mpsc::channel::<Infallible>(1);
        loop {
            // The listener retries failed accepts itself (axum's `Listener` contract).
            let (mut socket, remote) = tokio::select! {
                () = &mut signal => break,
                accepted = listener.accept() => accepted,
            };
            // Small frames of pushed events should leave at once.
            if let Some(tcp) = (&mut socket as &mut dyn Any).downcast_mut::<TcpStream>() {
                let _ = tcp.set_nodelay(true);
            }
            let connection = builder.clone();
            let app = app.clone();
            let mut stopped = stopped.clone();
            let alive = alive.clone();
            tokio::spawn(async move {
                let _alive = alive;
                let service = hyper::service::service_fn(move |request| {
                    let mut app = app.clone();
                    let remote = remote.clone();
                    async move { app.call(prepare(request, remote)).await }
                });
                let served = connection
                    .serve_connection(TokioIo::new(socket), service)
                    .with_upgrades();
                tokio::pin!(served);
                let result = tokio::select! {
                    result = served.as_mut() => result,
                    () = async {
                        // The guard `wait_for` returns must not live across an await.
                        let _ = stopped.wait_for(|stop| *stop).await.map(|_| ());
                    } => {
                        served.as_mut().graceful_shutdown();
                        served.await
                    }
                };
                if let Err(error) = result {
                    // Timeouts and resets: the client's doing, not worth more than debug.
                    tracing::debug!(%error, "HTTP connection ended");
                }
            });
        }
        drop(listener);
        stop.send_replace(true);
        drop(alive);
        let _ = all_gone.recv().await;
        Ok(())
    }
}

impl<L> IntoFuture for Serve<L>
where
    L: Listener,
    L::Addr: Clone + Send + Sync + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// The request as the app sees it: credential headers marked sensitive, the peer's address
/// as [`ConnectInfo`], the body as axum's.
fn prepare<A>(request: http::Request<Incoming>, remote: A) -> http::Request<Body>
where
    A: Clone + Send + Sync + 'static,
{
    let mut request = request.map(Body::new);
    mark_credentials_sensitive(request.headers_mut());
    request.extensions_mut().insert(ConnectInfo(remote));
    request
}

/// Marks every `Authorization` and `Sec-WebSocket-Protocol` value sensitive: `Debug` then
/// prints `Sensitive` instead of the value (§2.10, §2.12).
pub(crate) fn mark_credentials_sensitive(headers: &mut http::HeaderMap) {
    for name in [AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL] {
        if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

/// Removes every `Sec-WebSocket-Protocol` value (to hide them from a copying extractor).
pub(crate) fn take_protocols(headers: &mut http::HeaderMap) -> Vec<http::HeaderValue> {
    match headers.entry(SEC_WEBSOCKET_PROTOCOL) {
        http::header::Entry::Occupied(entry) => entry.remove_entry_mult().1.collect(),
        http::header::Entry::Vacant(_) => Vec::new(),
    }
}

/// Puts back what [`take_protocols`] removed, in order.
pub(crate) fn restore_protocols(headers: &mut http::HeaderMap, values: Vec<http::HeaderValue>) {
    for value in values {
        headers.append(SEC_WEBSOCKET_PROTOCOL, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_print_as_sensitive() {
        let mut headers = http::HeaderMap::new();
        headers.append(AUTHORIZATION, "Bearer msk_secret_a".parse().unwrap());
        headers.append(AUTHORIZATION, "Bearer msk_secret_b".parse().unwrap());
        headers.append(
            SEC_WEBSOCKET_PROTOCOL,
            "misar.v1, misar.bearer.msk_secret_c".parse().unwrap(),
        );
        headers.append("x-other", "visible".parse().unwrap());
        mark_credentials_sensitive(&mut headers);
        let text = format!("{headers:?}");
        assert!(!text.contains("msk_secret"), "{text}");
        assert!(text.contains("visible"), "{text}");
        assert_eq!(text.matches("Sensitive").count(), 3, "{text}");
    }

    #[test]
    fn protocols_are_taken_and_restored_in_order() {
        let mut headers = http::HeaderMap::new();
        headers.append(SEC_WEBSOCKET_PROTOCOL, "misar.v1".parse().unwrap());
        headers.append(
            SEC_WEBSOCKET_PROTOCOL,
            "misar.bearer.msk_x".parse().unwrap(),
        );
        mark_credentials_sensitive(&mut headers);
        let taken = take_protocols(&mut headers);
        assert!(headers.get(SEC_WEBSOCKET_PROTOCOL).is_none());
        restore_protocols(&mut headers, taken);
        let values: Vec<_> = headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().collect();
        assert_eq!(values, ["misar.v1", "misar.bearer.msk_x"]);
        assert!(values.iter().all(|v| v.is_sensitive()));
        assert!(take_protocols(&mut http::HeaderMap::new()).is_empty());
    }
}
