//! Snapshots of the KV state machine.
//!
//! Frame: `b"ORDOKVSN"`, format version (u32 LE), body length (u64 LE), CRC32C of the body
//! (u32 LE), then the body, a protobuf [`SnapshotBody`] holding every stored record in
//! revision order and every lease in id order. The encoding of a given state is unique, so
//! replicas holding the same state produce byte-identical snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use prost::Message;

use crate::auth::AuthStore;
use crate::error::SnapshotError;
use crate::proto::internal::{SnapshotBody, SnapshotLease};
use crate::store::{KvStore, LeaseEntry, Record, Revision};

const MAGIC: &[u8; 8] = b"ORDOKVSN";
/// The snapshot format version this build writes, and the newest it reads.
pub const SNAPSHOT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 4;

/// Records encoded per step of a [`SnapshotCursor`]: the store is held (shared) for one
/// step at a time, and the applier takes it exclusively for every entry, so a step must
/// be short (tens of microseconds) or each entry of a batch waits for one.
pub const SNAPSHOT_RECORDS_PER_STEP: usize = 256;

/// Protobuf key of `SnapshotBody.records` (field 5, length-delimited).
const RECORDS_FIELD: u32 = 5;
/// Protobuf field numbers inside `SnapshotRecord`.
const RECORD_MAIN_FIELD: u32 = 1;
const RECORD_SUB_FIELD: u32 = 2;
const RECORD_TOMBSTONE_FIELD: u32 = 3;
const RECORD_KV_FIELD: u32 = 4;

/// Encodes one record as a `SnapshotBody.records` element, byte for byte what prost
/// writes for the same `SnapshotRecord`, but from a reference: a snapshot copies no
/// key or value on the way.
fn encode_record(rev: Revision, record: &Record, out: &mut Vec<u8>) {
    use prost::encoding::{bool as pb_bool, encode_key, encode_varint, int64, message, WireType};
    let mut len = message::encoded_len(RECORD_KV_FIELD, &record.kv);
    if rev.main != 0 {
        len += int64::encoded_len(RECORD_MAIN_FIELD, &rev.main);
    }
    if rev.sub != 0 {
        len += int64::encoded_len(RECORD_SUB_FIELD, &rev.sub);
    }
    if record.tombstone {
        len += pb_bool::encoded_len(RECORD_TOMBSTONE_FIELD, &record.tombstone);
    }
    encode_key(RECORDS_FIELD, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    if rev.main != 0 {
        int64::encode(RECORD_MAIN_FIELD, &rev.main, out);
    }
    if rev.sub != 0 {
        int64::encode(RECORD_SUB_FIELD, &rev.sub, out);
    }
    if record.tombstone {
        pb_bool::encode(RECORD_TOMBSTONE_FIELD, &record.tombstone, out);
    }
    message::encode(RECORD_KV_FIELD, &record.kv, out);
}

/// A snapshot being encoded a step at a time, so that the store is never held for the
/// whole encoding and the applier keeps applying meanwhile.
///
/// It is sound because history below the snapshot's revision never changes while it is
/// read: records are only added at newer revisions (a failed txn withdraws only its own
/// new ones), and only a compaction or a restore remove anything. The cursor notices
/// either (by the compaction revision and the store's restore count) and gives up, and the
/// snapshot is taken again later.
#[derive(Debug)]
pub struct SnapshotCursor {
    /// The encoded frame so far: a header placeholder, then the body.
    out: Vec<u8>,
    /// The revision the snapshot is taken at: newer records are left out.
    revision: i64,
    compact_revision: i64,
    restores: u64,
    /// The last record encoded.
    after: Option<Revision>,
    /// The encoded `leases` field, appended after the records.
    leases: Vec<u8>,
}

/// What one step of a [`SnapshotCursor`] did.
#[derive(Debug)]
pub enum SnapshotStep {
    /// More records remain.
    More(SnapshotCursor),
    /// The frame is complete.
    Done(Vec<u8>),
    /// The store was compacted or restored since the cursor began: what it holds is no
    /// longer the state at its revision.
    Abandoned,
}

impl SnapshotCursor {
    /// Starts a snapshot of `store` as it is now; `restores` counts the restores the
    /// owner of the store has made, so [`SnapshotCursor::step`] can tell one happened.
    pub fn begin(store: &KvStore, restores: u64) -> SnapshotCursor {
        let mut out = vec![0u8; HEADER_BYTES];
        SnapshotBody {
            applied_index: store.applied_index,
            current_revision: store.current_revision,
            compact_revision: store.compact_revision,
            next_lease_id: store.next_lease_id,
            records: Vec::new(),
            leases: Vec::new(),
            auth: None,
        }
        .encode_raw(&mut out);
        let leases = SnapshotBody {
            leases: store
                .leases
                .iter()
                .map(|(id, lease)| SnapshotLease {
                    id: *id,
                    ttl_seconds: lease.ttl_seconds,
                })
                .collect(),
            auth: store.auth.to_snapshot(),
            ..SnapshotBody::default()
        }
        .encode_to_vec();
        SnapshotCursor {
            out,
            revision: store.current_revision,
            compact_revision: store.compact_revision,
            restores,
            after: None,
            leases,
        }
    }

    /// Encodes up to `records_max` more records from `store` (the store the cursor
    /// began on, `restores` counted the same way).
    pub fn step(mut self, store: &KvStore, restores: u64, records_max: usize) -> SnapshotStep {
        assert!(records_max > 0, "a snapshot step must make progress");
        if restores != self.restores || store.compact_revision != self.compact_revision {
            return SnapshotStep::Abandoned;
        }
        assert!(
            store.current_revision >= self.revision,
            "the store's revision went back from {} to {} without a restore",
            self.revision,
            store.current_revision
        );
        let upper = Bound::Included(Revision {
            main: self.revision,
            sub: i64::MAX,
        });
        let lower = match self.after {
            None => Bound::Unbounded,
            Some(after) => Bound::Excluded(after),
        };
        for (taken, (rev, record)) in store.records.range((lower, upper)).enumerate() {
            if taken == records_max {
                return SnapshotStep::More(self);
            }
            encode_record(*rev, record, &mut self.out);
            self.after = Some(*rev);
        }
        self.out.extend_from_slice(&self.leases);
        SnapshotStep::Done(seal(self.out))
    }
}

/// Writes the frame header in front of an encoded body.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    assert!(
        out.len() >= HEADER_BYTES,
        "the frame has room for its header"
    );
    let (head, body) = out.split_at_mut(HEADER_BYTES);
    head[..8].copy_from_slice(MAGIC);
    head[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    head[12..20].copy_from_slice(&(body.len() as u64).to_le_bytes());
    head[20..24].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out
}

impl KvStore {
    /// Serializes the whole state, applied index included.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut cursor = SnapshotCursor::begin(self, 0);
        loop {
            match cursor.step(self, 0, usize::MAX) {
                SnapshotStep::More(next) => cursor = next,
                SnapshotStep::Done(bytes) => return bytes,
                SnapshotStep::Abandoned => unreachable!("the store cannot change while borrowed"),
            }
        }
    }

    /// Rebuilds a store from [`KvStore::snapshot`] bytes, checking the frame, the checksum
    /// and the body's internal consistency.
    pub fn restore(bytes: &[u8]) -> Result<KvStore, SnapshotError> {
        if bytes.len() < HEADER_BYTES {
            return Err(SnapshotError::Truncated {
                len_bytes: bytes.len(),
                header_bytes: HEADER_BYTES,
            });
        }
        let (head, body) = bytes.split_at(HEADER_BYTES);
        if &head[..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let word = |range: std::ops::Range<usize>| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&head[range]);
            u32::from_le_bytes(b)
        };
        let version = word(8..12);
        if version == 0 || version > SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&head[12..20]);
        let declared_bytes = u64::from_le_bytes(len);
        if declared_bytes != body.len() as u64 {
            return Err(SnapshotError::LengthMismatch {
                declared_bytes,
                actual_bytes: body.len() as u64,
            });
        }
        let expected = word(20..24);
        let actual = crc32c::crc32c(body);
        if expected != actual {
            return Err(SnapshotError::ChecksumMismatch { expected, actual });
        }
        let body = SnapshotBody::decode(body).map_err(|e| SnapshotError::Invalid {
            reason: format!("undecodable body: {e}"),
        })?;
        from_body(body)
    }
}

fn invalid(reason: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid {
        reason: reason.into(),
    }
}

fn from_body(body: SnapshotBody) -> Result<KvStore, SnapshotError> {
    if body.current_revision < 1
        || body.compact_revision < 0
        || body.compact_revision > body.current_revision
    {
        return Err(invalid(format!(
            "revisions out of order: compact {} current {}",
            body.compact_revision, body.current_revision
        )));
    }
    let mut store = KvStore::new();
    store.applied_index = body.applied_index;
    store.current_revision = body.current_revision;
    store.compact_revision = body.compact_revision;
    store.next_lease_id = body.next_lease_id;
    store.auth = AuthStore::from_snapshot(body.auth).map_err(invalid)?;
    let mut records = BTreeMap::new();
    let mut index: BTreeMap<Vec<u8>, Vec<Revision>> = BTreeMap::new();
    let mut last = None;
    for r in body.records {
        let rev = Revision {
            main: r.main_revision,
            sub: r.sub_revision,
        };
        if last.is_some_and(|l| l >= rev)
            || rev.main < 1
            || rev.sub < 0
            || rev.main > body.current_revision
        {
            return Err(invalid(format!(
                "record revision {rev:?} out of order or out of range"
            )));
        }
        last = Some(rev);
        let kv =
            r.kv.ok_or_else(|| invalid(format!("record {rev:?} has no key-value")))?;
        if kv.key.is_empty() || kv.mod_revision != rev.main {
            return Err(invalid(format!(
                "record {rev:?} has an empty key or a wrong mod revision"
            )));
        }
        // What puts write: a create revision at or before this one, and a version that
        // counts the puts since, each at a revision of its own. So a version is at most
        // `mod - create + 1`, and the next put's version fits wherever its revision does.
        let live_fields_possible = (1..=rev.main).contains(&kv.create_revision)
            && (1..=rev.main - kv.create_revision + 1).contains(&kv.version);
        if !r.tombstone && !live_fields_possible {
            return Err(invalid(format!(
                "record {rev:?} has version {} and create revision {}, which no put writes",
                kv.version, kv.create_revision
            )));
        }
        index.entry(kv.key.clone()).or_default().push(rev);
        records.insert(
            rev,
            Record {
                kv,
                tombstone: r.tombstone,
            },
        );
    }
    let mut leases = BTreeMap::new();
    for l in body.leases {
        let entry = LeaseEntry {
            ttl_seconds: l.ttl_seconds,
            keys: BTreeSet::new(),
        };
        if leases.insert(l.id, entry).is_some() {
            return Err(invalid(format!("lease {} listed twice", l.id)));
        }
    }
    store.records = records;
    store.index = index;
    store.leases = leases;
    // Lease attachments are derived state: recompute them from the live records.
    for (key, revs) in &store.index {
        let Some(newest) = revs.last() else { continue };
        let Some(record) = store.records.get(newest) else {
            continue;
        };
        if !record.tombstone && record.kv.lease != 0 {
            match store.leases.get_mut(&record.kv.lease) {
                Some(entry) => {
                    entry.keys.insert(key.clone());
                }
                None => {
                    return Err(invalid(format!(
                        "a live key is attached to lease {} which does not exist",
                        record.kv.lease
                    )))
                }
            }
        }
    }
    Ok(store)
}
