//! Recovery: the journal replayed in order rebuilds every group's index.
//!
//! Replay applies each record as its operation says (see [`op`](super::op)), in journal
//! order, so it rebuilds exactly the state the records were written from, and it is linear
//! in the journal: one pass, constant work per record and per entry, except that an entry
//! arriving out of index order (a rewrite of a group's older entries after the journal's
//! prefix holding its other copies went) costs a tree insertion.
//!
//! After collection dropped a journal prefix, replay starts in the middle of each group's
//! history: a group may get entries before its latest state record, and rewrites may bring
//! lower indices after higher ones. What must hold at the end, and is checked, is that every
//! group has a state record and that its live entries are contiguous from its first index;
//! anything else is [`Error::Corrupt`] naming the journal segment and byte offset.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use super::group::Loc;
use super::op::{self, EntrySpan, Op, KIND_REMOVE};
use super::order::Pin;
use crate::error::{Error, Result};
use crate::hard_state::HardState;
use crate::wal::Wal;
use crate::{Entry, RECORD_HEADER_BYTES};

/// Bytes of journal records read per positioned read during replay.
const REPLAY_CHUNK_BYTES: u64 = 4 << 20;

/// A group as recovered.
#[derive(Debug)]
pub(crate) struct RecoveredGroup {
    pub(crate) id: u64,
    pub(crate) first_index: u64,
    pub(crate) locs: VecDeque<Loc>,
    pub(crate) hard_state: HardState,
    pub(crate) state_journal_index: u64,
}

/// What replay rebuilds.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) groups: Vec<RecoveredGroup>,
    /// The pin of every journal record, from the journal's first index on.
    pub(crate) pins: VecDeque<Pin>,
}

/// Where a record is, for error messages.
#[derive(Debug, Clone, Copy)]
struct RecordAt {
    journal_index: u64,
    /// Byte offset of the record in its segment.
    offset: u64,
}

/// A group being replayed: a contiguous run of entries, and the entries set outside it
/// (out of index order) until the run reaches them.
#[derive(Debug)]
struct ReplayGroup {
    /// Its first index and hard state, from the latest state record seen.
    state: Option<(u64, HardState, u64)>,
    /// `run[k]` is the entry with index `base + k`.
    base: u64,
    run: VecDeque<Loc>,
    /// Entries not adjacent to the run; never an index in `base - 1..=base + run.len()`.
    outliers: BTreeMap<u64, Loc>,
    /// The group's first record in the journal, named if the group turns out broken.
    first_seen: RecordAt,
    first_seen_path: std::path::PathBuf,
}

impl ReplayGroup {
    fn new(at: RecordAt, path: &Path) -> ReplayGroup {
        ReplayGroup {
            state: None,
            base: 0,
            run: VecDeque::new(),
            outliers: BTreeMap::new(),
            first_seen: at,
            first_seen_path: path.to_path_buf(),
        }
    }

    fn end(&self) -> u64 {
        self.base + self.run.len() as u64
    }

    fn first_index(&self) -> Option<u64> {
        self.state.map(|(first, _, _)| first)
    }

    /// "Drop every entry at or after `from`."
    fn truncate_from(&mut self, from: u64) {
        drop(self.outliers.split_off(&from));
        if from <= self.base {
            self.run.clear();
        } else if from < self.end() {
            self.run.truncate((from - self.base) as usize);
        }
    }

    /// "Drop every entry below `first`."
    fn drop_below(&mut self, first: u64) {
        self.outliers = self.outliers.split_off(&first);
        if first >= self.end() {
            self.run.clear();
        } else if first > self.base {
            self.run.drain(..(first - self.base) as usize);
            self.base = first;
        }
    }

    /// "Entry `index` is at `loc`."
    fn set(&mut self, index: u64, loc: Loc) {
        if self.run.is_empty() {
            self.base = index;
            self.run.push_back(loc);
        } else if (self.base..self.end()).contains(&index) {
            self.run[(index - self.base) as usize] = loc;
            return;
        } else if index == self.end() {
            self.run.push_back(loc);
        } else if index + 1 == self.base {
            self.run.push_front(loc);
            self.base = index;
        } else {
            self.outliers.insert(index, loc);
            return;
        }
        // The run grew by `index`: an older copy kept aside goes, and entries kept aside
        // that now touch the run join it.
        self.outliers.remove(&index);
        while let Some(loc) = self.outliers.remove(&self.end()) {
            self.run.push_back(loc);
        }
        while self.base > 0 {
            let Some(loc) = self.outliers.remove(&(self.base - 1)) else {
                break;
            };
            self.run.push_front(loc);
            self.base -= 1;
        }
    }

    /// The group's entries if they are contiguous from its first index.
    fn finish(self, id: u64, journal: &Wal) -> Result<RecoveredGroup> {
        let Some((first_index, hard_state, state_journal_index)) = self.state else {
            return Err(Error::corrupt(
                &self.first_seen_path,
                self.first_seen.offset,
                format!(
                    "group {id} has journal records from index {} on but no state record \
                     (its creation or latest state is missing)",
                    self.first_seen.journal_index
                ),
            ));
        };
        let mut locs = VecDeque::with_capacity(self.run.len() + self.outliers.len());
        let (below, above): (Vec<_>, Vec<_>) = self
            .outliers
            .into_iter()
            .partition(|&(index, _)| index < self.base);
        let run = self
            .run
            .into_iter()
            .enumerate()
            .map(|(k, l)| (self.base + k as u64, l));
        let all = below.into_iter().chain(run).chain(above);
        for (expected, (index, loc)) in (first_index..).zip(all) {
            if index != expected {
                let path = journal
                    .segment_path(loc.journal_index)
                    .unwrap_or_else(|| journal.dir().to_path_buf());
                return Err(Error::corrupt(
                    path,
                    loc.offset,
                    format!(
                        "group {id}: entry {index} follows {} (its log starts at \
                         {first_index}): entries {expected}..{index} are missing",
                        expected.wrapping_sub(1)
                    ),
                ));
            }
            locs.push_back(loc);
        }
        Ok(RecoveredGroup {
            id,
            first_index,
            locs,
            hard_state,
            state_journal_index,
        })
    }
}

/// Replays the whole journal.
pub(crate) fn replay(journal: &Wal) -> Result<Recovered> {
    let mut replay = Replay {
        groups: HashMap::new(),
        pins: VecDeque::new(),
    };
    let last = journal.last_index();
    let mut next = journal.first_index();
    while next <= last {
        let before = next;
        journal.visit_entries(
            next,
            last + 1,
            REPLAY_CHUNK_BYTES,
            |path, offset, record| {
                next = record.index + 1;
                replay.apply(path, offset, record)
            },
        )?;
        assert!(
            next > before,
            "every read of a non-empty range returns a record"
        );
    }
    let mut groups = Vec::with_capacity(replay.groups.len());
    for (id, g) in replay.groups {
        groups.push(g.finish(id, journal)?);
    }
    groups.sort_by_key(|g| g.id);
    Ok(Recovered {
        groups,
        pins: replay.pins,
    })
}

struct Replay {
    groups: HashMap<u64, ReplayGroup>,
    pins: VecDeque<Pin>,
}

impl Replay {
    /// Applies the journal record `record`, which starts at byte `offset` of `path`.
    fn apply(&mut self, path: &Path, offset: u64, record: Entry) -> Result<()> {
        let at = RecordAt {
            journal_index: record.index,
            offset,
        };
        let payload_offset = offset + RECORD_HEADER_BYTES as u64;
        let corrupt = |within: usize, why: String| {
            Error::corrupt(
                path,
                payload_offset + within as u64,
                format!("journal record {}: {why}", record.index),
            )
        };
        if record.term != 0 {
            return Err(Error::corrupt(
                path,
                offset,
                format!(
                    "journal record {} has term {}; the journal's records have term 0",
                    record.index, record.term
                ),
            ));
        }
        let op = op::decode(record.kind, &record.payload).map_err(|(w, why)| corrupt(w, why))?;
        match op {
            Op::Run {
                rewrite,
                group,
                from,
                entries,
            } => {
                self.pins.push_back(Pin {
                    group,
                    lo: from,
                    count: entries.len() as u32,
                    kind: record.kind,
                });
                let g = self
                    .groups
                    .entry(group)
                    .or_insert_with(|| ReplayGroup::new(at, path));
                if let Some(first) = g.first_index().filter(|&first| from < first) {
                    return Err(corrupt(
                        8,
                        format!(
                            "group {group}: entries from {from}, below its first index {first}"
                        ),
                    ));
                }
                if !rewrite {
                    g.truncate_from(from);
                }
                for EntrySpan {
                    index,
                    term,
                    at,
                    len,
                } in entries
                {
                    let loc = Loc {
                        journal_index: record.index,
                        offset: payload_offset + at as u64,
                        term,
                        len: len as u32,
                    };
                    g.set(index, loc);
                }
            }
            Op::State {
                group,
                first_index,
                hard_state,
            } => {
                self.pins.push_back(Pin {
                    group,
                    lo: first_index,
                    count: 0,
                    kind: record.kind,
                });
                let g = self
                    .groups
                    .entry(group)
                    .or_insert_with(|| ReplayGroup::new(at, path));
                if let Some(first) = g.first_index().filter(|&first| first_index < first) {
                    return Err(corrupt(
                        8,
                        format!(
                            "group {group}: first index {first_index}, below the earlier {first}"
                        ),
                    ));
                }
                g.drop_below(first_index);
                g.state = Some((first_index, hard_state, record.index));
            }
            Op::Remove { group } => {
                self.pins.push_back(Pin {
                    group,
                    lo: 0,
                    count: 0,
                    kind: KIND_REMOVE,
                });
                self.groups.remove(&group);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(journal_index: u64) -> Loc {
        Loc {
            journal_index,
            offset: 0,
            term: 1,
            len: 25,
        }
    }

    fn indices(g: &ReplayGroup) -> Vec<(u64, u64)> {
        let mut all: Vec<(u64, u64)> = g
            .run
            .iter()
            .enumerate()
            .map(|(k, l)| (g.base + k as u64, l.journal_index))
            .collect();
        all.extend(g.outliers.iter().map(|(&i, l)| (i, l.journal_index)));
        all.sort();
        all
    }

    #[test]
    fn entries_set_out_of_order_join_the_run_when_it_reaches_them() {
        let path = Path::new("x");
        let mut g = ReplayGroup::new(
            RecordAt {
                journal_index: 1,
                offset: 0,
            },
            path,
        );
        for i in 5..=7 {
            g.set(i, loc(10));
        }
        g.set(2, loc(11));
        g.set(1, loc(11));
        assert_eq!(g.outliers.len(), 2);
        g.set(4, loc(12));
        g.set(3, loc(12));
        assert!(g.outliers.is_empty(), "{:?}", g.outliers);
        assert_eq!((g.base, g.run.len()), (1, 7));
        g.set(9, loc(13));
        g.truncate_from(7);
        assert_eq!(indices(&g).last(), Some(&(6, 10)));
        g.drop_below(3);
        assert_eq!(indices(&g).first(), Some(&(3, 12)));
        g.set(2, loc(14));
        assert_eq!(g.base, 2);
    }
}
