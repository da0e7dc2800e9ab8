//! Snapshots and log compaction (§7).

mod common;

use common::Cluster;
use ordo_raft::{MessageBody, ProgressState, SnapshotStatus, Storage};

fn compact_leader(c: &mut Cluster, leader: u64) -> u64 {
    let node = c.node_mut(leader);
    let applied = node.applied_index();
    let cs = node.conf_state();
    node.storage_mut()
        .create_snapshot(applied, cs, bytes::Bytes::from_static(b"state"))
        .unwrap();
    node.storage_mut().compact_to_snapshot();
    applied
}

#[test]
fn follower_behind_the_compacted_prefix_receives_a_snapshot_then_entries() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for i in 0..10 {
        c.propose(1, &format!("e{i}"));
    }
    c.stabilize();
    let snap_index = compact_leader(&mut c, 1);
    assert_eq!(c.node(1).storage().first_index(), snap_index + 1);
    c.propose(1, "after");
    c.stabilize();
    c.heal();
    c.delivered.clear();
    c.tick_all(3);
    let snapshots: Vec<_> = c
        .delivered
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Snapshot { snapshot } if m.to == 3 => Some(snapshot.meta.index),
            _ => None,
        })
        .collect();
    assert_eq!(snapshots, vec![snap_index]);
    assert_eq!(c.node(3).storage().first_index(), snap_index + 1);
    assert_eq!(c.log_of(3), c.log_of(1));
    assert_eq!(c.node(3).applied_index(), c.node(1).commit_index());
    assert_eq!(
        c.node(1).status().progress[&3].state,
        ProgressState::Replicate
    );
}

#[test]
fn failed_snapshot_returns_the_follower_to_probing() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for i in 0..5 {
        c.propose(1, &format!("e{i}"));
    }
    c.stabilize();
    compact_leader(&mut c, 1);
    c.heal();
    // Lose the snapshot in transit.
    c.filter = Some(Box::new(|m| matches!(m.body, MessageBody::Snapshot { .. })));
    c.tick_all(2);
    assert_eq!(
        c.node(1).status().progress[&3].state,
        ProgressState::Snapshot
    );
    c.node_mut(1).report_snapshot(3, SnapshotStatus::Failure);
    assert_eq!(c.node(1).status().progress[&3].state, ProgressState::Probe);
    c.filter = None;
    c.tick_all(4);
    assert_eq!(c.log_of(3), c.log_of(1), "a later attempt succeeds");
}

#[test]
fn stale_snapshot_is_ignored_by_an_up_to_date_follower() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..5 {
        c.propose(1, &format!("e{i}"));
    }
    c.stabilize();
    let snap = {
        let idx = compact_leader(&mut c, 1);
        let s = c.node(1).storage().snapshot().unwrap();
        assert_eq!(s.meta.index, idx);
        s
    };
    let before = c.log_of(2);
    let m = ordo_raft::Message {
        from: 1,
        to: 2,
        term: c.node(1).term(),
        body: MessageBody::Snapshot { snapshot: snap },
    };
    c.node_mut(2).step(m).unwrap();
    c.stabilize();
    assert_eq!(
        c.log_of(2),
        before,
        "committed prefix already held: nothing replaced"
    );
}
