//! Multi-node clusters in one process over 127.0.0.1, with real WAL directories.

mod common;

use std::collections::BTreeSet;

use common::*;
use ordo_node::ProposeError;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_a_leader_and_apply_proposals_from_any_node_in_one_order() {
    let cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    let mut tasks = Vec::new();
    for via in 1..=3u64 {
        for i in 0..20 {
            let group = cluster.group(via).clone();
            tasks.push(tokio::spawn(async move {
                propose_on(&group, &format!("n{via}-{i}")).await.0
            }));
        }
    }
    let mut max_index = 0;
    let mut acknowledged = 0;
    for t in tasks {
        let index = t.await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_index_on_a_follower_sees_every_write_acknowledged_before_it() {
    let cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut last = 0;
    for i in 0..10 {
        last = cluster.propose(leader, &format!("w{i}")).await.0;
    }
    let group = cluster.group(follower);
    let seen = group
        .linearizable_read(|sm| text(&sm.entries))
        .await
        .expect("read_index on a follower");
    assert!(group.applied_index() >= last);
    assert_eq!(seen, (0..10).map(|i| format!("w{i}")).collect::<Vec<_>>());
    // Many reads at once (served together under one read index) all see the writes.
    let reads: Vec<_> = (0..50)
        .map(|_| {
            let g = group.clone();
            tokio::spawn(async move { g.linearizable_read(|sm| sm.entries.len()).await })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.unwrap(), Ok(10));
    }
    assert_eq!(group.metrics().reads, 51);
    cluster.shutdown_all().await;
}

fn short_timeouts(c: &mut ordo_node::NodeConfig) {
    c.request_timeout_ms = 2_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_leader_is_replaced_and_no_acknowledged_write_is_lost() {
    let mut cluster = Cluster::start(3, short_timeouts).await;
    let old_leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != old_leader).unwrap();
    // Writers on a follower keep proposing while the leader crashes.
    let group = cluster.group(follower).clone();
    let writer = tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for i in 0..60 {
            let data = format!("w{i}");
            if group.propose(data.clone()).await.is_ok() {
                acknowledged.push(data);
            }
        }
        acknowledged
    });
    // Let some writes through, then crash the leader without flushing anything.
    cluster
        .group(follower)
        .wait_applied(10, GUARD)
        .await
        .unwrap();
    cluster.crash(old_leader).await;
    let acknowledged = tokio::time::timeout(GUARD, writer)
        .await
        .expect("writer finished")
        .unwrap();
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    let last = cluster.propose(new_leader, "after").await.0;
    for id in cluster.members.keys().copied().collect::<Vec<_>>() {
        let applied = text(&cluster.applied_entries(id, last).await);
        for a in &acknowledged {
            assert_eq!(
                applied.iter().filter(|e| *e == a).count(),
                1,
                "acknowledged {a} missing or duplicated on node {id}"
            );
        }
    }
    assert!(acknowledged.len() >= 10);
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_recovers_from_its_data_dir_and_catches_up() {
    let mut cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    for i in 0..10 {
        cluster.propose(leader, &format!("a{i}")).await;
    }
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.crash(follower).await;
    let mut last = 0;
    for i in 0..10 {
        last = cluster.propose(leader, &format!("b{i}")).await.0;
    }
    cluster.restart(follower).await.expect("restart");
    let expected = cluster.applied_entries(leader, last).await;
    assert_eq!(cluster.applied_entries(follower, last).await, expected);
    assert_eq!(expected.len(), 20);
    cluster.shutdown_all().await;
}

fn small_snapshots(c: &mut ordo_node::NodeConfig) {
    c.snapshot_entries = 20;
    c.snapshot_tail_entries = 5;
    c.snapshot_chunk_bytes = 1024;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_compacted_log_catches_up_by_a_streamed_snapshot() {
    let mut cluster = Cluster::start(3, small_snapshots).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.crash(follower).await;
    let mut last = 0;
    for i in 0..80 {
        // 100-byte entries make the snapshot span several 1 KiB chunks.
        last = cluster.propose(leader, &format!("{i:0>100}")).await.0;
    }
    // Snapshots are written off the applying thread, at the lowest CPU priority, after the
    // applied index is published: compaction may trail the last answer.
    status_when(cluster.group(leader), "the leader's log compacted", |s| {
        s.first_index > 30
    })
    .await;
    cluster.restart(follower).await.expect("restart");
    let expected = cluster.applied_entries(leader, last).await;
    assert_eq!(cluster.applied_entries(follower, last).await, expected);
    assert_eq!(expected.len(), 80);
    assert!(cluster.group(follower).metrics().snapshots_received >= 1);
    assert!(cluster.group(leader).metrics().snapshots_sent >= 1);
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_a_crash_of_all_three_nodes() {
    let mut cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let via = 1 + (i % 3);
        let data = format!("c{i}");
        cluster.propose(via, &data).await;
        acknowledged.push(data);
    }
    let _ = leader;
    for id in 1..=3 {
        cluster.crash(id).await;
    }
    for id in 1..=3 {
        cluster.restart(id).await.expect("restart");
    }
    cluster.leader().await;
    for id in 1..=3 {
        let seen = cluster
            .group(id)
            .linearizable_read(|sm| text(&sm.entries))
            .await
            .expect("read after restart");
        assert_eq!(seen, acknowledged, "node {id}");
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_with_a_corrupt_segment_refuses_to_start_and_the_others_go_on() {
    let mut cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    for i in 0..20 {
        cluster.propose(leader, &format!("{i:0>40}")).await;
    }
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster
        .group(follower)
        .wait_applied(20, GUARD)
        .await
        .unwrap();
    cluster.crash(follower).await;
    let journal = cluster.data_dir(follower).join("log/journal");
    let segment = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).unwrap();
    // Damage a payload byte of an early record: valid records follow, so this is
    // corruption, not a torn tail.
    let at = 60.min(bytes.len() / 4);
    bytes[at] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let error = match cluster.restart(follower).await {
        Err(e) => e.to_string(),
        Ok(()) => panic!("a node with a corrupt segment started"),
    };
    let name = segment.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        error.contains(&name),
        "error does not name the file: {error}"
    );
    assert!(
        error.contains("byte"),
        "error does not give the offset: {error}"
    );

    let last = cluster.propose(leader, "still-going").await.0;
    let other = (1..=3).find(|&id| id != leader && id != follower).unwrap();
    let entries = text(&cluster.applied_entries(other, last).await);
    assert_eq!(entries.last().map(String::as_str), Some("still-going"));
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_node_joins_as_a_learner_and_is_promoted_to_voter() {
    let mut cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    for i in 0..10 {
        cluster.propose(leader, &format!("before{i}")).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr4 = listener.local_addr().unwrap();
    cluster.addrs.insert(4, addr4);
    let peers = cluster.addrs.clone();
    let mut config = cluster.config(4, &peers);
    config.join = true;
    let member = start_member(config, listener).await.expect("node 4 starts");
    cluster.members.insert(4, member);

    // Asked through a follower: the change is forwarded to the leader.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let conf = cluster
        .group(follower)
        .change_membership(ordo_node::MembershipChange::AddLearner { id: 4, addr: addr4 })
        .await
        .expect("add learner");
    assert_eq!(conf.learners, vec![4]);
    let last = cluster.propose(leader, "with-learner").await.0;
    let expected = cluster.applied_entries(leader, last).await;
    assert_eq!(cluster.applied_entries(4, last).await, expected);
    let status = cluster.group(leader).status().await.unwrap();
    assert!(status.peers.iter().any(|p| p.id == 4 && p.is_learner));

    let conf = cluster
        .group(leader)
        .change_membership(ordo_node::MembershipChange::AddVoter { id: 4, addr: addr4 })
        .await
        .expect("promote");
    assert_eq!(conf.voters, vec![1, 2, 3, 4]);
    assert!(conf.learners.is_empty());
    let last = cluster.propose(4, "from-the-new-voter").await.0;
    let expected = cluster.applied_entries(leader, last).await;
    assert_eq!(cluster.applied_entries(4, last).await, expected);
    assert_eq!(
        text(&expected).last().map(String::as_str),
        Some("from-the-new-voter")
    );

    // Node 4 restarts knowing only the leader's address: the other members' addresses
    // come from what it recorded. Then the leader crashes, and the three remaining voters
    // of four — node 4 among them — must all talk to each other to go on.
    cluster.crash(4).await;
    let mut config = cluster.config(4, &[(leader, cluster.addrs[&leader]), (4, addr4)].into());
    config.join = true;
    let member = start_member(config, bind_again(addr4).await)
        .await
        .expect("node 4 restarts");
    cluster.members.insert(4, member);
    cluster.crash(leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let last = cluster.propose(4, "after-the-leader-crash").await.0;
    let expected = cluster.applied_entries(new_leader, last).await;
    assert_eq!(cluster.applied_entries(4, last).await, expected);
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_oversize_proposal_is_refused_and_changes_nothing() {
    let cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    let last = cluster.propose(leader, "small").await.0;
    let group = cluster.group(leader);
    let max = 1 << 20;
    let error = group.propose(vec![0u8; max + 1]).await.unwrap_err();
    assert_eq!(
        error,
        ordo_node::ProposeError::TooLarge {
            bytes: max + 1,
            max
        }
    );
    let next = cluster.propose(leader, "after").await.0;
    let entries = text(&cluster.applied_entries(leader, next).await);
    assert_eq!(entries, vec!["small", "after"]);
    assert!(next > last);
    assert_eq!(group.metrics().proposals_failed, 1);
    cluster.shutdown_all().await;
}

fn fsync_interval(c: &mut ordo_node::NodeConfig) {
    c.fsync = ordo_node::FsyncPolicy::Interval { interval_ms: 5 };
}

fn fsync_never(c: &mut ordo_node::NodeConfig) {
    c.fsync = ordo_node::FsyncPolicy::Never;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proposals_commit_under_the_interval_and_never_fsync_policies() {
    for tweak in [
        fsync_interval as fn(&mut ordo_node::NodeConfig),
        fsync_never,
    ] {
        let cluster = Cluster::start(3, tweak).await;
        let leader = cluster.leader().await;
        let follower = (1..=3).find(|&id| id != leader).unwrap();
        let mut last = 0;
        for i in 0..10 {
            last = cluster.propose(follower, &format!("p{i}")).await.0;
        }
        let expected: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        for id in 1..=3 {
            assert_eq!(text(&cluster.applied_entries(id, last).await), expected);
        }
        cluster.shutdown_all().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_reports_each_members_match_index_and_lag() {
    let cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    let mut last = 0;
    for i in 0..5 {
        last = cluster.propose(leader, &format!("s{i}")).await.0;
    }
    // Followers acknowledge asynchronously: wait until the leader has heard from both.
    let status = status_when(cluster.group(leader), "followers caught up", |s| {
        s.peers.len() == 3 && s.peers.iter().all(|p| p.match_index >= last)
    })
    .await;
    assert_eq!(status.leader, leader);
    assert!(status.commit_index >= last);
    assert!(status.peers.iter().all(|p| p.lag == 0 && !p.is_learner));
    assert_eq!(status.conf_state.voters, vec![1, 2, 3]);
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let fs = cluster.group(follower).status().await.unwrap();
    assert_eq!(fs.leader, leader);
    assert!(fs.peers.is_empty());
    let m = cluster.group(leader).metrics();
    assert!(
        m.term >= 2,
        "the first leader is elected in term 2 or later"
    );
    assert!(m.entries_committed >= 5 && m.commit_index >= last);
    assert!(m.fsync_latency_us.count >= 1);
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_member_no_longer_counts_and_the_rest_go_on() {
    let mut cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    cluster.propose(leader, "three").await;
    let gone = (1..=3).find(|&id| id != leader).unwrap();
    let conf = cluster
        .group(leader)
        .change_membership(ordo_node::MembershipChange::Remove { id: gone })
        .await
        .expect("remove");
    assert!(!conf.voters.contains(&gone) && conf.voters.len() == 2);
    cluster.crash(gone).await;
    // Two voters of two: commits need both remaining nodes, and they have them.
    let last = cluster.propose(leader, "two").await.0;
    let other = (1..=3).find(|&id| id != leader && id != gone).unwrap();
    assert_eq!(
        text(&cluster.applied_entries(other, last).await),
        vec!["three", "two"]
    );
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_peer_messages_are_dropped_and_counted() {
    use ordo_node::transport::{PeerMessage, Transport, TransportConfig};
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = std::collections::BTreeMap::new();
    let mut addrs = std::collections::BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap());
        listeners.insert(id, l);
    }
    let cluster = Cluster {
        dir,
        addrs: addrs.clone(),
        members: Default::default(),
        tweak: no_tweak,
    };
    let mut members = Vec::new();
    for id in 1..=2 {
        let l = listeners.remove(&id).unwrap();
        members.push(start_member(cluster.config(id, &addrs), l).await.unwrap());
    }
    // Node 3 is a bare transport that speaks garbage inside well-formed frames.
    let (rogue, _channels) =
        Transport::start(TransportConfig::new(1, 3), listeners.remove(&3).unwrap()).unwrap();
    rogue.add_peer(1, addrs[&1]).unwrap();
    for payload in [&[1u8, 99][..], &[7, 0, 0], &[]] {
        rogue
            .send(
                1,
                PeerMessage {
                    group_id: 1,
                    payload: bytes::Bytes::copy_from_slice(payload),
                },
            )
            .unwrap();
    }
    let g1 = members[0].group.clone();
    tokio::time::timeout(GUARD, async {
        while g1.metrics().messages_decode_failed < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("garbage counted");
    // Nodes 1 and 2 are a majority of three and carry on.
    let out = propose_on(&g1, "ok").await;
    assert_eq!(out.1, 1);
    rogue.shutdown().await;
    for m in members {
        m.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_groups_on_the_same_nodes_keep_separate_logs() {
    let cluster = Cluster::start(3, no_tweak).await;
    let second = ordo_node::GroupId(2);
    let mut groups2 = std::collections::BTreeMap::new();
    for (id, m) in &cluster.members {
        let g = m
            .node
            .start_group(second, Recorder::default())
            .await
            .unwrap();
        groups2.insert(*id, g);
    }
    let leader = cluster.leader().await;
    let mut last1 = 0;
    let mut last2 = 0;
    for i in 0..10 {
        last1 = cluster.propose(leader, &format!("one-{i}")).await.0;
        let via = 1 + (i % 3);
        last2 = propose_on(&groups2[&via], &format!("two-{i}")).await.0;
    }
    for id in 1..=3u64 {
        let one = text(&cluster.applied_entries(id, last1).await);
        assert!(one.iter().all(|e| e.starts_with("one-")) && one.len() == 10);
        groups2[&id].wait_applied(last2, GUARD).await.unwrap();
        let two = groups2[&id].read(|sm| text(&sm.entries));
        assert_eq!(two, (0..10).map(|i| format!("two-{i}")).collect::<Vec<_>>());
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_moves_to_the_node_asked_for() {
    let cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    cluster.propose(leader, "x").await;
    let target = (1..=3).find(|&id| id != leader).unwrap();
    // Asked through the target itself: a follower forwards the request.
    tokio::time::timeout(GUARD, async {
        loop {
            cluster.group(target).transfer_leader(target).await.unwrap();
            if cluster.leader().await == target {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("leadership moved");
    let last = cluster.propose(target, "y").await.0;
    assert_eq!(
        text(&cluster.applied_entries(leader, last).await),
        vec!["x", "y"]
    );
    cluster.shutdown_all().await;
}

fn lease_reads(c: &mut ordo_node::NodeConfig) {
    c.lease_reads = true;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_based_reads_on_a_follower_see_acknowledged_writes() {
    let cluster = Cluster::start(3, lease_reads).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    cluster.propose(leader, "leased").await;
    let seen = cluster
        .group(follower)
        .linearizable_read(|sm| text(&sm.entries))
        .await
        .unwrap();
    assert_eq!(seen, vec!["leased"]);
    cluster.shutdown_all().await;
}

fn slow_elections(c: &mut ordo_node::NodeConfig) {
    c.election_timeout_ticks = 40;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposal_overwritten_by_a_new_leader_fails_as_dropped() {
    let cluster = Cluster::start(3, slow_elections).await;
    let old = cluster.leader().await;
    cluster.propose(old, "a").await;
    let others: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    // Cut the leader off: it stops sending to its peers and refuses their connections.
    let transport = cluster.members[&old].node.transport().unwrap();
    for id in &others {
        transport.remove_peer(*id).await.unwrap();
    }
    // Still leader for an election timeout: it appends the proposal and waits.
    let lost = {
        let g = cluster.group(old).clone();
        tokio::spawn(async move { g.propose("lost").await })
    };
    // The others elect a leader of a later term, which commits in the same places.
    let new = poll_until("the majority elects a leader", async || {
        for id in &others {
            let s = cluster.group(*id).status().await.unwrap();
            if s.role == ordo_node::StateRole::Leader {
                return Some(*id);
            }
        }
        None
    })
    .await;
    let last = cluster.propose(new, "won").await.0;
    // Heal: the old leader hears from the new one and its entry is overwritten.
    for id in &others {
        transport.add_peer(*id, cluster.addrs[id]).unwrap();
    }
    let outcome = tokio::time::timeout(GUARD, lost).await.unwrap().unwrap();
    assert_eq!(outcome, Err(ordo_node::ProposeError::Dropped));
    let expected = cluster.applied_entries(new, last).await;
    assert_eq!(cluster.applied_entries(old, last).await, expected);
    assert!(!text(&expected).contains(&"lost".to_string()));
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_restores_its_own_snapshot_and_reapplies_the_committed_rest() {
    let mut cluster = Cluster::start(3, small_snapshots).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut last = 0;
    for i in 0..50 {
        last = cluster.propose(leader, &format!("r{i}")).await.0;
    }
    let before = cluster.applied_entries(follower, last).await;
    let m = cluster.members.remove(&follower).unwrap();
    // The applied index is published before the snapshot that follows it is written.
    tokio::time::timeout(GUARD, async {
        while m.group.metrics().snapshots_taken == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the follower took a snapshot of its own");
    // A clean stop records the commit index, so the restarted node re-applies up to it
    // on its own, before hearing from the leader.
    m.node.shutdown().await;
    cluster.restart(follower).await.unwrap();
    let status = cluster.group(follower).status().await.unwrap();
    assert!(
        status.snapshot_index > 1,
        "no snapshot of its own: {status:?}"
    );
    assert!(status.commit_index >= last, "{status:?}");
    assert_eq!(cluster.applied_entries(follower, last).await, before);
    cluster.shutdown_all().await;
}

fn churn(c: &mut ordo_node::NodeConfig) {
    c.snapshot_entries = 15;
    c.snapshot_tail_entries = 3;
    c.snapshot_chunk_bytes = 1024;
    // Proposals forwarded to a leader that just crashed wait this long before counting as
    // unknown; keep the test short.
    c.request_timeout_ms = 1_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_rounds_of_crashes_restarts_and_compaction() {
    let mut cluster = Cluster::start(3, churn).await;
    let mut acknowledged: Vec<String> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut n = 0;
    // A fixed schedule: which node crashes in each round (leader or not, as it falls).
    for (round, victim) in [1u64, 2, 3, 1, 3, 2].into_iter().enumerate() {
        for _ in 0..10 {
            let via = *cluster
                .members
                .keys()
                .nth(n % cluster.members.len())
                .unwrap();
            let data = format!("r{round}-{n:0>60}");
            n += 1;
            match cluster.group(via).propose(data.clone()).await {
                Ok(_) => acknowledged.push(data),
                Err(_) => unknown.push(data),
            }
        }
        cluster.crash(victim).await;
        for _ in 0..20 {
            let via = *cluster
                .members
                .keys()
                .nth(n % cluster.members.len())
                .unwrap();
            let data = format!("r{round}-{n:0>60}");
            n += 1;
            match cluster.group(via).propose(data.clone()).await {
                Ok(_) => acknowledged.push(data),
                Err(_) => unknown.push(data),
            }
        }
        cluster.restart(victim).await.expect("restart");
    }
    let leader = cluster.leader().await;
    let last = cluster.propose(leader, "final").await.0;
    let reference = text(&cluster.applied_entries(leader, last).await);
    for id in 1..=3 {
        assert_eq!(
            text(&cluster.applied_entries(id, last).await),
            reference,
            "node {id} diverged"
        );
    }
    for a in &acknowledged {
        assert_eq!(
            reference.iter().filter(|e| *e == a).count(),
            1,
            "acknowledged {a} lost or duplicated"
        );
    }
    for u in &unknown {
        assert!(
            reference.iter().filter(|e| *e == u).count() <= 1,
            "{u} applied twice"
        );
    }
    assert!(acknowledged.len() > unknown.len());
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_node_refuses_a_single_threaded_runtime_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ordo_node::NodeConfig::new(1, dir.path(), addr, [(1, addr)].into());
    match ordo_node::Node::start_on(config, listener) {
        Err(ordo_node::NodeError::Runtime) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("started on a current-thread runtime"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_proposal_forwarded_to_a_leader_that_dies_fails_once_another_leads_not_at_its_timeout() {
    // A request timeout far beyond the guard: only the leader change can end the wait.
    let mut cluster = Cluster::start(3, |c| c.request_timeout_ms = 600_000).await;
    let leader = cluster.leader().await;
    cluster.propose(leader, "before").await;
    cluster.crash(leader).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    // The follower still takes the crashed node for the leader: the proposal is forwarded
    // into the queue of a peer that will never answer.
    let outcome = tokio::time::timeout(GUARD, cluster.group(follower).propose("after"))
        .await
        .expect("the proposal waited past the leader change");
    match outcome {
        Err(ProposeError::LeaderLost) => {}
        // The forward was refused outright and retried with the new leader.
        Ok(_) => {}
        other => panic!("unexpected outcome {other:?}"),
    }
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    cluster.propose(follower, "later").await;
}
