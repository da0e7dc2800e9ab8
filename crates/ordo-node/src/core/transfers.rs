//! Snapshot transfers: a leader streams a snapshot to a lagging follower in chunks.
//!
//! The Raft core asks to send a whole snapshot in one message; the group core instead
//! streams its data in chunks of at most `snapshot_chunk_bytes`, one at a time: each chunk
//! waits for the follower's acknowledgement (for at most `chunk_timeout_ticks`) before the
//! next is sent, so a transfer never floods the peer queue. Every chunk repeats the
//! snapshot's metadata, total length and CRC32C; the follower reassembles the chunks in
//! order (refusing gaps, overlaps and anything beyond `snapshot_bytes_max`), verifies the
//! checksum, and only then gives the snapshot to its Raft core, which asks for it to be
//! installed in its next `Ready`. The leader reports the transfer's outcome to its Raft
//! core (`report_snapshot`). One transfer per follower at a time.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use ordo_raft::{NodeId, Snapshot, Term};

use crate::codec::{SnapshotAck, SnapshotChunk};

/// One transfer to a follower.
#[derive(Debug)]
struct Outgoing {
    transfer_id: u64,
    term: Term,
    snapshot: Snapshot,
    data_crc: u32,
    /// Where the chunk in flight ends.
    sent_end: u64,
    /// When the chunk in flight was sent.
    sent_at_ticks: u64,
}

/// What an acknowledgement means for its transfer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// Not for a transfer in progress: ignore it.
    Stale,
    /// Send this next chunk.
    Next(Box<SnapshotChunk>),
    /// The transfer ended: whole (`true`), or refused by the follower.
    Ended(bool),
}

/// The transfers this node streams to its followers, by follower.
#[derive(Debug, Default)]
pub(crate) struct OutgoingTransfers {
    by_follower: BTreeMap<NodeId, Outgoing>,
}

impl OutgoingTransfers {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_follower.is_empty()
    }

    pub(crate) fn is_sending_to(&self, to: NodeId) -> bool {
        self.by_follower.contains_key(&to)
    }

    /// Starts a transfer and returns its first chunk.
    pub(crate) fn start(
        &mut self,
        to: NodeId,
        transfer_id: u64,
        term: Term,
        snapshot: Snapshot,
        now_ticks: u64,
        shape: ChunkShape<'_>,
    ) -> SnapshotChunk {
        assert!(!self.is_sending_to(to), "one transfer per follower");
        let mut transfer = Outgoing {
            transfer_id,
            term,
            data_crc: crc32c::crc32c(&snapshot.data),
            snapshot,
            sent_end: 0,
            sent_at_ticks: now_ticks,
        };
        let chunk = transfer.chunk_from(0, now_ticks, shape);
        self.by_follower.insert(to, transfer);
        chunk
    }

    /// Handles a follower's acknowledgement.
    pub(crate) fn on_ack(
        &mut self,
        from: NodeId,
        ack: &SnapshotAck,
        now_ticks: u64,
        shape: ChunkShape<'_>,
    ) -> AckOutcome {
        let Some(transfer) = self.by_follower.get_mut(&from) else {
            return AckOutcome::Stale;
        };
        if transfer.transfer_id != ack.transfer_id {
            return AckOutcome::Stale;
        }
        let total = transfer.snapshot.data.len() as u64;
        if !ack.ok || ack.next_offset != transfer.sent_end {
            self.by_follower.remove(&from);
            return AckOutcome::Ended(false);
        }
        if transfer.sent_end == total {
            self.by_follower.remove(&from);
            return AckOutcome::Ended(true);
        }
        let offset = transfer.sent_end;
        AckOutcome::Next(Box::new(transfer.chunk_from(offset, now_ticks, shape)))
    }

    /// Ends a transfer (its chunk could not be sent); false if it was not in progress.
    pub(crate) fn end(&mut self, to: NodeId, transfer_id: u64) -> bool {
        let current = self
            .by_follower
            .get(&to)
            .is_some_and(|t| t.transfer_id == transfer_id);
        if current {
            self.by_follower.remove(&to);
        }
        current
    }

    /// Ends and names the transfers whose chunk waited longer than `timeout_ticks`.
    pub(crate) fn take_expired(&mut self, now_ticks: u64, timeout_ticks: u64) -> Vec<NodeId> {
        let expired: Vec<NodeId> = self
            .by_follower
            .iter()
            .filter(|(_, t)| now_ticks.saturating_sub(t.sent_at_ticks) > timeout_ticks)
            .map(|(&to, _)| to)
            .collect();
        for to in &expired {
            self.by_follower.remove(to);
        }
        expired
    }

    /// Ends every transfer (this node stopped leading).
    pub(crate) fn clear(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.by_follower).into_keys().collect()
    }
}

/// How chunks are cut, and what each carries besides data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkShape<'a> {
    /// Bytes of data per chunk.
    pub(crate) chunk_bytes: usize,
    /// The members' peer addresses, sent along for a follower that never saw the
    /// membership changes that carried them.
    pub(crate) members: &'a BTreeMap<NodeId, SocketAddr>,
}

impl Outgoing {
    fn chunk_from(&mut self, offset: u64, now_ticks: u64, shape: ChunkShape<'_>) -> SnapshotChunk {
        let data = &self.snapshot.data;
        let start = usize::try_from(offset).expect("offsets are within the data");
        let end = start
            .saturating_add(shape.chunk_bytes.max(1))
            .min(data.len());
        self.sent_end = end as u64;
        self.sent_at_ticks = now_ticks;
        SnapshotChunk {
            transfer_id: self.transfer_id,
            term: self.term,
            meta: self.snapshot.meta.clone(),
            total_bytes: data.len() as u64,
            data_crc: self.data_crc,
            offset,
            data: data.slice(start..end),
            members: shape.members.clone(),
        }
    }
}

/// Why a received chunk was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChunkError {
    #[error("snapshot of {total} bytes exceeds snapshot_bytes_max {max}")]
    TooLarge { total: u64, max: u64 },
    #[error("chunk at offset {got} but {expected} was expected")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("chunk does not match the transfer it continues")]
    Inconsistent,
    #[error("snapshot data checksum mismatch")]
    Checksum,
}

/// A snapshot received whole and verified.
pub(crate) struct Received {
    /// The sender's term.
    pub(crate) term: Term,
    pub(crate) snapshot: Snapshot,
    /// The member addresses the sender sent along.
    pub(crate) members: BTreeMap<NodeId, SocketAddr>,
}

/// A snapshot being reassembled from one sender.
#[derive(Debug)]
pub(crate) struct Incoming {
    first: SnapshotChunk,
    data: BytesMut,
}

impl Incoming {
    pub(crate) fn received(&self) -> u64 {
        self.data.len() as u64
    }

    /// Adds `chunk` to the transfer in progress (or starts one). Returns the transfer to
    /// keep, and once the data is complete and verified, the snapshot.
    pub(crate) fn accept(
        current: Option<Incoming>,
        chunk: SnapshotChunk,
        snapshot_bytes_max: u64,
    ) -> Result<(Incoming, Option<Received>), ChunkError> {
        if chunk.total_bytes > snapshot_bytes_max {
            return Err(ChunkError::TooLarge {
                total: chunk.total_bytes,
                max: snapshot_bytes_max,
            });
        }
        let mut incoming = match current {
            Some(c) if c.first.transfer_id == chunk.transfer_id => {
                let f = &c.first;
                if f.meta != chunk.meta
                    || f.total_bytes != chunk.total_bytes
                    || f.data_crc != chunk.data_crc
                    || f.term != chunk.term
                {
                    return Err(ChunkError::Inconsistent);
                }
                c
            }
            // A new transfer replaces an unfinished older one from the same sender.
            _ => {
                if chunk.offset != 0 {
                    return Err(ChunkError::OutOfOrder {
                        expected: 0,
                        got: chunk.offset,
                    });
                }
                Incoming {
                    first: SnapshotChunk {
                        data: Bytes::new(),
                        ..chunk.clone()
                    },
                    data: BytesMut::new(),
                }
            }
        };
        if chunk.offset != incoming.received() {
            return Err(ChunkError::OutOfOrder {
                expected: incoming.received(),
                got: chunk.offset,
            });
        }
        incoming.data.extend_from_slice(&chunk.data);
        if incoming.received() < incoming.first.total_bytes {
            return Ok((incoming, None));
        }
        let data = std::mem::take(&mut incoming.data).freeze();
        if crc32c::crc32c(&data) != incoming.first.data_crc {
            return Err(ChunkError::Checksum);
        }
        let snapshot = Snapshot {
            meta: incoming.first.meta.clone(),
            data,
        };
        let received = Received {
            term: chunk.term,
            snapshot,
            members: incoming.first.members.clone(),
        };
        Ok((incoming, Some(received)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_raft::{ConfState, SnapshotMeta};

    fn chunks(data: &[u8], size: usize, transfer_id: u64) -> Vec<SnapshotChunk> {
        let crc = crc32c::crc32c(data);
        let meta = SnapshotMeta {
            index: 10,
            term: 2,
            conf_state: ConfState::with_voters([1, 2, 3]),
        };
        data.chunks(size)
            .enumerate()
            .map(|(i, c)| SnapshotChunk {
                transfer_id,
                term: 3,
                meta: meta.clone(),
                total_bytes: data.len() as u64,
                data_crc: crc,
                offset: (i * size) as u64,
                data: Bytes::copy_from_slice(c),
                members: BTreeMap::from([(1, SocketAddr::from(([127, 0, 0, 1], 2380)))]),
            })
            .collect()
    }

    #[test]
    fn chunks_in_order_reassemble_the_snapshot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut current = None;
        let mut done = None;
        for c in chunks(&data, 1024, 7) {
            let (inc, complete) = Incoming::accept(current.take(), c, 1 << 20).unwrap();
            current = Some(inc);
            done = complete;
        }
        let done = done.expect("complete");
        assert_eq!(done.term, 3);
        assert_eq!(&done.snapshot.data[..], &data[..]);
        assert_eq!(done.snapshot.meta.index, 10);
        assert_eq!(done.members.len(), 1);
    }

    #[test]
    fn a_gap_a_bad_checksum_or_an_oversize_snapshot_is_refused() {
        let data = vec![5u8; 4096];
        let cs = chunks(&data, 1024, 1);
        let (inc, _) = Incoming::accept(None, cs[0].clone(), 1 << 20).unwrap();
        assert!(matches!(
            Incoming::accept(Some(inc), cs[2].clone(), 1 << 20),
            Err(ChunkError::OutOfOrder { .. })
        ));
        let mut bad = chunks(&data, 4096, 2).remove(0);
        bad.data_crc ^= 1;
        assert!(matches!(
            Incoming::accept(None, bad, 1 << 20),
            Err(ChunkError::Checksum)
        ));
        assert!(matches!(
            Incoming::accept(None, cs[0].clone(), 100),
            Err(ChunkError::TooLarge { .. })
        ));
        assert!(matches!(
            Incoming::accept(None, cs[1].clone(), 1 << 20),
            Err(ChunkError::OutOfOrder { .. })
        ));
    }
}
