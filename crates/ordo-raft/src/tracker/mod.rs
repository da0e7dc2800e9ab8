//! The leader's bookkeeping of every peer: replication progress, the configuration they
//! form, and the votes of an election in progress.

pub mod inflights;
pub mod progress;

use std::collections::{BTreeMap, BTreeSet};

use crate::quorum::joint::JointConfig;
use crate::quorum::majority::MajorityConfig;
use crate::quorum::VoteResult;
use crate::types::{ConfState, Index, NodeId};
use progress::Progress;

/// Progress of every member, by id.
pub type ProgressMap = BTreeMap<NodeId, Progress>;

/// A membership configuration as the tracker holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Voters (joint while a change is in progress).
    pub voters: JointConfig,
    /// Learners; disjoint from every voter set.
    pub learners: BTreeSet<NodeId>,
    /// Outgoing voters that become learners when the joint configuration is left.
    pub learners_next: BTreeSet<NodeId>,
    /// Leave the joint configuration automatically.
    pub auto_leave: bool,
}

impl TrackerConfig {
    /// Builds the configuration a [`ConfState`] describes.
    pub fn from_conf_state(cs: &ConfState) -> TrackerConfig {
        TrackerConfig {
            voters: JointConfig {
                incoming: MajorityConfig::new(cs.voters.iter().copied().collect()),
                outgoing: MajorityConfig::new(cs.voters_outgoing.iter().copied().collect()),
            },
            learners: cs.learners.iter().copied().collect(),
            learners_next: cs.learners_next.iter().copied().collect(),
            auto_leave: cs.auto_leave,
        }
    }

    /// The [`ConfState`] describing this configuration.
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.ids().iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
            voters_outgoing: self.voters.outgoing.ids().iter().copied().collect(),
            learners_next: self.learners_next.iter().copied().collect(),
            auto_leave: self.auto_leave,
        }
    }

    /// Every member: voters of both halves, learners and next learners.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.ids();
        all.extend(&self.learners);
        all.extend(&self.learners_next);
        all
    }

    /// Whether the structural invariants hold (for configurations from the network).
    pub(crate) fn is_valid(&self) -> bool {
        self.learners.iter().all(|l| !self.voters.contains(*l))
            && self
                .learners_next
                .iter()
                .all(|l| self.voters.outgoing.contains(*l) && !self.learners.contains(l))
            && (self.voters.is_joint() || (self.learners_next.is_empty() && !self.auto_leave))
            && !self.members().contains(&0)
    }

    /// Checks the structural invariants; a violation is a bug.
    pub(crate) fn assert_invariants(&self) {
        for l in &self.learners {
            assert!(
                !self.voters.contains(*l),
                "node {l} is both learner and voter"
            );
        }
        for l in &self.learners_next {
            assert!(
                self.voters.outgoing.contains(*l),
                "next learner {l} is not an outgoing voter"
            );
            assert!(
                !self.learners.contains(l),
                "node {l} is learner and next learner"
            );
        }
        assert!(
            self.voters.is_joint() || (self.learners_next.is_empty() && !self.auto_leave),
            "non-joint configuration with joint-only state"
        );
    }
}

/// Progress, configuration and votes.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    pub(crate) config: TrackerConfig,
    pub(crate) progress: ProgressMap,
    votes: BTreeMap<NodeId, bool>,
    pub(crate) max_inflight_msgs: usize,
    pub(crate) max_inflight_bytes: u64,
}

impl ProgressTracker {
    pub(crate) fn new(max_inflight_msgs: usize, max_inflight_bytes: u64) -> ProgressTracker {
        ProgressTracker {
            config: TrackerConfig::default(),
            progress: ProgressMap::new(),
            votes: BTreeMap::new(),
            max_inflight_msgs,
            max_inflight_bytes,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    /// Progress of every member.
    pub fn progress(&self) -> &ProgressMap {
        &self.progress
    }

    /// The index committed by the voters' acknowledged match indexes.
    pub(crate) fn committed(&self) -> Index {
        let p = &self.progress;
        self.config
            .voters
            .committed_index(|id| p.get(&id).map(|pr| pr.match_index))
    }

    pub(crate) fn reset_votes(&mut self) {
        self.votes.clear();
    }

    /// Records `id`'s answer; the first answer from a voter counts.
    pub(crate) fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub(crate) fn tally(&self) -> (usize, usize, VoteResult) {
        let granted = self.votes.values().filter(|&&g| g).count();
        let rejected = self.votes.len() - granted;
        (
            granted,
            rejected,
            self.config
                .voters
                .vote_result(|id| self.votes.get(&id).copied()),
        )
    }

    /// Whether the voters heard from recently form a quorum (check-quorum). `self_id`
    /// always counts as active.
    pub(crate) fn quorum_active(&self, self_id: NodeId) -> bool {
        let p = &self.progress;
        let res = self.config.voters.vote_result(|id| {
            if id == self_id {
                return Some(true);
            }
            p.get(&id).map(|pr| pr.recent_active)
        });
        res == VoteResult::Won
    }

    /// Whether `id` can vote in the current configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.config.voters.contains(id)
    }

    /// Whether the only voter is `id`.
    pub(crate) fn is_singleton(&self, id: NodeId) -> bool {
        let ids = self.config.voters.ids();
        ids.len() == 1 && ids.contains(&id)
    }

    /// Makes `config` current, building progress for new members (probing from
    /// `next_index`) and dropping departed ones.
    pub(crate) fn apply_config(
        &mut self,
        config: TrackerConfig,
        mut progress: ProgressMap,
        next_index: Index,
    ) {
        config.assert_invariants();
        let members = config.members();
        progress.retain(|id, _| members.contains(id));
        for id in &members {
            let pr = progress.entry(*id).or_insert_with(|| {
                let mut p =
                    Progress::new(next_index, self.max_inflight_msgs, self.max_inflight_bytes);
                // A new member gets an election timeout before check-quorum counts it
                // against the leader.
                p.recent_active = true;
                p
            });
            pr.is_learner = config.learners.contains(id) || config.learners_next.contains(id);
            if config.learners_next.contains(id) {
                // Still an outgoing voter until the joint configuration is left.
                pr.is_learner = false;
            }
        }
        self.config = config;
        self.progress = progress;
    }
}
