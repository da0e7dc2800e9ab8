//! Membership changes: learners, promotion, joint consensus (§6), removing the leader.

mod common;

use common::{config, Cluster};
use ordo_raft::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Error, StateRole,
};

fn change(c: &mut Cluster, leader: u64, cc: ConfChange) {
    c.node_mut(leader).propose_conf_change(&cc).unwrap();
    c.stabilize();
}

#[test]
fn learner_catches_up_without_voting_then_is_promoted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "before");
    c.stabilize();
    change(&mut c, 1, ConfChange::single(ConfChangeKind::AddLearner, 4));
    c.add_node_with(
        4,
        ConfState {
            learners: vec![4],
            ..ConfState::with_voters([1, 2, 3])
        },
    );
    c.tick_all(2);
    assert_eq!(c.applied_data(4), vec!["before"]);
    assert!(c.node(1).status().progress[&4].is_learner);
    assert!(
        c.node_mut(4).campaign().is_err(),
        "a learner cannot campaign"
    );
    // A learner's acknowledgement does not count: with 2 and 3 cut off nothing commits.
    c.isolate(2);
    c.isolate(3);
    c.cut.remove(&(1, 4));
    c.cut.remove(&(4, 1));
    let id = c.node_mut(1).propose(common::data("x")).unwrap();
    c.stabilize();
    assert!(c.node(1).commit_index() < id.index);
    c.heal();
    c.tick_all(2);
    change(&mut c, 1, ConfChange::single(ConfChangeKind::AddVoter, 4));
    c.tick_all(2);
    assert_eq!(c.node(1).conf_state().voters, vec![1, 2, 3, 4]);
    assert!(c.node(1).conf_state().learners.is_empty());
    assert!(!c.node(1).status().progress[&4].is_learner);
    assert_eq!(c.node(4).conf_state().voters, vec![1, 2, 3, 4]);
}

#[test]
fn removed_leader_steps_down_once_its_removal_commits() {
    let mut c = Cluster::new(3);
    c.elect(1);
    change(&mut c, 1, ConfChange::single(ConfChangeKind::Remove, 1));
    assert_eq!(c.node(1).role(), StateRole::Follower);
    assert_eq!(c.node(2).conf_state().voters, vec![2, 3]);
    assert!(c.node_mut(1).campaign().is_err(), "no longer a voter");
    c.tick_all(25);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
    let leader = leaders[0];
    let id = c
        .node_mut(leader)
        .propose(common::data("two-node"))
        .unwrap();
    c.stabilize();
    assert_eq!(c.node(leader).commit_index(), id.index);
}

#[test]
fn replacing_a_voter_passes_through_joint_consensus_and_leaves_automatically() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let cc = ConfChange {
        transition: ConfChangeTransition::Auto,
        changes: vec![
            ConfChangeSingle {
                kind: ConfChangeKind::AddVoter,
                node_id: 4,
            },
            ConfChangeSingle {
                kind: ConfChangeKind::Remove,
                node_id: 3,
            },
        ],
        ..ConfChange::default()
    };
    c.add_node_with(4, ConfState::with_voters([1, 2, 4]));
    c.node_mut(1).propose_conf_change(&cc).unwrap();
    c.process_ready(1);
    // Step until the joint configuration is applied on the leader.
    let mut saw_joint = false;
    for _ in 0..100 {
        if !c.deliver_one() {
            break;
        }
        saw_joint |= c.node(1).conf_state().is_joint();
    }
    c.stabilize();
    c.tick_all(2);
    assert!(saw_joint, "the change went through a joint configuration");
    assert_eq!(c.node(1).conf_state(), ConfState::with_voters([1, 2, 4]));
    assert_eq!(c.node(2).conf_state(), ConfState::with_voters([1, 2, 4]));
    let id = c.node_mut(1).propose(common::data("after")).unwrap();
    c.isolate(3);
    c.stabilize();
    c.tick_all(1);
    assert_eq!(
        c.node(1).commit_index(),
        id.index,
        "node 3 is not needed any more"
    );
}

#[test]
fn explicit_joint_configuration_stays_until_left() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let cc = ConfChange {
        transition: ConfChangeTransition::JointExplicit,
        changes: vec![ConfChangeSingle {
            kind: ConfChangeKind::AddLearner,
            node_id: 3,
        }],
        ..ConfChange::default()
    };
    change(&mut c, 1, cc);
    let cs = c.node(1).conf_state();
    assert!(cs.is_joint());
    assert_eq!(cs.learners_next, vec![3]);
    change(&mut c, 1, ConfChange::leave_joint());
    let cs = c.node(1).conf_state();
    assert_eq!((cs.voters, cs.learners), (vec![1, 2], vec![3]));
}

#[test]
fn a_second_change_is_refused_while_one_is_pending() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::AddLearner, 4))
        .unwrap();
    assert_eq!(
        c.node_mut(1)
            .propose_conf_change(&ConfChange::single(ConfChangeKind::AddLearner, 5)),
        Err(Error::ConfChangePending)
    );
    c.stabilize();
    c.node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::AddLearner, 5))
        .unwrap();
}

#[test]
fn invalid_change_is_refused_at_proposal() {
    let mut c = Cluster::new(1);
    c.elect(1);
    let r = c
        .node_mut(1)
        .propose_conf_change(&ConfChange::single(ConfChangeKind::Remove, 1));
    assert!(matches!(r, Err(Error::InvalidConfChange(_))));
    assert!(matches!(
        c.node_mut(1)
            .propose_conf_change(&ConfChange::leave_joint()),
        Err(Error::InvalidConfChange(_))
    ));
}

#[test]
fn configuration_is_rebuilt_from_the_log_on_restart() {
    let mut c = Cluster::new(3);
    c.elect(1);
    change(&mut c, 1, ConfChange::single(ConfChangeKind::AddLearner, 4));
    c.propose(1, "x");
    c.stabilize();
    let applied = c.node(2).applied_index();
    c.crash(2);
    let storage = c.crashed.remove(&2).unwrap();
    let cfg = ordo_raft::Config {
        applied_index: applied,
        ..config(2)
    };
    let node = ordo_raft::RawNode::new(cfg, storage).unwrap();
    assert_eq!(node.conf_state().learners, vec![4]);
}
