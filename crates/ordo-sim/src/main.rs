//! `ordo-sim`: replay one seed with a readable trace, or sweep a range of seeds.

use std::process::ExitCode;
use std::time::Instant;

use ordo_sim::{run, Faults, ReadMode, RunReport, SimConfig, SimMutation};

const USAGE: &str = "\
usage: ordo-sim (--seed S | --seeds A..B) [options]

  --seed S            run one seed and print its trace
  --seeds A..B        run seeds A (inclusive) to B (exclusive) and print a summary
  --nodes N           voters at the start: 3, 5, 7, or mixed (by seed; the default)
  --faults LIST       all (default), none, or a comma-separated list of:
                      partition, crash, loss, duplication, delay, membership, transfer, skew,
                      jump, disk, groups
  --groups N          groups created at the start beside the main one (default 1)
  --ticks N           simulated ticks per run (default 12000; a Raft tick is 10)
  --quiet-ticks N     fault-free ticks at the end, for the liveness check (default 4000)
  --clients N         client sessions (default 4)
  --reads MODE        index, lease, or mixed (by seed; the default)
  --mutation NAME     break one rule in the Raft core: grant-vote-without-log-check,
                      commit-previous-term-by-counting, ack-append-before-durable,
                      skip-prev-term-check; or in the runtime: runtime-ack-before-durable,
                      runtime-apply-past-commit, runtime-answer-read-before-applied
  --watch N           with --seed: also trace every Raft message to or from node N
  --no-trace          with --seed: print only the result
  --keep-going        with --seeds: do not stop at the first violation
";

#[derive(Debug)]
struct Options {
    seeds: std::ops::Range<u64>,
    single: bool,
    nodes: Option<usize>,
    groups_at_start: usize,
    faults: Faults,
    ticks: u64,
    quiet_ticks: u64,
    clients: u64,
    reads: ReadMode,
    mutation: Option<SimMutation>,
    trace: bool,
    keep_going: bool,
    watch_node: Option<u64>,
}

fn parse_number(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} expects a number, got {value:?}"))
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        seeds: 0..0,
        single: false,
        nodes: None,
        groups_at_start: 1,
        faults: Faults::all(),
        ticks: 12_000,
        quiet_ticks: 4_000,
        clients: 4,
        reads: ReadMode::Mixed,
        mutation: None,
        trace: true,
        keep_going: false,
        watch_node: None,
    };
    let mut seeds_given = false;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .map(String::as_str)
                .ok_or_else(|| format!("{flag} expects a value"))
        };
        match flag.as_str() {
            "--seed" => {
                let seed = parse_number(flag, value()?)?;
                options.seeds = seed..seed + 1;
                options.single = true;
                seeds_given = true;
            }
            "--seeds" => {
                let text = value()?;
                let (low, high) = text
                    .split_once("..")
                    .ok_or_else(|| format!("--seeds expects A..B, got {text:?}"))?;
                options.seeds = parse_number(flag, low)?..parse_number(flag, high)?;
                options.single = false;
                seeds_given = true;
            }
            "--nodes" => {
                let text = value()?;
                options.nodes = match text {
                    "mixed" => None,
                    _ => Some(parse_number(flag, text)? as usize),
                };
                if options.nodes == Some(0) {
                    return Err("--nodes must be at least 1".to_string());
                }
            }
            "--faults" => options.faults = Faults::parse(value()?)?,
            "--groups" => options.groups_at_start = parse_number(flag, value()?)? as usize,
            "--ticks" => options.ticks = parse_number(flag, value()?)?,
            "--quiet-ticks" => options.quiet_ticks = parse_number(flag, value()?)?,
            "--clients" => options.clients = parse_number(flag, value()?)?,
            "--reads" => {
                options.reads = match value()? {
                    "index" => ReadMode::ReadIndex,
                    "lease" => ReadMode::Lease,
                    "mixed" => ReadMode::Mixed,
                    other => return Err(format!("unknown read mode {other:?}")),
                }
            }
            "--mutation" => options.mutation = Some(SimMutation::parse(value()?)?),
            "--no-trace" => options.trace = false,
            "--watch" => options.watch_node = Some(parse_number(flag, value()?)?),
            "--keep-going" => options.keep_going = true,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if !seeds_given {
        return Err("give --seed S or --seeds A..B".to_string());
    }
    if options.quiet_ticks >= options.ticks {
        return Err("--quiet-ticks must be smaller than --ticks".to_string());
    }
    Ok(options)
}

fn config_for(options: &Options, seed: u64) -> SimConfig {
    let nodes = options.nodes.unwrap_or([3, 5, 7][(seed % 3) as usize]);
    SimConfig {
        groups_at_start: options.groups_at_start,
        run_ticks: options.ticks,
        quiet_ticks: options.quiet_ticks,
        faults: options.faults,
        clients: options.clients,
        read_mode: options.reads,
        mutation: options.mutation,
        trace: options.single && options.trace,
        watch_node: options.watch_node,
        ..SimConfig::new(seed, nodes)
    }
}

fn describe(report: &RunReport) -> String {
    let stats = &report.stats;
    format!(
        "seed {} ({} nodes, {} reads): {} ticks, {} leaders, {} crashes, {} partitions, \
         {} members added, {} transfers, {} ops done, {} unknown, applied up to {}, {} messages, \
         {} quiescences, {} wakes, {} groups created, {} removed ({} at a boot), {} crashes of \
         nodes hosting several groups, {} ops done outside the main group, {} messages for \
         unknown groups dropped",
        report.seed,
        report.nodes,
        if report.lease_reads {
            "lease"
        } else {
            "read-index"
        },
        report.ticks,
        stats.leaders_elected,
        stats.crashes,
        stats.partitions,
        stats.conf_changes,
        stats.transfers,
        stats.ops_completed,
        stats.ops_unknown,
        stats.applied_max,
        stats.messages_delivered,
        stats.quiesces,
        stats.wakes,
        stats.groups_created,
        stats.groups_removed,
        stats.groups_removed_at_boot,
        stats.crashes_multi_group,
        stats.ops_completed_other_groups,
        stats.messages_for_unknown_groups
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };

    let started = Instant::now();
    let mut runs = 0u64;
    let mut ticks = 0u64;
    let mut violations: Vec<(u64, String)> = Vec::new();
    let mut undecided: Vec<u64> = Vec::new();
    for seed in options.seeds.clone() {
        let report = run(&config_for(&options, seed));
        runs += 1;
        ticks += report.ticks;
        if options.single {
            for line in &report.trace {
                println!("{line}");
            }
            println!("{}", describe(&report));
        }
        if let Some(reason) = &report.undecided {
            println!("seed {seed}: linearizability UNDECIDED: {reason}");
            undecided.push(seed);
        }
        if let Some(violation) = &report.violation {
            println!("seed {seed} ({} nodes): {violation}", report.nodes);
            violations.push((seed, violation.kind.name().to_string()));
            if !options.keep_going && !options.single {
                break;
            }
        }
    }
    let wall = started.elapsed();
    println!(
        "{runs} seeds run, {} violations, {} undecided, {ticks} simulated ticks, {:.1} s wall",
        violations.len(),
        undecided.len(),
        wall.as_secs_f64()
    );
    for (seed, kind) in &violations {
        println!("  violation {kind}: --seed {seed}");
    }
    if violations.is_empty() && undecided.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
