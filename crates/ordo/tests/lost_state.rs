//! An `ordo server` whose data directory was wiped is refused by its peers and exits with
//! status 3 and one line that says it lost state and how to replace it; the others serve
//! on.

mod common;

use common::{get, put, start, STEP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_on_a_wiped_directory_exits_3_saying_lost_state_and_what_to_do() {
    let (mut cluster, leader) = start(&[]).await;
    put(&cluster, &[leader.id], "before", "wipe").await;
    let victim = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader.id)
        .unwrap();
    let committed = cluster.status(leader.id).await.expect("leader status");
    // Having applied the write, the victim has talked to the leader, which recorded it.
    cluster
        .wait_applied(victim, committed.commit_index, STEP)
        .await
        .expect("the victim catches up");

    cluster.kill(victim);
    let data_dir = cluster.spec(victim).data_dir.clone();
    std::fs::remove_dir_all(&data_dir).unwrap();
    let log_before = std::fs::read_to_string(cluster.log_path(victim)).unwrap_or_default();
    cluster.start(victim).expect("start the victim");
    let exit = tokio::task::block_in_place(|| cluster.wait_exit(victim, STEP));
    assert_eq!(exit, Some(Some(3)), "the wiped node must refuse to run");

    let log = std::fs::read_to_string(cluster.log_path(victim)).unwrap();
    let line = log[log_before.len()..]
        .lines()
        .find(|l| l.starts_with("ordo server: lost state"))
        .unwrap_or_else(|| panic!("no lost-state line in:\n{}", &log[log_before.len()..]));
    for needle in [
        format!("etcdctl member remove {victim:x}"),
        format!("move {} aside", data_dir.display()),
        "etcdctl member add".to_string(),
        "ordo server --join".to_string(),
    ] {
        assert!(line.contains(&needle), "{needle:?} missing from: {line}");
    }

    // Started again on what is left, it refuses at once: the directory is marked.
    let log_before = log;
    cluster.start(victim).expect("start the victim again");
    let exit = tokio::task::block_in_place(|| cluster.wait_exit(victim, STEP));
    assert_eq!(exit, Some(Some(3)), "a marked directory must stay refused");
    let log = std::fs::read_to_string(cluster.log_path(victim)).unwrap();
    assert!(
        log[log_before.len()..]
            .lines()
            .any(|l| l.starts_with("ordo server: lost state") && l.contains("marked as lost")),
        "{}",
        &log[log_before.len()..]
    );

    // The two others are a majority without it.
    let ignore = [victim];
    let leader = cluster.wait_leader(&ignore, STEP).await.expect("a leader");
    put(&cluster, &[leader.id], "after", "wipe").await;
    assert_eq!(
        get(&cluster, leader.id, "before", false)
            .await
            .expect("read")
            .as_deref(),
        Some("wipe")
    );
}
