//! The peer transport: moves opaque Raft messages between nodes over TCP.
//!
//! A node hosts many Raft groups, so the transport's unit is a [`PeerMessage`]: a group id
//! and an opaque payload (the Raft message codec lives above this module). The runtime
//! [`send`](Transport::send)s messages to peers by node id, drains the messages peers sent it
//! from [`TransportChannels::messages`], and learns from [`TransportChannels::events`] when a
//! peer becomes reachable or unreachable (to call `report_unreachable` on Raft).
//!
//! # Connections
//!
//! Each node dials one long-lived connection to every peer and only *writes* messages on it;
//! it accepts the connections its peers dial and only *reads* messages from them. So a pair
//! of nodes shares two connections, one per direction. One bidirectional connection per pair
//! would need a tie-break when both nodes dial at once (after a partition heals, say), and a
//! wrong tie-break leaves both sides closing each other's connection; with one connection per
//! direction each side owns the connection it writes, reconnects it on its own schedule, and
//! nothing needs to agree. The accepting side writes back only the handshake reply and, when
//! it closes the connection for a protocol error, a notice saying why.
//!
//! If a second connection from the same peer is accepted (the peer restarted before the old
//! socket timed out), it replaces the first, so there is at most one per direction.
//!
//! # Queues, batching and backpressure
//!
//! Every peer has a bounded outbound queue (`queue_messages_max` messages and
//! `queue_bytes_max` bytes). [`Transport::send`] never waits: when the queue is full the
//! message is dropped, counted, and reported as [`SendError::QueueFull`]; Raft tolerates lost
//! messages and retransmits. A per-peer task writes the queue to the connection; everything
//! queued while a write is in flight goes into the next write, up to `batch_bytes_max`,
//! encoded as one or more frames of at most `frame_bytes_max` and written with one call.
//!
//! Inbound messages go to a bounded channel of `inbound_messages_max`. A connection's reader
//! waits for room in that channel before it reads more from its socket, so a slow runtime
//! pushes back through TCP to the sender's queue instead of growing a buffer here.
//!
//! Outbound connections that fail are redialled with capped exponential backoff and jitter
//! (`backoff_ms_min` to `backoff_ms_max`); messages queued meanwhile are sent once the
//! connection is back. A message in a write that failed is lost and counted as unsent.
//!
//! # TLS
//!
//! With [`TransportConfig::tls`] every connection is mutual TLS ([`crate::tls`]): the
//! dialer checks that the node it reaches holds a certificate of the cluster's CAs naming
//! the address dialled, the acceptor requires a certificate of the same CAs from the dialer,
//! and only then does the handshake below start, inside TLS. A node with a certificate of
//! another CA is refused before it can claim an id. The acceptor looks at the first byte: a
//! dialer that opens with the Ordo magic in plain text gets a plain reply with
//! [`RejectCode::TlsRequired`]; a plain acceptor that receives a TLS handshake refuses it as
//! bad magic and says the other end runs with peer TLS.
//!
//! # Incarnations
//!
//! A node presents its *incarnation* in every handshake: a random number fixed when its
//! data directory was first used (see [`identity`](crate::identity)). The acceptor keeps a
//! [`PeerIncarnations`] record; before it accepts the first connection of a peer it has
//! no incarnation for, it records the presented one durably. A peer that comes back with
//! another incarnation has lost the state it promised (its votes, its acknowledged
//! entries): it is refused with [`RejectCode::LostState`], so nothing it sends is ever
//! read. The dialer reports the refusal as a [`PeerEvent::OutboundError`] and stops
//! dialling that peer; the runtime treats it as fatal.
//!
//! # Advertised values
//!
//! Every handshake carries what the dialer advertises about itself ([`Advertised`]): at most
//! [`ADVERTISED_ENTRIES_MAX`] named values, such as the URL its etcd API listens on. The
//! acceptor records the last ones each peer presented ([`Transport::advertised`]). They
//! travel only between members of the cluster (the handshake is checked first), so what a
//! node believes about its peers comes from the peers themselves. A name this build does not
//! know is kept like any other, so a new kind of value needs no new version.
//!
//! # Wire format, version 3
//!
//! All integers are big-endian. The versions so far:
//!
//! | version | change |
//! |---|---|
//! | 1 | handshake, reply and frames |
//! | 2 | the dialer's incarnation in the handshake |
//! | 3 | the dialer's advertised values after the handshake's fixed fields |
//!
//! A peer of another version is refused with [`RejectCode::UnsupportedVersion`] and a
//! reason naming both versions, so every node of a cluster is upgraded together.
//!
//! The dialer opens with a **handshake**, 42 bytes and the advertised values:
//!
//! | bytes | field | |
//! |---|---|---|
//! | 4 | magic | `b"ORDO"` |
//! | 2 | version | `3` |
//! | 2 | reserved | zero |
//! | 8 | cluster id | the dialer's cluster |
//! | 8 | from | the dialer's node id |
//! | 8 | to | the node id the dialer expects to reach |
//! | 8 | incarnation | the dialer's incarnation, not 0 |
//! | 2 | advertised length | bytes of the entries that follow, at most 2,328 |
//! | … | entries | each: |
//! | 1 | name length | 1 to 32 |
//! | n | name | `a-z`, `0-9`, `-`, `_`, `.`; names ascending, none twice |
//! | 2 | value length | at most 256 |
//! | n | value | UTF-8 without control characters |
//!
//! The fixed fields up to the incarnation keep the layout of version 2, so a tool that tells
//! senders apart by the id at byte 16 reads every version alike.
//!
//! The acceptor reads magic and version first, so garbage and other versions are refused
//! before the rest is read, and refuses an advertised length over its bound before reading
//! the entries. It checks the cluster id, that `to` is itself, that `from` is
//! a peer it knows and that the incarnation is the one on record (or records it), then
//! answers with a **reply**:
//!
//! | bytes | field | |
//! |---|---|---|
//! | 4 | magic | `b"ORDO"` |
//! | 2 | version | the acceptor's version |
//! | 1 | code | `0` accepted, otherwise a [`RejectCode`] |
//! | 1 | reserved | zero |
//! | 8 | cluster id | the acceptor's cluster |
//! | 8 | node id | the acceptor's node id |
//! | 2 | reason length | at most 512 |
//! | n | reason | UTF-8 text for the log |
//!
//! The reply's layout is the same in every version, so a peer speaking another version can
//! read why it was refused. The dialer checks the reply's version, cluster id and node id in
//! turn. A rejected connection is closed by both sides. After a successful handshake the
//! acceptor sends nothing more except, when it closes the connection for a bad frame, one
//! more reply with a non-zero code naming the error.
//!
//! After the handshake the dialer sends **frames**:
//!
//! | bytes | field | |
//! |---|---|---|
//! | 4 | length | bytes of the body that follows, at most `frame_bytes_max` |
//! | 4 | checksum | CRC32C over the length field and the body |
//! | 4 | count | messages in the body |
//! | … | messages | `count` times: |
//! | 1 | kind | `0`: a Raft message for a group |
//! | 8 | group id | |
//! | 4 | payload length | |
//! | n | payload | opaque bytes |
//!
//! The receiver refuses a frame whose length exceeds its limit from the header alone, then
//! verifies the checksum and parses every message before delivering any: a frame is
//! delivered whole or not at all. The `kind` byte leaves room for message types or
//! priorities: version 3 defines only kind `0` and refuses others, so a sender uses a new
//! kind only with peers it knows understand it.
//!
//! # Shutdown
//!
//! [`Transport::shutdown`] stops every task — the listener, each connection reader and each
//! peer writer — closes their sockets and waits until all of them have finished. Dropping
//! the [`Transport`] signals the same stop without waiting.

mod advertised;
mod backoff;
mod error;
mod inbound;
mod incarnations;
mod metrics;
mod outbound;
mod stream;
mod throttle;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use advertised::{
    Advertised, AdvertisedError, ADVERTISED_ENTRIES_MAX, ADVERTISED_NAME_BYTES_MAX,
    ADVERTISED_VALUE_BYTES_MAX,
};
pub use error::{ConfigError, PeerError, ProtocolError, SendError, StartError};
pub use incarnations::{PeerIncarnations, PEER_INCARNATIONS_MAX};
pub use metrics::TransportMetrics;
pub use throttle::LogThrottle;
pub use wire::{RejectCode, PROTOCOL_VERSION};

use metrics::Counters;

use crate::tls::{self, Reloading, TlsFiles};

/// A node's id within its cluster.
pub type NodeId = u64;

/// One message between peers: an opaque payload for one Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMessage {
    /// The Raft group the payload belongs to.
    pub group_id: u64,
    /// The encoded Raft message; the transport never looks inside.
    pub payload: Bytes,
}

/// Something the runtime should know about a peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// The outbound connection to this peer completed its handshake; queued messages flow.
    Connected(NodeId),
    /// The outbound connection to this peer failed or was lost. Sent once per loss, not once
    /// per failed redial; the next event for the peer is `Connected`.
    Unreachable(NodeId),
    /// An outbound connection attempt or connection ended on a protocol error: the peer
    /// refused this node (for example a cluster id mismatch) or answered wrongly.
    OutboundError {
        /// The peer being dialled.
        peer: NodeId,
        /// What went wrong.
        error: ProtocolError,
    },
    /// An inbound connection was refused or closed on a protocol error.
    InboundError {
        /// The remote address of the connection.
        addr: SocketAddr,
        /// The node the connection claimed to be, once its handshake was read.
        peer: Option<NodeId>,
        /// What went wrong.
        error: ProtocolError,
    },
}

/// Settings of a [`Transport`]. Every queue, buffer, wait and retry has a limit here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// The cluster this node belongs to; peers of other clusters are refused.
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: NodeId,
    /// This node's incarnation, presented in every handshake; not 0. A node takes it from
    /// its data directory's identity file, so it changes when the directory is lost.
    pub incarnation: u64,
    /// What this node presents about itself in every handshake (where its faces listen);
    /// each peer it dials records it.
    pub advertised: Advertised,
    /// Largest frame body accepted or sent; bounds the largest message payload.
    pub frame_bytes_max: u32,
    /// A write stops taking queued messages once it holds this many encoded bytes.
    pub batch_bytes_max: usize,
    /// Messages an outbound queue holds before `send` drops.
    pub queue_messages_max: usize,
    /// Encoded bytes an outbound queue holds before `send` drops.
    pub queue_bytes_max: usize,
    /// Capacity of the channel that delivers inbound messages to the runtime.
    pub inbound_messages_max: usize,
    /// Capacity of the peer event channel; events beyond it are dropped and counted.
    pub events_max: usize,
    /// Inbound connections open at once; more are closed as soon as they are accepted.
    pub inbound_connections_max: usize,
    /// Limit on establishing a TCP connection to a peer.
    pub connect_timeout_ms: u64,
    /// Limit on completing a handshake, in both directions.
    pub handshake_timeout_ms: u64,
    /// Limit on one write to a peer; a peer that stops reading this long is redialled.
    pub write_timeout_ms: u64,
    /// First reconnect delay after a failure.
    pub backoff_ms_min: u64,
    /// Largest reconnect delay.
    pub backoff_ms_max: u64,
    /// A writer with nothing to send for this long sends a keepalive frame.
    pub keepalive_ms: u64,
    /// An inbound connection that delivers nothing, not even a keepalive, for this long is
    /// taken for dead: it is closed and the peer reported unreachable. A partition that
    /// drops packets closes no socket, and idle (quiesced) groups rely on this report to
    /// wake and elect a leader on the side that can.
    pub silence_ms: u64,
    /// Peer TLS: this node's certificate and key, and the CAs every other node's
    /// certificate must chain to. With it, connections in both directions are mutual TLS
    /// (see [`crate::tls`]); without it, plain TCP. Every node of a cluster must agree.
    pub tls: Option<TlsFiles>,
}

impl TransportConfig {
    /// Defaults suited to a local three-node cluster, with incarnation 1 (a node sets its
    /// own).
    pub fn new(cluster_id: u64, node_id: NodeId) -> TransportConfig {
        TransportConfig {
            cluster_id,
            node_id,
            incarnation: 1,
            advertised: Advertised::default(),
            frame_bytes_max: 4 << 20,
            batch_bytes_max: 4 << 20,
            queue_messages_max: 4096,
            queue_bytes_max: 64 << 20,
            inbound_messages_max: 4096,
            events_max: 1024,
            inbound_connections_max: 256,
            connect_timeout_ms: 1_000,
            handshake_timeout_ms: 1_000,
            write_timeout_ms: 10_000,
            backoff_ms_min: 50,
            backoff_ms_max: 2_000,
            keepalive_ms: 100,
            silence_ms: 1_000,
            tls: None,
        }
    }

    /// Checks that the limits can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, problem| Err(ConfigError { field, problem });
        if self.incarnation == 0 {
            return fail("incarnation", "must not be 0");
        }
        if wire::payload_bytes_max(self.frame_bytes_max) == 0 {
            return fail("frame_bytes_max", "leaves no room for a payload");
        }
        if self.batch_bytes_max == 0 {
            return fail("batch_bytes_max", "must be positive");
        }
        if self.queue_messages_max == 0 || self.queue_bytes_max == 0 {
            return fail("queue_messages_max/queue_bytes_max", "must be positive");
        }
        if self.inbound_messages_max == 0 {
            return fail("inbound_messages_max", "must be positive");
        }
        if self.events_max == 0 {
            return fail("events_max", "must be positive");
        }
        if self.inbound_connections_max == 0 {
            return fail("inbound_connections_max", "must be positive");
        }
        if self.connect_timeout_ms == 0
            || self.handshake_timeout_ms == 0
            || self.write_timeout_ms == 0
        {
            return fail("timeouts", "must be positive");
        }
        // Two keepalives at least fit in the silence, so one lost to scheduling noise does
        // not make a live peer look dead.
        if self.keepalive_ms == 0 || self.silence_ms < 2 * self.keepalive_ms {
            return fail(
                "keepalive_ms/silence_ms",
                "keepalive_ms must be positive and silence_ms at least twice it",
            );
        }
        if self.backoff_ms_min == 0 || self.backoff_ms_min > self.backoff_ms_max {
            return fail(
                "backoff_ms_min",
                "must be positive and at most backoff_ms_max",
            );
        }
        Ok(())
    }
}

/// The receiving ends a [`Transport`] hands to the runtime.
#[derive(Debug)]
pub struct TransportChannels {
    /// Messages from peers, with the sending node's id, in the order each peer sent them.
    pub messages: mpsc::Receiver<(NodeId, PeerMessage)>,
    /// Peer connection events.
    pub events: mpsc::Receiver<PeerEvent>,
}

/// A running peer transport: one listener, one writer task per peer, one reader task per
/// accepted connection.
#[derive(Debug)]
pub struct Transport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    listener: Option<JoinHandle<()>>,
}

impl Transport {
    /// Binds the peer listener on `addr` and starts the transport.
    pub async fn bind(
        config: TransportConfig,
        addr: SocketAddr,
    ) -> Result<(Transport, TransportChannels), StartError> {
        config.validate()?;
        let listener = TcpListener::bind(addr).await?;
        Transport::start(config, listener)
    }

    /// Starts the transport on an already bound listener, keeping peer incarnations in
    /// memory only. Must be called within a Tokio runtime.
    pub fn start(
        config: TransportConfig,
        listener: TcpListener,
    ) -> Result<(Transport, TransportChannels), StartError> {
        Transport::start_with(config, listener, PeerIncarnations::in_memory())
    }

    /// Starts the transport on an already bound listener with a record of peer
    /// incarnations (durable, for a node with a data directory). Must be called within a
    /// Tokio runtime.
    pub fn start_with(
        config: TransportConfig,
        listener: TcpListener,
        incarnations: PeerIncarnations,
    ) -> Result<(Transport, TransportChannels), StartError> {
        config.validate()?;
        let tls = match &config.tls {
            Some(files) => Some(PeerTls {
                acceptor: Reloading::new(files.clone(), tls::peer_server_config)?,
                connector: Reloading::new(files.clone(), tls::peer_client_config)?,
            }),
            None => None,
        };
        let local_addr = listener.local_addr()?;
        let (message_tx, message_rx) = mpsc::channel(config.inbound_messages_max);
        let (event_tx, event_rx) = mpsc::channel(config.events_max);
        let (stop_tx, stop_rx) = watch::channel(false);
        tracing::info!(
            cluster_id = config.cluster_id,
            node_id = config.node_id,
            %local_addr,
            tls = tls.is_some(),
            "peer transport listening"
        );
        let shared = Arc::new(Shared {
            config,
            tls,
            counters: Counters::default(),
            refusals_logged: throttle::LogThrottle::new(
                throttle::REFUSALS_LOGGED_PER_WINDOW,
                throttle::REFUSAL_LOG_WINDOW,
            ),
            incarnations: Arc::new(incarnations),
            advertised: PeerAdvertised::default(),
            delivery: message_tx,
            events: event_tx,
            state: Mutex::new(State::default()),
        });
        let listener = tokio::spawn(inbound::accept_loop(
            shared.clone(),
            listener,
            Stop(stop_rx),
        ));
        let transport = Transport {
            shared,
            local_addr,
            stop: stop_tx,
            listener: Some(listener),
        };
        let channels = TransportChannels {
            messages: message_rx,
            events: event_rx,
        };
        Ok((transport, channels))
    }

    /// The address the peer listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The configuration the transport runs with.
    pub fn config(&self) -> &TransportConfig {
        &self.shared.config
    }

    /// Queues `message` for peer `to` without waiting.
    ///
    /// `Ok` means queued, not delivered. A full queue drops the message, counts it and
    /// returns [`SendError::QueueFull`], which Raft may ignore.
    pub fn send(&self, to: NodeId, message: PeerMessage) -> Result<(), SendError> {
        let max = wire::payload_bytes_max(self.shared.config.frame_bytes_max);
        if message.payload.len() > max {
            return Err(SendError::MessageTooLarge {
                bytes: message.payload.len(),
                max,
            });
        }
        let message_bytes = wire::message_encoded_bytes(&message);
        let state = self.shared.state();
        if state.closed {
            return Err(SendError::ShutDown);
        }
        let peer = state.peers.get(&to).ok_or(SendError::UnknownPeer(to))?;
        let queued_bytes = peer.queued_bytes.fetch_add(message_bytes, Ordering::AcqRel);
        if queued_bytes + message_bytes > self.shared.config.queue_bytes_max {
            peer.queued_bytes.fetch_sub(message_bytes, Ordering::AcqRel);
            metrics::add(&self.shared.counters.messages_dropped, 1);
            return Err(SendError::QueueFull(to));
        }
        match peer.queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                peer.queued_bytes.fetch_sub(message_bytes, Ordering::AcqRel);
                metrics::add(&self.shared.counters.messages_dropped, 1);
                Err(SendError::QueueFull(to))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The writer closes its queue only once stopped, which normally removes the
                // peer under this same lock first; a writer that died otherwise is no peer.
                peer.queued_bytes.fetch_sub(message_bytes, Ordering::AcqRel);
                Err(SendError::UnknownPeer(to))
            }
        }
    }

    /// Adds peer `id` at `addr`: starts dialling it and accepts its connections.
    /// Must be called within a Tokio runtime: the peer's writer is a task.
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) -> Result<(), PeerError> {
        let config = &self.shared.config;
        if id == config.node_id {
            return Err(PeerError::SelfPeer(id));
        }
        let mut state = self.shared.state();
        if state.closed {
            return Err(PeerError::ShutDown);
        }
        if state.peers.contains_key(&id) {
            return Err(PeerError::AlreadyPeer(id));
        }
        let (queue_tx, queue_rx) = mpsc::channel(config.queue_messages_max);
        let (stop_tx, stop_rx) = watch::channel(false);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(
            outbound::Outbound {
                shared: self.shared.clone(),
                peer_id: id,
                addr,
                queue: queue_rx,
                queued_bytes: queued_bytes.clone(),
                stop: Stop(stop_rx),
            }
            .run(),
        );
        state.peers.insert(
            id,
            PeerHandle {
                addr,
                queue: queue_tx,
                queued_bytes,
                stop: stop_tx,
                task,
            },
        );
        tracing::info!(
            cluster_id = config.cluster_id,
            node_id = config.node_id,
            peer_id = id,
            %addr,
            "peer added"
        );
        Ok(())
    }

    /// Removes peer `id`: stops its writer (messages still queued are discarded and counted
    /// as unsent), closes its inbound connection, and from now on refuses its handshakes.
    /// Returns once the writer has stopped.
    pub async fn remove_peer(&self, id: NodeId) -> Result<(), PeerError> {
        let handle = {
            let mut state = self.shared.state();
            if state.closed {
                return Err(PeerError::ShutDown);
            }
            let handle = state.peers.remove(&id).ok_or(PeerError::UnknownPeer(id))?;
            self.shared.advertised.forget(id);
            if let Some(connection) = state.inbound.remove(&id) {
                let _ = connection.stop.send(true);
            }
            handle
        };
        let _ = handle.stop.send(true);
        join(handle.task).await;
        tracing::info!(
            cluster_id = self.shared.config.cluster_id,
            node_id = self.shared.config.node_id,
            peer_id = id,
            "peer removed"
        );
        Ok(())
    }

    /// The current peers and their addresses, ordered by node id.
    pub fn peers(&self) -> Vec<(NodeId, SocketAddr)> {
        let state = self.shared.state();
        let mut peers: Vec<_> = state.peers.iter().map(|(id, p)| (*id, p.addr)).collect();
        peers.sort_unstable();
        peers
    }

    /// What `peer` presented about itself in the last handshake of it this node accepted:
    /// `None` before the first, and after the peer was removed.
    pub fn advertised(&self, peer: NodeId) -> Option<Advertised> {
        self.shared.advertised.get(peer)
    }

    /// A handle on what every peer advertised, for a caller that outlives its borrow of the
    /// transport (it holds nothing else of it).
    pub fn peer_advertised(&self) -> PeerAdvertised {
        self.shared.advertised.clone()
    }

    /// The incarnation on record for `peer`, once a connection of it was accepted.
    pub fn peer_incarnation(&self, peer: NodeId) -> Option<u64> {
        self.shared.incarnations.get(peer)
    }

    /// A snapshot of the transport's counters.
    pub fn metrics(&self) -> TransportMetrics {
        self.shared.counters.snapshot()
    }

    /// A handle that reads the transport's counters, for a metrics endpoint.
    pub fn counters(&self) -> TransportCounters {
        TransportCounters {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops every task, closes the listener and every connection, and returns once all
    /// tasks have finished.
    ///
    /// Afterwards both [`TransportChannels`] receivers report closed once drained.
    pub async fn shutdown(mut self) {
        for task in self.signal_stop() {
            join(task).await;
        }
        if let Some(listener) = self.listener.take() {
            join(listener).await;
        }
        tracing::info!(
            cluster_id = self.shared.config.cluster_id,
            node_id = self.shared.config.node_id,
            "peer transport shut down"
        );
    }

    /// Tells every task to stop and hands back the peer writers' join handles.
    fn signal_stop(&self) -> Vec<JoinHandle<()>> {
        let _ = self.stop.send(true);
        let peers: Vec<PeerHandle> = {
            let mut state = self.shared.state();
            state.closed = true;
            for (_, connection) in state.inbound.drain() {
                let _ = connection.stop.send(true);
            }
            state.peers.drain().map(|(_, peer)| peer).collect()
        };
        peers
            .into_iter()
            .map(|peer| {
                let _ = peer.stop.send(true);
                peer.task
            })
            .collect()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // After `shutdown` this finds nothing left to stop.
        self.signal_stop();
    }
}

/// Waits for a task; a task that panicked broke an invariant, so the panic goes on.
async fn join(task: JoinHandle<()>) {
    if let Err(error) = task.await {
        if error.is_panic() {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// What each peer presented about itself in its last accepted handshake.
#[derive(Debug, Clone, Default)]
pub struct PeerAdvertised {
    by_peer: Arc<Mutex<HashMap<NodeId, Advertised>>>,
}

impl PeerAdvertised {
    /// What `peer` advertised, if a handshake of it was accepted and it was not removed
    /// since.
    pub fn get(&self, peer: NodeId) -> Option<Advertised> {
        self.lock().get(&peer).cloned()
    }

    /// The peers with something recorded, in order of id.
    pub fn peers(&self) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self.lock().keys().copied().collect();
        peers.sort_unstable();
        peers
    }

    fn record(&self, peer: NodeId, advertised: Advertised) {
        self.lock().insert(peer, advertised);
    }

    fn forget(&self, peer: NodeId) {
        self.lock().remove(&peer);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<NodeId, Advertised>> {
        // Every critical section is one map operation, so a poisoned lock is a panic
        // elsewhere and the map is still whole.
        self.by_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads a transport's counters ([`Transport::counters`]); cheap to clone, and readable
/// after the transport has stopped.
#[derive(Debug, Clone)]
pub struct TransportCounters {
    shared: Arc<Shared>,
}

impl TransportCounters {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> TransportMetrics {
        self.shared.counters.snapshot()
    }
}

/// State shared by the handle and every task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TransportConfig,
    /// The TLS configurations of both directions, with peer TLS on.
    pub(crate) tls: Option<PeerTls>,
    pub(crate) counters: Counters,
    pub(crate) incarnations: Arc<PeerIncarnations>,
    pub(crate) advertised: PeerAdvertised,
    pub(crate) delivery: mpsc::Sender<(NodeId, PeerMessage)>,
    pub(crate) events: mpsc::Sender<PeerEvent>,
    /// Bounds the WARN lines of refused inbound connections.
    pub(crate) refusals_logged: throttle::LogThrottle,
    state: Mutex<State>,
}

/// Peer TLS, read from `TransportConfig::tls` and reloaded when the files change.
pub(crate) struct PeerTls {
    pub(crate) acceptor: Reloading<rustls::ServerConfig>,
    pub(crate) connector: Reloading<rustls::ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("files", self.acceptor.files())
            .finish()
    }
}

/// Membership and connection registry. Held only for short, non-blocking sections.
#[derive(Debug, Default)]
struct State {
    peers: HashMap<NodeId, PeerHandle>,
    inbound: HashMap<NodeId, InboundConnection>,
    next_connection_id: u64,
    closed: bool,
}

#[derive(Debug)]
struct PeerHandle {
    addr: SocketAddr,
    queue: mpsc::Sender<PeerMessage>,
    queued_bytes: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct InboundConnection {
    id: u64,
    stop: watch::Sender<bool>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic inside a critical section: a bug, so stop loudly.
        self.state.lock().expect("transport state lock poisoned")
    }

    /// Passes an event to the runtime without waiting; a full channel drops and counts it.
    pub(crate) fn emit(&self, event: PeerEvent) {
        if self.events.try_send(event).is_err() {
            metrics::add(&self.counters.events_dropped, 1);
        }
    }

    /// Checks an inbound handshake's cluster, receiver and sender, before its incarnation
    /// is looked at (so nothing is recorded for a node that is no peer).
    pub(crate) fn check_inbound(
        &self,
        cluster_id: u64,
        from: NodeId,
        to: NodeId,
    ) -> Result<(), ProtocolError> {
        let config = &self.config;
        if cluster_id != config.cluster_id {
            return Err(ProtocolError::ClusterMismatch {
                ours: config.cluster_id,
                theirs: cluster_id,
            });
        }
        if to != config.node_id {
            return Err(ProtocolError::WrongReceiver {
                expected: to,
                actual: config.node_id,
            });
        }
        if !self.state().peers.contains_key(&from) {
            return Err(ProtocolError::UnknownNode { node_id: from });
        }
        Ok(())
    }

    /// Decides whether an inbound handshake from `from` is accepted and, if so, registers
    /// the connection, replacing an older one from the same peer, and records what the peer
    /// advertised. The incarnation must have been admitted already.
    ///
    /// Done under the state lock so a concurrent `remove_peer` either sees the connection and
    /// closes it, or happens first and the handshake is refused.
    pub(crate) fn admit_inbound(
        &self,
        cluster_id: u64,
        from: NodeId,
        to: NodeId,
        advertised: Advertised,
    ) -> Result<(u64, Stop), ProtocolError> {
        self.check_inbound(cluster_id, from, to)?;
        let mut state = self.state();
        if !state.peers.contains_key(&from) {
            return Err(ProtocolError::UnknownNode { node_id: from });
        }
        self.advertised.record(from, advertised);
        state.next_connection_id += 1;
        let id = state.next_connection_id;
        let (stop_tx, stop_rx) = watch::channel(false);
        if let Some(older) = state
            .inbound
            .insert(from, InboundConnection { id, stop: stop_tx })
        {
            let _ = older.stop.send(true);
        }
        Ok((id, Stop(stop_rx)))
    }

    /// Forgets an inbound connection unless a newer one from the same peer replaced it.
    pub(crate) fn release_inbound(&self, from: NodeId, id: u64) {
        let mut state = self.state();
        if state.inbound.get(&from).is_some_and(|c| c.id == id) {
            state.inbound.remove(&from);
        }
    }
}

/// A stop signal a task can wait on; fires when set or when its sender is gone.
#[derive(Debug, Clone)]
pub(crate) struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once the task should stop. Cancel-safe, so it can sit in a `select!`.
    pub(crate) async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}
