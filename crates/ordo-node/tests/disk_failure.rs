//! A group whose disk fails stops serving and says why; the node's other groups go on.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use ordo_node::{Group, GroupId, NodeConfig};

const SECOND: GroupId = GroupId(2);

/// A small log cache, so a lagging follower's entries are read back from the WAL.
fn small_log_cache(c: &mut NodeConfig) {
    c.log_cache_bytes_max = 4096;
}

/// Damages one byte of `payload` where it stands in a segment file of the node's journal:
/// that record no longer matches its checksum. Returns the file's name.
fn damage_payload_in_journal(dir: &std::path::Path, payload: &[u8]) -> String {
    for segment in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if segment.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let mut bytes = std::fs::read(&segment).unwrap();
        if let Some(at) = bytes.windows(payload.len()).position(|w| w == payload) {
            bytes[at + payload.len() / 2] ^= 0xff;
            std::fs::write(&segment, &bytes).unwrap();
            return segment.file_name().unwrap().to_string_lossy().into_owned();
        }
    }
    panic!("no segment in {} holds the payload", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_whose_log_reads_fail_stops_naming_the_file_and_the_other_group_goes_on() {
    let mut cluster = Cluster::start(3, small_log_cache).await;
    let mut second: BTreeMap<u64, Group<Recorder>> = BTreeMap::new();
    for (&id, m) in &cluster.members {
        let g = m
            .node
            .start_group(SECOND, Recorder::default())
            .await
            .unwrap();
        second.insert(id, g);
    }
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    for i in 0..20 {
        cluster.propose(leader, &format!("early-{i}")).await;
    }
    // The follower goes down and falls behind by far more than the leader keeps in memory.
    cluster.crash(follower).await;
    second.remove(&follower);
    for i in 0..300 {
        cluster.propose(leader, &format!("{i:0>100}")).await;
    }
    // The leader's disk goes bad under an entry of the first group the follower lacks (the
    // journal holds both groups' records: the damage must hit the first group's).
    let name = damage_payload_in_journal(
        &cluster.data_dir(leader).join("log/journal"),
        format!("{:0>100}", 150).as_bytes(),
    );

    // Load on the second group through the same node while the first one fails.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let g = second[&leader].clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) && done < 100_000 {
                propose_on(&g, &format!("two-{done}")).await;
                done += 1;
            }
            done
        })
    };
    cluster.restart(follower).await.unwrap();
    let restarted = cluster.members[&follower]
        .node
        .start_group(SECOND, Recorder::default())
        .await
        .unwrap();
    second.insert(follower, restarted);

    // Catching the follower up reads the damaged record: the leader's first group stops.
    let mut leadership = cluster.group(leader).leadership();
    tokio::time::timeout(GUARD, async { while leadership.changed().await.is_ok() {} })
        .await
        .expect("the group with the failed disk stops");
    let node = &cluster.members[&leader].node;
    let failure = node
        .group_failure(GROUP)
        .expect("the group says why it stopped");
    assert!(failure.contains(&name), "does not name the file: {failure}");
    assert!(
        failure.contains("byte"),
        "does not give the offset: {failure}"
    );
    assert!(!node.group_stopped(SECOND));
    assert_eq!(node.group_failure(SECOND), None);

    // The second group on that node keeps committing, through it and elsewhere.
    let before = second[&leader].applied_index();
    let (index, _) = propose_on(&second[&leader], "after the failure").await;
    assert!(index > before);
    propose_on(&second[&follower], "from the restarted node").await;
    stop.store(true, Ordering::Relaxed);
    let done = load.await.unwrap();
    assert!(done > 0);
    cluster.shutdown_all().await;
}
