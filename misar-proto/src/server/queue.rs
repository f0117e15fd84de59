//! The outbound queue of one connection (§2.7).
//!
//! Events wait here until the driver pulls them with `poll_output` (so "queued" means "not
//! yet handed to the transport"). The queue is bounded by a count of events **and** a number
//! of payload bytes; an event that would cross either bound is refused, and the session then
//! closes with 1013.
//!
//! **Coalescing.** A session serves one channel, so every `progress` it sees is about the same
//! campaign. At most one `progress` is ever queued: a newer one supersedes the queued one,
//! which is dropped, and the newer one takes its place **in publish order**, i.e. at the back.
//! What reaches the client is therefore always a subsequence of what was published, in
//! publish order; only superseded `progress` events are missing from it. (Overwriting the old
//! slot instead would let a newer `progress` overtake events published before it.)
//!
//! To keep that O(1), a superseded `progress` that is not the newest entry leaves a hole
//! (`None`) that `pop` skips; when it *is* the newest entry it is simply overwritten. Holes
//! hold no payload. Each hole is followed by a live non-`progress` event that was queued after
//! the superseded one and before its successor, and distinct holes have distinct such
//! events, so there are never more holes than live events: the slot array stays within twice
//! the count bound.
//!
//! The only allocation is the slot array itself; events are shared `Bytes`. It grows with a
//! burst and is freed once the queue is empty again (above a few slots), so a connection that
//! was busy once does not keep its high-water mark while idle; and when the session closes.

use std::collections::VecDeque;

use crate::event::{EncodedEvent, EventClass};

/// An emptied queue keeps a slot array of up to this many slots (the common trickle of single
/// events then allocates nothing), and frees a larger one.
const KEEP_SLOTS: usize = 16;

/// Why an event was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overflow;

/// A bounded FIFO of encoded events with `progress` coalescing. See the module docs.
#[derive(Debug)]
pub(crate) struct OutboundQueue {
    slots: VecDeque<Option<EncodedEvent>>,
    /// Absolute position of `slots[0]` (the number of slots ever popped).
    head: u64,
    /// Absolute position of the queued `progress`, if any.
    progress_at: Option<u64>,
    live: usize,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
    /// Queued `progress` events superseded by a newer one, over the queue's life.
    coalesced: u64,
}

impl OutboundQueue {
    pub(crate) fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            slots: VecDeque::new(),
            head: 0,
            progress_at: None,
            live: 0,
            bytes: 0,
            max_events,
            max_bytes,
            coalesced: 0,
        }
    }

    /// Events waiting (holes excluded).
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Payload bytes waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queued `progress` events superseded by a newer one so far.
    pub(crate) fn coalesced(&self) -> u64 {
        self.coalesced
    }

    /// Queues `event`, superseding a queued `progress` if `event` is one. On overflow nothing
    /// changes.
    pub(crate) fn push(&mut self, event: EncodedEvent) -> Result<(), Overflow> {
        self.push_checked(event, true)
    }

    /// Queues `event` like [`push`](Self::push) but past the bounds: for a §2.11 replay,
    /// which its stream's history bounds instead (its bytes are the history's, shared).
    pub(crate) fn push_past_bounds(&mut self, event: EncodedEvent) {
        let _ = self.push_checked(event, false);
    }

    fn push_checked(&mut self, event: EncodedEvent, bounded: bool) -> Result<(), Overflow> {
        let superseded = match event.class() {
            EventClass::Progress => self.queued_progress_len(),
            _ => None,
        };
        let (live, bytes) = match superseded {
            Some(old_len) => (self.live, self.bytes.saturating_sub(old_len)),
            None => (self.live.saturating_add(1), self.bytes),
        };
        let bytes = bytes.saturating_add(event.len());
        if bounded && (live > self.max_events || bytes > self.max_bytes) {
            return Err(Overflow);
        }

        let is_progress = event.class() == EventClass::Progress;
        match (superseded, self.progress_index()) {
            (Some(_), Some(index)) if index + 1 == self.slots.len() => {
                // The queued progress is the newest entry: overwriting it keeps publish order.
                if let Some(slot) = self.slots.get_mut(index) {
                    *slot = Some(event);
                }
            }
            (Some(_), Some(index)) => {
                if let Some(slot) = self.slots.get_mut(index) {
                    *slot = None;
                }
                self.push_back(event, is_progress);
            }
            _ => self.push_back(event, is_progress),
        }
        self.live = live;
        self.bytes = bytes;
        if superseded.is_some() {
            self.coalesced = self.coalesced.saturating_add(1);
        }
        debug_assert!(self.slots.len() <= self.live.saturating_mul(2));
        Ok(())
    }

    /// The oldest queued event.
    pub(crate) fn pop(&mut self) -> Option<EncodedEvent> {
        while let Some(slot) = self.slots.pop_front() {
            let position = self.head;
            self.head = self.head.wrapping_add(1);
            if self.progress_at == Some(position) {
                self.progress_at = None;
            }
            if let Some(event) = slot {
                self.live = self.live.saturating_sub(1);
                self.bytes = self.bytes.saturating_sub(event.len());
                self.release_if_empty();
                return Some(event);
            }
        }
        None
    }

    /// Takes every queued event out, oldest first, leaving the queue empty.
    pub(crate) fn drain(&mut self) -> Vec<EncodedEvent> {
        let mut out = Vec::with_capacity(self.live);
        while let Some(event) = self.pop() {
            out.push(event);
        }
        out
    }

    /// Drops everything and frees the slot array. Returns how many events were dropped.
    pub(crate) fn clear(&mut self) -> usize {
        let dropped = self.live;
        self.head = self.head.wrapping_add(self.slots.len() as u64);
        self.slots = VecDeque::new();
        self.progress_at = None;
        self.live = 0;
        self.bytes = 0;
        dropped
    }

    /// Frees a large slot array once nothing is queued (every position was popped, so no
    /// queued `progress` position refers into it).
    fn release_if_empty(&mut self) {
        if self.slots.is_empty() && self.slots.capacity() > KEEP_SLOTS {
            self.slots = VecDeque::new();
        }
    }

    /// Capacity of the slot array (tests check that an idle queue holds no memory).
    #[cfg(test)]
    pub(crate) fn slots_capacity(&self) -> usize {
        self.slots.capacity()
    }

    fn push_back(&mut self, event: EncodedEvent, is_progress: bool) {
        if is_progress {
            self.progress_at = Some(self.head.wrapping_add(self.slots.len() as u64));
        }
        self.slots.push_back(Some(event));
    }

    fn progress_index(&self) -> Option<usize> {
        let at = self.progress_at?;
        usize::try_from(at.wrapping_sub(self.head)).ok()
    }

    fn queued_progress_len(&self) -> Option<usize> {
        let index = self.progress_index()?;
        self.slots.get(index)?.as_ref().map(EncodedEvent::len)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn event(text: &str, class: EventClass) -> EncodedEvent {
        EncodedEvent::from_parts_for_tests(Bytes::copy_from_slice(text.as_bytes()), class)
    }
    fn ordinary(text: &str) -> EncodedEvent {
        event(text, EventClass::Ordinary)
    }
    fn progress(text: &str) -> EncodedEvent {
        event(text, EventClass::Progress)
    }

    fn drain(queue: &mut OutboundQueue) -> Vec<String> {
        std::iter::from_fn(|| queue.pop())
            .map(|e| String::from_utf8_lossy(e.bytes()).into_owned())
            .collect()
    }

    #[test]
    fn fifo_and_accounting() {
        let mut queue = OutboundQueue::new(10, 100);
        queue.push(ordinary("a")).unwrap();
        queue.push(ordinary("bb")).unwrap();
        assert_eq!((queue.len(), queue.bytes()), (2, 3));
        assert_eq!(queue.pop().map(|e| e.len()), Some(1));
        assert_eq!((queue.len(), queue.bytes()), (1, 2));
        assert_eq!(drain(&mut queue), ["bb"]);
        assert_eq!((queue.len(), queue.bytes()), (0, 0));
        assert!(queue.pop().is_none());
    }

    #[test]
    fn newest_progress_is_overwritten_in_place() {
        let mut queue = OutboundQueue::new(10, 100);
        queue.push(ordinary("o1")).unwrap();
        queue.push(progress("p1")).unwrap();
        queue.push(progress("p22")).unwrap();
        queue.push(progress("p333")).unwrap();
        assert_eq!((queue.len(), queue.bytes()), (2, 6));
        assert_eq!(queue.slots.len(), 2);
        assert_eq!(drain(&mut queue), ["o1", "p333"]);
    }

    #[test]
    fn coalescing_is_counted() {
        let mut queue = OutboundQueue::new(10, 100);
        queue.push(progress("p1")).unwrap();
        queue.push(ordinary("a")).unwrap();
        queue.push(progress("p2")).unwrap();
        queue.push(progress("p3")).unwrap();
        assert_eq!(queue.coalesced(), 2);
        let _ = queue.pop();
        let _ = queue.pop();
        // Nothing queued to supersede: not counted.
        queue.push(progress("p4")).unwrap();
        assert_eq!(queue.coalesced(), 2);
    }

    #[test]
    fn superseded_progress_moves_to_publish_position() {
        let mut queue = OutboundQueue::new(10, 100);
        queue.push(progress("p1")).unwrap();
        queue.push(ordinary("o1")).unwrap();
        queue.push(progress("p2")).unwrap();
        queue.push(ordinary("o2")).unwrap();
        queue.push(progress("p3")).unwrap();
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.bytes(), 6);
        assert_eq!(drain(&mut queue), ["o1", "o2", "p3"]);
    }

    #[test]
    fn progress_after_the_queued_one_was_sent_is_queued_anew() {
        let mut queue = OutboundQueue::new(10, 100);
        queue.push(progress("p1")).unwrap();
        assert_eq!(drain(&mut queue), ["p1"]);
        queue.push(ordinary("o1")).unwrap();
        queue.push(progress("p2")).unwrap();
        assert_eq!(drain(&mut queue), ["o1", "p2"]);
    }

    #[test]
    fn count_bound() {
        let mut queue = OutboundQueue::new(2, 100);
        queue.push(ordinary("a")).unwrap();
        queue.push(progress("b")).unwrap();
        assert_eq!(queue.push(ordinary("c")), Err(Overflow));
        // Coalescing does not add an event, so it fits at the bound.
        queue.push(progress("d")).unwrap();
        assert_eq!(drain(&mut queue), ["a", "d"]);
    }

    #[test]
    fn byte_bound_counts_the_replacement_not_the_sum() {
        let mut queue = OutboundQueue::new(10, 10);
        queue.push(progress("12345678")).unwrap();
        // 8 + 9 would be too much, but the 8 are freed by the replacement.
        queue.push(progress("123456789")).unwrap();
        assert_eq!(queue.bytes(), 9);
        assert_eq!(queue.push(ordinary("ab")), Err(Overflow));
        assert_eq!(queue.bytes(), 9);
        queue.push(ordinary("a")).unwrap();
        assert_eq!(queue.push(progress("12345678901")), Err(Overflow));
        // A refused push changes nothing.
        assert_eq!(drain(&mut queue), ["123456789", "a"]);
    }

    #[test]
    fn clear_frees_and_reports() {
        let mut queue = OutboundQueue::new(100, 1000);
        for i in 0..50 {
            queue.push(ordinary(&format!("{i}"))).unwrap();
        }
        queue.push(progress("p")).unwrap();
        assert_eq!(queue.clear(), 51);
        assert_eq!(queue.slots.capacity(), 0);
        assert_eq!((queue.len(), queue.bytes()), (0, 0));
        // Still usable, and no stale progress position survives the clear.
        queue.push(ordinary("x")).unwrap();
        queue.push(progress("y")).unwrap();
        queue.push(progress("z")).unwrap();
        assert_eq!(drain(&mut queue), ["x", "z"]);
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back_and_a_trickle_allocates_once() {
        let mut queue = OutboundQueue::new(1000, 100_000);
        for i in 0..100 {
            queue.push(ordinary(&format!("{i}"))).unwrap();
        }
        queue.push(progress("p")).unwrap();
        assert!(queue.slots.capacity() >= 101);
        assert_eq!(drain(&mut queue).len(), 101);
        assert_eq!(queue.slots.capacity(), 0, "an idle queue holds no burst");
        // Single events come and go without freeing the small array each time.
        queue.push(ordinary("a")).unwrap();
        let small = queue.slots.capacity();
        assert!((1..=KEEP_SLOTS).contains(&small));
        assert_eq!(drain(&mut queue), ["a"]);
        assert_eq!(queue.slots.capacity(), small);
        // Positions stay consistent across the release: coalescing still works.
        queue.push(progress("p1")).unwrap();
        queue.push(progress("p2")).unwrap();
        assert_eq!(drain(&mut queue), ["p2"]);
    }

    #[test]
    fn holes_never_outnumber_live_events() {
        let mut queue = OutboundQueue::new(1000, 100_000);
        for i in 0..300 {
            queue.push(ordinary(&format!("o{i}"))).unwrap();
            queue.push(progress(&format!("p{i}"))).unwrap();
            assert!(queue.slots.len() <= 2 * queue.len());
        }
        let drained = drain(&mut queue);
        assert_eq!(drained.len(), 301);
        assert_eq!(drained.last().map(String::as_str), Some("p299"));
    }
}
