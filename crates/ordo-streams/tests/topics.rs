//! CreateTopics, CreatePartitions, DeleteTopics, the topics Metadata then lists, DescribeConfigs,
//! IncrementalAlterConfigs and DescribeCluster, against a service whose cluster keeps its
//! topics in memory as the metadata group keeps them.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest,
    DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ordo_streams::fuzzing::MemoryCluster as Memory;
use ordo_streams::{ClusterView, KafkaService, PartitionState};

fn request<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Bytes {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(3)
        .encode(&mut buf, api.request_header_version(version))
        .expect("header");
    body.encode(&mut buf, version).expect("body");
    buf.freeze()
}

async fn ask<M: Encodable, R: Decodable>(
    service: &KafkaService,
    api: ApiKey,
    version: i16,
    body: &M,
) -> R {
    let frame = service
        .handle(request(api, version, body))
        .await
        .expect("answered");
    let mut frame = frame.slice(4..);
    ResponseHeader::decode(&mut frame, api.response_header_version(version)).expect("header");
    R::decode(&mut frame, version).expect("body")
}

fn topic(name: &'static str, partitions: i32, replication_factor: i16) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor)
}

fn with_config(mut t: CreatableTopic, name: &'static str, value: &'static str) -> CreatableTopic {
    t.configs.push(
        CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str(name))
            .with_value(Some(StrBytes::from_static_str(value))),
    );
    t
}

async fn create(
    service: &KafkaService,
    version: i16,
    topics: Vec<CreatableTopic>,
    validate_only: bool,
) -> Vec<CreatableTopicResult> {
    let body = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(5000)
        .with_validate_only(validate_only);
    let response: CreateTopicsResponse = ask(service, ApiKey::CreateTopics, version, &body).await;
    response.topics
}

async fn metadata(service: &KafkaService, version: i16) -> MetadataResponse {
    ask(
        service,
        ApiKey::Metadata,
        version,
        &MetadataRequest::default().with_topics(None),
    )
    .await
}

fn service() -> (KafkaService, Arc<Memory>) {
    let memory = Arc::new(Memory::default());
    (KafkaService::new(memory.clone()), memory)
}

#[tokio::test]
async fn a_created_topic_is_listed_with_its_partitions_spread_over_the_brokers() {
    let (service, memory) = service();
    let results = create(&service, 7, vec![topic("orders", 6, 3)], false).await;
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    assert_eq!((r.num_partitions, r.replication_factor), (6, 3));
    assert!(!r.topic_id.is_nil());

    let recorded = memory.topics();
    assert_eq!(recorded.len(), 1);
    assert_eq!(&recorded[0].id, r.topic_id.as_bytes());
    let groups: BTreeSet<u64> = recorded[0].partitions.iter().map(|p| p.group).collect();
    assert_eq!(groups.len(), 6, "a group per partition");

    let response = metadata(&service, 12).await;
    assert_eq!(response.topics.len(), 1);
    let t = &response.topics[0];
    assert_eq!(
        t.name.as_ref().map(|n| n.to_string()),
        Some("orders".into())
    );
    assert_eq!(t.topic_id, r.topic_id);
    assert_eq!(t.partitions.len(), 6);
    let mut leaders = Vec::new();
    for (i, p) in t.partitions.iter().enumerate() {
        assert_eq!(p.partition_index, i as i32);
        // No partition group runs yet.
        assert_eq!(p.error_code, ResponseError::LeaderNotAvailable.code());
        let replicas: BTreeSet<i32> = p.replica_nodes.iter().map(|b| b.0).collect();
        assert_eq!(replicas, BTreeSet::from([1, 2, 3]));
        leaders.push(p.replica_nodes[0].0);
    }
    // Preferred leaders in turn: each broker twice.
    leaders.sort_unstable();
    assert_eq!(leaders, vec![1, 1, 2, 2, 3, 3]);

    // Version 4 (librdkafka's newest) and defaults: one partition, three replicas.
    let results = create(&service, 4, vec![topic("defaults", -1, -1)], false).await;
    assert_eq!(results[0].error_code, 0);
    let defaults = memory
        .topics()
        .into_iter()
        .find(|t| t.name == "defaults")
        .expect("recorded");
    assert_eq!(defaults.partitions.len(), 1);
    assert_eq!(defaults.partitions[0].replicas.len(), 3);
}

#[tokio::test]
async fn refused_topics_say_why_with_kafkas_codes_and_record_nothing() {
    let (service, memory) = service();
    assert_eq!(
        create(&service, 7, vec![topic("taken", 1, 1)], false).await[0].error_code,
        0
    );
    let cases = vec![
        (
            topic("too-many-replicas", 3, 4),
            ResponseError::InvalidReplicationFactor,
        ),
        (
            topic("no-replicas", 3, 0),
            ResponseError::InvalidReplicationFactor,
        ),
        (
            topic("no-partitions", 0, 3),
            ResponseError::InvalidPartitions,
        ),
        (
            topic("bad/name", 1, 1),
            ResponseError::InvalidTopicException,
        ),
        (topic("taken", 1, 1), ResponseError::TopicAlreadyExists),
        (
            with_config(topic("unknown-config", 1, 1), "flush.nonsense", "1"),
            ResponseError::InvalidConfig,
        ),
        (
            with_config(topic("isr", 1, 3), "min.insync.replicas", "4"),
            ResponseError::InvalidConfig,
        ),
        (
            with_config(
                topic("unclean", 1, 3),
                "unclean.leader.election.enable",
                "true",
            ),
            ResponseError::InvalidConfig,
        ),
    ];
    for (t, code) in cases {
        let name = t.name.to_string();
        let results = create(&service, 7, vec![t], false).await;
        assert_eq!(
            results[0].error_code,
            code.code(),
            "{name}: {:?}",
            results[0]
        );
        assert!(results[0].error_message.is_some(), "{name}");
    }
    let unclean = create(
        &service,
        7,
        vec![with_config(
            topic("unclean", 1, 3),
            "unclean.leader.election.enable",
            "true",
        )],
        false,
    )
    .await;
    let message = unclean[0].error_message.as_ref().unwrap().to_string();
    assert!(message.contains("majority"), "{message}");
    // The same name twice in one request: both refused.
    let twice = create(
        &service,
        7,
        vec![topic("twice", 1, 1), topic("twice", 1, 1)],
        false,
    )
    .await;
    assert!(twice
        .iter()
        .all(|r| r.error_code == ResponseError::InvalidRequest.code()));
    // Validate-only: answered as a success, nothing recorded.
    let dry = create(&service, 7, vec![topic("dry", 2, 3)], true).await;
    assert_eq!((dry[0].error_code, dry[0].num_partitions), (0, 2));
    let names: Vec<String> = memory.topics().into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["taken".to_string()]);
}

#[tokio::test]
async fn deleted_topics_are_gone_by_name_or_by_id_and_unknown_ones_say_so() {
    let (service, memory) = service();
    let created = create(
        &service,
        7,
        vec![topic("a", 1, 1), topic("b", 2, 1), topic("c", 1, 1)],
        false,
    )
    .await;
    let b_id = created[1].topic_id;
    let by_name = DeleteTopicsRequest::default()
        .with_topic_names(vec![
            TopicName(StrBytes::from_static_str("a")),
            TopicName(StrBytes::from_static_str("nope")),
        ])
        .with_timeout_ms(5000);
    let response: DeleteTopicsResponse = ask(&service, ApiKey::DeleteTopics, 4, &by_name).await;
    let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        vec![0, ResponseError::UnknownTopicOrPartition.code()]
    );

    let by_id = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default().with_topic_id(b_id)])
        .with_timeout_ms(5000);
    let response: DeleteTopicsResponse = ask(&service, ApiKey::DeleteTopics, 6, &by_id).await;
    assert_eq!(response.responses[0].error_code, 0);
    assert_eq!(
        response.responses[0].name.as_ref().map(|n| n.to_string()),
        Some("b".into())
    );
    assert_eq!(response.responses[0].topic_id, b_id);

    let names: Vec<String> = memory.topics().into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["c".to_string()]);
    let listed = metadata(&service, 1).await;
    assert_eq!(listed.topics.len(), 1);
    // The deleted topics' group ids stay claimed.
    assert_eq!(memory.groups.lock().unwrap().len(), 4);
}

fn alter(
    name: &'static str,
    ops: &[(&'static str, i8, Option<&'static str>)],
) -> IncrementalAlterConfigsRequest {
    let configs = ops
        .iter()
        .map(|&(config, op, value)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_static_str(config))
                .with_config_operation(op)
                .with_value(value.map(StrBytes::from_static_str))
        })
        .collect();
    IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str(name))
        .with_configs(configs)])
}

async fn configs_of(service: &KafkaService, name: &'static str) -> Vec<(String, String, i8)> {
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str(name))
            .with_configuration_keys(None)]);
    let response: DescribeConfigsResponse =
        ask(service, ApiKey::DescribeConfigs, 4, &request).await;
    let result = &response.results[0];
    assert_eq!(result.error_code, 0, "{:?}", result.error_message);
    result
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_ref().map(|v| v.to_string()).unwrap_or_default(),
                c.config_source,
            )
        })
        .collect()
}

#[tokio::test]
async fn configs_are_described_with_their_defaults_and_altered_with_kafkas_checks() {
    let (service, _) = service();
    let created = create(
        &service,
        7,
        vec![with_config(topic("orders", 2, 3), "retention.ms", "60000")],
        false,
    )
    .await;
    assert_eq!(created[0].error_code, 0);
    let configs = configs_of(&service, "orders").await;
    assert!(
        configs.contains(&("retention.ms".into(), "60000".into(), 1)),
        "{configs:?}"
    );
    assert!(
        configs.contains(&("min.insync.replicas".into(), "1".into(), 5)),
        "{configs:?}"
    );

    // SET one, DELETE another: both take effect together.
    let ops = [
        ("min.insync.replicas", 0, Some("2")),
        ("retention.ms", 1, None),
    ];
    let response: IncrementalAlterConfigsResponse = ask(
        &service,
        ApiKey::IncrementalAlterConfigs,
        1,
        &alter("orders", &ops),
    )
    .await;
    assert_eq!(
        response.responses[0].error_code, 0,
        "{:?}",
        response.responses[0]
    );
    let configs = configs_of(&service, "orders").await;
    assert!(configs.contains(&("min.insync.replicas".into(), "2".into(), 1)));
    assert!(configs.contains(&("retention.ms".into(), "604800000".into(), 5)));

    let refused = [
        (
            alter("orders", &[("min.insync.replicas", 0, Some("4"))]),
            ResponseError::InvalidConfig,
        ),
        (
            alter(
                "orders",
                &[("unclean.leader.election.enable", 0, Some("true"))],
            ),
            ResponseError::InvalidConfig,
        ),
        (
            alter("orders", &[("segment.ms", 0, Some("1"))]),
            ResponseError::InvalidConfig,
        ),
        (
            alter("orders", &[("retention.ms", 2, Some("1"))]),
            ResponseError::InvalidRequest,
        ),
        (
            alter("nope", &[("retention.ms", 0, Some("1"))]),
            ResponseError::UnknownTopicOrPartition,
        ),
    ];
    for (request, code) in refused {
        let response: IncrementalAlterConfigsResponse =
            ask(&service, ApiKey::IncrementalAlterConfigs, 1, &request).await;
        assert_eq!(response.responses[0].error_code, code.code(), "{request:?}");
    }
    // Nothing refused changed anything.
    let configs = configs_of(&service, "orders").await;
    assert!(configs.contains(&("min.insync.replicas".into(), "2".into(), 1)));
    assert!(configs.contains(&("unclean.leader.election.enable".into(), "false".into(), 5)));
}

#[tokio::test]
async fn describe_cluster_lists_the_brokers_and_the_controller() {
    let (service, _) = service();
    let request = DescribeClusterRequest::default().with_endpoint_type(1);
    let response: DescribeClusterResponse =
        ask(&service, ApiKey::DescribeCluster, 1, &request).await;
    assert_eq!(response.error_code, 0);
    assert_eq!(response.controller_id.0, 2);
    assert_eq!(response.cluster_id.to_string(), "ordo-test-cluster");
    let ids: Vec<i32> = response.brokers.iter().map(|b| b.broker_id.0).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let controllers = DescribeClusterRequest::default().with_endpoint_type(2);
    let response: DescribeClusterResponse =
        ask(&service, ApiKey::DescribeCluster, 1, &controllers).await;
    assert_eq!(
        response.error_code,
        ResponseError::UnsupportedEndpointType.code()
    );
}

fn grow_to(name: &'static str, count: i32) -> CreatePartitionsRequest {
    CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_count(count)])
        .with_timeout_ms(5000)
}

#[tokio::test]
async fn create_partitions_grows_a_topic_with_new_groups_and_never_shrinks_one() {
    let (service, memory) = service();
    create(&service, 7, vec![topic("orders", 2, 3)], false).await;
    let before = memory.topics()[0].clone();
    let response: CreatePartitionsResponse =
        ask(&service, ApiKey::CreatePartitions, 3, &grow_to("orders", 5)).await;
    assert_eq!(
        response.results[0].error_code, 0,
        "{:?}",
        response.results[0]
    );
    let after = memory.topics()[0].clone();
    assert_eq!(after.partitions.len(), 5);
    assert_eq!(
        &after.partitions[..2],
        &before.partitions[..],
        "old partitions kept"
    );
    assert!(after.partitions.iter().all(|p| p.replicas.len() == 3));
    let groups: BTreeSet<u64> = after.partitions.iter().map(|p| p.group).collect();
    assert_eq!(groups.len(), 5, "a new group per new partition");
    assert_eq!(memory.groups.lock().unwrap().len(), 5);

    for (request, code) in [
        (grow_to("orders", 5), ResponseError::InvalidPartitions),
        (grow_to("orders", 3), ResponseError::InvalidPartitions),
        (grow_to("nope", 3), ResponseError::UnknownTopicOrPartition),
    ] {
        let response: CreatePartitionsResponse =
            ask(&service, ApiKey::CreatePartitions, 3, &request).await;
        assert_eq!(response.results[0].error_code, code.code(), "{request:?}");
    }
    assert_eq!(memory.topics()[0].partitions.len(), 5);
}

#[tokio::test]
async fn metadata_reports_the_leader_epoch_and_in_sync_replicas_the_node_knows() {
    let (service, memory) = service();
    create(&service, 7, vec![topic("orders", 2, 3)], false).await;
    let first = memory.topics()[0].partitions[0].clone();
    memory.partitions.lock().unwrap().insert(
        first.group,
        PartitionState {
            leader: Some(first.replicas[0]),
            epoch: 7,
            in_sync: vec![first.replicas[0], first.replicas[1]],
        },
    );
    let response = metadata(&service, 9).await;
    let partitions = &response.topics[0].partitions;
    let p0 = &partitions[0];
    assert_eq!(p0.error_code, 0);
    assert_eq!(p0.leader_id.0 as u64, first.replicas[0]);
    assert_eq!(p0.leader_epoch, 7);
    let isr: Vec<u64> = p0.isr_nodes.iter().map(|b| b.0 as u64).collect();
    assert_eq!(isr, first.replicas[..2].to_vec());
    // The other partition's group does not run here: no leader known.
    assert_eq!(
        partitions[1].error_code,
        ResponseError::LeaderNotAvailable.code()
    );
    assert_eq!(partitions[1].leader_id.0, -1);
}

async fn metadata_for(
    service: &KafkaService,
    version: i16,
    name: &'static str,
    allow: bool,
) -> i16 {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str(name))))]))
        .with_allow_auto_topic_creation(allow);
    let response: MetadataResponse = ask(service, ApiKey::Metadata, version, &request).await;
    response.topics[0].error_code
}

#[tokio::test]
async fn metadata_creates_a_topic_asked_for_only_when_the_node_and_the_request_allow_it() {
    // Off by default: unknown, nothing created.
    let (service, memory) = service();
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(metadata_for(&service, 9, "fresh", true).await, unknown);
    assert!(memory.topics().is_empty());

    let memory = Arc::new(Memory::default());
    let service = KafkaService::new(memory.clone()).with_auto_create_topics(true);
    // The request says no.
    assert_eq!(metadata_for(&service, 9, "fresh", false).await, unknown);
    assert!(memory.topics().is_empty());
    // Both say yes: created with the defaults, its leader not known yet.
    let not_yet = ResponseError::LeaderNotAvailable.code();
    assert_eq!(metadata_for(&service, 9, "fresh", true).await, not_yet);
    // Before version 4 requests cannot say no (the field is new in 4): allowed.
    assert_eq!(metadata_for(&service, 3, "older", true).await, not_yet);
    let created: Vec<(String, usize, usize)> = memory
        .topics()
        .into_iter()
        .map(|t| (t.name, t.partitions.len(), t.partitions[0].replicas.len()))
        .collect();
    assert_eq!(
        created,
        vec![("fresh".into(), 1, 3), ("older".into(), 1, 3)]
    );
    // Names Kafka refuses are never created.
    assert_eq!(
        metadata_for(&service, 9, "bad/name", true).await,
        ResponseError::InvalidTopicException.code()
    );
    assert_eq!(memory.topics().len(), 2);
}
