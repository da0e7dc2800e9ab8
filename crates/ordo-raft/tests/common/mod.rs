//! A small in-memory cluster for scenario tests: nodes with `MemStorage`, a message queue
//! the test controls, and the `Ready` loop carried out exactly as `Ready` documents.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use ordo_raft::{
    ConfState, Config, Entry, EntryKind, MemStorage, Message, MessageBody, NodeId, RawNode,
    ReadState, StateRole, Storage,
};

/// Decides which messages the network drops.
pub type MessageFilter = Box<dyn Fn(&Message) -> bool>;

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, RawNode<MemStorage>>,
    /// Storage of crashed nodes, kept for restart.
    pub crashed: BTreeMap<NodeId, MemStorage>,
    /// Messages sent and not yet delivered, in send order.
    pub queue: VecDeque<Message>,
    /// Directed links that drop messages.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Entries each node applied, in order (survives restarts).
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    /// Every message delivered, in order.
    pub delivered: Vec<Message>,
    pub config: Box<dyn Fn(NodeId) -> Config>,
    /// Messages for which this holds are dropped on delivery.
    pub filter: Option<MessageFilter>,
    /// Writes become durable only at `complete_io`; a crash loses the rest.
    pub async_io: bool,
    pub pending_io: BTreeMap<NodeId, PendingIo>,
    /// What each node's disk holds after its last completed fsync (async mode).
    pub durable: BTreeMap<NodeId, MemStorage>,
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
            config: Box::new(cfg),
            filter: None,
            async_io: false,
            pending_io: BTreeMap::new(),
            durable: BTreeMap::new(),
            split_apply: false,
            pending_apply: BTreeMap::new(),
        };
        for &id in voters.iter().chain(learners) {
            let storage = MemStorage::new_with_conf_state(cs.clone());
            c.durable.insert(id, storage.clone());
            c.nodes
                .insert(id, RawNode::new((c.config)(id), storage).unwrap());
        }
        c
    }

    /// Adds a node with empty storage (it learns the configuration from the leader).
    pub fn add_empty_node(&mut self, id: NodeId) {
        let node = RawNode::new((self.config)(id), MemStorage::new()).unwrap();
        self.durable.insert(id, MemStorage::new());
        self.nodes.insert(id, node);
    }

    pub fn node(&self, id: NodeId) -> &RawNode<MemStorage> {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
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
            if let Some(snap) = rd.snapshot.clone() {
                node.storage_mut().apply_snapshot(snap).unwrap();
            }
            node.storage_mut().append_owned(rd.entries);
            if let Some(hs) = rd.hard_state {
                node.storage_mut().set_hard_state(hs);
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
        let storage = MemStorage::new_with_conf_state(conf_state);
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
        if self.deliverable(&m) {
            let to = m.to;
            self.delivered.push(m.clone());
            self.nodes.get_mut(&to).unwrap().step(m).unwrap();
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
            .unwrap();
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
            .unwrap();
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
        _ => None,
    }
}
