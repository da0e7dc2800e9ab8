//! Proposal throughput and latency of a three-node in-process cluster over loopback, with
//! real WALs (`fsync = always`) in a temporary directory.
//!
//! ```text
//! cargo run --release -p ordo-node --example propose_bench -- [clients] [proposals per client] [bytes]
//! ```
//!
//! Defaults: 64 clients, 200 proposals each, 100-byte payloads, all sent to the leader.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_node::{Group, GroupId, Index, Node, NodeConfig, RestoreError, StateMachine, StateRole};

/// Counts applied bytes; the cheapest possible state machine, so the figures show the
/// runtime's cost.
#[derive(Default)]
struct Sink {
    bytes: u64,
    applied: Index,
}

impl StateMachine for Sink {
    type Output = ();
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let clients = args.first().copied().unwrap_or(64);
    let per_client = args.get(1).copied().unwrap_or(200);
    let payload_bytes = args.get(2).copied().unwrap_or(100);

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
    let mut groups: Vec<Group<Sink>> = Vec::new();
    for (id, listener) in listeners {
        let mut config = NodeConfig::new(
            id,
            dir.path().join(format!("node-{id}")),
            peers[&id],
            peers.clone(),
        );
        config.tick_interval_ms = 20;
        let node = Node::start_on(config, listener)?;
        groups.push(node.start_group(GroupId(1), Sink::default()).await?);
        nodes.push(node);
    }
    let leader = loop {
        let mut found = None;
        for g in &groups {
            if g.status().await?.role == StateRole::Leader {
                found = Some(g.clone());
            }
        }
        if let Some(g) = found {
            break g;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let payload = Bytes::from(vec![b'x'; payload_bytes]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let g = leader.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                g.propose(payload.clone()).await?;
                latencies_us.push(t.elapsed().as_micros() as u64);
            }
            Ok::<_, ordo_node::ProposeError>(latencies_us)
        }));
    }
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await??);
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    let q = |p: f64| latencies_us[((latencies_us.len() - 1) as f64 * p) as usize];
    let total = latencies_us.len();
    println!(
        "{total} proposals of {payload_bytes} B from {clients} clients in {:.2} s: {:.0} proposals/s; latency p50 {} us, p99 {} us, max {} us",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        q(0.5),
        q(0.99),
        q(1.0),
    );
    let m = leader.metrics();
    println!(
        "leader fsync-to-durable p50 <= {} us, p99 <= {} us over {} appends",
        m.fsync_latency_us.quantile_upper_bound(0.5),
        m.fsync_latency_us.quantile_upper_bound(0.99),
        m.fsync_latency_us.count
    );
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
