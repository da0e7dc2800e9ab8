//! Scenario traces compared with golden files in `testdata/`: every message delivered and
//! every node's final state, so a change of behaviour shows up as a readable diff.
//! `ORDO_RAFT_BLESS=1 cargo test -p ordo-raft --test golden` accepts a new behaviour.

mod common;

use common::{golden, Cluster};
use ordo_raft::Config;

/// Seed 001, "Log Consistency": leader [1..5], follower [1,2,3].
#[test]
fn seed_001_backtracking() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "a");
    c.propose(1, "b");
    c.stabilize();
    c.isolate(3);
    c.propose(1, "c");
    c.propose(1, "d");
    c.stabilize();
    c.crash(1);
    c.heal();
    c.take_trace();
    c.elect(2);
    golden("seed_001_backtracking", &c.take_trace());
}

/// Seed 001, "What Happens to Uncommitted Entries", end to end.
#[test]
fn seed_001_leader_crash() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, "e2");
    c.propose(1, "e3");
    c.stabilize();
    c.isolate(3);
    c.propose(1, "e4");
    c.stabilize();
    c.isolate(2);
    c.propose(1, "e5");
    c.stabilize();
    let mut trace = String::from("# before the crash\n");
    trace.push_str(&c.take_trace());
    c.crash(1);
    c.heal();
    c.elect(2);
    c.propose(2, "after");
    c.stabilize();
    trace.push_str("# node 1 crashed, node 2 elected\n");
    trace.push_str(&c.take_trace());
    golden("seed_001_leader_crash", &trace);
}

/// Pre-vote and check-quorum: an isolated follower cannot raise its term; when it
/// returns it rejoins without an election.
#[test]
fn pre_vote_partitioned_follower_rejoins() {
    let mut c = Cluster::with_config(3, |id| Config {
        pre_vote: true,
        check_quorum: true,
        ..common::config(id)
    });
    c.tick_all(20);
    let leader = c.leaders()[0];
    let follower = if leader == 3 { 2 } else { 3 };
    c.take_trace();
    c.isolate(follower);
    for _ in 0..22 {
        c.tick(follower);
    }
    c.stabilize();
    let mut trace = format!("# node {follower} isolated for 22 ticks\n");
    trace.push_str(&c.take_trace());
    c.heal();
    c.tick_all(2);
    trace.push_str("# healed\n");
    trace.push_str(&c.take_trace());
    golden("pre_vote_partitioned_follower_rejoins", &trace);
}
