//! The result of a run: a readable table and one JSON line.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::args::{Consistency, Workload};

/// What one run measured. Serialized field by field as the JSON line ([`Report::to_json_line`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The `--label` of the run (the system under test), possibly empty.
    pub label: String,
    /// The workload.
    pub workload: Workload,
    /// Consistency of reads; `None` for workloads without reads (`put`, `txn`).
    pub consistency: Option<Consistency>,
    /// Fraction of operations that were meant to be reads.
    pub read_ratio: f64,
    /// Endpoint URIs.
    pub endpoints: Vec<String>,
    /// Concurrent logical clients.
    pub clients: u32,
    /// gRPC connections.
    pub conns: u32,
    /// Bytes of every value written.
    pub value_bytes: u32,
    /// Number of distinct keys.
    pub key_space: u64,
    /// Keys taken in order instead of at random.
    pub sequential_keys: bool,
    /// Target rate, or `None` when every client sent as fast as it could.
    pub rate_ops_per_s: Option<f64>,
    /// Length of the warmup, in seconds.
    pub warmup_s: f64,
    /// Length of the measured phase, from its start to the last completion, in seconds.
    pub duration_s: f64,
    /// What ended the measured phase: `"duration"` or `"total"`.
    pub stopped_by: String,
    /// Operations that succeeded.
    pub ops: u64,
    /// Successful operations that read (`get`, the reads of `mixed`).
    pub reads: u64,
    /// Successful operations that wrote or tried to (`put`, `txn`, the puts of `mixed`).
    pub writes: u64,
    /// Compare-and-puts whose comparison failed because another client had written the key
    /// (they succeeded as operations and read the key instead).
    pub txn_compare_failed: u64,
    /// Gets that found no value under their key.
    pub keys_missing: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Failed operations by kind: the gRPC status code name, or `timeout`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first error, as the client saw it.
    pub first_error: Option<String>,
    /// Successful operations per second of the measured phase.
    pub ops_per_s: f64,
    /// Megabytes (10^6 bytes) of values written and read per second.
    pub mb_per_s: f64,
    /// Median latency of successful operations, in microseconds.
    pub latency_us_p50: u64,
    /// 99th percentile latency.
    pub latency_us_p99: u64,
    /// 99.9th percentile latency.
    pub latency_us_p999: u64,
    /// Largest latency.
    pub latency_us_max: u64,
    /// Mean latency.
    pub latency_us_mean: f64,
}

impl Report {
    /// The report as one line of JSON (no newline), one field per [`Report`] field.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a report has only plain fields and always serializes")
    }

    /// Reads back a line written by [`Report::to_json_line`].
    pub fn from_json_line(line: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(line)
    }

    /// Writes the readable table.
    pub fn write_table(&self, out: &mut impl Write) -> io::Result<()> {
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!(" against {}", self.label)
        };
        let reads = match self.consistency {
            Some(Consistency::Linearizable) => ", linearizable reads",
            Some(Consistency::Serializable) => ", serializable reads",
            None => "",
        };
        let mix = if self.workload == Workload::Mixed {
            format!(" ({:.0}% reads)", self.read_ratio * 100.0)
        } else {
            String::new()
        };
        writeln!(
            out,
            "ordo bench: {}{mix}{reads}{label}",
            self.workload.name()
        )?;
        writeln!(
            out,
            "  target      {} ({} clients over {} connections)",
            self.endpoints.join(","),
            self.clients,
            self.conns
        )?;
        writeln!(
            out,
            "  data        {}-byte values, {} keys ({})",
            self.value_bytes,
            self.key_space,
            if self.sequential_keys {
                "sequential"
            } else {
                "random"
            }
        )?;
        let pace = match self.rate_ops_per_s {
            Some(rate) => format!("fixed rate {rate} ops/s (latency from intended send time)"),
            None => "as fast as possible".to_string(),
        };
        writeln!(
            out,
            "  load        {pace}; {:.1} s warmup; measured {:.2} s (stopped by {})",
            self.warmup_s, self.duration_s, self.stopped_by
        )?;
        let mut detail = format!("{} writes, {} reads", self.writes, self.reads);
        if self.txn_compare_failed > 0 {
            detail.push_str(&format!(", {} compares failed", self.txn_compare_failed));
        }
        if self.keys_missing > 0 {
            detail.push_str(&format!(", {} keys missing", self.keys_missing));
        }
        writeln!(
            out,
            "  ops         {} ok ({detail}), {} errors",
            self.ops, self.errors
        )?;
        writeln!(
            out,
            "  throughput  {:.1} ops/s, {:.2} MB/s",
            self.ops_per_s, self.mb_per_s
        )?;
        writeln!(
            out,
            "  latency     p50 {}  p99 {}  p99.9 {}  max {}  mean {}",
            ms(self.latency_us_p50 as f64),
            ms(self.latency_us_p99 as f64),
            ms(self.latency_us_p999 as f64),
            ms(self.latency_us_max as f64),
            ms(self.latency_us_mean),
        )?;
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            writeln!(out, "  errors      {}", kinds.join(", "))?;
        }
        if let Some(first) = &self.first_error {
            writeln!(out, "  first error {first}")?;
        }
        Ok(())
    }

    /// Prints the report to stdout: the table then the JSON line, or only the JSON line.
    pub fn print(&self, json_only: bool) -> io::Result<()> {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        if !json_only {
            self.write_table(&mut out)?;
        }
        writeln!(out, "{}", self.to_json_line())?;
        out.flush()
    }
}

/// Microseconds as milliseconds with two decimals.
fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            label: "etcd".into(),
            workload: Workload::Get,
            consistency: Some(Consistency::Linearizable),
            read_ratio: 1.0,
            endpoints: vec!["http://127.0.0.1:2379".into()],
            clients: 64,
            conns: 8,
            value_bytes: 256,
            key_space: 1000,
            sequential_keys: false,
            rate_ops_per_s: None,
            warmup_s: 2.0,
            duration_s: 10.0,
            stopped_by: "duration".into(),
            ops: 41_000,
            reads: 41_000,
            writes: 0,
            txn_compare_failed: 0,
            keys_missing: 0,
            errors: 3,
            errors_by_kind: BTreeMap::from([("Unavailable".to_string(), 3)]),
            first_error: Some("http://127.0.0.1:2379: Unavailable: etcdserver: no leader".into()),
            ops_per_s: 4100.0,
            mb_per_s: 1.0496,
            latency_us_p50: 12_100,
            latency_us_p99: 43_000,
            latency_us_p999: 60_200,
            latency_us_max: 80_000,
            latency_us_mean: 15_600.5,
        }
    }

    #[test]
    fn json_line_is_one_line_that_parses_back_to_the_same_report() {
        let report = sample();
        let line = report.to_json_line();
        assert!(!line.contains('\n'));
        assert_eq!(Report::from_json_line(&line).unwrap(), report);
    }

    #[test]
    fn json_line_names_fields_with_units_for_scripts() {
        let value: serde_json::Value = serde_json::from_str(&sample().to_json_line()).unwrap();
        assert_eq!(value["workload"], "get");
        assert_eq!(value["consistency"], "l");
        assert_eq!(value["clients"], 64);
        assert_eq!(value["ops"], 41_000);
        assert_eq!(value["ops_per_s"], 4100.0);
        assert_eq!(value["latency_us_p50"], 12_100);
        assert_eq!(value["latency_us_p99"], 43_000);
        assert_eq!(value["latency_us_p999"], 60_200);
        assert_eq!(value["latency_us_max"], 80_000);
        assert_eq!(value["errors_by_kind"]["Unavailable"], 3);
        assert_eq!(value["rate_ops_per_s"], serde_json::Value::Null);
    }

    #[test]
    fn table_shows_throughput_latency_in_ms_and_errors_by_kind() {
        let mut out = Vec::new();
        sample().write_table(&mut out).unwrap();
        let table = String::from_utf8(out).unwrap();
        assert!(
            table.contains("get, linearizable reads against etcd"),
            "{table}"
        );
        assert!(table.contains("4100.0 ops/s, 1.05 MB/s"), "{table}");
        assert!(table.contains("p50 12.10 ms  p99 43.00 ms  p99.9 60.20 ms  max 80.00 ms"));
        assert!(table.contains("errors      Unavailable 3"), "{table}");
        assert!(table.contains("first error http://127.0.0.1:2379: Unavailable"));
    }
}
