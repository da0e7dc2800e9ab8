//! Snapshot files: written as a stream, checksummed, installed atomically.
//!
//! A snapshot file `snap-<last index>-<last term>.snap` (both 20 digits), integers little-endian:
//!
//! | field | bytes |
//! |---|---|
//! | magic `ORDOSN01` | 8 |
//! | last included index, last included term | 8 + 8 |
//! | configuration length `n`, configuration blob | 4 + n |
//! | CRC32C of everything above | 4 |
//! | data | any |
//! | data length, CRC32C of the data | 8 + 4 |
//! | CRC32C of the two trailer fields above | 4 |
//!
//! It is written to `<name>.tmp`, fsynced, renamed to its name and the directory fsynced: a
//! crash leaves either no new snapshot (the `.tmp` is removed on open) or a complete one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::files::{le_u64, list_dir, remove_if_exists, sync_dir, TMP_SUFFIX};
use crate::lock;

const MAGIC: &[u8; 8] = b"ORDOSN01";
/// Fixed header bytes besides the configuration blob.
const HEADER_FIXED_BYTES: u64 = 8 + 8 + 8 + 4 + 4;
const TRAILER_BYTES: u64 = 16;
/// Upper bound on the configuration blob (Raft membership): far above any real cluster.
pub const SNAPSHOT_CONFIG_BYTES_MAX: usize = 1 << 20;

/// What a snapshot covers: the log prefix through `last_index` (whose entry had `last_term`) and
/// the cluster configuration at that point, as an opaque blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot includes.
    pub last_index: u64,
    /// Term of that entry.
    pub last_term: u64,
    /// The membership configuration as of `last_index`, encoded by the caller.
    pub config: Bytes,
}

fn snapshot_name(index: u64, term: u64) -> String {
    format!("snap-{index:020}-{term:020}.snap")
}

fn parse_snapshot_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (i, t) = rest.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(i) || !digits(t) {
        return None;
    }
    Some((i.parse().ok()?, t.parse().ok()?))
}

/// The snapshot state shared by a [`Wal`](crate::Wal) and its writers.
#[derive(Debug)]
pub(crate) struct Snapshots {
    dir: PathBuf,
    latest: Mutex<Option<SnapshotMeta>>,
}

/// Where a validated snapshot file keeps its data.
struct Layout {
    meta: SnapshotMeta,
    data_offset: u64,
    data_bytes: u64,
    data_crc: u32,
}

fn read_layout(path: &Path) -> Result<Layout> {
    let io_err = |e| Error::io(path, e);
    let mut f = File::open(path).map_err(io_err)?;
    let file_bytes = f.metadata().map_err(io_err)?.len();
    if file_bytes < HEADER_FIXED_BYTES + TRAILER_BYTES {
        return Err(Error::corrupt(path, 0, "file too short for a snapshot"));
    }
    let mut head = [0; 28];
    f.read_exact(&mut head).map_err(io_err)?;
    if &head[..8] != MAGIC {
        return Err(Error::corrupt(path, 0, "bad magic number"));
    }
    let mut n = [0; 4];
    n.copy_from_slice(&head[24..28]);
    let config_bytes = u32::from_le_bytes(n) as usize;
    let data_offset = HEADER_FIXED_BYTES + config_bytes as u64;
    if config_bytes > SNAPSHOT_CONFIG_BYTES_MAX || data_offset + TRAILER_BYTES > file_bytes {
        return Err(Error::corrupt(
            path,
            24,
            format!("impossible configuration length {config_bytes}"),
        ));
    }
    let mut rest = vec![0; config_bytes + 4];
    f.read_exact(&mut rest).map_err(io_err)?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &rest[..config_bytes]);
    let mut stored = [0; 4];
    stored.copy_from_slice(&rest[config_bytes..]);
    if u32::from_le_bytes(stored) != crc {
        return Err(Error::corrupt(
            path,
            data_offset - 4,
            "header checksum mismatch",
        ));
    }
    let mut trailer = [0; TRAILER_BYTES as usize];
    let trailer_offset = file_bytes - TRAILER_BYTES;
    f.read_exact_at(&mut trailer, trailer_offset)
        .map_err(io_err)?;
    stored.copy_from_slice(&trailer[12..]);
    if u32::from_le_bytes(stored) != crc32c::crc32c(&trailer[..12]) {
        return Err(Error::corrupt(
            path,
            trailer_offset,
            "trailer checksum mismatch",
        ));
    }
    let data_bytes = le_u64(&trailer);
    if data_offset.checked_add(data_bytes) != Some(trailer_offset) {
        return Err(Error::corrupt(
            path,
            trailer_offset,
            "data length does not match the file size",
        ));
    }
    stored.copy_from_slice(&trailer[8..12]);
    f.seek(SeekFrom::Start(data_offset)).map_err(io_err)?;
    Ok(Layout {
        meta: SnapshotMeta {
            last_index: le_u64(&head[8..]),
            last_term: le_u64(&head[16..]),
            config: Bytes::from(rest[..config_bytes].to_vec()),
        },
        data_offset,
        data_bytes,
        data_crc: u32::from_le_bytes(stored),
    })
}

impl Snapshots {
    /// Finds the newest installed snapshot in `dir`, checks its header and trailer, and removes
    /// older snapshots and unfinished ones. A damaged newest snapshot is an error: falling back
    /// to an older one could leave a gap before the log's first index.
    pub(crate) fn open(dir: &Path) -> Result<Snapshots> {
        let mut found = Vec::new();
        for (path, name) in list_dir(dir)? {
            if name.starts_with("snap-") && name.ends_with(TMP_SUFFIX) {
                remove_if_exists(&path)?;
            } else if let Some(key) = parse_snapshot_name(&name) {
                found.push((key, path));
            }
        }
        found.sort();
        let latest = match found.pop() {
            None => None,
            Some(((index, term), path)) => {
                let layout = read_layout(&path)?;
                if (layout.meta.last_index, layout.meta.last_term) != (index, term) {
                    return Err(Error::corrupt(
                        &path,
                        8,
                        "index and term differ from the file name",
                    ));
                }
                Some(layout.meta)
            }
        };
        for (_, path) in found {
            remove_if_exists(&path)?;
        }
        Ok(Snapshots {
            dir: dir.to_path_buf(),
            latest: Mutex::new(latest),
        })
    }

    /// The directory the snapshots are in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn latest(&self) -> Option<SnapshotMeta> {
        lock(&self.latest).clone()
    }

    pub(crate) fn open_latest(&self) -> Result<Option<SnapshotReader>> {
        let Some(meta) = self.latest() else {
            return Ok(None);
        };
        let path = self
            .dir
            .join(snapshot_name(meta.last_index, meta.last_term));
        let layout = read_layout(&path)?;
        let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        file.seek(SeekFrom::Start(layout.data_offset))
            .map_err(|e| Error::io(&path, e))?;
        Ok(Some(SnapshotReader {
            reader: BufReader::with_capacity(1 << 16, file),
            path,
            offset: layout.data_offset,
            remaining: layout.data_bytes,
            crc: 0,
            expected_crc: layout.data_crc,
            meta: layout.meta,
        }))
    }

    pub(crate) fn writer(self: &Arc<Self>, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        if meta.config.len() > SNAPSHOT_CONFIG_BYTES_MAX {
            return Err(Error::InvalidOptions(format!(
                "snapshot configuration of {} bytes exceeds {SNAPSHOT_CONFIG_BYTES_MAX}",
                meta.config.len()
            )));
        }
        let name = snapshot_name(meta.last_index, meta.last_term);
        let tmp_path = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(|e| Error::io(&tmp_path, e))?;
        let mut header = Vec::with_capacity(HEADER_FIXED_BYTES as usize + meta.config.len());
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&meta.last_index.to_le_bytes());
        header.extend_from_slice(&meta.last_term.to_le_bytes());
        header.extend_from_slice(&(meta.config.len() as u32).to_le_bytes());
        header.extend_from_slice(&meta.config);
        let crc = crc32c::crc32c(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        let mut out = BufWriter::with_capacity(1 << 16, file);
        out.write_all(&header)
            .map_err(|e| Error::io(&tmp_path, e))?;
        Ok(SnapshotWriter {
            out: Some(out),
            tmp_path,
            path: self.dir.join(name),
            meta,
            crc: 0,
            data_bytes: 0,
            unsynced_bytes: 0,
            snapshots: Arc::clone(self),
        })
    }
}

/// Writes one snapshot as a stream. Nothing is visible until [`finish`](Self::finish) installs
/// it; dropping the writer unfinished discards it.
#[derive(Debug)]
pub struct SnapshotWriter {
    out: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    path: PathBuf,
    meta: SnapshotMeta,
    crc: u32,
    data_bytes: u64,
    /// Bytes written since the last incremental fsync (see [`SYNC_EVERY_BYTES`]).
    unsynced_bytes: u64,
    snapshots: Arc<Snapshots>,
}

/// A snapshot being written is fsynced every this many bytes. Left to one fsync at the end,
/// a snapshot of tens of megabytes reaches the disk in one burst, and every log fsync queued
/// behind it waits for all of it: the appenders' latency jumps by tens of milliseconds.
/// In steps, a log fsync waits at most for one step.
const SYNC_EVERY_BYTES: u64 = 4 << 20;

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("snapshot already finished"))?;
        let n = out.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.data_bytes += n as u64;
        self.unsynced_bytes += n as u64;
        if self.unsynced_bytes >= SYNC_EVERY_BYTES {
            out.flush()?;
            out.get_ref().sync_data()?;
            self.unsynced_bytes = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().map_or(Ok(()), |o| o.flush())
    }
}

impl SnapshotWriter {
    /// Seals the snapshot with its checksum, makes it durable and installs it atomically as the
    /// newest snapshot; older snapshot files are then removed. Returns its metadata.
    pub fn finish(mut self) -> Result<SnapshotMeta> {
        let Some(mut out) = self.out.take() else {
            return Err(Error::InvalidOptions("snapshot already finished".into()));
        };
        let mut trailer = Vec::with_capacity(TRAILER_BYTES as usize);
        trailer.extend_from_slice(&self.data_bytes.to_le_bytes());
        trailer.extend_from_slice(&self.crc.to_le_bytes());
        let crc = crc32c::crc32c(&trailer);
        trailer.extend_from_slice(&crc.to_le_bytes());
        let tmp = &self.tmp_path;
        out.write_all(&trailer).map_err(|e| Error::io(tmp, e))?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(tmp, e))?;
        drop(file);
        // Installing is serialised: two writers may finish at once (the runtime's own
        // snapshot and one received from the leader). Were the rename, the choice of the
        // newest and the removal of the others not done under one lock, each could remove
        // the other's file after choosing its own as the one to keep, leaving none while
        // the log behind them is compacted.
        let mut latest = lock(&self.snapshots.latest);
        fs::rename(tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        let dir = self.snapshots.dir.clone();
        sync_dir(&dir)?;
        let mine = (self.meta.last_index, self.meta.last_term);
        if latest
            .as_ref()
            .is_none_or(|l| (l.last_index, l.last_term) <= mine)
        {
            *latest = Some(self.meta.clone());
        }
        let keep = latest
            .as_ref()
            .map_or(mine, |l| (l.last_index, l.last_term));
        for (path, name) in list_dir(&dir)? {
            if parse_snapshot_name(&name).is_some_and(|key| key < keep) {
                remove_if_exists(&path)?;
            }
        }
        drop(latest);
        Ok(self.meta.clone())
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            // Best effort: a leftover .tmp is also removed on the next open.
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

/// Reads a snapshot's data as a stream and verifies its checksum at the end: the final `read`
/// fails with [`io::ErrorKind::InvalidData`] wrapping an [`Error::Corrupt`] naming the file if
/// the data is damaged. Use the data only after reading to the end without error.
#[derive(Debug)]
pub struct SnapshotReader {
    reader: BufReader<File>,
    path: PathBuf,
    offset: u64,
    remaining: u64,
    crc: u32,
    expected_crc: u32,
    meta: SnapshotMeta,
}

impl SnapshotReader {
    /// The snapshot's metadata.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Error::corrupt(&self.path, self.offset, "snapshot data ends early"),
            ));
        }
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.offset += n as u64;
        self.remaining -= n as u64;
        if self.remaining == 0 && self.crc != self.expected_crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                Error::corrupt(&self.path, self.offset, "snapshot data checksum mismatch"),
            ));
        }
        Ok(n)
    }
}
