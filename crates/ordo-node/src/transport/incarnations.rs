//! The incarnation of every peer this node has accepted a connection from.
//!
//! A peer that comes back under a known id with another incarnation has lost the state it
//! promised (see [`identity`](crate::identity)); the listener refuses it. For that to hold
//! across this node's own restarts the record is durable: a new peer's incarnation is
//! written (replacing the file atomically, by [`ordo_wal::atomic_file`]) before its first
//! connection is accepted, so no message of it is ever read unless its incarnation is on
//! disk.
//!
//! Layout of the file: magic `ORDOPI01`, count (u32), per peer its id and incarnation
//! (u64 each), then a CRC32C of everything before it; big-endian.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::{Buf, BufMut, BytesMut};
use ordo_wal::atomic_file::{ByteOrder, Format};

use super::NodeId;
use crate::identity::IdentityError;

/// Peers one node keeps incarnations for. Only configured peers are ever recorded, and
/// node ids are never reused, so this bounds the members a cluster may ever have had.
pub const PEER_INCARNATIONS_MAX: usize = 65_536;

/// The record: a count, then an id and an incarnation per peer.
const FORMAT: Format = Format {
    magic: *b"ORDOPI01",
    checksum_order: ByteOrder::Big,
    file_bytes_max: Format::file_bytes(4 + 16 * PEER_INCARNATIONS_MAX),
};

/// What [`PeerIncarnations::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The incarnation is the one on record.
    Known,
    /// The peer had none on record; this one now is, durably.
    Recorded,
    /// The peer is on record with another incarnation: it lost its state.
    LostState {
        /// The incarnation on record.
        recorded: u64,
    },
    /// The record could not be written; the connection must not be accepted.
    Failed(String),
}

/// The incarnations of the peers this node has accepted, durable in a file or (for a
/// transport without a data directory) in memory only.
#[derive(Debug)]
pub struct PeerIncarnations {
    /// The directory and file name of the durable record.
    file: Option<(PathBuf, String)>,
    known: Mutex<BTreeMap<NodeId, u64>>,
}

impl PeerIncarnations {
    /// A record kept in memory only: checks incarnations for as long as the transport
    /// runs, and forgets them when it stops.
    pub fn in_memory() -> PeerIncarnations {
        PeerIncarnations {
            file: None,
            known: Mutex::new(BTreeMap::new()),
        }
    }

    /// Loads the record kept in the file `name` of directory `dir` (empty if there is none
    /// yet). A damaged file is an error: forgetting a peer's incarnation would let it back
    /// in after it lost its state.
    pub fn open(dir: impl Into<PathBuf>, name: &str) -> Result<PeerIncarnations, IdentityError> {
        let dir = dir.into();
        let path = dir.join(name);
        let body = FORMAT
            .read(&dir, name)
            .map_err(|e| IdentityError::of_file(&path, e))?;
        let known = match body {
            Some(body) => decode(&body).map_err(|reason| IdentityError::Corrupt {
                path: path.clone(),
                reason,
            })?,
            None => BTreeMap::new(),
        };
        Ok(PeerIncarnations {
            file: Some((dir, name.to_string())),
            known: Mutex::new(known),
        })
    }

    /// Writes an empty record as `dir/name` unless the file exists: a node does so before
    /// it writes its identity, so that a record missing next to an identity is known to
    /// be lost rather than never written.
    pub(crate) fn create_if_missing(dir: &Path, name: &str) -> Result<(), IdentityError> {
        let path = dir.join(name);
        match std::fs::metadata(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FORMAT
                .write(dir, name, &encode(&BTreeMap::new()))
                .map_err(|e| IdentityError::of_file(&path, e)),
            Err(source) => Err(IdentityError::Io { path, source }),
        }
    }

    /// The incarnation on record for `peer`.
    pub fn get(&self, peer: NodeId) -> Option<u64> {
        self.lock().get(&peer).copied()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, u64>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides on a handshake from `peer` presenting `incarnation`, recording it first if
    /// the peer is new. Blocks on the file write for a new peer; that happens once per
    /// peer in the life of the data directory.
    pub(crate) fn admit(&self, peer: NodeId, incarnation: u64) -> Admission {
        assert_ne!(incarnation, 0, "incarnation 0 reached the record");
        // Held across the write: two handshakes of one new peer must not both record.
        let mut known = self.lock();
        match known.get(&peer) {
            Some(&recorded) if recorded == incarnation => return Admission::Known,
            Some(&recorded) => return Admission::LostState { recorded },
            None => {}
        }
        if known.len() >= PEER_INCARNATIONS_MAX {
            return Admission::Failed(format!(
                "the record of peer incarnations is full ({PEER_INCARNATIONS_MAX} peers)"
            ));
        }
        known.insert(peer, incarnation);
        if let Some((dir, name)) = &self.file {
            if let Err(error) = FORMAT.write(dir, name, &encode(&known)) {
                known.remove(&peer);
                return Admission::Failed(error.to_string());
            }
        }
        Admission::Recorded
    }
}

/// The record's body (between magic and checksum).
fn encode(known: &BTreeMap<NodeId, u64>) -> BytesMut {
    assert!(
        known.len() <= PEER_INCARNATIONS_MAX,
        "peer record limit passed"
    );
    let mut buf = BytesMut::new();
    buf.put_u32(known.len() as u32);
    for (id, incarnation) in known {
        buf.put_u64(*id);
        buf.put_u64(*incarnation);
    }
    buf
}

/// Decodes what [`encode`] wrote.
fn decode(mut body: &[u8]) -> Result<BTreeMap<NodeId, u64>, String> {
    if body.remaining() < 4 {
        return Err("too short for its count".into());
    }
    let count = body.get_u32() as usize;
    if count > PEER_INCARNATIONS_MAX {
        return Err(format!("{count} peers, more than {PEER_INCARNATIONS_MAX}"));
    }
    if body.remaining() != count * 16 {
        return Err(format!(
            "{} bytes of records for {count} peers",
            body.remaining()
        ));
    }
    let mut known = BTreeMap::new();
    for _ in 0..count {
        let id = body.get_u64();
        let incarnation = body.get_u64();
        if incarnation == 0 || known.insert(id, incarnation).is_some() {
            return Err(format!("bad record for node {id}"));
        }
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_peer_is_known_after_a_reload_and_another_incarnation_is_lost_state() {
        let dir = tempfile::tempdir().unwrap();
        let record = PeerIncarnations::open(dir.path(), "peers").unwrap();
        assert_eq!(record.admit(2, 77), Admission::Recorded);
        assert_eq!(record.admit(2, 77), Admission::Known);
        assert_eq!(record.admit(3, 5), Admission::Recorded);
        drop(record);
        let record = PeerIncarnations::open(dir.path(), "peers").unwrap();
        assert_eq!(record.get(2), Some(77));
        assert_eq!(record.admit(2, 77), Admission::Known);
        assert_eq!(record.admit(2, 78), Admission::LostState { recorded: 77 });
        assert_eq!(record.admit(3, 5), Admission::Known);
    }

    #[test]
    fn a_record_in_memory_checks_until_dropped() {
        let record = PeerIncarnations::in_memory();
        assert_eq!(record.admit(1, 9), Admission::Recorded);
        assert_eq!(record.admit(1, 10), Admission::LostState { recorded: 9 });
    }

    /// The record as this layout writes it: magic, count, id and incarnation per peer,
    /// CRC32C, big-endian.
    fn record_bytes(peers: &[(u64, u64)]) -> Vec<u8> {
        let mut raw = b"ORDOPI01".to_vec();
        raw.extend_from_slice(&(peers.len() as u32).to_be_bytes());
        for (id, incarnation) in peers {
            raw.extend_from_slice(&id.to_be_bytes());
            raw.extend_from_slice(&incarnation.to_be_bytes());
        }
        let crc = crc32c::crc32c(&raw);
        raw.extend_from_slice(&crc.to_be_bytes());
        raw
    }

    #[test]
    fn the_record_layout_on_disk_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers");
        PeerIncarnations::create_if_missing(dir.path(), "peers").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), record_bytes(&[]));
        std::fs::write(&path, record_bytes(&[(2, 77)])).unwrap();
        let record = PeerIncarnations::open(dir.path(), "peers").unwrap();
        assert_eq!(record.get(2), Some(77));
        assert_eq!(record.admit(5, 9), Admission::Recorded);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            record_bytes(&[(2, 77), (5, 9)])
        );
    }

    #[test]
    fn a_crash_before_the_record_is_renamed_leaves_the_old_record() {
        let dir = tempfile::tempdir().unwrap();
        let record = PeerIncarnations::open(dir.path(), "peers").unwrap();
        assert_eq!(record.admit(2, 77), Admission::Recorded);
        let tmp = dir.path().join("peers.tmp");
        let new = record_bytes(&[(2, 77), (3, 5)]);
        for cut in [0, 7, new.len()] {
            std::fs::write(&tmp, &new[..cut]).unwrap();
            let record = PeerIncarnations::open(dir.path(), "peers").unwrap();
            assert_eq!((record.get(2), record.get(3)), (Some(77), None));
        }
        let record = PeerIncarnations::open(dir.path(), "peers").unwrap();
        assert_eq!(record.admit(3, 5), Admission::Recorded);
        assert!(!tmp.exists());
        let record = PeerIncarnations::open(dir.path(), "peers").unwrap();
        assert_eq!(record.get(3), Some(5));
    }

    #[test]
    fn a_record_cut_short_or_flipped_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let record = PeerIncarnations::open(dir.path(), "peers").unwrap();
        record.admit(2, 77);
        let path = dir.path().join("peers");
        let good = std::fs::read(&path).unwrap();
        for bad in ordo_wal::fuzzing::damaged_copies(&good) {
            std::fs::write(&path, &bad).unwrap();
            match PeerIncarnations::open(dir.path(), "peers") {
                Err(IdentityError::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
