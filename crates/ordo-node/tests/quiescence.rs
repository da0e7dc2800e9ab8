//! Idle groups on real nodes: they quiesce, wake on a request, and elect a new leader when
//! a quiesced leader's node dies.
//!
//! Waits poll the groups' status under a generous guard; nothing depends on how long
//! anything takes.

mod common;

use common::{no_tweak, poll_until, text, Cluster};
use ordo_node::{NodeConfig, NodeId, StateRole};

/// Waits until every running replica of the group is quiesced.
async fn all_quiesced(cluster: &Cluster) {
    poll_until("every replica quiesces", async || {
        for m in cluster.members.values() {
            if !m.group.status().await.unwrap().quiesced {
                return None;
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_group_quiesces_on_every_node_and_a_proposal_wakes_it() {
    let cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    cluster.propose(leader, "first").await;
    all_quiesced(&cluster).await;
    let term = cluster.group(leader).status().await.unwrap().term;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let (index, _) = cluster.propose(follower, "second").await;
    for id in 1..=3 {
        let applied = text(&cluster.applied_entries(id, index).await);
        assert_eq!(applied, vec!["first", "second"], "node {id}");
    }
    all_quiesced(&cluster).await;
    let status = cluster.group(leader).status().await.unwrap();
    assert_eq!((status.role, status.term), (StateRole::Leader, term));
    let metrics = cluster.group(leader).metrics();
    assert!(metrics.quiesces >= 2 && metrics.wakes >= 1, "{metrics:?}");
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_followers_of_a_quiesced_leader_elect_another_when_its_node_crashes() {
    let mut cluster = Cluster::start(3, no_tweak).await;
    let old = cluster.leader().await;
    cluster.propose(old, "before").await;
    all_quiesced(&cluster).await;
    let term = cluster.group(old).status().await.unwrap().term;
    // The crash closes its connections: the others' transports report it unreachable.
    cluster.crash(old).await;
    let new: NodeId = cluster.leader().await;
    assert_ne!(new, old);
    assert!(cluster.group(new).status().await.unwrap().term > term);
    let (index, _) = cluster.propose(new, "after").await;
    assert_eq!(
        text(&cluster.applied_entries(new, index).await),
        vec!["before", "after"]
    );
    cluster.shutdown_all().await;
}

fn lease_reads(c: &mut NodeConfig) {
    c.lease_reads = true;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_linearizable_read_on_a_quiesced_group_sees_every_acknowledged_write() {
    let cluster = Cluster::start(3, lease_reads).await;
    let leader = cluster.leader().await;
    cluster.propose(leader, "leased").await;
    all_quiesced(&cluster).await;
    for id in 1..=3 {
        let seen = cluster
            .group(id)
            .linearizable_read(|sm| text(&sm.entries))
            .await
            .unwrap();
        assert_eq!(seen, vec!["leased"], "node {id}");
    }
    cluster.shutdown_all().await;
}
