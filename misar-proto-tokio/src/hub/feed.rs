//! [`Feed`]: one connection's end of the hub, and the state the hub shares with its driver.
//!
//! The connection's [`ServerSession`] is created by [`Hub::subscribe`](super::Hub::subscribe)
//! and lives here, behind a short-held mutex, from the first event on: a publish calls
//! [`ServerSession::enqueue`] directly, so the session's outbound queue is *the* one queue of
//! §2.7 (bounds, `progress` coalescing, 1013 on overflow) whether the upgrade is still under
//! way or the driver is busy writing, and a revocation or shutdown is a session command that
//! gets through even when that queue is full. The driver is woken through a [`Notify`].
//!
//! Lock order: a stream's lock or the registry's, then a session's. A session's lock is never
//! held while another lock is taken, and no lock is held across an `.await`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use misar_proto::auth::AccountId;
use misar_proto::close::CloseCode;
use misar_proto::event::EncodedEvent;
use misar_proto::server::{EnqueueError, ServerSession};
use misar_proto::streams::{ConnectionId, StreamKey};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::HubInner;

/// Locks a mutex, ignoring poisoning: no critical section here can leave its data invalid
/// half-way (the core's methods never panic, and the rest are plain field updates).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What became of one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Queued.
    Queued,
    /// The queue overflowed: the connection now closes with 1013.
    Overflowed,
    /// Not queued: the connection is closing, or its channel already ended.
    Refused,
}

/// What the hub and the connection's driver share: the session and the wake-up.
#[derive(Debug)]
pub(crate) struct Conn {
    session: Mutex<ServerSession>,
    /// The hub gave up on the connection (shutdown grace over): the driver drops it.
    aborted: AtomicBool,
    notify: Notify,
    /// When the oldest event not yet taken by the driver was queued (for
    /// `misar_publish_to_flush_seconds`); set and taken under the session's lock.
    #[cfg(feature = "metrics")]
    queued_since: std::sync::Mutex<Option<Instant>>,
}

impl Conn {
    pub(super) fn new(session: ServerSession) -> Arc<Self> {
        Arc::new(Self {
            session: Mutex::new(session),
            aborted: AtomicBool::new(false),
            notify: Notify::new(),
            #[cfg(feature = "metrics")]
            queued_since: std::sync::Mutex::new(None),
        })
    }

    /// Queues `event` and wakes the driver.
    pub(super) fn deliver(&self, event: &EncodedEvent, now: Instant) -> Outcome {
        let mut session = lock(&self.session);
        let outcome = match session.enqueue(event.clone(), now) {
            Ok(()) => Outcome::Queued,
            Err(EnqueueError::Overflow { .. }) => Outcome::Overflowed,
            Err(_) => return Outcome::Refused,
        };
        // The first event of a batch starts its clock (later ones find it running): one more
        // lock per batch, not per event.
        #[cfg(feature = "metrics")]
        if outcome == Outcome::Queued && session.queued_events() == 1 {
            self.mark_queued(now);
        }
        drop(session);
        self.notify.notify_one();
        outcome
    }

    /// Remembers `now` as the instant the oldest untaken event was queued, unless one is
    /// remembered already. Call under the session's lock.
    #[cfg(feature = "metrics")]
    fn mark_queued(&self, now: Instant) {
        let mut since = lock(&self.queued_since);
        if since.is_none() {
            *since = Some(now);
        }
    }

    /// Takes the instant the oldest event of the batch just drained was queued; when events
    /// are left in the session, they count from the drain (they were queued before it: the
    /// latency is then slightly underestimated, never overestimated). Call under the
    /// session's lock, right after draining.
    #[cfg(feature = "metrics")]
    pub(crate) fn take_queued_since(&self, left: usize) -> Option<Instant> {
        let mut since = lock(&self.queued_since);
        let taken = since.take();
        if left > 0 && taken.is_some() {
            // Read the clock only for leftovers (rare: the batch was full).
            *since = Some(crate::hub::now());
        }
        taken
    }

    /// Closes with 1001 (graceful shutdown) and wakes the driver.
    pub(super) fn shut_down(&self, now: Instant) {
        lock(&self.session).shutdown(now);
        self.notify.notify_one();
    }

    /// Closes with 4401 or 4403 and wakes the driver.
    pub(super) fn revoke(&self, code: CloseCode, now: Instant) {
        // Only ever called with 4401/4403, which `revoke` accepts.
        let _ = lock(&self.session).revoke(code, now);
        self.notify.notify_one();
    }

    /// Starts an opted-in session (§2.11) and wakes the driver.
    pub(super) fn start_resume(
        &self,
        frame: &misar_proto::resume::ResumeFrame,
        replay: Vec<EncodedEvent>,
        first: Option<EncodedEvent>,
        now: Instant,
    ) {
        let _ = lock(&self.session).start_resume(frame, replay, first, now);
        self.notify.notify_one();
    }

    /// The recovery could not be decided: close with 1011 (the client reconnects later).
    pub(super) fn fail_resume(&self, now: Instant) {
        lock(&self.session).close(
            misar_proto::close::CloseFrame::new(CloseCode::InternalError),
            now,
        );
        self.notify.notify_one();
    }

    /// Tells the driver to drop the connection now.
    pub(super) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether the connection opted in and got its `resume` frame (it holds a position).
    pub(super) fn resume_started(&self) -> bool {
        lock(&self.session).resume_started()
    }

    pub(super) fn session(&self) -> &Mutex<ServerSession> {
        &self.session
    }
}

/// One connection's end of the hub, from [`Hub::subscribe`](super::Hub::subscribe): the
/// connection's session (events are queued into it from the moment of the subscribe) and its
/// wake-ups.
///
/// Hand it to [`serve_connection`](crate::server::serve_connection) after the upgrade, or
/// drive it yourself (see `tests/examples/custom_transport.rs`): lock
/// [`session`](Self::session) to feed it input and drain its outputs, wait on
/// [`notified`](Self::notified) for the hub's events and commands, and drop the transport when
/// [`is_aborted`](Self::is_aborted) says so. While a `Feed` exists the connection counts
/// against the limits; dropping it (which `serve_connection` does when the connection ends,
/// and which happens if the upgrade fails) unregisters it, so the counts stay exact.
pub struct Feed {
    pub(super) conn: Arc<Conn>,
    pub(super) hub: Arc<HubInner>,
    pub(super) id: ConnectionId,
    pub(super) account: AccountId,
    pub(super) stream: StreamKey,
}

impl Feed {
    /// The account the connection belongs to.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// The stream the connection receives.
    pub fn stream(&self) -> &StreamKey {
        &self.stream
    }

    /// Resolves once every event published from now on, on any node, reaches this
    /// connection: at once with the in-process broker; with a multi-node one when its
    /// upstream subscription to the stream is confirmed (one round trip for a stream new to
    /// this node). Await it **before answering the upgrade** (the axum adapter does), so an
    /// event published after the client saw its 101 is never missed. An error means the
    /// broker cannot promise that now (its upstream is unreachable): refuse with 503 and
    /// `Retry-After` (dropping the feed uncounts the connection). Events published meanwhile
    /// already queue in the session.
    pub async fn ready(&self) -> Result<(), super::BrokerError> {
        self.hub.broker.ready(&self.stream).await
    }

    /// The connection's id in the hub.
    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// The connection's session, shared with the hub (which queues events and sends commands
    /// into it). Hold the lock briefly: a publish to the stream waits for it. Follow the
    /// core's drain rule: after every input, drain `poll_output` to `None`.
    pub fn session(&self) -> &Mutex<ServerSession> {
        self.conn.session()
    }

    /// Resolves when the hub queued something or sent a command since the last wake-up (a
    /// `Notify` permit: a wake-up that came while nobody waited is kept for the next wait).
    pub fn notified(&self) -> Notified<'_> {
        self.conn.notify.notified()
    }

    /// Whether the hub aborted the connection (its shutdown grace ran out): drop the
    /// transport without further ado.
    pub fn is_aborted(&self) -> bool {
        self.conn.aborted.load(Ordering::Acquire)
    }

    /// The connection's shared state (for the driver's metrics).
    #[cfg(feature = "metrics")]
    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        crate::metrics::record::connection_closed(crate::metrics::channel_label(&self.stream));
        self.hub.unregister(self);
    }
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}
