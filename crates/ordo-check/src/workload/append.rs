//! Append: clients put unique keys under one prefix (one key per value) and read them back
//! with linearizable ranges (of the current bucket, a sub-prefix that a fixed number of
//! appends fill, so reads stay small; the final read covers the whole prefix), while watchers follow the prefix through watch streams that
//! they end and resume from the last revision + 1 every so often.
//!
//! The checker holds every acknowledged append to the final read (nothing lost, revisions
//! agree), every read to the appends acknowledged before it began (nothing stale), and every
//! watcher to the final read's order: revisions strictly increasing, none repeated, none
//! skipped, across resumptions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ordo_kv::proto::etcdserverpb::{
    watch_request, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{call, Anomaly, AnomalyKind, Context, Cursor, ERROR_BACKOFF};
use crate::client::{prefix_end, Rng};
use crate::history::{Completion, Input, OpRecord, Output, Recorder, WatchEvent, WatchStream};

/// Most anomalies of one kind reported in full; the rest are counted in one more.
const ANOMALIES_PER_KIND_MAX: usize = 10;

/// Most events one watch stream delivers before the watcher ends and resumes it.
const EVENTS_PER_STREAM_MAX: u64 = 200;

/// Most events one watcher records in total.
const EVENTS_PER_WATCHER_MAX: usize = 1_000_000;

/// Most streams one watcher opens (each ends after at most `EVENTS_PER_STREAM_MAX` events, an
/// error or an idle catch-up period).
const STREAMS_PER_WATCHER_MAX: u64 = 1_000_000;

/// While catching up at the end, a stream silent this long is resumed on another endpoint.
const CATCH_UP_IDLE: Duration = Duration::from_secs(2);

/// The client id the final read is recorded under.
pub const FINAL_READ_CLIENT: u64 = 1_000_000;

fn append_prefix(prefix: &str) -> String {
    format!("{prefix}/app/")
}

fn bucket_prefix(prefix: &str, bucket: Option<u64>) -> String {
    match bucket {
        Some(bucket) => format!("{prefix}/app/{bucket:08}/"),
        None => append_prefix(prefix),
    }
}

/// How the append clients share their buckets.
#[derive(Debug, Clone)]
pub struct AppendPlan {
    /// Appends (over all clients) per bucket.
    pub appends_per_bucket: u64,
    /// Appends issued so far by every client; it decides the current bucket.
    pub issued: Arc<AtomicU64>,
}

/// Runs one append client until the deadline or its operation limit.
pub async fn client(ctx: Context, client: u64, plan: AppendPlan, seed: u64) {
    let per_bucket = plan.appends_per_bucket.max(1);
    let mut rng = Rng::new(seed);
    let mut cursor = Cursor::new(&ctx.conns, client);
    for seq in 0..ctx.ops_per_client_max {
        ctx.pace().await;
        if Instant::now() >= ctx.deadline {
            return;
        }
        let completion = if rng.percent(75) {
            let bucket = plan.issued.fetch_add(1, Ordering::Relaxed) / per_bucket;
            let key = format!(
                "{}{client:04}-{seq:08}",
                bucket_prefix(&ctx.prefix, Some(bucket))
            );
            let conn = cursor.conn().clone();
            let input = Input::Append {
                key: key.clone(),
                bucket,
            };
            let Some(index) = ctx.recorder.invoke(client, &conn.addr, input) else {
                return;
            };
            let request = PutRequest {
                value: key.clone().into_bytes(),
                key: key.into_bytes(),
                ..Default::default()
            };
            let completion = match call(ctx.op_timeout, true, conn.kv().put(request)).await {
                Ok(response) => Completion::Ok {
                    output: Output::Appended {
                        revision: response.header.map_or(0, |h| h.revision),
                    },
                },
                Err(completion) => completion,
            };
            ctx.recorder.complete(index, completion.clone());
            completion
        } else {
            let bucket = plan.issued.load(Ordering::Relaxed) / per_bucket;
            match read(&ctx, &cursor, client, Some(bucket)).await {
                Some(completion) => completion,
                None => return,
            }
        };
        if !matches!(completion, Completion::Ok { .. }) {
            cursor.rotate();
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

/// One recorded linearizable range read of a bucket (`None`: the whole prefix); `None` when
/// the history is full.
async fn read(
    ctx: &Context,
    cursor: &Cursor,
    client: u64,
    bucket: Option<u64>,
) -> Option<Completion> {
    let conn = cursor.conn();
    let input = Input::AppendRead { bucket };
    // The final read is recorded even when the clients filled the history: without it
    // nothing can vouch for the acknowledged appends.
    let index = if client == FINAL_READ_CLIENT {
        ctx.recorder.invoke_past_limit(client, &conn.addr, input)
    } else {
        ctx.recorder.invoke(client, &conn.addr, input)
    }?;
    let prefix = bucket_prefix(&ctx.prefix, bucket).into_bytes();
    let request = RangeRequest {
        range_end: prefix_end(&prefix),
        key: prefix,
        keys_only: true,
        ..Default::default()
    };
    let completion = match call(ctx.op_timeout, false, conn.kv().range(request)).await {
        Ok(response) => Completion::Ok {
            output: Output::Entries {
                revision: response.header.map_or(0, |h| h.revision),
                entries: response
                    .kvs
                    .iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(&kv.key).into_owned(),
                            kv.mod_revision,
                        )
                    })
                    .collect(),
            },
        },
        Err(completion) => completion,
    };
    ctx.recorder.complete(index, completion.clone());
    Some(completion)
}

/// After the clients stopped: reads the prefix until one read succeeds (at most `attempts`),
/// and returns the highest mod revision it saw, the point every watcher must reach.
pub async fn final_read(ctx: &Context, attempts: u32) -> Option<i64> {
    let mut cursor = Cursor::new(&ctx.conns, 0);
    for _ in 0..attempts {
        match read(ctx, &cursor, FINAL_READ_CLIENT, None).await? {
            Completion::Ok {
                output: Output::Entries { entries, .. },
            } => return Some(entries.iter().map(|(_, r)| *r).max().unwrap_or(0)),
            _ => {
                cursor.rotate();
                tokio::time::sleep(ERROR_BACKOFF * 10).await;
            }
        }
    }
    None
}

/// The revision the watchers start from: the store's revision before any append, plus one.
pub async fn start_revision(ctx: &Context, attempts: u32) -> Result<i64, String> {
    let mut cursor = Cursor::new(&ctx.conns, 0);
    let mut last_error = String::new();
    for _ in 0..attempts {
        let prefix = append_prefix(&ctx.prefix).into_bytes();
        let request = RangeRequest {
            range_end: prefix_end(&prefix),
            key: prefix,
            count_only: true,
            ..Default::default()
        };
        match call(ctx.op_timeout, false, cursor.conn().kv().range(request)).await {
            Ok(response) => return Ok(response.header.map_or(0, |h| h.revision) + 1),
            Err(completion) => {
                last_error = format!("{completion:?}");
                cursor.rotate();
                tokio::time::sleep(ERROR_BACKOFF * 10).await;
            }
        }
    }
    Err(format!(
        "could not read the starting revision: {last_error}"
    ))
}

/// When watchers stop: once they reach `target` (set after the final read), or at
/// `hard_deadline` whatever they reached.
#[derive(Debug, Clone, Copy)]
pub struct WatchStop {
    /// The revision to reach.
    pub target: Option<i64>,
    /// The instant to give up.
    pub hard_deadline: Instant,
}

/// Follows the append prefix from `start_revision`, ending and resuming its stream every so
/// often, until told to stop; records every stream.
pub async fn watcher(
    ctx: Context,
    watcher: u64,
    seed: u64,
    start_revision: i64,
    mut stop: watch::Receiver<WatchStop>,
) {
    let mut rng = Rng::new(seed);
    let mut cursor = Cursor::new(&ctx.conns, watcher);
    let mut next_revision = start_revision;
    let mut recorded = 0usize;
    for sequence in 0..STREAMS_PER_WATCHER_MAX {
        let plan = *stop.borrow();
        let reached = plan.target.is_some_and(|t| next_revision > t);
        if reached || Instant::now() >= plan.hard_deadline || recorded >= EVENTS_PER_WATCHER_MAX {
            return;
        }
        let conn = cursor.conn().clone();
        let mut stream = WatchStream {
            watcher,
            sequence,
            endpoint: conn.addr.clone(),
            start_revision: next_revision,
            opened_ns: ctx.recorder.now_ns(),
            events: Vec::new(),
            end: String::new(),
        };
        let events_max = rng.between(1, EVENTS_PER_STREAM_MAX);
        let (tx, rx) = mpsc::channel::<WatchRequest>(1);
        let prefix = append_prefix(&ctx.prefix).into_bytes();
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    range_end: prefix_end(&prefix),
                    key: prefix,
                    start_revision: next_revision,
                    ..Default::default()
                },
            )),
        };
        if tx.send(create).await.is_err() {
            unreachable!("the receiver is held below");
        }
        let mut client = conn.watch();
        let opened = tokio::time::timeout(
            ctx.op_timeout,
            client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
        let mut responses = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                stream.end = format!("open failed: {:?}: {}", status.code(), status.message());
                finish_failed(&ctx.recorder, stream, &mut cursor).await;
                continue;
            }
            Err(_) => {
                stream.end = format!("open timed out after {:?}", ctx.op_timeout);
                finish_failed(&ctx.recorder, stream, &mut cursor).await;
                continue;
            }
        };
        let mut failed = false;
        loop {
            let plan = *stop.borrow();
            if plan.target.is_some_and(|t| next_revision > t) {
                stream.end = "reached the final revision".to_string();
                break;
            }
            if stream.events.len() as u64 >= events_max {
                stream.end = format!("ended by the watcher after {events_max} events, to resume");
                break;
            }
            let idle = if plan.target.is_some() {
                Instant::now() + CATCH_UP_IDLE
            } else {
                plan.hard_deadline
            };
            tokio::select! {
                message = responses.message() => match message {
                    Ok(Some(response)) => {
                        if response.canceled {
                            stream.end = format!(
                                "canceled by the server: {} (compact revision {})",
                                response.cancel_reason, response.compact_revision
                            );
                            failed = true;
                            break;
                        }
                        for event in response.events {
                            let Some(kv) = event.kv else { continue };
                            next_revision = next_revision.max(kv.mod_revision + 1);
                            stream.events.push(WatchEvent {
                                revision: kv.mod_revision,
                                key: String::from_utf8_lossy(&kv.key).into_owned(),
                                delete: event.r#type == 1,
                            });
                        }
                    }
                    Ok(None) => {
                        stream.end = "closed by the server".to_string();
                        failed = true;
                        break;
                    }
                    Err(status) => {
                        stream.end = format!("{:?}: {}", status.code(), status.message());
                        failed = true;
                        break;
                    }
                },
                changed = stop.changed() => {
                    if changed.is_err() {
                        stream.end = "the run ended".to_string();
                        break;
                    }
                }
                () = tokio::time::sleep_until(idle) => {
                    stream.end = if Instant::now() >= plan.hard_deadline {
                        "the run ended".to_string()
                    } else {
                        failed = true;
                        format!("no event for {CATCH_UP_IDLE:?} while catching up")
                    };
                    break;
                }
            }
        }
        drop(tx);
        recorded += stream.events.len();
        ctx.recorder.watch_stream(stream);
        if failed {
            cursor.rotate();
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

async fn finish_failed(recorder: &Recorder, stream: WatchStream, cursor: &mut Cursor) {
    recorder.watch_stream(stream);
    cursor.rotate();
    tokio::time::sleep(ERROR_BACKOFF * 5).await;
}

/// Counts anomalies per kind and keeps the first few of each.
#[derive(Default)]
struct Findings {
    anomalies: Vec<Anomaly>,
    counts: BTreeMap<AnomalyKind, usize>,
}

impl Findings {
    fn push(&mut self, kind: AnomalyKind, description: String, ops: Vec<usize>) {
        let count = self.counts.entry(kind).or_default();
        *count += 1;
        if *count <= ANOMALIES_PER_KIND_MAX {
            self.anomalies.push(Anomaly {
                kind,
                description,
                ops,
            });
        }
    }

    fn finish(mut self) -> Vec<Anomaly> {
        for (kind, count) in self.counts {
            if count > ANOMALIES_PER_KIND_MAX {
                self.anomalies.push(Anomaly {
                    kind,
                    description: format!(
                        "... and {} more {kind:?} anomalies (see the history file)",
                        count - ANOMALIES_PER_KIND_MAX
                    ),
                    ops: vec![],
                });
            }
        }
        self.anomalies
    }
}

/// Checks the append operations of `ops` and the watch streams `watches`.
///
/// A successful read: the operation, its bucket, the keys and revisions it returned.
type ReadSeen<'a> = (&'a OpRecord, Option<u64>, &'a [(String, i64)]);

/// The final read is the successful read of the whole prefix invoked last; with none,
/// nothing can be checked and an anomaly says so when anything was acknowledged.
pub fn check(ops: &[OpRecord], watches: &[WatchStream]) -> Vec<Anomaly> {
    let mut findings = Findings::default();
    let reads: Vec<ReadSeen<'_>> = ops
        .iter()
        .filter_map(|op| match (&op.input, op.output()) {
            (Input::AppendRead { bucket }, Some(Output::Entries { entries, .. })) => {
                Some((op, *bucket, entries.as_slice()))
            }
            _ => None,
        })
        .collect();
    let appends: Vec<(&OpRecord, &String, u64, Option<i64>)> = ops
        .iter()
        .filter_map(|op| match &op.input {
            Input::Append { key, bucket } => Some((
                op,
                key,
                *bucket,
                match op.output() {
                    Some(Output::Appended { revision }) => Some(*revision),
                    _ => None,
                },
            )),
            _ => None,
        })
        .collect();
    let acknowledged = appends.iter().filter(|(_, _, _, r)| r.is_some()).count();
    let Some(&(final_op, _, final_entries)) = reads
        .iter()
        .filter(|(_, bucket, _)| bucket.is_none())
        .max_by_key(|(op, _, _)| op.invoke_ns)
    else {
        if acknowledged > 0 {
            findings.push(
                AnomalyKind::LostAppend,
                format!("{acknowledged} appends acknowledged but no read of the prefix succeeded: nothing can vouch for them"),
                vec![],
            );
        }
        return findings.finish();
    };
    let append_op: HashMap<&str, usize> = appends
        .iter()
        .map(|(op, key, _, _)| (key.as_str(), op.index))
        .collect();

    // The final read is the reference order: key -> revision, and revision -> key.
    let mut truth: HashMap<&str, i64> = HashMap::new();
    let mut by_revision: BTreeMap<i64, &str> = BTreeMap::new();
    for (key, revision) in final_entries {
        if truth.insert(key, *revision).is_some() {
            findings.push(
                AnomalyKind::AppendRevisionMismatch,
                format!("the final read lists {key} twice: {}", final_op.describe()),
                vec![final_op.index],
            );
        }
        if let Some(other) = by_revision.insert(*revision, key) {
            findings.push(
                AnomalyKind::AppendRevisionMismatch,
                format!(
                    "the final read shows {key} and {other} at the same revision {revision}: {}",
                    final_op.describe()
                ),
                vec![final_op.index],
            );
        }
    }
    let related = |key: &str, extra: &[usize]| -> Vec<usize> {
        let mut ops: Vec<usize> = append_op.get(key).copied().into_iter().collect();
        ops.extend_from_slice(extra);
        ops.sort_unstable();
        ops.dedup();
        ops
    };

    for (op, key, _, revision) in &appends {
        let Some(revision) = revision else { continue };
        match truth.get(key.as_str()) {
            None => findings.push(
                AnomalyKind::LostAppend,
                format!(
                    "acknowledged append {key} is missing from the final read\n    {}\n    {}",
                    op.describe(),
                    final_op.describe()
                ),
                vec![op.index, final_op.index],
            ),
            Some(seen) if seen != revision => findings.push(
                AnomalyKind::AppendRevisionMismatch,
                format!(
                    "append {key} was acknowledged at revision {revision} but the final read shows {seen}: {}",
                    op.describe()
                ),
                vec![op.index, final_op.index],
            ),
            Some(_) => {}
        }
    }

    // Appends acknowledged, by completion time, to compare with each read's invocation.
    let mut acked: Vec<(u64, &str, u64, usize)> = appends
        .iter()
        .filter(|(_, _, _, r)| r.is_some())
        .filter_map(|(op, key, bucket, _)| Some((op.complete_ns?, key.as_str(), *bucket, op.index)))
        .collect();
    acked.sort_unstable();
    for (read, read_bucket, entries) in &reads {
        let keys: HashSet<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        for (key, revision) in entries.iter() {
            match truth.get(key.as_str()) {
                None => findings.push(
                    AnomalyKind::LostAppend,
                    format!(
                        "{key} was read but is missing from the final read\n    {}\n    {}",
                        read.describe(),
                        final_op.describe()
                    ),
                    related(key, &[read.index, final_op.index]),
                ),
                Some(seen) if seen != revision => findings.push(
                    AnomalyKind::AppendRevisionMismatch,
                    format!(
                        "{key} read at revision {revision} but the final read shows {seen}: {}",
                        read.describe()
                    ),
                    related(key, &[read.index, final_op.index]),
                ),
                Some(_) => {}
            }
        }
        let before = acked.iter().take_while(|(t, _, _, _)| *t < read.invoke_ns);
        for &(_, key, bucket, index) in before {
            if read_bucket.is_some_and(|b| b != bucket) {
                continue;
            }
            if !keys.contains(key) {
                findings.push(
                    AnomalyKind::StaleAppendRead,
                    format!(
                        "a read invoked after append {key} was acknowledged does not contain it\n    {}\n    {}",
                        ops[index].describe(),
                        read.describe()
                    ),
                    vec![index, read.index],
                );
            }
        }
    }

    let final_revision_max = by_revision.keys().next_back().copied().unwrap_or(0);
    let mut watchers: BTreeMap<u64, Vec<&WatchStream>> = BTreeMap::new();
    for stream in watches {
        watchers.entry(stream.watcher).or_default().push(stream);
    }
    for (watcher, mut streams) in watchers {
        streams.sort_by_key(|s| s.sequence);
        let Some(first) = streams.first() else {
            continue;
        };
        // Revisions before the first stream's start are not this watcher's to deliver.
        let mut previous = first.start_revision - 1;
        let mut seen: HashSet<i64> = HashSet::new();
        for stream in &streams {
            for event in &stream.events {
                let place = format!(
                    "watcher {watcher} stream {} (from revision {}, on {})",
                    stream.sequence, stream.start_revision, stream.endpoint
                );
                match truth.get(event.key.as_str()) {
                    _ if event.delete => findings.push(
                        AnomalyKind::WatchUnexplainedEvent,
                        format!("{place} delivered a delete of {} at revision {}", event.key, event.revision),
                        related(&event.key, &[]),
                    ),
                    None => findings.push(
                        AnomalyKind::WatchUnexplainedEvent,
                        format!(
                            "{place} delivered {} at revision {}, which the final read does not contain (a lost append if it was acknowledged)",
                            event.key, event.revision
                        ),
                        related(&event.key, &[final_op.index]),
                    ),
                    Some(revision) if *revision != event.revision => findings.push(
                        AnomalyKind::AppendRevisionMismatch,
                        format!(
                            "{place} delivered {} at revision {} but the final read shows {revision}",
                            event.key, event.revision
                        ),
                        related(&event.key, &[final_op.index]),
                    ),
                    Some(_) => {}
                }
                if !seen.insert(event.revision) {
                    findings.push(
                        AnomalyKind::WatchDuplicate,
                        format!(
                            "{place} delivered revision {} ({}) again",
                            event.revision, event.key
                        ),
                        related(&event.key, &[]),
                    );
                    continue;
                }
                if event.revision < previous {
                    findings.push(
                        AnomalyKind::WatchReorder,
                        format!(
                            "{place} delivered revision {} ({}) after revision {previous}",
                            event.revision, event.key
                        ),
                        related(&event.key, &[]),
                    );
                    continue;
                }
                let skipped: Vec<(i64, &str)> = by_revision
                    .range(previous + 1..event.revision)
                    .map(|(r, k)| (*r, *k))
                    .collect();
                if !skipped.is_empty() {
                    let mut involved: Vec<usize> = skipped
                        .iter()
                        .filter_map(|(_, k)| append_op.get(k).copied())
                        .collect();
                    involved.sort_unstable();
                    findings.push(
                        AnomalyKind::WatchGap,
                        format!(
                            "{place} went from revision {previous} to {} skipping {} revisions the final read shows (first: {} at {})",
                            event.revision,
                            skipped.len(),
                            skipped[0].1,
                            skipped[0].0
                        ),
                        involved,
                    );
                }
                previous = event.revision;
            }
        }
        if previous < final_revision_max {
            let missing = by_revision.range(previous + 1..).count();
            findings.push(
                AnomalyKind::WatchIncomplete,
                format!(
                    "watcher {watcher} stopped at revision {previous}; the final read goes to {final_revision_max} ({missing} events never delivered)"
                ),
                vec![final_op.index],
            );
        }
    }
    findings.finish()
}
