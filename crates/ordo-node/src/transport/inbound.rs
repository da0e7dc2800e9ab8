//! The reader side: the listener accepts peer connections, checks each handshake, and reads
//! frames into the runtime's bounded delivery channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::advertised::Advertised;
use super::error::{ConnectionError, ProtocolError};
use super::incarnations::Admission;
use super::metrics::add;
use super::stream::PeerStream;
use super::wire::{self, Hello, RejectCode, Reply, HELLO_HEADER_BYTES, MAGIC, PROTOCOL_VERSION};
use super::{NodeId, PeerEvent, PeerTls, Shared, Stop};
use crate::tls::handshake_failure;

/// Read size when no frame header says how much to expect.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Most bytes discarded while waiting for a refused peer to read our notice and hang up.
const LINGER_BYTES_MAX: usize = 64 * 1024;

/// Pause after a failed `accept` (for example when out of file descriptors), so a lasting
/// error does not spin the loop.
const ACCEPT_ERROR_PAUSE_MS: u64 = 100;

/// Accepts peer connections until stopped, then waits for every connection task.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, mut stop: Stop) {
    let config = &shared.config;
    let (cluster_id, node_id) = (config.cluster_id, config.node_id);
    let limit = Arc::new(Semaphore::new(config.inbound_connections_max));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.wait() => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    if error.is_panic() {
                        std::panic::resume_unwind(error.into_panic());
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => match limit.clone().try_acquire_owned() {
                    Ok(permit) => {
                        connections.spawn(serve(shared.clone(), stream, addr, stop.clone(), permit));
                    }
                    Err(_) => {
                        add(&shared.counters.inbound_connections_refused, 1);
                        if let Some(suppressed) = admit_refusal_line(&shared) {
                            tracing::warn!(
                                cluster_id, node_id, %addr,
                                limit = config.inbound_connections_max,
                                suppressed,
                                "inbound connection refused: too many open"
                            );
                        }
                    }
                },
                Err(error) => {
                    tracing::warn!(cluster_id, node_id, %error, "accepting a peer connection failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS)) => {}
                        _ = stop.wait() => break,
                    }
                }
            },
        }
    }
    drop(listener);
    while let Some(joined) = connections.join_next().await {
        if let Err(error) = joined {
            if error.is_panic() {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    }
}

/// Serves one inbound connection: handshake, then frames until it closes or is stopped.
async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    mut stop: Stop,
    _permit: OwnedSemaphorePermit,
) {
    let config = &shared.config;
    let (cluster_id, node_id) = (config.cluster_id, config.node_id);
    let handshake_timeout = Duration::from_millis(config.handshake_timeout_ms);
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(cluster_id, node_id, %addr, %error, "setting TCP_NODELAY failed");
    }
    let mut stream = match &shared.tls {
        None => PeerStream::Plain(stream),
        Some(tls) => {
            let secured = tokio::select! {
                _ = stop.wait() => return,
                secured = timeout(handshake_timeout, secure(tls, stream)) => match secured {
                    Ok(secured) => secured,
                    Err(_) => Err(ProtocolError::HandshakeTimeout {
                        timeout_ms: config.handshake_timeout_ms,
                    }
                    .into()),
                },
            };
            match secured {
                Ok(Secured::Tls(stream)) => stream,
                Ok(Secured::PlainDialer(stream)) => {
                    add(&shared.counters.handshake_failures, 1);
                    let error = ProtocolError::TlsRequired;
                    refuse(
                        &shared,
                        PeerStream::Plain(stream),
                        addr,
                        None,
                        error,
                        &mut stop,
                    )
                    .await;
                    return;
                }
                Ok(Secured::Closed) => return,
                Err(ConnectionError::Protocol(error)) => {
                    // Nothing can be said to a peer the handshake failed with: log and close.
                    add(&shared.counters.handshake_failures, 1);
                    if let Some(suppressed) = admit_refusal_line(&shared) {
                        tracing::warn!(cluster_id, node_id, %addr, %error, suppressed, "closing inbound peer connection");
                    }
                    shared.emit(PeerEvent::InboundError {
                        addr,
                        peer: None,
                        error,
                    });
                    return;
                }
                Err(error) => {
                    tracing::debug!(cluster_id, node_id, %addr, %error, "inbound connection closed during the TLS handshake");
                    return;
                }
            }
        }
    };

    let hello = tokio::select! {
        _ = stop.wait() => return,
        hello = timeout(handshake_timeout, read_hello(&mut stream)) => match hello {
            Ok(hello) => hello,
            Err(_) => Err(ProtocolError::HandshakeTimeout {
                timeout_ms: config.handshake_timeout_ms,
            }
            .into()),
        },
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(ConnectionError::Protocol(error)) => {
            add(&shared.counters.handshake_failures, 1);
            refuse(&shared, stream, addr, None, error, &mut stop).await;
            return;
        }
        Err(error) => {
            tracing::debug!(cluster_id, node_id, %addr, %error, "inbound connection closed during handshake");
            return;
        }
    };
    let peer_id = hello.from;
    let admitted = match shared.check_inbound(hello.cluster_id, hello.from, hello.to) {
        Ok(()) => admit_incarnation(&shared, peer_id, hello.incarnation).await,
        Err(error) => Err(error),
    };
    if let Err(error) = admitted {
        add(&shared.counters.handshake_failures, 1);
        refuse(&shared, stream, addr, Some(peer_id), error, &mut stop).await;
        return;
    }
    let (connection_id, mut peer_stop) =
        match shared.admit_inbound(hello.cluster_id, hello.from, hello.to, hello.advertised) {
            Ok(admitted) => admitted,
            Err(error) => {
                add(&shared.counters.handshake_failures, 1);
                refuse(&shared, stream, addr, Some(peer_id), error, &mut stop).await;
                return;
            }
        };

    let mut accept = BytesMut::new();
    Reply {
        version: PROTOCOL_VERSION,
        code: RejectCode::Accepted,
        cluster_id,
        node_id,
        reason: String::new(),
    }
    .encode(&mut accept);
    let write_accept = async {
        stream.write_all(&accept).await?;
        stream.flush().await
    };
    let result = match timeout(handshake_timeout, write_accept).await {
        Ok(Ok(())) => {
            tracing::info!(cluster_id, node_id, peer_id, %addr, "inbound peer connection accepted");
            read_frames(&shared, &mut stream, peer_id, &mut stop, &mut peer_stop).await
        }
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(ProtocolError::HandshakeTimeout {
            timeout_ms: config.handshake_timeout_ms,
        }
        .into()),
    };
    shared.release_inbound(peer_id, connection_id);
    match result {
        Ok(()) => {
            tracing::debug!(cluster_id, node_id, peer_id, %addr, "inbound peer connection closed");
        }
        Err(ConnectionError::Protocol(error)) => {
            add(&shared.counters.frame_errors, 1);
            refuse(&shared, stream, addr, Some(peer_id), error, &mut stop).await;
        }
        Err(error @ ConnectionError::Silent { .. }) => {
            add(&shared.counters.silent_connections, 1);
            tracing::warn!(cluster_id, node_id, peer_id, %addr, %error, "peer went silent: connection closed, peer reported unreachable");
            shared.emit(PeerEvent::Unreachable(peer_id));
        }
        Err(error) => {
            tracing::info!(cluster_id, node_id, peer_id, %addr, %error, "inbound peer connection lost");
        }
    }
}

/// An inbound connection to a TLS peer port, once its first bytes arrived.
enum Secured {
    /// The TLS handshake completed: the dialer proved it holds a certificate of the
    /// cluster's CAs.
    Tls(PeerStream),
    /// The dialer opened with the Ordo handshake in plain text.
    PlainDialer(TcpStream),
    /// The dialer hung up before sending anything.
    Closed,
}

/// Runs the server side of the TLS handshake, unless the dialer speaks plain Ordo: that one
/// is told, in plain text, that this port requires TLS.
async fn secure(tls: &PeerTls, stream: TcpStream) -> Result<Secured, ConnectionError> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(Secured::Closed);
    }
    if first[0] == MAGIC[0] {
        return Ok(Secured::PlainDialer(stream));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.acceptor.config());
    match acceptor.accept(stream).await {
        Ok(stream) => Ok(Secured::Tls(PeerStream::Tls(Box::new(stream.into())))),
        Err(error) => Err(ProtocolError::Tls(handshake_failure(&error, "dialling node")).into()),
    }
}

/// Checks the dialer's incarnation against the record, recording it durably first if the
/// peer is new to this node.
async fn admit_incarnation(
    shared: &Arc<Shared>,
    peer_id: NodeId,
    incarnation: u64,
) -> Result<(), ProtocolError> {
    let record = Arc::clone(&shared.incarnations);
    let admission = if record.get(peer_id) == Some(incarnation) {
        Admission::Known
    } else {
        // A new peer means a file write and fsyncs: off the runtime's threads.
        tokio::task::spawn_blocking(move || record.admit(peer_id, incarnation))
            .await
            .unwrap_or_else(|error| Admission::Failed(error.to_string()))
    };
    let config = &shared.config;
    match admission {
        Admission::Known => Ok(()),
        Admission::Recorded => {
            tracing::info!(
                cluster_id = config.cluster_id,
                node_id = config.node_id,
                peer_id,
                incarnation = format_args!("{incarnation:#018x}"),
                "new peer incarnation recorded"
            );
            Ok(())
        }
        Admission::LostState { recorded } => Err(ProtocolError::LostState {
            node_id: peer_id,
            recorded,
            presented: incarnation,
        }),
        Admission::Failed(reason) => Err(ProtocolError::RecordFailed(reason)),
    }
}

/// Reads the handshake, refusing garbage after its first four bytes, other versions after
/// six, and an advertised block over its bound from its length, before waiting for the rest.
async fn read_hello(stream: &mut PeerStream) -> Result<Hello, ConnectionError> {
    let mut header = [0u8; HELLO_HEADER_BYTES];
    read_exactly(stream, &mut header[..4]).await?;
    if header[..4] != MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(&header[..4]);
        return Err(ProtocolError::BadMagic { found }.into());
    }
    read_exactly(stream, &mut header[4..6]).await?;
    let mut preamble = [0u8; 6];
    preamble.copy_from_slice(&header[..6]);
    Hello::check_preamble(&preamble)?;
    read_exactly(stream, &mut header[6..]).await?;
    let (mut hello, block_bytes) = Hello::decode_header(&header)?;
    let mut block = vec![0u8; block_bytes];
    read_exactly(stream, &mut block).await?;
    hello.advertised = Advertised::decode(&block)?;
    Ok(hello)
}

async fn read_exactly(stream: &mut PeerStream, buf: &mut [u8]) -> Result<(), ConnectionError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ProtocolError::Truncated { what: "handshake" }.into())
        }
        Err(error) => Err(error.into()),
    }
}

/// Reads frames and delivers their messages until the peer closes (`Ok`), the connection is
/// stopped (`Ok`), or a frame breaks the protocol (`Err`).
async fn read_frames(
    shared: &Shared,
    stream: &mut PeerStream,
    peer_id: NodeId,
    stop: &mut Stop,
    peer_stop: &mut Stop,
) -> Result<(), ConnectionError> {
    let counters = &shared.counters;
    let frame_bytes_max = shared.config.frame_bytes_max;
    let silence = Duration::from_millis(shared.config.silence_ms);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        while let Some(frame_bytes) = wire::frame_length(&buffer, frame_bytes_max)? {
            let frame = buffer.split_to(frame_bytes).freeze();
            let messages = wire::decode_frame(frame)?;
            add(&counters.frames_received, 1);
            add(&counters.bytes_received, frame_bytes as u64);
            for message in messages {
                // Waiting here, not reading, is the backpressure: the socket fills, then
                // the peer's queue, which drops.
                tokio::select! {
                    sent = shared.delivery.send((peer_id, message)) => {
                        if sent.is_err() {
                            return Ok(());
                        }
                    }
                    _ = stop.wait() => return Ok(()),
                    _ = peer_stop.wait() => return Ok(()),
                }
                add(&counters.messages_received, 1);
            }
        }
        // Room for the rest of a frame whose header has arrived, or one chunk: the buffer
        // never holds more than one frame plus one chunk.
        let wanted = if buffer.len() >= wire::FRAME_HEADER_BYTES {
            let body_bytes = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
            (wire::FRAME_HEADER_BYTES + body_bytes as usize).saturating_sub(buffer.len())
        } else {
            READ_CHUNK_BYTES
        };
        buffer.reserve(wanted.max(READ_CHUNK_BYTES));
        let read = tokio::select! {
            read = timeout(silence, stream.read_buf(&mut buffer)) => match read {
                Ok(read) => read?,
                Err(_) => return Err(ConnectionError::Silent { silence_ms: shared.config.silence_ms }),
            },
            _ = stop.wait() => return Ok(()),
            _ = peer_stop.wait() => return Ok(()),
        };
        if read == 0 {
            return if buffer.is_empty() {
                Ok(())
            } else {
                Err(ProtocolError::Truncated { what: "frame" }.into())
            };
        }
    }
}

/// Whether a refusal may log its WARN line (a few per window, see [`throttle`]); `Some`
/// with the lines left out since the last one, which the line reports.
///
/// [`throttle`]: super::throttle
fn admit_refusal_line(shared: &Shared) -> Option<u64> {
    let admitted = shared.refusals_logged.admit(std::time::Instant::now());
    if admitted.is_none() {
        add(&shared.counters.refusal_lines_suppressed, 1);
    }
    admitted
}

/// Logs and reports a protocol error, tells the peer why, and closes the connection.
async fn refuse(
    shared: &Shared,
    mut stream: PeerStream,
    addr: SocketAddr,
    peer_id: Option<NodeId>,
    error: ProtocolError,
    stop: &mut Stop,
) {
    let config = &shared.config;
    let (cluster_id, node_id) = (config.cluster_id, config.node_id);
    if let Some(suppressed) = admit_refusal_line(shared) {
        tracing::warn!(cluster_id, node_id, peer_id, %addr, %error, suppressed, "closing inbound peer connection");
    }
    let mut notice = BytesMut::new();
    Reply {
        version: PROTOCOL_VERSION,
        code: error.reject_code(),
        cluster_id,
        node_id,
        reason: error.reason_for_peer(),
    }
    .encode(&mut notice);
    shared.emit(PeerEvent::InboundError {
        addr,
        peer: peer_id,
        error,
    });
    // Closing a socket with unread input makes the kernel send a reset, which can destroy the
    // notice before the peer reads it. So: send the notice, half-close, and read until the
    // peer hangs up, within a byte and time limit.
    let linger = async {
        stream.write_all(&notice).await?;
        stream.flush().await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_BYTES_MAX {
            let read = stream.read(&mut sink).await?;
            if read == 0 {
                break;
            }
            discarded += read;
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::select! {
        _ = timeout(Duration::from_millis(config.handshake_timeout_ms), linger) => {}
        _ = stop.wait() => {}
    }
}
