//! Snapshots of the KV state machine.
//!
//! Frame: `b"ORDOKVSN"`, format version (u32 LE), body length (u64 LE), CRC32C of the body
//! (u32 LE), then the body, a protobuf [`SnapshotBody`] holding every stored record in
//! revision order and every lease in id order. The encoding of a given state is unique, so
//! replicas holding the same state produce byte-identical snapshots.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;

use crate::error::SnapshotError;
use crate::proto::internal::{SnapshotBody, SnapshotLease, SnapshotRecord};
use crate::store::{KvStore, LeaseEntry, Record, Revision};

const MAGIC: &[u8; 8] = b"ORDOKVSN";
/// The snapshot format version this build writes, and the newest it reads.
pub const SNAPSHOT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 4;

impl KvStore {
    /// Serializes the whole state, applied index included.
    pub fn snapshot(&self) -> Vec<u8> {
        let body = SnapshotBody {
            applied_index: self.applied_index,
            current_revision: self.current_revision,
            compact_revision: self.compact_revision,
            next_lease_id: self.next_lease_id,
            records: self
                .records
                .iter()
                .map(|(rev, record)| SnapshotRecord {
                    main_revision: rev.main,
                    sub_revision: rev.sub,
                    tombstone: record.tombstone,
                    kv: Some(record.kv.clone()),
                })
                .collect(),
            leases: self
                .leases
                .iter()
                .map(|(id, lease)| SnapshotLease {
                    id: *id,
                    ttl_seconds: lease.ttl_seconds,
                })
                .collect(),
        }
        .encode_to_vec();
        let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
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
