//! One simulated node hosting several Raft groups: for each, the runtime's production group
//! core (`ordo_node::core`) and applier over its view of the node's one simulated disk,
//! applying to its own production KV state machine (`ordo-kv`), with only the shell around
//! them simulated: the network, the disk's durability and the clock.
//!
//! The shell does what the tokio driver does in production — carries out each core's
//! commands in order, holds send-after-durable messages in the group's `DurabilityGate`,
//! encodes every peer message with the runtime's codec and tags it with its group — but in
//! one thread. All groups of the node write to one journal, and one fsync, completing a few
//! simulated ticks after it starts, makes the writes of every group issued before it
//! durable, as the shared log does.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
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

use crate::checker::{Checker, Checkers, Violation};
use crate::client::{ClientOp, Reply, Request, Response, WriteResult};
use crate::disk::{Damage, Disk, Write};
use crate::prng::Prng;
use crate::trace::Trace;

/// Everything that travels on the simulated network.
#[derive(Debug, Clone)]
pub enum Wire {
    /// Between peers: an encoded runtime message of one group, decoded on delivery.
    Peer {
        /// The group the message belongs to, as the transport's frame names it.
        group: GroupId,
        /// The runtime's encoding of the message.
        payload: Bytes,
    },
    /// From a client to a node.
    Request(Request),
    /// From a node to a client.
    Response(Response),
}

/// Clients' network addresses start here, above every node id.
pub const CLIENT_ADDRESS_BASE: u64 = 1_000_000;

/// Turns of the cores per node per step; a core that always has more work is a bug.
const TURNS_PER_STEP_MAX: usize = 64;

/// The group every node of a cluster hosts from the start, where membership changes happen.
pub const MAIN_GROUP: GroupId = GroupId(1);

/// A write acknowledged to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The group written.
    pub group: GroupId,
    /// The node that acknowledged it.
    pub node: NodeId,
    /// That node's term when it did.
    pub node_term: Term,
    /// The entry's index.
    pub index: Index,
    /// The entry's term.
    pub term: Term,
}

/// What a node wants the simulation to do after a step.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Messages to hand to the network: (from, to, payload).
    pub wire: Vec<(u64, u64, Wire)>,
    /// Writes acknowledged to clients.
    pub acked: Vec<Ack>,
    /// Configuration changes applied, as the group, the index of the last one applied and
    /// the configuration after it.
    pub conf_applied: Vec<(GroupId, Index, ConfState)>,
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

/// A node's one disk, shared by the logs of all the groups it hosts.
type SharedDisk = Rc<RefCell<Disk>>;

/// One group's view of the node's disk, as the runtime's log storage: `view` is what the group
/// has written (what a running node reads back), the shared disk tells what of it is durable.
#[derive(Clone)]
pub struct SimLog(Rc<RefCell<SimLogInner>>);

struct SimLogInner {
    group: GroupId,
    view: MemStorage,
    disk: SharedDisk,
    conf_now: ConfState,
    snapshot_wanted: bool,
}

impl SimLog {
    fn new(group: GroupId, disk: SharedDisk) -> SimLog {
        let view = disk
            .borrow()
            .durable(group)
            .unwrap_or_else(|| panic!("group {group} starts from a disk not hosting it"))
            .clone();
        let conf_now = view.initial_state().conf_state;
        SimLog(Rc::new(RefCell::new(SimLogInner {
            group,
            view,
            disk,
            conf_now,
            snapshot_wanted: false,
        })))
    }

    fn write(&self, write: Write) {
        let mut inner = self.0.borrow_mut();
        crate::disk::apply(&mut inner.view, write.clone());
        let group = inner.group;
        inner.disk.borrow_mut().write(group, write);
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
        if let Some(damage) = inner.disk.borrow().damage_in(inner.group, lo, end) {
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
        let inner = self.0.borrow();
        let disk = inner.disk.borrow();
        disk.durable(inner.group).map_or(0, |d| d.last_index())
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

/// One group running on a node: its core, gate, applier and state machine, over its view of
/// the node's disk.
struct Replica {
    group: GroupId,
    log: SimLog,
    core: GroupCore<SimLog>,
    gate: DurabilityGate,
    applier: Applier<KvMachine, SimLog, InlineSnapshotter>,
    machine: KvMachine,
    kv: Arc<KvState>,
    batches_done: u64,
    outputs: Outputs,
    clients: BTreeMap<Ticket, ClientRequest>,
    /// Where each proposal's entry was applied: (index, term).
    applied_at: BTreeMap<Ticket, (Index, Term)>,
    /// The newest write durable that the core has not heard of: as the driver does, the
    /// core hears of a durable write at once only if it asked to
    /// ([`GroupCore::needs_durable_turn`]), and otherwise in the turn of its next input.
    unheard: Option<u64>,
    /// An input came since the last turn.
    input: bool,
}

/// What a node holds in memory while it runs; a crash loses all of it.
#[derive(Default)]
struct Running {
    /// The groups it runs, by id.
    replicas: BTreeMap<GroupId, Replica>,
    /// The fsync of the shared journal in progress: when it completes and the last write it
    /// covers.
    fsync: Option<(u64, u64)>,
}

/// One node of the simulated cluster.
pub struct SimNode {
    id: NodeId,
    disk: SharedDisk,
    running: Option<Running>,
    tuning: NodeTuning,
    mutation: Option<RuntimeMutation>,
    clock: SimClock,
    /// Incarnation, so request ids never repeat across restarts.
    boots: u64,
    /// Why the node stopped for good: its disk is damaged, and it must be replaced.
    failed: Option<String>,
    /// Quiescences and wakes of groups no longer running here (their counters start over
    /// at boot).
    quiescence_before: (u64, u64),
    /// Groups this node removed at boot, removed while it was down.
    removed_at_boot: u64,
}

/// The peer address a simulated node would have; the network routes by id.
fn sim_addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], (id % 60_000) as u16 + 1))
}

/// The disk image of a new group's member: the first snapshot at index 1 holding the
/// initial configuration and the empty store, as `Node::start_group` bootstraps a group.
pub fn bootstrap_image(conf: &ConfState) -> MemStorage {
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
                conf_state: conf.clone(),
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

/// The Raft configuration of one group of a node: the node's, with a seed of the group's own
/// so that groups do not time out in lockstep.
fn group_config(config: &Config, group: GroupId) -> Config {
    let mut state = config.seed ^ group.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Config {
        seed: crate::prng::splitmix64(&mut state),
        ..config.clone()
    }
}

impl SimNode {
    /// A node whose disk holds `image` of the main group (a bootstrapped member, or an empty
    /// one to be added).
    pub fn new(
        id: NodeId,
        image: MemStorage,
        tuning: NodeTuning,
        mutation: Option<RuntimeMutation>,
        clock: SimClock,
    ) -> SimNode {
        SimNode {
            id,
            disk: Rc::new(RefCell::new(Disk::with_group(MAIN_GROUP, image))),
            running: None,
            tuning,
            mutation,
            clock,
            boots: 0,
            failed: None,
            quiescence_before: (0, 0),
            removed_at_boot: 0,
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

    /// How many groups this node removed at boot because they were removed while it was down.
    pub fn removed_at_boot(&self) -> u64 {
        self.removed_at_boot
    }

    /// Whether the node's disk holds `group` (running or not).
    pub fn hosts(&self, group: GroupId) -> bool {
        self.disk.borrow().hosts(group)
    }

    /// How many groups the node's disk holds.
    pub fn groups_hosted(&self) -> usize {
        self.disk.borrow().groups().len()
    }

    /// Damages the durable records of `group` on this node's disk (a bit flip, a cut), from
    /// now on.
    pub fn damage_disk(&mut self, group: GroupId, damage: Damage) {
        self.disk.borrow_mut().damage(group, damage);
    }

    /// `group`'s durable log's first index and durable commit index, if hosted.
    pub fn durable_range(&self, group: GroupId) -> Option<(Index, Index)> {
        let disk = self.disk.borrow();
        let durable = disk.durable(group)?;
        Some((durable.first_index(), durable.hard_state().commit))
    }

    /// The running Raft core of `group`, if up and hosting it.
    pub fn raw(&self, group: GroupId) -> Option<&RawNode<SimLog>> {
        self.replica(group).map(|r| r.core.raw())
    }

    fn replica(&self, group: GroupId) -> Option<&Replica> {
        self.running.as_ref()?.replicas.get(&group)
    }

    fn replica_mut(&mut self, group: GroupId) -> Option<&mut Replica> {
        self.running.as_mut()?.replicas.get_mut(&group)
    }

    /// Whether the node durably holds the entry (`index`, `term`) of `group`, in its log or
    /// covered by its snapshot.
    pub fn durably_holds(&self, group: GroupId, index: Index, term: Term) -> bool {
        let disk = self.disk.borrow();
        let Some(durable) = disk.durable(group) else {
            return false;
        };
        if index < durable.first_index() {
            // Compacted: covered by the durable snapshot, whose index is at least this one.
            return true;
        }
        durable.term(index) == Ok(term)
    }

    /// Starts (or restarts) the node from what its disk durably holds: every group on it,
    /// except those in `removed` — removed while the node was down, so it removes them now,
    /// as the runtime does when it learns of a removal at boot.
    pub fn boot(
        &mut self,
        now_ticks: u64,
        config: Config,
        removed: &BTreeSet<GroupId>,
        checkers: &mut Checkers,
        trace: &mut Trace,
    ) -> Result<(), Violation> {
        assert!(self.running.is_none(), "node {} booted twice", self.id);
        if self.failed.is_some() {
            return Ok(());
        }
        // Recovery reads every record of the journal: damage in any group's log refuses the
        // start, as `ordo server` exits naming the file and offset.
        if let Some((group, damage)) = self.disk.borrow().damage_anywhere() {
            let reason = format!("{} at entry {} of group {group}", damage.what, damage.from);
            trace.log(now_ticks, || {
                format!("node {} refuses to start: {reason}", self.id)
            });
            self.failed = Some(reason);
            return Ok(());
        }
        let hosted = self.disk.borrow().groups();
        for group in hosted {
            if removed.contains(&group) {
                self.disk.borrow_mut().remove_group(group);
                self.removed_at_boot += 1;
                trace.log(now_ticks, || {
                    format!(
                        "group {group}: node {} removes it at boot, removed while it was down",
                        self.id
                    )
                });
            }
        }
        self.boots += 1;
        self.running = Some(Running::default());
        let groups = self.disk.borrow().groups();
        for group in groups {
            self.start_group(now_ticks, group, &config, checkers.group(group), trace)
                .map_err(|v| v.in_group(group))?;
        }
        Ok(())
    }

    /// Bootstraps `group` on this node's disk from `image` and, if the node is up, starts it.
    /// A node that is down starts it at its next boot, from the same image.
    pub fn create_group(
        &mut self,
        now_ticks: u64,
        group: GroupId,
        image: MemStorage,
        config: &Config,
        checkers: &mut Checkers,
        trace: &mut Trace,
    ) -> Result<(), Violation> {
        if self.failed.is_some() {
            return Ok(());
        }
        self.disk.borrow_mut().create_group(group, image);
        if self.running.is_none() {
            return Ok(());
        }
        self.start_group(now_ticks, group, config, checkers.group(group), trace)
            .map_err(|v| v.in_group(group))
    }

    /// Removes `group` from this node, running or durable. A node that is down keeps it on
    /// its disk until its next boot (see [`SimNode::boot`]).
    pub fn remove_group(&mut self, group: GroupId) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if let Some(replica) = running.replicas.remove(&group) {
            let m = replica.core.metrics();
            self.quiescence_before.0 += m.quiesces;
            self.quiescence_before.1 += m.wakes;
        }
        self.disk.borrow_mut().remove_group(group);
    }

    /// Starts one group of a running node from its durable image.
    fn start_group(
        &mut self,
        now_ticks: u64,
        group: GroupId,
        config: &Config,
        checker: &mut Checker,
        trace: &mut Trace,
    ) -> Result<(), Violation> {
        let log = SimLog::new(group, Rc::clone(&self.disk));
        let image = log.0.borrow().view.clone();
        let snapshot = image.snapshot().unwrap_or_default();
        let kv = Arc::new(KvState::new(KvStore::new()));
        let leases = Arc::new(LeaseClock::new(self.clock.clone()));
        let mut machine = KvMachine::new(Arc::clone(&kv), leases);
        if snapshot.meta.index > 0 {
            machine
                .restore(snapshot.meta.index, &snapshot.data)
                .unwrap_or_else(|e| {
                    panic!(
                        "node {} cannot read its own snapshot of group {group}: {e}",
                        self.id
                    )
                });
        }
        let applied = snapshot.meta.index;
        self.observe_boot(now_ticks, &image, checker)?;
        let raw = RawNode::new(
            Config {
                applied_index: applied,
                ..group_config(config, group)
            },
            log.clone(),
        )
        .unwrap_or_else(|error| {
            panic!(
                "node {} cannot start group {group} from its disk: {error}",
                self.id
            )
        });
        let core = GroupCore::new(
            self.core_config(group),
            raw,
            applied,
            BTreeMap::new(),
            Arc::default(),
        );
        let identity = ApplierIdentity {
            group_id: group,
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
            log.clone(),
            Arc::default(),
            thresholds,
            InlineSnapshotter::default(),
        );
        trace.log(now_ticks, || {
            format!(
                "group {group}: node {} starts: term {}, log {}..={}, snapshot at {applied}, \
                 commit {}",
                self.id,
                core.raw().term(),
                image.first_index(),
                image.last_index(),
                image.hard_state().commit
            )
        });
        let replica = Replica {
            group,
            log,
            core,
            gate: self.gate(),
            applier,
            machine,
            kv,
            batches_done: 0,
            outputs: Arc::default(),
            clients: BTreeMap::new(),
            applied_at: BTreeMap::new(),
            unheard: None,
            input: false,
        };
        let running = self
            .running
            .as_mut()
            .expect("groups start on a running node");
        let previous = running.replicas.insert(group, replica);
        assert!(
            previous.is_none(),
            "group {group} started twice on node {}",
            self.id
        );
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

    fn core_config(&self, group: GroupId) -> CoreConfig {
        CoreConfig {
            quiesce: true,
            group_id: group,
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

    /// Loses power: everything in memory is gone, of every group, and the shared disk keeps
    /// what it keeps of all of them.
    pub fn crash(&mut self, prng: &mut Prng) {
        self.stop();
        self.disk.borrow_mut().crash(prng);
    }

    fn stop(&mut self) {
        self.quiescence_before = self.quiescence();
        self.running = None;
    }

    /// Times this node's groups quiesced and woke, over all its runs.
    pub fn quiescence(&self) -> (u64, u64) {
        let (mut quiesces, mut wakes) = self.quiescence_before;
        for replica in self.running.iter().flat_map(|r| r.replicas.values()) {
            let m = replica.core.metrics();
            quiesces += m.quiesces;
            wakes += m.wakes;
        }
        (quiesces, wakes)
    }

    /// Advances every group's logical clock, as the driver's interval does: not while the
    /// group is quiesced.
    pub fn tick(&mut self) {
        for replica in self
            .running
            .iter_mut()
            .flat_map(|r| r.replicas.values_mut())
        {
            if !replica.core.is_quiesced() {
                replica.input().on_tick();
            }
        }
    }

    /// The transport lost its connection to `peer` (it crashed or stopped): every group
    /// hears of it.
    pub fn on_unreachable(&mut self, peer: NodeId) {
        for replica in self
            .running
            .iter_mut()
            .flat_map(|r| r.replicas.values_mut())
        {
            replica.input().on_unreachable(peer);
        }
    }

    /// Delivers a peer's encoded message of `group`. Returns false when it is dropped: the
    /// node is down, or hosts no such group (removed, or not created here yet), which the
    /// real transport drops too.
    pub fn on_peer(&mut self, from: NodeId, group: GroupId, payload: Bytes) -> bool {
        let id = self.id;
        let Some(replica) = self.replica_mut(group) else {
            return false;
        };
        let message = WireMessage::decode(payload).unwrap_or_else(|e| {
            panic!("node {id} got an undecodable peer message for group {group}: {e}")
        });
        replica.input().on_message(from, message);
        true
    }

    /// Proposes a membership change of `group` the nemesis chose; false when the node does
    /// not run the group.
    pub fn propose_conf_change(&mut self, group: GroupId, cc: &ConfChange) -> bool {
        let Some(replica) = self.replica_mut(group) else {
            return false;
        };
        replica.input().propose_conf_change(cc.clone(), None);
        true
    }

    /// Asks this node, as leader of `group`, to hand leadership to `target`.
    pub fn transfer_leader(&mut self, group: GroupId, target: NodeId) -> Result<(), ProposeError> {
        match self.replica_mut(group) {
            Some(replica) => replica.input().transfer_leader(target),
            None => Err(ProposeError::ShuttingDown),
        }
    }

    /// Handles a client's request to the group it names: a read through ReadIndex, a write
    /// through the log. A follower forwards writes and confirms reads with the leader itself.
    /// A request for a group the node does not run is dropped, as for a node that is down.
    pub fn on_request(&mut self, client_address: u64, request: Request) {
        let Some(replica) = self.replica_mut(request.group) else {
            return;
        };
        let ticket = match &request.op {
            ClientOp::Get { .. } => replica.input().read(),
            op => replica
                .input()
                .propose(&write_command(request.request_id, op)),
        };
        replica.clients.insert(
            ticket,
            ClientRequest {
                address: client_address,
                request,
            },
        );
    }

    /// Runs the cores' turns: each group's commands, then the shared journal's fsync
    /// completions, which release every group's gate, applying and answers.
    pub fn drive(
        &mut self,
        now_ticks: u64,
        prng: &mut Prng,
        checkers: &mut Checkers,
        trace: &mut Trace,
        outbox: &mut Outbox,
    ) -> Result<(), Violation> {
        let id = self.id;
        let tuning = self.tuning;
        let disk = Rc::clone(&self.disk);
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        for _ in 0..TURNS_PER_STEP_MAX {
            let mut moved = false;
            for (&group, replica) in &mut running.replicas {
                moved |= replica
                    .turn(id, now_ticks, checkers.group(group), trace, outbox)
                    .map_err(|v| v.in_group(group))?;
            }
            moved |= running.complete_fsync(&disk, now_ticks);
            let synced = disk.borrow().synced();
            for replica in running.replicas.values_mut() {
                moved |= replica.release_durable(id, synced, outbox);
            }
            running.start_fsync(&disk, now_ticks, tuning, prng);
            if let Some(reason) = running.storage_failure() {
                // The node stops rather than serve what it could not read.
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
        self.running
            .iter()
            .flat_map(|r| r.replicas.values())
            .any(|replica| !replica.clients.is_empty())
    }
}

impl Running {
    /// Completes the fsync in progress when its time has come; true if it did.
    fn complete_fsync(&mut self, disk: &SharedDisk, now_ticks: u64) -> bool {
        let Some((done_at, upto)) = self.fsync else {
            return false;
        };
        if done_at > now_ticks {
            return false;
        }
        self.fsync = None;
        disk.borrow_mut().fsync_through(upto);
        true
    }

    /// Starts an fsync of everything written by any group, if anything is and none is
    /// running.
    fn start_fsync(
        &mut self,
        disk: &SharedDisk,
        now_ticks: u64,
        tuning: NodeTuning,
        prng: &mut Prng,
    ) {
        if self.fsync.is_some() || !disk.borrow().has_unsynced() {
            return;
        }
        let latency = prng.range(tuning.fsync_ticks_min, tuning.fsync_ticks_max);
        let upto = disk.borrow().issued();
        self.fsync = Some((now_ticks + latency, upto));
    }

    /// The first group that could not read its log, with why.
    fn storage_failure(&self) -> Option<String> {
        self.replicas.iter().find_map(|(group, replica)| {
            replica
                .core
                .storage_failure()
                .map(|reason| format!("group {group}: {reason}"))
        })
    }
}

impl Replica {
    /// One turn of the core: carries out every command it has; true if there were any.
    fn turn(
        &mut self,
        id: NodeId,
        now_ticks: u64,
        checker: &mut Checker,
        trace: &mut Trace,
        outbox: &mut Outbox,
    ) -> Result<bool, Violation> {
        self.core.end_turn();
        let mut moved = false;
        if std::mem::take(&mut self.input) {
            if let Some(seq) = self.unheard.take() {
                self.core.on_persisted(seq);
            }
        }
        loop {
            let commands = self.core.take_commands();
            if commands.is_empty() {
                return Ok(moved);
            }
            moved = true;
            for command in commands {
                self.execute(id, now_ticks, command, checker, trace, outbox)?;
            }
        }
    }

    fn execute(
        &mut self,
        id: NodeId,
        now_ticks: u64,
        command: Command,
        checker: &mut Checker,
        trace: &mut Trace,
        outbox: &mut Outbox,
    ) -> Result<(), Violation> {
        match command {
            Command::Send { to, message, .. } => outbox.wire.push((
                id,
                to,
                Wire::Peer {
                    group: self.group,
                    payload: message.encode(),
                },
            )),
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
                            "group {}: node {id} installs a snapshot at index {} term {}",
                            self.group, snapshot.meta.index, snapshot.meta.term
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
                self.log
                    .persist(&persist)
                    .expect("the simulated disk never fails a write");
                // The write's position is its number in the node's one journal: an fsync
                // of any group's writes covers it once it started after it.
                let position = self.log.0.borrow().disk.borrow().issued();
                self.gate.written(persist.seq, Some(position));
            }
            Command::SendAfterDurable { seq, to, message } => self.gate.hold(seq, to, message),
            Command::Apply(work) => self.apply(id, now_ticks, work, checker, trace, outbox)?,
            Command::Answer { ticket, answer } => self.answer(id, ticket, answer, outbox),
            Command::RecordCommit(hs) => {
                self.log
                    .record_hard_state(hs)
                    .expect("the simulated disk never fails a write");
            }
            Command::CompactLog { through } => {
                self.log
                    .compact(through)
                    .expect("the simulated disk never fails a write");
                trace.log(now_ticks, || {
                    format!(
                        "group {}: node {id} compacts its log through index {through}",
                        self.group
                    )
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
                        "group {}: node {id} applies configuration change at index {}: {:?}",
                        self.group,
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
            .unwrap_or_else(|e| panic!("node {id} stopped applying group {}: {e}", self.group));
        self.batches_done += 1;
        if let Some(index) = last_conf_change {
            outbox.conf_applied.push((self.group, index, conf_state));
        }
        if let Some(SnapshotOutcome::Written { meta, .. }) = finished {
            trace.log(now_ticks, || {
                format!(
                    "group {}: node {id} snapshots its state at index {}",
                    self.group, meta.index
                )
            });
            self.input().on_snapshot_taken(meta);
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
            outbox.acked.push(Ack {
                group: self.group,
                node: id,
                node_term,
                index,
                term,
            });
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

    /// Sends what the journal's durability (through write `synced`) now allows and tells
    /// the core; true if anything moved.
    fn release_durable(&mut self, id: NodeId, synced: u64, outbox: &mut Outbox) -> bool {
        let released = self.gate.release(synced);
        let mut moved = !released.messages.is_empty();
        for (to, message) in released.messages {
            outbox.wire.push((
                id,
                to,
                Wire::Peer {
                    group: self.group,
                    payload: message.encode(),
                },
            ));
        }
        if let Some(seq) = released.persisted {
            if self.core.needs_durable_turn() {
                self.unheard = None;
                self.core.on_persisted(seq);
                moved = true;
            } else {
                self.unheard = Some(seq);
            }
        }
        moved
    }

    /// The core, for an input: the turn it brings tells the core of a durable write it
    /// has not heard of.
    fn input(&mut self) -> &mut GroupCore<SimLog> {
        self.input = true;
        &mut self.core
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
