//! The `Ready` loop of the group core: what each part of a Raft `Ready` becomes, and when.

use bytes::Buf;
use ordo_raft::{
    ConfChange, ConfChangeKind, Entry, EntryKind, HardState, Message, MessageBody, NodeId, Ready,
    Snapshot, SnapshotStatus, SoftState, StateRole,
};

use super::{
    Answer, ApplyWork, Command, GroupCore, InFlight, Leadership, MutationKind, Persist, Ticket,
    Unsent,
};
use crate::codec::{RequestId, WireMessage};
use crate::group::{AskError, ProposeError};
use crate::metrics::inc;
use crate::storage::LogStore;

impl<St: LogStore> GroupCore<St> {
    /// Takes and carries out `Ready`s until the Raft core has nothing or a write is
    /// waiting to become durable.
    ///
    /// While the apply queue is full, `Ready`s carry no committed entries (the Raft core
    /// holds them back) but everything else: a slow state machine delays only applying,
    /// never heartbeats, replication or elections. Only a snapshot to install waits for
    /// room, since restoring it is work for the state machine; so no more than
    /// `apply_batches_max` batches are ever queued.
    pub(super) fn drive_ready(&mut self) {
        loop {
            if self.persistence.in_flight.is_some() {
                return;
            }
            let room = self.apply.in_flight() < self.config.apply_batches_max;
            if self.apply.snapshot_wanted && room {
                self.apply.snapshot_wanted = false;
                self.hand_out(None, Vec::new(), true);
                continue;
            }
            self.apply.blocked = !room;
            self.raw.pause_applying(!room);
            if !self.raw.has_ready() || (!room && self.raw.has_pending_snapshot()) {
                return;
            }
            let rd = self.raw.ready();
            self.start_ready(rd);
        }
    }

    /// Steps 1 to 4 of the module documentation.
    fn start_ready(&mut self, mut rd: Ready) {
        if let Some(soft) = rd.soft_state {
            self.on_soft_state(soft);
        }
        self.note_leadership();
        self.metrics
            .term
            .store(self.raw.term(), std::sync::atomic::Ordering::Relaxed);
        for message in std::mem::take(&mut rd.messages) {
            self.send_raft(message);
        }
        let apply_now = rd.snapshot.is_none()
            && !rd.committed_entries.is_empty()
            && rd
                .committed_entries
                .iter()
                .all(|e| e.kind != EntryKind::ConfChange);
        if apply_now {
            let entries = std::mem::take(&mut rd.committed_entries);
            self.hand_out(None, entries, false);
        }
        if self.config.mutation_is(MutationKind::ApplyPastCommit) {
            self.apply_ahead(&rd.entries);
        }
        let seq = self.persist(&mut rd);
        for message in std::mem::take(&mut rd.persisted_messages) {
            let to = message.to;
            let message = WireMessage::Raft(message);
            self.push(match seq {
                Some(seq) => Command::SendAfterDurable { seq, to, message },
                None => Command::Send {
                    to,
                    message,
                    if_unsent: None,
                },
            });
        }
        self.persistence.in_flight = Some(InFlight {
            seq,
            committed: rd.committed_entries,
            read_states: rd.read_states,
            snapshot: rd.snapshot,
        });
        if seq.is_none() {
            self.finish_ready();
        }
    }

    /// The writes of a `Ready` as one [`Command::Persist`], if it has any.
    fn persist(&mut self, rd: &mut Ready) -> Option<u64> {
        let previous = self.persistence.hard_state;
        let hard_state = rd
            .hard_state
            .filter(|hs| hs.term != previous.term || hs.vote != previous.vote);
        if rd.snapshot.is_none() && rd.entries.is_empty() && hard_state.is_none() {
            return None;
        }
        if let Some(hs) = hard_state {
            self.persistence.hard_state = HardState {
                commit: previous.commit,
                ..hs
            };
        }
        if rd.snapshot.is_some() {
            inc(&self.metrics.snapshots_received, 1);
        }
        let seq = self.persistence.next_seq;
        self.persistence.next_seq += 1;
        self.push(Command::Persist(Persist {
            seq,
            snapshot: rd.snapshot.clone(),
            entries: std::mem::take(&mut rd.entries),
            hard_state,
        }));
        Some(seq)
    }

    /// The runtime made the write `seq` (and every earlier one) durable.
    pub fn on_persisted(&mut self, seq: u64) {
        assert!(
            seq < self.persistence.next_seq,
            "write {seq} reported durable before it was asked for"
        );
        let done = self
            .persistence
            .in_flight
            .as_ref()
            .is_some_and(|p| p.seq.is_some_and(|s| s <= seq));
        if done {
            self.finish_ready();
            self.drive_ready();
        }
    }

    /// Step 5 of the module documentation.
    fn finish_ready(&mut self) {
        let p = self
            .persistence
            .in_flight
            .take()
            .expect("a Ready is in flight");
        let conf_changes: Vec<ConfChange> = p
            .committed
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .filter_map(|e| ConfChange::decode(&e.data).ok())
            .collect();
        self.raw.advance();
        self.metrics.commit_index.store(
            self.raw.commit_index(),
            std::sync::atomic::Ordering::Relaxed,
        );
        if !conf_changes.is_empty() || p.snapshot.is_some() {
            self.storage.set_conf_now(self.raw.conf_state());
            for cc in &conf_changes {
                self.record_members_of(cc);
            }
        }
        if !conf_changes.is_empty() {
            // A node restarts with the configuration of its snapshot and of the committed
            // entries it knows of: were this change's commit not recorded, a restart could
            // bring back members it removed, whose votes the rest then wait for in vain.
            self.record_commit();
        }
        for rs in p.read_states {
            self.waiting.reads.confirmed(&rs.context, rs.index);
            if self
                .config
                .mutation_is(MutationKind::AnswerReadBeforeApplied)
            {
                let early = self.waiting.reads.take_applied(rs.index);
                for (ticket, index) in early {
                    self.answer(ticket, Answer::Read(Ok(index)));
                }
            }
        }
        self.answer_applied_reads();
        if p.snapshot.is_some() || !p.committed.is_empty() {
            self.hand_out(p.snapshot, p.committed, false);
        }
        self.note_leadership();
    }

    /// Hands committed work to the state machine: this node's proposals among the entries
    /// travel with them, and proposals whose place another entry took fail.
    pub(super) fn hand_out(
        &mut self,
        restore: Option<Snapshot>,
        mut entries: Vec<Entry>,
        snapshot_now: bool,
    ) {
        if let Some(snapshot) = &restore {
            let through = snapshot.meta.index;
            for ticket in self.waiting.proposals.take_through(through) {
                self.answer(ticket, Answer::Failed(ProposeError::OutcomeUnknown));
            }
            self.apply.restored_through = through;
            self.apply.handed_out = through;
            self.apply.applied_ahead_through = self.apply.applied_ahead_through.min(through);
        }
        let ahead = self.apply.applied_ahead_through;
        entries.retain(|e| e.index > ahead);
        if let Some(first) = entries.first() {
            assert_eq!(
                first.index,
                self.apply.handed_out + 1,
                "committed entries are handed out in order without gaps"
            );
        }
        let mut proposers = Vec::new();
        for entry in &entries {
            if let Some(ticket) = self.proposer(entry) {
                self.waiting.proposals.take(ticket);
                proposers.push((entry.index, ticket));
            }
        }
        if let Some(last) = entries.last() {
            let last = last.index;
            for ticket in self.waiting.proposals.take_through(last) {
                self.answer(ticket, Answer::Failed(ProposeError::Dropped));
            }
            self.apply.handed_out = last;
        }
        inc(&self.metrics.entries_committed, entries.len() as u64);
        self.apply.batches_issued += 1;
        assert!(
            self.apply.in_flight() <= self.config.apply_batches_max
                || self.config.mutation_is(MutationKind::ApplyPastCommit),
            "{} batches with the state machine, at most {} allowed",
            self.apply.in_flight(),
            self.config.apply_batches_max
        );
        self.push(Command::Apply(ApplyWork {
            restore,
            entries,
            conf_state: self.raw.conf_state(),
            proposers,
            snapshot_now,
        }));
    }

    /// The planted bug [`MutationKind::ApplyPastCommit`]: appended entries that follow
    /// what was handed out are applied at once, committed or not.
    fn apply_ahead(&mut self, appended: &[Entry]) {
        let contiguous = appended
            .first()
            .is_some_and(|e| e.index == self.apply.handed_out + 1);
        let plain = appended.iter().all(|e| e.kind == EntryKind::Normal);
        if !contiguous || !plain || self.apply.in_flight() >= self.config.apply_batches_max {
            return;
        }
        let entries = appended.to_vec();
        let last = entries.last().map_or(0, |e| e.index);
        self.hand_out(None, entries, false);
        self.apply.applied_ahead_through = last;
    }

    /// The waiting proposal of this node that `entry` carries, if any.
    fn proposer(&self, entry: &Entry) -> Option<Ticket> {
        let request = match entry.kind {
            EntryKind::Normal => envelope_request(&entry.data)?,
            EntryKind::ConfChange => {
                super::membership_request(&ConfChange::decode(&entry.data).ok()?)?
            }
        };
        let ticket = self.own_ticket(&request)?;
        self.waiting.proposals.contains(ticket).then_some(ticket)
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        if soft.role == StateRole::Candidate {
            inc(&self.metrics.elections, 1);
        }
        if soft.leader_id == self.leadership.leader {
            return;
        }
        inc(&self.metrics.leader_changes, 1);
        // A transfer from a deposed leader will not be finished: free its buffer.
        self.transfers
            .incoming
            .retain(|from, _| *from == soft.leader_id);
        if soft.role != StateRole::Leader {
            self.transfers.outgoing.clear();
        }
        // Proposals forwarded to the old leader that it never placed will get no answer
        // from it: tell their callers now rather than at their timeout. (A proposal is
        // unbound only between a forward and its reply; local proposals are bound or
        // failed within the call that makes them.)
        for ticket in self.waiting.proposals.take_unbound() {
            self.answer(ticket, Answer::Failed(ProposeError::LeaderLost));
        }
        let asks: Vec<Ticket> = std::mem::take(&mut self.waiting.asks).into_keys().collect();
        for ticket in asks {
            self.answer(ticket, Answer::Asked(Err(AskError::LeaderChanged)));
        }
        tracing::info!(group = %self.config.group_id, term = self.raw.term(), leader = soft.leader_id, role = ?soft.role, "leader changed");
    }

    /// Tells the runtime when the leader, the term or this node's role changed.
    fn note_leadership(&mut self) {
        let now = Leadership {
            leader: self.raw.leader_id(),
            term: self.raw.term(),
            role: self.raw.role(),
        };
        if now != self.leadership {
            self.leadership = now;
            self.push(Command::LeadershipChanged(now));
        }
    }

    /// Sends a Raft message; a snapshot is streamed in chunks instead.
    fn send_raft(&mut self, message: Message) {
        let to = message.to;
        match message.body {
            MessageBody::Snapshot { snapshot } => self.send_snapshot(to, message.term, snapshot),
            body => self.send(to, WireMessage::Raft(Message { body, ..message })),
        }
    }

    pub(super) fn send_snapshot(&mut self, to: NodeId, term: ordo_raft::Term, snapshot: Snapshot) {
        if self.transfers.outgoing.is_sending_to(to) {
            // One transfer per follower at a time; the Raft core probes again after it.
            return;
        }
        let bytes = snapshot.data.len() as u64;
        if bytes > self.config.snapshot_bytes_max {
            tracing::error!(group = %self.config.group_id, to, bytes, "snapshot exceeds snapshot_bytes_max; not sent");
            self.raw.report_snapshot(to, SnapshotStatus::Failure);
            return;
        }
        self.transfers.started += 1;
        let transfer_id = self.config.boot.wrapping_add(self.transfers.started);
        inc(&self.metrics.snapshots_sent, 1);
        tracing::info!(group = %self.config.group_id, to, index = snapshot.meta.index, term = snapshot.meta.term, bytes, "streaming snapshot");
        let shape = super::transfers::ChunkShape {
            chunk_bytes: self.config.snapshot_chunk_bytes,
            members: &self.members,
        };
        let chunk =
            self.transfers
                .outgoing
                .start(to, transfer_id, term, snapshot, self.ticks, shape);
        self.push(Command::Send {
            to,
            message: WireMessage::SnapshotChunk(chunk),
            if_unsent: Some(Unsent::Chunk { to, transfer_id }),
        });
    }

    /// Keeps the member addresses in line with an applied membership change.
    fn record_members_of(&mut self, cc: &ConfChange) {
        let addr = super::membership_addr(cc);
        let changes: Vec<_> = cc
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

    /// Records member addresses (or removals), other than this node's own.
    pub(super) fn record_members(&mut self, changes: Vec<(NodeId, Option<std::net::SocketAddr>)>) {
        let me = self.config.node_id;
        let changes: Vec<_> = changes.into_iter().filter(|(id, _)| *id != me).collect();
        if changes.is_empty() {
            return;
        }
        for (id, addr) in &changes {
            match addr {
                Some(addr) => self.members.insert(*id, *addr),
                None => self.members.remove(id),
            };
        }
        self.push(Command::RecordMembers(changes));
    }
}

/// The request id in a proposal's envelope, without taking the entry apart.
fn envelope_request(data: &bytes::Bytes) -> Option<RequestId> {
    let mut header = data.slice(..(1 + RequestId::BYTES).min(data.len()));
    if header.remaining() < 1 + RequestId::BYTES {
        return None;
    }
    header.advance(1);
    RequestId::get(&mut header).ok()
}
