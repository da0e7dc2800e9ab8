//! `ordo-raft`: the Raft consensus algorithm as a pure state machine.
//!
//! The core performs no I/O, reads no clock and spawns no threads: the runtime feeds it
//! ticks, messages and proposals, and carries out the [`Ready`] it returns.
//!
//! # Driving a node
//!
//! ```text
//! let mut node = RawNode::new(Config { id, seed, ..Config::new(id) }, storage)?;
//! loop {
//!     // inputs, in any order
//!     node.tick();                      // every tick interval
//!     node.step(message_from_peer)?;    // every message received
//!     node.propose(data)?;              // client writes (leader only; else NotLeader)
//!     node.read_index(context)?;        // linearizable reads
//!     // outputs
//!     if node.has_ready() {
//!         let rd = node.ready();
//!         send(rd.messages);                              // at once
//!         persist(rd.snapshot, rd.entries, rd.hard_state); // durably, in that order
//!         send(rd.persisted_messages);                     // only after persisting
//!         apply(rd.committed_entries); answer(rd.read_states);
//!         node.advance();
//!     }
//! }
//! ```
//!
//! [`Ready`] documents the persistence contract in full. A storage read that fails stops
//! the node, not the process: it reports why in [`RawNode::storage_failure`] and sends
//! nothing that depends on what it could not read (see [`raw_node`]).
//!
//! # Layout
//!
//! Files use the paper's vocabulary: [`raft`] (roles, elections, replication,
//! commitment), `log` and `log_unstable` (the replicated log, durable and not yet
//! durable), [`tracker`] (per-peer progress, in-flight windows), [`quorum`] (majority and
//! joint-consensus arithmetic), `confchange` (membership changes), `read_only`
//! (ReadIndex), [`raw_node`] (the runtime interface), [`storage`] (what the runtime must
//! provide).

mod confchange;
mod config;
mod error;
mod log;
mod log_unstable;
mod message;
mod prng;
pub mod quorum;
pub mod raft;
pub mod raw_node;
mod read_only;
pub mod storage;
pub mod tracker;
mod types;

#[cfg(feature = "mutations")]
pub use config::Mutation;
pub use config::{Config, ReadOnlyOption};
pub use error::{Error, StorageError};
pub use message::{ConflictHint, Message, MessageBody};
pub use raft::{EntryId, SnapshotStatus, StateRole};
pub use raw_node::{PeerProgress, RawNode, Ready, SoftState, Status};
pub use storage::{MemStorage, RaftState, Storage};
pub use tracker::progress::ProgressState;
pub use types::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Entry,
    EntryKind, HardState, Index, NodeId, ReadState, Snapshot, SnapshotMeta, Term,
    ENTRY_OVERHEAD_BYTES, INVALID_ID, MAX_CONF_CHANGES,
};
