//! The harnesses of the fuzz targets in `fuzz/`: what a node decodes from its peers and
//! from the small files of its data directory, built from arbitrary bytes. Decoding may
//! fail, but must never panic, and what decodes must encode to the same value again.
//! Public only for the fuzz crate and the tests that run each harness on seeded inputs.
//!
//! - [`peer_stream`]: the bytes of one inbound peer connection (handshake, frames), and
//!   every payload delivered from it through [`wire_payload`].
//! - [`wire_payload`]: one transport payload ([`WireMessage`]), and the entry data inside
//!   it through [`entry_data`].
//! - [`entry_data`]: the data of a log entry as the applier and the storage read it (the
//!   request envelope, a membership change and its context, a snapshot's configuration).
//! - [`node_files`]: a data directory's identity, peer-incarnation, member and lost-state
//!   files.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use ordo_raft::{ConfChange, EntryKind, MessageBody};

use crate::codec::{decode_conf_state, encode_conf_state, ForwardKind, WireMessage};
use crate::identity::{self, IdentityFile, LOST_STATE_FILE, PEERS_FILE};
use crate::members::MemberFile;
use crate::transport::{PeerIncarnations, PeerMessage, PROTOCOL_VERSION};

/// Frame limit of the harness: small, so that limits are within the fuzzer's reach.
const FRAME_BYTES_MAX: u32 = 1 << 16;

pub use ordo_wal::fuzzing::Input;

/// Decodes `data` as one inbound connection's bytes. The first byte chooses how the
/// stream is built: bit 0 puts a valid handshake (with the input's advertised block) in
/// front, bit 1 wraps the rest of the input into frames with correct lengths and
/// checksums, so that the fuzzer reaches the frame bodies and payloads past the checksum.
pub fn peer_stream(data: &[u8]) {
    for message in PeerMessage::decode_arbitrary_stream(&build_stream(data), FRAME_BYTES_MAX) {
        wire_payload(&message.payload);
    }
}

/// The stream [`peer_stream`] reads for `data`.
fn build_stream(data: &[u8]) -> BytesMut {
    let mut input = Input(data);
    let mode = input.u8();
    let mut stream = BytesMut::new();
    if mode & 1 != 0 {
        let block_bytes = usize::from(input.u8() % 64);
        let block = input.bytes(block_bytes);
        stream.put_slice(b"ORDO");
        stream.put_u16(PROTOCOL_VERSION);
        stream.put_u16(0);
        for field in [1u64, 2, 1, 0xfeed] {
            // cluster id, sender, receiver, incarnation
            stream.put_u64(field);
        }
        stream.put_u16(block.len() as u16);
        stream.put_slice(block);
    }
    if mode & 2 != 0 {
        while !input.0.is_empty() {
            let body_bytes = usize::from(input.u16() % 1024);
            let body = input.bytes(body_bytes);
            let length = (body.len() as u32).to_be_bytes();
            stream.put_slice(&length);
            stream.put_u32(crc32c::crc32c_append(crc32c::crc32c(&length), body));
            stream.put_slice(body);
        }
    } else {
        stream.put_slice(input.0);
    }
    stream
}

/// Decodes `data` as one transport payload; a message that decodes must encode to the
/// same message, and the entry data and membership changes it carries go on through
/// [`entry_data`].
pub fn wire_payload(data: &[u8]) {
    let Ok(message) = WireMessage::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encoded = message.encode();
    assert_eq!(
        WireMessage::decode(encoded).as_ref(),
        Ok(&message),
        "a decoded message encodes to the same message"
    );
    match &message {
        WireMessage::Raft(m) => match &m.body {
            MessageBody::Append { entries, .. } => {
                for e in entries {
                    let kind = match e.kind {
                        EntryKind::Normal => EntryData::Normal,
                        EntryKind::ConfChange => EntryData::ConfChange,
                    };
                    decode_entry_data(kind, &e.data);
                }
            }
            MessageBody::Snapshot { snapshot } => {
                let config = encode_conf_state(&snapshot.meta.conf_state);
                decode_entry_data(EntryData::SnapshotConfig, &config);
            }
            _ => {}
        },
        WireMessage::Forward(f) => {
            let kind = match f.kind {
                ForwardKind::Normal => EntryData::Normal,
                ForwardKind::ConfChange => EntryData::ConfChange,
            };
            decode_entry_data(kind, &f.data);
        }
        _ => {}
    }
}

/// What a blob of entry data is read as.
#[derive(Clone, Copy)]
enum EntryData {
    /// A normal entry: the request envelope, then the state machine's bytes.
    Normal,
    /// A membership change with its context (request id, peer address).
    ConfChange,
    /// A snapshot's configuration, as the storage reads it from the snapshot file.
    SnapshotConfig,
}

/// Decodes `data` as the entry data its first byte names: a normal entry, a membership
/// change or a snapshot's configuration.
pub fn entry_data(data: &[u8]) {
    let Some((&kind, data)) = data.split_first() else {
        return;
    };
    let kind = match kind % 3 {
        0 => EntryData::Normal,
        1 => EntryData::ConfChange,
        _ => EntryData::SnapshotConfig,
    };
    decode_entry_data(kind, data);
}

fn decode_entry_data(kind: EntryData, data: &[u8]) {
    match kind {
        EntryData::Normal => {
            if let Ok((_, rest)) = crate::state_machine::unwrap(Bytes::copy_from_slice(data)) {
                assert_eq!(rest.len() + crate::ENVELOPE_BYTES, data.len());
            }
        }
        EntryData::ConfChange => {
            if let Ok(cc) = ConfChange::decode(data) {
                assert_eq!(
                    ConfChange::decode(&cc.encode()).as_ref(),
                    Ok(&cc),
                    "a decoded membership change encodes to the same change"
                );
                let _ = crate::core::membership_request(&cc);
                let _ = crate::core::membership_addr(&cc);
            }
        }
        EntryData::SnapshotConfig => {
            if let Ok(cs) = decode_conf_state(Bytes::copy_from_slice(data)) {
                assert_eq!(
                    &encode_conf_state(&cs)[..],
                    data,
                    "configurations are canonical"
                );
            }
        }
    }
}

/// A fresh, empty directory for one run.
fn scratch_dir() -> PathBuf {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ordo-node-fuzz-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The files [`node_files`] writes, with their magic (the lost-state mark has none).
const FILES: [(&str, Option<[u8; 8]>); 4] = [
    (identity::IDENTITY_FILE, Some(*b"ORDOID01")),
    (PEERS_FILE, Some(*b"ORDOPI01")),
    ("members", Some(*b"ORDOMB01")),
    (LOST_STATE_FILE, None),
];

/// Writes a node's small files from `data` and opens them as a starting node does. Per
/// file the input says whether it exists, whether its body is framed with the right magic
/// and checksum (so that the fuzzer reaches the body's decoder), and the body. A file
/// that opens must stay the same when written and read again.
pub fn node_files(data: &[u8]) {
    let dir = scratch_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let mut input = Input(data);
    for (name, magic) in FILES {
        let mode = input.u8();
        if mode.is_multiple_of(3) {
            continue;
        }
        let len = usize::from(input.u16() % 4096);
        let body = input.bytes(len);
        let bytes = match magic {
            Some(magic) if mode % 3 == 1 => {
                let format = ordo_wal::atomic_file::Format {
                    magic,
                    checksum_order: ordo_wal::atomic_file::ByteOrder::Big,
                    file_bytes_max: u64::MAX,
                };
                format.encode(body)
            }
            _ => body.to_vec(),
        };
        let _ = std::fs::write(dir.join(name), bytes);
    }
    let _ = identity::check_not_marked(&dir);
    if let Ok(record) = PeerIncarnations::open(&dir, PEERS_FILE) {
        let known: Vec<(u64, Option<u64>)> = (0..4).map(|id| (id, record.get(id))).collect();
        drop(record);
        let again = PeerIncarnations::open(&dir, PEERS_FILE).map(|r| {
            (0..4)
                .map(|id| (id, r.get(id)))
                .collect::<Vec<(u64, Option<u64>)>>()
        });
        assert_eq!(again.ok(), Some(known), "peer record read twice");
    }
    if let Ok(mut file) = MemberFile::load(&dir) {
        let members = file.members().clone();
        // Forgetting an absent member stores nothing; adding one stores the file.
        let _ = file.update([(u64::MAX, Some(([127, 0, 0, 1], 1).into()))]);
        let _ = file.update([(u64::MAX, None)]);
        if let Ok(again) = MemberFile::load(&dir) {
            assert_eq!(again.members(), &members, "member file written again");
        }
    }
    if let Ok((mut file, _)) = IdentityFile::open(&dir, 2, 1) {
        let identity = file.identity().clone();
        let _ = file.record_group(u64::MAX);
        let _ = file.unlist_group(u64::MAX);
        if let Ok((again, _)) = IdentityFile::open(&dir, 2, 1) {
            assert_eq!(again.identity(), &identity, "identity written again");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ordo_raft::{ConfChangeKind, ConfState, Entry, Message, Snapshot, SnapshotMeta};
    use ordo_wal::fuzzing::{damaged_copies, run_each, run_seeded};

    use super::*;
    use crate::codec::{RequestId, SnapshotChunk};

    const SEED: &str = "ORDO_NODE_FUZZ_SEED";

    fn request() -> RequestId {
        RequestId {
            node: 1,
            boot: 2,
            seq: 3,
        }
    }

    /// One valid payload of the kinds that carry entry data or a configuration.
    fn payloads() -> Vec<Bytes> {
        let conf_state = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![4],
            ..ConfState::default()
        };
        let membership = ConfChange::single(ConfChangeKind::AddVoter, 4);
        let append = MessageBody::Append {
            prev_index: 6,
            prev_term: 2,
            entries: vec![
                Entry {
                    term: 2,
                    index: 7,
                    kind: EntryKind::Normal,
                    data: crate::state_machine::wrap(request(), b"put k v"),
                },
                Entry {
                    term: 2,
                    index: 8,
                    kind: EntryKind::ConfChange,
                    data: membership.encode(),
                },
            ],
            commit: 6,
        };
        let snapshot = MessageBody::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 9,
                    term: 2,
                    conf_state: conf_state.clone(),
                },
                data: Bytes::from_static(b"state"),
            },
        };
        let raft = |body| {
            WireMessage::Raft(Message {
                from: 1,
                to: 2,
                term: 2,
                body,
            })
        };
        let chunk = WireMessage::SnapshotChunk(SnapshotChunk {
            transfer_id: 5,
            term: 2,
            meta: SnapshotMeta {
                index: 9,
                term: 2,
                conf_state,
            },
            total_bytes: 10,
            data_crc: 0,
            offset: 4,
            data: Bytes::from_static(b"chunk"),
            members: BTreeMap::from([(1, ([127, 0, 0, 1], 2380).into())]),
        });
        [raft(append), raft(snapshot), chunk]
            .iter()
            .map(WireMessage::encode)
            .collect()
    }

    /// The bytes [`peer_stream`] reads for a valid handshake and one frame per payload.
    fn valid_stream() -> Vec<u8> {
        let mut data = vec![0b11, 0];
        for payload in payloads() {
            let mut body = BytesMut::new();
            body.put_u32(1);
            body.put_u8(0);
            body.put_u64(1);
            body.put_u32(payload.len() as u32);
            body.put_slice(&payload);
            data.extend_from_slice(&(body.len() as u16).to_be_bytes());
            data.extend_from_slice(&body);
        }
        data
    }

    #[test]
    fn the_peer_stream_harness_delivers_every_payload_of_a_valid_stream() {
        let stream = build_stream(&valid_stream());
        let delivered = PeerMessage::decode_arbitrary_stream(&stream, FRAME_BYTES_MAX);
        let delivered: Vec<Bytes> = delivered.into_iter().map(|m| m.payload).collect();
        assert_eq!(delivered, payloads());
    }

    #[test]
    fn arbitrary_and_damaged_peer_streams_never_panic() {
        run_seeded(SEED, 300, 400, peer_stream);
        run_each(damaged_copies(&valid_stream()), peer_stream);
    }

    #[test]
    fn arbitrary_and_damaged_payloads_never_panic() {
        run_seeded(SEED, 300, 300, wire_payload);
        for payload in payloads() {
            run_each(damaged_copies(&payload), wire_payload);
        }
    }

    #[test]
    fn arbitrary_and_damaged_entry_data_never_panic() {
        run_seeded(SEED, 300, 100, entry_data);
        let conf_state = ConfState {
            voters: vec![1, 2],
            voters_outgoing: vec![1],
            ..ConfState::default()
        };
        let mut membership = ConfChange::single(ConfChangeKind::AddLearner, 9);
        membership.context = {
            let mut context = BytesMut::new();
            request().put(&mut context);
            context.put_slice(b"127.0.0.1:2380");
            context.freeze()
        };
        let valid = [
            (0u8, crate::state_machine::wrap(request(), b"data")),
            (1, membership.encode()),
            (2, encode_conf_state(&conf_state)),
        ];
        for (kind, data) in valid {
            let framed = [&[kind][..], &data].concat();
            run_each(damaged_copies(&framed), entry_data);
        }
    }

    /// Files for [`node_files`]: a framed identity, peer record and member file, no mark.
    fn valid_files() -> Vec<u8> {
        let mut identity = BytesMut::new();
        for field in [2u64, 1, 77] {
            identity.put_u64(field);
        }
        identity.put_u32(1);
        identity.put_u64(5);
        let mut peers = BytesMut::new();
        peers.put_u32(1);
        peers.put_u64(3);
        peers.put_u64(9);
        let mut members = BytesMut::new();
        crate::members::encode_members(
            &mut members,
            &BTreeMap::from([(3, ([10, 0, 0, 3], 2380).into())]),
        );
        let mut data = Vec::new();
        for body in [identity, peers, members] {
            data.push(1);
            data.extend_from_slice(&(body.len() as u16).to_be_bytes());
            data.extend_from_slice(&body);
        }
        data.push(0);
        data
    }

    #[test]
    fn arbitrary_and_damaged_node_files_never_panic() {
        run_seeded(SEED, 150, 200, node_files);
        // Every fourth damaged copy: the files are written and read each time.
        run_each(damaged_copies(&valid_files()).step_by(4), node_files);
    }
}
