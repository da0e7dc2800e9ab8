//! DescribeConfigs, IncrementalAlterConfigs and DescribeCluster.
//!
//! Topic configs are those of [`crate::topic`]: DescribeConfigs lists every one, with the
//! topic's value (source `DYNAMIC_TOPIC_CONFIG`) or the default (`DEFAULT_CONFIG`);
//! IncrementalAlterConfigs sets and deletes them (`APPEND` and `SUBTRACT` on
//! `cleanup.policy`, the one list config, whose only accepted value is `delete`), checked as
//! at creation, and replaces the topic's record only if no other change came first (it reads
//! again and retries a few times if one did). Broker configs are not served: a broker
//! resource is answered `INVALID_REQUEST` saying so.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::admin::{change_timeout, Refusal};
use crate::service::KafkaService;
use crate::topic::{check_configs, TopicRecord, CONFIG_DEFAULTS};

/// Kafka's resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// Kafka's config sources: a topic's own value, and the default.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
/// Kafka's config operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;
/// DescribeCluster's endpoint type of brokers.
const ENDPOINT_BROKERS: i8 = 1;

impl KafkaService {
    pub(crate) fn describe_configs(
        &self,
        request: &DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResponse {
        let topics = self.cluster.topics();
        let results = request
            .resources
            .iter()
            .map(|resource| {
                let result = DescribeConfigsResult::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone());
                let name = resource.resource_name.as_str();
                if resource.resource_type != RESOURCE_TOPIC {
                    return result
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(StrBytes::from_static_str(
                            "only topic configs are served",
                        )));
                }
                let Some(topic) = topics.iter().find(|t| t.name == name) else {
                    return result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "no topic {name:?}"
                        ))));
                };
                let wanted = |config: &str| {
                    resource
                        .configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.iter().any(|k| k.as_str() == config))
                };
                let configs = CONFIG_DEFAULTS
                    .iter()
                    .filter(|(config, _, _)| wanted(config))
                    .map(|&(config, default, kind)| {
                        let (value, source) = match topic.configs.get(config) {
                            Some(value) => (value.as_str(), SOURCE_TOPIC),
                            None => (default, SOURCE_DEFAULT),
                        };
                        let mut entry = DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(config))
                            .with_value(Some(StrBytes::from_string(value.to_string())))
                            .with_config_source(source);
                        if version >= 3 {
                            entry.config_type = kind;
                        }
                        entry
                    })
                    .collect();
                result.with_configs(configs)
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    pub(crate) async fn incremental_alter_configs(
        &self,
        request: &IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut responses = Vec::new();
        for resource in &request.resources {
            let outcome = if resource.resource_type == RESOURCE_TOPIC {
                self.alter_topic(resource, request.validate_only).await
            } else {
                Err((
                    ResponseError::InvalidRequest,
                    "only topic configs are served".into(),
                ))
            };
            let mut response = AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            if let Err((error, message)) = outcome {
                response.error_code = error.code();
                response.error_message = Some(StrBytes::from_string(message));
            }
            responses.push(response);
        }
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }

    async fn alter_topic(
        &self,
        resource: &AlterConfigsResource,
        validate_only: bool,
    ) -> Result<(), Refusal> {
        let alter = |previous: &TopicRecord| altered(previous, resource);
        self.change_topic(
            resource.resource_name.as_str(),
            validate_only,
            change_timeout(0),
            alter,
        )
        .await
    }

    pub(crate) fn describe_cluster(
        &self,
        request: &DescribeClusterRequest,
        version: i16,
    ) -> DescribeClusterResponse {
        let mut response = DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_string(self.cluster.cluster_id()))
            .with_controller_id(BrokerId(self.cluster.controller_id().unwrap_or(-1)));
        if version >= 1 {
            response.endpoint_type = request.endpoint_type;
            if request.endpoint_type != ENDPOINT_BROKERS {
                return response
                    .with_error_code(ResponseError::UnsupportedEndpointType.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "only brokers are described: the controller is one of them",
                    )));
            }
        }
        response.with_brokers(
            self.cluster
                .brokers()
                .into_iter()
                .map(|b| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(b.id))
                        .with_host(StrBytes::from_string(b.host))
                        .with_port(i32::from(b.port))
                })
                .collect(),
        )
    }
}

/// The topic with the resource's operations applied and checked.
fn altered(topic: &TopicRecord, resource: &AlterConfigsResource) -> Result<TopicRecord, Refusal> {
    let invalid = |message: String| (ResponseError::InvalidConfig, message);
    let mut configs = topic.configs.clone();
    for config in &resource.configs {
        let name = config.name.to_string();
        if !CONFIG_DEFAULTS.iter().any(|(known, _, _)| *known == name) {
            return Err(invalid(format!("unknown topic config {name:?}")));
        }
        let value = config.value.as_ref().map(|v| v.to_string());
        match (config.config_operation, value) {
            (OP_SET, Some(value)) => {
                configs.insert(name, value);
            }
            (OP_SET, None) => return Err(invalid(format!("{name}: SET without a value"))),
            (OP_DELETE, _) => {
                configs.remove(&name);
            }
            (OP_APPEND | OP_SUBTRACT, _) if name != "cleanup.policy" => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("{name} is not a list: APPEND and SUBTRACT do not apply"),
                ))
            }
            (OP_APPEND, Some(value)) => {
                let current = configs
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| "delete".to_string());
                let mut items: Vec<String> = current.split(',').map(str::to_string).collect();
                for item in value.split(',') {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_string());
                    }
                }
                configs.insert(name, items.join(","));
            }
            (OP_SUBTRACT, Some(value)) => {
                let current = configs
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| "delete".to_string());
                let remove: Vec<&str> = value.split(',').collect();
                let kept: Vec<&str> = current.split(',').filter(|i| !remove.contains(i)).collect();
                configs.insert(name, kept.join(","));
            }
            (op, _) => {
                return Err((
                    ResponseError::InvalidRequest,
                    format!("{name}: unknown operation {op}"),
                ))
            }
        }
    }
    let replication_factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
    check_configs(&configs, replication_factor).map_err(|e| invalid(e.to_string()))?;
    Ok(TopicRecord {
        configs,
        ..topic.clone()
    })
}
