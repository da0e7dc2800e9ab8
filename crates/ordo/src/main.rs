//! `ordo`: run a node, look at a cluster, talk to it, or watch the demo.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ordo::config::{ServerArgs, ServerConfig};

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
    /// Run one node of a cluster.
    Server(Box<ServerArgs>),
    /// Start a local three-node cluster and tell the bank-account story on it.
    Demo {
        /// Directory for the nodes' data (an empty or new one) [default: a temporary one].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
    },
    /// Print the cluster's state from the nodes' admin endpoints.
    Status(ordo::status::StatusArgs),
    /// A small etcd v3 client: put, get, del, watch.
    Kv(ordo::kv::KvArgs),
    /// Measure any etcd v3 endpoint list: throughput and latency percentiles.
    Bench(Box<ordo_bench::BenchArgs>),
    /// Attack a cluster with faults while clients run, and check what they saw.
    Check(Box<ordo_check::CheckArgs>),
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
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

/// Runs `ordo check`: exit 0 when nothing was violated, 1 on anomalies, 2 when the history
/// could not be decided, 3 when the run itself failed, 130 when interrupted.
fn check(args: ordo_check::CheckArgs) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(error) => {
            report(&error.into());
            return ExitCode::from(3);
        }
    };
    rt.block_on(async {
        // Dropping the run on Ctrl-C kills the servers it started before the process exits.
        tokio::select! {
            outcome = ordo_check::run(args) => match outcome {
                Ok(summary) => ExitCode::from(u8::try_from(summary.exit_code()).unwrap_or(3)),
                Err(error) => {
                    eprintln!("ordo check: {error}");
                    ExitCode::from(3)
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("ordo check: interrupted; the servers it started were killed");
                ExitCode::from(130)
            }
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Check(args) => return check(*args),
        Commands::Server(args) => {
            let config = match ServerConfig::from_args(&args) {
                Ok(config) => config,
                Err(error) => {
                    eprintln!("ordo server: {error}");
                    return ExitCode::from(2);
                }
            };
            tracing_subscriber::fmt()
                .with_max_level(config.log_level)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
            server_runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(ordo::server::run(config, ordo::server::termination_signal())))
        }
        Commands::Demo { data_dir } => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|binary| {
                let rt = runtime()?;
                rt.block_on(async {
                    tokio::select! {
                        result = ordo::demo::run(binary, data_dir) => result,
                        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; every node was stopped")),
                    }
                })
            }),
        Commands::Status(args) => runtime()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(ordo::status::run(args))),
        Commands::Kv(args) => runtime()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(ordo::kv::run(args))),
        Commands::Bench(args) => runtime().map_err(anyhow::Error::from).and_then(|rt| {
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
