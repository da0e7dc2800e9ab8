//! Quiescence: a runtime stops ticking an idle group and resumes later. What the core
//! offers it: a follower's check of the leader's word that the group is idle, a resume that
//! voids whatever rested on elapsed time, and a pause of committed entries for a runtime
//! whose state machine is behind.

mod common;

use common::{config, data, Cluster};
use ordo_raft::{Config, MessageBody, ReadOnlyOption, StateRole};

fn lease(id: u64) -> Config {
    Config {
        read_only: ReadOnlyOption::LeaseBased,
        check_quorum: true,
        pre_vote: true,
        ..config(id)
    }
}

/// A lease cluster after a natural election and one heartbeat round.
fn lease_cluster() -> (Cluster, u64) {
    let mut c = Cluster::with_config(3, lease);
    while c.leaders().is_empty() {
        c.tick_all(1);
    }
    let leader = c.leaders()[0];
    c.tick_all(1);
    (c, leader)
}

/// Whether a read issued on `id` now is answered in the very next Ready.
fn answered_at_once(c: &mut Cluster, id: u64, ctx: &str) -> bool {
    c.node_mut(id).read_index(data(ctx)).unwrap();
    let rd = c.node_mut(id).ready();
    let answered = !rd.read_states.is_empty();
    c.queue.extend(rd.messages);
    c.queue.extend(rd.persisted_messages);
    c.node_mut(id).advance();
    answered
}

#[test]
fn a_resumed_leader_serves_no_lease_read_before_a_heartbeat_round_after_the_pause() {
    let (mut c, leader) = lease_cluster();
    assert!(answered_at_once(&mut c, leader, "before"));
    c.stabilize();
    // However long the pause was, the ticks the leader counted before it prove nothing.
    c.node_mut(leader).resume_ticking();
    assert!(!answered_at_once(&mut c, leader, "woken"));
    c.stabilize();
    assert!(
        c.read_states[&leader]
            .iter()
            .any(|r| r.context.as_ref() == b"woken"),
        "the read is answered by the heartbeat round"
    );
    // That round renewed the lease.
    assert!(answered_at_once(&mut c, leader, "renewed"));
}

#[test]
fn a_resumed_leader_heartbeats_on_its_next_heartbeat_tick_and_a_proposal_goes_out_at_once() {
    let (mut c, leader) = lease_cluster();
    c.stabilize();
    c.node_mut(leader).resume_ticking();
    assert!(
        !c.node(leader).has_ready(),
        "the resume itself sends nothing"
    );
    c.node_mut(leader).propose(data("woken")).unwrap();
    c.process_ready(leader);
    let appends = c
        .queue
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::Append { entries, .. } if !entries.is_empty()))
        .count();
    assert_eq!(appends, 2, "the proposal's append wakes both followers");
    c.stabilize();
    c.tick(leader);
    let heartbeats = c
        .queue
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }))
        .count();
    assert_eq!(heartbeats, 2, "the next heartbeat tick heartbeats");
}

#[test]
fn a_resumed_follower_gives_its_leader_an_election_timeout_before_it_campaigns() {
    let (mut c, leader) = lease_cluster();
    let follower = if leader == 1 { 2 } else { 1 };
    c.isolate(leader);
    // The follower had counted most of its timeout when it was paused.
    for _ in 0..9 {
        c.tick(follower);
    }
    c.node_mut(follower).resume_ticking();
    assert_eq!(c.node(follower).election_elapsed_ticks(), 0);
    for _ in 0..9 {
        c.tick(follower);
        assert_eq!(c.node(follower).role(), StateRole::Follower);
    }
    // Cut off from its leader for good, it does campaign in the end.
    for _ in 0..20 {
        c.tick(follower);
    }
    assert_ne!(c.node(follower).role(), StateRole::Follower);
}

#[test]
fn a_follower_quiesces_only_for_its_leader_in_its_term_with_its_log_ending_at_the_commit() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "x");
    c.stabilize();
    let term = c.node(2).term();
    let last = c.node(2).last_index();
    assert!(
        !c.node_mut(2).quiesce_as_follower(3, term, last),
        "not its leader"
    );
    assert!(
        !c.node_mut(2).quiesce_as_follower(1, term + 1, last),
        "another term"
    );
    assert!(
        !c.node_mut(2).quiesce_as_follower(1, term, last - 1),
        "log ends later"
    );
    assert!(
        !c.node_mut(1).quiesce_as_follower(1, term, last),
        "a leader"
    );
    assert!(c.node_mut(2).quiesce_as_follower(1, term, last));
}

#[test]
fn a_quiescing_follower_learns_the_commit_index_it_had_not_heard_of() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize();
    // Node 2 receives and acknowledges the entry, but not the append that commits it.
    c.propose(1, "x");
    while c.node(1).commit_index() < c.node(1).last_index() {
        assert!(c.deliver_one(), "the entry commits");
    }
    c.cut.insert((1, 2));
    c.stabilize();
    c.cut.clear();
    let last = c.node(1).last_index();
    assert_eq!(c.node(1).commit_index(), last);
    assert!(c.node(2).commit_index() < last);
    let term = c.node(1).term();
    assert!(c.node_mut(2).quiesce_as_follower(1, term, last));
    assert_eq!(c.node(2).commit_index(), last);
    c.process_ready(2);
    assert_eq!(
        c.applied_data(2),
        c.applied_data(1),
        "what it learned is applied"
    );
}

#[test]
fn paused_applying_holds_back_committed_entries_but_not_replication() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize();
    let applied_before = c.applied_data(1).len();
    c.node_mut(1).pause_applying(true);
    c.propose(1, "a");
    c.propose(1, "b");
    c.stabilize();
    let last = c.node(1).last_index();
    assert_eq!(c.node(1).commit_index(), last, "replicated and committed");
    assert_eq!(
        c.applied_data(1).len(),
        applied_before,
        "nothing handed out"
    );
    assert_eq!(c.applied_data(2).len(), applied_before + 2);
    // Heartbeats still leave while paused.
    c.node_mut(1).tick();
    let rd = c.node_mut(1).ready();
    assert!(rd.committed_entries.is_empty());
    assert!(rd
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })));
    c.queue.extend(rd.messages);
    c.node_mut(1).advance();
    c.node_mut(1).pause_applying(false);
    c.stabilize();
    assert_eq!(c.applied_data(1), c.applied_data(2), "handed out in order");
}
