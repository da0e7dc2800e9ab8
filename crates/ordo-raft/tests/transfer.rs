//! Leadership transfer (thesis §3.10).

mod common;

use common::{config, data, Cluster};
use ordo_raft::{Config, Error, MessageBody, StateRole};

#[test]
fn leadership_moves_to_a_caught_up_follower() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "x");
    c.stabilize();
    c.node_mut(1).transfer_leader(2).unwrap();
    c.stabilize();
    assert_eq!(c.leaders(), vec![2]);
    assert_eq!(c.node(2).term(), 2);
}

#[test]
fn lagging_target_is_caught_up_before_it_is_told_to_campaign() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.propose(1, "a");
    c.propose(1, "b");
    c.stabilize();
    c.heal();
    c.delivered.clear();
    c.node_mut(1).transfer_leader(3).unwrap();
    c.stabilize();
    assert_eq!(c.leaders(), vec![3]);
    let first_timeout = c
        .delivered
        .iter()
        .position(|m| m.body == MessageBody::TimeoutNow)
        .unwrap();
    let last_append = c
        .delivered
        .iter()
        .position(|m| {
            m.to == 3
                && matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty())
        })
        .unwrap();
    assert!(
        last_append < first_timeout,
        "entries first, then TimeoutNow"
    );
    c.propose(3, "c");
    c.stabilize();
    assert_eq!(c.applied_data(1), vec!["a", "b", "c"]);
}

#[test]
fn transfer_campaign_overrides_leases_and_pre_vote() {
    let cfg = |id| Config {
        pre_vote: true,
        check_quorum: true,
        ..config(id)
    };
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    c.node_mut(1).transfer_leader(3).unwrap();
    c.stabilize();
    assert_eq!(c.leaders(), vec![3]);
}

#[test]
fn proposals_are_refused_during_a_transfer_which_aborts_after_an_election_timeout() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.node_mut(1).transfer_leader(3).unwrap();
    assert_eq!(c.node(1).lead_transferee(), Some(3));
    assert_eq!(
        c.node_mut(1).propose(data("x")),
        Err(Error::TransferInProgress)
    );
    for _ in 0..10 {
        c.tick(1);
    }
    c.stabilize();
    assert_eq!(c.node(1).lead_transferee(), None);
    assert_eq!(c.node(1).role(), StateRole::Leader);
    c.node_mut(1).propose(data("x")).unwrap();
}

#[test]
fn transfer_request_on_a_follower_is_forwarded_to_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(2).transfer_leader(3).unwrap();
    c.stabilize();
    assert_eq!(c.leaders(), vec![3]);
}

#[test]
fn transfer_to_a_learner_or_unknown_node_is_refused() {
    let mut c = Cluster::with_members(&[1, 2, 3], &[4], config);
    c.elect(1);
    assert_eq!(c.node_mut(1).transfer_leader(4), Err(Error::UnknownNode(4)));
    assert_eq!(c.node_mut(1).transfer_leader(9), Err(Error::UnknownNode(9)));
}
