//! What a node runs with, checked by whoever built it (the `ordo` binary from its flags and
//! configuration file).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ordo_node::{NodeConfig, NodeId};

/// One member of the cluster as configured on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddrs {
    /// Its peer address.
    pub peer_addr: SocketAddr,
    /// Its client address, when known.
    pub client_addr: Option<SocketAddr>,
}

/// Everything a node runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The runtime's configuration.
    pub node: NodeConfig,
    /// Where the etcd API listens.
    pub client_addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// Every configured member's addresses, this node's included.
    pub members: BTreeMap<NodeId, MemberAddrs>,
}
