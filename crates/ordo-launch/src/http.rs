//! A minimal HTTP/1.1 client for the admin endpoints: one `GET`, `Connection: close`, a
//! bounded response; over TLS when given a client configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest admin response read.
pub const RESPONSE_BYTES_MAX: usize = 4 << 20;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("cannot reach {addr}: {source}")]
    Io {
        /// The endpoint.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("{addr} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The answer is not HTTP or is too large.
    #[error("{addr} answered something that is not an HTTP response ({problem})")]
    Malformed {
        /// The endpoint.
        addr: SocketAddr,
        /// What was wrong.
        problem: &'static str,
    },
}

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body as text (lossy).
    pub body: String,
}

/// `GET path` from `addr`, reading at most [`RESPONSE_BYTES_MAX`].
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    get_bounded(addr, path, timeout, RESPONSE_BYTES_MAX).await
}

/// `GET path` from `addr`; a response over `response_bytes_max` is [`HttpError::Malformed`].
pub async fn get_bounded(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    response_bytes_max: usize,
) -> Result<HttpResponse, HttpError> {
    get_over(addr, path, timeout, response_bytes_max, None).await
}

/// `GET path` from `addr`, over TLS with `tls` when given (the server's certificate must
/// name `addr`'s IP address); a response over `response_bytes_max` is
/// [`HttpError::Malformed`].
pub async fn get_over(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    response_bytes_max: usize,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<HttpResponse, HttpError> {
    let timeout_ms = timeout.as_millis() as u64;
    let io = |source| HttpError::Io { addr, source };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
        match tls {
            None => get_inner(stream, addr, path, response_bytes_max).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, stream)
                    .await
                    .map_err(io)?;
                get_inner(stream, addr, path, response_bytes_max).await
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout { addr, timeout_ms }),
    }
}

async fn get_inner<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    path: &str,
    response_bytes_max: usize,
) -> Result<HttpResponse, HttpError> {
    let io = |source| HttpError::Io { addr, source };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(response_bytes_max as u64 + 1)
        .read_to_end(&mut raw)
        .await
        .map_err(io)?;
    if raw.len() > response_bytes_max {
        return Err(HttpError::Malformed {
            addr,
            problem: "response too large",
        });
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(HttpError::Malformed {
        addr,
        problem: "no end of headers",
    })?;
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or(HttpError::Malformed {
            addr,
            problem: "no status line",
        })?;
    Ok(HttpResponse {
        status,
        body: body.to_string(),
    })
}
