//! The core's read-only view of durable state, and an in-memory implementation.
//!
//! The runtime owns persistence: it writes what a `Ready` asks for, and afterwards this
//! trait must return it. The core never writes through `Storage`.

use crate::error::StorageError;
use crate::types::{ConfState, Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

/// The state a node restarts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftState {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// The configuration as of the storage's snapshot (index `first_index() - 1`).
    /// Configuration changes in later entries up to `Config::applied_index` are re-applied
    /// by the core when it starts.
    pub conf_state: ConfState,
}

/// Read access to the durable log, hard state and snapshot.
///
/// Indexes `first_index()..=last_index()` are present; `term(first_index() - 1)` is the
/// term of the snapshot's last entry.
pub trait Storage {
    /// The hard state and configuration to restart from.
    fn initial_state(&self) -> RaftState;

    /// Entries `[lo, hi)`, stopping early once their total [`Entry::size_bytes`] would
    /// exceed `max_bytes`, but always returning at least one entry when `lo < hi`.
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;

    /// The term of the entry at `index`, for `first_index() - 1 <= index <= last_index()`.
    fn term(&self, index: Index) -> Result<Term, StorageError>;

    /// The first index still held as an entry (the snapshot index + 1).
    fn first_index(&self) -> Index;

    /// The last index held (the snapshot index when there are no entries).
    fn last_index(&self) -> Index;

    /// The most recent snapshot, to send to a follower that is behind the compacted
    /// prefix. May fail with [`StorageError::SnapshotTemporarilyUnavailable`].
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// An in-memory [`Storage`], for tests, benchmarks and as a model of what a durable
/// implementation must do.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: Snapshot,
    /// The index just before `entries[0]` (the compaction point).
    offset: Index,
    /// The term of the entry at `offset`.
    offset_term: Term,
    /// Entries after `offset`, consecutive.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// Empty storage with no configuration (a node that waits to be added by a snapshot).
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    /// Empty storage bootstrapped with the given configuration at index 0.
    pub fn new_with_conf_state(conf_state: ConfState) -> MemStorage {
        let mut s = MemStorage::default();
        s.snapshot.meta.conf_state = conf_state;
        s
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Replaces the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    fn snapshot_index(&self) -> Index {
        self.snapshot.meta.index
    }

    /// The number of entries held.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Appends entries, first discarding any existing entries at or after the first new
    /// index (a follower overwriting a conflicting suffix, §5.3).
    ///
    /// # Panics
    /// If the entries are not consecutive, would leave a gap, or would overwrite the
    /// snapshot: the core never asks for that, so it is a bug in the caller.
    pub fn append(&mut self, entries: &[Entry]) {
        self.append_owned(entries.to_vec());
    }

    /// Like [`MemStorage::append`], taking ownership to avoid copying.
    pub fn append_owned(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        let first_index = first.index;
        assert!(
            first_index > self.offset,
            "append overwrites the compacted prefix"
        );
        assert!(
            first_index <= self.last_index() + 1,
            "append leaves a gap at {first_index}"
        );
        debug_assert!(entries.windows(2).all(|w| w[1].index == w[0].index + 1));
        let keep = (first_index - self.offset - 1) as usize;
        self.entries.truncate(keep);
        if self.entries.is_empty() {
            self.entries = entries;
        } else {
            self.entries.extend(entries);
        }
    }

    /// Installs a snapshot received from the leader, discarding the whole log.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        if snapshot.meta.index <= self.snapshot_index() {
            return Err(StorageError::SnapshotOutOfDate);
        }
        self.hard_state.term = self.hard_state.term.max(snapshot.meta.term);
        self.hard_state.commit = self.hard_state.commit.max(snapshot.meta.index);
        self.entries.clear();
        self.offset = snapshot.meta.index;
        self.offset_term = snapshot.meta.term;
        self.snapshot = snapshot;
        Ok(())
    }

    /// Records a snapshot of the state machine at `index` (which must be applied, hence
    /// committed and present). Entries are kept until [`MemStorage::compact`].
    pub fn create_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: bytes::Bytes,
    ) -> Result<(), StorageError> {
        if index <= self.snapshot_index() {
            return Err(StorageError::SnapshotOutOfDate);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        let term = self.term(index)?;
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        };
        Ok(())
    }

    /// Discards entries up to and including `index`, which must be covered by the
    /// snapshot, so that a follower behind the new prefix can be sent the snapshot.
    pub fn compact(&mut self, index: Index) -> Result<(), StorageError> {
        let first = self.first_index();
        if index < first {
            return Err(StorageError::Compacted);
        }
        if index > self.snapshot_index() {
            return Err(StorageError::Unavailable(index));
        }
        let term = self.term(index)?;
        self.entries.drain(..(index - self.offset) as usize);
        self.offset = index;
        self.offset_term = term;
        Ok(())
    }

    /// Discards entries up to the snapshot index. Kept separate from `create_snapshot`
    /// so that a runtime can retain a tail of entries for slow followers.
    pub fn compact_to_snapshot(&mut self) {
        let _ = self.compact(self.snapshot_index());
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> RaftState {
        RaftState {
            hard_state: self.hard_state,
            conf_state: self.snapshot.meta.conf_state.clone(),
        }
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        let base = self.offset + 1;
        let slice = &self.entries[(lo - base) as usize..(hi - base) as usize];
        Ok(limit_size(slice, max_bytes).to_vec())
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        let snap = self.offset;
        if index == snap {
            return Ok(self.offset_term);
        }
        if index < snap {
            return Err(StorageError::Compacted);
        }
        match self.entries.get((index - snap - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(StorageError::Unavailable(index)),
        }
    }

    fn first_index(&self) -> Index {
        self.offset + 1
    }

    fn last_index(&self) -> Index {
        self.offset + self.entries.len() as u64
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

/// The longest prefix of `entries` whose total size fits `max_bytes`, but at least one
/// entry so that progress is always possible.
pub(crate) fn limit_size(entries: &[Entry], max_bytes: u64) -> &[Entry] {
    let mut size = 0u64;
    for (i, e) in entries.iter().enumerate() {
        size += e.size_bytes();
        if size > max_bytes && i > 0 {
            return &entries[..i];
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ents(range: std::ops::RangeInclusive<u64>, term: Term) -> Vec<Entry> {
        range
            .map(|i| Entry::new(term, i, Bytes::from_static(b"x")))
            .collect()
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = MemStorage::new();
        s.append(&ents(1..=5, 1));
        s.append(&ents(4..=6, 2));
        assert_eq!(s.last_index(), 6);
        assert_eq!(s.term(3), Ok(1));
        assert_eq!(s.term(4), Ok(2));
        assert_eq!(s.term(7), Err(StorageError::Unavailable(7)));
    }

    #[test]
    fn entries_respects_byte_limit_but_returns_at_least_one() {
        let mut s = MemStorage::new();
        s.append(&ents(1..=5, 1));
        assert_eq!(s.entries(1, 6, 0).unwrap().len(), 1);
        let two = 2 * (ENTRY_SIZE);
        assert_eq!(s.entries(1, 6, two).unwrap().len(), 2);
        assert_eq!(s.entries(1, 6, u64::MAX).unwrap().len(), 5);
    }
    const ENTRY_SIZE: u64 = 1 + crate::types::ENTRY_OVERHEAD_BYTES;

    #[test]
    fn snapshot_then_compaction_moves_first_index() {
        let mut s = MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3]));
        s.append(&ents(1..=10, 3));
        s.create_snapshot(
            7,
            ConfState::with_voters([1, 2, 3]),
            Bytes::from_static(b"sm"),
        )
        .unwrap();
        s.compact_to_snapshot();
        assert_eq!(s.first_index(), 8);
        assert_eq!(s.term(7), Ok(3));
        assert_eq!(s.term(6), Err(StorageError::Compacted));
        assert_eq!(s.entries(5, 9, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(s.entries(8, 11, u64::MAX).unwrap().len(), 3);
    }

    #[test]
    fn applying_an_older_snapshot_is_refused() {
        let mut s = MemStorage::new();
        let snap = |index| Snapshot {
            meta: SnapshotMeta {
                index,
                term: 1,
                conf_state: ConfState::with_voters([1]),
            },
            data: Bytes::new(),
        };
        s.apply_snapshot(snap(5)).unwrap();
        assert_eq!(
            s.apply_snapshot(snap(4)),
            Err(StorageError::SnapshotOutOfDate)
        );
        assert_eq!(s.first_index(), 6);
        assert_eq!(s.last_index(), 5);
    }
}
