//! Groups created and removed at run time, each with a replica set of its own, over one
//! node-wide transport.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use ordo_node::{Group, GroupId, GroupOptions, MembershipChange, Node, NodeConfig, NodeId};

/// Binds `ids` on loopback and returns the listeners and the address book of them all.
async fn listeners(
    ids: impl IntoIterator<Item = NodeId>,
) -> (
    BTreeMap<NodeId, tokio::net::TcpListener>,
    BTreeMap<NodeId, SocketAddr>,
) {
    let mut listeners = BTreeMap::new();
    for id in ids {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(id, l);
    }
    let addrs = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap()))
        .collect();
    (listeners, addrs)
}

/// Starts `group` on each of `on` with `options`.
async fn start_on(
    nodes: &BTreeMap<NodeId, Node>,
    on: &[NodeId],
    group: GroupId,
    options: &GroupOptions,
) -> BTreeMap<NodeId, Group<Recorder>> {
    let mut groups = BTreeMap::new();
    for id in on {
        let g = nodes[id]
            .start_group_with(group, Recorder::default(), options.clone())
            .await
            .unwrap();
        groups.insert(*id, g);
    }
    groups
}

async fn shutdown(nodes: BTreeMap<NodeId, Node>) {
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_one_group_removes_stays_reachable_for_another_group_until_that_removes_it_too() {
    let dir = tempfile::tempdir().unwrap();
    let (mut listeners, addrs) = listeners(1..=4).await;
    let configured: BTreeMap<NodeId, SocketAddr> = addrs
        .iter()
        .filter(|(id, _)| **id <= 3)
        .map(|(id, a)| (*id, *a))
        .collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        let config = test_config(id, dir.path().join(format!("node-{id}")), &configured);
        nodes.insert(
            id,
            Node::start_on(config, listeners.remove(&id).unwrap()).unwrap(),
        );
    }
    // Node 4 is no configured peer of the others: they learn it from the groups alone.
    let mut config: NodeConfig = test_config(4, dir.path().join("node-4"), &addrs);
    config.join = true;
    nodes.insert(
        4,
        Node::start_on(config, listeners.remove(&4).unwrap()).unwrap(),
    );
    let (a, b) = (GroupId(1), GroupId(2));
    // Node 4 joins: it waits to be added to each group.
    let groups_a = start_on(&nodes, &[1, 2, 3, 4], a, &GroupOptions::default()).await;
    let groups_b = start_on(&nodes, &[1, 2, 3, 4], b, &GroupOptions::default()).await;
    let add = MembershipChange::AddLearner {
        id: 4,
        addr: addrs[&4],
    };
    for groups in [&groups_a, &groups_b] {
        let conf = groups[&1].change_membership(add.clone()).await.unwrap();
        assert_eq!(conf.learners, vec![4]);
        let (index, _) = propose_on(&groups[&1], "to the learner").await;
        groups[&4].wait_applied(index, GUARD).await.unwrap();
    }

    let conf = groups_a[&1]
        .change_membership(MembershipChange::Remove { id: 4 })
        .await
        .unwrap();
    assert!(conf.learners.is_empty());
    // Every configured node applies the removal; group B still has node 4.
    let (index, _) = propose_on(&groups_a[&1], "after removing 4").await;
    for id in 1..=3 {
        groups_a[&id].wait_applied(index, GUARD).await.unwrap();
    }
    let (index, _) = propose_on(&groups_b[&1], "still reaches 4").await;
    groups_b[&4].wait_applied(index, GUARD).await.unwrap();
    assert_eq!(
        text(&groups_b[&4].read(|sm| sm.entries.clone())),
        vec!["to the learner", "still reaches 4"]
    );
    for id in 1..=3 {
        let peers = nodes[&id].transport().unwrap().peers();
        assert!(peers.iter().any(|(p, _)| *p == 4), "node {id}: {peers:?}");
    }

    // Once no group of theirs has node 4, the configured nodes let it go.
    groups_b[&1]
        .change_membership(MembershipChange::Remove { id: 4 })
        .await
        .unwrap();
    tokio::time::timeout(GUARD, async {
        loop {
            let gone = (1..=3).all(|id| {
                let peers = nodes[&id].transport().unwrap().peers();
                !peers.iter().any(|(p, _)| *p == 4)
            });
            if gone {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("node 4 left every configured node's transport");
    for id in 1..=3 {
        let peers: Vec<NodeId> = nodes[&id]
            .transport()
            .unwrap()
            .peers()
            .iter()
            .map(|(p, _)| *p)
            .collect();
        let expected: Vec<NodeId> = (1..=3).filter(|&p| p != id).collect();
        assert_eq!(peers, expected, "configured peers stay on node {id}");
    }
    shutdown(nodes).await;
}
