//! The writer side: one task per peer dials it, handshakes, and writes its queue in batches.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::backoff::Backoff;
use super::error::{ConnectionError, ProtocolError};
use super::metrics::add;
use super::stream::PeerStream;
use super::wire::{self, Hello, RejectCode, Reply, PROTOCOL_VERSION};
use super::{NodeId, PeerEvent, PeerMessage, Shared, Stop};
use crate::tls::handshake_failure;

/// Room for the largest reply: header plus the longest reason.
const REPLY_BYTES_MAX: usize = wire::REPLY_HEADER_BYTES + wire::REASON_BYTES_MAX;

/// How long to look for the peer's notice after a write failed, to log why it closed.
const NOTICE_AFTER_WRITE_ERROR_MS: u64 = 100;

/// The writer task of one peer.
pub(crate) struct Outbound {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer_id: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) queue: mpsc::Receiver<PeerMessage>,
    pub(crate) queued_bytes: Arc<AtomicUsize>,
    pub(crate) stop: Stop,
}

impl Outbound {
    /// Dials, serves and redials the peer until stopped.
    pub(crate) async fn run(mut self) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let counters = &shared.counters;
        let (cluster_id, node_id, peer_id, addr) =
            (config.cluster_id, config.node_id, self.peer_id, self.addr);
        let mut backoff = Backoff::new(config.backoff_ms_min, config.backoff_ms_max);
        // `None` until the first attempt: the first failure is reported too.
        let mut reachable: Option<bool> = None;
        let mut connected_before = false;
        loop {
            let dialed = tokio::select! {
                dialed = dial(&shared, peer_id, addr) => dialed,
                _ = self.stop.wait() => break,
            };
            match dialed {
                Ok(stream) => {
                    add(&counters.connects, 1);
                    if connected_before {
                        add(&counters.reconnects, 1);
                    }
                    connected_before = true;
                    backoff.reset();
                    reachable = Some(true);
                    tracing::info!(cluster_id, node_id, peer_id, %addr, "peer connected");
                    shared.emit(PeerEvent::Connected(peer_id));
                    match self.serve(stream).await {
                        Ok(()) => break,
                        Err(error) => {
                            tracing::warn!(
                                cluster_id, node_id, peer_id, %addr, %error,
                                "peer connection lost"
                            );
                            if let ConnectionError::Protocol(error) = error {
                                shared.emit(PeerEvent::OutboundError {
                                    peer: peer_id,
                                    error,
                                });
                            }
                        }
                    }
                }
                Err(ConnectionError::Protocol(error)) => {
                    add(&counters.dial_failures, 1);
                    add(&counters.handshake_failures, 1);
                    let lost_state = error.reject_code() == RejectCode::LostState;
                    if lost_state {
                        tracing::error!(
                            cluster_id, node_id, peer_id, %addr, %error,
                            "refused by a peer that knew another incarnation of this node: lost state"
                        );
                    } else {
                        tracing::warn!(
                            cluster_id, node_id, peer_id, %addr, %error,
                            "peer handshake failed"
                        );
                    }
                    shared.emit(PeerEvent::OutboundError {
                        peer: peer_id,
                        error,
                    });
                    // Every later dial would be refused the same way: this node's
                    // incarnation never changes while it runs.
                    if lost_state {
                        break;
                    }
                }
                Err(error) => {
                    add(&counters.dial_failures, 1);
                    // Expected while a peer is down; the Unreachable event carries the news.
                    tracing::debug!(cluster_id, node_id, peer_id, %addr, %error, "peer dial failed");
                }
            }
            if reachable != Some(false) {
                reachable = Some(false);
                tracing::info!(cluster_id, node_id, peer_id, %addr, "peer unreachable");
                shared.emit(PeerEvent::Unreachable(peer_id));
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.wait() => break,
            }
        }
        // Whatever is still queued will never be sent.
        self.queue.close();
        let mut unsent = 0;
        while self.queue.try_recv().is_ok() {
            unsent += 1;
        }
        add(&counters.messages_unsent, unsent);
    }

    /// Writes the queue to an established connection until it breaks (`Err`) or the writer
    /// should stop (`Ok`).
    async fn serve(&mut self, stream: PeerStream) -> Result<(), ConnectionError> {
        let shared = self.shared.clone();
        let config = &shared.config;
        let counters = &shared.counters;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut notice = BytesMut::with_capacity(REPLY_BYTES_MAX);
        let mut out = BytesMut::new();
        let mut batch = Vec::new();
        let keepalive = Duration::from_millis(config.keepalive_ms);
        loop {
            // The peer never writes after the handshake unless it is closing the connection,
            // so reading here notices a dead or refusing peer even while the queue is idle.
            let first = tokio::select! {
                _ = self.stop.wait() => return Ok(()),
                closed = read_notice(&mut reader, &mut notice) => return Err(closed),
                message = timeout(keepalive, self.queue.recv()) => match message {
                    Ok(Some(message)) => Some(message),
                    Ok(None) => return Ok(()),
                    Err(_) => None,
                },
            };
            out.clear();
            let frames = match first {
                Some(first) => {
                    // Let every task already woken on this node run first: the drivers of
                    // other groups with messages for this peer queue them now, and they
                    // leave in this write instead of one write each.
                    tokio::task::yield_now().await;
                    self.collect_batch(first, &mut batch);
                    wire::encode_frames(&mut out, &batch, config.frame_bytes_max)
                }
                None => {
                    wire::encode_keepalive(&mut out);
                    add(&counters.keepalives_sent, 1);
                    1
                }
            };
            // A TLS stream may keep the end of a write in its buffer until flushed.
            let write = timeout(Duration::from_millis(config.write_timeout_ms), async {
                writer.write_all(&out).await?;
                writer.flush().await
            });
            let written = tokio::select! {
                written = write => written,
                _ = self.stop.wait() => {
                    add(&counters.messages_unsent, batch.len() as u64);
                    return Ok(());
                }
            };
            match written {
                Ok(Ok(())) => {
                    if !batch.is_empty() {
                        add(&counters.batches_sent, 1);
                    }
                    add(&counters.frames_sent, frames as u64);
                    add(&counters.messages_sent, batch.len() as u64);
                    add(&counters.bytes_sent, out.len() as u64);
                    batch.clear();
                }
                Ok(Err(error)) => {
                    add(&counters.messages_unsent, batch.len() as u64);
                    // A peer that refuses a frame says why before closing; prefer its reason
                    // over the bare write error.
                    let wait = Duration::from_millis(NOTICE_AFTER_WRITE_ERROR_MS);
                    return match timeout(wait, read_notice(&mut reader, &mut notice)).await {
                        Ok(ConnectionError::Protocol(reason)) => Err(reason.into()),
                        _ => Err(error.into()),
                    };
                }
                Err(_) => {
                    add(&counters.messages_unsent, batch.len() as u64);
                    return Err(ConnectionError::WriteTimeout {
                        timeout_ms: config.write_timeout_ms,
                    });
                }
            }
        }
    }

    /// Takes `first` and whatever else is queued, until the batch reaches `batch_bytes_max`.
    fn collect_batch(&mut self, first: PeerMessage, batch: &mut Vec<PeerMessage>) {
        let batch_bytes_max = self.shared.config.batch_bytes_max;
        let mut batch_bytes = self.take(&first);
        batch.push(first);
        while batch_bytes < batch_bytes_max {
            match self.queue.try_recv() {
                Ok(message) => {
                    batch_bytes += self.take(&message);
                    batch.push(message);
                }
                Err(_) => break,
            }
        }
    }

    /// Releases a dequeued message's bytes from the queue's byte budget.
    fn take(&self, message: &PeerMessage) -> usize {
        let bytes = wire::message_encoded_bytes(message);
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        bytes
    }
}

/// Connects to the peer and completes the handshake.
async fn dial(
    shared: &Shared,
    peer_id: NodeId,
    addr: SocketAddr,
) -> Result<PeerStream, ConnectionError> {
    let config = &shared.config;
    let connect = timeout(
        Duration::from_millis(config.connect_timeout_ms),
        TcpStream::connect(addr),
    );
    let stream = connect
        .await
        .map_err(|_| ConnectionError::ConnectTimeout {
            timeout_ms: config.connect_timeout_ms,
        })??;
    // Raft heartbeats and votes are small and latency-bound; batching already coalesces.
    stream.set_nodelay(true)?;
    let tls = shared.tls.as_ref();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        cluster_id: config.cluster_id,
        from: config.node_id,
        to: peer_id,
        incarnation: config.incarnation,
        advertised: config.advertised.clone(),
    };
    let handshake = async {
        let mut stream = match tls {
            None => PeerStream::Plain(stream),
            Some(tls) => {
                // The node dialled must hold a certificate of the cluster's CAs naming the
                // address dialled.
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let connector = tokio_rustls::TlsConnector::from(tls.connector.config());
                let stream = connector.connect(name, stream).await.map_err(tls_failure)?;
                PeerStream::Tls(Box::new(stream.into()))
            }
        };
        stream.write_all(&hello.encode()).await?;
        stream.flush().await?;
        let mut buf = BytesMut::with_capacity(REPLY_BYTES_MAX);
        let reply = read_reply(&mut stream, &mut buf).await;
        Ok::<_, ConnectionError>((stream, reply?))
    };
    let (stream, reply) = timeout(
        Duration::from_millis(config.handshake_timeout_ms),
        handshake,
    )
    .await
    .map_err(|_| ProtocolError::HandshakeTimeout {
        timeout_ms: config.handshake_timeout_ms,
    })?
    .map_err(|error| match error {
        // Under TLS 1.3 the acceptor checks this node's certificate after the dialling
        // side considers the handshake done: its refusal arrives as an alert on the first
        // read.
        ConnectionError::Io(io) if tls.is_some() && is_tls_error(&io) => tls_failure(io),
        other => other,
    })?;
    check_reply(shared, peer_id, reply)?;
    Ok(stream)
}

fn is_tls_error(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

fn tls_failure(error: std::io::Error) -> ConnectionError {
    if is_tls_error(&error) {
        ProtocolError::Tls(handshake_failure(&error, "node dialled")).into()
    } else {
        error.into()
    }
}

/// Checks the acceptor's reply: it must accept, speak our version and be the node and
/// cluster this node meant to reach.
fn check_reply(shared: &Shared, peer_id: NodeId, reply: Reply) -> Result<(), ProtocolError> {
    if reply.code != RejectCode::Accepted {
        return Err(ProtocolError::RejectedByPeer {
            code: reply.code,
            reason: reply.reason,
        });
    }
    if reply.version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            ours: PROTOCOL_VERSION,
            theirs: reply.version,
        });
    }
    if reply.cluster_id != shared.config.cluster_id {
        return Err(ProtocolError::ClusterMismatch {
            ours: shared.config.cluster_id,
            theirs: reply.cluster_id,
        });
    }
    if reply.node_id != peer_id {
        return Err(ProtocolError::WrongReceiver {
            expected: peer_id,
            actual: reply.node_id,
        });
    }
    Ok(())
}

/// Reads one reply. Cancel-safe: partial bytes stay in `buf`.
async fn read_reply<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> Result<Reply, ConnectionError> {
    loop {
        if let Some((reply, _)) = Reply::decode(buf)? {
            return Ok(reply);
        }
        buf.reserve(REPLY_BYTES_MAX.saturating_sub(buf.len()));
        if reader.read_buf(buf).await? == 0 {
            return Err(if buf.is_empty() {
                ConnectionError::Closed
            } else {
                ProtocolError::Truncated { what: "reply" }.into()
            });
        }
    }
}

/// Waits for the peer to close an established connection and returns why.
async fn read_notice<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> ConnectionError {
    match read_reply(reader, buf).await {
        Ok(reply) if reply.code == RejectCode::Accepted => {
            ProtocolError::MalformedHandshake("second accept after the handshake").into()
        }
        Ok(reply) => ProtocolError::RejectedByPeer {
            code: reply.code,
            reason: reply.reason,
        }
        .into(),
        Err(error) => error,
    }
}
