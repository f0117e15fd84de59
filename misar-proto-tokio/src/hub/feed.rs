//! [`Feed`]: one connection's receiving end, and the state the hub shares with its driver.
//!
//! Once [`serve_connection`](crate::server::serve_connection) attaches the connection's
//! [`ServerSession`], the session itself lives here, behind a short-held mutex: a publish
//! calls [`ServerSession::enqueue`] directly, so the session's outbound queue is *the*
//! per-connection queue of §2.7 (bounds, `progress` coalescing, 1013 on overflow) whether or
//! not the driver is busy writing, and a revocation or shutdown is a session command that
//! gets through even when that queue is full. The driver is woken through a [`Notify`].
//!
//! Between [`Hub::subscribe`](super::Hub::subscribe) (before the upgrade) and the attach
//! (after it), events wait in a small FIFO bounded by [`HubConfig::pending_events`] and
//! [`HubConfig::pending_bytes`]; at the attach they are replayed into the session's queue in
//! order (so coalescing applies to them too). Overflowing that FIFO closes the connection
//! with 1013 as soon as it is attached.
//!
//! Lock order: the hub's state, then `waiting`, then `session`. No lock is held across an
//! `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use misar_proto::auth::AccountId;
use misar_proto::close::{CloseCode, CloseFrame};
use misar_proto::event::EncodedEvent;
use misar_proto::server::{EnqueueError, ServerSession};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

#[cfg(doc)]
use super::HubConfig;
use super::{HubInner, StreamKey};

/// Locks a mutex, ignoring poisoning: no critical section here can leave its data invalid
/// half-way (the session's methods never panic, and the rest are plain field updates).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A command from the hub to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Control {
    /// Graceful shutdown: close 1001.
    Shutdown,
    /// Revocation: close 4401 or 4403.
    Revoke(CloseCode),
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

/// Bounds of the pre-attach buffer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) events: usize,
    pub(super) bytes: usize,
}

/// The connection before its session is attached.
#[derive(Debug, Default)]
struct Waiting {
    /// The session is attached: everything goes to it now.
    attached: bool,
    pending: VecDeque<EncodedEvent>,
    pending_bytes: usize,
    /// `pending` overflowed: the session closes with 1013 as soon as it is attached.
    overflowed: bool,
    /// A command that came before the attach (the first one wins, as in the session).
    control: Option<Control>,
}

impl Waiting {
    fn discard(&mut self) {
        // A fresh VecDeque frees the memory (clear() would keep the capacity).
        self.pending = VecDeque::new();
        self.pending_bytes = 0;
    }
}

/// What the hub and the connection's driver share.
#[derive(Debug)]
pub(crate) struct FeedShared {
    pub(super) account: AccountId,
    pub(super) stream: StreamKey,
    /// Index in the stream's subscriber list; changed only under the hub's lock.
    pub(super) stream_pos: AtomicUsize,
    /// Index in the account's connection list; changed only under the hub's lock.
    pub(super) account_pos: AtomicUsize,
    waiting: Mutex<Waiting>,
    session: OnceLock<Mutex<ServerSession>>,
    /// The hub gave up on the connection (shutdown grace over): the driver drops it.
    aborted: AtomicBool,
    notify: Notify,
}

impl FeedShared {
    pub(super) fn new(
        account: AccountId,
        stream: StreamKey,
        first: Option<EncodedEvent>,
    ) -> Arc<Self> {
        let mut waiting = Waiting::default();
        if let Some(event) = first {
            waiting.pending_bytes = event.len();
            waiting.pending.push_back(event);
        }
        Arc::new(Self {
            account,
            stream,
            stream_pos: AtomicUsize::new(0),
            account_pos: AtomicUsize::new(0),
            waiting: Mutex::new(waiting),
            session: OnceLock::new(),
            aborted: AtomicBool::new(false),
            notify: Notify::new(),
        })
    }

    /// Queues `event` for this connection and wakes its driver.
    pub(super) fn deliver(&self, event: &EncodedEvent, limits: Limits, now: Instant) -> Outcome {
        let outcome = self.deliver_inner(event, limits, now);
        if outcome != Outcome::Refused {
            self.notify.notify_one();
        }
        outcome
    }

    fn deliver_inner(&self, event: &EncodedEvent, limits: Limits, now: Instant) -> Outcome {
        // Fast path, the common case: the session is attached, so `waiting` is done with.
        // `attach` sets the cell under the `waiting` lock after replaying what waited, so an
        // event that sees the cell set comes after those (and deliveries are serialized by the
        // hub's lock anyway). This saves a lock per connection per event in the fan-out loop.
        if let Some(session) = self.session.get() {
            return enqueue(session, event, now);
        }
        let mut waiting = lock(&self.waiting);
        if waiting.attached {
            drop(waiting);
            let Some(session) = self.session.get() else {
                return Outcome::Refused;
            };
            return enqueue(session, event, now);
        }
        if waiting.control.is_some() || waiting.overflowed {
            return Outcome::Refused;
        }
        let bytes = waiting.pending_bytes.saturating_add(event.len());
        if waiting.pending.len() >= limits.events || bytes > limits.bytes {
            waiting.discard();
            waiting.overflowed = true;
            return Outcome::Overflowed;
        }
        waiting.pending.push_back(event.clone());
        waiting.pending_bytes = bytes;
        Outcome::Queued
    }

    /// Sends a command to the session (or keeps it for the attach) and wakes the driver.
    pub(super) fn command(&self, control: Control, now: Instant) {
        let mut waiting = lock(&self.waiting);
        if waiting.attached {
            drop(waiting);
            if let Some(session) = self.session.get() {
                apply(&mut lock(session), control, now);
            }
        } else if waiting.control.is_none() {
            waiting.control = Some(control);
            // Nothing queued before the command may reach the client any more.
            waiting.discard();
        }
        self.notify.notify_one();
    }

    /// Tells the driver to drop the connection now.
    pub(super) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    pub(super) fn set_stream_pos(&self, pos: usize) {
        self.stream_pos.store(pos, Ordering::Relaxed);
    }

    pub(super) fn set_account_pos(&self, pos: usize) {
        self.account_pos.store(pos, Ordering::Relaxed);
    }
}

fn enqueue(session: &Mutex<ServerSession>, event: &EncodedEvent, now: Instant) -> Outcome {
    match lock(session).enqueue(event.clone(), now) {
        Ok(()) => Outcome::Queued,
        Err(EnqueueError::Overflow { .. }) => Outcome::Overflowed,
        Err(_) => Outcome::Refused,
    }
}

fn apply(session: &mut ServerSession, control: Control, now: Instant) {
    match control {
        Control::Shutdown => session.shutdown(now),
        Control::Revoke(code) => {
            // Only ever called with 4401/4403, which `revoke` accepts.
            let _ = session.revoke(code, now);
        }
    }
}

/// One connection's receiving end, from [`Hub::subscribe`](super::Hub::subscribe).
///
/// Hand it to [`serve_connection`](crate::server::serve_connection) with the connection's
/// session. While it exists the connection counts against the limits; dropping it (which
/// `serve_connection` does when the connection ends, and which happens if the upgrade fails)
/// unregisters the connection, so the counts stay exact.
pub struct Feed {
    pub(super) shared: Arc<FeedShared>,
    pub(super) hub: Arc<HubInner>,
}

impl Feed {
    /// The account the connection belongs to.
    pub fn account(&self) -> &AccountId {
        &self.shared.account
    }

    /// The stream the connection receives.
    pub fn stream(&self) -> &StreamKey {
        &self.shared.stream
    }

    /// Moves the session in and returns it, shared with the hub: events that waited are
    /// replayed into its queue, a command that came meanwhile is applied. A feed takes one
    /// session; a second one is dropped (and the first returned).
    pub(crate) fn attach(&self, session: ServerSession, now: Instant) -> &Mutex<ServerSession> {
        let mut waiting = lock(&self.shared.waiting);
        if !waiting.attached {
            let mut session = session;
            replay(&mut waiting, &mut session, now);
            waiting.attached = true;
            // Only `attach` sets the cell, under the `waiting` lock, once: this initializes it.
            return self.shared.session.get_or_init(move || Mutex::new(session));
        }
        drop(waiting);
        self.shared.session.get_or_init(move || Mutex::new(session))
    }

    /// Whether the hub aborted the connection.
    pub(crate) fn is_aborted(&self) -> bool {
        self.shared.aborted.load(Ordering::Acquire)
    }

    /// Resolves when the hub queued something or sent a command since the last wake-up.
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.shared.notify.notified()
    }
}

/// Moves what waited into the freshly attached session.
fn replay(waiting: &mut Waiting, session: &mut ServerSession, now: Instant) {
    let pending = std::mem::take(&mut waiting.pending);
    waiting.pending_bytes = 0;
    for event in pending {
        // An overflow here makes the session close with 1013 by itself.
        if session.enqueue(event, now).is_err() {
            break;
        }
    }
    if std::mem::take(&mut waiting.overflowed) {
        session.close(CloseFrame::new(CloseCode::TryAgainLater), now);
    }
    if let Some(control) = waiting.control.take() {
        apply(session, control, now);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.hub.unregister(&self.shared);
    }
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("account", &self.shared.account)
            .field("stream", &self.shared.stream)
            .finish_non_exhaustive()
    }
}
