//! What the group core asks its runtime to do, as data.
//!
//! The core never performs I/O; each call on it leaves a list of [`Command`]s that the
//! runtime carries out in order. The ordering rules of Raft's persistence contract are in
//! the commands themselves: a message that promises local durability is a
//! [`Command::SendAfterDurable`] naming the write it waits for, never a plain
//! [`Command::Send`]; committed entries are handed out only in a [`Command::Apply`], and a
//! proposer is answered only by the state machine applying its entry (its ticket travels in
//! that command), or with a failure in [`Command::Answer`].

use std::net::SocketAddr;

use bytes::Bytes;
use ordo_raft::{ConfState, Entry, HardState, Index, NodeId, Snapshot, StateRole, Term};

use crate::codec::{RequestId, WireMessage};
use crate::group::{AskError, ProposeError, ReadError};

/// Names one request a caller made of the core (a proposal, a read, a question for the
/// leader): the core answers it by this ticket. Unique within one run of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Who leads the group, as this node last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The leader this node knows of, or 0.
    pub leader: NodeId,
    /// The current term.
    pub term: Term,
    /// This node's role.
    pub role: StateRole,
}

impl Default for Leadership {
    fn default() -> Leadership {
        Leadership {
            leader: 0,
            term: 0,
            role: StateRole::Follower,
        }
    }
}

/// Writes to make durable, in this order: the snapshot (replacing the whole log), the
/// entries (cutting any stored entries at and after the first one), the hard state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    /// Identifies the write; [`GroupCore::on_persisted`](super::GroupCore::on_persisted)
    /// reports it durable.
    pub seq: u64,
    /// A snapshot from the leader to install.
    pub snapshot: Option<Snapshot>,
    /// Entries to append.
    pub entries: Vec<Entry>,
    /// A new term or vote. Its commit index is a hint for a restart: the runtime never
    /// records one beyond what its log holds durably.
    pub hard_state: Option<HardState>,
}

/// Committed work for the state machine, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyWork {
    /// A snapshot to restore before the entries.
    pub restore: Option<Snapshot>,
    /// Committed entries, consecutive.
    pub entries: Vec<Entry>,
    /// The configuration after them.
    pub conf_state: ConfState,
    /// This node's proposals among the entries, by index: each is answered with the
    /// state machine's output once its entry is applied.
    pub proposers: Vec<(Index, Ticket)>,
    /// Take a snapshot after this work whatever the thresholds say.
    pub snapshot_now: bool,
}

/// An answer the core gives itself, without the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The proposal or membership change did not produce an outcome.
    Failed(ProposeError),
    /// The read may be served from the local state machine, which has applied through
    /// this index, or it failed.
    Read(Result<Index, ReadError>),
    /// The leader's answer to a question.
    Asked(Result<Bytes, AskError>),
}

/// Where the answer to a question for the leader goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// A caller on this node, which leads.
    Local(Ticket),
    /// A follower that passed the question on.
    Peer {
        /// The follower.
        from: NodeId,
        /// Its request.
        request: RequestId,
    },
}

/// What to do when a message could not be queued for its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// A forwarded proposal or question that never left: tell the core, which fails it
    /// as retryable.
    Forward(Ticket),
    /// A snapshot chunk: tell the core, which ends the transfer.
    Chunk {
        /// The follower.
        to: NodeId,
        /// The transfer.
        transfer_id: u64,
    },
}

/// One thing for the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send at once; it promises nothing about this node's disk.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: WireMessage,
        /// Whom to tell if the transport refuses it.
        if_unsent: Option<Unsent>,
    },
    /// Write now; report durability with `on_persisted(seq)`.
    Persist(Persist),
    /// Send only once the write `seq` (and every earlier one) is durable: an append
    /// acknowledgement or a vote, which promise it.
    SendAfterDurable {
        /// The write it waits for.
        seq: u64,
        /// The peer.
        to: NodeId,
        /// The message.
        message: WireMessage,
    },
    /// Hand committed work to the state machine.
    Apply(ApplyWork),
    /// Answer a caller.
    Answer {
        /// The caller's ticket.
        ticket: Ticket,
        /// The answer.
        answer: Answer,
    },
    /// Record the commit index in the hard state (bounded by what the log holds durably),
    /// so a restart re-applies more without waiting for a leader.
    RecordCommit(HardState),
    /// Discard log entries through this index; a snapshot covers them.
    CompactLog {
        /// The last index to discard.
        through: Index,
    },
    /// Member addresses learned or forgotten: record them durably and keep the peer
    /// transport in line (`None` removes).
    RecordMembers(Vec<(NodeId, Option<SocketAddr>)>),
    /// The leader, term or this node's role changed.
    LeadershipChanged(Leadership),
    /// Run the face's leader service on a question and give its answer to
    /// `on_leader_served`.
    ServeLeaderRequest {
        /// Who asked.
        asker: Asker,
        /// The question.
        data: Bytes,
    },
}
