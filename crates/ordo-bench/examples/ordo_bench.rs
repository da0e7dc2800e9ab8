//! `ordo bench` as a standalone program: parses [`ordo_bench::BenchArgs`], runs, prints.
//!
//! `cargo run --release -p ordo-bench --example ordo_bench -- --endpoints 127.0.0.1:2379
//! --workload put --clients 64 --conns 8 --duration-s 10`

use std::process::ExitCode;

use clap::Parser;
use ordo_bench::BenchArgs;

/// Load generator for etcd v3 endpoints (Ordo or etcd).
#[derive(Parser)]
#[command(name = "ordo-bench")]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

// One thread, like `ordo bench`: cheaper per operation, which leaves more CPU to the
// cluster under test on a shared machine.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match ordo_bench::run_and_print(cli.bench).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordo bench: {e}");
            ExitCode::FAILURE
        }
    }
}
