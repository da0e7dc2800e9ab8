//! Throughput and append-to-durable latency of `ordo-wal`, next to the machine's raw
//! `write + fdatasync` rate and sequential write bandwidth measured in the same run.
//!
//! ```sh
//! cargo run --release -p ordo-wal --example wal_bench -- [--dir D] [--seconds S] [--only TEXT]
//! ```
//!
//! `--dir` defaults to a fresh directory under the current one (the same filesystem, not a
//! tmpfs); `--seconds` is the length of each measurement (default 3); `--only` keeps the
//! measurements whose label (e.g. `wal Always 256`, `wal Always tasks 256 16`,
//! `raw sequential`) contains `TEXT`, or ends with it if it ends in `$`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_wal::{Durability, Entry, Options, Wal};

const ENTRY_SIZES: [usize; 2] = [256, 4096];
/// Appender tasks on one thread, for the group-commit figure.
const TASKS: [usize; 2] = [1, 16];
/// With policies whose appenders do not wait, every this many appends is timed.
const LATENCY_SAMPLE_EVERY: u64 = 16;

struct Cell {
    entries: u64,
    payload_bytes: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Cell {
    fn measured(entries: u64, size: usize, elapsed: Duration, latencies_us: Vec<u64>) -> Cell {
        Cell {
            entries,
            payload_bytes: entries * size as u64,
            elapsed,
            latencies_us,
        }
    }
    fn per_sec(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }
    fn mib_per_sec(&self) -> f64 {
        self.payload_bytes as f64 / self.elapsed.as_secs_f64() / (1 << 20) as f64
    }
    fn percentile_us(&mut self, p: f64) -> Option<u64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        self.latencies_us.sort_unstable();
        let at = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        Some(self.latencies_us[at])
    }
}

/// An empty directory for one measurement. Whatever an earlier measurement left is deleted
/// and the deletion committed (directory fsync) before the clock starts, so no measurement
/// pays for another's clean-up.
fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create benchmark directory");
    std::fs::File::open(base)
        .and_then(|b| b.sync_all())
        .expect("fsync the benchmark directory");
    d
}

/// The reference: append `size` bytes to a file and `fdatasync`, in a loop.
fn raw_write_fdatasync(dir: &Path, size: usize, run: Duration) -> Cell {
    let path = fresh_dir(dir, "raw").join("raw.dat");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open");
    let buf = vec![0x5a; size];
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < run {
        let t = Instant::now();
        f.write_all(&buf).expect("write");
        f.sync_data().expect("fdatasync");
        lat.push(t.elapsed().as_micros() as u64);
    }
    let elapsed = start.elapsed();
    Cell {
        entries: lat.len() as u64,
        payload_bytes: (lat.len() * size) as u64,
        elapsed,
        latencies_us: lat,
    }
}

/// The reference: sequential 1 MiB writes, then one `fdatasync`; the time includes it.
fn raw_sequential(dir: &Path, run: Duration) -> Cell {
    let path = fresh_dir(dir, "raw").join("seq.dat");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open");
    let buf = vec![0x5a; 1 << 20];
    let mut bytes = 0u64;
    let start = Instant::now();
    while start.elapsed() < run {
        f.write_all(&buf).expect("write");
        bytes += buf.len() as u64;
    }
    f.sync_data().expect("fdatasync");
    Cell {
        entries: bytes >> 20,
        payload_bytes: bytes,
        elapsed: start.elapsed(),
        latencies_us: Vec::new(),
    }
}

/// One appender of `size`-byte entries for `run`, as the runtime appends to each group's
/// log. With `Always` it waits for each entry to be durable before the next (the
/// acknowledged-write pattern); otherwise it does not wait and a listener times when
/// sampled entries become durable. The time includes a final `sync`, so every policy is
/// measured to the same end: data on disk.
fn wal_cell(dir: &Path, durability: Durability, size: usize, run: Duration) -> Cell {
    let dir = fresh_dir(dir, "wal");
    let options = Options {
        durability,
        ..Options::default()
    };
    let wal = Wal::open(&dir, options).expect("open wal");
    let events: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let wait = durability == Durability::Always;
    if !wait {
        let ev = Arc::clone(&events);
        wal.on_durable(move |i| ev.lock().expect("events").push((i, Instant::now())));
    }
    let payload = Bytes::from(vec![0xa5; size]);
    let start = Instant::now();
    let deadline = start + run;
    let mut samples = Vec::new();
    let mut entries = 0u64;
    let mut index = wal.last_index();
    while Instant::now() < deadline {
        let t = Instant::now();
        index = wal
            .append(&[Entry::new(index + 1, 1, 0, payload.clone())])
            .expect("append");
        if wait {
            wal.wait_durable(index).expect("wait");
            samples.push((index, t, Some(t.elapsed())));
        } else if entries.is_multiple_of(LATENCY_SAMPLE_EVERY) {
            samples.push((index, t, None));
        }
        entries += 1;
    }
    wal.sync().expect("final sync");
    let elapsed = start.elapsed();
    let events = events.lock().expect("events").clone();
    let latencies_us = samples
        .into_iter()
        .filter_map(|(index, t, waited)| {
            waited.or_else(|| {
                let i = events.partition_point(|&(d, _)| d < index);
                events.get(i).map(|&(_, at)| at.duration_since(t))
            })
        })
        .map(|d| d.as_micros() as u64)
        .collect();
    drop(wal);
    Cell::measured(entries, size, elapsed, latencies_us)
}

/// `tasks` appenders of `size`-byte entries with `Always`, as async tasks on one thread:
/// each appends an entry and awaits its durability through [`Wal::on_durable`] before the
/// next, the way a Raft runtime or a server with many clients uses the log (many requests in
/// flight, one event loop, durability reported by the fsync thread). Nothing is batched:
/// every entry is its own `append` call. The tasks share one thread and do not yield
/// between choosing the next index and appending, so they append in turn.
fn wal_task_cell(dir: &Path, tasks: usize, size: usize, run: Duration) -> Cell {
    let dir = fresh_dir(dir, "wal");
    let wal = Arc::new(Wal::open(&dir, Options::default()).expect("open wal"));
    let (durable_tx, durable_rx) = tokio::sync::watch::channel(0u64);
    wal.on_durable(move |index| {
        durable_tx.send_replace(index);
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let payload = Bytes::from(vec![0xa5; size]);
    let start = Instant::now();
    let deadline = start + run;
    let (entries, latencies_us) = runtime.block_on(async {
        let mut appenders = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let (wal, payload) = (Arc::clone(&wal), payload.clone());
            let mut durable = durable_rx.clone();
            appenders.spawn(async move {
                let mut latencies_us = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let next = wal.last_index() + 1;
                    let index = wal
                        .append(&[Entry::new(next, 1, 0, payload.clone())])
                        .expect("append");
                    durable
                        .wait_for(|&d| d >= index)
                        .await
                        .expect("the log outlives its appenders");
                    latencies_us.push(t.elapsed().as_micros() as u64);
                }
                latencies_us
            });
        }
        let mut all = Vec::new();
        while let Some(done) = appenders.join_next().await {
            all.extend(done.expect("appender"));
        }
        (all.len() as u64, all)
    });
    wal.sync().expect("final sync");
    let elapsed = start.elapsed();
    drop(wal);
    Cell::measured(entries, size, elapsed, latencies_us)
}

fn row(label: &str, size: usize, threads: &str, cell: &mut Cell) {
    let p = |c: &mut Cell, q| {
        c.percentile_us(q)
            .map_or("-".to_string(), |v| format!("{v}"))
    };
    let (p50, p99) = (p(cell, 0.50), p(cell, 0.99));
    println!(
        "| {label:<22} | {size:>7} | {threads:>7} | {:>11.0} | {:>8.1} | {p50:>9} | {p99:>9} |",
        cell.per_sec(),
        cell.mib_per_sec(),
    );
}

/// One measurement of the table.
#[derive(Clone, Copy, PartialEq)]
enum Spec {
    RawSync {
        size: usize,
    },
    RawSequential,
    Wal {
        name: &'static str,
        policy: Durability,
        size: usize,
    },
    WalTasks {
        tasks: usize,
        size: usize,
    },
}

impl Spec {
    fn run(self, dir: &Path, run: Duration) -> Cell {
        match self {
            Spec::RawSync { size } => raw_write_fdatasync(dir, size, run),
            Spec::RawSequential => raw_sequential(dir, run),
            Spec::Wal { policy, size, .. } => wal_cell(dir, policy, size, run),
            Spec::WalTasks { tasks, size } => wal_task_cell(dir, tasks, size, run),
        }
    }

    fn print(self, cell: &mut Cell) {
        match self {
            Spec::RawSync { size } => row("raw write+fdatasync", size, "1", cell),
            Spec::RawSequential => row("raw sequential write", 1 << 20, "1", cell),
            Spec::Wal { name, size, .. } => row(&format!("wal {name}"), size, "1", cell),
            Spec::WalTasks { tasks, size } => {
                row("wal Always, tasks", size, &format!("{tasks} t"), cell)
            }
        }
    }
}

/// Each measurement runs in this many slices, interleaved with the others in an order that
/// rotates from slice to slice, so that load changes on a shared machine hit every cell alike
/// and the same-run ratios stay fair.
const SLICES: u32 = 10;

fn main() {
    let mut dir: Option<PathBuf> = None;
    let mut seconds = 3.0f64;
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from),
            "--only" => only = args.next(),
            "--seconds" => {
                seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                    eprintln!("--seconds wants a number");
                    std::process::exit(2)
                })
            }
            _ => {
                eprintln!("usage: wal_bench [--dir D] [--seconds S] [--only SUBSTRING]");
                std::process::exit(2);
            }
        }
    }
    let run = Duration::from_secs_f64(seconds.clamp(0.1, 600.0));
    let scratch;
    let base = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).expect("create --dir");
            d
        }
        None => {
            scratch = tempfile::Builder::new()
                .prefix(".wal-bench-")
                .tempdir_in(".")
                .expect("create a directory under the current one");
            scratch.path().to_path_buf()
        }
    };
    let policies = [
        ("Always", Durability::Always),
        (
            "Interval(5 ms)",
            Durability::Interval(Duration::from_millis(5)),
        ),
        ("Never", Durability::Never),
    ];
    // `TEXT$` matches labels ending in `TEXT` (`tasks 256 1$` leaves out 16 tasks).
    let wanted = |label: &str| {
        only.as_ref().is_none_or(|o| match o.strip_suffix('$') {
            Some(end) => label.ends_with(end),
            None => label.contains(o.as_str()),
        })
    };
    let mut specs = Vec::new();
    for size in ENTRY_SIZES {
        if wanted(&format!("raw write+fdatasync {size}")) {
            specs.push(Spec::RawSync { size });
        }
    }
    if wanted("raw sequential") {
        specs.push(Spec::RawSequential);
    }
    for size in ENTRY_SIZES {
        for (name, policy) in policies {
            if wanted(&format!("wal {name} {size}")) {
                specs.push(Spec::Wal { name, policy, size });
            }
        }
        for tasks in TASKS {
            if wanted(&format!("wal Always tasks {size} {tasks}")) {
                specs.push(Spec::WalTasks { tasks, size });
            }
        }
    }
    println!(
        "directory: {}, {:.1} s per measurement in {SLICES} interleaved slices",
        base.display(),
        run.as_secs_f64()
    );
    let mut cells: Vec<Cell> = specs
        .iter()
        .map(|_| Cell {
            entries: 0,
            payload_bytes: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
        })
        .collect();
    for slice in 0..SLICES as usize {
        // Rotate the order each slice, so that no cell always follows the same one (a cell
        // right after a heavy one pays for the disk catching up).
        for k in 0..specs.len() {
            let i = (k + slice * 7) % specs.len();
            let (spec, cell) = (&specs[i], &mut cells[i]);
            let c = spec.run(&base, run / SLICES);
            cell.entries += c.entries;
            cell.payload_bytes += c.payload_bytes;
            cell.elapsed += c.elapsed;
            cell.latencies_us.extend(c.latencies_us);
        }
    }
    println!();
    println!("| what                   |   bytes | threads |   entries/s |    MiB/s | p50 µs    | p99 µs    |");
    println!("|------------------------|--------:|--------:|------------:|---------:|----------:|----------:|");
    for (spec, cell) in specs.iter().zip(cells.iter_mut()) {
        spec.print(cell);
    }
    let find = |want: Spec| {
        specs
            .iter()
            .zip(cells.iter())
            .find(|(s, _)| **s == want)
            .map(|(_, c)| (c.per_sec(), c.mib_per_sec()))
            .unwrap_or((f64::NAN, f64::NAN))
    };
    let always = |size| {
        find(Spec::Wal {
            name: "Always",
            policy: Durability::Always,
            size,
        })
        .0
    };
    let tasks = |tasks, size| find(Spec::WalTasks { tasks, size }).0;
    println!();
    println!("Threads: one appender thread, blocking in wait_durable; `t`: async tasks on one");
    println!("thread, each awaiting its entry through on_durable (one append call per entry).");
    println!("Latency: with Always, from append to the appender learning it is durable; otherwise");
    println!("from append to the durable listener passing the entry (sampled). Times include a");
    println!("final fsync.");
    println!();
    for size in ENTRY_SIZES {
        println!(
            "Always, 16 tasks / 1 task, {size} B: {:.1}x (want >= 8x)",
            tasks(16, size) / tasks(1, size)
        );
    }
    println!(
        "Always, 1 appender, 256 B / raw write+fdatasync 256 B: {:.0}% (want >= 80%)",
        100.0 * always(256) / find(Spec::RawSync { size: 256 }).0
    );
    let never = find(Spec::Wal {
        name: "Never",
        policy: Durability::Never,
        size: 4096,
    });
    println!(
        "Never, 1 appender, 4 KiB / raw sequential write: {:.0}% (want >= 50%)",
        100.0 * never.1 / find(Spec::RawSequential).1
    );
}
