//! One simulated node: the real Raft core, a simulated disk, and the key-value state machine,
//! driven the way `ordo-raft`'s `Ready` contract says a runtime must drive them.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use ordo_raft::{
    ConfState, Config, Entry, EntryKind, Error, Index, MemStorage, Message, MessageBody, NodeId,
    RawNode, ReadState, Snapshot, StateRole, Storage, Term,
};

use crate::checker::{Checker, Violation};
use crate::client::{ClientOp, Reply, Request, Response};
use crate::disk::{Disk, Write};
use crate::kv::{Command, KvStore, WriteOp};
use crate::prng::Prng;
use crate::trace::Trace;

/// Everything that travels on the simulated network.
#[derive(Debug, Clone)]
pub enum Wire {
    /// Between Raft peers.
    Raft(Message),
    /// From a client to a node.
    Request(Request),
    /// From a node to a client.
    Response(Response),
}

/// Clients' network addresses start here, above every node id.
pub const CLIENT_ADDRESS_BASE: u64 = 1_000_000;

/// Ready loops per node per step; a core that always has more work is a bug, not a workload.
const READY_LOOPS_PER_STEP_MAX: usize = 64;

/// Reads waiting at one node for their read index to be applied.
const READS_WAITING_MAX: usize = 10_000;

/// Writes from a `Ready` that are on their way to the disk.
#[derive(Debug)]
struct PendingIo {
    done_at_ticks: u64,
    snapshot: Option<Snapshot>,
    committed_entries: Vec<Entry>,
    read_states: Vec<ReadState>,
    persisted_messages: Vec<Message>,
}

/// What a node wants the simulation to do after a step.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Messages to hand to the network: (from, to, payload).
    pub wire: Vec<(u64, u64, Wire)>,
    /// Writes acknowledged to clients: (index, term).
    pub acked: Vec<(Index, Term)>,
    /// Configuration changes applied, as the index of the last one applied and the
    /// configuration after it.
    pub conf_applied: Vec<(Index, ConfState)>,
}

/// Knobs of a node's runtime that the simulation picks per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTuning {
    /// Shortest fsync.
    pub fsync_ticks_min: u64,
    /// Longest fsync.
    pub fsync_ticks_max: u64,
    /// Take a state machine snapshot and compact the log after this many applied entries.
    pub snapshot_every_entries: u64,
}

/// One node of the simulated cluster.
pub struct SimNode {
    id: NodeId,
    /// `None` while the node is down.
    raw: Option<RawNode<MemStorage>>,
    disk: Disk,
    kv: KvStore,
    io: Option<PendingIo>,
    tuning: NodeTuning,
    applied_since_snapshot: u64,
    /// Writes proposed here on behalf of a client: (client, request) → client address.
    pending_writes: BTreeMap<(u64, u64), u64>,
    /// Reads asked of the core: context → (client address, request).
    pending_reads: BTreeMap<Bytes, (u64, Request)>,
    /// Reads confirmed at an index, waiting for it to be applied.
    reads_waiting: Vec<(Index, u64, Request)>,
    read_counter: u64,
    /// Incarnation, for unique read contexts across restarts.
    boots: u64,
}

fn read_context(node: NodeId, boots: u64, counter: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(24);
    buf.put_u64(node);
    buf.put_u64(boots);
    buf.put_u64(counter);
    buf.freeze()
}

impl SimNode {
    /// A node with a fresh disk: bootstrapped with `initial` as the configuration, or empty
    /// (a node about to be added, which learns everything from the leader).
    pub fn new(id: NodeId, initial: Option<ConfState>, tuning: NodeTuning) -> SimNode {
        SimNode {
            id,
            raw: None,
            disk: Disk::new(initial),
            kv: KvStore::new(),
            io: None,
            tuning,
            applied_since_snapshot: 0,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            reads_waiting: Vec::new(),
            read_counter: 0,
            boots: 0,
        }
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether the node is running.
    pub fn is_up(&self) -> bool {
        self.raw.is_some()
    }

    /// The running core, if up.
    pub fn raw(&self) -> Option<&RawNode<MemStorage>> {
        self.raw.as_ref()
    }

    /// The running core, if up.
    pub fn raw_mut(&mut self) -> Option<&mut RawNode<MemStorage>> {
        self.raw.as_mut()
    }

    /// The disk.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// Whether the node durably holds the entry (`index`, `term`), in its log or covered by
    /// its snapshot.
    pub fn durably_holds(&self, index: Index, term: Term) -> bool {
        let durable = self.disk.durable();
        if index < durable.first_index() {
            // Compacted: covered by the durable snapshot, whose index is at least this one.
            return true;
        }
        durable.term(index) == Ok(term)
    }

    /// Starts (or restarts) the node from what its disk durably holds.
    pub fn boot(
        &mut self,
        now_ticks: u64,
        config: Config,
        checker: &mut Checker,
        trace: &mut Trace,
    ) -> Result<(), Violation> {
        assert!(self.raw.is_none(), "node {} booted twice", self.id);
        let storage = self.disk.durable().clone();
        let snapshot = storage.snapshot().unwrap_or_default();
        self.kv = match KvStore::restore(&snapshot.data) {
            Ok(kv) => kv,
            Err(error) => panic!("node {} cannot read its own snapshot: {error}", self.id),
        };
        let applied_index = snapshot.meta.index;
        let durable_commit = storage.hard_state().commit.max(applied_index);
        let first = storage.first_index();
        let last = storage.last_index();
        let offset_term = storage.term(first - 1).unwrap_or(0);
        let entries = if last >= first {
            storage
                .entries(first, last + 1, u64::MAX)
                .expect("the durable log holds its own range")
        } else {
            Vec::new()
        };
        checker.observe_restart(self.id, durable_commit, applied_index);
        checker.observe_log_reset(now_ticks, self.id, first - 1, offset_term, &entries)?;
        checker.observe_restore(now_ticks, self.id, applied_index, snapshot.meta.term)?;
        let config = Config {
            applied_index,
            ..config
        };
        let raw = RawNode::new(config, storage)
            .unwrap_or_else(|error| panic!("node {} cannot start from its disk: {error}", self.id));
        trace.log(now_ticks, || {
            format!(
                "node {} starts: term {}, log {}..={}, snapshot at {}, commit {}",
                self.id,
                raw.term(),
                first,
                last,
                applied_index,
                durable_commit
            )
        });
        self.raw = Some(raw);
        self.boots += 1;
        self.applied_since_snapshot = 0;
        Ok(())
    }

    /// Loses power: everything in memory is gone and the disk keeps what it keeps.
    pub fn crash(&mut self, prng: &mut Prng) {
        self.raw = None;
        self.io = None;
        self.pending_writes.clear();
        self.pending_reads.clear();
        self.reads_waiting.clear();
        self.disk.crash(prng);
    }

    /// Advances the core's logical clock.
    pub fn tick(&mut self) {
        if let Some(raw) = self.raw.as_mut() {
            raw.tick();
        }
    }

    /// Delivers a message from a peer. Returns false when the node is down.
    pub fn step(&mut self, message: Message) -> bool {
        let Some(raw) = self.raw.as_mut() else {
            return false;
        };
        // Stale or malformed messages are the core's to ignore; an error here is not a fault
        // of the simulation.
        let _ = raw.step(message);
        true
    }

    fn leader_hint(raw: &RawNode<MemStorage>) -> Option<NodeId> {
        let leader = raw.leader_id();
        (leader != ordo_raft::INVALID_ID).then_some(leader)
    }

    /// Handles a client's request.
    pub fn on_request(&mut self, client_address: u64, request: Request, outbox: &mut Outbox) {
        let id = self.id;
        let Some(raw) = self.raw.as_mut() else {
            return;
        };
        let refuse = |leader: Option<NodeId>, request: &Request, outbox: &mut Outbox| {
            outbox.wire.push((
                id,
                client_address,
                Wire::Response(Response {
                    client_id: request.client_id,
                    request_id: request.request_id,
                    reply: Reply::NotLeader { leader },
                }),
            ));
        };
        match &request.op {
            ClientOp::Get { .. } => {
                if self.pending_reads.len() + self.reads_waiting.len() >= READS_WAITING_MAX {
                    refuse(None, &request, outbox);
                    return;
                }
                self.read_counter += 1;
                let context = read_context(id, self.boots, self.read_counter);
                match raw.read_index(context.clone()) {
                    Ok(()) => {
                        self.pending_reads
                            .insert(context, (client_address, request));
                    }
                    Err(Error::NotLeader { leader_id }) => {
                        refuse(Some(leader_id), &request, outbox);
                    }
                    Err(_) => refuse(Self::leader_hint(raw), &request, outbox),
                }
            }
            ClientOp::Put { key, value } => {
                let op = WriteOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                };
                self.propose_write(client_address, request, op, outbox);
            }
            ClientOp::Cas { key, expected, new } => {
                let op = WriteOp::Cas {
                    key: key.clone(),
                    expected: expected.clone(),
                    new: new.clone(),
                };
                self.propose_write(client_address, request, op, outbox);
            }
        }
    }

    fn propose_write(
        &mut self,
        client_address: u64,
        request: Request,
        op: WriteOp,
        outbox: &mut Outbox,
    ) {
        let Some(raw) = self.raw.as_mut() else {
            return;
        };
        let command = Command {
            client_id: request.client_id,
            request_id: request.request_id,
            op,
        };
        let leader = match raw.propose(command.encode()) {
            Ok(_) => {
                self.pending_writes
                    .insert((request.client_id, request.request_id), client_address);
                return;
            }
            Err(Error::NotLeader { leader_id }) => Some(leader_id),
            Err(_) => None,
        };
        outbox.wire.push((
            self.id,
            client_address,
            Wire::Response(Response {
                client_id: request.client_id,
                request_id: request.request_id,
                reply: Reply::NotLeader { leader },
            }),
        ));
    }

    /// Carries out the core's `Ready`s: writes, fsync completions, sends, applies.
    pub fn drive(
        &mut self,
        now_ticks: u64,
        prng: &mut Prng,
        checker: &mut Checker,
        trace: &mut Trace,
        outbox: &mut Outbox,
    ) -> Result<(), Violation> {
        for _ in 0..READY_LOOPS_PER_STEP_MAX {
            if self.raw.is_none() {
                return Ok(());
            }
            if let Some(io) = &self.io {
                if io.done_at_ticks > now_ticks {
                    return Ok(());
                }
                self.finish_io(now_ticks, checker, trace, outbox)?;
                continue;
            }
            let raw = self.raw.as_mut().expect("checked above");
            if !raw.has_ready() {
                return Ok(());
            }
            self.start_io(now_ticks, prng, checker, trace, outbox)?;
        }
        Ok(())
    }

    fn start_io(
        &mut self,
        now_ticks: u64,
        prng: &mut Prng,
        checker: &mut Checker,
        trace: &mut Trace,
        outbox: &mut Outbox,
    ) -> Result<(), Violation> {
        let id = self.id;
        let raw = self.raw.as_mut().expect("started only when up");
        let ready = raw.ready();
        let must_sync = ready.must_sync();
        if let Some(soft) = ready.soft_state {
            if soft.role == StateRole::Leader {
                trace.log(now_ticks, || {
                    format!("node {id} becomes leader of term {}", raw.term())
                });
            }
        }
        // 1. Messages that promise nothing about this node's disk leave at once.
        for message in ready.messages {
            outbox.wire.push((id, message.to, Wire::Raft(message)));
        }
        // 2. Snapshot, entries, hard state: written now, durable when the fsync completes.
        let leader_term = (raw.role() == StateRole::Leader).then(|| raw.term());
        if let Some(snapshot) = &ready.snapshot {
            trace.log(now_ticks, || {
                format!(
                    "node {id} installs a snapshot at index {} term {}",
                    snapshot.meta.index, snapshot.meta.term
                )
            });
            if let Some(term) = leader_term {
                return Err(Violation {
                    kind: crate::checker::ViolationKind::LeaderAppendOnly,
                    time_ticks: now_ticks,
                    detail: format!("node {id}, leader of term {term}, installs a snapshot"),
                });
            }
            raw.storage_mut()
                .apply_snapshot(snapshot.clone())
                .unwrap_or_else(|error| {
                    panic!("node {id}: the core handed out a stale snapshot: {error}")
                });
            self.disk.write(Write::InstallSnapshot(snapshot.clone()));
            checker.observe_log_reset(
                now_ticks,
                id,
                snapshot.meta.index,
                snapshot.meta.term,
                &[],
            )?;
        }
        if !ready.entries.is_empty() {
            raw.storage_mut().append(&ready.entries);
            checker.observe_append(now_ticks, id, &ready.entries, leader_term)?;
            self.disk.write(Write::Append(ready.entries));
        }
        if let Some(hard_state) = ready.hard_state {
            raw.storage_mut().set_hard_state(hard_state);
            self.disk.write(Write::HardState(hard_state));
        }
        let latency_ticks = if must_sync || self.disk.has_unsynced() {
            prng.range(self.tuning.fsync_ticks_min, self.tuning.fsync_ticks_max)
        } else {
            0
        };
        self.io = Some(PendingIo {
            done_at_ticks: now_ticks + latency_ticks,
            snapshot: ready.snapshot,
            committed_entries: ready.committed_entries,
            read_states: ready.read_states,
            persisted_messages: ready.persisted_messages,
        });
        Ok(())
    }

    fn finish_io(
        &mut self,
        now_ticks: u64,
        checker: &mut Checker,
        trace: &mut Trace,
        outbox: &mut Outbox,
    ) -> Result<(), Violation> {
        let id = self.id;
        let io = self.io.take().expect("called with io pending");
        self.disk.fsync();
        // 3. Messages that promise durability leave only now.
        for message in io.persisted_messages {
            outbox.wire.push((id, message.to, Wire::Raft(message)));
        }
        // 4. Apply: the snapshot's state first, then the committed entries.
        if let Some(snapshot) = &io.snapshot {
            self.kv = KvStore::restore(&snapshot.data).unwrap_or_else(|error| {
                panic!("node {id} received an unreadable snapshot: {error}")
            });
            checker.observe_restore(now_ticks, id, snapshot.meta.index, snapshot.meta.term)?;
            self.applied_since_snapshot = 0;
        }
        let raw = self.raw.as_mut().expect("io finishes only while up");
        let mut applied_last = None;
        for entry in &io.committed_entries {
            checker.observe_apply(now_ticks, id, entry)?;
            applied_last = Some(entry.index);
            self.applied_since_snapshot += 1;
            match entry.kind {
                EntryKind::ConfChange => {
                    trace.log(now_ticks, || {
                        format!(
                            "node {id} applies configuration change at index {}: {:?}",
                            entry.index,
                            ordo_raft::ConfChange::decode(&entry.data).map(|cc| cc.changes)
                        )
                    });
                }
                EntryKind::Normal if entry.data.is_empty() => {}
                EntryKind::Normal => {
                    let command = Command::decode(&entry.data).unwrap_or_else(|error| {
                        panic!(
                            "node {id} applied an undecodable entry {}: {error}",
                            entry.index
                        )
                    });
                    let applied = self.kv.apply(&command);
                    let key = (command.client_id, command.request_id);
                    if let (Some(result), Some(client_address)) =
                        (applied.result(), self.pending_writes.remove(&key))
                    {
                        outbox.acked.push((entry.index, entry.term));
                        outbox.wire.push((
                            id,
                            client_address,
                            Wire::Response(Response {
                                client_id: command.client_id,
                                request_id: command.request_id,
                                reply: Reply::Written {
                                    result,
                                    index: entry.index,
                                    term: entry.term,
                                },
                            }),
                        ));
                    }
                }
            }
        }
        for read_state in io.read_states {
            if let Some((client_address, request)) = self.pending_reads.remove(&read_state.context)
            {
                self.reads_waiting
                    .push((read_state.index, client_address, request));
            }
        }
        // 5. Acknowledge: configuration changes take effect here.
        let last_conf_change = io
            .committed_entries
            .iter()
            .filter(|entry| entry.kind == EntryKind::ConfChange)
            .map(|entry| entry.index)
            .next_back();
        raw.advance();
        if let Some(index) = last_conf_change {
            outbox.conf_applied.push((index, raw.conf_state()));
        }
        let applied_index = raw.applied_index();
        if let Some(last) = applied_last {
            debug_assert!(applied_index >= last);
        }
        self.answer_reads(applied_index, outbox);
        if self.applied_since_snapshot >= self.tuning.snapshot_every_entries {
            self.take_snapshot(now_ticks, trace);
        }
        Ok(())
    }

    fn answer_reads(&mut self, applied_index: Index, outbox: &mut Outbox) {
        let id = self.id;
        let kv = &self.kv;
        self.reads_waiting
            .retain(|(index, client_address, request)| {
                if *index > applied_index {
                    return true;
                }
                let ClientOp::Get { key } = &request.op else {
                    unreachable!("only reads wait for a read index");
                };
                outbox.wire.push((
                    id,
                    *client_address,
                    Wire::Response(Response {
                        client_id: request.client_id,
                        request_id: request.request_id,
                        reply: Reply::Value(kv.get(key)),
                    }),
                ));
                false
            });
    }

    /// Snapshots the state machine at the applied index and compacts the log up to it.
    fn take_snapshot(&mut self, now_ticks: u64, trace: &mut Trace) {
        let raw = self.raw.as_mut().expect("snapshots are taken while up");
        let index = raw.applied_index();
        let storage = raw.storage_mut();
        if index < storage.first_index() || index > storage.last_index() {
            return;
        }
        let conf_state = raw.conf_state();
        let data = self.kv.snapshot();
        let storage = raw.storage_mut();
        if storage
            .create_snapshot(index, conf_state.clone(), data.clone())
            .is_err()
        {
            return;
        }
        storage.compact_to_snapshot();
        let snapshot = storage.snapshot().expect("just created");
        self.disk.write(Write::Compact(snapshot));
        self.applied_since_snapshot = 0;
        let id = self.id;
        trace.log(now_ticks, || {
            format!("node {id} snapshots and compacts its log up to index {index}")
        });
    }

    /// Whether reads or writes from clients are waiting here.
    pub fn has_pending_client_work(&self) -> bool {
        !self.pending_writes.is_empty()
            || !self.pending_reads.is_empty()
            || !self.reads_waiting.is_empty()
    }
}

/// Whether `message` carries a snapshot (its delivery is reported back to the sender).
pub fn is_snapshot_message(message: &Message) -> bool {
    matches!(message.body, MessageBody::Snapshot { .. })
}
