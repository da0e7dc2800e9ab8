//! The checkers fed hand-made histories: every anomaly kind is found, and correct histories
//! pass.

use std::collections::BTreeMap;

use ordo_check::history::{Completion, Input, OpRecord, Output, WatchEvent, WatchStream};
use ordo_check::workload::bank::{self, BankConfig};
use ordo_check::workload::register::{self, RegisterVerdict};
use ordo_check::workload::{append, AnomalyKind};

/// Builds histories: times in milliseconds, converted to the recorder's nanoseconds.
#[derive(Default)]
struct Builder {
    ops: Vec<OpRecord>,
}

impl Builder {
    fn op(&mut self, client: u64, input: Input, from_ms: u64, to_ms: u64, output: Output) -> usize {
        self.push(
            client,
            input,
            from_ms,
            Some(to_ms),
            Some(Completion::Ok { output }),
        )
    }

    fn indeterminate(&mut self, client: u64, input: Input, from_ms: u64) -> usize {
        let completion = Completion::Info {
            error: "timed out".into(),
        };
        self.push(
            client,
            input,
            from_ms,
            Some(from_ms + 1000),
            Some(completion),
        )
    }

    fn push(
        &mut self,
        client: u64,
        input: Input,
        from_ms: u64,
        to_ms: Option<u64>,
        completion: Option<Completion>,
    ) -> usize {
        let index = self.ops.len();
        self.ops.push(OpRecord {
            index,
            client,
            endpoint: "127.0.0.1:2379".into(),
            input,
            invoke_ns: from_ms * 1_000_000,
            complete_ns: to_ms.map(|t| t * 1_000_000),
            completion,
        });
        index
    }
}

const BUDGET: u64 = 1_000_000;

fn read(key: u32) -> Input {
    Input::RegisterRead { key }
}

fn write(key: u32, value: u64) -> Input {
    Input::RegisterWrite { key, value }
}

fn value(value: Option<u64>) -> Output {
    Output::Value { value }
}

#[test]
fn register_checker_accepts_a_linearizable_history_with_an_indeterminate_write() {
    let mut h = Builder::default();
    h.op(1, write(0, 1), 0, 10, Output::Written);
    // An indeterminate write may take effect later, or never.
    h.indeterminate(2, write(0, 2), 20);
    h.op(1, read(0), 30, 40, value(Some(1)));
    h.op(3, read(0), 50, 60, value(Some(2)));
    h.op(
        1,
        Input::RegisterCas {
            key: 0,
            expected: 2,
            new: 3,
        },
        70,
        80,
        Output::Applied { succeeded: true },
    );
    h.op(1, read(0), 90, 100, value(Some(3)));
    assert_eq!(
        register::check(&h.ops, BUDGET),
        RegisterVerdict::Linearizable
    );
}

#[test]
fn register_checker_detects_a_stale_read() {
    let mut h = Builder::default();
    h.op(1, write(0, 1), 0, 10, Output::Written);
    h.op(1, write(0, 2), 20, 30, Output::Written);
    // Begins after the write of 2 was acknowledged, yet sees 1.
    let stale = h.op(2, read(0), 40, 50, value(Some(1)));
    match register::check(&h.ops, BUDGET) {
        RegisterVerdict::Violation(anomaly) => {
            assert_eq!(anomaly.kind, AnomalyKind::NotLinearizable);
            assert!(anomaly.ops.contains(&stale), "{anomaly:?}");
            assert!(
                anomaly.description.contains("stale read"),
                "{}",
                anomaly.description
            );
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn register_checker_detects_a_lost_write() {
    let mut h = Builder::default();
    let acknowledged = h.op(1, write(1, 4), 0, 10, Output::Written);
    // The register reads as never written after the write was acknowledged.
    let lost = h.op(2, read(1), 20, 30, value(None));
    match register::check(&h.ops, BUDGET) {
        RegisterVerdict::Violation(anomaly) => {
            assert_eq!(anomaly.kind, AnomalyKind::NotLinearizable);
            assert!(anomaly.ops.contains(&lost), "{anomaly:?}");
            assert!(anomaly.ops.contains(&acknowledged), "{anomaly:?}");
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn register_checker_says_undecided_when_the_budget_runs_out() {
    let mut h = Builder::default();
    for client in 0..6 {
        h.indeterminate(client, write(0, client + 1), 0);
    }
    h.op(9, read(0), 5000, 5010, value(Some(3)));
    assert!(matches!(
        register::check(&h.ops, 2),
        RegisterVerdict::Undecided(_)
    ));
}

fn balances(values: &[i64]) -> Output {
    Output::Balances {
        balances: values
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u32, *b))
            .collect::<BTreeMap<_, _>>(),
    }
}

const BANK: BankConfig = BankConfig {
    accounts: 3,
    initial_balance: 10,
};

#[test]
fn bank_checker_accepts_reads_that_keep_the_total() {
    let mut h = Builder::default();
    h.op(1, Input::BankRead, 0, 1, balances(&[10, 10, 10]));
    h.op(1, Input::BankRead, 2, 3, balances(&[0, 15, 15]));
    assert!(bank::check(&h.ops, BANK).is_empty());
}

#[test]
fn bank_checker_detects_a_changed_total() {
    let mut h = Builder::default();
    h.op(1, Input::BankRead, 0, 1, balances(&[10, 10, 10]));
    let bad = h.op(2, Input::BankRead, 2, 3, balances(&[10, 15, 10]));
    let anomalies = bank::check(&h.ops, BANK);
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0].kind, AnomalyKind::BankTotalChanged);
    assert_eq!(anomalies[0].ops, vec![bad]);
}

#[test]
fn bank_checker_detects_a_negative_balance() {
    let mut h = Builder::default();
    let bad = h.op(2, Input::BankRead, 2, 3, balances(&[-5, 20, 15]));
    let anomalies = bank::check(&h.ops, BANK);
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0].kind, AnomalyKind::NegativeBalance);
    assert_eq!(anomalies[0].ops, vec![bad]);
}

#[test]
fn bank_checker_detects_a_missing_account() {
    let mut h = Builder::default();
    h.op(2, Input::BankRead, 2, 3, balances(&[15, 15]));
    let kinds: Vec<AnomalyKind> = bank::check(&h.ops, BANK).iter().map(|a| a.kind).collect();
    assert!(
        kinds.contains(&AnomalyKind::BankAccountsChanged),
        "{kinds:?}"
    );
}

fn append(key: &str) -> Input {
    Input::Append {
        key: key.into(),
        bucket: 0,
    }
}

fn read_all() -> Input {
    Input::AppendRead { bucket: None }
}

fn entries(revision: i64, list: &[(&str, i64)]) -> Output {
    Output::Entries {
        revision,
        entries: list.iter().map(|(k, r)| (k.to_string(), *r)).collect(),
    }
}

fn stream(watcher: u64, sequence: u64, start: i64, events: &[(&str, i64)]) -> WatchStream {
    WatchStream {
        watcher,
        sequence,
        endpoint: "127.0.0.1:2379".into(),
        start_revision: start,
        opened_ns: 0,
        events: events
            .iter()
            .map(|(k, r)| WatchEvent {
                revision: *r,
                key: k.to_string(),
                delete: false,
            })
            .collect(),
        end: "test".into(),
    }
}

/// Three appends a, b, c at revisions 5, 6, 7 and a final read of all three.
fn three_appends() -> Builder {
    let mut h = Builder::default();
    h.op(1, append("a"), 0, 10, Output::Appended { revision: 5 });
    h.op(2, append("b"), 5, 15, Output::Appended { revision: 6 });
    h.op(1, append("c"), 20, 30, Output::Appended { revision: 7 });
    h.op(
        3,
        read_all(),
        100,
        110,
        entries(7, &[("a", 5), ("b", 6), ("c", 7)]),
    );
    h
}

fn kinds(anomalies: &[ordo_check::workload::Anomaly]) -> Vec<AnomalyKind> {
    anomalies.iter().map(|a| a.kind).collect()
}

#[test]
fn append_checker_accepts_resumed_watches_that_see_everything_once_in_order() {
    let h = three_appends();
    let watches = [
        stream(0, 0, 5, &[("a", 5)]),
        stream(0, 1, 6, &[("b", 6), ("c", 7)]),
        stream(1, 0, 5, &[("a", 5), ("b", 6), ("c", 7)]),
    ];
    let anomalies = append::check(&h.ops, &watches);
    assert!(anomalies.is_empty(), "{anomalies:?}");
}

#[test]
fn append_checker_detects_a_lost_append() {
    let mut h = Builder::default();
    let lost = h.op(1, append("a"), 0, 10, Output::Appended { revision: 5 });
    h.op(2, append("b"), 20, 30, Output::Appended { revision: 6 });
    let last = h.op(3, read_all(), 100, 110, entries(6, &[("b", 6)]));
    let anomalies = append::check(&h.ops, &[]);
    let found = anomalies
        .iter()
        .find(|a| a.kind == AnomalyKind::LostAppend)
        .expect("a lost append");
    assert_eq!(found.ops, vec![lost, last]);
}

#[test]
fn append_checker_detects_a_read_missing_an_acknowledged_append() {
    let mut h = three_appends();
    // Invoked after "c" was acknowledged at 30, but does not contain it.
    let stale = h.op(4, read_all(), 40, 50, entries(6, &[("a", 5), ("b", 6)]));
    let anomalies = append::check(&h.ops, &[]);
    assert_eq!(kinds(&anomalies), vec![AnomalyKind::StaleAppendRead]);
    assert!(anomalies[0].ops.contains(&stale));
}

#[test]
fn append_checker_detects_a_watch_gap() {
    let h = three_appends();
    let anomalies = append::check(&h.ops, &[stream(0, 0, 5, &[("a", 5), ("c", 7)])]);
    assert_eq!(kinds(&anomalies), vec![AnomalyKind::WatchGap]);
    // The skipped append is named.
    assert_eq!(anomalies[0].ops, vec![1]);
}

#[test]
fn append_checker_detects_a_gap_across_a_resumed_stream() {
    let h = three_appends();
    // The second stream resumed from 6 but its first event is 7: revision 6 was skipped.
    let watches = [stream(0, 0, 5, &[("a", 5)]), stream(0, 1, 6, &[("c", 7)])];
    let anomalies = append::check(&h.ops, &watches);
    assert_eq!(kinds(&anomalies), vec![AnomalyKind::WatchGap]);
}

#[test]
fn append_checker_detects_a_watch_duplicate() {
    let h = three_appends();
    let watches = [
        stream(0, 0, 5, &[("a", 5), ("b", 6)]),
        // Resumed one revision too early: 6 is delivered again.
        stream(0, 1, 6, &[("b", 6), ("c", 7)]),
    ];
    let anomalies = append::check(&h.ops, &watches);
    assert_eq!(kinds(&anomalies), vec![AnomalyKind::WatchDuplicate]);
}

#[test]
fn append_checker_detects_a_watch_reorder() {
    let h = three_appends();
    let watches = [stream(0, 0, 5, &[("a", 5), ("c", 7), ("b", 6)])];
    let found = kinds(&append::check(&h.ops, &watches));
    assert!(found.contains(&AnomalyKind::WatchReorder), "{found:?}");
}

#[test]
fn append_checker_detects_a_watcher_that_never_caught_up() {
    let h = three_appends();
    let anomalies = append::check(&h.ops, &[stream(0, 0, 5, &[("a", 5), ("b", 6)])]);
    assert_eq!(kinds(&anomalies), vec![AnomalyKind::WatchIncomplete]);
}

#[test]
fn append_checker_detects_a_watch_event_no_read_explains() {
    let h = three_appends();
    let watches = [stream(
        0,
        0,
        5,
        &[("a", 5), ("b", 6), ("c", 7), ("ghost", 8)],
    )];
    let found = kinds(&append::check(&h.ops, &watches));
    assert!(
        found.contains(&AnomalyKind::WatchUnexplainedEvent),
        "{found:?}"
    );
}

#[test]
fn append_checker_detects_revisions_that_disagree() {
    let mut h = Builder::default();
    h.op(1, append("a"), 0, 10, Output::Appended { revision: 5 });
    h.op(3, read_all(), 100, 110, entries(9, &[("a", 9)]));
    let found = kinds(&append::check(&h.ops, &[]));
    assert_eq!(found, vec![AnomalyKind::AppendRevisionMismatch]);
}

#[test]
fn append_checker_holds_a_bucket_read_only_to_its_own_bucket() {
    let mut h = Builder::default();
    h.op(
        1,
        Input::Append {
            key: "b0/a".into(),
            bucket: 0,
        },
        0,
        10,
        Output::Appended { revision: 5 },
    );
    h.op(
        1,
        Input::Append {
            key: "b1/b".into(),
            bucket: 1,
        },
        20,
        30,
        Output::Appended { revision: 6 },
    );
    // Reads bucket 1 only: "b0/a" is not expected there.
    h.op(
        2,
        Input::AppendRead { bucket: Some(1) },
        40,
        50,
        entries(6, &[("b1/b", 6)]),
    );
    // Reads bucket 0 after "b0/a" was acknowledged, without it: stale.
    let stale = h.op(
        2,
        Input::AppendRead { bucket: Some(0) },
        60,
        70,
        entries(6, &[]),
    );
    h.op(
        3,
        read_all(),
        100,
        110,
        entries(6, &[("b0/a", 5), ("b1/b", 6)]),
    );
    let anomalies = append::check(&h.ops, &[]);
    assert_eq!(kinds(&anomalies), vec![AnomalyKind::StaleAppendRead]);
    assert!(anomalies[0].ops.contains(&stale));
}
