//! The record of a run: every operation's invocation and completion, every watch stream's
//! events, every fault, and the JSON-lines file they are written to.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Input {
    /// Linearizable read of register `key`.
    RegisterRead {
        /// Register number.
        key: u32,
    },
    /// Put of `value` into register `key`.
    RegisterWrite {
        /// Register number.
        key: u32,
        /// The value written.
        value: u64,
    },
    /// Txn: if register `key` holds `expected`, put `new`.
    RegisterCas {
        /// Register number.
        key: u32,
        /// The value compared against.
        expected: u64,
        /// The value put on a match.
        new: u64,
    },
    /// Linearizable read of every bank account in one range.
    BankRead,
    /// Txn moving `amount` from account `from` to account `to`, guarded by both accounts'
    /// mod revisions as read just before.
    BankTransfer {
        /// Debited account.
        from: u32,
        /// Credited account.
        to: u32,
        /// Amount moved.
        amount: i64,
    },
    /// Put of a new, unique key under the append prefix.
    Append {
        /// The key (its value is the same text).
        key: String,
        /// The bucket (sub-prefix) it belongs to.
        bucket: u64,
    },
    /// Linearizable range read of one bucket of the append prefix, or of all of it.
    AppendRead {
        /// The bucket read; `None`: the whole prefix.
        bucket: Option<u64>,
    },
}

/// What a completed operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Output {
    /// A register's value (`None`: absent).
    Value {
        /// The value.
        value: Option<u64>,
    },
    /// A put was acknowledged.
    Written,
    /// Whether a compare-and-set or a transfer matched and was applied.
    Applied {
        /// The Txn's `succeeded`.
        succeeded: bool,
    },
    /// Every account's balance, by account number.
    Balances {
        /// Account number to balance.
        balances: BTreeMap<u32, i64>,
    },
    /// An append was acknowledged at this revision.
    Appended {
        /// The header revision of the put: the revision that created the key.
        revision: i64,
    },
    /// The append prefix as read: each key with its mod revision.
    Entries {
        /// The range's header revision.
        revision: i64,
        /// Keys and their mod revisions, in the order the server returned them.
        entries: Vec<(String, i64)>,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Completion {
    /// It returned this output.
    Ok {
        /// The output.
        output: Output,
    },
    /// It definitely did not take effect (a read that failed, or a write refused before it
    /// could be ordered).
    Fail {
        /// The error.
        error: String,
    },
    /// It may or may not have taken effect (a timeout or a lost connection during a write).
    Info {
        /// The error.
        error: String,
    },
}

/// One operation: invocation and, once known, completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpRecord {
    /// Position in the history; anomalies name operations by it.
    pub index: usize,
    /// The client (a sequential process) that issued it.
    pub client: u64,
    /// The endpoint it was sent to.
    pub endpoint: String,
    /// The request.
    pub input: Input,
    /// Nanoseconds since the run started, at invocation.
    pub invoke_ns: u64,
    /// Nanoseconds since the run started, at completion (or when the client gave up).
    pub complete_ns: Option<u64>,
    /// The outcome; `None` if the run ended while it was in flight.
    pub completion: Option<Completion>,
}

impl OpRecord {
    /// The output, when the operation returned one.
    pub fn output(&self) -> Option<&Output> {
        match &self.completion {
            Some(Completion::Ok { output }) => Some(output),
            _ => None,
        }
    }

    /// Whether it definitely did not take effect.
    pub fn failed(&self) -> bool {
        matches!(self.completion, Some(Completion::Fail { .. }))
    }

    /// A one-line description for anomaly reports.
    pub fn describe(&self) -> String {
        let end = match self.complete_ns {
            Some(ns) => format!("{:.3}s", ns as f64 / 1e9),
            None => "never".to_string(),
        };
        let outcome = match &self.completion {
            Some(Completion::Ok { output }) => format!("ok {}", brief_output(output)),
            Some(Completion::Fail { error }) => format!("fail ({error})"),
            Some(Completion::Info { error }) => format!("indeterminate ({error})"),
            None => "in flight".to_string(),
        };
        format!(
            "op {} client {} [{:.3}s .. {end}] {:?} -> {outcome}",
            self.index,
            self.client,
            self.invoke_ns as f64 / 1e9,
            self.input
        )
    }
}

/// Most characters of an output shown in a one-line description.
const OUTPUT_DESCRIPTION_CHARS_MAX: usize = 200;

fn brief_output(output: &Output) -> String {
    let text = match output {
        Output::Entries { revision, entries } => {
            format!("{} entries at revision {revision}", entries.len())
        }
        other => format!("{other:?}"),
    };
    text.chars().take(OUTPUT_DESCRIPTION_CHARS_MAX).collect()
}

/// One event a watch stream delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchEvent {
    /// The event's mod revision.
    pub revision: i64,
    /// The key.
    pub key: String,
    /// Whether it was a delete (this checker never deletes: a delete is an anomaly).
    pub delete: bool,
}

/// One watch stream: opened at `start_revision`, it delivered `events` until it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchStream {
    /// The watcher (a sequence of resumed streams) it belongs to.
    pub watcher: u64,
    /// Position of this stream in its watcher's sequence.
    pub sequence: u64,
    /// The endpoint it was opened on.
    pub endpoint: String,
    /// The revision it was opened from.
    pub start_revision: i64,
    /// Nanoseconds since the run started, when it was opened.
    pub opened_ns: u64,
    /// The events, in delivery order.
    pub events: Vec<WatchEvent>,
    /// Why it ended.
    pub end: String,
}

/// One fault the nemesis injected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultRecord {
    /// The fault kind (`kill-leader`, `partition-majority`, ...).
    pub kind: String,
    /// What exactly was done, to which nodes.
    pub description: String,
    /// Nanoseconds since the run started, when it began.
    pub start_ns: u64,
    /// Nanoseconds since the run started, when it was healed.
    pub end_ns: u64,
    /// What was observed (e.g. whether a node with a damaged disk rejoined or refused).
    pub outcome: String,
}

/// Why recording or writing the history failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The history file could not be written.
    #[error("cannot write the history file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
struct Records {
    ops: Vec<OpRecord>,
    watches: Vec<WatchStream>,
    faults: Vec<FaultRecord>,
}

/// Operations past the clients' limit kept for the checker's closing reads.
pub const RESERVED_OPS: usize = 1_000;

/// Collects a run's history from many tasks. Bounded: once `ops_max` operations were invoked,
/// [`Recorder::invoke`] refuses more and the clients stop.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    ops_max: usize,
    records: Mutex<Records>,
}

/// A finished run's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Every operation, by index.
    pub ops: Vec<OpRecord>,
    /// Every watch stream, in the order they ended.
    pub watches: Vec<WatchStream>,
    /// Every fault, in the order they were healed.
    pub faults: Vec<FaultRecord>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new(ops_max: usize) -> Recorder {
        Recorder {
            origin: Instant::now(),
            ops_max,
            records: Mutex::new(Records::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // A panic while holding this lock leaves the records as they were: keep going with them.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Nanoseconds since the run started (monotonic).
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records an invocation; `None` when the history is full.
    pub fn invoke(&self, client: u64, endpoint: &str, input: Input) -> Option<usize> {
        self.invoke_within(self.ops_max, client, endpoint, input)
    }

    /// Records an invocation of the checker's own closing operations (the final read),
    /// which may go past the clients' limit by [`RESERVED_OPS`]; `None` past that.
    pub fn invoke_past_limit(&self, client: u64, endpoint: &str, input: Input) -> Option<usize> {
        self.invoke_within(
            self.ops_max.saturating_add(RESERVED_OPS),
            client,
            endpoint,
            input,
        )
    }

    fn invoke_within(
        &self,
        limit: usize,
        client: u64,
        endpoint: &str,
        input: Input,
    ) -> Option<usize> {
        let invoke_ns = self.now_ns();
        let mut records = self.lock();
        if records.ops.len() >= limit {
            return None;
        }
        let index = records.ops.len();
        records.ops.push(OpRecord {
            index,
            client,
            endpoint: endpoint.to_string(),
            input,
            invoke_ns,
            complete_ns: None,
            completion: None,
        });
        Some(index)
    }

    /// Records the completion of operation `index`.
    pub fn complete(&self, index: usize, completion: Completion) {
        let complete_ns = self.now_ns();
        let mut records = self.lock();
        if let Some(op) = records.ops.get_mut(index) {
            assert!(op.completion.is_none(), "operation {index} completed twice");
            op.complete_ns = Some(complete_ns);
            op.completion = Some(completion);
        }
    }

    /// Records a watch stream that ended.
    pub fn watch_stream(&self, stream: WatchStream) {
        self.lock().watches.push(stream);
    }

    /// Records a fault.
    pub fn fault(&self, fault: FaultRecord) {
        self.lock().faults.push(fault);
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> History {
        let records = self.lock();
        History {
            ops: records.ops.clone(),
            watches: records.watches.clone(),
            faults: records.faults.clone(),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line<'a> {
    Op(&'a OpRecord),
    Watch(&'a WatchStream),
    Fault(&'a FaultRecord),
}

impl History {
    /// Writes the history as JSON lines: one `{"kind":"op",...}` per operation, then one
    /// `{"kind":"watch",...}` per watch stream, then one `{"kind":"fault",...}` per fault.
    pub fn write_jsonl(&self, path: &Path) -> Result<(), HistoryError> {
        let err = |source| HistoryError::Write {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::create(path).map_err(err)?;
        let mut out = std::io::BufWriter::new(file);
        let lines = self
            .ops
            .iter()
            .map(Line::Op)
            .chain(self.watches.iter().map(Line::Watch))
            .chain(self.faults.iter().map(Line::Fault));
        for line in lines {
            serde_json::to_writer(&mut out, &line).map_err(|e| err(e.into()))?;
            out.write_all(b"\n").map_err(err)?;
        }
        out.flush().map_err(err)?;
        out.into_inner()
            .map_err(|e| err(e.into_error()))?
            .sync_all()
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_history_still_records_the_closing_reads_up_to_the_reserve() {
        let recorder = Recorder::new(2);
        let read = || Input::AppendRead { bucket: None };
        assert_eq!(recorder.invoke(1, "a", read()), Some(0));
        assert_eq!(recorder.invoke(1, "a", read()), Some(1));
        assert_eq!(recorder.invoke(1, "a", read()), None);
        assert_eq!(recorder.invoke_past_limit(9, "a", read()), Some(2));
        for _ in 1..RESERVED_OPS {
            assert!(recorder.invoke_past_limit(9, "a", read()).is_some());
        }
        assert_eq!(recorder.invoke_past_limit(9, "a", read()), None);
        assert_eq!(recorder.invoke(1, "a", read()), None);
    }
}
