//! Membership changes through the etcd Cluster API on real processes: a fourth node joins as
//! a learner, catches up, is promoted, and an original node (the leader) is removed, while
//! a client keeps writing; every acknowledged write is then readable through the new node.
//! Also `etcdctl member add/promote/remove` against Ordo (skipped without etcdctl unless
//! `ORDO_REQUIRE_ETCDCTL=1`).

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{channel, keys_with_prefix, start, TestCluster, STEP};
use ordo_kv::proto::etcdserverpb::cluster_client::ClusterClient;
use ordo_kv::proto::etcdserverpb::kv_client::KvClient;
use ordo_kv::proto::etcdserverpb::lease_client::LeaseClient;
use ordo_kv::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ordo_kv::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, Member, MemberAddRequest,
    MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, MoveLeaderRequest, PutRequest,
};
use ordo_launch::cluster::POLL_INTERVAL;
use ordo_launch::tools::etcdctl_or_skip;
use ordo_launch::PlannedNode;
use tonic::transport::Channel;

/// Most writes the background writer issues.
const WRITES_MAX: u64 = 20_000;

/// A member added at run time to a test cluster.
struct Joiner {
    id: u64,
    client_addr: std::net::SocketAddr,
    peer_addr: std::net::SocketAddr,
}

impl Joiner {
    fn channel(&self) -> Channel {
        channel(self.client_addr)
    }
}

/// Ports for a node that is not a member yet.
fn plan_joiner(cluster: &TestCluster) -> PlannedNode {
    cluster.plan_node().expect("ports")
}

/// Makes the planned node member `id` of the test cluster and starts it (with `--join`).
fn start_joiner(cluster: &mut TestCluster, id: u64, planned: PlannedNode) -> Joiner {
    cluster.add_node(id, planned);
    cluster.start(id).expect("start the joining node");
    Joiner {
        id,
        client_addr: planned.client_addr,
        peer_addr: planned.peer_addr,
    }
}

/// Retries `call` on `Unavailable` (elections, a change still in progress) until `STEP`.
async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        match call().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::FailedPrecondition
                ) && Instant::now() < deadline =>
            {
                eprintln!("{what}: retrying after {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(status),
        }
    }
}

fn find(members: &[Member], id: u64) -> Option<&Member> {
    members.iter().find(|m| m.id == id)
}

/// Writes `m/<n>` through the given endpoints in turn until stopped; returns the keys
/// acknowledged.
fn spawn_writer(
    endpoints: Arc<Mutex<Vec<Channel>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        for (turn, n) in (0..WRITES_MAX).enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let channel = {
                let list = endpoints.lock().unwrap();
                list[turn % list.len()].clone()
            };
            let key = format!("m/{n:06}");
            let request = PutRequest {
                key: key.clone().into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            };
            let answer =
                tokio::time::timeout(Duration::from_secs(3), KvClient::new(channel).put(request))
                    .await;
            match answer {
                Ok(Ok(_)) => acked.push(key),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        acked
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_as_learner_is_promoted_and_the_leader_is_removed_while_writes_continue() {
    let (mut cluster, leader) = start(&[]).await;
    let leader_id = leader.id;
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader_id)
        .collect();

    let endpoints = Arc::new(Mutex::new(
        cluster
            .ids()
            .iter()
            .map(|&id| cluster.channel(id))
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_writer(Arc::clone(&endpoints), Arc::clone(&stop));

    // Added through a follower: the change is forwarded to the leader.
    let planned = plan_joiner(&cluster);
    let peer_addr = planned.dialed_peer_addr;
    let mut via_follower = ClusterClient::new(cluster.channel(followers[0]));
    let add = MemberAddRequest {
        peer_ur_ls: vec![format!("http://{peer_addr}")],
        is_learner: true,
    };
    let added = retry("member add", || {
        let (mut client, request) = (via_follower.clone(), add.clone());
        async move { client.member_add(request).await }
    })
    .await
    .expect("member add");
    let new = added.member.expect("the new member");
    assert!(new.is_learner);
    assert!(!cluster.ids().contains(&new.id), "a fresh id: {}", new.id);
    assert_eq!(new.peer_ur_ls, vec![format!("http://{peer_addr}")]);
    assert_eq!(added.members.len(), 4);
    assert!(find(&added.members, new.id).is_some_and(|m| m.is_learner));

    // Promotion is refused for voters, unknown ids and a learner that has not started.
    let voter = via_follower
        .member_promote(MemberPromoteRequest { id: leader_id })
        .await
        .expect_err("a voter cannot be promoted");
    assert_eq!(voter.code(), tonic::Code::FailedPrecondition, "{voter}");
    assert!(
        voter.message().contains("only promote a learner"),
        "{voter}"
    );
    let unknown = via_follower
        .member_promote(MemberPromoteRequest { id: 999 })
        .await
        .expect_err("unknown member");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown}");
    let not_started = ClusterClient::new(cluster.channel(leader_id))
        .member_promote(MemberPromoteRequest { id: new.id })
        .await
        .expect_err("a learner that is not running has not caught up");
    assert_eq!(
        not_started.code(),
        tonic::Code::FailedPrecondition,
        "{not_started}"
    );
    assert!(not_started.message().contains("in sync"), "{not_started}");

    let joiner = start_joiner(&mut cluster, new.id, planned);
    assert_eq!(joiner.peer_addr, peer_addr);

    // Promoted through the other follower once caught up (the request is passed on to the
    // leader, which alone knows the learner's progress).
    let via_other = ClusterClient::new(cluster.channel(followers[1]));
    let promoted = retry("member promote", || {
        let mut client = via_other.clone();
        async move {
            client
                .member_promote(MemberPromoteRequest { id: new.id })
                .await
        }
    })
    .await
    .expect("member promote");
    assert!(find(&promoted.members, new.id).is_some_and(|m| !m.is_learner));
    endpoints.lock().unwrap().push(joiner.channel());

    // The new member lists itself with its client URL and everyone with peer URLs.
    let listed = retry("member list", || {
        let mut client = ClusterClient::new(joiner.channel());
        async move { client.member_list(MemberListRequest::default()).await }
    })
    .await
    .expect("member list");
    let me = find(&listed.members, new.id).expect("listed");
    assert_eq!(
        me.client_ur_ls,
        vec![format!("http://{}", joiner.client_addr)]
    );
    assert!(listed.members.iter().all(|m| !m.peer_ur_ls.is_empty()));

    // Every old member learns the new member's client URL from the member itself: it
    // presents it in the handshake of every peer connection it dials.
    let expected = vec![format!("http://{}", joiner.client_addr)];
    for old in cluster.ids().into_iter().filter(|&id| id != new.id) {
        let deadline = Instant::now() + STEP;
        loop {
            let listed = ClusterClient::new(cluster.channel(old))
                .member_list(MemberListRequest::default())
                .await
                .map(|r| r.into_inner().members);
            if listed
                .as_ref()
                .is_ok_and(|m| find(m, new.id).is_some_and(|m| m.client_ur_ls == expected))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {old} never listed the new member's client URL: {listed:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    // Remove the leader itself, through itself.
    let removed = retry("member remove", || {
        let mut client = ClusterClient::new(cluster.channel(leader_id));
        async move {
            client
                .member_remove(MemberRemoveRequest { id: leader_id })
                .await
        }
    })
    .await
    .expect("member remove");
    assert_eq!(removed.members.len(), 3);
    assert!(find(&removed.members, leader_id).is_none());
    endpoints.lock().unwrap().remove(
        cluster
            .ids()
            .iter()
            .position(|&id| id == leader_id)
            .expect("listed"),
    );
    cluster.kill(leader_id);

    // A new leader among the remaining three; writes keep being acknowledged.
    let deadline = Instant::now() + STEP;
    let before = cluster
        .status(joiner.id)
        .await
        .map_or(0, |s| s.applied_index);
    loop {
        let status = cluster.status(joiner.id).await;
        if status.as_ref().is_some_and(|s| {
            s.leader != 0 && s.leader != leader_id && s.applied_index > before + 20
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress after removing the leader: {status:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    // Once a new leader has committed more, every member knows the old one is gone.
    let again = ClusterClient::new(joiner.channel())
        .member_remove(MemberRemoveRequest { id: leader_id })
        .await
        .expect_err("already removed");
    assert_eq!(again.code(), tonic::Code::NotFound, "{again}");

    // Leadership moves to the new member; an old member passes lease keep-alives on to
    // it, at the client URL the new member advertised.
    retry("move leader", || {
        let mut client = MaintenanceClient::new(cluster.channel(followers[0]));
        async move {
            client
                .move_leader(MoveLeaderRequest { target_id: new.id })
                .await
        }
    })
    .await
    .expect("move leader");
    let deadline = Instant::now() + STEP;
    while cluster
        .status(followers[0])
        .await
        .is_none_or(|s| s.leader != new.id)
    {
        assert!(
            Instant::now() < deadline,
            "node {} never followed the new leader",
            followers[0]
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let mut leases = LeaseClient::new(cluster.channel(followers[0]));
    let granted = retry("lease grant", || {
        let mut client = leases.clone();
        async move {
            client
                .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
                .await
        }
    })
    .await
    .expect("lease grant");
    // The grant was acknowledged once this follower applied it; the leader's lessor knows
    // the lease once the leader has applied it too, which may be a moment later.
    let deadline = Instant::now() + STEP;
    loop {
        let kept = leases
            .lease_keep_alive(tokio_stream::once(LeaseKeepAliveRequest { id: granted.id }))
            .await
            .expect("keep-alive forwarded to the new leader")
            .into_inner()
            .message()
            .await
            .expect("keep-alive answer")
            .expect("one answer");
        if kept.ttl > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lease never came alive: {kept:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let remaining = leases
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: granted.id,
            keys: false,
        })
        .await
        .expect("time to live forwarded to the new leader")
        .into_inner();
    assert!(remaining.ttl > 0, "{remaining:?}");
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    assert!(!acked.is_empty(), "some writes were acknowledged");

    // Everything acknowledged is readable through the new member (linearizable), and
    // through the old followers.
    let deadline = Instant::now() + STEP;
    let seen_new: Vec<String> = loop {
        let request = ordo_kv::proto::etcdserverpb::RangeRequest {
            key: b"m/".to_vec(),
            range_end: b"m0".to_vec(),
            keys_only: true,
            ..Default::default()
        };
        match KvClient::new(joiner.channel()).range(request).await {
            Ok(response) => {
                break response
                    .into_inner()
                    .kvs
                    .iter()
                    .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                    .collect();
            }
            Err(status) => {
                assert!(
                    Instant::now() < deadline,
                    "the new member never answered: {status}"
                );
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
    };
    let seen_old = keys_with_prefix(&cluster, followers[0], "m/").await;
    for key in &acked {
        assert!(
            seen_new.contains(key),
            "acknowledged {key} missing on the new member"
        );
        assert!(
            seen_old.contains(key),
            "acknowledged {key} missing on node {}",
            followers[0]
        );
    }
    assert_eq!(seen_new, seen_old, "the members agree");
}

/// Runs etcdctl against `endpoint`; returns whether it succeeded and its output.
fn etcdctl(bin: &std::path::Path, endpoint: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    etcdctl_at(bin, &endpoint.to_string(), args)
}

/// Runs etcdctl against a comma-separated endpoint list.
fn etcdctl_at(bin: &std::path::Path, endpoints: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--dial-timeout=5s", "--command-timeout=10s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_promotes_and_removes_members_of_an_ordo_cluster() {
    let Some(bin) = etcdctl_or_skip() else {
        return;
    };
    let (mut cluster, leader) = start(&[]).await;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader.id)
        .expect("a follower");
    let endpoint = cluster.spec(follower).client_addr;
    let planned = plan_joiner(&cluster);
    let peer_addr = planned.dialed_peer_addr;
    let peer_url = format!("--peer-urls=http://{peer_addr}");
    let (ok, out) = etcdctl(
        &bin,
        endpoint,
        &["member", "add", "n4", &peer_url, "--learner"],
    );
    assert!(ok, "member add failed: {out}");
    // "Member <hex id> added to cluster <hex id>"
    let hex = out
        .split_whitespace()
        .skip_while(|w| *w != "Member")
        .nth(1)
        .unwrap_or_else(|| panic!("no member id in: {out}"))
        .to_string();
    let id = u64::from_str_radix(&hex, 16).unwrap_or_else(|_| panic!("bad id {hex} in: {out}"));
    assert!(out.contains("ETCD_INITIAL_CLUSTER"), "{out}");
    let (ok, out) = etcdctl(&bin, endpoint, &["member", "list"]);
    assert!(
        ok && out.contains(&hex) && out.contains("true"),
        "learner listed: {out}"
    );

    let joiner = start_joiner(&mut cluster, id, planned);
    let deadline = Instant::now() + STEP;
    loop {
        let (ok, out) = etcdctl(&bin, endpoint, &["member", "promote", &hex]);
        if ok {
            assert!(out.contains("promoted"), "{out}");
            break;
        }
        assert!(
            out.contains("in sync") || out.contains("retry"),
            "promotion refused for another reason: {out}"
        );
        assert!(Instant::now() < deadline, "never promoted: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The new member lists four voters, with client URLs, once it has applied its promotion.
    let deadline = Instant::now() + STEP;
    loop {
        let (ok, out) = etcdctl(&bin, joiner.client_addr, &["member", "list", "-w", "json"]);
        assert!(ok, "{out}");
        let members: serde_json::Value = serde_json::from_str(&out).expect("JSON member list");
        let listed = members["members"].as_array().expect("members");
        assert_eq!(listed.len(), 4, "{out}");
        let done = listed.iter().all(|m| {
            m["isLearner"].as_bool() != Some(true) && m["clientURLs"].as_array().is_some()
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "never listed as a voter: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // move-leader finds the leader among the endpoints and asks it to hand over.
    let all: Vec<String> = cluster
        .ids()
        .iter()
        .map(|&id| cluster.spec(id).client_addr.to_string())
        .collect();
    let deadline = Instant::now() + STEP;
    loop {
        let (ok, out) = etcdctl_at(&bin, &all.join(","), &["move-leader", &hex]);
        if ok {
            assert!(out.contains("transferred"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "move-leader never succeeded: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let gone = format!("{follower:x}");
    let (ok, out) = etcdctl(&bin, joiner.client_addr, &["member", "remove", &gone]);
    assert!(ok && out.contains("removed"), "{out}");
    cluster.kill(follower);
    let (ok, out) = etcdctl(&bin, joiner.client_addr, &["member", "remove", &gone]);
    assert!(!ok && out.contains("member not found"), "{out}");
    let (ok, out) = etcdctl(&bin, joiner.client_addr, &["put", "after", "removal"]);
    assert!(ok, "the three remaining members serve writes: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_as_voter_counts_toward_quorum_once_it_runs_and_can_be_removed() {
    let (mut cluster, leader) = start(&[]).await;
    let planned = plan_joiner(&cluster);
    let peer_addr = planned.dialed_peer_addr;
    let add = MemberAddRequest {
        peer_ur_ls: vec![format!("http://{peer_addr}")],
        is_learner: false,
    };
    let added = retry("member add", || {
        let mut client = ClusterClient::new(cluster.channel(leader.id));
        let request = add.clone();
        async move { client.member_add(request).await }
    })
    .await
    .expect("member add");
    let new = added.member.expect("the new member");
    assert!(!new.is_learner);
    assert!(
        added.members.iter().all(|m| !m.is_learner),
        "{:?}",
        added.members
    );

    // Four voters, one not running yet: three still make a quorum.
    common::put(&cluster, &[leader.id], "voter/before", "1").await;

    // Once running, the new voter catches up from the leader.
    let joiner = start_joiner(&mut cluster, new.id, planned);
    let deadline = Instant::now() + STEP;
    loop {
        let status = cluster.status(joiner.id).await;
        if status
            .as_ref()
            .is_some_and(|s| s.leader != 0 && s.applied_index >= leader.commit_index)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new voter never caught up: {status:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }

    // A bad peer URL and a duplicate one are refused, naming the problem.
    let mut client = ClusterClient::new(cluster.channel(leader.id));
    let bad = client
        .member_add(MemberAddRequest {
            peer_ur_ls: vec!["http://node5:2380".into()],
            is_learner: true,
        })
        .await
        .expect_err("a host name is not an address");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");
    assert!(bad.message().contains("node5"), "{bad}");
    let duplicate = client
        .member_add(add.clone())
        .await
        .expect_err("the peer URL is taken");
    assert_eq!(
        duplicate.code(),
        tonic::Code::FailedPrecondition,
        "{duplicate}"
    );

    // Removed through itself: the others go on as three.
    let removed = retry("member remove", || {
        let mut client = ClusterClient::new(joiner.channel());
        async move {
            client
                .member_remove(MemberRemoveRequest { id: new.id })
                .await
        }
    })
    .await
    .expect("member remove");
    assert_eq!(removed.members.len(), 3);
    common::put(&cluster, &[leader.id], "voter/after", "1").await;
}

/// Every member's member list, once each lists every member with a client URL.
async fn complete_member_lists(cluster: &TestCluster) -> Vec<Vec<Member>> {
    let mut lists = Vec::new();
    for id in cluster.ids() {
        let deadline = Instant::now() + STEP;
        let members = loop {
            let listed = ClusterClient::new(cluster.channel(id))
                .member_list(MemberListRequest::default())
                .await
                .map(|r| r.into_inner().members);
            match listed {
                Ok(members)
                    if members.len() == cluster.ids().len()
                        && members.iter().all(|m| m.client_ur_ls.len() == 1) =>
                {
                    break members
                }
                other => assert!(
                    Instant::now() < deadline,
                    "node {id} never listed every member's client URL: {other:?}"
                ),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        lists.push(members);
    }
    lists
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_list_request_carrying_metadata_changes_nothing_any_member_reports() {
    let (cluster, leader) = start(&[]).await;
    let before = complete_member_lists(&cluster).await;
    for (i, id) in cluster.ids().into_iter().enumerate() {
        assert_eq!(
            before[i][i].client_ur_ls,
            vec![format!("http://{}", cluster.spec(id).client_addr)],
            "each member reports its own client URL"
        );
    }
    // Claims about other members, in the metadata keys members once used to announce
    // themselves and in others, sent to every member.
    let bogus = "http://127.0.0.1:1";
    for to in cluster.ids() {
        for about in cluster.ids() {
            let mut request = tonic::Request::new(MemberListRequest::default());
            let metadata = request.metadata_mut();
            for (key, value) in [
                ("ordo-announce-member-id", about.to_string()),
                ("ordo-announce-client-url", bogus.to_string()),
                ("ordo-member-id", about.to_string()),
                ("ordo-client-url", bogus.to_string()),
                ("ordo-forwarded", "1".to_string()),
            ] {
                metadata.insert(key, value.parse().expect("ASCII metadata"));
            }
            ClusterClient::new(cluster.channel(to))
                .member_list(request)
                .await
                .expect("member list with metadata");
        }
    }
    let after = complete_member_lists(&cluster).await;
    assert_eq!(after, before, "a client changed what a member reports");
    assert!(
        after
            .iter()
            .flatten()
            .all(|m| !m.client_ur_ls.contains(&bogus.to_string())),
        "{after:?}"
    );
    // And a lease keep-alive through a follower still reaches the real leader.
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader.id)
        .expect("a follower");
    let leases = LeaseClient::new(cluster.channel(follower));
    let granted = retry("lease grant", || {
        let mut client = leases.clone();
        async move {
            client
                .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
                .await
        }
    })
    .await
    .expect("lease grant");
    // The leader's lessor knows the lease once the leader applied the grant too.
    let deadline = Instant::now() + STEP;
    loop {
        let remaining = retry("lease time to live", || {
            let mut client = leases.clone();
            async move {
                client
                    .lease_time_to_live(LeaseTimeToLiveRequest {
                        id: granted.id,
                        keys: false,
                    })
                    .await
            }
        })
        .await
        .expect("time to live through a follower");
        if remaining.ttl > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lease never came alive: {remaining:?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
