//! Capped exponential backoff with jitter for reconnecting to peers.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays between reconnect attempts to one peer.
///
/// The base delay doubles after every failure, from `backoff_ms_min` up to `backoff_ms_max`;
/// each delay is drawn uniformly from the upper half of the base. The jitter keeps the nodes
/// of a cluster that lost a peer at the same moment from redialling it in lockstep, and the
/// lower half bound keeps the growth meaningful.
#[derive(Debug)]
pub(crate) struct Backoff {
    min_ms: u64,
    max_ms: u64,
    base_ms: u64,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(min_ms: u64, max_ms: u64) -> Backoff {
        // A process-random seed without a dependency: the standard library seeds RandomState
        // from the operating system.
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(min_ms ^ max_ms.rotate_left(32));
        Backoff::with_seed(min_ms, max_ms, hasher.finish())
    }

    pub(crate) fn with_seed(min_ms: u64, max_ms: u64, seed: u64) -> Backoff {
        debug_assert!(min_ms <= max_ms);
        Backoff {
            min_ms,
            max_ms,
            base_ms: min_ms,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// Called after a connection succeeded: the next failure starts from the minimum again.
    pub(crate) fn reset(&mut self) {
        self.base_ms = self.min_ms;
    }

    /// The delay before the next attempt; grows the base for the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base_ms = self.base_ms;
        self.base_ms = base_ms.saturating_mul(2).clamp(self.min_ms, self.max_ms);
        let half_ms = base_ms / 2;
        let jitter_ms = self.next_random() % (base_ms - half_ms + 1);
        Duration::from_millis(half_ms + jitter_ms)
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stay_within_the_cap() {
        let mut backoff = Backoff::with_seed(10, 1000, 12345);
        let mut base_ms = 10;
        for _ in 0..64 {
            let delay_ms = backoff.next_delay().as_millis() as u64;
            assert!(
                delay_ms >= base_ms / 2 && delay_ms <= base_ms,
                "{delay_ms} vs {base_ms}"
            );
            base_ms = (base_ms * 2).min(1000);
        }
    }

    #[test]
    fn reset_returns_to_the_minimum() {
        let mut backoff = Backoff::with_seed(10, 1000, 7);
        for _ in 0..20 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(10));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut backoff = Backoff::with_seed(1000, 1000, 99);
        let delays: std::collections::HashSet<_> = (0..32).map(|_| backoff.next_delay()).collect();
        assert!(delays.len() > 1, "every delay was the same");
    }
}
