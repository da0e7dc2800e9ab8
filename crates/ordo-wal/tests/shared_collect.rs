//! Collection of the shared journal: a group that keeps everything next to groups that
//! compact quickly keeps its entries, the journal stays bounded, and what collection
//! rewrites stays within the bound `LIVE_BYTES_MULTIPLE` gives.

use ordo_wal::shared::LIVE_BYTES_MULTIPLE;
use ordo_wal::{Durability, Entry, GroupLog, Options, SharedLog, SharedOptions, SharedStats};

const SEGMENT_BYTES: u64 = 64 << 10;
const TARGET_BYTES: u64 = 256 << 10;
const FAST_GROUPS: u64 = 20;

fn options(background: bool) -> SharedOptions {
    SharedOptions {
        journal: Options {
            segment_bytes_max: SEGMENT_BYTES,
            record_bytes_max: 4096,
            index_interval_bytes: 1024,
            durability: Durability::Never,
        },
        journal_bytes_target: TARGET_BYTES,
        collect_in_background: background,
    }
}

fn entry(group: u64, index: u64) -> Entry {
    Entry::new(index, 1, 0, vec![(index as u8) ^ (group as u8); 200])
}

fn append(g: &GroupLog, count: u64) {
    let first = g.last_index() + 1;
    let batch: Vec<Entry> = (first..first + count).map(|i| entry(g.id(), i)).collect();
    g.append(&batch).unwrap();
}

/// The most the journal may hold right after a collection: its target, one segment being
/// written and one that a step could not take (the last).
fn bound(stats: &SharedStats) -> u64 {
    TARGET_BYTES.max(LIVE_BYTES_MULTIPLE * stats.live_bytes) + 2 * SEGMENT_BYTES
}

/// A round: the long-retention group appends one entry; each fast group appends four and
/// compacts to its last four (as a Kafka partition kept an hour next to one kept a week).
fn round(long: &GroupLog, fast: &[GroupLog]) {
    append(long, 1);
    for g in fast {
        append(g, 4);
        g.truncate_prefix(g.last_index() - 4).unwrap();
    }
}

fn check_long(long: &GroupLog, rounds: u64) {
    assert_eq!((long.first_index(), long.last_index()), (1, rounds));
    let all = long.entries(1, rounds + 1, u64::MAX).unwrap();
    assert_eq!(
        all,
        (1..=rounds)
            .map(|i| entry(long.id(), i))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_long_retention_group_keeps_its_entries_while_the_journal_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options(false)).unwrap();
    let long = log.group(1).unwrap();
    let fast: Vec<GroupLog> = (2..2 + FAST_GROUPS)
        .map(|id| log.group(id).unwrap())
        .collect();
    let rounds = 400;
    let mut journal_max = 0;
    for _ in 0..rounds {
        round(&long, &fast);
        log.collect().unwrap();
        let stats = log.stats();
        assert!(stats.journal_bytes <= bound(&stats), "{stats:?}");
        journal_max = journal_max.max(stats.journal_bytes);
    }
    let stats = log.stats();
    eprintln!(
        "after {rounds} rounds: {} bytes appended, {} rewritten (write amplification {:.3}), \
         journal at most {journal_max} bytes, live {} bytes, {} segments collected",
        stats.appended_bytes,
        stats.rewritten_bytes,
        stats.write_amplification(),
        stats.live_bytes,
        stats.segments_collected
    );
    assert!(stats.segments_collected > 50, "{stats:?}");
    assert!(
        stats.appended_bytes > 10 * journal_max,
        "far more was written than the journal ever held: {stats:?}"
    );
    // Collecting whenever the journal passes max(target, 2 × live) rewrites, on average, at
    // most one byte per byte appended: 1 / (LIVE_BYTES_MULTIPLE - 1).
    assert!(
        stats.rewritten_bytes <= stats.appended_bytes / (LIVE_BYTES_MULTIPLE - 1),
        "{stats:?}"
    );
    check_long(&long, rounds);
    drop((long, fast));
    drop(log);
    let log = SharedLog::open(dir.path(), options(false)).unwrap();
    check_long(&log.group(1).unwrap(), rounds);
    for id in 2..2 + FAST_GROUPS {
        let g = log.group(id).unwrap();
        assert_eq!(g.last_index() - g.first_index() + 1, 4, "group {id}");
    }
}

#[test]
fn background_collection_runs_beside_appenders_and_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options(true)).unwrap();
    let long = log.group(1).unwrap();
    let fast: Vec<GroupLog> = (2..2 + FAST_GROUPS)
        .map(|id| log.group(id).unwrap())
        .collect();
    let rounds = 300;
    let readers: Vec<_> = fast
        .iter()
        .take(4)
        .cloned()
        .map(|g| {
            std::thread::spawn(move || {
                // Reads race the collector moving entries: each is whole and right.
                for _ in 0..200 {
                    let (lo, hi) = (g.first_index(), g.last_index() + 1);
                    match g.entries(lo, hi, u64::MAX) {
                        Ok(es) => {
                            for e in es {
                                assert_eq!(e, entry(g.id(), e.index));
                            }
                        }
                        Err(ordo_wal::Error::Compacted { .. }) => {}
                        Err(e) => panic!("group {}: {e}", g.id()),
                    }
                }
            })
        })
        .collect();
    for _ in 0..rounds {
        round(&long, &fast);
    }
    for r in readers {
        r.join().unwrap();
    }
    log.collect().unwrap();
    let stats = log.stats();
    assert!(stats.journal_bytes <= bound(&stats), "{stats:?}");
    assert_eq!(stats.collect_failures, 0);
    check_long(&long, rounds);
    drop((long, fast));
    drop(log);
    check_long(
        &SharedLog::open(dir.path(), options(false))
            .unwrap()
            .group(1)
            .unwrap(),
        rounds,
    );
}
