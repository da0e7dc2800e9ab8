//! Membership changes made by the checker on real `ordo server` processes: the repair of a
//! node that refuses to start replaces it with a fresh member that joins and is promoted.

mod common;

use std::time::Duration;

use ordo_check::client::Conn;
use ordo_check::nemesis::repair_refused;
use ordo_check::workload::Endpoints;
use ordo_kv::proto::etcdserverpb::{PutRequest, RangeRequest};

/// Bound on waiting for any one milestone.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_refuses_to_start_is_replaced_by_a_fresh_member() {
    let mut cluster = common::started_cluster().await;
    let leader = cluster.wait_any_leader(STEP).await.expect("a leader");
    let victim = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let endpoints = Endpoints::new(
        cluster
            .ids()
            .iter()
            .map(|&id| {
                Conn::new(
                    &cluster.spec(id).client_addr.to_string(),
                    Duration::from_secs(1),
                )
                .expect("endpoint")
            })
            .collect(),
    );

    // A data directory that cannot be opened: the node exits at start.
    cluster.kill(victim);
    let data_dir = cluster.spec(victim).data_dir.clone();
    std::fs::remove_dir_all(&data_dir).expect("remove the data directory");
    std::fs::write(&data_dir, b"not a directory").expect("put a file in its place");
    cluster.start(victim).expect("start the damaged node");
    let deadline = tokio::time::Instant::now() + STEP;
    while cluster.reap(victim).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the damaged node kept running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let outcome = repair_refused(&mut cluster, &endpoints, victim, STEP, 1).await;
    assert!(outcome.starts_with("repaired:"), "{outcome}");
    assert!(outcome.contains("promoted"), "{outcome}");
    let ids = cluster.ids();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids.contains(&victim), "{ids:?}");
    assert!(!data_dir.exists(), "the refused node's data was deleted");
    let current: Vec<String> = endpoints.current().iter().map(|c| c.addr.clone()).collect();
    assert_eq!(current.len(), 3, "{current:?}");
    let fresh = *ids
        .iter()
        .find(|&&id| id > 3)
        .expect("a fresh member with a new id");
    assert!(current.contains(&cluster.spec(fresh).client_addr.to_string()));

    // The three voters serve a write through the fresh member, readable everywhere.
    let fresh_conn = Conn::new(
        &cluster.spec(fresh).client_addr.to_string(),
        Duration::from_secs(1),
    )
    .expect("endpoint");
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let put = PutRequest {
            key: b"after-repair".to_vec(),
            value: b"yes".to_vec(),
            ..Default::default()
        };
        match fresh_conn.kv().put(put).await {
            Ok(_) => break,
            Err(status) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no write through the fresh member: {status}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    for id in cluster.ids() {
        let conn = Conn::new(
            &cluster.spec(id).client_addr.to_string(),
            Duration::from_secs(1),
        )
        .expect("endpoint");
        let read = conn
            .kv()
            .range(RangeRequest {
                key: b"after-repair".to_vec(),
                ..Default::default()
            })
            .await
            .expect("a linearizable read");
        assert_eq!(read.into_inner().kvs.len(), 1, "node {id} sees the write");
    }
}
