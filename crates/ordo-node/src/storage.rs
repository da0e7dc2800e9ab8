//! The Raft core's [`Storage`] over `ordo-wal`, and the writes a `Ready` asks for.
//!
//! The WAL holds the entries, the hard state and snapshot files. This module adds what the
//! core needs on top: the term of the entry just before the first retained one (the
//! compaction point), the configuration recorded with the snapshot, and the snapshot's
//! data for sending to a lagging follower.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use ordo_raft::{
    ConfState, Entry, HardState, Index, RaftState, Snapshot, SnapshotMeta, Storage, StorageError,
    Term,
};
use ordo_wal::GroupLog;

use crate::codec::{decode_conf_state, encode_conf_state, entry_kind_from_u8, entry_kind_to_u8};
use crate::identity::LostState;

/// Why the runtime could not persist or load a group's state.
#[derive(Debug, thiserror::Error)]
pub enum StorageFailure {
    /// The WAL failed (I/O, corruption naming file and offset, …).
    #[error(transparent)]
    Wal(#[from] ordo_wal::Error),
    /// A snapshot's configuration blob or an entry kind does not decode.
    #[error("{what} in {dir}: {reason}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// The group's data directory.
        dir: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing snapshot data failed.
    #[error("snapshot data in {dir}: {source}")]
    SnapshotIo {
        /// The group's data directory.
        dir: String,
        /// The error.
        source: std::io::Error,
    },
    /// The directory holds less than this node had made durable and promised.
    #[error(transparent)]
    LostState(#[from] crate::identity::LostState),
    /// A snapshot is larger than the configured maximum.
    #[error("snapshot of {bytes} bytes exceeds snapshot_bytes_max {max}")]
    SnapshotTooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct Inner {
    /// The index before the first retained entry, and its term.
    compacted: (Index, Term),
    /// The newest snapshot's metadata.
    snapshot_meta: SnapshotMeta,
    /// Its data, loaded when first asked for.
    snapshot_data: Option<Bytes>,
    /// The configuration as of the core's applied index; a stored snapshot with another
    /// configuration is refused for sending (a node just added would not be in it).
    conf_now: ConfState,
    hard_state: HardState,
}

/// [`Storage`] over a group's WAL. Cheap to clone; clones share state.
#[derive(Clone, Debug)]
pub struct WalStorage {
    wal: GroupLog,
    inner: Arc<Mutex<Inner>>,
    snapshot_bytes_max: u64,
    /// Set when the core asked for a snapshot that is missing or predates the current
    /// configuration; the runtime then takes a fresh one.
    snapshot_wanted: Arc<AtomicBool>,
    /// The first read that failed (I/O, corruption), as reported to the core in
    /// `StorageError::ReadFailed`; the runtime polls it and stops the group.
    failed: Arc<OnceLock<String>>,
    /// The newest entries appended, as they were handed to the WAL.
    recent: Arc<Mutex<RecentEntries>>,
}

/// Payload bytes of recently appended entries kept in memory, unless set otherwise with
/// [`WalStorage::with_log_cache_bytes`].
pub const LOG_CACHE_BYTES_DEFAULT: u64 = 8 << 20;
/// Recently appended entries kept in memory.
const RECENT_ENTRIES_MAX: usize = 1 << 16;

/// The tail of the log as last appended, so that the reads that follow every append (the
/// committed entries to apply, a leader's appends to its followers) do not read back,
/// checksum and decode what was just written. Always a contiguous run of the log's
/// newest entries, identical to what the WAL holds; anything that cuts the log cuts it.
#[derive(Debug)]
struct RecentEntries {
    entries: std::collections::VecDeque<Entry>,
    payload_bytes: u64,
    payload_bytes_max: u64,
}

impl Default for RecentEntries {
    fn default() -> RecentEntries {
        RecentEntries {
            entries: std::collections::VecDeque::new(),
            payload_bytes: 0,
            payload_bytes_max: LOG_CACHE_BYTES_DEFAULT,
        }
    }
}

impl RecentEntries {
    /// Records entries just appended after cutting the log at their first index.
    fn appended(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        self.cut_from(first.index);
        if self
            .entries
            .back()
            .is_some_and(|last| last.index + 1 != first.index)
        {
            self.clear();
        }
        for e in new {
            self.payload_bytes += e.data.len() as u64;
            self.entries.push_back(e.clone());
        }
        while self.payload_bytes > self.payload_bytes_max || self.entries.len() > RECENT_ENTRIES_MAX
        {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.payload_bytes -= old.data.len() as u64;
        }
    }

    /// Forgets entries at and after `index`.
    fn cut_from(&mut self, index: Index) {
        while self.entries.back().is_some_and(|e| e.index >= index) {
            if let Some(e) = self.entries.pop_back() {
                self.payload_bytes -= e.data.len() as u64;
            }
        }
    }

    /// Forgets entries through `index`.
    fn cut_through(&mut self, index: Index) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            if let Some(e) = self.entries.pop_front() {
                self.payload_bytes -= e.data.len() as u64;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.payload_bytes = 0;
    }

    /// Entries `[lo, hi)` within `max_bytes` counted as the WAL counts them (at least
    /// one), if every one of them is held here.
    fn read(&self, lo: Index, hi: Index, max_bytes: u64) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.index;
        let last = self.entries.back()?.index;
        if lo < first || hi == 0 || hi - 1 > last || lo >= hi {
            return None;
        }
        let start = usize::try_from(lo - first).ok()?;
        let mut out = Vec::new();
        let mut total = 0u64;
        for e in self.entries.range(start..).take_while(|e| e.index < hi) {
            let len = (ordo_wal::RECORD_HEADER_BYTES + e.data.len()) as u64;
            if !out.is_empty() && total + len > max_bytes {
                break;
            }
            total += len;
            out.push(e.clone());
        }
        assert!(
            out.first().is_some_and(|e| e.index == lo),
            "the recent entries are contiguous"
        );
        Some(out)
    }
}

pub(crate) fn to_wal_entry(e: &Entry) -> ordo_wal::Entry {
    ordo_wal::Entry {
        index: e.index,
        term: e.term,
        kind: entry_kind_to_u8(e.kind),
        payload: e.data.clone(),
    }
}

impl WalStorage {
    /// Opens the storage over a recovered WAL. If the log still holds entries the newest
    /// snapshot covers, they are dropped so that the compaction point is the snapshot
    /// (its term is known; the term of an arbitrary earlier entry would not be after a
    /// restart).
    pub fn open(wal: GroupLog, snapshot_bytes_max: u64) -> Result<WalStorage, StorageFailure> {
        let dir = wal.dir().display().to_string();
        let (snapshot_meta, compacted) = match wal.latest_snapshot() {
            Some(meta) => {
                let conf_state = decode_conf_state(meta.config.clone()).map_err(|e| {
                    StorageFailure::Malformed {
                        what: "snapshot configuration",
                        dir: dir.clone(),
                        reason: e.to_string(),
                    }
                })?;
                if wal.first_index() <= meta.last_index {
                    // A crash while installing a leader's snapshot can leave entries after
                    // its index from a history that diverged before it. They follow the
                    // snapshot only if the entry at its index has its term (log matching).
                    if meta.last_index < wal.last_index()
                        && wal.term_at(meta.last_index)? != meta.last_term
                    {
                        wal.truncate_suffix(meta.last_index + 1)?;
                    }
                    wal.truncate_prefix(meta.last_index)?;
                }
                let m = SnapshotMeta {
                    index: meta.last_index,
                    term: meta.last_term,
                    conf_state,
                };
                (m, (meta.last_index, meta.last_term))
            }
            None => (SnapshotMeta::default(), (0, 0)),
        };
        if wal.first_index() > compacted.0 + 1 {
            return Err(LostState::SnapshotMissing {
                dir: wal.dir().to_path_buf(),
                first: wal.first_index(),
                snapshot: compacted.0,
            }
            .into());
        }
        if wal.first_index() != compacted.0 + 1 {
            return Err(StorageFailure::Malformed {
                what: "log start",
                dir,
                reason: format!(
                    "the log starts at {} but the newest snapshot ends at {}",
                    wal.first_index(),
                    compacted.0
                ),
            });
        }
        let whs = wal.hard_state();
        let held = wal.last_index().max(compacted.0);
        // The runtime records a commit index only once the log durably holds it (and a
        // suffix cut lowers the durable index first), so a larger one means durable
        // entries are gone: entries this node acknowledged and may have counted towards a
        // quorum. Running on would let it vote for a leader that lacks them.
        if whs.commit > held {
            return Err(LostState::CommitBeyondLog {
                dir: wal.dir().to_path_buf(),
                commit: whs.commit,
                held,
            }
            .into());
        }
        let hard_state = HardState {
            term: whs.term.max(compacted.1),
            vote: whs.vote.unwrap_or(0),
            // The snapshot is committed by definition.
            commit: whs.commit.max(compacted.0),
        };
        let conf_now = snapshot_meta.conf_state.clone();
        Ok(WalStorage {
            wal,
            inner: Arc::new(Mutex::new(Inner {
                compacted,
                snapshot_meta,
                snapshot_data: None,
                conf_now,
                hard_state,
            })),
            snapshot_bytes_max,
            snapshot_wanted: Arc::new(AtomicBool::new(false)),
            failed: Arc::new(OnceLock::new()),
            recent: Arc::default(),
        })
    }

    /// Keeps at most `bytes` of payload of the newest entries in memory (see
    /// [`LOG_CACHE_BYTES_DEFAULT`]); older entries are read back from the WAL.
    pub fn with_log_cache_bytes(self, bytes: u64) -> WalStorage {
        lock(&self.recent).payload_bytes_max = bytes;
        self
    }

    /// The group's log.
    pub fn wal(&self) -> &GroupLog {
        &self.wal
    }

    /// The newest snapshot's metadata.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        lock(&self.inner).snapshot_meta.clone()
    }

    /// Reads the newest snapshot's data from its file, verifying its checksum.
    pub fn read_snapshot_data(&self) -> Result<Bytes, StorageFailure> {
        Ok(self
            .read_snapshot()?
            .map_or_else(Bytes::new, |(_, data)| data))
    }

    /// Reads the newest snapshot file: its index and its data, checksum verified.
    fn read_snapshot(&self) -> Result<Option<(Index, Bytes)>, StorageFailure> {
        let dir = self.wal.dir().display().to_string();
        let Some(mut reader) = self.wal.open_snapshot()? else {
            return Ok(None);
        };
        let index = reader.meta().last_index;
        let mut data = Vec::new();
        reader
            .by_ref()
            .take(self.snapshot_bytes_max + 1)
            .read_to_end(&mut data)
            .map_err(|source| StorageFailure::SnapshotIo { dir, source })?;
        if data.len() as u64 > self.snapshot_bytes_max {
            return Err(StorageFailure::SnapshotTooLarge {
                bytes: data.len() as u64,
                max: self.snapshot_bytes_max,
            });
        }
        Ok(Some((index, data.into())))
    }

    /// Writes a snapshot file and installs it (atomically, by the WAL).
    pub fn write_snapshot(
        wal: &GroupLog,
        index: Index,
        term: Term,
        conf_state: &ConfState,
        data: &[u8],
    ) -> Result<(), StorageFailure> {
        let meta = ordo_wal::SnapshotMeta {
            last_index: index,
            last_term: term,
            config: encode_conf_state(conf_state),
        };
        let mut writer = wal.snapshot_writer(meta)?;
        writer
            .write_all(data)
            .map_err(|source| StorageFailure::SnapshotIo {
                dir: wal.dir().display().to_string(),
                source,
            })?;
        writer.finish()?;
        Ok(())
    }

    /// Records a snapshot this node took (already written by [`WalStorage::write_snapshot`]).
    pub fn note_snapshot_taken(&self, meta: SnapshotMeta) {
        let mut inner = lock(&self.inner);
        if meta.index > inner.snapshot_meta.index {
            inner.snapshot_meta = meta;
            inner.snapshot_data = None;
        }
    }

    /// Installs a snapshot from the leader: writes its file, discards the whole log and
    /// moves the compaction point to it.
    pub fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageFailure> {
        let meta = &snapshot.meta;
        Self::write_snapshot(
            &self.wal,
            meta.index,
            meta.term,
            &meta.conf_state,
            &snapshot.data,
        )?;
        let first = self.wal.first_index();
        if self.wal.last_index() >= first {
            self.wal.truncate_suffix(first)?;
        }
        self.wal.truncate_prefix(meta.index)?;
        lock(&self.recent).clear();
        let mut inner = lock(&self.inner);
        inner.compacted = (meta.index, meta.term);
        inner.snapshot_meta = meta.clone();
        inner.snapshot_data = Some(snapshot.data.clone());
        inner.conf_now = meta.conf_state.clone();
        Ok(())
    }

    /// Appends entries, first cutting any stored entries at or after the first new index
    /// (a follower overwriting a conflicting suffix). Returns the last index written.
    pub fn append(&self, entries: &[Entry]) -> Result<Option<Index>, StorageFailure> {
        let Some(first) = entries.first() else {
            return Ok(None);
        };
        assert!(
            first.index > lock(&self.inner).compacted.0,
            "append at {} overwrites the compacted prefix",
            first.index
        );
        if first.index <= self.wal.last_index() {
            lock(&self.recent).cut_from(first.index);
            self.wal.truncate_suffix(first.index)?;
        }
        let converted: Vec<ordo_wal::Entry> = entries.iter().map(to_wal_entry).collect();
        let last = self.wal.append(&converted)?;
        lock(&self.recent).appended(entries);
        Ok(Some(last))
    }

    /// Persists the hard state, durably.
    pub fn set_hard_state(&self, hs: HardState) -> Result<(), StorageFailure> {
        self.wal.set_hard_state(ordo_wal::HardState {
            term: hs.term,
            vote: (hs.vote != 0).then_some(hs.vote),
            commit: hs.commit,
        })?;
        lock(&self.inner).hard_state = hs;
        Ok(())
    }

    /// Removes entries through `through` (which must be at most the snapshot index).
    pub fn compact(&self, through: Index) -> Result<(), StorageFailure> {
        let mut inner = lock(&self.inner);
        assert!(
            through <= inner.snapshot_meta.index,
            "compaction through {through} passes the snapshot at {}",
            inner.snapshot_meta.index
        );
        if through <= inner.compacted.0 {
            return Ok(());
        }
        let term = self.wal.term_at(through)?;
        self.wal.truncate_prefix(through)?;
        lock(&self.recent).cut_through(through);
        inner.compacted = (through, term);
        Ok(())
    }

    /// Records the configuration as of the core's applied index.
    pub fn set_conf_now(&self, conf_state: ConfState) {
        lock(&self.inner).conf_now = conf_state;
    }

    /// Whether the core asked for a snapshot the storage could not give; clears the flag.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::AcqRel)
    }

    /// The first read that failed, if any: the text the core was given in
    /// [`StorageError::ReadFailed`] (for the WAL, naming the file and byte offset).
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// Records a failed read and returns it as the core's error.
    fn fail(&self, reason: String) -> StorageError {
        tracing::error!(dir = %self.wal.dir().display(), error = %reason, "log read failed");
        // The first failure is kept; later ones are logged only.
        let _ = self.failed.set(reason.clone());
        StorageError::ReadFailed(reason)
    }

    fn map_err(&self, error: ordo_wal::Error) -> StorageError {
        match error {
            ordo_wal::Error::Compacted { .. } => StorageError::Compacted,
            ordo_wal::Error::Unavailable { index, .. } => StorageError::Unavailable(index),
            other => self.fail(other.to_string()),
        }
    }
}

/// A group's log storage as the group core and its runtime use it: the Raft core's
/// read-only [`Storage`] view, the writes the core's commands ask for, and the bookkeeping
/// the core notes in it. Implemented over the WAL ([`WalStorage`]) and by the simulator's
/// disk. Methods take `&self`: the core's `RawNode` and the runtime share one storage.
pub trait LogStore: Storage {
    /// Installs a snapshot from the leader: writes it, discards the whole log and moves
    /// the compaction point to it; durable on return.
    fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageFailure>;
    /// Appends entries, first cutting stored entries at and after the first new index.
    /// Returns the last index written; durable once [`LogStore::durable_index`] reaches it.
    fn append(&self, entries: &[Entry]) -> Result<Option<Index>, StorageFailure>;
    /// Replaces the hard state; durable on return.
    fn set_hard_state(&self, hs: HardState) -> Result<(), StorageFailure>;
    /// Discards entries through `through`, which a snapshot covers.
    fn compact(&self, through: Index) -> Result<(), StorageFailure>;
    /// Writes and installs a snapshot of this node's own state machine.
    fn write_snapshot(
        &self,
        index: Index,
        term: Term,
        conf_state: &ConfState,
        data: &[u8],
    ) -> Result<(), StorageFailure>;
    /// The highest index the log holds durably.
    fn durable_index(&self) -> Index;
    /// The newest snapshot's metadata.
    fn snapshot_meta(&self) -> SnapshotMeta;
    /// Records a snapshot this node took (already written by `write_snapshot`).
    fn note_snapshot_taken(&self, meta: SnapshotMeta);
    /// Records the configuration as of the core's applied index: a stored snapshot with
    /// another one is not sent to followers.
    fn set_conf_now(&self, conf_state: ConfState);
    /// Whether the core asked for a snapshot storage could not give; clears the flag.
    fn take_snapshot_wanted(&self) -> bool;
    /// A read failure the core could not be told about, if any.
    fn failure(&self) -> Option<String>;

    /// Carries out a [`Persist`](crate::core::Persist) command, in the order the Raft core
    /// requires: snapshot, entries, hard state. Returns the last index appended, which is
    /// durable once [`LogStore::durable_index`] reaches it (the snapshot and the hard state
    /// are durable on return). The hard state's commit index is only a hint for a restart
    /// and is never recorded beyond what the log durably holds.
    fn persist(&self, persist: &crate::core::Persist) -> Result<Option<Index>, StorageFailure> {
        if let Some(snapshot) = &persist.snapshot {
            self.install_snapshot(snapshot)?;
        }
        let last = self.append(&persist.entries)?;
        if let Some(hs) = persist.hard_state {
            self.record_hard_state(hs)?;
        }
        Ok(last)
    }

    /// Writes `hs` with its commit index bounded by the durable log.
    fn record_hard_state(&self, hs: HardState) -> Result<(), StorageFailure> {
        let commit = hs.commit.min(self.durable_index());
        self.set_hard_state(HardState { commit, ..hs })
    }
}

impl LogStore for WalStorage {
    fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageFailure> {
        WalStorage::install_snapshot(self, snapshot)
    }

    fn append(&self, entries: &[Entry]) -> Result<Option<Index>, StorageFailure> {
        WalStorage::append(self, entries)
    }

    fn set_hard_state(&self, hs: HardState) -> Result<(), StorageFailure> {
        WalStorage::set_hard_state(self, hs)
    }

    fn compact(&self, through: Index) -> Result<(), StorageFailure> {
        WalStorage::compact(self, through)
    }

    fn write_snapshot(
        &self,
        index: Index,
        term: Term,
        conf_state: &ConfState,
        data: &[u8],
    ) -> Result<(), StorageFailure> {
        WalStorage::write_snapshot(&self.wal, index, term, conf_state, data)
    }

    fn durable_index(&self) -> Index {
        self.wal.durable_index()
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        WalStorage::snapshot_meta(self)
    }

    fn note_snapshot_taken(&self, meta: SnapshotMeta) {
        WalStorage::note_snapshot_taken(self, meta)
    }

    fn set_conf_now(&self, conf_state: ConfState) {
        WalStorage::set_conf_now(self, conf_state)
    }

    fn take_snapshot_wanted(&self) -> bool {
        WalStorage::take_snapshot_wanted(self)
    }

    fn failure(&self) -> Option<String> {
        WalStorage::failure(self)
    }
}

impl Storage for WalStorage {
    fn initial_state(&self) -> RaftState {
        let inner = lock(&self.inner);
        RaftState {
            hard_state: inner.hard_state,
            conf_state: inner.snapshot_meta.conf_state.clone(),
        }
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo <= lock(&self.inner).compacted.0 {
            return Err(StorageError::Compacted);
        }
        if let Some(recent) = lock(&self.recent).read(lo, hi, max_bytes) {
            return Ok(recent);
        }
        let read = self
            .wal
            .entries(lo, hi, max_bytes)
            .map_err(|e| self.map_err(e))?;
        let mut out = Vec::with_capacity(read.len());
        for e in read {
            let kind = match entry_kind_from_u8(e.kind) {
                Ok(kind) => kind,
                Err(_) => {
                    let malformed = StorageFailure::Malformed {
                        what: "log entry",
                        dir: self.wal.dir().display().to_string(),
                        reason: format!("entry {} has unknown kind {}", e.index, e.kind),
                    };
                    return Err(self.fail(malformed.to_string()));
                }
            };
            out.push(Entry {
                term: e.term,
                index: e.index,
                kind,
                data: e.payload,
            });
        }
        Ok(out)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        let compacted = lock(&self.inner).compacted;
        if index == compacted.0 {
            return Ok(compacted.1);
        }
        if index < compacted.0 {
            return Err(StorageError::Compacted);
        }
        self.wal.term_at(index).map_err(|e| self.map_err(e))
    }

    fn first_index(&self) -> Index {
        lock(&self.inner).compacted.0 + 1
    }

    fn last_index(&self) -> Index {
        self.wal.last_index().max(lock(&self.inner).compacted.0)
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        let (meta, cached) = {
            let inner = lock(&self.inner);
            if inner.snapshot_meta.index == 0 || inner.snapshot_meta.conf_state != inner.conf_now {
                drop(inner);
                self.snapshot_wanted.store(true, Ordering::Release);
                return Err(StorageError::SnapshotTemporarilyUnavailable);
            }
            (inner.snapshot_meta.clone(), inner.snapshot_data.clone())
        };
        let data = match cached {
            Some(data) => data,
            None => match self.read_snapshot() {
                Ok(Some((index, data))) if index == meta.index => {
                    let mut inner = lock(&self.inner);
                    if inner.snapshot_meta.index == meta.index {
                        inner.snapshot_data = Some(data.clone());
                    }
                    data
                }
                // A newer snapshot was installed meanwhile; the next attempt picks it up.
                Ok(_) => return Err(StorageError::SnapshotTemporarilyUnavailable),
                Err(error @ StorageFailure::SnapshotTooLarge { .. }) => {
                    // Readable, but over the configured limit: a later, smaller snapshot
                    // may fit, so this is no disk failure.
                    tracing::error!(%error, "the snapshot to send is too large");
                    return Err(StorageError::SnapshotTemporarilyUnavailable);
                }
                Err(error) => {
                    let latest = self.wal.latest_snapshot();
                    if latest
                        .is_some_and(|l| (l.last_index, l.last_term) != (meta.index, meta.term))
                    {
                        // A newer snapshot replaced the file between finding and opening
                        // it; the next attempt reads the new one.
                        return Err(StorageError::SnapshotTemporarilyUnavailable);
                    }
                    return Err(self.fail(error.to_string()));
                }
            },
        };
        Ok(Snapshot { meta, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term) -> ordo_wal::Entry {
        ordo_wal::Entry::new(index, term, 0, Bytes::from_static(b"e"))
    }

    fn open_wal(dir: &std::path::Path) -> GroupLog {
        let options = ordo_wal::SharedOptions::default();
        ordo_wal::SharedLog::open(dir, options)
            .unwrap()
            .group(1)
            .unwrap()
    }

    /// Where the group `open_wal` opens keeps its files of its own.
    fn wal_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("groups").join("1")
    }

    fn raft_entries(range: std::ops::RangeInclusive<Index>, term: Term, tag: &str) -> Vec<Entry> {
        range
            .map(|index| Entry {
                term,
                index,
                kind: ordo_raft::EntryKind::Normal,
                data: Bytes::from(format!("{tag}{index}").repeat(index as usize % 7 + 1)),
            })
            .collect()
    }

    #[test]
    fn reads_served_from_recent_entries_match_the_wal_through_overwrites_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(dir.path());
        let storage = WalStorage::open(wal.clone(), 1 << 20).unwrap();
        // A storage over the same WAL that has appended nothing reads everything from disk.
        let disk = || WalStorage::open(wal.clone(), 1 << 20).unwrap();
        let check = |storage: &WalStorage| {
            let last = storage.last_index();
            let first = Storage::first_index(storage);
            for lo in first..=last {
                for hi in lo..=last + 1 {
                    for max_bytes in [0, 40, 100, u64::MAX] {
                        assert_eq!(
                            storage.entries(lo, hi, max_bytes),
                            disk().entries(lo, hi, max_bytes),
                            "entries({lo}, {hi}, {max_bytes})"
                        );
                    }
                }
            }
        };
        storage.append(&raft_entries(1..=12, 1, "a")).unwrap();
        check(&storage);
        // A new leader's entries overwrite the suffix from 9 on.
        storage.append(&raft_entries(9..=15, 2, "b")).unwrap();
        assert_eq!(storage.entries(9, 10, u64::MAX).unwrap()[0].term, 2);
        check(&storage);
        WalStorage::write_snapshot(&wal, 10, 2, &ConfState::with_voters([1]), b"s").unwrap();
        storage.note_snapshot_taken(SnapshotMeta {
            index: 10,
            term: 2,
            conf_state: ConfState::with_voters([1]),
        });
        // Compacted through the snapshot, as reopening the WAL would leave it.
        storage.compact(10).unwrap();
        assert_eq!(
            storage.entries(8, 12, u64::MAX),
            Err(StorageError::Compacted)
        );
        check(&storage);
        storage.append(&raft_entries(16..=20, 2, "c")).unwrap();
        check(&storage);
    }

    #[test]
    fn entries_after_a_snapshot_from_a_diverged_history_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(dir.path());
        wal.append(&(1..=6).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        // A leader's snapshot at 4 whose entry has term 2: ours (term 1) diverged. The
        // crash came before the log was cut.
        let cs = ConfState::with_voters([1, 2, 3]);
        WalStorage::write_snapshot(&wal, 4, 2, &cs, b"state").unwrap();
        drop(wal);
        let storage = WalStorage::open(open_wal(dir.path()), 1 << 20).unwrap();
        assert_eq!(storage.first_index(), 5);
        assert_eq!(storage.last_index(), 4);
        assert_eq!(storage.term(4), Ok(2));
        assert_eq!(storage.initial_state().conf_state, cs);
    }

    #[test]
    fn entries_that_follow_the_snapshot_are_kept_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(dir.path());
        wal.append(&(1..=6).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        let cs = ConfState::with_voters([1]);
        WalStorage::write_snapshot(&wal, 4, 1, &cs, b"state").unwrap();
        drop(wal);
        let storage = WalStorage::open(open_wal(dir.path()), 1 << 20).unwrap();
        assert_eq!((storage.first_index(), storage.last_index()), (5, 6));
        assert_eq!(storage.entries(5, 7, u64::MAX).unwrap().len(), 2);
        assert_eq!(
            storage.entries(4, 7, u64::MAX),
            Err(StorageError::Compacted)
        );
        assert_eq!(
            storage.read_snapshot_data().unwrap(),
            Bytes::from_static(b"state")
        );
    }

    #[test]
    fn a_commit_index_beyond_the_recovered_log_is_lost_state_naming_both_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(dir.path());
        WalStorage::write_snapshot(&wal, 1, 1, &ConfState::with_voters([1, 2, 3]), b"").unwrap();
        wal.truncate_prefix(1).unwrap();
        wal.append(&(2..=5).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        wal.set_hard_state(ordo_wal::HardState {
            term: 1,
            vote: Some(1),
            commit: 5,
        })
        .unwrap();
        wal.sync().unwrap();
        // Committed entries 4 and 5 vanish: the WAL itself sees a shorter, intact log.
        wal.truncate_suffix(4).unwrap();
        drop(wal);
        let err = WalStorage::open(open_wal(dir.path()), 1 << 20).unwrap_err();
        match &err {
            StorageFailure::LostState(LostState::CommitBeyondLog {
                dir: d,
                commit,
                held,
            }) => {
                assert_eq!(
                    (d.as_path(), *commit, *held),
                    (wal_dir(&dir).as_path(), 5, 3)
                );
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("lost state") && text.contains("index 5") && text.contains("index 3"),
            "{text}"
        );
    }

    #[test]
    fn a_log_that_starts_after_its_snapshot_is_lost_state() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(dir.path());
        wal.append(&(1..=6).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        wal.truncate_prefix(4).unwrap();
        drop(wal);
        // No snapshot covers entries 1 to 4 any more.
        let err = WalStorage::open(open_wal(dir.path()), 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                StorageFailure::LostState(LostState::SnapshotMissing {
                    first: 5,
                    snapshot: 0,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    /// Flips a bit in the first occurrence of `needle` in the file at `path`, as a disk
    /// that damages data it holds would.
    fn damage(path: &std::path::Path, needle: &[u8]) {
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the bytes are in the file");
        bytes[at] ^= 0x10;
        std::fs::write(path, bytes).unwrap();
    }

    fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_damaged_record_is_a_failed_read_naming_its_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(dir.path());
        let entries: Vec<ordo_wal::Entry> = (1..=4)
            .map(|i| ordo_wal::Entry::new(i, 1, 0, Bytes::from(format!("payload-{i}"))))
            .collect();
        wal.append(&entries).unwrap();
        wal.sync().unwrap();
        let storage = WalStorage::open(wal.clone(), 1 << 20).unwrap();
        let segment = files_ending(&dir.path().join("journal"), ".log").remove(0);
        damage(&segment, b"payload-2");

        let text = match storage.entries(1, 5, u64::MAX) {
            Err(StorageError::ReadFailed(text)) => text,
            other => panic!("expected a failed read, got {other:?}"),
        };
        assert!(
            text.contains(&segment.display().to_string()) && text.contains("at byte"),
            "{text}"
        );
        assert_eq!(storage.failure(), Some(text));
        // Entries before the damage read; they are not the failure.
        assert_eq!(storage.entries(1, 2, u64::MAX).unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_snapshot_file_is_a_failed_read_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(dir.path());
        let cs = ConfState::with_voters([1, 2, 3]);
        WalStorage::write_snapshot(&wal, 1, 1, &cs, b"the-snapshot-state").unwrap();
        wal.truncate_prefix(1).unwrap();
        let storage = WalStorage::open(wal, 1 << 20).unwrap();
        let file = files_ending(&wal_dir(&dir), ".snap").remove(0);
        damage(&file, b"the-snapshot-state");

        let text = match storage.snapshot() {
            Err(StorageError::ReadFailed(text)) => text,
            other => panic!("expected a failed read, got {other:?}"),
        };
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert_eq!(storage.failure(), Some(text));
    }

    #[test]
    fn a_snapshot_is_refused_for_sending_until_it_has_the_current_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let wal = open_wal(dir.path());
        WalStorage::write_snapshot(&wal, 1, 1, &ConfState::with_voters([1, 2, 3]), b"").unwrap();
        wal.truncate_prefix(1).unwrap();
        let storage = WalStorage::open(wal, 1 << 20).unwrap();
        assert!(storage.snapshot().is_ok());
        let mut with_learner = ConfState::with_voters([1, 2, 3]);
        with_learner.learners = vec![4];
        storage.set_conf_now(with_learner);
        assert_eq!(
            storage.snapshot(),
            Err(StorageError::SnapshotTemporarilyUnavailable)
        );
        assert!(storage.take_snapshot_wanted());
        assert!(!storage.take_snapshot_wanted());
    }
}
