//! The simulated disk of one node: what was written, and the part of it that was fsynced.
//!
//! Writes are numbered in the order the runtime issues them. An fsync makes durable every
//! write issued before it started. A crash keeps everything fsynced and a random prefix of
//! what was written since, possibly tearing the last write (an append keeps only some of
//! its entries), as a real write-ahead log recovers: a torn tail is cut at the last record
//! whose checksum holds.

use std::collections::VecDeque;

use ordo_raft::{Entry, HardState, Index, MemStorage, Snapshot, Storage};

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
    /// A snapshot of the node's own state machine; the log is kept. Written to a temporary
    /// file and renamed, so it is never torn.
    SaveSnapshot(Snapshot),
    /// Entries through this index discarded, a snapshot covering them.
    Compact(Index),
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

/// Damage to the durable log that no crash caused: flipped bits in a record, or a file cut
/// short. The log's checksums and segment lengths make it detectable, never readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The first damaged entry.
    pub from: Index,
    /// The last damaged entry.
    pub to: Index,
    /// What happened, for the error a read gets.
    pub what: &'static str,
}

/// A node's disk.
#[derive(Debug, Clone)]
pub struct Disk {
    durable: MemStorage,
    damage: Option<Damage>,
    /// Written but not yet fsynced, oldest first; the first is write number `synced + 1`.
    unsynced: VecDeque<Write>,
    /// Writes issued and not yet fsynced are bounded: a runtime that never fsyncs is a bug.
    unsynced_max: usize,
    synced: u64,
    stats: DiskStats,
}

impl Disk {
    /// A disk holding `image` durably.
    pub fn new(image: MemStorage) -> Disk {
        Disk {
            durable: image,
            damage: None,
            unsynced: VecDeque::new(),
            unsynced_max: 100_000,
            synced: 0,
            stats: DiskStats::default(),
        }
    }

    /// Issues a write and returns its number. It survives a crash only if an fsync started
    /// after it completes first (or by luck).
    pub fn write(&mut self, write: Write) -> u64 {
        assert!(
            self.unsynced.len() < self.unsynced_max,
            "runtime issued {} writes without an fsync",
            self.unsynced.len()
        );
        self.stats.writes += 1;
        self.unsynced.push_back(write);
        self.issued()
    }

    /// The number of the last write issued.
    pub fn issued(&self) -> u64 {
        self.synced + self.unsynced.len() as u64
    }

    /// The number of the last write made durable.
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// Whether anything is written and not yet durable.
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Makes durable every write up to number `upto` (an fsync that started when `upto`
    /// writes had been issued).
    pub fn fsync_through(&mut self, upto: u64) {
        while self.synced < upto {
            let Some(write) = self.unsynced.pop_front() else {
                break;
            };
            apply(&mut self.durable, write);
            self.synced += 1;
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
        self.synced = 0;
        self.durable.clone()
    }

    /// Damages entries of the durable log (see [`Damage`]).
    pub fn damage(&mut self, damage: Damage) {
        self.damage = Some(damage);
    }

    /// The damage a read of entries `[lo, hi)` would meet, if any; damage to entries since
    /// compacted away is gone with their files.
    pub fn damage_in(&self, lo: Index, hi: Index) -> Option<&Damage> {
        let first = self.durable.first_index().max(lo);
        self.damage
            .as_ref()
            .filter(|d| d.from < hi && d.to >= first)
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
        Write::SaveSnapshot(snapshot) => {
            let meta = snapshot.meta;
            let _ = storage.create_snapshot(meta.index, meta.conf_state, snapshot.data);
        }
        Write::Compact(through) => {
            let _ = storage.compact(through);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ordo_raft::ConfState;

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry::new(term, index, Bytes::from_static(b"x")))
            .collect()
    }

    fn blank() -> Disk {
        Disk::new(MemStorage::new_with_conf_state(ConfState::with_voters([
            1, 2, 3,
        ])))
    }

    #[test]
    fn fsynced_writes_survive_every_crash() {
        for seed in 0..50 {
            let mut prng = Prng::new(seed);
            let mut disk = blank();
            disk.write(Write::Append(entries(1..=3, 1)));
            let n = disk.write(Write::HardState(HardState {
                term: 1,
                vote: 2,
                commit: 2,
            }));
            disk.fsync_through(n);
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
            let mut disk = Disk::new(MemStorage::new());
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
            let mut disk = Disk::new(MemStorage::new());
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
    fn an_fsync_covers_only_the_writes_issued_before_it() {
        let mut disk = Disk::new(MemStorage::new());
        let first = disk.write(Write::Append(entries(1..=2, 1)));
        disk.write(Write::Append(entries(3..=4, 1)));
        assert_eq!(disk.durable().last_index(), 0);
        disk.fsync_through(first);
        assert_eq!(disk.durable().last_index(), 2);
        assert!(disk.has_unsynced());
        disk.fsync_through(disk.issued());
        assert_eq!(disk.durable().last_index(), 4);
        assert!(!disk.has_unsynced());
    }

    #[test]
    fn compaction_drops_covered_entries_and_keeps_the_rest() {
        let mut disk = blank();
        disk.write(Write::Append(entries(1..=5, 1)));
        disk.write(Write::SaveSnapshot(Snapshot {
            meta: ordo_raft::SnapshotMeta {
                index: 3,
                term: 1,
                conf_state: ConfState::with_voters([1]),
            },
            data: Bytes::from_static(b"state"),
        }));
        disk.write(Write::Compact(2));
        disk.fsync_through(disk.issued());
        assert_eq!(disk.durable().first_index(), 3);
        assert_eq!(disk.durable().last_index(), 5);
        assert_eq!(disk.durable().snapshot().unwrap().meta.index, 3);
    }
}
