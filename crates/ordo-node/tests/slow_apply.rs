//! A slow state machine delays only its own apply thread, never the consensus task.

mod common;

use std::time::Duration;

use common::{leader_of, start_group_on_nodes, Counting};

/// Takes `APPLY_MS` per entry, as a state machine doing real work (or stuck on its disk)
/// would.
fn slow() -> Counting {
    Counting::new(|_| std::thread::sleep(Duration::from_millis(APPLY_MS)))
}

const APPLY_MS: u64 = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_state_machine_does_not_cost_the_leader_its_leadership() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, groups) = start_group_on_nodes(dir.path(), 3, |_| {}, slow).await;
    let (leader, term) = leader_of(&groups).await;
    // 40 entries take a second to apply on every node: several election timeouts.
    let g = groups[&leader].clone();
    let proposals: Vec<_> = (0..40)
        .map(|i| {
            let g = g.clone();
            tokio::spawn(async move { g.propose(format!("e{i}")).await })
        })
        .collect();
    let mut last = 0;
    for p in proposals {
        last = last.max(p.await.unwrap().expect("proposal applied"));
    }
    assert_eq!(last, 40);
    for (id, g) in &groups {
        g.wait_applied(
            g.status().await.unwrap().commit_index,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let s = g.status().await.unwrap();
        // Any election, won or not, would have raised the term.
        assert_eq!(
            (s.leader, s.term),
            (leader, term),
            "node {id} saw an election"
        );
    }
    for node in nodes.into_values() {
        node.shutdown().await;
    }
}
