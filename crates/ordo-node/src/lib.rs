//! `ordo-node`: the runtime that turns Ordo's consensus core and write-ahead log into a
//! networked node.
//!
//! A [`Node`] hosts many Raft groups over one peer transport. For each [`Group`] a driver
//! task owns the core's `RawNode`, feeds it ticks, peer messages and proposals, and carries
//! out the `Ready` it returns — persist through `ordo-wal`, send to peers, hand committed
//! entries to an apply thread — before advancing it (the ordering is spelled out in
//! `driver.rs`). A user's replicated logic is a [`StateMachine`].
//!
//! ```text
//!  handles ──requests──▶ driver task ──Ready──▶ WAL (append, hard state, snapshots)
//!  transport ─router──▶  (RawNode)   ──────────▶ transport (messages, snapshot chunks)
//!                            │ committed entries (bounded queue)
//!                            ▼
//!                       apply thread ──▶ StateMachine, waiting proposals, snapshots
//! ```
//!
//! - [`transport`]: the peer transport. One long-lived TCP connection per peer and
//!   direction, a versioned handshake that checks cluster and node ids, checksummed batch
//!   frames, bounded queues that drop rather than block, reconnect with backoff.
//! - [`codec`]: the versioned encoding of Raft messages, forwarded proposals and snapshot
//!   chunks carried as transport payloads.
//! - `storage`: the core's `Storage` over the WAL.
//! - `driver`, `apply`, `snapshot`: the Ready loop, the apply thread, snapshot streaming.

mod apply;
pub mod codec;
mod config;
mod driver;
mod group;
mod members;
mod metrics;
mod node;
mod snapshot;
mod state_machine;
mod storage;
pub mod transport;

pub use config::{ConfigError, FsyncPolicy, NodeConfig};
pub use driver::GroupError;
pub use group::{
    Group, GroupId, GroupStatus, MembershipChange, PeerStatus, ProposeError, ReadError,
};
pub use members::MembersError;
pub use metrics::{Histogram, HistogramSnapshot, MetricsSnapshot, HISTOGRAM_BUCKETS};
pub use node::{role_name, Node, NodeError};
pub use ordo_raft::{ConfState, Index, NodeId, StateRole, Term};
pub use state_machine::{RestoreError, StateMachine, ENVELOPE_BYTES};
pub use storage::{StorageFailure, WalStorage};
