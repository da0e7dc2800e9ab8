//! Streaming snapshots to lagging followers in chunks.
//!
//! The core asks to send a whole snapshot in one message; the runtime instead streams its
//! data in chunks of at most `snapshot_chunk_bytes`, one at a time: each chunk waits for
//! the follower's acknowledgement (with a timeout) before the next is sent, so a transfer
//! never floods the peer queue. Every chunk repeats the snapshot's metadata, total length
//! and CRC32C; the follower reassembles the chunks in order (refusing gaps, overlaps and
//! anything beyond `snapshot_bytes_max`), verifies the checksum, and only then gives the
//! snapshot to its core, which asks the runtime to install it — written to a snapshot
//! file and installed atomically by the WAL — in its next `Ready`. The leader reports the
//! transfer's outcome to its core (`report_snapshot`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ordo_raft::{NodeId, Snapshot, Term};
use tokio::sync::mpsc;

use crate::codec::{SnapshotAck, SnapshotChunk, WireMessage};
use crate::driver::Event;
use crate::group::GroupId;
use crate::transport::{PeerMessage, Transport};

/// The sending side of one transfer.
pub(crate) struct SnapshotSender {
    pub(crate) transport: Arc<Transport>,
    pub(crate) group_id: GroupId,
    pub(crate) to: NodeId,
    pub(crate) transfer_id: u64,
    pub(crate) term: Term,
    pub(crate) snapshot: Snapshot,
    pub(crate) chunk_bytes: usize,
    pub(crate) chunk_timeout: Duration,
    pub(crate) acks: mpsc::Receiver<SnapshotAck>,
    pub(crate) done: mpsc::Sender<Event>,
    pub(crate) members: BTreeMap<NodeId, SocketAddr>,
}

impl SnapshotSender {
    pub(crate) async fn run(mut self) {
        let ok = self.stream().await;
        let _ = self
            .done
            .send(Event::SnapshotSent {
                to: self.to,
                transfer_id: self.transfer_id,
                ok,
            })
            .await;
    }

    async fn stream(&mut self) -> bool {
        let data = self.snapshot.data.clone();
        let total = data.len() as u64;
        let data_crc = crc32c::crc32c(&data);
        let mut offset = 0usize;
        loop {
            let end = (offset + self.chunk_bytes).min(data.len());
            let chunk = SnapshotChunk {
                transfer_id: self.transfer_id,
                term: self.term,
                meta: self.snapshot.meta.clone(),
                total_bytes: total,
                data_crc,
                offset: offset as u64,
                data: data.slice(offset..end),
                members: self.members.clone(),
            };
            let message = PeerMessage {
                group_id: self.group_id.0,
                payload: WireMessage::SnapshotChunk(chunk).encode(),
            };
            if let Err(error) = self.transport.send(self.to, message) {
                tracing::warn!(group = %self.group_id, to = self.to, %error, "snapshot chunk not sent");
                return false;
            }
            let ack = match tokio::time::timeout(self.chunk_timeout, self.acks.recv()).await {
                Ok(Some(ack)) => ack,
                Ok(None) => return false,
                Err(_) => {
                    tracing::warn!(group = %self.group_id, to = self.to, offset, "snapshot chunk not acknowledged in time");
                    return false;
                }
            };
            if !ack.ok || ack.next_offset != end as u64 {
                return false;
            }
            if end == data.len() {
                return true;
            }
            offset = end;
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
