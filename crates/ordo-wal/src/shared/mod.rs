//! One log per node holding the logs of many Raft groups: a [`SharedLog`], whose appends
//! from every group become durable together, one `fdatasync` per group-commit round however
//! many groups wrote in it.
//!
//! The **journal** is an ordinary [`Wal`] in `<dir>/journal/`, so torn-tail truncation,
//! corruption named by file and offset, crash-safe rolls and prefix truncation, group
//! commit and preallocation are the journal's. Each journal record holds one operation of
//! one group (`op`): an append (which is also how a suffix truncation is written), a
//! state (log start and hard state), a rewrite (live entries copied by collection) or a
//! removal. In memory each group keeps, per live entry, where its bytes are (32 bytes an
//! entry, `group`); reads fetch just those bytes and verify the entry's own checksum.
//! Durability is one journal watermark mapped to each group through one queue in journal
//! order (`order`). `collect` keeps the journal bounded by copying what is live out of
//! its oldest segment; `replay` rebuilds everything on open.
//!
//! Directory layout:
//!
//! | path | what |
//! |---|---|
//! | `layout` | the layout version (1), written by [`atomic_file`](crate::atomic_file) |
//! | `journal/` | the journal, a [`Wal`] directory |
//! | `groups/<id>/` | group `id`'s snapshots |
//!
//! See `crates/ordo-wal/SHARED.md` for the design, the crash-safety argument and the
//! write amplification of collection.

mod collect;
mod group;
pub(crate) mod op;
mod order;
mod replay;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;

pub use group::GroupLog;

use self::group::{Group, GroupState};
use self::op::{ENTRY_HEADER_BYTES, KIND_REMOVE, KIND_STATE, RUN_HEADER_BYTES, STATE_BYTES};
use self::order::{Core, Order, Pin};
use crate::atomic_file::{ByteOrder, Format};
use crate::error::{Error, Result};
use crate::files::{le_u64, list_dir, remove_if_exists, sync_dir, TMP_SUFFIX};
use crate::hard_state::HardState;
use crate::snapshot::Snapshots;
use crate::wal::{check_index, check_payload, Wal, SEGMENT_HEADER_BYTES};
use crate::{lock, Durability, Entry, Options, RECORD_HEADER_BYTES};

/// The layout file: which layout of the shared log the directory holds.
const LAYOUT_FILE: &str = "layout";
const LAYOUT_FORMAT: Format = Format {
    magic: *b"ORDOSL01",
    checksum_order: ByteOrder::Little,
    file_bytes_max: Format::file_bytes(8),
};
/// The layout this version writes and reads.
const LAYOUT_VERSION: u64 = 1;
const JOURNAL_DIR: &str = "journal";
const GROUPS_DIR: &str = "groups";

/// Collection keeps the journal below `max(journal_bytes_target, LIVE_BYTES_MULTIPLE × live
/// bytes)`. With 2, at most half of what a collection pass reads is live on average, so it
/// rewrites at most one byte per byte appended (see `SHARED.md`).
pub const LIVE_BYTES_MULTIPLE: u64 = 2;

/// The journal's own limit on a record's payload. A batch of one group is one record, so
/// its limit is the segment (as for a [`Wal`]); this only bounds what recovery accepts, and
/// stays the same whatever the options (which may change between opens).
const JOURNAL_RECORD_BYTES_MAX: u64 = 1 << 30;

/// Bytes a group's state record takes in the journal, counted as live for every group.
const STATE_RECORD_BYTES: u64 = (RECORD_HEADER_BYTES + STATE_BYTES) as u64;

/// Configuration of a [`SharedLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedOptions {
    /// The journal's options: segment size, the largest entry payload
    /// (`record_bytes_max`, which must leave room for one entry in a segment), index
    /// interval, durability policy.
    pub journal: Options,
    /// Collection starts when the journal's bytes exceed this and twice the live bytes
    /// (default 1 GiB).
    pub journal_bytes_target: u64,
    /// Whether a background thread collects when the journal passes its target (default).
    /// Without it, only [`SharedLog::collect`] does.
    pub collect_in_background: bool,
}

impl Default for SharedOptions {
    fn default() -> Self {
        SharedOptions {
            journal: Options::default(),
            journal_bytes_target: 1 << 30,
            collect_in_background: true,
        }
    }
}

impl SharedOptions {
    fn validate(&self) -> Result<()> {
        self.journal.validate()?;
        let fits = self.journal.segment_bytes_max
            - SEGMENT_HEADER_BYTES
            - (RECORD_HEADER_BYTES + RUN_HEADER_BYTES + ENTRY_HEADER_BYTES) as u64;
        if self.journal.record_bytes_max > fits {
            return Err(Error::InvalidOptions(format!(
                "record_bytes_max {} leaves no room for one entry in a journal segment of {} \
                 bytes (at most {fits})",
                self.journal.record_bytes_max, self.journal.segment_bytes_max
            )));
        }
        Ok(())
    }

    /// The options of the journal's [`Wal`].
    pub(crate) fn journal_options(&self) -> Options {
        Options {
            record_bytes_max: JOURNAL_RECORD_BYTES_MAX,
            ..self.journal.clone()
        }
    }
}

/// Figures of a [`SharedLog`], from [`SharedLog::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedStats {
    /// Groups with any state.
    pub groups: u64,
    /// Bytes of the journal's segment headers and records (the preallocated space after
    /// the records is not counted).
    pub journal_bytes: u64,
    /// Segments of the journal.
    pub journal_segments: u64,
    /// Bytes that would remain if the journal held only what is live: every live entry's
    /// encoding and one state record per group.
    pub live_bytes: u64,
    /// Bytes of journal records written for callers since open (appends, truncations,
    /// states, removals).
    pub appended_bytes: u64,
    /// Bytes of journal records written by collection since open (rewrites, fresh states).
    pub rewritten_bytes: u64,
    /// `fdatasync` calls on journal segments since open (every fsync round and roll).
    pub fsyncs: u64,
    /// Journal segments collected since open.
    pub segments_collected: u64,
    /// Background collection passes that failed (each failure stops the background
    /// collector until an explicit [`SharedLog::collect`] succeeds).
    pub collect_failures: u64,
}

impl SharedStats {
    /// Bytes written to the journal per byte written for callers: `1 + rewritten /
    /// appended` (1 when nothing was appended).
    pub fn write_amplification(&self) -> f64 {
        if self.appended_bytes == 0 {
            return 1.0;
        }
        1.0 + self.rewritten_bytes as f64 / self.appended_bytes as f64
    }
}

/// What one [`SharedLog::collect`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Journal segments removed.
    pub segments: u64,
    /// Bytes of journal records written to keep what was live in them.
    pub rewritten_bytes: u64,
}

/// Who a journal record is written for, for the write-amplification figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Caller,
    Collection,
}

/// The log of many groups in one directory; see the [module documentation](self).
///
/// Cheap to clone (every clone is the same log) and `Send + Sync`. The log stays open while
/// any clone or [`GroupLog`] of it exists.
#[derive(Clone)]
pub struct SharedLog {
    // Dropped first: the background collector stops before the log closes.
    _closer: Arc<Closer>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLog")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    dir: PathBuf,
    groups_dir: PathBuf,
    options: SharedOptions,
    journal: Wal,
    core: Arc<Core>,
    /// Held while a group is created or removed: its directory and its records change
    /// together.
    membership: Mutex<()>,
    /// Held by the one collection pass at a time.
    collecting: Mutex<()>,
    trigger: Arc<Trigger>,
    segments_collected: AtomicU64,
    collect_failures: AtomicU64,
    /// Test hook: the number of crash points to pass before failing like a crash.
    #[cfg(test)]
    crash_after_steps: Mutex<Option<u32>>,
}

/// Wakes the background collector.
#[derive(Debug, Default)]
struct Trigger {
    state: Mutex<TriggerState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct TriggerState {
    wanted: bool,
    /// The last background pass failed: no more until an explicit one succeeds.
    failed: bool,
    shutdown: bool,
}

impl Trigger {
    fn want(&self) {
        let mut t = lock(&self.state);
        if !t.wanted && !t.failed && !t.shutdown {
            t.wanted = true;
            self.wake.notify_one();
        }
    }

    /// Waits until a pass is wanted (true) or the log closes (false).
    fn wait(&self) -> bool {
        let mut t = lock(&self.state);
        while !t.wanted && !t.shutdown {
            t = self
                .wake
                .wait(t)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        t.wanted = false;
        !t.shutdown
    }

    fn is_shut_down(&self) -> bool {
        lock(&self.state).shutdown
    }

    fn set_failed(&self, failed: bool) {
        lock(&self.state).failed = failed;
    }
}

/// Stops and joins the background collector when the last handle goes.
struct Closer {
    trigger: Arc<Trigger>,
    collector: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        {
            let mut t = lock(&self.trigger.state);
            t.shutdown = true;
            self.trigger.wake.notify_all();
        }
        if let Some(thread) = lock(&self.collector).take() {
            let _ = thread.join();
        }
    }
}

impl SharedLog {
    /// Opens (creating if needed) the shared log in `dir` and recovers it: the journal's
    /// recovery (see [`Wal::open`]), then a replay of every journal record rebuilding every
    /// group. A group whose entries are not contiguous from its first index, or a record
    /// that does not decode, is [`Error::Corrupt`] naming the journal segment and offset. A
    /// directory of another layout version, or a non-empty one without a layout file, is
    /// [`Error::Layout`].
    pub fn open(dir: impl AsRef<Path>, options: SharedOptions) -> Result<SharedLog> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        check_layout(&dir)?;
        let groups_dir = dir.join(GROUPS_DIR);
        if !groups_dir.is_dir() {
            fs::create_dir(&groups_dir).map_err(|e| Error::io(&groups_dir, e))?;
            sync_dir(&dir)?;
        }
        let journal = Wal::open(dir.join(JOURNAL_DIR), options.journal_options())?;
        let recovered = replay::replay(&journal)?;
        let first_pinned = journal.first_index();
        assert_eq!(
            first_pinned + recovered.pins.len() as u64,
            journal.last_index() + 1,
            "replay pins every journal record"
        );
        let groups = open_groups(&groups_dir, recovered.groups)?;
        let journal_bytes = journal.segment_spans().iter().map(|s| s.bytes).sum();
        let live_bytes = groups
            .values()
            .map(|g| g.lock().live_bytes + STATE_RECORD_BYTES)
            .sum();
        let order = Order::recovered(first_pinned, recovered.pins, journal_bytes, live_bytes);
        let core = Arc::new(Core::new(groups, order));
        {
            let core = Arc::clone(&core);
            journal.on_durable(move |durable| core.advance(durable));
        }
        let trigger = Arc::new(Trigger::default());
        let inner = Arc::new(Inner {
            dir,
            groups_dir,
            options,
            journal,
            core,
            membership: Mutex::new(()),
            collecting: Mutex::new(()),
            trigger: Arc::clone(&trigger),
            segments_collected: AtomicU64::new(0),
            collect_failures: AtomicU64::new(0),
            #[cfg(test)]
            crash_after_steps: Mutex::new(None),
        });
        let collector = if inner.options.collect_in_background {
            let for_thread = Arc::clone(&inner);
            let thread = std::thread::Builder::new()
                .name("ordo-wal-collect".into())
                .spawn(move || for_thread.run_collector())
                .map_err(|e| Error::io(&inner.dir, e))?;
            Some(thread)
        } else {
            None
        };
        Ok(SharedLog {
            _closer: Arc::new(Closer {
                trigger,
                collector: Mutex::new(collector),
            }),
            inner,
        })
    }

    /// The directory of the shared log.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The ids of the groups with any state, ascending.
    pub fn group_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.inner.groups().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The log of group `id`; a new group is created first (its directory, and a state
    /// record: an empty log starting at 1, the default hard state).
    pub fn group(&self, id: u64) -> Result<GroupLog> {
        if let Some(group) = self.inner.groups().get(&id) {
            return Ok(self.view(Arc::clone(group)));
        }
        let _membership = lock(&self.inner.membership);
        if let Some(group) = self.inner.groups().get(&id) {
            return Ok(self.view(Arc::clone(group)));
        }
        let group = self.inner.create_group(id)?;
        Ok(self.view(group))
    }

    fn view(&self, group: Arc<Group>) -> GroupLog {
        GroupLog {
            log: self.clone(),
            group,
        }
    }

    /// Removes group `id`: a removal record, durable before its snapshot directory is
    /// deleted. Handles of the group fail with [`Error::GroupRemoved`] from then on. A group
    /// that does not exist is no error.
    pub fn remove_group(&self, id: u64) -> Result<()> {
        let inner = &self.inner;
        let _membership = lock(&inner.membership);
        let Some(group) = inner.groups().get(&id).cloned() else {
            return Ok(());
        };
        let journal_index = {
            let mut g = group.lock();
            let pin = Pin {
                group: id,
                lo: 0,
                count: 0,
                kind: KIND_REMOVE,
            };
            let freed = (g.live_bytes + STATE_RECORD_BYTES) as i64;
            let (journal_index, _) = inner.write_record(
                KIND_REMOVE,
                op::encode_remove(id),
                pin,
                Written::Caller,
                -freed,
            )?;
            g.removed = true;
            g.locs = Default::default();
            g.live_bytes = 0;
            journal_index
        };
        inner.groups_mut().remove(&id);
        inner.make_durable(journal_index)?;
        let dir = group.snapshots.dir();
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io(dir, e)),
            _ => {}
        }
        sync_dir(&inner.groups_dir)
    }

    /// Fsyncs everything appended so far, whatever the policy.
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// Collects while the journal is over its target (`journal_bytes_target`, and never
    /// below [`LIVE_BYTES_MULTIPLE`] times the live bytes): each step copies what is live
    /// in the oldest segment to the journal's end, makes it durable and removes the
    /// segment. At most one pass over the segments there are when it starts; appends,
    /// reads and durability carry on meanwhile.
    pub fn collect(&self) -> Result<Collected> {
        let done = self.inner.collect_pass()?;
        self.inner.trigger.set_failed(false);
        Ok(done)
    }

    /// The figures of the log: sizes, bytes written for callers and by collection, fsyncs.
    pub fn stats(&self) -> SharedStats {
        let inner = &self.inner;
        let groups = inner.groups().len() as u64;
        let spans = inner.journal.segment_spans();
        let order = lock(&inner.core.order);
        SharedStats {
            groups,
            journal_bytes: spans.iter().map(|s| s.bytes).sum(),
            journal_segments: spans.len() as u64,
            live_bytes: order.live_bytes,
            appended_bytes: order.appended_bytes,
            rewritten_bytes: order.rewritten_bytes,
            fsyncs: inner.journal.fsyncs(),
            segments_collected: inner.segments_collected.load(Ordering::Relaxed),
            collect_failures: inner.collect_failures.load(Ordering::Relaxed),
        }
    }

    /// Fsyncs everything and lets go of this handle; the log closes when the last handle
    /// (of the log or of a group) goes.
    pub fn close(self) -> Result<()> {
        self.sync()
    }

    /// Test hook: fail like a crash at the `steps`-th crash point of collection from now.
    #[cfg(test)]
    pub(crate) fn crash_after_steps(&self, steps: u32) {
        *lock(&self.inner.crash_after_steps) = Some(steps);
    }

    /// Test hook: the journal, to inject crashes into its own steps.
    #[cfg(test)]
    pub(crate) fn journal(&self) -> &Wal {
        &self.inner.journal
    }
}

impl Inner {
    fn groups(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Arc<Group>>> {
        self.core
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn groups_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Arc<Group>>> {
        self.core
            .groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates group `id` (the caller holds `membership` and has checked it is new): its
    /// directory, then its state record.
    fn create_group(&self, id: u64) -> Result<Arc<Group>> {
        let dir = self.groups_dir.join(id.to_string());
        // Not fsynced into `groups/` here (thousands of groups would pay a directory fsync
        // each): recovery recreates a group's missing directory, and the snapshot writer
        // makes the entry durable before a snapshot can be installed in it.
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let snapshots = Arc::new(Snapshots::open(&dir)?);
        let pins_void_below = lock(&self.core.order).next_journal_index();
        let state = GroupState::created(pins_void_below);
        let group = Arc::new(Group::new(id, state, snapshots));
        // Its lock is held from before it is visible until its state record is written, so
        // that no record of the group precedes that one; visible before the record exists,
        // so that collection finds the group by it.
        let mut g = group.lock();
        self.groups_mut().insert(id, Arc::clone(&group));
        let (first, last, hs) = (g.first_index, g.last_index(), g.hard_state);
        let live = STATE_RECORD_BYTES as i64;
        match self.write_state(id, first, last, &hs, Written::Caller, live) {
            Ok(journal_index) => {
                g.state_journal_index = journal_index;
                g.last_pinned = journal_index;
            }
            Err(e) => {
                // The journal refuses work from now on; the group never existed.
                g.removed = true;
                drop(g);
                self.groups_mut().remove(&id);
                return Err(e);
            }
        }
        drop(g);
        self.after_write();
        Ok(group)
    }

    /// Checks a batch against every limit before anything is written.
    fn check_batch(&self, entries: &[Entry]) -> Result<()> {
        let opts = &self.options.journal;
        let first = entries[0].index;
        check_index(first)?;
        let mut bytes = (RECORD_HEADER_BYTES + RUN_HEADER_BYTES) as u64;
        for (k, e) in entries.iter().enumerate() {
            check_payload(e.index, e.payload.len(), opts)?;
            let expected = first + k as u64;
            if e.index != expected {
                return Err(Error::NonContiguousAppend {
                    expected,
                    found: e.index,
                });
            }
            bytes += (ENTRY_HEADER_BYTES + e.payload.len()) as u64;
        }
        check_index(first + entries.len() as u64 - 1)?;
        let max = opts.segment_bytes_max - SEGMENT_HEADER_BYTES;
        if bytes > max {
            return Err(Error::BatchTooLarge { bytes, max });
        }
        Ok(())
    }

    /// Appends one journal record and its pin, in journal order; returns its journal index
    /// and the byte offset of the record in its segment. The caller holds the lock of the
    /// group the record is for, so the group's records and its memory change together.
    fn write_record(
        &self,
        kind: u8,
        payload: Vec<u8>,
        pin: Pin,
        written: Written,
        live_delta: i64,
    ) -> Result<(u64, u64)> {
        let bytes = (RECORD_HEADER_BYTES + payload.len()) as u64;
        // Held across the journal append: pins are pushed in journal order.
        let mut order = lock(&self.core.order);
        let journal_index = order.next_journal_index();
        let record = Entry {
            index: journal_index,
            term: 0,
            kind,
            payload: Bytes::from(payload),
        };
        let (last, offset) = self.journal.append_located(std::slice::from_ref(&record))?;
        assert_eq!(
            last, journal_index,
            "the journal's records are exactly the pinned ones"
        );
        order.push(journal_index, pin);
        order.journal_bytes += bytes;
        order.change_live(live_delta);
        match written {
            Written::Caller => order.appended_bytes += bytes,
            Written::Collection => order.rewritten_bytes += bytes,
        }
        Ok((journal_index, offset))
    }

    /// Writes a state record of group `id` (the caller holds its lock), whose log is to be
    /// `first..=last` with hard state `hs`; returns its journal index.
    fn write_state(
        &self,
        id: u64,
        first: u64,
        last: u64,
        hs: &HardState,
        written: Written,
        live_delta: i64,
    ) -> Result<u64> {
        let pin = Pin {
            group: id,
            lo: last + 1,
            count: 0,
            kind: KIND_STATE,
        };
        let payload = op::encode_state(id, first, hs);
        let (journal_index, _) =
            self.write_record(KIND_STATE, payload, pin, written, live_delta)?;
        Ok(journal_index)
    }

    /// Whether the journal is over its target.
    fn over_target(&self) -> bool {
        let order = lock(&self.core.order);
        let target = self
            .options
            .journal_bytes_target
            .max(order.live_bytes.saturating_mul(LIVE_BYTES_MULTIPLE));
        order.journal_bytes > target
    }

    /// After a record for a caller: wakes the background collector if the journal is over
    /// its target.
    fn after_write(&self) {
        if self.options.collect_in_background && self.over_target() {
            self.trigger.want();
        }
    }

    /// Makes the journal durable through `journal_index` for an operation that promises
    /// durability on return, whatever the policy, and applies it to the groups.
    fn make_durable(&self, journal_index: u64) -> Result<()> {
        match self.options.journal.durability {
            // `wait_durable` would wait for the interval's tick.
            Durability::Interval(_) => self.journal.sync().map(drop)?,
            // Leads a round (`Always`) or asks for one (`Never`).
            _ => self.journal.wait_durable(journal_index).map(drop)?,
        }
        self.core.advance(self.journal.durable_index());
        Ok(())
    }

    /// Waits, as the policy says, until the journal is durable through `journal_index`,
    /// and applies it to the groups.
    fn wait_journal(&self, journal_index: u64) -> Result<()> {
        self.journal.wait_durable(journal_index)?;
        self.core.advance(self.journal.durable_index());
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        self.journal.sync()?;
        self.core.advance(self.journal.durable_index());
        Ok(())
    }

    /// One collection pass: steps while the journal is over its target, at most one per
    /// segment there is when it starts.
    fn collect_pass(&self) -> Result<Collected> {
        let _one = lock(&self.collecting);
        let steps_max = self.journal.segment_spans().len().saturating_sub(1);
        let mut done = Collected::default();
        for _ in 0..steps_max {
            if self.trigger.is_shut_down() || !self.over_target() {
                break;
            }
            let Some(rewritten) = self.collect_step()? else {
                break;
            };
            done.segments += 1;
            done.rewritten_bytes += rewritten;
            self.segments_collected.fetch_add(1, Ordering::Relaxed);
        }
        Ok(done)
    }

    /// The background collector: a pass whenever an append finds the journal over target.
    fn run_collector(&self) {
        while self.trigger.wait() {
            if self.collect_pass().is_err() {
                // The error repeats on the next explicit `collect`, which reports it.
                self.collect_failures.fetch_add(1, Ordering::Relaxed);
                self.trigger.set_failed(true);
            }
        }
    }

    /// A point at which tests may simulate a crash; a no-op outside tests.
    fn crash_point(&self) -> Result<()> {
        #[cfg(test)]
        {
            let mut steps = lock(&self.crash_after_steps);
            if let Some(n) = steps.as_mut() {
                if *n == 0 {
                    return Err(Error::io(&self.dir, io::Error::other("injected crash")));
                }
                *n -= 1;
            }
        }
        Ok(())
    }
}

/// Checks the layout file of `dir`, writing it in a fresh directory.
fn check_layout(dir: &Path) -> Result<()> {
    let path = dir.join(LAYOUT_FILE);
    if let Some(body) = LAYOUT_FORMAT.read(dir, LAYOUT_FILE)? {
        if body.len() != 8 {
            return Err(Error::corrupt(
                &path,
                8,
                format!(
                    "{} bytes where a layout version (8 bytes) should be",
                    body.len()
                ),
            ));
        }
        let version = le_u64(&body);
        if version != LAYOUT_VERSION {
            return Err(Error::Layout {
                path,
                reason: format!(
                    "the shared log has layout version {version}, and this version of \
                     ordo-wal reads layout {LAYOUT_VERSION} only"
                ),
            });
        }
        return Ok(());
    }
    let tmp = format!("{LAYOUT_FILE}{TMP_SUFFIX}");
    for (p, name) in list_dir(dir)? {
        if name == tmp {
            remove_if_exists(&p)?;
        } else {
            return Err(Error::Layout {
                path,
                reason: format!(
                    "no layout file, yet the directory holds {name:?}: it is not a shared \
                     log (or its layout file was lost); refusing to write into it"
                ),
            });
        }
    }
    LAYOUT_FORMAT.write(dir, LAYOUT_FILE, &LAYOUT_VERSION.to_le_bytes())
}

/// Builds the recovered groups, with their snapshot directories; removes the directories
/// of groups that no longer exist (a removal or a creation cut short by a crash).
fn open_groups(
    groups_dir: &Path,
    recovered: Vec<replay::RecoveredGroup>,
) -> Result<HashMap<u64, Arc<Group>>> {
    let mut dirty = false;
    let mut groups = HashMap::with_capacity(recovered.len());
    for r in recovered {
        let dir = groups_dir.join(r.id.to_string());
        if !dir.is_dir() {
            fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            dirty = true;
        }
        let snapshots = Arc::new(Snapshots::open(&dir)?);
        let state =
            GroupState::recovered(r.first_index, r.locs, r.hard_state, r.state_journal_index);
        groups.insert(r.id, Arc::new(Group::new(r.id, state, snapshots)));
    }
    for (path, name) in list_dir(groups_dir)? {
        let orphan = name
            .parse::<u64>()
            .is_ok_and(|id| id.to_string() == name && !groups.contains_key(&id));
        if orphan {
            fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            dirty = true;
        }
    }
    if dirty {
        sync_dir(groups_dir)?;
    }
    Ok(groups)
}
