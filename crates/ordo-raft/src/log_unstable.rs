//! Entries and snapshot accepted by the core but not yet durable.
//!
//! They live here from the moment a leader appends or a follower accepts them until the
//! runtime reports them durable (`RawNode::advance`); only then does the core read them
//! from `Storage` and count them as persisted.

use crate::types::{Entry, Index, Snapshot, Term};

#[derive(Debug, Default)]
pub(crate) struct Unstable {
    /// A snapshot received from the leader and not yet durable.
    pub(crate) snapshot: Option<Snapshot>,
    /// Consecutive entries starting at `offset`.
    pub(crate) entries: Vec<Entry>,
    /// The index of `entries[0]`, or where the next entry would go.
    pub(crate) offset: Index,
}

impl Unstable {
    pub(crate) fn new(offset: Index) -> Unstable {
        Unstable {
            snapshot: None,
            entries: Vec::new(),
            offset,
        }
    }

    /// The first index, if the unstable part starts the log (a pending snapshot).
    pub(crate) fn maybe_first_index(&self) -> Option<Index> {
        self.snapshot.as_ref().map(|s| s.meta.index + 1)
    }

    pub(crate) fn maybe_last_index(&self) -> Option<Index> {
        match self.entries.last() {
            Some(e) => Some(e.index),
            None => self.snapshot.as_ref().map(|s| s.meta.index),
        }
    }

    pub(crate) fn maybe_term(&self, index: Index) -> Option<Term> {
        if index < self.offset {
            let snap = self.snapshot.as_ref()?;
            return (snap.meta.index == index).then_some(snap.meta.term);
        }
        self.entries
            .get((index - self.offset) as usize)
            .map(|e| e.term)
    }

    /// Entries up to `index` (with term `term`) are durable. A mismatching term means the
    /// entries were replaced while the write was in flight; they stay unstable.
    pub(crate) fn stable_to(&mut self, index: Index, term: Term) {
        if index < self.offset || self.maybe_term(index) != Some(term) {
            return;
        }
        let n = (index + 1 - self.offset) as usize;
        self.entries.drain(..n);
        self.offset = index + 1;
        if self.entries.capacity() > 4096 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
    }

    pub(crate) fn stable_snap_to(&mut self, index: Index) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.snapshot = None;
        }
    }

    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        self.offset = snapshot.meta.index + 1;
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    /// Appends `entries`, first dropping any unstable entries they overwrite. The caller
    /// guarantees the first new index is at most `last_index + 1`.
    pub(crate) fn truncate_and_append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        if after == self.offset + self.entries.len() as u64 {
            // The common case: a plain append.
            if self.entries.is_empty() {
                self.entries = entries;
            } else {
                self.entries.extend(entries);
            }
        } else if after <= self.offset {
            // Replaces everything unstable, and possibly durable entries too: the new
            // entries become the unstable tail and storage is overwritten when persisted.
            self.offset = after;
            self.entries = entries;
        } else {
            self.entries.truncate((after - self.offset) as usize);
            self.entries.extend(entries);
        }
    }

    /// Entries `[lo, hi)`, which must lie within the unstable entries.
    pub(crate) fn slice(&self, lo: Index, hi: Index) -> &[Entry] {
        assert!(
            self.offset <= lo && lo <= hi && hi <= self.offset + self.entries.len() as u64,
            "unstable slice [{lo}, {hi}) out of bounds (offset {}, len {})",
            self.offset,
            self.entries.len()
        );
        &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn e(index: Index, term: Term) -> Entry {
        Entry::new(term, index, Bytes::new())
    }

    #[test]
    fn stable_to_drops_only_matching_prefix() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(vec![e(5, 1), e(6, 1), e(7, 2)]);
        u.stable_to(6, 2);
        assert_eq!(u.offset, 5, "term mismatch keeps entries unstable");
        u.stable_to(6, 1);
        assert_eq!(u.offset, 7);
        assert_eq!(u.entries, vec![e(7, 2)]);
        u.stable_to(4, 1);
        assert_eq!(u.offset, 7, "already stable");
    }

    #[test]
    fn truncate_and_append_replaces_conflicting_suffix() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(vec![e(5, 1), e(6, 1), e(7, 1)]);
        u.truncate_and_append(vec![e(6, 2), e(7, 2)]);
        assert_eq!(u.entries, vec![e(5, 1), e(6, 2), e(7, 2)]);
        u.truncate_and_append(vec![e(3, 3)]);
        assert_eq!(u.offset, 3);
        assert_eq!(u.entries, vec![e(3, 3)]);
        assert_eq!(u.maybe_last_index(), Some(3));
    }

    #[test]
    fn pending_snapshot_defines_first_and_last_index() {
        let mut u = Unstable::new(1);
        let mut snap = Snapshot::default();
        snap.meta.index = 9;
        snap.meta.term = 4;
        u.restore(snap);
        assert_eq!(u.maybe_first_index(), Some(10));
        assert_eq!(u.maybe_last_index(), Some(9));
        assert_eq!(u.maybe_term(9), Some(4));
        assert_eq!(u.maybe_term(8), None);
        u.stable_snap_to(9);
        assert!(u.snapshot.is_none());
    }
}
