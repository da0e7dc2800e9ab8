//! Node configuration.

use crate::error::Error;
use crate::types::{Index, NodeId, INVALID_ID};

/// How linearizable reads are confirmed (thesis §6.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadOnlyOption {
    /// ReadIndex: the leader confirms it is still leader with a heartbeat round acknowledged
    /// by a quorum before answering. Safe under any clock behaviour.
    #[default]
    Safe,
    /// Leader lease: the leader answers at once, trusting that no other leader can exist
    /// within an election timeout of its last quorum contact. Requires `check_quorum` and
    /// bounded clock drift.
    LeaseBased,
}

/// Rule-breaking switches. Each breaks exactly one safety rule so the simulator can prove
/// that its checkers notice. Never enable outside tests.
#[cfg(feature = "mutations")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Grant votes without the up-to-date check of §5.4.1.
    GrantVoteWithoutLogCheck,
    /// Commit entries of earlier terms by counting replicas, ignoring §5.4.2.
    CommitPreviousTermByCounting,
    /// Acknowledge appends (followers) and count the leader's own entries before they are
    /// durable.
    AckAppendBeforeDurable,
    /// Accept AppendEntries without checking that the entry at `prev_index` has `prev_term`.
    SkipPrevTermCheck,
}

/// Configuration of one Raft node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; must not be 0.
    pub id: NodeId,
    /// A follower that hears nothing from a leader for a randomized timeout in
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)` starts an election (§5.2).
    pub election_timeout_ticks: u64,
    /// A leader sends heartbeats every `heartbeat_interval_ticks`; must be smaller than
    /// `election_timeout_ticks`.
    pub heartbeat_interval_ticks: u64,
    /// Upper bound on the entry bytes in one append message (at least one entry is sent).
    pub max_append_bytes: u64,
    /// Upper bound on append messages in flight to one follower in the replicate state.
    pub max_inflight_msgs: usize,
    /// Upper bound on the bytes of entries appended by this leader and not yet applied;
    /// proposals beyond it fail with [`Error::UncommittedBytesExceeded`].
    pub max_uncommitted_bytes: u64,
    /// Upper bound on the bytes of committed entries handed out in one `Ready`.
    pub max_committed_bytes_per_ready: u64,
    /// Upper bound on read requests waiting for a quorum's confirmation.
    pub max_pending_reads: usize,
    /// Run a pre-vote round before a real election (thesis §9.6), so that a node that was
    /// partitioned away does not disrupt the cluster when it returns.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down;
    /// followers ignore vote requests while they hear from a leader.
    pub check_quorum: bool,
    /// How reads are confirmed.
    pub read_only: ReadOnlyOption,
    /// The index the state machine has applied, on restart. Entries up to it are not
    /// handed out again.
    pub applied_index: Index,
    /// Seed of the core's pseudo-random generator (randomized election timeouts). Nodes
    /// of a cluster should use different seeds; the simulator derives them from its seed.
    pub seed: u64,
    /// A rule-breaking switch, for checker tests only.
    #[cfg(feature = "mutations")]
    pub mutation: Option<Mutation>,
}

impl Config {
    /// Defaults suited to a local cluster with a 100 ms tick: elections after 1–2 s,
    /// heartbeats every 100 ms.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            max_append_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            max_committed_bytes_per_ready: 16 * 1024 * 1024,
            max_pending_reads: 4096,
            pre_vote: true,
            check_quorum: true,
            read_only: ReadOnlyOption::Safe,
            applied_index: 0,
            seed: id,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }

    /// Checks the configuration for values the core cannot work with.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |s: &str| Err(Error::InvalidConfig(s.to_string()));
        if self.id == INVALID_ID {
            return bad("id must not be 0");
        }
        if self.heartbeat_interval_ticks == 0 {
            return bad("heartbeat_interval_ticks must be at least 1");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return bad("election_timeout_ticks must exceed heartbeat_interval_ticks");
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs must be at least 1");
        }
        if self.max_append_bytes == 0 || self.max_uncommitted_bytes == 0 {
            return bad("byte limits must be at least 1");
        }
        if self.max_committed_bytes_per_ready == 0 || self.max_pending_reads == 0 {
            return bad("limits must be at least 1");
        }
        if self.read_only == ReadOnlyOption::LeaseBased && !self.check_quorum {
            return bad("lease-based reads require check_quorum");
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn mutation_is(&self, _which: MutationKind) -> bool {
        #[cfg(feature = "mutations")]
        {
            matches!(
                (self.mutation, _which),
                (
                    Some(Mutation::GrantVoteWithoutLogCheck),
                    MutationKind::GrantVoteWithoutLogCheck
                ) | (
                    Some(Mutation::CommitPreviousTermByCounting),
                    MutationKind::CommitPreviousTermByCounting
                ) | (
                    Some(Mutation::AckAppendBeforeDurable),
                    MutationKind::AckAppendBeforeDurable
                ) | (
                    Some(Mutation::SkipPrevTermCheck),
                    MutationKind::SkipPrevTermCheck
                )
            )
        }
        #[cfg(not(feature = "mutations"))]
        {
            false
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::new(1)
    }
}

/// Internal mirror of `Mutation` that exists with or without the feature, so call sites
/// need no `cfg`; without the feature every check folds to `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MutationKind {
    GrantVoteWithoutLogCheck,
    CommitPreviousTermByCounting,
    AckAppendBeforeDurable,
    SkipPrevTermCheck,
}
