//! `ordo check` as a standalone program, until the `ordo` binary exposes it as a subcommand.
//!
//! ```text
//! cargo run -p ordo-check --example ordo_check -- --endpoints 127.0.0.1:2379 --duration-secs 30
//! cargo build -p ordo && cargo run -p ordo-check --example ordo_check -- --duration-secs 120
//! ```

use clap::Parser;

/// Attack an etcd v3 cluster and check what its clients saw.
#[derive(Debug, Parser)]
#[command(name = "ordo-check")]
struct Cli {
    #[command(flatten)]
    check: ordo_check::CheckArgs,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // Dropping the run (on Ctrl-C) kills the servers it started before the process exits.
    let outcome = tokio::select! {
        outcome = ordo_check::run(cli.check) => Some(outcome),
        _ = tokio::signal::ctrl_c() => None,
    };
    let Some(outcome) = outcome else {
        eprintln!("ordo check: interrupted; the servers it started were killed");
        std::process::exit(130);
    };
    match outcome {
        Ok(summary) => std::process::exit(summary.exit_code()),
        Err(error) => {
            eprintln!("ordo check: {error}");
            std::process::exit(3);
        }
    }
}
