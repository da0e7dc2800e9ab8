//! Groups created and removed at run time, each with a replica set of its own, over one
//! node-wide transport.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use common::*;
use ordo_node::{
    Group, GroupId, GroupOptions, InitialMembers, InitialMembersError, MembershipChange, Node,
    NodeConfig, NodeError, NodeId, ProposeError, StateRole,
};

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

/// Starts nodes `1..=n` of one cluster, hosting no group yet.
async fn start_nodes(dir: &Path, n: u64) -> BTreeMap<NodeId, Node> {
    let (listeners, addrs) = listeners(1..=n).await;
    listeners
        .into_iter()
        .map(|(id, l)| {
            let config = test_config(id, dir.join(format!("node-{id}")), &addrs);
            (id, Node::start_on(config, l).unwrap())
        })
        .collect()
}

fn members(voters: &[NodeId], learners: &[NodeId]) -> GroupOptions {
    GroupOptions {
        members: InitialMembers::Members {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        },
        ..GroupOptions::default()
    }
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

fn group_dir(dir: &Path, node: NodeId, group: GroupId) -> std::path::PathBuf {
    dir.join(format!("node-{node}/log/groups/{}", group.0))
}

async fn shutdown(nodes: BTreeMap<NodeId, Node>) {
    for (_, node) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_runs_on_its_own_voters_and_learners_and_a_non_member_refuses_to_host_it() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 3).await;
    let pair = GroupId(7);
    let with_learner = GroupId(8);
    let pair_groups = start_on(&nodes, &[1, 2], pair, &members(&[1, 2], &[])).await;
    let error = nodes[&3]
        .start_group_with(pair, Recorder::default(), members(&[1, 2], &[]))
        .await
        .err()
        .expect("node 3 refuses");
    assert!(
        matches!(error, NodeError::NotAMember { group, node: 3 } if group == pair),
        "{error}"
    );
    assert!(
        error.to_string().contains("group 7") && error.to_string().contains("node 3"),
        "{error}"
    );
    assert!(!group_dir(dir.path(), 3, pair).exists(), "nothing written");

    let learner_groups = start_on(&nodes, &[1, 2, 3], with_learner, &members(&[1, 2], &[3])).await;
    let (leader, _) = leader_of(&pair_groups).await;
    let (index, _) = propose_on(&pair_groups[&leader], "pair").await;
    for g in pair_groups.values() {
        g.wait_applied(index, GUARD).await.unwrap();
    }
    let (index, _) = propose_on(&learner_groups[&3], "through the learner").await;
    learner_groups[&3].wait_applied(index, GUARD).await.unwrap();
    assert_eq!(
        text(&learner_groups[&3].read(|sm| sm.entries.clone())),
        vec!["through the learner"]
    );

    let on_3 = nodes[&3].group_statuses().await;
    assert_eq!(
        on_3.len(),
        1,
        "node 3 hosts only the group it is a member of"
    );
    let s = &on_3[0];
    assert_eq!(s.group_id, with_learner);
    assert!(s.is_learner() && s.role == StateRole::Follower);
    assert_eq!(
        (s.conf_state.voters.clone(), s.conf_state.learners.clone()),
        (vec![1, 2], vec![3])
    );
    assert!(s.applied_index >= index);
    let on_1 = nodes[&1].group_statuses().await;
    assert_eq!(
        on_1.iter().map(|s| s.group_id).collect::<Vec<_>>(),
        vec![pair, with_learner]
    );
    assert_eq!(on_1[0].conf_state.voters, vec![1, 2]);
    assert!(on_1.iter().all(|s| !s.is_learner() && s.term >= 2));

    // Added to the pair later, node 3 starts it waiting and receives its state.
    let join = GroupOptions {
        members: InitialMembers::Join,
        ..GroupOptions::default()
    };
    let late = nodes[&3]
        .start_group_with(pair, Recorder::default(), join)
        .await
        .unwrap();
    let addr = nodes[&3].peer_addr();
    let conf = pair_groups[&leader]
        .change_membership(MembershipChange::AddLearner { id: 3, addr })
        .await
        .unwrap();
    assert_eq!((conf.voters, conf.learners), (vec![1, 2], vec![3]));
    let (index, _) = propose_on(&pair_groups[&leader], "for the late learner").await;
    late.wait_applied(index, GUARD).await.unwrap();
    assert_eq!(
        text(&late.read(|sm| sm.entries.clone())),
        vec!["pair", "for the late learner"]
    );
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_initial_members_are_refused_naming_the_problem_and_nothing_is_written() {
    use InitialMembersError::*;
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_nodes(dir.path(), 3).await;
    let group = GroupId(9);
    let cases: [(&[NodeId], &[NodeId], InitialMembersError); 5] = [
        (&[], &[1], NoVoters),
        (&[1, 7], &[], UnknownNode(7)),
        (&[1, 2, 1], &[], Duplicate(1)),
        (&[1], &[3, 3], Duplicate(3)),
        (&[1, 2], &[2], VoterAndLearner(2)),
    ];
    for (voters, learners, expected) in cases {
        let error = nodes[&1]
            .start_group_with(group, Recorder::default(), members(voters, learners))
            .await
            .err()
            .expect("refused");
        match error {
            NodeError::InitialMembers { group: g, source } => {
                assert_eq!((g, source), (group, expected.clone()))
            }
            other => panic!("{voters:?} {learners:?}: {other}"),
        }
    }
    assert!(!group_dir(dir.path(), 1, group).exists());
    assert!(nodes[&1].listed_groups().is_empty());
    assert!(nodes[&1].groups().is_empty());
    shutdown(nodes).await;
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
    poll_until(
        "node 4 left every configured node's transport",
        async || {
            let gone = (1..=3).all(|id| {
                let peers = nodes[&id].transport().unwrap().peers();
                !peers.iter().any(|(p, _)| *p == 4)
            });
            gone.then_some(())
        },
    )
    .await;
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

/// A single-node cluster in `dir`.
async fn single_node(dir: &Path, listener: Option<tokio::net::TcpListener>) -> Node {
    let listener = match listener {
        Some(l) => l,
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let addr = listener.local_addr().unwrap();
    let config = test_config(1, dir.join("node-1"), &[(1, addr)].into());
    Node::start_on(config, listener).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_group_leaves_no_state_and_the_restarted_node_claims_no_loss() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), None).await;
    let addr = node.peer_addr();
    let (removed, kept, idle) = (GroupId(5), GroupId(6), GroupId(7));
    let removed_group = node
        .start_group(removed, Recorder::default())
        .await
        .unwrap();
    let kept_group = node.start_group(kept, Recorder::default()).await.unwrap();
    node.start_group(idle, Recorder::default()).await.unwrap();
    propose_on(&removed_group, "doomed").await;
    propose_on(&kept_group, "kept").await;
    assert_eq!(node.listed_groups(), vec![removed, kept, idle]);

    node.remove_group(removed).await.unwrap();
    assert_eq!(node.groups(), vec![kept, idle]);
    assert_eq!(node.listed_groups(), vec![kept, idle]);
    assert!(!group_dir(dir.path(), 1, removed).exists());
    assert_eq!(
        removed_group.propose("too late").await,
        Err(ProposeError::ShuttingDown)
    );
    for absent in [removed, GroupId(99)] {
        let error = node.remove_group(absent).await.unwrap_err();
        assert!(
            matches!(error, NodeError::UnknownGroup(g) if g == absent),
            "{error}"
        );
    }
    let (index, _) = propose_on(&kept_group, "kept goes on").await;
    assert!(index > 0);
    node.shutdown().await;

    let node = single_node(dir.path(), Some(bind_again(addr).await)).await;
    assert_eq!(node.listed_groups(), vec![kept, idle]);
    // Listed, with state on disk, not started: removed all the same.
    node.remove_group(idle).await.unwrap();
    assert!(!group_dir(dir.path(), 1, idle).exists());
    assert_eq!(node.listed_groups(), vec![kept]);
    let again = node
        .start_group(removed, Recorder::default())
        .await
        .unwrap();
    let (index, _) = propose_on(&again, "a new group under the old id").await;
    again.wait_applied(index, GUARD).await.unwrap();
    assert_eq!(
        text(&again.read(|sm| sm.entries.clone())),
        vec!["a new group under the old id"]
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removal_cut_short_after_its_first_step_is_finished_when_the_node_starts() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), None).await;
    let addr = node.peer_addr();
    let group = GroupId(5);
    let g = node.start_group(group, Recorder::default()).await.unwrap();
    propose_on(&g, "before the crash").await;
    node.crash().await;
    // The removal's first step, then the crash: its tombstone written while the log still
    // holds the group and the identity file still lists it.
    assert!(group_dir(dir.path(), 1, group).exists());
    let tombstone = dir.path().join("node-1/group-5.removed");
    std::fs::write(&tombstone, b"").unwrap();

    let node = single_node(dir.path(), Some(bind_again(addr).await)).await;
    assert!(node.listed_groups().is_empty());
    assert!(!tombstone.exists());
    let g = node.start_group(group, Recorder::default()).await.unwrap();
    let (index, _) = propose_on(&g, "fresh").await;
    g.wait_applied(index, GUARD).await.unwrap();
    assert_eq!(text(&g.read(|sm| sm.entries.clone())), vec!["fresh"]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_started_together_are_listed_together_and_each_answers_for_itself() {
    let dir = tempfile::tempdir().unwrap();
    let node = single_node(dir.path(), None).await;
    let addr = node.peer_addr();
    let batch: Vec<_> = [GroupId(3), GroupId(4), GroupId(3), GroupId(5)]
        .into_iter()
        .map(|id| (id, Recorder::default(), GroupOptions::default()))
        .collect();
    let mut started = node.start_groups(batch).await;
    // The second start of group 3 in the batch is refused; the others run.
    match started.remove(2) {
        Err(NodeError::GroupBusy(GroupId(3))) => {}
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("group 3 started twice"),
    }
    let groups: Vec<Group<Recorder>> = started.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        node.listed_groups(),
        vec![GroupId(3), GroupId(4), GroupId(5)]
    );
    for (i, group) in groups.iter().enumerate() {
        let (index, _) = propose_on(group, &format!("entry {i}")).await;
        group.wait_applied(index, GUARD).await.unwrap();
    }
    drop(groups);
    node.shutdown().await;

    // Started together again from their state: nothing is missing, nothing listed twice.
    let node = single_node(dir.path(), Some(bind_again(addr).await)).await;
    let again: Vec<_> = [GroupId(3), GroupId(4), GroupId(5)]
        .into_iter()
        .map(|id| (id, Recorder::default(), GroupOptions::default()))
        .collect();
    for started in node.start_groups(again).await {
        let group = started.unwrap();
        let (index, _) = propose_on(&group, "after the restart").await;
        group.wait_applied(index, GUARD).await.unwrap();
    }
    assert_eq!(
        node.listed_groups(),
        vec![GroupId(3), GroupId(4), GroupId(5)]
    );
    node.shutdown().await;
}
