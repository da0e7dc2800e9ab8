//! Counters the transport keeps, and the snapshot the runtime reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// A point-in-time copy of the transport's counters, all monotonic since start.
///
/// Counters are read one by one without a common lock, so a snapshot taken while traffic
/// flows may be off by the messages in flight between two reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportMetrics {
    /// Writes to peers' connections: each carries every message queued for that peer
    /// since the previous write (up to `batch_bytes_max`), whatever their groups, in one or
    /// more frames.
    pub batches_sent: u64,
    /// Frames written to peers.
    pub frames_sent: u64,
    /// Messages written to peers.
    pub messages_sent: u64,
    /// Bytes written to peers in frames (headers included, handshakes excluded).
    pub bytes_sent: u64,
    /// Frames received from peers and accepted.
    pub frames_received: u64,
    /// Messages received from peers and handed to the runtime's channel.
    pub messages_received: u64,
    /// Bytes of accepted frames received from peers (headers included).
    pub bytes_received: u64,
    /// Messages refused by `send` because the peer's outbound queue was full.
    pub messages_dropped: u64,
    /// Messages queued or in flight when their connection broke or their peer was removed.
    pub messages_unsent: u64,
    /// Outbound connections established (handshake accepted), first ones included.
    pub connects: u64,
    /// Outbound connections established after an earlier connection to the same peer.
    pub reconnects: u64,
    /// Outbound connection attempts that failed before or during the handshake.
    pub dial_failures: u64,
    /// Handshakes refused, by this node (inbound) or by the peer (outbound).
    pub handshake_failures: u64,
    /// Established inbound connections closed because a frame broke the protocol.
    pub frame_errors: u64,
    /// Inbound connections closed at once because `inbound_connections_max` was reached.
    pub inbound_connections_refused: u64,
    /// Peer events dropped because the runtime's event channel was full.
    pub events_dropped: u64,
    /// Keepalive frames written to idle connections.
    pub keepalives_sent: u64,
    /// Inbound connections closed because the peer sent nothing for `silence_ms`.
    pub silent_connections: u64,
    /// WARN lines about refused inbound connections left out, a few being logged per
    /// window however many connections a flood opens.
    pub refusal_lines_suppressed: u64,
}

/// The live counters behind [`TransportMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) batches_sent: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
    pub(crate) messages_unsent: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) dial_failures: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) frame_errors: AtomicU64,
    pub(crate) inbound_connections_refused: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) keepalives_sent: AtomicU64,
    pub(crate) silent_connections: AtomicU64,
    pub(crate) refusal_lines_suppressed: AtomicU64,
}

/// Adds `n` to a counter. Counters order nothing, so relaxed ordering is enough.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransportMetrics {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportMetrics {
            batches_sent: read(&self.batches_sent),
            frames_sent: read(&self.frames_sent),
            messages_sent: read(&self.messages_sent),
            bytes_sent: read(&self.bytes_sent),
            frames_received: read(&self.frames_received),
            messages_received: read(&self.messages_received),
            bytes_received: read(&self.bytes_received),
            messages_dropped: read(&self.messages_dropped),
            messages_unsent: read(&self.messages_unsent),
            connects: read(&self.connects),
            reconnects: read(&self.reconnects),
            dial_failures: read(&self.dial_failures),
            handshake_failures: read(&self.handshake_failures),
            frame_errors: read(&self.frame_errors),
            inbound_connections_refused: read(&self.inbound_connections_refused),
            events_dropped: read(&self.events_dropped),
            keepalives_sent: read(&self.keepalives_sent),
            silent_connections: read(&self.silent_connections),
            refusal_lines_suppressed: read(&self.refusal_lines_suppressed),
        }
    }
}
