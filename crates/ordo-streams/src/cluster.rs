//! What the Kafka face knows of the cluster and does to it, provided by the server that
//! hosts it: the brokers, and the topics recorded in the metadata group.

use std::future::Future;
use std::pin::Pin;

use ordo_node::NodeId;

use crate::topic::TopicRecord;

/// A future the cluster view answers with.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why recording or removing a topic failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// A topic of that name exists.
    #[error("topic {name:?} already exists")]
    Exists {
        /// The name.
        name: String,
    },
    /// No topic of that name exists.
    #[error("no topic {name:?}")]
    Unknown {
        /// The name.
        name: String,
    },
    /// A group id chosen for a partition was taken (by a topic created meanwhile, or one
    /// deleted: group ids are never reused); choosing others may succeed.
    #[error("a partition's group id is taken")]
    GroupTaken,
    /// The topic's record changed since it was read (a replace found another one).
    #[error("topic {name:?} changed meanwhile")]
    Changed {
        /// The name.
        name: String,
    },
    /// The metadata group could not take the change now (no leader, shutting down).
    #[error("the metadata group is unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// A broker as Metadata reports it: a node of the cluster and where its Kafka listener is
/// reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// The Kafka broker id: the node's id.
    pub id: i32,
    /// The advertised host (a name or an address).
    pub host: String,
    /// The advertised port.
    pub port: u16,
}

/// What a node knows of one partition's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The leader the group knows of, if any.
    pub leader: Option<NodeId>,
    /// The group's term: the partition's leader epoch.
    pub epoch: u64,
    /// The replicas in sync with the leader, as the leader last recorded them (empty until
    /// it has).
    pub in_sync: Vec<NodeId>,
}

/// The cluster as one node knows it.
pub trait ClusterView: Send + Sync + 'static {
    /// The cluster id Metadata carries.
    fn cluster_id(&self) -> String;

    /// Every broker whose Kafka address this node knows, itself included, in order of id.
    fn brokers(&self) -> Vec<Broker>;

    /// The broker Metadata names as the controller (the leader of the cluster's metadata
    /// group), `None` while unknown.
    fn controller_id(&self) -> Option<i32>;

    /// Every topic this node's copy of the metadata group holds, in order of name.
    fn topics(&self) -> Vec<TopicRecord>;

    /// What this node knows of the partition whose group is `group`: its leader, epoch and
    /// in-sync replicas, `None` while no leader is known.
    fn partition(&self, group: u64) -> Option<PartitionState>;

    /// Records a new topic, claiming the group ids of its partitions: refused if the name
    /// or a group id is taken.
    fn create_topic(&self, topic: TopicRecord) -> Pending<'_, Result<(), TopicError>>;

    /// Removes the topic `name` (its partitions' group ids stay claimed), answering what
    /// was removed.
    fn delete_topic(&self, name: String) -> Pending<'_, Result<TopicRecord, TopicError>>;

    /// Replaces the record of a topic by `new` if it still is `previous`: refused with
    /// [`TopicError::Changed`] otherwise, or [`TopicError::Unknown`] if it is gone. The group
    /// ids of partitions `new` adds are claimed first ([`TopicError::GroupTaken`] if one is
    /// taken); a claim whose replace is then refused stays, unused.
    fn replace_topic(
        &self,
        previous: TopicRecord,
        new: TopicRecord,
    ) -> Pending<'_, Result<(), TopicError>>;
}

/// The Kafka broker id of an Ordo node: the same number, when it fits Kafka's 32-bit signed
/// broker ids (ids 1 to 2,147,483,647); `None` for a node whose id does not.
pub fn broker_id(node: NodeId) -> Option<i32> {
    i32::try_from(node).ok().filter(|&id| id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_id_is_the_node_id_when_it_fits_kafkas_signed_32_bits() {
        assert_eq!(broker_id(1), Some(1));
        assert_eq!(broker_id(i32::MAX as u64), Some(i32::MAX));
        assert_eq!(broker_id(i32::MAX as u64 + 1), None);
        assert_eq!(broker_id(0), None);
    }
}
