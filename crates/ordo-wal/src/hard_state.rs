//! Raft's hard state in its own small file, replaced atomically.

use std::path::Path;

use crate::error::{Error, Result};
use crate::files::{encode_small, le_u64, read_small, write_atomic};

/// File name of the hard state in a log directory.
pub(crate) const HARD_STATE_FILE: &str = "hardstate";
const MAGIC: &[u8; 8] = b"ORDOHS01";
const PAYLOAD_BYTES: usize = 8 + 1 + 8 + 8;

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
        let mut p = Vec::with_capacity(PAYLOAD_BYTES);
        p.extend_from_slice(&self.term.to_le_bytes());
        p.push(u8::from(self.vote.is_some()));
        p.extend_from_slice(&self.vote.unwrap_or(0).to_le_bytes());
        p.extend_from_slice(&self.commit.to_le_bytes());
        encode_small(MAGIC, &p)
    }

    /// Writes the hard state to `dir` atomically and durably.
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        write_atomic(dir, HARD_STATE_FILE, &self.encode())
    }

    /// Reads the hard state from `dir`; the default if there is none yet.
    pub(crate) fn load(dir: &Path) -> Result<HardState> {
        let path = dir.join(HARD_STATE_FILE);
        let Some(p) = read_small(&path, MAGIC, PAYLOAD_BYTES)? else {
            return Ok(HardState::default());
        };
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
}
