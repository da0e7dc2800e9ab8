//! Where a group's state lives on disk, and how it is deleted when the group is removed
//! from this node without the node ever mistaking the deliberate absence for lost state.
//!
//! A group's state is the directory `group-<id>` under the data directory (its log, hard
//! state, snapshots and member addresses). Removing it takes three steps, each durable
//! before the next:
//!
//! 1. the directory is renamed to the tombstone `group-<id>.removed` and the data directory
//!    fsynced: from here on no start of the group finds its old state (a crash cannot
//!    bring a removed partition back with stale contents);
//! 2. the group is unlisted from the identity file: its absence is no loss any more;
//! 3. the tombstone is deleted.
//!
//! A crash after step 1 leaves a tombstone, perhaps of a group still listed; every start of
//! the node finishes such removals ([`finish_removals`]) before any group starts, so a
//! listed group whose directory is gone is never a removed one. A crash before step 1
//! leaves the group as it was: the removal did not happen.
//!
//! NB: only [`remove_group_state`] and [`finish_removals`] know this layout; a shared log
//! for all groups replaces the rename with a record marking the group removed, and the
//! deletion with compaction.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::group::{lock, GroupId};
use crate::identity::{IdentityError, IdentityFile};

/// The suffix of a removed group's directory until it is deleted.
const TOMBSTONE_SUFFIX: &str = ".removed";

/// Why a removed group's state could not be deleted.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    /// Renaming, syncing or deleting the group's directory failed.
    #[error("cannot delete the state of group {group} in {path}: {source}")]
    Io {
        /// The group.
        group: GroupId,
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
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

/// The directory holding `group`'s state.
pub(crate) fn group_dir(data_dir: &Path, group: GroupId) -> PathBuf {
    data_dir.join(format!("group-{}", group.0))
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

/// Whether this node holds any state of `group`: a directory, or a listing.
pub(crate) fn has_state(
    data_dir: &Path,
    identity: &Mutex<IdentityFile>,
    group: GroupId,
) -> Result<bool, RemovalError> {
    let dir = group_dir(data_dir, group);
    let exists = dir.try_exists().map_err(|source| RemovalError::Io {
        group,
        path: dir,
        source,
    })?;
    Ok(exists || lock(identity).identity().groups.contains(&group.0))
}

/// Deletes the state of `group`, which no longer runs here, in the steps of the module
/// documentation. Blocks on the disk.
pub(crate) fn remove_group_state(
    data_dir: &Path,
    identity: &Mutex<IdentityFile>,
    group: GroupId,
) -> Result<(), RemovalError> {
    let dir = group_dir(data_dir, group);
    let grave = tombstone(data_dir, group);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RemovalError::Io {
            group,
            path,
            source,
        }
    };
    // A tombstone left by an earlier removal whose deletion failed is in the rename's way.
    remove_dir_if_present(&grave).map_err(io(&grave))?;
    match fs::rename(&dir, &grave) {
        Ok(()) => sync_dir(data_dir).map_err(io(data_dir))?,
        // Listed only, or removed before a crash: nothing to rename.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&dir)(e)),
    }
    unlist(identity, group)?;
    remove_dir_if_present(&grave).map_err(io(&grave))
}

/// Finishes the removals a crash interrupted: unlists the group of every tombstone in the
/// data directory and deletes the tombstone. Run at start, before any group starts.
pub(crate) fn finish_removals(
    data_dir: &Path,
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
        unlist(identity, group)?;
        let grave = entry.path();
        remove_dir_if_present(&grave).map_err(|source| RemovalError::Io {
            group,
            path: grave,
            source,
        })?;
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

fn remove_dir_if_present(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_dir() -> (tempfile::TempDir, Mutex<IdentityFile>) {
        let dir = tempfile::tempdir().unwrap();
        let (identity, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        (dir, Mutex::new(identity))
    }

    fn listed(identity: &Mutex<IdentityFile>) -> Vec<u64> {
        lock(identity).identity().groups.iter().copied().collect()
    }

    #[test]
    fn removing_deletes_the_directory_and_unlists_only_that_group() {
        let (dir, identity) = node_dir();
        for g in [3, 4] {
            fs::create_dir(group_dir(dir.path(), GroupId(g))).unwrap();
            fs::write(group_dir(dir.path(), GroupId(g)).join("hard-state"), b"x").unwrap();
            lock(&identity).record_group(g).unwrap();
        }
        remove_group_state(dir.path(), &identity, GroupId(3)).unwrap();
        assert!(!group_dir(dir.path(), GroupId(3)).exists());
        assert!(!tombstone(dir.path(), GroupId(3)).exists());
        assert!(group_dir(dir.path(), GroupId(4)).exists());
        assert_eq!(listed(&identity), vec![4]);
        let (reopened, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        assert_eq!(reopened.identity().groups.len(), 1);
        assert!(!has_state(dir.path(), &identity, GroupId(3)).unwrap());
        assert!(has_state(dir.path(), &identity, GroupId(4)).unwrap());
    }

    #[test]
    fn a_listed_group_without_a_directory_and_a_leftover_tombstone_are_removed_too() {
        let (dir, identity) = node_dir();
        lock(&identity).record_group(5).unwrap();
        fs::create_dir(tombstone(dir.path(), GroupId(5))).unwrap();
        assert!(has_state(dir.path(), &identity, GroupId(5)).unwrap());
        remove_group_state(dir.path(), &identity, GroupId(5)).unwrap();
        assert!(listed(&identity).is_empty());
        assert!(!tombstone(dir.path(), GroupId(5)).exists());
    }

    #[test]
    fn a_removal_cut_short_after_the_rename_is_finished_at_the_next_start() {
        let (dir, identity) = node_dir();
        lock(&identity).record_group(7).unwrap();
        lock(&identity).record_group(8).unwrap();
        // Step 1 happened, then the crash: the tombstone of a group still listed.
        let grave = tombstone(dir.path(), GroupId(7));
        fs::create_dir(&grave).unwrap();
        fs::write(grave.join("hard-state"), b"x").unwrap();
        fs::create_dir(dir.path().join("group-07.removed")).unwrap();
        assert_eq!(
            finish_removals(dir.path(), &identity).unwrap(),
            vec![GroupId(7)]
        );
        assert!(!grave.exists());
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
