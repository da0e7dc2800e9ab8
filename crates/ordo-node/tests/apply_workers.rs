//! The node's apply workers: a state machine that blocks holds one worker, and never the
//! Raft side of any group (elections, replication, heartbeats, commits).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{
    leader_of, poll_until, start_group_on_nodes, Cluster, Counting, PooledRecorder, GUARD,
};
use ordo_node::{Group, GroupId, Index, NodeConfig, NodeId};

/// Where the blocking state machines of a test wait, and how many do.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<GateState>, Condvar)>);

#[derive(Default)]
struct GateState {
    open: bool,
    waiting: usize,
}

impl Gate {
    /// Blocks the calling worker until the gate opens.
    fn pass(&self) {
        let (state, changed) = &*self.0;
        let mut s = state.lock().unwrap();
        s.waiting += 1;
        changed.notify_all();
        while !s.open {
            s = changed.wait(s).unwrap();
        }
        s.waiting -= 1;
    }

    /// Waits (on a blocking thread) until `n` state machines wait at the gate.
    async fn wait_for_waiting(&self, n: usize) {
        let gate = self.clone();
        tokio::task::spawn_blocking(move || {
            let (state, changed) = &*gate.0;
            let s = state.lock().unwrap();
            let (s, timed_out) = changed
                .wait_timeout_while(s, GUARD, |s| s.waiting < n)
                .unwrap();
            assert!(!timed_out.timed_out(), "only {} blocked", s.waiting);
        })
        .await
        .unwrap();
    }

    fn open(&self) {
        let (state, changed) = &*self.0;
        state.lock().unwrap().open = true;
        changed.notify_all();
    }

    fn is_open(&self) -> bool {
        self.0 .0.lock().unwrap().open
    }
}

/// Counts entries; applying `block` waits at the gate.
fn blocking(gate: Gate) -> Counting {
    Counting::new(move |data| {
        if data == b"block" {
            gate.pass();
        }
    })
}

const OTHER: GroupId = GroupId(2);

/// Three nodes with `tweak`; group 1 blocked in its state machine on every node; group 2
/// started on them meanwhile.
async fn one_group_blocked(
    dir: &std::path::Path,
    tweak: fn(&mut NodeConfig),
) -> (
    BTreeMap<NodeId, ordo_node::Node>,
    Gate,
    tokio::task::JoinHandle<Result<u64, ordo_node::ProposeError>>,
    BTreeMap<NodeId, Group<PooledRecorder>>,
) {
    let gate = Gate::default();
    let machine = {
        let gate = gate.clone();
        move || blocking(gate.clone())
    };
    let (nodes, blocked) = start_group_on_nodes(dir, 3, tweak, machine).await;
    let (leader, _) = leader_of(&blocked).await;
    let stuck = {
        let g = blocked[&leader].clone();
        tokio::spawn(async move { g.propose("block").await })
    };
    gate.wait_for_waiting(3).await;
    let mut others = BTreeMap::new();
    for (&id, node) in &nodes {
        others.insert(
            id,
            node.start_group(OTHER, PooledRecorder::default())
                .await
                .unwrap(),
        );
    }
    (nodes, gate, stuck, others)
}

/// Waits until every node's group 2 has committed `index`.
async fn committed_everywhere(groups: &BTreeMap<NodeId, Group<PooledRecorder>>, index: Index) {
    poll_until(
        &format!("index {index} committed on every node"),
        async || {
            for g in groups.values() {
                if g.status().await.unwrap().commit_index < index {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

fn one_worker(c: &mut NodeConfig) {
    c.apply_workers = 1;
    c.apply_queue_batches_max = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_worker_blocked_another_group_still_elects_replicates_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, gate, stuck, others) = one_group_blocked(dir.path(), one_worker).await;
    // Every node's only worker is held by group 1: group 2 elects a leader regardless.
    let (leader, _) = leader_of(&others).await;
    let g = others[&leader].clone();
    let first = g.status().await.unwrap().last_index + 1;
    let mut waiting = Vec::new();
    for i in 0..5u64 {
        // One entry after another, each committed on every node, more batches than the
        // apply queue holds.
        let g = g.clone();
        waiting.push(tokio::spawn(
            async move { g.propose(format!("e{i}")).await },
        ));
        committed_everywhere(&others, first + i).await;
    }
    for other in others.values() {
        let applied = other.status().await.unwrap().applied_index;
        assert!(applied < first, "applied {applied} with no worker free");
    }
    assert!(!stuck.is_finished());
    gate.open();
    stuck.await.unwrap().expect("the blocked entry is applied");
    // In order, from `first` on; a leader change on the loaded machine may put its empty
    // entry between two of them.
    let mut last = first - 1;
    for w in waiting {
        let (index, _) = w.await.unwrap().expect("applied once the worker is free");
        assert!(index > last, "applied at {index}, after {last}");
        last = index;
    }
    for node in nodes.into_values() {
        node.shutdown().await;
    }
}

fn two_workers(c: &mut NodeConfig) {
    c.apply_workers = 2;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_workers_another_group_applies_while_one_state_machine_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, gate, stuck, others) = one_group_blocked(dir.path(), two_workers).await;
    let (leader, _) = leader_of(&others).await;
    for i in 0..5 {
        others[&leader]
            .propose(format!("e{i}"))
            .await
            .expect("applied on the free worker");
    }
    assert!(!gate.is_open() && !stuck.is_finished());
    gate.open();
    stuck.await.unwrap().expect("the blocked entry is applied");
    for node in nodes.into_values() {
        node.shutdown().await;
    }
}

/// Counts entries; applying `boom` panics, as a state machine with a bug would.
fn fragile() -> Counting {
    Counting::new(|data| assert!(data != b"boom", "the state machine cannot apply {data:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_machine_that_panics_stops_its_group_and_the_worker_goes_on_with_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, fragile) = start_group_on_nodes(dir.path(), 3, one_worker, fragile).await;
    let mut others = BTreeMap::new();
    for (&id, node) in &nodes {
        others.insert(
            id,
            node.start_group(OTHER, PooledRecorder::default())
                .await
                .unwrap(),
        );
    }
    let (leader, _) = leader_of(&fragile).await;
    let outcome = fragile[&leader].propose("boom").await;
    assert!(outcome.is_err(), "{outcome:?}");
    tokio::time::timeout(GUARD, async {
        for node in nodes.values() {
            while node.group_failure(common::GROUP).is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
    .await
    .expect("every replica of the group stops");
    for node in nodes.values() {
        let failure = node.group_failure(common::GROUP).unwrap();
        assert!(failure.contains("applying stopped"), "{failure}");
    }
    // Every node's only worker still serves the other group.
    let (leader, _) = leader_of(&others).await;
    for i in 0..3 {
        others[&leader]
            .propose(format!("e{i}"))
            .await
            .expect("applied by the same worker");
    }
    for node in nodes.into_values() {
        node.shutdown().await;
    }
}

/// A state machine that applies quickly is applied on its group's own task, except while a
/// reader holds it: then the batches wait for a worker, in order, and the group's Raft side
/// goes on (here: a follower keeps committing while it cannot apply).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quick_state_machine_held_by_a_reader_gets_its_batches_from_the_workers_in_order() {
    let cluster = Cluster::start(3, common::no_tweak).await;
    let leader = cluster.leader().await;
    let follower = *cluster.members.keys().find(|&&id| id != leader).unwrap();
    let (first, _) = cluster.propose(leader, "before").await;
    cluster.applied_entries(follower, first).await;

    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let reader = {
        let g = cluster.group(follower).clone();
        tokio::task::spawn_blocking(move || {
            g.read(|_| {
                held_tx.send(()).unwrap();
                release_rx.recv_timeout(GUARD).expect("released");
            })
        })
    };
    tokio::task::spawn_blocking(move || held_rx.recv_timeout(GUARD).expect("held"))
        .await
        .unwrap();

    let mut last = first;
    for i in 0..10 {
        (last, _) = cluster.propose(leader, &format!("e{i}")).await;
    }
    let held = cluster.group(follower);
    tokio::time::timeout(GUARD, async {
        while held.status().await.unwrap().commit_index < last {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the follower commits while its state machine is held");
    assert_eq!(
        held.applied_index(),
        first,
        "applied while a reader held it"
    );

    release_tx.send(()).unwrap();
    reader.await.unwrap();
    let expected = cluster.applied_entries(leader, last).await;
    assert_eq!(cluster.applied_entries(follower, last).await, expected);
    // Applied on its own task again.
    let (after, _) = cluster.propose(follower, "after").await;
    assert_eq!(
        cluster
            .applied_entries(follower, after)
            .await
            .last()
            .unwrap(),
        "after"
    );
    cluster.shutdown_all().await;
}
