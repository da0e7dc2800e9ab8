//! A small Kafka client for Ordo's own tools (`ordo topic`) and tests: one connection to one
//! broker, requests sent one at a time at the newest version both sides serve.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::frame::{read_body, read_size, SIZE_BYTES};

/// Largest response read.
const RESPONSE_BYTES_MAX: usize = 100 * 1024 * 1024;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, writing or reading failed.
    #[error("{addr}: {source}")]
    Io {
        /// The broker.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{addr}: no answer within {after:?}")]
    Timeout {
        /// The broker.
        addr: String,
        /// How long it was waited for.
        after: Duration,
    },
    /// The broker closed the connection (a request it refused, or it stopped).
    #[error("{addr} closed the connection")]
    Closed {
        /// The broker.
        addr: String,
    },
    /// The answer did not decode.
    #[error("{addr}: undecodable answer: {reason}")]
    Decode {
        /// The broker.
        addr: String,
        /// What the decoder said.
        reason: String,
    },
    /// The broker serves no version of the API this client knows.
    #[error("{addr} does not serve {api:?}")]
    Unsupported {
        /// The broker.
        addr: String,
        /// The API.
        api: ApiKey,
    },
}

/// One connection to a broker.
pub struct KafkaClient {
    addr: String,
    stream: TcpStream,
    wait: Duration,
    correlation_id: i32,
    /// What the broker serves: API key, oldest and newest version.
    served: Vec<(i16, i16, i16)>,
}

impl KafkaClient {
    /// Connects to `addr` (`host:port`) and asks which versions it serves; every step waits
    /// at most `wait`.
    pub async fn connect(addr: &str, wait: Duration) -> Result<KafkaClient, ClientError> {
        let io = |source| ClientError::Io {
            addr: addr.to_string(),
            source,
        };
        let stream = timeout(wait, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: addr.to_string(),
                after: wait,
            })?
            .map_err(io)?;
        let mut client = KafkaClient {
            addr: addr.to_string(),
            stream,
            wait,
            correlation_id: 0,
            served: Vec::new(),
        };
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("ordo"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut response: ApiVersionsResponse = client.send_at(3, &request).await?;
        if response.error_code == ResponseError::UnsupportedVersion.code() {
            response = client.send_at(0, &ApiVersionsRequest::default()).await?;
        }
        client.served = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        Ok(client)
    }

    /// The broker this client talks to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` at the newest version both the broker and the codec serve.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<R::Response, ClientError> {
        let api = ApiKey::try_from(R::KEY).map_err(|()| ClientError::Unsupported {
            addr: self.addr.clone(),
            api: ApiKey::ApiVersions,
        })?;
        let ours = R::VERSIONS;
        let version = self
            .served
            .iter()
            .find(|(key, _, _)| *key == R::KEY)
            .map(|&(_, min, max)| (min.max(ours.min), max.min(ours.max)))
            .filter(|(min, max)| min <= max)
            .map(|(_, max)| max)
            .ok_or_else(|| ClientError::Unsupported {
                addr: self.addr.clone(),
                api,
            })?;
        self.send_at(version, request).await
    }

    /// Sends `request` at `version` and reads its answer.
    pub async fn send_at<R: Request>(
        &mut self,
        version: i16,
        request: &R,
    ) -> Result<R::Response, ClientError> {
        let api = ApiKey::try_from(R::KEY).unwrap_or(ApiKey::ApiVersions);
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let decode_error = |addr: &str, reason: String| ClientError::Decode {
            addr: addr.to_string(),
            reason,
        };
        let mut frame = BytesMut::new();
        frame.put_u32(0);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("ordo")))
            .encode(&mut frame, api.request_header_version(version))
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|e| decode_error(&self.addr, format!("the request did not encode: {e}")))?;
        let size = (frame.len() - SIZE_BYTES) as u32;
        frame[..SIZE_BYTES].copy_from_slice(&size.to_be_bytes());
        let answer = timeout(self.wait, self.exchange(&frame))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.addr.clone(),
                after: self.wait,
            })??;
        let header_version = if api == ApiKey::ApiVersions {
            0
        } else {
            api.response_header_version(version)
        };
        let mut answer = answer;
        let header = ResponseHeader::decode(&mut answer, header_version)
            .map_err(|e| decode_error(&self.addr, e.to_string()))?;
        if header.correlation_id != self.correlation_id {
            return Err(decode_error(
                &self.addr,
                format!(
                    "answer to request {} where {} was sent",
                    header.correlation_id, self.correlation_id
                ),
            ));
        }
        let response = R::Response::decode(&mut answer, version)
            .map_err(|e| decode_error(&self.addr, e.to_string()))?;
        if answer.has_remaining() {
            return Err(decode_error(
                &self.addr,
                format!("{} bytes after the answer", answer.remaining()),
            ));
        }
        Ok(response)
    }

    async fn exchange(&mut self, frame: &[u8]) -> Result<Bytes, ClientError> {
        let addr = self.addr.clone();
        let io = |source| ClientError::Io {
            addr: addr.clone(),
            source,
        };
        self.stream.write_all(frame).await.map_err(io)?;
        let closed = || ClientError::Closed {
            addr: self.addr.clone(),
        };
        let size = match read_size(&mut self.stream, RESPONSE_BYTES_MAX).await {
            Ok(Some(size)) => size,
            Ok(None) => return Err(closed()),
            Err(crate::FrameError::Io(source)) => return Err(io(source)),
            Err(other) => {
                return Err(ClientError::Decode {
                    addr: self.addr.clone(),
                    reason: other.to_string(),
                })
            }
        };
        match read_body(&mut self.stream, size).await {
            Ok(body) => Ok(body),
            Err(crate::FrameError::Io(source)) => Err(io(source)),
            Err(_) => Err(closed()),
        }
    }
}

/// The name Kafka gives an error code (`UNKNOWN_TOPIC_OR_PARTITION`, …), or the number.
pub fn error_name(code: i16) -> String {
    let Some(error) = ResponseError::try_from_code(code) else {
        return "NONE".into();
    };
    if let ResponseError::Unknown(code) = error {
        return format!("error {code}");
    }
    let mut name = String::new();
    for (i, c) in error.to_string().chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_named_as_kafka_names_them() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(38), "INVALID_REPLICATION_FACTOR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(9999), "error 9999");
    }
}
