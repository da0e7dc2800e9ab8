//! The log itself: segments, appends with group commit, reads, truncation and recovery.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crate::atomic_file::{ByteOrder, Format};
use crate::error::{Error, Result};
use crate::files::{
    le_u64, list_dir, parse_segment_name, remove_if_exists, segment_name, sync_dir, TMP_SUFFIX,
};
use crate::hard_state::HardState;
use crate::record::{self, Cursor, Damage, Step};
use crate::snapshot::{SnapshotMeta, SnapshotReader, SnapshotWriter, Snapshots};
use crate::{lock, Durability, Entry, Options, INDEX_MAX};

/// The log-start marker: the first index of the log, written by `truncate_prefix`.
const START_FILE: &str = "start";
/// The start file holds the first index (u64).
const START_FORMAT: Format = Format {
    magic: *b"ORDOST01",
    checksum_order: ByteOrder::Little,
    file_bytes_max: Format::file_bytes(8),
};
/// The lock file: an open log holds an exclusive lock on it.
const LOCK_FILE: &str = "lock";
/// The truncate-suffix intent: present while a suffix truncation is under way.
const TRUNCATE_FILE: &str = "truncate";
/// The truncate file holds the first index to remove (u64).
const TRUNCATE_FORMAT: Format = Format {
    magic: *b"ORDOTR01",
    checksum_order: ByteOrder::Little,
    file_bytes_max: Format::file_bytes(8),
};
/// With `Always` and nobody listening, the tick of the backstop that syncs entries no waiter
/// covered: they become durable within about two ticks.
const ALWAYS_BACKSTOP: std::time::Duration = std::time::Duration::from_millis(1);
/// How far that check backs off while the log is idle.
const ALWAYS_BACKSTOP_IDLE: std::time::Duration = std::time::Duration::from_millis(64);
/// Read size of recovery scans.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// The most bytes of records held in memory for the next fsync round to write (see
/// [`Staged`]); appends beyond it write their own bytes.
const STAGED_BYTES_MAX: usize = 1 << 20;
/// The longest the fsync thread lingers for appenders before a round (see `run_syncer`).
const LINGER_MAX: Duration = Duration::from_millis(1);
/// How far ahead of the records `Always` keeps the segment written with zeros.
const ZERO_AHEAD_BYTES: u64 = 128 << 10;
/// The first bytes of every segment file this version writes.
const SEGMENT_MAGIC: &[u8; 8] = b"ORDOSEG2";
/// The first bytes of a segment written before its header carried a checksum; still read.
const SEGMENT_MAGIC_UNCHECKED: &[u8; 8] = b"ORDOSEG1";
/// Bytes of the segment header: the magic, then the file's preallocated length (40 bits
/// LE) and the low 24 bits of a CRC32C over the magic and the length (LE). A header of
/// `ORDOSEG1` holds the length as a u64 LE and no checksum.
///
/// A segment is created at its full length, so its length never changes while it is in use.
/// A file shorter than its header says was cut after it was written: recovery refuses it
/// instead of mistaking the cut for a torn tail and silently dropping entries that were
/// durable (and acknowledged), unless the cut falls in the zeros after the last record
/// (nothing written was lost), which only a checked header can tell from a damaged length.
pub const SEGMENT_HEADER_BYTES: u64 = 16;

/// One segment file and the in-memory index of its records.
///
/// The index is sparse to bound memory: one `(index, offset)` pair per
/// `index_interval_bytes` of records (a 64 MiB segment of 256 B entries keeps ~16 Ki pairs,
/// 256 KiB, instead of ~240 Ki), plus one `(first index, term)` pair per run of equal terms.
#[derive(Debug)]
struct Segment {
    first_index: u64,
    /// One past the last index the segment holds.
    next_index: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of records, a prefix of the file: what readers may read (records staged for
    /// the next round count; whoever reads the file writes them first, see [`Staged`]).
    len_bytes: u64,
    /// The file's length, fixed at creation (recorded in its header): records end before it.
    size_bytes: u64,
    /// Bytes from the start known to be written, with records or with zeros ahead of them
    /// (see [`zero_ahead`](Self::zero_ahead)); the rest may be a hole.
    zeroed_to: u64,
    sparse: Vec<(u64, u64)>,
    terms: Vec<(u64, u64)>,
}

impl Segment {
    fn new(first_index: u64, path: PathBuf, file: File, size_bytes: u64) -> Self {
        Segment {
            first_index,
            next_index: first_index,
            path,
            file: Arc::new(file),
            len_bytes: SEGMENT_HEADER_BYTES,
            size_bytes,
            zeroed_to: SEGMENT_HEADER_BYTES,
            sparse: Vec::new(),
            terms: Vec::new(),
        }
    }

    fn note_record(&mut self, index: u64, term: u64, offset: u64, len: u64, interval: u64) {
        assert_eq!(
            index, self.next_index,
            "records of a segment are consecutive"
        );
        assert_eq!(
            offset, self.len_bytes,
            "records of a segment are contiguous"
        );
        if self
            .sparse
            .last()
            .is_none_or(|&(_, o)| offset - o >= interval)
        {
            self.sparse.push((index, offset));
        }
        if self.terms.last().map(|&(_, t)| t) != Some(term) {
            self.terms.push((index, term));
        }
        self.next_index = index + 1;
        self.len_bytes = offset + len;
    }

    /// A record offset at or before the record with `index`, and that record's index.
    fn seek_hint(&self, index: u64) -> (u64, u64) {
        let i = self.sparse.partition_point(|&(i, _)| i <= index);
        if i == 0 {
            (self.first_index, SEGMENT_HEADER_BYTES)
        } else {
            self.sparse[i - 1]
        }
    }

    fn term_at(&self, index: u64) -> u64 {
        let i = self.terms.partition_point(|&(i, _)| i <= index);
        assert!(
            i > 0,
            "index {index} below segment start {}",
            self.first_index
        );
        self.terms[i - 1].1
    }

    /// Forgets records from `index` on (the file is cut by the caller).
    fn forget_from(&mut self, index: u64, offset: u64) {
        self.sparse.retain(|&(i, _)| i < index);
        self.terms.retain(|&(i, _)| i < index);
        self.next_index = index;
        self.len_bytes = offset;
        self.zeroed_to = self.zeroed_to.min(offset);
    }

    /// Keeps zeros written ahead of the records, so that records land on blocks the file
    /// system has allocated already and an `fdatasync` writes them alone, not also the
    /// allocation (a hole, like a block merely reserved with `fallocate`, makes every fsync
    /// after a write to a new block commit metadata as well, a third slower). Runs under
    /// the log lock, so no record write can be overwritten by these zeros: every byte below
    /// `len_bytes` is skipped, and later appends write after this returns.
    fn zero_ahead(&mut self) -> std::io::Result<()> {
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        let from = self.zeroed_to.max(self.len_bytes);
        if from - self.len_bytes >= ZERO_AHEAD_BYTES / 2 || from >= self.size_bytes {
            return Ok(());
        }
        let to = (from + ZERO_AHEAD_BYTES).min(self.size_bytes);
        let mut at = from;
        while at < to {
            let n = usize::try_from(to - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            self.file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
        }
        self.zeroed_to = to;
        Ok(())
    }

    /// Byte offset of the record with `index`, found by reading from the nearest hint.
    fn offset_of(&self, index: u64, record_bytes_max: u64) -> Result<u64> {
        assert!(self.first_index <= index && index < self.next_index);
        let (mut expected, from) = self.seek_hint(index);
        let mut c = Cursor::new(&self.file, from, self.len_bytes, record_bytes_max, 1 << 16);
        loop {
            let offset = c.position();
            match c.next_step().map_err(|e| Error::io(&self.path, e))? {
                Step::Record(r) if r.entry.index == expected => {
                    if expected == index {
                        return Ok(offset);
                    }
                    expected += 1;
                }
                Step::Record(r) => {
                    return Err(Error::OutOfSequence {
                        path: self.path.clone(),
                        offset,
                        expected,
                        found: r.entry.index,
                    })
                }
                Step::End => return Err(Error::corrupt(&self.path, offset, "segment ends early")),
                Step::Damaged { offset, damage } => {
                    return Err(Error::corrupt(&self.path, offset, damage.to_string()))
                }
            }
        }
    }
}

/// A segment file handed out by [`Wal::segment_file`].
#[derive(Debug, Clone)]
pub(crate) struct SegmentFile {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    /// The records readable through the handle when it was handed out:
    /// `[first_index, next_index)` (not those still staged for the next fsync round).
    pub(crate) first_index: u64,
    pub(crate) next_index: u64,
}

/// One segment as [`Wal::segment_spans`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSpan {
    /// Its first index in the log (records below the log start are not counted as held).
    pub(crate) first_index: u64,
    /// One past its last index.
    pub(crate) next_index: u64,
    /// Bytes of its header and records (not of the preallocated space after them).
    pub(crate) bytes: u64,
}

/// The segments and everything the append lock guards.
#[derive(Debug)]
struct LogState {
    /// First index of the log; entries below it are compacted.
    start_index: u64,
    /// One past the last index appended: the end of the log as readers and fsyncs see it
    /// (an append writes its records under the lock, so none is ever half done).
    next_index: u64,
    /// Ascending by first index; the last one is the one appended to.
    segments: Vec<Segment>,
    /// Records appended while an fsync round ran, not yet handed to the OS.
    staged: Option<Staged>,
    /// Files rolled away from that still need an fsync (only with `Durability::Never`).
    pending_sync: Vec<(PathBuf, Arc<File>)>,
    /// A segment was created since the last directory fsync.
    dir_dirty: bool,
    poisoned: bool,
}

impl LogState {
    fn segment_index(&self, index: u64) -> usize {
        let i = self.segments.partition_point(|s| s.first_index <= index);
        assert!(i > 0, "no segment holds index {index}");
        i - 1
    }

    fn check_range(&self, index: u64) -> Result<()> {
        if index < self.start_index {
            return Err(Error::Compacted {
                index,
                first_index: self.start_index,
            });
        }
        if index >= self.next_index {
            return Err(Error::Unavailable {
                index,
                last_index: self.next_index - 1,
            });
        }
        Ok(())
    }

    /// Refuses work on a poisoned log.
    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Hands the staged records to the OS (under the lock: readers and truncations must find
    /// them in the file once this returns). A failed write poisons the log.
    fn flush_staged(&mut self) -> Result<()> {
        let Some(st) = self.staged.take() else {
            return Ok(());
        };
        let seg = self
            .segments
            .last()
            .expect("staged records belong to the last segment");
        seg.file
            .write_all_at(&st.bytes, st.offset)
            .map_err(|e| Error::io(&seg.path, e))
    }
}

/// Records of the last segment kept in memory until the next fsync round writes them, all in
/// one system call.
///
/// With `Always`, an append that arrives while a round runs cannot become durable before the
/// next round starts anyway. Rather than each appender making its own `write` system call
/// (and, on few CPUs, paying for it with the round's time), the next round writes them
/// together just before its fsync. For everyone else the records are written: they count in
/// `next_index` and the segment's `len_bytes`, so [`LogState::flush_staged`] runs first
/// wherever the file itself is read, cut, rolled from or synced. Only `Always` stages: with
/// the other policies a write must reach the OS at once, since an acknowledged entry then
/// relies on the page cache surviving a crash of the process.
///
/// The records are always in the last segment: a roll and both truncations write them first.
#[derive(Debug)]
struct Staged {
    /// Byte offset of `bytes` in the last segment.
    offset: u64,
    /// Index of the first staged record.
    first_index: u64,
    bytes: Vec<u8>,
}

/// What the fsync thread and the durability waiters share.
#[derive(Debug, Default)]
struct SyncState {
    /// Highest index up to which every record is handed to the OS.
    written_index: u64,
    /// Highest index known to be on stable storage.
    durable_index: u64,
    /// Bumped by every suffix truncation; an fsync that began before one cannot vouch for
    /// the entries written after it.
    generation: u64,
    /// Someone wants an fsync now, whatever the policy.
    requested: bool,
    /// An fsync round is running (on the fsync thread or a waiter leading it).
    in_flight: bool,
    /// Parked threads waiting for an index to become durable; a round wakes exactly those it
    /// covers, so waking costs one unpark per waiter instead of a herd contending for a lock.
    waiters: Vec<(u64, Thread)>,
    /// Append calls so far (for the fsync thread's linger, see `Shared::run_syncer`).
    appends: u64,
    /// `appends` when the running or last round started, and when it started.
    round_start_appends: u64,
    round_started: Option<Instant>,
    /// Appends the running or last round covers: those since the round before it started.
    round_appends: u64,
    /// The fsync thread starts the next round once `appends` reaches `linger_target` or at
    /// `linger_until`, whichever is first.
    linger_target: u64,
    linger_until: Option<Instant>,
    /// The fsync thread is waiting for `linger_target`: appends below it need not wake it.
    lingering: bool,
    shutdown: bool,
    poisoned: bool,
}

impl SyncState {
    /// While the appends the next round should wait for are still coming in: until when.
    fn linger(&self, now: Instant) -> Option<Instant> {
        self.linger_until
            .filter(|&until| now < until && self.appends < self.linger_target)
    }

    /// Moves every waiter for an index at or below `durable_index` to `out`, to be woken.
    fn take_covered(&mut self, out: &mut Vec<Thread>) {
        let durable = self.durable_index;
        self.waiters.retain(|(index, thread)| {
            let covered = *index <= durable;
            if covered {
                out.push(thread.clone());
            }
            !covered
        });
    }

    /// Wakes and forgets every waiter (poisoning, shutdown).
    fn wake_all(&mut self) {
        for (_, thread) in self.waiters.drain(..) {
            thread.unpark();
        }
    }
}

type Listener = Box<dyn Fn(u64) + Send + Sync>;

struct Shared {
    dir: PathBuf,
    options: Options,
    /// Readers hold it shared while they read files; suffix truncation holds it exclusively,
    /// so a reader never sees a record region being cut and rewritten.
    truncation: RwLock<()>,
    log: Mutex<LogState>,
    sync: Mutex<SyncState>,
    /// Wakes the fsync thread.
    sync_wanted: Condvar,
    listeners: Mutex<Vec<Listener>>,
    /// A copy of `SyncState::durable_index` that appenders read under the log lock, to seal
    /// into each record as its durability claim.
    durable_claim: AtomicU64,
    /// Set once a listener is registered: then an `Always` append wakes the fsync thread
    /// (unless a round runs or the thread lingers for more appends), since nobody may be
    /// waiting to lead the round.
    has_listeners: AtomicBool,
    /// A copy of `SyncState::in_flight` that appenders read under the log lock: while a
    /// round runs, `Always` appends are staged for the next one (see [`Staged`]).
    round_running: AtomicBool,
    /// `fdatasync` calls on segments by appends and fsync rounds (not by recovery or
    /// truncation), for [`Wal::fsyncs`].
    fsyncs: AtomicU64,
    hard_state: Mutex<HardState>,
    snapshots: Arc<Snapshots>,
    /// Holds the directory's lock for as long as the log is open.
    _dir_lock: File,
    /// Test hook: the number of crash points to pass before failing like a crash.
    #[cfg(test)]
    crash_after_steps: Mutex<Option<u32>>,
}

/// A write-ahead log in one directory: segment files, the hard state and snapshots.
///
/// `Wal` is `Send + Sync`; share it with an `Arc`. An append holds the internal lock while
/// it checks its index and writes its records with one `pwrite` (with `Always`, an append
/// that arrives while an fsync runs leaves its bytes to the next round instead, see the
/// [crate documentation](crate)), so appends from several threads take turns; readers wait
/// for at most that one write. Fsyncs (`fdatasync`) run without that lock, so appends keep
/// flowing while one runs, and each covers everything written before it started (group
/// commit). A thread in [`wait_durable`](Self::wait_durable) that finds no fsync in
/// flight runs it itself; others park until a round covers their index. A background thread
/// runs the rounds for listeners and the `Interval` policy.
///
/// See the [crate documentation](crate) for the format and the crash-safety argument.
pub struct Wal {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("durable_index", &self.durable_index())
            .finish()
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` and recovers it: completes an interrupted
    /// truncation, truncates a torn tail, and fails with an error naming file and byte offset
    /// on any corruption before the tail, a gap between segments or an index out of sequence.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Wal> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let dir_lock = lock_dir(&dir)?;
        // Whether the page cache outlived the last run (same boot) decides which tail
        // damage a crash can explain; see `judge_damage`.
        let boot = current_boot_id();
        let same_boot = boot.is_some() && read_boot_id(&dir_lock) == boot;
        let log = recover(&dir, &options, same_boot)?;
        if let Some(boot) = &boot {
            record_boot_id(&dir_lock, boot).map_err(|e| Error::io(dir.join(LOCK_FILE), e))?;
        }
        let hard_state = HardState::load(&dir)?;
        let snapshots = Arc::new(Snapshots::open(&dir)?);
        // Everything recovery kept is on disk already: it was read back and fsynced where cut.
        let recovered_index = log.next_index - 1;
        let shared = Arc::new(Shared {
            dir,
            options,
            truncation: RwLock::new(()),
            log: Mutex::new(log),
            sync: Mutex::new(SyncState {
                written_index: recovered_index,
                durable_index: recovered_index,
                ..SyncState::default()
            }),
            sync_wanted: Condvar::new(),
            listeners: Mutex::new(Vec::new()),
            has_listeners: AtomicBool::new(false),
            round_running: AtomicBool::new(false),
            fsyncs: AtomicU64::new(0),
            durable_claim: AtomicU64::new(recovered_index),
            hard_state: Mutex::new(hard_state),
            snapshots,
            _dir_lock: dir_lock,
            #[cfg(test)]
            crash_after_steps: Mutex::new(None),
        });
        let for_thread = Arc::clone(&shared);
        let syncer = std::thread::Builder::new()
            .name("ordo-wal-sync".into())
            .spawn(move || for_thread.run_syncer())
            .map_err(|e| Error::io(&shared.dir, e))?;
        Ok(Wal {
            shared,
            syncer: Some(syncer),
        })
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The first index of the log (entries before it were removed by `truncate_prefix`).
    /// An empty log has `last_index() == first_index() - 1`.
    pub fn first_index(&self) -> u64 {
        lock(&self.shared.log).start_index
    }

    /// The last index of the log, `first_index() - 1` if it is empty.
    pub fn last_index(&self) -> u64 {
        lock(&self.shared.log).next_index - 1
    }

    /// Appends `entries`, which must carry consecutive indices starting at `last_index() + 1`,
    /// and returns the new last index as soon as the bytes are handed to the OS (with
    /// [`Durability::Always`] while an fsync runs: as soon as they are queued for the next,
    /// which writes them before it fsyncs; readers see them either way).
    ///
    /// Durability is reported separately ([`durable_index`](Self::durable_index),
    /// [`wait_durable`](Self::wait_durable), [`on_durable`](Self::on_durable)), so a caller can
    /// send the entries to peers while the fsync runs. An entry above
    /// [`Options::record_bytes_max`] or a batch above [`Options::segment_bytes_max`] is an
    /// error and nothing is written.
    pub fn append(&self, entries: &[Entry]) -> Result<u64> {
        if entries.is_empty() {
            return Ok(self.last_index());
        }
        self.append_located(entries).map(|(last, _)| last)
    }

    /// [`append`](Self::append) of a non-empty batch, also returning the byte offset of its
    /// first record in its segment.
    pub(crate) fn append_located(&self, entries: &[Entry]) -> Result<(u64, u64)> {
        let first = entries
            .first()
            .expect("append_located is given a non-empty batch");
        check_index(first.index)?;
        let opts = &self.shared.options;
        let mut bytes = 0u64;
        for (i, e) in entries.iter().enumerate() {
            check_payload(e.index, e.payload.len(), opts)?;
            let expected = first.index + i as u64;
            if e.index != expected {
                return Err(Error::NonContiguousAppend {
                    expected,
                    found: e.index,
                });
            }
            bytes += (record::HEADER_BYTES + e.payload.len()) as u64;
        }
        check_batch(bytes, opts)?;
        // Encode (and checksum) before taking the lock, so readers do not wait for that work.
        let mut buf = Vec::with_capacity(bytes as usize);
        let crcs: Vec<u32> = entries
            .iter()
            .map(|e| record::encode(&mut buf, e))
            .collect();
        self.shared.write_batch(first.index, buf, crcs)
    }

    /// Entries with indices in `[lo, hi)`, stopping before the total encoded size would exceed
    /// `max_bytes` (but always at least one entry if the range is not empty). Reads with
    /// positioned reads from the record offsets, never whole segments, and verifies each
    /// record's checksum: damage is an error naming file and offset, never a wrong entry.
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        self.visit_entries(lo, hi, max_bytes, |_, _, e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`entries`](Self::entries), handing each entry to `visit` with the segment file and
    /// the byte offset of its record instead of collecting them; an error from `visit`
    /// stops the read and is returned.
    pub(crate) fn visit_entries(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: u64,
        mut visit: impl FnMut(&Path, u64, Entry) -> Result<()>,
    ) -> Result<()> {
        if lo >= hi {
            return Ok(());
        }
        let _reading = self
            .shared
            .truncation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let opts = &self.shared.options;
        // Plan under the lock, read without it: appends only add bytes past `len_bytes`.
        let plan: Vec<(PathBuf, Arc<File>, u64, u64, u64)> = {
            let mut log = lock(&self.shared.log);
            log.check_range(lo)?;
            log.check_range(hi - 1)?;
            if log.staged.as_ref().is_some_and(|st| st.first_index < hi) {
                self.shared.flush_staged(&mut log)?;
            }
            let mut plan = Vec::new();
            let mut i = log.segment_index(lo);
            while i < log.segments.len() && log.segments[i].first_index < hi {
                let s = &log.segments[i];
                let (index, offset) = s.seek_hint(lo.max(s.first_index));
                plan.push((
                    s.path.clone(),
                    Arc::clone(&s.file),
                    index,
                    offset,
                    s.len_bytes,
                ));
                i += 1;
            }
            plan
        };
        let chunk = usize::try_from(max_bytes.clamp(1 << 12, 1 << 22)).unwrap_or(1 << 22);
        let mut visited = 0u64;
        let mut total = 0u64;
        for (path, file, mut expected, from, end) in plan {
            let mut c = Cursor::new(&file, from, end, opts.record_bytes_max, chunk);
            loop {
                if expected >= hi {
                    // Past the range: what follows may be staged records not in the file.
                    return Ok(());
                }
                let offset = c.position();
                let r = match c.next_step().map_err(|e| Error::io(&path, e))? {
                    Step::Record(r) => r,
                    Step::End => break,
                    Step::Damaged { offset, damage } => {
                        return Err(Error::corrupt(&path, offset, damage.to_string()))
                    }
                };
                if r.entry.index != expected {
                    return Err(Error::OutOfSequence {
                        path,
                        offset,
                        expected,
                        found: r.entry.index,
                    });
                }
                expected += 1;
                if r.entry.index < lo {
                    continue;
                }
                if r.entry.index >= hi || (visited > 0 && total + r.len > max_bytes) {
                    return Ok(());
                }
                total += r.len;
                visited += 1;
                visit(&path, offset, r.entry)?;
            }
        }
        Ok(())
    }

    /// The term of the entry at `index`.
    pub fn term_at(&self, index: u64) -> Result<u64> {
        let log = lock(&self.shared.log);
        log.check_range(index)?;
        Ok(log.segments[log.segment_index(index)].term_at(index))
    }

    /// Removes the entries from `from` on (a follower's conflicting suffix). Durable and
    /// atomic when it returns; a crash part-way leaves the old or the new log.
    ///
    /// Crash safety: the intent file `truncate` (holding `from`) is written atomically first;
    /// from the moment its rename is durable, recovery finishes the truncation, so the log is
    /// "new" after any crash. Before that moment nothing was touched, so it is "old". Then
    /// segments wholly at or past `from` are deleted (newest first), the segment holding
    /// `from` is cut and fsynced, and the intent is removed and the directory fsynced before
    /// any later append can land (else a stale intent could cut those appends on recovery).
    /// The durable index drops to at most `from - 1`.
    pub fn truncate_suffix(&self, from: u64) -> Result<()> {
        let _exclusive = self
            .shared
            .truncation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut log = lock(&self.shared.log);
        log.check_poisoned()?;
        if from < log.start_index {
            return Err(Error::Compacted {
                index: from,
                first_index: log.start_index,
            });
        }
        if from >= log.next_index {
            return Ok(());
        }
        let result = self.shared.truncate_suffix_locked(&mut log, from);
        let mut waiters = Vec::new();
        if result.is_ok() {
            // Before appends can resume: they seal the durability claim into their records.
            let mut s = lock(&self.shared.sync);
            s.generation += 1;
            s.written_index = s.written_index.min(from - 1);
            let durable = s.durable_index.min(from - 1);
            self.shared.set_durable(&mut s, durable);
            // Waiters for removed indices must learn so rather than wait for new appends.
            waiters = std::mem::take(&mut s.waiters);
        }
        drop(log);
        for (_, thread) in waiters {
            thread.unpark();
        }
        self.shared.poison_on_error(result)
    }

    /// Removes the entries through `through` (they are in a snapshot); the log then starts at
    /// `through + 1`, even if that is past its last index (a follower that installed a newer
    /// snapshot): the next append must then carry `through + 1`.
    ///
    /// Crash safety: the log-start marker file `start` is replaced atomically first; that rename
    /// is the commit point. Recovery deletes every segment wholly below the marker and ignores
    /// the records below it in the segment that holds it (a file cannot be cut at the front),
    /// so a crash at any later step still yields the new log.
    pub fn truncate_prefix(&self, through: u64) -> Result<()> {
        check_index(through)?;
        let mut log = lock(&self.shared.log);
        log.check_poisoned()?;
        if through < log.start_index {
            return Ok(());
        }
        let result = self.shared.truncate_prefix_locked(&mut log, through);
        if result.is_ok() && log.next_index == log.start_index {
            // Nothing is left below the new start: the snapshot covers it all, durably.
            let mut s = lock(&self.shared.sync);
            s.written_index = s.written_index.max(through);
            let durable = s.durable_index.max(through);
            self.shared.set_durable(&mut s, durable);
        }
        drop(log);
        self.shared.poison_on_error(result)
    }

    /// The highest index known to be on stable storage. It only grows, except that
    /// [`truncate_suffix`](Self::truncate_suffix) lowers it to below the cut.
    pub fn durable_index(&self) -> u64 {
        lock(&self.shared.sync).durable_index
    }

    /// Blocks until `index` is durable and returns the durable index. With
    /// [`Durability::Never`] it asks for an fsync. Fails with [`Error::Unavailable`] if `index`
    /// was never appended or a [`truncate_suffix`](Self::truncate_suffix) removes it while
    /// waiting, and with [`Error::Poisoned`] if the log is poisoned.
    pub fn wait_durable(&self, index: u64) -> Result<u64> {
        let force = self.shared.options.durability == Durability::Never;
        self.shared.wait_durable(index, force)
    }

    /// Fsyncs everything appended so far, whatever the policy, and returns the durable index.
    pub fn sync(&self) -> Result<u64> {
        let last = self.last_index();
        self.shared.wait_durable(last, true)
    }

    /// Registers `listener` to be called with each new durable index, on the thread that
    /// completed the fsync: the log's fsync thread, or a thread that led the round from
    /// [`wait_durable`](Self::wait_durable) or [`sync`](Self::sync). Calls never overlap, and
    /// the index never goes backwards except after a [`truncate_suffix`](Self::truncate_suffix)
    /// lowered it. Keep it short and non-blocking (e.g. notify a channel); it must not call
    /// back into this `Wal` to wait for durability or to register a listener.
    pub fn on_durable(&self, listener: impl Fn(u64) + Send + Sync + 'static) {
        lock(&self.shared.listeners).push(Box::new(listener));
        self.shared.has_listeners.store(true, Ordering::Release);
        self.shared.sync_wanted.notify_one();
    }

    /// The last stored hard state (the default before the first [`set_hard_state`](Self::set_hard_state)).
    pub fn hard_state(&self) -> HardState {
        *lock(&self.shared.hard_state)
    }

    /// Replaces the hard state atomically and durably (temp file, fsync, rename, directory
    /// fsync) before returning.
    pub fn set_hard_state(&self, hard_state: HardState) -> Result<()> {
        let mut current = lock(&self.shared.hard_state);
        hard_state.store(&self.shared.dir)?;
        *current = hard_state;
        Ok(())
    }

    /// The metadata of the newest installed snapshot.
    pub fn latest_snapshot(&self) -> Option<SnapshotMeta> {
        self.shared.snapshots.latest()
    }

    /// Opens the newest installed snapshot for reading as a stream.
    pub fn open_snapshot(&self) -> Result<Option<SnapshotReader>> {
        self.shared.snapshots.open_latest()
    }

    /// Starts writing a snapshot described by `meta`; write its data to the returned writer
    /// and call [`SnapshotWriter::finish`] to install it. The log is not touched: call
    /// [`truncate_prefix`](Self::truncate_prefix) after installing.
    pub fn snapshot_writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        self.shared.snapshots.writer(meta)
    }

    /// Fsyncs everything and closes the log.
    pub fn close(self) -> Result<()> {
        self.sync().map(drop)
    }

    /// The `fdatasync` calls on segment files so far by appends (a roll syncs the segment
    /// it leaves) and fsync rounds; recovery and truncations are not counted.
    pub(crate) fn fsyncs(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// The segment file holding the record with `index`, for positioned reads of parts of
    /// its records (the handle stays readable after the segment is deleted). Records staged
    /// for the next fsync round are written first if they are in it.
    pub(crate) fn segment_file(&self, index: u64) -> Result<SegmentFile> {
        let mut log = lock(&self.shared.log);
        log.check_range(index)?;
        if log
            .staged
            .as_ref()
            .is_some_and(|st| st.first_index <= index)
        {
            self.shared.flush_staged(&mut log)?;
        }
        let s = &log.segments[log.segment_index(index)];
        // Records still staged are not in the file: the handle does not vouch for them.
        let staged_from = log.staged.as_ref().map_or(u64::MAX, |st| st.first_index);
        Ok(SegmentFile {
            path: s.path.clone(),
            file: Arc::clone(&s.file),
            first_index: s.first_index,
            next_index: s.next_index.min(staged_from),
        })
    }

    /// The path of the segment holding `index` (for error messages), if there is one.
    pub(crate) fn segment_path(&self, index: u64) -> Option<PathBuf> {
        let log = lock(&self.shared.log);
        log.check_range(index).ok()?;
        Some(log.segments[log.segment_index(index)].path.clone())
    }

    /// The segments in order: the indices each holds and its bytes of header and records.
    pub(crate) fn segment_spans(&self) -> Vec<SegmentSpan> {
        let log = lock(&self.shared.log);
        log.segments
            .iter()
            .map(|s| SegmentSpan {
                first_index: s.first_index.max(log.start_index),
                next_index: s.next_index,
                bytes: s.len_bytes,
            })
            .collect()
    }

    /// Test hook: appends stage their records as if an fsync round were running (until a
    /// round ends), or write them at once again.
    #[cfg(test)]
    pub(crate) fn stage_appends(&self, on: bool) {
        self.shared.round_running.store(on, Ordering::Release);
    }

    /// Test hook: whether records are staged, not yet in the file.
    #[cfg(test)]
    pub(crate) fn has_staged(&self) -> bool {
        lock(&self.shared.log).staged.is_some()
    }

    /// Test hook: fail like a crash at the `steps`-th crash point from now.
    #[cfg(test)]
    pub(crate) fn crash_after_steps(&self, steps: u32) {
        *lock(&self.shared.crash_after_steps) = Some(steps);
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Staged records were reported appended: hand them to the OS, as every other append
        // already was. A failure here has no one to report to; recovery judges the file.
        let _ = lock(&self.shared.log).flush_staged();
        {
            let mut s = lock(&self.shared.sync);
            s.shutdown = true;
            s.wake_all();
        }
        self.shared.sync_wanted.notify_all();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    /// A point at which tests may simulate a crash; a no-op outside tests.
    fn crash_point(&self) -> Result<()> {
        #[cfg(test)]
        {
            let mut steps = lock(&self.crash_after_steps);
            if let Some(n) = steps.as_mut() {
                if *n == 0 {
                    return Err(Error::io(
                        &self.dir,
                        std::io::Error::other("injected crash"),
                    ));
                }
                *n -= 1;
            }
        }
        Ok(())
    }

    /// Sets the durable index and the durability claim appenders seal into records.
    fn set_durable(&self, s: &mut SyncState, durable_index: u64) {
        s.durable_index = durable_index;
        self.durable_claim.store(durable_index, Ordering::Release);
    }

    /// Poisons the log if `result` is an error: the operation stopped part-way and what is
    /// on disk is for recovery to judge.
    fn poison_on_error<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.poison();
        }
        result
    }

    fn poison(&self) {
        self.poison_locked(&mut lock(&self.log));
    }

    /// [`poison`](Self::poison) for a caller that holds the log lock.
    fn poison_locked(&self, log: &mut LogState) {
        log.poisoned = true;
        let mut s = lock(&self.sync);
        s.poisoned = true;
        s.wake_all();
    }

    /// Writes the staged records; a failure poisons the log, since the records were
    /// already reported appended.
    fn flush_staged(&self, log: &mut LogState) -> Result<()> {
        let result = log.flush_staged();
        if result.is_err() {
            self.poison_locked(log);
        }
        result
    }

    /// Marks an fsync round started or ended (the caller holds the sync lock), and at the
    /// end sets how long the fsync thread lingers before the next (see `run_syncer`).
    fn set_round(&self, s: &mut SyncState, running: bool) {
        s.in_flight = running;
        self.round_running.store(running, Ordering::Release);
        let now = Instant::now();
        if running {
            s.round_appends = s.appends - s.round_start_appends;
            s.round_start_appends = s.appends;
            s.round_started = Some(now);
        } else {
            s.linger_target = s.appends + s.round_appends;
            let took = s.round_started.map_or(Duration::ZERO, |t| now - t);
            s.linger_until = Some(now + took.min(LINGER_MAX));
        }
    }

    /// Starts a new segment whose first record will be `first_index`.
    fn roll(&self, log: &mut LogState, first_index: u64) -> Result<()> {
        self.flush_staged(log)?;
        if log
            .segments
            .last()
            .is_some_and(|s| s.next_index == s.first_index)
        {
            // The last segment holds no record (a suffix truncation emptied it) and is too
            // small for the batch: it goes, as recovery would drop it.
            let s = log.segments.pop().expect("checked above");
            assert_eq!(s.first_index, first_index);
            remove_if_exists(&s.path)?;
        }
        if let Some(old) = log.segments.last() {
            // Make the finished segment durable before a later one can hold data: recovery
            // only forgives damage at the tail of the last segment. With `Never` the fsync
            // thread does it in the background instead, and a crash soon after a roll may
            // leave damage that recovery reports rather than guesses about.
            if self.options.durability == Durability::Never {
                log.pending_sync
                    .push((old.path.clone(), Arc::clone(&old.file)));
                lock(&self.sync).requested = true;
                self.sync_wanted.notify_one();
            } else if let Err(e) = old.file.sync_data() {
                let path = old.path.clone();
                self.poison_locked(log);
                return Err(Error::io(path, e));
            } else {
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
        }
        let size = self.options.segment_bytes_max;
        let (path, file) = create_segment(&self.dir, first_index, size)?;
        log.segments
            .push(Segment::new(first_index, path, file, size));
        log.dir_dirty = true;
        Ok(())
    }

    /// The append protocol, all under the log lock: check that `first` is the next index,
    /// roll to a new segment if the batch does not fit, seal the encoded records `buf`
    /// (checksums `crcs`) with the durability claim, hand them to the OS (or stage them for
    /// the next round), and only then index them, so that readers never find a record that
    /// did not reach the file. Then publish the new end to the durability waiters.
    ///
    /// Appends therefore take turns: the runtime appends from one task per log, and with
    /// one appender there is nothing to overlap. Readers wait at most for one `pwrite` of
    /// one batch (a copy into the page cache).
    fn write_batch(&self, first: u64, mut buf: Vec<u8>, crcs: Vec<u32>) -> Result<(u64, u64)> {
        let opts = &self.options;
        let bytes = buf.len() as u64;
        let mut log = lock(&self.log);
        if log.poisoned {
            return Err(Error::Poisoned);
        }
        if first != log.next_index {
            return Err(Error::NonContiguousAppend {
                expected: log.next_index,
                found: first,
            });
        }
        if log
            .segments
            .last()
            .is_none_or(|s| s.len_bytes + bytes > s.size_bytes)
        {
            self.roll(&mut log, first)?;
        }
        // Read under the lock: a suffix truncation lowers it before it lets go of the lock,
        // so a record never claims an index durable that is not (see `judge_damage`).
        seal_batch(&mut buf, &crcs, self.durable_claim.load(Ordering::Acquire));
        let offset = log.segments.last().expect("rolled above").len_bytes;
        let staged_bytes = log.staged.as_ref().map_or(0, |st| st.bytes.len());
        let stage = opts.durability == Durability::Always
            && self.round_running.load(Ordering::Acquire)
            && staged_bytes + buf.len() <= STAGED_BYTES_MAX;
        if stage {
            let follows = log
                .staged
                .as_ref()
                .is_some_and(|st| st.offset + st.bytes.len() as u64 == offset);
            if !follows {
                // Appends that wrote their own bytes came between: one write per run.
                self.flush_staged(&mut log)?;
            }
        } else {
            let seg = log.segments.last().expect("rolled above");
            if let Err(e) = seg.file.write_all_at(&buf, offset) {
                // What reached the file is unknown: refuse further work until recovery has
                // looked.
                let path = seg.path.clone();
                self.poison_locked(&mut log);
                return Err(Error::io(path, e));
            }
        }
        let seg = log.segments.last_mut().expect("rolled above");
        let (mut at, mut next) = (0, first);
        while at < buf.len() {
            let (len, term) = record::len_and_term(&buf[at..]);
            seg.note_record(
                next,
                term,
                offset + at as u64,
                len,
                opts.index_interval_bytes,
            );
            at += len as usize;
            next += 1;
        }
        assert_eq!(next - first, crcs.len() as u64, "one record per checksum");
        log.next_index = next;
        if stage {
            match &mut log.staged {
                Some(st) => st.bytes.extend_from_slice(&buf),
                None => {
                    log.staged = Some(Staged {
                        offset,
                        first_index: first,
                        bytes: buf,
                    });
                }
            }
        }
        drop(log);
        self.publish_appended(next - 1);
        Ok((next - 1, offset))
    }

    /// Tells the durability side that everything through `written` is appended: wakes the
    /// fsync thread or a parked waiter to lead a round, as the policy wants.
    fn publish_appended(&self, written: u64) {
        let opts = &self.options;
        let leader = {
            let mut s = lock(&self.sync);
            let mut leader = None;
            s.appends += 1;
            if written > s.written_index {
                s.written_index = written;
                let listened = self.has_listeners.load(Ordering::Acquire);
                if opts.durability == Durability::Always && listened {
                    // A running round looks for more work when it ends; a lingering fsync
                    // thread needs waking only when the appends it waits for are in.
                    if !s.in_flight && (!s.lingering || s.appends >= s.linger_target) {
                        self.sync_wanted.notify_one();
                    }
                } else if !s.in_flight && !s.waiters.is_empty() {
                    // A waiter on another thread may have parked for these entries between
                    // their append and this publication: it can lead a round now.
                    leader = Some(s.waiters.remove(0).1);
                }
            }
            leader
        };
        if let Some(thread) = leader {
            thread.unpark();
        }
    }

    fn truncate_suffix_locked(&self, log: &mut LogState, from: u64) -> Result<()> {
        // Simpler than cutting the staged bytes: the cut then finds every record in the file.
        self.flush_staged(log)?;
        self.crash_point()?;
        write_truncate_intent(&self.dir, from)?;
        while log.segments.last().is_some_and(|s| s.first_index >= from) {
            self.crash_point()?;
            let s = log.segments.pop().expect("checked above");
            fs::remove_file(&s.path).map_err(|e| Error::io(&s.path, e))?;
        }
        if let Some(s) = log.segments.last_mut() {
            if s.next_index > from {
                self.crash_point()?;
                let offset = s.offset_of(from, self.options.record_bytes_max)?;
                clear_from(&s.file, &s.path, offset, s.size_bytes)?;
                s.forget_from(from, offset);
            }
        }
        self.crash_point()?;
        fs::remove_file(self.dir.join(TRUNCATE_FILE))
            .map_err(|e| Error::io(self.dir.join(TRUNCATE_FILE), e))?;
        sync_dir(&self.dir)?;
        log.next_index = from;
        Ok(())
    }

    fn truncate_prefix_locked(&self, log: &mut LogState, through: u64) -> Result<()> {
        let start = through + 1;
        // The staged records' segment may be among those removed.
        self.flush_staged(log)?;
        self.crash_point()?;
        START_FORMAT.write(&self.dir, START_FILE, &start.to_le_bytes())?;
        log.start_index = start;
        log.next_index = log.next_index.max(start);
        while log.segments.first().is_some_and(|s| s.next_index <= start) {
            self.crash_point()?;
            let s = log.segments.remove(0);
            remove_if_exists(&s.path)?;
        }
        Ok(())
    }

    /// Waits until `index` is durable. With `Always`, or when `force`d, a waiter that finds no
    /// fsync in flight runs one itself (leader-based group commit): a lone appender pays no
    /// thread hand-off, and appenders arriving meanwhile park until a round covers them.
    fn wait_durable(&self, index: u64, force: bool) -> Result<u64> {
        let lead = force || self.options.durability == Durability::Always;
        let me = std::thread::current();
        let mut s = lock(&self.sync);
        loop {
            if s.poisoned || s.shutdown {
                s.waiters.retain(|(_, t)| t.id() != me.id());
                return Err(Error::Poisoned);
            }
            if s.durable_index >= index {
                return Ok(s.durable_index);
            }
            if index > s.written_index {
                // Appended but not yet published here, never appended, or removed by a
                // suffix truncation (which wakes waiters to find out): ask the log. The usual
                // caller, waiting for its own append, skips this lock.
                drop(s);
                let last = lock(&self.log).next_index - 1;
                s = lock(&self.sync);
                if index > last {
                    s.waiters.retain(|(_, t)| t.id() != me.id());
                    return Err(Error::Unavailable {
                        index,
                        last_index: last,
                    });
                }
            }
            if lead && !s.in_flight && s.written_index > s.durable_index {
                self.set_round(&mut s, true);
                s.requested = false;
                s.waiters.retain(|(_, t)| t.id() != me.id());
                drop(s);
                self.sync_round()?;
                s = lock(&self.sync);
                continue;
            }
            if force && !s.requested {
                s.requested = true;
                self.sync_wanted.notify_one();
            }
            if !s.waiters.iter().any(|(_, t)| t.id() == me.id()) {
                s.waiters.push((index, me.clone()));
            }
            drop(s);
            std::thread::park();
            s = lock(&self.sync);
        }
    }

    /// Runs one fsync round (the caller set `in_flight`), then hands on: if more was written
    /// meanwhile, a parked waiter is woken to lead the next round, or else the fsync thread.
    ///
    /// Publishing, ending the round and choosing the next leader take one critical section;
    /// the woken threads are unparked after it, so they do not wake only to block on the lock.
    fn sync_round(&self) -> Result<()> {
        let result = self.poison_on_error(self.sync_once());
        let mut wake = Vec::new();
        let advanced = {
            let mut s = lock(&self.sync);
            self.set_round(&mut s, false);
            let advanced = match result {
                Ok((_, generation)) if generation != s.generation => {
                    // A suffix truncation ran meanwhile: go round again for what follows it.
                    s.requested = true;
                    false
                }
                Ok((target, _)) if target > s.durable_index => {
                    self.set_durable(&mut s, target);
                    s.take_covered(&mut wake);
                    true
                }
                _ => false,
            };
            if s.written_index > s.durable_index || s.requested {
                if s.waiters.is_empty() {
                    self.sync_wanted.notify_one();
                } else {
                    wake.push(s.waiters.remove(0).1);
                }
            }
            advanced
        };
        for thread in wake {
            thread.unpark();
        }
        if advanced {
            // Under the lock, with the durable index as of now: calls are serialised and a
            // round that finished late never reports less than one that finished early.
            let listeners = lock(&self.listeners);
            let index = self.durable_claim.load(Ordering::Acquire);
            for l in listeners.iter() {
                l(index);
            }
        }
        result.map(drop)
    }

    /// The fsync thread: waits for work per the durability policy, then syncs. With `Always`
    /// and no listener, waiters lead their own rounds and this thread is only a backstop that
    /// keeps [`Wal::durable_index`] moving for callers that neither wait nor listen: at each
    /// tick it syncs only if entries written before the previous tick are still not durable,
    /// so it never races an appender that is about to wait.
    fn run_syncer(&self) {
        let policy = self.options.durability;
        let base = match policy {
            Durability::Interval(d) => Some(d),
            Durability::Always => Some(ALWAYS_BACKSTOP),
            Durability::Never => None,
        };
        let mut interval = base;
        let mut deadline = interval.map(|i| Instant::now() + i);
        // `Always` without listeners: the written index at the previous tick.
        let mut stale_mark = 0;
        loop {
            {
                let mut s = lock(&self.sync);
                loop {
                    if s.shutdown {
                        return;
                    }
                    let now = Instant::now();
                    let tick = deadline.is_some_and(|d| now >= d);
                    let behind = s.written_index > s.durable_index && !s.poisoned;
                    let mut linger = None;
                    let due = match policy {
                        Durability::Always if self.has_listeners.load(Ordering::Acquire) => {
                            // Appenders whose entries the last round made durable are likely
                            // to append again at once (each client of a server, each waiter
                            // of a Raft runtime). Starting the next round on the first of
                            // them would leave the rest for the round after, and the log
                            // would settle into rounds of half the appenders each. So wait
                            // until as many appends as the last round covered have come in,
                            // but never longer than the last round took (nor `LINGER_MAX`): a
                            // lone appender or a log that stops appending waits nothing or
                            // little. Many independent appenders (the groups of a node,
                            // each appending when its own turn comes) arrive spread out;
                            // waiting up to a whole round gathers them, so the log fsyncs
                            // at most about once per two round times instead of starting a
                            // round for whoever came first.
                            linger = s.linger(now).filter(|_| behind);
                            behind && linger.is_none()
                        }
                        Durability::Always => tick && s.durable_index < stale_mark,
                        Durability::Interval(_) => tick && behind,
                        Durability::Never => false,
                    };
                    if (s.requested || due) && !s.in_flight {
                        s.requested = false;
                        s.lingering = false;
                        self.set_round(&mut s, true);
                        break;
                    }
                    if tick {
                        if policy == Durability::Always {
                            // Unless entries are lagging (a round is then in flight), waiters
                            // keep up by themselves or the log is idle: back off, so the
                            // backstop costs next to nothing.
                            let lagging = s.durable_index < stale_mark;
                            stale_mark = s.written_index;
                            interval = if lagging {
                                base
                            } else {
                                interval.map(|i| (i * 2).min(ALWAYS_BACKSTOP_IDLE))
                            };
                        }
                        deadline = interval.map(|i| now + i);
                    }
                    s.lingering = linger.is_some();
                    let wake = match (deadline, linger) {
                        (Some(d), Some(l)) => Some(d.min(l)),
                        (d, l) => d.or(l),
                    };
                    s = match wake {
                        Some(d) => {
                            self.sync_wanted
                                .wait_timeout(s, d.saturating_duration_since(now))
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .0
                        }
                        None => self
                            .sync_wanted
                            .wait(s)
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                    };
                }
            }
            // Errors poison the log; waiters learn of it from there.
            let _ = self.sync_round();
            deadline = interval.map(|i| Instant::now() + i);
        }
    }

    /// The I/O of one group commit: fsyncs every file with unsynced writes, outside the append
    /// lock. Returns the last index written before it started, and the truncation generation
    /// then, for [`sync_round`](Self::sync_round) to publish.
    fn sync_once(&self) -> Result<(u64, u64)> {
        let (target, generation, files, dir_dirty) = {
            let mut log = lock(&self.log);
            if log.poisoned {
                return Err(Error::Poisoned);
            }
            self.flush_staged(&mut log)?;
            if self.options.durability == Durability::Always {
                if let Some(s) = log.segments.last_mut() {
                    s.zero_ahead().map_err(|e| Error::io(&s.path, e))?;
                }
            }
            let mut files = std::mem::take(&mut log.pending_sync);
            if let Some(s) = log.segments.last() {
                files.push((s.path.clone(), Arc::clone(&s.file)));
            }
            let generation = lock(&self.sync).generation;
            (
                log.next_index - 1,
                generation,
                files,
                std::mem::take(&mut log.dir_dirty),
            )
        };
        for (path, file) in files {
            file.sync_data().map_err(|e| Error::io(path, e))?;
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        if dir_dirty {
            sync_dir(&self.dir)?;
        }
        Ok((target, generation))
    }
}

/// Seals each record of the encoded batch `buf` (checksums `crcs`) with the durability
/// claim `durable`.
fn seal_batch(buf: &mut [u8], crcs: &[u32], durable: u64) {
    let mut at = 0;
    for &crc in crcs {
        let end = at + record::len_and_term(&buf[at..]).0 as usize;
        record::seal(&mut buf[at..end], crc, durable);
        at = end;
    }
    assert_eq!(at, buf.len(), "the records fill the batch");
}

pub(crate) fn check_index(index: u64) -> Result<()> {
    if index >= INDEX_MAX {
        return Err(Error::IndexTooLarge {
            index,
            max: INDEX_MAX,
        });
    }
    Ok(())
}

pub(crate) fn check_payload(index: u64, payload_bytes: usize, opts: &Options) -> Result<()> {
    if payload_bytes as u64 > opts.record_bytes_max {
        return Err(Error::RecordTooLarge {
            index,
            bytes: payload_bytes as u64,
            max: opts.record_bytes_max,
        });
    }
    Ok(())
}

fn check_batch(bytes: u64, opts: &Options) -> Result<()> {
    let max = opts.segment_bytes_max - SEGMENT_HEADER_BYTES;
    if bytes > max {
        return Err(Error::BatchTooLarge { bytes, max });
    }
    Ok(())
}

/// Durably records the intent to drop every record from index `from` on: from then on,
/// recovery finishes the cut if a crash interrupts it.
pub(crate) fn write_truncate_intent(dir: &Path, from: u64) -> Result<()> {
    TRUNCATE_FORMAT.write(dir, TRUNCATE_FILE, &from.to_le_bytes())
}

/// Reads a small file that holds one index (`start`, `truncate`); `None` if there is none.
fn read_index_file(dir: &Path, name: &str, format: &Format) -> Result<Option<u64>> {
    let Some(body) = format.read(dir, name)? else {
        return Ok(None);
    };
    if body.len() != 8 {
        return Err(Error::corrupt(
            dir.join(name),
            8,
            format!("{} bytes where an index (8 bytes) should be", body.len()),
        ));
    }
    Ok(Some(le_u64(&body)))
}

/// Takes the exclusive lock on the log directory (an advisory `flock` on its `lock` file,
/// released by the kernel when the file is closed, so a crashed process never leaves it
/// held).
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// The kernel's id of the current boot (Linux), if it can be read.
fn current_boot_id() -> Option<Vec<u8>> {
    let id = fs::read("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim_ascii().to_vec();
    (!id.is_empty() && id.len() <= BOOT_ID_BYTES_MAX).then_some(id)
}

/// Most bytes of a boot id kept in the lock file.
const BOOT_ID_BYTES_MAX: usize = 64;

/// The boot id the lock file holds: that of the boot during which the log was last opened.
fn read_boot_id(lock: &File) -> Option<Vec<u8>> {
    let mut buf = [0u8; BOOT_ID_BYTES_MAX + 1];
    let n = lock.read_at(&mut buf, 0).ok()?;
    (n > 0 && n <= BOOT_ID_BYTES_MAX).then(|| buf[..n].to_vec())
}

/// Records the current boot id in the lock file. Not fsynced: after a machine crash the
/// file holds an older boot id or none, and either differs from the next boot's.
fn record_boot_id(lock: &File, boot: &[u8]) -> std::io::Result<()> {
    lock.set_len(0)?;
    lock.write_all_at(boot, 0)
}

/// Creates the segment file for `first_index` at its full length `size_bytes`: header
/// written and everything fsynced under a temporary name, then renamed into place, so a
/// segment file never exists shorter than its header says. (The caller fsyncs the directory
/// before any record in it counts as durable.)
fn create_segment(dir: &Path, first_index: u64, size_bytes: u64) -> Result<(PathBuf, File)> {
    let path = dir.join(segment_name(first_index));
    let tmp = dir.join(format!("{}{TMP_SUFFIX}", segment_name(first_index)));
    let create = || -> std::io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let header = segment_header(size_bytes);
        file.write_all_at(&header, 0)?;
        // Sparse: the length costs no disk space until records fill it.
        file.set_len(size_bytes)?;
        file.sync_all()?;
        Ok(file)
    };
    let file = create().map_err(|e| Error::io(&tmp, e))?;
    if path.exists() {
        return Err(Error::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a segment with this first index exists already",
            ),
        ));
    }
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok((path, file))
}

/// Reads and checks the header of the segment at `path` (`file_len` bytes): returns the
/// length the segment was created with. A missing or foreign header is corruption.
pub(crate) fn read_segment_header(file: &File, path: &Path, file_len: u64) -> Result<(u64, bool)> {
    if file_len < SEGMENT_HEADER_BYTES {
        return Err(Error::corrupt(
            path,
            0,
            format!("{file_len} bytes is too short for a segment header"),
        ));
    }
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| Error::io(path, e))?;
    let (size, checked) = if &header[..8] == SEGMENT_MAGIC {
        let size = le_u64(&[&header[8..13], &[0; 3][..]].concat());
        if header != segment_header(size) {
            return Err(Error::corrupt(path, 8, "segment header checksum mismatch"));
        }
        (size, true)
    } else if &header[..8] == SEGMENT_MAGIC_UNCHECKED {
        (le_u64(&header[8..]), false)
    } else {
        return Err(Error::corrupt(path, 0, "not an Ordo segment: bad magic"));
    };
    if size <= SEGMENT_HEADER_BYTES || size > crate::SEGMENT_BYTES_MAX {
        return Err(Error::corrupt(
            path,
            8,
            format!("impossible segment length {size} in the header"),
        ));
    }
    Ok((size, checked))
}

/// The header of a segment created `size_bytes` long (below 2^40).
pub(crate) fn segment_header(size_bytes: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..13].copy_from_slice(&size_bytes.to_le_bytes()[..5]);
    let crc = crc32c::crc32c(&header[..13]);
    header[13..].copy_from_slice(&crc.to_le_bytes()[..3]);
    header
}

/// Cuts the records of a segment from `offset` on, keeping the file's length (the bytes
/// read as zeros), and fsyncs. A crash part-way can leave the file short; the callers hold
/// the truncation intent file meanwhile, which tells recovery to finish the job rather than
/// report the file truncated.
fn clear_from(file: &File, path: &Path, offset: u64, size_bytes: u64) -> Result<()> {
    assert!(SEGMENT_HEADER_BYTES <= offset && offset <= size_bytes);
    file.set_len(offset)
        .and_then(|()| file.set_len(size_bytes))
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(path, e))
}

/// Recovers the log in `dir`; see [`Wal::open`].
fn recover(dir: &Path, options: &Options, same_boot: bool) -> Result<LogState> {
    let start_path = dir.join(START_FILE);
    let start_index = read_index_file(dir, START_FILE, &START_FORMAT)?.unwrap_or(1);
    if start_index == 0 || start_index >= INDEX_MAX {
        return Err(Error::corrupt(
            &start_path,
            8,
            format!("impossible log start index {start_index}"),
        ));
    }
    let truncate_path = dir.join(TRUNCATE_FILE);
    let truncate_from = read_index_file(dir, TRUNCATE_FILE, &TRUNCATE_FORMAT)?;

    let mut names = Vec::new();
    for (path, name) in list_dir(dir)? {
        if name.ends_with(TMP_SUFFIX) {
            // An atomic replacement that never reached its rename: the old file stands.
            remove_if_exists(&path)?;
        } else if let Some(first) = parse_segment_name(&name) {
            if first >= INDEX_MAX {
                return Err(Error::corrupt(
                    &path,
                    0,
                    "first index in the name is out of range",
                ));
            }
            names.push((first, path));
        }
    }
    names.sort();
    let mut dir_dirty = false;

    // Finish an interrupted suffix truncation: drop segments wholly at or past the cut.
    if let Some(from) = truncate_from {
        while names.last().is_some_and(|&(first, _)| first >= from) {
            let (_, path) = names.pop().expect("checked above");
            remove_if_exists(&path)?;
            dir_dirty = true;
        }
    }
    // Finish an interrupted prefix truncation: drop segments wholly below the log start.
    while names.len() >= 2 && names[1].0 <= start_index {
        remove_if_exists(&names[0].1)?;
        names.remove(0);
        dir_dirty = true;
    }
    if let Some((first, path)) = names.first() {
        if *first > start_index {
            return Err(Error::Gap {
                path: path.clone(),
                offset: 0,
                expected: start_index,
                found: *first,
            });
        }
    }

    let mut segments: Vec<Segment> = Vec::new();
    // Set once recovery itself cuts a torn tail under a truncation intent of its own.
    let mut cutting = false;
    let count = names.len();
    let mut names = names.into_iter().enumerate();
    while let Some((k, (first, path))) = names.next() {
        if let Some(prev) = segments.last() {
            if prev.next_index != first {
                return Err(Error::Gap {
                    path,
                    offset: 0,
                    expected: prev.next_index,
                    found: first,
                });
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let (size, checked) = read_segment_header(&file, &path, file_len)?;
        if file_len < size {
            // Segments keep their length from creation on; only a cut part-way through a
            // truncation, under its intent file, may leave the last one short, and a cut
            // inside the zeros after the last record took nothing that was written.
            let finishing_cut = truncate_from.is_some() && k + 1 == count;
            let lost_nothing =
                finishing_cut || checked && cut_after_records(&file, &path, file_len, options)?;
            if !lost_nothing {
                return Err(Error::Truncated {
                    path,
                    len_bytes: file_len,
                    expected_bytes: size,
                });
            }
            file.set_len(size).map_err(|e| Error::io(&path, e))?;
        } else if file_len > size {
            return Err(Error::corrupt(
                &path,
                size,
                format!("the file is {file_len} bytes, longer than the {size} its header says"),
            ));
        }
        let mut seg = Segment::new(first, path, file, size);
        let end = scan_segment(&mut seg, truncate_from, options)?;
        let cut = match end {
            ScanEnd::Clean => None,
            ScanEnd::Truncate(offset) => Some(offset),
            ScanEnd::Damaged { offset, .. }
                if record::all_zero(&seg.file, offset, size)
                    .map_err(|e| Error::io(&seg.path, e))? =>
            {
                // Space never written: the records end here.
                None
            }
            ScanEnd::Damaged { offset, damage } => {
                let later: Vec<PathBuf> = names.by_ref().map(|(_, (_, p))| p).collect();
                if same_boot {
                    judge_same_boot_damage(&seg, offset, damage, options)?;
                }
                judge_damage(&seg, offset, damage, size, &later, options)?;
                // A torn tail: nothing from here on was ever durable. Cut it under an intent
                // file, as a suffix truncation would, so that a crash meanwhile is finished
                // by the next recovery instead of looking like a truncated segment.
                if truncate_from.is_none() && !cutting {
                    write_truncate_intent(dir, seg.next_index)?;
                    cutting = true;
                }
                for p in later {
                    remove_if_exists(&p)?;
                    dir_dirty = true;
                }
                Some(offset)
            }
        };
        if let Some(offset) = cut {
            clear_from(&seg.file, &seg.path, offset, size)?;
        }
        // What recovery keeps counts as durable: after a process crash it may still sit only
        // in the page cache, so make it so.
        seg.file.sync_data().map_err(|e| Error::io(&seg.path, e))?;
        segments.push(seg);
    }

    if truncate_from.is_some() || cutting {
        remove_if_exists(&truncate_path)?;
        dir_dirty = true;
    }
    // A last segment left empty by a torn tail, or wholly below the log start, holds no entry.
    while segments
        .last()
        .is_some_and(|s| s.len_bytes == SEGMENT_HEADER_BYTES || s.next_index <= start_index)
    {
        let s = segments.pop().expect("checked above");
        remove_if_exists(&s.path)?;
        dir_dirty = true;
        if s.next_index <= start_index {
            // Everything left is below the start too (segments are ascending).
            for s in segments.drain(..) {
                remove_if_exists(&s.path)?;
            }
        }
    }
    if dir_dirty {
        sync_dir(dir)?;
    }
    let next_index = segments.last().map_or(start_index, |s| s.next_index);
    Ok(LogState {
        start_index,
        next_index: next_index.max(start_index),
        segments,
        pending_sync: Vec::new(),
        staged: None,
        dir_dirty: false,
        poisoned: false,
    })
}

/// Whether a segment cut short at `file_len` lost nothing: its records end before the cut,
/// followed by at least a record length's worth of zeros (a record's length is never 0, and
/// records are written one after another from the segment's start, so no record began there
/// or after). A cut at or inside a record, or too close after one to tell, may have taken
/// records this node made durable.
fn cut_after_records(file: &File, path: &Path, file_len: u64, options: &Options) -> Result<bool> {
    if file_len < SEGMENT_HEADER_BYTES {
        return Ok(false);
    }
    let mut c = Cursor::new(
        file,
        SEGMENT_HEADER_BYTES,
        file_len,
        options.record_bytes_max,
        SCAN_CHUNK_BYTES,
    );
    loop {
        match c.next_step().map_err(|e| Error::io(path, e))? {
            Step::Record(_) => {}
            Step::End => return Ok(false),
            Step::Damaged { offset, damage } => {
                return Ok(damage == Damage::ZeroLength
                    && record::all_zero(file, offset, file_len).map_err(|e| Error::io(path, e))?)
            }
        }
    }
}

/// How the scan of a segment ended.
enum ScanEnd {
    /// At the end of the file.
    Clean,
    /// At the first record an interrupted suffix truncation removes.
    Truncate(u64),
    /// At bytes that are not a valid record.
    Damaged { offset: u64, damage: Damage },
}

/// Scans one segment from the start, filling its index, checking every checksum and that
/// the indices run on from the file name without a gap.
fn scan_segment(
    seg: &mut Segment,
    truncate_from: Option<u64>,
    options: &Options,
) -> Result<ScanEnd> {
    let file = Arc::clone(&seg.file);
    let mut c = Cursor::new(
        &file,
        SEGMENT_HEADER_BYTES,
        seg.size_bytes,
        options.record_bytes_max,
        SCAN_CHUNK_BYTES,
    );
    loop {
        let offset = c.position();
        match c.next_step().map_err(|e| Error::io(&seg.path, e))? {
            Step::Record(r) => {
                if r.entry.index != seg.next_index {
                    let (path, expected, found) = (seg.path.clone(), seg.next_index, r.entry.index);
                    return Err(if offset == SEGMENT_HEADER_BYTES {
                        Error::Gap {
                            path,
                            offset,
                            expected,
                            found,
                        }
                    } else {
                        Error::OutOfSequence {
                            path,
                            offset,
                            expected,
                            found,
                        }
                    });
                }
                if truncate_from.is_some_and(|from| r.entry.index >= from) {
                    return Ok(ScanEnd::Truncate(offset));
                }
                let (index, term) = (r.entry.index, r.entry.term);
                seg.note_record(index, term, offset, r.len, options.index_interval_bytes);
            }
            Step::End => return Ok(ScanEnd::Clean),
            Step::Damaged { offset, damage } => return Ok(ScanEnd::Damaged { offset, damage }),
        }
    }
}

/// Page size for the same-boot rule: the kernel copies a `write` into the page cache a page
/// at a time and stops between pages when the process is killed. A multiple of this size
/// (larger pages) only makes the rule more lenient.
const PAGE_BYTES: u64 = 4096;

/// Within one boot the page cache survives a process crash, so every `write` that returned
/// is there in full; a write cut short by the kill ends at a page boundary with nothing
/// after it (the segment was preallocated, so unwritten bytes read as zeros). Damage of
/// any other shape at `offset` is corruption, even in the very last record (where no later
/// record can vouch for it): a bit flip, or a length field a partial write cannot produce.
fn judge_same_boot_damage(
    seg: &Segment,
    offset: u64,
    damage: Damage,
    options: &Options,
) -> Result<()> {
    let corrupt = |why: String| {
        Err(Error::corrupt(
            &seg.path,
            offset,
            format!(
                "{damage} where index {} should be, and the log was last open during this \
                 boot (the page cache survived), so a crash cannot explain it: {why}",
                seg.next_index
            ),
        ))
    };
    match damage {
        // Nothing written here; what follows (if anything) is judged by durability claims.
        Damage::ZeroLength => Ok(()),
        Damage::BadLength(_) | Damage::Truncated => {
            corrupt("a partial write leaves the length field whole or zero".into())
        }
        Damage::Checksum => {
            let mut len = [0u8; 4];
            seg.file
                .read_exact_at(&mut len, offset)
                .map_err(|e| Error::io(&seg.path, e))?;
            // The cursor checked the length against the limits before the checksum.
            let len = u64::from(u32::from_le_bytes(len));
            assert!(offset + len <= seg.size_bytes && len <= options.record_bytes_max + 64);
            let mut record = vec![0u8; len as usize];
            seg.file
                .read_exact_at(&mut record, offset)
                .map_err(|e| Error::io(&seg.path, e))?;
            // Where the written bytes end; a cut write leaves only zeros from a page
            // boundary inside the record on.
            let written_end = offset
                + record
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(0, |at| at as u64 + 1);
            let boundary = written_end.div_ceil(PAGE_BYTES) * PAGE_BYTES;
            if boundary > offset && boundary < offset + len {
                return Ok(());
            }
            corrupt("the record is complete but its checksum does not match".into())
        }
    }
}

/// Torn tail or corruption? Decides for damage at `offset` of `seg`, where the record with
/// index `i = seg.next_index` should start; `later` are the segment files after `seg`.
///
/// A crash can damage only what was written after the last completed fsync, in any pattern:
/// the page cache writes back pages in any order, so valid records may well follow a hole. What a crash cannot do is damage a record
/// that was already durable. Every record carries a durability claim: the durable index when
/// it was appended. So if any valid record after the damage (at any byte offset, in this or a
/// later segment) claims `i` or more, record `i` was durable before the crash and its damage
/// is corruption: an error naming file and offset, and nothing is dropped. Otherwise no
/// surviving record proves `i` durable, the damage is a torn tail, and recovery truncates
/// there (the records after it were not durable either, as the durable index only grows over
/// a contiguous prefix).
///
/// The limit of any such scheme: damage to durable records with no later record left to
/// vouch for them (the last records before a crash, or a bit flip there) reads as a torn
/// tail. Those entries were acknowledged; Raft recovers them from the majority that has them.
fn judge_damage(
    seg: &Segment,
    offset: u64,
    damage: Damage,
    file_len: u64,
    later: &[PathBuf],
    options: &Options,
) -> Result<()> {
    let index = seg.next_index;
    let max = options.record_bytes_max;
    let mut best = record::highest_claim(&seg.file, offset + 1, file_len, index, max)
        .map_err(|e| Error::io(&seg.path, e))?
        .map(|c| (c, seg.path.clone()));
    for path in later {
        let claim = File::open(path)
            .and_then(|f| {
                let len = f.metadata()?.len();
                record::highest_claim(&f, 0, len, index, max)
            })
            .map_err(|e| Error::io(path, e))?;
        if let Some(c) = claim.filter(|c| best.as_ref().is_none_or(|(b, _)| c.durable > b.durable))
        {
            best = Some((c, path.clone()));
        }
    }
    match best {
        Some((c, path)) if c.durable >= index => Err(Error::corrupt(
            &seg.path,
            offset,
            format!(
                "{damage} where index {index} should be, yet the record of index {} at byte {} \
                 of {} was appended when index {} was already durable",
                c.index,
                c.offset,
                path.display(),
                c.durable
            ),
        )),
        _ => Ok(()),
    }
}
