//! Moving a data directory of the layout before the shared log into it, when a node opens.
//!
//! That layout kept one log directory per group, `group-<id>/` under the data directory,
//! each an [`ordo_wal::Wal`] with its own segments, hard state and snapshots, beside the
//! group's `members` file. The shared log (`log/` under the data directory, its layout
//! version in `log/layout`) holds every group's entries and hard state in one journal and
//! each group's snapshots and `members` file in `log/groups/<id>/`.
//!
//! A group moves in three steps, each safe to crash in:
//!
//! 1. its log is recovered as before and copied into the shared log (any earlier partial
//!    copy removed first): snapshot, log start, entries, hard state, then fsynced;
//! 2. a `moved` mark is written in the old directory (atomically): from then on the copy is
//!    the group's log, and a restart only finishes the next step;
//! 3. the `members` file is moved across, the old files are removed, then the mark and
//!    the directory.
//!
//! A crash before the mark leaves the old log whole (it is only read), so the next open
//! copies again; after it, the old files are no longer read.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ordo_wal::{Options, SharedLog, Wal};

use crate::node::NodeError;

/// Written in an old group directory once its copy in the shared log is durable.
const MOVED_MARK: &str = "moved";
/// The member address file, which moves with the group.
const MEMBERS_FILE: &str = "members";
/// Entry bytes copied per append while moving a log.
const COPY_BATCH_BYTES: u64 = 4 << 20;

/// Moves every `group-<id>/` log directory under `data_dir` into `log`.
pub(crate) fn move_group_logs(
    data_dir: &Path,
    log: &SharedLog,
    options: &Options,
) -> Result<(), NodeError> {
    let entries = match fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(data_dir, e)),
    };
    let mut old = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(data_dir, e))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("group-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.path().is_dir() {
            old.push((id, entry.path()));
        }
    }
    old.sort();
    for (id, dir) in old {
        move_group(id, &dir, log, options)?;
    }
    Ok(())
}

fn move_group(id: u64, old: &Path, log: &SharedLog, options: &Options) -> Result<(), NodeError> {
    let moved = old.join(MOVED_MARK);
    if !moved.exists() && holds_a_log(old)? {
        copy_group(id, old, log, options).map_err(NodeError::Log)?;
        ordo_wal::atomic_file::replace(old, MOVED_MARK, b"").map_err(NodeError::Log)?;
        tracing::info!(group = id, dir = %old.display(), "group log moved into the shared log");
    }
    let new = log.group(id).map_err(NodeError::Log)?;
    let members = old.join(MEMBERS_FILE);
    if members.exists() {
        fs::rename(&members, new.dir().join(MEMBERS_FILE)).map_err(|e| io_error(&members, e))?;
        sync_dir(new.dir())?;
    }
    for path in list(old)? {
        if path != moved {
            fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
        }
    }
    sync_dir(old)?;
    match fs::remove_file(&moved) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&moved, e)),
    }
    fs::remove_dir(old).map_err(|e| io_error(old, e))?;
    if let Some(parent) = old.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Whether the directory holds anything of a group log (beyond the members file).
fn holds_a_log(dir: &Path) -> Result<bool, NodeError> {
    Ok(list(dir)?
        .iter()
        .any(|p| p.file_name().is_some_and(|n| n != MEMBERS_FILE)))
}

/// Copies the old log in `old` into group `id` of `log`, replacing whatever an earlier,
/// interrupted copy left there, and makes the copy durable.
fn copy_group(id: u64, old: &Path, log: &SharedLog, options: &Options) -> ordo_wal::Result<()> {
    let wal = Wal::open(old, options.clone())?;
    if log.group_ids().contains(&id) {
        log.remove_group(id)?;
    }
    let group = log.group(id)?;
    if let Some(mut reader) = wal.open_snapshot()? {
        let mut writer = group.snapshot_writer(reader.meta().clone())?;
        io::copy(&mut reader, &mut writer).map_err(|e| ordo_wal::Error::Io {
            path: old.to_path_buf(),
            source: e,
        })?;
        writer.finish()?;
    }
    let first = wal.first_index();
    if first > 1 {
        group.truncate_prefix(first - 1)?;
    }
    let mut next = first;
    while next <= wal.last_index() {
        let batch = wal.entries(next, wal.last_index() + 1, COPY_BATCH_BYTES)?;
        next = group.append(&batch)? + 1;
    }
    group.set_hard_state(wal.hard_state())?;
    group.sync()?;
    wal.close()
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, NodeError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        out.push(entry.map_err(|e| io_error(dir, e))?.path());
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), NodeError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

fn io_error(path: &Path, source: io::Error) -> NodeError {
    NodeError::Log(ordo_wal::Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use ordo_wal::{Entry, HardState, SharedOptions, SnapshotMeta};

    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry::new(index, term, 0, format!("entry-{index}"))
    }

    /// A group directory of the layout before the shared log: a snapshot through 3, entries
    /// 4 to 9, a hard state and a members file.
    fn old_group(data_dir: &Path, id: u64) -> PathBuf {
        let dir = data_dir.join(format!("group-{id}"));
        let wal = Wal::open(&dir, Options::default()).unwrap();
        let meta = SnapshotMeta {
            last_index: 3,
            last_term: 1,
            config: bytes::Bytes::from_static(b"conf"),
        };
        let mut w = wal.snapshot_writer(meta).unwrap();
        w.write_all(b"state through 3").unwrap();
        w.finish().unwrap();
        wal.truncate_prefix(3).unwrap();
        wal.append(&(4..10).map(|i| entry(i, 2)).collect::<Vec<_>>())
            .unwrap();
        let hs = HardState {
            term: 2,
            vote: Some(1),
            commit: 8,
        };
        wal.set_hard_state(hs).unwrap();
        wal.close().unwrap();
        fs::write(dir.join(MEMBERS_FILE), b"member bytes").unwrap();
        dir
    }

    fn check_moved(log: &SharedLog, id: u64) {
        let group = log.group(id).unwrap();
        assert_eq!((group.first_index(), group.last_index()), (4, 9));
        let entries = group.entries(4, 10, u64::MAX).unwrap();
        assert_eq!(entries, (4..10).map(|i| entry(i, 2)).collect::<Vec<_>>());
        assert_eq!(group.hard_state().commit, 8);
        assert_eq!(group.latest_snapshot().unwrap().last_index, 3);
        let mut data = Vec::new();
        io::Read::read_to_end(&mut group.open_snapshot().unwrap().unwrap(), &mut data).unwrap();
        assert_eq!(data, b"state through 3");
        assert_eq!(
            fs::read(group.dir().join(MEMBERS_FILE)).unwrap(),
            b"member bytes"
        );
    }

    #[test]
    fn old_group_directories_move_into_the_shared_log_and_go() {
        let data = tempfile::tempdir().unwrap();
        let old = [old_group(data.path(), 1), old_group(data.path(), 7)];
        let log = SharedLog::open(data.path().join("log"), SharedOptions::default()).unwrap();
        move_group_logs(data.path(), &log, &Options::default()).unwrap();
        for dir in &old {
            assert!(!dir.exists(), "{} is still there", dir.display());
        }
        check_moved(&log, 1);
        check_moved(&log, 7);
        drop(log);
        // And it stays so across a reopen, with nothing left to move.
        let log = SharedLog::open(data.path().join("log"), SharedOptions::default()).unwrap();
        move_group_logs(data.path(), &log, &Options::default()).unwrap();
        check_moved(&log, 1);
    }

    #[test]
    fn a_move_interrupted_before_its_mark_copies_again_and_after_it_only_finishes() {
        let data = tempfile::tempdir().unwrap();
        let old = old_group(data.path(), 1);
        let log = SharedLog::open(data.path().join("log"), SharedOptions::default()).unwrap();
        // A copy that stopped part-way: some entries of another history in the shared log.
        let partial = log.group(1).unwrap();
        partial.append(&[entry(1, 9), entry(2, 9)]).unwrap();
        move_group_logs(data.path(), &log, &Options::default()).unwrap();
        check_moved(&log, 1);
        assert!(!old.exists());

        // A crash after the mark, part-way through removing the old files: the copy stands
        // and the rest of the old directory goes.
        let data = tempfile::tempdir().unwrap();
        let old = old_group(data.path(), 1);
        let log = SharedLog::open(data.path().join("log"), SharedOptions::default()).unwrap();
        copy_group(1, &old, &log, &Options::default()).unwrap();
        ordo_wal::atomic_file::replace(&old, MOVED_MARK, b"").unwrap();
        for path in list(&old).unwrap() {
            if path.to_string_lossy().ends_with(".log") {
                fs::remove_file(path).unwrap();
            }
        }
        move_group_logs(data.path(), &log, &Options::default()).unwrap();
        check_moved(&log, 1);
        assert!(!old.exists());
    }
}
