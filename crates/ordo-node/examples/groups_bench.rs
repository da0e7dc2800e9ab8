//! Many Raft groups on a three-node cluster of real processes over loopback, with the
//! shared log (`fsync = always`) in a temporary directory.
//!
//! ```text
//! cargo run --release -p ordo-node --example groups_bench -- [--groups 1,100,1000,10000]
//!     [--seconds 10] [--idle-seconds 10] [--proposers 64] [--bytes 256] [--rate N]
//!     [--apply quick|workers] [--propose-at any|leader]
//! ```
//!
//! `--rate` paces the proposers to `N` proposals/s in all (open loop), so that runs with
//! different group counts carry the same load; without it each proposer proposes again as
//! soon as its last proposal applied.
//!
//! `--apply` says what the groups' state machine declares: `quick` (the default) applies
//! quickly ([`StateMachine::APPLIES_QUICKLY`]), so committed entries are applied on the
//! group's own task where they can be; `workers` hands every batch to the apply workers, as
//! a state machine that may block does.
//!
//! `--propose-at` says where the proposers propose: `any` (the default) spreads them
//! evenly over the three processes, each proposing to groups chosen at random among all of
//! them, so that two proposals in three are made on a follower and forwarded to the
//! group's leader, as an etcd client's request to any member is; `leader` gives each
//! process a share of the proposers in proportion to the groups it leads, each proposing
//! to groups chosen at random among those, as a Kafka producer sends every record to its
//! partition's leader.
//!
//! For each group count the example starts three node processes (itself, re-run with
//! `--node`), each hosting every group (three voters each), and prints:
//!
//! - proposals/s with `--bytes` entries to groups chosen at random, from `--proposers`
//!   concurrent proposers placed as `--propose-at` says, and their p50/p99 latency until
//!   applied;
//! - the CPU time all three processes spent during that load, per proposal (user and
//!   system time: steadier between runs than proposals/s, which moves with the disk's
//!   fsync latency of the moment);
//! - the peer messages all three nodes sent per proposal, and the socket writes that
//!   carried them (messages to one peer leave in one write when they are queued together);
//! - the turns of the groups' drivers on all three nodes per proposal (each a wake-up of
//!   a group's task);
//! - fsyncs per second per node, as the log counts them;
//! - idle CPU % of one core and resident memory per node once every group is idle;
//! - the time a node takes to start all of the groups new (bootstrapping each), the slowest
//!   of the three, and to restart hosting all of them.
//!
//! The parent talks to each node process over its stdin and stdout, one line per step.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_node::{
    Group, GroupId, GroupOptions, Index, Node, NodeConfig, RestoreError, StateMachine,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

// The node processes allocate as the `ordo` binary does, so that the figures are those of
// a real node: glibc's malloc family took about a tenth of a node's busy time under the
// 1,000-group load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Counts applied bytes: the cheapest state machine, so the figures show the runtime's cost.
/// `QUICK` is what it declares as [`StateMachine::APPLIES_QUICKLY`].
#[derive(Default)]
struct Sink<const QUICK: bool> {
    bytes: u64,
    applied: Index,
}

impl<const QUICK: bool> StateMachine for Sink<QUICK> {
    type Output = ();
    const APPLIES_QUICKLY: bool = QUICK;
    fn apply(&mut self, index: Index, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.applied = index;
    }
    fn note_applied(&mut self, index: Index) {
        self.applied = index;
    }
    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.bytes.to_be_bytes())
    }
    fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError> {
        let raw: [u8; 8] = data
            .try_into()
            .map_err(|_| RestoreError::new("sink snapshot is not 8 bytes"))?;
        self.bytes = u64::from_be_bytes(raw);
        self.applied = index;
        Ok(())
    }
    fn applied_index(&self) -> Index {
        self.applied
    }
}

/// Latencies in buckets about 2% wide, so that three processes' figures merge exactly.
#[derive(Default, Clone)]
struct Buckets(BTreeMap<u32, u64>);

impl Buckets {
    fn bucket(us: u64) -> u32 {
        ((us.max(1) as f64).ln() / 1.02f64.ln()) as u32
    }
    fn record(&mut self, us: u64) {
        *self.0.entry(Self::bucket(us)).or_default() += 1;
    }
    fn merge(&mut self, other: &Buckets) {
        for (&b, &n) in &other.0 {
            *self.0.entry(b).or_default() += n;
        }
    }
    fn count(&self) -> u64 {
        self.0.values().sum()
    }
    /// The upper bound of the bucket holding quantile `q`, in microseconds.
    fn quantile(&self, q: f64) -> u64 {
        let target = ((self.count() as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (&b, &n) in &self.0 {
            seen += n;
            if seen >= target {
                return 1.02f64.powi(b as i32 + 1) as u64;
            }
        }
        0
    }
    /// One word: `-` when empty (a process without proposers).
    fn encode(&self) -> String {
        if self.0.is_empty() {
            return "-".into();
        }
        let parts: Vec<String> = self.0.iter().map(|(b, n)| format!("{b}:{n}")).collect();
        parts.join(",")
    }
    fn decode(s: &str) -> Result<Buckets, Error> {
        let mut out = Buckets::default();
        for part in s.split(',').filter(|p| !p.is_empty() && *p != "-") {
            let (b, n) = part.split_once(':').ok_or("bad bucket")?;
            out.0.insert(b.parse()?, n.parse()?);
        }
        Ok(out)
    }
}

struct Args {
    groups: Vec<u64>,
    seconds: u64,
    idle_seconds: u64,
    proposers: usize,
    bytes: usize,
    /// Proposals per second over all proposers; 0 for as fast as they go.
    rate: u64,
    /// `quick` or `workers`: see the module's documentation.
    apply: String,
    /// Proposers propose on the groups' leaders only.
    at_leader: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, Error> {
    let mut out = Args {
        groups: vec![1, 100, 1_000, 10_000],
        seconds: 10,
        idle_seconds: 10,
        proposers: 64,
        bytes: 256,
        rate: 0,
        apply: "quick".into(),
        at_leader: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--groups" => {
                out.groups = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => out.seconds = value()?.parse()?,
            "--idle-seconds" => out.idle_seconds = value()?.parse()?,
            "--proposers" => out.proposers = value()?.parse()?,
            "--bytes" => out.bytes = value()?.parse()?,
            "--rate" => out.rate = value()?.parse()?,
            "--apply" => {
                out.apply = value()?;
                if out.apply != "quick" && out.apply != "workers" {
                    return Err(format!("--apply is quick or workers, not {}", out.apply).into());
                }
            }
            "--propose-at" => {
                out.at_leader = match value()?.as_str() {
                    "any" => false,
                    "leader" => true,
                    other => {
                        return Err(format!("--propose-at is any or leader, not {other}").into())
                    }
                }
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if out.groups.contains(&0) || out.proposers == 0 || out.seconds == 0 {
        return Err("--groups, --proposers and --seconds must be positive".into());
    }
    Ok(out)
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--node") {
        args.next();
        return node_main(args.collect());
    }
    let args = parse_args(args)?;
    println!(
        "| groups | proposals/s | p50 ms | p99 ms | CPU µs per proposal | peer messages per proposal | peer writes per proposal | group turns per proposal | fsyncs/s per node | idle CPU % per node | RSS MiB per node | RSS KiB per group | first start s | restart s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &groups in &args.groups {
        let row = run_cluster(&args, groups)?;
        println!(
            "| {groups} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2} | {:.2} |",
            row.proposals_per_s,
            row.p50_us as f64 / 1000.0,
            row.p99_us as f64 / 1000.0,
            row.cpu_us_per_proposal,
            row.messages_per_proposal,
            row.writes_per_proposal,
            row.turns_per_proposal,
            row.fsyncs_per_s,
            row.idle_cpu_percent,
            row.rss_kib as f64 / 1024.0,
            row.rss_kib as f64 / groups as f64,
            row.first_start_s,
            row.restart_s,
        );
    }
    Ok(())
}

struct Row {
    proposals_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    cpu_us_per_proposal: f64,
    /// Peer messages sent by all three nodes, per proposal.
    messages_per_proposal: f64,
    /// Writes of peer message batches to sockets by all three nodes, per proposal.
    writes_per_proposal: f64,
    /// Turns of the groups' drivers on all three nodes, per proposal.
    turns_per_proposal: f64,
    fsyncs_per_s: f64,
    idle_cpu_percent: f64,
    rss_kib: u64,
    first_start_s: f64,
    restart_s: f64,
}

/// One node process, spoken to line by line.
struct NodeProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NodeProcess {
    fn send(&mut self, line: &str) -> Result<(), Error> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }
    /// The next line that starts with `word`, split after it.
    fn expect(&mut self, word: &str) -> Result<Vec<String>, Error> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                return Err(format!("node process exited before `{word}`").into());
            }
            let mut parts = line.split_whitespace().map(str::to_owned);
            if parts.next().as_deref() == Some(word) {
                return Ok(parts.collect());
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // Only the processes this example started, by their handles.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_ports(n: usize) -> Result<Vec<SocketAddr>, Error> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?)
}

fn run_cluster(args: &Args, groups: u64) -> Result<Row, Error> {
    let dir = tempfile::tempdir()?;
    let addrs = free_ports(3)?;
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    let exe = std::env::current_exe()?;
    let mut nodes = Vec::new();
    for id in 1..=3usize {
        // Each proposer's share of the rate, as the gap between its proposals.
        let gap_us = match args.rate {
            0 => 0,
            rate => args.proposers as u64 * 1_000_000 / rate,
        };
        let mut child = Command::new(&exe)
            .arg("--node")
            .args([
                id.to_string(),
                dir.path().join(format!("node-{id}")).display().to_string(),
                peers.join(","),
                groups.to_string(),
                args.bytes.to_string(),
                gap_us.to_string(),
                args.apply.clone(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        nodes.push(NodeProcess {
            child,
            stdin,
            stdout,
        });
    }
    let mut first_start_s: f64 = 0.0;
    for n in &mut nodes {
        first_start_s = first_start_s.max(n.expect("started")?[0].parse()?);
    }
    for n in &mut nodes {
        n.send("leaders")?;
    }
    let mut led = Vec::new();
    for n in &mut nodes {
        led.push(n.expect("leaders")?[0].parse::<usize>()?);
    }
    let shares = if args.at_leader {
        shares(args.proposers, &led)
    } else {
        shares(args.proposers, &[1, 1, 1])
    };

    for (n, share) in nodes.iter_mut().zip(&shares) {
        let at = if args.at_leader { "leader" } else { "any" };
        n.send(&format!("load {} {share} {at}", args.seconds))?;
    }
    let mut latencies = Buckets::default();
    let mut proposals = 0u64;
    let mut fsyncs = 0u64;
    let mut load_cpu_s = 0.0f64;
    let mut elapsed_s: f64 = 0.0;
    let (mut messages, mut writes, mut turns) = (0u64, 0u64, 0u64);
    for n in &mut nodes {
        let got = n.expect("load")?;
        let [count, fs, secs, cpu_s, sent, batches, turned, buckets] = got.as_slice() else {
            return Err("bad load line".into());
        };
        proposals += count.parse::<u64>()?;
        fsyncs += fs.parse::<u64>()?;
        messages += sent.parse::<u64>()?;
        writes += batches.parse::<u64>()?;
        turns += turned.parse::<u64>()?;
        load_cpu_s += cpu_s.parse::<f64>()?;
        elapsed_s = elapsed_s.max(secs.parse()?);
        latencies.merge(&Buckets::decode(buckets)?);
    }

    for n in &mut nodes {
        n.send(&format!("idle {}", args.idle_seconds))?;
    }
    let (mut cpu, mut rss) = (0.0f64, 0u64);
    for n in &mut nodes {
        let got = n.expect("idle")?;
        let [c, r] = got.as_slice() else {
            return Err("bad idle line".into());
        };
        cpu = cpu.max(c.parse()?);
        rss = rss.max(r.parse()?);
    }

    nodes[2].send("restart")?;
    let restart_s: f64 = nodes[2].expect("restarted")?[0].parse()?;
    for n in &mut nodes {
        n.send("quit")?;
    }
    for n in &mut nodes {
        n.expect("bye")?;
    }
    Ok(Row {
        proposals_per_s: proposals as f64 / elapsed_s,
        p50_us: latencies.quantile(0.5),
        p99_us: latencies.quantile(0.99),
        cpu_us_per_proposal: load_cpu_s * 1e6 / proposals.max(1) as f64,
        messages_per_proposal: messages as f64 / proposals.max(1) as f64,
        writes_per_proposal: writes as f64 / proposals.max(1) as f64,
        turns_per_proposal: turns as f64 / proposals.max(1) as f64,
        fsyncs_per_s: fsyncs as f64 / 3.0 / elapsed_s,
        idle_cpu_percent: cpu,
        rss_kib: rss,
        first_start_s,
        restart_s,
    })
}

/// `total` proposers divided in proportion to `weights` (largest remainders first), so
/// that the shares add up to `total`.
fn shares(total: usize, weights: &[usize]) -> Vec<usize> {
    let sum: usize = weights.iter().sum::<usize>().max(1);
    let mut out: Vec<usize> = weights.iter().map(|w| total * w / sum).collect();
    let mut by_remainder: Vec<usize> = (0..weights.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse((total * weights[i] % sum, weights[i])));
    let given: usize = out.iter().sum();
    for &i in by_remainder.iter().take(total - given) {
        out[i] += 1;
    }
    out
}

/// A node process: `--node ID DIR PEERS GROUPS BYTES GAP_US APPLY`.
fn node_main(args: Vec<String>) -> Result<(), Error> {
    let [id, dir, peers, groups, bytes, gap_us, apply] = args.as_slice() else {
        return Err("usage: --node ID DIR PEERS GROUPS BYTES GAP_US APPLY".into());
    };
    let gap = Duration::from_micros(gap_us.parse()?);
    let id: u64 = id.parse()?;
    let dir = PathBuf::from(dir);
    let peers: BTreeMap<u64, SocketAddr> = peers
        .split(',')
        .map(|p| {
            let (i, a) = p.split_once('=').ok_or("bad peer")?;
            Ok::<_, Error>((i.parse()?, a.parse()?))
        })
        .collect::<Result<_, _>>()?;
    let groups: u64 = groups.parse()?;
    let payload = Bytes::from(vec![b'x'; bytes.parse()?]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match apply.as_str() {
        "quick" => runtime.block_on(serve_node::<Sink<true>>(
            id, &dir, peers, groups, gap, payload,
        )),
        _ => runtime.block_on(serve_node::<Sink<false>>(
            id, &dir, peers, groups, gap, payload,
        )),
    }
}

/// The bench's state machines.
trait BenchMachine: StateMachine<Output = ()> + Default {}
impl<S: StateMachine<Output = ()> + Default> BenchMachine for S {}

async fn start<S: BenchMachine>(
    id: u64,
    dir: &Path,
    peers: &BTreeMap<u64, SocketAddr>,
    groups: u64,
) -> Result<(Node, Vec<Group<S>>), Error> {
    let config = NodeConfig::new(id, dir.to_path_buf(), peers[&id], peers.clone());
    let node = Node::start(config).await?;
    let batch = (1..=groups)
        .map(|g| (GroupId(g), S::default(), GroupOptions::default()))
        .collect();
    let mut handles = Vec::with_capacity(groups as usize);
    for started in node.start_groups(batch).await {
        handles.push(started?);
    }
    Ok((node, handles))
}

async fn serve_node<S: BenchMachine>(
    id: u64,
    dir: &Path,
    peers: BTreeMap<u64, SocketAddr>,
    groups: u64,
    gap: Duration,
    payload: Bytes,
) -> Result<(), Error> {
    let t = Instant::now();
    let (mut node, mut handles) = start::<S>(id, dir, &peers, groups).await?;
    println!("started {:.3}", t.elapsed().as_secs_f64());
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("leaders") => {
                // Every group has a leader once a proposal to it commits.
                for h in &handles {
                    h.propose(payload.clone()).await?;
                }
                println!("leaders {}", led_by(&handles, id).len());
            }
            Some("load") => {
                let secs: u64 = words.next().ok_or("load needs seconds")?.parse()?;
                let proposers: usize = words.next().ok_or("load needs proposers")?.parse()?;
                // The groups this node's proposers propose to.
                let targets = match words.next() {
                    Some("leader") => led_by(&handles, id),
                    Some("any") => handles.clone(),
                    other => return Err(format!("load needs any or leader, not {other:?}").into()),
                };
                if proposers > 0 && targets.is_empty() {
                    return Err("proposers for a node that leads no group".into());
                }
                let before = node.log_stats().fsyncs;
                let peer_before = peer_counts(&node);
                let turns_before = turns(&handles);
                let cpu_before = cpu_seconds()?;
                let stop = Arc::new(AtomicBool::new(false));
                let started = Instant::now();
                let mut tasks = Vec::new();
                for p in 0..proposers {
                    let handles = targets.clone();
                    let payload = payload.clone();
                    let stop = Arc::clone(&stop);
                    // A small deterministic generator per proposer is enough to spread
                    // the proposals over the groups.
                    let mut state = ((id << 32 | p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
                    tasks.push(tokio::spawn(async move {
                        let mut latencies = Buckets::default();
                        // Each proposer starts at a random point of its period, so the
                        // paced load arrives spread out as independent clients' would, not
                        // in bursts of every proposer at once.
                        let phase = gap.mul_f64((state % 1024) as f64 / 1024.0);
                        let mut next = tokio::time::Instant::now() + phase;
                        while !stop.load(Ordering::Relaxed) {
                            if !gap.is_zero() {
                                tokio::time::sleep_until(next).await;
                                next += gap;
                            }
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            let g = &handles[(state % handles.len() as u64) as usize];
                            let t = Instant::now();
                            g.propose(payload.clone()).await?;
                            latencies.record(t.elapsed().as_micros() as u64);
                        }
                        Ok::<_, ordo_node::ProposeError>(latencies)
                    }));
                }
                tokio::time::sleep(Duration::from_secs(secs)).await;
                stop.store(true, Ordering::Relaxed);
                let mut latencies = Buckets::default();
                for t in tasks {
                    latencies.merge(&t.await??);
                }
                let elapsed = started.elapsed().as_secs_f64();
                let fsyncs = node.log_stats().fsyncs - before;
                let peer_after = peer_counts(&node);
                println!(
                    "load {} {fsyncs} {elapsed:.3} {:.3} {} {} {} {}",
                    latencies.count(),
                    cpu_seconds()? - cpu_before,
                    peer_after.0 - peer_before.0,
                    peer_after.1 - peer_before.1,
                    turns(&handles) - turns_before,
                    latencies.encode()
                );
            }
            Some("idle") => {
                let secs: u64 = words.next().ok_or("idle needs seconds")?.parse()?;
                // Let the groups settle after the load, then measure.
                tokio::time::sleep(Duration::from_secs(secs.div_ceil(2))).await;
                let (cpu_before, t) = (cpu_seconds()?, Instant::now());
                tokio::time::sleep(Duration::from_secs(secs)).await;
                let cpu = (cpu_seconds()? - cpu_before) / t.elapsed().as_secs_f64() * 100.0;
                println!("idle {cpu:.2} {}", rss_kib()?);
            }
            Some("restart") => {
                drop(handles);
                node.shutdown().await;
                let t = Instant::now();
                (node, handles) = start(id, dir, &peers, groups).await?;
                println!("restarted {:.3}", t.elapsed().as_secs_f64());
            }
            Some("quit") => break,
            _ => return Err(format!("unknown step {line:?}").into()),
        }
    }
    drop(handles);
    node.shutdown().await;
    println!("bye");
    Ok(())
}

/// The groups whose leader, as this node knows, is `id`.
fn led_by<S: BenchMachine>(handles: &[Group<S>], id: u64) -> Vec<Group<S>> {
    handles
        .iter()
        .filter(|h| h.leadership().borrow().leader == id)
        .cloned()
        .collect()
}

/// Peer messages and message batches this node has sent so far.
fn peer_counts(node: &Node) -> (u64, u64) {
    node.transport().map_or((0, 0), |t| {
        let m = t.metrics();
        (m.messages_sent, m.batches_sent)
    })
}

/// Turns of the drivers of `groups` so far.
fn turns<S: StateMachine>(groups: &[Group<S>]) -> u64 {
    groups.iter().map(|g| g.metrics().turns).sum()
}

/// User and system CPU time of this process so far, from `/proc/self/stat`.
fn cpu_seconds() -> Result<f64, Error> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').ok_or("bad /proc/self/stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // The kernel's USER_HZ is 100 on every Linux architecture Ordo runs on.
    Ok(ticks as f64 / 100.0)
}

/// Resident memory of this process, from `/proc/self/status`.
fn rss_kib() -> Result<u64, Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}
