//! Quiescence: an idle group stops ticking, so that thousands of idle groups on a node cost
//! no CPU (as CockroachDB's ranges do).
//!
//! **Quiescing.** On a tick, a leader whose group is idle sends every member a
//! [`Quiesce`] with its term and commit index and stops ticking (so stops heartbeating)
//! instead; a commit notice of the same turn to a member is dropped, since the quiesce
//! tells it as much. A leader that committed writes since it last quiesced checks at the
//! end of every turn too, so a group written to now and then pauses as soon as its last
//! write is everywhere and applied, instead of ticking (and heartbeating) until its next
//! tick.
//! Idle means: every member holds every entry (match = last = commit), this node applied
//! all of it, nothing is being written, and nothing waits — no proposal, read,
//! question for the leader, follower's read, leadership transfer, snapshot stream or
//! snapshot wanted — and every voter answered since the last check-quorum round (or since
//! the leader woke) and the transport has not lost it since it last heard from it. A
//! follower stops ticking on a quiesce from the leader it follows in the same term, if its
//! own log ends at that commit index ([`RawNode::quiesce_as_follower`], which teaches it
//! the commit index too). A follower that cannot quiesce ignores the message and keeps
//! ticking: if it times out it campaigns, which wakes the others, and the group quiesces
//! again once it is idle.
//!
//! **Waking.** A quiesced group (leader or follower) ticks again on any input that may need
//! time to pass: a proposal, a read, a question for the leader, a leadership transfer, a
//! peer message other than a quiesce, or the transport reporting a member unreachable (how a
//! follower learns its leader died: it then campaigns after an election timeout). A woken
//! leader sends nothing for waking itself: what woke it (a proposal's append, a read's
//! heartbeat round) wakes its followers, and it heartbeats from its next heartbeat tick.
//! (Heartbeating on waking too would add four messages to every proposal of a group that
//! quiesces between proposals.)
//!
//! **Time across the pause.** A woken group calls [`RawNode::resume_ticking`]: its clock
//! jumps past any lease it held (a leader serves lease reads again only after a heartbeat
//! round acknowledged after waking; ReadIndex reads always confirm with a fresh round), a
//! leader's check-quorum round starts over, and a follower waits a whole election timeout
//! for its leader before it campaigns — so a woken follower never campaigns against a live
//! leader it simply has not heard from yet.
//!
//! **What it relies on.** A follower notices that its quiesced leader is gone only through
//! the transport: a crashed or stopped peer closes its connection, which the transport
//! reports at once; a silent partition (no reset, no traffic) is reported once the peer has
//! sent nothing, not even the keepalive every idle connection carries, for an election
//! timeout (`TransportConfig::silence_ms`). One keepalive per peer, not one heartbeat per
//! group, is what keeps thousands of quiesced groups safe.
//!
//! [`Quiesce`]: crate::codec::Quiesce
//! [`RawNode::quiesce_as_follower`]: ordo_raft::RawNode::quiesce_as_follower
//! [`RawNode::resume_ticking`]: ordo_raft::RawNode::resume_ticking

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use ordo_raft::{Index, MessageBody, NodeId, StateRole};

use super::{Command, GroupCore};
use crate::codec::{Quiesce, WireMessage};
use crate::metrics::inc;
use crate::storage::LogStore;

/// Whether the group ticks, and what keeps a leader from quiescing.
#[derive(Debug, Default)]
pub(crate) struct Quiescence {
    quiesced: bool,
    /// The commit index when the group last quiesced: a commit index beyond it means writes
    /// since.
    commit_at_quiesce: Index,
    /// Members the transport lost its connection to and this node has not heard from
    /// since. A leader does not quiesce while a voter is among them.
    unreachable: BTreeSet<NodeId>,
}

impl<St: LogStore> GroupCore<St> {
    /// Whether the group is quiesced: its runtime must not tick it until an input wakes
    /// it (see `core/quiescence.rs`).
    pub fn is_quiesced(&self) -> bool {
        self.quiescence.quiesced
    }

    /// On a tick (or at the end of a turn after writes): a leader whose group is idle
    /// quiesces it instead of ticking. Returns whether it did.
    pub(super) fn maybe_quiesce(&mut self) -> bool {
        assert!(!self.quiescence.quiesced, "a quiesced group was ticked");
        if !self.config.quiesce || !self.leader_is_idle() {
            return false;
        }
        let quiesce = Quiesce {
            term: self.raw.term(),
            commit: self.raw.commit_index(),
        };
        let me = self.config.node_id;
        let members: Vec<NodeId> = self.members_of_conf().filter(|&id| id != me).collect();
        // A commit notice of this turn still unsent tells a member less than the quiesce
        // does (which carries the commit index too), and a member that ignores the quiesce
        // keeps ticking until it hears from the leader or campaigns: it goes unsent.
        self.commands.retain(|command| {
            !matches!(
                command,
                Command::Send { to, message: WireMessage::Raft(m), .. }
                    if members.contains(to)
                        && m.term == quiesce.term
                        && matches!(m.body, MessageBody::CommitNotice { commit } if commit <= quiesce.commit)
            )
        });
        for to in members {
            self.send(to, WireMessage::Quiesce(quiesce));
        }
        self.set_quiesced(true);
        tracing::debug!(group = %self.config.group_id, term = quiesce.term, index = quiesce.commit, "quiesced");
        true
    }

    /// At the end of a turn: a leader whose writes since it last quiesced have left the
    /// group idle quiesces at once rather than on its next tick, so a group written to now
    /// and then neither ticks nor heartbeats between its writes. (Reads alone do not: a
    /// group only read from keeps its tick-based pause.)
    pub(super) fn quiesce_after_writes(&mut self) {
        let written = self.raw.commit_index() > self.quiescence.commit_at_quiesce;
        if written && !self.quiescence.quiesced {
            self.maybe_quiesce();
        }
    }

    /// A leader's quiesce: a follower of that leader in that term, whose log ends at its
    /// commit index, stops ticking.
    pub(super) fn on_quiesce(&mut self, from: NodeId, quiesce: Quiesce) {
        if self.quiescence.quiesced
            || !self
                .raw
                .quiesce_as_follower(from, quiesce.term, quiesce.commit)
        {
            return;
        }
        self.set_quiesced(true);
        tracing::debug!(group = %self.config.group_id, term = quiesce.term, index = quiesce.commit, leader = from, "quiesced by the leader");
    }

    /// An input that may need time to pass: a quiesced group ticks again.
    pub(super) fn wake(&mut self, why: &'static str) {
        if !self.quiescence.quiesced {
            return;
        }
        self.set_quiesced(false);
        self.raw.resume_ticking();
        inc(&self.metrics.wakes, 1);
        tracing::debug!(group = %self.config.group_id, term = self.raw.term(), why, "woken");
    }

    /// The transport lost its connection to `peer`: a member's loss wakes the group (a
    /// follower may have lost its leader), and keeps a leader from quiescing until it
    /// hears from the peer again.
    pub(super) fn note_unreachable(&mut self, peer: NodeId) {
        if peer == self.config.node_id || !self.members_of_conf().any(|id| id == peer) {
            return;
        }
        self.quiescence.unreachable.insert(peer);
        self.wake("a member is unreachable");
    }

    /// A message from `peer` arrived: it is reachable.
    pub(super) fn note_heard_from(&mut self, peer: NodeId) {
        self.quiescence.unreachable.remove(&peer);
    }

    fn set_quiesced(&mut self, quiesced: bool) {
        self.quiescence.quiesced = quiesced;
        if quiesced {
            self.quiescence.commit_at_quiesce = self.raw.commit_index();
            inc(&self.metrics.quiesces, 1);
        }
        self.metrics
            .quiesced
            .store(u64::from(quiesced), Ordering::Relaxed);
    }

    /// Every voter and learner of the configuration, this node included.
    fn members_of_conf(&self) -> impl Iterator<Item = NodeId> {
        let conf = self.raw.conf_state();
        let mut ids: BTreeSet<NodeId> = conf.voters.into_iter().collect();
        ids.extend(conf.learners);
        ids.extend(conf.voters_outgoing);
        ids.extend(conf.learners_next);
        ids.into_iter()
    }

    /// Whether this node leads a group with nothing left to do (see the module
    /// documentation).
    fn leader_is_idle(&self) -> bool {
        let raw = &self.raw;
        // The cheapest checks first: a busy leader asks this at the end of every turn.
        let last = raw.last_index();
        if raw.role() != StateRole::Leader
            || raw.commit_index() != last
            || self.apply.applied != last
            || raw.lead_transferee().is_some()
            || raw.has_ready()
            || raw.pending_read_count() > 0
            || self.storage_failure().is_some()
        {
            return false;
        }
        let nothing_waits = self.apply.handed_out == last
            && self.persistence.in_flight.is_none()
            && self.apply.in_flight() == 0
            && !self.apply.blocked
            && !self.apply.snapshot_wanted
            && self.waiting.proposals.len() == 0
            && self.waiting.reads.len() == 0
            && self.waiting.asks.is_empty()
            && self.transfers.outgoing.is_empty()
            && self.transfers.incoming.is_empty();
        if !nothing_waits {
            return false;
        }
        let status = raw.status();
        status.progress.iter().all(|(&id, p)| {
            let reachable =
                p.is_learner || (p.recent_active && !self.quiescence.unreachable.contains(&id));
            p.match_index == last && reachable
        })
    }
}
