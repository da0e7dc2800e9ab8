//! The transport's error types.
//!
//! [`ProtocolError`] names every way a peer can violate the wire protocol; it is `Clone` so it
//! can travel in [`PeerEvent`](super::PeerEvent)s. The other errors are what the public methods
//! of [`Transport`](super::Transport) return.

use std::io;

use super::wire::RejectCode;
use super::NodeId;

/// A violation of the peer wire protocol, detected by this node or reported by the peer.
///
/// Every variant closes the connection it was found on; nothing from a frame that fails
/// validation is delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first bytes are not the Ordo peer magic: the other end is not an Ordo peer, or
    /// it opened with TLS to a port without it.
    #[error("bad magic bytes {found:02x?}: {}", bad_magic_meaning(found))]
    BadMagic {
        /// The four bytes received where the magic was expected.
        found: [u8; 4],
    },
    /// The peer speaks a protocol version this node does not.
    #[error(
        "unsupported protocol version {theirs}: this node speaks version {ours}, and every \
         node of a cluster must speak the same one (upgrade them together)"
    )]
    UnsupportedVersion {
        /// The version this node speaks.
        ours: u16,
        /// The version the peer announced.
        theirs: u16,
    },
    /// The peer belongs to another cluster.
    #[error("cluster id mismatch: this node is in cluster {ours}, the peer in cluster {theirs}")]
    ClusterMismatch {
        /// This node's cluster id.
        ours: u64,
        /// The cluster id the peer announced.
        theirs: u64,
    },
    /// The peer claims to be a node that is not a member known to this node.
    #[error("node {node_id} is not a peer known to this node")]
    UnknownNode {
        /// The node id the peer claimed.
        node_id: NodeId,
    },
    /// The handshake names another node than the one that answered.
    #[error("handshake addressed to node {expected}, but the other end is node {actual}")]
    WrongReceiver {
        /// The node the dialer meant to reach.
        expected: NodeId,
        /// The node that actually answered.
        actual: NodeId,
    },
    /// A handshake field is malformed (for example a reserved field that is not zero).
    #[error("malformed handshake: {0}")]
    MalformedHandshake(&'static str),
    /// The handshake did not complete within `handshake_timeout_ms`.
    #[error("handshake not completed within {timeout_ms} ms")]
    HandshakeTimeout {
        /// The configured limit.
        timeout_ms: u64,
    },
    /// A frame header announces more bytes than `frame_bytes_max`.
    #[error("frame of {bytes} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced frame body length.
        bytes: u64,
        /// The configured limit.
        max: u64,
    },
    /// A frame's CRC32C does not match its contents.
    #[error("frame checksum mismatch: header says {expected:#010x}, contents give {actual:#010x}")]
    ChecksumMismatch {
        /// The checksum in the frame header.
        expected: u32,
        /// The checksum computed over the received bytes.
        actual: u32,
    },
    /// A frame passed its checksum but its contents do not parse.
    #[error("malformed frame: {0}")]
    MalformedFrame(&'static str),
    /// A message carries a kind this version does not define.
    #[error("unknown message kind {0}")]
    UnknownMessageKind(u8),
    /// The connection ended in the middle of a handshake, reply or frame.
    #[error("connection closed in the middle of a {what}")]
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// The peer is known with another incarnation: it lost the state it had promised.
    #[error(
        "node {node_id} presented incarnation {presented:#018x}, but this node accepted \
         incarnation {recorded:#018x} of it before: node {node_id} lost its state (its data \
         directory was wiped, replaced or restored) and is refused for good"
    )]
    LostState {
        /// The peer's node id.
        node_id: NodeId,
        /// The incarnation on record.
        recorded: u64,
        /// The incarnation it presented.
        presented: u64,
    },
    /// The peer's incarnation could not be recorded durably, so its connection was not
    /// accepted.
    #[error("cannot record the peer's incarnation: {0}")]
    RecordFailed(String),
    /// A dialer spoke plain text to a peer port that requires TLS.
    #[error("this peer port requires TLS: the dialling node runs without peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file), or every node of a cluster must run with it")]
    TlsRequired,
    /// The TLS handshake failed (an untrusted or expired certificate, a certificate of
    /// another cluster's CA, a peer that speaks plain text); nothing else was exchanged.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The peer refused this node's connection and said why.
    #[error("rejected by the peer ({code:?}): {reason}")]
    RejectedByPeer {
        /// The machine-readable reason.
        code: RejectCode,
        /// The peer's description of the reason.
        reason: String,
    },
}

/// What the bytes found instead of the magic suggest.
fn bad_magic_meaning(found: &[u8; 4]) -> &'static str {
    // A TLS record of type handshake (22), protocol version 3.x: a ClientHello.
    if found[0] == 0x16 && found[1] == 0x03 {
        "a TLS handshake: the other end runs with peer TLS and this node without (every \
         node of a cluster must agree)"
    } else {
        "the other end is not an Ordo peer"
    }
}

impl ProtocolError {
    /// The reason sent to the peer in a rejection notice for this error: what it did wrong,
    /// never what this node checked it against. Told the incarnation on record, a caller
    /// would have all it needs to pass the handshake as that node; this node's log keeps
    /// the whole error.
    pub fn reason_for_peer(&self) -> String {
        match self {
            ProtocolError::LostState { node_id, .. } => format!(
                "node {node_id} presented an incarnation other than the one this node accepted \
                 of it before: node {node_id} lost its state (its data directory was wiped, \
                 replaced or restored) and is refused for good"
            ),
            error => error.to_string(),
        }
    }

    /// The code sent to the peer in a rejection notice for this error.
    pub fn reject_code(&self) -> RejectCode {
        match self {
            ProtocolError::BadMagic { .. } => RejectCode::BadMagic,
            ProtocolError::UnsupportedVersion { .. } => RejectCode::UnsupportedVersion,
            ProtocolError::ClusterMismatch { .. } => RejectCode::ClusterMismatch,
            ProtocolError::UnknownNode { .. } => RejectCode::UnknownNode,
            ProtocolError::WrongReceiver { .. } => RejectCode::WrongReceiver,
            ProtocolError::MalformedHandshake(_) => RejectCode::MalformedHandshake,
            ProtocolError::HandshakeTimeout { .. } => RejectCode::HandshakeTimeout,
            ProtocolError::FrameTooLarge { .. } => RejectCode::FrameTooLarge,
            ProtocolError::ChecksumMismatch { .. } => RejectCode::ChecksumMismatch,
            ProtocolError::MalformedFrame(_) => RejectCode::MalformedFrame,
            ProtocolError::UnknownMessageKind(_) => RejectCode::UnknownMessageKind,
            ProtocolError::Truncated { .. } => RejectCode::Truncated,
            ProtocolError::LostState { .. } => RejectCode::LostState,
            ProtocolError::RecordFailed(_) => RejectCode::RecordFailed,
            ProtocolError::TlsRequired => RejectCode::TlsRequired,
            ProtocolError::Tls(_) => RejectCode::Tls,
            ProtocolError::RejectedByPeer { code, .. } => *code,
        }
    }
}

/// Why a connection attempt or an established connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("connect not completed within {timeout_ms} ms")]
    ConnectTimeout { timeout_ms: u64 },
    #[error("write stalled for more than {timeout_ms} ms")]
    WriteTimeout { timeout_ms: u64 },
    #[error("the peer closed the connection")]
    Closed,
    #[error("nothing received for {silence_ms} ms")]
    Silent { silence_ms: u64 },
}

/// Why [`Transport::send`](super::Transport::send) did not queue a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No peer with this id has been added.
    #[error("node {0} is not a peer of this transport")]
    UnknownPeer(NodeId),
    /// The message cannot fit in one frame, whatever the batching.
    #[error("message payload of {bytes} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// The payload length.
        bytes: usize,
        /// The largest payload a frame can carry under the configured `frame_bytes_max`.
        max: usize,
    },
    /// The peer's outbound queue is full: the message was dropped and counted.
    #[error("outbound queue to node {0} is full; message dropped")]
    QueueFull(NodeId),
    /// The transport has been shut down.
    #[error("the transport is shut down")]
    ShutDown,
}

/// Why a membership change on the transport was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The id is this node's own.
    #[error("node {0} is this node; it cannot be its own peer")]
    SelfPeer(NodeId),
    /// A peer with this id exists already; remove it first to change its address.
    #[error("node {0} is already a peer")]
    AlreadyPeer(NodeId),
    /// No peer with this id exists.
    #[error("node {0} is not a peer")]
    UnknownPeer(NodeId),
    /// The transport has been shut down.
    #[error("the transport is shut down")]
    ShutDown,
}

/// A configuration value that the transport cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport configuration: {field} {problem}")]
pub struct ConfigError {
    /// The offending field of [`TransportConfig`](super::TransportConfig).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// Why [`Transport::start`](super::Transport::start) or [`Transport::bind`](super::Transport::bind)
/// failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener could not be bound or inspected.
    #[error("peer listener: {0}")]
    Io(#[from] io::Error),
    /// The peer TLS files could not be used.
    #[error("peer TLS: {0}")]
    Tls(Box<crate::tls::TlsError>),
}

impl From<crate::tls::TlsError> for StartError {
    fn from(error: crate::tls::TlsError) -> StartError {
        StartError::Tls(Box::new(error))
    }
}
