//! One simulated node: the runtime's production group core (`ordo_node::core`) and applier
//! over a simulated disk, applying to the production KV state machine (`ordo-kv`), with
//! only the shell around them simulated: the network, the disk's durability and the clock.
//!
//! The shell does what the tokio driver does in production — carries out the core's
//! commands in order, holds send-after-durable messages in the same `DurabilityGate`,
//! encodes every peer message with the runtime's codec — but in one thread, with fsyncs
//! that complete a few simulated ticks after they start.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ordo_kv::command::{self as kv_command, ApplyResponse, Command as KvCommand};
use ordo_kv::machine::{Clock, KvMachine, LeaseClock};
use ordo_kv::proto::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use ordo_kv::{KvError, KvState, KvStore};
use ordo_node::apply::{
    Applier, ApplierIdentity, ApplyBatch, InlineSnapshotter, Proposer, SnapshotOutcome,
    SnapshotThresholds,
};
use ordo_node::codec::WireMessage;
use ordo_node::core::{
    Answer, ApplyWork, Command, CoreConfig, DurabilityGate, GroupCore, RuntimeMutation, Ticket,
};
use ordo_node::{GroupId, LogStore, ProposeError, StateMachine, StorageFailure};
use ordo_raft::{
    ConfChange, ConfState, Config, Entry, EntryKind, HardState, Index, MemStorage, NodeId,
    RaftState, RawNode, Snapshot, SnapshotMeta, StateRole, Storage, StorageError, Term,
};

use crate::checker::{Checker, Violation};
use crate::client::{ClientOp, Reply, Request, Response, WriteResult};
use crate::disk::{Disk, Write};
use crate::prng::Prng;
use crate::trace::Trace;

/// Everything that travels on the simulated network.
#[derive(Debug, Clone)]
pub enum Wire {
    /// Between peers: an encoded runtime message, decoded on delivery.
    Peer(Bytes),
    /// From a client to a node.
    Request(Request),
    /// From a node to a client.
    Response(Response),
}

/// Clients' network addresses start here, above every node id.
pub const CLIENT_ADDRESS_BASE: u64 = 1_000_000;

/// Turns of the core per node per step; a core that always has more work is a bug.
const TURNS_PER_STEP_MAX: usize = 64;

/// What a node wants the simulation to do after a step.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Messages to hand to the network: (from, to, payload).
    pub wire: Vec<(u64, u64, Wire)>,
    /// Writes acknowledged to clients: (node, node's term, index, entry's term).
    pub acked: Vec<(NodeId, Term, Index, Term)>,
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
    /// Take a state machine snapshot after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot.
    pub snapshot_tail_entries: u64,
    /// Bytes of snapshot data per chunk on the wire.
    pub snapshot_chunk_bytes: usize,
    /// Batches with the state machine at most.
    pub apply_batches_max: u64,
}

/// Simulated time, in milliseconds, for the lease clocks: the simulation sets it.
#[derive(Clone, Default)]
pub struct SimClock(Arc<std::sync::atomic::AtomicU64>);

impl SimClock {
    /// Sets the time.
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The simulated disk seen as the runtime's log storage: `view` is what the node has
/// written (what a running node reads back), the disk tells what of it is durable.
#[derive(Clone)]
pub struct SimLog(Rc<RefCell<SimLogInner>>);

struct SimLogInner {
    view: MemStorage,
    disk: Disk,
    conf_now: ConfState,
    snapshot_wanted: bool,
}

impl SimLog {
    fn new(disk: Disk) -> SimLog {
        let view = disk.durable().clone();
        let conf_now = view.initial_state().conf_state;
        SimLog(Rc::new(RefCell::new(SimLogInner {
            view,
            disk,
            conf_now,
            snapshot_wanted: false,
        })))
    }

    fn write(&self, write: Write) {
        let mut inner = self.0.borrow_mut();
        crate::disk::apply(&mut inner.view, write.clone());
        inner.disk.write(write);
    }

    fn disk<R>(&self, f: impl FnOnce(&mut Disk) -> R) -> R {
        f(&mut self.0.borrow_mut().disk)
    }
}

impl Storage for SimLog {
    fn initial_state(&self) -> RaftState {
        self.0.borrow().view.initial_state()
    }
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let inner = self.0.borrow();
        let read = inner.view.entries(lo, hi, max_bytes)?;
        let end = read.last().map_or(lo, |e| e.index + 1);
        if let Some(damage) = inner.disk.damage_in(lo, end) {
            return Err(StorageError::ReadFailed(format!(
                "{} at entry {} of the log",
                damage.what,
                damage.from.max(lo)
            )));
        }
        Ok(read)
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.0.borrow().view.term(index)
    }
    fn first_index(&self) -> Index {
        self.0.borrow().view.first_index()
    }
    fn last_index(&self) -> Index {
        self.0.borrow().view.last_index()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        // As the WAL storage does: a snapshot that omits a member added since is not sent,
        // and a fresh one is asked for.
        let mut inner = self.0.borrow_mut();
        let snapshot = inner.view.snapshot()?;
        if snapshot.meta.index == 0 || snapshot.meta.conf_state != inner.conf_now {
            inner.snapshot_wanted = true;
            return Err(StorageError::SnapshotTemporarilyUnavailable);
        }
        Ok(snapshot)
    }
}

impl LogStore for SimLog {
    fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageFailure> {
        self.write(Write::InstallSnapshot(snapshot.clone()));
        self.0.borrow_mut().conf_now = snapshot.meta.conf_state.clone();
        Ok(())
    }
    fn append(&self, entries: &[Entry]) -> Result<Option<Index>, StorageFailure> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(None);
        };
        self.write(Write::Append(entries.to_vec()));
        Ok(Some(last))
    }
    fn set_hard_state(&self, hs: HardState) -> Result<(), StorageFailure> {
        self.write(Write::HardState(hs));
        Ok(())
    }
    fn compact(&self, through: Index) -> Result<(), StorageFailure> {
        self.write(Write::Compact(through));
        Ok(())
    }
    fn write_snapshot(
        &self,
        index: Index,
        term: Term,
        conf_state: &ConfState,
        data: &[u8],
    ) -> Result<(), StorageFailure> {
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: conf_state.clone(),
            },
            data: Bytes::copy_from_slice(data),
        };
        self.write(Write::SaveSnapshot(snapshot));
        Ok(())
    }
    fn durable_index(&self) -> Index {
        self.0.borrow().disk.durable().last_index()
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.0.borrow().view.snapshot().unwrap_or_default().meta
    }
    fn note_snapshot_taken(&self, _meta: SnapshotMeta) {}
    fn set_conf_now(&self, conf_state: ConfState) {
        self.0.borrow_mut().conf_now = conf_state;
    }
    fn take_snapshot_wanted(&self) -> bool {
        std::mem::take(&mut self.0.borrow_mut().snapshot_wanted)
    }
    fn failure(&self) -> Option<String> {
        None
    }
}

/// What the state machine answered this node's writes, by ticket, as it applied them.
type Outputs = Arc<Mutex<Vec<(Ticket, Result<ApplyResponse, KvError>)>>>;

/// A client's write waiting for its entry to be applied.
struct SimProposer {
    ticket: Ticket,
    outputs: Outputs,
}

impl Proposer<Result<ApplyResponse, KvError>> for SimProposer {
    fn applied(self, output: Result<ApplyResponse, KvError>) {
        lock(&self.outputs).push((self.ticket, output));
    }
    fn membership_applied(self, _conf_state: &ConfState) {}
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a client asked of this node, by the ticket the core gave it.
#[derive(Debug, Clone)]
struct ClientRequest {
    address: u64,
    request: Request,
}

/// A running node: the core, its gate, its applier and state machine.
struct Running {
    core: GroupCore<SimLog>,
    gate: DurabilityGate,
    /// The fsync in progress: when it completes and the last write it covers.
    fsync: Option<(u64, u64)>,
    applier: Applier<KvMachine, SimLog, InlineSnapshotter>,
    machine: KvMachine,
    kv: Arc<KvState>,
    batches_done: u64,
    outputs: Outputs,
    clients: BTreeMap<Ticket, ClientRequest>,
    /// Where each proposal's entry was applied: (index, term).
    applied_at: BTreeMap<Ticket, (Index, Term)>,
}

/// One node of the simulated cluster.
pub struct SimNode {
    id: NodeId,
    log: SimLog,
    running: Option<Running>,
    tuning: NodeTuning,
    mutation: Option<RuntimeMutation>,
    clock: SimClock,
    /// Incarnation, so request ids never repeat across restarts.
    boots: u64,
    /// Why the node stopped for good: its disk is damaged, and it must be replaced.
    failed: Option<String>,
    /// Quiescences and wakes of the node's earlier runs (its counters start over at boot).
    quiescence_before: (u64, u64),
}

/// The peer address a simulated node would have; the network routes by id.
fn sim_addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], (id % 60_000) as u16 + 1))
}

/// The disk image of a new cluster's node: the first snapshot at index 1 holding the
/// initial voters and the empty store, as `Node::start_group` bootstraps a group.
pub fn bootstrap_image(voters: &ConfState) -> MemStorage {
    let mut image = MemStorage::new();
    let empty = KvMachine::new(
        Arc::new(KvState::new(KvStore::new())),
        Arc::new(LeaseClock::default()),
    )
    .snapshot();
    image
        .apply_snapshot(Snapshot {
            meta: SnapshotMeta {
                index: 1,
                term: 1,
                conf_state: voters.clone(),
            },
            data: empty,
        })
        .expect("a blank image takes a snapshot");
    image.set_hard_state(HardState {
        term: 1,
        vote: 0,
        commit: 1,
    });
    image
}

impl SimNode {
    /// A node whose disk holds `image` (a bootstrapped member, or an empty one to be added).
    pub fn new(
        id: NodeId,
        image: MemStorage,
        tuning: NodeTuning,
        mutation: Option<RuntimeMutation>,
        clock: SimClock,
    ) -> SimNode {
        SimNode {
            id,
            log: SimLog::new(Disk::new(image)),
            running: None,
            tuning,
            mutation,
            clock,
            boots: 0,
            failed: None,
            quiescence_before: (0, 0),
        }
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether the node is running.
    pub fn is_up(&self) -> bool {
        self.running.is_some()
    }

    /// Why the node stopped for good, if it did: damage its log's checks detected.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Damages this node's durable log (a bit flip, a cut), from now on.
    pub fn damage_disk(&mut self, damage: crate::disk::Damage) {
        self.log.disk(|d| d.damage(damage));
    }

    /// The durable log's first index and durable commit index.
    pub fn durable_range(&self) -> (Index, Index) {
        let inner = self.log.0.borrow();
        let durable = inner.disk.durable();
        (durable.first_index(), durable.hard_state().commit)
    }

    /// The running Raft core, if up.
    pub fn raw(&self) -> Option<&RawNode<SimLog>> {
        self.running.as_ref().map(|r| r.core.raw())
    }

    /// Whether the node durably holds the entry (`index`, `term`), in its log or covered by
    /// its snapshot.
    pub fn durably_holds(&self, index: Index, term: Term) -> bool {
        let inner = self.log.0.borrow();
        let durable = inner.disk.durable();
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
        assert!(self.running.is_none(), "node {} booted twice", self.id);
        if self.failed.is_some() {
            return Ok(());
        }
        // The running view starts as what the disk durably holds.
        let disk = self.log.0.borrow().disk.clone();
        // Recovery reads every record: damage in the log refuses the start, as `ordo
        // server` exits naming the file and offset.
        if let Some(damage) = disk.damage_in(0, Index::MAX) {
            let reason = format!("{} at entry {}", damage.what, damage.from);
            trace.log(now_ticks, || {
                format!("node {} refuses to start: {reason}", self.id)
            });
            self.failed = Some(reason);
            return Ok(());
        }
        let image = disk.durable().clone();
        self.log = SimLog::new(disk);
        let snapshot = image.snapshot().unwrap_or_default();
        let kv = Arc::new(KvState::new(KvStore::new()));
        let leases = Arc::new(LeaseClock::new(self.clock.clone()));
        let mut machine = KvMachine::new(Arc::clone(&kv), leases);
        if snapshot.meta.index > 0 {
            machine
                .restore(snapshot.meta.index, &snapshot.data)
                .unwrap_or_else(|e| panic!("node {} cannot read its own snapshot: {e}", self.id));
        }
        let applied = snapshot.meta.index;
        self.observe_boot(now_ticks, &image, checker)?;
        let raw = RawNode::new(
            Config {
                applied_index: applied,
                ..config
            },
            self.log.clone(),
        )
        .unwrap_or_else(|error| panic!("node {} cannot start from its disk: {error}", self.id));
        self.boots += 1;
        let core = GroupCore::new(
            self.core_config(),
            raw,
            applied,
            BTreeMap::new(),
            Arc::default(),
        );
        let identity = ApplierIdentity {
            group_id: GroupId(1),
            node_id: self.id,
            boot: self.boots,
            restored: (applied, snapshot.meta.term),
        };
        let thresholds = SnapshotThresholds {
            entries: self.tuning.snapshot_every_entries,
            bytes: u64::MAX,
        };
        let applier = Applier::new(
            identity,
            self.log.clone(),
            Arc::default(),
            thresholds,
            InlineSnapshotter::default(),
        );
        trace.log(now_ticks, || {
            format!(
                "node {} starts: term {}, log {}..={}, snapshot at {applied}, commit {}",
                self.id,
                core.raw().term(),
                image.first_index(),
                image.last_index(),
                image.hard_state().commit
            )
        });
        self.running = Some(Running {
            core,
            gate: self.gate(),
            fsync: None,
            applier,
            machine,
            kv,
            batches_done: 0,
            outputs: Arc::default(),
            clients: BTreeMap::new(),
            applied_at: BTreeMap::new(),
        });
        Ok(())
    }

    fn observe_boot(
        &self,
        now_ticks: u64,
        image: &MemStorage,
        checker: &mut Checker,
    ) -> Result<(), Violation> {
        let snapshot = image.snapshot().unwrap_or_default();
        let applied = snapshot.meta.index;
        let first = image.first_index();
        let last = image.last_index();
        let offset_term = image.term(first - 1).unwrap_or(0);
        let entries = if last >= first {
            image
                .entries(first, last + 1, u64::MAX)
                .expect("the durable log holds its own range")
        } else {
            Vec::new()
        };
        let durable_commit = image.hard_state().commit.max(applied);
        checker.observe_restart(self.id, durable_commit, applied);
        checker.observe_log_reset(now_ticks, self.id, first - 1, offset_term, &entries)?;
        checker.observe_restore(
            now_ticks,
            self.id,
            image.hard_state().term,
            applied,
            snapshot.meta.term,
        )
    }

    fn core_config(&self) -> CoreConfig {
        CoreConfig {
            quiesce: true,
            group_id: GroupId(1),
            node_id: self.id,
            boot: self.boots,
            self_addr: sim_addr(self.id),
            proposal_bytes_max: 64 * 1024,
            pending_proposals_max: 1_000,
            pending_reads_max: 1_000,
            pending_asks_max: 100,
            snapshot_tail_entries: self.tuning.snapshot_tail_entries,
            snapshot_chunk_bytes: self.tuning.snapshot_chunk_bytes,
            snapshot_bytes_max: 64 << 20,
            snapshot_chunk_timeout_ticks: 60,
            apply_batches_max: self.tuning.apply_batches_max,
            mutation: self.mutation,
        }
    }

    fn gate(&self) -> DurabilityGate {
        if self.mutation == Some(RuntimeMutation::AckBeforeDurable) {
            DurabilityGate::acking_before_durable()
        } else {
            DurabilityGate::new()
        }
    }

    /// Loses power: everything in memory is gone and the disk keeps what it keeps.
    pub fn crash(&mut self, prng: &mut Prng) {
        self.stop();
        self.log.disk(|disk| disk.crash(prng));
    }

    fn stop(&mut self) {
        self.quiescence_before = self.quiescence();
        self.running = None;
    }

    /// Times this node's group quiesced and woke, over all its runs.
    pub fn quiescence(&self) -> (u64, u64) {
        let (quiesces, wakes) = self.quiescence_before;
        match &self.running {
            Some(r) => {
                let m = r.core.metrics();
                (quiesces + m.quiesces, wakes + m.wakes)
            }
            None => (quiesces, wakes),
        }
    }

    /// Whether the node is up and its group quiesced (its clock is not ticking).
    pub fn is_quiesced(&self) -> bool {
        self.running.as_ref().is_some_and(|r| r.core.is_quiesced())
    }

    /// Advances the core's logical clock, as the driver's interval does: not while the
    /// group is quiesced.
    pub fn tick(&mut self) {
        if let Some(r) = self.running.as_mut() {
            if !r.core.is_quiesced() {
                r.core.on_tick();
            }
        }
    }

    /// The transport lost its connection to `peer` (it crashed or stopped).
    pub fn on_unreachable(&mut self, peer: NodeId) {
        if let Some(r) = self.running.as_mut() {
            r.core.on_unreachable(peer);
        }
    }

    /// Delivers a peer's encoded message. Returns false when the node is down.
    pub fn on_peer(&mut self, from: NodeId, payload: Bytes) -> bool {
        let Some(r) = self.running.as_mut() else {
            return false;
        };
        let message = WireMessage::decode(payload)
            .unwrap_or_else(|e| panic!("node {} got an undecodable peer message: {e}", self.id));
        r.core.on_message(from, message);
        true
    }

    /// Proposes a membership change the nemesis chose; false when the node is down.
    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> bool {
        let Some(r) = self.running.as_mut() else {
            return false;
        };
        r.core.propose_conf_change(cc.clone(), None);
        true
    }

    /// Asks this node, as leader, to hand leadership to `target`.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), ProposeError> {
        match self.running.as_mut() {
            Some(r) => r.core.transfer_leader(target),
            None => Err(ProposeError::ShuttingDown),
        }
    }

    /// Handles a client's request: a read through ReadIndex, a write through the log. A
    /// follower forwards writes and confirms reads with the leader itself.
    pub fn on_request(&mut self, client_address: u64, request: Request) {
        let Some(r) = self.running.as_mut() else {
            return;
        };
        let ticket = match &request.op {
            ClientOp::Get { .. } => r.core.read(),
            op => r.core.propose(&write_command(request.request_id, op)),
        };
        r.clients.insert(
            ticket,
            ClientRequest {
                address: client_address,
                request,
            },
        );
    }

    /// Runs the core's turns: commands, fsync completions, applying, answers.
    pub fn drive(
        &mut self,
        now_ticks: u64,
        prng: &mut Prng,
        checker: &mut Checker,
        trace: &mut Trace,
        outbox: &mut Outbox,
    ) -> Result<(), Violation> {
        let id = self.id;
        let log = self.log.clone();
        let tuning = self.tuning;
        let Some(r) = self.running.as_mut() else {
            return Ok(());
        };
        for _ in 0..TURNS_PER_STEP_MAX {
            r.core.end_turn();
            let mut moved = false;
            loop {
                let commands = r.core.take_commands();
                if commands.is_empty() {
                    break;
                }
                moved = true;
                for command in commands {
                    r.execute(id, &log, now_ticks, command, checker, trace, outbox)?;
                }
            }
            moved |= r.complete_fsync(&log, now_ticks);
            moved |= r.release_durable(id, &log, outbox);
            r.start_fsync(&log, now_ticks, tuning, prng);
            if let Some(reason) = r.core.storage_failure() {
                // The group stops rather than serve what it could not read.
                trace.log(now_ticks, || format!("node {id} stops: {reason}"));
                self.stop();
                self.failed = Some(reason);
                return Ok(());
            }
            if !moved {
                break;
            }
        }
        Ok(())
    }

    /// Whether reads or writes from clients are waiting here.
    pub fn has_pending_client_work(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.clients.is_empty())
    }
}

impl Running {
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &mut self,
        id: NodeId,
        log: &SimLog,
        now_ticks: u64,
        command: Command,
        checker: &mut Checker,
        trace: &mut Trace,
        outbox: &mut Outbox,
    ) -> Result<(), Violation> {
        match command {
            Command::Send { to, message, .. } => {
                outbox.wire.push((id, to, Wire::Peer(message.encode())))
            }
            Command::Persist(persist) => {
                let raw = self.core.raw();
                let leader_term = (raw.role() == StateRole::Leader).then(|| raw.term());
                if let Some(snapshot) = &persist.snapshot {
                    if let Some(term) = leader_term {
                        return Err(Violation {
                            kind: crate::checker::ViolationKind::LeaderAppendOnly,
                            time_ticks: now_ticks,
                            detail: format!(
                                "node {id}, leader of term {term}, installs a snapshot"
                            ),
                        });
                    }
                    trace.log(now_ticks, || {
                        format!(
                            "node {id} installs a snapshot at index {} term {}",
                            snapshot.meta.index, snapshot.meta.term
                        )
                    });
                    checker.observe_log_reset(
                        now_ticks,
                        id,
                        snapshot.meta.index,
                        snapshot.meta.term,
                        &[],
                    )?;
                }
                checker.observe_append(now_ticks, id, &persist.entries, leader_term)?;
                log.persist(&persist)
                    .expect("the simulated disk never fails a write");
                let position = log.disk(|d| d.issued());
                self.gate.written(persist.seq, Some(position));
            }
            Command::SendAfterDurable { seq, to, message } => self.gate.hold(seq, to, message),
            Command::Apply(work) => self.apply(id, now_ticks, work, checker, trace, outbox)?,
            Command::Answer { ticket, answer } => self.answer(id, ticket, answer, outbox),
            Command::RecordCommit(hs) => {
                log.record_hard_state(hs)
                    .expect("the simulated disk never fails a write");
            }
            Command::CompactLog { through } => {
                log.compact(through)
                    .expect("the simulated disk never fails a write");
                trace.log(now_ticks, || {
                    format!("node {id} compacts its log through index {through}")
                });
            }
            Command::RecordMembers(_) | Command::LeadershipChanged(_) => {}
            Command::ServeLeaderRequest { asker, .. } => {
                self.core
                    .on_leader_served(asker, Err("no leader service in the simulation".into()));
            }
        }
        Ok(())
    }

    /// Applies committed work to the KV store through the production applier, and feeds
    /// the checkers what was applied.
    fn apply(
        &mut self,
        id: NodeId,
        now_ticks: u64,
        work: ApplyWork,
        checker: &mut Checker,
        trace: &mut Trace,
        outbox: &mut Outbox,
    ) -> Result<(), Violation> {
        let node_term = self.core.raw().term();
        if let Some(snapshot) = &work.restore {
            checker.observe_restore(
                now_ticks,
                id,
                node_term,
                snapshot.meta.index,
                snapshot.meta.term,
            )?;
        }
        for entry in &work.entries {
            checker.observe_apply(now_ticks, id, node_term, entry)?;
            if entry.kind == EntryKind::ConfChange {
                trace.log(now_ticks, || {
                    format!(
                        "node {id} applies configuration change at index {}: {:?}",
                        entry.index,
                        ConfChange::decode(&entry.data).map(|cc| cc.changes)
                    )
                });
            }
        }
        let last_conf_change = work
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .map(|e| e.index)
            .next_back();
        let terms: BTreeMap<Index, Term> = work.entries.iter().map(|e| (e.index, e.term)).collect();
        let conf_state = work.conf_state.clone();
        let (applied_at, outputs) = (&mut self.applied_at, &self.outputs);
        let batch = ApplyBatch::from_work(work, |index, ticket| {
            applied_at.insert(ticket, (index, terms[&index]));
            Some(SimProposer {
                ticket,
                outputs: Arc::clone(outputs),
            })
        });
        let finished = self
            .applier
            .apply_batch(&mut self.machine, batch)
            .unwrap_or_else(|e| panic!("node {id} stopped applying: {e}"));
        self.batches_done += 1;
        if let Some(index) = last_conf_change {
            outbox.conf_applied.push((index, conf_state));
        }
        if let Some(SnapshotOutcome::Written { meta, .. }) = finished {
            trace.log(now_ticks, || {
                format!("node {id} snapshots its state at index {}", meta.index)
            });
            self.core.on_snapshot_taken(meta);
        }
        self.core
            .on_applied(self.batches_done, self.applier.applied_index());
        self.answer_writes(id, node_term, outbox);
        Ok(())
    }

    fn answer_writes(&mut self, id: NodeId, node_term: Term, outbox: &mut Outbox) {
        let outputs = std::mem::take(&mut *lock(&self.outputs));
        for (ticket, output) in outputs {
            let Some(client) = self.clients.remove(&ticket) else {
                continue;
            };
            let Some((index, term)) = self.applied_at.remove(&ticket) else {
                continue;
            };
            let result = match output {
                Ok(ApplyResponse::Put(_)) => WriteResult::Done,
                Ok(ApplyResponse::Txn(txn)) => WriteResult::Cas(txn.succeeded),
                other => panic!("node {id}: a client write applied as {other:?}"),
            };
            outbox.acked.push((id, node_term, index, term));
            let reply = Reply::Written {
                result,
                index,
                term,
            };
            respond(id, client, reply, outbox);
        }
    }

    fn answer(&mut self, id: NodeId, ticket: Ticket, answer: Answer, outbox: &mut Outbox) {
        let Some(client) = self.clients.remove(&ticket) else {
            return;
        };
        let leader = Some(self.core.raw().leader_id()).filter(|&l| l != 0);
        let reply = match answer {
            Answer::Read(Ok(_)) => {
                let ClientOp::Get { key } = &client.request.op else {
                    panic!("node {id}: a read index answered a write");
                };
                Reply::Value(read_value(&self.kv, key))
            }
            Answer::Read(Err(_)) => Reply::NotLeader { leader },
            // Never appended, or appended and overwritten: never applied, the client may
            // try again.
            Answer::Failed(
                ProposeError::NotLeader { .. }
                | ProposeError::NoLeader
                | ProposeError::Dropped
                | ProposeError::TooManyPending { .. }
                | ProposeError::Rejected(_),
            ) => Reply::NotLeader { leader },
            Answer::Failed(_) => Reply::Unknown,
            Answer::Asked(_) => return,
        };
        respond(id, client, reply, outbox);
    }

    /// Completes the fsync in progress when its time has come; true if it did.
    fn complete_fsync(&mut self, log: &SimLog, now_ticks: u64) -> bool {
        let Some((done_at, upto)) = self.fsync else {
            return false;
        };
        if done_at > now_ticks {
            return false;
        }
        self.fsync = None;
        log.disk(|d| d.fsync_through(upto));
        true
    }

    /// Sends what the disk's durability now allows and tells the core; true if anything
    /// moved.
    fn release_durable(&mut self, id: NodeId, log: &SimLog, outbox: &mut Outbox) -> bool {
        let released = self.gate.release(log.disk(|d| d.synced()));
        let moved = !released.messages.is_empty() || released.persisted.is_some();
        for (to, message) in released.messages {
            outbox.wire.push((id, to, Wire::Peer(message.encode())));
        }
        if let Some(seq) = released.persisted {
            self.core.on_persisted(seq);
        }
        moved
    }

    /// Starts an fsync of everything written, if anything is and none is running.
    fn start_fsync(&mut self, log: &SimLog, now_ticks: u64, tuning: NodeTuning, prng: &mut Prng) {
        if self.fsync.is_some() || !log.disk(|d| d.has_unsynced()) {
            return;
        }
        let latency = prng.range(tuning.fsync_ticks_min, tuning.fsync_ticks_max);
        let upto = log.disk(|d| d.issued());
        self.fsync = Some((now_ticks + latency, upto));
    }
}

fn respond(id: NodeId, client: ClientRequest, reply: Reply, outbox: &mut Outbox) {
    outbox.wire.push((
        id,
        client.address,
        Wire::Response(Response {
            client_id: client.request.client_id,
            request_id: client.request.request_id,
            attempt: client.request.attempt,
            reply,
        }),
    ));
}

/// The value of `key` in the local store.
fn read_value(kv: &KvState, key: &Bytes) -> Option<Bytes> {
    let request = RangeRequest {
        key: key.to_vec(),
        ..RangeRequest::default()
    };
    kv.read(|store| store.range(&request))
        .expect("a plain range read is valid")
        .kvs
        .first()
        .map(|kv| Bytes::from(kv.value.clone()))
}

/// A client's write as the KV command the etcd API would propose for it: a put, or a
/// compare-and-set as a transaction comparing the value (or that the key is absent).
fn write_command(request_id: u64, op: &ClientOp) -> Vec<u8> {
    let put = |key: &Bytes, value: &Bytes| PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..PutRequest::default()
    };
    let command = match op {
        ClientOp::Put { key, value } => KvCommand::Put(put(key, value)),
        ClientOp::Cas { key, expected, new } => {
            let compare = match expected {
                Some(value) => Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Value as i32,
                    key: key.to_vec(),
                    target_union: Some(compare::TargetUnion::Value(value.to_vec())),
                    range_end: Vec::new(),
                },
                None => Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Version as i32,
                    key: key.to_vec(),
                    target_union: Some(compare::TargetUnion::Version(0)),
                    range_end: Vec::new(),
                },
            };
            KvCommand::Txn(TxnRequest {
                compare: vec![compare],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(put(key, new))),
                }],
                failure: Vec::new(),
            })
        }
        ClientOp::Get { .. } => unreachable!("reads are not written to the log"),
    };
    kv_command::encode(request_id, command).expect("simulated writes are small")
}
