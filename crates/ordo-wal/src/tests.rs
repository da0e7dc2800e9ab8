//! Behaviour of `Wal` as a whole, including crashes injected inside truncations.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{Durability, Entry, Error, HardState, Options, SnapshotMeta, Wal, RECORD_HEADER_BYTES};

fn small() -> Options {
    Options {
        segment_bytes_max: 4096,
        index_interval_bytes: 200,
        record_bytes_max: 2048,
        durability: Durability::Never,
    }
}

fn entry(index: u64, term: u64) -> Entry {
    let payload: Vec<u8> = (0..(index % 97) as u8 + 3)
        .map(|b| b ^ index as u8)
        .collect();
    Entry::new(index, term, (index % 3) as u8, payload)
}

fn append_range(wal: &Wal, lo: u64, hi: u64, term: u64) {
    let batch: Vec<Entry> = (lo..hi).map(|i| entry(i, term)).collect();
    for chunk in batch.chunks(7) {
        wal.append(chunk).unwrap();
    }
}

fn all_entries(wal: &Wal) -> Vec<Entry> {
    wal.entries(wal.first_index(), wal.last_index() + 1, u64::MAX)
        .unwrap()
}

/// The sorted names of the files in `dir` that `keep` accepts.
fn files_where(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| keep(n))
        .collect();
    v.sort();
    v
}

fn segment_files(dir: &Path) -> Vec<String> {
    files_where(dir, |n| n.ends_with(".log"))
}

#[test]
fn appended_entries_read_back_across_many_segments_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (1, 0));
    append_range(&wal, 1, 300, 1);
    let expected: Vec<Entry> = (1..300).map(|i| entry(i, 1)).collect();
    assert_eq!(all_entries(&wal), expected);
    assert!(segment_files(dir.path()).len() > 3);
    assert_eq!(segment_files(dir.path())[0], "00000000000000000001.log");
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(all_entries(&wal), expected);
    assert_eq!(
        wal.entries(150, 152, 0).unwrap(),
        expected[149..150].to_vec()
    );
}

#[test]
fn byte_bound_limits_reads_but_returns_at_least_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 50, 1);
    assert_eq!(wal.entries(10, 50, 1).unwrap().len(), 1);
    let some = wal.entries(10, 50, 300).unwrap();
    let bytes: usize = some
        .iter()
        .map(|e| e.payload.len() + RECORD_HEADER_BYTES)
        .sum();
    assert!(bytes <= 300 && !some.is_empty());
    let next = 10 + some.len() as usize;
    assert!(bytes + entry(next as u64, 1).payload.len() + RECORD_HEADER_BYTES > 300);
    assert!(wal.entries(10, 10, 100).unwrap().is_empty());
    assert!(matches!(
        wal.entries(10, 51, 100),
        Err(Error::Unavailable { index: 50, .. })
    ));
}

#[test]
fn oversize_entry_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 5, 1);
    let big = Entry::new(6, 1, 0, vec![0u8; 2049]);
    let err = wal.append(&[entry(5, 1), big]).unwrap_err();
    assert!(matches!(
        err,
        Error::RecordTooLarge {
            index: 6,
            bytes: 2049,
            max: 2048
        }
    ));
    assert_eq!(wal.last_index(), 4);
    wal.append(&[Entry::new(5, 1, 0, vec![1u8; 2048])]).unwrap();
    let too_many: Vec<Entry> = (6..10)
        .map(|i| Entry::new(i, 1, 0, vec![0u8; 2000]))
        .collect();
    assert!(matches!(
        wal.append(&too_many),
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(wal.last_index(), 5);
    drop(wal);
    assert_eq!(Wal::open(dir.path(), small()).unwrap().last_index(), 5);
}

#[test]
fn append_with_wrong_index_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert!(matches!(
        wal.append(&[entry(2, 1)]),
        Err(Error::NonContiguousAppend {
            expected: 1,
            found: 2
        })
    ));
    assert!(matches!(
        wal.append(&[entry(1, 1), entry(3, 1)]),
        Err(Error::NonContiguousAppend {
            expected: 2,
            found: 3
        })
    ));
    assert_eq!(wal.last_index(), 0);
}

#[test]
fn term_at_follows_term_changes_within_and_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 40, 1);
    append_range(&wal, 40, 41, 2);
    append_range(&wal, 41, 120, 5);
    for (i, t) in [(1, 1), (39, 1), (40, 2), (41, 5), (119, 5)] {
        assert_eq!(wal.term_at(i).unwrap(), t, "index {i}");
    }
    assert!(matches!(wal.term_at(0), Err(Error::Compacted { .. })));
    assert!(matches!(wal.term_at(120), Err(Error::Unavailable { .. })));
}

#[test]
fn truncate_suffix_across_segments_then_append_new_terms() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 200, 1);
    let before = segment_files(dir.path()).len();
    wal.truncate_suffix(60).unwrap();
    assert_eq!(wal.last_index(), 59);
    assert!(segment_files(dir.path()).len() < before);
    append_range(&wal, 60, 80, 2);
    assert_eq!(wal.term_at(59).unwrap(), 1);
    assert_eq!(wal.term_at(60).unwrap(), 2);
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut expected: Vec<Entry> = (1..60).map(|i| entry(i, 1)).collect();
    expected.extend((60..80).map(|i| entry(i, 2)));
    assert_eq!(all_entries(&wal), expected);
    assert!(!dir.path().join("truncate").exists());
}

#[test]
fn truncate_prefix_keeps_the_tail_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 200, 1);
    wal.truncate_prefix(90).unwrap();
    assert_eq!(wal.first_index(), 91);
    assert!(matches!(
        wal.entries(90, 92, 10),
        Err(Error::Compacted {
            index: 90,
            first_index: 91
        })
    ));
    assert!(!segment_files(dir.path()).contains(&"00000000000000000001.log".to_string()));
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (91, 199));
    assert_eq!(
        all_entries(&wal),
        (91..200).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
}

#[test]
fn truncate_prefix_past_the_end_restarts_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 30, 1);
    wal.truncate_prefix(500).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (501, 500));
    assert!(segment_files(dir.path()).is_empty());
    assert!(wal.durable_index() >= 500);
    assert!(matches!(
        wal.append(&[entry(31, 1)]),
        Err(Error::NonContiguousAppend { expected: 501, .. })
    ));
    append_range(&wal, 501, 510, 3);
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (501, 509));
    assert_eq!(wal.term_at(505).unwrap(), 3);
}

#[test]
fn always_policy_makes_appends_durable_and_tells_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: Durability::Always,
        ..small()
    };
    let wal = Wal::open(dir.path(), opts).unwrap();
    let heard = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&heard);
    wal.on_durable(move |i| {
        h.fetch_max(i, Ordering::SeqCst);
    });
    let last = wal.append(&[entry(1, 1), entry(2, 1)]).unwrap();
    assert_eq!(wal.wait_durable(last).unwrap(), 2);
    assert!(wal.durable_index() >= 2);
    // The listener runs right after the watermark moves; sync() waits for a later round.
    append_range(&wal, 3, 4, 1);
    wal.sync().unwrap();
    assert!(heard.load(Ordering::SeqCst) >= 2);
    assert!(matches!(
        wal.wait_durable(10),
        Err(Error::Unavailable { .. })
    ));
}

#[test]
fn never_and_interval_policies_reach_durability_when_waited_for() {
    for durability in [
        Durability::Never,
        Durability::Interval(Duration::from_millis(2)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(
            dir.path(),
            Options {
                durability,
                ..small()
            },
        )
        .unwrap();
        append_range(&wal, 1, 100, 1);
        assert_eq!(wal.wait_durable(99).unwrap(), 99, "{durability:?}");
    }
}

#[test]
fn truncate_suffix_lowers_the_durable_index() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 20, 1);
    wal.sync().unwrap();
    wal.truncate_suffix(10).unwrap();
    assert_eq!(wal.durable_index(), 9);
    append_range(&wal, 10, 12, 2);
    assert_eq!(wal.sync().unwrap(), 11);
}

#[test]
fn many_threads_append_and_wait_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: Durability::Always,
        ..small()
    };
    let wal = Arc::new(Wal::open(dir.path(), opts).unwrap());
    let order = Arc::new(std::sync::Mutex::new(()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let wal = Arc::clone(&wal);
            let order = Arc::clone(&order);
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let index = {
                        let _g = order.lock().unwrap();
                        let i = wal.last_index() + 1;
                        wal.append(&[entry(i, 1)]).unwrap()
                    };
                    assert!(wal.wait_durable(index).unwrap() >= index);
                    let read = wal.entries(index, index + 1, 1).unwrap();
                    assert_eq!(read, vec![entry(index, 1)]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(wal.last_index(), 200);
    assert_eq!(
        all_entries(&wal),
        (1..201).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
}

#[test]
fn hard_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.hard_state(), HardState::default());
    let hs = HardState {
        term: 4,
        vote: Some(3),
        commit: 17,
    };
    wal.set_hard_state(hs).unwrap();
    drop(wal);
    assert_eq!(Wal::open(dir.path(), small()).unwrap().hard_state(), hs);
}

fn write_snapshot(wal: &Wal, index: u64, term: u64, data: &[u8]) -> SnapshotMeta {
    let meta = SnapshotMeta {
        last_index: index,
        last_term: term,
        config: Bytes::from_static(b"voters=1,2,3"),
    };
    let mut w = wal.snapshot_writer(meta).unwrap();
    for chunk in data.chunks(1000) {
        w.write_all(chunk).unwrap();
    }
    w.finish().unwrap()
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    files_where(dir, |n| n.starts_with("snap-"))
}

#[test]
fn newest_snapshot_is_installed_read_back_and_older_ones_removed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert!(wal.latest_snapshot().is_none());
    assert!(wal.open_snapshot().unwrap().is_none());
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    write_snapshot(&wal, 10, 1, b"old");
    let meta = write_snapshot(&wal, 50, 2, &data);
    assert_eq!(wal.latest_snapshot(), Some(meta.clone()));
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    // An unfinished snapshot is invisible and leaves nothing behind.
    let mut w = wal
        .snapshot_writer(SnapshotMeta {
            last_index: 90,
            last_term: 3,
            config: Bytes::new(),
        })
        .unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.latest_snapshot(), Some(meta.clone()));
    let mut r = wal.open_snapshot().unwrap().unwrap();
    assert_eq!(r.meta(), &meta);
    let mut back = Vec::new();
    r.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(
        snapshot_files(dir.path()),
        vec![format!("snap-{:020}-{:020}.snap", 50, 2)]
    );
}

#[test]
fn snapshots_finished_at_once_leave_the_newest_installed() {
    // The runtime's own snapshot and one received from the leader may finish together;
    // whatever the interleaving, the newest must remain on disk, and only it.
    let dir = tempfile::tempdir().unwrap();
    let wal = std::sync::Arc::new(Wal::open(dir.path(), small()).unwrap());
    for round in 0..20u64 {
        let writers = 6u64;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(writers as usize));
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let wal = std::sync::Arc::clone(&wal);
                let barrier = std::sync::Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let meta = SnapshotMeta {
                        last_index: round * 100 + w + 1,
                        last_term: 1,
                        config: Bytes::new(),
                    };
                    let mut writer = wal.snapshot_writer(meta).unwrap();
                    writer.write_all(b"state").unwrap();
                    barrier.wait();
                    writer.finish().unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let newest = round * 100 + writers;
        assert_eq!(
            snapshot_files(dir.path()),
            vec![format!("snap-{newest:020}-{:020}.snap", 1)],
            "round {round}"
        );
        assert_eq!(wal.latest_snapshot().map(|m| m.last_index), Some(newest));
    }
}

#[test]
fn a_snapshot_larger_than_its_fsync_step_reads_back_whole() {
    // Written in odd-sized pieces, so the incremental fsyncs fall mid-piece.
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let data: Vec<u8> = (0..(9u32 << 20) + 12_345)
        .map(|i| (i % 251) as u8)
        .collect();
    let meta = SnapshotMeta {
        last_index: 7,
        last_term: 2,
        config: Bytes::new(),
    };
    let mut w = wal.snapshot_writer(meta.clone()).unwrap();
    for piece in data.chunks(65_521) {
        w.write_all(piece).unwrap();
    }
    assert_eq!(w.finish().unwrap(), meta);
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    let mut back = Vec::new();
    wal.open_snapshot()
        .unwrap()
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data, "the snapshot read back differs");
}

#[test]
fn damaged_snapshot_data_is_reported_by_name_when_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let data = vec![42u8; 5000];
    write_snapshot(&wal, 7, 1, &data);
    drop(wal);
    let path = dir.path().join(&snapshot_files(dir.path())[0]);
    let good = fs::read(&path).unwrap();
    for at in [0, 9, 30, 50, 2000, good.len() - 10, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x04;
        fs::write(&path, &bad).unwrap();
        let outcome = Wal::open(dir.path(), small()).and_then(|wal| {
            let mut r = wal.open_snapshot()?.expect("installed");
            let mut sink = Vec::new();
            r.read_to_end(&mut sink).map_err(|e| {
                let inner = e.into_inner().expect("wraps the error");
                *inner.downcast::<Error>().expect("an ordo-wal error")
            })
        });
        match outcome {
            Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path, "byte {at}"),
            other => panic!("byte {at}: expected corruption, got {other:?}"),
        }
    }
    fs::write(&path, &good[..good.len() - 3]).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), small()),
        Err(Error::Corrupt { .. })
    ));
}

/// Runs `op` with a crash injected after `steps` crash points, then reopens the directory.
/// Returns `None` once `op` completes without reaching the crash point.
fn crash_during(dir: &Path, steps: u32, op: impl FnOnce(&Wal) -> crate::Result<()>) -> Option<Wal> {
    let wal = Wal::open(dir, small()).unwrap();
    wal.crash_after_steps(steps);
    let crashed = op(&wal).is_err();
    drop(wal);
    crashed.then(|| Wal::open(dir, small()).unwrap())
}

#[test]
fn truncate_suffix_interrupted_at_any_step_leaves_old_or_new_log() {
    let old: Vec<Entry> = (1..200).map(|i| entry(i, 1)).collect();
    let new: Vec<Entry> = old[..49].to_vec();
    for steps in 0.. {
        let dir = tempfile::tempdir().unwrap();
        append_range(&Wal::open(dir.path(), small()).unwrap(), 1, 200, 1);
        let Some(wal) = crash_during(dir.path(), steps, |w| w.truncate_suffix(50)) else {
            assert!(steps > 3, "the truncation passes several crash points");
            break;
        };
        let got = all_entries(&wal);
        assert!(
            got == old || got == new,
            "step {steps}: {} entries",
            got.len()
        );
        if steps > 0 {
            assert_eq!(
                got, new,
                "step {steps}: after the intent is durable the cut completes"
            );
        }
        // Whatever state it is in, the log keeps working.
        let next = wal.last_index() + 1;
        wal.append(&[entry(next, 2)]).unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), small()).unwrap();
        assert_eq!(wal.term_at(next).unwrap(), 2);
    }
}

#[test]
fn truncate_prefix_interrupted_at_any_step_leaves_old_or_new_log() {
    for steps in 0.. {
        let dir = tempfile::tempdir().unwrap();
        append_range(&Wal::open(dir.path(), small()).unwrap(), 1, 200, 1);
        let Some(wal) = crash_during(dir.path(), steps, |w| w.truncate_prefix(120)) else {
            assert!(steps > 2, "the truncation passes several crash points");
            break;
        };
        let first = if steps == 0 { 1 } else { 121 };
        assert_eq!(
            (wal.first_index(), wal.last_index()),
            (first, 199),
            "step {steps}"
        );
        assert_eq!(
            all_entries(&wal),
            (first..200).map(|i| entry(i, 1)).collect::<Vec<_>>()
        );
        if steps > 0 {
            assert!(!segment_files(dir.path()).contains(&"00000000000000000001.log".into()));
        }
    }
}

#[test]
fn truncate_prefix_past_the_end_interrupted_leaves_old_or_empty_log() {
    for steps in 0.. {
        let dir = tempfile::tempdir().unwrap();
        append_range(&Wal::open(dir.path(), small()).unwrap(), 1, 100, 1);
        let Some(wal) = crash_during(dir.path(), steps, |w| w.truncate_prefix(300)) else {
            break;
        };
        let state = (wal.first_index(), wal.last_index());
        assert!(
            state == (1, 99) || state == (301, 300),
            "step {steps}: {state:?}"
        );
    }
}

#[test]
fn stray_temp_files_and_foreign_names_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    append_range(&Wal::open(dir.path(), small()).unwrap(), 1, 10, 1);
    fs::write(dir.path().join("hardstate.tmp"), b"half written").unwrap();
    fs::write(dir.path().join("start.tmp"), b"x").unwrap();
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.last_index(), 9);
    assert!(!dir.path().join("hardstate.tmp").exists());
    assert!(dir.path().join("notes.txt").exists());
}

#[test]
fn a_gap_between_segments_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    append_range(&Wal::open(dir.path(), small()).unwrap(), 1, 300, 1);
    let files = segment_files(dir.path());
    let middle = dir.path().join(&files[files.len() / 2]);
    fs::remove_file(&middle).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(Error::Gap {
            path, offset: 0, ..
        }) => {
            assert_eq!(path, dir.path().join(&files[files.len() / 2 + 1]))
        }
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[test]
fn a_missing_first_segment_is_a_gap_before_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    append_range(&Wal::open(dir.path(), small()).unwrap(), 1, 300, 1);
    fs::remove_file(dir.path().join(&segment_files(dir.path())[0])).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), small()),
        Err(Error::Gap { expected: 1, .. })
    ));
}

#[test]
fn invalid_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        Options {
            segment_bytes_max: 10,
            ..small()
        },
        Options {
            record_bytes_max: 0,
            ..small()
        },
        Options {
            index_interval_bytes: 0,
            ..small()
        },
        Options {
            durability: Durability::Interval(Duration::ZERO),
            ..small()
        },
    ] {
        assert!(matches!(
            Wal::open(dir.path(), bad),
            Err(Error::InvalidOptions(_))
        ));
    }
}

#[test]
fn readers_concurrent_with_an_appender_see_a_contiguous_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: Durability::Always,
        ..small()
    };
    let wal = Arc::new(Wal::open(dir.path(), opts.clone()).unwrap());
    let count = 1200u64;
    let appender = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            for i in 1..=count {
                // Terms change every 50 entries, so readers also cross term runs.
                assert_eq!(wal.append(&[entry(i, 1 + i / 50)]).unwrap(), i);
                if i % 10 == 0 {
                    assert!(wal.wait_durable(i).unwrap() >= i);
                }
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let last = wal.last_index();
                    if last == 0 {
                        continue;
                    }
                    let got = wal.entries(1, last + 1, u64::MAX).unwrap();
                    assert_eq!(got.len() as u64, last);
                    for (e, i) in got.iter().zip(1..) {
                        assert_eq!(e, &entry(i, 1 + i / 50));
                        assert_eq!(wal.term_at(i).unwrap(), e.term);
                    }
                }
            })
        })
        .collect();
    appender.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert!(segment_files(dir.path()).len() > 3);
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(
        all_entries(&wal),
        (1..=count)
            .map(|i| entry(i, 1 + i / 50))
            .collect::<Vec<_>>()
    );
}

/// The fuzz target's harness on a hundred-odd inputs from a fixed seed: opening whatever it
/// builds must never panic.
#[test]
fn opening_arbitrary_directories_never_panics() {
    crate::fuzzing::run_seeded(
        "ORDO_WAL_FUZZ_SEED",
        120,
        600,
        crate::fuzzing::open_arbitrary_dir,
    );
}

/// The `open_shared` harness on seeded inputs: a shared log whose journal holds arbitrary
/// operations, then damaged, must open with an error or serve entries in order.
#[test]
fn opening_arbitrary_shared_logs_never_panics() {
    crate::fuzzing::run_seeded(
        "ORDO_WAL_FUZZ_SEED",
        80,
        600,
        crate::fuzzing::open_arbitrary_shared,
    );
}

#[test]
fn waiting_for_an_index_that_a_truncation_removes_fails_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    // An interval far longer than the test, so nothing becomes durable by itself.
    let durability = Durability::Interval(Duration::from_secs(3600));
    let wal = Arc::new(
        Wal::open(
            dir.path(),
            Options {
                durability,
                ..small()
            },
        )
        .unwrap(),
    );
    append_range(&wal, 1, 11, 1);
    let waiter = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || wal.wait_durable(10))
    };
    // Whether the waiter is parked by now or not, it must come back with an error.
    wal.truncate_suffix(5).unwrap();
    match waiter.join().unwrap() {
        Err(Error::Unavailable {
            index: 10,
            last_index: 4,
        }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(wal.last_index(), 4);
}

#[test]
fn always_policy_makes_entries_durable_even_if_nobody_waits_or_listens() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        durability: Durability::Always,
        ..small()
    };
    let wal = Wal::open(dir.path(), opts).unwrap();
    append_range(&wal, 1, 30, 1);
    // The backstop promises durability within a few milliseconds; poll with a generous bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while wal.durable_index() < 29 {
        assert!(
            std::time::Instant::now() < deadline,
            "entries never became durable"
        );
        std::thread::yield_now();
    }
}

#[test]
fn segments_are_created_at_full_length_and_keep_it_through_suffix_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 120, 1);
    for name in segment_files(dir.path()) {
        assert_eq!(fs::metadata(dir.path().join(&name)).unwrap().len(), 4096);
    }
    wal.truncate_suffix(60).unwrap();
    for name in segment_files(dir.path()) {
        assert_eq!(fs::metadata(dir.path().join(&name)).unwrap().len(), 4096);
    }
    append_range(&wal, 60, 70, 2);
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.last_index(), 69);
    assert_eq!(all_entries(&wal)[65], entry(66, 2));
}

#[test]
fn a_short_last_segment_under_a_truncation_intent_is_a_cut_to_finish_not_damage() {
    // A crash inside a tail cut (between shortening the file and restoring its length)
    // leaves the intent file; recovery finishes the cut instead of reporting truncation.
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 40, 1);
    wal.close().unwrap();
    let last = dir.path().join(segment_files(dir.path()).last().unwrap());
    let name = segment_files(dir.path()).pop().unwrap();
    let first: u64 = name.trim_end_matches(".log").parse().unwrap();
    assert!(first < 30, "the test wants index 30 in the last segment");
    let offset = crate::SEGMENT_HEADER_BYTES
        + (first..30)
            .map(|i| (RECORD_HEADER_BYTES + entry(i, 1).payload.len()) as u64)
            .sum::<u64>();
    crate::wal::write_truncate_intent(dir.path(), 30).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(offset)
        .unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.last_index(), 29);
    assert_eq!(fs::metadata(&last).unwrap().len(), 4096);
    assert!(!dir.path().join("truncate").exists());
    drop(wal);
    // Without the intent, the same damage is reported.
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(offset)
        .unwrap();
    match Wal::open(dir.path(), small()) {
        Err(Error::Truncated {
            path,
            len_bytes,
            expected_bytes,
        }) => assert_eq!((path, len_bytes, expected_bytes), (last, offset, 4096)),
        other => panic!("expected a truncated segment, got {other:?}"),
    }
}

#[test]
fn a_file_with_a_segment_name_but_no_segment_header_is_named_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 10, 1);
    drop(wal);
    let name = segment_files(dir.path()).pop().unwrap();
    let path = dir.path().join(&name);
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(Error::Corrupt {
            path: p, offset, ..
        }) => assert_eq!((p, offset), (path, 0)),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_log_reopened_with_another_segment_size_keeps_old_segments_and_rolls_to_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 50, 1);
    drop(wal);
    let bigger = Options {
        segment_bytes_max: 16384,
        ..small()
    };
    let wal = Wal::open(dir.path(), bigger.clone()).unwrap();
    append_range(&wal, 50, 400, 1);
    drop(wal);
    let sizes: Vec<u64> = segment_files(dir.path())
        .iter()
        .map(|n| fs::metadata(dir.path().join(n)).unwrap().len())
        .collect();
    assert!(sizes.contains(&4096) && sizes.contains(&16384), "{sizes:?}");
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(
        all_entries(&wal),
        (1..400).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 10, 1);
    match Wal::open(dir.path(), small()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path().join("lock")),
        other => panic!("expected the directory to be locked, got {other:?}"),
    }
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.last_index(), 9);
}

/// A log whose last record (index 4) starts at byte 3115 and crosses the page boundary at
/// 4096; returns the segment's path.
fn log_with_a_last_record_across_a_page(dir: &Path) -> std::path::PathBuf {
    let options = Options {
        segment_bytes_max: 16384,
        ..small()
    };
    let wal = Wal::open(dir, options).unwrap();
    for i in 1..=4 {
        wal.append(&[Entry::new(i, 1, 0, vec![7u8; 1000])]).unwrap();
    }
    wal.close().unwrap();
    dir.join(segment_files(dir).pop().unwrap())
}

fn zero_from(path: &Path, from: u64, to: u64) {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&vec![0u8; (to - from) as usize], from)
        .unwrap();
}

#[test]
fn within_one_boot_a_record_cut_at_a_page_boundary_is_a_torn_tail_and_elsewhere_corruption() {
    let options = Options {
        segment_bytes_max: 16384,
        ..small()
    };
    let record_end = 3115 + 1033;
    // Cut where the kernel can stop a killed process's write: at the page boundary.
    let dir = tempfile::tempdir().unwrap();
    let segment = log_with_a_last_record_across_a_page(dir.path());
    zero_from(&segment, 4096, record_end);
    let wal = Wal::open(dir.path(), options.clone()).unwrap();
    assert_eq!(wal.last_index(), 3);
    drop(wal);

    // Cut inside a page: no crash within one boot leaves that, so it is corruption.
    let dir = tempfile::tempdir().unwrap();
    let segment = log_with_a_last_record_across_a_page(dir.path());
    zero_from(&segment, 4100, record_end);
    match Wal::open(dir.path(), options.clone()) {
        Err(Error::Corrupt { path, offset, .. }) => assert_eq!((path, offset), (segment, 3115)),
        other => panic!("expected corruption, got {other:?}"),
    }

    // After a reboot the page cache is gone and any cut can be a torn write.
    fs::write(dir.path().join("lock"), b"an-earlier-boot").unwrap();
    let wal = Wal::open(dir.path(), options).unwrap();
    assert_eq!(wal.last_index(), 3);
}

fn always() -> Options {
    Options {
        durability: Durability::Always,
        ..small()
    }
}

/// The entries `lo..hi` as `append_range` writes them in term 1 below `term_2_from` and in
/// term 2 from there.
fn two_terms(lo: u64, hi: u64, term_2_from: u64) -> Vec<Entry> {
    (lo..hi)
        .map(|i| entry(i, if i < term_2_from { 1 } else { 2 }))
        .collect()
}

#[test]
fn appends_staged_during_a_round_are_counted_read_and_kept_by_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), always()).unwrap();
    append_range(&wal, 1, 4, 1);
    wal.stage_appends(true);
    append_range(&wal, 4, 9, 2);
    assert!(wal.has_staged());
    assert_eq!(wal.last_index(), 8);
    assert_eq!(wal.term_at(6).unwrap(), 2);
    // A read below the staged records leaves them staged; one that reaches them writes them.
    assert_eq!(wal.entries(1, 4, u64::MAX).unwrap().len(), 3);
    assert!(wal.has_staged());
    assert_eq!(wal.entries(2, 7, u64::MAX).unwrap(), two_terms(2, 7, 4));
    assert!(!wal.has_staged());
    append_range(&wal, 9, 12, 2);
    assert!(wal.has_staged());
    // Dropped without a close, as a process that exits: staged records reach the file.
    drop(wal);
    let wal = Wal::open(dir.path(), always()).unwrap();
    assert_eq!(all_entries(&wal), two_terms(1, 12, 4));
}

#[test]
fn staged_records_reach_the_file_before_a_roll_a_truncation_or_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), always()).unwrap();
    wal.stage_appends(true);
    // Enough for several 4 KiB segments: each roll writes the staged records first.
    append_range(&wal, 1, 120, 1);
    assert!(segment_files(dir.path()).len() > 2);
    assert_eq!(
        all_entries(&wal),
        (1..120).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
    append_range(&wal, 120, 130, 1);
    wal.truncate_suffix(125).unwrap();
    assert_eq!(wal.last_index(), 124);
    wal.stage_appends(true);
    append_range(&wal, 125, 135, 2);
    wal.truncate_prefix(110).unwrap();
    assert_eq!(wal.first_index(), 111);
    wal.stage_appends(true);
    append_range(&wal, 135, 140, 2);
    // The fsync thread, woken by these appends, may have written them already (its round
    // ends staging); whether or not it has, a sync leaves nothing staged.
    assert_eq!(wal.sync().unwrap(), 139);
    assert!(!wal.has_staged());
    drop(wal);
    let wal = Wal::open(dir.path(), always()).unwrap();
    assert_eq!(all_entries(&wal), two_terms(111, 140, 125));
}

#[test]
fn an_append_after_a_larger_round_becomes_durable_though_fewer_appenders_return() {
    // The fsync thread lingers for as many appends as its last round covered; a lone one
    // must still be synced once that wait runs out.
    let dir = tempfile::tempdir().unwrap();
    let wal = Arc::new(Wal::open(dir.path(), always()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    wal.on_durable(move |i| {
        let _ = tx.send(i);
    });
    let wait_for = |index: u64| while rx.recv().unwrap() < index {};
    let order = Arc::new(std::sync::Mutex::new(()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let wal = Arc::clone(&wal);
            let order = Arc::clone(&order);
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let _g = order.lock().unwrap();
                    let i = wal.last_index() + 1;
                    wal.append(&[entry(i, 1)]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_for(160);
    for i in 161..=170 {
        wal.append(&[entry(i, 1)]).unwrap();
        wait_for(i);
    }
    assert_eq!(wal.durable_index(), 170);
}

mod staged_model {
    //! Random appends, truncations, reads, syncs and reopens, with appends staged or not,
    //! behave exactly like a `Vec`.
    use proptest::prelude::*;

    use super::{always, entry};
    use crate::Wal;

    #[derive(Debug, Clone)]
    enum Op {
        Append { count: u64, stage: bool },
        TruncateSuffix { back: u64 },
        TruncatePrefix { ahead: u64 },
        Read { at: u64, count: u64 },
        Sync,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1..8u64, proptest::bool::weighted(0.7))
                .prop_map(|(count, stage)| Op::Append { count, stage }),
            2 => (0..20u64).prop_map(|back| Op::TruncateSuffix { back }),
            1 => (0..30u64).prop_map(|ahead| Op::TruncatePrefix { ahead }),
            2 => (0..40u64, 1..12u64).prop_map(|(at, count)| Op::Read { at, count }),
            1 => Just(Op::Sync),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn with_staged_appends_the_log_behaves_like_a_vec(
            ops in proptest::collection::vec(op(), 1..50)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut wal = Some(Wal::open(dir.path(), always()).unwrap());
            // The model: indices `start..next`, every entry of term 1.
            let (mut start, mut next) = (1u64, 1u64);
            for op in ops {
                let w = wal.as_ref().unwrap();
                match op {
                    Op::Append { count, stage } => {
                        w.stage_appends(stage);
                        let batch: Vec<_> = (next..next + count).map(|i| entry(i, 1)).collect();
                        prop_assert_eq!(w.append(&batch).unwrap(), next + count - 1);
                        next += count;
                    }
                    Op::TruncateSuffix { back } => {
                        let from = next.saturating_sub(back).max(start);
                        w.truncate_suffix(from).unwrap();
                        next = from;
                    }
                    Op::TruncatePrefix { ahead } => {
                        let through = start - 1 + ahead;
                        w.truncate_prefix(through).unwrap();
                        start = start.max(through + 1);
                        next = next.max(start);
                    }
                    Op::Read { at, count } => {
                        let lo = (start + at).min(next);
                        let hi = (lo + count).min(next);
                        let want: Vec<_> = (lo..hi).map(|i| entry(i, 1)).collect();
                        prop_assert_eq!(w.entries(lo, hi, u64::MAX).unwrap(), want);
                    }
                    Op::Sync => {
                        prop_assert_eq!(w.sync().unwrap(), next - 1);
                    }
                    Op::Reopen => {
                        drop(wal.take());
                        wal = Some(Wal::open(dir.path(), always()).unwrap());
                    }
                }
                // Only bounds here: a full read would write the staged records every time.
                let w = wal.as_ref().unwrap();
                prop_assert_eq!((w.first_index(), w.last_index()), (start, next - 1));
            }
            let w = wal.as_ref().unwrap();
            let all: Vec<_> = (start..next).map(|i| entry(i, 1)).collect();
            prop_assert_eq!(w.entries(start, next, u64::MAX).unwrap(), all);
            drop(wal);
            let w = Wal::open(dir.path(), always()).unwrap();
            prop_assert_eq!((w.first_index(), w.last_index()), (start, next - 1));
            let all: Vec<_> = (start..next).map(|i| entry(i, 1)).collect();
            prop_assert_eq!(w.entries(start, next, u64::MAX).unwrap(), all);
        }
    }
}

#[test]
fn every_single_bit_flip_of_a_segment_header_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    for size in [4096u64, 64 << 20, crate::SEGMENT_BYTES_MAX] {
        let header = crate::wal::segment_header(size);
        fs::write(&path, header).unwrap();
        let file = fs::File::open(&path).unwrap();
        let read = crate::wal::read_segment_header(&file, &path, size).unwrap();
        assert_eq!(read, (size, true));
        for bit in 0..header.len() * 8 {
            let mut flipped = header;
            flipped[bit / 8] ^= 1 << (bit % 8);
            fs::write(&path, flipped).unwrap();
            let file = fs::File::open(&path).unwrap();
            match crate::wal::read_segment_header(&file, &path, size) {
                Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("size {size}, bit {bit} flipped: {other:?}"),
            }
        }
    }
}

#[test]
fn a_segment_with_an_unchecked_header_opens_but_a_cut_in_its_zeros_stays_lost() {
    // Segments written before headers carried a checksum: the length alone cannot tell a
    // cut from a damaged length, so a short one is refused as before.
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    append_range(&wal, 1, 5, 1);
    wal.close().unwrap();
    let seg = dir.path().join(segment_files(dir.path()).pop().unwrap());
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(b"ORDOSEG1");
    header[8..].copy_from_slice(&4096u64.to_le_bytes());
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all(&header)
        .unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(
        all_entries(&wal),
        (1..5).map(|i| entry(i, 1)).collect::<Vec<_>>()
    );
    wal.close().unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(4096 - 37)
        .unwrap();
    assert!(matches!(
        Wal::open(dir.path(), small()),
        Err(Error::Truncated { .. })
    ));
}
