//! The bounded path from Redis to the subscriber task.
//!
//! The `redis` crate's connections read their socket in their own driver and hand each push
//! to a synchronous, non-blocking sender: a node cannot make them stop reading. So the bound
//! is kept here: the sender counts the messages and bytes waiting for the task, and when a
//! push would take either over [`RedisConfig::inbound_max_messages`] /
//! [`RedisConfig::inbound_max_bytes`] it drops it and tells the task once, which drops the
//! connection (the same outcome Redis's `client-output-buffer-limit pubsub` would reach, only
//! sooner): a gap, counted and recovered like any other loss (resubscription; opted-in clients
//! resume from the history). What waits is therefore bounded by the configuration, however
//! far behind the node falls.
//!
//! [`RedisConfig::inbound_max_messages`]: super::RedisConfig::inbound_max_messages
//! [`RedisConfig::inbound_max_bytes`]: super::RedisConfig::inbound_max_bytes

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ::redis::aio::{AsyncPushSender, SendError};
use ::redis::{PushInfo, Value};
use tokio::sync::mpsc;

/// What the task receives.
pub(super) enum Inbound {
    /// A push and the bytes it was counted for.
    Push(PushInfo, usize),
    /// The bound was reached: pushes are being dropped, so the connection must go.
    Overflow,
}

/// The counts shared by the sender and the task.
#[derive(Debug)]
struct Gauge {
    messages: AtomicUsize,
    bytes: AtomicUsize,
    max_messages: usize,
    max_bytes: usize,
    overflowed: AtomicBool,
    /// The most bytes that ever waited at once (for [`RedisStats`](super::RedisStats)).
    peak_bytes: Arc<AtomicUsize>,
}

/// The push sender given to the connection.
#[derive(Clone, Debug)]
pub(super) struct BoundedSender {
    tx: mpsc::UnboundedSender<Inbound>,
    gauge: Arc<Gauge>,
}

/// The task's end.
pub(super) struct BoundedReceiver {
    rx: mpsc::UnboundedReceiver<Inbound>,
    gauge: Arc<Gauge>,
}

/// A bounded pair for one connection. `peak_bytes` is raised to the most bytes waiting.
pub(super) fn bounded(
    max_messages: usize,
    max_bytes: usize,
    peak_bytes: Arc<AtomicUsize>,
) -> (BoundedSender, BoundedReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let gauge = Arc::new(Gauge {
        messages: AtomicUsize::new(0),
        bytes: AtomicUsize::new(0),
        max_messages: max_messages.max(1),
        max_bytes: max_bytes.max(1),
        overflowed: AtomicBool::new(false),
        peak_bytes,
    });
    (
        BoundedSender {
            tx,
            gauge: Arc::clone(&gauge),
        },
        BoundedReceiver { rx, gauge },
    )
}

/// The bytes a push is counted for: its payloads plus a little per value.
fn size(push: &PushInfo) -> usize {
    const PER_VALUE: usize = 16;
    push.data
        .iter()
        .map(|value| match value {
            Value::BulkString(bytes) => bytes.len() + PER_VALUE,
            _ => PER_VALUE,
        })
        .sum::<usize>()
        + 64
}

impl AsyncPushSender for BoundedSender {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        let gauge = &self.gauge;
        // The library's own notice always gets through: it is one small value, and it is how
        // the task learns that the connection is gone.
        let notice = info.kind == ::redis::PushKind::Disconnection;
        if !notice && gauge.overflowed.load(Ordering::Relaxed) {
            // Already over: the task is dropping the connection; nothing more is kept.
            return Ok(());
        }
        let bytes = size(&info);
        let messages = gauge.messages.fetch_add(1, Ordering::AcqRel) + 1;
        let total = gauge.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        // A message alone is always let through (a batch may be larger than a small byte
        // bound), so the node makes progress: the bound is the limits or one message.
        let alone = messages == 1;
        if !notice && !alone && (messages > gauge.max_messages || total > gauge.max_bytes) {
            gauge.messages.fetch_sub(1, Ordering::AcqRel);
            gauge.bytes.fetch_sub(bytes, Ordering::AcqRel);
            if !gauge.overflowed.swap(true, Ordering::AcqRel) {
                self.tx.send(Inbound::Overflow).map_err(|_| SendError)?;
            }
            return Ok(());
        }
        gauge.peak_bytes.fetch_max(total, Ordering::Relaxed);
        self.tx
            .send(Inbound::Push(info, bytes))
            .map_err(|_| SendError)
    }
}

impl BoundedReceiver {
    /// The next push (or the overflow notice); `None` when the connection's driver is gone.
    pub(super) async fn recv(&mut self) -> Option<Inbound> {
        let next = self.rx.recv().await;
        self.release(next.as_ref());
        next
    }

    /// [`recv`](Self::recv) without waiting: `Err(true)` when the driver is gone, `Err(false)`
    /// when nothing waits.
    pub(super) fn try_recv(&mut self) -> Result<Inbound, bool> {
        match self.rx.try_recv() {
            Ok(next) => {
                self.release(Some(&next));
                Ok(next)
            }
            Err(mpsc::error::TryRecvError::Empty) => Err(false),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(true),
        }
    }

    fn release(&self, next: Option<&Inbound>) {
        if let Some(Inbound::Push(_, bytes)) = next {
            self.gauge.messages.fetch_sub(1, Ordering::AcqRel);
            self.gauge.bytes.fetch_sub(*bytes, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::redis::PushKind;

    fn message(len: usize) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"misar:{inbox:a}".to_vec()),
                Value::BulkString(vec![b'x'; len]),
            ],
        }
    }

    #[tokio::test]
    async fn the_bound_in_messages_drops_and_reports_once() {
        let peak = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = bounded(3, usize::MAX, Arc::clone(&peak));
        for _ in 0..10 {
            tx.send(message(10)).unwrap();
        }
        let mut pushes = 0;
        let mut overflows = 0;
        while let Ok(next) = rx.try_recv() {
            match next {
                Inbound::Push(..) => pushes += 1,
                Inbound::Overflow => overflows += 1,
            }
        }
        assert_eq!((pushes, overflows), (3, 1));
        assert!(peak.load(Ordering::Relaxed) > 0);
    }

    #[tokio::test]
    async fn the_bound_in_bytes_holds_and_is_released_as_the_task_reads() {
        let peak = Arc::new(AtomicUsize::new(0));
        let one = size(&message(1000));
        let (tx, mut rx) = bounded(usize::MAX, one * 2, Arc::clone(&peak));
        tx.send(message(1000)).unwrap();
        tx.send(message(1000)).unwrap();
        // Reading one makes room for one more.
        assert!(matches!(rx.try_recv(), Ok(Inbound::Push(..))));
        tx.send(message(1000)).unwrap();
        assert!(matches!(rx.try_recv(), Ok(Inbound::Push(..))));
        assert!(matches!(rx.try_recv(), Ok(Inbound::Push(..))));
        assert!(matches!(rx.try_recv(), Err(false)));
        // Over the bound: dropped, reported.
        tx.send(message(1000)).unwrap();
        tx.send(message(1000)).unwrap();
        tx.send(message(1000)).unwrap();
        assert!(matches!(rx.try_recv(), Ok(Inbound::Push(..))));
        assert!(matches!(rx.try_recv(), Ok(Inbound::Push(..))));
        assert!(matches!(rx.try_recv(), Ok(Inbound::Overflow)));
        assert!(peak.load(Ordering::Relaxed) <= one * 2);
        // A message larger than the whole bound passes when nothing else waits; a second one
        // while it waits is over the bound.
        let (tx, mut rx) = bounded(usize::MAX, 100, Arc::clone(&peak));
        tx.send(message(1000)).unwrap();
        tx.send(message(1000)).unwrap();
        assert!(matches!(rx.try_recv(), Ok(Inbound::Push(..))));
        assert!(matches!(rx.try_recv(), Ok(Inbound::Overflow)));
        assert!(matches!(rx.try_recv(), Err(false)));
        // The disconnection notice is never dropped.
        tx.send(PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        })
        .unwrap();
        assert!(matches!(rx.try_recv(), Ok(Inbound::Push(..))));
    }
}
