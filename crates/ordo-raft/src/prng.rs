//! A tiny deterministic pseudo-random generator (SplitMix64) for randomized election
//! timeouts (§5.2). Seeded from `Config::seed`, so a simulation replays exactly.

#[derive(Clone, Debug)]
pub(crate) struct Prng {
    state: u64,
}

impl Prng {
    /// A generator for node `id` of a cluster seeded with `seed`: every (seed, id) pair
    /// gets an unrelated stream, so nodes sharing a seed still draw different timeouts.
    pub(crate) fn new(seed: u64, id: u64) -> Prng {
        let mut p = Prng { state: seed };
        let mixed = p.next_u64();
        let mut q = Prng { state: mixed ^ id };
        q.state = q.next_u64();
        q
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[0, bound)`; `bound` must be positive.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next_u64() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_sequence_and_values_stay_in_bounds() {
        let mut a = Prng::new(7, 1);
        let mut b = Prng::new(7, 1);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        assert_ne!(Prng::new(1, 1).next_u64(), Prng::new(2, 1).next_u64());
        assert_ne!(Prng::new(1, 1).next_u64(), Prng::new(1, 2).next_u64());
    }
}
