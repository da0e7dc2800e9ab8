//! The cluster manager and the peer-link proxies against real `ordo server` processes: a
//! partition made in the proxies is one the nodes feel.

mod common;

use std::time::Duration;

/// Bound on waiting for any one election.
const ELECTION_WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolating_the_leader_in_the_proxies_makes_the_others_elect_another() {
    let cluster = common::started_cluster().await;
    let first = cluster
        .wait_any_leader(ELECTION_WAIT)
        .await
        .expect("a first leader");
    let first_term = cluster
        .status(first)
        .await
        .expect("the leader answers")
        .term;
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != first)
        .collect();
    cluster.partition(&[first], &others);

    // The majority side must elect one of its own in a later term: the proxies are the only
    // path between the nodes.
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
    let new_leader = loop {
        let mut found = None;
        for &id in &others {
            if let Some(status) = cluster.status(id).await {
                if status.role == "leader" && status.term > first_term {
                    found = Some(id);
                }
            }
        }
        if let Some(id) = found {
            break id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader among {others:?} within {ELECTION_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(new_leader, first);

    // Healed, the old leader learns of the newer term and follows.
    cluster.heal();
    let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
    loop {
        if let Some(status) = cluster.status(first).await {
            if status.role != "leader" && status.term > first_term {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {first} never stepped down after the partition healed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_a_killed_node_restarts() {
    let mut cluster = common::started_cluster().await;
    let first = cluster
        .wait_any_leader(ELECTION_WAIT)
        .await
        .expect("a first leader");
    cluster.pause(first).expect("SIGSTOP");
    assert!(cluster.is_paused(first));
    // `leader` skips paused nodes: a leader it reports is another node.
    let second = cluster
        .wait_any_leader(ELECTION_WAIT)
        .await
        .expect("a new leader");
    assert_ne!(second, first);
    cluster.resume(first).expect("SIGCONT");

    cluster.kill(second);
    assert!(!cluster.is_running(second));
    cluster.start(second).expect("restart");
    assert!(cluster.is_running(second));
    cluster
        .wait_any_leader(ELECTION_WAIT)
        .await
        .expect("a leader after the restart");
}
