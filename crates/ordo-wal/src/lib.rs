//! `ordo-wal`: the write-ahead log under every Ordo node.
//!
//! A log is a directory holding:
//!
//! - **segment files** named by the index of their first record (`00000000000000000001.log`,
//!   20 digits), created at their full length [`Options::segment_bytes_max`] (sparse) with a
//!   header recording it, and rolled when the next batch would not fit. Each record carries its length, a CRC32C over header and
//!   payload, a kind, a term, an index and the payload (layout in the `record` module docs and
//!   the crate README);
//! - `start`, the log-start marker written by [`Wal::truncate_prefix`], and transiently
//!   `truncate`, the intent of an unfinished [`Wal::truncate_suffix`];
//! - `hardstate`, Raft's term, vote and commit index ([`HardState`]);
//! - `lock`, on which an open log holds an exclusive `flock`: a second open of the directory
//!   fails with [`Error::Locked`];
//! - snapshot files `snap-<index>-<term>.snap` ([`SnapshotWriter`], [`SnapshotReader`]).
//!
//! A node hosting many Raft groups keeps them all in one [`SharedLog`] instead: one
//! journal (itself a [`Wal`]) whose every fsync covers the appends of all groups, a
//! [`GroupLog`] per group with the same methods as a [`Wal`], and collection that keeps the
//! journal bounded ([`shared`], and `SHARED.md` for the design).
//!
//! Small files are replaced atomically by [`atomic_file`]: written to a `.tmp`, fsynced,
//! renamed, and the directory fsynced; the module's documentation gives what a crash at each
//! step leaves. The runtime writes its own small files with it too. Every file carries a
//! checksum.
//!
//! # Durability
//!
//! [`Wal::append`] returns once the bytes are handed to the OS; a background thread fsyncs
//! (`fdatasync`) per the [`Durability`] policy, one fsync covering every append that arrived
//! while the previous one ran (group commit). With [`Durability::Always`] three things make
//! those rounds cheap and full:
//!
//! - appends that arrive while a round runs are held in memory and written by the next
//!   round, all in one `write` just before its fsync (they count, and read, as appended at
//!   once; the wait costs them nothing, since they could not become durable sooner);
//! - after a round, the fsync thread waits (at most as long as the round took, never more
//!   than a millisecond, and never for a lone appender) until as many appends have come in
//!   as the round covered: the appenders it has just released usually append again at
//!   once, and without the wait the log settles into rounds that each carry half of them;
//! - the segment is written with zeros a little ahead of the records, so that an fsync
//!   writes records into blocks the file system has allocated already, not the allocation
//!   as well.
//!
//! The caller learns what is durable from the
//! durable-index watermark: [`Wal::durable_index`], the blocking [`Wal::wait_durable`], or a
//! listener registered with [`Wal::on_durable`] (which a runtime can bridge to its own
//! notification primitive). A Raft leader can therefore send entries to followers while its own
//! fsync runs, and count itself in the quorum once the watermark passes them.
//!
//! # Crash safety and recovery
//!
//! [`Wal::open`] recovers the directory: it completes an interrupted truncation, truncates a
//! torn tail of the last segment, and refuses with an [`Error`] naming file and byte offset a
//! checksum failure before the tail, a gap between segments, or an index out of sequence. A
//! segment file shorter than its header says was cut after it was written: that is
//! [`Error::Truncated`], never a shorter log. It never skips a bad record. A damaged record
//! followed by any valid later record is corruption, not a torn tail; so is, when the log was
//! last open during the current boot (the page cache survived), any damage a killed `write`
//! cannot leave (see the crate README for the full argument).
//!
//! # Example
//!
//! ```
//! use ordo_wal::{Durability, Entry, HardState, Options, Wal};
//!
//! # fn main() -> Result<(), ordo_wal::Error> {
//! let dir = std::env::temp_dir().join(format!("ordo-wal-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let wal = Wal::open(&dir, Options { durability: Durability::Always, ..Options::default() })?;
//!
//! let last = wal.append(&[Entry::new(1, 1, 0, "put a=1"), Entry::new(2, 1, 0, "put b=2")])?;
//! // ... send the entries to peers here, while the fsync runs ...
//! wal.wait_durable(last)?;
//!
//! wal.set_hard_state(HardState { term: 1, vote: Some(1), commit: 2 })?;
//! let read = wal.entries(1, 3, 1 << 20)?;
//! assert_eq!(&read[1].payload[..], b"put b=2");
//! assert_eq!(wal.term_at(2)?, 1);
//!
//! wal.truncate_suffix(2)?; // a conflicting suffix goes
//! assert_eq!(wal.last_index(), 1);
//! wal.close()?;
//!
//! let wal = Wal::open(&dir, Options::default())?;
//! assert_eq!((wal.first_index(), wal.last_index()), (1, 1));
//! assert_eq!(wal.hard_state().commit, 2);
//! # drop(wal);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```

pub mod atomic_file;
mod error;
mod files;
#[doc(hidden)]
pub mod fuzzing;
mod hard_state;
mod record;
pub mod shared;
mod snapshot;
mod wal;

#[cfg(test)]
mod tests;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;

pub use error::{Error, Result};
pub use hard_state::HardState;
pub use shared::{Collected, GroupLog, SharedLog, SharedOptions, SharedStats};
pub use snapshot::{SnapshotMeta, SnapshotReader, SnapshotWriter, SNAPSHOT_CONFIG_BYTES_MAX};
pub use wal::{Wal, SEGMENT_HEADER_BYTES};

/// Bytes each entry takes on disk besides its payload; [`Wal::entries`] counts these too
/// against its byte bound.
pub const RECORD_HEADER_BYTES: usize = record::HEADER_BYTES;

/// Indices must stay below this (2^62): a limit no log reaches, which keeps every index
/// computation clear of overflow, whatever a damaged file claims.
pub const INDEX_MAX: u64 = 1 << 62;

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position in the log.
    pub index: u64,
    /// The Raft term it was created in.
    pub term: u64,
    /// What kind of entry it is; opaque to the log (Raft uses it for normal versus
    /// configuration entries).
    pub kind: u8,
    /// The payload.
    pub payload: Bytes,
}

impl Entry {
    /// An entry from its parts.
    pub fn new(index: u64, term: u64, kind: u8, payload: impl Into<Bytes>) -> Self {
        Entry {
            index,
            term,
            kind,
            payload: payload.into(),
        }
    }
}

/// When appended entries are fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// As soon as possible after each append; appends that arrive while an fsync runs share
    /// the next one (group commit). The default.
    Always,
    /// At most once per interval; a crash loses at most about an interval of appends.
    Interval(Duration),
    /// Only when asked ([`Wal::sync`], [`Wal::wait_durable`]) or when a segment is full:
    /// durability comes from replication, as with Kafka's default.
    Never,
}

/// Configuration of a [`Wal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Size at which a segment is closed and the next one started (default 64 MiB). A batch
    /// always lands in one segment, so a segment may exceed this by less than one batch.
    pub segment_bytes_max: u64,
    /// Largest payload of one entry (default 16 MiB). Larger appends fail and change nothing.
    /// Do not lower it below the size of entries already on disk.
    pub record_bytes_max: u64,
    /// Bytes of records between two entries of the in-memory index (default 4 KiB): memory
    /// per segment is about `16 * segment_bytes_max / index_interval_bytes` bytes, and a read
    /// starts at most this far before the first record it wants.
    pub index_interval_bytes: u64,
    /// The fsync policy.
    pub durability: Durability,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes_max: 64 << 20,
            record_bytes_max: 16 << 20,
            index_interval_bytes: 4 << 10,
            durability: Durability::Always,
        }
    }
}

/// The largest `segment_bytes_max` allowed, and so the largest segment header recovery
/// accepts: below 2^40, the 40 bits a segment header holds its length in.
const SEGMENT_BYTES_MAX: u64 = (1 << 40) - 4096;

impl Options {
    fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::InvalidOptions(s));
        if self.segment_bytes_max < 4096 || self.segment_bytes_max > SEGMENT_BYTES_MAX {
            return bad(format!(
                "segment_bytes_max {} is outside [4 KiB, 1 TiB - 4 KiB]",
                self.segment_bytes_max
            ));
        }
        if self.record_bytes_max == 0 || self.record_bytes_max > (1 << 30) {
            return bad(format!(
                "record_bytes_max {} is outside [1, 1 GiB]",
                self.record_bytes_max
            ));
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive".into());
        }
        if let Durability::Interval(d) = self.durability {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return bad(format!("fsync interval {d:?} is outside (0, 1 h]"));
            }
        }
        Ok(())
    }
}

/// Locks `m`, carrying on if a thread panicked while holding it: every guarded structure is
/// left consistent between statements that can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
