//! CreateTopics, CreatePartitions and DeleteTopics: topics recorded in, grown in and removed
//! from the metadata group.
//!
//! Any node takes them (a follower's proposal reaches the metadata group's leader), so no
//! client is sent looking for the controller. A new topic's partitions get replicas spread
//! over the brokers known now (preferred leaders in turn), group ids chosen at random and
//! claimed in the same metadata entry as the topic (group ids are never reused, not even
//! after the topic is deleted), and a random topic id.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ordo_node::NodeId;

use crate::cluster::TopicError;
use crate::service::KafkaService;
use crate::topic::{
    assign_replicas, check_configs, check_topic_name, PartitionRecord, TopicRecord, PARTITIONS_MAX,
    REPLICAS_MAX,
};

/// Partitions of a topic created without a count (Kafka's `num.partitions`).
pub const DEFAULT_PARTITIONS: usize = 1;

/// Replicas of a topic created without a replication factor: three, or every broker when
/// there are fewer.
pub const DEFAULT_REPLICATION_FACTOR: usize = 3;

/// How long a request waits for the metadata group when its own timeout is not positive.
const CHANGE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Attempts with fresh group ids when the ones chosen were taken, and of a change to a
/// topic whose record another change replaced first.
const ATTEMPTS: usize = 3;

/// A refusal: the error code and the message the client shows.
pub(crate) type Refusal = (ResponseError, String);

/// A topic checked and ready to record.
struct Planned {
    partitions: Vec<Vec<NodeId>>,
    configs: BTreeMap<String, String>,
}

impl KafkaService {
    /// The node ids of the brokers known now, in order: where replicas may go.
    fn broker_nodes(&self) -> Vec<NodeId> {
        let mut brokers: Vec<NodeId> = self
            .cluster
            .brokers()
            .iter()
            .map(|b| b.id as NodeId)
            .collect();
        brokers.sort_unstable();
        brokers
    }

    pub(crate) async fn create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let brokers = self.broker_nodes();
        let mut names = BTreeMap::<&str, usize>::new();
        for topic in &request.topics {
            *names.entry(topic.name.as_str()).or_default() += 1;
        }
        let timeout = change_timeout(request.timeout_ms);
        let mut results = Vec::new();
        for topic in &request.topics {
            let name = topic.name.as_str();
            let outcome = if names[name] > 1 {
                Err((
                    ResponseError::InvalidRequest,
                    format!("topic {name:?} is given more than once"),
                ))
            } else {
                match plan(topic, &brokers) {
                    Err(refusal) => Err(refusal),
                    Ok(_) if self.cluster.topics().iter().any(|t| t.name == name) => Err((
                        ResponseError::TopicAlreadyExists,
                        format!("topic {name:?} already exists"),
                    )),
                    Ok(planned) if request.validate_only => Ok(unrecorded(name, planned)),
                    Ok(planned) => self.record(name, planned, timeout).await,
                }
            };
            results.push(created(topic, outcome, version));
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    /// Creates topic `name` with the defaults, for Metadata: what the topic's entry in the
    /// answer says: `LEADER_NOT_AVAILABLE` once it exists (its partitions have no leader
    /// yet, and the client asks again), as Kafka answers.
    pub(crate) async fn auto_create(&self, name: &str) -> ResponseError {
        let topic = CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let brokers = self.broker_nodes();
        let created = match plan(&topic, &brokers) {
            Ok(planned) => self.record(name, planned, CHANGE_TIMEOUT_DEFAULT).await,
            Err(refusal) => Err(refusal),
        };
        match created {
            Ok(_) => {
                tracing::info!(topic = name, "topic created on a client's request for it");
                ResponseError::LeaderNotAvailable
            }
            Err((ResponseError::TopicAlreadyExists, _)) => ResponseError::LeaderNotAvailable,
            Err((error, message)) => {
                tracing::warn!(topic = name, %message, "creating a topic a client asked for failed");
                error
            }
        }
    }

    /// Records the topic, with fresh group ids while the chosen ones were taken.
    async fn record(
        &self,
        name: &str,
        planned: Planned,
        timeout: Duration,
    ) -> Result<TopicRecord, Refusal> {
        for _ in 0..ATTEMPTS {
            let record = new_record(name, &planned)?;
            match within(timeout, self.cluster.create_topic(record.clone())).await? {
                Ok(()) => return Ok(record),
                Err(TopicError::GroupTaken) => continue,
                Err(error) => return Err(refusal(error)),
            }
        }
        Err((
            ResponseError::UnknownServerError,
            format!("no free group ids in {ATTEMPTS} attempts"),
        ))
    }

    pub(crate) async fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let brokers = self.broker_nodes();
        let timeout = change_timeout(request.timeout_ms);
        let mut results = Vec::new();
        for topic in &request.topics {
            let grow = |previous: &TopicRecord| grown(previous, topic, &brokers);
            let outcome = self
                .change_topic(topic.name.as_str(), request.validate_only, timeout, grow)
                .await;
            let mut result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            if let Err((error, message)) = outcome {
                result.error_code = error.code();
                result.error_message = Some(StrBytes::from_string(message));
            }
            results.push(result);
        }
        CreatePartitionsResponse::default().with_results(results)
    }

    /// Replaces topic `name`'s record by what `change` makes of it, checked against the
    /// record this node's copy of the metadata group holds; reads and changes again while
    /// another change replaced the record first or a group id chosen was taken. With
    /// `validate_only`, only checks.
    pub(crate) async fn change_topic(
        &self,
        name: &str,
        validate_only: bool,
        timeout: Duration,
        change: impl Fn(&TopicRecord) -> Result<TopicRecord, Refusal>,
    ) -> Result<(), Refusal> {
        for _ in 0..ATTEMPTS {
            let Some(previous) = self.cluster.topics().into_iter().find(|t| t.name == name) else {
                return Err(refusal(TopicError::Unknown {
                    name: name.to_string(),
                }));
            };
            let changed = change(&previous)?;
            if validate_only {
                return Ok(());
            }
            match within(timeout, self.cluster.replace_topic(previous, changed)).await? {
                Ok(()) => return Ok(()),
                Err(TopicError::Changed { .. } | TopicError::GroupTaken) => continue,
                Err(error) => return Err(refusal(error)),
            }
        }
        Err((
            ResponseError::UnknownServerError,
            format!(
                "topic {name:?} kept changing, or the group ids chosen were taken, in {ATTEMPTS} attempts; retry"
            ),
        ))
    }

    pub(crate) async fn delete_topics(
        &self,
        request: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        let timeout = change_timeout(request.timeout_ms);
        // Up to version 5 by name; from 6 by name or topic id.
        let asked: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
            request
                .topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.to_string()), t.topic_id))
                .collect()
        } else {
            request
                .topic_names
                .iter()
                .map(|n| (Some(n.to_string()), uuid::Uuid::nil()))
                .collect()
        };
        let mut responses = Vec::new();
        for (name, id) in asked {
            let name = name.or_else(|| {
                self.cluster
                    .topics()
                    .into_iter()
                    .find(|t| t.id == *id.as_bytes())
                    .map(|t| t.name)
            });
            let outcome = match &name {
                None => Err((
                    ResponseError::UnknownTopicId,
                    format!("no topic has id {id}"),
                )),
                Some(name) => within(timeout, self.cluster.delete_topic(name.clone()))
                    .await
                    .and_then(|result| result.map_err(refusal)),
            };
            let mut result = DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(StrBytes::from_string(n))));
            match outcome {
                Ok(record) => {
                    if version >= 6 {
                        result.topic_id = uuid::Uuid::from_bytes(record.id);
                    }
                }
                Err((error, message)) => {
                    result.error_code = error.code();
                    if version >= 5 {
                        result.error_message = Some(StrBytes::from_string(message));
                    }
                    if version >= 6 {
                        result.topic_id = id;
                    }
                }
            }
            responses.push(result);
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }
}

/// `previous` grown to the partitions `asked` for, new group ids chosen.
fn grown(
    previous: &TopicRecord,
    asked: &CreatePartitionsTopic,
    brokers: &[NodeId],
) -> Result<TopicRecord, Refusal> {
    let name = asked.name.as_str();
    let current = previous.partitions.len();
    let count = asked.count.max(0) as usize;
    if count <= current || count > PARTITIONS_MAX {
        return Err((
            ResponseError::InvalidPartitions,
            format!(
                "topic {name:?} has {current} partitions: the new count must be above that and at most {PARTITIONS_MAX}, not {}",
                asked.count
            ),
        ));
    }
    let replication_factor = previous.partitions[0].replicas.len();
    // No assignment (null, or an empty list): the replicas are chosen here.
    let added = match asked.assignments.as_ref().filter(|a| !a.is_empty()) {
        Some(assignments) => {
            let invalid = |why: String| (ResponseError::InvalidReplicaAssignment, why);
            if assignments.len() != count - current {
                return Err(invalid(format!(
                    "{} assignments for {} new partitions",
                    assignments.len(),
                    count - current
                )));
            }
            let mut added = Vec::new();
            for a in assignments {
                let replicas: Vec<NodeId> = a.broker_ids.iter().map(|b| b.0 as NodeId).collect();
                let distinct: BTreeSet<NodeId> = replicas.iter().copied().collect();
                if replicas.len() != replication_factor || distinct.len() != replicas.len() {
                    return Err(invalid(format!(
                        "each new partition needs {replication_factor} distinct brokers"
                    )));
                }
                if let Some(unknown) = replicas.iter().find(|r| !brokers.contains(r)) {
                    return Err(invalid(format!("broker {unknown} is not known")));
                }
                added.push(replicas);
            }
            added
        }
        None => {
            if replication_factor > brokers.len() {
                return Err((
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "the topic's replication factor {replication_factor} is above the {} brokers available",
                        brokers.len()
                    ),
                ));
            }
            let start = random_u64().map_err(|e| (ResponseError::UnknownServerError, e))? as usize;
            assign_replicas(
                brokers,
                count - current,
                replication_factor,
                start % brokers.len(),
            )
        }
    };
    let mut grown = previous.clone();
    for replicas in added {
        grown.partitions.push(PartitionRecord {
            group: new_group()?,
            replicas,
        });
    }
    Ok(grown)
}

/// What `change` to the metadata group answers, or `REQUEST_TIMED_OUT` after `timeout`.
async fn within<T>(timeout: Duration, change: impl Future<Output = T>) -> Result<T, Refusal> {
    tokio::time::timeout(timeout, change).await.map_err(|_| {
        (
            ResponseError::RequestTimedOut,
            format!("the metadata group took longer than {timeout:?}"),
        )
    })
}

pub(crate) fn change_timeout(timeout_ms: i32) -> Duration {
    if timeout_ms > 0 {
        Duration::from_millis(timeout_ms as u64)
    } else {
        CHANGE_TIMEOUT_DEFAULT
    }
}

fn refusal(error: TopicError) -> Refusal {
    let code = match &error {
        TopicError::Exists { .. } => ResponseError::TopicAlreadyExists,
        TopicError::Unknown { .. } => ResponseError::UnknownTopicOrPartition,
        TopicError::GroupTaken => ResponseError::UnknownServerError,
        TopicError::Changed { .. } => ResponseError::UnknownServerError,
        // Clients refresh their metadata and retry on this one.
        TopicError::Unavailable { .. } => ResponseError::NotController,
    };
    (code, error.to_string())
}

/// Checks a requested topic against the brokers known now, choosing its replicas.
fn plan(topic: &CreatableTopic, brokers: &[NodeId]) -> Result<Planned, Refusal> {
    let name = topic.name.as_str();
    check_topic_name(name)
        .map_err(|error| (ResponseError::InvalidTopicException, error.to_string()))?;
    let partitions = if topic.assignments.is_empty() {
        let count = match topic.num_partitions {
            -1 => DEFAULT_PARTITIONS,
            n if n >= 1 && n as usize <= PARTITIONS_MAX => n as usize,
            n => {
                return Err((
                    ResponseError::InvalidPartitions,
                    format!(
                    "{n} partitions: from 1 to {PARTITIONS_MAX}, or -1 for {DEFAULT_PARTITIONS}"
                ),
                ))
            }
        };
        let replication_factor = match topic.replication_factor {
            -1 => DEFAULT_REPLICATION_FACTOR.min(brokers.len()).max(1),
            n => n.max(0) as usize,
        };
        if replication_factor == 0
            || replication_factor > brokers.len()
            || replication_factor > REPLICAS_MAX
        {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {}: from 1 to the {} brokers available (at most {REPLICAS_MAX})",
                    topic.replication_factor,
                    brokers.len()
                ),
            ));
        }
        let start = random_u64().map_err(|e| (ResponseError::UnknownServerError, e))? as usize;
        assign_replicas(brokers, count, replication_factor, start % brokers.len())
    } else {
        assigned(topic, brokers)?
    };
    let mut configs = BTreeMap::new();
    for config in &topic.configs {
        if let Some(value) = &config.value {
            configs.insert(config.name.to_string(), value.to_string());
        }
    }
    check_configs(&configs, partitions[0].len())
        .map_err(|error| (ResponseError::InvalidConfig, error.to_string()))?;
    Ok(Planned {
        partitions,
        configs,
    })
}

/// The replicas a request assigned by hand, checked.
fn assigned(topic: &CreatableTopic, brokers: &[NodeId]) -> Result<Vec<Vec<NodeId>>, Refusal> {
    let invalid = |why: String| (ResponseError::InvalidReplicaAssignment, why);
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "a replica assignment is given with num_partitions and replication_factor -1".into(),
        ));
    }
    if topic.assignments.len() > PARTITIONS_MAX {
        return Err(invalid(format!("more than {PARTITIONS_MAX} partitions")));
    }
    let mut by_index = BTreeMap::new();
    for a in &topic.assignments {
        let replicas: Vec<NodeId> = a.broker_ids.iter().map(|b| b.0 as NodeId).collect();
        let distinct: BTreeSet<NodeId> = replicas.iter().copied().collect();
        if replicas.is_empty() || replicas.len() > REPLICAS_MAX || distinct.len() != replicas.len()
        {
            return Err(invalid(format!(
                "partition {}: 1 to {REPLICAS_MAX} distinct brokers",
                a.partition_index
            )));
        }
        if let Some(unknown) = replicas.iter().find(|r| !brokers.contains(r)) {
            return Err(invalid(format!("broker {unknown} is not known")));
        }
        if by_index.insert(a.partition_index, replicas).is_some() {
            return Err(invalid(format!(
                "partition {} assigned twice",
                a.partition_index
            )));
        }
    }
    let dense = by_index
        .keys()
        .copied()
        .eq(0..topic.assignments.len() as i32);
    if !dense {
        return Err(invalid(
            "partitions must be numbered from 0 without gaps".into(),
        ));
    }
    let partitions: Vec<Vec<NodeId>> = by_index.into_values().collect();
    if partitions.iter().any(|r| r.len() != partitions[0].len()) {
        return Err(invalid("every partition needs as many replicas".into()));
    }
    Ok(partitions)
}

/// A random group id for a new partition, above every group id the server uses for itself.
fn new_group() -> Result<u64, Refusal> {
    let random = random_u64().map_err(|e| (ResponseError::UnknownServerError, e))?;
    Ok((random >> 2) | (1 << 62))
}

fn random_u64() -> Result<u64, String> {
    getrandom::u64().map_err(|e| format!("no randomness from the system: {e}"))
}

/// The record of a new topic: a random topic id (a version 4 UUID) and random group ids.
fn new_record(name: &str, planned: &Planned) -> Result<TopicRecord, Refusal> {
    let failed = |e| (ResponseError::UnknownServerError, e);
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| failed(format!("no randomness from the system: {e}")))?;
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    let partitions = planned
        .partitions
        .iter()
        .map(|replicas| {
            Ok(PartitionRecord {
                group: new_group()?,
                replicas: replicas.clone(),
            })
        })
        .collect::<Result<Vec<_>, Refusal>>()?;
    Ok(TopicRecord {
        id,
        name: name.to_string(),
        partitions,
        configs: planned.configs.clone(),
    })
}

/// What a validate-only request answers: the topic as it would be, with no id.
fn unrecorded(name: &str, planned: Planned) -> TopicRecord {
    TopicRecord {
        id: [0; 16],
        name: name.to_string(),
        partitions: planned
            .partitions
            .into_iter()
            .map(|replicas| PartitionRecord { group: 0, replicas })
            .collect(),
        configs: planned.configs,
    }
}

fn created(
    topic: &CreatableTopic,
    outcome: Result<TopicRecord, Refusal>,
    version: i16,
) -> CreatableTopicResult {
    let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
    match outcome {
        Ok(record) => {
            if version >= 5 {
                result.num_partitions = record.partitions.len() as i32;
                result.replication_factor = record.partitions[0].replicas.len() as i16;
            }
            if version >= 7 {
                result.topic_id = uuid::Uuid::from_bytes(record.id);
            }
        }
        Err((error, message)) => {
            result.error_code = error.code();
            result.error_message = Some(StrBytes::from_string(message));
            if version >= 5 {
                result.num_partitions = -1;
                result.replication_factor = -1;
            }
        }
    }
    result
}
