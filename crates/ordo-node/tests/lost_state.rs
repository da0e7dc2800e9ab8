//! A node that lost its disk state never votes or counts toward a quorum: its peers refuse
//! it, it stops and says so, and a node that is merely new is welcome.

mod common;

use common::{bind_again, no_tweak, poll_until, text, Cluster, Recorder, GROUP, GUARD};
use ordo_node::transport::{
    PeerEvent, PeerIncarnations, PeerMessage, ProtocolError, RejectCode, Transport,
    TransportChannels, TransportConfig,
};
use ordo_node::{LostState, Node, NodeError, NodeId};
use tokio::sync::mpsc;

/// Polls `check` until it holds; the guard only bounds a hang.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    poll_until(what, async || check().then_some(())).await;
}

fn peer_incarnation(cluster: &Cluster, on: NodeId, of: NodeId) -> Option<u64> {
    cluster.members[&on]
        .node
        .transport()
        .and_then(|t| t.peer_incarnation(of))
}

/// Starts node `id` from its directory and returns the lost state it must report: at
/// once when starting its group, or soon after, when a peer refuses it.
async fn start_expecting_lost_state(cluster: &Cluster, id: NodeId) -> LostState {
    let config = cluster.config(id, &cluster.addrs);
    let node = match Node::start_on(config, bind_again(cluster.addrs[&id]).await) {
        Ok(node) => node,
        Err(NodeError::LostState(lost)) => return lost,
        Err(other) => panic!("{other}"),
    };
    let error = match node.start_group(GROUP, Recorder::default()).await {
        Err(error) => error,
        Ok(group) => {
            let error = tokio::time::timeout(GUARD, node.fatal_error())
                .await
                .expect("a refused node reports it");
            // The group reports lost state on its way out; its task ends just after.
            eventually("the group stops after reporting lost state", || {
                node.group_stopped(GROUP)
            })
            .await;
            assert!(
                group.status().await.is_err(),
                "a stopped group still answers"
            );
            error
        }
    };
    let text = error.to_string();
    assert!(text.contains("lost state"), "{text}");
    assert!(text.contains("new member"), "no remedy in: {text}");
    node.shutdown().await;
    match error {
        NodeError::LostState(lost) => lost,
        other => panic!("expected lost state, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_node_is_refused_reports_lost_state_and_stays_refused_after_its_peers_restart() {
    let mut cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    let last = cluster.propose(leader, "a").await.0;
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    let others: Vec<NodeId> = (1..=3).filter(|&id| id != victim).collect();
    cluster.applied_entries(victim, last).await;
    let old = cluster.members[&victim].node.incarnation();
    for &id in &others {
        eventually("the peers record the victim's incarnation", || {
            peer_incarnation(&cluster, id, victim) == Some(old)
        })
        .await;
    }
    let refusals_before: Vec<u64> = others
        .iter()
        .map(|id| {
            cluster.members[id]
                .node
                .transport()
                .unwrap()
                .metrics()
                .handshake_failures
        })
        .collect();

    cluster.crash(victim).await;
    std::fs::remove_dir_all(cluster.data_dir(victim)).unwrap();
    let lost = start_expecting_lost_state(&cluster, victim).await;
    match &lost {
        LostState::RefusedByPeer {
            node, peer, dir, ..
        } => {
            assert_eq!(*node, victim);
            assert!(others.contains(peer), "refused by {peer}");
            assert_eq!(dir, &cluster.data_dir(victim));
        }
        other => panic!("{other:?}"),
    }
    // The refusal happened at the handshake: nothing the new incarnation sent was read,
    // and the record still names the old one.
    let refused_somewhere = others.iter().zip(&refusals_before).any(|(id, before)| {
        cluster.members[id]
            .node
            .transport()
            .unwrap()
            .metrics()
            .handshake_failures
            > *before
    });
    assert!(refused_somewhere);
    for &id in &others {
        assert_eq!(peer_incarnation(&cluster, id, victim), Some(old));
    }

    // The directory is marked: it stays refused without asking anyone.
    let lost = start_expecting_lost_state(&cluster, victim).await;
    assert!(
        matches!(&lost, LostState::Marked { dir, reason }
            if dir == &cluster.data_dir(victim) && reason.contains("refused")),
        "{lost:?}"
    );

    // The two others are a majority without it.
    let last = cluster.propose(leader, "b").await.0;

    // Both peers crash at once and come back: their record is on disk. The victim is
    // wiped again (mark and all), and is still refused.
    for &id in &others {
        cluster.crash(id).await;
    }
    for &id in &others {
        cluster.restart(id).await.unwrap();
        assert_eq!(peer_incarnation(&cluster, id, victim), Some(old));
    }
    std::fs::remove_dir_all(cluster.data_dir(victim)).unwrap();
    let lost = start_expecting_lost_state(&cluster, victim).await;
    assert!(matches!(lost, LostState::RefusedByPeer { .. }), "{lost:?}");

    let leader = cluster.leader().await;
    assert!(others.contains(&leader));
    let newest = cluster.propose(leader, "c").await.0;
    assert!(newest > last);
    for &id in &others {
        assert_eq!(
            text(&cluster.applied_entries(id, newest).await),
            vec!["a", "b", "c"]
        );
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_started_for_the_first_time_after_the_others_is_accepted_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut listeners = std::collections::BTreeMap::new();
    let mut addrs = std::collections::BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap());
        listeners.insert(id, l);
    }
    drop(listeners.remove(&3));
    let mut cluster = Cluster {
        dir,
        addrs: addrs.clone(),
        members: Default::default(),
        tweak: no_tweak,
    };
    for (id, l) in listeners {
        let member = common::start_member(cluster.config(id, &addrs), l)
            .await
            .unwrap();
        cluster.members.insert(id, member);
    }
    let leader = cluster.leader().await;
    let first = cluster.propose(leader, "before").await.0;

    cluster.restart(3).await.unwrap();
    assert_eq!(
        text(&cluster.applied_entries(3, first).await),
        vec!["before"]
    );
    let late = cluster.members[&3].node.incarnation();
    for id in [1, 2] {
        eventually("the peers record the new node", || {
            peer_incarnation(&cluster, id, 3) == Some(late)
        })
        .await;
    }
    let next = cluster.propose(leader, "after").await.0;
    assert_eq!(
        text(&cluster.applied_entries(3, next).await),
        vec!["before", "after"]
    );
    assert!(cluster.members[&3].node.lost_state().is_none());

    // A plain restart keeps its incarnation and is welcome.
    cluster.crash(3).await;
    cluster.restart(3).await.unwrap();
    assert_eq!(cluster.members[&3].node.incarnation(), late);
    let last = cluster.propose(leader, "again").await.0;
    assert_eq!(
        text(&cluster.applied_entries(3, last).await),
        vec!["before", "after", "again"]
    );
    assert!(cluster.members[&3].node.lost_state().is_none());
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_whose_directory_was_removed_is_refused_at_start_naming_it() {
    let mut cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    let last = cluster.propose(leader, "a").await.0;
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    cluster.applied_entries(victim, last).await;
    cluster.crash(victim).await;
    // The node's whole log goes: every group's entries, hard state and snapshots.
    std::fs::remove_dir_all(cluster.data_dir(victim).join("log")).unwrap();
    let group_dir = cluster.data_dir(victim).join("log/groups/1");
    match cluster.restart(victim).await {
        Err(NodeError::LostState(LostState::GroupMissing { group, dir })) => {
            assert_eq!((group, dir), (1, group_dir));
        }
        Err(other) => panic!("{other}"),
        Ok(()) => panic!("a node without its group's hard state started"),
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joined_nodes_group_is_listed_once_it_has_state_and_its_loss_is_refused() {
    let mut cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    cluster.propose(leader, "a").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr4 = listener.local_addr().unwrap();
    cluster.addrs.insert(4, addr4);
    let mut config = cluster.config(4, &cluster.addrs);
    config.join = true;
    let member = common::start_member(config.clone(), listener)
        .await
        .unwrap();
    assert!(
        member.node.listed_groups().is_empty(),
        "nothing on disk yet"
    );
    cluster.members.insert(4, member);
    cluster
        .group(leader)
        .change_membership(ordo_node::MembershipChange::AddLearner { id: 4, addr: addr4 })
        .await
        .expect("add learner");
    let last = cluster.propose(leader, "b").await.0;
    assert_eq!(
        text(&cluster.applied_entries(4, last).await),
        vec!["a", "b"]
    );
    eventually("the joined group is listed", || {
        cluster.members[&4].node.listed_groups() == vec![GROUP]
    })
    .await;

    cluster.crash(4).await;
    std::fs::remove_dir_all(cluster.data_dir(4).join("log")).unwrap();
    let group_dir = cluster.data_dir(4).join("log/groups/1");
    let node = Node::start_on(config, bind_again(addr4).await).unwrap();
    match node.start_group(GROUP, Recorder::default()).await {
        Err(NodeError::LostState(LostState::GroupMissing { group: 1, dir })) => {
            assert_eq!(dir, group_dir);
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a joined node without its group's hard state started"),
    }
    node.shutdown().await;
    cluster.shutdown_all().await;
}

/// A three-node cluster that committed five entries, and a follower that applied them:
/// the cluster, the follower and the last index.
async fn five_writes_applied_by_a_follower() -> (Cluster, NodeId, u64) {
    let cluster = Cluster::start(3, no_tweak).await;
    let leader = cluster.leader().await;
    let mut last = 0;
    for i in 0..5 {
        last = cluster.propose(leader, &format!("e{i}")).await.0;
    }
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    cluster.applied_entries(victim, last).await;
    (cluster, victim, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_cut_short_even_exactly_where_its_records_end_refuses_start_as_lost_state() {
    let (mut cluster, victim, _) = five_writes_applied_by_a_follower().await;
    // A crash: the commit index on disk stays behind, so only the segment's length can
    // tell that entries went missing.
    cluster.crash(victim).await;
    let journal = cluster.data_dir(victim).join("log/journal");
    let segment = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a segment file");
    // Cut where the records end: what is left is a clean, shorter log of whole records.
    let bytes = std::fs::read(&segment).unwrap();
    let records_end = bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    let cut = records_end
        .min(bytes.len() as u64 / 2)
        .max(ordo_wal::SEGMENT_HEADER_BYTES);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let error = match cluster.restart(victim).await {
        Err(error) => error,
        Ok(()) => panic!("a node with a truncated segment started"),
    };
    match &error {
        NodeError::LostState(LostState::SegmentTruncated {
            path, len_bytes, ..
        }) => assert_eq!((path, *len_bytes), (&segment, cut)),
        other => panic!("{other}"),
    }
    assert!(error.to_string().contains("lost state"), "{error}");
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_cut_inside_the_zeros_after_its_records_lost_nothing_and_starts() {
    let (mut cluster, victim, _) = five_writes_applied_by_a_follower().await;
    cluster.crash(victim).await;
    let journal = cluster.data_dir(victim).join("log/journal");
    let segment = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a segment file");
    let len = std::fs::metadata(&segment).unwrap().len();
    let bytes = std::fs::read(&segment).unwrap();
    let records_end = bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    assert!(records_end + 4 < len - 37, "the cut must fall in the zeros");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 37)
        .unwrap();
    cluster
        .restart(victim)
        .await
        .expect("every record is still there: the node starts");
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), len);
    let after = std::fs::read(&segment).unwrap();
    assert_eq!(after[..records_end as usize], bytes[..records_end as usize]);
    cluster.shutdown_all().await;
}

const CLUSTER: u64 = 7;

fn transport_config(node_id: NodeId, incarnation: u64) -> TransportConfig {
    TransportConfig {
        incarnation,
        backoff_ms_min: 5,
        backoff_ms_max: 50,
        handshake_timeout_ms: 5_000,
        ..TransportConfig::new(CLUSTER, node_id)
    }
}

async fn start_transport(
    config: TransportConfig,
    record: PeerIncarnations,
    at: Option<std::net::SocketAddr>,
) -> (Transport, TransportChannels) {
    let listener = match at {
        Some(addr) => bind_again(addr).await,
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    Transport::start_with(config, listener, record).unwrap()
}

async fn next_event(
    events: &mut mpsc::Receiver<PeerEvent>,
    wanted: impl Fn(&PeerEvent) -> bool,
) -> PeerEvent {
    tokio::time::timeout(GUARD, async {
        loop {
            let event = events.recv().await.expect("events closed");
            if wanted(&event) {
                return event;
            }
        }
    })
    .await
    .expect("no such event within the guard")
}

fn message(payload: &'static [u8]) -> PeerMessage {
    PeerMessage {
        group_id: 1,
        payload: bytes::Bytes::from_static(payload),
    }
}

#[tokio::test]
async fn a_known_peer_with_another_incarnation_is_refused_and_nothing_it_sends_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let record = || PeerIncarnations::open(dir.path(), "peers").unwrap();
    let (a, mut a_rx) = start_transport(transport_config(1, 0xa), record(), None).await;
    let (b, _b_rx) = start_transport(
        transport_config(2, 0xb1),
        PeerIncarnations::in_memory(),
        None,
    )
    .await;
    let b_addr = b.local_addr();
    a.add_peer(2, b_addr).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    b.send(1, message(b"first life")).unwrap();
    let (from, got) = tokio::time::timeout(GUARD, a_rx.messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from, &got.payload[..]), (2, &b"first life"[..]));
    assert_eq!(a.peer_incarnation(2), Some(0xb1));
    b.shutdown().await;

    // Node 2 comes back with another incarnation: its directory is not the one it had.
    let (b, mut b_rx) = start_transport(
        transport_config(2, 0xb2),
        PeerIncarnations::in_memory(),
        Some(b_addr),
    )
    .await;
    b.add_peer(1, a.local_addr()).unwrap();
    b.send(1, message(b"second life")).unwrap();
    let refused = next_event(&mut b_rx.events, |e| {
        matches!(e, PeerEvent::OutboundError { .. })
    })
    .await;
    match refused {
        PeerEvent::OutboundError {
            peer: 1,
            error: ProtocolError::RejectedByPeer { code, reason },
        } => {
            assert_eq!(code, RejectCode::LostState);
            assert!(reason.contains("lost its state"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let seen = next_event(&mut a_rx.events, |e| {
        matches!(e, PeerEvent::InboundError { peer: Some(2), .. })
    })
    .await;
    assert!(
        matches!(
            seen,
            PeerEvent::InboundError {
                error: ProtocolError::LostState {
                    node_id: 2,
                    recorded: 0xb1,
                    presented: 0xb2
                },
                ..
            }
        ),
        "{seen:?}"
    );
    assert_eq!(b.metrics().connects, 0);
    // It gives up on the peer that refused it: its queue is gone.
    eventually("the refused node stops dialling", || {
        b.send(1, message(b"more")).is_err()
    })
    .await;
    let a_addr = a.local_addr();
    a.shutdown().await;

    // The record outlives node 1's restart: the new incarnation stays refused, and the
    // old one (had it survived) would still be welcome.
    let (a, mut a_rx) = start_transport(transport_config(1, 0xa), record(), Some(a_addr)).await;
    a.add_peer(2, b_addr).unwrap();
    assert_eq!(a.peer_incarnation(2), Some(0xb1));
    b.shutdown().await;
    let (b, mut b_rx) = start_transport(
        transport_config(2, 0xb2),
        PeerIncarnations::in_memory(),
        Some(b_addr),
    )
    .await;
    b.add_peer(1, a_addr).unwrap();
    let refused = next_event(&mut b_rx.events, |e| {
        matches!(e, PeerEvent::OutboundError { .. })
    })
    .await;
    assert!(
        matches!(
            refused,
            PeerEvent::OutboundError {
                error: ProtocolError::RejectedByPeer {
                    code: RejectCode::LostState,
                    ..
                },
                ..
            }
        ),
        "{refused:?}"
    );
    b.shutdown().await;
    let (b, _b_rx) = start_transport(
        transport_config(2, 0xb1),
        PeerIncarnations::in_memory(),
        Some(b_addr),
    )
    .await;
    b.add_peer(1, a_addr).unwrap();
    b.send(1, message(b"old self")).unwrap();
    let (from, got) = tokio::time::timeout(GUARD, a_rx.messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((from, &got.payload[..]), (2, &b"old self"[..]));
    a.shutdown().await;
    b.shutdown().await;
}
