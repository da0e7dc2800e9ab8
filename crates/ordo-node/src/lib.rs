//! `ordo-node`: the runtime that turns Ordo's consensus core and write-ahead log into a
//! networked node.
//!
//! A [`Node`] hosts many Raft groups over one peer transport. Each [`Group`]'s decisions
//! are made by a [`core::GroupCore`] without I/O: it owns the Raft core's `RawNode`, takes
//! ticks, peer messages, proposals and reads, and leaves commands (persist through
//! `ordo-wal`, send to peers, hand committed work to the apply workers, answer) with the
//! persistence ordering in them (spelled out in `core/mod.rs`). A thin tokio driver task
//! carries them out; the simulator runs the same core. A user's replicated logic is a
//! [`StateMachine`].
//!
//! ```text
//!  handles ──requests──▶ driver task ──Ready──▶ WAL (append, hard state, snapshots)
//!  transport ─router──▶  (RawNode)   ──────────▶ transport (messages, snapshot chunks)
//!                            │ committed entries (bounded queue per group)
//!                            ▼
//!                       apply workers ──▶ StateMachine, waiting proposals, snapshots
//! ```
//!
//! # Using it
//!
//! ```no_run
//! # use std::collections::BTreeMap;
//! # use bytes::Bytes;
//! # use ordo_node::{GroupId, Index, Node, NodeConfig, RestoreError, StateMachine};
//! # #[derive(Default)] struct Counter { n: u64, applied: Index }
//! # impl StateMachine for Counter {
//! #     type Output = u64;
//! #     fn apply(&mut self, index: Index, _: &[u8]) -> u64 { self.applied = index; self.n += 1; self.n }
//! #     fn note_applied(&mut self, index: Index) { self.applied = index; }
//! #     fn snapshot(&self) -> Bytes { Bytes::copy_from_slice(&self.n.to_be_bytes()) }
//! #     fn restore(&mut self, index: Index, d: &[u8]) -> Result<(), RestoreError> {
//! #         self.n = u64::from_be_bytes(d.try_into().map_err(|_| RestoreError::new("len"))?);
//! #         self.applied = index; Ok(()) }
//! #     fn applied_index(&self) -> Index { self.applied }
//! # }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let peers: BTreeMap<u64, std::net::SocketAddr> = [
//!     (1, "127.0.0.1:2380".parse()?),
//!     (2, "127.0.0.1:2381".parse()?),
//!     (3, "127.0.0.1:2382".parse()?),
//! ].into();
//! let config = NodeConfig::new(1, "/var/lib/ordo/node-1", peers[&1], peers.clone());
//! let node = Node::start(config).await?;
//! let counter = node.start_group(GroupId(1), Counter::default()).await?;
//!
//! let n = counter.propose("tick").await?;               // any node; followers forward
//! let seen = counter.linearizable_read(|c| c.n).await?; // ReadIndex, then local read
//! let stale_ok = counter.read(|c| c.n);                 // serializable: local state now
//! let status = counter.status().await?;                 // role, term, leader, lag, …
//! # let _ = (n, seen, stale_ok, status);
//! node.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Modules
//!
//! - [`transport`]: the peer transport. One long-lived TCP connection per peer and
//!   direction, a versioned handshake that checks cluster and node ids and refuses a peer
//!   that lost its state (another incarnation under a known id), checksummed batch
//!   frames, bounded queues that drop rather than block, reconnect with backoff.
//! - [`identity`]: the data directory's identity file and incarnation, and [`LostState`],
//!   why a node whose directory lost what it promised refuses to run.
//! - [`codec`]: the versioned encoding of Raft messages, forwarded proposals and snapshot
//!   chunks carried as transport payloads.
//! - [`fuzzing`]: the harnesses of the fuzz targets in `fuzz/` (peer stream, payloads, entry
//!   data, data-directory files), public only for them and the tests.
//! - [`core`]: the group core and the durability gate every runtime of it shares.
//! - [`apply`]: the applier, run on the node's pool of apply workers (`apply_pool`), on the
//!   group's task for a state machine that applies quickly, or inline by the simulator.
//! - `storage`: [`LogStore`], the log storage the core reads, over the WAL.
//! - `driver`: the tokio shell that carries out the core's commands.
//! - `peers`: which groups need each peer, so the shared transport keeps a peer while any
//!   group does; `initial_members`: the voters and learners a new group is bootstrapped
//!   with ([`InitialMembers`]); `removal`: a removed group's state deleted without the node
//!   ever mistaking its absence for lost state.

pub mod apply;
mod apply_pool;
pub mod codec;
mod config;
pub mod core;
mod driver;
pub mod fuzzing;
mod group;
pub mod identity;
mod initial_members;
mod members;
mod metrics;
mod migrate;
mod node;
mod peers;
mod relay;
mod removal;
mod state_machine;
mod storage;
pub mod tls;
pub mod transport;

pub use config::{ConfigError, FsyncPolicy, NodeConfig, APPLY_WORKERS_MAX};
pub use core::Leadership;
pub use driver::{GroupError, LeaderService};
pub use group::{
    AskError, Group, GroupId, GroupStatus, MembershipChange, PeerStatus, ProposeError, ReadError,
};
pub use identity::{IdentityError, LostState, LOST_STATE_REMEDY};
pub use initial_members::{InitialMembers, InitialMembersError};
pub use members::MembersError;
pub use metrics::{Histogram, HistogramSnapshot, MetricsSnapshot, HISTOGRAM_BUCKETS};
pub use node::{role_name, GroupOptions, HostedGroups, Node, NodeError};
pub use ordo_raft::{ConfState, Index, NodeId, StateRole, Term};
pub use removal::RemovalError;
pub use state_machine::{RestoreError, SnapshotJob, StateMachine, ENVELOPE_BYTES};
pub use storage::{LogStore, StorageFailure, WalStorage, LOG_CACHE_BYTES_DEFAULT};
pub use transport::LogThrottle;
