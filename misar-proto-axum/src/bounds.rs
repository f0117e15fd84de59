//! §2.14's bounds on the hooks: `hook_timeout` and `max_pending_handshakes`.
//!
//! A hook that hangs (a database that stops answering rather than erroring) is a failed hook:
//! 503, never an upgrade. At most `max_pending_handshakes` requests wait on the hooks at once;
//! the next ones get 503 with `Retry-After` at once, and no hook is called for them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default `hook_timeout` (§2.14).
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `max_pending_handshakes` (§2.14).
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 1024;
/// `Retry-After` of a refusal for too many pending handshakes: the queue drains within a hook
/// call, so a second is plenty.
pub(crate) const PENDING_RETRY_AFTER_SECS: u32 = 1;

/// The hook bounds of one router.
#[derive(Debug, Clone)]
pub(crate) struct HookBounds {
    timeout: Duration,
    pending: Arc<Semaphore>,
    max_pending: usize,
}

/// A hook did not answer within `hook_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HookTimedOut;

impl HookBounds {
    pub(crate) fn new(timeout: Duration, max_pending: usize) -> Self {
        let max_pending = max_pending.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            timeout,
            pending: Arc::new(Semaphore::new(max_pending)),
            max_pending,
        }
    }

    /// A place among the handshakes waiting on hooks, held until the decision is made;
    /// `None` when all are taken.
    pub(crate) fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.pending).try_acquire_owned().ok()
    }

    /// Handshakes waiting on hooks right now.
    pub(crate) fn pending(&self) -> usize {
        self.max_pending
            .saturating_sub(self.pending.available_permits())
    }

    /// Runs one hook call under the timeout.
    pub(crate) async fn call<F: Future>(&self, hook: F) -> Result<F::Output, HookTimedOut> {
        tokio::time::timeout(self.timeout, hook)
            .await
            .map_err(|_| HookTimedOut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hanging_hook_times_out_and_places_are_bounded() {
        let bounds = HookBounds::new(Duration::from_secs(5), 2);
        let hang = bounds.call(std::future::pending::<()>());
        assert_eq!(hang.await, Err(HookTimedOut));
        assert_eq!(bounds.call(async { 7 }).await, Ok(7));
        let a = bounds.try_enter().unwrap();
        let _b = bounds.try_enter().unwrap();
        assert_eq!(bounds.pending(), 2);
        assert!(bounds.try_enter().is_none());
        drop(a);
        assert!(bounds.try_enter().is_some());
    }
}
