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
//!
//! The JSON line is [`Report`] serialized field by field, units last in the names:
//! `{"label":"etcd","workload":"put","consistency":null,…,"ops":41012,"ops_per_s":4093.1,
//! "mb_per_s":1.05,"errors":0,"errors_by_kind":{},"latency_us_p50":5660,"latency_us_p99":23090,
//! "latency_us_p999":44290,"latency_us_max":61000,"latency_us_mean":6120.4}`.
//! [`Report::from_json_line`] reads it back.
//!
//! The `ordo` binary runs [`run_and_print`] for `ordo bench`; the `ordo_bench` example runs the
//! same options on its own.

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
