//! The `ordo` binary's library: flags and configuration of `ordo server` (which runs
//! `ordo_server::run`), a thin client, and a local demo cluster.
//!
//! - [`config`]: flags and the TOML file of `ordo server`, checked before anything starts.
//! - [`demo`]: the bank-account story on a live three-node cluster (started with
//!   `ordo_launch`, the launcher the tests and the checker use too).
//! - [`status`], [`groups`], [`kv`]: `ordo status`, `ordo groups` and `ordo kv`.
//! - [`topic`]: `ordo topic`, topics created, listed, described and deleted over the Kafka
//!   API.
//! - [`cert`]: `ordo cert`, a development CA and certificates for a TLS cluster.

pub mod cert;
pub mod config;
pub mod demo;
pub mod groups;
pub mod kv;
pub mod status;
pub mod topic;
