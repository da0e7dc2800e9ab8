//! The bounded window of append messages in flight to one follower (pipelining).

use std::collections::VecDeque;

use crate::types::Index;

/// The last index of each append message sent but not yet acknowledged, oldest first,
/// bounded by a message count and a byte total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inflights {
    /// (last index of the message, bytes of its entries)
    queue: VecDeque<(Index, u64)>,
    bytes: u64,
    max_count: usize,
    max_bytes: u64,
}

impl Inflights {
    /// An empty window. It allocates on the first message, not before: every progress is
    /// made anew at each change of term, and only a leader's ever holds messages.
    pub fn new(max_count: usize, max_bytes: u64) -> Inflights {
        Inflights {
            queue: VecDeque::new(),
            bytes: 0,
            max_count,
            max_bytes,
        }
    }

    /// Records a message whose last entry is `index`. Indexes must increase.
    pub fn add(&mut self, index: Index, bytes: u64) {
        assert!(!self.full(), "inflights window overflow");
        if let Some(&(last, _)) = self.queue.back() {
            assert!(index > last, "inflight index {index} not above {last}");
        }
        self.queue.push_back((index, bytes));
        self.bytes += bytes;
    }

    /// Releases every message whose last index is at most `index` (acknowledged).
    pub fn free_le(&mut self, index: Index) {
        while let Some(&(i, b)) = self.queue.front() {
            if i > index {
                break;
            }
            self.queue.pop_front();
            self.bytes -= b;
        }
    }

    /// Releases the oldest message (a heartbeat response shows the follower is alive).
    pub fn free_first_one(&mut self) {
        if let Some((_, b)) = self.queue.pop_front() {
            self.bytes -= b;
        }
    }

    /// Whether no more messages may be sent.
    pub fn full(&self) -> bool {
        self.queue.len() >= self.max_count || (self.bytes >= self.max_bytes && self.max_bytes > 0)
    }

    /// The number of messages in flight.
    pub fn count(&self) -> usize {
        self.queue.len()
    }

    /// Forgets everything (on a state change).
    pub fn reset(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fills_at_max_count_and_frees_by_acknowledged_index() {
        let mut w = Inflights::new(3, 0);
        w.add(10, 1);
        w.add(20, 1);
        assert!(!w.full());
        w.add(30, 1);
        assert!(w.full());
        w.free_le(25);
        assert_eq!(w.count(), 1);
        assert!(!w.full());
        w.free_le(5);
        assert_eq!(w.count(), 1);
        w.free_first_one();
        assert_eq!(w.count(), 0);
    }

    #[test]
    fn window_fills_at_max_bytes() {
        let mut w = Inflights::new(100, 1000);
        w.add(1, 600);
        assert!(!w.full());
        w.add(2, 600);
        assert!(w.full());
        w.free_le(1);
        assert!(!w.full());
    }

    #[test]
    #[should_panic(expected = "overflow")]
    fn adding_to_a_full_window_is_a_bug() {
        let mut w = Inflights::new(1, 0);
        w.add(1, 0);
        w.add(2, 0);
    }
}
