//! The peer addresses of a group's members, kept durable next to its log.
//!
//! The core's configuration names members by id only; the transport needs their
//! addresses. They arrive with membership changes (in the change's context) and with
//! snapshots (a follower that catches up by snapshot never sees the changes themselves),
//! and must survive a restart even after the changes were compacted away. So the runtime
//! keeps this small file, `members`, replaced atomically (temporary file, fsync, rename,
//! directory fsync) whenever the set changes, and checksummed.
//!
//! Layout: magic `ORDOMB01`, count (u32), per member id (u64), address length (u16) and
//! address text, then a CRC32C of everything before it; integers big-endian.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ordo_raft::NodeId;

use crate::codec::{DecodeError, CONF_STATE_NODES_MAX};

const MAGIC: &[u8; 8] = b"ORDOMB01";
const FILE_NAME: &str = "members";

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
        let members = match fs::read(&path) {
            Ok(raw) => {
                if raw.len() < MAGIC.len() + 4 || &raw[..MAGIC.len()] != MAGIC {
                    return Err(corrupt("bad magic or too short".into()));
                }
                let (body, crc) = raw.split_at(raw.len() - 4);
                let expected = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
                if crc32c::crc32c(body) != expected {
                    return Err(corrupt("checksum mismatch".into()));
                }
                let mut rest = Bytes::copy_from_slice(&body[MAGIC.len()..]);
                let members = decode_members(&mut rest).map_err(|e| corrupt(e.to_string()))?;
                if !rest.is_empty() {
                    return Err(corrupt("trailing bytes".into()));
                }
                members
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(MembersError::Io { path, source }),
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
        let path = self.dir.join(FILE_NAME);
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let io = |source| MembersError::Io {
            path: path.clone(),
            source,
        };
        let mut buf = BytesMut::new();
        buf.put_slice(MAGIC);
        encode_members(&mut buf, &self.members);
        let crc = crc32c::crc32c(&buf);
        buf.put_u32(crc);
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&buf).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
}
