//! The Kafka port: accepts connections and answers each one's requests in order.
//!
//! Bounds, each refusing with a log line (a few per window, see [`LogThrottle`]) and a
//! count in [`KafkaMetrics`]:
//! - a request's size is checked against `request_bytes_max` (Kafka's
//!   `socket.request.max.bytes`) before any of it is read, and the buffer for it grows with
//!   the bytes that arrive, not with the size claimed;
//! - at most `connections_max` connections are served at once: one more is closed at once;
//! - a connection that sends nothing for `idle_timeout` (Kafka's
//!   `connections.max.idle.ms`) is closed, and so is one that has started a request and not
//!   finished it within `request_read_timeout`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_node::LogThrottle;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::timeout;

use crate::frame::{read_body, read_size, FrameError};
use crate::service::{KafkaService, RequestError};

/// The bounds of the Kafka port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaListenerConfig {
    /// Largest request read, in bytes (the size prefix not counted).
    pub request_bytes_max: usize,
    /// Most connections served at once.
    pub connections_max: usize,
    /// How long a connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// How long a request may take to arrive once its first byte has.
    pub request_read_timeout: Duration,
}

impl Default for KafkaListenerConfig {
    /// Kafka's defaults where Kafka has one: 100 MiB requests, 10 minutes idle.
    fn default() -> KafkaListenerConfig {
        KafkaListenerConfig {
            request_bytes_max: 100 * 1024 * 1024,
            connections_max: 4096,
            idle_timeout: Duration::from_secs(600),
            request_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of the Kafka port.
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    /// Connections accepted and served.
    pub connections_accepted: AtomicU64,
    /// Connections closed at once: `connections_max` were open.
    pub connections_refused: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Requests answered.
    pub requests_answered: AtomicU64,
    /// Connections closed for what their client sent: bytes that are not a request this
    /// node serves, a request over the size bound, one cut short or too slow to arrive.
    pub requests_refused: AtomicU64,
}

/// Lines logged per window for refused requests and connections.
const REFUSALS_LOGGED_PER_WINDOW: u32 = 10;
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("a request took over {0:?} to arrive")]
    SlowRequest(Duration),
    #[error("writing a response failed: {0}")]
    Write(std::io::Error),
}

impl Closed {
    /// Whether the client sent something it should not have (not a lost connection).
    fn is_clients(&self) -> bool {
        match self {
            Closed::Frame(FrameError::Io(_)) | Closed::Write(_) => false,
            Closed::Request(error) => !error.is_internal(),
            _ => true,
        }
    }
}

struct Shared {
    service: Arc<KafkaService>,
    config: KafkaListenerConfig,
    metrics: Arc<KafkaMetrics>,
    refusals: LogThrottle,
}

/// Serves the Kafka port on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    service: Arc<KafkaService>,
    config: KafkaListenerConfig,
    metrics: Arc<KafkaMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(config.connections_max));
    let shared = Arc::new(Shared {
        service,
        config,
        metrics,
        refusals: LogThrottle::new(REFUSALS_LOGGED_PER_WINDOW, REFUSAL_LOG_WINDOW),
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|&s| s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // A connection that failed before it was accepted, or no file descriptors
                // left: the next accept may succeed.
                if let Some(suppressed) = shared.refusals.admit(Instant::now()) {
                    tracing::warn!(%error, suppressed, "accepting a Kafka connection failed");
                }
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            shared
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = shared.refusals.admit(Instant::now()) {
                tracing::warn!(
                    %peer,
                    connections_max = shared.config.connections_max,
                    suppressed,
                    "Kafka connection refused: connections_max are open"
                );
            }
            drop(stream);
            continue;
        };
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        tokio::spawn(async move {
            let metrics = &shared.metrics;
            metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
            metrics.connections_open.fetch_add(1, Ordering::Relaxed);
            let result = connection(stream, &shared, stop).await;
            metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
            if let Err(closed) = result {
                report(&shared, peer, &closed);
            }
        });
    }
}

fn report(shared: &Shared, peer: SocketAddr, closed: &Closed) {
    if let Closed::Request(error) = closed {
        if error.is_internal() {
            tracing::error!(%peer, %error, "Kafka connection closed");
            return;
        }
    }
    if !closed.is_clients() {
        tracing::debug!(%peer, error = %closed, "Kafka connection lost");
        return;
    }
    shared
        .metrics
        .requests_refused
        .fetch_add(1, Ordering::Relaxed);
    if let Some(suppressed) = shared.refusals.admit(Instant::now()) {
        tracing::warn!(%peer, error = %closed, suppressed, "Kafka connection closed");
    }
}

/// Answers one connection's requests in order until it closes, goes idle, sends what is
/// refused, or the port stops.
async fn connection(
    mut stream: TcpStream,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Closed> {
    // Responses are written whole; Nagle's delay would only hold them back.
    let _ = stream.set_nodelay(true);
    let config = &shared.config;
    loop {
        let size = tokio::select! {
            size = timeout(config.idle_timeout, read_size(&mut stream, config.request_bytes_max)) => {
                match size {
                    Ok(size) => size?,
                    // Idle: closed quietly, as Kafka does.
                    Err(_) => return Ok(()),
                }
            }
            _ = stop.wait_for(|&s| s) => return Ok(()),
        };
        let Some(size) = size else {
            return Ok(());
        };
        let request = timeout(config.request_read_timeout, read_body(&mut stream, size))
            .await
            .map_err(|_| Closed::SlowRequest(config.request_read_timeout))??;
        let response = shared.service.handle(request).await?;
        stream.write_all(&response).await.map_err(Closed::Write)?;
        shared
            .metrics
            .requests_answered
            .fetch_add(1, Ordering::Relaxed);
    }
}
