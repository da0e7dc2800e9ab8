//! `ordo-check`: attacks an etcd v3 cluster and checks what its clients saw.
//!
//! Concurrent clients run three workloads over the etcd v3 API ([`workload`]): linearizable
//! registers, bank transfers with Txn, and unique appends followed by range reads and resumed
//! watch streams. Every invocation and completion is recorded ([`history`]) with monotonic
//! timestamps; a write that timed out or lost its connection is recorded as indeterminate, for
//! it may or may not have taken effect.
//!
//! When `ordo-check` starts the cluster itself ([`cluster`]), every peer link runs through a
//! fault-injecting proxy inside the checker ([`proxy`]), so partitions happen outside the
//! nodes and the code under test is the production server; the nemesis ([`nemesis`]) kills,
//! pauses, partitions, crashes every node at once and damages a minority's disks while the
//! clients run. Against an endpoint list it did not start it runs the workloads alone.
//!
//! At the end the history is written in full (JSON lines) and checked: linearizability of the
//! registers with `ordo-lincheck`, the bank's invariants, and the append and watch guarantees.
//! The verdict is `valid` only when nothing was violated and every check was decided.

pub mod client;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod proxy;
mod run;
mod summary;
pub mod workload;

pub use run::{run, CheckArgs, CheckError};
pub use summary::{Summary, Verdict};
