//! Ordo's key-value state machine and its etcd v3 gRPC API.
//!
//! Data flows: a client request reaches a service in [`service`]; writes become a
//! [`command::Command`], encoded as a log entry and ordered by the node runtime through the
//! [`backend::KvBackend`] trait; every replica applies committed entries to its
//! [`store::KvStore`] (through [`state::KvState`]), which is a deterministic MVCC store;
//! watchers read the applied history ([`watch`]); the leader's [`lessor::Lessor`] turns lease
//! deadlines into expiry commands. [`machine::KvMachine`] is the store as the runtime's
//! replicated state machine, with the [`machine::LeaseClock`] every replica keeps in step;
//! [`backend::LocalBackend`] is a complete one-node backend. [`auth`] holds etcd's users,
//! roles and permissions as replicated state. [`fuzzing`] holds the harnesses of the fuzz
//! targets in `fuzz/`.

pub mod auth;
mod auth_service;
pub mod backend;
pub mod command;
pub mod error;
pub mod fuzzing;
mod grpc_status;
pub mod keys;
pub mod lessor;
pub mod limits;
pub mod machine;
pub mod proto;
pub mod service;
pub mod snapshot;
pub mod state;
pub mod store;
pub mod watch;

pub use backend::{KvBackend, LocalBackend, LocalConfig, MemberInfo, NodeStatus};
pub use command::{Applied, ApplyResponse, Command};
pub use error::{KvError, SnapshotError};
pub use machine::{Clock, KvMachine, LeaseClock, MonotonicClock};
pub use service::{ClientIdentity, EtcdApi, ServiceConfig};
pub use state::KvState;
pub use store::KvStore;

#[cfg(test)]
mod tests;
