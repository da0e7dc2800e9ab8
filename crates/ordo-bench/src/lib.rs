//! `ordo bench`: a load generator for any etcd v3 endpoint list (Ordo or etcd itself).
//!
//! A run ([`run`]) takes its options as [`BenchArgs`] (a `clap::Args`, flattened into the
//! `ordo` binary's `bench` subcommand), validates them into a [`Plan`], opens `--conns` gRPC
//! connections round-robin over the endpoints, writes the key space first when the workload
//! reads, then drives `--clients` concurrent clients through an optional warmup and a measured
//! phase bounded by `--duration-s` and `--total`. Latencies go into an HDR histogram
//! ([`LatencyHistogram`]); errors are counted by kind. The [`Report`] prints as a readable
//! table and as one JSON line for scripts.
//!
//! Workloads: `put`, `get` (linearizable or serializable), `txn` (compare-and-put on the key's
//! mod revision) and `mixed` (gets and puts by `--read-ratio`). Pacing: as fast as possible
//! (closed loop) or a fixed `--rate` (open loop, latency from each operation's intended send
//! time; see [`runner`]).

pub mod args;
pub mod error;
pub mod histogram;
pub mod report;
pub mod runner;

pub use args::{BenchArgs, Consistency, Plan, Workload};
pub use error::BenchError;
pub use histogram::{LatencyHistogram, LatencySummary};
pub use report::Report;
pub use runner::{run, run_and_print, run_plan};
