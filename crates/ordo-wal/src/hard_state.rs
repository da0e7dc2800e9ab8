//! Raft's hard state in its own small file, replaced atomically.

use std::path::Path;

use crate::atomic_file::{ByteOrder, Format};
use crate::error::{Error, Result};
use crate::files::le_u64;

/// File name of the hard state in a log directory.
pub(crate) const HARD_STATE_FILE: &str = "hardstate";
/// Term, vote flag, vote, commit.
const BODY_BYTES: usize = 8 + 1 + 8 + 8;
const FORMAT: Format = Format {
    magic: *b"ORDOHS01",
    checksum_order: ByteOrder::Little,
    file_bytes_max: Format::file_bytes(BODY_BYTES),
};

/// The Raft state that must survive a crash besides the log: current term, vote, commit index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The node voted for in `term`, if any.
    pub vote: Option<u64>,
    /// The highest index known to be committed.
    pub commit: u64,
}

impl HardState {
    fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(BODY_BYTES);
        p.extend_from_slice(&self.term.to_le_bytes());
        p.push(u8::from(self.vote.is_some()));
        p.extend_from_slice(&self.vote.unwrap_or(0).to_le_bytes());
        p.extend_from_slice(&self.commit.to_le_bytes());
        p
    }

    /// Writes the hard state to `dir` atomically and durably.
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        FORMAT.write(dir, HARD_STATE_FILE, &self.encode())
    }

    /// Reads the hard state from `dir`; the default if there is none yet.
    pub(crate) fn load(dir: &Path) -> Result<HardState> {
        let Some(p) = FORMAT.read(dir, HARD_STATE_FILE)? else {
            return Ok(HardState::default());
        };
        let path = dir.join(HARD_STATE_FILE);
        if p.len() != BODY_BYTES {
            return Err(Error::corrupt(
                &path,
                8,
                format!("{} bytes of hard state, expected {BODY_BYTES}", p.len()),
            ));
        }
        let vote = match p[8] {
            0 => None,
            1 => Some(le_u64(&p[9..])),
            _ => return Err(Error::corrupt(&path, 16, "vote flag is neither 0 nor 1")),
        };
        Ok(HardState {
            term: le_u64(&p),
            vote,
            commit: le_u64(&p[17..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_state_round_trips_and_defaults_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(HardState::load(dir.path()).unwrap(), HardState::default());
        let hs = HardState {
            term: 3,
            vote: Some(2),
            commit: 99,
        };
        hs.store(dir.path()).unwrap();
        assert_eq!(HardState::load(dir.path()).unwrap(), hs);
        let none = HardState { vote: None, ..hs };
        none.store(dir.path()).unwrap();
        assert_eq!(HardState::load(dir.path()).unwrap(), none);
    }

    #[test]
    fn corrupt_hard_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        HardState {
            term: 1,
            vote: Some(1),
            commit: 1,
        }
        .store(dir.path())
        .unwrap();
        let path = dir.path().join(HARD_STATE_FILE);
        let good = std::fs::read(&path).unwrap();
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &bad).unwrap();
            match HardState::load(dir.path()) {
                Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("bit {bit}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_layout_on_disk_is_unchanged() {
        // Magic, term, vote flag and vote, commit (little-endian), CRC32C of all that.
        let mut bytes = b"ORDOHS01".to_vec();
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.push(1);
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(&41u64.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(HARD_STATE_FILE), &bytes).unwrap();
        let hs = HardState {
            term: 7,
            vote: Some(3),
            commit: 41,
        };
        assert_eq!(HardState::load(dir.path()).unwrap(), hs);
        hs.store(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(HARD_STATE_FILE)).unwrap(),
            bytes
        );
    }

    #[test]
    fn a_hard_state_file_cut_short_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        HardState::default().store(dir.path()).unwrap();
        let path = dir.path().join(HARD_STATE_FILE);
        let good = std::fs::read(&path).unwrap();
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            match HardState::load(dir.path()) {
                Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("length {len}: {other:?}"),
            }
        }
    }
}
