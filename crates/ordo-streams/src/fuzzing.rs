//! The harness of the fuzz target in `fuzz/` and the cluster view it runs against: Kafka
//! requests built from arbitrary bytes. Answering may fail, but must never panic or abort,
//! and a good request is answered afterwards. Public only for the fuzz crate and the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, MetadataRequest, RequestHeader};
use kafka_protocol::protocol::Encodable;

use crate::cluster::{Broker, ClusterView, PartitionState, Pending, TopicError};
use crate::service::KafkaService;
use crate::topic::TopicRecord;

/// A cluster view for tests and fuzzing: three brokers (ids 1 to 3, `127.0.0.1`, ports 9091
/// to 9093), broker 2 the controller, and topics kept in memory as the metadata group keeps
/// them: a name and a group id are taken once.
#[derive(Debug, Default)]
pub struct MemoryCluster {
    /// The topics, by name.
    pub topics: Mutex<BTreeMap<String, TopicRecord>>,
    /// Every group id claimed.
    pub groups: Mutex<BTreeSet<u64>>,
    /// What the node knows of partition groups, by group id.
    pub partitions: Mutex<BTreeMap<u64, PartitionState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ClusterView for MemoryCluster {
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
        lock(&self.topics).values().cloned().collect()
    }

    fn partition(&self, group: u64) -> Option<PartitionState> {
        lock(&self.partitions).get(&group).cloned()
    }

    fn create_topic(&self, topic: TopicRecord) -> Pending<'_, Result<(), TopicError>> {
        Box::pin(async move {
            let mut topics = lock(&self.topics);
            let mut groups = lock(&self.groups);
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
            lock(&self.topics)
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
            let mut topics = lock(&self.topics);
            let mut groups = lock(&self.groups);
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

/// An all-topics Metadata request at version 9, without its size prefix.
fn good_request() -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(9)
        .with_correlation_id(1)
        .encode(&mut buf, ApiKey::Metadata.request_header_version(9))
        .expect("a header encodes");
    MetadataRequest::default()
        .with_topics(None)
        .encode(&mut buf, 9)
        .expect("a request encodes");
    buf.freeze()
}

/// Answers `data` as one Kafka request (the bytes after its size prefix) on a node with
/// topic auto-creation on, over a fresh [`MemoryCluster`]: an answer must be a whole frame
/// whose size prefix says its length, and a good request must be answered afterwards.
pub fn kafka_request(data: &[u8]) {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
    }
    let service =
        KafkaService::new(Arc::new(MemoryCluster::default())).with_auto_create_topics(true);
    RUNTIME.with(|runtime| {
        if let Ok(frame) = runtime.block_on(service.handle(Bytes::copy_from_slice(data))) {
            let mut size = [0u8; 4];
            size.copy_from_slice(&frame[..4]);
            assert_eq!(
                u32::from_be_bytes(size) as usize,
                frame.len() - 4,
                "frame size"
            );
        }
        let after = runtime.block_on(service.handle(good_request()));
        assert!(after.is_ok(), "a good request after {data:?}: {after:?}");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arbitrary_requests_never_panic_and_a_good_one_is_answered_after_each() {
        // A dependency-free generator: the same inputs on every run.
        let mut x: u64 = 0x5eed;
        for _ in 0..500 {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let len = (x % 128) as usize;
            let mut data = Vec::with_capacity(len + 8);
            // A known API key and version half the time, so the body decoders run.
            if x & 1 == 0 {
                data.extend_from_slice(&[0, (x >> 8) as u8 % 61, 0, (x >> 16) as u8 % 13]);
            }
            for i in 0..len {
                data.push((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> (i % 56)) as u8);
            }
            kafka_request(&data);
        }
        kafka_request(&good_request());
    }
}
