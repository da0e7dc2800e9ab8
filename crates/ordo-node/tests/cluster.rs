//! Multi-node clusters in one process over 127.0.0.1, with real WAL directories.

mod common;

use std::collections::BTreeSet;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_a_leader_and_apply_proposals_from_any_node_in_one_order() {
    let cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    let mut tasks = Vec::new();
    for via in 1..=3u64 {
        for i in 0..20 {
            let group = cluster.group(via).clone();
            tasks.push(tokio::spawn(async move {
                group
                    .propose(format!("n{via}-{i}"))
                    .await
                    .map(|(index, _)| index)
            }));
        }
    }
    let mut max_index = 0;
    let mut acknowledged = 0;
    for t in tasks {
        let index = t.await.unwrap().expect("proposal failed");
        max_index = max_index.max(index);
        acknowledged += 1;
    }
    assert_eq!(acknowledged, 60);
    let reference = cluster.applied_entries(leader, max_index).await;
    assert_eq!(reference.len(), 60);
    let distinct: BTreeSet<_> = reference.iter().collect();
    assert_eq!(distinct.len(), 60, "an entry was applied twice");
    for id in 1..=3 {
        assert_eq!(
            cluster.applied_entries(id, max_index).await,
            reference,
            "node {id} applied another order"
        );
    }
    cluster.shutdown_all().await;
}
