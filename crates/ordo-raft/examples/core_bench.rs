//! Throughput of the consensus core alone: three nodes in one process, messages moved in
//! memory, entries "persisted" instantly into `MemStorage`, batched proposals of small
//! entries. Prints committed entries/s and bytes/s.
//!
//! ```text
//! cargo run --release -p ordo-raft --example core_bench -- [entries] [batch] [entry_bytes]
//! ```

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ordo_raft::{ConfState, Config, MemStorage, Message, RawNode, StateRole};

const NODES: u64 = 3;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("numeric argument"));
    let total_entries = args.next().unwrap_or(5_000_000);
    let batch_entries = args.next().unwrap_or(4096);
    let entry_bytes = args.next().unwrap_or(32);

    let mut nodes: Vec<RawNode<MemStorage>> = (1..=NODES)
        .map(|id| {
            let cfg = Config {
                max_append_bytes: 4 * 1024 * 1024,
                max_inflight_msgs: 64,
                max_uncommitted_bytes: 256 * 1024 * 1024,
                max_committed_bytes_per_ready: 64 * 1024 * 1024,
                seed: id,
                ..Config::new(id)
            };
            let storage = MemStorage::new_with_conf_state(ConfState::with_voters(1..=NODES));
            RawNode::new(cfg, storage).expect("valid config")
        })
        .collect();

    // One shared buffer; each entry is a cheap reference-counted slice of it.
    let pool_entries = 1 << 16;
    let mut pool = BytesMut::with_capacity((pool_entries * entry_bytes) as usize);
    for i in 0..pool_entries * entry_bytes {
        pool.extend_from_slice(&[(i % 251) as u8]);
    }
    let pool: Bytes = pool.freeze();

    let mut queue: VecDeque<Message> = VecDeque::new();
    let mut applied = [0u64; NODES as usize];
    nodes[0].campaign().expect("node 1 is a voter");
    drive(&mut nodes, &mut queue, &mut applied);
    assert_eq!(nodes[0].role(), StateRole::Leader, "node 1 must lead");
    let base_applied = applied[0];

    let start = Instant::now();
    let mut proposed = 0u64;
    let mut slot = 0u64;
    while applied[0] - base_applied < total_entries {
        if proposed < total_entries {
            let n = batch_entries.min(total_entries - proposed);
            let batch = (0..n).map(|_| {
                let off = ((slot % pool_entries) * entry_bytes) as usize;
                slot += 1;
                pool.slice(off..off + entry_bytes as usize)
            });
            match nodes[0].propose_batch(batch) {
                Ok(_) => proposed += n,
                Err(ordo_raft::Error::UncommittedBytesExceeded { .. }) => {}
                Err(e) => panic!("proposal failed: {e}"),
            }
        }
        drive(&mut nodes, &mut queue, &mut applied);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let committed = applied[0] - base_applied;
    for (i, a) in applied.iter().enumerate() {
        assert!(
            *a >= base_applied + committed - batch_entries * 64,
            "node {} far behind",
            i + 1
        );
    }
    println!("core_bench: 3 nodes, {entry_bytes} B entries, batches of {batch_entries}");
    println!("committed entries:   {committed}");
    println!("elapsed:             {elapsed:.3} s");
    println!("committed entries/s: {:.0}", committed as f64 / elapsed);
    println!(
        "committed MiB/s:     {:.1}",
        (committed * entry_bytes) as f64 / elapsed / (1024.0 * 1024.0)
    );
}

/// Runs every node's Ready loop and delivers messages until the cluster is quiet.
fn drive(nodes: &mut [RawNode<MemStorage>], queue: &mut VecDeque<Message>, applied: &mut [u64]) {
    loop {
        let mut progressed = false;
        for (i, node) in nodes.iter_mut().enumerate() {
            if !node.has_ready() {
                continue;
            }
            progressed = true;
            let rd = node.ready();
            queue.extend(rd.messages);
            if let Some(hs) = rd.hard_state {
                node.storage_mut().set_hard_state(hs);
            }
            node.storage_mut().append_owned(rd.entries);
            queue.extend(rd.persisted_messages);
            applied[i] += rd
                .committed_entries
                .iter()
                .filter(|e| !e.data.is_empty())
                .count() as u64;
            node.advance();
        }
        while let Some(m) = queue.pop_front() {
            progressed = true;
            let to = (m.to - 1) as usize;
            nodes[to].step(m).expect("step");
        }
        if !progressed {
            return;
        }
    }
}
