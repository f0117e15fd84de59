//! A fixed table of deadlines, one slot per timer kind.
//!
//! Both sessions keep their timers here: arming, disarming and finding the earliest deadline
//! are O(1) (the table has two or three slots), and nothing allocates. The session's driver
//! keeps one real timer per connection, set to [`TimerTable::earliest`].

use std::time::{Duration, Instant};

/// Deadlines indexed by a small enum (`as usize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerTable<const N: usize> {
    deadlines: [Option<Instant>; N],
}

impl<const N: usize> TimerTable<N> {
    /// All timers disarmed.
    pub(crate) const fn new() -> Self {
        Self {
            deadlines: [None; N],
        }
    }

    /// Arms `slot` at `at`; `None` disarms it.
    pub(crate) fn set(&mut self, slot: usize, at: Option<Instant>) {
        if let Some(deadline) = self.deadlines.get_mut(slot) {
            *deadline = at;
        }
    }

    /// Arms `slot` at `now + after`. A deadline beyond what `Instant` can represent is never
    /// reached, so it disarms the slot instead of overflowing.
    pub(crate) fn set_after(&mut self, slot: usize, now: Instant, after: Duration) {
        self.set(slot, now.checked_add(after));
    }

    /// Disarms `slot`.
    pub(crate) fn clear(&mut self, slot: usize) {
        self.set(slot, None);
    }

    /// Disarms every slot.
    pub(crate) fn clear_all(&mut self) {
        self.deadlines = [None; N];
    }

    /// The deadline of `slot`, if armed.
    pub(crate) fn get(&self, slot: usize) -> Option<Instant> {
        self.deadlines.get(slot).copied().flatten()
    }

    /// Whether `slot` is armed and its deadline is not after `now`.
    pub(crate) fn is_due(&self, slot: usize, now: Instant) -> bool {
        self.get(slot).is_some_and(|at| at <= now)
    }

    /// The earliest armed deadline.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Instant {
        crate::testing::virtual_epoch()
    }

    #[test]
    fn earliest_and_due() {
        let t0 = origin();
        let mut table = TimerTable::<3>::new();
        assert_eq!(table.earliest(), None);
        table.set_after(0, t0, Duration::from_secs(5));
        table.set_after(2, t0, Duration::from_secs(3));
        assert_eq!(table.earliest(), Some(t0 + Duration::from_secs(3)));
        assert!(!table.is_due(0, t0 + Duration::from_secs(4)));
        assert!(table.is_due(2, t0 + Duration::from_secs(3)));
        assert!(!table.is_due(1, t0 + Duration::from_secs(100)));
        table.clear(2);
        assert_eq!(table.earliest(), Some(t0 + Duration::from_secs(5)));
        table.clear_all();
        assert_eq!(table.earliest(), None);
    }

    #[test]
    fn overflowing_deadline_disarms_and_bad_slots_are_ignored() {
        let t0 = origin();
        let mut table = TimerTable::<2>::new();
        table.set_after(0, t0, Duration::MAX);
        assert_eq!(table.get(0), None);
        table.set(7, Some(t0));
        assert_eq!(table.get(7), None);
        assert_eq!(table.earliest(), None);
    }
}
