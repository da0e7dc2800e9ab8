//! Behaviour of `SharedLog`, including crashes injected inside collection and damage that
//! needs the in-memory index to aim at.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::group::{Group, Loc};
use super::op::{self, KIND_APPEND, KIND_STATE};
use super::{LAYOUT_FILE, LAYOUT_FORMAT};
use crate::snapshot::Snapshots;
use crate::{
    Durability, Entry, Error, GroupLog, HardState, Options, SharedLog, SharedOptions, SnapshotMeta,
    Wal, INDEX_MAX,
};

fn options() -> SharedOptions {
    SharedOptions {
        journal: Options {
            segment_bytes_max: 4096,
            record_bytes_max: 1024,
            index_interval_bytes: 256,
            durability: Durability::Never,
        },
        journal_bytes_target: 0,
        collect_in_background: false,
    }
}

fn with_durability(durability: Durability) -> SharedOptions {
    let mut o = options();
    o.journal.durability = durability;
    o
}

fn entry(group: u64, index: u64, term: u64) -> Entry {
    let len = (index.wrapping_mul(7).wrapping_add(group.wrapping_mul(3)) % 50) as usize;
    Entry::new(
        index,
        term,
        (index % 3) as u8,
        vec![(index ^ group) as u8; len],
    )
}

fn append_range(g: &GroupLog, lo: u64, hi: u64, term: u64) {
    let batch: Vec<Entry> = (lo..hi).map(|i| entry(g.id(), i, term)).collect();
    for chunk in batch.chunks(5) {
        g.append(chunk).unwrap();
    }
}

fn all_entries(g: &GroupLog) -> Vec<Entry> {
    g.entries(g.first_index(), g.last_index() + 1, u64::MAX)
        .unwrap()
}

/// Everything a group holds that the log promises to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    first_index: u64,
    entries: Vec<Entry>,
    hard_state: HardState,
}

fn seen(log: &SharedLog) -> BTreeMap<u64, Seen> {
    log.group_ids()
        .into_iter()
        .map(|id| {
            let g = log.group(id).unwrap();
            let s = Seen {
                first_index: g.first_index(),
                entries: all_entries(&g),
                hard_state: g.hard_state(),
            };
            (id, s)
        })
        .collect()
}

#[test]
fn the_logs_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SharedLog>();
    send_sync::<GroupLog>();
}

#[test]
fn appends_of_many_groups_read_back_across_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let groups: Vec<GroupLog> = (1..=5).map(|id| log.group(id * 10).unwrap()).collect();
    for lo in (1..60).step_by(6) {
        for g in &groups {
            append_range(g, lo, lo + 6, 1);
        }
    }
    let before = seen(&log);
    assert_eq!(log.group_ids(), vec![10, 20, 30, 40, 50]);
    for (id, s) in &before {
        let want: Vec<Entry> = (1..61).map(|i| entry(*id, i, 1)).collect();
        assert_eq!(s.entries, want, "group {id}");
    }
    assert!(log.stats().journal_segments > 3);
    let g = &groups[2];
    assert_eq!(g.entries(20, 40, 0).unwrap(), vec![entry(30, 20, 1)]);
    drop(groups);
    log.close().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    assert_eq!(seen(&log), before);
}

#[test]
fn entries_staged_for_the_next_fsync_round_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), with_durability(Durability::Always)).unwrap();
    let g = log.group(1).unwrap();
    append_range(&g, 1, 4, 1);
    // Appends now stay in memory for the next round (until the journal's fsync thread runs
    // one, which it may do at any moment): a read first takes the segment's handle for
    // entries written, then must not read entries staged behind them through it.
    log.journal().stage_appends(true);
    append_range(&g, 4, 9, 1);
    let want: Vec<Entry> = (1..9).map(|i| entry(1, i, 1)).collect();
    assert_eq!(g.entries(1, 3, u64::MAX).unwrap(), want[..2]);
    assert_eq!(all_entries(&g), want);
    log.journal().stage_appends(true);
    append_range(&g, 9, 12, 1);
    assert_eq!(g.entries(8, 12, u64::MAX).unwrap().len(), 4);
    log.journal().stage_appends(false);
}

#[test]
fn byte_bound_limits_reads_as_wal_entries_does() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let g = log.group(1).unwrap();
    append_range(&g, 1, 50, 1);
    assert_eq!(g.entries(10, 50, 1).unwrap().len(), 1);
    let some = g.entries(10, 50, 300).unwrap();
    let bytes = |es: &[Entry]| -> usize {
        es.iter()
            .map(|e| e.payload.len() + crate::RECORD_HEADER_BYTES)
            .sum()
    };
    assert!(bytes(&some) <= 300 && !some.is_empty());
    let next = entry(1, 10 + some.len() as u64, 1);
    assert!(bytes(&some) + bytes(&[next]) > 300);
    assert!(g.entries(10, 10, 100).unwrap().is_empty());
    assert!(matches!(
        g.entries(10, 51, 100),
        Err(Error::Unavailable { index: 50, .. })
    ));
}

#[test]
fn every_limit_is_checked_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let g = log.group(1).unwrap();
    append_range(&g, 1, 5, 1);
    let written = log.stats().appended_bytes;
    let big = Entry::new(6, 1, 0, vec![0u8; 1025]);
    assert!(matches!(
        g.append(&[entry(1, 5, 1), big]),
        Err(Error::RecordTooLarge {
            index: 6,
            bytes: 1025,
            max: 1024
        })
    ));
    let too_many: Vec<Entry> = (5..10)
        .map(|i| Entry::new(i, 1, 0, vec![0; 1000]))
        .collect();
    assert!(matches!(
        g.append(&too_many),
        Err(Error::BatchTooLarge { .. })
    ));
    assert!(matches!(
        g.append(&[entry(1, 6, 1)]),
        Err(Error::NonContiguousAppend {
            expected: 5,
            found: 6
        })
    ));
    assert!(matches!(
        g.append(&[entry(1, 5, 1), entry(1, 7, 1)]),
        Err(Error::NonContiguousAppend {
            expected: 6,
            found: 7
        })
    ));
    assert!(matches!(
        g.truncate_prefix(INDEX_MAX),
        Err(Error::IndexTooLarge { .. })
    ));
    assert_eq!(g.last_index(), 4);
    assert_eq!(log.stats().appended_bytes, written, "nothing was written");
    let far = log.group(2).unwrap();
    far.truncate_prefix(INDEX_MAX - 2).unwrap();
    assert!(matches!(
        far.append(&[entry(2, INDEX_MAX - 1, 1), entry(2, INDEX_MAX, 1)]),
        Err(Error::IndexTooLarge { .. })
    ));
    far.append(&[entry(2, INDEX_MAX - 1, 1)]).unwrap();
    drop((g, far));
    log.close().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    assert_eq!(log.group(1).unwrap().last_index(), 4);
    assert_eq!(log.group(2).unwrap().last_index(), INDEX_MAX - 1);
}

#[test]
fn options_that_leave_no_room_for_an_entry_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options();
    o.journal.record_bytes_max = 4096;
    assert!(matches!(
        SharedLog::open(dir.path(), o),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn truncations_and_hard_state_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let a = log.group(1).unwrap();
    let b = log.group(2).unwrap();
    append_range(&a, 1, 40, 1);
    append_range(&b, 1, 40, 1);
    a.truncate_suffix(30).unwrap();
    append_range(&a, 30, 35, 2);
    a.truncate_prefix(9).unwrap();
    b.truncate_prefix(100).unwrap();
    let hs = HardState {
        term: 2,
        vote: Some(3),
        commit: 20,
    };
    a.set_hard_state(hs).unwrap();
    assert_eq!((a.first_index(), a.last_index()), (10, 34));
    assert_eq!((b.first_index(), b.last_index()), (101, 100));
    assert_eq!(a.term_at(29).unwrap(), 1);
    assert_eq!(a.term_at(30).unwrap(), 2);
    assert!(matches!(a.term_at(9), Err(Error::Compacted { .. })));
    assert!(matches!(a.term_at(35), Err(Error::Unavailable { .. })));
    assert!(matches!(
        a.truncate_suffix(5),
        Err(Error::Compacted {
            index: 5,
            first_index: 10
        })
    ));
    assert!(matches!(
        b.append(&[entry(2, 100, 1)]),
        Err(Error::NonContiguousAppend {
            expected: 101,
            found: 100
        })
    ));
    b.append(&[entry(2, 101, 3)]).unwrap();
    let before = seen(&log);
    drop((a, b));
    drop(log);
    let log = SharedLog::open(dir.path(), options()).unwrap();
    assert_eq!(seen(&log), before);
    let a = log.group(1).unwrap();
    assert_eq!(a.hard_state(), hs);
    let mut want: Vec<Entry> = (10..30).map(|i| entry(1, i, 1)).collect();
    want.extend((30..35).map(|i| entry(1, i, 2)));
    assert_eq!(all_entries(&a), want);
}

#[test]
fn one_fsync_makes_every_group_durable_and_each_group_hears_its_own_index() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let a = log.group(1).unwrap();
    let b = log.group(2).unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    {
        let heard = Arc::clone(&heard);
        b.on_durable(move |i| heard.lock().unwrap().push(i));
    }
    append_range(&a, 1, 11, 1);
    append_range(&b, 1, 6, 1);
    assert_eq!((a.durable_index(), b.durable_index()), (0, 0));
    let fsyncs = log.stats().fsyncs;
    assert!(a.wait_durable(10).unwrap() >= 10);
    assert_eq!(b.durable_index(), 5, "b's appends came before a's last");
    assert_eq!(*heard.lock().unwrap(), vec![5]);
    assert_eq!(log.stats().fsyncs, fsyncs + 1);
    a.truncate_suffix(6).unwrap();
    assert_eq!(a.durable_index(), 5);
    append_range(&a, 6, 8, 2);
    assert_eq!(a.durable_index(), 5);
    assert_eq!(a.sync().unwrap(), 7);
    assert_eq!(b.durable_index(), 5);
    assert_eq!(*heard.lock().unwrap(), vec![5], "b did not change");
}

#[test]
fn always_makes_appends_durable_even_if_nobody_waits() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), with_durability(Durability::Always)).unwrap();
    let g = log.group(1).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    g.on_durable(move |i| {
        let _ = tx.send(i);
    });
    append_range(&g, 1, 4, 1);
    // The journal's fsync thread runs the round: no one here waits for it.
    while rx.recv_timeout(Duration::from_secs(10)).unwrap() < 3 {}
    assert_eq!(g.durable_index(), 3);
}

#[test]
fn waiting_for_an_index_that_a_truncation_removes_fails_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    // An interval far longer than the test, so nothing becomes durable by itself.
    let durability = Durability::Interval(Duration::from_secs(3600));
    let log = SharedLog::open(dir.path(), with_durability(durability)).unwrap();
    let g = log.group(1).unwrap();
    append_range(&g, 1, 11, 1);
    let waiter = {
        let g = g.clone();
        std::thread::spawn(move || g.wait_durable(10))
    };
    // Whether the waiter is parked by now or not, it must come back with an error.
    g.truncate_suffix(5).unwrap();
    match waiter.join().unwrap() {
        Err(Error::Unavailable {
            index: 10,
            last_index: 4,
        }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        g.wait_durable(11),
        Err(Error::Unavailable { index: 11, .. })
    ));
    assert_eq!(g.wait_durable(4).unwrap(), 4);
}

#[test]
fn a_removed_group_is_gone_with_its_directory_and_its_handles_fail() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let g = log.group(7).unwrap();
    let other = log.group(8).unwrap();
    append_range(&g, 1, 20, 1);
    append_range(&other, 1, 5, 1);
    let group_dir = g.dir().to_path_buf();
    assert!(group_dir.is_dir());
    log.remove_group(7).unwrap();
    assert!(!group_dir.exists());
    assert_eq!(log.group_ids(), vec![8]);
    assert!(matches!(
        g.append(&[entry(7, 20, 1)]),
        Err(Error::GroupRemoved { group: 7 })
    ));
    assert!(matches!(
        g.entries(1, 2, 10),
        Err(Error::GroupRemoved { group: 7 })
    ));
    assert!(matches!(g.wait_durable(1), Err(Error::GroupRemoved { .. })));
    log.remove_group(7).unwrap();
    drop((g, other));
    drop(log);
    let log = SharedLog::open(dir.path(), options()).unwrap();
    assert_eq!(log.group_ids(), vec![8]);
    let again = log.group(7).unwrap();
    assert_eq!((again.first_index(), again.last_index()), (1, 0));
    assert!(again.dir().is_dir());
}

#[test]
fn snapshots_belong_to_their_group_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let a = log.group(1).unwrap();
    let b = log.group(2).unwrap();
    append_range(&a, 1, 10, 1);
    let meta = SnapshotMeta {
        last_index: 9,
        last_term: 1,
        config: bytes::Bytes::from_static(b"cfg"),
    };
    let mut w = a.snapshot_writer(meta.clone()).unwrap();
    std::io::Write::write_all(&mut w, b"state machine").unwrap();
    w.finish().unwrap();
    a.truncate_prefix(9).unwrap();
    assert_eq!(a.latest_snapshot(), Some(meta.clone()));
    assert_eq!(b.latest_snapshot(), None);
    drop((a, b));
    drop(log);
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let a = log.group(1).unwrap();
    assert_eq!(a.latest_snapshot(), Some(meta));
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut a.open_snapshot().unwrap().unwrap(), &mut data).unwrap();
    assert_eq!(data, b"state machine");
    assert_eq!(a.first_index(), 10);
    assert!(log.group(2).unwrap().open_snapshot().unwrap().is_none());
}

#[test]
fn an_unknown_layout_version_or_a_foreign_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SharedLog::open(dir.path(), options()).unwrap());
    LAYOUT_FORMAT
        .write(dir.path(), LAYOUT_FILE, &2u64.to_le_bytes())
        .unwrap();
    match SharedLog::open(dir.path(), options()) {
        Err(Error::Layout { path, reason }) => {
            assert_eq!(path, dir.path().join(LAYOUT_FILE));
            assert!(reason.contains("version 2"), "{reason}");
        }
        other => panic!("expected a layout error, got {other:?}"),
    }
    let plain = tempfile::tempdir().unwrap();
    drop(Wal::open(plain.path(), Options::default()).unwrap());
    assert!(matches!(
        SharedLog::open(plain.path(), options()),
        Err(Error::Layout { .. })
    ));
}

/// Several groups over many segments, some truncated either way, one removed.
fn busy_log(dir: &Path) -> BTreeMap<u64, Seen> {
    let log = SharedLog::open(dir, options()).unwrap();
    let groups: Vec<GroupLog> = (1..=4).map(|id| log.group(id).unwrap()).collect();
    for round in 0..12u64 {
        for g in &groups {
            let next = g.last_index() + 1;
            append_range(g, next, next + 4, 1 + round / 4);
        }
        if round % 3 == 0 {
            groups[1]
                .truncate_prefix(groups[1].last_index() - 2)
                .unwrap();
        }
        if round % 4 == 1 {
            groups[2]
                .truncate_suffix(groups[2].last_index() - 1)
                .unwrap();
        }
    }
    groups[3]
        .set_hard_state(HardState {
            term: 3,
            vote: None,
            commit: 7,
        })
        .unwrap();
    log.remove_group(4).unwrap();
    drop(groups);
    let s = seen(&log);
    log.close().unwrap();
    s
}

#[test]
fn collection_keeps_every_group_and_shrinks_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let before = busy_log(dir.path());
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let bytes = log.stats().journal_bytes;
    let done = log.collect().unwrap();
    assert!(done.segments > 0 && done.rewritten_bytes > 0, "{done:?}");
    let stats = log.stats();
    assert!(stats.journal_bytes < bytes, "{stats:?}");
    assert_eq!(stats.rewritten_bytes, done.rewritten_bytes);
    assert_eq!(seen(&log), before);
    drop(log);
    let log = SharedLog::open(dir.path(), options()).unwrap();
    assert_eq!(seen(&log), before);
}

/// Runs a collection with a crash injected after `steps` crash points (of the shared log's
/// own steps, or of the journal's inside its prefix truncation), then reopens. `None` once
/// the collection completes without reaching the crash point.
fn collect_crashing(dir: &Path, steps: u32, in_journal: bool) -> Option<SharedLog> {
    let log = SharedLog::open(dir, options()).unwrap();
    if in_journal {
        log.journal().crash_after_steps(steps);
    } else {
        log.crash_after_steps(steps);
    }
    let crashed = log.collect().is_err();
    drop(log);
    crashed.then(|| SharedLog::open(dir, options()).unwrap())
}

#[test]
fn collection_interrupted_at_any_step_leaves_every_group_as_it_was() {
    let template = tempfile::tempdir().unwrap();
    let before = busy_log(template.path());
    for in_journal in [false, true] {
        for steps in 0.. {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(template.path(), dir.path());
            let Some(log) = collect_crashing(dir.path(), steps, in_journal) else {
                assert!(steps > 2, "collection passes several crash points");
                break;
            };
            assert_eq!(
                seen(&log),
                before,
                "crash at step {steps} (journal: {in_journal})"
            );
            // Whatever the step, the log collects and works on.
            log.collect().unwrap();
            assert_eq!(seen(&log), before, "after the crash at step {steps}");
            let g = log.group(1).unwrap();
            let next = g.last_index() + 1;
            g.append(&[entry(1, next, 9)]).unwrap();
            drop(g);
            drop(log);
            let log = SharedLog::open(dir.path(), options()).unwrap();
            assert_eq!(log.group(1).unwrap().term_at(next).unwrap(), 9);
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn every_bit_flip_in_an_entry_is_caught_by_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let g = log.group(3).unwrap();
    append_range(&g, 1, 12, 1);
    log.sync().unwrap();
    let loc: Loc = g.group.lock().locs[6];
    let file = log.journal().segment_file(loc.journal_index).unwrap();
    let original = {
        let mut b = vec![0u8; loc.len as usize];
        file.file.read_exact_at(&mut b, loc.offset).unwrap();
        b
    };
    for byte in 0..original.len() {
        let mut b = original.clone();
        b[byte] ^= 1 << (byte % 8);
        file.file.write_all_at(&b, loc.offset).unwrap();
        match g.entries(7, 8, u64::MAX) {
            Err(Error::Corrupt { path, offset, .. }) => {
                assert_eq!(path, file.path, "byte {byte}");
                assert!(
                    (loc.offset..loc.offset + u64::from(loc.len)).contains(&offset),
                    "byte {byte}: offset {offset}"
                );
            }
            other => panic!("byte {byte}: expected corruption, got {other:?}"),
        }
        // Its neighbours, read alone, are untouched.
        assert_eq!(g.entries(6, 7, u64::MAX).unwrap(), vec![entry(3, 6, 1)]);
    }
    file.file.write_all_at(&original, loc.offset).unwrap();
    assert_eq!(g.entries(7, 8, u64::MAX).unwrap(), vec![entry(3, 7, 1)]);
}

/// Appends raw journal records after what `SharedLog` wrote in `dir`, as a bug or a
/// hand could: each with a valid journal checksum.
fn append_raw(dir: &Path, records: &[(u8, Vec<u8>)]) -> (std::path::PathBuf, Vec<u64>) {
    let journal = Wal::open(dir.join("journal"), options().journal_options()).unwrap();
    let mut offsets = Vec::new();
    for (kind, payload) in records {
        let index = journal.last_index() + 1;
        let e = Entry::new(index, 0, *kind, payload.clone());
        let (_, offset) = journal.append_located(&[e]).unwrap();
        offsets.push(offset);
    }
    let path = journal.segment_path(journal.last_index()).unwrap();
    journal.close().unwrap();
    (path, offsets)
}

#[test]
fn a_record_that_does_not_decode_is_corruption_naming_file_and_offset() {
    let header = crate::RECORD_HEADER_BYTES as u64;
    for (kind, payload, within) in [
        (KIND_APPEND, vec![1, 2, 3], 0),
        (9, op::encode_remove(1), 0),
        (KIND_STATE, op::encode_state(1, 0, &HardState::default()), 8),
        (KIND_APPEND, op::encode_append(1, 1, &[entry(1, 2, 1)]), 20),
    ] {
        let dir = tempfile::tempdir().unwrap();
        SharedLog::open(dir.path(), options())
            .unwrap()
            .group(1)
            .unwrap();
        let (path, offsets) = append_raw(dir.path(), &[(kind, payload)]);
        match SharedLog::open(dir.path(), options()) {
            Err(Error::Corrupt {
                path: p, offset, ..
            }) => {
                assert_eq!((p, offset), (path, offsets[0] + header + within));
            }
            other => panic!("kind {kind}: expected corruption, got {other:?}"),
        }
    }
}

#[test]
fn a_group_whose_entries_are_not_contiguous_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    drop(SharedLog::open(dir.path(), options()).unwrap());
    let (path, _) = append_raw(
        dir.path(),
        &[
            (KIND_STATE, op::encode_state(5, 1, &HardState::default())),
            (KIND_APPEND, op::encode_append(5, 3, &[entry(5, 3, 1)])),
        ],
    );
    match SharedLog::open(dir.path(), options()) {
        Err(Error::Corrupt {
            path: p, reason, ..
        }) => {
            assert_eq!(p, path);
            assert!(reason.contains("group 5"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    drop(SharedLog::open(dir.path(), options()).unwrap());
    append_raw(
        dir.path(),
        &[(KIND_APPEND, op::encode_append(6, 1, &[entry(6, 1, 1)]))],
    );
    match SharedLog::open(dir.path(), options()) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("no state"), "{reason}"),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn an_idle_group_costs_well_under_a_kibibyte() {
    use std::mem::size_of;
    let dir = tempfile::tempdir().unwrap();
    let log = SharedLog::open(dir.path(), options()).unwrap();
    let g = log.group(u64::MAX).unwrap();
    // The group's allocation (with its Arc counts), its snapshots' (with the directory
    // path), and its slot in the map of groups (with hashbrown's control byte, at the
    // worst load factor of 7/8).
    let path_bytes = g.dir().as_os_str().len();
    let bytes = 16
        + size_of::<Group>()
        + 16
        + size_of::<Snapshots>()
        + path_bytes
        + (size_of::<(u64, Arc<Group>)>() + 1) * 8 / 7;
    assert!(bytes < 512, "{bytes} bytes per idle group");
    assert_eq!(size_of::<Loc>(), 32, "bytes per live entry");
}
