//! A lock-free log-linear latency histogram: exact below 64 ns, then 32 sub-buckets per power of
//! two (at most 1/32 ≈ 3 % relative error), fixed size (1920 counters), safe to record into
//! from every connection task at once.

use std::sync::atomic::{AtomicU64, Ordering};

/// Values below this are their own bucket.
const LINEAR: u64 = 64;
/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// 64 exact buckets, then 32 for each exponent 6..=63.
const BUCKETS: usize = 64 + 58 * 32;

/// Counts of values (nanoseconds) in log-linear buckets, plus exact count, sum and max.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn record(&self, value: u64) {
        if let Some(bucket) = self.buckets.get(index_of(value)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
    }

    /// Forgets everything recorded so far (between a warm-up and the measured rounds).
    pub fn reset(&self) {
        for bucket in &*self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum.store(0, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
    }

    /// Adds every value `other` recorded (B7 merges its per-thread histograms).
    #[allow(dead_code)] // not used by the load generator itself
    pub fn merge(&self, other: &Histogram) {
        for (into, from) in self.buckets.iter().zip(other.buckets.iter()) {
            into.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.count.fetch_add(other.count(), Ordering::Relaxed);
        self.sum
            .fetch_add(other.sum.load(Ordering::Relaxed), Ordering::Relaxed);
        self.max.fetch_max(other.max(), Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The mean of the values recorded (0 when empty).
    pub fn mean(&self) -> u64 {
        self.sum
            .load(Ordering::Relaxed)
            .checked_div(self.count())
            .unwrap_or(0)
    }

    /// The value at quantile `q` (0.0..=1.0): the middle of the bucket holding that rank, capped
    /// at the exact maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        // The rank of the wanted value, 1-based; `as` saturates, and q is clamped, so no overflow.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0u64;
        for (index, bucket) in self.buckets.iter().enumerate() {
            seen = seen.saturating_add(bucket.load(Ordering::Relaxed));
            if seen >= rank {
                return bucket_mid(index).min(self.max());
            }
        }
        self.max()
    }
}

/// The bucket a value falls in.
fn index_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize; // < 64: fits
    }
    let exponent = u64::from(63 - value.leading_zeros()); // >= 6
    let sub = (value >> (exponent - u64::from(SUB_BITS))) - SUB; // 0..32
    (LINEAR + (exponent - 6) * SUB + sub) as usize // < BUCKETS
}

/// The middle of a bucket's range.
fn bucket_mid(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let exponent = (index - LINEAR) / SUB + 6;
    let sub = (index - LINEAR) % SUB;
    let width = 1u64 << (exponent - u64::from(SUB_BITS));
    let low = (SUB + sub) << (exponent - u64::from(SUB_BITS));
    low.saturating_add(width / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_maps_into_a_bucket_within_three_percent() {
        let mut value = 1u64;
        while value < u64::MAX / 3 {
            for v in [value, value + 1, value * 3 / 2] {
                let index = index_of(v);
                assert!(index < BUCKETS, "{v} -> {index}");
                let mid = bucket_mid(index) as f64;
                let error = (mid - v as f64).abs() / v as f64;
                assert!(error <= 1.0 / 32.0, "{v}: mid {mid}, error {error}");
            }
            value = value * 2 + 1;
        }
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.max(), 10_000_000);
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 5_000_000.0).abs() / 5_000_000.0 < 0.04, "p50 {p50}");
        assert!((p99 - 9_900_000.0).abs() / 9_900_000.0 < 0.04, "p99 {p99}");
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.mean(), 5_000_500);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_max() {
        let a = Histogram::new();
        let b = Histogram::new();
        for v in 1..=100u64 {
            a.record(v);
            b.record(v + 1000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 200);
        assert_eq!(a.max(), 1100);
        assert_eq!(a.quantile(0.25), 50);
    }

    #[test]
    fn reset_empties() {
        let h = Histogram::new();
        h.record(5);
        h.reset();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.5), 0);
        assert_eq!(h.max(), 0);
    }
}
