//! Kafka requests in, responses out: the request header is decoded, the request routed by
//! its API key, and the answer encoded at the request's version with the header that
//! version calls for.
//!
//! A request this node cannot answer closes the connection, as a Kafka broker does: an
//! unknown API key, an API it does not serve, a version outside the ones it advertised, and
//! bytes that do not decode. The one exception is
//! ApiVersions, which a client sends first at the newest version it knows: a version this
//! node does not serve is answered at version 0 with `UNSUPPORTED_VERSION` and the served
//! versions, so that the client retries with one both know (KIP-511).

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreatePartitionsRequest,
    CreateTopicsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    IncrementalAlterConfigsRequest, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::cluster::{broker_id, ClusterView};
use crate::frame::SIZE_BYTES;
use crate::topic::{check_topic_name, TopicRecord};

/// Every API this node serves, with the versions it serves of each: exactly what
/// ApiVersions advertises.
///
/// ApiVersions stops at 3 and Metadata at 12: the versions Kafka 3.x brokers serve, which
/// every client in use knows. (Clients such as kafka-python infer the broker's release from
/// the versions advertised, so advertising less than is served would change how they talk.)
///
/// CreateTopics starts at 2, DeleteTopics and DescribeConfigs at 1, the oldest versions
/// Kafka 4 serves (and the codec knows); every client in use speaks newer ones.
pub const SERVED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
];

/// Bytes of the request header's fixed start: API key, API version and correlation id.
const HEADER_FIXED_BYTES: usize = 8;

/// Why a request was not answered (the connection it came on is closed).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Shorter than a request header's fixed start.
    #[error("a request of {bytes} bytes: shorter than a request header")]
    TooShort {
        /// Its size.
        bytes: usize,
    },
    /// An API key Kafka does not define.
    #[error("unknown API key {key}")]
    UnknownApi {
        /// The key.
        key: i16,
    },
    /// An API Kafka defines that this node does not serve (and did not advertise).
    #[error("{api:?} (API key {key}) is not served")]
    NotServed {
        /// The API.
        api: ApiKey,
        /// Its key.
        key: i16,
    },
    /// A version of a served API outside the ones advertised.
    #[error("{api:?} version {version} is not served (versions {min} to {max} are)")]
    UnsupportedVersion {
        /// The API.
        api: ApiKey,
        /// The version asked for.
        version: i16,
        /// The oldest served.
        min: i16,
        /// The newest served.
        max: i16,
    },
    /// The request does not decode at its version.
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        /// The API.
        api: ApiKey,
        /// The version.
        version: i16,
        /// What the decoder said.
        reason: String,
    },
    /// The answer would not encode: a bug in this module, reported rather than sent half.
    #[error("the {api:?} v{version} response did not encode: {reason}")]
    Encode {
        /// The API.
        api: ApiKey,
        /// The version.
        version: i16,
        /// What the encoder said.
        reason: String,
    },
}

impl RequestError {
    /// Whether the error is this node's, not the client's.
    pub fn is_internal(&self) -> bool {
        matches!(self, RequestError::Encode { .. })
    }
}

/// The Kafka face of one node.
pub struct KafkaService {
    pub(crate) cluster: Arc<dyn ClusterView>,
    /// Whether Metadata creates the topics it is asked for that do not exist (Kafka's
    /// `auto.create.topics.enable`).
    auto_create_topics: bool,
}

/// A request's fixed header start, read before anything is decoded.
#[derive(Debug, Clone, Copy)]
struct Peeked {
    key: i16,
    version: i16,
    correlation_id: i32,
}

impl KafkaService {
    /// The service reporting `cluster`, creating no topic on its own.
    pub fn new(cluster: Arc<dyn ClusterView>) -> KafkaService {
        KafkaService {
            cluster,
            auto_create_topics: false,
        }
    }

    /// Makes Metadata create, with the default partitions and replication factor, a topic
    /// it is asked for that does not exist, when the request allows it (Kafka's
    /// `auto.create.topics.enable`; off unless set).
    pub fn with_auto_create_topics(mut self, on: bool) -> KafkaService {
        self.auto_create_topics = on;
        self
    }

    /// Answers one request (its bytes after the size prefix) with the whole response
    /// frame, size prefix included.
    pub async fn handle(&self, request: Bytes) -> Result<Bytes, RequestError> {
        let peeked = peek(&request)?;
        let api = ApiKey::try_from(peeked.key)
            .map_err(|()| RequestError::UnknownApi { key: peeked.key })?;
        let Some(&(_, min, max)) = SERVED_APIS.iter().find(|(served, _, _)| *served == api) else {
            return Err(RequestError::NotServed {
                api,
                key: peeked.key,
            });
        };
        if !(min..=max).contains(&peeked.version) {
            if api == ApiKey::ApiVersions {
                return unsupported_api_versions(peeked.correlation_id);
            }
            return Err(RequestError::UnsupportedVersion {
                api,
                version: peeked.version,
                min,
                max,
            });
        }
        let version = peeked.version;
        let mut body = request;
        let header = decode::<RequestHeader>(&mut body, api, api.request_header_version(version))?;
        let correlation_id = header.correlation_id;
        // ApiVersions answers with a version 0 header whatever its version (KIP-511).
        let header_version = match api {
            ApiKey::ApiVersions => 0,
            _ => api.response_header_version(version),
        };
        // The whole frame of the answer to this request.
        macro_rules! reply {
            ($response:expr) => {
                respond(correlation_id, header_version, &$response, api, version)
            };
        }
        match api {
            ApiKey::ApiVersions => {
                let request = decode_body::<ApiVersionsRequest>(body, api, version)?;
                reply!(api_versions(&request, version))
            }
            ApiKey::Metadata => {
                let request = decode_body::<MetadataRequest>(body, api, version)?;
                reply!(self.metadata(&request, version).await)
            }
            ApiKey::CreateTopics => {
                let request = decode_body::<CreateTopicsRequest>(body, api, version)?;
                reply!(self.create_topics(request, version).await)
            }
            ApiKey::DeleteTopics => {
                let request = decode_body::<DeleteTopicsRequest>(body, api, version)?;
                reply!(self.delete_topics(request, version).await)
            }
            ApiKey::CreatePartitions => {
                let request = decode_body::<CreatePartitionsRequest>(body, api, version)?;
                reply!(self.create_partitions(request).await)
            }
            ApiKey::DescribeConfigs => {
                let request = decode_body::<DescribeConfigsRequest>(body, api, version)?;
                reply!(self.describe_configs(&request, version))
            }
            ApiKey::IncrementalAlterConfigs => {
                let request = decode_body::<IncrementalAlterConfigsRequest>(body, api, version)?;
                reply!(self.incremental_alter_configs(&request).await)
            }
            ApiKey::DescribeCluster => {
                let request = decode_body::<DescribeClusterRequest>(body, api, version)?;
                reply!(self.describe_cluster(&request, version))
            }
            _ => unreachable!("every served API has an arm: {api:?}"),
        }
    }

    async fn metadata(&self, request: &MetadataRequest, version: i16) -> MetadataResponse {
        let brokers = self
            .cluster
            .brokers()
            .into_iter()
            .map(|b| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host))
                    .with_port(i32::from(b.port))
            })
            .collect();
        let known = self.cluster.topics();
        // All topics: null, or (at version 0 only) an empty list.
        let all = match &request.topics {
            None => true,
            Some(list) => list.is_empty() && version == 0,
        };
        let topics = if all {
            known
                .iter()
                .map(|t| described(self.cluster.as_ref(), t, version))
                .collect()
        } else {
            // Before version 4 every request allows auto-creation; the node decides.
            let may_create =
                self.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
            let mut topics = Vec::new();
            for asked in request.topics.iter().flatten() {
                topics.push(match &asked.name {
                    Some(name) => match known.iter().find(|t| t.name == name.as_str()) {
                        Some(topic) => described(self.cluster.as_ref(), topic, version),
                        None => {
                            let error = match check_topic_name(name.as_str()) {
                                Err(_) => ResponseError::InvalidTopicException,
                                Ok(()) if may_create => self.auto_create(name.as_str()).await,
                                Ok(()) => ResponseError::UnknownTopicOrPartition,
                            };
                            MetadataResponseTopic::default()
                                .with_error_code(error.code())
                                .with_name(Some(name.clone()))
                        }
                    },
                    None => match known.iter().find(|t| t.id == *asked.topic_id.as_bytes()) {
                        Some(topic) => described(self.cluster.as_ref(), topic, version),
                        None => MetadataResponseTopic::default()
                            .with_error_code(ResponseError::UnknownTopicId.code())
                            .with_name(None::<TopicName>)
                            .with_topic_id(asked.topic_id),
                    },
                });
            }
            topics
        };
        let mut response = MetadataResponse::default()
            .with_brokers(brokers)
            .with_topics(topics)
            .with_controller_id(BrokerId(self.cluster.controller_id().unwrap_or(-1)));
        if version >= 2 {
            response.cluster_id = Some(StrBytes::from_string(self.cluster.cluster_id()));
        }
        response
    }
}

/// A topic as Metadata describes it. A partition without a known leader is
/// `LEADER_NOT_AVAILABLE` with its replicas, as Kafka answers for a partition whose leader
/// is being elected.
fn described(
    cluster: &dyn ClusterView,
    topic: &TopicRecord,
    version: i16,
) -> MetadataResponseTopic {
    let brokers = |ids: &[u64]| -> Vec<BrokerId> {
        ids.iter()
            .filter_map(|&r| broker_id(r).map(BrokerId))
            .collect()
    };
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let described = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_replica_nodes(brokers(&p.replicas));
            let state = cluster.partition(p.group);
            match state
                .as_ref()
                .and_then(|s| Some((s.leader.and_then(broker_id)?, s)))
            {
                Some((leader, state)) => described
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(i32::try_from(state.epoch).unwrap_or(i32::MAX))
                    .with_isr_nodes(brokers(&state.in_sync)),
                None => described
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1),
            }
        })
        .collect();
    let mut described = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_partitions(partitions);
    if version >= 10 {
        described.topic_id = uuid::Uuid::from_bytes(topic.id);
    }
    described
}

/// The served APIs, as ApiVersions lists them.
fn served_versions() -> Vec<ApiVersion> {
    SERVED_APIS
        .iter()
        .map(|&(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

fn api_versions(request: &ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    // Version 3 names the client's software; a broker refuses names that are not plain
    // (letters, digits, '.', '-', starting and ending with a letter or digit).
    let error = if version >= 3
        && !(software_name_is_plain(request.client_software_name.as_str())
            && software_name_is_plain(request.client_software_version.as_str()))
    {
        ResponseError::InvalidRequest.code()
    } else {
        0
    };
    ApiVersionsResponse::default()
        .with_error_code(error)
        .with_api_keys(served_versions())
}

fn software_name_is_plain(name: &str) -> bool {
    let bytes = name.as_bytes();
    let plain = |b: &u8| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-';
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() && bytes.iter().all(plain)
        }
        _ => false,
    }
}

/// The answer to an ApiVersions request of a version this node does not serve.
fn unsupported_api_versions(correlation_id: i32) -> Result<Bytes, RequestError> {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(served_versions());
    respond(correlation_id, 0, &response, ApiKey::ApiVersions, 0)
}

fn peek(request: &[u8]) -> Result<Peeked, RequestError> {
    if request.len() < HEADER_FIXED_BYTES {
        return Err(RequestError::TooShort {
            bytes: request.len(),
        });
    }
    let mut fixed = &request[..HEADER_FIXED_BYTES];
    Ok(Peeked {
        key: fixed.get_i16(),
        version: fixed.get_i16(),
        correlation_id: fixed.get_i32(),
    })
}

fn decode<T: Decodable>(buf: &mut Bytes, api: ApiKey, version: i16) -> Result<T, RequestError> {
    T::decode(buf, version).map_err(|error| RequestError::Malformed {
        api,
        version,
        reason: error.to_string(),
    })
}

/// Decodes a request body. Bytes left after it are ignored, as a Kafka broker ignores them:
/// librdkafka 2.16 sends three after an all-topics Metadata v12 request.
fn decode_body<T: Decodable>(
    mut body: Bytes,
    api: ApiKey,
    version: i16,
) -> Result<T, RequestError> {
    let request = decode::<T>(&mut body, api, version)?;
    if body.has_remaining() {
        tracing::debug!(
            ?api,
            version,
            bytes = body.remaining(),
            "bytes after the end of a request ignored"
        );
    }
    Ok(request)
}

/// The whole response frame: size prefix, header at `header_version`, body at `version`.
fn respond<M: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &M,
    api: ApiKey,
    version: i16,
) -> Result<Bytes, RequestError> {
    let failed = |error: &dyn std::fmt::Display| RequestError::Encode {
        api,
        version,
        reason: error.to_string(),
    };
    let mut frame = BytesMut::new();
    frame.put_u32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut frame, header_version)
        .map_err(|e| failed(&e))?;
    body.encode(&mut frame, version).map_err(|e| failed(&e))?;
    let size = u32::try_from(frame.len() - SIZE_BYTES)
        .map_err(|_| failed(&format!("a response of {} bytes", frame.len())))?;
    frame[..SIZE_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(frame.freeze())
}
