//! Shared helpers of the process tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `ordo` binary: `$ORDO_BIN` when set, else `<target>/<profile>/ordo` next to this test's
/// own directory, built with `cargo build -p ordo` into that target directory when missing.
pub fn ordo_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ORDO_BIN") {
        return PathBuf::from(path);
    }
    // This test runs as <target>/<profile>/deps/bounded_run-<hash>.
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from <target>/<profile>/deps")
        .to_path_buf();
    let binary = profile_dir.join("ordo");
    if !binary.is_file() {
        let target_dir = profile_dir.parent().expect("<target>").to_path_buf();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-p", "ordo", "--bin", "ordo", "--target-dir"])
            .arg(&target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("run cargo build -p ordo");
        assert!(status.success(), "cargo build -p ordo failed: {status}");
    }
    assert!(binary.is_file(), "no ordo binary at {}", binary.display());
    binary
}

/// Server flags for quick elections: 25 ms ticks, elections after 10 of them.
pub fn short_ticks() -> Vec<String> {
    ["--tick-interval-ms", "25", "--election-timeout-ticks", "10"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Three `ordo server` processes with quick elections, started.
pub async fn started_cluster() -> ordo_check::cluster::Cluster {
    let mut cluster = ordo_check::cluster::Cluster::new(ordo_binary(), 3, None, short_ticks())
        .await
        .expect("plan a cluster");
    for id in cluster.ids() {
        cluster.start(id).expect("start a node");
    }
    cluster
}
