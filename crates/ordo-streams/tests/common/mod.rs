//! A cluster view for the tests: fixed brokers, topics in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use ordo_streams::{Broker, ClusterView, PartitionState, Pending, TopicError, TopicRecord};

/// Three brokers (ids 1 to 3, ports 9091 to 9093), broker 2 the controller, and topics kept
/// in memory as the metadata group keeps them: a name and a group id are taken once.
#[derive(Default)]
pub struct Memory {
    pub topics: Mutex<BTreeMap<String, TopicRecord>>,
    pub groups: Mutex<BTreeSet<u64>>,
    /// What the node knows of partition groups it "runs", by group id.
    pub partitions: Mutex<BTreeMap<u64, PartitionState>>,
}

impl ClusterView for Memory {
    fn cluster_id(&self) -> String {
        "ordo-test-cluster".into()
    }
    fn brokers(&self) -> Vec<Broker> {
        (1..=3)
            .map(|id| Broker {
                id,
                host: "127.0.0.1".into(),
                port: 9090 + id as u16,
            })
            .collect()
    }
    fn controller_id(&self) -> Option<i32> {
        Some(2)
    }
    fn topics(&self) -> Vec<TopicRecord> {
        self.topics.lock().unwrap().values().cloned().collect()
    }
    fn partition(&self, group: u64) -> Option<PartitionState> {
        self.partitions.lock().unwrap().get(&group).cloned()
    }
    fn create_topic(&self, topic: TopicRecord) -> Pending<'_, Result<(), TopicError>> {
        Box::pin(async move {
            let mut topics = self.topics.lock().unwrap();
            let mut groups = self.groups.lock().unwrap();
            if topics.contains_key(&topic.name) {
                return Err(TopicError::Exists { name: topic.name });
            }
            if topic.partitions.iter().any(|p| groups.contains(&p.group)) {
                return Err(TopicError::GroupTaken);
            }
            groups.extend(topic.partitions.iter().map(|p| p.group));
            topics.insert(topic.name.clone(), topic);
            Ok(())
        })
    }
    fn delete_topic(&self, name: String) -> Pending<'_, Result<TopicRecord, TopicError>> {
        Box::pin(async move {
            self.topics
                .lock()
                .unwrap()
                .remove(&name)
                .ok_or(TopicError::Unknown { name })
        })
    }
    fn replace_topic(
        &self,
        previous: TopicRecord,
        new: TopicRecord,
    ) -> Pending<'_, Result<(), TopicError>> {
        Box::pin(async move {
            let mut topics = self.topics.lock().unwrap();
            let mut groups = self.groups.lock().unwrap();
            let added = &new.partitions[previous.partitions.len().min(new.partitions.len())..];
            if added.iter().any(|p| groups.contains(&p.group)) {
                return Err(TopicError::GroupTaken);
            }
            groups.extend(added.iter().map(|p| p.group));
            match topics.get(&previous.name) {
                None => Err(TopicError::Unknown {
                    name: previous.name,
                }),
                Some(current) if *current != previous => Err(TopicError::Changed {
                    name: previous.name,
                }),
                Some(_) => {
                    topics.insert(new.name.clone(), new);
                    Ok(())
                }
            }
        })
    }
}
