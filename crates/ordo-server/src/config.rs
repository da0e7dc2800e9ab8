//! What a node runs with, checked by whoever built it (the `ordo` binary from its flags and
//! configuration file).

use std::net::SocketAddr;

use ordo_kv::ServiceConfig;
use ordo_node::NodeConfig;

pub use crate::streams::KafkaAdvertised;
use crate::tls::TlsFiles;
pub use ordo_streams::KafkaListenerConfig;

/// Everything a node runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The runtime's configuration. What it advertises to peers is set by [`crate::run`]
    /// (the client URL below).
    pub node: NodeConfig,
    /// Where the etcd API listens.
    pub client_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// TLS on the etcd API's port; plain text without.
    pub client_tls: Option<TlsFiles>,
    /// TLS on the admin port; plain text without.
    pub admin_tls: Option<TlsFiles>,
    /// The etcd API's settings (request timeout, token lifetime, bcrypt cost).
    pub etcd: ServiceConfig,
    /// The Kafka listener; none without.
    pub kafka: Option<KafkaConfig>,
}

/// The Kafka listener of a node.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where clients are told to reach it (Kafka's `advertised.listeners`).
    pub advertised: KafkaAdvertised,
    /// Its bounds.
    pub listener: KafkaListenerConfig,
    /// Whether Metadata creates the topics clients ask for that do not exist (Kafka's
    /// `auto.create.topics.enable`); off by default.
    pub auto_create_topics: bool,
}
