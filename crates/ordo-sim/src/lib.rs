//! `ordo-sim`: whole Ordo clusters simulated deterministically from one seed.
//!
//! A run builds a cluster of nodes running the runtime's production group core
//! ([`ordo_node::core`]), applier and `ordo-kv` state machine, each with a simulated [`disk`]
//! that tells written from fsynced, connects them with a simulated [`network`] that delays, loses,
//! duplicates, reorders and partitions, and lets [`client`] sessions read, write and
//! compare-and-set a few keys through whichever node they believe leads. A nemesis crashes and
//! restarts nodes, partitions the network, changes membership and transfers leadership; then
//! the faults stop and the cluster must recover. After every step the [`checker`]s look for a
//! broken guarantee; at the end the clients' history is checked for linearizability with
//! [`ordo_lincheck`].
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
