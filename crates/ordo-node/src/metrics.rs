//! Counters and histograms of a Raft group, kept in atomics so every task can record
//! without locks; [`GroupMetrics::snapshot`] reads them for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Number of buckets of a [`Histogram`]: bucket `i` counts values below `2^i`, the last
/// one everything larger.
pub const HISTOGRAM_BUCKETS: usize = 32;

/// A histogram of non-negative values with power-of-two bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
    sum: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// A copy of a [`Histogram`]'s state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// `(upper bound exclusive, count)` per bucket; the last bound is `u64::MAX`.
    pub buckets: Vec<(u64, u64)>,
    /// Sum of recorded values.
    pub sum: u64,
    /// Number of recorded values.
    pub count: u64,
}

impl HistogramSnapshot {
    /// The upper bound of the bucket holding the `q`-quantile (0.0..=1.0), or 0 if empty.
    pub fn quantile_upper_bound(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(bound, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return bound;
            }
        }
        u64::MAX
    }
}

impl Histogram {
    /// Records one value.
    pub fn record(&self, value: u64) {
        let bucket = (64 - value.leading_zeros() as usize).min(HISTOGRAM_BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the histogram.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let bound = if i == HISTOGRAM_BUCKETS - 1 {
                        u64::MAX
                    } else {
                        1u64 << i
                    };
                    (bound, b.load(Ordering::Relaxed))
                })
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// The counters of one group.
#[derive(Debug, Default)]
pub struct GroupMetrics {
    pub(crate) term: AtomicU64,
    pub(crate) commit_index: AtomicU64,
    pub(crate) applied_index: AtomicU64,
    pub(crate) elections: AtomicU64,
    pub(crate) leader_changes: AtomicU64,
    pub(crate) proposals: AtomicU64,
    pub(crate) proposals_failed: AtomicU64,
    pub(crate) proposals_forwarded: AtomicU64,
    pub(crate) entries_committed: AtomicU64,
    pub(crate) entries_applied: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) messages_decode_failed: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
    pub(crate) snapshots_taken: AtomicU64,
    pub(crate) snapshots_sent: AtomicU64,
    pub(crate) snapshots_received: AtomicU64,
    pub(crate) quiesced: AtomicU64,
    pub(crate) quiesces: AtomicU64,
    pub(crate) wakes: AtomicU64,
    pub(crate) turns: AtomicU64,
    pub(crate) fsync_latency_us: Histogram,
    pub(crate) apply_batch_us: Histogram,
    pub(crate) peer_round_trip_us: Histogram,
}

/// A copy of a group's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// The current term.
    pub term: u64,
    /// The commit index this node knows.
    pub commit_index: u64,
    /// The index the state machine has applied.
    pub applied_index: u64,
    /// Committed entries not yet applied (`commit_index - applied_index`).
    pub apply_lag_entries: u64,
    /// Elections this node started (pre-votes excluded).
    pub elections: u64,
    /// Times the known leader changed.
    pub leader_changes: u64,
    /// Proposals made on this node.
    pub proposals: u64,
    /// Proposals that failed (not leader, dropped, timeout, too large, …).
    pub proposals_failed: u64,
    /// Proposals this node forwarded to the leader.
    pub proposals_forwarded: u64,
    /// Entries this node saw committed.
    pub entries_committed: u64,
    /// Entries applied to the state machine.
    pub entries_applied: u64,
    /// Linearizable reads served.
    pub reads: u64,
    /// Peer messages that failed to decode and were dropped.
    pub messages_decode_failed: u64,
    /// Peer messages dropped because the group's queue was full.
    pub messages_dropped: u64,
    /// Snapshots taken of the local state machine.
    pub snapshots_taken: u64,
    /// Snapshots streamed to followers.
    pub snapshots_sent: u64,
    /// Snapshots received and installed.
    pub snapshots_received: u64,
    /// The group is quiesced here: idle, not ticking.
    pub quiesced: bool,
    /// Times the group quiesced here.
    pub quiesces: u64,
    /// Times it woke from quiescence here.
    pub wakes: u64,
    /// Times the group's driver woke for an input (a tick, messages, requests, a durable
    /// write or applied batch it asked to hear of): what a node's groups cost in wake-ups.
    pub turns: u64,
    /// Time from a WAL append until it was durable, in microseconds.
    pub fsync_latency_us: HistogramSnapshot,
    /// Time to apply one batch of committed entries, in microseconds.
    pub apply_batch_us: HistogramSnapshot,
    /// From the oldest unanswered heartbeat to a peer until its answer, in microseconds.
    pub peer_round_trip_us: HistogramSnapshot,
}

impl GroupMetrics {
    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let commit_index = r(&self.commit_index);
        let applied_index = r(&self.applied_index);
        MetricsSnapshot {
            term: r(&self.term),
            commit_index,
            applied_index,
            apply_lag_entries: commit_index.saturating_sub(applied_index),
            elections: r(&self.elections),
            leader_changes: r(&self.leader_changes),
            proposals: r(&self.proposals),
            proposals_failed: r(&self.proposals_failed),
            proposals_forwarded: r(&self.proposals_forwarded),
            entries_committed: r(&self.entries_committed),
            entries_applied: r(&self.entries_applied),
            reads: r(&self.reads),
            messages_decode_failed: r(&self.messages_decode_failed),
            messages_dropped: r(&self.messages_dropped),
            snapshots_taken: r(&self.snapshots_taken),
            snapshots_sent: r(&self.snapshots_sent),
            snapshots_received: r(&self.snapshots_received),
            quiesced: r(&self.quiesced) != 0,
            quiesces: r(&self.quiesces),
            wakes: r(&self.wakes),
            turns: r(&self.turns),
            fsync_latency_us: self.fsync_latency_us.snapshot(),
            apply_batch_us: self.apply_batch_us.snapshot(),
            peer_round_trip_us: self.peer_round_trip_us.snapshot(),
        }
    }
}

pub(crate) fn inc(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_powers_of_two() {
        let h = Histogram::default();
        for v in [0, 1, 3, 1000, u64::MAX] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.buckets[0], (1, 1)); // 0
        assert_eq!(s.buckets[1], (2, 1)); // 1
        assert_eq!(s.buckets[2], (4, 1)); // 3
        assert_eq!(s.buckets[10], (1024, 1)); // 1000
        assert_eq!(s.buckets[HISTOGRAM_BUCKETS - 1], (u64::MAX, 1));
        assert_eq!(s.quantile_upper_bound(0.5), 4);
    }
}
