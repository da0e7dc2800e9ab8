//! `ordo-check`: attack a cluster with faults while clients run, and check what they saw.
//!
//! Exit status: 0 when nothing was violated, 1 on anomalies, 2 when the history could not
//! be decided, 3 when the run itself failed, 130 when interrupted.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ordo-check",
    version,
    about = "Attack an etcd v3 cluster with faults while clients run, and check what they saw."
)]
struct Cli {
    #[command(flatten)]
    args: ordo_check::CheckArgs,
}

/// Exit status of a run that could not be carried out.
const RUN_FAILED_EXIT: u8 = 3;

/// Exit status after Ctrl-C.
const INTERRUPTED_EXIT: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("ordo-check: cannot start the runtime: {error}");
            return ExitCode::from(RUN_FAILED_EXIT);
        }
    };
    rt.block_on(async {
        // Dropping the run on Ctrl-C kills the servers it started before the process exits.
        tokio::select! {
            outcome = ordo_check::run(cli.args) => match outcome {
                Ok(summary) => ExitCode::from(
                    u8::try_from(summary.exit_code()).unwrap_or(RUN_FAILED_EXIT),
                ),
                Err(error) => {
                    eprintln!("ordo-check: {error}");
                    ExitCode::from(RUN_FAILED_EXIT)
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("ordo-check: interrupted; the servers it started were killed");
                ExitCode::from(INTERRUPTED_EXIT)
            }
        }
    })
}
