//! Drives a run: connections, prefill, warmup, the measured phase, and the report.
//!
//! Every client is a task with at most one request in flight. As fast as possible (closed
//! loop), a client sends its next request when the previous one answers, and latency runs from
//! send to answer. At a fixed `--rate` (open loop), operation number `n` of the run is due at
//! `start + n / rate`; whichever client is free takes the next due operation, waits for its due
//! time if it is early, and its latency runs from the due time, not from the moment it was
//! sent. When the server falls behind, clients send late and the waiting counts as latency,
//! which avoids coordinated omission (a slow server would otherwise hide its stalls by
//! slowing down the load that measures it).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ordo_kv::proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, response_op, Compare, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::args::{BenchArgs, Consistency, Plan, Workload, DURATION_S_MAX};
use crate::error::BenchError;
use crate::histogram::LatencyHistogram;
use crate::report::Report;

/// Longest wait for one connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed operation when sending as fast as possible, so an unreachable server
/// costs a few hundred attempts per second per client instead of a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);
/// Most mod revisions a `txn` client remembers; past it the client forgets them all and learns
/// them again from failed compares.
const TXN_KNOWN_KEYS_MAX: usize = 1_000_000;

/// Runs one benchmark: validates `args`, connects, prefills if the workload reads, warms up,
/// measures, and reports.
///
/// Failed operations are counted by kind, not fatal; the run fails only when its options are
/// invalid, a connection cannot be opened, the prefill fails, or no operation succeeds.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let plan = args.plan()?;
    run_plan(plan).await
}

/// Runs one benchmark like [`run`] and prints its report to stdout: the table and the JSON
/// line, or only the JSON line with `--json`. Without `--json`, one line on stderr first says
/// what is about to run, since a run can take a while before it prints anything.
pub async fn run_and_print(args: BenchArgs) -> Result<Report, BenchError> {
    let json_only = args.json;
    let plan = args.plan()?;
    if !json_only {
        eprintln!("ordo bench: {}", plan.describe());
    }
    let report = run_plan(plan).await?;
    report.print(json_only)?;
    Ok(report)
}

/// Runs an already validated plan (see [`run`]).
pub async fn run_plan(plan: Plan) -> Result<Report, BenchError> {
    let conns = connect(&plan).await?;
    let value = value_bytes(plan.value_bytes);
    let plan = Arc::new(plan);

    if plan.prefill {
        prefill(&plan, &conns, &value).await?;
    }

    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let shared = Arc::new(Shared {
        plan: Arc::clone(&plan),
        value,
        start,
        measure_start,
        deadline: measure_start + plan.duration,
        next_sequential_key: AtomicU64::new(0),
        warmup_issued: AtomicU64::new(0),
        issued: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..plan.clients)
        .map(|client| {
            let conn = &conns[client as usize % conns.len()];
            let worker = Client::new(Arc::clone(&shared), client, conn.clone());
            tokio::spawn(worker.run())
        })
        .collect();
    let mut stats = ClientStats::default();
    for task in tasks {
        let client_stats = task.await.expect("a bench client task panicked");
        stats.merge(client_stats);
    }
    report(&plan, &shared, stats)
}

/// One gRPC connection and the endpoint it goes to.
#[derive(Clone)]
struct Conn {
    endpoint: String,
    kv: KvClient<Channel>,
}

/// Opens `plan.conns` connections, round-robin over the endpoints.
async fn connect(plan: &Plan) -> Result<Vec<Conn>, BenchError> {
    let mut conns = Vec::with_capacity(plan.conns as usize);
    for i in 0..plan.conns as usize {
        let endpoint = plan.endpoints[i % plan.endpoints.len()].clone();
        let connect_error = |message: String| BenchError::Connect {
            endpoint: endpoint.clone(),
            message,
        };
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| connect_error(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let channel = tokio::time::timeout(CONNECT_TIMEOUT, channel.connect())
            .await
            .map_err(|_| connect_error(format!("no answer within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| connect_error(transport_error_text(&e)))?;
        conns.push(Conn {
            kv: KvClient::new(channel),
            endpoint,
        });
    }
    Ok(conns)
}

/// A transport error with its causes, which carry the useful part ("connection refused").
fn transport_error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The value every put writes: `value_bytes` printable bytes.
fn value_bytes(value_bytes: u32) -> Vec<u8> {
    (0..value_bytes).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Writes every key of the key space once, with one task per client.
async fn prefill(plan: &Arc<Plan>, conns: &[Conn], value: &[u8]) -> Result<(), BenchError> {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(DURATION_S_MAX);
    let tasks: Vec<_> = (0..plan
        .clients
        .min(plan.key_space.try_into().unwrap_or(u32::MAX)))
        .map(|client| {
            let plan = Arc::clone(plan);
            let next = Arc::clone(&next);
            let mut conn = conns[client as usize % conns.len()].clone();
            let value = value.to_vec();
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= plan.key_space {
                        return Ok(());
                    }
                    let key = plan.key(index);
                    let failed = |message: String| BenchError::Prefill {
                        key: String::from_utf8_lossy(&key).into_owned(),
                        message,
                    };
                    if Instant::now() >= deadline {
                        return Err(failed(format!(
                            "the prefill did not finish within {DURATION_S_MAX} s"
                        )));
                    }
                    let request = PutRequest {
                        key: key.clone(),
                        value: value.clone(),
                        ..Default::default()
                    };
                    match tokio::time::timeout(plan.request_timeout, conn.kv.put(request)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(status)) => return Err(failed(status_text(&conn, &status))),
                        Err(_) => {
                            return Err(failed(format!(
                                "{}: no answer within {:?}",
                                conn.endpoint, plan.request_timeout
                            )))
                        }
                    }
                }
            })
        })
        .collect();
    let mut first_error = None;
    for task in tasks {
        if let Err(e) = task.await.expect("a prefill task panicked") {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn status_text(conn: &Conn, status: &tonic::Status) -> String {
    format!(
        "{}: {:?}: {}",
        conn.endpoint,
        status.code(),
        status.message()
    )
}

/// State every client of a run shares.
struct Shared {
    plan: Arc<Plan>,
    value: Vec<u8>,
    /// Start of the warmup.
    start: Instant,
    /// End of the warmup, start of the measured phase.
    measure_start: Instant,
    /// End of the measured phase: no operation is sent at or after it.
    deadline: Instant,
    next_sequential_key: AtomicU64,
    /// Warmup operations handed out (the rate schedule of the warmup).
    warmup_issued: AtomicU64,
    /// Measured operations handed out (the rate schedule, and the `--total` limit).
    issued: AtomicU64,
}

/// What a successful operation did.
struct Done {
    read: bool,
    value_bytes: u64,
    compare_failed: bool,
    key_missing: bool,
}

/// Why an operation failed.
struct Failed {
    kind: String,
    message: String,
}

/// The counts of one client, or of a whole run once merged.
#[derive(Default)]
struct ClientStats {
    histogram: LatencyHistogram,
    ops: u64,
    reads: u64,
    writes: u64,
    txn_compare_failed: u64,
    keys_missing: u64,
    value_bytes: u64,
    errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    /// The earliest error and when it happened.
    first_error: Option<(Instant, String)>,
    /// When the last operation of the measured phase completed.
    last_completion: Option<Instant>,
    /// Whether this client stopped because `--total` operations were handed out.
    stopped_by_total: bool,
}

impl ClientStats {
    fn merge(&mut self, other: ClientStats) {
        self.histogram.merge(&other.histogram);
        self.ops += other.ops;
        self.reads += other.reads;
        self.writes += other.writes;
        self.txn_compare_failed += other.txn_compare_failed;
        self.keys_missing += other.keys_missing;
        self.value_bytes += other.value_bytes;
        self.errors += other.errors;
        for (kind, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
        if let Some((at, message)) = other.first_error {
            if self.first_error.as_ref().is_none_or(|(mine, _)| at < *mine) {
                self.first_error = Some((at, message));
            }
        }
        self.last_completion = self.last_completion.max(other.last_completion);
        self.stopped_by_total |= other.stopped_by_total;
    }
}

/// One logical client: a task sending one request at a time.
struct Client {
    shared: Arc<Shared>,
    conn: Conn,
    rng: SplitMix64,
    /// For `txn`: the mod revision this client last saw for each key (absent: 0, "no key").
    known_mod_revisions: HashMap<u64, i64>,
}

impl Client {
    fn new(shared: Arc<Shared>, client: u32, conn: Conn) -> Client {
        let seed = shared.plan.seed ^ (u64::from(client) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Client {
            shared,
            conn,
            rng: SplitMix64(seed),
            known_mod_revisions: HashMap::new(),
        }
    }

    async fn run(mut self) -> ClientStats {
        let shared = Arc::clone(&self.shared);
        let rate = shared.plan.rate_ops_per_s;

        // Warmup: the same load, nothing recorded. Bounded by the end of the warmup.
        while Instant::now() < shared.measure_start {
            if let Some(rate) = rate {
                let n = shared.warmup_issued.fetch_add(1, Ordering::Relaxed);
                let due = shared.start + Duration::from_secs_f64(n as f64 / rate);
                if due >= shared.measure_start {
                    break;
                }
                tokio::time::sleep_until(due).await;
            }
            let failed = self.operation().await.is_err();
            if failed && rate.is_none() {
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
        tokio::time::sleep_until(shared.measure_start).await;

        // Measured phase: bounded by the deadline and by `--total` operations handed out.
        let mut stats = ClientStats::default();
        while Instant::now() < shared.deadline {
            let n = shared.issued.fetch_add(1, Ordering::Relaxed);
            if n >= shared.plan.total {
                stats.stopped_by_total = true;
                break;
            }
            let intended = match rate {
                Some(rate) => {
                    let due = shared.measure_start + Duration::from_secs_f64(n as f64 / rate);
                    if due >= shared.deadline {
                        break;
                    }
                    tokio::time::sleep_until(due).await;
                    due
                }
                None => Instant::now(),
            };
            let outcome = self.operation().await;
            let completed = Instant::now();
            stats.last_completion = Some(completed);
            match outcome {
                Ok(done) => {
                    let latency = completed.saturating_duration_since(intended);
                    stats
                        .histogram
                        .record_us(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                    stats.ops += 1;
                    if done.read {
                        stats.reads += 1;
                    } else {
                        stats.writes += 1;
                    }
                    stats.value_bytes += done.value_bytes;
                    stats.txn_compare_failed += u64::from(done.compare_failed);
                    stats.keys_missing += u64::from(done.key_missing);
                }
                Err(failed) => {
                    stats.errors += 1;
                    *stats.errors_by_kind.entry(failed.kind).or_default() += 1;
                    if stats.first_error.is_none() {
                        stats.first_error = Some((completed, failed.message));
                    }
                    if rate.is_none() {
                        tokio::time::sleep(ERROR_BACKOFF).await;
                    }
                }
            }
        }
        stats
    }

    /// The key index of the next operation.
    fn next_key(&mut self) -> u64 {
        let plan = &self.shared.plan;
        if plan.sequential_keys {
            self.shared
                .next_sequential_key
                .fetch_add(1, Ordering::Relaxed)
                % plan.key_space
        } else {
            self.rng.below(plan.key_space)
        }
    }

    /// Sends one operation of the workload and waits for its answer (or the request timeout).
    async fn operation(&mut self) -> Result<Done, Failed> {
        let plan = Arc::clone(&self.shared.plan);
        let read = match plan.workload {
            Workload::Put | Workload::Txn => false,
            Workload::Get => true,
            Workload::Mixed => self.rng.unit() < plan.read_ratio,
        };
        let index = self.next_key();
        let key = plan.key(index);
        let timeout = plan.request_timeout;
        let result = if read {
            let request = RangeRequest {
                key,
                serializable: plan.consistency == Consistency::Serializable,
                ..Default::default()
            };
            tokio::time::timeout(timeout, self.conn.kv.range(request))
                .await
                .map(|answer| {
                    answer.map(|response| {
                        let kvs = response.into_inner().kvs;
                        Done {
                            read: true,
                            value_bytes: kvs.iter().map(|kv| kv.value.len() as u64).sum(),
                            compare_failed: false,
                            key_missing: kvs.is_empty(),
                        }
                    })
                })
        } else if plan.workload == Workload::Txn {
            self.compare_and_put(index, key).await
        } else {
            let request = PutRequest {
                key,
                value: self.shared.value.clone(),
                ..Default::default()
            };
            tokio::time::timeout(timeout, self.conn.kv.put(request))
                .await
                .map(|answer| {
                    answer.map(|_| Done {
                        read: false,
                        value_bytes: u64::from(plan.value_bytes),
                        compare_failed: false,
                        key_missing: false,
                    })
                })
        };
        match result {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(status)) => Err(Failed {
                kind: format!("{:?}", status.code()),
                message: status_text(&self.conn, &status),
            }),
            Err(_) => Err(Failed {
                kind: "timeout".to_string(),
                message: format!(
                    "{}: no answer within {:?} (--request-timeout-ms)",
                    self.conn.endpoint, timeout
                ),
            }),
        }
    }

    /// `Txn`: if the key's mod revision is the one this client last saw, put the value;
    /// otherwise read the key and remember its mod revision for next time.
    async fn compare_and_put(
        &mut self,
        index: u64,
        key: Vec<u8>,
    ) -> Result<Result<Done, tonic::Status>, tokio::time::error::Elapsed> {
        let known = self.known_mod_revisions.get(&index).copied().unwrap_or(0);
        let request = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::ModRevision(known)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: self.shared.value.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        };
        let answer =
            tokio::time::timeout(self.shared.plan.request_timeout, self.conn.kv.txn(request))
                .await?;
        let response = match answer {
            Ok(response) => response.into_inner(),
            Err(status) => return Ok(Err(status)),
        };
        if self.known_mod_revisions.len() >= TXN_KNOWN_KEYS_MAX {
            self.known_mod_revisions.clear();
        }
        let done = if response.succeeded {
            // The put is the transaction's only change: the key's new mod revision is the
            // revision the transaction created.
            let revision = response.header.map_or(0, |h| h.revision);
            self.known_mod_revisions.insert(index, revision);
            Done {
                read: false,
                value_bytes: u64::from(self.shared.plan.value_bytes),
                compare_failed: false,
                key_missing: false,
            }
        } else {
            let current = response
                .responses
                .into_iter()
                .find_map(|op| match op.response {
                    Some(response_op::Response::ResponseRange(range)) => Some(range),
                    _ => None,
                });
            let kv = current.and_then(|range| range.kvs.into_iter().next());
            let mod_revision = kv.as_ref().map_or(0, |kv| kv.mod_revision);
            self.known_mod_revisions.insert(index, mod_revision);
            Done {
                read: false,
                value_bytes: kv.map_or(0, |kv| kv.value.len() as u64),
                compare_failed: true,
                key_missing: false,
            }
        };
        Ok(Ok(done))
    }
}

/// Builds the report from the merged counts.
fn report(plan: &Plan, shared: &Shared, stats: ClientStats) -> Result<Report, BenchError> {
    let first_error = stats.first_error.map(|(_, message)| message);
    if stats.ops == 0 {
        return Err(match first_error {
            Some(first_error) => BenchError::AllFailed {
                errors: stats.errors,
                first_error,
            },
            None => BenchError::NothingMeasured,
        });
    }
    let duration_s = stats
        .last_completion
        .map_or(0.0, |at| {
            at.saturating_duration_since(shared.measure_start)
                .as_secs_f64()
        })
        .max(1e-6);
    let latency = stats.histogram.summary();
    Ok(Report {
        label: plan.label.clone(),
        workload: plan.workload,
        consistency: match plan.workload {
            Workload::Get | Workload::Mixed => Some(plan.consistency),
            Workload::Put | Workload::Txn => None,
        },
        read_ratio: plan.read_ratio,
        endpoints: plan.endpoints.clone(),
        clients: plan.clients,
        conns: plan.conns,
        value_bytes: plan.value_bytes,
        key_space: plan.key_space,
        sequential_keys: plan.sequential_keys,
        rate_ops_per_s: plan.rate_ops_per_s,
        warmup_s: plan.warmup.as_secs_f64(),
        duration_s,
        stopped_by: if stats.stopped_by_total {
            "total"
        } else {
            "duration"
        }
        .to_string(),
        ops: stats.ops,
        reads: stats.reads,
        writes: stats.writes,
        txn_compare_failed: stats.txn_compare_failed,
        keys_missing: stats.keys_missing,
        errors: stats.errors,
        errors_by_kind: stats.errors_by_kind,
        first_error,
        ops_per_s: stats.ops as f64 / duration_s,
        mb_per_s: stats.value_bytes as f64 / 1e6 / duration_s,
        latency_us_p50: latency.p50_us,
        latency_us_p99: latency.p99_us,
        latency_us_p999: latency.p999_us,
        latency_us_max: latency.max_us,
        latency_us_mean: latency.mean_us,
    })
}

/// A small, fast, seedable generator (SplitMix64) for key and read/write choices.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_choices_stay_in_range_and_cover_it() {
        let mut rng = SplitMix64(7);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let k = rng.below(10);
            assert!(k < 10);
            seen[k as usize] = true;
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(seen.iter().all(|s| *s), "{seen:?}");
    }

    #[test]
    fn values_have_the_requested_size() {
        assert_eq!(value_bytes(256).len(), 256);
        assert_eq!(&value_bytes(3), b"abc");
    }
}
