//! Three `ordo server` processes on loopback: bootstrap, reads and writes through the gRPC
//! API, and the failures a cluster must survive (SIGKILL, SIGSTOP, a follower behind a
//! compacted log, all nodes killed at once).

mod common;

use ordo_server::admin::StatusReport;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{get, keys_with_prefix, put, start, STEP};
use ordo_kv::proto::etcdserverpb::cluster_client::ClusterClient;
use ordo_kv::proto::etcdserverpb::kv_client::KvClient;
use ordo_kv::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ordo_kv::proto::etcdserverpb::watch_client::WatchClient;
use ordo_kv::proto::etcdserverpb::{
    watch_request, MemberListRequest, PutRequest, StatusRequest, WatchCreateRequest, WatchRequest,
};
use tokio_stream::StreamExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_bootstrap_and_serve_writes_and_reads_through_any_node() {
    let (cluster, leader) = start(&[]).await;
    let ids = cluster.ids();

    // A watch on one node sees writes made through the others.
    let watcher_node = ids[0];
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"k/".to_vec(),
                range_end: b"k0".to_vec(),
                ..Default::default()
            },
        )),
    };
    let mut events = WatchClient::new(cluster.channel(watcher_node))
        .watch(tokio_stream::iter([create]).chain(tokio_stream::pending()))
        .await
        .expect("watch")
        .into_inner();
    let created = events
        .message()
        .await
        .expect("watch stream")
        .expect("created");
    assert!(created.created);

    for &id in &ids {
        put(
            &cluster,
            &[id],
            &format!("k/{id}"),
            &format!("written via node {id}"),
        )
        .await;
    }
    // Linearizable reads on every node see every acknowledged write.
    for &reader in &ids {
        for &writer in &ids {
            let value = get(&cluster, reader, &format!("k/{writer}"), false)
                .await
                .expect("read");
            assert_eq!(
                value.as_deref(),
                Some(format!("written via node {writer}").as_str())
            );
        }
    }
    let mut seen = Vec::new();
    while seen.len() < ids.len() {
        let response = tokio::time::timeout(STEP, events.message())
            .await
            .expect("watch events in time")
            .expect("watch stream")
            .expect("open stream");
        seen.extend(
            response
                .events
                .iter()
                .filter_map(|e| e.kv.as_ref())
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned()),
        );
    }
    assert_eq!(
        seen,
        ids.iter().map(|id| format!("k/{id}")).collect::<Vec<_>>()
    );

    let members = ClusterClient::new(cluster.channel(ids[1]))
        .member_list(MemberListRequest::default())
        .await
        .expect("member list")
        .into_inner()
        .members;
    assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    assert!(members
        .iter()
        .all(|m| m.client_ur_ls.len() == 1 && m.peer_ur_ls.len() == 1));

    let status = MaintenanceClient::new(cluster.channel(ids[2]))
        .status(StatusRequest::default())
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.leader, leader.id);
    assert!(status.raft_applied_index > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_under_write_load_elects_a_new_leader_and_loses_no_acknowledged_write() {
    const WRITERS: usize = 4;
    const WRITES_PER_WRITER: usize = 40;
    let (mut cluster, leader) = start(&[]).await;
    let ids = cluster.ids();
    let survivors: Vec<u64> = ids.iter().copied().filter(|&id| id != leader.id).collect();
    // Bounded load: four concurrent writers, 40 writes each, every write retried (through
    // any node) until acknowledged; each acknowledgement is recorded with its time.
    let acknowledged: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let channels: Vec<_> = ids.iter().map(|&id| cluster.channel(id)).collect();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let channels = channels.clone();
        let acknowledged = Arc::clone(&acknowledged);
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES_PER_WRITER {
                let key = format!("load/{w}/{i:04}");
                let deadline = Instant::now() + STEP;
                let mut attempt = 0usize;
                loop {
                    let channel = channels[(w + attempt) % channels.len()].clone();
                    let request = PutRequest {
                        key: key.clone().into_bytes(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    };
                    let mut client = KvClient::new(channel);
                    let put = client.put(request);
                    if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), put).await {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{key} not acknowledged within {STEP:?}"
                    );
                    attempt += 1;
                    tokio::time::sleep(ordo_launch::cluster::POLL_INTERVAL).await;
                }
                acknowledged
                    .lock()
                    .expect("lock")
                    .push((key, Instant::now()));
            }
        }));
    }
    let deadline = Instant::now() + STEP;
    while acknowledged.lock().expect("lock").len() < WRITERS * WRITES_PER_WRITER / 4 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(ordo_launch::cluster::POLL_INTERVAL).await;
    }
    cluster.kill(leader.id);
    let killed_at = Instant::now();
    let acked_before_kill = acknowledged.lock().expect("lock").len();
    for writer in writers {
        writer.await.expect("writer");
    }
    let new_leader = cluster
        .wait_leader(&[leader.id], STEP)
        .await
        .expect("a new leader");
    assert_ne!(new_leader.id, leader.id);
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let resumed = acknowledged
        .iter()
        .skip(acked_before_kill)
        .map(|(_, at)| at.saturating_duration_since(killed_at))
        .find(|d| !d.is_zero());
    println!(
        "leader {} killed after {acked_before_kill} acknowledged writes; writes resumed after {} ms; node {} leads in term {}",
        leader.id,
        resumed.unwrap_or_default().as_millis(),
        new_leader.id,
        new_leader.term
    );
    let expected: BTreeSet<String> = acknowledged.into_iter().map(|(k, _)| k).collect();
    assert_eq!(expected.len(), WRITERS * WRITES_PER_WRITER);
    for &id in &survivors {
        let present: BTreeSet<String> = keys_with_prefix(&cluster, id, "load/")
            .await
            .into_iter()
            .collect();
        let lost: Vec<_> = expected.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "node {id} lost acknowledged writes: {lost:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_is_replaced_and_after_resuming_never_serves_a_stale_linearizable_read() {
    let (cluster, leader) = start(&[]).await;
    put(&cluster, &[leader.id], "fact", "old").await;
    cluster.signal(leader.id, "STOP").expect("SIGSTOP");
    let new_leader = cluster
        .wait_leader(&[leader.id], STEP)
        .await
        .expect("a new leader");
    assert_ne!(new_leader.id, leader.id);
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader.id)
        .collect();
    put(&cluster, &others, "fact", "new").await;

    cluster.signal(leader.id, "CONT").expect("SIGCONT");
    // The resumed node still believes it leads until it hears the new term; a linearizable
    // read on it must either fail or see the new value, never the old one.
    let deadline = Instant::now() + STEP;
    let mut answered = 0;
    while answered < 20 {
        match get(&cluster, leader.id, "fact", false).await {
            Ok(value) => {
                assert_eq!(
                    value.as_deref(),
                    Some("new"),
                    "stale linearizable read on the resumed node"
                );
                answered += 1;
            }
            Err(status) => {
                assert!(
                    Instant::now() < deadline,
                    "the resumed node never answered: {status}"
                );
                tokio::time::sleep(ordo_launch::cluster::POLL_INTERVAL).await;
            }
        }
    }
    let after = cluster
        .wait_leader(&[], STEP)
        .await
        .expect("one leader after resuming");
    let old = cluster
        .status(leader.id)
        .await
        .expect("old leader's status");
    assert!(old.role != "leader" || after.id == leader.id && after.term > leader.term);
    assert!(
        old.term > leader.term,
        "the resumed node did not learn the new term"
    );
}

/// Kills a follower and writes `puts` keys `snap/NNNN` through the others; returns the
/// follower.
async fn fall_behind(cluster: &mut common::TestCluster, leader: u64, puts: usize) -> u64 {
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != follower)
        .collect();
    cluster.kill(follower);
    for i in 0..puts {
        put(cluster, &others, &format!("snap/{i:04}"), &"x".repeat(100)).await;
    }
    follower
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_down_while_the_log_is_compacted_catches_up_by_snapshot() {
    let (mut cluster, leader) =
        start(&["--snapshot-entries", "20", "--snapshot-tail-entries", "5"]).await;
    let follower = fall_behind(&mut cluster, leader.id, 120).await;
    let status: StatusReport = cluster.status_as(leader.id).await.expect("leader status");
    assert!(
        status.first_index > 10,
        "the leader's log was not compacted: first index {}",
        status.first_index
    );

    cluster.start(follower).expect("restart the follower");
    cluster
        .wait_applied(follower, status.applied_index, STEP)
        .await
        .expect("the follower catches up");
    let metrics = ordo_launch::http::get(
        cluster.spec(follower).admin_addr,
        "/metrics",
        Duration::from_secs(2),
    )
    .await
    .expect("metrics");
    let received = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("ordo_snapshots_received_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("the snapshot counter");
    assert!(received >= 1, "the follower caught up without a snapshot");
    let keys = keys_with_prefix(&cluster, follower, "snap/").await;
    assert_eq!(keys.len(), 120);
}

/// Flips one byte in the middle of the only snapshot file under `group_dir`; returns its name.
fn damage_the_snapshot(group_dir: &std::path::Path) -> String {
    let snapshot = std::fs::read_dir(group_dir)
        .expect("the group directory")
        .map(|e| e.expect("an entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .expect("a snapshot file");
    let mut bytes = std::fs::read(&snapshot).expect("read the snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&snapshot, &bytes).expect("write the snapshot");
    snapshot
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_snapshot_file_is_damaged_stops_serving_and_says_why() {
    let (mut cluster, leader) =
        start(&["--snapshot-entries", "20", "--snapshot-tail-entries", "0"]).await;
    let follower = fall_behind(&mut cluster, leader.id, 60).await;
    let status: StatusReport = cluster.status_as(leader.id).await.expect("leader status");
    assert!(status.snapshot_index > 1, "the leader took no snapshot");
    // The disk under the leader's snapshot goes bad; the follower comes back needing it.
    let name = damage_the_snapshot(&cluster.spec(leader.id).data_dir.join("log/groups/1"));
    cluster.start(follower).expect("restart the follower");
    let admin = cluster.spec(leader.id).admin_addr;
    let deadline = Instant::now() + STEP;
    let health = loop {
        let health = ordo_launch::http::get(admin, "/health", Duration::from_secs(2)).await;
        if let Ok(h) = health {
            if h.status == 503 && h.body.contains(&name) {
                break h;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the leader never reported the damage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(health.body.contains("checksum"), "{}", health.body);
    let status = ordo_launch::http::get(admin, "/status", Duration::from_secs(2))
        .await
        .expect("status");
    assert_eq!(status.status, 503);
    assert!(status.body.contains(&name), "{}", status.body);
    assert!(
        cluster.is_running(leader.id),
        "the node stays up, saying why"
    );
    assert!(cluster.log_tail(leader.id, 40).contains(&name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_killed_at_once_and_restarted_keep_every_acknowledged_write() {
    let (mut cluster, _) = start(&[]).await;
    let ids = cluster.ids();
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let key = format!("crash/{i:04}");
        put(&cluster, &ids[i % 3..=i % 3], &key, "v").await;
        acknowledged.push(key);
    }
    cluster.kill_all();
    cluster.start_all().expect("restart");
    cluster
        .wait_leader(&[], STEP)
        .await
        .expect("a leader after restart");
    for &id in &ids {
        let keys = keys_with_prefix(&cluster, id, "crash/").await;
        assert_eq!(keys, acknowledged, "node {id} after the restart");
    }
    // And the cluster takes new writes.
    put(&cluster, &ids, "after", "restart").await;
}
