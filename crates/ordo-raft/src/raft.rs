//! The Raft state machine: roles, elections, replication, commitment, reads, membership
//! and leadership transfer. Section numbers refer to the Raft paper (Ongaro & Ousterhout,
//! 2014) and, where marked "thesis", to Ongaro's dissertation.
//!
//! Handlers that read the log return `Result<_, StorageError>`: an error here always means
//! a read failed (answers such as "compacted" are handled where they are expected), and
//! `?` ends the handler before anything is decided from the read. [`RawNode`] records the
//! failure and stops the node, so whatever the handler queued before failing never leaves.
//!
//! [`RawNode`]: crate::RawNode

use bytes::Bytes;

use crate::confchange;
use crate::config::{Config, MutationKind, ReadOnlyOption};
use crate::error::{Error, StorageError};
use crate::log::RaftLog;
use crate::message::{ConflictHint, Message, MessageBody};
use crate::prng::Prng;
use crate::quorum::VoteResult;
use crate::read_only::{ReadIndexStatus, ReadOnly};
use crate::storage::Storage;
use crate::tracker::progress::{Progress, ProgressState, SNAPSHOT_TIMEOUT_ROUNDS};
use crate::tracker::{ProgressTracker, TrackerConfig};
use crate::types::{
    ConfChange, Entry, EntryKind, HardState, Index, NodeId, ReadState, Snapshot, Term, INVALID_ID,
};

/// A node's role (§5.1, plus the pre-candidate of thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateRole {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether an election could be won, without changing its term.
    PreCandidate,
    /// Campaigns for leadership in a new term.
    Candidate,
    /// Leads the cluster.
    Leader,
}

/// The identity of a log entry: its term and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryId {
    /// The entry's term.
    pub term: Term,
    /// The entry's index.
    pub index: Index,
}

/// What became of a snapshot sent to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// The follower received and installed it.
    Finish,
    /// Sending failed; the leader probes again after a heartbeat.
    Failure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CampaignKind {
    PreElection,
    Election,
    Transfer,
}

pub(crate) struct Raft<S: Storage> {
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) vote: NodeId,
    pub(crate) log: RaftLog<S>,
    pub(crate) tracker: ProgressTracker,
    pub(crate) role: StateRole,
    pub(crate) leader_id: NodeId,
    pub(crate) lead_transferee: Option<NodeId>,
    /// Index of the latest configuration change proposed by this leader; a new change is
    /// refused until it is applied (one change at a time, thesis §4.1).
    pending_conf_index: Index,
    /// Bytes of entries this leader appended and has not yet applied.
    pub(crate) uncommitted_bytes: u64,
    read_only: ReadOnly,
    /// Reads that arrived before this leader committed an entry of its own term.
    pending_reads: Vec<(NodeId, Bytes)>,
    /// Logical time: ticks since this node started.
    now_ticks: u64,
    /// A TimeoutNow was sent in this term: no more lease reads until the next term.
    lease_forfeited: bool,
    /// A follower's knowledge of its leader's log: the last index through which its own log
    /// is known to match it, in this term (the end of the last append it accepted, or the
    /// snapshot it installed). A commit notice commits no further.
    verified_through: Index,
    election_elapsed_ticks: u64,
    heartbeat_elapsed_ticks: u64,
    randomized_election_timeout_ticks: u64,
    pub(crate) cfg: Config,
    rng: Prng,
    pub(crate) msgs: Vec<Message>,
    pub(crate) msgs_after_persist: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    /// A candidate's own vote counts only once its hard state (term, vote) is durable.
    pub(crate) self_vote_pending: bool,
    /// Appends are due to every follower (new entries or a new commit index); sent when
    /// the next `Ready` is built so that many proposals share one message.
    pub(crate) need_bcast: bool,
    last_bcast_commit: Index,
    /// A leader's commit index moved while a follower's answer was on its way, and the
    /// followers it did not reach by an append were not told: the next answer, or the next
    /// heartbeat, tells them (see [`Raft::flush_bcast`]).
    commit_notices_held: bool,
}

impl<S: Storage> Raft<S> {
    pub(crate) fn new(cfg: Config, storage: S) -> Result<Raft<S>, Error> {
        cfg.validate()?;
        let rs = storage.initial_state();
        let mut hs = rs.hard_state;
        let last = storage.last_index();
        let first = storage.first_index();
        // A durable commit index beyond the durable log means the hard state outlived
        // entries written before it. The commit index is only a hint (the leader tells us
        // again), so forget the part we cannot back with entries.
        hs.commit = hs.commit.min(last);
        if cfg.applied_index > last {
            return Err(Error::InvalidConfig(format!(
                "applied index {} is beyond the last stored index {last}",
                cfg.applied_index
            )));
        }
        // Applied entries were committed, even if the commit index recording it was not
        // synced before a crash.
        hs.commit = hs.commit.max(cfg.applied_index).max(first - 1);
        let log = RaftLog::new(storage, hs.commit, cfg.applied_index);
        let mut tracker = ProgressTracker::new(
            cfg.max_inflight_msgs,
            cfg.max_append_bytes.saturating_mul(64),
        );
        tracker.apply_config(
            TrackerConfig::from_conf_state(&rs.conf_state),
            Default::default(),
            last + 1,
        );
        let mut r = Raft {
            id: cfg.id,
            term: hs.term,
            vote: hs.vote,
            log,
            tracker,
            role: StateRole::Follower,
            leader_id: INVALID_ID,
            lead_transferee: None,
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            read_only: ReadOnly::default(),
            pending_reads: Vec::new(),
            now_ticks: 0,
            lease_forfeited: false,
            verified_through: 0,
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: cfg.election_timeout_ticks,
            rng: Prng::new(cfg.seed, cfg.id),
            cfg,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            self_vote_pending: false,
            need_bcast: false,
            last_bcast_commit: 0,
            commit_notices_held: false,
        };
        // Configuration changes between the snapshot and the applied index were applied
        // before the restart; replay them so the configuration matches the applied state.
        let applied = r.log.applied;
        if applied >= first {
            let entries = r.log.slice(first, applied + 1, u64::MAX)?;
            for e in entries.iter().filter(|e| e.kind == EntryKind::ConfChange) {
                if let Ok(cc) = ConfChange::decode(&e.data) {
                    r.apply_conf_change(&cc)?;
                }
            }
        }
        let term = r.term;
        r.become_follower(term, INVALID_ID);
        Ok(r)
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Whether this node may campaign: a voter with no snapshot being installed.
    pub(crate) fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id) && self.log.unstable.snapshot.is_none()
    }

    fn mutation(&self, m: MutationKind) -> bool {
        self.cfg.mutation_is(m)
    }

    // ---- Sending ---------------------------------------------------------------------

    fn send(&mut self, to: NodeId, term: Term, body: MessageBody) {
        let m = Message {
            from: self.id,
            to,
            term,
            body,
        };
        // Persistence ordering (DESIGN.md): a vote grant or an append acknowledgement
        // promises durable state, so it leaves only after this Ready is persisted.
        let after_persist = match m.body {
            MessageBody::AppendResponse { .. } => {
                !self.mutation(MutationKind::AckAppendBeforeDurable)
            }
            MessageBody::RequestVoteResponse { .. } => true,
            _ => false,
        };
        if after_persist {
            self.msgs_after_persist.push(m);
        } else {
            self.msgs.push(m);
        }
    }

    fn send_term(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send(to, term, body);
    }

    /// Sends the follower the entries it lacks, or a snapshot when they are compacted.
    /// Returns whether a message was sent. A failed read sends nothing: neither entries
    /// nor a snapshot in their place.
    fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> Result<bool, StorageError> {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return Ok(false);
        };
        if pr.is_paused() {
            return Ok(false);
        }
        let next = pr.next_index;
        let prev_index = next - 1;
        let (prev_term, entries) = match (
            self.log.term(prev_index),
            self.log.entries(next, self.cfg.max_append_bytes),
        ) {
            (Ok(t), Ok(e)) => (t, e),
            // A read that failed outright stops the node even if the other one only found
            // its entry compacted (the guard is tried for both alternatives).
            (Err(e), _) | (_, Err(e)) if !e.is_absent() => return Err(e),
            _ => return self.maybe_send_snapshot(to),
        };
        if entries.is_empty() && !send_if_empty {
            return Ok(false);
        }
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let last = entries.last().map(|e| e.index);
        let commit = self.log.committed;
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.sent_entries(last, bytes);
            // The follower takes the commit index only up to the last entry it checked.
            let told = commit.min(last.unwrap_or(prev_index));
            pr.commit_sent = pr.commit_sent.max(told);
        }
        self.send_term(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        Ok(true)
    }

    fn maybe_send_snapshot(&mut self, to: NodeId) -> Result<bool, StorageError> {
        let Some(pr) = self.tracker.progress.get(&to) else {
            return Ok(false);
        };
        if !pr.recent_active {
            // Do not ship a snapshot to a peer that may be down.
            return Ok(false);
        }
        let snapshot = match self.log.snapshot() {
            Ok(s) if !s.is_empty() => s,
            Ok(_) | Err(StorageError::SnapshotTemporarilyUnavailable) => return Ok(false),
            Err(e) => return Err(e),
        };
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            pr.become_snapshot(snapshot.meta.index);
        }
        tracing::info!(
            node = self.id,
            to,
            index = snapshot.meta.index,
            "sending snapshot"
        );
        self.send_term(to, MessageBody::Snapshot { snapshot });
        Ok(true)
    }

    fn peers(&self) -> Vec<NodeId> {
        self.tracker
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    /// Sends pending appends to every follower (called when a `Ready` is built).
    pub(crate) fn flush_bcast(&mut self) -> Result<(), StorageError> {
        if !self.need_bcast || self.role != StateRole::Leader {
            self.need_bcast = false;
            return Ok(());
        }
        self.need_bcast = false;
        let send_empty = self.log.committed > self.last_bcast_commit;
        // A configuration change committed now may remove this leader or a follower once
        // applied, and then no answer releases what is held: its notices go at once.
        let conf_committed = self.pending_conf_index > self.last_bcast_commit;
        self.last_bcast_commit = self.log.committed;
        // While a follower's answer is on its way, the notices wait for it: when it comes,
        // the group is often idle, and the runtime tells every member the commit index as
        // it quiesces the group (one message each instead of a notice and a quiesce); in a
        // busy group, the next append carries the commit index anyway. A follower whose
        // answer never comes leaves the notices to the next heartbeat, which carries the
        // commit index as far as each follower is known to hold.
        let hold = send_empty && !conf_committed && self.answer_awaited();
        if send_empty {
            self.commit_notices_held = hold;
        }
        for id in self.peers() {
            // A follower streaming entries learns a new commit index from a notice it
            // does not answer, or from its next append; only one being probed gets an
            // empty append (whose answer the probe needs).
            let notified = send_empty && !hold && self.maybe_send_commit_notice(id);
            if !notified && !self.is_streaming(id) {
                self.maybe_send_append(id, send_empty)?;
            }
            // Pipelining: fill the in-flight window (bounded by `max_inflight_msgs`).
            while self.maybe_send_append(id, false)? {}
        }
        Ok(())
    }

    /// Whether the leader replicates to `id` in `Replicate` state: it learns of commits by
    /// [`Raft::maybe_send_commit_notice`].
    fn is_streaming(&self, id: NodeId) -> bool {
        self.tracker
            .progress
            .get(&id)
            .is_some_and(|pr| pr.state == ProgressState::Replicate)
    }

    /// Whether a follower streaming entries has some in flight: its answer is expected.
    /// (One reported unreachable is probed instead, so it is not waited for.)
    fn answer_awaited(&self) -> bool {
        let last_index = self.log.last_index();
        self.tracker.progress.iter().any(|(&id, pr)| {
            id != self.id && pr.state == ProgressState::Replicate && pr.match_index < last_index
        })
    }

    /// Sends the notices [`Raft::flush_bcast`] held, once no answer is awaited.
    fn release_commit_notices(&mut self) {
        if !self.commit_notices_held || self.answer_awaited() {
            return;
        }
        self.commit_notices_held = false;
        for id in self.peers() {
            self.maybe_send_commit_notice(id);
        }
    }

    /// Tells a follower in `Replicate` state the commit index it was not yet told, when no
    /// append is left to send it (an append carries the commit index itself). Returns
    /// whether a notice went out.
    fn maybe_send_commit_notice(&mut self, to: NodeId) -> bool {
        let last_index = self.log.last_index();
        let committed = self.log.committed;
        let Some(pr) = self.tracker.progress.get_mut(&to) else {
            return false;
        };
        if pr.state != ProgressState::Replicate || pr.next_index <= last_index {
            return false;
        }
        // Everything through `last_index` was sent; the follower commits only as far as the
        // appends it accepted reach (`handle_commit_notice`). Bounding the notice by what it
        // acknowledged instead would leave a follower whose answer is still on its way
        // without the commit (a member the entry removes, say, which hears nothing more).
        let commit = committed;
        if commit <= pr.commit_sent {
            return false;
        }
        pr.commit_sent = commit;
        self.send_term(to, MessageBody::CommitNotice { commit });
        true
    }

    fn bcast_heartbeat(&mut self) {
        let context = self.read_only.last_pending().cloned().unwrap_or_default();
        self.bcast_heartbeat_with(context);
    }

    fn bcast_heartbeat_with(&mut self, context: Bytes) {
        // Notices held for an answer that has not come within a heartbeat interval go now:
        // a follower whose answer was lost is known to hold less than it does, and the
        // heartbeat's commit index stops at what it is known to hold.
        if std::mem::take(&mut self.commit_notices_held) {
            for id in self.peers() {
                self.maybe_send_commit_notice(id);
            }
        }
        for id in self.peers() {
            let Some(pr) = self.tracker.progress.get(&id) else {
                continue;
            };
            // Never tell a follower to commit beyond what it is known to hold: its
            // entries past `match` may still differ from ours.
            let commit = pr.match_index.min(self.log.committed);
            let sent_tick = self.now_ticks;
            if let Some(pr) = self.tracker.progress.get_mut(&id) {
                pr.commit_sent = pr.commit_sent.max(commit);
            }
            self.send_term(
                id,
                MessageBody::Heartbeat {
                    commit,
                    context: context.clone(),
                    sent_tick,
                },
            );
        }
    }

    // ---- Role changes ------------------------------------------------------------------

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = INVALID_ID;
        }
        self.leader_id = INVALID_ID;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        let base = self.cfg.election_timeout_ticks;
        self.randomized_election_timeout_ticks = base + self.rng.below(base);
        self.lead_transferee = None;
        self.lease_forfeited = false;
        self.verified_through = 0;
        self.tracker.reset_votes();
        self.self_vote_pending = false;
        let last = self.log.last_index();
        let persisted = self.log.persisted_index();
        let (max_msgs, max_bytes) = (
            self.tracker.max_inflight_msgs,
            self.tracker.max_inflight_bytes,
        );
        let id = self.id;
        for (&pid, pr) in self.tracker.progress.iter_mut() {
            let is_learner = pr.is_learner;
            *pr = Progress::new(last + 1, max_msgs, max_bytes);
            pr.is_learner = is_learner;
            if pid == id {
                pr.match_index = persisted;
                pr.recent_active = true;
            }
        }
        self.pending_conf_index = 0;
        self.uncommitted_bytes = 0;
        self.read_only = ReadOnly::default();
        self.pending_reads.clear();
        self.need_bcast = false;
        self.last_bcast_commit = 0;
        self.commit_notices_held = false;
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader_id: NodeId) {
        if self.role != StateRole::Follower || term != self.term {
            tracing::debug!(node = self.id, term, leader = leader_id, "became follower");
        }
        self.reset(term);
        self.leader_id = leader_id;
        self.role = StateRole::Follower;
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(
            self.role,
            StateRole::Leader,
            "a leader cannot become pre-candidate"
        );
        // Term and vote are untouched: a pre-vote changes no durable state (thesis §9.6).
        self.tracker.reset_votes();
        self.self_vote_pending = false;
        self.leader_id = INVALID_ID;
        self.role = StateRole::PreCandidate;
    }

    fn become_candidate(&mut self) {
        assert_ne!(
            self.role,
            StateRole::Leader,
            "a leader cannot become candidate"
        );
        let term = self.term + 1;
        self.reset(term);
        self.vote = self.id;
        self.role = StateRole::Candidate;
        tracing::debug!(node = self.id, term, "became candidate");
    }

    fn become_leader(&mut self) -> Result<(), StorageError> {
        assert_ne!(
            self.role,
            StateRole::Follower,
            "a follower cannot become leader"
        );
        let term = self.term;
        self.reset(term);
        self.leader_id = self.id;
        self.role = StateRole::Leader;
        tracing::info!(
            node = self.id,
            term,
            last_index = self.log.last_index(),
            "became leader"
        );
        let id = self.id;
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            pr.become_replicate();
        }
        // Conservatively treat any configuration change in the uncommitted tail as
        // pending, so a second one cannot be proposed before it is applied.
        self.pending_conf_index = self.log.last_index();
        // The no-op of §8: committing an entry of the new term commits everything before
        // it (§5.4.2) and tells the leader its commit index is current (thesis §6.4).
        let index = self.log.last_index() + 1;
        self.append_entries(vec![Entry::new(term, index, Bytes::new())])
    }

    // ---- Elections ---------------------------------------------------------------------

    pub(crate) fn tick(&mut self) -> Result<(), StorageError> {
        self.now_ticks += 1;
        if self.role == StateRole::Leader {
            self.tick_heartbeat();
            Ok(())
        } else {
            self.tick_election()
        }
    }

    fn tick_election(&mut self) -> Result<(), StorageError> {
        self.election_elapsed_ticks += 1;
        if self.promotable()
            && self.election_elapsed_ticks >= self.randomized_election_timeout_ticks
        {
            self.election_elapsed_ticks = 0;
            self.hup(false)?;
        }
        Ok(())
    }

    fn tick_heartbeat(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.cfg.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            if self.cfg.check_quorum {
                if !self.tracker.quorum_active(self.id) {
                    // Check-quorum: a leader cut off from a majority steps down rather than
                    // serve stale reads or accept writes that cannot commit.
                    let term = self.term;
                    tracing::info!(
                        node = self.id,
                        term,
                        "no quorum heard within an election timeout; stepping down"
                    );
                    self.become_follower(term, INVALID_ID);
                    return;
                }
                let id = self.id;
                for (&pid, pr) in self.tracker.progress.iter_mut() {
                    if pid != id {
                        pr.recent_active = false;
                    }
                }
            }
            // A transfer that did not finish within an election timeout is abandoned
            // (thesis §3.10), so proposals resume.
            self.lead_transferee = None;
            for pr in self.tracker.progress.values_mut() {
                if pr.state == ProgressState::Snapshot {
                    pr.snapshot_rounds += 1;
                    if pr.snapshot_rounds >= SNAPSHOT_TIMEOUT_ROUNDS {
                        // Nobody reported the snapshot's fate: presume it lost and probe.
                        pr.pending_snapshot = 0;
                        pr.become_probe();
                    }
                }
            }
        }
        if self.role != StateRole::Leader {
            return;
        }
        if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.bcast_heartbeat();
        }
    }

    /// Starts an election unless this node is leader, cannot vote, or has configuration
    /// changes committed but not yet applied (it might not be a voter after them).
    pub(crate) fn hup(&mut self, transfer: bool) -> Result<(), StorageError> {
        if self.role == StateRole::Leader || !self.promotable() {
            return Ok(());
        }
        if self.has_unapplied_conf_change()? {
            return Ok(());
        }
        let kind = if transfer {
            CampaignKind::Transfer
        } else if self.cfg.pre_vote {
            CampaignKind::PreElection
        } else {
            CampaignKind::Election
        };
        self.campaign(kind)
    }

    /// Entries between the applied and the commit index are committed and held, so a
    /// failure to read them is a failure, not a reason to campaign anyway.
    fn has_unapplied_conf_change(&self) -> Result<bool, StorageError> {
        let (lo, hi) = (self.log.applied + 1, self.log.committed + 1);
        if lo >= hi {
            return Ok(false);
        }
        let entries = self.log.slice(lo, hi, u64::MAX)?;
        Ok(entries.iter().any(|e| e.kind == EntryKind::ConfChange))
    }

    fn campaign(&mut self, kind: CampaignKind) -> Result<(), StorageError> {
        // Read before changing role or term: a log whose last term cannot be read asks
        // for no votes, and the node stays as it was.
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term()?;
        let vote_term = if kind == CampaignKind::PreElection {
            self.become_pre_candidate();
            // The pre-candidate's own answer needs no durability: it changes nothing.
            self.tracker.record_vote(self.id, true);
            self.term + 1
        } else {
            self.become_candidate();
            // Our own vote counts once (term, vote) is durable (see `on_vote_persisted`).
            self.self_vote_pending = true;
            self.term
        };
        if kind == CampaignKind::PreElection && self.tracker.tally().2 == VoteResult::Won {
            return self.campaign(CampaignKind::Election);
        }
        for id in self.tracker.config.voters.ids() {
            if id == self.id {
                continue;
            }
            let body = if kind == CampaignKind::PreElection {
                MessageBody::RequestPreVote {
                    last_log_index,
                    last_log_term,
                }
            } else {
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    leadership_transfer: kind == CampaignKind::Transfer,
                }
            };
            self.send(id, vote_term, body);
        }
        Ok(())
    }

    /// The runtime made this Ready's hard state durable: a candidate may now count the
    /// vote it cast for itself.
    pub(crate) fn on_vote_persisted(&mut self) -> Result<(), StorageError> {
        if !self.self_vote_pending || self.role != StateRole::Candidate {
            return Ok(());
        }
        self.self_vote_pending = false;
        let id = self.id;
        self.tracker.record_vote(id, true);
        self.check_election_result()
    }

    fn check_election_result(&mut self) -> Result<(), StorageError> {
        match self.tracker.tally().2 {
            VoteResult::Won => {
                if self.role == StateRole::PreCandidate {
                    self.campaign(CampaignKind::Election)?;
                } else {
                    self.become_leader()?;
                }
            }
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, INVALID_ID);
            }
            VoteResult::Pending => {}
        }
        Ok(())
    }

    // ---- Stepping messages -----------------------------------------------------------

    pub(crate) fn step(&mut self, m: Message) -> Result<(), Error> {
        if m.to != self.id || m.from == INVALID_ID || m.from == self.id {
            return Ok(());
        }
        if m.term > self.term {
            let heard_leader = self.leader_id != INVALID_ID
                && self.election_elapsed_ticks < self.cfg.election_timeout_ticks;
            // A restarted node has forgotten which leader it promised; with leases it keeps
            // the promise for one election timeout after starting.
            let restarting = self.cfg.read_only == ReadOnlyOption::LeaseBased
                && self.now_ticks < self.cfg.election_timeout_ticks;
            let in_lease = self.cfg.check_quorum && (heard_leader || restarting);
            match m.body {
                MessageBody::RequestVote {
                    leadership_transfer: false,
                    ..
                }
                | MessageBody::RequestPreVote { .. }
                    if in_lease =>
                {
                    // We heard from a leader within the minimum election timeout: this
                    // candidate cannot win, and a disruptive one must not depose it.
                    return Ok(());
                }
                _ => {}
            }
            match m.body {
                // A pre-vote changes no term; a granted pre-vote carries the future term.
                MessageBody::RequestPreVote { .. }
                | MessageBody::RequestPreVoteResponse { reject: false } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::CommitNotice { .. }
                | MessageBody::Snapshot { .. } => self.become_follower(m.term, m.from),
                MessageBody::RequestVote { .. } => {
                    // Figure 2: only hearing from a leader or granting a vote restarts the
                    // election timer. Adopting a candidate's term does not, so a candidate
                    // with a stale log cannot keep the up-to-date nodes from campaigning.
                    let elapsed = self.election_elapsed_ticks;
                    self.become_follower(m.term, INVALID_ID);
                    self.election_elapsed_ticks = elapsed;
                }
                _ => self.become_follower(m.term, INVALID_ID),
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::CommitNotice { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // A stale leader that cannot learn the new term (pre-vote keeps us from
                    // campaigning to it) would otherwise never step down.
                    self.send_term(
                        m.from,
                        MessageBody::AppendResponse {
                            index: 0,
                            reject: None,
                        },
                    );
                }
                MessageBody::RequestPreVote { .. } => {
                    self.send_term(m.from, MessageBody::RequestPreVoteResponse { reject: true });
                }
                _ => {}
            }
            return Ok(());
        }

        match m.body {
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => {
                self.handle_vote_request(m.from, m.term, last_log_index, last_log_term, false)?;
                Ok(())
            }
            MessageBody::RequestPreVote {
                last_log_index,
                last_log_term,
            } => {
                self.handle_vote_request(m.from, m.term, last_log_index, last_log_term, true)?;
                Ok(())
            }
            _ => {
                match self.role {
                    StateRole::Leader => self.step_leader(m)?,
                    StateRole::Candidate | StateRole::PreCandidate => self.step_candidate(m)?,
                    StateRole::Follower => self.step_follower(m)?,
                }
                Ok(())
            }
        }
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        msg_term: Term,
        last_log_index: Index,
        last_log_term: Term,
        pre: bool,
    ) -> Result<(), StorageError> {
        let can_vote = self.vote == from
            || (self.vote == INVALID_ID && self.leader_id == INVALID_ID)
            || (pre && msg_term > self.term);
        // The voting rule (§5.4.1): only a candidate whose log is at least as up to date
        // as ours can hold every committed entry. A log we cannot read answers nothing:
        // neither a grant nor a refusal.
        let up_to_date = self.mutation(MutationKind::GrantVoteWithoutLogCheck)
            || self.log.is_up_to_date(last_log_index, last_log_term)?;
        if can_vote && up_to_date {
            if pre {
                self.send(
                    from,
                    msg_term,
                    MessageBody::RequestPreVoteResponse { reject: false },
                );
            } else {
                self.election_elapsed_ticks = 0;
                self.vote = from;
                self.send(
                    from,
                    msg_term,
                    MessageBody::RequestVoteResponse { reject: false },
                );
            }
        } else if pre {
            self.send_term(from, MessageBody::RequestPreVoteResponse { reject: true });
        } else {
            self.send_term(from, MessageBody::RequestVoteResponse { reject: true });
        }
        Ok(())
    }

    fn step_leader(&mut self, m: Message) -> Result<(), StorageError> {
        let from = m.from;
        match m.body {
            MessageBody::AppendResponse { index, reject } => {
                self.handle_append_response(from, index, reject)?;
            }
            MessageBody::HeartbeatResponse { context, sent_tick } => {
                self.handle_heartbeat_response(from, context, sent_tick)?;
            }
            MessageBody::ReadIndex { context } if self.tracker.progress.contains_key(&from) => {
                // A follower's read: refusals (queue full) are dropped; it retries.
                storage_failure_of(self.handle_read_index(from, context))?;
            }
            MessageBody::TransferLeader { target } => {
                storage_failure_of(self.handle_transfer_leader(target))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        index: Index,
        reject: Option<ConflictHint>,
    ) -> Result<(), StorageError> {
        let last_index = self.log.last_index();
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.recent_active = true;
        if let Some(hint) = reject {
            // Fast back-tracking (§5.3): skip every entry of the conflicting term at once.
            let mut next_probe = hint.index;
            if hint.term > 0 {
                next_probe = self.log.find_conflict_by_term(hint.index, hint.term)?.0;
            }
            let Some(pr) = self.tracker.progress.get_mut(&from) else {
                return Ok(());
            };
            if pr.lost_acknowledged(index, hint.index, next_probe) {
                tracing::warn!(
                    node = self.id,
                    peer = from,
                    last_index = hint.index,
                    "peer lost entries it had acknowledged; probing it again"
                );
                self.maybe_send_append(from, true)?;
                return Ok(());
            }
            if pr.maybe_decr_to(index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.maybe_send_append(from, true)?;
            }
            return Ok(());
        }
        if index > last_index {
            // An acknowledgement of entries we never sent: ignore it.
            return Ok(());
        }
        let old_paused = pr.is_paused();
        if !pr.maybe_update(index) {
            return Ok(());
        }
        let first_index = self.log.first_index();
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.match_index + 1 >= first_index => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_le(index),
        }
        let match_index = pr.match_index;
        if self.maybe_commit()? {
            self.need_bcast = true;
        } else if old_paused {
            self.maybe_send_append(from, true)?;
        }
        // Pipelining: keep the window full.
        while self.maybe_send_append(from, false)? {}
        // A follower that acknowledged after the commit index moved (the quorum was
        // reached without it) now holds entries it was not told are committed.
        if !self.need_bcast {
            self.maybe_send_commit_notice(from);
            self.release_commit_notices();
        }
        if self.lead_transferee == Some(from) && match_index == self.log.last_index() {
            self.send_timeout_now(from);
        }
        Ok(())
    }

    fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        context: Bytes,
        sent_tick: u64,
    ) -> Result<(), StorageError> {
        let last_index = self.log.last_index();
        let now = self.now_ticks;
        let Some(pr) = self.tracker.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        // A tick from the future is hostile input; never let it extend the lease.
        pr.lease_ack_tick = pr.lease_ack_tick.max(sent_tick.min(now));
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.match_index < last_index {
            self.maybe_send_append(from, true)?;
        }
        if context.is_empty() {
            return Ok(());
        }
        let Some(acks) = self.read_only.recv_ack(from, &context) else {
            return Ok(());
        };
        let won = self
            .tracker
            .config
            .voters
            .vote_result(|id| Some(acks.contains(&id)));
        if won != VoteResult::Won {
            return Ok(());
        }
        for status in self.read_only.advance(&context) {
            self.respond_read(status);
        }
        Ok(())
    }

    /// Whether the leader lease holds (thesis §6.4.1): a quorum acknowledged heartbeats
    /// sent at or after `q`, each of those voters refuses other candidates until its
    /// election timeout has passed since receiving one (check-quorum), so no other leader
    /// can exist before `q + election_timeout_ticks`. One tick is kept in reserve because
    /// the voters' ticks need not be aligned with ours; clock rates are assumed equal.
    fn lease_is_valid(&self) -> bool {
        if self.role != StateRole::Leader || self.lead_transferee.is_some() || self.lease_forfeited
        {
            return false;
        }
        let now = self.now_ticks;
        let id = self.id;
        let p = &self.tracker.progress;
        let q = self.tracker.config.voters.committed_index(|peer| {
            if peer == id {
                Some(now)
            } else {
                p.get(&peer).map(|pr| pr.lease_ack_tick)
            }
        });
        now + 1 < q.saturating_add(self.cfg.election_timeout_ticks)
    }

    fn respond_read(&mut self, status: ReadIndexStatus) {
        if status.from == self.id {
            self.read_states.push(ReadState {
                index: status.index,
                context: status.context,
            });
        } else {
            self.send_term(
                status.from,
                MessageBody::ReadIndexResponse {
                    index: status.index,
                    context: status.context,
                },
            );
        }
    }

    fn committed_entry_in_current_term(&self) -> Result<bool, StorageError> {
        self.log.match_term(self.log.committed, self.term)
    }

    /// ReadIndex on the leader (thesis §6.4).
    pub(crate) fn handle_read_index(&mut self, from: NodeId, context: Bytes) -> Result<(), Error> {
        let limit = self.cfg.max_pending_reads;
        if self.read_only.len() + self.pending_reads.len() >= limit {
            return Err(Error::ReadIndexQueueFull { limit });
        }
        if self.read_only.contains(&context)
            || self.pending_reads.iter().any(|(_, c)| *c == context)
        {
            return Err(Error::DuplicateReadContext);
        }
        if !self.committed_entry_in_current_term()? {
            // Our commit index may lag the previous leader's until our no-op commits.
            self.pending_reads.push((from, context));
            return Ok(());
        }
        if self.tracker.is_singleton(self.id) {
            // Alone, there is nobody to confirm with.
            let index = self.log.committed;
            self.respond_read(ReadIndexStatus {
                index,
                from,
                context,
                acks: Default::default(),
            });
            return Ok(());
        }
        let index = self.log.committed;
        if self.cfg.read_only == ReadOnlyOption::LeaseBased && self.lease_is_valid() {
            self.respond_read(ReadIndexStatus {
                index,
                from,
                context,
                acks: Default::default(),
            });
            return Ok(());
        }
        // ReadIndex proper, also the fallback when the lease has lapsed: confirm with a
        // heartbeat round acknowledged by a quorum.
        self.read_only.add_request(index, from, context.clone());
        let id = self.id;
        self.read_only.recv_ack(id, &context);
        self.bcast_heartbeat_with(context);
        Ok(())
    }

    fn release_pending_reads(&mut self) -> Result<(), StorageError> {
        if self.pending_reads.is_empty() || !self.committed_entry_in_current_term()? {
            return Ok(());
        }
        for (from, context) in std::mem::take(&mut self.pending_reads) {
            storage_failure_of(self.handle_read_index(from, context))?;
        }
        Ok(())
    }

    /// Advances the commit index to what a quorum holds, under the §5.4.2 rule that only
    /// entries of the current term are committed by counting replicas.
    pub(crate) fn maybe_commit(&mut self) -> Result<bool, StorageError> {
        let index = self.tracker.committed();
        let term = if self.mutation(MutationKind::CommitPreviousTermByCounting) {
            None
        } else {
            Some(self.term)
        };
        let index = index.min(self.log.last_index());
        if self.log.maybe_commit(index, term)? {
            self.release_pending_reads()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), StorageError> {
        match m.body {
            MessageBody::Append { .. } => {
                self.become_follower(m.term, m.from);
                self.handle_append(m)?;
            }
            MessageBody::Heartbeat { .. } => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m);
            }
            MessageBody::CommitNotice { commit } => {
                self.become_follower(m.term, m.from);
                self.handle_commit_notice(commit);
            }
            MessageBody::Snapshot { .. } => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m)?;
            }
            MessageBody::RequestPreVoteResponse { reject }
                if self.role == StateRole::PreCandidate && m.term >= self.term =>
            {
                self.tracker.record_vote(m.from, !reject);
                self.check_election_result()?;
            }
            MessageBody::RequestVoteResponse { reject } if self.role == StateRole::Candidate => {
                self.tracker.record_vote(m.from, !reject);
                if self.self_vote_pending && self.tracker.tally().2 == VoteResult::Won {
                    // Even with a quorum of others, wait for our own vote to be durable
                    // before leading: a lost vote could be cast again in this term.
                    return Ok(());
                }
                self.check_election_result()?;
            }
            _ => {}
        }
        Ok(())
    }

    fn step_follower(&mut self, m: Message) -> Result<(), StorageError> {
        match m.body {
            MessageBody::Append { .. } => {
                self.election_elapsed_ticks = 0;
                self.leader_id = m.from;
                self.handle_append(m)?;
            }
            MessageBody::Heartbeat { .. } => {
                self.election_elapsed_ticks = 0;
                self.leader_id = m.from;
                self.handle_heartbeat(m);
            }
            MessageBody::CommitNotice { commit } => {
                self.election_elapsed_ticks = 0;
                self.leader_id = m.from;
                self.handle_commit_notice(commit);
            }
            MessageBody::Snapshot { .. } => {
                self.election_elapsed_ticks = 0;
                self.leader_id = m.from;
                self.handle_snapshot(m)?;
            }
            MessageBody::TimeoutNow => {
                // Leadership transfer: campaign at once, bypassing pre-vote and leases.
                self.hup(true)?;
            }
            MessageBody::ReadIndexResponse { index, context } => {
                self.read_states.push(ReadState { index, context });
            }
            _ => {}
        }
        Ok(())
    }

    /// The follower's side of AppendEntries. An entry it cannot read is neither
    /// acknowledged nor rejected with a hint computed from it: it answers nothing.
    fn handle_append(&mut self, m: Message) -> Result<(), StorageError> {
        let from = m.from;
        let MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } = m.body
        else {
            return Ok(());
        };
        // Reject malformed input rather than corrupt the log: entries must follow
        // `prev_index` consecutively with terms no newer than the sender's.
        let mut last_term = 0;
        for (expect, e) in (prev_index + 1..).zip(entries.iter()) {
            if e.index != expect || e.term > m.term || e.term < last_term {
                return Ok(());
            }
            last_term = e.term;
        }
        if prev_index < self.log.committed {
            let committed = self.log.committed;
            self.send_term(
                from,
                MessageBody::AppendResponse {
                    index: committed,
                    reject: None,
                },
            );
            return Ok(());
        }
        let skip = self.mutation(MutationKind::SkipPrevTermCheck);
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, entries, skip)?
        {
            Some(last_new) => {
                self.verified_through = self.verified_through.max(last_new);
                self.send_term(
                    from,
                    MessageBody::AppendResponse {
                        index: last_new,
                        reject: None,
                    },
                );
            }
            None => {
                let probe = prev_index.min(self.log.last_index());
                let (index, term) = self.log.find_conflict_by_term(probe, prev_term)?;
                self.send_term(
                    from,
                    MessageBody::AppendResponse {
                        index: prev_index,
                        reject: Some(ConflictHint { index, term }),
                    },
                );
            }
        }
        Ok(())
    }

    fn handle_heartbeat(&mut self, m: Message) {
        let MessageBody::Heartbeat {
            commit,
            context,
            sent_tick,
        } = m.body
        else {
            return;
        };
        let commit = commit.min(self.log.last_index());
        self.log.commit_to(commit);
        self.send_term(
            m.from,
            MessageBody::HeartbeatResponse { context, sent_tick },
        );
    }

    /// The leader's commit index; not answered. Committed only as far as this follower's
    /// log is known to match the leader's (`verified_through`): entries past the last
    /// append it accepted in this term may still differ from the leader's.
    fn handle_commit_notice(&mut self, commit: Index) {
        let commit = commit.min(self.verified_through);
        self.log.commit_to(commit);
    }

    fn handle_snapshot(&mut self, m: Message) -> Result<(), StorageError> {
        let MessageBody::Snapshot { snapshot } = m.body else {
            return Ok(());
        };
        let index = if self.restore(snapshot)? {
            self.log.last_index()
        } else {
            self.log.committed
        };
        self.send_term(
            m.from,
            MessageBody::AppendResponse {
                index,
                reject: None,
            },
        );
        Ok(())
    }

    /// Installs a leader's snapshot (§7). Returns false when it is stale or already
    /// covered by our log.
    fn restore(&mut self, snapshot: Snapshot) -> Result<bool, StorageError> {
        let meta = &snapshot.meta;
        if meta.index <= self.log.committed {
            return Ok(false);
        }
        // The snapshot's configuration may not include us: a node added after the
        // snapshot was taken learns of its own addition from the entries that follow.
        let cs = &meta.conf_state;
        if !TrackerConfig::from_conf_state(&meta.conf_state).is_valid() {
            // Malformed input: refuse it rather than adopt an impossible configuration.
            return Ok(false);
        }
        if self.log.match_term(meta.index, meta.term)? {
            // Our log already holds the snapshot's last entry: just commit up to it.
            self.log.commit_to(meta.index);
            self.verified_through = self.verified_through.max(meta.index);
            return Ok(false);
        }
        let config = TrackerConfig::from_conf_state(cs);
        let next = meta.index + 1;
        tracing::info!(
            node = self.id,
            index = meta.index,
            term = meta.term,
            "restoring snapshot"
        );
        self.verified_through = meta.index;
        self.log.restore(snapshot);
        self.tracker.apply_config(config, Default::default(), next);
        Ok(true)
    }

    // ---- Local requests --------------------------------------------------------------

    fn check_can_propose(&self) -> Result<(), Error> {
        match self.role {
            StateRole::Leader => {}
            StateRole::Follower if self.leader_id != INVALID_ID => {
                return Err(Error::NotLeader {
                    leader_id: self.leader_id,
                })
            }
            _ => return Err(Error::NoLeader),
        }
        if self.lead_transferee.is_some() {
            return Err(Error::TransferInProgress);
        }
        if !self.tracker.is_voter(self.id) {
            return Err(Error::LeaderRemoved);
        }
        Ok(())
    }

    /// Appends new entries as leader; returns the last one's id.
    pub(crate) fn propose(
        &mut self,
        kind: EntryKind,
        datas: impl IntoIterator<Item = Bytes>,
    ) -> Result<EntryId, Error> {
        self.check_can_propose()?;
        let term = self.term;
        let mut index = self.log.last_index();
        let entries: Vec<Entry> = datas
            .into_iter()
            .map(|data| {
                index += 1;
                Entry {
                    term,
                    index,
                    kind,
                    data,
                }
            })
            .collect();
        if entries.is_empty() {
            return Ok(EntryId {
                term: self.log.last_term()?,
                index,
            });
        }
        let bytes: u64 = entries.iter().map(|e| e.data.len() as u64).sum();
        // One oversize batch is let through on an empty pipeline so it can make progress.
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes.saturating_add(bytes) > self.cfg.max_uncommitted_bytes
        {
            return Err(Error::UncommittedBytesExceeded {
                limit_bytes: self.cfg.max_uncommitted_bytes,
            });
        }
        self.uncommitted_bytes += bytes;
        self.append_entries(entries)?;
        Ok(EntryId { term, index })
    }

    fn append_entries(&mut self, entries: Vec<Entry>) -> Result<(), StorageError> {
        let last = self.log.append(entries);
        if self.mutation(MutationKind::AckAppendBeforeDurable) {
            let id = self.id;
            if let Some(pr) = self.tracker.progress.get_mut(&id) {
                pr.maybe_update(last);
            }
            self.maybe_commit()?;
        }
        self.need_bcast = true;
        Ok(())
    }

    pub(crate) fn propose_conf_change(&mut self, cc: &ConfChange) -> Result<EntryId, Error> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.applied {
            return Err(Error::ConfChangePending);
        }
        // Validate against the current configuration now, so that an invalid change is
        // refused to the caller rather than ignored when applied.
        confchange::apply(&self.tracker.config, cc)?;
        let id = self.propose(EntryKind::ConfChange, [cc.encode()])?;
        self.pending_conf_index = id.index;
        Ok(id)
    }

    /// Applies a committed configuration change (called as the entry is applied).
    pub(crate) fn apply_conf_change(&mut self, cc: &ConfChange) -> Result<(), StorageError> {
        let next = match confchange::apply(&self.tracker.config, cc) {
            Ok(next) => next,
            Err(e) => {
                // Every node rejects the same committed change the same way.
                tracing::warn!(node = self.id, error = %e, "ignoring committed configuration change");
                return Ok(());
            }
        };
        tracing::info!(node = self.id, conf_state = ?next.to_conf_state(), "configuration changed");
        let progress = std::mem::take(&mut self.tracker.progress);
        let next_index = self.log.last_index() + 1;
        self.tracker.apply_config(next, progress, next_index);
        if self.role != StateRole::Leader {
            return Ok(());
        }
        if let Some(t) = self.lead_transferee {
            if !self.tracker.is_voter(t) {
                self.lead_transferee = None;
            }
        }
        if !self.tracker.config.voters.contains(self.id) {
            // Removed leader (thesis §4.2.2): having committed its own removal it tells
            // the followers the commit index, then steps down and stays silent.
            self.maybe_commit()?;
            self.need_bcast = true;
            self.flush_bcast()?;
            let term = self.term;
            tracing::info!(
                node = self.id,
                term,
                "removed from the configuration; stepping down"
            );
            self.become_follower(term, INVALID_ID);
            return Ok(());
        }
        self.maybe_commit()?;
        self.need_bcast = true;
        self.maybe_auto_leave()
    }

    /// A leader whose applied configuration is joint with `auto_leave` proposes leaving
    /// it — including a leader elected after the joint configuration was entered.
    pub(crate) fn maybe_auto_leave(&mut self) -> Result<(), StorageError> {
        if self.role == StateRole::Leader
            && self.tracker.config.auto_leave
            && self.tracker.config.voters.is_joint()
            && self.pending_conf_index <= self.log.applied
        {
            // A refusal (a transfer in progress) is retried after the next apply.
            storage_failure_of(
                self.propose_conf_change(&ConfChange::leave_joint())
                    .map(drop),
            )?;
        }
        Ok(())
    }

    /// Tells `target` to campaign at once. Its vote requests bypass the voters' lease
    /// promises, possibly long after this (a delayed message), so this leader gives up
    /// lease reads for the rest of its term.
    fn send_timeout_now(&mut self, target: NodeId) {
        self.lease_forfeited = true;
        self.send_term(target, MessageBody::TimeoutNow);
    }

    pub(crate) fn handle_transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        if target == self.id {
            return Ok(());
        }
        let Some(pr) = self.tracker.progress.get(&target) else {
            return Err(Error::UnknownNode(target));
        };
        if pr.is_learner || !self.tracker.is_voter(target) {
            return Err(Error::UnknownNode(target));
        }
        if self.lead_transferee == Some(target) {
            return Ok(());
        }
        let caught_up = pr.match_index == self.log.last_index();
        self.lead_transferee = Some(target);
        // The transfer must finish within an election timeout (checked on tick).
        self.election_elapsed_ticks = 0;
        if caught_up {
            self.send_timeout_now(target);
        } else {
            self.maybe_send_append(target, true)?;
        }
        Ok(())
    }

    pub(crate) fn transfer_leader(&mut self, target: NodeId) -> Result<(), Error> {
        match self.role {
            StateRole::Leader => self.handle_transfer_leader(target),
            StateRole::Follower if self.leader_id != INVALID_ID => {
                let leader = self.leader_id;
                self.send_term(leader, MessageBody::TransferLeader { target });
                Ok(())
            }
            _ => Err(Error::NoLeader),
        }
    }

    pub(crate) fn read_index(&mut self, context: Bytes) -> Result<(), Error> {
        match self.role {
            StateRole::Leader => {
                let id = self.id;
                self.handle_read_index(id, context)
            }
            StateRole::Follower if self.leader_id != INVALID_ID => {
                let leader = self.leader_id;
                self.send_term(leader, MessageBody::ReadIndex { context });
                Ok(())
            }
            _ => Err(Error::NoLeader),
        }
    }

    pub(crate) fn report_unreachable(&mut self, id: NodeId) {
        if self.role != StateRole::Leader {
            return;
        }
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }

    pub(crate) fn report_snapshot(&mut self, id: NodeId, status: SnapshotStatus) {
        if self.role != StateRole::Leader {
            return;
        }
        let Some(pr) = self.tracker.progress.get_mut(&id) else {
            return;
        };
        if pr.state != ProgressState::Snapshot {
            return;
        }
        if status == SnapshotStatus::Failure {
            pr.pending_snapshot = 0;
        }
        pr.become_probe();
        // Wait for the follower's answer (or a heartbeat) before the next append.
        pr.probe_sent = true;
    }

    /// Entries up to (`index`, `term`) are durable locally.
    pub(crate) fn on_persisted(&mut self, index: Index, term: Term) -> Result<(), StorageError> {
        self.log.stable_to(index, term);
        if self.role != StateRole::Leader {
            return Ok(());
        }
        let persisted = self.log.persisted_index();
        let id = self.id;
        if let Some(pr) = self.tracker.progress.get_mut(&id) {
            pr.maybe_update(persisted);
        }
        if self.maybe_commit()? {
            self.need_bcast = true;
        }
        Ok(())
    }

    /// Entries up to `index` were applied; `bytes` is their payload total.
    pub(crate) fn on_applied(&mut self, index: Index, bytes: u64) {
        self.log.applied_to(index);
        if self.role == StateRole::Leader {
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(bytes);
        }
    }

    pub(crate) fn pending_conf_index(&self) -> Index {
        self.pending_conf_index
    }

    pub(crate) fn election_elapsed(&self) -> u64 {
        self.election_elapsed_ticks
    }

    /// Reads this leader has not answered yet: waiting for a quorum's heartbeat
    /// acknowledgements, or for an entry of its term to commit.
    pub(crate) fn pending_read_count(&self) -> usize {
        self.read_only.len() + self.pending_reads.len()
    }

    // ---- Quiescence ------------------------------------------------------------------

    /// As a follower of `leader` in `term`, accepts its word that the group is idle at
    /// `commit`, if this node's log ends there: it learns the commit index (as from a
    /// heartbeat) and the runtime may stop ticking it.
    pub(crate) fn quiesce_as_follower(
        &mut self,
        leader: NodeId,
        term: Term,
        commit: Index,
    ) -> bool {
        let follows = self.role == StateRole::Follower
            && self.term == term
            && self.leader_id == leader
            && leader != INVALID_ID;
        if !follows || self.log.last_index() != commit {
            return false;
        }
        // In this term only `leader` wrote to our log, and it says idle only once it knows
        // we hold everything it has (match = last = commit): our entries through `commit`
        // are its, so they are committed — the same reasoning as a heartbeat's commit,
        // which is bounded by what the leader knows we hold.
        self.log.commit_to(commit);
        true
    }

    /// The runtime ticks this node again after a pause of unknown length (a quiesced
    /// group woke). Nothing that rests on elapsed time may carry over the pause:
    ///
    /// - The logical clock jumps an election timeout ahead, so no lease rests on a
    ///   heartbeat acknowledged before the pause: a leader answers lease reads again only
    ///   once a quorum acknowledges a heartbeat sent after it. (Every voter that did so
    ///   still keeps its promise: a voter's promise only grows while it is not ticked.)
    /// - A follower gives its leader a whole election timeout to be heard from before it
    ///   campaigns; until then it also keeps refusing other candidates (check-quorum),
    ///   as a follower that just heard a heartbeat does.
    /// - A leader starts a new check-quorum round, in which every follower must answer
    ///   again. It heartbeats on its next heartbeat tick; what woke it (a proposal's
    ///   append, a read's heartbeat round) wakes its followers first.
    pub(crate) fn resume_ticking(&mut self) {
        self.now_ticks += self.cfg.election_timeout_ticks;
        self.election_elapsed_ticks = 0;
        if self.role != StateRole::Leader {
            return;
        }
        self.heartbeat_elapsed_ticks = 0;
        let id = self.id;
        for (&pid, pr) in self.tracker.progress.iter_mut() {
            if pid != id {
                pr.recent_active = false;
            }
        }
        // No heartbeat now: whatever woke the group sends its own messages (a proposal's
        // append, a read's heartbeat round) and the next tick heartbeats. A heartbeat here
        // would double the messages of a group woken by each of its proposals.
    }
}

/// The storage failure in a result whose other errors the caller drops (a follower's read
/// refused because the queue is full, say): those are refusals, a failed read is not.
fn storage_failure_of(result: Result<(), Error>) -> Result<(), StorageError> {
    match result {
        Err(Error::Storage(e)) => Err(e),
        _ => Ok(()),
    }
}
