//! Random sequences of appends, truncations and reopens behave exactly like a `Vec`.

use std::path::Path;

use ordo_wal::{Durability, Entry, Options, Wal, RECORD_HEADER_BYTES};

const HEADER: u64 = RECORD_HEADER_BYTES as u64;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        count: u64,
        payload_bytes: usize,
        new_term: bool,
    },
    TruncateSuffix {
        back: u64,
    },
    TruncatePrefix {
        ahead: u64,
    },
    Read {
        at: u64,
        count: u64,
        max_bytes: u64,
    },
    Reopen,
    CloseAndReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..8u64, 0..300usize, proptest::bool::weighted(0.2)).prop_map(
            |(count, payload_bytes, new_term)| Op::Append { count, payload_bytes, new_term }
        ),
        2 => (0..25u64).prop_map(|back| Op::TruncateSuffix { back }),
        1 => (0..40u64).prop_map(|ahead| Op::TruncatePrefix { ahead }),
        2 => (0..60u64, 0..20u64, 0..2000u64)
            .prop_map(|(at, count, max_bytes)| Op::Read { at, count, max_bytes }),
        1 => Just(Op::Reopen),
        1 => Just(Op::CloseAndReopen),
    ]
}

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        record_bytes_max: 512,
        index_interval_bytes: 256,
        durability: Durability::Never,
    }
}

/// The model: the log is `entries`, starting at index `start`.
struct Model {
    start: u64,
    entries: Vec<Entry>,
    term: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.start + self.entries.len() as u64 - 1
    }
}

fn check(wal: &Wal, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(wal.first_index(), model.start);
    prop_assert_eq!(wal.last_index(), model.last());
    let got = wal
        .entries(model.start, model.last() + 1, u64::MAX)
        .unwrap();
    prop_assert_eq!(&got, &model.entries);
    for e in &model.entries {
        prop_assert_eq!(wal.term_at(e.index).unwrap(), e.term);
    }
    Ok(())
}

fn run(dir: &Path, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut wal = Some(Wal::open(dir, options()).unwrap());
    let mut model = Model {
        start: 1,
        entries: Vec::new(),
        term: 1,
    };
    for op in ops {
        let w = wal.as_ref().unwrap();
        match op {
            Op::Append {
                count,
                payload_bytes,
                new_term,
            } => {
                if new_term {
                    model.term += 1;
                }
                let first = model.last() + 1;
                let batch: Vec<Entry> = (first..first + count)
                    .map(|i| Entry::new(i, model.term, (i % 2) as u8, vec![i as u8; payload_bytes]))
                    .collect();
                prop_assert_eq!(w.append(&batch).unwrap(), first + count - 1);
                model.entries.extend(batch);
            }
            Op::TruncateSuffix { back } => {
                let from = (model.last() + 1).saturating_sub(back).max(model.start);
                w.truncate_suffix(from).unwrap();
                model.entries.truncate((from - model.start) as usize);
            }
            Op::TruncatePrefix { ahead } => {
                let through = model.start - 1 + ahead;
                w.truncate_prefix(through).unwrap();
                if through >= model.start {
                    let drop = ((through + 1 - model.start) as usize).min(model.entries.len());
                    model.entries.drain(..drop);
                    model.start = through + 1;
                }
            }
            Op::Read {
                at,
                count,
                max_bytes,
            } => {
                let lo = model.start + at.min(model.entries.len() as u64);
                let hi = (lo + count).min(model.last() + 1);
                let got = w.entries(lo, hi, max_bytes).unwrap();
                let want = &model.entries[(lo - model.start) as usize..(hi - model.start) as usize];
                prop_assert!(got.len() <= want.len());
                prop_assert_eq!(&got[..], &want[..got.len()]);
                if !want.is_empty() {
                    prop_assert!(!got.is_empty(), "a read returns at least one entry");
                    let bytes: u64 = got.iter().map(|e| HEADER + e.payload.len() as u64).sum();
                    prop_assert!(got.len() == 1 || bytes <= max_bytes);
                    if got.len() < want.len() {
                        prop_assert!(
                            bytes + HEADER + want[got.len()].payload.len() as u64 > max_bytes
                        );
                    }
                }
            }
            Op::Reopen => {
                drop(wal.take());
                wal = Some(Wal::open(dir, options()).unwrap());
            }
            Op::CloseAndReopen => {
                wal.take().unwrap().close().unwrap();
                wal = Some(Wal::open(dir, options()).unwrap());
            }
        }
        check(wal.as_ref().unwrap(), &model)?;
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn log_behaves_like_a_vec(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), ops)?;
    }
}
