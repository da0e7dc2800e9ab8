//! The node's view of the replicated log: durable entries in `Storage` followed by the
//! unstable tail, with the commit and apply positions (§5.3, §5.4).
//!
//! Every read that reaches `Storage` can fail. Methods that answer a question about the
//! log (`match_term`, `is_up_to_date`, `maybe_append`, …) return the failure instead of
//! an answer, so that no caller can mistake an unreadable entry for a missing or
//! mismatching one; only `Compacted` and `Unavailable` are answers ("not held").

use crate::error::StorageError;
use crate::log_unstable::Unstable;
use crate::storage::{limit_size, Storage};
use crate::types::{Entry, Index, Snapshot, Term};

pub(crate) struct RaftLog<S: Storage> {
    pub(crate) storage: S,
    pub(crate) unstable: Unstable,
    /// The highest index known to be stored on a quorum (§5.3).
    pub(crate) committed: Index,
    /// The highest index the state machine has applied (acknowledged by `advance`).
    pub(crate) applied: Index,
    /// The highest index handed out for applying (`applied <= applying <= committed`).
    pub(crate) applying: Index,
    /// The runtime cannot take more committed entries for now (its apply queue is full).
    pub(crate) applying_paused: bool,
}

impl<S: Storage> RaftLog<S> {
    pub(crate) fn new(storage: S, committed: Index, applied: Index) -> RaftLog<S> {
        let first = storage.first_index();
        let last = storage.last_index();
        let applied = applied.max(first - 1);
        assert!(
            applied <= committed.max(first - 1),
            "applied index {applied} beyond commit index {committed}"
        );
        RaftLog {
            storage,
            unstable: Unstable::new(last + 1),
            committed,
            applied,
            applying: applied,
            applying_paused: false,
        }
    }

    pub(crate) fn first_index(&self) -> Index {
        self.unstable
            .maybe_first_index()
            .unwrap_or_else(|| self.storage.first_index())
    }

    pub(crate) fn last_index(&self) -> Index {
        self.unstable
            .maybe_last_index()
            .unwrap_or_else(|| self.storage.last_index())
    }

    /// The last index that is durable locally: everything before the unstable tail.
    pub(crate) fn persisted_index(&self) -> Index {
        if self.unstable.snapshot.is_some() {
            // Nothing from the new snapshot on is durable yet; what came before is moot.
            return 0;
        }
        (self.unstable.offset - 1).min(self.storage.last_index())
    }

    pub(crate) fn term(&self, index: Index) -> Result<Term, StorageError> {
        let dummy = self.first_index() - 1;
        if index < dummy {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        if let Some(t) = self.unstable.maybe_term(index) {
            return Ok(t);
        }
        self.storage.term(index)
    }

    /// The term of the last entry. The last index is always within the log or its
    /// snapshot, so any error (even `Compacted` or `Unavailable`, a storage breaking its
    /// own contract) means the term cannot be known.
    pub(crate) fn last_term(&self) -> Result<Term, StorageError> {
        self.term(self.last_index())
    }

    /// Whether the entry at `index` has `term`; an entry not held does not match.
    pub(crate) fn match_term(&self, index: Index, term: Term) -> Result<bool, StorageError> {
        match self.term(index) {
            Ok(t) => Ok(t == term),
            Err(e) if e.is_absent() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The voting rule (§5.4.1): a candidate's log is at least as up to date as ours if its
    /// last term is greater, or equal with an index at least as large.
    pub(crate) fn is_up_to_date(
        &self,
        last_index: Index,
        last_term: Term,
    ) -> Result<bool, StorageError> {
        let our_term = self.last_term()?;
        Ok(last_term > our_term || (last_term == our_term && last_index >= self.last_index()))
    }

    /// The follower's side of AppendEntries (§5.3). Returns the last index the new entries
    /// reach when the entry at `prev_index` has `prev_term`, `None` otherwise. Every read
    /// happens before the log changes, so a failed read leaves the log as it was.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        leader_commit: Index,
        entries: Vec<Entry>,
        skip_prev_term_check: bool,
    ) -> Result<Option<Index>, StorageError> {
        let prev_ok = if skip_prev_term_check {
            prev_index <= self.last_index() && prev_index + 1 >= self.first_index()
        } else {
            self.match_term(prev_index, prev_term)?
        };
        if !prev_ok {
            return Ok(None);
        }
        let last_new = prev_index + entries.len() as u64;
        let mut conflict = self.find_conflict(&entries)?;
        if skip_prev_term_check && conflict != 0 && conflict <= self.committed {
            // Without the check a leader can contradict our committed prefix; keep the
            // prefix (so the node stays runnable) and let the checkers see divergence.
            conflict = (self.committed + 1).min(last_new + 1);
            if conflict > last_new {
                conflict = 0;
            }
        }
        if conflict != 0 {
            assert!(
                conflict > self.committed,
                "entry {conflict} conflicts with the committed prefix (committed {})",
                self.committed
            );
            let skip = (conflict - (prev_index + 1)) as usize;
            let mut entries = entries;
            entries.drain(..skip);
            self.append(entries);
        }
        self.commit_to(leader_commit.min(last_new));
        Ok(Some(last_new))
    }

    /// Appends entries after the last index or over a conflicting uncommitted suffix.
    pub(crate) fn append(&mut self, entries: Vec<Entry>) -> Index {
        if let Some(first) = entries.first() {
            assert!(
                first.index > self.committed,
                "append at {} would overwrite committed index {}",
                first.index,
                self.committed
            );
            assert!(first.index <= self.last_index() + 1, "append leaves a gap");
            self.unstable.truncate_and_append(entries);
        }
        self.last_index()
    }

    /// The index of the first new entry that is absent or has a different term, 0 if every
    /// entry is already present.
    fn find_conflict(&self, entries: &[Entry]) -> Result<Index, StorageError> {
        for e in entries {
            if !self.match_term(e.index, e.term)? {
                return Ok(e.index);
            }
        }
        Ok(0)
    }

    /// The largest index `<= index` whose term is `<= term`, with that term: the point
    /// below which two logs can still match when one of them rejected (`index`, `term`).
    /// Walks one term at a time down the log, bounded by the first index; below it the
    /// term is not known and reported as 0.
    pub(crate) fn find_conflict_by_term(
        &self,
        index: Index,
        term: Term,
    ) -> Result<(Index, Term), StorageError> {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                Ok(t) => return Ok((i, t)),
                Err(e) if e.is_absent() => return Ok((i, 0)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Entries from `lo` to the end, at most `max_bytes` (but at least one).
    pub(crate) fn entries(&self, lo: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let last = self.last_index();
        if lo > last {
            return Ok(Vec::new());
        }
        self.slice(lo, last + 1, max_bytes)
    }

    /// Entries `[lo, hi)` limited to `max_bytes` (but at least one).
    pub(crate) fn slice(
        &self,
        lo: Index,
        hi: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        let split = self.unstable.offset;
        let mut out = if lo < split {
            let stored = self.storage.entries(lo, hi.min(split), max_bytes)?;
            if stored.is_empty() || stored.last().map(|e| e.index + 1) != Some(hi.min(split)) {
                // Cut short by the byte limit (or nothing to add): done.
                return Ok(stored);
            }
            stored
        } else {
            Vec::new()
        };
        if hi > split {
            let from = lo.max(split);
            let used: u64 = out.iter().map(Entry::size_bytes).sum();
            let rest = self.unstable.slice(from, hi);
            let budget = max_bytes.saturating_sub(used);
            let take = if out.is_empty() {
                limit_size(rest, budget)
            } else {
                let n = rest
                    .iter()
                    .scan(0u64, |acc, e| {
                        *acc += e.size_bytes();
                        Some(*acc)
                    })
                    .take_while(|&acc| acc <= budget)
                    .count();
                &rest[..n]
            };
            out.extend_from_slice(take);
        }
        Ok(out)
    }

    pub(crate) fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit index {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Advances the commit index to `index` if the entry there has term `term` — the
    /// leader's rule of §5.4.2 (`term` is the leader's current term).
    pub(crate) fn maybe_commit(
        &mut self,
        index: Index,
        term: Option<Term>,
    ) -> Result<bool, StorageError> {
        if index <= self.committed {
            return Ok(false);
        }
        if let Some(t) = term {
            if !self.match_term(index, t)? {
                return Ok(false);
            }
        }
        self.commit_to(index);
        Ok(true)
    }

    /// The highest index that may be handed out for applying: committed and durable
    /// locally.
    pub(crate) fn max_appliable_index(&self) -> Index {
        self.committed.min(self.persisted_index())
    }

    pub(crate) fn has_next_committed_entries(&self) -> bool {
        !self.applying_paused
            && self.unstable.snapshot.is_none()
            && self.applying < self.max_appliable_index()
    }

    /// The next committed entries to hand out for applying. They are committed and held
    /// locally, so any error (even `Compacted` or `Unavailable`) means they cannot be
    /// read.
    pub(crate) fn next_committed_entries(
        &self,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if !self.has_next_committed_entries() {
            return Ok(Vec::new());
        }
        let hi = self.max_appliable_index() + 1;
        self.slice(self.applying + 1, hi, max_bytes)
    }

    pub(crate) fn applied_to(&mut self, index: Index) {
        if index == 0 {
            return;
        }
        assert!(
            index <= self.committed && index >= self.applied,
            "applied {index} outside [{}, {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
        self.applying = self.applying.max(index);
    }

    /// Entries up to `index` were handed out for applying.
    pub(crate) fn applying_to(&mut self, index: Index) {
        assert!(index <= self.committed && index >= self.applying);
        self.applying = index;
    }

    pub(crate) fn stable_to(&mut self, index: Index, term: Term) {
        self.unstable.stable_to(index, term);
    }

    pub(crate) fn stable_snap_to(&mut self, index: Index) {
        self.unstable.stable_snap_to(index);
    }

    /// Replaces the whole log with a snapshot from the leader (§7).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        self.committed = snapshot.meta.index;
        self.unstable.restore(snapshot);
    }

    pub(crate) fn snapshot(&self) -> Result<Snapshot, StorageError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(s.clone()),
            None => self.storage.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use bytes::Bytes;

    fn e(index: Index, term: Term) -> Entry {
        Entry::new(term, index, Bytes::new())
    }

    fn log_with(terms: &[Term]) -> RaftLog<MemStorage> {
        let mut s = MemStorage::new();
        let ents: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| e(i as u64 + 1, t))
            .collect();
        s.append(&ents);
        RaftLog::new(s, 0, 0)
    }

    #[test]
    fn append_is_refused_when_prev_term_does_not_match() {
        let mut log = log_with(&[1, 1, 2]);
        assert_eq!(log.maybe_append(3, 1, 0, vec![e(4, 3)], false), Ok(None));
        assert_eq!(
            log.maybe_append(4, 2, 0, vec![e(5, 3)], false),
            Ok(None),
            "gap"
        );
        assert_eq!(log.maybe_append(3, 2, 0, vec![e(4, 3)], false), Ok(Some(4)));
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn append_overwrites_conflicting_suffix_but_keeps_matching_entries() {
        let mut log = log_with(&[1, 1, 1, 1]);
        assert_eq!(
            log.maybe_append(1, 1, 2, vec![e(2, 1), e(3, 2)], false),
            Ok(Some(3))
        );
        assert_eq!(
            log.last_index(),
            3,
            "entry 4 followed the conflicting entry 3"
        );
        assert_eq!(log.term(3), Ok(2));
        assert_eq!(log.committed, 2);
    }

    #[test]
    fn stale_append_does_not_truncate_newer_entries() {
        let mut log = log_with(&[1, 1, 1, 1]);
        assert_eq!(log.maybe_append(1, 1, 0, vec![e(2, 1)], false), Ok(Some(2)));
        assert_eq!(log.last_index(), 4);
    }

    #[test]
    fn up_to_date_compares_last_term_then_last_index() {
        let log = log_with(&[1, 2, 2]);
        assert_eq!(log.is_up_to_date(1, 3), Ok(true));
        assert_eq!(log.is_up_to_date(3, 2), Ok(true));
        assert_eq!(log.is_up_to_date(2, 2), Ok(false));
        assert_eq!(log.is_up_to_date(9, 1), Ok(false));
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_with(&[1, 1, 2, 2, 2, 4, 4]);
        assert_eq!(log.find_conflict_by_term(7, 3), Ok((5, 2)));
        assert_eq!(log.find_conflict_by_term(7, 4), Ok((7, 4)));
        assert_eq!(log.find_conflict_by_term(9, 1), Ok((2, 1)));
        assert_eq!(log.find_conflict_by_term(3, 0), Ok((0, 0)));
    }

    #[test]
    fn commit_requires_current_term_when_given() {
        let mut log = log_with(&[1, 2]);
        assert_eq!(log.maybe_commit(1, Some(2)), Ok(false));
        assert_eq!(log.maybe_commit(2, Some(2)), Ok(true));
        assert_eq!(log.committed, 2);
    }

    #[test]
    fn slice_spans_storage_and_unstable_within_byte_limit() {
        let mut log = log_with(&[1, 1, 1]);
        log.append(vec![e(4, 1), e(5, 1)]);
        assert_eq!(log.slice(2, 6, u64::MAX).unwrap().len(), 4);
        let two = 2 * crate::types::ENTRY_OVERHEAD_BYTES;
        assert_eq!(log.slice(2, 6, two).unwrap().len(), 2);
        assert_eq!(log.slice(3, 6, two).unwrap().len(), 2);
        assert_eq!(log.slice(4, 6, 0).unwrap().len(), 1);
    }

    /// Storage whose term and entry reads fail, as a disk that returns checksum errors.
    struct Unreadable(MemStorage);

    fn read_failed() -> StorageError {
        StorageError::ReadFailed("checksum mismatch in 1.log at offset 64".into())
    }

    impl Storage for Unreadable {
        fn initial_state(&self) -> crate::storage::RaftState {
            self.0.initial_state()
        }
        fn entries(&self, _: Index, _: Index, _: u64) -> Result<Vec<Entry>, StorageError> {
            Err(read_failed())
        }
        fn term(&self, _: Index) -> Result<Term, StorageError> {
            Err(read_failed())
        }
        fn first_index(&self) -> Index {
            self.0.first_index()
        }
        fn last_index(&self) -> Index {
            self.0.last_index()
        }
        fn snapshot(&self) -> Result<Snapshot, StorageError> {
            self.0.snapshot()
        }
    }

    fn unreadable_log_with(terms: &[Term]) -> RaftLog<Unreadable> {
        let log = log_with(terms);
        RaftLog::new(Unreadable(log.storage), 0, 0)
    }

    #[test]
    fn a_failed_read_is_neither_a_match_nor_a_mismatch() {
        let log = unreadable_log_with(&[1, 1, 2]);
        assert_eq!(log.match_term(3, 2), Err(read_failed()));
        assert_eq!(log.match_term(3, 1), Err(read_failed()));
        // Past the end nothing is read: the entry is simply not held.
        assert_eq!(log.match_term(4, 2), Ok(false));
        assert_eq!(log.last_term(), Err(read_failed()));
        assert_eq!(log.is_up_to_date(9, 9), Err(read_failed()));
        assert_eq!(log.find_conflict_by_term(3, 1), Err(read_failed()));
    }

    #[test]
    fn an_append_checked_against_an_unreadable_entry_changes_nothing() {
        let mut log = unreadable_log_with(&[1, 1, 2]);
        assert_eq!(
            log.maybe_append(3, 2, 4, vec![e(4, 2)], false),
            Err(read_failed())
        );
        assert_eq!((log.last_index(), log.committed), (3, 0));
        assert!(log.unstable.entries.is_empty());
    }

    #[test]
    fn committed_entries_that_cannot_be_read_are_an_error() {
        let mut log = unreadable_log_with(&[1, 1]);
        log.commit_to(2);
        assert_eq!(log.next_committed_entries(u64::MAX), Err(read_failed()));
        assert_eq!(log.applying, 0, "nothing was handed out");
    }

    #[test]
    fn committed_entries_wait_for_local_durability() {
        let mut log = log_with(&[1, 1]);
        log.append(vec![e(3, 1)]);
        log.commit_to(3);
        assert_eq!(log.next_committed_entries(u64::MAX).unwrap().len(), 2);
        log.storage.append(&[e(3, 1)]);
        log.stable_to(3, 1);
        assert_eq!(log.next_committed_entries(u64::MAX).unwrap().len(), 3);
    }
}
