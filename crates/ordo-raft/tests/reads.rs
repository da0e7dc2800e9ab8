//! Linearizable reads: ReadIndex (thesis §6.4) and leader leases.

mod common;

use common::{config, data, Cluster};
use ordo_raft::{Config, MessageBody, ReadOnlyOption, StateRole};

#[test]
fn read_index_is_answered_after_a_quorum_acknowledges_a_heartbeat() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "x");
    c.stabilize();
    c.node_mut(1).read_index(data("r1")).unwrap();
    c.process_ready(1);
    assert!(
        c.read_states.get(&1).is_none_or(|r| r.is_empty()),
        "not before the round"
    );
    let heartbeats = c
        .queue
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Heartbeat { .. }));
    assert_eq!(heartbeats.count(), 2);
    c.stabilize();
    let rs = &c.read_states[&1];
    assert_eq!(rs.len(), 1);
    assert_eq!(
        (rs[0].index, rs[0].context.as_ref()),
        (c.node(1).commit_index(), &b"r1"[..])
    );
}

#[test]
fn isolated_leader_cannot_answer_a_read_index_request() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node_mut(1).read_index(data("r")).unwrap();
    for _ in 0..5 {
        c.tick(1);
        c.stabilize();
    }
    assert!(c.read_states.get(&1).is_none_or(|r| r.is_empty()));
}

#[test]
fn read_index_waits_until_the_leader_commits_an_entry_of_its_term() {
    let mut c = Cluster::new(3);
    // Win the election but lose every append, so the no-op stays uncommitted.
    c.filter = Some(Box::new(|m| matches!(m.body, MessageBody::Append { .. })));
    c.elect(1);
    c.node_mut(1).read_index(data("early")).unwrap();
    c.stabilize();
    assert!(c.read_states.get(&1).is_none_or(|r| r.is_empty()));
    c.filter = None;
    c.tick_all(2);
    let rs = &c.read_states[&1];
    assert_eq!(rs.len(), 1);
    assert!(rs[0].index >= 1, "the read waits for the no-op");
}

#[test]
fn follower_read_index_is_forwarded_to_the_leader_and_answered() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "x");
    c.stabilize();
    c.node_mut(2).read_index(data("f")).unwrap();
    c.stabilize();
    let rs = &c.read_states[&2];
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].index, c.node(1).commit_index());
    assert_eq!(rs[0].context.as_ref(), b"f");
}

#[test]
fn read_index_without_a_leader_fails() {
    let mut c = Cluster::new(3);
    assert_eq!(
        c.node_mut(2).read_index(data("f")),
        Err(ordo_raft::Error::NoLeader)
    );
}

#[test]
fn duplicate_read_context_is_refused() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).read_index(data("d")).unwrap();
    assert_eq!(
        c.node_mut(1).read_index(data("d")),
        Err(ordo_raft::Error::DuplicateReadContext)
    );
}

#[test]
fn pending_reads_are_bounded() {
    let mut c = Cluster::with_config(3, |id| Config {
        max_pending_reads: 2,
        ..config(id)
    });
    c.elect(1);
    c.isolate(1);
    c.node_mut(1).read_index(data("a")).unwrap();
    c.node_mut(1).read_index(data("b")).unwrap();
    assert_eq!(
        c.node_mut(1).read_index(data("c")),
        Err(ordo_raft::Error::ReadIndexQueueFull { limit: 2 })
    );
}

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
    if c.node_mut(id).read_index(data(ctx)).is_err() {
        return false;
    }
    let rd = c.node_mut(id).ready();
    let answered = !rd.read_states.is_empty();
    c.queue.extend(rd.messages);
    c.queue.extend(rd.persisted_messages);
    c.node_mut(id).advance();
    answered
}

#[test]
fn lease_based_read_is_answered_without_a_heartbeat_round() {
    let (mut c, leader) = lease_cluster();
    c.node_mut(leader).read_index(data("l")).unwrap();
    let rd = c.node_mut(leader).ready();
    assert_eq!(rd.read_states.len(), 1);
    assert!(rd.messages.is_empty(), "no heartbeat needed");
    c.node_mut(leader).advance();
}

#[test]
fn lease_lapses_without_quorum_contact_and_reads_fall_back_to_read_index() {
    let (mut c, leader) = lease_cluster();
    c.isolate(leader);
    let mut answered_ticks = 0;
    for t in 0..9 {
        if answered_at_once(&mut c, leader, &format!("r{t}")) {
            answered_ticks += 1;
        }
        c.tick(leader);
    }
    assert!(answered_ticks > 0, "the lease covers the first ticks");
    assert!(
        !answered_at_once(&mut c, leader, "late"),
        "the lease has lapsed"
    );
    c.stabilize();
    assert!(
        !c.read_states[&leader]
            .iter()
            .any(|r| r.context.as_ref() == b"late"),
        "the fallback round cannot complete while isolated"
    );
}

/// The lease must end before any other leader can be elected (a deposed leader serving
/// a stale read is a linearizability violation).
#[test]
fn deposed_leader_never_serves_a_lease_read_once_another_leader_exists() {
    let (mut c, old) = lease_cluster();
    c.isolate(old);
    let old_term = c.node(old).term();
    let mut served_after_new_leader = false;
    let mut new_leader_seen = false;
    for t in 0..60 {
        let served = c.node(old).role() == StateRole::Leader
            && answered_at_once(&mut c, old, &format!("s{t}"));
        let other = c
            .nodes
            .iter()
            .any(|(&id, n)| id != old && n.role() == StateRole::Leader && n.term() > old_term);
        new_leader_seen |= other;
        served_after_new_leader |= served && other;
        c.tick_all(1);
    }
    assert!(new_leader_seen, "the majority elects a new leader");
    assert!(!served_after_new_leader);
}

#[test]
fn restarted_voter_keeps_its_lease_promise_for_an_election_timeout() {
    let (mut c, leader) = lease_cluster();
    let voter = if leader == 1 { 2 } else { 1 };
    c.crash(voter);
    c.restart(voter);
    c.process_ready(voter);
    let request = ordo_raft::Message {
        from: 3,
        to: voter,
        term: 99,
        body: MessageBody::RequestVote {
            last_log_index: 99,
            last_log_term: 98,
            leadership_transfer: false,
        },
    };
    c.node_mut(voter).step(request.clone()).unwrap();
    assert_ne!(c.node(voter).term(), 99, "ignored right after restart");
    for _ in 0..10 {
        c.node_mut(voter).tick();
    }
    c.node_mut(voter).step(request).unwrap();
    assert_eq!(
        c.node(voter).term(),
        99,
        "heard once the promise has run out"
    );
}

#[test]
fn lease_based_reads_require_check_quorum() {
    let cfg = Config {
        read_only: ReadOnlyOption::LeaseBased,
        check_quorum: false,
        ..config(1)
    };
    assert!(cfg.validate().is_err());
}

/// A TimeoutNow lets its target's vote requests bypass the voters' lease promises, even
/// if they arrive much later, so a leader that sent one stops serving lease reads.
#[test]
fn leader_gives_up_lease_reads_once_it_has_sent_timeout_now() {
    let (mut c, leader) = lease_cluster();
    let target = if leader == 1 { 2 } else { 1 };
    c.isolate(target);
    c.node_mut(leader).transfer_leader(target).unwrap();
    c.process_ready(leader);
    // The transfer cannot finish; after an election timeout it is abandoned.
    for _ in 0..12 {
        c.tick_all(1);
    }
    assert_eq!(c.node(leader).lead_transferee(), None);
    assert_eq!(c.node(leader).role(), StateRole::Leader);
    // Whether TimeoutNow went out depends on whether the target was caught up; it was.
    assert!(!answered_at_once(&mut c, leader, "after-transfer"));
    c.stabilize();
    assert!(c.read_states[&leader]
        .iter()
        .any(|r| r.context.as_ref() == b"after-transfer"));
}

/// Even alone, a new leader answers reads only once its own term's entry commits: the
/// commit index it restarted with may be behind writes acknowledged before a crash.
#[test]
fn single_node_read_waits_for_the_new_terms_entry_to_commit() {
    let mut c = Cluster::new(1);
    c.node_mut(1).campaign().unwrap();
    // Persist the vote; the node becomes leader and appends its no-op.
    let rd = c.node_mut(1).ready();
    c.node_mut(1)
        .storage_mut()
        .set_hard_state(rd.hard_state.unwrap());
    c.node_mut(1).advance();
    assert_eq!(c.node(1).role(), StateRole::Leader);
    c.node_mut(1).read_index(data("solo")).unwrap();
    let rd = c.node_mut(1).ready();
    assert!(rd.read_states.is_empty(), "the no-op is not committed yet");
    c.node_mut(1).storage_mut().append_owned(rd.entries);
    c.node_mut(1).advance();
    let rd = c.node_mut(1).ready();
    assert_eq!(rd.read_states.len(), 1);
    assert_eq!(rd.read_states[0].index, 1);
    c.node_mut(1).advance();
}
