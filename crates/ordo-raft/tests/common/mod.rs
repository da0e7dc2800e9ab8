//! A small in-memory cluster for scenario tests: nodes with `MemStorage` (or
//! [`FailingStorage`] over it), a message queue the test controls, and the `Ready` loop
//! carried out exactly as `Ready` documents.

#![allow(dead_code)]

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use bytes::Bytes;
use ordo_raft::{
    ConfState, Config, Entry, EntryKind, Index, MemStorage, Message, MessageBody, NodeId,
    RaftState, RawNode, ReadState, Snapshot, StateRole, Storage, StorageError, Term,
};

/// Decides which messages the network drops.
pub type MessageFilter = Box<dyn Fn(&Message) -> bool>;

/// The storage a test cluster runs on: a `MemStorage`, possibly wrapped.
pub trait TestStorage: Storage + Clone {
    fn from_mem(mem: MemStorage) -> Self;
    /// What the disk holds, read without going through `Storage` (so without faults).
    fn mem(&self) -> &MemStorage;
    fn mem_mut(&mut self) -> &mut MemStorage;
}

impl TestStorage for MemStorage {
    fn from_mem(mem: MemStorage) -> Self {
        mem
    }
    fn mem(&self) -> &MemStorage {
        self
    }
    fn mem_mut(&mut self) -> &mut MemStorage {
        self
    }
}

/// Which `Storage` reads fail. Shared by every clone of one node's storage, so a test
/// flips it while the node runs.
#[derive(Debug, Default)]
pub struct ReadFaults {
    terms: Cell<bool>,
    entries: Cell<bool>,
    /// Reads that failed, so a test can tell that the core did read.
    failed_reads: Cell<u64>,
}

/// A `MemStorage` whose `term` and `entries` reads can be made to fail from a chosen
/// moment on, as a disk that starts returning I/O or checksum errors does. Writes still
/// go through; a read that fails says where, as a real storage's description would.
#[derive(Clone, Debug, Default)]
pub struct FailingStorage {
    mem: MemStorage,
    faults: Rc<ReadFaults>,
}

impl FailingStorage {
    /// From now on every `term` read fails.
    pub fn fail_terms(&self) {
        self.faults.terms.set(true);
    }

    /// From now on every `entries` read fails.
    pub fn fail_entries(&self) {
        self.faults.entries.set(true);
    }

    /// Reads that failed so far.
    pub fn failed_reads(&self) -> u64 {
        self.faults.failed_reads.get()
    }

    fn failure(&self, index: Index) -> StorageError {
        self.faults
            .failed_reads
            .set(self.faults.failed_reads.get() + 1);
        StorageError::ReadFailed(format!(
            "checksum mismatch in 00000000000000000001.log at the record of index {index}"
        ))
    }
}

impl TestStorage for FailingStorage {
    fn from_mem(mem: MemStorage) -> Self {
        FailingStorage {
            mem,
            faults: Rc::default(),
        }
    }
    fn mem(&self) -> &MemStorage {
        &self.mem
    }
    fn mem_mut(&mut self) -> &mut MemStorage {
        &mut self.mem
    }
}

impl Storage for FailingStorage {
    fn initial_state(&self) -> RaftState {
        self.mem.initial_state()
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if self.faults.entries.get() {
            return Err(self.failure(lo));
        }
        self.mem.entries(lo, hi, max_bytes)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if self.faults.terms.get() {
            return Err(self.failure(index));
        }
        self.mem.term(index)
    }

    fn first_index(&self) -> Index {
        self.mem.first_index()
    }

    fn last_index(&self) -> Index {
        self.mem.last_index()
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.mem.snapshot()
    }
}

pub struct Cluster<S: TestStorage = MemStorage> {
    pub nodes: BTreeMap<NodeId, RawNode<S>>,
    /// Storage of crashed nodes, kept for restart.
    pub crashed: BTreeMap<NodeId, S>,
    /// Messages sent and not yet delivered, in send order.
    pub queue: VecDeque<Message>,
    /// Directed links that drop messages.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Entries each node applied, in order (survives restarts).
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Every message delivered, in order.
    pub delivered: Vec<Message>,
    /// Every message delivered or dropped, rendered, since the last `take_trace`.
    pub trace: Vec<String>,
    pub config: Box<dyn Fn(NodeId) -> Config>,
    /// Messages for which this holds are dropped on delivery.
    pub filter: Option<MessageFilter>,
    /// Writes become durable only at `complete_io`; a crash loses the rest.
    pub async_io: bool,
    pub pending_io: BTreeMap<NodeId, PendingIo>,
    /// What each node's disk holds after its last completed fsync (async mode).
    pub durable: BTreeMap<NodeId, S>,
    /// Apply committed entries later than they are handed out (`advance_append`, then
    /// `advance_apply_to` at `apply_one`).
    pub split_apply: bool,
    pub pending_apply: BTreeMap<NodeId, VecDeque<Vec<Entry>>>,
}

/// The second half of a `Ready`, waiting for its writes to become durable.
pub struct PendingIo {
    persisted_messages: Vec<Message>,
    committed_entries: Vec<Entry>,
    read_states: Vec<ReadState>,
    snapshot_index: Option<u64>,
}

pub fn config(id: NodeId) -> Config {
    Config {
        election_timeout_ticks: 10,
        heartbeat_interval_ticks: 1,
        pre_vote: false,
        check_quorum: false,
        seed: 42,
        ..Config::new(id)
    }
}

pub fn data(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

impl Cluster {
    /// `n` voters with ids 1..=n.
    pub fn new(n: u64) -> Cluster {
        Cluster::with_config(n, config)
    }

    pub fn with_config(n: u64, cfg: impl Fn(NodeId) -> Config + 'static) -> Cluster {
        let voters: Vec<NodeId> = (1..=n).collect();
        Cluster::with_members(&voters, &[], cfg)
    }

    pub fn with_members(
        voters: &[NodeId],
        learners: &[NodeId],
        cfg: impl Fn(NodeId) -> Config + 'static,
    ) -> Cluster {
        Cluster::on_storage(voters, learners, cfg)
    }
}

impl<S: TestStorage> Cluster<S> {
    /// Voters and learners on storage of type `S`.
    pub fn on_storage(
        voters: &[NodeId],
        learners: &[NodeId],
        cfg: impl Fn(NodeId) -> Config + 'static,
    ) -> Cluster<S> {
        let cs = ConfState {
            learners: learners.to_vec(),
            ..ConfState::with_voters(voters.to_vec())
        };
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            crashed: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            delivered: Vec::new(),
            trace: Vec::new(),
            config: Box::new(cfg),
            filter: None,
            async_io: false,
            pending_io: BTreeMap::new(),
            durable: BTreeMap::new(),
            split_apply: false,
            pending_apply: BTreeMap::new(),
        };
        for &id in voters.iter().chain(learners) {
            let storage = S::from_mem(MemStorage::new_with_conf_state(cs.clone()));
            c.durable.insert(id, storage.clone());
            c.nodes
                .insert(id, RawNode::new((c.config)(id), storage).unwrap());
        }
        c
    }

    /// Adds a node with empty storage (it learns the configuration from the leader).
    pub fn add_empty_node(&mut self, id: NodeId) {
        let storage = S::from_mem(MemStorage::new());
        self.durable.insert(id, storage.clone());
        let node = RawNode::new((self.config)(id), storage).unwrap();
        self.nodes.insert(id, node);
    }

    pub fn node(&self, id: NodeId) -> &RawNode<S> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RawNode<S> {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Carries out every pending `Ready` of node `id`, as the contract prescribes. With
    /// `async_io`, the writes stay volatile until [`Cluster::complete_io`] (the fsync), and
    /// the node keeps taking input meanwhile.
    pub fn process_ready(&mut self, id: NodeId) {
        for _ in 0..100 {
            if self.pending_io.contains_key(&id) {
                return;
            }
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            if !node.has_ready() {
                return;
            }
            let rd = node.ready();
            self.queue.extend(rd.messages);
            let node = self.nodes.get_mut(&id).unwrap();
            let disk = node.storage_mut().mem_mut();
            if let Some(snap) = rd.snapshot.clone() {
                disk.apply_snapshot(snap).unwrap();
            }
            disk.append_owned(rd.entries);
            if let Some(hs) = rd.hard_state {
                disk.set_hard_state(hs);
            }
            let io = PendingIo {
                persisted_messages: rd.persisted_messages,
                committed_entries: rd.committed_entries,
                read_states: rd.read_states,
                snapshot_index: rd.snapshot.map(|s| s.meta.index),
            };
            if self.async_io {
                self.pending_io.insert(id, io);
                return;
            }
            self.finish_io(id, io);
        }
        panic!("node {id} never ran out of Ready");
    }

    fn finish_io(&mut self, id: NodeId, io: PendingIo) {
        self.queue.extend(io.persisted_messages);
        let applied = self.applied.entry(id).or_default();
        if let Some(snap_index) = io.snapshot_index {
            // The state machine of these tests is the list of applied entries; a
            // snapshot carries that list's length, the entries themselves are gone.
            applied.retain(|e| e.index <= snap_index);
            // Batches waiting to be applied are superseded by the snapshot.
            self.pending_apply.remove(&id);
        }
        self.read_states
            .entry(id)
            .or_default()
            .extend(io.read_states);
        let node = self.nodes.get_mut(&id).unwrap();
        if self.split_apply {
            node.advance_append();
            if !io.committed_entries.is_empty() {
                self.pending_apply
                    .entry(id)
                    .or_default()
                    .push_back(io.committed_entries);
            }
        } else {
            applied.extend(io.committed_entries);
            node.advance();
        }
        if self.async_io {
            self.durable.insert(id, node.storage().clone());
        }
    }

    /// The state machine of node `id` applies its oldest batch of committed entries.
    pub fn apply_one(&mut self, id: NodeId) {
        let Some(batch) = self.pending_apply.get_mut(&id).and_then(|q| q.pop_front()) else {
            return;
        };
        let last = batch.last().map(|e| e.index).unwrap_or(0);
        self.applied.entry(id).or_default().extend(batch);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.advance_apply_to(last);
        }
        self.process_ready(id);
    }

    /// The fsync of node `id`'s outstanding `Ready` completes.
    pub fn complete_io(&mut self, id: NodeId) {
        if let Some(io) = self.pending_io.remove(&id) {
            self.finish_io(id, io);
            self.process_ready(id);
        }
    }

    pub fn process_all_readies(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.process_ready(id);
        }
    }

    fn deliverable(&self, m: &Message) -> bool {
        self.nodes.contains_key(&m.to)
            && !self.cut.contains(&(m.from, m.to))
            && !self.filter.as_ref().is_some_and(|f| f(m))
    }

    /// Adds a node with storage bootstrapped with `conf_state`.
    pub fn add_node_with(&mut self, id: NodeId, conf_state: ConfState) {
        let storage = S::from_mem(MemStorage::new_with_conf_state(conf_state));
        self.durable.insert(id, storage.clone());
        let node = RawNode::new((self.config)(id), storage).unwrap();
        self.nodes.insert(id, node);
    }

    /// Delivers one queued message (dropping it if its link is cut or its target is
    /// down); returns false when the queue is empty.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.queue.pop_front() else {
            return false;
        };
        let deliverable = self.deliverable(&m);
        self.trace.push(format!(
            "{}{}",
            render(&m),
            if deliverable { "" } else { " (dropped)" }
        ));
        if deliverable {
            let to = m.to;
            self.delivered.push(m.clone());
            let node = self.nodes.get_mut(&to).unwrap();
            if let Err(e) = node.step(m) {
                // The only refusal of a message is a node stopped by its storage.
                assert_eq!(
                    Some(&e),
                    node.storage_failure()
                        .cloned()
                        .map(ordo_raft::Error::Storage)
                        .as_ref(),
                    "node {to} refused a message"
                );
            }
            self.process_ready(to);
        }
        true
    }

    /// Delivers messages and processes readies until nothing moves.
    pub fn stabilize(&mut self) {
        self.process_all_readies();
        for _ in 0..100_000 {
            if self.deliver_one() {
                continue;
            }
            self.process_all_readies();
            if self.pending_apply.values().any(|q| !q.is_empty()) {
                let ids: Vec<NodeId> = self.pending_apply.keys().copied().collect();
                for id in ids {
                    while self.pending_apply.get(&id).is_some_and(|q| !q.is_empty()) {
                        self.apply_one(id);
                    }
                }
                continue;
            }
            if !self.pending_io.is_empty() {
                let ids: Vec<NodeId> = self.pending_io.keys().copied().collect();
                for id in ids {
                    self.complete_io(id);
                }
                continue;
            }
            if self.queue.is_empty() {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    /// Removes every queued message for which `drop` holds.
    pub fn drop_queued(&mut self, drop: impl Fn(&Message) -> bool) {
        self.queue.retain(|m| !drop(m));
    }

    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick();
        self.process_ready(id);
    }

    pub fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.tick(id);
            }
            self.stabilize();
        }
    }

    /// Makes `id` campaign and runs the election to completion.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id).campaign().unwrap();
        self.stabilize();
        assert_eq!(
            self.node(id).role(),
            StateRole::Leader,
            "node {id} did not win"
        );
    }

    pub fn propose(&mut self, id: NodeId, s: &str) -> ordo_raft::EntryId {
        let r = self.node_mut(id).propose(data(s)).unwrap();
        self.process_ready(id);
        r
    }

    /// Cuts both directions between `id` and everyone else.
    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self
            .nodes
            .keys()
            .chain(self.crashed.keys())
            .copied()
            .collect();
        for other in ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Stops node `id`; what it persisted survives in its storage.
    pub fn crash(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        self.pending_apply.remove(&id);
        let disk = if self.async_io {
            // Writes of an unfinished fsync are lost.
            self.pending_io.remove(&id);
            self.durable[&id].clone()
        } else {
            node.storage().clone()
        };
        self.crashed.insert(id, disk);
        self.queue.retain(|m| m.to != id && m.from != id);
    }

    /// Restarts a crashed node from its storage; it re-applies from its last snapshot.
    pub fn restart(&mut self, id: NodeId) {
        let storage = self.crashed.remove(&id).unwrap();
        let snap_index = storage.first_index() - 1;
        let cfg = Config {
            applied_index: snap_index,
            ..(self.config)(id)
        };
        self.applied
            .entry(id)
            .or_default()
            .retain(|e| e.index <= snap_index);
        self.durable.insert(id, storage.clone());
        self.nodes.insert(id, RawNode::new(cfg, storage).unwrap());
    }

    /// The data of the normal, non-empty entries node `id` applied.
    pub fn applied_data(&self, id: NodeId) -> Vec<String> {
        self.applied
            .get(&id)
            .map(|es| {
                es.iter()
                    .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
                    .map(|e| String::from_utf8_lossy(&e.data).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (index, term) of every entry in node `id`'s durable log.
    pub fn log_of(&self, id: NodeId) -> Vec<(u64, u64)> {
        let s = self
            .nodes
            .get(&id)
            .map(|n| n.storage())
            .or(self.crashed.get(&id))
            .unwrap()
            .mem();
        let (lo, hi) = (s.first_index(), s.last_index() + 1);
        s.entries(lo, hi, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    pub fn log_data(&self, id: NodeId) -> Vec<String> {
        let s = self
            .nodes
            .get(&id)
            .map(|n| n.storage())
            .or(self.crashed.get(&id))
            .unwrap()
            .mem();
        let (lo, hi) = (s.first_index(), s.last_index() + 1);
        s.entries(lo, hi, u64::MAX)
            .unwrap()
            .iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect()
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.role() == StateRole::Leader)
            .map(|(&id, _)| id)
            .collect()
    }
}

/// A compact rendering of an append exchange, for asserting on message sequences.
pub fn describe(m: &Message) -> Option<String> {
    match &m.body {
        MessageBody::Append {
            prev_index,
            entries,
            ..
        } => Some(format!(
            "{}->{} Append(prev={prev_index}, entries={:?})",
            m.from,
            m.to,
            entries.iter().map(|e| e.index).collect::<Vec<_>>()
        )),
        MessageBody::AppendResponse {
            index,
            reject: Some(h),
        } => Some(format!(
            "{}->{} Reject(prev={index}, hint=({}, {}))",
            m.from, m.to, h.index, h.term
        )),
        MessageBody::AppendResponse {
            index,
            reject: None,
        } => Some(format!("{}->{} Accept(last={index})", m.from, m.to)),
        MessageBody::CommitNotice { commit } => Some(format!(
            "{}->{} CommitNotice(commit={commit})",
            m.from, m.to
        )),
        _ => None,
    }
}

/// One line per message, for golden traces.
pub fn render(m: &Message) -> String {
    let body = match &m.body {
        MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => {
            let ents: Vec<String> = entries
                .iter()
                .map(|e| {
                    let data = String::from_utf8_lossy(&e.data);
                    match (e.kind, data.is_empty()) {
                        (EntryKind::ConfChange, _) => format!("{}/{} conf", e.term, e.index),
                        (_, true) => format!("{}/{}", e.term, e.index),
                        (_, false) => format!("{}/{} {data}", e.term, e.index),
                    }
                })
                .collect();
            format!(
                "Append prev={prev_term}/{prev_index} commit={commit} [{}]",
                ents.join(", ")
            )
        }
        MessageBody::CommitNotice { commit } => format!("CommitNotice commit={commit}"),
        MessageBody::AppendResponse {
            index,
            reject: None,
        } => format!("AppendResponse ok {index}"),
        MessageBody::AppendResponse {
            index,
            reject: Some(h),
        } => {
            format!("AppendResponse reject {index} hint={}/{}", h.term, h.index)
        }
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => format!(
            "RequestVote last={last_log_term}/{last_log_index}{}",
            if *leadership_transfer {
                " transfer"
            } else {
                ""
            }
        ),
        MessageBody::RequestVoteResponse { reject } => {
            format!(
                "RequestVoteResponse {}",
                if *reject { "reject" } else { "grant" }
            )
        }
        MessageBody::RequestPreVote {
            last_log_index,
            last_log_term,
        } => {
            format!("RequestPreVote last={last_log_term}/{last_log_index}")
        }
        MessageBody::RequestPreVoteResponse { reject } => {
            format!(
                "RequestPreVoteResponse {}",
                if *reject { "reject" } else { "grant" }
            )
        }
        MessageBody::Heartbeat {
            commit, context, ..
        } => {
            format!(
                "Heartbeat commit={commit} ctx={:?}",
                String::from_utf8_lossy(context)
            )
        }
        MessageBody::HeartbeatResponse { context, .. } => {
            format!(
                "HeartbeatResponse ctx={:?}",
                String::from_utf8_lossy(context)
            )
        }
        MessageBody::Snapshot { snapshot } => {
            format!("Snapshot {}/{}", snapshot.meta.term, snapshot.meta.index)
        }
        other => other.name().to_string(),
    };
    format!("{}->{} t{} {body}", m.from, m.to, m.term)
}

impl<S: TestStorage> Cluster<S> {
    /// The delivered messages since the last call, rendered, followed by every node's
    /// role, term, commit index and log.
    pub fn take_trace(&mut self) -> String {
        let mut out = String::new();
        for line in self.trace.drain(..) {
            out.push_str(&line);
            out.push('\n');
        }
        let ids: BTreeSet<NodeId> = self
            .nodes
            .keys()
            .chain(self.crashed.keys())
            .copied()
            .collect();
        for id in ids {
            let log: Vec<String> = self
                .log_of(id)
                .iter()
                .map(|(i, t)| format!("{t}/{i}"))
                .collect();
            let state = match self.nodes.get(&id) {
                Some(n) => format!(
                    "{:?} term={} commit={}",
                    n.role(),
                    n.term(),
                    n.commit_index()
                ),
                None => "crashed".to_string(),
            };
            out.push_str(&format!("  node {id}: {state} log=[{}]\n", log.join(" ")));
        }
        out
    }
}

/// Compares `actual` with `testdata/<name>.txt`; `ORDO_RAFT_BLESS=1` rewrites the file.
pub fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(format!("{name}.txt"));
    if std::env::var_os("ORDO_RAFT_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with ORDO_RAFT_BLESS=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let mut diff = String::new();
        for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
            if e != a {
                diff.push_str(&format!(
                    "line {}:\n  expected: {e}\n  actual:   {a}\n",
                    i + 1
                ));
            }
        }
        let (ne, na) = (expected.lines().count(), actual.lines().count());
        if ne != na {
            diff.push_str(&format!("expected {ne} lines, got {na}\n"));
        }
        panic!(
            "{} differs from the behaviour (ORDO_RAFT_BLESS=1 to accept):\n{diff}",
            path.display()
        );
    }
}
