//! The simulated disk of one node: what was written, and the part of it that was fsynced.
//!
//! A crash keeps everything fsynced and a random prefix of what was written since the last
//! fsync, possibly tearing the last write (an append keeps only some of its entries), as a
//! real write-ahead log recovers: a torn tail is cut at the last record whose checksum holds.

use ordo_raft::{ConfState, Entry, HardState, MemStorage, Snapshot, Storage};

use crate::prng::Prng;

/// One write, in the order the runtime issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Entries appended, replacing any conflicting suffix.
    Append(Vec<Entry>),
    /// The term, vote and commit index.
    HardState(HardState),
    /// A snapshot received from the leader, replacing the whole log.
    InstallSnapshot(Snapshot),
    /// A snapshot of the node's own state machine, followed by discarding the entries it
    /// covers. Written to a temporary file and renamed, so it is never torn.
    Compact(Snapshot),
}

/// Counters of disk activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Writes issued.
    pub writes: u64,
    /// Fsyncs completed.
    pub fsyncs: u64,
    /// Writes lost (whole or in part) in crashes.
    pub writes_lost: u64,
    /// Writes torn in crashes.
    pub writes_torn: u64,
}

/// A node's disk.
#[derive(Debug, Clone)]
pub struct Disk {
    durable: MemStorage,
    /// Written but not yet fsynced, oldest first.
    unsynced: Vec<Write>,
    /// Writes issued and not yet fsynced are bounded: a runtime that never fsyncs is a bug.
    unsynced_max: usize,
    stats: DiskStats,
}

impl Disk {
    /// A blank disk, or one bootstrapped with an initial configuration.
    pub fn new(conf_state: Option<ConfState>) -> Disk {
        let durable = match conf_state {
            Some(conf_state) => MemStorage::new_with_conf_state(conf_state),
            None => MemStorage::new(),
        };
        Disk {
            durable,
            unsynced: Vec::new(),
            unsynced_max: 100_000,
            stats: DiskStats::default(),
        }
    }

    /// Issues a write. It survives a crash only if a later [`Disk::fsync`] completes first
    /// (or by luck).
    pub fn write(&mut self, write: Write) {
        assert!(
            self.unsynced.len() < self.unsynced_max,
            "runtime issued {} writes without an fsync",
            self.unsynced.len()
        );
        self.stats.writes += 1;
        self.unsynced.push(write);
    }

    /// Whether anything is written and not yet durable.
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Makes every issued write durable.
    pub fn fsync(&mut self) {
        for write in std::mem::take(&mut self.unsynced) {
            apply(&mut self.durable, write);
        }
        self.stats.fsyncs += 1;
    }

    /// Loses power: keeps a random prefix of the unsynced writes, possibly tearing the last
    /// one kept. Returns what survives, from which the node restarts.
    pub fn crash(&mut self, prng: &mut Prng) -> MemStorage {
        let unsynced = std::mem::take(&mut self.unsynced);
        let kept = prng.range(0, unsynced.len() as u64) as usize;
        let total = unsynced.len();
        for (position, write) in unsynced.into_iter().enumerate() {
            if position >= kept {
                break;
            }
            let last_kept = position + 1 == kept;
            match write {
                Write::Append(mut entries) if last_kept && prng.chance(1, 2) => {
                    let survive = prng.range(0, entries.len() as u64) as usize;
                    if survive < entries.len() {
                        self.stats.writes_torn += 1;
                    }
                    entries.truncate(survive);
                    apply(&mut self.durable, Write::Append(entries));
                }
                // A torn hard state fails its checksum and the previous one is read back.
                Write::HardState(_) if last_kept && prng.chance(1, 4) => {
                    self.stats.writes_torn += 1;
                }
                write => apply(&mut self.durable, write),
            }
        }
        self.stats.writes_lost += (total - kept) as u64;
        self.durable.clone()
    }

    /// The durable state (what a crash right now would certainly keep).
    pub fn durable(&self) -> &MemStorage {
        &self.durable
    }

    /// Counters so far.
    pub fn stats(&self) -> DiskStats {
        self.stats
    }
}

/// Applies one write to a storage image.
pub fn apply(storage: &mut MemStorage, write: Write) {
    match write {
        Write::Append(entries) => {
            // An append below the compaction point can only repeat entries the snapshot
            // already covers; a real log skips them the same way.
            let first_kept = storage.first_index();
            let entries: Vec<Entry> = entries
                .into_iter()
                .filter(|entry| entry.index >= first_kept)
                .collect();
            storage.append_owned(entries);
        }
        Write::HardState(hard_state) => storage.set_hard_state(hard_state),
        Write::InstallSnapshot(snapshot) => {
            // An older snapshot than the one held changes nothing, as on a real disk where the
            // runtime checks before writing.
            let _ = storage.apply_snapshot(snapshot);
        }
        Write::Compact(snapshot) => {
            let index = snapshot.meta.index;
            if storage
                .create_snapshot(index, snapshot.meta.conf_state, snapshot.data)
                .is_ok()
            {
                storage.compact_to_snapshot();
            }
            debug_assert!(storage.first_index() > index || storage.snapshot().is_ok());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry::new(term, index, Bytes::from_static(b"x")))
            .collect()
    }

    #[test]
    fn fsynced_writes_survive_every_crash() {
        for seed in 0..50 {
            let mut prng = Prng::new(seed);
            let mut disk = Disk::new(Some(ConfState::with_voters([1, 2, 3])));
            disk.write(Write::Append(entries(1..=3, 1)));
            disk.write(Write::HardState(HardState {
                term: 1,
                vote: 2,
                commit: 2,
            }));
            disk.fsync();
            disk.write(Write::Append(entries(4..=6, 1)));
            let survived = disk.crash(&mut prng);
            assert!(survived.last_index() >= 3, "seed {seed}");
            assert_eq!(survived.hard_state().vote, 2, "seed {seed}");
        }
    }

    #[test]
    fn crash_loses_some_unsynced_writes_and_tears_some() {
        let mut lost_all = false;
        let mut kept_all = false;
        let mut torn = false;
        for seed in 0..200 {
            let mut prng = Prng::new(seed);
            let mut disk = Disk::new(None);
            disk.write(Write::Append(entries(1..=4, 1)));
            let survived = disk.crash(&mut prng);
            match survived.last_index() {
                0 => lost_all = true,
                4 => kept_all = true,
                _ => torn = true,
            }
        }
        assert!(lost_all && kept_all && torn);
    }

    #[test]
    fn crash_keeps_a_prefix_never_a_later_write_without_an_earlier_one() {
        for seed in 0..200 {
            let mut prng = Prng::new(seed);
            let mut disk = Disk::new(None);
            disk.write(Write::Append(entries(1..=2, 1)));
            disk.write(Write::HardState(HardState {
                term: 1,
                vote: 1,
                commit: 2,
            }));
            let survived = disk.crash(&mut prng);
            if survived.hard_state().commit == 2 {
                assert_eq!(survived.last_index(), 2, "seed {seed}");
            }
        }
    }

    #[test]
    fn durable_view_ignores_unsynced_writes() {
        let mut disk = Disk::new(None);
        disk.write(Write::Append(entries(1..=2, 1)));
        assert_eq!(disk.durable().last_index(), 0);
        assert!(disk.has_unsynced());
        disk.fsync();
        assert_eq!(disk.durable().last_index(), 2);
        assert!(!disk.has_unsynced());
    }

    #[test]
    fn compaction_drops_covered_entries() {
        let mut disk = Disk::new(Some(ConfState::with_voters([1])));
        disk.write(Write::Append(entries(1..=5, 1)));
        disk.write(Write::Compact(Snapshot {
            meta: ordo_raft::SnapshotMeta {
                index: 3,
                term: 1,
                conf_state: ConfState::with_voters([1]),
            },
            data: Bytes::from_static(b"state"),
        }));
        disk.fsync();
        assert_eq!(disk.durable().first_index(), 4);
        assert_eq!(disk.durable().last_index(), 5);
    }
}
