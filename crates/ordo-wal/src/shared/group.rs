//! One group's log inside the shared journal: its in-memory index and its [`GroupLog`] view.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::op::{self, ENTRY_HEADER_BYTES, KIND_APPEND};
use super::order::Pin;
use super::{SharedLog, Written};
use crate::error::{Error, Result};
use crate::files::sync_dir;
use crate::hard_state::HardState;
use crate::snapshot::{SnapshotMeta, SnapshotReader, SnapshotWriter, Snapshots};
use crate::wal::{SegmentFile, Wal};
use crate::{lock, Entry, RECORD_HEADER_BYTES};

/// Where one live entry is: the journal record holding it, the byte offset of its encoding
/// in that record's segment file, its length there, and its term (so that `term_at` needs
/// no read). 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) journal_index: u64,
    pub(crate) offset: u64,
    pub(crate) term: u64,
    /// Bytes of the entry's encoding, header included.
    pub(crate) len: u32,
}

impl Loc {
    /// What the entry counts against a read's byte bound: as in [`Wal::entries`](crate::Wal),
    /// a record header and the payload.
    fn read_bytes(&self) -> u64 {
        (RECORD_HEADER_BYTES + self.len as usize - ENTRY_HEADER_BYTES) as u64
    }
}

/// A group's log in memory.
#[derive(Debug)]
pub(crate) struct GroupState {
    pub(crate) first_index: u64,
    /// The live entries, `first_index` on.
    pub(crate) locs: VecDeque<Loc>,
    pub(crate) hard_state: HardState,
    pub(crate) durable_index: u64,
    /// The journal index of the group's latest state record.
    pub(crate) state_journal_index: u64,
    /// Pins of records below this journal index vouch for nothing any more: the group was
    /// created, or its suffix truncated, after them.
    pub(crate) pins_void_below: u64,
    /// The journal index of the group's latest pinned record (append, truncation, state):
    /// once it is durable, the whole group is.
    pub(crate) last_pinned: u64,
    /// Bytes of the live entries' encodings.
    pub(crate) live_bytes: u64,
    pub(crate) removed: bool,
}

impl GroupState {
    /// A new group, whose records will all be at or past `pins_void_below`: an empty log
    /// from index 1, the default hard state.
    pub(crate) fn created(pins_void_below: u64) -> GroupState {
        GroupState {
            first_index: 1,
            locs: VecDeque::new(),
            hard_state: HardState::default(),
            durable_index: 0,
            state_journal_index: 0,
            pins_void_below,
            last_pinned: 0,
            live_bytes: 0,
            removed: false,
        }
    }

    /// A group recovered from the journal: everything recovered is durable.
    pub(crate) fn recovered(
        first_index: u64,
        locs: VecDeque<Loc>,
        hard_state: HardState,
        state_journal_index: u64,
    ) -> GroupState {
        let live_bytes = locs.iter().map(|l| u64::from(l.len)).sum();
        let mut g = GroupState {
            first_index,
            locs,
            hard_state,
            durable_index: 0,
            state_journal_index,
            pins_void_below: 0,
            last_pinned: 0,
            live_bytes,
            removed: false,
        };
        g.durable_index = g.last_index();
        g
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.first_index + self.locs.len() as u64 - 1
    }

    pub(crate) fn loc(&self, index: u64) -> Option<&Loc> {
        let k = index.checked_sub(self.first_index)?;
        self.locs.get(usize::try_from(k).ok()?)
    }

    fn check_range(&self, index: u64) -> Result<()> {
        if index < self.first_index {
            return Err(Error::Compacted {
                index,
                first_index: self.first_index,
            });
        }
        if index > self.last_index() {
            return Err(Error::Unavailable {
                index,
                last_index: self.last_index(),
            });
        }
        Ok(())
    }

    /// The record with `journal_index`, whose pin says the group is durable through
    /// `through`, is durable. Returns whether the group's durable index rose.
    pub(crate) fn record_durable(&mut self, journal_index: u64, through: u64) -> bool {
        if self.removed || journal_index < self.pins_void_below || through <= self.durable_index {
            return false;
        }
        assert!(
            through <= self.last_index(),
            "a valid pin never vouches past the group's end: {through} > {}",
            self.last_index()
        );
        self.durable_index = through;
        true
    }

    /// The journal index whose durability makes `index` durable, for a live `index` not
    /// yet durable: that of its record, or of the latest truncation if later (a truncation
    /// voids the pins before it).
    fn durable_with(&self, index: u64) -> u64 {
        let at = self
            .loc(index)
            .map_or(self.last_pinned, |l| l.journal_index);
        at.max(self.pins_void_below)
    }
}

/// Called with a group's new durable index.
type Listener = Box<dyn Fn(u64) + Send + Sync>;

/// One group: its in-memory log, its listeners and its snapshots.
pub(crate) struct Group {
    pub(crate) id: u64,
    state: Mutex<GroupState>,
    listeners: Mutex<Vec<Listener>>,
    pub(crate) snapshots: Arc<Snapshots>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("id", &self.id).finish()
    }
}

impl Group {
    pub(crate) fn new(id: u64, state: GroupState, snapshots: Arc<Snapshots>) -> Group {
        Group {
            id,
            state: Mutex::new(state),
            listeners: Mutex::new(Vec::new()),
            snapshots,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, GroupState> {
        lock(&self.state)
    }

    /// Calls the listeners with the durable index as of now (the caller serialises calls).
    pub(crate) fn tell_listeners(&self) {
        let listeners = lock(&self.listeners);
        if listeners.is_empty() {
            return;
        }
        let durable = self.lock().durable_index;
        for l in listeners.iter() {
            l(durable);
        }
    }
}

/// The state every change of a live group needs checked first.
fn live(g: &GroupState, id: u64) -> Result<()> {
    if g.removed {
        return Err(Error::GroupRemoved { group: id });
    }
    Ok(())
}

/// One group's log in a [`SharedLog`]: the same methods and semantics as a
/// [`Wal`](crate::Wal), its records interleaved with every other group's in the shared
/// journal.
///
/// Cheap to clone; `Send + Sync`. After [`SharedLog::remove_group`], every method that can
/// fail fails with [`Error::GroupRemoved`].
#[derive(Clone)]
pub struct GroupLog {
    pub(crate) log: SharedLog,
    pub(crate) group: Arc<Group>,
}

impl std::fmt::Debug for GroupLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupLog")
            .field("id", &self.group.id)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("durable_index", &self.durable_index())
            .finish()
    }
}

/// A read planned under the group's lock, done without it.
struct ReadPlan {
    /// The segment files the entries are in, by first journal index.
    files: BTreeMap<u64, SegmentFile>,
    /// The entries, ascending: index and location.
    entries: Vec<(u64, Loc)>,
}

/// Most bytes one positioned read of adjacent entries fetches.
const READ_CHUNK_BYTES: u64 = 4 << 20;

impl GroupLog {
    /// The group's id.
    pub fn id(&self) -> u64 {
        self.group.id
    }

    /// The group's directory, which holds its snapshots.
    pub fn dir(&self) -> &Path {
        self.group.snapshots.dir()
    }

    /// Whether the group was removed by [`SharedLog::remove_group`]; this handle is void.
    pub fn is_removed(&self) -> bool {
        self.group.lock().removed
    }

    /// The group's first index (entries before it were removed by `truncate_prefix`).
    pub fn first_index(&self) -> u64 {
        self.group.lock().first_index
    }

    /// The group's last index, `first_index() - 1` if its log is empty.
    pub fn last_index(&self) -> u64 {
        self.group.lock().last_index()
    }

    /// Appends `entries`, which must carry consecutive indices from `last_index() + 1`, and
    /// returns the new last index once the journal record holding them is handed to the OS
    /// (see [`Wal::append`](crate::Wal::append)). Every limit is checked first: an entry
    /// above `record_bytes_max`, a batch that does not fit in a journal segment, a wrong or
    /// too large index is an error and nothing is written.
    pub fn append(&self, entries: &[Entry]) -> Result<u64> {
        let Some(first) = entries.first() else {
            return Ok(self.last_index());
        };
        let inner = &self.log.inner;
        inner.check_batch(entries)?;
        let payload = op::encode_append(self.group.id, first.index, entries);
        let mut g = self.group.lock();
        live(&g, self.group.id)?;
        if first.index != g.last_index() + 1 {
            return Err(Error::NonContiguousAppend {
                expected: g.last_index() + 1,
                found: first.index,
            });
        }
        let added: u64 = entries
            .iter()
            .map(|e| (ENTRY_HEADER_BYTES + e.payload.len()) as u64)
            .sum();
        let pin = Pin {
            group: self.group.id,
            lo: first.index,
            count: entries.len() as u32,
            kind: KIND_APPEND,
        };
        let payload_bytes = payload.len();
        let (journal_index, offset) =
            inner.write_record(KIND_APPEND, payload, pin, Written::Caller, added as i64)?;
        let mut at = offset + (RECORD_HEADER_BYTES + op::RUN_HEADER_BYTES) as u64;
        for e in entries {
            let len = (ENTRY_HEADER_BYTES + e.payload.len()) as u32;
            g.locs.push_back(Loc {
                journal_index,
                offset: at,
                term: e.term,
                len,
            });
            at += u64::from(len);
        }
        assert_eq!(
            at,
            offset + (RECORD_HEADER_BYTES + payload_bytes) as u64,
            "the locations tile the record"
        );
        g.live_bytes += added;
        g.last_pinned = journal_index;
        let last = g.last_index();
        drop(g);
        inner.after_write();
        Ok(last)
    }

    /// Entries with indices in `[lo, hi)`, stopping before the total would exceed
    /// `max_bytes` (counted as [`Wal::entries`](crate::Wal::entries) counts them: a record
    /// header and the payload each), but at least one entry if the range is not empty.
    ///
    /// Reads only those entries' bytes, with positioned reads (one per run of entries that
    /// are adjacent in the journal), and verifies each entry's checksum: damage is
    /// [`Error::Corrupt`] naming the journal segment and the byte offset, never a wrong
    /// entry.
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let plan = self.plan_read(lo, hi, max_bytes)?;
        let mut out = Vec::with_capacity(plan.entries.len());
        read_verified(&plan.files, &plan.entries, |_, e| out.push(e))?;
        Ok(out)
    }

    fn plan_read(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<ReadPlan> {
        let journal = &self.log.inner.journal;
        let g = self.group.lock();
        live(&g, self.group.id)?;
        g.check_range(lo)?;
        g.check_range(hi - 1)?;
        let mut plan = ReadPlan {
            files: BTreeMap::new(),
            entries: Vec::new(),
        };
        let mut total = 0u64;
        let from = (lo - g.first_index) as usize;
        let to = (hi - g.first_index) as usize;
        for (k, loc) in g.locs.range(from..to).enumerate() {
            if k > 0 && total + loc.read_bytes() > max_bytes {
                break;
            }
            total += loc.read_bytes();
            if file_of(&plan.files, loc).is_none() {
                // Under the group's lock: a collection moves the entry (and updates `locs`)
                // before its old segment can go, so the record is still in the journal.
                let f = journal.segment_file(loc.journal_index)?;
                plan.files.insert(f.first_index, f);
            }
            plan.entries.push((lo + k as u64, *loc));
        }
        Ok(plan)
    }

    /// The term of the entry at `index`.
    pub fn term_at(&self, index: u64) -> Result<u64> {
        let g = self.group.lock();
        live(&g, self.group.id)?;
        g.check_range(index)?;
        Ok(g.loc(index).expect("checked above").term)
    }

    /// Removes the entries from `from` on (a follower's conflicting suffix): one journal
    /// record, durable when this returns. The durable index drops to at most `from - 1`;
    /// a wait for a removed index fails instead of hanging.
    pub fn truncate_suffix(&self, from: u64) -> Result<()> {
        let inner = &self.log.inner;
        let journal_index = {
            let mut g = self.group.lock();
            live(&g, self.group.id)?;
            if from < g.first_index {
                return Err(Error::Compacted {
                    index: from,
                    first_index: g.first_index,
                });
            }
            if from > g.last_index() {
                return Ok(());
            }
            let keep = (from - g.first_index) as usize;
            let removed: u64 = g.locs.range(keep..).map(|l| u64::from(l.len)).sum();
            let pin = Pin {
                group: self.group.id,
                lo: from,
                count: 0,
                kind: KIND_APPEND,
            };
            let payload = op::encode_append(self.group.id, from, &[]);
            let (journal_index, _) = inner.write_record(
                KIND_APPEND,
                payload,
                pin,
                Written::Caller,
                -(removed as i64),
            )?;
            g.locs.truncate(keep);
            g.live_bytes -= removed;
            g.durable_index = g.durable_index.min(from - 1);
            g.pins_void_below = journal_index;
            g.last_pinned = journal_index;
            journal_index
        };
        inner.after_write();
        inner.make_durable(journal_index)
    }

    /// Removes the entries through `through` (they are in a snapshot); the log then starts
    /// at `through + 1`, even past its last index (the next append must then carry
    /// `through + 1`). One state record, durable when this returns.
    pub fn truncate_prefix(&self, through: u64) -> Result<()> {
        crate::wal::check_index(through)?;
        let journal_index = {
            let mut g = self.group.lock();
            live(&g, self.group.id)?;
            if through < g.first_index {
                return Ok(());
            }
            let first = through + 1;
            let gone = ((first - g.first_index) as usize).min(g.locs.len());
            let removed: u64 = g.locs.range(..gone).map(|l| u64::from(l.len)).sum();
            let last = g.last_index().max(through);
            let hs = g.hard_state;
            let journal_index = self.log.inner.write_state(
                self.group.id,
                first,
                last,
                &hs,
                Written::Caller,
                -(removed as i64),
            )?;
            g.locs.drain(..gone);
            g.first_index = first;
            g.live_bytes -= removed;
            g.state_journal_index = journal_index;
            g.last_pinned = journal_index;
            journal_index
        };
        self.log.inner.after_write();
        self.log.inner.make_durable(journal_index)
    }

    /// The highest index of the group known to be on stable storage. It only grows, except
    /// that [`truncate_suffix`](Self::truncate_suffix) lowers it to below the cut.
    pub fn durable_index(&self) -> u64 {
        self.group.lock().durable_index
    }

    /// Blocks until `index` is durable and returns the group's durable index. Waits on the
    /// journal as [`Wal::wait_durable`](crate::Wal::wait_durable) does (leading an fsync
    /// round with `Always`, asking for one with `Never`). Fails with
    /// [`Error::Unavailable`] if `index` was never appended or a truncation removes it.
    pub fn wait_durable(&self, index: u64) -> Result<u64> {
        let inner = &self.log.inner;
        let mut waited_for = None;
        loop {
            let journal_index = {
                let g = self.group.lock();
                live(&g, self.group.id)?;
                if g.durable_index >= index {
                    return Ok(g.durable_index);
                }
                if index > g.last_index() {
                    return Err(Error::Unavailable {
                        index,
                        last_index: g.last_index(),
                    });
                }
                let at = g.durable_with(index);
                // Once `wait_journal(at)` returns, the pins through `at` are applied: the
                // same record twice means the rule of `durable_with` is broken.
                assert_ne!(
                    waited_for,
                    Some(at),
                    "group {} index {index} is not durable though journal record {at}, which \
                     makes it so, is",
                    self.group.id
                );
                at
            };
            inner.wait_journal(journal_index)?;
            waited_for = Some(journal_index);
        }
    }

    /// Fsyncs everything appended so far, whatever the policy, and returns the durable
    /// index.
    pub fn sync(&self) -> Result<u64> {
        self.log.inner.sync()?;
        let g = self.group.lock();
        live(&g, self.group.id)?;
        Ok(g.durable_index)
    }

    /// Registers `listener` to be called with each new durable index of this group, on the
    /// thread that saw the journal's fsync complete. Calls (to the listeners of all groups)
    /// never overlap, and the index never goes backwards except after a
    /// [`truncate_suffix`](Self::truncate_suffix) lowered it. Keep it short and
    /// non-blocking; it must not call back into the shared log to wait for durability or
    /// register a listener.
    pub fn on_durable(&self, listener: impl Fn(u64) + Send + Sync + 'static) {
        lock(&self.group.listeners).push(Box::new(listener));
    }

    /// The latest hard state set (the default before the first
    /// [`set_hard_state`](Self::set_hard_state)); while a `set_hard_state` waits for its
    /// record to be durable, already the new one.
    pub fn hard_state(&self) -> HardState {
        self.group.lock().hard_state
    }

    /// Replaces the hard state: one state record, durable when this returns.
    pub fn set_hard_state(&self, hard_state: HardState) -> Result<()> {
        let journal_index = {
            let mut g = self.group.lock();
            live(&g, self.group.id)?;
            let (first, last) = (g.first_index, g.last_index());
            let journal_index = self.log.inner.write_state(
                self.group.id,
                first,
                last,
                &hard_state,
                Written::Caller,
                0,
            )?;
            g.hard_state = hard_state;
            g.state_journal_index = journal_index;
            g.last_pinned = journal_index;
            journal_index
        };
        self.log.inner.after_write();
        self.log.inner.make_durable(journal_index)
    }

    /// The metadata of the newest installed snapshot of the group.
    pub fn latest_snapshot(&self) -> Option<SnapshotMeta> {
        self.group.snapshots.latest()
    }

    /// Opens the group's newest installed snapshot for reading as a stream.
    pub fn open_snapshot(&self) -> Result<Option<SnapshotReader>> {
        self.group.snapshots.open_latest()
    }

    /// Starts writing a snapshot of the group; see
    /// [`Wal::snapshot_writer`](crate::Wal::snapshot_writer). The group's creation and its
    /// directory are made durable first, so that an installed snapshot never outlives the
    /// group it belongs to, nor is lost with a directory entry that was not.
    pub fn snapshot_writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        let journal_index = {
            let g = self.group.lock();
            live(&g, self.group.id)?;
            g.state_journal_index
        };
        let inner = &self.log.inner;
        inner.make_durable(journal_index)?;
        sync_dir(&inner.groups_dir)?;
        self.group.snapshots.writer(meta)
    }
}

/// The segment files of the records holding `entries`.
fn files_of(journal: &Wal, entries: &[(u64, Loc)]) -> Result<BTreeMap<u64, SegmentFile>> {
    let mut files: BTreeMap<u64, SegmentFile> = BTreeMap::new();
    for (_, loc) in entries {
        if file_of(&files, loc).is_none() {
            let f = journal.segment_file(loc.journal_index)?;
            files.insert(f.first_index, f);
        }
    }
    Ok(files)
}

/// The file among `files` that holds the record of `loc`.
fn file_of<'a>(files: &'a BTreeMap<u64, SegmentFile>, loc: &Loc) -> Option<&'a SegmentFile> {
    files
        .range(..=loc.journal_index)
        .next_back()
        .map(|(_, f)| f)
        .filter(|f| loc.journal_index < f.next_index)
}

/// Reads the encodings of `entries` (ascending by index) and verifies each, for copying.
pub(crate) fn read_encoded(journal: &Wal, entries: &[(u64, Loc)]) -> Result<Vec<Bytes>> {
    let files = files_of(journal, entries)?;
    let mut out = Vec::with_capacity(entries.len());
    read_verified(&files, entries, |encoded, _| out.push(encoded))?;
    Ok(out)
}

/// Reads `entries` from `files`, one positioned read per run of entries adjacent in one
/// file (at most [`READ_CHUNK_BYTES`], or one entry), verifies each and hands it to `each`
/// with its encoding.
fn read_verified(
    files: &BTreeMap<u64, SegmentFile>,
    entries: &[(u64, Loc)],
    mut each: impl FnMut(Bytes, Entry),
) -> Result<()> {
    let mut k = 0;
    while k < entries.len() {
        let (_, first) = entries[k];
        let file = file_of(files, &first).expect("the plan has the file of every entry");
        let mut end = first.offset + u64::from(first.len);
        let mut n = 1;
        while let Some((_, next)) = entries.get(k + n) {
            let adjacent =
                next.offset == end && file_of(files, next).is_some_and(|f| f.path == file.path);
            if !adjacent || end + u64::from(next.len) - first.offset > READ_CHUNK_BYTES {
                break;
            }
            end += u64::from(next.len);
            n += 1;
        }
        let mut buf = vec![0u8; (end - first.offset) as usize];
        file.file
            .read_exact_at(&mut buf, first.offset)
            .map_err(|e| Error::io(&file.path, e))?;
        let buf = Bytes::from(buf);
        for &(index, loc) in &entries[k..k + n] {
            let at = (loc.offset - first.offset) as usize;
            let encoded = buf.slice(at..at + loc.len as usize);
            let entry = op::decode_entry(encoded.clone(), index, loc.term)
                .map_err(|(off, why)| Error::corrupt(&file.path, loc.offset + off as u64, why))?;
            each(encoded, entry);
        }
        k += n;
    }
    Ok(())
}
