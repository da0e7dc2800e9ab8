//! Shared helpers of the process tests: a cluster of real `ordo server` processes with short
//! timings, and bounded retrying clients.

#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use ordo_kv::proto::etcdserverpb::kv_client::KvClient;
use ordo_kv::proto::etcdserverpb::{PutRequest, RangeRequest};
use ordo_launch::{LocalCluster, NodeStatus};
use tonic::transport::{Channel, Endpoint};

/// Short Raft timings so elections take a fraction of a second.
pub const TEST_SERVER_ARGS: &[&str] = &[
    "--tick-interval-ms",
    "25",
    "--election-timeout-ticks",
    "10",
    "--heartbeat-interval-ticks",
    "1",
    "--log-level",
    "info",
];

/// Bound on waiting for any one milestone.
pub const STEP: Duration = Duration::from_secs(30);

/// A cluster that prints its nodes' logs when the test fails, and kills its processes
/// whatever happens.
pub struct TestCluster(pub LocalCluster);

impl Deref for TestCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.0
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.0
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.0.kill_all();
        if std::thread::panicking() {
            for id in self.0.ids() {
                let log = std::fs::read_to_string(self.0.log_path(id)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {id} log (last 40 lines) ----");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl TestCluster {
    /// SIGTERMs each of `ids` and fails the test unless it exits 0 within 20 s.
    pub fn stop_cleanly(&mut self, ids: &[u64]) {
        for &id in ids {
            let code = self.terminate(id, Duration::from_secs(20));
            assert_eq!(code, Some(0), "node {id} did not exit cleanly on SIGTERM");
        }
    }

    /// A gRPC channel to a node's client address (connected lazily).
    pub fn channel(&self, id: u64) -> Channel {
        channel(self.spec(id).client_addr)
    }

    /// A KV client of a node.
    pub fn kv(&self, id: u64) -> KvClient<Channel> {
        KvClient::new(self.channel(id))
    }

    /// Every node's address of one kind (`|s| s.client_addr`, say), comma-separated, as
    /// `--endpoints` takes them.
    pub fn endpoints(
        &self,
        which: impl Fn(&ordo_launch::NodeSpec) -> std::net::SocketAddr,
    ) -> String {
        self.ids()
            .iter()
            .map(|&id| which(self.spec(id)).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A gRPC channel to `addr` (connected lazily).
pub fn channel(addr: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address forms a valid URI")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy()
}

/// A directory of development certificates written by `ordo cert`.
pub struct DevCerts(std::path::PathBuf);

impl DevCerts {
    /// Runs `ordo cert --dir DIR` with `extra` flags (`--nodes 4`, say); fails the test
    /// with its error if it fails.
    pub fn write(dir: std::path::PathBuf, extra: &[&str]) -> DevCerts {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ordo"))
            .args(["cert", "--dir", dir.to_str().expect("utf-8 path")])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run ordo cert");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        DevCerts(dir)
    }

    /// The path of file `name` in the directory, as a flag takes it.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().expect("utf-8 path").to_string()
    }
}

/// Waits until the log at `path` holds `needle` (true), or `STEP` passes (false).
pub async fn wait_for_log(path: &std::path::Path, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + STEP;
    while std::time::Instant::now() < deadline {
        if std::fs::read_to_string(path).is_ok_and(|log| log.contains(needle)) {
            return true;
        }
        tokio::time::sleep(ordo_launch::cluster::POLL_INTERVAL).await;
    }
    false
}

/// Plans a three-node cluster with test timings plus `extra` flags; starts nothing.
pub fn plan(extra: &[&str]) -> TestCluster {
    let args = TEST_SERVER_ARGS.iter().chain(extra).map(|a| a.to_string());
    TestCluster(
        LocalCluster::new(env!("CARGO_BIN_EXE_ordo"), 3, None, args.collect())
            .expect("plan a cluster"),
    )
}

/// Starts a three-node cluster and waits for its leader.
pub async fn start(extra: &[&str]) -> (TestCluster, NodeStatus) {
    let mut cluster = plan(extra);
    cluster.start_all().expect("start the servers");
    let leader = cluster.wait_leader(&[], STEP).await.expect("a leader");
    (cluster, leader)
}

/// Puts `key` through any of `nodes`, retrying on errors until acknowledged or `STEP`
/// passes; returns the revision. A retried put may apply twice: the value is the same.
pub async fn put(cluster: &TestCluster, nodes: &[u64], key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + STEP;
    let mut last = String::new();
    loop {
        for &id in nodes {
            let request = PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                ..Default::default()
            };
            match tokio::time::timeout(Duration::from_secs(2), cluster.kv(id).put(request)).await {
                Ok(Ok(response)) => return response.into_inner().header.map_or(0, |h| h.revision),
                Ok(Err(status)) => last = format!("node {id}: {status}"),
                Err(_) => last = format!("node {id}: timed out"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "put {key} not acknowledged within {STEP:?}: {last}"
        );
        tokio::time::sleep(ordo_launch::cluster::POLL_INTERVAL).await;
    }
}

/// Reads `key` from node `id` (linearizable unless `serializable`), once.
pub async fn get(
    cluster: &TestCluster,
    id: u64,
    key: &str,
    serializable: bool,
) -> Result<Option<String>, tonic::Status> {
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable,
        ..Default::default()
    };
    let response = cluster.kv(id).range(request).await?.into_inner();
    Ok(response
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Every key under `prefix` on node `id` (linearizable), retrying until it answers.
pub async fn keys_with_prefix(cluster: &TestCluster, id: u64, prefix: &str) -> Vec<String> {
    let deadline = Instant::now() + STEP;
    loop {
        let request = RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: ordo::kv::prefix_end(prefix.as_bytes()),
            ..Default::default()
        };
        match cluster.kv(id).range(request).await {
            Ok(response) => {
                return response
                    .into_inner()
                    .kvs
                    .iter()
                    .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                    .collect()
            }
            Err(status) => {
                assert!(
                    Instant::now() < deadline,
                    "node {id} did not answer a read: {status}"
                );
                tokio::time::sleep(ordo_launch::cluster::POLL_INTERVAL).await;
            }
        }
    }
}

/// Runs `tests/python/SCRIPT` with `args` under `python`: `Ok` once it exits 0 having
/// printed "all checks passed", else `Err` with its output.
pub fn python_script(python: &std::path::Path, script: &str, args: &[&str]) -> Result<(), String> {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(python)
            .arg(&path)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run python")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.contains("all checks passed") {
        return Ok(());
    }
    Err(format!(
        "{script}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    ))
}
