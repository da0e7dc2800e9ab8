//! The bounded attack: `ordo-check` starts three `ordo server` processes with short Raft
//! timings, runs every workload for 100 seconds (about two minutes with setup, catch-up and checking)
//! while the nemesis injects every
//! fault kind at least once, and must find nothing.
//!
//! The `ordo` binary is taken from `$ORDO_BIN` when set, else from the target directory this
//! test runs from (`<target>/<profile>/ordo`); when it is not there, the test builds it with
//! `cargo build -p ordo` into that same target directory first.

mod common;

use ordo_check::nemesis::FaultKind;
use ordo_check::{CheckArgs, Verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_run_with_every_fault_kind_finds_no_anomaly() {
    let binary = common::ordo_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = std::env::var("ORDO_CHECK_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(20261122);
    println!("bounded run seed {seed} (set ORDO_CHECK_SEED to change)");

    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }
    let args = Cli::parse_from([
        "ordo-check",
        "--ordo-bin",
        binary.to_str().expect("utf-8 path"),
        "--nodes",
        "3",
        "--data-dir",
        dir.path().to_str().expect("utf-8 temp path"),
        "--duration-secs",
        "100",
        "--faults",
        "all",
        "--fault-interval-ms",
        "500",
        "--fault-duration-ms",
        "1500",
        "--seed",
        &seed.to_string(),
        "--server-arg=--tick-interval-ms",
        "--server-arg=25",
        "--server-arg=--election-timeout-ticks",
        "--server-arg=10",
        "--server-arg=--heartbeat-interval-ticks",
        "--server-arg=1",
    ])
    .check;
    let summary = ordo_check::run(args).await.expect("the run completes");
    println!("{summary}");
    assert_eq!(summary.verdict(), Verdict::Valid, "{summary}");
    // The membership change went through: a learner joined, was promoted, an old voter left.
    let membership = summary
        .faults
        .iter()
        .find(|f| f.kind == FaultKind::Membership.name())
        .expect("a membership change");
    assert!(
        membership.description.contains("promoted") && membership.outcome.contains("removed"),
        "the membership change did not complete: {} -> {}",
        membership.description,
        membership.outcome
    );
    for kind in FaultKind::ALL {
        assert!(
            summary.faults.iter().any(|f| f.kind == kind.name()),
            "fault {} was never injected: {summary}",
            kind.name()
        );
    }
}
