//! Random interleavings of many groups' appends, truncations, hard states and removals,
//! with collections and reopens, behave exactly like one `Vec` per group.
//!
//! The seed is printed; rerun a failure with `ORDO_SHARED_SEED=<seed>`.

use std::collections::BTreeMap;
use std::path::Path;

use ordo_wal::{
    Durability, Entry, GroupLog, HardState, Options, SharedLog, SharedOptions, RECORD_HEADER_BYTES,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

const GROUPS: u64 = 5;
const HEADER: u64 = RECORD_HEADER_BYTES as u64;

#[derive(Debug, Clone)]
enum Op {
    Append {
        group: u64,
        count: u64,
        payload_bytes: usize,
        new_term: bool,
    },
    TruncateSuffix {
        group: u64,
        back: u64,
    },
    TruncatePrefix {
        group: u64,
        ahead: u64,
    },
    SetHardState {
        group: u64,
        vote: Option<u64>,
    },
    Remove {
        group: u64,
    },
    Read {
        group: u64,
        at: u64,
        count: u64,
        max_bytes: u64,
    },
    Collect,
    Sync,
    Reopen,
}

fn group() -> impl Strategy<Value = u64> {
    1..=GROUPS
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (group(), 1..6u64, 0..200usize, proptest::bool::weighted(0.15)).prop_map(
            |(group, count, payload_bytes, new_term)| Op::Append { group, count, payload_bytes, new_term }
        ),
        2 => (group(), 0..12u64).prop_map(|(group, back)| Op::TruncateSuffix { group, back }),
        2 => (group(), 0..20u64).prop_map(|(group, ahead)| Op::TruncatePrefix { group, ahead }),
        1 => (group(), proptest::option::of(0..4u64))
            .prop_map(|(group, vote)| Op::SetHardState { group, vote }),
        1 => group().prop_map(|group| Op::Remove { group }),
        2 => (group(), 0..40u64, 0..15u64, 0..1500u64)
            .prop_map(|(group, at, count, max_bytes)| Op::Read { group, at, count, max_bytes }),
        2 => Just(Op::Collect),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

fn options(durability: Durability) -> SharedOptions {
    SharedOptions {
        journal: Options {
            segment_bytes_max: 4096,
            record_bytes_max: 512,
            index_interval_bytes: 256,
            durability,
        },
        // Collect whenever the journal holds more than twice what is live.
        journal_bytes_target: 0,
        collect_in_background: false,
    }
}

/// One group's log in the model: `entries`, starting at index `start`.
#[derive(Debug, Clone)]
struct Model {
    start: u64,
    entries: Vec<Entry>,
    term: u64,
    hard_state: HardState,
}

impl Model {
    fn new() -> Model {
        Model {
            start: 1,
            entries: Vec::new(),
            term: 1,
            hard_state: HardState::default(),
        }
    }

    fn last(&self) -> u64 {
        self.start + self.entries.len() as u64 - 1
    }
}

fn check(log: &SharedLog, models: &BTreeMap<u64, Model>) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.group_ids(), models.keys().copied().collect::<Vec<_>>());
    for (&id, m) in models {
        let g = log.group(id).unwrap();
        prop_assert_eq!(
            (g.first_index(), g.last_index()),
            (m.start, m.last()),
            "group {}",
            id
        );
        let got = g.entries(m.start, m.last() + 1, u64::MAX).unwrap();
        prop_assert_eq!(&got, &m.entries, "group {}", id);
        for e in &m.entries {
            prop_assert_eq!(g.term_at(e.index).unwrap(), e.term);
        }
        prop_assert_eq!(g.hard_state(), m.hard_state);
        prop_assert!(g.durable_index() <= g.last_index());
    }
    Ok(())
}

fn check_read(
    g: &GroupLog,
    m: &Model,
    at: u64,
    count: u64,
    max_bytes: u64,
) -> Result<(), TestCaseError> {
    let lo = m.start + at.min(m.entries.len() as u64);
    let hi = (lo + count).min(m.last() + 1);
    let got = g.entries(lo, hi, max_bytes).unwrap();
    let want = &m.entries[(lo - m.start) as usize..(hi - m.start) as usize];
    prop_assert!(got.len() <= want.len());
    prop_assert_eq!(&got[..], &want[..got.len()]);
    if !want.is_empty() {
        prop_assert!(!got.is_empty(), "a read returns at least one entry");
        let bytes: u64 = got.iter().map(|e| HEADER + e.payload.len() as u64).sum();
        prop_assert!(got.len() == 1 || bytes <= max_bytes);
        if got.len() < want.len() {
            prop_assert!(bytes + HEADER + want[got.len()].payload.len() as u64 > max_bytes);
        }
    }
    Ok(())
}

fn run(dir: &Path, durability: Durability, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let options = || options(durability);
    let mut log = Some(SharedLog::open(dir, options()).unwrap());
    let mut models: BTreeMap<u64, Model> = BTreeMap::new();
    for op in ops {
        let l = log.as_ref().unwrap();
        match op {
            Op::Append {
                group,
                count,
                payload_bytes,
                new_term,
            } => {
                let g = l.group(group).unwrap();
                let m = models.entry(group).or_insert_with(Model::new);
                if new_term {
                    m.term += 1;
                }
                let first = m.last() + 1;
                let batch: Vec<Entry> = (first..first + count)
                    .map(|i| {
                        let byte = (i as u8) ^ (group as u8);
                        Entry::new(i, m.term, (i % 2) as u8, vec![byte; payload_bytes])
                    })
                    .collect();
                prop_assert_eq!(g.append(&batch).unwrap(), first + count - 1);
                m.entries.extend(batch);
            }
            Op::TruncateSuffix { group, back } => {
                let g = l.group(group).unwrap();
                let m = models.entry(group).or_insert_with(Model::new);
                let from = (m.last() + 1).saturating_sub(back).max(m.start);
                g.truncate_suffix(from).unwrap();
                m.entries.truncate((from - m.start) as usize);
            }
            Op::TruncatePrefix { group, ahead } => {
                let g = l.group(group).unwrap();
                let m = models.entry(group).or_insert_with(Model::new);
                let through = m.start - 1 + ahead;
                g.truncate_prefix(through).unwrap();
                if through >= m.start {
                    let gone = ((through + 1 - m.start) as usize).min(m.entries.len());
                    m.entries.drain(..gone);
                    m.start = through + 1;
                }
            }
            Op::SetHardState { group, vote } => {
                let g = l.group(group).unwrap();
                let m = models.entry(group).or_insert_with(Model::new);
                let hs = HardState {
                    term: m.term,
                    vote,
                    commit: m.last(),
                };
                g.set_hard_state(hs).unwrap();
                m.hard_state = hs;
            }
            Op::Remove { group } => {
                l.remove_group(group).unwrap();
                models.remove(&group);
            }
            Op::Read {
                group,
                at,
                count,
                max_bytes,
            } => {
                if let Some(m) = models.get(&group) {
                    check_read(&l.group(group).unwrap(), m, at, count, max_bytes)?;
                }
            }
            Op::Collect => {
                l.collect().unwrap();
            }
            Op::Sync => {
                l.sync().unwrap();
                for &id in models.keys() {
                    let g = l.group(id).unwrap();
                    prop_assert_eq!(g.durable_index(), g.last_index());
                }
            }
            Op::Reopen => {
                drop(log.take());
                log = Some(SharedLog::open(dir, options()).unwrap());
            }
        }
        check(log.as_ref().unwrap(), &models)?;
    }
    let stats = log.as_ref().unwrap().stats();
    prop_assert_eq!(stats.groups, models.len() as u64);
    drop(log);
    check(&SharedLog::open(dir, options()).unwrap(), &models)
}

fn seed() -> u64 {
    let seed = std::env::var("ORDO_SHARED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0bd0_5eed);
    eprintln!("shared_model seed: {seed} (rerun with ORDO_SHARED_SEED={seed})");
    seed
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        rng_seed: RngSeed::Fixed(seed()),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_group_behaves_like_a_vec(
        ops in proptest::collection::vec(op(), 1..120),
        always in proptest::bool::ANY,
    ) {
        // With `Always`, the journal's fsync thread runs rounds meanwhile and appends are
        // staged for them: reads must find them all the same.
        let durability = if always { Durability::Always } else { Durability::Never };
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), durability, ops)?;
    }
}
