//! The Kafka port over TCP, driven with requests encoded by the codec's client side.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ordo_streams::fuzzing::MemoryCluster as Memory;
use ordo_streams::{serve, KafkaListenerConfig, KafkaMetrics, KafkaService, SERVED_APIS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A Kafka port on loopback, stopped on drop.
struct Port {
    addr: SocketAddr,
    metrics: Arc<KafkaMetrics>,
    stop: watch::Sender<bool>,
}

impl Drop for Port {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn port(config: KafkaListenerConfig) -> Port {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = Arc::new(KafkaMetrics::default());
    let (stop, stop_rx) = watch::channel(false);
    let service = Arc::new(KafkaService::new(Arc::new(Memory::default())));
    tokio::spawn(serve(
        listener,
        service,
        config,
        Arc::clone(&metrics),
        stop_rx,
    ));
    Port {
        addr,
        metrics,
        stop,
    }
}

/// A request frame: size, header at the API's header version, body at `version`.
fn frame<M: Encodable>(api: ApiKey, version: i16, correlation_id: i32, body: &M) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u32(0);
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("ordo-test")))
        .encode(&mut buf, api.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut buf, version).expect("body encodes");
    let size = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.freeze()
}

/// Reads one response frame; `None` if the server closed the connection instead.
async fn read_response(stream: &mut TcpStream) -> Option<Bytes> {
    let mut size = [0u8; 4];
    if stream.read_exact(&mut size).await.is_err() {
        return None;
    }
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some(Bytes::from(body))
}

/// Sends raw bytes and reads the answer, `None` when the connection is closed instead.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Option<Bytes> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_response(&mut stream).await
}

fn decode_response<M: Decodable>(mut body: Bytes, header_version: i16, version: i16) -> (i32, M) {
    let header = ResponseHeader::decode(&mut body, header_version).expect("response header");
    let message = M::decode(&mut body, version).expect("response body");
    assert!(!body.has_remaining(), "bytes after the response");
    (header.correlation_id, message)
}

fn served() -> Vec<(i16, i16, i16)> {
    SERVED_APIS
        .iter()
        .map(|&(api, min, max)| (api as i16, min, max))
        .collect()
}

fn listed(response: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
    response
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect()
}

async fn api_versions(addr: SocketAddr, version: i16) -> ApiVersionsResponse {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("ordo-test"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    let answer = exchange(addr, &frame(ApiKey::ApiVersions, version, 7, &request))
        .await
        .expect("answered");
    // Always a version 0 header.
    let (correlation_id, response) = decode_response(answer, 0, version);
    assert_eq!(correlation_id, 7);
    response
}

#[tokio::test]
async fn api_versions_lists_exactly_what_is_served_at_every_served_version() {
    let port = port(KafkaListenerConfig::default()).await;
    for version in 0..=3 {
        let response = api_versions(port.addr, version).await;
        assert_eq!(response.error_code, 0, "v{version}");
        assert_eq!(listed(&response), served(), "v{version}");
    }
}

#[tokio::test]
async fn api_versions_newer_than_served_is_answered_at_v0_with_the_served_versions() {
    let port = port(KafkaListenerConfig::default()).await;
    // A client newer than this node asks at a version it cannot know; the body may be in a
    // layout this node cannot read, so the answer must not depend on it.
    let mut request = BytesMut::new();
    request.put_i16(ApiKey::ApiVersions as i16);
    request.put_i16(9);
    request.put_i32(41);
    request.put_slice(b"\x00\x09future-client\x00");
    let mut framed = BytesMut::new();
    framed.put_u32(request.len() as u32);
    framed.put_slice(&request);
    let answer = exchange(port.addr, &framed).await.expect("answered");
    let (correlation_id, response): (i32, ApiVersionsResponse) = decode_response(answer, 0, 0);
    assert_eq!(correlation_id, 41);
    assert_eq!(
        response.error_code,
        ResponseError::UnsupportedVersion.code()
    );
    assert_eq!(listed(&response), served());
}

#[tokio::test]
async fn api_versions_v3_refuses_a_client_software_name_that_is_not_plain() {
    let port = port(KafkaListenerConfig::default()).await;
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("bad name!"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    let answer = exchange(port.addr, &frame(ApiKey::ApiVersions, 3, 1, &request))
        .await
        .expect("answered");
    let (_, response): (i32, ApiVersionsResponse) = decode_response(answer, 0, 3);
    assert_eq!(response.error_code, ResponseError::InvalidRequest.code());
}

#[tokio::test]
async fn metadata_reports_brokers_cluster_and_controller_and_no_topics_at_every_version() {
    let port = port(KafkaListenerConfig::default()).await;
    for version in 0..=12 {
        // All topics: an empty list at v0, null from v1.
        let topics = if version == 0 { Some(Vec::new()) } else { None };
        let request = MetadataRequest::default().with_topics(topics);
        let answer = exchange(
            port.addr,
            &frame(ApiKey::Metadata, version, version as i32, &request),
        )
        .await
        .unwrap_or_else(|| panic!("v{version} answered"));
        let header_version = ApiKey::Metadata.response_header_version(version);
        let (correlation_id, response): (i32, MetadataResponse) =
            decode_response(answer, header_version, version);
        assert_eq!(correlation_id, version as i32);
        let brokers: Vec<(i32, String, i32)> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, b.host.to_string(), b.port))
            .collect();
        assert_eq!(
            brokers,
            vec![
                (1, "127.0.0.1".into(), 9091),
                (2, "127.0.0.1".into(), 9092),
                (3, "127.0.0.1".into(), 9093)
            ],
            "v{version}"
        );
        if version >= 1 {
            assert_eq!(response.controller_id.0, 2, "v{version}");
        }
        if version >= 2 {
            assert_eq!(
                response.cluster_id.as_ref().map(|c| c.to_string()),
                Some("ordo-test-cluster".into())
            );
        }
        assert!(response.topics.is_empty(), "v{version}");
    }
}

#[tokio::test]
async fn metadata_for_named_topics_says_unknown_or_invalid() {
    let port = port(KafkaListenerConfig::default()).await;
    let named = |name: &'static str| {
        MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_static_str(name))))
    };
    for version in [0, 4, 9, 12] {
        let request =
            MetadataRequest::default().with_topics(Some(vec![named("orders"), named("bad/name")]));
        let answer = exchange(port.addr, &frame(ApiKey::Metadata, version, 1, &request))
            .await
            .expect("answered");
        let header_version = ApiKey::Metadata.response_header_version(version);
        let (_, response): (i32, MetadataResponse) =
            decode_response(answer, header_version, version);
        let topics: Vec<(String, i16)> = response
            .topics
            .iter()
            .map(|t| (t.name.as_ref().expect("named").to_string(), t.error_code))
            .collect();
        assert_eq!(
            topics,
            vec![
                (
                    "orders".into(),
                    ResponseError::UnknownTopicOrPartition.code()
                ),
                (
                    "bad/name".into(),
                    ResponseError::InvalidTopicException.code()
                ),
            ],
            "v{version}"
        );
    }
}

#[tokio::test]
async fn requests_answered_in_order_on_one_connection() {
    let port = port(KafkaListenerConfig::default()).await;
    let mut stream = TcpStream::connect(port.addr).await.expect("connect");
    // Pipelined: all sent before any answer is read.
    let mut all = BytesMut::new();
    for id in 0..20 {
        let request = MetadataRequest::default().with_topics(None);
        all.put_slice(&frame(ApiKey::Metadata, 9, id, &request));
    }
    stream.write_all(&all).await.expect("write");
    for id in 0..20 {
        let answer = read_response(&mut stream).await.expect("answered");
        let (correlation_id, _): (i32, MetadataResponse) = decode_response(answer, 1, 9);
        assert_eq!(correlation_id, id);
    }
    assert_eq!(port.metrics.requests_answered.load(Ordering::Relaxed), 20);
}

/// The raw request `key`, `version`, correlation id 1, no client id, then `body`.
fn raw(key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut request = Vec::new();
    request.put_i16(key);
    request.put_i16(version);
    request.put_i32(1);
    request.put_i16(-1);
    request.put_slice(body);
    let mut framed = (request.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    framed
}

/// The port still answers after what closed a connection.
async fn still_serves(port: &Port) {
    let response = api_versions(port.addr, 3).await;
    assert_eq!(response.error_code, 0);
}

#[tokio::test]
async fn what_is_not_served_closes_the_connection_and_the_port_keeps_serving() {
    let port = port(KafkaListenerConfig::default()).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an unknown API key", raw(999, 0, b"")),
        (
            "an API not served (Produce)",
            raw(ApiKey::Produce as i16, 9, b""),
        ),
        (
            "a Metadata version not served",
            raw(ApiKey::Metadata as i16, 13, b""),
        ),
        ("a header cut short", vec![0, 0, 0, 3, 0, 3, 0]),
        ("a body cut short", {
            let mut r = frame(ApiKey::Metadata, 9, 1, &MetadataRequest::default()).to_vec();
            r.pop();
            let size = (r.len() - 4) as u32;
            r[..4].copy_from_slice(&size.to_be_bytes());
            r
        }),
        ("a negative size", (-5i32).to_be_bytes().to_vec()),
    ];
    let count = cases.len() as u64;
    for (what, request) in cases {
        assert!(
            exchange(port.addr, &request).await.is_none(),
            "{what} answered"
        );
        still_serves(&port).await;
    }
    assert_eq!(port.metrics.requests_refused.load(Ordering::Relaxed), count);
}

#[tokio::test]
async fn bytes_after_a_request_are_ignored_as_kafka_ignores_them() {
    let port = port(KafkaListenerConfig::default()).await;
    let mut r = frame(ApiKey::Metadata, 12, 9, &MetadataRequest::default()).to_vec();
    r.extend_from_slice(&[1, 0, 0]);
    let size = (r.len() - 4) as u32;
    r[..4].copy_from_slice(&size.to_be_bytes());
    let answer = exchange(port.addr, &r).await.expect("answered");
    let (correlation_id, response): (i32, MetadataResponse) = decode_response(answer, 1, 12);
    assert_eq!(correlation_id, 9);
    assert_eq!(response.brokers.len(), 3);
}

#[tokio::test]
async fn oversized_length_prefixes_are_refused() {
    let port = port(KafkaListenerConfig::default()).await;
    // Metadata v0 claiming 54,265,856 topics in 5 bytes: an allocation of gigabytes had the
    // decoder trusted the count.
    let metadata = {
        let mut r = vec![0, 3, 0, 0, 3, 0x3c, 0x0c, 0];
        r.push(0xb6);
        let mut framed = (r.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&r);
        framed
    };
    assert!(exchange(port.addr, &metadata).await.is_none());
    // Flexible versions: a compact array claiming 2^31 topics, and a compact client id string
    // of 2^32 - 2 bytes in an ApiVersions v3 header.
    let compact_topics = raw(
        ApiKey::Metadata as i16,
        9,
        &[0x00, 0x80, 0x80, 0x80, 0x80, 0x08],
    );
    assert!(exchange(port.addr, &compact_topics).await.is_none());
    let mut header_string = Vec::new();
    header_string.put_i16(ApiKey::ApiVersions as i16);
    header_string.put_i16(3);
    header_string.put_i32(1);
    header_string.put_i16(-1);
    header_string.put_u8(0);
    header_string.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let mut framed = (header_string.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(&header_string);
    assert!(exchange(port.addr, &framed).await.is_none());
    still_serves(&port).await;
}

#[tokio::test]
async fn a_request_over_the_bound_is_refused_before_it_is_read() {
    let port = port(KafkaListenerConfig {
        request_bytes_max: 1024,
        ..KafkaListenerConfig::default()
    })
    .await;
    // Only the size prefix is sent: the connection closes without the rest.
    let mut stream = TcpStream::connect(port.addr).await.expect("connect");
    stream
        .write_all(&(1u32 << 20).to_be_bytes())
        .await
        .expect("write");
    assert!(read_response(&mut stream).await.is_none());
    still_serves(&port).await;
}

#[tokio::test]
async fn a_request_that_does_not_finish_arriving_is_closed() {
    let port = port(KafkaListenerConfig {
        request_read_timeout: Duration::from_millis(50),
        ..KafkaListenerConfig::default()
    })
    .await;
    let mut stream = TcpStream::connect(port.addr).await.expect("connect");
    stream
        .write_all(&100u32.to_be_bytes())
        .await
        .expect("write");
    stream.write_all(&[0, 3]).await.expect("write");
    assert!(read_response(&mut stream).await.is_none());
    still_serves(&port).await;
}

#[tokio::test]
async fn connections_over_the_bound_are_closed_at_once() {
    let port = port(KafkaListenerConfig {
        connections_max: 1,
        ..KafkaListenerConfig::default()
    })
    .await;
    let request = frame(ApiKey::ApiVersions, 0, 1, &ApiVersionsRequest::default());
    let mut first = TcpStream::connect(port.addr).await.expect("connect");
    first.write_all(&request).await.expect("write");
    assert!(read_response(&mut first).await.is_some());
    // The first holds the only slot: a second is closed unanswered.
    assert!(exchange(port.addr, &request).await.is_none());
    assert_eq!(port.metrics.connections_refused.load(Ordering::Relaxed), 1);
    drop(first);
    // Once the server has seen the first close, its slot serves again.
    for _ in 0..500 {
        if port.metrics.connections_open.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(port.metrics.connections_open.load(Ordering::Relaxed), 0);
    assert!(exchange(port.addr, &request).await.is_some());
}
