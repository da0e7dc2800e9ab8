//! The state machine of a partition's Raft group: the offsets of its log.
//!
//! A partition's data entries are record batches as producers send them (Kafka's
//! RecordBatch v2), each entry one version byte (1) before the batch. Applying one gives its
//! records the next offsets (as many as the batch's last offset delta plus one); Raft's own
//! entries (no-ops of new leaders, configuration changes) take no offset, so offsets are
//! dense over data records and every replica computes the same ones. An entry that is not
//! such a batch is refused and changes nothing, on every replica alike.
//!
//! A snapshot is a version byte (1) and the next offset (u64, big-endian).

use bytes::{BufMut, Bytes, BytesMut};
use ordo_node::{Index, RestoreError, StateMachine};

const ENTRY_VERSION: u8 = 1;
const SNAPSHOT_VERSION: u8 = 1;

/// Bytes of a RecordBatch v2 header, up to and including its record count.
pub const BATCH_HEADER_BYTES: usize = 61;
const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const LAST_OFFSET_DELTA_AT: usize = 23;
const RECORD_COUNT_AT: usize = 57;
/// Bytes before the batch length's count starts (base offset and the length itself).
const BATCH_LENGTH_OFFSET: usize = 12;

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not an entry of this encoding.
    #[error("malformed partition entry: {0}")]
    Malformed(String),
}

/// A partition's log as its replicas have applied it.
#[derive(Debug, Default)]
pub struct PartitionMachine {
    next_offset: u64,
    applied: Index,
}

impl PartitionMachine {
    /// The offset the next record gets: the high-water mark of what is applied.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The entry that appends `batch` (a RecordBatch v2, as a producer sent it).
    pub fn entry(batch: &[u8]) -> Bytes {
        let mut entry = BytesMut::with_capacity(1 + batch.len());
        entry.put_u8(ENTRY_VERSION);
        entry.put_slice(batch);
        entry.freeze()
    }
}

/// How many offsets a batch takes, read from its header.
fn offsets_of(batch: &[u8]) -> Result<u64, EntryError> {
    let bad = |why: &str| EntryError::Malformed(why.to_string());
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(bad("a record batch shorter than its header"));
    }
    let i32_at =
        |at: usize| i32::from_be_bytes([batch[at], batch[at + 1], batch[at + 2], batch[at + 3]]);
    if batch[MAGIC_AT] != 2 {
        return Err(bad("not a record batch of magic 2"));
    }
    let length = i32_at(BATCH_LENGTH_AT);
    if length < 0 || length as usize + BATCH_LENGTH_OFFSET != batch.len() {
        return Err(bad("the batch length does not match the batch"));
    }
    let last_offset_delta = i32_at(LAST_OFFSET_DELTA_AT);
    let records = i32_at(RECORD_COUNT_AT);
    if records <= 0 || last_offset_delta < records - 1 {
        return Err(bad(
            "a batch without records, or with fewer offsets than records",
        ));
    }
    Ok(last_offset_delta as u64 + 1)
}

impl StateMachine for PartitionMachine {
    /// The batch's base offset, or why the entry was refused.
    type Output = Result<u64, EntryError>;

    fn apply(&mut self, index: Index, data: &[u8]) -> Self::Output {
        assert!(
            index > self.applied,
            "entry {index} applied after {}",
            self.applied
        );
        self.applied = index;
        let Some((&version, batch)) = data.split_first() else {
            return Err(EntryError::Malformed("empty".into()));
        };
        if version != ENTRY_VERSION {
            return Err(EntryError::Malformed(format!(
                "unsupported version {version}"
            )));
        }
        let offsets = offsets_of(batch)?;
        let base = self.next_offset;
        self.next_offset += offsets;
        Ok(base)
    }

    fn note_applied(&mut self, index: Index) {
        assert!(
            index > self.applied,
            "entry {index} noted after {}",
            self.applied
        );
        self.applied = index;
    }

    fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(9);
        buf.put_u8(SNAPSHOT_VERSION);
        buf.put_u64(self.next_offset);
        buf.freeze()
    }

    fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError> {
        let [version, offset @ ..] = data else {
            return Err(RestoreError::new("an empty partition snapshot".to_string()));
        };
        let offset: [u8; 8] = offset.try_into().map_err(|_| {
            RestoreError::new(format!("a partition snapshot of {} bytes", data.len()))
        })?;
        if *version != SNAPSHOT_VERSION {
            return Err(RestoreError::new(format!(
                "unsupported partition snapshot version {version}"
            )));
        }
        self.next_offset = u64::from_be_bytes(offset);
        self.applied = index;
        Ok(())
    }

    fn applied_index(&self) -> Index {
        self.applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// One batch of `records` records.
    fn batch(records: usize) -> Bytes {
        let records: Vec<Record> = (0..records)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // Offset minus sequence the same for all: one batch.
                sequence: i as i32,
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(Bytes::from(format!("record {i}"))),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encodes");
        buf.freeze()
    }

    #[test]
    fn batches_take_dense_offsets_and_raft_entries_take_none() {
        let mut m = PartitionMachine::default();
        assert_eq!(m.apply(2, &PartitionMachine::entry(&batch(3))), Ok(0));
        m.note_applied(3);
        assert_eq!(m.apply(4, &PartitionMachine::entry(&batch(1))), Ok(3));
        assert_eq!(m.next_offset(), 4);
        assert_eq!(m.applied_index(), 4);
    }

    #[test]
    fn entries_that_are_not_batches_are_refused_and_change_nothing() {
        let mut m = PartitionMachine::default();
        m.apply(1, &PartitionMachine::entry(&batch(2))).unwrap();
        let good = PartitionMachine::entry(&batch(2));
        let mut bad: Vec<Vec<u8>> = vec![Vec::new(), vec![2], [&[9u8][..], &good[1..]].concat()];
        bad.extend((1..good.len()).map(|n| good[..n].to_vec()));
        bad.push([&good[..], b"x"].concat());
        let mut wrong_magic = good.to_vec();
        wrong_magic[1 + MAGIC_AT] = 1;
        bad.push(wrong_magic);
        for (i, data) in bad.iter().enumerate() {
            assert!(m.apply(2 + i as u64, data).is_err(), "{data:?}");
        }
        assert_eq!(m.next_offset(), 2);
    }

    #[test]
    fn a_snapshot_restores_the_offsets_and_a_damaged_one_is_refused() {
        let mut m = PartitionMachine::default();
        m.apply(1, &PartitionMachine::entry(&batch(5))).unwrap();
        let snapshot = m.snapshot();
        let mut copy = PartitionMachine::default();
        copy.restore(7, &snapshot).unwrap();
        assert_eq!((copy.next_offset(), copy.applied_index()), (5, 7));
        for damaged in [&snapshot[..3], &[2u8, 0, 0, 0, 0, 0, 0, 0, 0][..], &[][..]] {
            assert!(copy.restore(8, damaged).is_err());
        }
        assert_eq!(copy.next_offset(), 5);
    }
}
