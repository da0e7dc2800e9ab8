//! `ordo-sim`: whole Ordo clusters simulated deterministically from one seed.
//!
//! A run builds a cluster of nodes, each hosting several Raft [`groups`] that run the runtime's
//! production group core ([`ordo_node::core`]), applier and `ordo-kv` state machine over one
//! simulated [`disk`] per node, shared by its groups as the shared journal is, that tells
//! written from fsynced; connects them with a simulated [`network`] that delays, loses,
//! duplicates, reorders and partitions, and lets [`client`] sessions read, write and
//! compare-and-set a few keys of a group through whichever node they believe leads it. A
//! nemesis crashes and restarts nodes, partitions the network, changes membership, transfers
//! leadership, creates and removes groups; then the faults stop and the cluster must recover.
//! After every step the [`checker`]s of every group look for a broken guarantee; at the end
//! each group's history is checked for linearizability with [`ordo_lincheck`].
//!
//! Everything random comes from one [`prng::Prng`] seeded by the run's seed, and nothing reads
//! a clock, so a seed replays exactly: `cargo run --release -p ordo-sim -- --seed S`.

pub mod checker;
pub mod client;
pub mod disk;
pub mod groups;
pub mod network;
pub mod node;
pub mod prng;
pub mod sim;
pub mod trace;

pub use checker::{Violation, ViolationKind};
pub use sim::{
    run, Faults, ReadMode, RunReport, RunStats, SimConfig, SimMutation, RAFT_TICK_TICKS,
};
