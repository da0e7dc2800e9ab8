//! The `ordo` binary's library: a node that serves Ordo's replicated key-value store over
//! the etcd v3 API, its admin endpoints, a thin client, and a local demo cluster.
//!
//! - [`config`]: flags and the TOML file of `ordo server`, checked before anything starts.
//! - [`replicated`]: the etcd services' backend over the runtime's group handle, which
//!   applies entries to `ordo_kv::KvMachine`.
//! - [`membership`]: MemberAdd, MemberRemove, MemberPromote and MemberList over the
//!   replicated configuration.
//! - [`server`]: one node: runtime, KV group, gRPC API, admin endpoints, signals.
//! - [`admin`]: `/status`, `/metrics`, `/health`; [`http`] is the client side.
//! - [`cluster`]: starts `ordo server` processes on loopback (the demo and the tests).
//! - [`demo`]: the bank-account story on a live three-node cluster.
//! - [`status`], [`kv`]: `ordo status` and `ordo kv`.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod demo;
pub use ordo_check::http;
pub mod kv;
pub mod membership;
pub mod replicated;
pub mod server;
pub mod status;
