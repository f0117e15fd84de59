//! The in-process clients of B7: one task per connection that takes what its server wrote,
//! reads the publish stamp out of each event and records the latency, answers pings, and
//! echoes a close.
//!
//! Stamps are nanoseconds since the run's origin ([`Clock`]): an inbox event carries it in
//! `messageId` (`bench-<seq>-<ns>`, the marker of `misar_tests::bench`), a campaign `progress`
//! in `sent`. A client reads the clock once per batch it takes, as the load generator does
//! once per socket read. Only events stamped inside the measurement window count.
//!
//! Latencies go into one histogram per worker thread (uncontended atomics), merged at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use misar_proto::message::{Incoming, Message, ReceivedClose};
use misar_tests::bench;

use crate::histogram::Histogram;
use crate::transport::ClientEnd;

/// What a connection receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An account's inbox: `email_received` events.
    Inbox,
    /// The campaign: `progress` events.
    Campaign,
}

/// The run's clock and measurement window.
pub struct Clock {
    origin: Instant,
    start_ns: AtomicU64,
    end_ns: AtomicU64,
}

impl Clock {
    /// A clock starting now, with no window yet.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            start_ns: AtomicU64::new(u64::MAX),
            end_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// Nanoseconds since the origin.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Opens the window now; returns its start.
    pub fn open_window(&self) -> u64 {
        let now = self.now_ns();
        self.start_ns.store(now, Ordering::Relaxed);
        now
    }

    /// Closes the window now; returns its end.
    pub fn close_window(&self) -> u64 {
        let now = self.now_ns();
        self.end_ns.store(now, Ordering::Relaxed);
        now
    }

    /// Whether an event stamped `ns` counts.
    pub fn in_window(&self, ns: u64) -> bool {
        ns >= self.start_ns.load(Ordering::Relaxed) && ns < self.end_ns.load(Ordering::Relaxed)
    }
}

/// One thread's latencies (ns), for events stamped inside the window.
pub struct ThreadStats {
    /// Inbox publish → receive.
    pub inbox: Histogram,
    /// Campaign publish → receive.
    pub campaign: Histogram,
}

fn registry() -> &'static Mutex<Vec<Arc<ThreadStats>>> {
    static REGISTRY: OnceLock<Mutex<Vec<Arc<ThreadStats>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(Vec::new()))
}

thread_local! {
    static LOCAL: Arc<ThreadStats> = {
        let stats = Arc::new(ThreadStats {
            inbox: Histogram::new(),
            campaign: Histogram::new(),
        });
        registry()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&stats));
        stats
    };
}

/// Every thread's statistics so far.
pub fn all_stats() -> Vec<Arc<ThreadStats>> {
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// What every client shares besides the clock.
#[derive(Default)]
pub struct Ends {
    /// Close codes the clients received (0: a close without a code), and how often.
    pub closes: Mutex<BTreeMap<u16, u64>>,
    /// Connections whose server end went away without a close frame.
    pub dropped: AtomicU64,
    /// Events whose stamp could not be read (should stay 0).
    pub unreadable: AtomicU64,
}

/// At most this many messages are taken per wake-up.
const BATCH: usize = 256;

/// Serves one client until its server closes or goes away.
pub async fn run(end: ClientEnd, kind: Kind, clock: Arc<Clock>, ends: Arc<Ends>) {
    let mut batch: Vec<Message> = Vec::new();
    loop {
        if !end.recv_many(&mut batch, BATCH).await {
            ends.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = clock.now_ns();
        let mut closed = false;
        LOCAL.with(|stats| {
            let histogram = match kind {
                Kind::Inbox => &stats.inbox,
                Kind::Campaign => &stats.campaign,
            };
            for message in batch.drain(..) {
                match message {
                    Message::Text(payload) => {
                        let stamp = match kind {
                            Kind::Inbox => bench::parse_marker(&payload).map(|m| m.sent_at_ns),
                            Kind::Campaign => field_u64(&payload, b"\"sent\":"),
                        };
                        match stamp {
                            Some(stamp) if clock.in_window(stamp) => {
                                histogram.record(now.saturating_sub(stamp));
                            }
                            Some(_) => {}
                            None => {
                                ends.unreadable.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Message::Ping(payload) => {
                        end.send(Incoming::Pong(payload));
                    }
                    Message::Close(frame) => {
                        let code = frame.as_ref().map(|f| f.code.as_u16());
                        *ends
                            .closes
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(code.unwrap_or(0))
                            .or_default() += 1;
                        end.send(Incoming::Close(ReceivedClose {
                            code,
                            reason: Default::default(),
                        }));
                        closed = true;
                        return;
                    }
                    _ => {}
                }
            }
        });
        if closed {
            // Wait for the server to let go of the transport, as a client waits for the TCP
            // close after the close handshake.
            let mut rest = Vec::new();
            while end.recv_many(&mut rest, BATCH).await {
                rest.clear();
            }
            return;
        }
        if batch.capacity() > 64 {
            batch = Vec::new();
        }
    }
}

/// The unsigned integer right after `key` (e.g. `"sent":`) in a JSON payload.
pub fn field_u64(payload: &[u8], key: &[u8]) -> Option<u64> {
    let start = payload.windows(key.len()).position(|w| w == key)?;
    let rest = payload.get(start.checked_add(key.len())?..)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    rest.get(..digits)?.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?
            .checked_add(u64::from(d.wrapping_sub(b'0')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_numeric_field() {
        let frame = br#"{"type":"progress","campaignId":"c","sent":12345,"total":1}"#;
        assert_eq!(field_u64(frame, b"\"sent\":"), Some(12345));
        assert_eq!(field_u64(frame, b"\"opened\":"), None);
        assert_eq!(field_u64(br#"{"sent":x}"#, b"\"sent\":"), None);
    }
}
