//! A simple majority of one set of voters.

use std::collections::BTreeSet;

use super::VoteResult;
use crate::types::{Index, NodeId};

/// A set of voters decided by simple majority.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MajorityConfig {
    voters: BTreeSet<NodeId>,
}

impl MajorityConfig {
    /// A configuration of the given voters.
    pub fn new(voters: BTreeSet<NodeId>) -> MajorityConfig {
        MajorityConfig { voters }
    }

    /// The voters.
    pub fn ids(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    pub(crate) fn ids_mut(&mut self) -> &mut BTreeSet<NodeId> {
        &mut self.voters
    }

    /// Whether `id` votes.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// The number of voters.
    pub fn len(&self) -> usize {
        self.voters.len()
    }

    /// Whether there are no voters.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// The largest index stored on a majority, given each voter's acknowledged index
    /// (`None` for unknown, counted as 0). An empty configuration commits everything, so
    /// that it never constrains a joint configuration.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        let n = self.voters.len();
        if n == 0 {
            return Index::MAX;
        }
        // Small clusters are the norm: sort on the stack.
        let mut stack = [0 as Index; 16];
        let mut heap;
        let buf: &mut [Index] = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap = vec![0; n];
            &mut heap
        };
        for (slot, &id) in buf.iter_mut().zip(&self.voters) {
            *slot = acked(id).unwrap_or(0);
        }
        buf.sort_unstable();
        // With ascending order, every value at or above position n - (n/2 + 1) is held by
        // a majority.
        buf[n - (n / 2 + 1)]
    }

    /// How an election stands given each voter's answer (`None`: no answer yet). An empty
    /// configuration wins, so that it never constrains a joint configuration.
    pub fn vote_result(&self, votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0, 0);
        for &id in &self.voters {
            match votes(id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let q = self.voters.len() / 2 + 1;
        if granted >= q {
            VoteResult::Won
        } else if granted + missing >= q {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg(ids: &[NodeId]) -> MajorityConfig {
        MajorityConfig::new(ids.iter().copied().collect())
    }

    #[test]
    fn committed_index_is_the_highest_index_a_majority_holds() {
        let c = cfg(&[1, 2, 3]);
        let acked: BTreeMap<NodeId, Index> = [(1, 5), (2, 3), (3, 1)].into();
        assert_eq!(c.committed_index(|id| acked.get(&id).copied()), 3);
        let c5 = cfg(&[1, 2, 3, 4, 5]);
        let acked: BTreeMap<NodeId, Index> = [(1, 9), (2, 9), (3, 4), (4, 2)].into();
        assert_eq!(c5.committed_index(|id| acked.get(&id).copied()), 4);
        let c4 = cfg(&[1, 2, 3, 4]);
        let acked: BTreeMap<NodeId, Index> = [(1, 9), (2, 7), (3, 4), (4, 2)].into();
        assert_eq!(
            c4.committed_index(|id| acked.get(&id).copied()),
            4,
            "needs 3 of 4"
        );
    }

    #[test]
    fn empty_majority_never_constrains() {
        assert_eq!(cfg(&[]).committed_index(|_| None), Index::MAX);
        assert_eq!(cfg(&[]).vote_result(|_| None), VoteResult::Won);
    }

    #[test]
    fn vote_result_is_pending_until_the_outcome_is_certain() {
        let c = cfg(&[1, 2, 3, 4, 5]);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (3, false)].into();
        assert_eq!(
            c.vote_result(|id| votes.get(&id).copied()),
            VoteResult::Pending
        );
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, true)].into();
        assert_eq!(c.vote_result(|id| votes.get(&id).copied()), VoteResult::Won);
        let votes: BTreeMap<NodeId, bool> = [(1, false), (2, false), (4, false)].into();
        assert_eq!(
            c.vote_result(|id| votes.get(&id).copied()),
            VoteResult::Lost
        );
    }
}
