//! The harness of the `open_dir` fuzz target: arbitrary bytes become a log directory, which
//! is then opened and read. Opening may fail, but must never panic or serve a wrong entry.
//! Public only for the fuzz crate and the test that runs it on random inputs, and for the
//! tests of the small files other crates keep ([`damaged_copies`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Durability, Entry, HardState, Options, SnapshotMeta, Wal};

/// Reads the fuzz input as a sequence of small numbers and byte strings.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
}

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        record_bytes_max: 1024,
        index_interval_bytes: 64,
        durability: Durability::Never,
    }
}

/// A fresh, empty directory for one run.
fn scratch_dir() -> PathBuf {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ordo-wal-fuzz-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Builds a valid log from the first part of the input, so that the damage that follows
/// lands in realistic files, then applies the rest of the input as file edits.
fn build(dir: &Path, input: &mut Input<'_>) {
    if let Ok(wal) = Wal::open(dir, options()) {
        let entries = input.u8() % 64;
        for i in 1..=u64::from(entries) {
            let len = usize::from(input.u8()) * 3;
            let _ = wal.append(&[Entry::new(i, 1 + i / 20, i as u8, vec![i as u8; len])]);
        }
        let ops = input.u8();
        if ops & 1 != 0 {
            let _ = wal.truncate_suffix(u64::from(input.u8()));
        }
        if ops & 2 != 0 {
            let _ = wal.truncate_prefix(u64::from(input.u8()));
        }
        if ops & 4 != 0 {
            let _ = wal.set_hard_state(HardState {
                term: u64::from(input.u8()),
                vote: Some(1),
                commit: u64::from(input.u8()),
            });
        }
        if ops & 8 != 0 {
            let meta = SnapshotMeta {
                last_index: u64::from(input.u8()),
                last_term: 1,
                config: bytes::Bytes::from_static(b"1,2,3"),
            };
            if let Ok(mut w) = wal.snapshot_writer(meta) {
                let n = usize::from(input.u8());
                let _ = w.write_all(input.bytes(n));
                let _ = w.finish();
            }
        }
    }
    while !input.0.is_empty() {
        let op = input.u8() % 4;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        let pick = usize::from(input.u8());
        let existing = (!files.is_empty()).then(|| files[pick % files.len()].clone());
        match (op, existing) {
            (0, _) | (_, None) => {
                let name = match input.u8() % 8 {
                    0 => "00000000000000000001.log".to_string(),
                    1 => format!("{:020}.log", input.u16()),
                    2 => "start".into(),
                    3 => "truncate".into(),
                    4 => "hardstate".into(),
                    5 => format!("snap-{:020}-{:020}.snap", input.u8(), input.u8()),
                    6 => "hardstate.tmp".into(),
                    _ => format!("{:020}.log", u64::MAX - u64::from(input.u8())),
                };
                let len = usize::from(input.u16() % 2048);
                let _ = std::fs::write(dir.join(name), input.bytes(len));
            }
            (1, Some(f)) => {
                let mut bytes = std::fs::read(&f).unwrap_or_default();
                if !bytes.is_empty() {
                    let at = usize::from(input.u16()) % bytes.len();
                    bytes[at] ^= input.u8().max(1);
                    let _ = std::fs::write(&f, bytes);
                }
            }
            (2, Some(f)) => {
                let len = u64::from(input.u16());
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&f)
                    .and_then(|h| {
                        let size = h.metadata()?.len();
                        h.set_len(len.min(size))
                    });
            }
            (_, Some(f)) => {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// Builds a directory from `data`, opens it as a log and reads everything it offers.
pub fn open_arbitrary_dir(data: &[u8]) {
    let dir = scratch_dir();
    build(&dir, &mut Input(data));
    if let Ok(wal) = Wal::open(&dir, options()) {
        let (first, last) = (wal.first_index(), wal.last_index());
        assert!(
            first >= 1 && last + 1 >= first,
            "first {first}, last {last}"
        );
        if let Ok(entries) = wal.entries(first, last + 1, u64::MAX) {
            for (e, index) in entries.iter().zip(first..) {
                assert_eq!(e.index, index, "entries come in index order");
                let _ = wal.term_at(index);
            }
        }
        let _ = wal.hard_state();
        if let Ok(Some(mut r)) = wal.open_snapshot() {
            let _ = r.read_to_end(&mut Vec::new());
        }
        let _ = wal.append(&[Entry::new(last + 1, u64::MAX, 0, &b"after"[..])]);
        drop(wal);
        let _ = Wal::open(&dir, options());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every way a small file can be damaged in one step: each prefix shorter than `good` (a cut),
/// then each copy with one bit flipped. For tests that every damage is detected.
pub fn damaged_copies(good: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let cut = (0..good.len()).map(|len| good[..len].to_vec());
    let flipped = (0..good.len() * 8).map(|bit| {
        let mut bad = good.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        bad
    });
    cut.chain(flipped)
}
