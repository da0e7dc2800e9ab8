//! How a group's state is deleted when the group is removed from this node, without the
//! node ever mistaking the deliberate absence for lost state.
//!
//! A group's state is its part of the node's shared log: its entries and hard state in the
//! journal, its snapshots and member addresses in the log's directory for it
//! (`log/groups/<id>/`). Removing it takes four steps, each durable before the next:
//!
//! 1. a tombstone `group-<id>.removed` is written in the data directory: from here on the
//!    removal is going to finish, whatever happens;
//! 2. the group is removed from the shared log (a removal record in the journal, and its
//!    directory deleted): no start of the group finds its old state any more (a crash
//!    cannot bring a removed partition back with stale contents);
//! 3. the group is unlisted from the identity file: its absence is no loss any more;
//! 4. the tombstone is deleted.
//!
//! A crash after step 1 leaves a tombstone, perhaps of a group still listed; every start of
//! the node finishes such removals ([`finish_removals`]) before any group starts, so a
//! listed group whose state is gone is never a removed one. A crash before step 1 leaves
//! the group as it was: the removal did not happen.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ordo_wal::SharedLog;

use crate::group::{lock, GroupId};
use crate::identity::{IdentityError, IdentityFile};

/// The suffix of a removed group's directory until it is deleted.
const TOMBSTONE_SUFFIX: &str = ".removed";

/// Why a removed group's state could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    /// Writing, syncing or deleting the group's tombstone failed.
    #[error("cannot delete the state of group {group} in {path}: {source}")]
    Io {
        /// The group.
        group: GroupId,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Removing the group from the node's log failed.
    #[error("cannot remove group {group} from the node's log: {source}")]
    Log {
        /// The group.
        group: GroupId,
        /// The cause.
        source: ordo_wal::Error,
    },
    /// Unlisting the group from the identity file failed.
    #[error("cannot unlist group {group}: {source}")]
    Identity {
        /// The group.
        group: GroupId,
        /// The cause.
        source: IdentityError,
    },
}

/// The directory of `log` holding `group`'s snapshots and member addresses (it need not
/// exist yet: a group's log is created only once it is known to be hosted here).
pub(crate) fn group_dir(log: &SharedLog, group: GroupId) -> PathBuf {
    log.dir().join("groups").join(group.0.to_string())
}

fn tombstone_name(group: GroupId) -> String {
    format!("group-{}{TOMBSTONE_SUFFIX}", group.0)
}

fn tombstone(data_dir: &Path, group: GroupId) -> PathBuf {
    data_dir.join(tombstone_name(group))
}

/// The group whose tombstone `name` is.
fn tombstoned_group(name: &str) -> Option<GroupId> {
    let id = name
        .strip_prefix("group-")?
        .strip_suffix(TOMBSTONE_SUFFIX)?;
    let group = GroupId(id.parse().ok()?);
    // Only the names `tombstone_name` writes: no sign, no leading zeros.
    (tombstone_name(group) == name).then_some(group)
}

/// Whether this node holds any state of `group`: a part of the log, or a listing.
pub(crate) fn has_state(
    log: &SharedLog,
    identity: &Mutex<IdentityFile>,
    group: GroupId,
) -> Result<bool, RemovalError> {
    Ok(log.group_ids().contains(&group.0) || lock(identity).identity().groups.contains(&group.0))
}

/// Deletes the state of `group`, which no longer runs here, in the steps of the module
/// documentation. Blocks on the disk.
pub(crate) fn remove_group_state(
    data_dir: &Path,
    log: &SharedLog,
    identity: &Mutex<IdentityFile>,
    group: GroupId,
) -> Result<(), RemovalError> {
    let grave = tombstone(data_dir, group);
    let io = |source| RemovalError::Io {
        group,
        path: grave.clone(),
        source,
    };
    fs::write(&grave, b"")
        .and_then(|()| fs::File::open(&grave)?.sync_all())
        .and_then(|()| sync_dir(data_dir))
        .map_err(io)?;
    finish_removal(data_dir, log, identity, group)
}

/// Steps 2 to 4 of a removal whose tombstone is written.
fn finish_removal(
    data_dir: &Path,
    log: &SharedLog,
    identity: &Mutex<IdentityFile>,
    group: GroupId,
) -> Result<(), RemovalError> {
    if log.group_ids().contains(&group.0) {
        log.remove_group(group.0)
            .map_err(|source| RemovalError::Log { group, source })?;
    }
    unlist(identity, group)?;
    let grave = tombstone(data_dir, group);
    let io = |source| RemovalError::Io {
        group,
        path: grave.clone(),
        source,
    };
    match fs::remove_file(&grave) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
    .and_then(|()| sync_dir(data_dir))
    .map_err(io)
}

/// Finishes the removals a crash interrupted: removes the group of every tombstone in the
/// data directory from the log, unlists it and deletes the tombstone. Run at start, before
/// any group starts.
pub(crate) fn finish_removals(
    data_dir: &Path,
    log: &SharedLog,
    identity: &Mutex<IdentityFile>,
) -> Result<Vec<GroupId>, RemovalError> {
    let mut finished = Vec::new();
    let entries = fs::read_dir(data_dir).map_err(|source| RemovalError::Io {
        group: GroupId(0),
        path: data_dir.to_path_buf(),
        source,
    })?;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(group) = name.to_str().and_then(tombstoned_group) else {
            continue;
        };
        finish_removal(data_dir, log, identity, group)?;
        finished.push(group);
    }
    finished.sort_unstable();
    Ok(finished)
}

fn unlist(identity: &Mutex<IdentityFile>, group: GroupId) -> Result<(), RemovalError> {
    lock(identity)
        .unlist_group(group.0)
        .map_err(|source| RemovalError::Identity { group, source })
}

/// Makes a file's creation or deletion in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_dir() -> (tempfile::TempDir, SharedLog, Mutex<IdentityFile>) {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        let log = SharedLog::open(dir.path().join("log"), Default::default()).unwrap();
        (dir, log, Mutex::new(identity))
    }

    fn listed(identity: &Mutex<IdentityFile>) -> Vec<u64> {
        lock(identity).identity().groups.iter().copied().collect()
    }

    fn with_state(log: &SharedLog, identity: &Mutex<IdentityFile>, g: u64) {
        let group = log.group(g).unwrap();
        group
            .set_hard_state(ordo_wal::HardState {
                term: 1,
                vote: None,
                commit: 0,
            })
            .unwrap();
        lock(identity).record_group(g).unwrap();
    }

    #[test]
    fn removing_deletes_the_groups_state_and_unlists_only_that_group() {
        let (dir, log, identity) = node_dir();
        for g in [3, 4] {
            with_state(&log, &identity, g);
        }
        remove_group_state(dir.path(), &log, &identity, GroupId(3)).unwrap();
        assert_eq!(log.group_ids(), vec![4]);
        assert!(!group_dir(&log, GroupId(3)).exists());
        assert!(!tombstone(dir.path(), GroupId(3)).exists());
        assert!(group_dir(&log, GroupId(4)).exists());
        assert_eq!(listed(&identity), vec![4]);
        let (reopened, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        assert_eq!(reopened.identity().groups.len(), 1);
        assert!(!has_state(&log, &identity, GroupId(3)).unwrap());
        assert!(has_state(&log, &identity, GroupId(4)).unwrap());
    }

    #[test]
    fn a_listed_group_without_state_and_a_leftover_tombstone_are_removed_too() {
        let (dir, log, identity) = node_dir();
        lock(&identity).record_group(5).unwrap();
        fs::write(tombstone(dir.path(), GroupId(5)), b"").unwrap();
        assert!(has_state(&log, &identity, GroupId(5)).unwrap());
        remove_group_state(dir.path(), &log, &identity, GroupId(5)).unwrap();
        assert!(listed(&identity).is_empty());
        assert!(!tombstone(dir.path(), GroupId(5)).exists());
    }

    #[test]
    fn a_removal_cut_short_after_its_tombstone_is_finished_at_the_next_start() {
        let (dir, log, identity) = node_dir();
        with_state(&log, &identity, 7);
        with_state(&log, &identity, 8);
        // Step 1 happened, then the crash: the tombstone of a group still in the log and
        // still listed.
        fs::write(tombstone(dir.path(), GroupId(7)), b"").unwrap();
        fs::write(dir.path().join("group-07.removed"), b"").unwrap();
        assert_eq!(
            finish_removals(dir.path(), &log, &identity).unwrap(),
            vec![GroupId(7)]
        );
        assert!(!tombstone(dir.path(), GroupId(7)).exists());
        assert_eq!(log.group_ids(), vec![8]);
        assert_eq!(listed(&identity), vec![8]);
        assert!(
            dir.path().join("group-07.removed").exists(),
            "a name removal never writes is left alone"
        );
    }

    #[test]
    fn only_names_of_tombstones_name_a_group() {
        assert_eq!(tombstoned_group("group-12.removed"), Some(GroupId(12)));
        for name in [
            "group-12",
            "group-+12.removed",
            "group-012.removed",
            "group-.removed",
            "xgroup-1.removed",
        ] {
            assert_eq!(tombstoned_group(name), None, "{name}");
        }
    }
}
