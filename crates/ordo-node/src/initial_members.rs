//! The configuration a group starts with on a node that holds no state of it yet.
//!
//! Every member of a new group bootstraps it alone, from the same configuration: a first
//! snapshot at index 1 holding the voters and learners (see `bootstrap` in `node.rs`), so
//! the members agree on the log's first entry without talking. The configuration must
//! therefore be the same on every member, and it is checked before anything is written.

use std::collections::BTreeSet;

use ordo_raft::ConfState;

use crate::codec::CONF_STATE_NODES_MAX;
use crate::transport::NodeId;

/// Who a group is made of when this node bootstraps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum InitialMembers {
    /// Every configured peer (`NodeConfig::peers`) votes, as in the cluster's first group;
    /// a joining node (`NodeConfig::join`) waits to be added instead.
    #[default]
    Configured,
    /// A group of its own replica set: these nodes vote and these receive the log without
    /// voting. Every member starts the group with the same two lists, a joining node too.
    /// Each must be a node whose address this node knows (a configured peer, or a peer
    /// learned from a group's members); a node in neither list does not host the group.
    Members {
        /// The voters; at least one.
        voters: Vec<NodeId>,
        /// The learners.
        learners: Vec<NodeId>,
    },
    /// Wait to be added to a group that exists on other nodes, by a membership change
    /// there (`Group::change_membership`); its leader sends the state.
    Join,
}

impl InitialMembers {
    /// A group of `voters` and no learners.
    pub fn voters(voters: impl IntoIterator<Item = NodeId>) -> InitialMembers {
        InitialMembers::Members {
            voters: voters.into_iter().collect(),
            learners: Vec::new(),
        }
    }
}

/// Why the members given for a new group were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InitialMembersError {
    /// No voter: nobody could be elected.
    #[error("a group needs at least one voter")]
    NoVoters,
    /// A node named twice in one list.
    #[error("node {0} is named twice")]
    Duplicate(NodeId),
    /// A node named both voter and learner.
    #[error("node {0} is named both voter and learner")]
    VoterAndLearner(NodeId),
    /// A node whose address this node does not know (0 is never a node).
    #[error(
        "node {0} is not a node this one knows the address of (a configured peer, or one \
         learned from a group's members)"
    )]
    UnknownNode(NodeId),
    /// More members than a configuration may hold.
    #[error("{count} members, more than the {max} a group may have")]
    TooMany {
        /// How many were given.
        count: usize,
        /// [`CONF_STATE_NODES_MAX`].
        max: usize,
    },
}

/// Checks explicit members and turns them into the configuration to bootstrap with.
/// `known` tells whether a node's address is known (this node's own included).
pub(crate) fn conf_state_of(
    voters: &[NodeId],
    learners: &[NodeId],
    known: impl Fn(NodeId) -> bool,
) -> Result<ConfState, InitialMembersError> {
    if voters.is_empty() {
        return Err(InitialMembersError::NoVoters);
    }
    let count = voters.len() + learners.len();
    if count > CONF_STATE_NODES_MAX {
        return Err(InitialMembersError::TooMany {
            count,
            max: CONF_STATE_NODES_MAX,
        });
    }
    let distinct = |list: &[NodeId]| -> Result<BTreeSet<NodeId>, InitialMembersError> {
        let mut seen = BTreeSet::new();
        for &id in list {
            if !seen.insert(id) {
                return Err(InitialMembersError::Duplicate(id));
            }
        }
        Ok(seen)
    };
    let voters = distinct(voters)?;
    let learners = distinct(learners)?;
    if let Some(&both) = voters.intersection(&learners).next() {
        return Err(InitialMembersError::VoterAndLearner(both));
    }
    if let Some(&unknown) = voters
        .iter()
        .chain(&learners)
        .find(|&&id| id == 0 || !known(id))
    {
        return Err(InitialMembersError::UnknownNode(unknown));
    }
    Ok(ConfState {
        voters: voters.into_iter().collect(),
        learners: learners.into_iter().collect(),
        ..ConfState::default()
    })
}

/// Every node a configuration names: voters of both halves, learners and next learners.
pub(crate) fn members_of(conf: &ConfState) -> BTreeSet<NodeId> {
    conf.voters
        .iter()
        .chain(&conf.learners)
        .chain(&conf.voters_outgoing)
        .chain(&conf.learners_next)
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(id: NodeId) -> bool {
        (1..=5).contains(&id)
    }

    #[test]
    fn voters_and_learners_become_a_sorted_configuration() {
        let conf = conf_state_of(&[3, 1, 2], &[5], known).unwrap();
        assert_eq!(conf.voters, vec![1, 2, 3]);
        assert_eq!(conf.learners, vec![5]);
        assert!(!conf.is_joint() && !conf.auto_leave);
        assert_eq!(members_of(&conf), BTreeSet::from([1, 2, 3, 5]));
    }

    #[test]
    fn bad_members_are_refused_naming_the_node() {
        use InitialMembersError::*;
        assert_eq!(conf_state_of(&[], &[1], known), Err(NoVoters));
        assert_eq!(conf_state_of(&[1, 2, 1], &[], known), Err(Duplicate(1)));
        assert_eq!(conf_state_of(&[1], &[4, 4], known), Err(Duplicate(4)));
        assert_eq!(conf_state_of(&[1, 2], &[2], known), Err(VoterAndLearner(2)));
        assert_eq!(conf_state_of(&[1, 9], &[], known), Err(UnknownNode(9)));
        assert_eq!(conf_state_of(&[1], &[0], |_| true), Err(UnknownNode(0)));
        let many: Vec<NodeId> = (1..=CONF_STATE_NODES_MAX as u64 + 1).collect();
        assert!(matches!(
            conf_state_of(&many, &[], |_| true),
            Err(TooMany { .. })
        ));
    }
}
