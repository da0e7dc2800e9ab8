//! Typed errors of the core and of storage.

use crate::types::{Index, NodeId};

/// Errors a [`Storage`](crate::Storage) returns.
///
/// `Compacted`, `Unavailable` and `SnapshotTemporarilyUnavailable` are answers the core
/// expects where they can legitimately occur (a follower behind the compacted prefix is
/// sent a snapshot; a snapshot being produced is asked for again). [`StorageError::ReadFailed`],
/// and any other error where the core cannot work around it, stops the node: see
/// [`RawNode::storage_failure`](crate::RawNode::storage_failure).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The requested index is below the first retained index (compacted into a snapshot).
    #[error("index is compacted into a snapshot")]
    Compacted,
    /// The requested index is beyond the last index.
    #[error("index {0} is beyond the last index")]
    Unavailable(Index),
    /// A snapshot older than the storage's current one was offered.
    #[error("snapshot is older than the current one")]
    SnapshotOutOfDate,
    /// The snapshot is being produced; ask again later.
    #[error("snapshot is temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// Reading durable state failed: an I/O error or damaged data (a checksum mismatch).
    /// The text is the storage's own description, naming what it could, such as the file
    /// and byte offset.
    #[error("storage read failed: {0}")]
    ReadFailed(String),
}

impl StorageError {
    /// Whether the error only says that the entry asked for is not held (behind the
    /// compaction point or past the last index), which some callers handle as "no such
    /// entry" rather than as a failure.
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self, StorageError::Compacted | StorageError::Unavailable(_))
    }
}

/// Errors the core returns to its runtime.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This node is not the leader; forward the request to `leader_id`.
    #[error("not the leader; the leader is node {leader_id}")]
    NotLeader {
        /// The current leader, to forward to.
        leader_id: NodeId,
    },
    /// No leader is known (an election is in progress); retry later.
    #[error("no leader is known")]
    NoLeader,
    /// Accepting the proposal would exceed `max_uncommitted_bytes`; retry once entries
    /// commit.
    #[error("uncommitted entries would exceed {limit_bytes} bytes")]
    UncommittedBytesExceeded {
        /// The configured limit.
        limit_bytes: u64,
    },
    /// A leadership transfer is in progress; proposals are refused until it ends.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// The leader has been removed from the configuration and accepts no proposals.
    #[error("this leader is not a voter of the current configuration")]
    LeaderRemoved,
    /// A configuration change is already proposed and not yet applied.
    #[error("a configuration change is pending")]
    ConfChangePending,
    /// The configuration change is not valid for the current configuration.
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
    /// A configuration change entry's data does not decode.
    #[error("malformed configuration change: {0}")]
    MalformedConfChange(&'static str),
    /// Too many read requests are waiting for confirmation.
    #[error("too many pending read requests (limit {limit})")]
    ReadIndexQueueFull {
        /// The configured limit.
        limit: usize,
    },
    /// A read request with this context is already pending.
    #[error("a read request with this context is already pending")]
    DuplicateReadContext,
    /// The configuration is invalid.
    #[error("the configuration is invalid: {0}")]
    InvalidConfig(String),
    /// The operation needs a node that is not in the configuration.
    #[error("node {0} is not in the configuration")]
    UnknownNode(NodeId),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}
