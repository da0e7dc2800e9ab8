//! Linearizable reads: ReadIndex (thesis §6.4) and leader leases.

mod common;

use common::{config, data, Cluster};
use ordo_raft::{Config, MessageBody, ReadOnlyOption};

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

#[test]
fn lease_based_read_is_answered_without_a_heartbeat_round() {
    let lease = |id| Config {
        read_only: ReadOnlyOption::LeaseBased,
        check_quorum: true,
        ..config(id)
    };
    let mut c = Cluster::with_config(3, lease);
    c.elect(1);
    c.node_mut(1).read_index(data("l")).unwrap();
    let rd = c.node_mut(1).ready();
    assert_eq!(rd.read_states.len(), 1);
    assert!(rd.messages.is_empty(), "no heartbeat needed");
    c.node_mut(1).advance();
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
