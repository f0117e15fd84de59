//! §2.11's memory: each stream's bounded history ([`History`]) and the table-wide bookkeeping
//! ([`HistoryIndex`]): the offset clock, the total byte budget (oldest first), and what the
//! table remembers of streams it dropped.
//!
//! **Offsets.** One clock numbers every event of the table (one epoch per process), so a
//! stream's offsets strictly increase whatever happens to the stream (they are not contiguous:
//! §2.11 asks for strictly increasing offsets, and recovery never counts them). A stream's
//! `lost_through` is the highest offset of its events that may exist but is no longer held:
//! a position at or above it (and not ahead of the stream) is recovered.
//!
//! **Dropped streams.** A stream with no subscriber, nothing cached and an empty history is
//! dropped from the table; the index then remembers its latest offset (up to
//! [`HistoryConfig::remembered_streams`] of them, oldest forgotten first), so a client that
//! saw everything before the drop still resumes. A stream created with nothing remembered
//! starts at the *horizon*: the highest latest offset the index ever forgot (0 in a fresh
//! table), below which nothing can be vouched for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::event::EncodedEvent;

use super::StreamKey;

/// History bounds (§2.11). `Default` gives the contract's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Events each stream keeps for resuming clients (256). 0 keeps none: a client then
    /// resumes only if it missed nothing.
    pub max_events: usize,
    /// How long an event is kept (10 minutes).
    pub max_age: Duration,
    /// Payload bytes kept in total, over every stream (64 MiB); beyond it the oldest events
    /// of the whole table are dropped first.
    pub max_bytes: usize,
    /// Dropped streams whose latest offset is remembered (100,000, about 100 bytes each), so
    /// their clients still resume after the stream went quiet.
    pub remembered_streams: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            max_events: 256,
            max_age: Duration::from_secs(600),
            max_bytes: 64 << 20,
            remembered_streams: 100_000,
        }
    }
}

impl HistoryConfig {
    /// No history at all (clients resume only when they missed nothing).
    pub fn none() -> Self {
        Self {
            max_events: 0,
            ..Self::default()
        }
    }
}

/// What a change to one stream's history did, for the [`HistoryIndex`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct HistoryChange {
    /// The offset and time of the stream's oldest held event before the change.
    pub oldest_before: Option<(u64, Instant)>,
    /// ... and after it.
    pub oldest_after: Option<(u64, Instant)>,
    /// Payload bytes added.
    pub added: usize,
    /// Payload bytes dropped.
    pub freed: usize,
}

impl HistoryChange {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.oldest_before == self.oldest_after && self.added == 0 && self.freed == 0
    }
}

#[derive(Debug)]
struct Entry {
    /// The opted-in encoding (it knows its offset).
    event: EncodedEvent,
    at: Instant,
}

impl Entry {
    fn offset(&self) -> u64 {
        self.event.offset().unwrap_or(0)
    }
}

/// One stream's held events, oldest first, each in its opted-in encoding.
#[derive(Debug, Default)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl History {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn oldest(&self) -> Option<(u64, Instant)> {
        self.entries.front().map(|e| (e.offset(), e.at))
    }

    /// Appends `event` (its offset above every held one), then keeps at most `max_events`.
    /// Returns the change and the highest offset dropped, if any.
    pub(crate) fn push(
        &mut self,
        event: EncodedEvent,
        at: Instant,
        max_events: usize,
    ) -> (HistoryChange, Option<u64>) {
        let before = self.oldest();
        let mut change = HistoryChange {
            oldest_before: before,
            ..HistoryChange::default()
        };
        let mut dropped = None;
        if max_events == 0 {
            dropped = event.offset();
        } else {
            change.added = event.len();
            self.bytes += event.len();
            self.entries.push_back(Entry { event, at });
            while self.entries.len() > max_events {
                if let Some((offset, freed)) = self.pop_front() {
                    dropped = Some(offset);
                    change.freed += freed;
                }
            }
        }
        change.oldest_after = self.oldest();
        (change, dropped)
    }

    /// Drops events published at or before `cutoff`. Returns the change and the highest
    /// offset dropped.
    pub(crate) fn expire(&mut self, cutoff: Instant) -> (HistoryChange, Option<u64>) {
        let mut change = HistoryChange {
            oldest_before: self.oldest(),
            ..HistoryChange::default()
        };
        let mut dropped = None;
        while self.entries.front().is_some_and(|e| e.at <= cutoff) {
            if let Some((offset, freed)) = self.pop_front() {
                dropped = Some(offset);
                change.freed += freed;
            }
        }
        change.oldest_after = self.oldest();
        (change, dropped)
    }

    /// Drops the oldest event (the table's byte budget). Returns the change and its offset.
    pub(crate) fn drop_oldest(&mut self) -> (HistoryChange, Option<u64>) {
        let mut change = HistoryChange {
            oldest_before: self.oldest(),
            ..HistoryChange::default()
        };
        let dropped = self.pop_front().map(|(offset, freed)| {
            change.freed = freed;
            offset
        });
        change.oldest_after = self.oldest();
        (change, dropped)
    }

    /// Drops everything. Returns the change.
    pub(crate) fn clear(&mut self) -> (HistoryChange, Option<u64>) {
        let change = HistoryChange {
            oldest_before: self.oldest(),
            oldest_after: None,
            added: 0,
            freed: self.bytes,
        };
        let dropped = self.entries.back().map(Entry::offset);
        self.entries = VecDeque::new();
        self.bytes = 0;
        (change, dropped)
    }

    /// The held events with an offset above `after`, oldest first.
    pub(crate) fn after(&self, after: u64) -> impl Iterator<Item = &EncodedEvent> {
        // Offsets increase along the deque: skip to the first one above `after`.
        let start = self.entries.partition_point(|e| e.offset() <= after);
        self.entries.range(start..).map(|e| &e.event)
    }

    fn pop_front(&mut self) -> Option<(u64, usize)> {
        let entry = self.entries.pop_front()?;
        self.bytes = self.bytes.saturating_sub(entry.event.len());
        if self.entries.is_empty() {
            // Give a burst's memory back.
            self.entries = VecDeque::new();
        }
        Some((entry.offset(), entry.event.len()))
    }
}

/// The table-wide side of §2.11: the offset clock, the byte budget over every stream's
/// history (oldest first), and the latest offsets of dropped streams.
///
/// A single-threaded table ([`Streams`](super::Streams)) owns one; a multi-threaded one keeps
/// it behind a lock of its own, taken after (never before) a stream's lock.
#[derive(Debug)]
pub struct HistoryIndex {
    config: HistoryConfig,
    /// The last offset handed out.
    clock: u64,
    /// Each stream's oldest held event, by offset (offsets are table-wide, so this is the
    /// table's publish order).
    oldest: BTreeMap<u64, (StreamKey, Instant)>,
    bytes: usize,
    /// Dropped streams' latest offsets, and the order they were dropped in.
    remembered: HashMap<StreamKey, u64>,
    remembered_order: VecDeque<StreamKey>,
    /// The highest latest offset ever forgotten.
    horizon: u64,
}

impl HistoryIndex {
    /// An empty index.
    pub fn new(config: HistoryConfig) -> Self {
        Self {
            config,
            clock: 0,
            oldest: BTreeMap::new(),
            bytes: 0,
            remembered: HashMap::new(),
            remembered_order: VecDeque::new(),
            horizon: 0,
        }
    }

    /// The bounds.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// The next offset (table-wide, strictly increasing).
    pub fn next_offset(&mut self) -> u64 {
        self.clock = self.clock.saturating_add(1);
        self.clock
    }

    /// Payload bytes held over every stream.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Streams holding history.
    pub fn streams_with_history(&self) -> usize {
        self.oldest.len()
    }

    /// Dropped streams remembered now.
    pub fn remembered_streams(&self) -> usize {
        self.remembered.len()
    }

    /// Records a change of `key`'s history (made under that stream's lock).
    pub fn apply(&mut self, key: &StreamKey, change: HistoryChange) {
        if change.oldest_before != change.oldest_after {
            if let Some((offset, _)) = change.oldest_before {
                self.oldest.remove(&offset);
            }
            if let Some((offset, at)) = change.oldest_after {
                self.oldest.insert(offset, (key.clone(), at));
            }
        }
        self.bytes = self
            .bytes
            .saturating_add(change.added)
            .saturating_sub(change.freed);
    }

    /// The stream whose oldest event must go now, with that event's offset: the oldest of
    /// the table while the budget is exceeded, or an event older than `max_age`. The caller
    /// drops it under that stream's lock (if its oldest is still that offset) and
    /// [`apply`](Self::apply)s the change; repeat until `None`.
    pub fn due(&self, now: Instant) -> Option<(u64, StreamKey)> {
        let (offset, (key, at)) = self.oldest.first_key_value()?;
        let expired =
            now.checked_duration_since(*at).unwrap_or(Duration::ZERO) >= self.config.max_age;
        (expired || self.bytes > self.config.max_bytes).then(|| (*offset, key.clone()))
    }

    /// Where a new stream for `key` starts: its latest offset when it was dropped (then
    /// forgotten here), else the horizon.
    pub fn origin(&mut self, key: &StreamKey) -> u64 {
        self.remembered.remove(key).unwrap_or(self.horizon)
    }

    /// `key`'s stream was dropped with `latest` as its latest offset: remember it (the
    /// oldest remembered is forgotten beyond the bound, raising the horizon).
    pub fn dropped(&mut self, key: &StreamKey, latest: u64) {
        if latest <= self.horizon {
            // Nothing to vouch for above the horizon: a new stream starts there anyway.
            return;
        }
        if self.config.remembered_streams == 0 {
            self.horizon = self.horizon.max(latest);
            return;
        }
        self.remembered.insert(key.clone(), latest);
        self.remembered_order.push_back(key.clone());
        while self.remembered_order.len() > self.config.remembered_streams {
            let Some(oldest) = self.remembered_order.pop_front() else {
                break;
            };
            if let Some(forgotten) = self.remembered.remove(&oldest) {
                self.horizon = self.horizon.max(forgotten);
            }
        }
    }
}
