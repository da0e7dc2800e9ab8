//! The simulated disk of one node: one journal shared by every group the node hosts, what
//! was written to it, and the part of it that was fsynced.
//!
//! Writes of all groups are numbered in the one order the node issues them, as records of the
//! runtime's shared log (`ordo_wal::SharedLog`) are. An fsync makes durable every write issued
//! before it started, of every group. A crash keeps everything fsynced and a random prefix of
//! what was written since, across all groups, possibly tearing the last write (an append keeps
//! only some of its entries), as the shared log recovers: a torn tail is cut at the last record
//! whose checksum holds.

use std::collections::{BTreeMap, VecDeque};

use ordo_node::GroupId;
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

/// A node's disk: one journal for all its groups.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    /// What each hosted group durably holds.
    durable: BTreeMap<GroupId, MemStorage>,
    /// Damage to one group's records, if any.
    damage: Option<(GroupId, Damage)>,
    /// Written but not yet fsynced, oldest first, each tagged with its group; the first is
    /// write number `synced + 1`.
    unsynced: VecDeque<(GroupId, Write)>,
    /// Writes issued and not yet fsynced are bounded: a runtime that never fsyncs is a bug.
    unsynced_max: usize,
    synced: u64,
    stats: DiskStats,
}

impl Disk {
    /// A disk hosting no group yet.
    pub fn new() -> Disk {
        Disk {
            unsynced_max: 100_000,
            ..Disk::default()
        }
    }

    /// A disk hosting `group` alone, holding `image` durably.
    pub fn with_group(group: GroupId, image: MemStorage) -> Disk {
        let mut disk = Disk::new();
        disk.create_group(group, image);
        disk
    }

    /// Bootstraps `group` on this disk from `image`. Durable at once: the runtime syncs a
    /// group's bootstrap before it starts the group.
    pub fn create_group(&mut self, group: GroupId, image: MemStorage) {
        let previous = self.durable.insert(group, image);
        assert!(previous.is_none(), "group {group} bootstrapped twice");
    }

    /// Removes `group` and everything it wrote. Durable at once; writes of it still in the
    /// journal's unsynced tail are skipped, as recovery skips records of a removed group.
    pub fn remove_group(&mut self, group: GroupId) {
        self.durable.remove(&group);
        if self.damage.as_ref().is_some_and(|(g, _)| *g == group) {
            self.damage = None;
        }
    }

    /// The groups this disk hosts, in id order.
    pub fn groups(&self) -> Vec<GroupId> {
        self.durable.keys().copied().collect()
    }

    /// Whether this disk hosts `group`.
    pub fn hosts(&self, group: GroupId) -> bool {
        self.durable.contains_key(&group)
    }

    /// Issues a write of `group` and returns its number in the journal. It survives a crash
    /// only if an fsync started after it completes first (or by luck).
    pub fn write(&mut self, group: GroupId, write: Write) -> u64 {
        assert!(
            self.unsynced.len() < self.unsynced_max,
            "runtime issued {} writes without an fsync",
            self.unsynced.len()
        );
        assert!(
            self.hosts(group),
            "group {group} writes to a disk not hosting it"
        );
        self.stats.writes += 1;
        self.unsynced.push_back((group, write));
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
    /// writes had been issued), whatever group issued it.
    pub fn fsync_through(&mut self, upto: u64) {
        while self.synced < upto {
            let Some((group, write)) = self.unsynced.pop_front() else {
                break;
            };
            if let Some(storage) = self.durable.get_mut(&group) {
                apply(storage, write);
            }
            self.synced += 1;
        }
        self.stats.fsyncs += 1;
    }

    /// Loses power: keeps a random prefix of the unsynced writes of all groups, possibly
    /// tearing the last one kept. Afterwards every group's durable image is what it restarts
    /// from.
    pub fn crash(&mut self, prng: &mut Prng) {
        let unsynced = std::mem::take(&mut self.unsynced);
        let kept = prng.range(0, unsynced.len() as u64) as usize;
        let total = unsynced.len();
        for (position, (group, write)) in unsynced.into_iter().enumerate() {
            if position >= kept {
                break;
            }
            let last_kept = position + 1 == kept;
            let Some(storage) = self.durable.get_mut(&group) else {
                // The group was removed since: recovery skips its records.
                continue;
            };
            match write {
                Write::Append(mut entries) if last_kept && prng.chance(1, 2) => {
                    let survive = prng.range(0, entries.len() as u64) as usize;
                    if survive < entries.len() {
                        self.stats.writes_torn += 1;
                    }
                    entries.truncate(survive);
                    apply(storage, Write::Append(entries));
                }
                // A torn hard state fails its checksum and the previous one is read back.
                Write::HardState(_) if last_kept && prng.chance(1, 4) => {
                    self.stats.writes_torn += 1;
                }
                write => apply(storage, write),
            }
        }
        self.stats.writes_lost += (total - kept) as u64;
        self.synced = 0;
    }

    /// Damages entries of `group`'s durable records (see [`Damage`]).
    pub fn damage(&mut self, group: GroupId, damage: Damage) {
        assert!(
            self.hosts(group),
            "damage to group {group}, not on this disk"
        );
        self.damage = Some((group, damage));
    }

    /// The damage a read of `group`'s entries `[lo, hi)` would meet, if any; damage to
    /// entries since compacted away is gone with their records.
    pub fn damage_in(&self, group: GroupId, lo: Index, hi: Index) -> Option<&Damage> {
        let first = self.durable.get(&group)?.first_index().max(lo);
        self.damage
            .as_ref()
            .filter(|(g, d)| *g == group && d.from < hi && d.to >= first)
            .map(|(_, d)| d)
    }

    /// Damage anywhere in the journal, as recovery (which reads every record) meets it.
    pub fn damage_anywhere(&self) -> Option<(GroupId, &Damage)> {
        let (group, _) = self.damage.as_ref()?;
        self.damage_in(*group, 0, Index::MAX).map(|d| (*group, d))
    }

    /// `group`'s durable state (what a crash right now would certainly keep), if hosted.
    pub fn durable(&self, group: GroupId) -> Option<&MemStorage> {
        self.durable.get(&group)
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

    const G1: GroupId = GroupId(1);
    const G2: GroupId = GroupId(2);

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry::new(term, index, Bytes::from_static(b"x")))
            .collect()
    }

    fn blank() -> Disk {
        Disk::with_group(
            G1,
            MemStorage::new_with_conf_state(ConfState::with_voters([1, 2, 3])),
        )
    }

    fn empty() -> Disk {
        Disk::with_group(G1, MemStorage::new())
    }

    fn last_index(disk: &Disk, group: GroupId) -> Index {
        disk.durable(group).expect("hosted").last_index()
    }

    #[test]
    fn fsynced_writes_survive_every_crash() {
        for seed in 0..50 {
            let mut prng = Prng::new(seed);
            let mut disk = blank();
            disk.write(G1, Write::Append(entries(1..=3, 1)));
            let n = disk.write(
                G1,
                Write::HardState(HardState {
                    term: 1,
                    vote: 2,
                    commit: 2,
                }),
            );
            disk.fsync_through(n);
            disk.write(G1, Write::Append(entries(4..=6, 1)));
            disk.crash(&mut prng);
            let survived = disk.durable(G1).expect("hosted");
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
            let mut disk = empty();
            disk.write(G1, Write::Append(entries(1..=4, 1)));
            disk.crash(&mut prng);
            match last_index(&disk, G1) {
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
            let mut disk = empty();
            disk.write(G1, Write::Append(entries(1..=2, 1)));
            disk.write(
                G1,
                Write::HardState(HardState {
                    term: 1,
                    vote: 1,
                    commit: 2,
                }),
            );
            disk.crash(&mut prng);
            let survived = disk.durable(G1).expect("hosted");
            if survived.hard_state().commit == 2 {
                assert_eq!(survived.last_index(), 2, "seed {seed}");
            }
        }
    }

    #[test]
    fn a_crash_keeps_one_prefix_of_the_writes_of_all_groups() {
        let (mut first_only, mut both, mut neither) = (false, false, false);
        for seed in 0..200 {
            let mut prng = Prng::new(seed);
            let mut disk = empty();
            disk.create_group(G2, MemStorage::new());
            disk.write(G1, Write::Append(entries(1..=1, 1)));
            disk.write(G2, Write::Append(entries(1..=1, 1)));
            disk.write(G1, Write::Append(entries(2..=2, 1)));
            disk.crash(&mut prng);
            match (last_index(&disk, G1), last_index(&disk, G2)) {
                // Group 2's write came after group 1's first: it never survives alone.
                (0, 0) => neither = true,
                (1, 0) => first_only = true,
                (1, 1) | (2, 1) => both = true,
                other => panic!("seed {seed}: kept {other:?}, not a prefix of the journal"),
            }
        }
        assert!(first_only && both && neither);
    }

    #[test]
    fn one_fsync_makes_every_group_durable_and_a_removed_group_is_skipped() {
        let mut disk = empty();
        disk.create_group(G2, MemStorage::new());
        disk.write(G1, Write::Append(entries(1..=2, 1)));
        let upto = disk.write(G2, Write::Append(entries(1..=3, 1)));
        disk.write(G2, Write::Append(entries(4..=4, 1)));
        disk.fsync_through(upto);
        assert_eq!((last_index(&disk, G1), last_index(&disk, G2)), (2, 3));
        disk.remove_group(G2);
        disk.fsync_through(disk.issued());
        assert!(!disk.hosts(G2) && !disk.has_unsynced());
        assert_eq!(disk.groups(), vec![G1]);
    }

    #[test]
    fn damage_is_met_by_its_group_and_by_recovery() {
        let mut disk = empty();
        disk.create_group(G2, MemStorage::new());
        let n = disk.write(G2, Write::Append(entries(1..=3, 1)));
        disk.fsync_through(n);
        disk.damage(
            G2,
            Damage {
                from: 2,
                to: 2,
                what: "checksum mismatch",
            },
        );
        assert!(disk.damage_in(G1, 1, 4).is_none());
        assert!(disk.damage_in(G2, 1, 4).is_some());
        assert_eq!(disk.damage_anywhere().map(|(g, _)| g), Some(G2));
        disk.remove_group(G2);
        assert!(disk.damage_anywhere().is_none());
    }

    #[test]
    fn an_fsync_covers_only_the_writes_issued_before_it() {
        let mut disk = empty();
        let first = disk.write(G1, Write::Append(entries(1..=2, 1)));
        disk.write(G1, Write::Append(entries(3..=4, 1)));
        assert_eq!(last_index(&disk, G1), 0);
        disk.fsync_through(first);
        assert_eq!(last_index(&disk, G1), 2);
        assert!(disk.has_unsynced());
        disk.fsync_through(disk.issued());
        assert_eq!(last_index(&disk, G1), 4);
        assert!(!disk.has_unsynced());
    }

    #[test]
    fn compaction_drops_covered_entries_and_keeps_the_rest() {
        let mut disk = blank();
        disk.write(G1, Write::Append(entries(1..=5, 1)));
        disk.write(
            G1,
            Write::SaveSnapshot(Snapshot {
                meta: ordo_raft::SnapshotMeta {
                    index: 3,
                    term: 1,
                    conf_state: ConfState::with_voters([1]),
                },
                data: Bytes::from_static(b"state"),
            }),
        );
        disk.write(G1, Write::Compact(2));
        disk.fsync_through(disk.issued());
        let durable = disk.durable(G1).expect("hosted");
        assert_eq!(durable.first_index(), 3);
        assert_eq!(durable.last_index(), 5);
        assert_eq!(durable.snapshot().unwrap().meta.index, 3);
    }
}
