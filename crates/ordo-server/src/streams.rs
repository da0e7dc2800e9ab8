//! The streams face's view of the cluster: which brokers there are and where their Kafka
//! listeners are, the cluster id, and the controller.
//!
//! Every node with a Kafka listener advertises its address to its peers in the peer
//! handshake (under [`KAFKA_ADDR_ADVERTISED`]), as it does its etcd client URL; a node
//! lists itself and every peer that advertised one. The controller Kafka clients are told
//! of is the leader of the metadata group, the group where topics will be recorded.

use std::sync::Arc;

use ordo_node::transport::PeerAdvertised;
use ordo_node::{Group, NodeId};
pub use ordo_streams::broker_id;
use ordo_streams::{Broker, ClusterView};

use crate::meta::MetaMachine;

/// The name under which a node advertises its Kafka address (`host:port`) to its peers.
pub const KAFKA_ADDR_ADVERTISED: &str = "kafka-addr";

/// Where clients reach a node's Kafka listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaAdvertised {
    /// A host name or an IP address.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl KafkaAdvertised {
    /// Parses `host:port` (an IPv6 address in brackets).
    pub fn parse(text: &str) -> Result<KafkaAdvertised, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("`{text}` is not host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("`{port}` in `{text}` is not a port from 1 to 65535"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let plain = |c: char| c.is_ascii_alphanumeric() || ".-_:".contains(c);
        if host.is_empty() || !host.chars().all(plain) {
            return Err(format!(
                "`{host}` in `{text}` is not a host name or IP address"
            ));
        }
        Ok(KafkaAdvertised {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for KafkaAdvertised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One node's view of the brokers.
pub struct KafkaCluster {
    cluster_id: u64,
    node_id: NodeId,
    own: KafkaAdvertised,
    peers: PeerAdvertised,
    meta: Group<MetaMachine>,
}

impl KafkaCluster {
    /// The view of node `node_id` of cluster `cluster_id`, reached at `own`.
    pub fn new(
        cluster_id: u64,
        node_id: NodeId,
        own: KafkaAdvertised,
        peers: PeerAdvertised,
        meta: Group<MetaMachine>,
    ) -> Arc<KafkaCluster> {
        Arc::new(KafkaCluster {
            cluster_id,
            node_id,
            own,
            peers,
            meta,
        })
    }
}

impl ClusterView for KafkaCluster {
    fn cluster_id(&self) -> String {
        // Kafka's cluster ids are opaque strings; this one reads as Ordo's cluster id.
        format!("ordo-{:016x}", self.cluster_id)
    }

    fn brokers(&self) -> Vec<Broker> {
        let own = (self.node_id, self.own.clone());
        let peers = self.peers.peers().into_iter().filter_map(|peer| {
            let advertised = self.peers.get(peer)?;
            let addr = KafkaAdvertised::parse(advertised.get(KAFKA_ADDR_ADVERTISED)?).ok()?;
            Some((peer, addr))
        });
        let mut brokers: Vec<Broker> = std::iter::once(own)
            .chain(peers)
            .filter_map(|(node, addr)| {
                Some(Broker {
                    id: broker_id(node)?,
                    host: addr.host,
                    port: addr.port,
                })
            })
            .collect();
        brokers.sort_by_key(|b| b.id);
        brokers.dedup_by_key(|b| b.id);
        brokers
    }

    fn controller_id(&self) -> Option<i32> {
        let leader = self.meta.leadership().borrow().leader;
        broker_id(leader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_parse_and_print_back() {
        for text in ["127.0.0.1:9092", "broker-1.example:19092", "[::1]:9092"] {
            let parsed = KafkaAdvertised::parse(text).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(
            KafkaAdvertised::parse("[::1]:9092").unwrap().host,
            "::1".to_string()
        );
        for bad in ["9092", "host:", "host:0", "host:99999", ":9092", "a b:9092"] {
            assert!(KafkaAdvertised::parse(bad).is_err(), "{bad}");
        }
    }
}
