//! `ordo-server`: wires an Ordo node — the runtime, its replicated groups, the faces clients
//! speak and the admin endpoints — with what every face needs from a replicated group
//! written once.
//!
//! ```text
//!  etcd v3 client ──gRPC──▶ ordo_kv::EtcdApi ──▶ etcd::EtcdBackend ──▶ replica::Replica
//!                                                  │    │                 │ propose, ReadIndex,
//!                                 leases, members  │    │ questions for   │ pushed leadership
//!                                                  ▼    │ the leader      ▼
//!                                  ordo_kv::LeaseClock  └──ask_leader──▶ ordo_node::Group<KvMachine>
//!                                                        (peer transport; etcd::leader_service answers)
//!  Kafka client ──Kafka wire──▶ ordo_streams::KafkaService ──▶ streams::KafkaCluster (brokers)
//!  operator ──HTTP──▶ admin (/status, /metrics, /health; /groups: every hosted group)
//!  metadata group (0) ────────▶ ordo_node::Group<meta::MetaMachine>, every configured node votes
//! ```
//!
//! - [`config`]: the checked configuration a node runs with (the binary parses flags and
//!   files into it).
//! - [`replica`]: one replicated group as a face sees it: the group handle, who leads in
//!   which term, the applied index for response headers, and runtime errors in a face's
//!   words.
//! - [`etcd`]: the etcd v3 face's backend over the KV group: proposals, reads, the leader's
//!   lease clock, membership changes, and the questions only the leader answers.
//! - [`meta`]: the metadata group (`GroupId(0)`, beside the KV group's `GroupId(1)`): a
//!   replicated map from key bytes to value bytes, where the cluster will record which
//!   groups exist and where their replicas live.
//! - [`admin`]: `/status`, `/metrics`, `/health`, `/groups`.
//! - [`fuzzing`]: the harnesses of the fuzz targets in `fuzz/` (leader questions, the
//!   metadata group's entries and snapshots), public only for them and the tests.
//! - [`streams`]: what the Kafka listener (`ordo-streams`) reports of the cluster: the
//!   brokers and their advertised Kafka addresses, the cluster id, the controller.
//! - [`partitions`]: the partition groups a node holds a replica of, started and removed
//!   as the metadata group's topics say.
//! - [`run`]: one node from start to shutdown.
//! - [`tls`]: TLS on a listener (rustls), its files reloaded when they change.
//! - [`dev_certs`]: a development CA and the certificates it signs (`ordo cert`, tests).

pub mod admin;
pub mod config;
pub mod dev_certs;
pub mod etcd;
pub mod fuzzing;
pub mod meta;
pub mod partitions;
pub mod replica;
pub mod run;
pub mod streams;
pub mod tls;

pub use config::ServerConfig;
pub use run::{run, termination_signal, Listener, ServerError, KV_GROUP};
