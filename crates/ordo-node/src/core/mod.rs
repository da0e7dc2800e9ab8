//! The group core: every decision the runtime makes for one Raft group, without I/O.
//!
//! [`GroupCore`] owns the Raft core's `RawNode` and the bookkeeping around it: the `Ready`
//! loop, this node's proposals waiting for their outcome, read index batching, proposals
//! and questions forwarded to the leader, snapshot transfers, early apply, and member
//! addresses. It takes events as method calls (a tick, a peer message, a proposal, a read,
//! a write made durable, work applied, a snapshot taken) and leaves [`Command`]s for its
//! runtime to carry out in order: the tokio driver in production, the simulator under a
//! seed. Neither decides anything the core does not.
//!
//! # Persistence ordering, as data
//!
//! For each `Ready` of the Raft core, in [`GroupCore::end_turn`]:
//!
//! 1. `messages` become [`Command::Send`]: a leader's appends go out while its own write
//!    runs. Snapshots are streamed in chunks instead (see `transfers.rs`).
//! 2. Committed entries become a [`Command::Apply`] at once: the Raft core hands out only
//!    entries this node holds durably, so they need not wait for this `Ready`'s write —
//!    unless the `Ready` installs a snapshot or commits a membership change, whose
//!    configuration is known only after step 5.
//! 3. The snapshot, the entries and a changed term or vote become one [`Command::Persist`]
//!    with a sequence number.
//! 4. `persisted_messages` (append acknowledgements, votes) become
//!    [`Command::SendAfterDurable`] naming that write: the runtime holds them until it is
//!    durable ([`DurabilityGate`]).
//! 5. Once the runtime reports the write durable ([`GroupCore::on_persisted`]), the Raft
//!    core is advanced (a leader counts itself towards the quorum only now), read states
//!    are confirmed, and the committed entries held back in step 2 are applied.
//!
//! `ready()` is not called again until the previous one is finished. While
//! `apply_batches_max` batches are with the state machine, the Raft core hands out no
//! committed entries (everything else goes on). A proposal is answered by the
//! state machine when it applies the entry (its ticket travels in the `Apply`), a read only
//! once the local state machine has applied the index the leader confirmed.

mod command;
mod durability;
mod messages;
mod proposals;
mod quiescence;
mod reads;
mod ready;
pub(crate) mod transfers;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use ordo_raft::{
    ConfChange, ConfChangeKind, HardState, Index, NodeId, RawNode, SnapshotMeta, SnapshotStatus,
    StateRole,
};

pub use command::{Answer, ApplyWork, Asker, Command, Leadership, Persist, Ticket, Unsent};
pub use durability::DurabilityGate;

use crate::codec::{ForwardKind, ForwardProposal, LeaderRequest, RequestId, WireMessage};
use crate::group::{
    AskError, GroupId, GroupStatus, MembershipChange, PeerStatus, ProposeError, ReadError,
};
use crate::metrics::{inc, GroupMetrics};
use crate::storage::LogStore;
use proposals::Proposals;
use quiescence::Quiescence;
use reads::Reads;
use transfers::{Incoming, OutgoingTransfers};

/// A rule of the runtime deliberately broken, to show that the simulator catches it.
#[cfg(feature = "mutations")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeMutation {
    /// The runtime sends append acknowledgements and votes before the write they promise
    /// is durable ([`DurabilityGate`] releases them at once).
    AckBeforeDurable,
    /// Entries a leader or follower appends are applied before they are committed.
    ApplyPastCommit,
    /// Reads are answered as soon as the leader confirms their index, before the local
    /// state machine has applied it.
    AnswerReadBeforeApplied,
}

/// What the core is told once, when a group starts.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The group.
    pub group_id: GroupId,
    /// This node.
    pub node_id: NodeId,
    /// A number that differs between runs of this node, so request ids never repeat.
    pub boot: u64,
    /// The address peers reach this node at, sent along with snapshots.
    pub self_addr: SocketAddr,
    /// Largest proposal, in bytes of application data.
    pub proposal_bytes_max: usize,
    /// Proposals waiting for their outcome.
    pub pending_proposals_max: usize,
    /// Reads waiting for their index.
    pub pending_reads_max: usize,
    /// Questions for the leader waiting for an answer.
    pub pending_asks_max: usize,
    /// Entries kept in the log behind a snapshot.
    pub snapshot_tail_entries: u64,
    /// Bytes of snapshot data in one chunk.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot sent or accepted.
    pub snapshot_bytes_max: u64,
    /// Ticks to wait for a follower to acknowledge a snapshot chunk.
    pub snapshot_chunk_timeout_ticks: u64,
    /// Batches with the state machine at most.
    pub apply_batches_max: u64,
    /// Whether the leader quiesces the group once it is idle (see `quiescence.rs`). A
    /// quiesced group learns of a silent partition (no reset, no traffic) only from its
    /// runtime, as [`GroupCore::on_unreachable`]: the node's transport reports a peer that
    /// sent nothing, not even a keepalive, for an election timeout.
    pub quiesce: bool,
    /// A deliberately broken rule, in the simulator's checks of the checkers.
    #[cfg(feature = "mutations")]
    pub mutation: Option<RuntimeMutation>,
}

impl CoreConfig {
    fn mutation_is(&self, _which: MutationKind) -> bool {
        #[cfg(feature = "mutations")]
        {
            matches!(
                (self.mutation, _which),
                (
                    Some(RuntimeMutation::ApplyPastCommit),
                    MutationKind::ApplyPastCommit
                ) | (
                    Some(RuntimeMutation::AnswerReadBeforeApplied),
                    MutationKind::AnswerReadBeforeApplied
                )
            )
        }
        #[cfg(not(feature = "mutations"))]
        false
    }
}

/// The core's own names for the mutations, present in every build so that the checks
/// compile away without the feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MutationKind {
    ApplyPastCommit,
    AnswerReadBeforeApplied,
}

/// A `Ready` whose writes are waiting to become durable.
#[derive(Debug)]
struct InFlight {
    /// The write to wait for; `None` when the `Ready` wrote nothing.
    seq: Option<u64>,
    committed: Vec<ordo_raft::Entry>,
    read_states: Vec<ordo_raft::ReadState>,
    snapshot: Option<ordo_raft::Snapshot>,
}

/// What has been asked of the disk.
#[derive(Debug)]
struct Persistence {
    next_seq: u64,
    in_flight: Option<InFlight>,
    /// Term and vote as last asked to be persisted.
    hard_state: HardState,
    /// The commit index last asked to be recorded.
    commit_recorded: Index,
}

/// What has been handed to the state machine, and what it has done.
#[derive(Debug, Default)]
struct ApplyQueue {
    batches_issued: u64,
    batches_done: u64,
    /// The state machine's applied index, as last reported.
    applied: Index,
    /// The last index handed out (applied or queued).
    handed_out: Index,
    /// The index of the last snapshot restored: proposals at or below it have an
    /// unknown outcome.
    restored_through: Index,
    /// Entries applied ahead of their commit, under the planted bug only.
    applied_ahead_through: Index,
    /// A snapshot was asked for (storage could not give a follower one).
    snapshot_wanted: bool,
    /// The queue is full: committed entries wait for the state machine.
    blocked: bool,
}

impl ApplyQueue {
    fn in_flight(&self) -> u64 {
        self.batches_issued - self.batches_done
    }
}

/// Requests of this node's callers waiting for their outcome.
#[derive(Debug, Default)]
struct Waiting {
    next_ticket: u64,
    proposals: Proposals,
    reads: Reads,
    /// Questions passed on to the leader, and the leader they went to.
    asks: BTreeMap<Ticket, NodeId>,
    /// Followers' proposals this node appended as leader.
    forwarded: proposals::Forwarded,
}

/// Snapshot transfers in both directions.
#[derive(Debug, Default)]
struct Transfers {
    outgoing: OutgoingTransfers,
    /// Transfers being received, by sender.
    incoming: BTreeMap<NodeId, Incoming>,
    started: u64,
}

/// The decisions of one Raft group on this node. See the module documentation.
pub struct GroupCore<St: LogStore> {
    config: CoreConfig,
    raw: RawNode<St>,
    storage: St,
    metrics: Arc<GroupMetrics>,
    persistence: Persistence,
    apply: ApplyQueue,
    waiting: Waiting,
    transfers: Transfers,
    quiescence: Quiescence,
    /// Peer addresses of the members, this node's own included.
    members: BTreeMap<NodeId, SocketAddr>,
    leadership: Leadership,
    ticks: u64,
    commands: Vec<Command>,
}

impl<St: LogStore + Clone> GroupCore<St> {
    /// A core over `raw`, whose storage is `storage` (the same one, shared), whose state
    /// machine has applied through `applied`, with the members' known addresses.
    pub fn new(
        config: CoreConfig,
        raw: RawNode<St>,
        applied: Index,
        members: BTreeMap<NodeId, SocketAddr>,
        metrics: Arc<GroupMetrics>,
    ) -> GroupCore<St> {
        let storage = raw.storage().clone();
        let hard_state = ordo_raft::Storage::initial_state(&storage).hard_state;
        let mut members = members;
        members.insert(config.node_id, config.self_addr);
        storage.set_conf_now(raw.conf_state());
        GroupCore {
            raw,
            storage,
            metrics,
            persistence: Persistence {
                next_seq: 1,
                in_flight: None,
                hard_state,
                commit_recorded: hard_state.commit,
            },
            apply: ApplyQueue {
                applied,
                handed_out: applied,
                ..ApplyQueue::default()
            },
            waiting: Waiting::default(),
            transfers: Transfers::default(),
            quiescence: Quiescence::default(),
            members,
            leadership: Leadership::default(),
            ticks: 0,
            commands: Vec::new(),
            config,
        }
    }
}

impl<St: LogStore> GroupCore<St> {
    /// The commands left by the calls since the last time, in the order to carry them out.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Moves the pending commands to the end of `out`, keeping this core's buffer.
    pub fn drain_commands_into(&mut self, out: &mut Vec<Command>) {
        out.append(&mut self.commands);
    }

    /// The storage the core reads.
    pub fn storage(&self) -> &St {
        &self.storage
    }

    /// The Raft core, for inspection.
    pub fn raw(&self) -> &RawNode<St> {
        &self.raw
    }

    /// The group's counters.
    pub fn metrics(&self) -> crate::MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Who leads, as last reported in a [`Command::LeadershipChanged`].
    pub fn leadership(&self) -> Leadership {
        self.leadership
    }

    /// Why this group cannot go on, if it cannot: a storage read failed (for the WAL, the
    /// text names the file and byte offset). The Raft core stops at its first failed read;
    /// the runtime stops the group and reports it.
    pub fn storage_failure(&self) -> Option<String> {
        self.raw
            .storage_failure()
            .map(ToString::to_string)
            .or_else(|| self.storage.failure())
    }

    /// Whether a write is waiting to become durable.
    pub fn waiting_durable(&self) -> bool {
        self.persistence.in_flight.is_some()
    }

    /// Whether the core should hear as soon as the write in flight is durable, rather than
    /// at its next input. Messages waiting for the write are not a reason: the runtime
    /// releases them when the write is durable without a turn of the core
    /// ([`DurabilityGate`]). The reasons are work held back until the write is durable
    /// (committed entries, read states, a snapshot, a `Ready` behind it), committed
    /// entries this node cannot apply before it is, a leader whose own copy is what the
    /// commit waits for, and a candidate's own vote. A follower's write and a leader's
    /// write that followers have still to answer need no turn of their own: the next
    /// message (the leader's commit, the followers' answers) brings one, and that turn
    /// learns the write is durable.
    pub fn needs_durable_turn(&self) -> bool {
        let Some(p) = &self.persistence.in_flight else {
            return false;
        };
        if p.snapshot.is_some() || !p.committed.is_empty() || !p.read_states.is_empty() {
            return true;
        }
        if self.raw.has_ready_behind() || self.raw.commit_index() > self.apply.handed_out {
            return true;
        }
        match self.raw.role() {
            StateRole::Leader => self.raw.own_append_would_commit(),
            StateRole::Follower => false,
            StateRole::Candidate | StateRole::PreCandidate => true,
        }
    }

    /// Whether news of the state machine's progress would let the core go on: work waits
    /// for room in the apply queue, or reads wait for an index to be applied.
    pub fn wants_apply_progress(&self) -> bool {
        self.apply.blocked || self.waiting.reads.has_confirmed()
    }

    fn push(&mut self, command: Command) {
        self.commands.push(command);
    }

    fn answer(&mut self, ticket: Ticket, answer: Answer) {
        self.push(Command::Answer { ticket, answer });
    }

    fn next_ticket(&mut self) -> Ticket {
        self.waiting.next_ticket += 1;
        Ticket(self.waiting.next_ticket)
    }

    fn request_id(&self, ticket: Ticket) -> RequestId {
        RequestId {
            node: self.config.node_id,
            boot: self.config.boot,
            seq: ticket.0,
        }
    }

    /// The ticket of this node's request `request`, if it is this run's.
    fn own_ticket(&self, request: &RequestId) -> Option<Ticket> {
        (request.node == self.config.node_id && request.boot == self.config.boot)
            .then_some(Ticket(request.seq))
    }

    fn send(&mut self, to: NodeId, message: WireMessage) {
        self.push(Command::Send {
            to,
            message,
            if_unsent: None,
        });
    }

    /// Advances logical time by one tick; a leader whose group is idle quiesces it
    /// instead (see [`GroupCore::is_quiesced`]).
    ///
    /// # Panics
    /// If the group is quiesced: its runtime must not tick it until an input wakes it.
    pub fn on_tick(&mut self) {
        if self.storage.take_snapshot_wanted() {
            self.apply.snapshot_wanted = true;
        }
        if self.maybe_quiesce() {
            return;
        }
        self.raw.tick();
        self.ticks += 1;
        let timeout = self.config.snapshot_chunk_timeout_ticks;
        for to in self.transfers.outgoing.take_expired(self.ticks, timeout) {
            tracing::warn!(group = %self.config.group_id, to, "snapshot chunk not acknowledged in time");
            self.raw.report_snapshot(to, SnapshotStatus::Failure);
        }
    }

    /// The transport lost its connection to `peer`.
    pub fn on_unreachable(&mut self, peer: NodeId) {
        self.note_unreachable(peer);
        self.raw.report_unreachable(peer);
    }

    /// Proposes application `data`. Answered by the state machine once this node applies
    /// the entry, or with a failure; a follower forwards it to the leader.
    pub fn propose(&mut self, data: &[u8]) -> Ticket {
        let ticket = self.next_ticket();
        if data.len() > self.config.proposal_bytes_max {
            let error = ProposeError::TooLarge {
                bytes: data.len(),
                max: self.config.proposal_bytes_max,
            };
            self.answer(ticket, Answer::Failed(error));
            return ticket;
        }
        let wrapped = crate::state_machine::wrap(self.request_id(ticket), data);
        self.submit(ticket, ForwardKind::Normal, wrapped);
        ticket
    }

    /// Proposes a membership change. Answered once this node applies it.
    pub fn propose_membership(&mut self, change: &MembershipChange) -> Ticket {
        let ticket = self.next_ticket();
        let cc = membership_conf_change(self.request_id(ticket), change);
        self.submit(ticket, ForwardKind::ConfChange, cc);
        ticket
    }

    /// Proposes any configuration change, joint ones included (the simulator's nemesis
    /// does); `addr` is the peer address of the node it adds, if any. Answered once this
    /// node applies it.
    pub fn propose_conf_change(&mut self, cc: ConfChange, addr: Option<SocketAddr>) -> Ticket {
        let ticket = self.next_ticket();
        let cc = with_request_context(cc, self.request_id(ticket), addr);
        self.submit(ticket, ForwardKind::ConfChange, cc.encode());
        ticket
    }

    /// Proposes locally if leader, otherwise forwards to the leader.
    fn submit(&mut self, ticket: Ticket, kind: ForwardKind, data: Bytes) {
        self.wake("a proposal");
        let limit = self.config.pending_proposals_max;
        if self.waiting.proposals.len() >= limit {
            let error = ProposeError::TooManyPending { limit };
            self.answer(ticket, Answer::Failed(error));
            return;
        }
        self.waiting.proposals.insert(ticket);
        let result = match kind {
            ForwardKind::Normal => self.raw.propose(data.clone()),
            ForwardKind::ConfChange => match ConfChange::decode(&data) {
                Ok(cc) => self.raw.propose_conf_change(&cc),
                Err(e) => Err(e),
            },
        };
        let error = match result {
            Ok(entry) => {
                self.bind(ticket, entry.index, entry.term);
                return;
            }
            Err(ordo_raft::Error::NotLeader { leader_id }) if leader_id != 0 => {
                inc(&self.metrics.proposals_forwarded, 1);
                let forward = ForwardProposal {
                    request: self.request_id(ticket),
                    kind,
                    data,
                };
                self.push(Command::Send {
                    to: leader_id,
                    message: WireMessage::Forward(forward),
                    if_unsent: Some(Unsent::Forward(ticket)),
                });
                return;
            }
            Err(ordo_raft::Error::NotLeader { .. } | ordo_raft::Error::NoLeader) => {
                ProposeError::NoLeader
            }
            Err(e) => ProposeError::Rejected(e.to_string()),
        };
        self.waiting.proposals.take(ticket);
        self.answer(ticket, Answer::Failed(error));
    }

    /// Records where a proposal's entry landed; one it displaced was dropped.
    fn bind(&mut self, ticket: Ticket, index: Index, term: ordo_raft::Term) {
        if let Some(displaced) = self.waiting.proposals.bind(ticket, index, term) {
            self.answer(displaced, Answer::Failed(ProposeError::Dropped));
        }
    }

    /// Asks for a linearizable read. Answered with an index once the local state machine
    /// has applied it, where the index was the leader's commit index at some moment after
    /// this call.
    pub fn read(&mut self) -> Ticket {
        self.wake("a read");
        let ticket = self.next_ticket();
        let limit = self.config.pending_reads_max;
        if self.waiting.reads.len() >= limit {
            let error = ReadError::TooManyPending { limit };
            self.answer(ticket, Answer::Read(Err(error)));
        } else {
            self.waiting.reads.add(ticket);
        }
        ticket
    }

    /// Asks the leader's face a question (`data`, the face's own encoding). On the leader
    /// the face is asked at once.
    pub fn ask_leader(&mut self, data: Bytes) -> Ticket {
        self.wake("a question for the leader");
        let ticket = self.next_ticket();
        let max = crate::codec::LEADER_REQUEST_BYTES_MAX;
        let limit = self.config.pending_asks_max;
        let refusal = if data.len() > max {
            Some(AskError::TooLarge {
                bytes: data.len(),
                max,
            })
        } else if self.waiting.asks.len() >= limit {
            Some(AskError::TooManyPending { limit })
        } else {
            None
        };
        if let Some(error) = refusal {
            self.answer(ticket, Answer::Asked(Err(error)));
            return ticket;
        }
        let leader = self.raw.leader_id();
        if self.raw.role() == StateRole::Leader {
            self.push(Command::ServeLeaderRequest {
                asker: Asker::Local(ticket),
                data,
            });
        } else if leader != 0 {
            self.waiting.asks.insert(ticket, leader);
            let request = LeaderRequest {
                request: self.request_id(ticket),
                data,
            };
            self.push(Command::Send {
                to: leader,
                message: WireMessage::LeaderRequest(request),
                if_unsent: Some(Unsent::Forward(ticket)),
            });
        } else {
            self.answer(ticket, Answer::Asked(Err(AskError::NoLeader)));
        }
        ticket
    }

    /// Asks the leader to hand leadership to `target` (forwarded from a follower).
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), ProposeError> {
        self.wake("a leadership transfer");
        match self.raw.transfer_leader(target) {
            Ok(()) => Ok(()),
            Err(ordo_raft::Error::NoLeader) => Err(ProposeError::NoLeader),
            Err(e) => Err(ProposeError::Rejected(e.to_string())),
        }
    }

    /// A caller gave up on `ticket`: forget it.
    pub fn forget(&mut self, ticket: Ticket) {
        if self.waiting.proposals.take(ticket).is_none() && !self.waiting.reads.forget(ticket) {
            self.waiting.asks.remove(&ticket);
        }
    }

    /// A message the runtime could not queue for its peer.
    pub fn on_unsent(&mut self, unsent: Unsent) {
        let leader = self.raw.leader_id();
        match unsent {
            Unsent::Forward(ticket) => {
                // It never left this node, so it was never appended: retryable.
                if self.waiting.proposals.take(ticket).is_some() {
                    let error = ProposeError::NotLeader { leader };
                    self.answer(ticket, Answer::Failed(error));
                } else if self.waiting.asks.remove(&ticket).is_some() {
                    let error = AskError::NotLeader { leader };
                    self.answer(ticket, Answer::Asked(Err(error)));
                }
            }
            Unsent::Chunk { to, transfer_id } => {
                if self.transfers.outgoing.end(to, transfer_id) {
                    tracing::warn!(group = %self.config.group_id, to, "snapshot chunk not sent");
                    self.raw.report_snapshot(to, SnapshotStatus::Failure);
                }
            }
        }
    }

    /// The state machine finished `batches_done` batches in all and has applied through
    /// `applied`.
    pub fn on_applied(&mut self, batches_done: u64, applied: Index) {
        assert!(
            batches_done <= self.apply.batches_issued,
            "{batches_done} batches done of {} issued",
            self.apply.batches_issued
        );
        assert!(
            applied >= self.apply.applied,
            "applied index went back from {} to {applied}",
            self.apply.applied
        );
        self.apply.batches_done = self.apply.batches_done.max(batches_done);
        self.apply.applied = applied;
        self.answer_applied_reads();
    }

    /// The state machine wrote a snapshot: compact the log behind it.
    pub fn on_snapshot_taken(&mut self, meta: SnapshotMeta) {
        let index = meta.index;
        self.storage.note_snapshot_taken(meta);
        // Entries handed out early may be snapshotted before the Raft core counts them
        // applied; never compact past what it has.
        let through = index
            .saturating_sub(self.config.snapshot_tail_entries)
            .min(self.raw.applied_index());
        if through > 0 {
            self.push(Command::CompactLog { through });
        }
        self.record_commit();
    }

    /// Records the commit index in the hard state (otherwise written only with a new term
    /// or vote), so that a restart re-applies more without waiting for a leader.
    pub(super) fn record_commit(&mut self) {
        let commit = self.raw.commit_index();
        if commit <= self.persistence.commit_recorded {
            return;
        }
        self.persistence.commit_recorded = commit;
        let hs = HardState {
            commit,
            ..self.persistence.hard_state
        };
        self.push(Command::RecordCommit(hs));
    }

    /// The group stops: records the commit index and fails every waiting request.
    pub fn shut_down(&mut self) {
        self.record_commit();
        for ticket in self.waiting.proposals.take_all() {
            self.answer(ticket, Answer::Failed(ProposeError::ShuttingDown));
        }
        for ticket in self.waiting.reads.take_all() {
            self.answer(ticket, Answer::Read(Err(ReadError::ShuttingDown)));
        }
        let asks: Vec<Ticket> = std::mem::take(&mut self.waiting.asks).into_keys().collect();
        for ticket in asks {
            self.answer(ticket, Answer::Asked(Err(AskError::ShuttingDown)));
        }
    }

    /// Ends a turn of inputs: requests one read index for the reads made during it, then
    /// carries the Raft core's `Ready`s as far as durability and the apply queue allow.
    pub fn end_turn(&mut self) {
        self.request_read_batch();
        self.drive_ready();
        self.quiesce_after_writes();
    }

    fn request_read_batch(&mut self) {
        let batch = self.waiting.reads.take_batch();
        if batch.is_empty() {
            return;
        }
        let ticket = self.next_ticket();
        let mut context = BytesMut::with_capacity(RequestId::BYTES);
        self.request_id(ticket).put(&mut context);
        let context = context.freeze();
        let error = match self.raw.read_index(context.clone()) {
            Ok(()) => {
                self.waiting.reads.requested(context, batch);
                return;
            }
            Err(ordo_raft::Error::NoLeader | ordo_raft::Error::NotLeader { .. }) => {
                ReadError::NoLeader
            }
            Err(e) => ReadError::Rejected(e.to_string()),
        };
        for ticket in batch {
            self.answer(ticket, Answer::Read(Err(error.clone())));
        }
    }

    fn answer_applied_reads(&mut self) {
        for (ticket, index) in self.waiting.reads.take_applied(self.apply.applied) {
            inc(&self.metrics.reads, 1);
            self.answer(ticket, Answer::Read(Ok(index)));
        }
    }

    /// The group's status as this node sees it.
    pub fn status(&self) -> GroupStatus {
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
            group_id: self.config.group_id,
            node_id: self.config.node_id,
            role: s.soft_state.role,
            term: s.hard_state.term,
            leader: s.soft_state.leader_id,
            commit_index: s.hard_state.commit,
            applied_index: self.apply.applied,
            first_index: ordo_raft::Storage::first_index(&self.storage),
            last_index: last,
            snapshot_index: self.storage.snapshot_meta().index,
            conf_state: self.raw.conf_state(),
            peers,
            quiesced: self.is_quiesced(),
        }
    }
}

/// A membership change as the Raft core's `ConfChange`, with the request id and the
/// node's address in its context.
pub(crate) fn membership_conf_change(id: RequestId, change: &MembershipChange) -> Bytes {
    let (kind, node_id, addr) = match change {
        MembershipChange::AddLearner { id, addr } => (ConfChangeKind::AddLearner, *id, Some(addr)),
        MembershipChange::AddVoter { id, addr } => (ConfChangeKind::AddVoter, *id, Some(addr)),
        MembershipChange::Remove { id } => (ConfChangeKind::Remove, *id, None),
    };
    with_request_context(ConfChange::single(kind, node_id), id, addr.copied()).encode()
}

/// `cc` with the request id, and the address of the node it adds, in its context.
fn with_request_context(mut cc: ConfChange, id: RequestId, addr: Option<SocketAddr>) -> ConfChange {
    let mut context = BytesMut::new();
    id.put(&mut context);
    if let Some(addr) = addr {
        context.put_slice(addr.to_string().as_bytes());
    }
    cc.context = context.freeze();
    cc
}

/// The request id a membership change carries in its context.
pub(crate) fn membership_request(cc: &ConfChange) -> Option<RequestId> {
    let mut ctx = cc.context.clone();
    if ctx.len() < RequestId::BYTES {
        return None;
    }
    RequestId::get(&mut ctx).ok()
}

/// The peer address a membership change carries, if any.
pub(crate) fn membership_addr(cc: &ConfChange) -> Option<SocketAddr> {
    membership_request(cc)?;
    let text = std::str::from_utf8(cc.context.get(RequestId::BYTES..)?).ok()?;
    text.parse().ok()
}
