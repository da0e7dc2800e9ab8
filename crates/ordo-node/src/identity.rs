//! Who a node's data directory belongs to, and which of its promises it must still hold.
//!
//! A Raft node's votes and acknowledgements are promises about what it holds on disk. A
//! node whose directory was wiped (or replaced, or restored from an old backup) and that
//! starts again under the same id would make new promises that contradict the old ones:
//! vote twice in a term, or help elect a leader that lacks committed entries. Its peers
//! cannot tell it from the node they knew unless the directory carries an identity that
//! a wipe destroys.
//!
//! So every data directory holds the file `identity`, written once when the directory is
//! first used: the node id, the cluster id, and a random *incarnation*. The node presents
//! its incarnation in every peer handshake; each peer records, durably and before
//! accepting the first connection, the incarnation of every node it has talked to, and
//! refuses a known node that comes back with another one (see
//! [`transport`](crate::transport)). A refused node stops and says it lost state, and
//! writes the file `lost-state` into its directory first: started again on it, it refuses
//! at once, even when no peer is reachable to refuse it.
//!
//! The file also lists the groups whose state this node has made promises about (once a
//! group has a hard state on disk). A listed group whose directory is gone, or whose hard
//! state is, lost state too; the node refuses to start it. A group removed on purpose
//! (`Node::remove_group`) is unlisted before its state is deleted, so its absence is no loss.
//!
//! Next to it, the file `peers` holds the incarnations of the peers this node accepted; it
//! is written (empty) before the identity, so an identity without it is a damaged
//! directory and refused.
//!
//! Upgrading: a data directory from a version without these files gets both on its first
//! start (with a new incarnation, an empty peer record and no groups listed; each group is
//! listed when it starts with a hard state on disk). Its peers, upgraded at the same time
//! (the peer protocol's version changed with the incarnation), have no record of it yet
//! and accept it. Deleting the identity file later makes a node a stranger under a known
//! id: its peers refuse it, as they would a wiped node.
//!
//! Layout: magic `ORDOID01`, node id, cluster id, incarnation (u64 each), group count
//! (u32), group ids (u64 each), then a CRC32C of everything before it; big-endian. The
//! identity and peer files are checksummed and replaced atomically by
//! [`ordo_wal::atomic_file`], whose documentation gives the crash-safety argument; the
//! lost-state mark is plain text, replaced the same way.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, BytesMut};
use ordo_wal::atomic_file::{self, ByteOrder, Format};

use crate::transport::{NodeId, PeerIncarnations};

/// Name of the identity file in a node's data directory.
pub(crate) const IDENTITY_FILE: &str = "identity";

/// Name of the file in which a node records the incarnations of its peers.
pub(crate) const PEERS_FILE: &str = "peers";

/// Name of the file a node writes into its data directory when a peer refused it for lost
/// state: the directory stays refused, even while no peer can be reached to say so.
pub(crate) const LOST_STATE_FILE: &str = "lost-state";

/// Longest reason kept in (and read back from) the lost-state file.
const LOST_STATE_REASON_BYTES_MAX: u64 = 4096;

/// Groups one node may host; bounds the identity file.
pub const GROUPS_MAX: usize = 65_536;

/// The identity file: node id, cluster id, incarnation, group count, group ids.
const FORMAT: Format = Format {
    magic: *b"ORDOID01",
    checksum_order: ByteOrder::Big,
    file_bytes_max: Format::file_bytes(8 * 3 + 4 + 8 * GROUPS_MAX),
};

/// What an operator does with a node that lost state. The `ordo` binary adds the commands.
pub const LOST_STATE_REMEDY: &str = "this node must not rejoin with what is left: remove it from \
     the cluster's membership, move its data directory aside, and add a new member (a new \
     node id) with an empty data directory, which catches up from its peers";

/// Why a node cannot use its data directory: it holds less than the node promised its
/// peers it holds. Starting anyway could elect a leader that lacks committed entries or
/// cast a second vote in a term, so the node refuses to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LostState {
    /// A peer remembers this node with another incarnation: the data directory was wiped,
    /// replaced or restored from a copy since that peer last talked to it.
    #[error(
        "lost state: peer node {peer} refused node {node}, so {dir} is not the data directory \
         node {node} ran with (it was wiped, replaced or restored): {reason}"
    )]
    RefusedByPeer {
        /// This node.
        node: NodeId,
        /// The peer that refused it.
        peer: NodeId,
        /// This node's data directory.
        dir: PathBuf,
        /// The peer's words.
        reason: String,
    },
    /// The hard state (term, vote, commit index) of a group this node has taken part in
    /// is gone: its directory was removed or emptied.
    #[error(
        "lost state: group {group} ran on this node before, but its directory {dir} has no \
         hard state (term and vote) any more"
    )]
    GroupMissing {
        /// The group.
        group: u64,
        /// Its directory.
        dir: PathBuf,
    },
    /// The hard state says more was committed than the log and snapshot still hold:
    /// entries that this node had made durable are gone.
    #[error(
        "lost state: the log in {dir} was committed through index {commit}, but the log and \
         snapshot hold only through index {held}"
    )]
    CommitBeyondLog {
        /// The group's directory.
        dir: PathBuf,
        /// The commit index in the hard state.
        commit: u64,
        /// The last index the log and the snapshot hold.
        held: u64,
    },
    /// A peer refused this node for lost state before; the directory was marked and stays
    /// refused until it is moved aside.
    #[error(
        "lost state: {dir} was refused before and is marked as lost ({reason}); it stays \
         refused until it is moved aside"
    )]
    Marked {
        /// The data directory.
        dir: PathBuf,
        /// What the mark says.
        reason: String,
    },
    /// A segment file of a group's log is shorter than it was created: it was cut after it
    /// was written, so entries this node had made durable (and may have acknowledged) are
    /// gone, however many.
    #[error(
        "lost state: log segment {path} was truncated to {len_bytes} bytes (it was created \
         with {expected_bytes}): entries this node made durable are gone"
    )]
    SegmentTruncated {
        /// The segment file.
        path: PathBuf,
        /// Its length now.
        len_bytes: u64,
        /// Its length when it was created.
        expected_bytes: u64,
    },
    /// The log starts after the newest snapshot: the snapshot that covered the entries
    /// before it is gone.
    #[error(
        "lost state: the log in {dir} starts at index {first}, but the newest snapshot ends \
         at index {snapshot}: the snapshot covering the entries between is gone"
    )]
    SnapshotMissing {
        /// The group's directory.
        dir: PathBuf,
        /// The log's first index.
        first: u64,
        /// The newest snapshot's last index (0: none).
        snapshot: u64,
    },
}

/// Why the identity or peer-incarnation file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is damaged.
    #[error(
        "{path} is corrupt ({reason}); the node cannot tell whether this data directory is \
         its own, so it refuses to start: treat the node as having lost its state"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory belongs to another node or cluster than the configuration says.
    #[error(
        "{path} says this data directory belongs to {field} {recorded}, but this node is \
         configured with {field} {configured}: check --data-dir and the node's id and cluster id"
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Which field differs: `node id` or `cluster id`.
        field: &'static str,
        /// The value in the file.
        recorded: u64,
        /// The configured value.
        configured: u64,
    },
    /// The node hosts as many groups as it may.
    #[error("{path}: this node already lists {max} groups, the most it may host")]
    TooManyGroups {
        /// The identity file.
        path: PathBuf,
        /// [`GROUPS_MAX`].
        max: usize,
    },
    /// The operating system could not supply a random incarnation.
    #[error("no random number for a new incarnation: {0}")]
    Random(String),
}

/// Marks `dir` as lost, durably, with `reason`. The mark is plain text without a checksum:
/// its presence is what refuses the directory, and a damaged reason refuses it as well.
pub(crate) fn mark_lost(dir: &Path, reason: &str) -> ordo_wal::Result<()> {
    let mut end = reason.len().min(LOST_STATE_REASON_BYTES_MAX as usize);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    atomic_file::replace(dir, LOST_STATE_FILE, &reason.as_bytes()[..end])
}

/// The lost-state mark in `dir`, if there is one.
pub(crate) fn check_not_marked(dir: &Path) -> Result<(), LostState> {
    use std::io::Read;
    let Ok(file) = File::open(dir.join(LOST_STATE_FILE)) else {
        return Ok(());
    };
    let mut reason = Vec::new();
    // The mark's presence is what counts; an unreadable reason still refuses.
    let _ = file
        .take(LOST_STATE_REASON_BYTES_MAX)
        .read_to_end(&mut reason);
    Err(LostState::Marked {
        dir: dir.to_path_buf(),
        reason: String::from_utf8_lossy(&reason).into_owned(),
    })
}

impl IdentityError {
    /// The error for a failed read or write of the small file `path` (identity or peer
    /// record).
    pub(crate) fn of_file(path: &Path, error: ordo_wal::Error) -> IdentityError {
        file_error(
            path,
            error,
            |path, source| IdentityError::Io { path, source },
            |path, reason| IdentityError::Corrupt { path, reason },
        )
    }
}

/// Sorts a failure of [`ordo_wal::atomic_file`] on `path` into the two kinds the runtime's
/// file errors tell apart: damage (`corrupt`, with what is wrong and where) and anything
/// else (`io`).
pub(crate) fn file_error<E>(
    path: &Path,
    error: ordo_wal::Error,
    io: impl FnOnce(PathBuf, std::io::Error) -> E,
    corrupt: impl FnOnce(PathBuf, String) -> E,
) -> E {
    match error {
        ordo_wal::Error::Corrupt {
            path,
            offset,
            reason,
        } => corrupt(path, format!("{reason}, at byte {offset}")),
        ordo_wal::Error::Io { path, source } => io(path, source),
        other => io(path.to_path_buf(), std::io::Error::other(other)),
    }
}

/// A random incarnation, never 0 (0 is no incarnation).
pub(crate) fn random_incarnation() -> Result<u64, IdentityError> {
    for _ in 0..8 {
        let n = getrandom::u64().map_err(|e| IdentityError::Random(e.to_string()))?;
        if n != 0 {
            return Ok(n);
        }
    }
    Err(IdentityError::Random(
        "the generator keeps returning 0".into(),
    ))
}

/// The contents of a node's identity file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeIdentity {
    pub(crate) node_id: NodeId,
    pub(crate) cluster_id: u64,
    pub(crate) incarnation: u64,
    /// Groups with a hard state on disk, whose promises this node must keep.
    pub(crate) groups: BTreeSet<u64>,
}

/// How [`IdentityFile::open`] found the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    /// The file was there.
    Existing,
    /// An empty directory: a new node (or a wiped one; its peers tell which).
    Created,
    /// No file but other contents: a directory from a version without identity files.
    CreatedForOldDirectory,
}

/// The identity file of a node's data directory.
#[derive(Debug)]
pub(crate) struct IdentityFile {
    dir: PathBuf,
    identity: NodeIdentity,
}

impl IdentityFile {
    /// Reads the identity in `dir`, checking it against the configured ids, or writes a
    /// new one with a random incarnation if there is none.
    pub(crate) fn open(
        dir: &Path,
        node_id: NodeId,
        cluster_id: u64,
    ) -> Result<(IdentityFile, Opened), IdentityError> {
        let path = dir.join(IDENTITY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let body = FORMAT
            .read(dir, IDENTITY_FILE)
            .map_err(|e| IdentityError::of_file(&path, e))?;
        match body {
            Some(body) => {
                let identity = decode(&body).map_err(|reason| IdentityError::Corrupt {
                    path: path.clone(),
                    reason,
                })?;
                // Written before the identity, so its absence now is a loss.
                let peers = dir.join(PEERS_FILE);
                if !peers.try_exists().map_err(io)? {
                    return Err(IdentityError::Corrupt {
                        path: peers,
                        reason: "missing next to the identity file: the record of which peer \
                                 incarnations this node accepted is lost"
                            .into(),
                    });
                }
                let mismatch = |field, recorded, configured| IdentityError::Mismatch {
                    path: path.clone(),
                    field,
                    recorded,
                    configured,
                };
                if identity.node_id != node_id {
                    return Err(mismatch("node id", identity.node_id, node_id));
                }
                if identity.cluster_id != cluster_id {
                    return Err(mismatch("cluster id", identity.cluster_id, cluster_id));
                }
                let file = IdentityFile {
                    dir: dir.to_path_buf(),
                    identity,
                };
                Ok((file, Opened::Existing))
            }
            None => {
                let old_contents = fs::read_dir(dir)
                    .map_err(io)?
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with("group-"));
                let file = IdentityFile {
                    dir: dir.to_path_buf(),
                    identity: NodeIdentity {
                        node_id,
                        cluster_id,
                        incarnation: random_incarnation()?,
                        groups: BTreeSet::new(),
                    },
                };
                PeerIncarnations::create_if_missing(dir, PEERS_FILE)?;
                file.store()?;
                let opened = if old_contents {
                    Opened::CreatedForOldDirectory
                } else {
                    Opened::Created
                };
                Ok((file, opened))
            }
        }
    }

    pub(crate) fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The file's path, for messages.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join(IDENTITY_FILE)
    }

    /// Lists `group` as holding state this node promised about; durable on return.
    pub(crate) fn record_group(&mut self, group: u64) -> Result<(), IdentityError> {
        self.record_groups(&[group])
    }

    /// Lists every one of `groups` not listed yet, in one durable write: all of them or,
    /// on an error, none.
    pub(crate) fn record_groups(&mut self, groups: &[u64]) -> Result<(), IdentityError> {
        let new: std::collections::BTreeSet<u64> = groups
            .iter()
            .copied()
            .filter(|g| !self.identity.groups.contains(g))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        if self.identity.groups.len() + new.len() > GROUPS_MAX {
            return Err(IdentityError::TooManyGroups {
                path: self.path(),
                max: GROUPS_MAX,
            });
        }
        self.identity.groups.extend(&new);
        if let Err(error) = self.store() {
            for group in &new {
                self.identity.groups.remove(group);
            }
            return Err(error);
        }
        Ok(())
    }

    /// No longer lists `group`: the node deliberately gave up its state (the group was
    /// removed here), so its absence is no loss. Durable on return; the inverse of
    /// [`IdentityFile::record_group`].
    pub(crate) fn unlist_group(&mut self, group: u64) -> Result<(), IdentityError> {
        if !self.identity.groups.remove(&group) {
            return Ok(());
        }
        if let Err(error) = self.store() {
            self.identity.groups.insert(group);
            return Err(error);
        }
        Ok(())
    }

    fn store(&self) -> Result<(), IdentityError> {
        let id = &self.identity;
        let mut buf = BytesMut::new();
        buf.put_u64(id.node_id);
        buf.put_u64(id.cluster_id);
        buf.put_u64(id.incarnation);
        assert!(id.groups.len() <= GROUPS_MAX, "group limit passed");
        buf.put_u32(id.groups.len() as u32);
        for group in &id.groups {
            buf.put_u64(*group);
        }
        FORMAT
            .write(&self.dir, IDENTITY_FILE, &buf)
            .map_err(|e| IdentityError::of_file(&self.path(), e))
    }
}

/// Decodes the identity file's body (between magic and checksum).
fn decode(mut body: &[u8]) -> Result<NodeIdentity, String> {
    if body.remaining() < 8 * 3 + 4 {
        return Err("too short for its fields".into());
    }
    let node_id = body.get_u64();
    let cluster_id = body.get_u64();
    let incarnation = body.get_u64();
    let count = body.get_u32() as usize;
    if count > GROUPS_MAX {
        return Err(format!("{count} groups, more than {GROUPS_MAX}"));
    }
    if body.remaining() != count * 8 {
        return Err(format!(
            "{} bytes of group ids for {count} groups",
            body.remaining()
        ));
    }
    let groups = (0..count).map(|_| body.get_u64()).collect();
    if node_id == 0 || incarnation == 0 {
        return Err("node id or incarnation is 0".into());
    }
    Ok(NodeIdentity {
        node_id,
        cluster_id,
        incarnation,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_read_back_with_its_groups() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, opened) = IdentityFile::open(dir.path(), 3, 7).unwrap();
        assert_eq!(opened, Opened::Created);
        let first = file.identity().clone();
        assert_ne!(first.incarnation, 0);
        file.record_group(1).unwrap();
        file.record_group(1).unwrap();
        let (again, opened) = IdentityFile::open(dir.path(), 3, 7).unwrap();
        assert_eq!(opened, Opened::Existing);
        assert_eq!(again.identity().incarnation, first.incarnation);
        assert_eq!(again.identity().groups, BTreeSet::from([1]));
    }

    #[test]
    fn an_unlisted_group_stays_unlisted_after_a_reopen_and_the_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = IdentityFile::open(dir.path(), 3, 7).unwrap();
        file.record_group(1).unwrap();
        file.record_group(2).unwrap();
        file.unlist_group(1).unwrap();
        file.unlist_group(9).unwrap();
        let (again, _) = IdentityFile::open(dir.path(), 3, 7).unwrap();
        assert_eq!(again.identity().groups, BTreeSet::from([2]));
        assert_eq!(again.identity().incarnation, file.identity().incarnation);
    }

    #[test]
    fn a_wiped_directory_gets_a_new_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let (file, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        let before = file.identity().incarnation;
        fs::remove_file(dir.path().join(IDENTITY_FILE)).unwrap();
        let (file, opened) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        assert_eq!(opened, Opened::Created);
        assert_ne!(file.identity().incarnation, before);
    }

    #[test]
    fn an_identity_without_its_peer_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        IdentityFile::open(dir.path(), 1, 1).unwrap();
        assert!(dir.path().join(PEERS_FILE).exists());
        fs::remove_file(dir.path().join(PEERS_FILE)).unwrap();
        let err = IdentityFile::open(dir.path(), 1, 1).unwrap_err();
        assert!(
            matches!(&err, IdentityError::Corrupt { path, .. } if path.ends_with(PEERS_FILE)),
            "{err}"
        );
    }

    #[test]
    fn a_directory_from_before_identity_files_is_adopted() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("group-1")).unwrap();
        let (file, opened) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        assert_eq!(opened, Opened::CreatedForOldDirectory);
        assert!(file.identity().groups.is_empty());
    }

    #[test]
    fn another_nodes_directory_is_refused_naming_both_ids() {
        let dir = tempfile::tempdir().unwrap();
        IdentityFile::open(dir.path(), 2, 9).unwrap();
        let err = IdentityFile::open(dir.path(), 3, 9)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node id 2") && err.contains("node id 3"),
            "{err}"
        );
        let err = IdentityFile::open(dir.path(), 2, 8)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cluster id 9") && err.contains("cluster id 8"),
            "{err}"
        );
    }

    #[test]
    fn any_flipped_bit_in_the_identity_file_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        file.record_group(5).unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        let good = fs::read(&path).unwrap();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            fs::write(&path, &bad).unwrap();
            match IdentityFile::open(dir.path(), 1, 1) {
                Err(IdentityError::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("bit {bit}: {other:?}"),
            }
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(matches!(
            IdentityFile::open(dir.path(), 1, 1),
            Err(IdentityError::Corrupt { .. })
        ));
    }

    /// The identity file as this layout writes it: magic, ids, groups, CRC32C, big-endian.
    fn identity_bytes(node: u64, cluster: u64, incarnation: u64, groups: &[u64]) -> Vec<u8> {
        let mut raw = b"ORDOID01".to_vec();
        for v in [node, cluster, incarnation] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        raw.extend_from_slice(&(groups.len() as u32).to_be_bytes());
        for g in groups {
            raw.extend_from_slice(&g.to_be_bytes());
        }
        let crc = crc32c::crc32c(&raw);
        raw.extend_from_slice(&crc.to_be_bytes());
        raw
    }

    #[test]
    fn the_identity_layout_on_disk_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        fs::write(dir.path().join(PEERS_FILE), b"").unwrap();
        fs::write(&path, identity_bytes(4, 8, 0x1234_5678_9abc, &[2])).unwrap();
        let (mut file, opened) = IdentityFile::open(dir.path(), 4, 8).unwrap();
        assert_eq!(opened, Opened::Existing);
        assert_eq!(
            file.identity(),
            &NodeIdentity {
                node_id: 4,
                cluster_id: 8,
                incarnation: 0x1234_5678_9abc,
                groups: BTreeSet::from([2]),
            }
        );
        file.record_group(9).unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            identity_bytes(4, 8, 0x1234_5678_9abc, &[2, 9])
        );
    }

    #[test]
    fn a_crash_before_the_identity_rename_leaves_the_old_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        file.record_group(3).unwrap();
        let before = file.identity().clone();
        let new = identity_bytes(1, 1, before.incarnation, &[3, 4]);
        let tmp = dir.path().join(format!("{IDENTITY_FILE}.tmp"));
        for cut in [0, 10, new.len()] {
            fs::write(&tmp, &new[..cut]).unwrap();
            let (again, opened) = IdentityFile::open(dir.path(), 1, 1).unwrap();
            assert_eq!(opened, Opened::Existing);
            assert_eq!(again.identity(), &before);
        }
        let (mut again, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        again.record_group(4).unwrap();
        assert!(!tmp.exists());
        let (read, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        assert_eq!(read.identity().groups, BTreeSet::from([3, 4]));
    }

    #[test]
    fn an_identity_file_cut_short_is_corrupt_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = IdentityFile::open(dir.path(), 1, 1).unwrap();
        file.record_group(5).unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        let good = fs::read(&path).unwrap();
        for len in 0..good.len() {
            fs::write(&path, &good[..len]).unwrap();
            match IdentityFile::open(dir.path(), 1, 1) {
                Err(err @ IdentityError::Corrupt { .. }) => {
                    assert!(
                        err.to_string().contains(&path.display().to_string()),
                        "{err}"
                    );
                }
                other => panic!("length {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_lost_state_mark_refuses_the_directory_unless_it_never_reached_its_name() {
        let dir = tempfile::tempdir().unwrap();
        // A crash before the mark's rename: only the temporary file, which does not count.
        fs::write(dir.path().join(format!("{LOST_STATE_FILE}.tmp")), b"half").unwrap();
        assert_eq!(check_not_marked(dir.path()), Ok(()));
        mark_lost(dir.path(), "peer 2 refused node 1").unwrap();
        assert!(!dir.path().join(format!("{LOST_STATE_FILE}.tmp")).exists());
        assert_eq!(
            check_not_marked(dir.path()),
            Err(LostState::Marked {
                dir: dir.path().to_path_buf(),
                reason: "peer 2 refused node 1".into(),
            })
        );
        // The mark is the reason as plain text, cut to its limit at a character boundary.
        let long = "é".repeat(3000);
        mark_lost(dir.path(), &long).unwrap();
        let raw = fs::read(dir.path().join(LOST_STATE_FILE)).unwrap();
        assert_eq!(raw.len(), LOST_STATE_REASON_BYTES_MAX as usize);
        assert!(long.as_bytes().starts_with(&raw));
    }
}
