//! The workloads end to end against an in-process single-replica server (no violation
//! expected), and against deliberately faulty backends (the violation must be reported).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ordo_check::workload::AnomalyKind;
use ordo_check::{CheckArgs, Summary, Verdict};
use ordo_kv::proto::etcdserverpb::PutRequest;
use ordo_kv::{
    ApplyResponse, Command, EtcdApi, KvBackend, KvError, KvState, KvStore, LocalBackend,
    LocalConfig, MemberInfo, NodeStatus, ServiceConfig,
};
use tokio::sync::oneshot;

/// Serves `backend` on 127.0.0.1 until the returned sender is dropped.
async fn serve<B: KvBackend>(backend: B) -> (SocketAddr, oneshot::Sender<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let api = EtcdApi::new(Arc::new(backend), ServiceConfig::default());
    let (addr, _task) = api
        .spawn("127.0.0.1:0".parse().expect("address"), async move {
            let _ = rx.await;
        })
        .await
        .expect("bind 127.0.0.1:0");
    (addr, tx)
}

fn local() -> LocalBackend {
    LocalBackend::new(KvStore::new(), LocalConfig::default())
}

fn args(addr: SocketAddr, seed: u64, history: &std::path::Path) -> CheckArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }
    Cli::parse_from([
        "ordo-check",
        "--endpoints",
        &addr.to_string(),
        "--duration-secs",
        "3",
        "--clients",
        "3",
        "--seed",
        &seed.to_string(),
        "--history",
        history.to_str().expect("utf-8 temp path"),
    ])
    .check
}

async fn check(addr: SocketAddr, seed: u64) -> (Summary, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let history = dir.path().join("history.jsonl");
    let summary = ordo_check::run(args(addr, seed, &history))
        .await
        .expect("the run completes");
    (summary, dir)
}

fn kinds(summary: &Summary) -> Vec<AnomalyKind> {
    summary.anomalies.iter().map(|a| a.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_find_nothing_against_a_correct_single_replica() {
    let (addr, _stop) = serve(local()).await;
    let (summary, _dir) = check(addr, 11).await;
    assert_eq!(summary.verdict(), Verdict::Valid, "{summary}");
    assert_eq!(summary.exit_code(), 0);
    // Every workload ran and succeeded at something.
    for name in [
        "register read",
        "register write",
        "bank read",
        "bank transfer",
        "append",
        "append read",
    ] {
        let ok = summary
            .ops
            .get(&(name.to_string(), "ok".to_string()))
            .copied()
            .unwrap_or(0);
        assert!(ok > 0, "no successful {name}: {summary}");
    }
    assert!(summary.watch_events > 0, "{summary}");
    // The history file holds every operation, one JSON object per line.
    let text = std::fs::read_to_string(&summary.history_path).expect("history file");
    let ops_total: u64 = summary.ops.values().sum();
    let op_lines = text
        .lines()
        .filter(|l| l.starts_with("{\"kind\":\"op\""))
        .count();
    assert_eq!(op_lines as u64, ops_total);
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
    }
}

/// Answers reads from a copy of the store that lags the last few writes: what a leader that
/// skipped ReadIndex, or a follower serving "linearizable" reads locally, would do.
struct StaleReads {
    primary: LocalBackend,
    stale: LocalBackend,
    lagging: Mutex<VecDeque<Command>>,
}

/// Writes the stale copy has not applied yet.
const STALE_LAG_COMMANDS: usize = 50;

impl KvBackend for StaleReads {
    fn state(&self) -> &KvState {
        self.stale.state()
    }

    async fn propose(&self, command: Command) -> Result<ApplyResponse, KvError> {
        let result = self.primary.apply_command(command.clone());
        let mut lagging = self.lagging.lock().expect("lag queue");
        lagging.push_back(command);
        while lagging.len() > STALE_LAG_COMMANDS {
            if let Some(old) = lagging.pop_front() {
                let _ = self.stale.apply_command(old);
            }
        }
        result
    }

    async fn read_barrier(&self) -> Result<(), KvError> {
        Ok(())
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>, KvError> {
        self.primary.lease_keep_alive(id).await
    }

    async fn lease_remaining(&self, id: i64) -> Result<Option<i64>, KvError> {
        self.primary.lease_remaining(id).await
    }

    async fn members(&self) -> Vec<MemberInfo> {
        self.primary.members().await
    }

    fn status(&self) -> NodeStatus {
        self.primary.status()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_reported_as_not_linearizable() {
    let backend = StaleReads {
        primary: local(),
        stale: local(),
        lagging: Mutex::new(VecDeque::new()),
    };
    let (addr, _stop) = serve(backend).await;
    let (summary, _dir) = check(addr, 12).await;
    assert_eq!(summary.verdict(), Verdict::Invalid, "{summary}");
    assert_eq!(summary.exit_code(), 1);
    let kinds = kinds(&summary);
    assert!(kinds.contains(&AnomalyKind::NotLinearizable), "{summary}");
    // The reads that missed acknowledged appends are named too.
    assert!(kinds.contains(&AnomalyKind::StaleAppendRead), "{summary}");
    let register = summary
        .anomalies
        .iter()
        .find(|a| a.kind == AnomalyKind::NotLinearizable)
        .expect("checked above");
    assert!(!register.ops.is_empty(), "the anomaly names its operations");
}

/// Acknowledges every fifth put of each workload without storing it (it is redirected to a
/// key no one reads). Counting per workload makes sure every workload loses writes, however
/// the clients' puts interleave.
struct DroppedWrites {
    inner: LocalBackend,
    puts: Mutex<std::collections::BTreeMap<bool, u64>>,
}

impl KvBackend for DroppedWrites {
    fn state(&self) -> &KvState {
        self.inner.state()
    }

    async fn propose(&self, command: Command) -> Result<ApplyResponse, KvError> {
        let command = match command {
            Command::Put(put) => {
                let register = put.key.windows(5).any(|w| w == b"/reg/");
                let mut puts = self.puts.lock().expect("put counter");
                let count = puts.entry(register).or_default();
                *count += 1;
                if (*count).is_multiple_of(5) {
                    Command::Put(PutRequest {
                        key: b"/dropped".to_vec(),
                        ..put
                    })
                } else {
                    Command::Put(put)
                }
            }
            other => other,
        };
        self.inner.apply_command(command)
    }

    async fn read_barrier(&self) -> Result<(), KvError> {
        Ok(())
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>, KvError> {
        self.inner.lease_keep_alive(id).await
    }

    async fn lease_remaining(&self, id: i64) -> Result<Option<i64>, KvError> {
        self.inner.lease_remaining(id).await
    }

    async fn members(&self) -> Vec<MemberInfo> {
        self.inner.members().await
    }

    fn status(&self) -> NodeStatus {
        self.inner.status()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_that_were_dropped_are_reported_lost() {
    let backend = DroppedWrites {
        inner: local(),
        puts: Mutex::new(Default::default()),
    };
    let (addr, _stop) = serve(backend).await;
    let (summary, _dir) = check(addr, 13).await;
    assert_eq!(summary.verdict(), Verdict::Invalid, "{summary}");
    let kinds = kinds(&summary);
    assert!(kinds.contains(&AnomalyKind::LostAppend), "{summary}");
    assert!(kinds.contains(&AnomalyKind::NotLinearizable), "{summary}");
}
