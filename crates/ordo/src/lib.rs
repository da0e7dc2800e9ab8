//! The `ordo` binary's library: flags and configuration of `ordo server` (which runs
//! `ordo_server::run`), a thin client, and a local demo cluster.
//!
//! - [`config`]: flags and the TOML file of `ordo server`, checked before anything starts.
//! - [`cluster`]: starts `ordo server` processes on loopback (the demo and the tests).
//! - [`demo`]: the bank-account story on a live three-node cluster.
//! - [`status`], [`kv`]: `ordo status` and `ordo kv`.

pub mod cluster;
pub mod config;
pub mod demo;
pub use ordo_check::http;
pub mod kv;
pub mod status;
