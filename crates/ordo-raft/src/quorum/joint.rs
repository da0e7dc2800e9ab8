//! Joint consensus (§6): decisions need a majority of both the incoming and the outgoing
//! configuration.

use std::collections::BTreeSet;

use super::majority::MajorityConfig;
use super::VoteResult;
use crate::types::{Index, NodeId};

/// Two majority configurations; `outgoing` is empty unless a change is in progress.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointConfig {
    /// The new (or only) voters.
    pub incoming: MajorityConfig,
    /// The old voters, while joint.
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    /// Whether `id` is a voter of either half.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// Every voter of either half.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming
            .ids()
            .union(self.outgoing.ids())
            .copied()
            .collect()
    }

    /// Whether the configuration is joint.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// The largest index committed by both halves.
    pub fn committed_index(&self, acked: impl Fn(NodeId) -> Option<Index>) -> Index {
        let i = self.incoming.committed_index(&acked);
        let o = self.outgoing.committed_index(&acked);
        i.min(o)
    }

    /// Won when both halves won, lost when either lost.
    pub fn vote_result(&self, votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let i = self.incoming.vote_result(&votes);
        let o = self.outgoing.vote_result(&votes);
        match (i, o) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn joint(inc: &[NodeId], out: &[NodeId]) -> JointConfig {
        JointConfig {
            incoming: MajorityConfig::new(inc.iter().copied().collect()),
            outgoing: MajorityConfig::new(out.iter().copied().collect()),
        }
    }

    #[test]
    fn joint_commit_is_the_minimum_of_both_halves() {
        let c = joint(&[1, 2, 3], &[3, 4, 5]);
        let acked: BTreeMap<NodeId, Index> = [(1, 9), (2, 9), (3, 2), (4, 1), (5, 1)].into();
        assert_eq!(c.committed_index(|id| acked.get(&id).copied()), 1);
        let acked: BTreeMap<NodeId, Index> = [(1, 9), (2, 9), (3, 5), (4, 7), (5, 1)].into();
        assert_eq!(c.committed_index(|id| acked.get(&id).copied()), 5);
    }

    #[test]
    fn non_joint_config_commits_by_incoming_majority_alone() {
        let c = joint(&[1, 2, 3], &[]);
        let acked: BTreeMap<NodeId, Index> = [(1, 4), (2, 4)].into();
        assert_eq!(c.committed_index(|id| acked.get(&id).copied()), 4);
    }

    #[test]
    fn joint_vote_needs_both_majorities() {
        let c = joint(&[1, 2, 3], &[1, 4, 5]);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (3, true)].into();
        assert_eq!(
            c.vote_result(|id| votes.get(&id).copied()),
            VoteResult::Pending
        );
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, true)].into();
        assert_eq!(c.vote_result(|id| votes.get(&id).copied()), VoteResult::Won);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (4, false), (5, false)].into();
        assert_eq!(
            c.vote_result(|id| votes.get(&id).copied()),
            VoteResult::Lost
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::collections::BTreeMap;

    /// The definition, by brute force: the largest index held by a majority of each half.
    fn committed_by_definition(c: &JointConfig, acked: &BTreeMap<NodeId, Index>) -> Index {
        let holds = |half: &MajorityConfig, i: Index| {
            half.is_empty()
                || half
                    .ids()
                    .iter()
                    .filter(|id| acked.get(id).copied().unwrap_or(0) >= i)
                    .count()
                    > half.len() / 2
        };
        let max = acked.values().copied().max().unwrap_or(0);
        (0..=max)
            .rev()
            .find(|&i| holds(&c.incoming, i) && holds(&c.outgoing, i))
            .unwrap_or(0)
    }

    #[test]
    fn joint_committed_index_matches_its_definition() {
        // Deterministic: the same cases on every run.
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: 2000,
                failure_persistence: None,
                ..Config::default()
            },
            proptest::test_runner::TestRng::deterministic_rng(
                proptest::test_runner::RngAlgorithm::ChaCha,
            ),
        );
        let ids = proptest::collection::btree_set(1u64..8, 1..6);
        let strategy = (
            ids.clone(),
            proptest::option::of(ids),
            proptest::collection::vec(0u64..20, 8),
        );
        runner
            .run(&strategy, |(inc, out, acks)| {
                let c = JointConfig {
                    incoming: MajorityConfig::new(inc),
                    outgoing: MajorityConfig::new(out.unwrap_or_default()),
                };
                let acked: BTreeMap<NodeId, Index> = acks
                    .iter()
                    .enumerate()
                    .map(|(i, &a)| (i as NodeId, a))
                    .collect();
                let got = c.committed_index(|id| acked.get(&id).copied());
                prop_assert_eq!(got, committed_by_definition(&c, &acked));
                Ok(())
            })
            .unwrap();
    }
}
