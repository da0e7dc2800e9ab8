//! Leader election (§5.2), the voting rule (§5.4.1), pre-vote and check-quorum
//! (thesis §9.6), and the persistence ordering of votes.

mod common;

use common::{config, Cluster};
use ordo_raft::{ConfState, Config, MemStorage, Message, MessageBody, RawNode, StateRole};

fn single_node() -> RawNode<MemStorage> {
    RawNode::new(
        config(1),
        MemStorage::new_with_conf_state(ConfState::with_voters([1])),
    )
    .unwrap()
}

#[test]
fn follower_campaigns_only_after_its_randomized_election_timeout() {
    let mut c = Cluster::new(3);
    c.tick_all(9);
    assert!(
        c.leaders().is_empty(),
        "no election before the minimum timeout"
    );
    c.tick_all(11);
    assert_eq!(c.leaders().len(), 1, "one leader within twice the timeout");
    assert_eq!(
        c.node(c.leaders()[0]).term(),
        1,
        "distinct timeouts: no split vote"
    );
}

#[test]
fn elections_replay_exactly_from_the_same_seeds() {
    let run = |seed: u64| {
        let mut c = Cluster::with_config(5, move |id| Config {
            seed: seed + id,
            ..config(id)
        });
        c.tick_all(25);
        (c.leaders(), c.nodes.values().map(|n| n.term()).max())
    };
    assert_eq!(run(7), run(7));
    let outcomes: std::collections::BTreeSet<_> = (0..16).map(|s| run(s * 1000).0).collect();
    assert!(
        outcomes.len() > 1,
        "different seeds elect different leaders"
    );
}

#[test]
fn candidate_counts_its_own_vote_only_after_persisting_it() {
    let mut n = single_node();
    n.campaign().unwrap();
    assert_eq!(n.role(), StateRole::Candidate);
    let rd = n.ready();
    let hs = rd.hard_state.expect("term and vote to persist");
    assert_eq!((hs.term, hs.vote), (1, 1));
    assert!(rd.must_sync());
    assert_eq!(
        n.role(),
        StateRole::Candidate,
        "not leader before the vote is durable"
    );
    n.storage_mut().set_hard_state(hs);
    n.advance();
    assert_eq!(n.role(), StateRole::Leader);
}

#[test]
fn vote_grant_is_sent_only_after_persisting() {
    let mut n = RawNode::new(
        config(2),
        MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3])),
    )
    .unwrap();
    n.step(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::RequestVote {
            last_log_index: 0,
            last_log_term: 0,
            leadership_transfer: false,
        },
    })
    .unwrap();
    let rd = n.ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, 1)));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages.len(), 1);
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::RequestVoteResponse { reject: false }
    );
}

#[test]
fn node_votes_at_most_once_per_term() {
    let mut c = Cluster::new(3);
    let vote = |from| Message {
        from,
        to: 3,
        term: 1,
        body: MessageBody::RequestVote {
            last_log_index: 0,
            last_log_term: 0,
            leadership_transfer: false,
        },
    };
    c.node_mut(3).step(vote(1)).unwrap();
    c.node_mut(3).step(vote(2)).unwrap();
    let rd = c.node_mut(3).ready();
    let answers: Vec<_> = rd
        .persisted_messages
        .iter()
        .map(|m| (m.to, m.body.clone()))
        .collect();
    assert_eq!(
        answers,
        vec![
            (1, MessageBody::RequestVoteResponse { reject: false }),
            (2, MessageBody::RequestVoteResponse { reject: true }),
        ]
    );
}

#[test]
fn pre_vote_keeps_a_partitioned_node_from_raising_its_term() {
    let mut c = Cluster::with_config(3, |id| Config {
        pre_vote: true,
        ..config(id)
    });
    c.elect(1);
    c.isolate(3);
    c.tick_all(50);
    assert_eq!(
        c.node(3).term(),
        1,
        "pre-votes fail, so the term never moves"
    );
    c.heal();
    c.tick_all(5);
    assert_eq!(
        c.leaders(),
        vec![1],
        "the returning node does not depose the leader"
    );
    assert_eq!(c.node(1).term(), 1);
}

#[test]
fn without_pre_vote_a_returning_node_forces_a_new_term() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.tick_all(50);
    assert!(
        c.node(3).term() > 1,
        "the isolated node campaigns and raises its term"
    );
    c.heal();
    c.tick_all(30);
    assert!(c.node(1).term() > 1, "the old term is over");
    assert_eq!(c.leaders().len(), 1);
}

#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    let mut c = Cluster::with_config(3, |id| Config {
        check_quorum: true,
        ..config(id)
    });
    c.elect(1);
    c.isolate(1);
    for _ in 0..25 {
        c.tick(1);
    }
    assert_eq!(c.node(1).role(), StateRole::Follower);
}

#[test]
fn check_quorum_follower_ignores_vote_requests_while_its_leader_is_live() {
    let mut c = Cluster::with_config(3, |id| Config {
        check_quorum: true,
        ..config(id)
    });
    c.elect(1);
    let disruptive = Message {
        from: 3,
        to: 2,
        term: 5,
        body: MessageBody::RequestVote {
            last_log_index: 99,
            last_log_term: 4,
            leadership_transfer: false,
        },
    };
    c.node_mut(2).step(disruptive.clone()).unwrap();
    assert_eq!(c.node(2).term(), 1, "ignored within the lease");
    assert!(!c.node(2).has_ready());
    // Once the leader has been silent for an election timeout, the request counts.
    c.isolate(1);
    for _ in 0..10 {
        c.tick(2);
    }
    c.node_mut(2).step(disruptive).unwrap();
    assert_eq!(c.node(2).term(), 5);
}

#[test]
fn stale_term_messages_are_ignored() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(2).campaign().unwrap();
    c.stabilize();
    let term = c.node(2).term();
    assert!(term >= 2);
    let stale = Message {
        from: 3,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
        },
    };
    c.node_mut(2).step(stale).unwrap();
    assert_eq!(c.node(2).term(), term);
    assert_ne!(c.node(2).leader_id(), 3);
}
