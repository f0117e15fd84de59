//! Graceful shutdown that knows about upgraded connections.
//!
//! axum's `with_graceful_shutdown` waits for HTTP connections only: once a request is upgraded,
//! hyper hands the socket over and forgets it. [`ShutdownHandle`] counts every connection this
//! router upgrades, closes them with 1001 (through [`Hub::shutdown`]), waits for them up to a
//! grace period, and then drops whatever is left.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use misar_proto_tokio::hub::Hub;
use tokio::sync::watch;
use tokio::time::Instant;

/// Ends the upgraded connections of one router. Cheap to clone.
///
/// ```no_run
/// # async fn run(misar: misar_proto_axum::MisarWs, listener: tokio::net::TcpListener) -> std::io::Result<()> {
/// let shutdown = misar.shutdown_handle();
/// let app = axum::Router::new().merge(misar.router());
/// misar_proto_axum::serve(listener, app)
///     .with_graceful_shutdown(shutdown.on_signal(async {
///         let _ = tokio::signal::ctrl_c().await;
///     }))
///     .await
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    inner: Arc<Tracker>,
}

#[derive(Debug)]
struct Tracker {
    hub: Hub,
    grace: Duration,
    shutting_down: AtomicBool,
    /// Connections upgraded (or being upgraded) and not yet finished.
    active: watch::Sender<usize>,
    /// Turns `true` when the grace ran out: every connection task still running drops its
    /// socket.
    stop: watch::Sender<bool>,
}

/// What a shutdown observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Upgraded connections open when the shutdown began.
    pub connections: usize,
    /// Connections still open when the grace ran out (no close handshake in time); their
    /// sockets were dropped.
    pub dropped: usize,
}

/// Counts one connection while alive. Held by the connection's task.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    tracker: Arc<Tracker>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.tracker
            .active
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl ShutdownHandle {
    pub(crate) fn new(hub: Hub, grace: Duration) -> Self {
        let (active, _) = watch::channel(0);
        let (stop, _) = watch::channel(false);
        Self {
            inner: Arc::new(Tracker {
                hub,
                grace,
                shutting_down: AtomicBool::new(false),
                active,
                stop,
            }),
        }
    }

    /// Counts a connection until the guard is dropped.
    pub(crate) fn enter(&self) -> ConnectionGuard {
        self.inner.active.send_modify(|n| *n = n.saturating_add(1));
        ConnectionGuard {
            tracker: Arc::clone(&self.inner),
        }
    }

    /// Resolves when the grace ran out and connection tasks must drop their sockets.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.inner.stop.subscribe();
        async move {
            // An error means the handle is gone: nothing will ever stop us, so wait forever
            // (the task ends with its connection).
            if stop.wait_for(|stopped| *stopped).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Whether a shutdown has begun (new handshakes are then refused with 503).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Upgraded connections not yet finished (including upgrades in flight).
    pub fn active_connections(&self) -> usize {
        *self.inner.active.borrow()
    }

    /// The grace period: how long [`shutdown`](Self::shutdown) waits for close handshakes.
    pub fn grace(&self) -> Duration {
        self.inner.grace
    }

    /// Shuts down: refuses new handshakes (503 with `Retry-After`), sends close 1001 to every
    /// connection, waits for them up to the grace period, then drops what is left. Returns when
    /// no connection task of this router runs any more. Calling it again waits again.
    pub async fn shutdown(&self) -> ShutdownReport {
        let tracker = &self.inner;
        tracker.shutting_down.store(true, Ordering::Release);
        let connections = self.active_connections();
        let deadline = Instant::now() + tracker.grace;
        tracing::info!(
            connections,
            grace_ms = u64::try_from(tracker.grace.as_millis()).unwrap_or(u64::MAX),
            "shutting down: closing every connection with 1001"
        );
        // The hub closes its connections with 1001 and waits for them (bounded by the grace).
        let hub_report = tracker.hub.shutdown(tracker.grace).await;
        let mut idle = tracker.active.subscribe();
        // The borrow `wait_for` returns is dropped at once: it holds the channel's lock.
        let drained = tokio::time::timeout_at(deadline, idle.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|result| result.is_ok());
        let mut left = 0;
        if !drained {
            left = self.active_connections();
            tracing::warn!(
                left,
                "grace period over: dropping connections that did not close"
            );
            tracker.stop.send_replace(true);
            // Tasks drop their sockets on their next poll; this wait is short and bounded.
            let _ = tokio::time::timeout(Duration::from_secs(1), idle.wait_for(|n| *n == 0))
                .await
                .is_ok_and(|result| result.is_ok());
        }
        // The hub's aborted connections are still counted here until their tasks end, so the
        // larger of the two counts is the number of connections dropped.
        let dropped = hub_report.remaining.max(left);
        tracing::info!(
            connections,
            dropped,
            hub_connections = hub_report.connections,
            hub_aborted = hub_report.remaining,
            "shutdown complete"
        );
        ShutdownReport {
            connections,
            dropped,
        }
    }

    /// A future for [`serve(..)`](crate::serve())`.with_graceful_shutdown(..)` (or
    /// `axum::serve`'s): waits for `signal`, then runs [`shutdown`](Self::shutdown). The server
    /// stops accepting and drains HTTP requests once it resolves, i.e. after the WebSocket
    /// connections are gone.
    pub fn on_signal<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future + Send + 'static,
    {
        let handle = self.clone();
        async move {
            signal.await;
            handle.shutdown().await;
        }
    }
}
