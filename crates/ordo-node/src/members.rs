//! The peer addresses of a group's members, kept durable next to its log.
//!
//! The core's configuration names members by id only; the transport needs their
//! addresses. They arrive with membership changes (in the change's context) and with
//! snapshots (a follower that catches up by snapshot never sees the changes themselves),
//! and must survive a restart even after the changes were compacted away. So the runtime
//! keeps this small file, `members`, checksummed and replaced atomically whenever the set
//! changes (by [`ordo_wal::atomic_file`], whose documentation gives the crash-safety
//! argument).
//!
//! Layout: magic `ORDOMB01`, count (u32), per member id (u64), address length (u16) and
//! address text, then a CRC32C of everything before it; integers big-endian.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ordo_raft::NodeId;
use ordo_wal::atomic_file::{ByteOrder, Format};

use crate::codec::{DecodeError, CONF_STATE_NODES_MAX};
use crate::identity::file_error;

const FILE_NAME: &str = "members";

/// Bytes one member may take in the file, with room to spare: id and length (10 bytes)
/// and its address as text (at most 58 bytes, an IPv6 address with a scope id and a port).
const MEMBER_BYTES_MAX: usize = 256;

const FORMAT: Format = Format {
    magic: *b"ORDOMB01",
    checksum_order: ByteOrder::Big,
    file_bytes_max: Format::file_bytes(4 + MEMBER_BYTES_MAX * CONF_STATE_NODES_MAX),
};

/// Why the member file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    /// I/O on the file failed.
    #[error("member addresses in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is damaged.
    #[error("member addresses in {path} are corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl MembersError {
    /// The error for a failed read or write of the member file `path`.
    fn of_file(path: &Path, error: ordo_wal::Error) -> MembersError {
        file_error(
            path,
            error,
            |path, source| MembersError::Io { path, source },
            |path, reason| MembersError::Corrupt { path, reason },
        )
    }
}

/// Encodes a member list (as in the file, without magic and checksum; also carried in
/// snapshot chunks).
pub(crate) fn encode_members(buf: &mut BytesMut, members: &BTreeMap<NodeId, SocketAddr>) {
    assert!(members.len() <= CONF_STATE_NODES_MAX, "too many members");
    buf.put_u32(members.len() as u32);
    for (id, addr) in members {
        let text = addr.to_string();
        buf.put_u64(*id);
        buf.put_u16(text.len() as u16);
        buf.put_slice(text.as_bytes());
    }
}

/// Decodes what [`encode_members`] wrote from the front of `buf`.
pub(crate) fn decode_members(buf: &mut Bytes) -> Result<BTreeMap<NodeId, SocketAddr>, DecodeError> {
    if buf.remaining() < 4 {
        return Err(DecodeError::Truncated("member count"));
    }
    let count = buf.get_u32() as usize;
    if count > CONF_STATE_NODES_MAX {
        return Err(DecodeError::Invalid("member count"));
    }
    let mut members = BTreeMap::new();
    for _ in 0..count {
        if buf.remaining() < 10 {
            return Err(DecodeError::Truncated("member"));
        }
        let id = buf.get_u64();
        let len = buf.get_u16() as usize;
        if buf.remaining() < len {
            return Err(DecodeError::Truncated("member address"));
        }
        let text = buf.split_to(len);
        let addr = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(DecodeError::Invalid("member address"))?;
        members.insert(id, addr);
    }
    Ok(members)
}

/// The member file of one group.
#[derive(Debug)]
pub(crate) struct MemberFile {
    dir: PathBuf,
    members: BTreeMap<NodeId, SocketAddr>,
}

impl MemberFile {
    /// Loads the file in `dir` (empty if there is none).
    pub(crate) fn load(dir: &Path) -> Result<MemberFile, MembersError> {
        let path = dir.join(FILE_NAME);
        let corrupt = |reason: String| MembersError::Corrupt {
            path: path.clone(),
            reason,
        };
        let body = FORMAT
            .read(dir, FILE_NAME)
            .map_err(|e| MembersError::of_file(&path, e))?;
        let members = match body {
            Some(body) => {
                let mut rest = Bytes::from(body);
                let members = decode_members(&mut rest).map_err(|e| corrupt(e.to_string()))?;
                if !rest.is_empty() {
                    return Err(corrupt("trailing bytes".into()));
                }
                members
            }
            None => BTreeMap::new(),
        };
        Ok(MemberFile {
            dir: dir.to_path_buf(),
            members,
        })
    }

    pub(crate) fn members(&self) -> &BTreeMap<NodeId, SocketAddr> {
        &self.members
    }

    /// Applies `changes` (address to record, or `None` to forget) and stores the file if
    /// anything changed.
    pub(crate) fn update(
        &mut self,
        changes: impl IntoIterator<Item = (NodeId, Option<SocketAddr>)>,
    ) -> Result<(), MembersError> {
        let mut changed = false;
        for (id, addr) in changes {
            changed |= match addr {
                Some(addr) => self.members.insert(id, addr) != Some(addr),
                None => self.members.remove(&id).is_some(),
            };
        }
        if changed {
            self.store()?;
        }
        Ok(())
    }

    fn store(&self) -> Result<(), MembersError> {
        let mut buf = BytesMut::new();
        encode_members(&mut buf, &self.members);
        FORMAT
            .write(&self.dir, FILE_NAME, &buf)
            .map_err(|e| MembersError::of_file(&self.dir.join(FILE_NAME), e))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn member_addresses_survive_a_reload_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = MemberFile::load(dir.path()).unwrap();
        assert!(f.members().is_empty());
        let a: SocketAddr = "127.0.0.1:2380".parse().unwrap();
        let b: SocketAddr = "[::1]:2381".parse().unwrap();
        f.update([(1, Some(a)), (2, Some(b)), (3, Some(a))])
            .unwrap();
        f.update([(3, None)]).unwrap();
        let g = MemberFile::load(dir.path()).unwrap();
        assert_eq!(g.members(), &BTreeMap::from([(1, a), (2, b)]));

        let path = dir.path().join(FILE_NAME);
        let mut raw = fs::read(&path).unwrap();
        raw[10] ^= 1;
        fs::write(&path, raw).unwrap();
        let err = MemberFile::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("members") && err.contains("corrupt"), "{err}");
    }

    #[test]
    fn the_member_file_layout_on_disk_is_unchanged() {
        // Magic, count, per member id, address length and text, CRC32C; big-endian.
        let mut raw = b"ORDOMB01".to_vec();
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.extend_from_slice(&7u64.to_be_bytes());
        raw.extend_from_slice(&14u16.to_be_bytes());
        raw.extend_from_slice(b"127.0.0.1:2380");
        let crc = crc32c::crc32c(&raw);
        raw.extend_from_slice(&crc.to_be_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, &raw).unwrap();
        let a: SocketAddr = "127.0.0.1:2380".parse().unwrap();
        let mut f = MemberFile::load(dir.path()).unwrap();
        assert_eq!(f.members(), &BTreeMap::from([(7, a)]));
        f.update([(7, None)]).unwrap();
        f.update([(7, Some(a))]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), raw);
    }

    #[test]
    fn a_crash_before_the_member_file_is_renamed_leaves_the_old_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let a: SocketAddr = "127.0.0.1:2380".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2381".parse().unwrap();
        let mut f = MemberFile::load(dir.path()).unwrap();
        f.update([(1, Some(a))]).unwrap();
        let tmp = dir.path().join(format!("{FILE_NAME}.tmp"));
        fs::write(&tmp, b"ORDOMB01\0\0").unwrap();
        assert_eq!(
            MemberFile::load(dir.path()).unwrap().members(),
            &BTreeMap::from([(1, a)])
        );
        f.update([(2, Some(b))]).unwrap();
        assert!(!tmp.exists());
        assert_eq!(
            MemberFile::load(dir.path()).unwrap().members(),
            &BTreeMap::from([(1, a), (2, b)])
        );
    }

    #[test]
    fn a_member_file_cut_short_or_flipped_is_corrupt_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = MemberFile::load(dir.path()).unwrap();
        f.update([(1, Some("[::1]:2380".parse().unwrap()))])
            .unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = fs::read(&path).unwrap();
        for bad in ordo_wal::fuzzing::damaged_copies(&good) {
            fs::write(&path, &bad).unwrap();
            match MemberFile::load(dir.path()) {
                Err(MembersError::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
