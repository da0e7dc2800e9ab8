//! What idle groups cost: a three-node in-process cluster over loopback hosting many groups
//! that receive no requests, with the default 100 ms tick. Prints the process's CPU time
//! while every group is quiesced, then wakes one group with a proposal.
//!
//! ```text
//! cargo run --release -p ordo-node --example idle_groups -- [groups] [seconds measured]
//! ```
//!
//! Defaults: 1,000 groups (3,000 group replicas in the process), 10 seconds. Linux only (it
//! reads `/proc/self/task`). The CPU time is shown by kind of thread, the main thread (which
//! only sleeps and reads these figures) left out. Each group's WAL has a
//! sync thread of its own for now, so a run with many thousands of groups needs as many
//! threads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_node::{Group, GroupId, Index, Node, NodeConfig, RestoreError, StateMachine};

/// Counts entries.
#[derive(Default)]
struct Counter {
    n: u64,
    applied: Index,
}

impl StateMachine for Counter {
    type Output = u64;
    fn apply(&mut self, index: Index, _: &[u8]) -> u64 {
        self.n += 1;
        self.applied = index;
        self.n
    }
    fn note_applied(&mut self, index: Index) {
        self.applied = index;
    }
    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.n.to_be_bytes())
    }
    fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError> {
        let raw: [u8; 8] = data
            .try_into()
            .map_err(|_| RestoreError::new("counter snapshot is not 8 bytes"))?;
        self.n = u64::from_be_bytes(raw);
        self.applied = index;
        Ok(())
    }
    fn applied_index(&self) -> Index {
        self.applied
    }
}

/// User plus system CPU time of this process's threads, by thread name, from
/// `/proc/self/task/*/stat` (in clock ticks of 10 ms, the kernel's `USER_HZ`). Threads that
/// ended meanwhile are not counted.
fn cpu_by_thread() -> Result<BTreeMap<String, Duration>, Box<dyn std::error::Error>> {
    let mut by_name = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        // Fields after the thread name (which may hold spaces) start at its closing ')'.
        let rest = stat.rsplit_once(')').ok_or("unexpected stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        *by_name.entry(name.trim().to_string()).or_default() += Duration::from_millis(ticks * 10);
    }
    Ok(by_name)
}

/// The CPU time each kind of thread used between two readings, largest first.
fn cpu_between(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> Vec<(String, Duration)> {
    let mut used: Vec<(String, Duration)> = after
        .iter()
        .map(|(name, &t)| {
            let kind = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
            let start = before.get(name).copied().unwrap_or_default();
            (kind.to_string(), t.saturating_sub(start))
        })
        .fold(
            BTreeMap::new(),
            |mut sum: BTreeMap<String, Duration>, (k, t)| {
                *sum.entry(k).or_default() += t;
                sum
            },
        )
        .into_iter()
        .collect();
    used.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    used
}

fn quiesced(nodes: &[Node], groups: u64) -> u64 {
    let mut n = 0;
    for node in nodes {
        for g in 1..=groups {
            n += u64::from(node.metrics(GroupId(g)).is_some_and(|m| m.quiesced));
        }
    }
    n
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let groups = args.first().copied().unwrap_or(1_000);
    let seconds = args.get(1).copied().unwrap_or(10);

    let dir = tempfile::tempdir()?;
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(id, tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let peers: BTreeMap<u64, _> = listeners
        .iter()
        .map(|(id, l)| Ok((*id, l.local_addr()?)))
        .collect::<Result<_, std::io::Error>>()?;
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        let config = NodeConfig::new(
            id,
            dir.path().join(format!("node-{id}")),
            peers[&id],
            peers.clone(),
        );
        nodes.push(Node::start_on(config, listener)?);
    }
    let started = Instant::now();
    let mut first: Vec<Group<Counter>> = Vec::new();
    for g in 1..=groups {
        for node in &nodes {
            let group = node
                .start_group_with(
                    GroupId(g),
                    Counter::default(),
                    ordo_node::GroupOptions {
                        quiesce: true,
                        ..Default::default()
                    },
                )
                .await?;
            if g == 1 {
                first.push(group);
            }
        }
    }
    println!(
        "{groups} groups on 3 nodes started in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let replicas = 3 * groups;
    let waited = Instant::now();
    while quiesced(&nodes, groups) < replicas {
        if waited.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "only {} of {replicas} replicas quiesced in 10 minutes",
                quiesced(&nodes, groups)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "all {replicas} replicas quiesced {:.1} s after the last group started",
        waited.elapsed().as_secs_f64()
    );

    let (cpu_before, wall_before) = (cpu_by_thread()?, Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (cpu_after, wall) = (cpu_by_thread()?, wall_before.elapsed());
    // The main thread only sleeps, and reads /proc for these figures: leave it out.
    let main = std::fs::read_to_string("/proc/self/comm")?
        .trim()
        .to_string();
    let used: Vec<(String, Duration)> = cpu_between(&cpu_before, &cpu_after)
        .into_iter()
        .filter(|(kind, _)| *kind != main)
        .collect();
    let share = |t: Duration| 100.0 * t.as_secs_f64() / wall.as_secs_f64();
    let total: Duration = used.iter().map(|(_, t)| *t).sum();
    println!(
        "idle for {:.1} s: {:.2}% of one core in all; {} replicas still quiesced",
        wall.as_secs_f64(),
        share(total),
        quiesced(&nodes, groups)
    );
    for (kind, t) in used.iter().filter(|(_, t)| !t.is_zero()) {
        println!("  {kind:<16} {:>6.2}%", share(*t));
    }

    let woken = Instant::now();
    first[0].propose("wake up").await?;
    println!(
        "a proposal to a quiesced group applied in {:.1} ms",
        woken.elapsed().as_secs_f64() * 1000.0
    );
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
