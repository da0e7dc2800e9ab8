//! Damage on disk as crashes and bad media produce it: recovery must yield a correct prefix
//! of what was written, or an error naming the damaged file, and never a wrong entry.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ordo_wal::{Durability, Entry, Error, Options, Wal};

const HEADER_BYTES: u64 = ordo_wal::RECORD_HEADER_BYTES as u64;
const SEGMENT_HEADER_BYTES: u64 = ordo_wal::SEGMENT_HEADER_BYTES;

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        record_bytes_max: 1024,
        index_interval_bytes: 128,
        durability: Durability::Never,
    }
}

fn entry(index: u64) -> Entry {
    let len = (index * 7 % 40) as usize;
    Entry::new(index, 1 + index / 30, 0, vec![index as u8; len])
}

/// A log of `count` entries in several segments, each made durable before the next is
/// appended (so each record's durability claim covers its predecessor); returns the segment
/// paths in order.
fn write_log(dir: &Path, count: u64) -> Vec<PathBuf> {
    let wal = Wal::open(dir, options()).unwrap();
    for i in 1..=count {
        wal.append(&[entry(i)]).unwrap();
        wal.sync().unwrap();
    }
    wal.close().unwrap();
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "the test wants several segments");
    segs
}

fn first_index_of(segment: &Path) -> u64 {
    segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Makes the next open see the log as last opened during an earlier boot: as after a machine
/// crash, when whatever was not fsynced may be lost in any pattern (the page cache is gone).
fn reboot(dir: &Path) {
    fs::write(dir.join("lock"), b"an-earlier-boot").unwrap();
}

/// Opens `dir` and returns every entry, or the error.
fn recover(dir: &Path) -> Result<Vec<Entry>, Error> {
    let wal = Wal::open(dir, options())?;
    wal.entries(wal.first_index(), wal.last_index() + 1, u64::MAX)
}

/// Where the records of the segment holding `first..=last` end.
fn data_end(first: u64, last: u64) -> u64 {
    SEGMENT_HEADER_BYTES
        + (first..=last)
            .map(|i| HEADER_BYTES + entry(i).payload.len() as u64)
            .sum::<u64>()
}

/// The last index of segment `n` of `segs` in a log of `count` entries.
fn last_index_of(segs: &[PathBuf], n: usize, count: u64) -> u64 {
    segs.get(n + 1)
        .map_or(count, |next| first_index_of(next) - 1)
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

/// Where the first record of the segment whose record ends are `ends` starts.
fn first_record_start(ends: &[(u64, u64)]) -> u64 {
    let (index, end) = ends[0];
    end - HEADER_BYTES - entry(index).payload.len() as u64
}

#[test]
fn tearing_the_last_segment_at_every_offset_of_its_final_records_recovers_the_prefix_after_a_reboot(
) {
    let dir = tempfile::tempdir().unwrap();
    let count = 300;
    let segs = write_log(dir.path(), count);
    let last = segs.last().unwrap();
    let original = fs::read(last).unwrap();
    let first = first_index_of(last);
    // Record boundaries of the last segment.
    let mut ends = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    for i in first..=count {
        offset += HEADER_BYTES + entry(i).payload.len() as u64;
        ends.push((i, offset));
    }
    assert_eq!(offset, data_end(first, count));
    assert!(original[offset as usize..].iter().all(|&b| b == 0));
    let cut_from = ends[ends.len() - 5].1 - 3;
    for cut in cut_from..offset {
        let expected_last = ends
            .iter()
            .rev()
            .find(|&&(_, end)| end <= cut)
            .map(|&(i, _)| i)
            .unwrap_or(first - 1);
        // A machine crash that lost the bytes past `cut`: the segment keeps its preallocated
        // length, so what was not written reads as zeros.
        let mut torn = original.clone();
        torn[cut as usize..].fill(0);
        fs::write(last, &torn).unwrap();
        let on_a_record_boundary =
            cut == first_record_start(&ends) || ends.iter().any(|&(_, end)| end == cut);
        // Within the same boot only a write cut at a page boundary (of which a 4 KiB segment
        // has none inside a record) can leave a record partly written: anything else is
        // damage no crash explains.
        if !on_a_record_boundary {
            let e = recover(dir.path()).expect_err("a record torn inside a page, same boot");
            assert_eq!(damaged_file(&e), Some(last.as_path()), "cut {cut}: {e}");
        }
        reboot(dir.path());
        let got = recover(dir.path()).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let want: Vec<Entry> = (1..=expected_last).map(entry).collect();
        assert_eq!(got, want, "torn at {cut}");
        // Recovery cleared the tail; appending continues from the prefix.
        let wal = Wal::open(dir.path(), options()).unwrap();
        wal.append(&[entry(expected_last + 1)]).unwrap();
        wal.close().unwrap();
        let wal = Wal::open(dir.path(), options()).unwrap();
        assert_eq!(wal.last_index(), expected_last + 1);
    }
}

#[test]
fn a_segment_cut_short_is_an_error_naming_it_at_every_offset_that_may_have_held_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let count = 300;
    let segs = write_log(dir.path(), count);
    for (n, seg) in segs.iter().enumerate() {
        let original = fs::read(seg).unwrap();
        let end = data_end(first_index_of(seg), last_index_of(&segs, n, count));
        let size = original.len() as u64;
        // The last records, their boundaries included, and some zero space after them;
        // for the other segments a sample; and cuts deep in the zeros.
        let cuts: Vec<u64> = if n + 1 == segs.len() {
            (end - 3 * HEADER_BYTES..end + 40).collect()
        } else {
            vec![
                0,
                7,
                SEGMENT_HEADER_BYTES,
                end - 1,
                end,
                end + 1,
                end + 3,
                end + 4,
            ]
        };
        let deep = [(end + size) / 2, size - 37, size - 1];
        for cut in cuts.into_iter().chain(deep) {
            OpenOptions::new()
                .write(true)
                .open(seg)
                .unwrap()
                .set_len(cut)
                .unwrap();
            // Four zero bytes after the records say no record began there: nothing written
            // was lost, and the segment gets its length back. Closer to them, a record may
            // have started where the cut is.
            let lost = cut < end + 4;
            match recover(dir.path()) {
                Err(e) if lost => {
                    assert_eq!(damaged_file(&e), Some(seg.as_path()), "cut {cut}: {e}")
                }
                Err(e) => panic!("segment {n} cut at {cut} in its zeros: {e}"),
                Ok(got) if lost => panic!(
                    "segment {n} cut at {cut}: opened with {} entries",
                    got.len()
                ),
                Ok(got) => {
                    assert_eq!(got.len() as u64, count, "segment {n} cut at {cut}");
                    assert_eq!(fs::metadata(seg).unwrap().len(), size);
                }
            }
            fs::write(seg, &original).unwrap();
        }
    }
    assert_eq!(recover(dir.path()).unwrap().len() as u64, count);
}

#[test]
fn bit_flips_inside_a_segment_give_an_error_naming_it_never_a_wrong_entry() {
    let dir = tempfile::tempdir().unwrap();
    let count = 300;
    let segs = write_log(dir.path(), count);
    let all: Vec<Entry> = (1..=count).map(entry).collect();
    for (n, seg) in segs.iter().enumerate() {
        let original = fs::read(seg).unwrap();
        let last_index = last_index_of(&segs, n, count);
        let end = data_end(first_index_of(seg), last_index);
        let final_record_start = end - HEADER_BYTES - entry(last_index).payload.len() as u64;
        let file = OpenOptions::new().read(true).write(true).open(seg).unwrap();
        // Every 11th byte (coprime with the record sizes, so every field gets hit somewhere),
        // every byte of the last two records, where torn tail and corruption meet, and the
        // zero space after the records.
        let tail_from = if n + 1 == segs.len() {
            final_record_start - HEADER_BYTES - entry(last_index - 1).payload.len() as u64
        } else {
            end
        };
        let offsets = (0..(end + 64).min(original.len() as u64))
            .filter(|at| at % 11 == 0 || *at >= tail_from);
        for at in offsets {
            for rebooted in [false, true] {
                if !rebooted {
                    // An open in this boot, so the next one knows the page cache survived
                    // (a failed open leaves the earlier boot recorded).
                    drop(Wal::open(dir.path(), options()).unwrap());
                }
                let flipped = original[at as usize] ^ (1 << (at % 8));
                file.write_all_at(&[flipped], at).unwrap();
                if rebooted {
                    reboot(dir.path());
                }
                match recover(dir.path()) {
                    Err(e) => {
                        assert_eq!(damaged_file(&e), Some(seg.as_path()), "byte {at}: {e}")
                    }
                    Ok(got) => {
                        // Only the last segment may read as torn: in the never-written space
                        // after its records (nothing is lost then), or, after a reboot, at
                        // its very last record (a torn write there looks the same).
                        let torn_from = if rebooted { final_record_start } else { end };
                        assert!(
                            n + 1 == segs.len() && at >= torn_from,
                            "segment {n} byte {at} (rebooted: {rebooted}): damage accepted"
                        );
                        assert_eq!(got, all[..got.len()], "byte {at}: a wrong entry");
                        let want = if at >= end { count } else { count - 1 };
                        assert_eq!(got.len() as u64, want, "byte {at}");
                    }
                }
                fs::write(seg, &original).unwrap();
            }
        }
    }
    assert_eq!(recover(dir.path()).unwrap(), all);
}

#[test]
fn a_damaged_record_followed_by_valid_ones_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let segs = write_log(dir.path(), 300);
    let last = segs.last().unwrap();
    let len = data_end(first_index_of(last), 300);
    // Zero a stretch in the middle, as a lost page would, keeping the records after it.
    let file = OpenOptions::new().write(true).open(last).unwrap();
    file.write_all_at(&[0; 40], len / 3).unwrap();
    match recover(dir.path()) {
        Err(Error::Corrupt { path, offset, .. }) => {
            assert_eq!(&path, last);
            assert!(offset <= len / 3 + 40);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn an_index_out_of_sequence_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let segs = write_log(dir.path(), 300);
    // Rewrite the second segment's third record with a valid record of a wrong index.
    let seg = &segs[1];
    let first = first_index_of(seg);
    let offset = data_end(first, first + 1);
    let scratch = tempfile::tempdir().unwrap();
    let wal = Wal::open(scratch.path(), options()).unwrap();
    wal.truncate_prefix(first + 2).unwrap();
    // Same payload length as entry(first + 2), so the record fits exactly, but index + 1.
    let mut wrong = entry(first + 2);
    wrong.index = first + 3;
    wal.append(&[wrong]).unwrap();
    wal.close().unwrap();
    let bytes = fs::read(scratch.path().join(format!("{:020}.log", first + 3))).unwrap();
    let record_end = data_end(first + 2, first + 2) as usize;
    let bytes = &bytes[SEGMENT_HEADER_BYTES as usize..record_end];
    OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .write_all_at(bytes, offset)
        .unwrap();
    match recover(dir.path()) {
        Err(Error::OutOfSequence {
            path,
            offset: o,
            expected,
            found,
        }) => {
            assert_eq!(
                (&path, o, expected, found),
                (seg, offset, first + 2, first + 3)
            );
        }
        other => panic!("expected out of sequence, got {other:?}"),
    }
}

#[test]
fn a_hole_before_records_that_were_never_durable_is_a_torn_tail() {
    // Concurrent appends complete out of order and the page cache writes back in any order,
    // so a crash can leave a hole followed by valid records; none of them were durable.
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), options()).unwrap();
    for i in 1..=100 {
        wal.append(&[entry(i)]).unwrap();
    }
    wal.sync().unwrap();
    for i in 101..=130 {
        wal.append(&[entry(i)]).unwrap();
    }
    drop(wal);
    let last = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .unwrap();
    let first = first_index_of(&last);
    assert!(
        first <= 110,
        "the test wants indices 110.. in the last segment"
    );
    let hole_at = data_end(first, 109);
    let file = OpenOptions::new().write(true).open(&last).unwrap();
    file.write_all_at(&[0; 20], hole_at).unwrap();
    let got = recover(dir.path()).unwrap();
    assert_eq!(got, (1..110).map(entry).collect::<Vec<_>>());
}
