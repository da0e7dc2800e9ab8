//! The end-of-run report.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::history::{Completion, FaultRecord, History, Input};
use crate::workload::Anomaly;

/// What the run concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every check was decided and none found a violation.
    Valid,
    /// At least one anomaly was found.
    Invalid,
    /// Nothing was violated, but some check could not be decided (e.g. the linearizability
    /// search ran out of budget). Not a pass.
    Unknown,
}

/// A finished run: what was done, what was injected, what was found.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The seed the run's choices were drawn from.
    pub seed: u64,
    /// The endpoints the clients used.
    pub endpoints: Vec<String>,
    /// Wall-clock seconds the run took, checking included.
    pub elapsed_secs: f64,
    /// Operation counts by (operation, outcome).
    pub ops: BTreeMap<(String, String), u64>,
    /// Watch streams opened and events they delivered.
    pub watch_streams: usize,
    /// Events delivered to watchers.
    pub watch_events: usize,
    /// Faults injected, in order.
    pub faults: Vec<FaultRecord>,
    /// Fault kinds asked for that could not be injected, with the reason.
    pub faults_unavailable: Vec<String>,
    /// Violations found.
    pub anomalies: Vec<Anomaly>,
    /// Checks that could not be decided, with the reason.
    pub undecided: Vec<String>,
    /// Problems of the run itself (setup that failed, a cluster that never recovered) that
    /// leave checks without the data they need.
    pub notes: Vec<String>,
    /// Where the full history was written.
    pub history_path: PathBuf,
}

impl Summary {
    /// The verdict: invalid with any anomaly, unknown with an undecided check, else valid.
    pub fn verdict(&self) -> Verdict {
        if !self.anomalies.is_empty() {
            Verdict::Invalid
        } else if !self.undecided.is_empty() {
            Verdict::Unknown
        } else {
            Verdict::Valid
        }
    }

    /// The process exit status for this run: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(&self) -> i32 {
        match self.verdict() {
            Verdict::Valid => 0,
            Verdict::Invalid => 1,
            Verdict::Unknown => 2,
        }
    }

    pub(crate) fn count_ops(history: &History) -> BTreeMap<(String, String), u64> {
        let mut ops = BTreeMap::new();
        for op in &history.ops {
            let name = match op.input {
                Input::RegisterRead { .. } => "register read",
                Input::RegisterWrite { .. } => "register write",
                Input::RegisterCas { .. } => "register cas",
                Input::BankRead => "bank read",
                Input::BankTransfer { .. } => "bank transfer",
                Input::Append { .. } => "append",
                Input::AppendRead { .. } => "append read",
            };
            let outcome = match &op.completion {
                Some(Completion::Ok { .. }) => "ok",
                Some(Completion::Fail { .. }) => "fail",
                Some(Completion::Info { .. }) => "indeterminate",
                None => "in flight at end",
            };
            *ops.entry((name.to_string(), outcome.to_string()))
                .or_default() += 1;
        }
        ops
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ordo-check: seed {}, endpoints {}",
            self.seed,
            self.endpoints.join(",")
        )?;
        writeln!(f, "ran for {:.1}s", self.elapsed_secs)?;
        writeln!(f, "operations:")?;
        for ((name, outcome), count) in &self.ops {
            writeln!(f, "  {name:<16} {outcome:<18} {count}")?;
        }
        writeln!(
            f,
            "watch: {} streams, {} events",
            self.watch_streams, self.watch_events
        )?;
        writeln!(f, "faults injected: {}", self.faults.len())?;
        for fault in &self.faults {
            writeln!(
                f,
                "  [{:>8.3}s .. {:>8.3}s] {:<20} {} => {}",
                fault.start_ns as f64 / 1e9,
                fault.end_ns as f64 / 1e9,
                fault.kind,
                fault.description,
                fault.outcome
            )?;
        }
        for unavailable in &self.faults_unavailable {
            writeln!(f, "  not injected: {unavailable}")?;
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        writeln!(f, "anomalies: {}", self.anomalies.len())?;
        for anomaly in &self.anomalies {
            writeln!(f, "  {:?} (ops {:?})", anomaly.kind, anomaly.ops)?;
            for line in anomaly.description.lines() {
                writeln!(f, "    {line}")?;
            }
        }
        for undecided in &self.undecided {
            writeln!(f, "undecided: {undecided}")?;
        }
        writeln!(f, "history: {}", self.history_path.display())?;
        let verdict = match self.verdict() {
            Verdict::Valid => "valid: no anomaly found",
            Verdict::Invalid => "INVALID: anomalies found",
            Verdict::Unknown => "UNKNOWN: no anomaly found, but not every check was decided",
        };
        writeln!(f, "verdict: {verdict}")
    }
}
