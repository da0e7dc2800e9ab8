//! `ordo`: run a node, look at a cluster, talk to it, or watch the demo.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ordo::config::{ServerArgs, Settings};

#[derive(Parser)]
#[command(
    name = "ordo",
    version,
    about = "A replicated log serving an etcd-compatible key-value store."
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run one node of a cluster. Exits with status 3 when the node lost state it had
    /// promised its peers (a wiped or damaged data directory): it must be replaced, not
    /// restarted.
    Server(Box<ServerArgs>),
    /// Start a local three-node cluster and tell the bank-account story on it.
    Demo {
        /// Directory for the nodes' data (an empty or new one) [default: a temporary one].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
        /// Serve the etcd API over TLS with client certificates, from a CA made for the
        /// run (`ordo cert` makes one to keep).
        #[arg(long)]
        tls: bool,
    },
    /// Print the cluster's state from the nodes' admin endpoints.
    Status(ordo::status::StatusArgs),
    /// Print every Raft group of each node (role, term, leader, indexes, members).
    Groups(ordo::groups::GroupsArgs),
    /// A small etcd v3 client: put, get, del, watch.
    Kv(ordo::kv::KvArgs),
    /// Create, list, describe and delete topics through a node's Kafka listener.
    Topic(ordo::topic::TopicArgs),
    /// Measure any etcd v3 endpoint list: throughput and latency percentiles.
    Bench(Box<ordo_bench::BenchArgs>),
    /// Write a development CA and certificates for the nodes and clients of a TLS cluster.
    Cert(ordo::cert::CertArgs),
}

// Every request allocates and frees a handful of small buffers on several threads (gRPC
// frames, protobuf messages, log entries, peer frames). glibc's allocator took about a sixth
// of a leader's CPU under load; mimalloc's per-thread free lists take far less. It is
// mimalloc 2, which returns freed memory to the system after 10 ms (3 keeps it a second, and
// a node's RSS nearly doubled under load), built without transparent huge pages (`no_thp`):
// asking for them on its arenas made the kernel compact memory on the write path, and a
// single client's put p99 went from 0.4 ms to 2 ms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The load generator's runtime: one thread. Its clients spend their time handing requests
/// to the gRPC connections and waiting, and on one thread the requests that several clients
/// issue in the same turn leave in one write per connection instead of one each, with no
/// wake-ups between worker threads: about a fifth less CPU per operation, left to the
/// cluster under test on a shared machine.
fn bench_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The server's runtime. Each group's apply thread and the WAL's fsync thread run outside
/// the runtime, so it gets half the CPUs rather than all of them: more workers than cores
/// left over only add wake-ups and context switches on the write path.
/// `TOKIO_WORKER_THREADS` still overrides the count.
fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads((cpus / 2).max(1));
    }
    builder.enable_all().build()
}

fn report(error: &anyhow::Error) {
    eprintln!("ordo: error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// Exit status of `ordo server` for a node that lost state: a supervisor should not
/// restart it.
const LOST_STATE_EXIT: u8 = 3;

/// One line: what was lost, and the commands that replace the node.
fn lost_state_line(
    id: ordo_node::NodeId,
    peer_addr: std::net::SocketAddr,
    data_dir: &std::path::Path,
    lost: &ordo_node::LostState,
) -> String {
    let what: String = lost
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "{what}. This node must not rejoin with what is left. To replace it: \
         `etcdctl member remove {id:x}`; move {} aside; `etcdctl member add <name> \
         --peer-urls=http://{peer_addr}`; then start the new member on an empty data \
         directory with `ordo server --join ...`, and it catches up from its peers",
        data_dir.display()
    )
}

/// The flag that sets a listener's address, for the hint when it cannot be bound.
fn listener_flag(listener: ordo_server::Listener) -> &'static str {
    match listener {
        ordo_server::Listener::Client => "--client-addr",
        ordo_server::Listener::Admin => "--admin-addr",
        ordo_server::Listener::Peer => "--peer-addr",
        ordo_server::Listener::Kafka => "--kafka-addr",
    }
}

/// Runs `ordo server`: exit 0 after a clean stop, 1 on an error, 2 on a bad configuration,
/// 3 when the node lost state and must be replaced.
fn server(args: &ServerArgs) -> ExitCode {
    if let Err(why) = ordo_launch::exit_with_parent_if_asked() {
        eprintln!("ordo server: {why}");
        return ExitCode::from(1);
    }
    let settings = match Settings::from_args(args) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ordo server: {error}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_max_level(settings.log_level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = settings.server;
    let (id, peer_addr) = (config.node.id, config.node.peer_addr);
    let data_dir = config.node.data_dir.clone();
    let rt = match server_runtime() {
        Ok(rt) => rt,
        Err(error) => {
            report(&anyhow::Error::new(error).context("cannot start the runtime"));
            return ExitCode::FAILURE;
        }
    };
    let served = rt.block_on(ordo_server::run(config, ordo_server::termination_signal()));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(lost) = error.lost_state() {
                eprintln!(
                    "ordo server: {}",
                    lost_state_line(id, peer_addr, &data_dir, lost)
                );
                return ExitCode::from(LOST_STATE_EXIT);
            }
            let hint = match &error {
                ordo_server::ServerError::Bind { listener, .. } => Some(listener_flag(*listener)),
                _ => None,
            };
            report(&anyhow::Error::new(error));
            if let Some(flag) = hint {
                eprintln!("  to listen elsewhere, change {flag}");
            }
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Server(args) => return server(&args),
        Commands::Demo { data_dir, tls } => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|binary| {
                let rt = runtime()?;
                rt.block_on(async {
                    tokio::select! {
                        result = ordo::demo::run(binary, data_dir, tls) => result,
                        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; every node was stopped")),
                    }
                })
            }),
        Commands::Status(args) => runtime()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(ordo::status::run(args))),
        Commands::Groups(args) => runtime()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(ordo::groups::run(args))),
        Commands::Kv(args) => runtime()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(ordo::kv::run(args))),
        Commands::Topic(args) => runtime()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(ordo::topic::run(args))),
        Commands::Cert(args) => ordo::cert::run(&args),
        Commands::Bench(args) => bench_runtime().map_err(anyhow::Error::from).and_then(|rt| {
            rt.block_on(ordo_bench::run_and_print(*args))
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            ExitCode::FAILURE
        }
    }
}
