//! The harnesses of the fuzz targets: arbitrary bytes become a log directory (`open_dir`) or
//! a shared-log directory whose journal holds arbitrary operations (`open_shared`), which
//! is then opened and read. Opening may fail, but must never panic or serve a wrong entry.
//! Public only for the fuzz crate and the tests that run the harnesses on seeded inputs,
//! and for other crates' tests: of the small files they keep ([`damaged_copies`]) and of
//! their own fuzz harnesses ([`run_seeded`], [`run_each`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shared::op::{
    encode_append, encode_remove, encode_state, KIND_APPEND, KIND_REMOVE, KIND_REWRITE, KIND_STATE,
};
use crate::shared::{SharedLog, SharedOptions};
use crate::{Durability, Entry, HardState, Options, SnapshotMeta, Wal};

/// Reads a fuzz input as a sequence of small numbers and byte strings; past its end, zeros
/// and empty strings. Shared by the harnesses of every crate.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    /// The next `n` bytes, or what is left.
    pub fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b
    }
    /// A length-prefixed byte string of at most `max` bytes.
    pub fn chunk(&mut self, max: u16) -> &[u8] {
        let n = usize::from(self.u16() % max.saturating_add(1).max(1));
        self.bytes(n)
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
    damage_files(dir, input, |input| match input.u8() % 8 {
        0 => "00000000000000000001.log".to_string(),
        1 => format!("{:020}.log", input.u16()),
        2 => "start".into(),
        3 => "truncate".into(),
        4 => "hardstate".into(),
        5 => format!("snap-{:020}-{:020}.snap", input.u8(), input.u8()),
        6 => "hardstate.tmp".into(),
        _ => format!("{:020}.log", u64::MAX - u64::from(input.u8())),
    });
}

/// The files in `dir` and its subdirectories, in name order.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Applies the rest of the input as edits of the files in `dir`: a file written (named by
/// `name`), one byte of a file flipped, a file cut short, a file deleted.
fn damage_files(dir: &Path, input: &mut Input<'_>, name: impl Fn(&mut Input<'_>) -> String) {
    while !input.0.is_empty() {
        let op = input.u8() % 4;
        let files = files_under(dir);
        let pick = usize::from(input.u8());
        let existing = (!files.is_empty()).then(|| files[pick % files.len()].clone());
        match (op, existing) {
            (0, _) | (_, None) => {
                let name = name(input);
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

fn shared_options() -> SharedOptions {
    SharedOptions {
        journal: options(),
        journal_bytes_target: 8192,
        collect_in_background: false,
    }
}

/// Writes through the API a shared log of a few groups, taking sizes and indexes from the
/// input, so that the records appended after it meet groups in realistic states.
fn build_shared(dir: &Path, input: &mut Input<'_>) {
    let Ok(log) = SharedLog::open(dir, shared_options()) else {
        return;
    };
    for _ in 0..input.u8() % 24 {
        let Ok(group) = log.group(u64::from(input.u8() % 4)) else {
            continue;
        };
        match input.u8() % 6 {
            0 | 1 => {
                let next = group.last_index() + 1;
                let entries: Vec<Entry> = (0..u64::from(input.u8() % 5))
                    .map(|i| {
                        let len = usize::from(input.u8());
                        Entry::new(next + i, 1, input.u8(), vec![i as u8; len])
                    })
                    .collect();
                let _ = group.append(&entries);
            }
            2 => {
                let _ = group.truncate_suffix(u64::from(input.u8()));
            }
            3 => {
                let _ = group.truncate_prefix(u64::from(input.u8()));
            }
            4 => {
                let _ = group.set_hard_state(HardState {
                    term: u64::from(input.u8()),
                    vote: Some(2),
                    commit: u64::from(input.u8()),
                });
            }
            _ => {
                let _ = log.collect();
            }
        }
    }
    let _ = log.close();
}

/// One journal record from the input: an operation encoded as the shared log would (with
/// group, indexes and terms the input chooses), or arbitrary bytes under any kind.
fn journal_record(input: &mut Input<'_>) -> (u8, Vec<u8>) {
    let group = u64::from(input.u8() % 5);
    let index = u64::from(input.u16());
    match input.u8() % 6 {
        0 | 1 => {
            let entries: Vec<Entry> = (0..u64::from(input.u8() % 4))
                .map(|i| {
                    let len = usize::from(input.u8() % 64);
                    Entry::new(
                        index + i,
                        u64::from(input.u8()),
                        0,
                        input.bytes(len).to_vec(),
                    )
                })
                .collect();
            let kind = if input.u8().is_multiple_of(4) {
                KIND_REWRITE
            } else {
                KIND_APPEND
            };
            (kind, encode_append(group, index, &entries))
        }
        2 => {
            let hard_state = HardState {
                term: u64::from(input.u8()),
                vote: input.u8().is_multiple_of(2).then_some(1),
                commit: u64::from(input.u16()),
            };
            (KIND_STATE, encode_state(group, index, &hard_state))
        }
        3 => (KIND_REMOVE, encode_remove(group)),
        _ => {
            let kind = input.u8() % 6;
            let len = usize::from(input.u8());
            (kind, input.bytes(len).to_vec())
        }
    }
}

/// Builds a shared log from `data`, then appends arbitrary operations to its journal (as
/// valid journal records, so that they reach the replay rather than the checksum), damages
/// its files, and opens and reads it.
pub fn open_arbitrary_shared(data: &[u8]) {
    let dir = scratch_dir();
    let mut input = Input(data);
    build_shared(&dir, &mut input);
    if let Ok(journal) = Wal::open(dir.join("journal"), shared_options().journal_options()) {
        for _ in 0..input.u8() % 8 {
            let (kind, payload) = journal_record(&mut input);
            let next = journal.last_index() + 1;
            let _ = journal.append(&[Entry::new(next, 0, kind, payload)]);
        }
    }
    damage_files(&dir, &mut input, |input| match input.u8() % 4 {
        0 => "layout".to_string(),
        1 => format!("journal/{:020}.log", input.u8()),
        2 => format!(
            "groups/{}/snap-{:020}-{:020}.snap",
            input.u8() % 4,
            input.u8(),
            1
        ),
        _ => "journal/start".into(),
    });
    if let Ok(log) = SharedLog::open(&dir, shared_options()) {
        read_shared(&log);
        let _ = log.collect();
        let _ = log.close();
        if let Ok(log) = SharedLog::open(&dir, shared_options()) {
            read_shared(&log);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads everything every group of `log` offers, then appends to each.
fn read_shared(log: &SharedLog) {
    for id in log.group_ids() {
        let Ok(group) = log.group(id) else { continue };
        let (first, last) = (group.first_index(), group.last_index());
        assert!(
            first >= 1 && last + 1 >= first,
            "group {id}: first {first}, last {last}"
        );
        if let Ok(entries) = group.entries(first, last + 1, u64::MAX) {
            for (e, index) in entries.iter().zip(first..) {
                assert_eq!(e.index, index, "group {id}: entries come in index order");
                let _ = group.term_at(index);
            }
        }
        let _ = group.hard_state();
        if let Ok(Some(mut r)) = group.open_snapshot() {
            let _ = r.read_to_end(&mut Vec::new());
        }
        let _ = group.append(&[Entry::new(last + 1, u64::MAX, 0, &b"after"[..])]);
    }
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

/// The seed a test's random inputs come from: `$seed_var` if set (to replay a failure),
/// else a fixed one.
fn seed_from(seed_var: &str) -> u64 {
    std::env::var(seed_var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed)
}

/// Runs a fuzz harness on `cases` inputs of up to `len_max` bytes drawn from a seed (the
/// environment variable `seed_var`, else a fixed one), so that the tests exercise it
/// without cargo-fuzz. Panics naming the seed, the case and the input if the harness does.
pub fn run_seeded(seed_var: &str, cases: usize, len_max: usize, harness: impl Fn(&[u8])) {
    let seed = seed_from(seed_var);
    let mut x = seed.max(1);
    let mut next = move || {
        // xorshift64*: deterministic, dependency-free.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for case in 0..cases {
        let len = (next() % (len_max as u64 + 1)) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness(&data)));
        assert!(
            outcome.is_ok(),
            "{seed_var}={seed} case {case} panicked on input {data:?}"
        );
    }
}

/// Runs a fuzz harness on each of `inputs` (damaged copies of valid encodings, say).
/// Panics naming the input if the harness does.
pub fn run_each(inputs: impl IntoIterator<Item = Vec<u8>>, harness: impl Fn(&[u8])) {
    for (case, data) in inputs.into_iter().enumerate() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness(&data)));
        assert!(outcome.is_ok(), "input {case} panicked: {data:?}");
    }
}
