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

#[test]
fn groups_changed_from_many_threads_during_collections_end_as_their_own_operations_say() {
    for durability in [Durability::Never, Durability::Always] {
        let mut o = options(false);
        o.journal.segment_bytes_max = 8 << 10;
        o.journal.durability = durability;
        o.journal_bytes_target = 0;
        concurrent_groups_and_collections(o);
    }
}

fn concurrent_groups_and_collections(o: SharedOptions) {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), o.clone()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (log, stop) = (log.clone(), std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut segments = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                segments += log.collect().unwrap().segments;
            }
            segments
        })
    };
    let workers: Vec<_> = (1..=6u64)
        .map(|id| {
            let g = log.group(id).unwrap();
            std::thread::spawn(move || {
                // The group's own model: entries `start..`, each `entry(id, i)` of term 1.
                let (mut start, mut next) = (1u64, 1u64);
                let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                for step in 0..400u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match x % 10 {
                        0 if next > start => {
                            let from = next - 1 - (x >> 8) % (next - start).min(5);
                            g.truncate_suffix(from).unwrap();
                            next = from;
                        }
                        1 | 3 => {
                            // Mostly keep the last few entries; now and then past the end.
                            let through = if step % 13 == 0 {
                                next + 2
                            } else {
                                (next - 1).saturating_sub((x >> 8) % 4).max(start - 1)
                            };
                            g.truncate_prefix(through).unwrap();
                            start = start.max(through + 1);
                            next = next.max(start);
                        }
                        2 if next > start => {
                            let durable = g.wait_durable(next - 1).unwrap();
                            assert!(durable >= next - 1, "group {id} step {step}");
                        }
                        _ => {
                            let n = 1 + (x >> 8) % 4;
                            let batch: Vec<Entry> =
                                (next..next + n).map(|i| entry(id, i)).collect();
                            g.append(&batch).unwrap();
                            next += n;
                        }
                    }
                    if step % 50 == 0 {
                        let got = g.entries(start, next, u64::MAX);
                        if next > start {
                            let want: Vec<Entry> = (start..next).map(|i| entry(id, i)).collect();
                            assert_eq!(got.unwrap(), want, "group {id} step {step}");
                        }
                    }
                }
                (start, next)
            })
        })
        .collect();
    let ends: Vec<(u64, u64)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let collected = collector.join().unwrap();
    let check = |log: &SharedLog| {
        for (id, &(start, next)) in (1..=6u64).zip(&ends) {
            let g = log.group(id).unwrap();
            assert_eq!(
                (g.first_index(), g.last_index()),
                (start, next - 1),
                "group {id}"
            );
            let want: Vec<Entry> = (start..next).map(|i| entry(id, i)).collect();
            assert_eq!(g.entries(start, next, u64::MAX).unwrap_or_default(), want);
        }
    };
    check(&log);
    eprintln!("{collected} segments collected while the groups changed");
    assert!(
        collected > 10,
        "collections ran meanwhile: {collected} segments"
    );
    drop(log);
    check(&SharedLog::open(dir.path(), o).unwrap());
}
