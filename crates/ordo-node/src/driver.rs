//! The driver task of one Raft group: the thin tokio shell that feeds the
//! [`GroupCore`](crate::core::GroupCore) its events and carries out its commands.
//!
//! Every decision, and the order the Raft core's persistence contract requires, is the
//! core's (see `core/mod.rs`). The driver only does: it sends over the peer transport,
//! writes through the WAL, leaves messages that promise a write in the [`DurableRelay`]
//! (which sends them once the WAL's durable index covers the write, from the WAL's fsync
//! thread or the driver's next turn), hands committed work to the apply workers, answers
//! callers, and runs the face's leader service.
//!
//! Appends run in place on the driver's worker. A snapshot install and a new term or vote
//! (a small file fsynced and renamed into place) block for milliseconds: they run with
//! `block_in_place`, which hands this worker's other tasks to another thread first. A plain
//! append does not get that hand-off, which costs more than the append: under `Always` it
//! is queued in memory while an fsync round runs (the fsync thread syncs it), and
//! otherwise written to the page cache. Its rare slow cases (a roll to a new segment fsyncs
//! the old one; a follower cuts a conflicting suffix) hold up the node's other tasks for as
//! long.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_raft::{ConfState, Index, MessageBody, NodeId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::{ApplyBatch, Proposer};
use crate::apply_pool::{ApplySender, Sent};
use crate::codec::WireMessage;
use crate::config::FsyncPolicy;
use crate::core::{Answer, ApplyWork, Asker, Command, GroupCore, Leadership, Ticket, Unsent};
use crate::group::{lock, AskError, GroupId, ProposeError, ReadError, Request};
use crate::members::MemberFile;
use crate::metrics::GroupMetrics;
use crate::peers::PeerNeeds;
use crate::relay::{send_to_peer, DurableRelay};
use crate::storage::{LogStore, StorageFailure, WalStorage};
use crate::transport::Transport;

/// The face's service for questions sent to the group's leader
/// ([`Group::ask_leader`](crate::Group::ask_leader)): it runs on the leader, for callers
/// there and on followers.
pub trait LeaderService: Send + Sync + 'static {
    /// Answers a question in the face's own encoding, or refuses it saying why.
    fn serve(&self, request: Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>>;
}

/// Inputs to the driver that do not come from handles.
#[derive(Debug)]
pub(crate) enum Event {
    /// A decoded message from a peer. Boxed, as is the snapshot's metadata, to keep the
    /// event small: every group's queue allocates a block of events up front, and a node
    /// hosts thousands of groups.
    Peer(NodeId, Box<WireMessage>),
    /// The transport lost its connection to a peer.
    Unreachable(NodeId),
    /// The snapshot thread wrote a snapshot.
    SnapshotTaken(Box<ordo_raft::SnapshotMeta>),
    /// The leader service answered a question.
    LeaderServed {
        asker: Asker,
        result: Result<Bytes, String>,
    },
}

/// Why a group's driver stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// Persisting or reading the group's state failed.
    #[error("group {group}: storage failed: {source}")]
    Storage {
        /// The group.
        group: GroupId,
        /// The failure.
        source: StorageFailure,
    },
    /// Reading the group's log or snapshot failed (the reason names the file and byte
    /// offset where the storage knows them); the group stopped rather than go on without it.
    #[error("group {group}: log read failed: {reason}")]
    LogRead {
        /// The group.
        group: GroupId,
        /// The failure.
        reason: String,
    },
    /// Applying stopped (a snapshot the state machine refused, a failed snapshot write, a
    /// panic in the state machine).
    #[error("group {group}: applying stopped")]
    ApplyStopped {
        /// The group.
        group: GroupId,
    },
}

/// A caller waiting for a proposal's or membership change's outcome.
pub(crate) enum Reply<O> {
    Output(oneshot::Sender<Result<O, ProposeError>>),
    Membership(oneshot::Sender<Result<ConfState, ProposeError>>),
}

impl<O> Reply<O> {
    fn fail(self, error: ProposeError) {
        match self {
            Reply::Output(tx) => drop(tx.send(Err(error))),
            Reply::Membership(tx) => drop(tx.send(Err(error))),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Reply::Output(tx) => tx.is_closed(),
            Reply::Membership(tx) => tx.is_closed(),
        }
    }
}

impl<O: Send + 'static> Proposer<O> for Reply<O> {
    fn applied(self, output: O) {
        match self {
            Reply::Output(tx) => drop(tx.send(Ok(output))),
            Reply::Membership(_) => debug_assert!(false, "a membership change applied as data"),
        }
    }

    fn membership_applied(self, conf_state: &ConfState) {
        match self {
            Reply::Membership(tx) => drop(tx.send(Ok(conf_state.clone()))),
            Reply::Output(_) => debug_assert!(false, "data applied as a membership change"),
        }
    }
}

/// The callers waiting on this node, by ticket.
struct Callers<O> {
    proposals: HashMap<Ticket, Reply<O>>,
    reads: HashMap<Ticket, oneshot::Sender<Result<Index, ReadError>>>,
    asks: HashMap<Ticket, oneshot::Sender<Result<Bytes, AskError>>>,
}

impl<O> Default for Callers<O> {
    fn default() -> Self {
        Callers {
            proposals: HashMap::new(),
            reads: HashMap::new(),
            asks: HashMap::new(),
        }
    }
}

impl<O> Callers<O> {
    fn answer(&mut self, ticket: Ticket, answer: Answer) {
        match answer {
            Answer::Failed(error) => {
                if let Some(reply) = self.proposals.remove(&ticket) {
                    reply.fail(error);
                }
            }
            Answer::Read(result) => {
                if let Some(reply) = self.reads.remove(&ticket) {
                    let _ = reply.send(result);
                }
            }
            Answer::Asked(result) => {
                if let Some(reply) = self.asks.remove(&ticket) {
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Removes and returns the tickets of callers who gave up.
    fn take_abandoned(&mut self) -> Vec<Ticket> {
        let mut gone: Vec<Ticket> = Vec::new();
        self.proposals
            .retain(|t, r| keep(r.is_closed(), *t, &mut gone));
        self.reads.retain(|t, r| keep(r.is_closed(), *t, &mut gone));
        self.asks.retain(|t, r| keep(r.is_closed(), *t, &mut gone));
        gone
    }
}

fn keep(closed: bool, ticket: Ticket, gone: &mut Vec<Ticket>) -> bool {
    if closed {
        gone.push(ticket);
    }
    !closed
}

/// The group's applying progress, shared by the apply workers with the driver.
#[derive(Debug)]
pub(crate) struct ApplyProgress {
    /// Batches finished. (The applied index is the group's `applied_index` metric.)
    pub(crate) batches_done: AtomicU64,
    /// Applying stopped for good.
    pub(crate) stopped: AtomicBool,
    /// Rung after every batch.
    pub(crate) doorbell: Arc<Doorbell>,
}

impl ApplyProgress {
    pub(crate) fn new(doorbell: Arc<Doorbell>) -> ApplyProgress {
        ApplyProgress {
            batches_done: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            doorbell,
        }
    }
}

/// Wakes a group's driver for what it reads from shared state once awake: a write made
/// durable that the core asked to hear of at once (the [`DurableRelay`] rings it from the
/// WAL's fsync thread), a batch applied by a worker (the progress is in atomics) and a stop.
///
/// One flag and one waker, where a `watch` per source cost a registration with each of them
/// on every wait and a broadcast on every fsync round, next to a turn of a group's driver
/// of a few microseconds.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    rung: AtomicBool,
    stop: AtomicBool,
    waker: atomic_waker::AtomicWaker,
}

impl Doorbell {
    /// Wakes the driver, which then looks at everything it is woken for.
    pub(crate) fn ring(&self) {
        self.rung.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Tells the driver to stop (on removal, or when the node shuts down).
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.ring();
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Ready once rung since the last time it was; the ring is consumed.
    fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A ring between the check and the registration woke no one: look again.
        if self.rung.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// Where the driver's inputs come from.
pub(crate) struct Inputs<O> {
    pub(crate) requests: mpsc::Receiver<Request<O>>,
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) events_tx: mpsc::Sender<Event>,
    /// Rung for a durable write, a batch applied and a stop.
    pub(crate) doorbell: Arc<Doorbell>,
}

/// What woke the driver.
enum Wake<O> {
    Stop,
    Tick,
    Event(Event),
    Request(Request<O>),
    /// The doorbell: something to read from shared state.
    Rung,
}

/// What the driver does things with.
pub(crate) struct Outputs<O> {
    pub(crate) transport: Arc<Transport>,
    /// Which of the node's groups need each peer.
    pub(crate) peers: Arc<PeerNeeds>,
    pub(crate) storage: WalStorage,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) apply_tx: ApplySender<Reply<O>>,
    pub(crate) apply_progress: Arc<ApplyProgress>,
    pub(crate) members: MemberFile,
    pub(crate) leadership: watch::Sender<Leadership>,
    pub(crate) leader_service: Option<Arc<dyn LeaderService>>,
    pub(crate) metrics: Arc<GroupMetrics>,
    pub(crate) failure: Arc<Mutex<Option<String>>>,
}

/// Inputs handled per wake-up before the driver ends the core's turn, so that bursts of
/// proposals and messages are batched into one `Ready` (and one fsync).
const INPUTS_PER_TURN_MAX: usize = 256;

/// Ticks between sweeps for callers who gave up (timed out), so the waiting tables hold
/// only live requests without scanning them on every tick.
const PURGE_INTERVAL_TICKS: u64 = 64;

/// The driver's clock: an interval while the group ticks, nothing at all while it is
/// quiesced, so an idle group's task is never woken (no timer stays registered).
struct Ticker {
    period: Duration,
    interval: Option<tokio::time::Interval>,
}

impl Ticker {
    fn new(period: Duration) -> Ticker {
        let mut ticker = Ticker {
            period,
            interval: None,
        };
        ticker.arm(true);
        ticker
    }

    /// Keeps ticking (`true`; a stopped ticker starts a period from now) or stops.
    fn arm(&mut self, ticking: bool) {
        if !ticking {
            self.interval = None;
            return;
        }
        if self.interval.is_none() {
            let start = tokio::time::Instant::now() + self.period;
            let mut interval = tokio::time::interval_at(start, self.period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            self.interval = Some(interval);
        }
    }

    /// Ready at the next tick; never, while stopped.
    fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.interval {
            Some(interval) => interval.poll_tick(cx).map(drop),
            None => Poll::Pending,
        }
    }
}

pub(crate) struct Driver<O> {
    pub(crate) group_id: GroupId,
    pub(crate) core: GroupCore<WalStorage>,
    pub(crate) inputs: Inputs<O>,
    pub(crate) outputs: Outputs<O>,
    pub(crate) tick_interval_ms: u64,
    callers: Callers<O>,
    /// Messages waiting for durable writes, shared with the WAL's fsync thread.
    relay: Arc<DurableRelay>,
    heartbeat_sent: HashMap<NodeId, Instant>,
    ticks: u64,
    commands: Vec<Command>,
    /// A batch was applied on this task during the turn: the core hears of it before the
    /// turn ends.
    applied_here: bool,
}

impl<O: Send + 'static> Driver<O> {
    pub(crate) fn new(
        group_id: GroupId,
        core: GroupCore<WalStorage>,
        inputs: Inputs<O>,
        outputs: Outputs<O>,
        relay: Arc<DurableRelay>,
        tick_interval_ms: u64,
    ) -> Driver<O> {
        Driver {
            group_id,
            core,
            inputs,
            outputs,
            tick_interval_ms,
            callers: Callers::default(),
            relay,
            heartbeat_sent: HashMap::new(),
            ticks: 0,
            commands: Vec::new(),
            applied_here: false,
        }
    }

    pub(crate) async fn run(mut self) -> Result<(), GroupError> {
        let mut ticker = Ticker::new(Duration::from_millis(self.tick_interval_ms));
        let result = loop {
            if let Err(error) = self.turn() {
                break Err(error);
            }
            if self.relay.wait_for_turn(self.core.needs_durable_turn()) {
                continue;
            }
            ticker.arm(!self.core.is_quiesced());
            let wake = self.next_wake(&mut ticker).await;
            self.outputs.metrics.turns.fetch_add(1, Ordering::Relaxed);
            match wake {
                Wake::Stop => break Ok(()),
                Wake::Tick => self.on_tick(),
                Wake::Event(event) => {
                    self.on_event(event);
                    for _ in 0..INPUTS_PER_TURN_MAX {
                        match self.inputs.events.try_recv() {
                            Ok(event) => self.on_event(event),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Request(request) => {
                    self.on_request(request);
                    for _ in 0..INPUTS_PER_TURN_MAX {
                        match self.inputs.requests.try_recv() {
                            Ok(request) => self.on_request(request),
                            Err(_) => break,
                        }
                    }
                }
                // The turn reads the durable index and the apply progress.
                Wake::Rung => {}
            }
        };
        self.stop(result)
    }

    /// Waits for the next input, in order of precedence: a stop, a tick, a peer's or the
    /// runtime's event, a caller's request, the doorbell. A queue whose senders are all gone
    /// (a group being removed) is no input.
    async fn next_wake(&mut self, ticker: &mut Ticker) -> Wake<O> {
        let inputs = &mut self.inputs;
        std::future::poll_fn(|cx| {
            if inputs.doorbell.stopping() {
                return Poll::Ready(Wake::Stop);
            }
            if ticker.poll_tick(cx).is_ready() {
                return Poll::Ready(Wake::Tick);
            }
            if let Poll::Ready(Some(event)) = inputs.events.poll_recv(cx) {
                return Poll::Ready(Wake::Event(event));
            }
            if let Poll::Ready(Some(request)) = inputs.requests.poll_recv(cx) {
                return Poll::Ready(Wake::Request(request));
            }
            inputs.doorbell.poll_rung(cx).map(|()| {
                if inputs.doorbell.stopping() {
                    Wake::Stop
                } else {
                    Wake::Rung
                }
            })
        })
        .await
    }

    /// Ends the core's turn and carries out everything it decided, until it is quiet.
    fn turn(&mut self) -> Result<(), GroupError> {
        loop {
            self.feed_apply_progress()?;
            self.core.end_turn();
            loop {
                self.core.drain_commands_into(&mut self.commands);
                if self.commands.is_empty() {
                    let released = self.release_durable();
                    if !released {
                        break;
                    }
                    continue;
                }
                let mut commands = std::mem::take(&mut self.commands);
                for command in commands.drain(..) {
                    self.execute(command)?;
                }
                self.commands = commands;
            }
            if let Some(reason) = self.core.storage_failure() {
                return Err(GroupError::LogRead {
                    group: self.group_id,
                    reason,
                });
            }
            if !std::mem::take(&mut self.applied_here) {
                return Ok(());
            }
        }
    }

    fn feed_apply_progress(&mut self) -> Result<(), GroupError> {
        let progress = &self.outputs.apply_progress;
        if progress.stopped.load(Ordering::Acquire) {
            return Err(GroupError::ApplyStopped {
                group: self.group_id,
            });
        }
        let batches = progress.batches_done.load(Ordering::Acquire);
        let applied = self.outputs.metrics.applied_index.load(Ordering::Acquire);
        self.core.on_applied(batches, applied);
        Ok(())
    }

    /// Sends what the WAL's durable index now allows and tells the core; true if the core
    /// heard of a new durable write.
    fn release_durable(&mut self) -> bool {
        let Some(seq) = self.relay.release() else {
            return false;
        };
        self.core.on_persisted(seq);
        true
    }

    fn execute(&mut self, command: Command) -> Result<(), GroupError> {
        match command {
            Command::Send {
                to,
                message,
                if_unsent,
            } => self.send(to, message, if_unsent),
            Command::Persist(persist) => self.persist(&persist)?,
            Command::SendAfterDurable { seq, to, message } => self.relay.hold(seq, to, message),
            Command::Apply(work) => self.apply(work),
            Command::Answer { ticket, answer } => self.callers.answer(ticket, answer),
            Command::RecordCommit(hs) => {
                let storage = &self.outputs.storage;
                if let Err(error) = tokio::task::block_in_place(|| storage.record_hard_state(hs)) {
                    tracing::warn!(group = %self.group_id, %error, "persisting the commit index failed");
                }
            }
            Command::CompactLog { through } => {
                let storage = &self.outputs.storage;
                match tokio::task::block_in_place(|| storage.compact(through)) {
                    Ok(()) => tracing::debug!(group = %self.group_id, through, "log compacted"),
                    Err(error) => {
                        tracing::error!(group = %self.group_id, through, %error, "log compaction failed")
                    }
                }
            }
            Command::RecordMembers(changes) => self.record_members(changes),
            Command::LeadershipChanged(leadership) => {
                self.outputs.leadership.send_replace(leadership);
            }
            Command::ServeLeaderRequest { asker, data } => self.serve(asker, data),
        }
        Ok(())
    }

    fn send(&mut self, to: NodeId, message: WireMessage, if_unsent: Option<Unsent>) {
        if let WireMessage::Raft(m) = &message {
            if matches!(m.body, MessageBody::Heartbeat { .. }) {
                self.heartbeat_sent.entry(to).or_insert_with(Instant::now);
            }
        }
        if !send_to_peer(&self.outputs.transport, self.group_id, to, message) {
            if let Some(unsent) = if_unsent {
                self.core.on_unsent(unsent);
            }
        }
    }

    fn persist(&mut self, persist: &crate::core::Persist) -> Result<(), GroupError> {
        let storage = &self.outputs.storage;
        let slow = persist.snapshot.is_some() || persist.hard_state.is_some();
        let written = if slow {
            tokio::task::block_in_place(|| storage.persist(persist))
        } else {
            storage.persist(persist)
        };
        let last = written.map_err(|source| GroupError::Storage {
            group: self.group_id,
            source,
        })?;
        // The other policies acknowledge entries once written, as documented on
        // `FsyncPolicy`.
        let position = match self.outputs.fsync {
            FsyncPolicy::Always => last,
            FsyncPolicy::Interval { .. } | FsyncPolicy::Never => None,
        };
        self.relay.written(persist.seq, position);
        Ok(())
    }

    fn apply(&mut self, work: ApplyWork) {
        let proposals = &mut self.callers.proposals;
        let batch = ApplyBatch::from_work(work, |_, ticket| proposals.remove(&ticket));
        // The core keeps at most `apply_queue_batches_max` batches in the group's inbox.
        match self.outputs.apply_tx.send(batch) {
            Ok(Sent::Applied) => self.applied_here = true,
            Ok(Sent::Queued) => {}
            Err(_) => self
                .outputs
                .apply_progress
                .stopped
                .store(true, Ordering::Release),
        }
    }

    fn record_members(&mut self, changes: Vec<(NodeId, Option<std::net::SocketAddr>)>) {
        let members = &mut self.outputs.members;
        if let Err(error) = tokio::task::block_in_place(|| members.update(changes.clone())) {
            tracing::error!(group = %self.group_id, %error, "recording member addresses failed");
        }
        // The transport is the node's: a peer leaving this group may be a member of another.
        let peers = &self.outputs.peers;
        for (id, addr) in changes {
            match addr {
                Some(addr) => peers.need(self.group_id, id, addr),
                None => peers.release(self.group_id, id),
            }
        }
    }

    fn serve(&mut self, asker: Asker, data: Bytes) {
        let Some(service) = self.outputs.leader_service.clone() else {
            match asker {
                Asker::Local(ticket) => self
                    .callers
                    .answer(ticket, Answer::Asked(Err(AskError::NoService))),
                Asker::Peer { .. } => self.core.on_leader_served(
                    asker,
                    Err("this group serves no questions for its leader".into()),
                ),
            }
            return;
        };
        let events = self.inputs.events_tx.clone();
        tokio::spawn(async move {
            let result = service.serve(data).await;
            let _ = events.send(Event::LeaderServed { asker, result }).await;
        });
    }

    fn on_tick(&mut self) {
        self.core.on_tick();
        self.ticks += 1;
        if self.ticks.is_multiple_of(PURGE_INTERVAL_TICKS) {
            for ticket in self.callers.take_abandoned() {
                self.core.forget(ticket);
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Peer(from, message) => {
                if let WireMessage::Raft(m) = &*message {
                    if matches!(m.body, MessageBody::HeartbeatResponse { .. }) {
                        if let Some(sent) = self.heartbeat_sent.remove(&from) {
                            self.outputs
                                .metrics
                                .peer_round_trip_us
                                .record(sent.elapsed().as_micros() as u64);
                        }
                    }
                }
                self.core.on_message(from, *message);
            }
            Event::Unreachable(peer) => self.core.on_unreachable(peer),
            Event::SnapshotTaken(meta) => self.core.on_snapshot_taken(*meta),
            Event::LeaderServed { asker, result } => self.core.on_leader_served(asker, result),
        }
    }

    fn on_request(&mut self, request: Request<O>) {
        match request {
            Request::Propose { data, reply } => {
                let ticket = self.core.propose(&data);
                self.callers.proposals.insert(ticket, Reply::Output(reply));
            }
            Request::Membership { change, reply } => {
                let ticket = self.core.propose_membership(&change);
                self.callers
                    .proposals
                    .insert(ticket, Reply::Membership(reply));
            }
            Request::ReadIndex { reply } => {
                let ticket = self.core.read();
                self.callers.reads.insert(ticket, reply);
            }
            Request::Ask { data, reply } => {
                let ticket = self.core.ask_leader(data);
                self.callers.asks.insert(ticket, reply);
            }
            Request::Status { reply } => {
                let _ = reply.send(self.core.status());
            }
            Request::TransferLeader { target, reply } => {
                let _ = reply.send(self.core.transfer_leader(target));
            }
        }
    }

    /// Stops: on a clean stop the commit index is recorded; every caller is told.
    fn stop(mut self, result: Result<(), GroupError>) -> Result<(), GroupError> {
        self.core.shut_down();
        self.core.drain_commands_into(&mut self.commands);
        for command in std::mem::take(&mut self.commands) {
            match command {
                Command::Answer { ticket, answer } => self.callers.answer(ticket, answer),
                Command::RecordCommit(_) if result.is_err() => {}
                other @ Command::RecordCommit(_) => {
                    let _ = self.execute(other);
                }
                _ => {}
            }
        }
        let callers = std::mem::take(&mut self.callers);
        for (_, reply) in callers.proposals {
            reply.fail(ProposeError::ShuttingDown);
        }
        for (_, reply) in callers.reads {
            let _ = reply.send(Err(ReadError::ShuttingDown));
        }
        for (_, reply) in callers.asks {
            let _ = reply.send(Err(AskError::ShuttingDown));
        }
        if let Err(error) = &result {
            tracing::error!(group = %self.group_id, %error, "group driver stopped");
            *lock(&self.outputs.failure) = Some(error.to_string());
        }
        result
    }
}
