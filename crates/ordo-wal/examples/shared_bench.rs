//! Appends and fsyncs per second of a `SharedLog` with `Durability::Always`, for 1 and
//! 1,000 groups written by N threads; figures only, no assertions.
//!
//! ```sh
//! cargo run --release -p ordo-wal --example shared_bench -- [--dir D] [--seconds S] [--threads 1,16] [--bytes 256]
//! ```
//!
//! Each thread appends one entry to its next group (thread `t` of `N` takes groups `t`,
//! `t + N`, ...) and waits for it to be durable before the next: the acknowledged-write
//! pattern, with up to `N` appends in flight. With one group the threads take turns at it.
//! `--dir` defaults to a fresh directory under the current one (the same file system as
//! the working tree, not a tmpfs).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_wal::{Durability, Entry, GroupLog, Options, SharedLog, SharedOptions};

const GROUP_COUNTS: [u64; 2] = [1, 1000];
/// Each measurement runs in this many slices, interleaved with the others.
const SLICES: usize = 5;

struct Figures {
    appends: u64,
    fsyncs: u64,
    elapsed: Duration,
}

fn measure(dir: &Path, groups: u64, threads: u64, bytes: usize, run: Duration) -> Figures {
    let _ = std::fs::remove_dir_all(dir);
    let options = SharedOptions {
        journal: Options {
            durability: Durability::Always,
            ..Options::default()
        },
        ..SharedOptions::default()
    };
    let log = SharedLog::open(dir, options).expect("open the shared log");
    // A group's appends must carry consecutive indices: threads sharing a group take turns.
    let logs: Vec<Arc<(Mutex<()>, GroupLog)>> = (0..groups)
        .map(|id| Arc::new((Mutex::new(()), log.group(id).expect("create a group"))))
        .collect();
    let payload = Bytes::from(vec![0x5a; bytes]);
    let fsyncs_before = log.stats().fsyncs;
    let start = Instant::now();
    let deadline = start + run;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let mine: Vec<_> = logs
                .iter()
                .enumerate()
                .filter(|(id, _)| groups == 1 || *id as u64 % threads == t)
                .map(|(_, g)| Arc::clone(g))
                .collect();
            let payload = payload.clone();
            std::thread::spawn(move || {
                let mut appends = 0u64;
                let mut next = 0;
                while Instant::now() < deadline && !mine.is_empty() {
                    let (turn, g) = &*mine[next % mine.len()];
                    next += 1;
                    let index = {
                        let _turn = turn.lock().expect("turn");
                        let e = Entry::new(g.last_index() + 1, 1, 0, payload.clone());
                        g.append(&[e]).expect("append")
                    };
                    g.wait_durable(index).expect("wait for durability");
                    appends += 1;
                }
                appends
            })
        })
        .collect();
    let appends = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    let elapsed = start.elapsed();
    let fsyncs = log.stats().fsyncs - fsyncs_before;
    Figures {
        appends,
        fsyncs,
        elapsed,
    }
}

fn main() {
    let mut dir: Option<PathBuf> = None;
    let mut seconds = 3.0f64;
    let mut threads: Vec<u64> = vec![1, 16];
    let mut bytes = 256usize;
    let mut args = std::env::args().skip(1);
    let usage = || -> ! {
        eprintln!("usage: shared_bench [--dir D] [--seconds S] [--threads 1,16] [--bytes 256]");
        std::process::exit(2)
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--threads" => {
                threads = args
                    .next()
                    .map(|s| s.split(',').filter_map(|t| t.parse().ok()).collect())
                    .filter(|t: &Vec<u64>| !t.is_empty() && t.iter().all(|&n| n > 0))
                    .unwrap_or_else(|| usage())
            }
            "--bytes" => {
                bytes = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    let run = Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
    let scratch;
    let base = match dir {
        Some(d) => d,
        None => {
            scratch = tempfile::Builder::new()
                .prefix(".wal-bench-shared-")
                .tempdir_in(".")
                .expect("create a directory under the current one");
            scratch.path().to_path_buf()
        }
    };
    println!(
        "directory: {}, {:.1} s per measurement in {SLICES} interleaved slices, {bytes}-byte \
         entries, Durability::Always",
        base.display(),
        run.as_secs_f64()
    );
    let cells: Vec<(u64, u64)> = GROUP_COUNTS
        .iter()
        .flat_map(|&g| threads.iter().map(move |&n| (g, n)))
        .collect();
    let mut totals: Vec<Figures> = cells
        .iter()
        .map(|_| Figures {
            appends: 0,
            fsyncs: 0,
            elapsed: Duration::ZERO,
        })
        .collect();
    // Interleaved slices, the order rotating, so that load changes on a shared machine hit
    // every cell alike.
    for slice in 0..SLICES {
        for k in 0..cells.len() {
            let i = (k + slice) % cells.len();
            let (groups, n) = cells[i];
            let f = measure(&base.join("log"), groups, n, bytes, run / SLICES as u32);
            totals[i].appends += f.appends;
            totals[i].fsyncs += f.fsyncs;
            totals[i].elapsed += f.elapsed;
        }
    }
    println!();
    println!("| groups | threads |  appends/s |  fsyncs/s | appends per fsync |");
    println!("|-------:|--------:|-----------:|----------:|------------------:|");
    for (&(groups, n), f) in cells.iter().zip(&totals) {
        let secs = f.elapsed.as_secs_f64();
        println!(
            "| {groups:>6} | {n:>7} | {:>10.0} | {:>9.0} | {:>17.1} |",
            f.appends as f64 / secs,
            f.fsyncs as f64 / secs,
            f.appends as f64 / f.fsyncs.max(1) as f64
        );
    }
}
