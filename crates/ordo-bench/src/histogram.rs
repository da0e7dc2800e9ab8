//! Latency histogram: an HDR histogram of microseconds with three significant digits.

use hdrhistogram::Histogram;

/// Highest latency recorded exactly; longer ones are recorded as this (one hour).
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Latencies of one client or of a whole run, in microseconds.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
    /// Latencies above [`LATENCY_US_MAX`], recorded as the maximum.
    saturated: u64,
}

/// The summary of a latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram covering 1 µs to [`LATENCY_US_MAX`] with three significant digits
    /// (every value within 0.1% of the truth).
    pub fn new() -> LatencyHistogram {
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
            .expect("1 ≤ LATENCY_US_MAX and 3 significant digits are valid bounds");
        LatencyHistogram {
            histogram,
            saturated: 0,
        }
    }

    /// Records one latency; zero counts as 1 µs and anything above [`LATENCY_US_MAX`] as the
    /// maximum.
    pub fn record_us(&mut self, latency_us: u64) {
        if latency_us > LATENCY_US_MAX {
            self.saturated += 1;
        }
        self.histogram.saturating_record(latency_us.max(1));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with the same bounds always merge");
        self.saturated += other.saturated;
    }

    /// Number of values recorded.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// Number of values above [`LATENCY_US_MAX`].
    pub fn saturated(&self) -> u64 {
        self.saturated
    }

    /// The value at `quantile` (0 to 1): the smallest recorded value (to the histogram's
    /// precision) that at least that fraction of values do not exceed; 0 when empty.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        if self.is_empty() {
            return 0;
        }
        self.histogram.value_at_quantile(quantile)
    }

    /// p50, p99, p99.9, max and mean.
    pub fn summary(&self) -> LatencySummary {
        if self.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50_us: self.quantile_us(0.5),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.histogram.max(),
            mean_us: self.histogram.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_thousand_are_exact() {
        let mut h = LatencyHistogram::new();
        for us in 1..=1000 {
            h.record_us(us);
        }
        let s = h.summary();
        assert_eq!(h.len(), 1000);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 1e-9, "mean {}", s.mean_us);
    }

    #[test]
    fn large_latencies_stay_within_a_tenth_of_a_percent() {
        let mut h = LatencyHistogram::new();
        // 990 fast operations at 2 ms and 10 slow ones at 43.21 ms: p99 is the slowest fast
        // one, p99.9 and max the slow ones.
        for _ in 0..990 {
            h.record_us(2_000);
        }
        for _ in 0..10 {
            h.record_us(43_210);
        }
        let s = h.summary();
        let close = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(close(s.p50_us, 2_000), "p50 {}", s.p50_us);
        assert!(close(s.p99_us, 2_000), "p99 {}", s.p99_us);
        assert!(close(s.p999_us, 43_210), "p99.9 {}", s.p999_us);
        assert!(close(s.max_us, 43_210), "max {}", s.max_us);
    }

    #[test]
    fn merged_histograms_hold_both_inputs() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for us in 1..=500 {
            a.record_us(us);
        }
        for us in 501..=1000 {
            b.record_us(us);
        }
        a.merge(&b);
        assert_eq!(a.len(), 1000);
        assert_eq!(a.summary().p50_us, 500);
        assert_eq!(a.summary().max_us, 1000);
    }

    #[test]
    fn out_of_range_latencies_are_clamped_and_counted() {
        let mut h = LatencyHistogram::new();
        h.record_us(0);
        h.record_us(LATENCY_US_MAX + 5);
        assert_eq!(h.len(), 2);
        assert_eq!(h.saturated(), 1);
        assert_eq!(h.quantile_us(0.0), 1);
        assert!(h.summary().max_us >= LATENCY_US_MAX * 999 / 1000);
    }

    #[test]
    fn empty_histogram_summarizes_to_zeros() {
        let h = LatencyHistogram::new();
        assert!(h.is_empty());
        assert_eq!(h.summary(), LatencySummary::default());
    }
}
