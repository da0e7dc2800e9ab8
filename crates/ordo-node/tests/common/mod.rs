//! In-process clusters over loopback with real WAL directories, for the runtime tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ordo_node::{
    FsyncPolicy, Group, GroupId, Index, Node, NodeConfig, NodeError, NodeId, ProposeError,
    RestoreError, StateMachine, StateRole,
};

pub const GROUP: GroupId = GroupId(1);

/// What [`Counting`] does with an entry's data before it counts it.
pub type BeforeApply = dyn Fn(&[u8]) + Send + Sync;

/// Counts applied entries, the count its state and its output; `before` sees each entry's
/// data first: the tests' state machines that block, sleep or panic on some entries.
pub struct Counting {
    before: Box<BeforeApply>,
    count: u64,
    applied: Index,
}

impl Counting {
    pub fn new(before: impl Fn(&[u8]) + Send + Sync + 'static) -> Counting {
        Counting {
            before: Box::new(before),
            count: 0,
            applied: 0,
        }
    }
}

impl StateMachine for Counting {
    type Output = u64;
    fn apply(&mut self, index: Index, data: &[u8]) -> u64 {
        (self.before)(data);
        self.count += 1;
        self.applied = index;
        self.count
    }
    fn note_applied(&mut self, index: Index) {
        self.applied = index;
    }
    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.count.to_be_bytes())
    }
    fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError> {
        let raw: [u8; 8] = data
            .try_into()
            .map_err(|_| RestoreError::new("not 8 bytes"))?;
        self.count = u64::from_be_bytes(raw);
        self.applied = index;
        Ok(())
    }
    fn applied_index(&self) -> Index {
        self.applied
    }
}

/// A state machine that records every applied entry: the order is the observable.
/// `QUICK` is what it declares as [`StateMachine::APPLIES_QUICKLY`].
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Recording<const QUICK: bool> {
    pub entries: Vec<Bytes>,
    pub applied: Index,
}

/// The tests' usual state machine, which applies quickly: its groups apply committed entries
/// on their own task wherever they can, and on the apply workers otherwise.
pub type Recorder = Recording<true>;

/// A [`Recording`] that always applies on the apply workers.
pub type PooledRecorder = Recording<false>;

impl<const QUICK: bool> StateMachine for Recording<QUICK> {
    type Output = (Index, usize);
    const APPLIES_QUICKLY: bool = QUICK;

    fn apply(&mut self, index: Index, data: &[u8]) -> (Index, usize) {
        self.entries.push(Bytes::copy_from_slice(data));
        self.applied = index;
        (index, self.entries.len())
    }

    fn note_applied(&mut self, index: Index) {
        self.applied = index;
    }

    fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u32(self.entries.len() as u32);
        for e in &self.entries {
            buf.put_u32(e.len() as u32);
            buf.put_slice(e);
        }
        buf.freeze()
    }

    fn restore(&mut self, index: Index, mut data: &[u8]) -> Result<(), RestoreError> {
        let bad = || RestoreError::new("truncated recorder snapshot");
        if data.remaining() < 4 {
            return Err(bad());
        }
        let n = data.get_u32() as usize;
        let mut entries = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            if data.remaining() < 4 {
                return Err(bad());
            }
            let len = data.get_u32() as usize;
            if data.remaining() < len {
                return Err(bad());
            }
            entries.push(Bytes::copy_from_slice(&data[..len]));
            data.advance(len);
        }
        self.entries = entries;
        self.applied = index;
        Ok(())
    }

    fn applied_index(&self) -> Index {
        self.applied
    }
}

pub struct Member {
    pub node: Node,
    pub group: Group<Recorder>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub members: BTreeMap<NodeId, Member>,
    pub tweak: fn(&mut NodeConfig),
}

pub fn no_tweak(_: &mut NodeConfig) {}

/// A hang guard for awaits in tests: generous, never a timing assertion.
pub const GUARD: Duration = Duration::from_secs(30);

/// The configuration of node `id` of the test clusters, whose peers are `peers`.
pub fn test_config(
    id: NodeId,
    data_dir: PathBuf,
    peers: &BTreeMap<NodeId, SocketAddr>,
) -> NodeConfig {
    let mut c = NodeConfig::new(id, data_dir, peers[&id], peers.clone());
    c.tick_interval_ms = 10;
    // Elections after 200-400 ms: short, yet long enough that a loaded machine running
    // several clusters at once does not depose leaders by starving their heartbeats.
    c.election_timeout_ticks = 20;
    c.heartbeat_interval_ticks = 2;
    c.fsync = FsyncPolicy::Always;
    c.request_timeout_ms = 10_000;
    c.snapshot_chunk_timeout_ms = 5_000;
    c
}

/// Starts nodes `1..=n` on loopback under `dir`, each hosting group [`GROUP`] with a state
/// machine from `machine`, configured by [`test_config`] and then `tweak`.
pub async fn start_group_on_nodes<S: StateMachine>(
    dir: &std::path::Path,
    n: u64,
    tweak: impl Fn(&mut NodeConfig),
    machine: impl Fn() -> S,
) -> (BTreeMap<NodeId, Node>, BTreeMap<NodeId, Group<S>>) {
    let mut listeners = BTreeMap::new();
    for id in 1..=n {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listeners.insert(id, l);
    }
    let peers: BTreeMap<NodeId, SocketAddr> = listeners
        .iter()
        .map(|(id, l)| (*id, l.local_addr().unwrap()))
        .collect();
    let (mut nodes, mut groups) = (BTreeMap::new(), BTreeMap::new());
    for (id, listener) in listeners {
        let mut c = test_config(id, dir.join(format!("node-{id}")), &peers);
        tweak(&mut c);
        let node = Node::start_on(c, listener).unwrap();
        groups.insert(
            id,
            node.start_group_with(GROUP, machine(), quiescing())
                .await
                .unwrap(),
        );
        nodes.insert(id, node);
    }
    (nodes, groups)
}

/// Waits for one of `groups` to lead, and returns its node and term.
pub async fn leader_of<S: StateMachine>(groups: &BTreeMap<NodeId, Group<S>>) -> (NodeId, u64) {
    tokio::time::timeout(GUARD, async {
        loop {
            for (id, g) in groups {
                let s = g.status().await.unwrap();
                if s.role == StateRole::Leader {
                    return (*id, s.term);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no leader within the guard")
}

/// Polls `check` every 10 ms until it gives a value, and returns it; `what` names the
/// wait in the panic if the guard runs out first. The guard only bounds a hang: what the
/// test waits for is the value, never the time.
pub async fn poll_until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let waited = tokio::time::timeout(GUARD, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("not within the guard: {what}"))
}

/// Waits until `group`'s status satisfies `ready`, and returns that status; `what` names
/// the wait in the panic if the guard runs out first.
pub async fn status_when<S: StateMachine>(
    group: &Group<S>,
    what: &str,
    ready: impl Fn(&ordo_node::GroupStatus) -> bool,
) -> ordo_node::GroupStatus {
    let mut last = None;
    let waited = tokio::time::timeout(GUARD, async {
        loop {
            let s = group.status().await.unwrap();
            if ready(&s) {
                return s;
            }
            last = Some(s);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("not within the guard: {what}; last status {last:?}"))
}

impl Cluster {
    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn config(&self, id: NodeId, peers: &BTreeMap<NodeId, SocketAddr>) -> NodeConfig {
        let mut c = test_config(id, self.data_dir(id), peers);
        (self.tweak)(&mut c);
        c
    }

    /// Starts `n` nodes bootstrapping one group.
    pub async fn start(n: u64, tweak: fn(&mut NodeConfig)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(id, l.local_addr().unwrap());
            listeners.insert(id, l);
        }
        let mut cluster = Cluster {
            dir,
            addrs: addrs.clone(),
            members: BTreeMap::new(),
            tweak,
        };
        for (id, l) in listeners {
            let config = cluster.config(id, &addrs);
            let member = start_member(config, l).await.unwrap();
            cluster.members.insert(id, member);
        }
        cluster
    }

    /// Restarts node `id` from its data directory on its old address.
    pub async fn restart(&mut self, id: NodeId) -> Result<(), NodeError> {
        assert!(!self.members.contains_key(&id), "node {id} is running");
        let peers = self.addrs.clone();
        let config = self.config(id, &peers);
        let listener = bind_again(self.addrs[&id]).await;
        let member = start_member(config, listener).await?;
        self.members.insert(id, member);
        Ok(())
    }

    pub async fn crash(&mut self, id: NodeId) {
        let m = self.members.remove(&id).expect("running");
        m.node.crash().await;
    }

    pub async fn shutdown_all(mut self) {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        for id in ids {
            let m = self.members.remove(&id).unwrap();
            m.node.shutdown().await;
        }
    }

    pub fn group(&self, id: NodeId) -> &Group<Recorder> {
        &self.members[&id].group
    }

    /// Waits until the running nodes agree on one leader in one term.
    pub async fn leader(&self) -> NodeId {
        tokio::time::timeout(GUARD, async {
            loop {
                let mut leaders = Vec::new();
                for m in self.members.values() {
                    let s = m.group.status().await.unwrap();
                    if s.role == StateRole::Leader {
                        leaders.push((s.term, s.node_id));
                    }
                }
                leaders.sort_unstable();
                if let Some(&(term, id)) = leaders.last() {
                    let mut all_agree = true;
                    for m in self.members.values() {
                        let s = m.group.status().await.unwrap();
                        all_agree &= s.leader == id && s.term == term;
                    }
                    if all_agree {
                        return id;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("no agreed leader within the guard")
    }

    /// Proposes through node `via`, retrying while leadership settles (the outcome of a
    /// retried proposal that timed out is checked by the callers' assertions).
    pub async fn propose(&self, via: NodeId, data: &str) -> (Index, usize) {
        propose_on(self.group(via), data).await
    }

    /// The entries applied by `id`, once it has applied at least `index`.
    pub async fn applied_entries(&self, id: NodeId, index: Index) -> Vec<Bytes> {
        let g = self.group(id);
        g.wait_applied(index, GUARD).await.unwrap();
        g.read(|sm| sm.entries.clone())
    }
}

/// Proposes through `group`, retrying while leadership settles; panics on any outcome
/// that leaves the proposal's fate unknown, so callers can assert on exact contents.
pub async fn propose_on(group: &Group<Recorder>, data: &str) -> (Index, usize) {
    let data = Bytes::copy_from_slice(data.as_bytes());
    tokio::time::timeout(GUARD, async move {
        loop {
            match group.propose(data.clone()).await {
                Ok(out) => return out,
                // Not appended, or appended and overwritten: never applied, safe to retry.
                Err(
                    ProposeError::NoLeader | ProposeError::NotLeader { .. } | ProposeError::Dropped,
                ) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("proposal failed: {e}"),
            }
        }
    })
    .await
    .expect("proposal did not complete within the guard")
}

/// The options the tests start groups with: quiescing when idle, so that every test runs
/// through quiescence and waking.
pub fn quiescing() -> ordo_node::GroupOptions {
    ordo_node::GroupOptions {
        quiesce: true,
        ..Default::default()
    }
}

pub async fn start_member(
    config: NodeConfig,
    listener: tokio::net::TcpListener,
) -> Result<Member, NodeError> {
    let node = Node::start_on(config, listener)?;
    let group = node
        .start_group_with(GROUP, Recorder::default(), quiescing())
        .await?;
    Ok(Member { node, group })
}

/// Binds `addr` again after its node stopped; the port may take a moment to free.
pub async fn bind_again(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..200 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("cannot bind {addr} again");
}

pub fn text(entries: &[Bytes]) -> Vec<String> {
    entries
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}
