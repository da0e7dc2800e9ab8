//! The `ordo` command line: bad flags are refused before anything starts, `status` and `kv`
//! talk to a live cluster, and the demo runs to its end.

mod common;

use std::process::{Command, Output, Stdio};

use common::start;

fn ordo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ordo")
}

#[test]
fn bad_flags_and_config_exit_with_code_2_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let config = dir.path().join("ordo.toml");
    std::fs::write(&config, "id = 1\nelection_timeout = 5\n").expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let cases: &[(&[&str], &str)] = &[
        (&["server", "--data-dir", data], "--id is required"),
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--fsync",
                "maybe",
            ],
            "maybe",
        ),
        (
            &[
                "server",
                "--id",
                "4",
                "--data-dir",
                data,
                "--peers",
                "1=127.0.0.1:1,2=127.0.0.1:2",
            ],
            "must be listed",
        ),
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--peers",
                "1=localhost",
            ],
            "localhost",
        ),
        (
            &["server", "--config", config, "--data-dir", data],
            "election_timeout",
        ),
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--election-timeout-ticks",
                "1",
                "--heartbeat-interval-ticks",
                "1",
            ],
            "election_timeout_ticks",
        ),
        (&["server", "--id", "x"], "invalid value"),
    ];
    for (args, needle) in cases {
        let out = ordo(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in {stderr}"
        );
    }
    assert!(
        !std::path::Path::new(data).exists(),
        "a refused configuration created the data directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_every_node_and_kv_puts_gets_and_deletes() {
    let (cluster, leader) = start(&[]).await;
    let admins = cluster
        .ids()
        .iter()
        .map(|&id| cluster.spec(id).admin_addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = ordo(&["status", "--endpoints", &admins]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_eq!(table.matches(" leader ").count(), 1, "{table}");
    assert!(table.contains(&format!(" {} ", leader.id)));

    let clients = cluster
        .ids()
        .iter()
        .map(|&id| cluster.spec(id).client_addr.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let kv = |args: &[&str]| {
        let mut all = vec!["kv", "--endpoints", &clients];
        all.extend_from_slice(args);
        let out = ordo(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(kv(&["put", "city/oslo", "cold"]), "OK\n");
    assert_eq!(kv(&["put", "city/rome", "warm"]), "OK\n");
    assert_eq!(
        kv(&["get", "--prefix", "city/"]),
        "city/oslo\ncold\ncity/rome\nwarm\n"
    );
    assert_eq!(
        kv(&["watch", "--prefix", "city/", "--rev", "1", "--count", "2"]),
        "PUT\ncity/oslo\ncold\nPUT\ncity/rome\nwarm\n"
    );
    assert_eq!(kv(&["del", "--prefix", "city/"]), "2\n");
    assert_eq!(kv(&["get", "--prefix", "city/"]), "");

    let health = ordo::http::get(
        cluster.spec(leader.id).admin_addr,
        "/health",
        std::time::Duration::from_secs(2),
    )
    .await
    .expect("health");
    assert_eq!(health.status, 200);
    let metrics = ordo::http::get(
        cluster.spec(leader.id).admin_addr,
        "/metrics",
        std::time::Duration::from_secs(2),
    )
    .await
    .expect("metrics");
    for name in [
        "ordo_raft_term ",
        "ordo_proposals_total ",
        "ordo_wal_fsync_seconds_count ",
        "ordo_peer_round_trip_seconds_bucket",
    ] {
        assert!(metrics.body.contains(name), "{name} missing from /metrics");
    }
}

#[test]
fn demo_tells_the_story_and_exits_0_leaving_nothing_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("demo");
    let out = ordo(&["demo", "--data-dir", data.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rejected for insufficient funds"),
        "{stdout}"
    );
    assert!(stdout.contains("writes resumed"), "{stdout}");
    assert!(stdout.contains("ledger matches"), "{stdout}");
    // No process started by the demo is left: none has the demo's directory in its
    // command line.
    let needle = data.to_string_lossy().into_owned();
    let mut running = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
    {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                running.push(entry.file_name());
            }
        }
    }
    assert!(
        running.is_empty(),
        "demo processes still running: {running:?}"
    );
}
