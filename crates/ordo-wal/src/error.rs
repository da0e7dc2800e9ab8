//! The one error type of `ordo-wal`.

use std::io;
use std::path::PathBuf;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `ordo-wal`.
///
/// Errors about bytes on disk name the file and the byte offset of the damage, so an operator
/// (or a repair-from-peers path) knows exactly what is wrong. Errors about the caller's input
/// change nothing on disk or in memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },

    /// A record or file on disk is damaged: a checksum failure, an impossible length, a bad
    /// magic number, or a torn record that is followed by valid data (and so is not a torn tail).
    #[error("corrupt data in {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the first damaged record or field in `path`.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// A record's index is not the one that must follow its predecessor.
    #[error(
        "index out of sequence in {path} at byte {offset}: expected {expected}, found {found}"
    )]
    OutOfSequence {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// The index the record should have carried.
        expected: u64,
        /// The index it carries.
        found: u64,
    },

    /// A segment file is shorter than the length it was created with: it was cut after it
    /// was written, so records that were durable, and may have been acknowledged, are gone.
    /// Recovery cannot tell how many; the data directory has lost state.
    #[error(
        "segment {path} was truncated: it is {len_bytes} bytes but was created with \
         {expected_bytes}; entries that were durable may be lost (lost state)"
    )]
    Truncated {
        /// The segment file.
        path: PathBuf,
        /// Its length now.
        len_bytes: u64,
        /// The length its header records.
        expected_bytes: u64,
    },

    /// The segments on disk do not form one contiguous run of indices.
    #[error("gap in the log at {path} (byte {offset}): expected index {expected}, found {found}")]
    Gap {
        /// The segment file that does not start where the log so far ends.
        path: PathBuf,
        /// Byte offset in `path` (0: the file's name or first record is wrong).
        offset: u64,
        /// The index the log needs next.
        expected: u64,
        /// The first index `path` holds.
        found: u64,
    },

    /// An entry's payload is larger than [`Options::record_bytes_max`](crate::Options).
    #[error("entry {index} has {bytes} payload bytes, more than the maximum of {max}")]
    RecordTooLarge {
        /// Index of the oversize entry.
        index: u64,
        /// Its payload size.
        bytes: u64,
        /// The configured maximum.
        max: u64,
    },

    /// A batch encodes to more bytes than one segment may hold.
    #[error("batch of {bytes} bytes exceeds the segment size of {max} bytes")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: u64,
        /// [`Options::segment_bytes_max`](crate::Options).
        max: u64,
    },

    /// An appended entry does not carry the index that must come next.
    #[error("append out of order: the log expects index {expected}, the entry has {found}")]
    NonContiguousAppend {
        /// The index the log expects.
        expected: u64,
        /// The index the entry carries.
        found: u64,
    },

    /// The requested index has been removed by [`Wal::truncate_prefix`](crate::Wal::truncate_prefix).
    #[error("index {index} is compacted: the log starts at {first_index}")]
    Compacted {
        /// The requested index.
        index: u64,
        /// The log's first index.
        first_index: u64,
    },

    /// The requested index is past the end of the log.
    #[error("index {index} is past the end of the log (last index {last_index})")]
    Unavailable {
        /// The requested index.
        index: u64,
        /// The log's last index.
        last_index: u64,
    },

    /// An index at or above [`INDEX_MAX`](crate::INDEX_MAX): far beyond any real log, and
    /// refused so that index arithmetic can never overflow.
    #[error("index {index} is beyond the largest supported index {max}")]
    IndexTooLarge {
        /// The offending index.
        index: u64,
        /// [`INDEX_MAX`](crate::INDEX_MAX).
        max: u64,
    },

    /// Another `Wal` (in this or another process) has the directory open: two writers would
    /// interleave their records and destroy the log.
    #[error("{path} is locked: another process (or another Wal in this one) has this log open")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// A small file would be larger than its format allows
    /// ([`atomic_file::Format::file_bytes_max`](crate::atomic_file::Format)); nothing was
    /// written, since its reader would refuse it.
    #[error("{path} would be {bytes} bytes, more than the {max} its format allows; not written")]
    FileTooLarge {
        /// The file that was to be replaced.
        path: PathBuf,
        /// Its encoded size.
        bytes: u64,
        /// The format's limit.
        max: u64,
    },

    /// The group was removed from its [`SharedLog`](crate::SharedLog) (by
    /// [`remove_group`](crate::SharedLog::remove_group)); this handle of it is void.
    #[error("group {group} was removed from the shared log")]
    GroupRemoved {
        /// The group's id.
        group: u64,
    },

    /// A directory is not a shared log this version can open: its layout file names
    /// another layout version, or it is missing from a directory that holds other files.
    #[error("{path}: {reason}")]
    Layout {
        /// The layout file.
        path: PathBuf,
        /// What is wrong, and what to do about it.
        reason: String,
    },

    /// A configuration value is out of range.
    #[error("invalid option: {0}")]
    InvalidOptions(String),

    /// A write or fsync failed earlier; what reached the disk is unknown, so the log refuses
    /// further work. Reopening runs recovery and restores a consistent state.
    #[error("the log hit an I/O error earlier and refuses further work; reopen it to recover")]
    Poisoned,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}
