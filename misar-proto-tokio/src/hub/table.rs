//! The core's fan-out table behind locks: one lock per stream, one for the registry, one for
//! the late-joiner cache's order. The decisions are the core's ([`misar_proto::streams`]);
//! this module only decides which lock guards what.
//!
//! - **Per-stream locks**: a publish holds its stream's lock for the whole fan-out (that is
//!   what keeps one order per stream), and nothing else: a campaign with 10,000 subscribers
//!   does not hold up a publish to any other stream, a subscribe or a disconnect elsewhere.
//! - **Lookup**: streams sit in [`SHARDS`] hash maps, each behind a lock held only to find,
//!   insert or remove an entry (never during a fan-out).
//! - **Removal**: a stream left idle (no subscriber, nothing cached, no history) is marked
//!   dead under its own lock, then removed from its map; a caller that found it before the
//!   removal sees the mark and looks again, so nothing is ever added to a stream that is gone.
//! - **History** (§2.11): the table-wide [`HistoryIndex`] (offset clock, byte budget, dropped
//!   streams' offsets) has a lock of its own, taken after a stream's or a map's, never
//!   before. A stream is created and removed under its map's lock with the index told at
//!   once, so a new stream of a key always starts where the dropped one ended.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use misar_proto::streams::{CacheOrder, HistoryIndex, Registry, Stream, StreamKey};

use super::feed::{Conn, lock};

/// Lookup maps (a power of two). Lookups hold a map's lock for a hash-map operation only, so
/// a few dozen suffice for thousands of publishes per second from many threads.
pub(super) const SHARDS: usize = 64;

type Slots = HashMap<StreamKey, Arc<Slot>>;

/// One stream and its lock.
#[derive(Debug)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    stream: Stream<Arc<Conn>>,
    /// Removed from its map (or about to be): use a fresh slot.
    dead: bool,
}

/// Streams, registry and cache order, each behind its own lock.
#[derive(Debug)]
pub(super) struct Table {
    pub(super) registry: Mutex<Registry<Arc<Conn>>>,
    pub(super) cache: Mutex<CacheOrder>,
    pub(super) history: Mutex<HistoryIndex>,
    shards: Box<[Mutex<Slots>]>,
    hasher: RandomState,
    /// Streams start where the index remembers them (the hub numbers events). `false` when
    /// the broker numbers them: a stream then starts at 0 and follows the broker's offsets
    /// (its epoch is the broker's, see [`Stream::restart`]).
    remember: bool,
}

impl Table {
    pub(super) fn new(
        registry: Registry<Arc<Conn>>,
        cache: CacheOrder,
        history: HistoryIndex,
        remember: bool,
    ) -> Self {
        Self {
            remember,
            registry: Mutex::new(registry),
            cache: Mutex::new(cache),
            history: Mutex::new(history),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &StreamKey) -> &Mutex<Slots> {
        // `SHARDS` is a power of two: the low bits of the hash pick the map.
        let index = (self.hasher.hash_one(key) as usize) & (SHARDS - 1);
        &self.shards[index]
    }

    /// Runs `f` on `key`'s stream under its lock, creating the stream if `create` (else
    /// `None` when there is none). A stream `f` leaves idle is removed afterwards.
    pub(super) fn with_stream<R>(
        &self,
        key: &StreamKey,
        create: bool,
        f: impl FnOnce(&mut Stream<Arc<Conn>>) -> R,
    ) -> Option<R> {
        let mut f = Some(f);
        loop {
            let slot = {
                let mut shard = lock(self.shard(key));
                match shard.get(key) {
                    Some(slot) => Arc::clone(slot),
                    None if create => {
                        let origin = if self.remember {
                            lock(&self.history).origin(key)
                        } else {
                            0
                        };
                        let slot = Arc::new(Slot {
                            state: Mutex::new(SlotState {
                                stream: Stream::new(key.clone(), origin),
                                dead: false,
                            }),
                        });
                        shard.insert(key.clone(), Arc::clone(&slot));
                        slot
                    }
                    None => return None,
                }
            };
            let mut state = lock(&slot.state);
            if state.dead {
                // Removed between the lookup and the lock: look again.
                continue;
            }
            let f = f.take()?;
            let result = f(&mut state.stream);
            let idle = state.stream.is_idle();
            let latest = state.stream.latest();
            state.dead = idle;
            drop(state);
            if idle {
                let mut shard = lock(self.shard(key));
                if shard
                    .get(key)
                    .is_some_and(|found| Arc::ptr_eq(found, &slot))
                {
                    shard.remove(key);
                    if self.remember {
                        // Under the map's lock, before any new stream of this key can start.
                        lock(&self.history).dropped(key, latest);
                    }
                }
            }
            return Some(result);
        }
    }

    /// Streams held now.
    pub(super) fn stream_count(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}
