//! Ordo's streams face: the Kafka wire protocol, so that Kafka's own clients (librdkafka
//! and the tools built on it such as kcat, kafka-python, the Java client) talk to an Ordo
//! cluster unchanged.
//!
//! What is served:
//! - [`listener`]: the Kafka port. Kafka's framing (a 4-byte size, then the request), a bound
//!   on a request's size checked before any of it is read, a bound on connections, an idle
//!   timeout, and requests answered in the order they came, as clients expect.
//! - [`service`]: ApiVersions and Metadata, decoded and encoded with the `kafka-protocol`
//!   crate. Bad bytes close the connection with a log line, never a panic; an ApiVersions
//!   request of a version this node does not serve is answered at version 0 with
//!   `UNSUPPORTED_VERSION` and the versions it does serve (KIP-511), so a newer client
//!   retries with one both know.
//! - [`admin`]: CreateTopics, CreatePartitions and DeleteTopics, recorded in the cluster's
//!   metadata group, with Kafka's checks and error codes; [`topic`] holds the topic record,
//!   the replica placement and the topic configs accepted
//!   (`unclean.leader.election.enable=true` is refused, saying why).
//! - [`configs`]: DescribeConfigs and IncrementalAlterConfigs of topic configs, and
//!   DescribeCluster.
//! - [`fuzzing`]: the fuzz target's harness, and an in-memory cluster view for tests.
//! - [`cluster`]: what Metadata reports (the brokers and their Kafka addresses, the
//!   cluster id, the controller, the topics) and where topics are recorded, provided by the
//!   server that hosts the face.
//!
//! - [`partition`]: the state machine of a partition's Raft group, whose log is the
//!   partition's log (the server runs the groups of the partitions a node holds a replica
//!   of).
//!
//! Produce and Fetch are not served yet.
//!
//! The codec: `kafka-protocol` is generated from Kafka's own message definitions (Kafka
//! 4.1), covers every API with its flexible versions and tagged fields, and is kept by the
//! people who use it in a Kafka proxy. Its decoders trusted length prefixes with their
//! allocations; the workspace uses a copy with that bounded (`vendor/kafka-protocol`).

pub mod admin;
pub mod client;
pub mod cluster;
pub mod configs;
pub mod frame;
pub mod fuzzing;
pub mod listener;
pub mod partition;
pub mod service;
pub mod topic;

pub use cluster::{broker_id, Broker, ClusterView, PartitionState, Pending, TopicError};
pub use frame::FrameError;
pub use listener::{serve, KafkaListenerConfig, KafkaMetrics};
pub use service::{KafkaService, RequestError, SERVED_APIS};
pub use topic::{PartitionRecord, TopicRecord};
