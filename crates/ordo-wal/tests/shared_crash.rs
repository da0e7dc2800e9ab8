//! Damage to a shared log's journal as crashes and bad media produce it, with many groups
//! interleaved: every group must recover to the state after a prefix of the journal's
//! records that keeps all that survived, or the open must fail naming the damaged file;
//! never a wrong entry.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ordo_wal::{Durability, Entry, Error, HardState, Options, SharedLog, SharedOptions};

const SEGMENT_HEADER_BYTES: u64 = ordo_wal::SEGMENT_HEADER_BYTES;

fn options() -> SharedOptions {
    SharedOptions {
        journal: Options {
            segment_bytes_max: 4096,
            record_bytes_max: 512,
            index_interval_bytes: 128,
            durability: Durability::Never,
        },
        journal_bytes_target: u64::MAX,
        collect_in_background: false,
    }
}

/// What one journal record did, as the model applies it.
#[derive(Debug, Clone)]
enum Record {
    Create(u64),
    Append(u64, Vec<Entry>),
    TruncateSuffix(u64, u64),
    TruncatePrefix(u64, u64),
    HardState(u64, HardState),
    Remove(u64),
}

/// A group's log: entries from `start`, and its hard state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    start: u64,
    entries: Vec<Entry>,
    hard_state: HardState,
}

impl Model {
    fn last(&self) -> u64 {
        self.start + self.entries.len() as u64 - 1
    }
}

/// The groups after the first `n` records.
fn model_after(records: &[Record], n: usize) -> BTreeMap<u64, Model> {
    let mut groups = BTreeMap::new();
    for r in &records[..n] {
        match r {
            Record::Create(g) => {
                groups.insert(
                    *g,
                    Model {
                        start: 1,
                        entries: Vec::new(),
                        hard_state: HardState::default(),
                    },
                );
            }
            Record::Append(g, es) => groups.get_mut(g).unwrap().entries.extend(es.clone()),
            Record::TruncateSuffix(g, from) => {
                let m = groups.get_mut(g).unwrap();
                m.entries.truncate((from - m.start) as usize);
            }
            Record::TruncatePrefix(g, through) => {
                let m = groups.get_mut(g).unwrap();
                let gone = ((through + 1 - m.start) as usize).min(m.entries.len());
                m.entries.drain(..gone);
                m.start = through + 1;
            }
            Record::HardState(g, hs) => groups.get_mut(g).unwrap().hard_state = *hs,
            Record::Remove(g) => {
                groups.remove(g);
            }
        }
    }
    groups
}

/// What `log` holds, in the model's terms.
fn observed(log: &SharedLog) -> BTreeMap<u64, Model> {
    log.group_ids()
        .into_iter()
        .map(|id| {
            let g = log.group(id).unwrap();
            let entries = g
                .entries(g.first_index(), g.last_index() + 1, u64::MAX)
                .unwrap();
            let m = Model {
                start: g.first_index(),
                entries,
                hard_state: g.hard_state(),
            };
            (id, m)
        })
        .collect()
}

/// How `got` differs from `want`, briefly (the groups themselves are long).
fn differences(got: &BTreeMap<u64, Model>, want: &BTreeMap<u64, Model>) -> String {
    let brief = |m: &Model| (m.start, m.last(), m.hard_state);
    let mut out = String::new();
    for id in got.keys().chain(want.keys()) {
        match (got.get(id), want.get(id)) {
            (Some(g), Some(w)) if g == w => {}
            (Some(g), Some(w)) => {
                let first_wrong = g.entries.iter().zip(&w.entries).position(|(a, b)| a != b);
                out += &format!(
                    "group {id}: got {:?}, want {:?}, first differing entry {first_wrong:?}; ",
                    brief(g),
                    brief(w)
                );
            }
            (g, w) => {
                out += &format!(
                    "group {id}: got {:?}, want {:?}; ",
                    g.map(brief),
                    w.map(brief)
                )
            }
        }
    }
    out
}

/// Deterministic choices (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Interleaves `steps` operations of six groups, every one of which writes exactly one
/// journal record (syncing after each if `sync_each`), and returns the records in order.
fn write_interleaved(dir: &Path, steps: usize, sync_each: bool) -> Vec<Record> {
    let log = SharedLog::open(dir, options()).unwrap();
    let mut records = Vec::new();
    let mut rng = Rng(0x5eed_cafe);
    let mut term = 1;
    for step in 0..steps {
        let id = 1 + rng.below(6);
        let exists = model_after(&records, records.len()).contains_key(&id);
        let g = log.group(id).unwrap();
        if !exists {
            records.push(Record::Create(id));
        } else {
            let m = &model_after(&records, records.len())[&id];
            let record = match rng.below(20) {
                0 if m.last() >= m.start => {
                    let from = m.start + rng.below(m.last() - m.start + 1);
                    g.truncate_suffix(from).unwrap();
                    Record::TruncateSuffix(id, from)
                }
                1 => {
                    let through = m.start + rng.below(m.entries.len() as u64 + 2);
                    g.truncate_prefix(through).unwrap();
                    Record::TruncatePrefix(id, through)
                }
                2 => {
                    term += 1;
                    let hs = HardState {
                        term,
                        vote: Some(id),
                        commit: m.last(),
                    };
                    g.set_hard_state(hs).unwrap();
                    Record::HardState(id, hs)
                }
                3 if step % 2 == 0 => {
                    drop(g);
                    log.remove_group(id).unwrap();
                    records.push(Record::Remove(id));
                    continue;
                }
                _ => {
                    let first = m.last() + 1;
                    let es: Vec<Entry> = (first..first + 1 + rng.below(3))
                        .map(|i| {
                            let len = rng.below(90) as usize;
                            Entry::new(i, term, (i % 2) as u8, vec![(i as u8) ^ (id as u8); len])
                        })
                        .collect();
                    g.append(&es).unwrap();
                    Record::Append(id, es)
                }
            };
            records.push(record);
        }
        if sync_each {
            log.sync().unwrap();
        }
    }
    log.close().unwrap();
    records
}

fn journal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    segs
}

/// The journal index and end offset of every record in the segment `bytes`.
fn record_ends(bytes: &[u8]) -> Vec<(u64, u64)> {
    let mut ends = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES as usize;
    while at + 25 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let index = u64::from_le_bytes(bytes[at + 17..at + 25].try_into().unwrap());
        at += len;
        ends.push((index, at as u64));
    }
    ends
}

/// Makes the next open see the journal as last opened during an earlier boot: as after a
/// machine crash, when whatever was not fsynced may be lost.
fn reboot(dir: &Path) {
    fs::write(dir.join("journal").join("lock"), b"an-earlier-boot").unwrap();
}

fn damaged_file(err: &Error) -> Option<&Path> {
    match err {
        Error::Truncated { path, .. }
        | Error::Corrupt { path, .. }
        | Error::OutOfSequence { path, .. }
        | Error::Gap { path, .. } => Some(path),
        _ => None,
    }
}

#[test]
fn tearing_the_journal_at_every_offset_of_its_last_segment_recovers_every_group_to_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let records = write_interleaved(dir.path(), 90, false);
    let segs = journal_segments(dir.path());
    assert!(segs.len() >= 3, "the test wants several segments");
    let last = segs.last().unwrap();
    let original = fs::read(last).unwrap();
    let ends = record_ends(&original);
    let first = ends[0].0;
    let data_end = ends.last().unwrap().1;
    assert_eq!(ends.last().unwrap().0 as usize, records.len());
    assert!(records.iter().any(|r| matches!(r, Record::Remove(_))));
    for cut in SEGMENT_HEADER_BYTES..=data_end {
        // A record survives the cut if the bytes cut off were zeros anyway (the high
        // bytes of a state record's commit index, say).
        let intact =
            |end: u64| end <= cut || original[cut as usize..end as usize].iter().all(|&b| b == 0);
        let kept = ends
            .iter()
            .take_while(|&&(_, end)| intact(end))
            .last()
            .map_or(first - 1, |&(i, _)| i);
        let want = model_after(&records, kept as usize);
        // A machine crash that lost the bytes past `cut`: the segment keeps its
        // preallocated length, so what was not written reads as zeros.
        let mut torn = original.clone();
        torn[cut as usize..].fill(0);
        fs::write(last, &torn).unwrap();
        if cut % 16 == 0 {
            // Within the same boot only a cut a killed write can leave is a torn tail;
            // other damage is reported, naming the segment.
            match SharedLog::open(dir.path(), options()) {
                Ok(log) => {
                    let got = observed(&log);
                    assert!(
                        got == want,
                        "same boot, cut {cut}: {}",
                        differences(&got, &want)
                    );
                }
                Err(e) => assert_eq!(damaged_file(&e), Some(last.as_path()), "cut {cut}: {e}"),
            }
            fs::write(last, &torn).unwrap();
        }
        reboot(dir.path());
        let log =
            SharedLog::open(dir.path(), options()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let got = observed(&log);
        assert!(
            got == want,
            "torn at {cut}: {kept} records kept: {}",
            differences(&got, &want)
        );
    }
    // The whole segment back: every group as written.
    fs::write(last, &original).unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    assert_eq!(observed(&log), model_after(&records, records.len()));
}

#[test]
fn a_flipped_bit_in_a_journal_record_before_the_tail_is_corruption_naming_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    // Each record durable before the next is written: each later record's durability
    // claim covers its predecessors, so no damage before the tail can pass for a torn one.
    let records = write_interleaved(dir.path(), 120, true);
    let segs = journal_segments(dir.path());
    assert!(segs.len() >= 2, "the test wants several segments");
    let all = model_after(&records, records.len());
    for (n, seg) in segs.iter().enumerate() {
        let original = fs::read(seg).unwrap();
        let ends = record_ends(&original);
        // In the last segment, everything before its last two records.
        let end = if n + 1 == segs.len() {
            ends[ends.len() - 3].1
        } else {
            ends.last().unwrap().1
        };
        let file = fs::OpenOptions::new().write(true).open(seg).unwrap();
        for at in (0..end).filter(|at| at % 13 == 0) {
            let flipped = original[at as usize] ^ (1 << (at % 8));
            file.write_all_at(&[flipped], at).unwrap();
            reboot(dir.path());
            match SharedLog::open(dir.path(), options()) {
                Err(e) => {
                    assert_eq!(damaged_file(&e), Some(seg.as_path()), "byte {at}: {e}");
                    if let Error::Corrupt { offset, .. } = e {
                        // The damaged record's start (or the header field) at most a
                        // record before the flipped byte.
                        assert!(
                            offset <= at && at - offset < 512,
                            "byte {at}: offset {offset}"
                        );
                    }
                }
                Ok(log) => panic!(
                    "segment {n} byte {at}: damage accepted, {} groups",
                    observed(&log).len()
                ),
            }
            file.write_all_at(&original[at as usize..at as usize + 1], at)
                .unwrap();
        }
    }
    let log = SharedLog::open(dir.path(), options()).unwrap();
    assert_eq!(observed(&log), all);
}
