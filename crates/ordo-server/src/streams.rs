//! The streams face's view of the cluster: which brokers there are and where their Kafka
//! listeners are, the cluster id, the controller, and the topics.
//!
//! Every node with a Kafka listener advertises its address to its peers in the peer
//! handshake (under [`KAFKA_ADDR_ADVERTISED`]), as it does its etcd client URL; a node
//! lists itself and every peer that advertised one. The controller Kafka clients are told
//! of is the leader of the metadata group, the group where topics are recorded.
//!
//! Topics in the metadata group: `kafka/topic/NAME` holds the topic's record
//! ([`TopicRecord`]); `kafka/group/ID` (the group id in 16 hex digits) holds
//! `TOPIC-ID/PARTITION` for every partition group ever created, and stays when its topic is
//! deleted, so that no group id is used twice. A topic is created with one insert of its
//! record and its group keys (refused whole if any is taken), changed by a replace of its
//! record that expects the record it was changed from (after an insert of the group keys of
//! the partitions the change adds), and deleted by removing its record (then its
//! partitions' leader records, see [`crate::partitions`]).

use std::sync::Arc;

use bytes::Bytes;
use ordo_node::transport::PeerAdvertised;
use ordo_node::{Group, NodeId};
pub use ordo_streams::broker_id;
use ordo_streams::{Broker, ClusterView, PartitionState, Pending, TopicError, TopicRecord};

use crate::meta::{MetaCommand, MetaError, MetaMachine, MetaView};
use crate::partitions::{leader_key, PartitionGroups};

/// Where topic records are kept in the metadata group.
pub const TOPIC_PREFIX: &[u8] = b"kafka/topic/";
/// Where partition group ids are claimed in the metadata group.
pub const GROUP_PREFIX: &[u8] = b"kafka/group/";

fn topic_key(name: &str) -> Bytes {
    Bytes::from([TOPIC_PREFIX, name.as_bytes()].concat())
}

fn group_key(group: u64) -> Bytes {
    Bytes::from([GROUP_PREFIX, format!("{group:016x}").as_bytes()].concat())
}

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
    /// What this node's copy of the metadata group has applied.
    applied: MetaView,
    /// The partition groups this node runs.
    partitions: PartitionGroups,
}

impl KafkaCluster {
    /// The view of node `node_id` of cluster `cluster_id`, reached at `own`, over the
    /// metadata group `meta` whose applied map is `applied`, with the partition groups it
    /// runs.
    pub fn new(
        cluster_id: u64,
        node_id: NodeId,
        own: KafkaAdvertised,
        peers: PeerAdvertised,
        meta: Group<MetaMachine>,
        applied: MetaView,
        partitions: PartitionGroups,
    ) -> Arc<KafkaCluster> {
        Arc::new(KafkaCluster {
            cluster_id,
            node_id,
            own,
            peers,
            meta,
            applied,
            partitions,
        })
    }

    async fn change(&self, command: MetaCommand) -> Result<Option<Bytes>, ChangeError> {
        match self.meta.propose(command.encode()).await {
            Ok(Ok(previous)) => Ok(previous),
            Ok(Err(refused)) => Err(ChangeError::Refused(refused)),
            Err(error) => Err(ChangeError::Unavailable(error.to_string())),
        }
    }
}

enum ChangeError {
    Refused(MetaError),
    Unavailable(String),
}

impl From<ChangeError> for TopicError {
    /// A change the metadata group could not take, when no more telling error applies.
    fn from(error: ChangeError) -> TopicError {
        let reason = match error {
            ChangeError::Refused(refused) => refused.to_string(),
            ChangeError::Unavailable(reason) => reason,
        };
        TopicError::Unavailable { reason }
    }
}

/// The claims of the group ids of `topic`'s partitions from the one at `from` on: each
/// group key names the topic id and the partition.
fn group_claims(topic: &TopicRecord, from: usize) -> Vec<(Bytes, Bytes)> {
    let id = uuid_hex(&topic.id);
    topic
        .partitions
        .iter()
        .enumerate()
        .skip(from)
        .map(|(index, p)| (group_key(p.group), Bytes::from(format!("{id}/{index}"))))
        .collect()
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

    fn topics(&self) -> Vec<TopicRecord> {
        self.applied
            .with_prefix(TOPIC_PREFIX)
            .into_iter()
            .filter_map(|(key, value)| match TopicRecord::decode(&value) {
                Ok(record) => Some(record),
                Err(error) => {
                    // Every record was encoded by a node; one that does not decode is a
                    // bug or damage the metadata group's checksums missed.
                    tracing::error!(key = %String::from_utf8_lossy(&key), %error, "topic record left out");
                    None
                }
            })
            .collect()
    }

    fn partition(&self, group: u64) -> Option<PartitionState> {
        self.partitions.state(group, &self.applied)
    }

    fn create_topic(&self, topic: TopicRecord) -> Pending<'_, Result<(), TopicError>> {
        Box::pin(async move {
            let mut entries = vec![(topic_key(&topic.name), topic.encode())];
            entries.extend(group_claims(&topic, 0));
            match self.change(MetaCommand::Insert { entries }).await {
                Ok(_) => Ok(()),
                Err(ChangeError::Refused(MetaError::Exists { key }))
                    if key.as_bytes().starts_with(TOPIC_PREFIX) =>
                {
                    Err(TopicError::Exists { name: topic.name })
                }
                Err(ChangeError::Refused(MetaError::Exists { .. })) => Err(TopicError::GroupTaken),
                Err(other) => Err(other.into()),
            }
        })
    }

    fn delete_topic(&self, name: String) -> Pending<'_, Result<TopicRecord, TopicError>> {
        Box::pin(async move {
            let key = topic_key(&name);
            match self.change(MetaCommand::Delete { key }).await {
                Ok(Some(previous)) => {
                    let record = TopicRecord::decode(&previous).map_err(|error| {
                        TopicError::Unavailable {
                            reason: format!(
                                "the deleted record of {name:?} did not decode: {error}"
                            ),
                        }
                    })?;
                    // Its partitions' leader records go too; one left behind (a leader that
                    // recorded itself once more before its group was removed) is never read.
                    for p in &record.partitions {
                        let key = leader_key(p.group);
                        let _ = self.change(MetaCommand::Delete { key }).await;
                    }
                    Ok(record)
                }
                Ok(None) => Err(TopicError::Unknown { name }),
                Err(other) => Err(other.into()),
            }
        })
    }

    fn replace_topic(
        &self,
        previous: TopicRecord,
        new: TopicRecord,
    ) -> Pending<'_, Result<(), TopicError>> {
        Box::pin(async move {
            let name = previous.name.clone();
            let added = group_claims(&new, previous.partitions.len());
            if !added.is_empty() {
                match self.change(MetaCommand::Insert { entries: added }).await {
                    Ok(_) => {}
                    Err(ChangeError::Refused(MetaError::Exists { .. })) => {
                        return Err(TopicError::GroupTaken)
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            let command = MetaCommand::Replace {
                key: topic_key(&name),
                expected: previous.encode(),
                value: new.encode(),
            };
            match self.change(command).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(TopicError::Unknown { name }),
                Err(ChangeError::Refused(MetaError::Changed { .. })) => {
                    // Gone, or another record: which one, the next read tells.
                    if self.applied.get(&topic_key(&name)).is_none() {
                        Err(TopicError::Unknown { name })
                    } else {
                        Err(TopicError::Changed { name })
                    }
                }
                Err(other) => Err(other.into()),
            }
        })
    }
}

fn uuid_hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
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
