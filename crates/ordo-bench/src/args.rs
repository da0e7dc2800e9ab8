//! The command line of a run ([`BenchArgs`]) and its validation into a [`Plan`].

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::error::BenchError;

/// Most concurrent logical clients in one run.
pub const CLIENTS_MAX: u32 = 10_000;
/// Most gRPC connections in one run.
pub const CONNS_MAX: u32 = 1_024;
/// Largest value written by one put (etcd's default request limit is 1.5 MiB).
pub const VALUE_BYTES_MAX: u32 = 1024 * 1024;
/// Largest key space.
pub const KEY_SPACE_MAX: u64 = 1_000_000_000;
/// Largest key space written before a `get` or `mixed` run (see `--no-prefill`).
pub const PREFILL_KEYS_MAX: u64 = 1_000_000;
/// Longest key prefix.
pub const KEY_PREFIX_BYTES_MAX: usize = 1024;
/// Longest measured phase, and the time limit of a run bounded only by `--total`.
pub const DURATION_S_MAX: f64 = 3600.0;
/// Longest warmup.
pub const WARMUP_S_MAX: f64 = 600.0;
/// Most measured operations in one run, and the count limit of a run bounded only by time.
pub const TOTAL_MAX: u64 = 1_000_000_000;
/// Highest fixed rate.
pub const RATE_MAX: f64 = 10_000_000.0;
/// Lowest fixed rate (one operation every 1000 s).
pub const RATE_MIN: f64 = 0.001;
/// Longest wait for one request before it counts as a `timeout` error.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 600_000;
/// Most endpoints.
pub const ENDPOINTS_MAX: usize = 64;
/// The measured phase when neither `--duration-s` nor `--total` is given.
pub const DURATION_S_DEFAULT: f64 = 10.0;

/// What each operation of a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// `Put` of a `--value-bytes` value on a key of the key space.
    Put,
    /// `Range` of one key of the (prefilled) key space.
    Get,
    /// Compare-and-put: `Txn` that puts a key if its mod revision is the one this client last
    /// saw, and otherwise reads it (a lost race, counted as `txn_compare_failed`).
    Txn,
    /// Gets with probability `--read-ratio`, puts otherwise.
    Mixed,
}

impl Workload {
    /// The workload's name on the command line and in the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Txn => "txn",
            Workload::Mixed => "mixed",
        }
    }
}

/// The consistency of reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Consistency {
    /// Linearizable: the server confirms it still leads before answering (ReadIndex).
    #[value(name = "l")]
    #[serde(rename = "l")]
    Linearizable,
    /// Serializable: any member answers from its local state, possibly stale.
    #[value(name = "s")]
    #[serde(rename = "s")]
    Serializable,
}

/// The options of one benchmark run (`ordo bench`), as parsed by clap.
///
/// [`BenchArgs::plan`] checks them and fills in defaults; [`crate::run`] does that first.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct BenchArgs {
    /// etcd v3 endpoints (`host:port` or `http://host:port`), comma-separated; connections are
    /// spread over them round-robin.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,

    /// What each operation does.
    #[arg(long, value_enum, default_value = "put")]
    pub workload: Workload,

    /// Consistency of reads (`get`, `mixed`): `l` linearizable, `s` serializable.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,

    /// Fraction of `mixed` operations that are reads, from 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,

    /// Concurrent logical clients, each with at most one request in flight.
    #[arg(long, default_value_t = 1)]
    pub clients: u32,

    /// gRPC connections shared by the clients (client i uses connection i mod conns).
    #[arg(long, default_value_t = 1)]
    pub conns: u32,

    /// Bytes of every value written.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: u32,

    /// Number of distinct keys operations choose from.
    #[arg(long, default_value_t = 10_000)]
    pub key_space: u64,

    /// Prefix of every key (keys are the prefix and a zero-padded index).
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,

    /// Take keys in order (0, 1, 2, … wrapping at the key space) instead of at random.
    #[arg(long)]
    pub sequential_keys: bool,

    /// Do not write the key space before a `get` or `mixed` run.
    #[arg(long)]
    pub no_prefill: bool,

    /// Fixed total rate in operations per second (open loop: latency is measured from each
    /// operation's intended send time). Without it, every client sends as fast as it can.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Length of the measured phase in seconds (default 10 unless `--total` is given).
    #[arg(long)]
    pub duration_s: Option<f64>,

    /// Number of measured operations; the run ends at whichever of this and `--duration-s`
    /// comes first.
    #[arg(long)]
    pub total: Option<u64>,

    /// Seconds of load before measuring starts; its operations are not counted.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_s: f64,

    /// Milliseconds to wait for one response before counting a `timeout` error.
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,

    /// Seed of the random key choices and of `mixed`'s read/write choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// A name for the system under test, copied into the report (e.g. `etcd`, `ordo`).
    #[arg(long, default_value = "")]
    pub label: String,

    /// Print only the one-line JSON report.
    #[arg(long)]
    pub json: bool,
}

/// A validated run: every limit checked, every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Endpoint URIs, each `http://host:port`.
    pub endpoints: Vec<String>,
    /// What each operation does.
    pub workload: Workload,
    /// Consistency of reads.
    pub consistency: Consistency,
    /// Fraction of `mixed` operations that are reads (0 for `put` and `txn`, 1 for `get`).
    pub read_ratio: f64,
    /// Concurrent logical clients.
    pub clients: u32,
    /// gRPC connections.
    pub conns: u32,
    /// Bytes of every value written.
    pub value_bytes: u32,
    /// Number of distinct keys.
    pub key_space: u64,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Keys in order instead of at random.
    pub sequential_keys: bool,
    /// Whether the key space is written before the run.
    pub prefill: bool,
    /// Fixed total rate, or `None` for as fast as possible.
    pub rate_ops_per_s: Option<f64>,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Number of measured operations at most.
    pub total: u64,
    /// Length of the warmup.
    pub warmup: Duration,
    /// Longest wait for one response.
    pub request_timeout: Duration,
    /// Seed of the random choices.
    pub seed: u64,
    /// Name of the system under test.
    pub label: String,
}

impl BenchArgs {
    /// Checks every option and fills in defaults.
    ///
    /// Each error names the option, the value given and what is accepted.
    pub fn plan(&self) -> Result<Plan, BenchError> {
        let invalid = |message: String| Err(BenchError::InvalidArgument(message));

        if self.endpoints.is_empty() {
            return invalid("--endpoints is empty: give at least one host:port".into());
        }
        if self.endpoints.len() > ENDPOINTS_MAX {
            return invalid(format!(
                "--endpoints lists {} endpoints; at most {ENDPOINTS_MAX} are accepted",
                self.endpoints.len()
            ));
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| endpoint_uri(e))
            .collect::<Result<Vec<_>, _>>()?;

        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return invalid(format!(
                "--clients {} is out of range: give 1 to {CLIENTS_MAX}",
                self.clients
            ));
        }
        if self.conns == 0 || self.conns > CONNS_MAX {
            return invalid(format!(
                "--conns {} is out of range: give 1 to {CONNS_MAX}",
                self.conns
            ));
        }
        if self.conns > self.clients {
            return invalid(format!(
                "--conns {} is more than --clients {}: every connection needs a client; \
                 lower --conns or raise --clients",
                self.conns, self.clients
            ));
        }
        if self.value_bytes == 0 || self.value_bytes > VALUE_BYTES_MAX {
            return invalid(format!(
                "--value-bytes {} is out of range: give 1 to {VALUE_BYTES_MAX}",
                self.value_bytes
            ));
        }
        if self.key_space == 0 || self.key_space > KEY_SPACE_MAX {
            return invalid(format!(
                "--key-space {} is out of range: give 1 to {KEY_SPACE_MAX}",
                self.key_space
            ));
        }
        if self.key_prefix.len() > KEY_PREFIX_BYTES_MAX {
            return invalid(format!(
                "--key-prefix is {} bytes long; at most {KEY_PREFIX_BYTES_MAX} are accepted",
                self.key_prefix.len()
            ));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return invalid(format!(
                "--read-ratio {} is out of range: give a fraction from 0 to 1",
                self.read_ratio
            ));
        }
        let read_ratio = match self.workload {
            Workload::Put | Workload::Txn => 0.0,
            Workload::Get => 1.0,
            Workload::Mixed => self.read_ratio,
        };
        let prefill = !self.no_prefill && matches!(self.workload, Workload::Get | Workload::Mixed);
        if prefill && self.key_space > PREFILL_KEYS_MAX {
            return invalid(format!(
                "--key-space {} is too large to prefill before a {} run (at most \
                 {PREFILL_KEYS_MAX}); use a smaller key space or --no-prefill",
                self.key_space,
                self.workload.name()
            ));
        }
        let rate_ops_per_s = match self.rate {
            None => None,
            Some(rate) if (RATE_MIN..=RATE_MAX).contains(&rate) => Some(rate),
            Some(rate) => {
                return invalid(format!(
                    "--rate {rate} is out of range: give {RATE_MIN} to {RATE_MAX} operations per \
                     second, or leave it out to send as fast as possible"
                ))
            }
        };
        let duration_s = match (self.duration_s, self.total) {
            (Some(d), _) => d,
            (None, Some(_)) => DURATION_S_MAX,
            (None, None) => DURATION_S_DEFAULT,
        };
        if !(duration_s.is_finite() && duration_s > 0.0 && duration_s <= DURATION_S_MAX) {
            return invalid(format!(
                "--duration-s {duration_s} is out of range: give seconds above 0 and at most \
                 {DURATION_S_MAX}"
            ));
        }
        let total = self.total.unwrap_or(TOTAL_MAX);
        if total == 0 || total > TOTAL_MAX {
            return invalid(format!(
                "--total {total} is out of range: give 1 to {TOTAL_MAX} operations"
            ));
        }
        if !(self.warmup_s.is_finite() && (0.0..=WARMUP_S_MAX).contains(&self.warmup_s)) {
            return invalid(format!(
                "--warmup-s {} is out of range: give 0 to {WARMUP_S_MAX} seconds",
                self.warmup_s
            ));
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > REQUEST_TIMEOUT_MS_MAX {
            return invalid(format!(
                "--request-timeout-ms {} is out of range: give 1 to {REQUEST_TIMEOUT_MS_MAX}",
                self.request_timeout_ms
            ));
        }

        Ok(Plan {
            endpoints,
            workload: self.workload,
            consistency: self.consistency,
            read_ratio,
            clients: self.clients,
            conns: self.conns,
            value_bytes: self.value_bytes,
            key_space: self.key_space,
            key_prefix: self.key_prefix.clone(),
            sequential_keys: self.sequential_keys,
            prefill,
            rate_ops_per_s,
            duration: Duration::from_secs_f64(duration_s),
            total,
            warmup: Duration::from_secs_f64(self.warmup_s),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            seed: self.seed,
            label: self.label.clone(),
        })
    }
}

/// `host:port` or `http://host:port` as an `http://` URI.
fn endpoint_uri(endpoint: &str) -> Result<String, BenchError> {
    let trimmed = endpoint.trim();
    if trimmed.starts_with("https://") {
        return Err(BenchError::InvalidArgument(format!(
            "endpoint {endpoint:?} uses TLS, which ordo bench does not speak; give a plaintext \
             host:port"
        )));
    }
    let authority = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok || authority.contains('/') {
        return Err(BenchError::InvalidArgument(format!(
            "endpoint {endpoint:?} is not host:port (for example 127.0.0.1:2379)"
        )));
    }
    Ok(format!("http://{authority}"))
}

impl Plan {
    /// One line saying what the run does and how long it may take.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{} with {} clients over {} connections to {}",
            self.workload.name(),
            self.clients,
            self.conns,
            self.endpoints.join(",")
        );
        if self.prefill {
            line.push_str(&format!("; writing {} keys first", self.key_space));
        }
        if !self.warmup.is_zero() {
            line.push_str(&format!("; {} s warmup", self.warmup.as_secs_f64()));
        }
        line.push_str(&format!(
            "; measuring up to {} s",
            self.duration.as_secs_f64()
        ));
        if self.total < TOTAL_MAX {
            line.push_str(&format!(" or {} operations", self.total));
        }
        line
    }

    /// The key with index `index` (below the key space): the prefix and the index zero-padded
    /// to the width of the largest index, so keys sort in index order.
    pub fn key(&self, index: u64) -> Vec<u8> {
        let width = digits(self.key_space - 1);
        format!("{}{index:0width$}", self.key_prefix).into_bytes()
    }

    /// The first key after every key of the key space under the prefix (a range end).
    pub fn key_range_end(&self) -> Vec<u8> {
        prefix_end(self.key_prefix.as_bytes())
    }
}

/// The decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

pub use ordo_kv::keys::prefix_end;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ordo-bench").chain(args.iter().copied()))
            .map(|cli| cli.bench)
    }

    fn plan(args: &[&str]) -> Result<Plan, BenchError> {
        parse(args).expect("clap accepts the arguments").plan()
    }

    fn invalid(args: &[&str]) -> String {
        match plan(args) {
            Err(BenchError::InvalidArgument(message)) => message,
            other => panic!("{args:?} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_a_ten_second_put_run_against_the_local_endpoint() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(plan.workload, Workload::Put);
        assert_eq!((plan.clients, plan.conns), (1, 1));
        assert_eq!(plan.value_bytes, 256);
        assert_eq!(plan.duration, Duration::from_secs(10));
        assert_eq!(plan.total, TOTAL_MAX);
        assert_eq!(plan.rate_ops_per_s, None);
        assert!(!plan.prefill, "puts need no prefill");
    }

    #[test]
    fn full_command_line_is_parsed_into_the_plan() {
        let plan = plan(&[
            "--endpoints",
            "10.0.0.1:2379,http://10.0.0.2:2379/",
            "--workload",
            "mixed",
            "--consistency",
            "s",
            "--read-ratio",
            "0.9",
            "--clients",
            "64",
            "--conns",
            "8",
            "--value-bytes",
            "1024",
            "--key-space",
            "500",
            "--key-prefix",
            "k/",
            "--sequential-keys",
            "--rate",
            "2000",
            "--duration-s",
            "2.5",
            "--total",
            "10000",
            "--warmup-s",
            "1",
            "--request-timeout-ms",
            "250",
            "--seed",
            "9",
            "--label",
            "etcd",
        ])
        .unwrap();
        assert_eq!(
            plan.endpoints,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(plan.workload, Workload::Mixed);
        assert_eq!(plan.consistency, Consistency::Serializable);
        assert_eq!(plan.read_ratio, 0.9);
        assert_eq!((plan.clients, plan.conns), (64, 8));
        assert_eq!(plan.value_bytes, 1024);
        assert_eq!(plan.key_space, 500);
        assert_eq!(plan.key_prefix, "k/");
        assert!(plan.sequential_keys);
        assert!(plan.prefill);
        assert_eq!(plan.rate_ops_per_s, Some(2000.0));
        assert_eq!(plan.duration, Duration::from_millis(2500));
        assert_eq!(plan.total, 10_000);
        assert_eq!(plan.warmup, Duration::from_secs(1));
        assert_eq!(plan.request_timeout, Duration::from_millis(250));
        assert_eq!(plan.seed, 9);
        assert_eq!(plan.label, "etcd");
    }

    #[test]
    fn total_alone_bounds_the_run_by_the_longest_duration() {
        let plan = plan(&["--total", "100"]).unwrap();
        assert_eq!(plan.total, 100);
        assert_eq!(plan.duration, Duration::from_secs_f64(DURATION_S_MAX));
    }

    #[test]
    fn workload_fixes_the_read_ratio_except_for_mixed() {
        assert_eq!(plan(&["--workload", "get"]).unwrap().read_ratio, 1.0);
        assert_eq!(plan(&["--workload", "txn"]).unwrap().read_ratio, 0.0);
        let mixed = plan(&["--workload", "mixed", "--read-ratio", "0.25"]).unwrap();
        assert_eq!(mixed.read_ratio, 0.25);
    }

    #[test]
    fn only_reading_workloads_prefill() {
        assert!(!plan(&["--workload", "put"]).unwrap().prefill);
        assert!(plan(&["--workload", "get"]).unwrap().prefill);
        assert!(plan(&["--workload", "mixed"]).unwrap().prefill);
        assert!(!plan(&["--workload", "txn"]).unwrap().prefill);
        assert!(
            !plan(&["--workload", "get", "--no-prefill"])
                .unwrap()
                .prefill
        );
    }

    #[test]
    fn out_of_range_counts_are_rejected_with_the_accepted_range() {
        assert!(invalid(&["--clients", "0"]).contains("--clients 0 is out of range: give 1 to"));
        assert!(invalid(&["--clients", "10001"]).contains("--clients 10001"));
        assert!(invalid(&["--clients", "4", "--conns", "0"]).contains("--conns 0"));
        assert!(invalid(&["--value-bytes", "0"]).contains("--value-bytes 0"));
        assert!(invalid(&["--value-bytes", "2000000"]).contains("--value-bytes 2000000"));
        assert!(invalid(&["--key-space", "0"]).contains("--key-space 0"));
        assert!(invalid(&["--total", "0"]).contains("--total 0"));
        assert!(invalid(&["--request-timeout-ms", "0"]).contains("--request-timeout-ms 0"));
    }

    #[test]
    fn more_connections_than_clients_is_rejected() {
        let message = invalid(&["--clients", "2", "--conns", "3"]);
        assert!(
            message.contains("--conns 3 is more than --clients 2"),
            "{message}"
        );
    }

    #[test]
    fn bad_rates_durations_and_ratios_are_rejected() {
        assert!(invalid(&["--rate", "0"]).contains("--rate 0"));
        assert!(invalid(&["--rate=-5"]).contains("--rate -5"));
        assert!(invalid(&["--rate", "NaN"]).contains("--rate NaN"));
        assert!(invalid(&["--rate", "1e-300"]).contains("out of range"));
        assert!(invalid(&["--duration-s", "0"]).contains("--duration-s 0"));
        assert!(invalid(&["--duration-s", "3601"]).contains("--duration-s 3601"));
        assert!(invalid(&["--warmup-s=-1"]).contains("--warmup-s -1"));
        assert!(invalid(&["--workload", "mixed", "--read-ratio", "1.5"]).contains("--read-ratio"));
    }

    #[test]
    fn key_space_too_large_to_prefill_suggests_no_prefill() {
        let message = invalid(&["--workload", "get", "--key-space", "2000000"]);
        assert!(message.contains("--no-prefill"), "{message}");
        assert!(plan(&[
            "--workload",
            "get",
            "--key-space",
            "2000000",
            "--no-prefill"
        ])
        .is_ok());
    }

    #[test]
    fn malformed_and_tls_endpoints_are_rejected() {
        assert!(invalid(&["--endpoints", "localhost"]).contains("is not host:port"));
        assert!(invalid(&["--endpoints", "127.0.0.1:notaport"]).contains("is not host:port"));
        assert!(invalid(&["--endpoints", "http://h:1/path"]).contains("is not host:port"));
        assert!(invalid(&["--endpoints", "https://h:2379"]).contains("TLS"));
    }

    #[test]
    fn unknown_workload_and_consistency_are_clap_errors_listing_the_choices() {
        let e = parse(&["--workload", "scan"]).err().unwrap().to_string();
        assert!(e.contains("put") && e.contains("mixed"), "{e}");
        let e = parse(&["--consistency", "x"]).err().unwrap().to_string();
        assert!(e.contains("'l'") || e.contains("l, s"), "{e}");
        let e = parse(&["--clients", "many"]).err().unwrap().to_string();
        assert!(e.contains("--clients"), "{e}");
    }

    #[test]
    fn keys_are_zero_padded_to_sort_in_index_order() {
        let plan = plan(&["--key-space", "1000", "--key-prefix", "p/"]).unwrap();
        assert_eq!(plan.key(7), b"p/007");
        assert_eq!(plan.key(999), b"p/999");
        let single = super::tests::plan(&["--key-space", "1"]).unwrap();
        assert_eq!(single.key(0), b"bench/0");
    }

    #[test]
    fn description_names_the_workload_prefill_and_limits() {
        let plan = plan(&[
            "--workload",
            "get",
            "--clients",
            "4",
            "--key-space",
            "100",
            "--warmup-s",
            "2",
            "--total",
            "500",
            "--duration-s",
            "10",
        ])
        .unwrap();
        assert_eq!(
            plan.describe(),
            "get with 4 clients over 1 connections to http://127.0.0.1:2379; writing 100 keys \
             first; 2 s warmup; measuring up to 10 s or 500 operations"
        );
    }
}
