//! `ordo-launch`: starts local clusters of real `ordo server` processes on loopback and reads
//! their admin endpoints.
//!
//! It is the one launcher behind `ordo demo`, the `ordo` crate's process tests and the
//! checker (`ordo-check`, which puts a fault-injecting proxy in front of every node's peer
//! listener through [`cluster::LocalCluster::set_dialed_peer_addr`]).
//!
//! - [`cluster`]: plans nodes (ports, data directories, logs), starts, signals, kills and
//!   restarts their processes, adds and removes members, and waits for leaders and applied
//!   indexes through `/status`.
//! - [`parent`]: servers started by a launcher exit when the launcher is gone, even after a
//!   SIGKILL.
//! - [`http`]: the admin endpoints' client side; [`ports`]: loopback ports never handed out
//!   twice by one process.
//! - [`tools`]: outside programs the tests drive (`etcdctl`).

pub mod cluster;
pub mod http;
pub mod parent;
pub mod ports;
pub mod tools;

pub use cluster::{free_ports, LaunchError, LocalCluster, NodeSpec, NodeStatus, PlannedNode};
pub use parent::{exit_with_parent_if_asked, EXIT_WITH_PARENT_ENV};
