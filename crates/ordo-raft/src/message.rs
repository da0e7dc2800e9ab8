//! Messages between Raft peers (§5 and Figure 2 of the Raft paper, plus the extensions of
//! Ongaro's thesis: pre-vote §9.6, leadership transfer §3.10, ReadIndex §6.4).

use bytes::Bytes;

use crate::types::{Entry, Index, NodeId, Snapshot, Term};

/// A message from one peer to another. Every message carries the sender's current term;
/// a receiver that sees a newer term adopts it (§5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term (for a granted pre-vote: the term the candidate will campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The follower's hint after rejecting an append (§5.3, "the leader can decrement nextIndex
/// to bypass all of the conflicting entries in that term").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    /// The follower's last index at or below the rejected `prev_index` whose term is not
    /// greater than the rejected `prev_term`; the logs can match at most up to here.
    pub index: Index,
    /// The term of the follower's entry at `index` (0 if unknown).
    pub term: Term,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// AppendEntries (§5.3): `entries` follow the entry at (`prev_index`, `prev_term`).
    Append {
        /// Index of the entry preceding `entries`.
        prev_index: Index,
        /// Term of the entry at `prev_index`.
        prev_term: Term,
        /// Entries to append, consecutive from `prev_index + 1`.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The answer to `Append` or `Snapshot`.
    AppendResponse {
        /// On success the follower's last index known to match the leader; on rejection
        /// the `prev_index` that was rejected.
        index: Index,
        /// Present when the append was rejected.
        reject: Option<ConflictHint>,
    },
    /// RequestVote (§5.2); `last_log_*` let the voter apply the up-to-date rule (§5.4.1).
    RequestVote {
        /// Index of the candidate's last entry.
        last_log_index: Index,
        /// Term of the candidate's last entry.
        last_log_term: Term,
        /// Sent because of a leadership transfer; voters skip the leader-lease check.
        leadership_transfer: bool,
    },
    /// The answer to `RequestVote`.
    RequestVoteResponse {
        /// Whether the vote was refused.
        reject: bool,
    },
    /// Pre-vote (thesis §9.6): would you vote for me in `term`? Changes no state.
    RequestPreVote {
        /// Index of the candidate's last entry.
        last_log_index: Index,
        /// Term of the candidate's last entry.
        last_log_term: Term,
    },
    /// The answer to `RequestPreVote`.
    RequestPreVoteResponse {
        /// Whether the pre-vote was refused.
        reject: bool,
    },
    /// Leader heartbeat; carries the commit index (bounded by the follower's match) and the
    /// context of the newest pending ReadIndex request.
    Heartbeat {
        /// The leader's commit index (the follower bounds it by what it accepted).
        commit: Index,
        /// ReadIndex context to echo, empty when none.
        context: Bytes,
        /// The leader's logical clock when sending, echoed so that the leader can date the
        /// quorum contact its lease is measured from.
        sent_tick: u64,
    },
    /// The leader's commit index, told to a follower it replicates to with nothing left to
    /// send it, when the commit index advances past what the follower was told, instead of
    /// an empty `Append`. The follower commits only as far as the appends it accepted from
    /// this leader in this term reach, as it would for an `Append`'s commit; it does not
    /// answer, since the leader already knows all an answer would say. While another
    /// follower's answer is awaited, the leader holds its notices until that answer or its
    /// next heartbeat.
    CommitNotice {
        /// The leader's commit index (the follower bounds it by what it accepted).
        commit: Index,
    },
    /// The answer to `Heartbeat`.
    HeartbeatResponse {
        /// The echoed ReadIndex context.
        context: Bytes,
        /// The echoed `sent_tick`.
        sent_tick: u64,
    },
    /// InstallSnapshot (§7): the follower is behind the leader's compacted prefix.
    Snapshot {
        /// The snapshot.
        snapshot: Snapshot,
    },
    /// Leadership transfer (thesis §3.10): campaign now, skipping pre-vote.
    TimeoutNow,
    /// A follower forwards a read request to the leader.
    ReadIndex {
        /// The requester's identifier for the read.
        context: Bytes,
    },
    /// The leader answers a forwarded read request.
    ReadIndexResponse {
        /// The index the read must wait for.
        index: Index,
        /// The echoed identifier.
        context: Bytes,
    },
    /// A follower forwards a leadership transfer request to the leader.
    TransferLeader {
        /// The node that should become leader.
        target: NodeId,
    },
}

impl MessageBody {
    /// A short name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::RequestPreVote { .. } => "RequestPreVote",
            MessageBody::RequestPreVoteResponse { .. } => "RequestPreVoteResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::CommitNotice { .. } => "CommitNotice",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::TransferLeader { .. } => "TransferLeader",
        }
    }
}
