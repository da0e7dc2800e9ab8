//! The leader's view of one follower's log (§5.3 nextIndex / matchIndex) and the flow
//! control state that decides how fast to send to it.

use super::inflights::Inflights;
use crate::types::Index;

/// How the leader sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The match point is unknown: send one append at a time and wait for the answer,
    /// backing off on rejection.
    Probe,
    /// The follower is known to match: stream appends optimistically within the
    /// in-flight window.
    Replicate,
    /// The follower needs a snapshot, which is in flight.
    Snapshot,
}

/// Replication progress of one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The highest index known to be durably replicated on the peer.
    pub match_index: Index,
    /// The next index to send.
    pub next_index: Index,
    /// Flow control state.
    pub state: ProgressState,
    /// In `Snapshot` state: the index of the snapshot being sent.
    pub pending_snapshot: Index,
    /// Whether the peer was heard from since the last check-quorum round.
    pub recent_active: bool,
    /// In `Probe` state: an append was sent and its answer is awaited.
    pub probe_sent: bool,
    /// Appends in flight, in `Replicate` state.
    pub inflights: Inflights,
    /// Whether the peer is a learner.
    pub is_learner: bool,
    /// Check-quorum rounds spent in `Snapshot` state; a snapshot whose fate is never
    /// reported is presumed lost after [`SNAPSHOT_TIMEOUT_ROUNDS`].
    pub snapshot_rounds: u32,
    /// The leader's clock when it sent the newest heartbeat this peer acknowledged: the
    /// peer refuses to vote for anyone else until an election timeout after that.
    pub lease_ack_tick: u64,
    /// The highest commit index this leader told the peer it may use (always bounded by
    /// what the peer held when told): a commit notice goes only to a peer that lacks it.
    /// Forgotten whenever the peer's log may have changed under it (back to probing).
    pub commit_sent: Index,
}

/// Election timeouts after which a snapshot with no reported outcome and no
/// acknowledgement is presumed lost and the peer is probed again.
pub const SNAPSHOT_TIMEOUT_ROUNDS: u32 = 3;

impl Progress {
    /// A peer whose log is unknown; probing starts at `next_index`.
    pub fn new(next_index: Index, max_inflight_msgs: usize, max_inflight_bytes: u64) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            recent_active: false,
            probe_sent: false,
            inflights: Inflights::new(max_inflight_msgs, max_inflight_bytes),
            is_learner: false,
            snapshot_rounds: 0,
            lease_ack_tick: 0,
            commit_sent: 0,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        if state != ProgressState::Replicate {
            self.commit_sent = 0;
        }
        self.snapshot_rounds = 0;
        self.pending_snapshot = 0;
        self.state = state;
        self.inflights.reset();
    }

    /// Back to probing from just after the match point (or after a sent snapshot).
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_index = (self.match_index + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_index = self.match_index + 1;
        }
    }

    /// Start streaming after the match point.
    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.match_index + 1;
    }

    /// A snapshot at `snapshot_index` is on its way.
    pub fn become_snapshot(&mut self, snapshot_index: Index) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// An acknowledgement up to `index` arrived. Returns whether the match point moved.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// An append ending at `last_index` with `bytes` of entries was sent.
    pub fn sent_entries(&mut self, last_index: Option<Index>, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    self.next_index = last + 1;
                    self.inflights.add(last, bytes);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {
                unreachable!("appends are not sent to a peer receiving a snapshot")
            }
        }
    }

    /// The peer rejected an append at `rejected` (at or above the match point) saying its
    /// log ends at `peer_last_index`, below the match point: it lost entries it had reported
    /// durable, which only a relaxed fsync policy and a machine crash can do. Returns whether
    /// that is so; the match point then drops to nothing (one that is too high could count
    /// the peer toward a commit it does not hold) and probing starts again at `probe_from`.
    ///
    /// Without this, [`maybe_decr_to`](Self::maybe_decr_to) would take every such rejection
    /// for a stale one and the peer would never catch up. A peer that kept its log cannot
    /// send it: after acknowledging the match point its log never ends below it. (Only the
    /// peer's own last index tells; the leader's conflict-by-term hint may lie below the
    /// match point for a log that differs only in a term.)
    pub fn lost_acknowledged(
        &mut self,
        rejected: Index,
        peer_last_index: Index,
        probe_from: Index,
    ) -> bool {
        if self.state == ProgressState::Snapshot
            || rejected < self.match_index
            || peer_last_index >= self.match_index
        {
            return false;
        }
        self.match_index = 0;
        self.reset_state(ProgressState::Probe);
        self.next_index = probe_from.clamp(1, peer_last_index + 1);
        true
    }

    /// The peer rejected an append at `rejected` and hinted that the logs can match at
    /// most up to `match_hint`. Returns false when the rejection is stale (answers an
    /// append that is no longer the one outstanding).
    pub fn maybe_decr_to(&mut self, rejected: Index, match_hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index + 1;
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = rejected.min(match_hint + 1).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    /// Whether sending appends must wait.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(match_index: Index, next_index: Index) -> Progress {
        let mut p = Progress::new(next_index, 4, 0);
        p.match_index = match_index;
        p
    }

    #[test]
    fn a_peer_whose_log_ends_below_its_match_point_is_probed_again_from_its_end() {
        // Streaming, matched at 20: the peer rejects 20 and says its log ends at 15.
        let mut p = pr(20, 26);
        p.become_replicate();
        assert!(p.lost_acknowledged(20, 15, 14));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!((p.match_index, p.next_index), (0, 14));
        // Probing from there backs off further as usual.
        p.sent_entries(None, 0);
        assert!(p.maybe_decr_to(13, 9));
        assert_eq!(p.next_index, 10);
        // A log that ends at or above the match point lost nothing; a rejection of an append
        // below the match point is stale.
        let mut p = pr(20, 26);
        p.become_replicate();
        assert!(!p.lost_acknowledged(22, 20, 18));
        assert!(!p.lost_acknowledged(12, 5, 5));
        assert_eq!((p.match_index, p.state), (20, ProgressState::Replicate));
    }

    #[test]
    fn probe_sends_one_message_until_answered() {
        let mut p = pr(0, 6);
        assert!(!p.is_paused());
        p.sent_entries(Some(6), 10);
        assert!(p.is_paused());
        assert!(p.maybe_decr_to(5, 3));
        assert_eq!(p.next_index, 4, "the hint skips straight past the conflict");
        assert!(!p.is_paused());
    }

    #[test]
    fn stale_rejection_in_probe_is_ignored() {
        let mut p = pr(0, 4);
        assert!(!p.maybe_decr_to(5, 2));
        assert_eq!(p.next_index, 4);
    }

    #[test]
    fn rejection_in_replicate_falls_back_to_match_plus_one() {
        let mut p = pr(3, 4);
        p.become_replicate();
        p.sent_entries(Some(8), 10);
        assert_eq!(p.next_index, 9);
        assert!(!p.maybe_decr_to(2, 0), "stale: at or below match");
        assert!(p.maybe_decr_to(6, 5));
        assert_eq!(p.next_index, 4);
    }

    #[test]
    fn replicate_pauses_when_inflight_window_is_full() {
        let mut p = pr(0, 1);
        p.become_replicate();
        for i in 1..=4 {
            assert!(!p.is_paused());
            p.sent_entries(Some(i), 1);
        }
        assert!(p.is_paused());
        p.inflights.free_le(2);
        assert!(!p.is_paused());
    }

    #[test]
    fn probe_after_snapshot_resumes_after_the_snapshot() {
        let mut p = pr(2, 3);
        p.become_snapshot(10);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next_index, 11);
    }

    #[test]
    fn update_moves_match_and_next_forward_only() {
        let mut p = pr(5, 9);
        assert!(!p.maybe_update(4));
        assert_eq!((p.match_index, p.next_index), (5, 9));
        assert!(p.maybe_update(7));
        assert_eq!((p.match_index, p.next_index), (7, 9));
        assert!(p.maybe_update(12));
        assert_eq!((p.match_index, p.next_index), (12, 13));
    }
}
