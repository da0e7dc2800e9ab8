//! Random and mutated requests: each is answered or refused, never a panic or an abort, and
//! the service answers a good request the same way afterwards.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use ordo_streams::{
    Broker, ClusterView, KafkaService, PartitionState, Pending, TopicError, TopicRecord,
};
use proptest::prelude::*;

struct One;

impl ClusterView for One {
    fn cluster_id(&self) -> String {
        "c".into()
    }
    fn brokers(&self) -> Vec<Broker> {
        vec![Broker {
            id: 1,
            host: "127.0.0.1".into(),
            port: 9092,
        }]
    }
    fn controller_id(&self) -> Option<i32> {
        None
    }
    fn topics(&self) -> Vec<TopicRecord> {
        Vec::new()
    }
    fn partition(&self, _: u64) -> Option<PartitionState> {
        None
    }
    fn create_topic(&self, _: TopicRecord) -> Pending<'_, Result<(), TopicError>> {
        Box::pin(async {
            Err(TopicError::Unavailable {
                reason: "not in this test".into(),
            })
        })
    }
    fn delete_topic(&self, name: String) -> Pending<'_, Result<TopicRecord, TopicError>> {
        Box::pin(async { Err(TopicError::Unknown { name }) })
    }
    fn replace_topic(
        &self,
        old: TopicRecord,
        _: TopicRecord,
    ) -> Pending<'_, Result<(), TopicError>> {
        Box::pin(async { Err(TopicError::Unknown { name: old.name }) })
    }
}

/// A Metadata request (without its size prefix) at `version`, naming two topics.
fn metadata(version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(version)
        .with_correlation_id(5)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, ApiKey::Metadata.request_header_version(version))
        .expect("header");
    let topic = |name: &'static str| {
        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str(name))))
    };
    MetadataRequest::default()
        .with_topics(Some(vec![topic("a"), topic("orders")]))
        .encode(&mut buf, version)
        .expect("body");
    buf.to_vec()
}

fn answer(service: &KafkaService, request: Vec<u8>) -> Option<Bytes> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(service.handle(Bytes::from(request))).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_are_answered_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let service = KafkaService::new(Arc::new(One));
        let _ = answer(&service, bytes);
        prop_assert!(answer(&service, metadata(9)).is_some());
    }

    #[test]
    fn mutated_requests_are_answered_or_refused(
        version in 0i16..=12,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let service = KafkaService::new(Arc::new(One));
        let good = metadata(version);
        let expected = answer(&service, good.clone());
        prop_assert!(expected.is_some());
        let mut bytes = good.clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let mut longer = bytes.clone();
        longer.put_u8(0);
        let _ = answer(&service, bytes);
        let _ = answer(&service, longer);
        prop_assert_eq!(answer(&service, good), expected);
    }
}
