//! The behaviours the seed document walks through, replayed on a real in-memory cluster.

mod common;

use common::{describe, Cluster};
use ordo_raft::{MessageBody, StateRole};

/// Seed 001, "Log Consistency": the leader's log is [1..5], a follower's [1,2,3]. The
/// leader's first append (prev=5) is rejected; the follower's hint says its log can match
/// at most up to 3, so the leader skips straight there (the seed steps back one entry per
/// round; the hint saves the round for entry 4) and the follower catches up to 6.
#[test]
fn leader_backtracks_to_follower_with_shorter_log_and_fills_the_gap() {
    let mut c = Cluster::new(3);
    c.elect(1); // entry 1: node 1's no-op
    c.propose(1, "a");
    c.propose(1, "b");
    c.stabilize(); // entries 1..3 everywhere
    c.isolate(3);
    c.propose(1, "c");
    c.propose(1, "d");
    c.stabilize(); // entries 4, 5 on nodes 1 and 2 only
    assert_eq!(c.log_of(2).len(), 5);
    assert_eq!(c.log_of(3).len(), 3);

    // Node 2 (log [1..5]) becomes leader; its no-op is entry 6.
    c.crash(1);
    c.heal();
    c.delivered.clear();
    c.elect(2);

    let exchange: Vec<String> = c
        .delivered
        .iter()
        .filter(|m| (m.from, m.to) == (2, 3) || (m.from, m.to) == (3, 2))
        .filter_map(describe)
        .collect();
    assert_eq!(
        exchange,
        vec![
            "2->3 Append(prev=5, entries=[6])",
            "3->2 Reject(prev=5, hint=(3, 1))",
            "2->3 Append(prev=3, entries=[4, 5, 6])",
            "3->2 Accept(last=6)",
            // Entry 6 is now on a majority: a notice carries the new commit index, and
            // needs no answer.
            "2->3 CommitNotice(commit=6)",
        ]
    );
    assert_eq!(c.log_of(3), c.log_of(2));
    assert_eq!(c.applied_data(3), vec!["a", "b", "c", "d"]);
}

/// When the follower's extra entries come from an older term, the hint names the last
/// entry whose term can match and the leader overwrites the follower's divergent suffix.
#[test]
fn follower_divergent_suffix_from_old_term_is_overwritten() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "a");
    c.stabilize();
    // Node 1 appends two entries nobody else gets, then loses leadership.
    c.isolate(1);
    c.propose(1, "lost-1");
    c.propose(1, "lost-2");
    c.stabilize();
    c.crash(1);
    c.heal();
    c.elect(2);
    c.propose(2, "x");
    c.propose(2, "y");
    c.propose(2, "z");
    c.stabilize();
    c.restart(1);
    c.tick_all(3); // heartbeats reach node 1
    assert_eq!(c.log_of(1), c.log_of(2));
    assert_eq!(c.applied_data(1), vec!["a", "x", "y", "z"]);
}

/// Seed 001, "Leader Election": a node votes only for a candidate whose log is at least
/// as up to date as its own, so the lagging node cannot win.
#[test]
fn voters_refuse_a_candidate_with_a_less_up_to_date_log() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.propose(1, "a");
    c.stabilize();
    c.heal();
    c.crash(1);
    c.delivered.clear();
    c.node_mut(3).campaign().unwrap();
    c.stabilize();
    assert_ne!(c.node(3).role(), StateRole::Leader);
    let refused = c.delivered.iter().any(|m| {
        (m.from, m.to) == (2, 3) && m.body == MessageBody::RequestVoteResponse { reject: true }
    });
    assert!(refused, "node 2 must refuse node 3's vote request");
    // The up-to-date node wins, and the committed entry is kept.
    c.elect(2);
    c.stabilize();
    assert_eq!(c.applied_data(3), vec!["a"]);
}

/// Seed 001, "What Happens to Uncommitted Entries": old leader [1..5], follower 1
/// [1..4], follower 2 [1..3]. The leader crashes; follower 1 wins; entry 5, only on the
/// old leader, is gone, while entry 4, held by a majority (old leader + follower 1 of
/// three), was committed and survives; follower 2 catches up to it.
#[test]
fn uncommitted_entry_is_lost_and_committed_entry_survives_leader_crash() {
    let mut c = Cluster::new(3);
    c.elect(1); // 1: no-op
    c.propose(1, "e2");
    c.propose(1, "e3");
    c.stabilize();
    c.isolate(3);
    c.propose(1, "e4");
    c.stabilize(); // entry 4 on nodes 1 and 2: a majority
    assert_eq!(c.node(1).commit_index(), 4);
    c.isolate(2);
    c.propose(1, "e5");
    c.stabilize(); // entry 5 only on node 1
    assert_eq!(c.log_of(1).len(), 5);
    assert_eq!(c.node(1).commit_index(), 4);

    c.crash(1);
    c.heal();
    c.elect(2);
    c.propose(2, "after");
    c.stabilize();
    for id in [2, 3] {
        assert_eq!(
            c.applied_data(id),
            vec!["e2", "e3", "e4", "after"],
            "node {id}"
        );
        assert!(!c.log_data(id).contains(&"e5".to_string()), "node {id}");
    }
    // The old leader returns and its uncommitted entry is overwritten.
    c.restart(1);
    c.tick_all(3);
    assert_eq!(c.log_of(1), c.log_of(2));
    assert!(!c.log_data(1).contains(&"e5".to_string()));
}

/// Seed 001: "if the cluster had 5 nodes and 3 had entry 4, then it was committed and the
/// new leader will have it" — even when two of the three holders crash.
#[test]
fn entry_on_three_of_five_nodes_is_committed_and_survives_two_crashes() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.propose(1, "base");
    c.stabilize();
    c.cut.insert((1, 4));
    c.cut.insert((1, 5));
    c.propose(1, "x");
    c.stabilize();
    assert_eq!(
        c.node(1).commit_index(),
        3,
        "three of five hold it: committed"
    );
    assert!(!c.log_data(4).contains(&"x".to_string()));

    c.crash(1);
    c.crash(2);
    c.heal();
    // Node 4 lacks the entry: nodes 3 refuses it, so it cannot gather three votes.
    c.node_mut(4).campaign().unwrap();
    c.stabilize();
    assert_ne!(c.node(4).role(), StateRole::Leader);
    // Node 3 holds it and wins with the votes of 4 and 5.
    c.tick_all(1);
    c.elect(3);
    c.stabilize();
    for id in [3, 4, 5] {
        assert_eq!(c.applied_data(id), vec!["base", "x"], "node {id}");
    }
}

/// Seed 001, "Step 5: Leader Commits After Majority": the leader commits once a majority
/// (itself included) holds the entry, not before, and every node applies the same order.
#[test]
fn entry_commits_only_after_a_majority_acknowledges_and_all_apply_same_order() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(2);
    c.isolate(3);
    c.propose(1, "w");
    c.stabilize();
    assert_eq!(c.node(1).commit_index(), 1, "only the no-op is committed");
    assert!(c.applied_data(1).is_empty());
    c.heal();
    c.tick_all(2);
    assert_eq!(c.node(1).commit_index(), 2);
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), vec!["w"]);
    }
}

/// A crash can leave the hard state durable but not the entries written before it (their
/// acknowledgements were never sent); the node restarts with its commit index lowered to
/// what its log holds and catches up.
#[test]
fn restart_with_commit_beyond_durable_log_recovers() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.cut.insert((3, 1)); // node 3's acknowledgements are lost
    c.propose(1, "a");
    c.propose(1, "b");
    c.stabilize();
    c.propose(1, "c");
    c.stabilize();
    c.tick_all(1);
    c.crash(3);
    let written = c.crashed.remove(&3).unwrap();
    let hs = written.hard_state();
    // Its answers lost, node 3 still learns the commit from the leader's notices, as far
    // as the appends it accepted reach: the no-op, a, b and c.
    assert_eq!(hs.commit, 4);
    let mut survived =
        ordo_raft::MemStorage::new_with_conf_state(ordo_raft::ConfState::with_voters([1, 2, 3]));
    survived.append(&ordo_raft::Storage::entries(&written, 1, 2, u64::MAX).unwrap());
    survived.set_hard_state(hs);
    c.crashed.insert(3, survived);
    c.restart(3);
    assert_eq!(c.node(3).commit_index(), 1);
    c.heal();
    c.tick_all(3);
    assert_eq!(c.log_of(3), c.log_of(1));
    assert_eq!(c.applied_data(3), vec!["a", "b", "c"]);
}

/// The commit index need not be synced (`Ready::must_sync` is false for it alone): a node
/// whose state machine applied further than its durable commit index restarts from the
/// applied index.
#[test]
fn restart_with_applied_index_beyond_durable_commit_recovers() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "a");
    c.stabilize();
    let applied = c.node(2).applied_index();
    c.crash(2);
    let mut storage = c.crashed.remove(&2).unwrap();
    let mut hs = storage.hard_state();
    hs.commit = 0;
    storage.set_hard_state(hs);
    let cfg = ordo_raft::Config {
        applied_index: applied,
        ..common::config(2)
    };
    let node = ordo_raft::RawNode::new(cfg, storage).unwrap();
    assert_eq!(node.commit_index(), applied);
    assert_eq!(node.applied_index(), applied);
}
