//! The driver task of one Raft group: owns the `RawNode` and runs the Ready loop.
//!
//! # Persistence ordering, as implemented
//!
//! For each `Ready`, in [`Driver::start_ready`] and [`Driver::finish_ready`]:
//!
//! 1. `messages` are sent at once — a leader's appends go out while its own write runs.
//!    Snapshot messages are handed to a streaming task instead (see [`crate::snapshot`]).
//!    Committed entries go to the apply thread at once too: the core hands out only
//!    entries this node already holds durably, so they need not wait for this write —
//!    unless the Ready installs a snapshot or commits a membership change (step 4).
//! 2. The snapshot (if any) is written and installed, the entries appended to the WAL
//!    (cutting a conflicting suffix first), and a changed term or vote written to the
//!    hard-state file, which the WAL replaces atomically and durably before returning.
//! 3. The driver then waits — still ticking and stepping peer messages — until the WAL's
//!    durable index covers the appended entries (`fsync = always`; the other policies
//!    acknowledge once written, as documented on [`FsyncPolicy`](crate::FsyncPolicy)).
//! 4. Only then are `persisted_messages` sent (append acknowledgements, votes), the core
//!    advanced (so a leader counts itself towards the quorum only now), and the committed
//!    entries not handed out in step 1 go to the apply thread together with the
//!    configuration after them.
//!
//! `ready()` is not called again until the previous one is finished, and not while the
//! apply queue is full.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use ordo_raft::{
    ConfChange, ConfChangeKind, Entry, EntryKind, HardState, Index, Message, MessageBody, NodeId,
    RawNode, ReadState, Ready, Snapshot, SnapshotMeta, SnapshotStatus, StateRole,
};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::apply::{membership_request, ApplyBatch};
use crate::codec::{
    ForwardKind, ForwardOutcome, ForwardProposal, ForwardReply, RequestId, SnapshotAck,
    SnapshotChunk, WireMessage,
};
use crate::config::FsyncPolicy;
use crate::group::{
    lock, GroupId, GroupStatus, MembershipChange, PeerStatus, ProposeError, ReadError, Reply,
    Request, Waiter, Waiters,
};
use crate::metrics::{inc, GroupMetrics};
use crate::snapshot::{Incoming, SnapshotSender};
use crate::storage::{StorageFailure, WalStorage};
use crate::transport::{PeerMessage, Transport};

/// Inputs to the driver that do not come from handles.
#[derive(Debug)]
pub(crate) enum Event {
    /// A decoded message from a peer.
    Peer(NodeId, WireMessage),
    /// The transport lost its connection to a peer.
    Unreachable(NodeId),
    /// The apply thread wrote a snapshot.
    SnapshotTaken(SnapshotMeta),
    /// A snapshot transfer to a follower ended.
    SnapshotSent {
        to: NodeId,
        transfer_id: u64,
        ok: bool,
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
    /// A log read failed in a way the core could not be told about.
    #[error("group {group}: log read failed: {reason}")]
    LogRead {
        /// The group.
        group: GroupId,
        /// The failure.
        reason: String,
    },
    /// The apply thread stopped (a snapshot the state machine refused, a failed snapshot
    /// write).
    #[error("group {group}: the apply thread stopped")]
    ApplyStopped {
        /// The group.
        group: GroupId,
    },
}

/// Where a read's index is delivered.
pub(crate) type ReadReply = oneshot::Sender<Result<Index, ReadError>>;

/// A `Ready` whose writes are waiting to become durable.
pub(crate) struct InFlight {
    /// The last appended index to wait for, if any.
    durable_target: Option<Index>,
    appended_at: Instant,
    persisted_messages: Vec<Message>,
    committed_entries: Vec<Entry>,
    read_states: Vec<ReadState>,
    snapshot: Option<Snapshot>,
}

pub(crate) struct Driver<S: crate::StateMachine> {
    pub(crate) group_id: GroupId,
    pub(crate) node_id: NodeId,
    pub(crate) boot: u64,
    pub(crate) raw: RawNode<WalStorage>,
    pub(crate) storage: WalStorage,
    pub(crate) transport: Arc<Transport>,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) requests: mpsc::Receiver<Request<S::Output>>,
    pub(crate) events: mpsc::Receiver<Event>,
    pub(crate) events_tx: mpsc::Sender<Event>,
    pub(crate) durable: watch::Receiver<Index>,
    pub(crate) apply_tx: mpsc::Sender<ApplyBatch>,
    pub(crate) apply_progress: Arc<Notify>,
    pub(crate) apply_stopped: Arc<AtomicBool>,
    pub(crate) waiters: Arc<Mutex<Waiters<S::Output>>>,
    /// Reads waiting for their read index, by the context they were requested under.
    pub(crate) reads: HashMap<Bytes, Vec<ReadReply>>,
    /// Reads that arrived this turn; requested together under one context at its end.
    pub(crate) read_batch: Vec<ReadReply>,
    pub(crate) metrics: Arc<GroupMetrics>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) tick_interval_ms: u64,
    pub(crate) proposal_bytes_max: usize,
    pub(crate) pending_proposals_max: usize,
    pub(crate) pending_reads_max: usize,
    pub(crate) snapshot_tail_entries: u64,
    pub(crate) snapshot_chunk_bytes: usize,
    pub(crate) snapshot_bytes_max: u64,
    pub(crate) snapshot_chunk_timeout_ms: u64,
    pub(crate) next_seq: u64,
    pub(crate) persisted_hs: HardState,
    pub(crate) pending: Option<InFlight>,
    pub(crate) apply_blocked: bool,
    pub(crate) snapshot_wanted: bool,
    pub(crate) outgoing_snapshots: HashMap<NodeId, (u64, mpsc::Sender<SnapshotAck>)>,
    pub(crate) incoming_snapshots: HashMap<NodeId, Incoming>,
    pub(crate) heartbeat_sent: HashMap<NodeId, Instant>,
    pub(crate) last_leader: NodeId,
    pub(crate) ticks: u64,
    pub(crate) members: crate::members::MemberFile,
    /// The address peers reach this node at.
    pub(crate) self_addr: std::net::SocketAddr,
}

/// Inputs handled per wake-up before the driver turns to the core's `Ready`, so that
/// bursts of proposals and messages are batched into one `Ready` (and one fsync).
const INPUTS_PER_TURN_MAX: usize = 256;

/// Ticks between sweeps for requests whose caller gave up (timed out), so the waiting
/// tables hold only live requests without scanning them on every tick.
const PURGE_INTERVAL_TICKS: u64 = 64;

impl<S: crate::StateMachine> Driver<S> {
    pub(crate) async fn run(mut self) -> Result<(), GroupError> {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.tick_interval_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            if let Err(e) = self.drive_ready() {
                break Err(e);
            }
            let waiting_durable = self.pending.is_some();
            let apply_blocked = self.apply_blocked;
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break Ok(()),
                _ = ticker.tick() => self.on_tick(),
                Some(event) = self.events.recv() => {
                    self.on_event(event);
                    for _ in 0..INPUTS_PER_TURN_MAX {
                        match self.events.try_recv() {
                            Ok(event) => self.on_event(event),
                            Err(_) => break,
                        }
                    }
                }
                Some(request) = self.requests.recv() => {
                    self.on_request(request);
                    for _ in 0..INPUTS_PER_TURN_MAX {
                        match self.requests.try_recv() {
                            Ok(request) => self.on_request(request),
                            Err(_) => break,
                        }
                    }
                    self.request_read_batch();
                }
                _ = self.durable.changed(), if waiting_durable => {}
                _ = self.apply_progress.notified(), if apply_blocked => {}
            }
            if self.apply_stopped.load(Ordering::Acquire) {
                break Err(GroupError::ApplyStopped {
                    group: self.group_id,
                });
            }
            if let Some(reason) = self.storage.failure() {
                break Err(GroupError::LogRead {
                    group: self.group_id,
                    reason,
                });
            }
        };
        if result.is_ok() {
            self.persist_commit();
        }
        lock(&self.waiters).fail_all(ProposeError::ShuttingDown);
        for reply in self
            .reads
            .drain()
            .flat_map(|(_, r)| r)
            .chain(self.read_batch.drain(..))
        {
            let _ = reply.send(Err(ReadError::ShuttingDown));
        }
        if let Err(error) = &result {
            tracing::error!(group = %self.group_id, %error, "group driver stopped");
        }
        result
    }

    fn storage_err(&self, source: StorageFailure) -> GroupError {
        GroupError::Storage {
            group: self.group_id,
            source,
        }
    }

    /// Takes and carries out `Ready`s until the core has nothing, a write is waiting to
    /// become durable, or the apply queue is full.
    fn drive_ready(&mut self) -> Result<(), GroupError> {
        loop {
            if let Some(p) = &self.pending {
                let durable = match (self.fsync, p.durable_target) {
                    (_, None) => true,
                    (FsyncPolicy::Always, Some(target)) => {
                        self.storage.wal().durable_index() >= target
                    }
                    (_, Some(_)) => true,
                };
                if !durable {
                    return Ok(());
                }
                let p = self.pending.take().expect("checked above");
                self.finish_ready(p);
            }
            if self.snapshot_wanted && self.apply_tx.capacity() > 0 {
                self.snapshot_wanted = false;
                let _ = self.apply_tx.try_send(ApplyBatch {
                    restore: None,
                    entries: Vec::new(),
                    conf_state: self.raw.conf_state(),
                    snapshot_now: true,
                });
            }
            if !self.raw.has_ready() {
                return Ok(());
            }
            if self.apply_tx.capacity() == 0 {
                self.apply_blocked = true;
                return Ok(());
            }
            self.apply_blocked = false;
            let rd = self.raw.ready();
            self.start_ready(rd)?;
        }
    }

    fn start_ready(&mut self, mut rd: Ready) -> Result<(), GroupError> {
        if let Some(ss) = rd.soft_state {
            if ss.leader_id != self.last_leader {
                inc(&self.metrics.leader_changes, 1);
                self.last_leader = ss.leader_id;
                // A transfer from a deposed leader will not be finished: free its buffer.
                self.incoming_snapshots
                    .retain(|from, _| *from == ss.leader_id);
                // Proposals forwarded to the old leader that it never placed will get no
                // answer from it: tell their callers now rather than at their timeout. (A
                // waiter is unbound only between a forward and its reply; local proposals
                // are bound or failed within the step that makes them.)
                lock(&self.waiters).fail_unbound(ProposeError::LeaderLost);
                tracing::info!(group = %self.group_id, term = self.raw.term(), leader = ss.leader_id, role = ?ss.role, "leader changed");
            }
            if ss.role == StateRole::Candidate {
                inc(&self.metrics.elections, 1);
            }
        }
        self.metrics.term.store(self.raw.term(), Ordering::Relaxed);
        let messages = std::mem::take(&mut rd.messages);
        self.send_all(messages);
        // Committed entries are never beyond what this node already holds durably (the
        // core's guarantee), so they need not wait for this Ready's own write: handing them
        // to the apply thread now answers clients one fsync sooner. Only a Ready that
        // installs a snapshot or commits a membership change keeps them until `advance`,
        // where the configuration they produce becomes known.
        let apply_now = rd.snapshot.is_none()
            && !rd.committed_entries.is_empty()
            && rd
                .committed_entries
                .iter()
                .all(|e| e.kind != EntryKind::ConfChange);
        if apply_now {
            let entries = std::mem::take(&mut rd.committed_entries);
            inc(&self.metrics.entries_committed, entries.len() as u64);
            let batch = ApplyBatch {
                restore: None,
                entries,
                conf_state: self.raw.conf_state(),
                snapshot_now: false,
            };
            // Capacity was checked before `ready()`, and only this task sends.
            if self.apply_tx.try_send(batch).is_err() {
                self.apply_stopped.store(true, Ordering::Release);
            }
        }
        let storage = self.storage.clone();
        let snapshot = rd.snapshot.take();
        let entries = std::mem::take(&mut rd.entries);
        let hs_to_write = rd
            .hard_state
            .filter(|hs| hs.term != self.persisted_hs.term || hs.vote != self.persisted_hs.vote);
        let write = || -> Result<_, StorageFailure> {
            if let Some(snap) = &snapshot {
                storage.install_snapshot(snap)?;
            }
            let last = storage.append(&entries)?;
            let mut hs_written = None;
            if let Some(hs) = hs_to_write {
                // The commit index is only a hint for restart; never record one past what
                // the log durably holds.
                let durable = storage.wal().durable_index();
                let hs = HardState {
                    commit: hs.commit.min(durable),
                    ..hs
                };
                storage.set_hard_state(hs)?;
                hs_written = Some(hs);
            }
            Ok((last, hs_written))
        };
        // A snapshot install and a new term or vote (a small file fsynced and renamed into
        // place) block for milliseconds: they run with `block_in_place`, which hands this
        // worker's other tasks to another thread first. A plain append does not get that
        // hand-off, which costs more than the append: under `Always` it is queued in memory
        // while an fsync round runs (the fsync thread syncs it), and otherwise written to the
        // page cache. Doing it in place cut a leader's CPU per put by a seventh and raised a
        // three-node cluster's puts by a fifth. Its rare slow cases (a roll to a new segment
        // fsyncs the old one; a follower cuts a conflicting suffix) hold up the node's other
        // tasks for as long.
        let written = if snapshot.is_none() && hs_to_write.is_none() {
            write()
        } else {
            tokio::task::block_in_place(write)
        };
        let (last, hs_written) = written.map_err(|e| self.storage_err(e))?;
        if let Some(hs) = hs_written {
            self.persisted_hs = hs;
        }
        if snapshot.is_some() {
            inc(&self.metrics.snapshots_received, 1);
            self.storage.set_conf_now(self.raw.conf_state());
        }
        self.pending = Some(InFlight {
            durable_target: last,
            appended_at: Instant::now(),
            persisted_messages: rd.persisted_messages,
            committed_entries: rd.committed_entries,
            read_states: rd.read_states,
            snapshot,
        });
        Ok(())
    }

    fn finish_ready(&mut self, p: InFlight) {
        if p.durable_target.is_some() {
            self.metrics
                .fsync_latency_us
                .record(p.appended_at.elapsed().as_micros() as u64);
        }
        self.send_all(p.persisted_messages);
        let conf_changes: Vec<ConfChange> = p
            .committed_entries
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .filter_map(|e| ConfChange::decode(&e.data).ok())
            .collect();
        inc(
            &self.metrics.entries_committed,
            p.committed_entries.len() as u64,
        );
        self.raw.advance();
        self.metrics
            .commit_index
            .store(self.raw.commit_index(), Ordering::Relaxed);
        let conf_state = self.raw.conf_state();
        if !conf_changes.is_empty() || p.snapshot.is_some() {
            self.storage.set_conf_now(conf_state.clone());
            for cc in &conf_changes {
                self.update_peers(cc);
            }
        }
        for rs in p.read_states {
            for reply in self.reads.remove(&rs.context).unwrap_or_default() {
                let _ = reply.send(Ok(rs.index));
            }
        }
        if p.snapshot.is_some() || !p.committed_entries.is_empty() {
            let batch = ApplyBatch {
                restore: p.snapshot,
                entries: p.committed_entries,
                conf_state,
                snapshot_now: false,
            };
            // Capacity was checked before `ready()`, and only this task sends.
            if self.apply_tx.try_send(batch).is_err() {
                self.apply_stopped.store(true, Ordering::Release);
            }
        }
    }

    /// Keeps the member file and the transport's peer set in line with an applied
    /// membership change.
    fn update_peers(&mut self, cc: &ConfChange) {
        let addr = membership_addr(cc);
        let changes: Vec<(NodeId, Option<std::net::SocketAddr>)> = cc
            .changes
            .iter()
            .filter_map(|c| match c.kind {
                ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                    addr.map(|a| (c.node_id, Some(a)))
                }
                ConfChangeKind::Remove => Some((c.node_id, None)),
            })
            .collect();
        self.record_members(changes);
    }

    /// Records member addresses (or removals) durably and updates the transport.
    pub(crate) fn record_members(
        &mut self,
        changes: impl IntoIterator<Item = (NodeId, Option<std::net::SocketAddr>)>,
    ) {
        let changes: Vec<_> = changes
            .into_iter()
            .filter(|(id, _)| *id != self.node_id)
            .collect();
        let members = &mut self.members;
        if let Err(error) = tokio::task::block_in_place(|| members.update(changes.clone())) {
            tracing::error!(group = %self.group_id, %error, "recording member addresses failed");
        }
        let known: Vec<NodeId> = self.transport.peers().iter().map(|(id, _)| *id).collect();
        for (id, addr) in changes {
            match addr {
                Some(addr) if !known.contains(&id) => {
                    if let Err(error) = self.transport.add_peer(id, addr) {
                        tracing::warn!(group = %self.group_id, peer = id, %error, "adding peer failed");
                    }
                }
                Some(_) => {}
                None if known.contains(&id) => {
                    let transport = Arc::clone(&self.transport);
                    tokio::spawn(async move {
                        let _ = transport.remove_peer(id).await;
                    });
                }
                None => {}
            }
        }
    }

    fn send_all(&mut self, messages: Vec<Message>) {
        for m in messages {
            match m.body {
                MessageBody::Snapshot { snapshot } => self.send_snapshot(m.to, m.term, snapshot),
                _ => {
                    if matches!(m.body, MessageBody::Heartbeat { .. }) {
                        self.heartbeat_sent.entry(m.to).or_insert_with(Instant::now);
                    }
                    let to = m.to;
                    self.send_wire(to, WireMessage::Raft(m));
                }
            }
        }
    }

    /// Queues a message for a peer; false if the transport refused it (it is then
    /// certainly not delivered).
    fn send_wire(&self, to: NodeId, message: WireMessage) -> bool {
        let payload = message.encode();
        let message = PeerMessage {
            group_id: self.group_id.0,
            payload,
        };
        match self.transport.send(to, message) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(group = %self.group_id, to, %error, "peer message not sent");
                false
            }
        }
    }

    fn send_snapshot(&mut self, to: NodeId, term: u64, snapshot: Snapshot) {
        if self.outgoing_snapshots.contains_key(&to) {
            // One transfer per follower at a time; the core probes again after this one.
            return;
        }
        if snapshot.data.len() as u64 > self.snapshot_bytes_max {
            tracing::error!(group = %self.group_id, to, bytes = snapshot.data.len(), "snapshot exceeds snapshot_bytes_max; not sent");
            self.raw.report_snapshot(to, SnapshotStatus::Failure);
            return;
        }
        let transfer_id = crate::group::boot_id();
        let (ack_tx, ack_rx) = mpsc::channel(4);
        self.outgoing_snapshots.insert(to, (transfer_id, ack_tx));
        inc(&self.metrics.snapshots_sent, 1);
        tracing::info!(group = %self.group_id, to, index = snapshot.meta.index, term = snapshot.meta.term, bytes = snapshot.data.len(), "streaming snapshot");
        let sender = SnapshotSender {
            transport: Arc::clone(&self.transport),
            group_id: self.group_id,
            to,
            transfer_id,
            term,
            snapshot,
            chunk_bytes: self.snapshot_chunk_bytes,
            chunk_timeout: Duration::from_millis(self.snapshot_chunk_timeout_ms),
            acks: ack_rx,
            done: self.events_tx.clone(),
            members: self.members_with_self(),
        };
        tokio::spawn(sender.run());
    }

    /// The member addresses including this node's own, as sent with snapshots.
    fn members_with_self(&self) -> std::collections::BTreeMap<NodeId, std::net::SocketAddr> {
        let mut members = self.members.members().clone();
        members.insert(self.node_id, self.self_addr);
        members
    }

    fn on_tick(&mut self) {
        self.raw.tick();
        self.ticks += 1;
        if self.storage.take_snapshot_wanted() {
            self.snapshot_wanted = true;
        }
        if self.ticks.is_multiple_of(PURGE_INTERVAL_TICKS) {
            lock(&self.waiters).purge_abandoned();
            self.reads.retain(|_, replies| {
                replies.retain(|r| !r.is_closed());
                !replies.is_empty()
            });
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Peer(from, message) => self.on_peer(from, message),
            Event::Unreachable(peer) => self.raw.report_unreachable(peer),
            Event::SnapshotTaken(meta) => self.on_snapshot_taken(meta),
            Event::SnapshotSent {
                to,
                transfer_id,
                ok,
            } => {
                if self
                    .outgoing_snapshots
                    .get(&to)
                    .is_some_and(|(id, _)| *id == transfer_id)
                {
                    self.outgoing_snapshots.remove(&to);
                    let status = if ok {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    };
                    tracing::info!(group = %self.group_id, to, ok, "snapshot transfer ended");
                    self.raw.report_snapshot(to, status);
                }
            }
        }
    }

    fn on_snapshot_taken(&mut self, meta: SnapshotMeta) {
        let index = meta.index;
        self.storage.note_snapshot_taken(meta);
        // Entries handed to the apply thread early may be snapshotted before the core
        // records them applied; never compact past what the core has applied.
        let through = index
            .saturating_sub(self.snapshot_tail_entries)
            .min(self.raw.applied_index());
        if through > 0 {
            let storage = self.storage.clone();
            if let Err(error) = tokio::task::block_in_place(|| storage.compact(through)) {
                tracing::error!(group = %self.group_id, through, %error, "log compaction failed");
            } else {
                tracing::debug!(group = %self.group_id, through, "log compacted");
            }
        }
        self.persist_commit();
    }

    /// Records the commit index in the hard state (it is otherwise written only with a
    /// new term or vote), so that a restart re-applies more without waiting for a leader.
    fn persist_commit(&mut self) {
        let durable = self.storage.wal().durable_index();
        let commit = self.raw.commit_index().min(durable);
        if commit <= self.persisted_hs.commit {
            return;
        }
        let hs = HardState {
            commit,
            ..self.persisted_hs
        };
        let storage = self.storage.clone();
        match tokio::task::block_in_place(|| storage.set_hard_state(hs)) {
            Ok(()) => self.persisted_hs = hs,
            Err(error) => {
                tracing::warn!(group = %self.group_id, %error, "persisting the commit index failed")
            }
        }
    }

    fn on_peer(&mut self, from: NodeId, message: WireMessage) {
        match message {
            WireMessage::Raft(m) => {
                if m.from != from || m.to != self.node_id {
                    tracing::debug!(group = %self.group_id, from, "misaddressed message dropped");
                    return;
                }
                if matches!(m.body, MessageBody::HeartbeatResponse { .. }) {
                    if let Some(sent) = self.heartbeat_sent.remove(&from) {
                        self.metrics
                            .peer_round_trip_us
                            .record(sent.elapsed().as_micros() as u64);
                    }
                }
                if let Err(error) = self.raw.step(m) {
                    tracing::debug!(group = %self.group_id, from, %error, "message refused by the core");
                }
            }
            WireMessage::Forward(f) => self.on_forward(from, f),
            WireMessage::ForwardReply(r) => self.on_forward_reply(r),
            WireMessage::SnapshotChunk(c) => self.on_snapshot_chunk(from, c),
            WireMessage::SnapshotAck(a) => {
                if let Some((id, acks)) = self.outgoing_snapshots.get(&from) {
                    if *id == a.transfer_id {
                        let _ = acks.try_send(a);
                    }
                }
            }
        }
    }

    fn on_forward(&mut self, from: NodeId, f: ForwardProposal) {
        let outcome = if f.data.len() > self.proposal_bytes_max + crate::ENVELOPE_BYTES {
            ForwardOutcome::Rejected {
                reason: format!("proposal exceeds {} bytes", self.proposal_bytes_max),
            }
        } else {
            let result = match f.kind {
                ForwardKind::Normal => self.raw.propose(f.data),
                ForwardKind::ConfChange => match ConfChange::decode(&f.data) {
                    Ok(cc) => self.raw.propose_conf_change(&cc),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(id) => ForwardOutcome::Accepted {
                    index: id.index,
                    term: id.term,
                },
                Err(ordo_raft::Error::NotLeader { leader_id }) => {
                    ForwardOutcome::NotLeader { leader: leader_id }
                }
                Err(ordo_raft::Error::NoLeader) => ForwardOutcome::NotLeader { leader: 0 },
                Err(e) => ForwardOutcome::Rejected {
                    reason: e.to_string(),
                },
            }
        };
        self.send_wire(
            from,
            WireMessage::ForwardReply(ForwardReply {
                request: f.request,
                outcome,
            }),
        );
    }

    fn on_forward_reply(&mut self, r: ForwardReply) {
        if r.request.node != self.node_id || r.request.boot != self.boot {
            return;
        }
        let mut waiters = lock(&self.waiters);
        match r.outcome {
            ForwardOutcome::Accepted { index, term } => {
                // The apply thread publishes its applied index only after resolving the
                // waiters of the entries up to it: if it passed `index` and this waiter is
                // still here, another entry took the place.
                let applied = self.metrics.applied_index.load(Ordering::Acquire);
                if applied >= index {
                    if let Some(w) = waiters.take(r.request.seq) {
                        w.reply.fail(ProposeError::Dropped);
                    }
                } else {
                    waiters.bind(r.request.seq, index, term);
                }
            }
            ForwardOutcome::NotLeader { leader } => {
                if let Some(w) = waiters.take(r.request.seq) {
                    w.reply.fail(if leader == 0 {
                        ProposeError::NoLeader
                    } else {
                        ProposeError::NotLeader { leader }
                    });
                }
            }
            ForwardOutcome::Rejected { reason } => {
                if let Some(w) = waiters.take(r.request.seq) {
                    w.reply.fail(ProposeError::Rejected(reason));
                }
            }
        }
    }

    fn on_snapshot_chunk(&mut self, from: NodeId, c: SnapshotChunk) {
        let transfer_id = c.transfer_id;
        let max = self.snapshot_bytes_max;
        let incoming = self.incoming_snapshots.remove(&from);
        let (next_offset, ok, complete) = match Incoming::accept(incoming, c, max) {
            Ok((incoming, None)) => {
                let next = incoming.received();
                self.incoming_snapshots.insert(from, incoming);
                (next, true, None)
            }
            Ok((_, Some(done))) => (done.snapshot.data.len() as u64, true, Some(done)),
            Err(error) => {
                tracing::warn!(group = %self.group_id, from, %error, "snapshot transfer refused");
                (0, false, None)
            }
        };
        if let Some(done) = complete {
            let snapshot = done.snapshot;
            tracing::info!(group = %self.group_id, from, index = snapshot.meta.index, term = snapshot.meta.term, "snapshot received");
            // Learn the members' addresses before the configuration names them.
            self.record_members(done.members.into_iter().map(|(id, a)| (id, Some(a))));
            let m = Message {
                from,
                to: self.node_id,
                term: done.term,
                body: MessageBody::Snapshot { snapshot },
            };
            if let Err(error) = self.raw.step(m) {
                tracing::debug!(group = %self.group_id, from, %error, "snapshot refused by the core");
            }
        }
        self.send_wire(
            from,
            WireMessage::SnapshotAck(SnapshotAck {
                transfer_id,
                next_offset,
                ok,
            }),
        );
    }

    fn next_request(&mut self) -> RequestId {
        self.next_seq += 1;
        RequestId {
            node: self.node_id,
            boot: self.boot,
            seq: self.next_seq,
        }
    }

    fn on_request(&mut self, request: Request<S::Output>) {
        match request {
            Request::Propose { data, reply } => {
                if data.len() > self.proposal_bytes_max {
                    let _ = reply.send(Err(ProposeError::TooLarge {
                        bytes: data.len(),
                        max: self.proposal_bytes_max,
                    }));
                    return;
                }
                let id = self.next_request();
                let wrapped = crate::state_machine::wrap(id, &data);
                self.propose(id, Reply::Output(reply), ForwardKind::Normal, wrapped);
            }
            Request::Membership { change, reply } => {
                let id = self.next_request();
                let cc = membership_conf_change(id, &change);
                self.propose(id, Reply::Membership(reply), ForwardKind::ConfChange, cc);
            }
            Request::ReadIndex { reply } => {
                let waiting: usize = self.reads.values().map(Vec::len).sum();
                if waiting + self.read_batch.len() >= self.pending_reads_max {
                    let _ = reply.send(Err(ReadError::TooManyPending {
                        limit: self.pending_reads_max,
                    }));
                    return;
                }
                self.read_batch.push(reply);
            }
            Request::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Request::TransferLeader { target, reply } => {
                let result = match self.raw.transfer_leader(target) {
                    Ok(()) => Ok(()),
                    Err(ordo_raft::Error::NoLeader) => Err(ProposeError::NoLeader),
                    Err(e) => Err(ProposeError::Rejected(e.to_string())),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// Requests one read index for every read that arrived this turn. Each of them was
    /// invoked before this request, so the index the leader confirms for it is at least
    /// the commit index at some moment after each read began: that is all a
    /// linearizable read needs, and one heartbeat round then serves the whole batch.
    fn request_read_batch(&mut self) {
        if self.read_batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.read_batch);
        let id = self.next_request();
        let mut ctx = BytesMut::with_capacity(RequestId::BYTES);
        id.put(&mut ctx);
        let ctx = ctx.freeze();
        let error = match self.raw.read_index(ctx.clone()) {
            Ok(()) => {
                self.reads.insert(ctx, batch);
                return;
            }
            Err(ordo_raft::Error::NoLeader | ordo_raft::Error::NotLeader { .. }) => {
                ReadError::NoLeader
            }
            Err(e) => ReadError::Rejected(e.to_string()),
        };
        for reply in batch {
            let _ = reply.send(Err(error.clone()));
        }
    }

    /// Proposes locally if leader, otherwise forwards to the leader; the waiter resolves
    /// when this node applies the entry.
    fn propose(&mut self, id: RequestId, reply: Reply<S::Output>, kind: ForwardKind, data: Bytes) {
        {
            let mut waiters = lock(&self.waiters);
            if waiters.by_seq.len() >= self.pending_proposals_max {
                reply.fail(ProposeError::TooManyPending {
                    limit: self.pending_proposals_max,
                });
                return;
            }
            waiters.by_seq.insert(id.seq, Waiter { reply, at: None });
        }
        let result = match kind {
            ForwardKind::Normal => self.raw.propose(data.clone()),
            ForwardKind::ConfChange => match ConfChange::decode(&data) {
                Ok(cc) => self.raw.propose_conf_change(&cc),
                Err(e) => Err(e),
            },
        };
        let mut waiters = lock(&self.waiters);
        match result {
            Ok(entry) => waiters.bind(id.seq, entry.index, entry.term),
            Err(ordo_raft::Error::NotLeader { leader_id }) if leader_id != 0 => {
                drop(waiters);
                inc(&self.metrics.proposals_forwarded, 1);
                let queued = self.send_wire(
                    leader_id,
                    WireMessage::Forward(ForwardProposal {
                        request: id,
                        kind,
                        data,
                    }),
                );
                if !queued {
                    // Never left this node, so never appended: the caller may retry (the
                    // handle does, once a tick has passed).
                    if let Some(w) = lock(&self.waiters).take(id.seq) {
                        w.reply.fail(ProposeError::NotLeader { leader: leader_id });
                    }
                }
            }
            Err(ordo_raft::Error::NotLeader { .. } | ordo_raft::Error::NoLeader) => {
                if let Some(w) = waiters.take(id.seq) {
                    w.reply.fail(ProposeError::NoLeader);
                }
            }
            Err(e) => {
                if let Some(w) = waiters.take(id.seq) {
                    w.reply.fail(ProposeError::Rejected(e.to_string()));
                }
            }
        }
    }

    fn status(&self) -> GroupStatus {
        let s = self.raw.status();
        let last = s.last_index;
        let peers = s
            .progress
            .iter()
            .map(|(&id, p)| PeerStatus {
                id,
                match_index: p.match_index,
                lag: last.saturating_sub(p.match_index),
                is_learner: p.is_learner,
                recent_active: p.recent_active,
            })
            .collect();
        GroupStatus {
            group_id: self.group_id,
            node_id: self.node_id,
            role: s.soft_state.role,
            term: s.hard_state.term,
            leader: s.soft_state.leader_id,
            commit_index: s.hard_state.commit,
            applied_index: 0,
            first_index: ordo_raft::Storage::first_index(&self.storage),
            last_index: last,
            snapshot_index: self.storage.snapshot_meta().index,
            conf_state: self.raw.conf_state(),
            peers,
        }
    }
}

/// A membership change as the core's `ConfChange`, with the request id and the node's
/// address in its context.
pub(crate) fn membership_conf_change(id: RequestId, change: &MembershipChange) -> Bytes {
    let (kind, node_id, addr) = match change {
        MembershipChange::AddLearner { id, addr } => (ConfChangeKind::AddLearner, *id, Some(addr)),
        MembershipChange::AddVoter { id, addr } => (ConfChangeKind::AddVoter, *id, Some(addr)),
        MembershipChange::Remove { id } => (ConfChangeKind::Remove, *id, None),
    };
    let mut context = BytesMut::new();
    id.put(&mut context);
    if let Some(addr) = addr {
        context.put_slice(addr.to_string().as_bytes());
    }
    let mut cc = ConfChange::single(kind, node_id);
    cc.context = context.freeze();
    cc.encode()
}

/// The peer address a membership change carries, if any.
pub(crate) fn membership_addr(cc: &ConfChange) -> Option<std::net::SocketAddr> {
    membership_request(cc)?;
    let text = std::str::from_utf8(cc.context.get(RequestId::BYTES..)?).ok()?;
    text.parse().ok()
}
