//! The groups of a simulated cluster besides the main one: which exist, on which nodes, and
//! which were removed, as the cluster's metadata would tell every node.
//!
//! The main group ([`MAIN_GROUP`](crate::node::MAIN_GROUP)) is hosted by every node and is
//! where membership changes happen. Every other group is created at run time with a fixed
//! configuration — voters and perhaps a learner, a subset of the nodes — and lives until it is
//! removed; its id is never used again.

use std::collections::{BTreeMap, BTreeSet};

use ordo_node::GroupId;
use ordo_raft::{ConfState, NodeId};

use crate::prng::Prng;

/// Ids of groups created at run time start here (the main group is 1).
const FIRST_GROUP_ID: u64 = 2;

/// The groups created at run time and the ones removed since.
#[derive(Debug, Clone)]
pub struct GroupRegistry {
    /// Groups that exist, with the configuration each was created with.
    live: BTreeMap<GroupId, ConfState>,
    /// Groups removed; a node down at the time removes them at its next boot.
    removed: BTreeSet<GroupId>,
    next_id: u64,
}

impl Default for GroupRegistry {
    fn default() -> GroupRegistry {
        GroupRegistry {
            live: BTreeMap::new(),
            removed: BTreeSet::new(),
            next_id: FIRST_GROUP_ID,
        }
    }
}

/// A group's members: its voters and its learners.
pub fn members(conf: &ConfState) -> Vec<NodeId> {
    conf.voters.iter().chain(&conf.learners).copied().collect()
}

impl GroupRegistry {
    /// No group besides the main one.
    pub fn new() -> GroupRegistry {
        GroupRegistry::default()
    }

    /// Picks a configuration for a new group among `candidates`: 1, 3 or 5 voters as there
    /// are nodes for, and sometimes one learner among the others. `None` without candidates.
    pub fn pick_conf(prng: &mut Prng, candidates: &[NodeId]) -> Option<ConfState> {
        let sizes: Vec<usize> = [1, 3, 5]
            .into_iter()
            .filter(|&size| size <= candidates.len())
            .collect();
        let &size = prng.choose(&sizes)?;
        let mut shuffled = candidates.to_vec();
        prng.shuffle(&mut shuffled);
        let (voters, others) = shuffled.split_at(size);
        let mut conf = ConfState::with_voters(voters.iter().copied());
        if let (Some(&learner), true) = (others.first(), prng.chance(1, 3)) {
            conf.learners.push(learner);
        }
        Some(conf)
    }

    /// Registers a new group with `conf` and returns its fresh id.
    pub fn create(&mut self, conf: ConfState) -> GroupId {
        assert!(!conf.voters.is_empty(), "a group needs a voter");
        let group = GroupId(self.next_id);
        self.next_id += 1;
        self.live.insert(group, conf);
        group
    }

    /// Marks `group` removed; returns its configuration, or `None` if it did not exist.
    pub fn remove(&mut self, group: GroupId) -> Option<ConfState> {
        let conf = self.live.remove(&group)?;
        self.removed.insert(group);
        Some(conf)
    }

    /// The groups that exist, with their configurations, in id order.
    pub fn live(&self) -> &BTreeMap<GroupId, ConfState> {
        &self.live
    }

    /// The groups removed so far.
    pub fn removed(&self) -> &BTreeSet<GroupId> {
        &self.removed
    }

    /// Whether `group` was removed.
    pub fn is_removed(&self, group: GroupId) -> bool {
        self.removed.contains(&group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_groups_voters_are_one_three_or_five_distinct_candidates() {
        let candidates = [1, 2, 3, 4, 5];
        let mut sizes = BTreeSet::new();
        let mut learners = 0;
        for seed in 0..100 {
            let mut prng = Prng::new(seed);
            let conf = GroupRegistry::pick_conf(&mut prng, &candidates).expect("candidates");
            let all = members(&conf);
            let distinct: BTreeSet<NodeId> = all.iter().copied().collect();
            assert_eq!(distinct.len(), all.len(), "seed {seed}: {conf:?}");
            assert!(all.iter().all(|id| candidates.contains(id)));
            sizes.insert(conf.voters.len());
            learners += conf.learners.len();
        }
        assert_eq!(sizes, BTreeSet::from([1, 3, 5]));
        assert!(learners > 0);
    }

    #[test]
    fn a_small_cluster_gets_groups_it_can_hold() {
        let mut prng = Prng::new(3);
        for _ in 0..20 {
            let conf = GroupRegistry::pick_conf(&mut prng, &[4, 9]).expect("candidates");
            assert_eq!(conf.voters.len(), 1);
        }
        assert!(GroupRegistry::pick_conf(&mut prng, &[]).is_none());
    }

    #[test]
    fn removed_ids_are_never_reused() {
        let mut registry = GroupRegistry::new();
        let first = registry.create(ConfState::with_voters([1]));
        assert!(registry.remove(first).is_some());
        assert!(registry.remove(first).is_none());
        let second = registry.create(ConfState::with_voters([1]));
        assert_ne!(first, second);
        assert!(registry.is_removed(first) && !registry.is_removed(second));
        assert_eq!(
            registry.live().keys().copied().collect::<Vec<_>>(),
            [second]
        );
    }
}
