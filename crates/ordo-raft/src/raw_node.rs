//! The runtime's handle on one Raft group: feed it inputs, take a [`Ready`], carry it
//! out, call [`RawNode::advance`].
//!
//! # Storage failures
//!
//! When a read from [`Storage`] fails (an I/O error, a checksum mismatch: any error where
//! the core cannot carry on without the answer), the node stops. It records the error
//! (the first one: a stopped node reads nothing more) and the input that met it returns
//! it as [`Error::Storage`] (`tick`, which returns nothing, leaves it to
//! [`RawNode::storage_failure`]). From then on:
//!
//! - every input that returns a `Result` returns [`Error::Storage`] with that error and
//!   changes nothing; `tick`, `report_unreachable` and `report_snapshot` do nothing;
//! - [`RawNode::has_ready`] is false and [`RawNode::ready`] hands out an empty `Ready`:
//!   whatever the failing input had queued (messages, entries, a hard state) is dropped.
//!   Nothing decided after the failure leaves, so the node never grants a vote,
//!   acknowledges an append or sends entries on the strength of a read that failed;
//!   dropping the rest is what a lost message or a crash before an fsync does anyway;
//! - a `Ready` handed out *before* the failure is still carried out as usual (it was
//!   decided on reads that succeeded); `advance` and its halves then do nothing;
//! - [`RawNode::storage_failure`] returns the error, with the storage's own description,
//!   so that the runtime can stop the group and say why.
//!
//! The node keeps the role, term and indexes it had; it is not restarted in place. The
//! runtime reopens its storage (or replaces the node) to go on.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::Config;
use crate::error::{Error, StorageError};
use crate::message::Message;
use crate::raft::{EntryId, Raft, SnapshotStatus, StateRole};
use crate::storage::Storage;
use crate::tracker::progress::ProgressState;
use crate::types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, NodeId, ReadState, Snapshot, Term,
};

/// Volatile state worth reporting when it changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    /// The known leader, or [`INVALID_ID`](crate::INVALID_ID).
    pub leader_id: NodeId,
    /// This node's role.
    pub role: StateRole,
}

/// Work for the runtime, produced by [`RawNode::ready`].
///
/// # Persistence contract
///
/// The runtime must carry out a `Ready` in this order:
///
/// 1. Send [`messages`](Ready::messages) at once. They promise nothing about local
///    durability: a leader's appends and heartbeats, vote requests, snapshots. A leader
///    therefore writes its own log *in parallel* with replicating it.
/// 2. Make durable, in this order: [`snapshot`](Ready::snapshot) (if any), then
///    [`entries`](Ready::entries) (overwriting any stored entries at the same or later
///    indexes), then [`hard_state`](Ready::hard_state) — and fsync. After this,
///    [`Storage`] must return them.
/// 3. Only then send [`persisted_messages`](Ready::persisted_messages): append
///    acknowledgements and vote answers. Each promises that this node durably holds the
///    acknowledged entries or durably recorded its vote; sending one early can lose an
///    acknowledged write or elect two leaders in one term after a crash.
/// 4. Apply [`committed_entries`](Ready::committed_entries) in order (and install the
///    snapshot's data into the state machine first, if there is one). Committed entries
///    are never beyond what is durable locally, so applying never gets ahead of this
///    node's own disk. Answer [`read_states`](Ready::read_states) once the applied index
///    reaches each one's index.
/// 5. Call [`RawNode::advance`]. Only then does the core count its own entries towards
///    the commit quorum, count a candidate's vote for itself, and consider the committed
///    entries applied (configuration changes among them take effect here).
///
/// Inputs (`step`, `tick`, `propose`, …) may be given between `ready` and `advance`;
/// `ready` must not be called again before `advance`.
///
/// A runtime that applies on another thread splits step 5: [`RawNode::advance_append`]
/// after step 3 (then `ready` may be called again, and committed entries already handed
/// out are not repeated), and [`RawNode::advance_apply_to`] whenever the state machine has
/// applied up to an index.
#[derive(Debug, Default)]
pub struct Ready {
    /// Role or leader changed.
    pub soft_state: Option<SoftState>,
    /// Hard state to persist, when it changed.
    pub hard_state: Option<HardState>,
    /// Answered reads.
    pub read_states: Vec<ReadState>,
    /// Entries to append to durable storage.
    pub entries: Vec<Entry>,
    /// A snapshot from the leader to install.
    pub snapshot: Option<Snapshot>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Messages that may be sent before anything is persisted.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after the entries, snapshot and hard state of this
    /// `Ready` are durable.
    pub persisted_messages: Vec<Message>,
    must_sync: bool,
}

impl Ready {
    /// Whether the writes of this `Ready` must be fsynced before `persisted_messages` are
    /// sent: true when entries, a snapshot, or a new term or vote are to be persisted. A
    /// change of the commit index alone need not be synced.
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }
}

/// What an outstanding `Ready` handed out, to acknowledge on `advance`.
#[derive(Debug)]
struct ReadyRecord {
    last_entry: Option<(Index, Term)>,
    snapshot_index: Option<Index>,
    apply: Option<ApplyBatch>,
    hard_state: HardState,
}

/// Committed entries handed out and not yet reported applied.
#[derive(Debug)]
struct ApplyBatch {
    first_index: Index,
    last_index: Index,
    /// Payload bytes, released from the uncommitted budget when the batch is applied.
    bytes: u64,
    conf_changes: VecDeque<(Index, ConfChange)>,
}

/// Replication progress of one peer, as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// The highest index known replicated on the peer.
    pub match_index: Index,
    /// The next index the leader will send.
    pub next_index: Index,
    /// Flow control state.
    pub state: ProgressState,
    /// Heard from within the current check-quorum round.
    pub recent_active: bool,
    /// A learner.
    pub is_learner: bool,
}

/// A summary of the node for monitoring (`/status`, lag reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// Role and known leader.
    pub soft_state: SoftState,
    /// The applied index.
    pub applied_index: Index,
    /// The last index of the log.
    pub last_index: Index,
    /// Progress of every member; empty unless this node is the leader.
    pub progress: BTreeMap<NodeId, PeerProgress>,
}

/// A Raft node driven by its runtime.
pub struct RawNode<S: Storage> {
    raft: Raft<S>,
    prev_soft: SoftState,
    prev_hard: HardState,
    outstanding: Option<ReadyRecord>,
    unapplied: VecDeque<ApplyBatch>,
    /// The first storage read that failed; the node is stopped once this is set (see the
    /// module documentation).
    storage_failure: Option<StorageError>,
}

impl<S: Storage> RawNode<S> {
    /// Creates a node from its configuration and storage (empty for a new node, or what
    /// the node persisted before a restart). A durable commit index beyond the durable
    /// log is lowered to the last index (the leader will tell the node again); one below
    /// `Config::applied_index` is raised to it (applied entries were committed).
    pub fn new(config: Config, storage: S) -> Result<RawNode<S>, Error> {
        let raft = Raft::new(config, storage)?;
        let prev_soft = SoftState {
            leader_id: raft.leader_id,
            role: raft.role,
        };
        let prev_hard = raft.hard_state();
        Ok(RawNode {
            raft,
            prev_soft,
            prev_hard,
            outstanding: None,
            unapplied: VecDeque::new(),
            storage_failure: None,
        })
    }

    /// The storage read failure that stopped this node, if one did: the first error the
    /// storage returned where the core could not do without the answer, with the
    /// storage's own description (for a disk, the file and byte offset).
    pub fn storage_failure(&self) -> Option<&StorageError> {
        self.storage_failure.as_ref()
    }

    /// Stops the node on its first storage failure.
    fn record_storage_failure(&mut self, error: StorageError) {
        if self.storage_failure.is_some() {
            return;
        }
        tracing::error!(
            node = self.raft.id,
            term = self.raft.term,
            %error,
            "storage read failed; the node stops"
        );
        let r = &mut self.raft;
        // Decided from state that could not be read in full: none of it may leave.
        r.msgs.clear();
        r.msgs_after_persist.clear();
        r.read_states.clear();
        r.need_bcast = false;
        self.storage_failure = Some(error);
    }

    /// Refuses an input once the node has stopped.
    fn check_running(&self) -> Result<(), Error> {
        match &self.storage_failure {
            Some(e) => Err(Error::Storage(e.clone())),
            None => Ok(()),
        }
    }

    /// Records a storage failure an input ran into; the input returns it.
    fn note<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(Error::Storage(e)) = &result {
            self.record_storage_failure(e.clone());
        }
        result
    }

    /// Advances logical time by one tick: drives election timeouts and heartbeats. A
    /// storage failure met on the way (reading the log to campaign) is reported by
    /// [`RawNode::storage_failure`].
    pub fn tick(&mut self) {
        if self.storage_failure.is_some() {
            return;
        }
        if let Err(e) = self.raft.tick() {
            self.record_storage_failure(e);
        }
    }

    /// Feeds a message from a peer. Stale or malformed messages are ignored.
    pub fn step(&mut self, message: Message) -> Result<(), Error> {
        self.check_running()?;
        let result = self.raft.step(message);
        self.note(result)
    }

    /// Starts an election now (as an elapsed election timeout would).
    pub fn campaign(&mut self) -> Result<(), Error> {
        self.check_running()?;
        if !self.raft.promotable() {
            return Err(Error::UnknownNode(self.raft.id));
        }
        let result = self.raft.hup(false).map_err(Error::from);
        self.note(result)
    }

    /// Proposes `data` for the log. On a follower this fails with
    /// [`Error::NotLeader`] naming the leader to forward to, or [`Error::NoLeader`].
    pub fn propose(&mut self, data: Bytes) -> Result<EntryId, Error> {
        self.propose_batch([data])
    }

    /// Proposes several entries at once; returns the id of the last. All or none are
    /// accepted.
    pub fn propose_batch(
        &mut self,
        datas: impl IntoIterator<Item = Bytes>,
    ) -> Result<EntryId, Error> {
        self.check_running()?;
        let result = self.raft.propose(EntryKind::Normal, datas);
        self.note(result)
    }

    /// Proposes a membership change. One change may be pending at a time.
    pub fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<EntryId, Error> {
        self.check_running()?;
        let result = self.raft.propose_conf_change(cc);
        self.note(result)
    }

    /// Requests a linearizable read tagged with `context` (unique per request). The
    /// answer arrives as a [`ReadState`] in a later `Ready`; a follower forwards the
    /// request to the leader.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), Error> {
        self.check_running()?;
        let result = self.raft.read_index(context);
        self.note(result)
    }

    /// Asks the leader to hand leadership to `target` (forwarded from a follower).
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        self.check_running()?;
        let result = self.raft.transfer_leader(target);
        self.note(result)
    }

    /// The transport could not reach `id`; the leader stops streaming to it and probes.
    pub fn report_unreachable(&mut self, id: NodeId) {
        if self.storage_failure.is_none() {
            self.raft.report_unreachable(id);
        }
    }

    /// Reports the outcome of sending a snapshot to `id`.
    pub fn report_snapshot(&mut self, id: NodeId, status: SnapshotStatus) {
        if self.storage_failure.is_none() {
            self.raft.report_snapshot(id, status);
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader_id: self.raft.leader_id,
            role: self.raft.role,
        }
    }

    /// Whether [`RawNode::ready`] has anything to hand out. Always false once a storage
    /// read has failed.
    pub fn has_ready(&self) -> bool {
        if self.outstanding.is_some() || self.storage_failure.is_some() {
            return false;
        }
        self.has_work_beyond(self.prev_hard, None, None)
    }

    /// Whether the next [`RawNode::ready`] would hand out something beyond what the
    /// outstanding `Ready` already did: new entries, messages, a changed hard or soft state,
    /// read states, committed entries. With no `Ready` outstanding, [`RawNode::has_ready`].
    /// A runtime asks this to learn whether anything waits for the outstanding `Ready` to be
    /// acknowledged.
    pub fn has_ready_behind(&self) -> bool {
        let Some(rec) = &self.outstanding else {
            return self.has_ready();
        };
        if self.storage_failure.is_some() {
            return false;
        }
        self.has_work_beyond(rec.hard_state, rec.last_entry, rec.snapshot_index)
    }

    /// Whether a `Ready` would hold anything beyond one that handed out `hard_state`,
    /// entries through `last_entry` and the snapshot at `snapshot_index`. The entries a
    /// `Ready` handed out stay in the unstable log until they are durable; a follower that
    /// cut them and appended others ends with another (index, term).
    fn has_work_beyond(
        &self,
        hard_state: HardState,
        last_entry: Option<(Index, Term)>,
        snapshot_index: Option<Index>,
    ) -> bool {
        let r = &self.raft;
        let last_unstable = r.log.unstable.entries.last().map(|e| (e.index, e.term));
        let unstable_snapshot = r.log.unstable.snapshot.as_ref().map(|s| s.meta.index);
        self.soft_state() != self.prev_soft
            || r.hard_state() != hard_state
            || last_unstable.is_some_and(|last| Some(last) != last_entry)
            || unstable_snapshot.is_some_and(|index| Some(index) != snapshot_index)
            || !r.msgs.is_empty()
            || !r.msgs_after_persist.is_empty()
            || !r.read_states.is_empty()
            || r.log.has_next_committed_entries()
            || (r.need_bcast && r.role == StateRole::Leader)
    }

    /// For a leader, whether its own entries becoming durable would let the commit index
    /// advance, given what the other voters have acknowledged so far: it is the only voter,
    /// or enough of the others hold entries past the commit index. False for any other
    /// role. (It may say true where the term rule then keeps the commit index where it is.)
    pub fn own_append_would_commit(&self) -> bool {
        let r = &self.raft;
        if r.role != StateRole::Leader {
            return false;
        }
        let last = r.log.last_index();
        let progress = r.tracker.progress();
        let committed = r.tracker.config().voters.committed_index(|id| {
            if id == r.id {
                Some(last)
            } else {
                progress.get(&id).map(|p| p.match_index)
            }
        });
        committed > r.log.committed
    }

    /// Collects the work to do. See [`Ready`] for the order in which to carry it out.
    ///
    /// Empty once a storage read has failed, including when reading what this `Ready`
    /// would hand out (entries to send, committed entries) fails: see
    /// [`RawNode::storage_failure`].
    ///
    /// # Panics
    /// If the previous `Ready` has not been acknowledged with [`RawNode::advance`].
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.outstanding.is_none(),
            "ready() called before advance() of the previous Ready"
        );
        if self.storage_failure.is_some() {
            return Ready::default();
        }
        if let Err(e) = self.raft.flush_bcast() {
            self.record_storage_failure(e);
            return Ready::default();
        }
        let max_bytes = self.raft.cfg.max_committed_bytes_per_ready;
        let committed_entries = match self.raft.log.next_committed_entries(max_bytes) {
            Ok(entries) => entries,
            Err(e) => {
                self.record_storage_failure(e);
                return Ready::default();
            }
        };
        let r = &mut self.raft;
        let soft = SoftState {
            leader_id: r.leader_id,
            role: r.role,
        };
        let hs = r.hard_state();
        let entries = r.log.unstable.entries.clone();
        let snapshot = r.log.unstable.snapshot.clone();
        let apply = match (committed_entries.first(), committed_entries.last()) {
            (Some(first), Some(last)) => {
                r.log.applying_to(last.index);
                Some(ApplyBatch {
                    first_index: first.index,
                    last_index: last.index,
                    bytes: committed_entries.iter().map(|e| e.data.len() as u64).sum(),
                    conf_changes: committed_entries
                        .iter()
                        .filter(|e| e.kind == EntryKind::ConfChange)
                        .filter_map(|e| Some((e.index, ConfChange::decode(&e.data).ok()?)))
                        .collect(),
                })
            }
            _ => None,
        };
        let must_sync = !entries.is_empty()
            || snapshot.is_some()
            || hs.term != self.prev_hard.term
            || hs.vote != self.prev_hard.vote;
        let record = ReadyRecord {
            last_entry: entries.last().map(|e| (e.index, e.term)),
            snapshot_index: snapshot.as_ref().map(|s| s.meta.index),
            apply,
            hard_state: hs,
        };
        let ready = Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            hard_state: (hs != self.prev_hard).then_some(hs),
            read_states: std::mem::take(&mut r.read_states),
            entries,
            snapshot,
            committed_entries,
            messages: std::mem::take(&mut r.msgs),
            persisted_messages: std::mem::take(&mut r.msgs_after_persist),
            must_sync,
        };
        self.prev_soft = soft;
        self.outstanding = Some(record);
        ready
    }

    /// Acknowledges the last `Ready`: its writes are durable, its persisted messages sent
    /// and its committed entries applied. Equivalent to [`RawNode::advance_append`]
    /// followed by [`RawNode::advance_apply_to`] the last committed entry it handed out.
    pub fn advance(&mut self) {
        let last_committed = self
            .outstanding
            .as_ref()
            .and_then(|r| r.apply.as_ref())
            .map(|a| a.last_index);
        self.advance_append();
        if let Some(index) = last_committed {
            self.advance_apply_to(index);
        }
    }

    /// Acknowledges only the durable half of the last `Ready` (steps 2 and 3 of the
    /// contract), for runtimes that apply committed entries on another thread: `ready` may
    /// be called again at once. Report applying later with [`RawNode::advance_apply_to`].
    pub fn advance_append(&mut self) {
        let Some(rec) = self.outstanding.take() else {
            return;
        };
        if self.storage_failure.is_some() {
            return;
        }
        if let Err(e) = self.advance_append_record(rec) {
            self.record_storage_failure(e);
        }
    }

    fn advance_append_record(&mut self, rec: ReadyRecord) -> Result<(), StorageError> {
        self.prev_hard = rec.hard_state;
        let r = &mut self.raft;
        if let Some(index) = rec.snapshot_index {
            r.log.stable_snap_to(index);
            if index > r.log.applied {
                r.log.applied = index;
                r.log.applying = r.log.applying.max(index);
            }
            // Batches the snapshot covers are superseded, configuration changes included.
            while self
                .unapplied
                .front()
                .is_some_and(|b| b.last_index <= index)
            {
                self.unapplied.pop_front();
            }
        }
        if let Some((index, term)) = rec.last_entry {
            // The contract: storage returns what the Ready asked to persist before
            // `advance`. Catch a runtime that forgot, before it loses the entries. A read
            // that fails proves nothing either way: the node stops without counting them.
            match r.log.storage.term(index) {
                Ok(_) => {}
                Err(e) if e.is_absent() => assert!(
                    r.log.storage.first_index() > index,
                    "advance(): entry {index} of the Ready is not in storage ({e:?})"
                ),
                Err(e) => return Err(e),
            }
            r.on_persisted(index, term)?;
        }
        if rec.hard_state.term == r.term && rec.hard_state.vote == r.id {
            r.on_vote_persisted()?;
        }
        if let Some(batch) = rec.apply {
            self.unapplied.push_back(batch);
        }
        Ok(())
    }

    /// The state machine has applied every committed entry handed out up to `index`.
    /// Configuration changes among them take effect now, in order.
    pub fn advance_apply_to(&mut self, index: Index) {
        if self.storage_failure.is_some() {
            return;
        }
        if let Err(e) = self.apply_to(index) {
            self.record_storage_failure(e);
        }
    }

    fn apply_to(&mut self, index: Index) -> Result<(), StorageError> {
        let r = &mut self.raft;
        while let Some(batch) = self.unapplied.front_mut() {
            if batch.first_index > index {
                break;
            }
            let upto = index.min(batch.last_index);
            while batch.conf_changes.front().is_some_and(|(i, _)| *i <= upto) {
                let Some((i, cc)) = batch.conf_changes.pop_front() else {
                    break;
                };
                // The change takes effect as its entry is applied, not before.
                r.on_applied(i, 0);
                r.apply_conf_change(&cc)?;
            }
            if upto == batch.last_index {
                r.on_applied(upto, batch.bytes);
                self.unapplied.pop_front();
            } else {
                r.on_applied(upto, 0);
                batch.first_index = upto + 1;
                break;
            }
        }
        r.maybe_auto_leave()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.raft.term
    }

    /// The current role.
    pub fn role(&self) -> StateRole {
        self.raft.role
    }

    /// The known leader, or [`INVALID_ID`](crate::INVALID_ID).
    pub fn leader_id(&self) -> NodeId {
        self.raft.leader_id
    }

    /// The commit index.
    pub fn commit_index(&self) -> Index {
        self.raft.log.committed
    }

    /// The applied index.
    pub fn applied_index(&self) -> Index {
        self.raft.log.applied
    }

    /// The last index of the log (durable or not).
    pub fn last_index(&self) -> Index {
        self.raft.log.last_index()
    }

    /// The configuration as of the applied index — the one to record with a snapshot
    /// taken at that index.
    pub fn conf_state(&self) -> ConfState {
        self.raft.tracker.config().to_conf_state()
    }

    /// Bytes of entries proposed by this leader and not yet applied.
    pub fn uncommitted_bytes(&self) -> u64 {
        self.raft.uncommitted_bytes
    }

    /// The node a leadership transfer is aimed at, if one is in progress.
    pub fn lead_transferee(&self) -> Option<NodeId> {
        self.raft.lead_transferee
    }

    /// A summary for monitoring.
    pub fn status(&self) -> Status {
        let r = &self.raft;
        let progress = if r.role == StateRole::Leader {
            r.tracker
                .progress()
                .iter()
                .map(|(&id, p)| {
                    (
                        id,
                        PeerProgress {
                            match_index: p.match_index,
                            next_index: p.next_index,
                            state: p.state,
                            recent_active: p.recent_active,
                            is_learner: p.is_learner,
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Status {
            id: r.id,
            hard_state: r.hard_state(),
            soft_state: self.soft_state(),
            applied_index: r.log.applied,
            last_index: r.log.last_index(),
            progress,
        }
    }

    /// The storage.
    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    /// The storage, to write what a `Ready` asks for.
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }

    /// Index of the latest configuration change this leader proposed.
    pub fn pending_conf_index(&self) -> Index {
        self.raft.pending_conf_index()
    }

    /// Ticks since the last heartbeat from a leader (follower) or since the last
    /// check-quorum round (leader).
    pub fn election_elapsed_ticks(&self) -> u64 {
        self.raft.election_elapsed()
    }

    /// Stops (`true`) or resumes handing out committed entries in [`Ready`]s, for a
    /// runtime whose queue to the state machine is full. Everything else keeps flowing
    /// while paused — messages (heartbeats among them), entries and hard state to persist,
    /// a snapshot to install ([`RawNode::has_pending_snapshot`]) — so a slow state machine
    /// never stops the node from taking part in elections and replication; entries
    /// committed meanwhile are handed out, in order, once resumed.
    pub fn pause_applying(&mut self, paused: bool) {
        self.raft.log.applying_paused = paused;
    }

    /// Whether a snapshot from the leader waits to be handed out in a [`Ready`] (it is
    /// installed and restored even while applying is paused).
    pub fn has_pending_snapshot(&self) -> bool {
        self.raft.log.unstable.snapshot.is_some()
    }

    /// Reads this leader has yet to answer (its own and its followers'): waiting for a
    /// quorum to acknowledge a heartbeat, or for an entry of its term to commit.
    pub fn pending_read_count(&self) -> usize {
        self.raft.pending_read_count()
    }

    /// Quiescence, follower side: the leader of `term`, `leader`, says the group is idle
    /// with every entry through `commit` committed, and stops heartbeating. If this node
    /// follows `leader` in `term` and its log ends at `commit`, it learns the commit index
    /// and returns true: the runtime may stop ticking it (until
    /// [`RawNode::resume_ticking`]). Otherwise nothing changes.
    pub fn quiesce_as_follower(&mut self, leader: NodeId, term: Term, commit: Index) -> bool {
        self.storage_failure.is_none() && self.raft.quiesce_as_follower(leader, term, commit)
    }

    /// Quiescence: the runtime stopped calling [`RawNode::tick`] for a while (an idle
    /// group) and calls it again from now on. Voids what rested on elapsed time across
    /// the pause: a leader's lease (lease reads wait for a heartbeat round acknowledged
    /// after this call) and its check-quorum round, a follower's election timer (its
    /// leader gets a whole election timeout to be heard from). A leader sends nothing
    /// for the resume itself: it heartbeats on its next heartbeat tick, and whatever woke
    /// it (a proposal, a read) sends its own messages at once.
    pub fn resume_ticking(&mut self) {
        if self.storage_failure.is_none() {
            self.raft.resume_ticking();
        }
    }
}
