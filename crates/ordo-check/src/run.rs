//! `ordo-check`'s arguments and the run: set up, drive the workloads (and the nemesis), collect
//! the history, write it, check it.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::client::Conn;
use crate::cluster::{Cluster, ClusterError};
use crate::history::{HistoryError, Recorder};
use crate::nemesis::{self, FaultKind, NemesisConfig, NemesisReport};
use crate::summary::Summary;
use crate::workload::append::WatchStop;
use crate::workload::bank::BankConfig;
use crate::workload::register::RegisterVerdict;
use crate::workload::{append, bank, register, Context, Endpoints};

/// The arguments of `ordo-check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// etcd v3 endpoints of a cluster to check, `host:port,...` (Ordo or etcd itself). The
    /// workloads run without faults. Without it, `ordo-check` starts a cluster from
    /// --ordo-bin and attacks it.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub endpoints: Vec<String>,
    /// The `ordo` binary to start the cluster from [default: `ordo` next to this executable].
    #[arg(long, value_name = "PATH")]
    pub ordo_bin: Option<PathBuf>,
    /// Nodes in the started cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    /// Directory for the started cluster's data and logs, kept afterwards [default: a
    /// temporary directory, removed].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Extra argument for every `ordo server` (repeat for several), e.g.
    /// `--server-arg=--tick-interval-ms --server-arg=25`.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Workloads: register, bank, append (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "register,bank,append")]
    pub workloads: Vec<String>,
    /// Faults for a started cluster: all, none, kill, pause, partition, disk, or kinds
    /// (kill-leader, kill-random, pause-leader, pause-random, partition-majority,
    /// partition-isolate-leader, partition-bridge, partition-leader-mute, link-delay, crash-all, disk-bitflip,
    /// disk-truncate, disk-wipe, membership).
    #[arg(long, default_value = "all")]
    pub faults: String,
    /// How long the clients run, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Quiet time between faults, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub fault_interval_ms: u64,
    /// How long each fault is held, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub fault_duration_ms: u64,
    /// Clients per workload.
    #[arg(long, default_value_t = 4)]
    pub clients: u64,
    /// Watchers following the append prefix.
    #[arg(long, default_value_t = 2)]
    pub watchers: u64,
    /// Registers in the register workload.
    #[arg(long, default_value_t = 3)]
    pub registers: u32,
    /// Operations on each register before a fresh key replaces it (keeps each key's history
    /// small enough for the linearizability search).
    #[arg(long, default_value_t = 40)]
    pub register_ops_per_key: u64,
    /// Appends per bucket: clients' range reads cover the current bucket of the append
    /// prefix, so reads stay small however long the run (the final read covers all).
    #[arg(long, default_value_t = 300)]
    pub appends_per_bucket: u64,
    /// Accounts in the bank workload.
    #[arg(long, default_value_t = 5)]
    pub accounts: u32,
    /// Each account's initial balance.
    #[arg(long, default_value_t = 100)]
    pub initial_balance: i64,
    /// How long a client waits for one answer, in milliseconds; a write that gets none is
    /// indeterminate.
    #[arg(long, default_value_t = 1000)]
    pub op_timeout_ms: u64,
    /// Most operations recorded in the whole run.
    #[arg(long, default_value_t = 200_000)]
    pub ops_max: usize,
    /// Milliseconds each client waits before each operation (0: as fast as the cluster
    /// answers). Paces long runs: unpaced clients of a release build reach --ops-max within
    /// a minute.
    #[arg(long, default_value_t = 0)]
    pub client_op_interval_ms: u64,
    /// Budget of the linearizability search (states explored, summed over keys; each costs
    /// memory); past it the verdict is unknown, never ok.
    #[arg(long, default_value_t = 2_000_000)]
    pub lincheck_states_max: u64,
    /// Seed of every random choice [default: from the clock; printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where the history is written (JSON lines) [default: ordo-check-<seed>.jsonl in the
    /// data directory, or the current directory].
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
}

/// Why a run could not be carried out (as opposed to a run that found anomalies).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The arguments do not make sense.
    #[error("{0}")]
    Args(String),
    /// An endpoint is not a valid address.
    #[error("invalid endpoint {endpoint}: {source}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// The cause.
        source: tonic::transport::Error,
    },
    /// The cluster could not be started or managed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A workload could not set up its keys.
    #[error("workload setup failed: {0}")]
    Setup(String),
    /// The history could not be written.
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// How many attempts setup and the final read get (each bounded by the op timeout).
const SETUP_ATTEMPTS_MAX: u32 = 200;

/// How long watchers get to catch up with the final read.
const WATCH_CATCH_UP: Duration = Duration::from_secs(20);

/// How long the started cluster gets to elect its first leader.
const FIRST_LEADER_TIMEOUT: Duration = Duration::from_secs(30);

fn default_ordo_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let sibling = dir.join("ordo");
    if sibling.is_file() {
        return Some(sibling);
    }
    // Examples and tests live one level down from the target directory's binaries.
    let parent = dir.parent()?.join("ordo");
    parent.is_file().then_some(parent)
}

/// Runs `ordo-check` and prints its summary; the summary's [`Summary::exit_code`] is the
/// process's exit status.
///
/// Dropping the returned future (on Ctrl-C, say) kills every server it started.
pub async fn run(args: CheckArgs) -> Result<Summary, CheckError> {
    let started = std::time::Instant::now();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!("ordo-check: seed {seed} (rerun with --seed {seed})");
    let workloads = Workloads::parse(&args.workloads)?;
    if args.clients == 0 || args.registers == 0 || args.accounts < 2 || args.initial_balance < 1 {
        return Err(CheckError::Args(
            "--clients and --registers must be at least 1, --accounts at least 2, --initial-balance at least 1".into(),
        ));
    }
    let faults = FaultKind::parse_list(&args.faults).map_err(CheckError::Args)?;

    let mut cluster = None;
    let endpoints = if args.endpoints.is_empty() {
        let binary = args
            .ordo_bin
            .clone()
            .or_else(default_ordo_bin)
            .ok_or_else(|| {
                CheckError::Args(
                "no --endpoints and no ordo binary next to this executable: pass --ordo-bin PATH"
                    .into(),
            )
            })?;
        let mut started_cluster = Cluster::new(
            binary,
            args.nodes,
            args.data_dir.clone(),
            args.server_args.clone(),
        )
        .await?;
        for id in started_cluster.ids() {
            started_cluster.start(id)?;
        }
        started_cluster
            .wait_any_leader(FIRST_LEADER_TIMEOUT)
            .await?;
        println!(
            "ordo-check: started {} nodes under {}",
            args.nodes,
            started_cluster.root().display()
        );
        let endpoints = started_cluster.client_endpoints();
        cluster = Some(started_cluster);
        endpoints
    } else {
        args.endpoints.clone()
    };

    let conns = endpoints
        .iter()
        .map(|e| {
            Conn::new(e, Duration::from_millis(args.op_timeout_ms)).map_err(|source| {
                CheckError::Endpoint {
                    endpoint: e.clone(),
                    source,
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let recorder = Arc::new(Recorder::new(args.ops_max));
    let duration = Duration::from_secs(args.duration_secs);
    let endpoints_live = Endpoints::new(conns);
    let mut ctx = Context {
        conns: endpoints_live.clone(),
        recorder: Arc::clone(&recorder),
        prefix: format!("/ordo-check/{seed}"),
        deadline: Instant::now() + duration,
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        ops_per_client_max: args.ops_max as u64,
        op_interval: Duration::from_millis(args.client_op_interval_ms),
    };
    let bank_config = BankConfig {
        accounts: args.accounts,
        initial_balance: args.initial_balance,
    };
    if workloads.bank {
        bank::setup(&ctx, bank_config)
            .await
            .map_err(CheckError::Setup)?;
    }
    let watch_start = if workloads.append {
        Some(
            append::start_revision(&ctx, SETUP_ATTEMPTS_MAX)
                .await
                .map_err(CheckError::Setup)?,
        )
    } else {
        None
    };
    // The clock of the workload starts after setup.
    ctx.deadline = Instant::now() + duration;

    let register_plan = register::RegisterPlan {
        keys: args.registers,
        ops_per_generation: args.register_ops_per_key.max(1) * u64::from(args.registers),
        issued: Arc::new(AtomicU64::new(0)),
    };
    let append_plan = append::AppendPlan {
        appends_per_bucket: args.appends_per_bucket.max(1),
        issued: Arc::new(AtomicU64::new(0)),
    };
    let mut clients = tokio::task::JoinSet::new();
    let mut next_client = 0u64;
    let client_seed = |n: u64| seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    for _ in 0..args.clients {
        if workloads.register {
            let (ctx, id) = (ctx.clone(), next_client);
            clients.spawn(register::client(
                ctx,
                id,
                register_plan.clone(),
                client_seed(id),
            ));
            next_client += 1;
        }
        if workloads.bank {
            let (ctx, id) = (ctx.clone(), next_client);
            clients.spawn(bank::client(ctx, id, client_seed(id)));
            next_client += 1;
        }
        if workloads.append {
            let (ctx, id) = (ctx.clone(), next_client);
            clients.spawn(append::client(
                ctx,
                id,
                append_plan.clone(),
                client_seed(id),
            ));
            next_client += 1;
        }
    }
    let (stop_tx, stop_rx) = watch::channel(WatchStop {
        target: None,
        hard_deadline: ctx.deadline + WATCH_CATCH_UP + Duration::from_secs(60),
    });
    let mut watchers = tokio::task::JoinSet::new();
    if let Some(start) = watch_start {
        for w in 0..args.watchers {
            watchers.spawn(append::watcher(
                ctx.clone(),
                w,
                client_seed(10_000 + w),
                start,
                stop_rx.clone(),
            ));
        }
    }

    let mut report = NemesisReport::default();
    if let Some(cluster) = cluster.as_mut() {
        let config = NemesisConfig {
            faults: faults.clone(),
            interval: Duration::from_millis(args.fault_interval_ms),
            duration: Duration::from_millis(args.fault_duration_ms),
            rejoin_timeout: Duration::from_secs(15),
            seed: seed ^ 0x006e_656d_6573_6973,
        };
        report = nemesis::run(cluster, &recorder, &endpoints_live, config, ctx.deadline).await;
    }
    while clients.join_next().await.is_some() {}
    let mut notes = std::mem::take(&mut report.notes);
    if let Some(cluster) = cluster.as_mut() {
        if let Err(e) = cluster.wait_any_leader(FIRST_LEADER_TIMEOUT).await {
            notes.push(format!("after the faults were healed: {e}"));
        }
    }

    if watch_start.is_some() {
        let target = append::final_read(&ctx, SETUP_ATTEMPTS_MAX).await;
        if target.is_none() {
            notes.push("the final read of the append prefix never succeeded".into());
        }
        let _ = stop_tx.send(WatchStop {
            target: Some(target.unwrap_or(0)),
            hard_deadline: Instant::now() + WATCH_CATCH_UP,
        });
    }
    while watchers.join_next().await.is_some() {}
    drop(stop_tx);

    let history = recorder.snapshot();
    if history.ops.len() >= args.ops_max {
        let last_ns = history.ops.last().map_or(0, |op| op.invoke_ns);
        notes.push(format!(
            "the history reached --ops-max ({}) at {:.1}s: the clients stopped early",
            args.ops_max,
            last_ns as f64 / 1e9
        ));
    }
    let history_path = args.history.clone().unwrap_or_else(|| {
        let name = format!("ordo-check-{seed}.jsonl");
        match &args.data_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    });
    history.write_jsonl(&history_path)?;
    // The cluster is no longer needed: stop it before the (possibly long) checking.
    drop(cluster);

    let mut anomalies = Vec::new();
    let mut undecided = Vec::new();
    if workloads.register {
        match register::check(&history.ops, args.lincheck_states_max) {
            RegisterVerdict::Linearizable => {}
            RegisterVerdict::Violation(anomaly) => anomalies.push(anomaly),
            RegisterVerdict::Undecided(why) => undecided.push(format!("registers: {why}")),
        }
    }
    if workloads.bank {
        anomalies.extend(bank::check(&history.ops, bank_config));
    }
    if workloads.append {
        anomalies.extend(append::check(&history.ops, &history.watches));
    }
    let mut faults_unavailable = report.unavailable;
    if !args.endpoints.is_empty() && !faults.is_empty() {
        faults_unavailable.push(
            "all faults: the cluster was not started by ordo-check (--endpoints), so no nemesis ran"
                .into(),
        );
    }
    let summary = Summary {
        seed,
        endpoints,
        elapsed_secs: started.elapsed().as_secs_f64(),
        ops: Summary::count_ops(&history),
        watch_streams: history.watches.len(),
        watch_events: history.watches.iter().map(|w| w.events.len()).sum(),
        faults: history.faults,
        faults_unavailable,
        anomalies,
        undecided,
        notes,
        history_path,
    };
    print!("{summary}");
    Ok(summary)
}

#[derive(Debug, Clone, Copy)]
struct Workloads {
    register: bool,
    bank: bool,
    append: bool,
}

impl Workloads {
    fn parse(names: &[String]) -> Result<Workloads, CheckError> {
        let mut workloads = Workloads {
            register: false,
            bank: false,
            append: false,
        };
        for name in names {
            match name.trim() {
                "register" => workloads.register = true,
                "bank" => workloads.bank = true,
                "append" => workloads.append = true,
                other => {
                    return Err(CheckError::Args(format!(
                        "unknown workload `{other}`: use register, bank or append"
                    )))
                }
            }
        }
        if !(workloads.register || workloads.bank || workloads.append) {
            return Err(CheckError::Args("--workloads names no workload".into()));
        }
        Ok(workloads)
    }
}
