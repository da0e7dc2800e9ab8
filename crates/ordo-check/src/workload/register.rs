//! Linearizable registers: reads (linearizable Range), writes (Put) and compare-and-set (Txn
//! comparing the value, then Put) on a handful of keys, checked with `ordo-lincheck`.
//!
//! Values are drawn from a small set so compare-and-set often matches; an operation of
//! unknown outcome may have taken effect at any moment after its invocation.
//!
//! Every register is used for a limited number of operations only, then replaced by a fresh key (as Jepsen's
//! independent keys): a write that timed out stays a candidate for every later point of its
//! key's history, so a key that lived through a whole run full of faults would make the
//! linearizability search exponential. Short-lived keys keep each key's history small.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use ordo_kv::proto::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use ordo_lincheck::{CheckError, CheckOptions, KvInput, KvModel, KvOutput, Operation, Outcome};

use super::{call, Anomaly, AnomalyKind, Context, Cursor, ERROR_BACKOFF};
use crate::client::Rng;
use crate::history::{Completion, Input, OpRecord, Output};

/// Values written are in `1..=VALUE_MAX`.
const VALUE_MAX: u64 = 5;

/// The key of register `key`.
pub fn register_key(prefix: &str, key: u32) -> String {
    format!("{prefix}/reg/{key}")
}

/// How the register clients share their keys.
#[derive(Debug, Clone)]
pub struct RegisterPlan {
    /// Registers live at a time.
    pub keys: u32,
    /// Operations (over all clients) on each set of live registers before fresh keys
    /// replace it.
    pub ops_per_generation: u64,
    /// Operations issued so far by every register client; it decides the live generation.
    pub issued: Arc<AtomicU64>,
}

/// Runs one register client until the deadline or its operation limit.
pub async fn client(ctx: Context, client: u64, plan: RegisterPlan, seed: u64) {
    let keys = plan.keys.max(1);
    let mut rng = Rng::new(seed);
    let mut cursor = Cursor::new(&ctx.conns, client);
    for _ in 0..ctx.ops_per_client_max {
        ctx.pace().await;
        if tokio::time::Instant::now() >= ctx.deadline {
            return;
        }
        let generation =
            plan.issued.fetch_add(1, Ordering::Relaxed) / plan.ops_per_generation.max(1);
        let slot = rng.below(u64::from(keys));
        let key = u32::try_from(generation * u64::from(keys) + slot).unwrap_or(u32::MAX);
        let input = match rng.below(4) {
            0 | 1 => Input::RegisterRead { key },
            2 => Input::RegisterWrite {
                key,
                value: rng.between(1, VALUE_MAX),
            },
            _ => Input::RegisterCas {
                key,
                expected: rng.between(1, VALUE_MAX),
                new: rng.between(1, VALUE_MAX),
            },
        };
        let conn = cursor.conn().clone();
        let Some(index) = ctx.recorder.invoke(client, &conn.addr, input.clone()) else {
            return;
        };
        let name = register_key(&ctx.prefix, key).into_bytes();
        let mut kv = conn.kv();
        let completion = match input {
            Input::RegisterRead { .. } => {
                let request = RangeRequest {
                    key: name,
                    ..Default::default()
                };
                match call(ctx.op_timeout, false, kv.range(request)).await {
                    Ok(response) => match response.kvs.first() {
                        None => Ok(Output::Value { value: None }),
                        Some(kv) => match parse_value(&kv.value) {
                            Some(value) => Ok(Output::Value { value: Some(value) }),
                            None => Err(Completion::Fail {
                                error: format!("unparseable register value {:?}", kv.value),
                            }),
                        },
                    },
                    Err(completion) => Err(completion),
                }
            }
            Input::RegisterWrite { value, .. } => {
                let request = PutRequest {
                    key: name,
                    value: value.to_string().into_bytes(),
                    ..Default::default()
                };
                call(ctx.op_timeout, true, kv.put(request))
                    .await
                    .map(|_| Output::Written)
            }
            Input::RegisterCas { expected, new, .. } => {
                let request = TxnRequest {
                    compare: vec![Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Value as i32,
                        key: name.clone(),
                        target_union: Some(compare::TargetUnion::Value(
                            expected.to_string().into_bytes(),
                        )),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: name,
                            value: new.to_string().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                };
                call(ctx.op_timeout, true, kv.txn(request))
                    .await
                    .map(|response| Output::Applied {
                        succeeded: response.succeeded,
                    })
            }
            _ => unreachable!("register clients only issue register operations"),
        };
        let failed = completion.is_err();
        ctx.recorder.complete(
            index,
            match completion {
                Ok(output) => Completion::Ok { output },
                Err(completion) => completion,
            },
        );
        if failed {
            cursor.rotate();
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

fn parse_value(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn model_bytes(key: u32) -> Bytes {
    Bytes::from(key.to_string())
}

fn value_bytes(value: u64) -> Bytes {
    Bytes::from(value.to_string())
}

/// What the register checker decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterVerdict {
    /// Every register's history is linearizable.
    Linearizable,
    /// A violation, described with the operations involved.
    Violation(Anomaly),
    /// The search ran out of budget: neither a pass nor a violation.
    Undecided(String),
}

/// Checks the register operations of `ops` for linearizability, each register alone.
///
/// Failed operations are left out; indeterminate ones (and ones still in flight when the run
/// ended) have unknown outcomes.
pub fn check(ops: &[OpRecord], states_explored_max: u64) -> RegisterVerdict {
    let mut history: ordo_lincheck::History<KvInput, KvOutput> = ordo_lincheck::History::new();
    // Position in the lincheck history -> index in ours.
    let mut origin: Vec<usize> = Vec::new();
    for op in ops {
        let input = match &op.input {
            Input::RegisterRead { key } => KvInput::Get {
                key: model_bytes(*key),
            },
            Input::RegisterWrite { key, value } => KvInput::Put {
                key: model_bytes(*key),
                value: value_bytes(*value),
            },
            Input::RegisterCas { key, expected, new } => KvInput::Cas {
                key: model_bytes(*key),
                expected: Some(value_bytes(*expected)),
                new: value_bytes(*new),
            },
            _ => continue,
        };
        if op.failed() {
            continue;
        }
        let outcome = match (op.output(), op.complete_ns) {
            (Some(output), Some(return_time)) => {
                let output = match output {
                    Output::Value { value } => KvOutput::Value(value.map(value_bytes)),
                    Output::Written => KvOutput::Done,
                    Output::Applied { succeeded } => KvOutput::Cas(*succeeded),
                    other => {
                        return RegisterVerdict::Violation(Anomaly {
                            kind: AnomalyKind::NotLinearizable,
                            description: format!("register operation returned {other:?}"),
                            ops: vec![op.index],
                        })
                    }
                };
                Outcome::Returned {
                    output,
                    return_time,
                }
            }
            _ => Outcome::Unknown,
        };
        let pushed = history.push(Operation {
            client_id: op.client,
            input,
            call_time: op.invoke_ns,
            outcome,
        });
        if pushed.is_err() {
            // Completion times come from the same monotonic clock as invocations.
            unreachable!("operation {} returned before it was invoked", op.index);
        }
        origin.push(op.index);
    }
    match ordo_lincheck::check_with(
        &KvModel,
        &history,
        CheckOptions {
            states_explored_max,
        },
    ) {
        Ok(()) => RegisterVerdict::Linearizable,
        Err(error @ CheckError::Undecided { .. }) => RegisterVerdict::Undecided(error.to_string()),
        Err(CheckError::NotLinearizable(violation)) => {
            let mut involved: Vec<usize> = violation
                .candidates
                .iter()
                .chain(violation.linearized.iter().rev().take(4).map(|(op, _)| op))
                .map(|report| origin[report.op.0])
                .collect();
            involved.sort_unstable();
            involved.dedup();
            let stuck = ops[origin[violation.stuck.op.0]].clone();
            let flavour = match stuck.input {
                Input::RegisterRead { .. } => {
                    "a read returned a value no linearization allows (stale read or lost write)"
                }
                _ => "a write or compare-and-set result no linearization allows",
            };
            let mut description = format!("register {flavour}: {}\n", stuck.describe());
            description.push_str(&remap_violation(&violation.to_string(), &origin));
            RegisterVerdict::Violation(Anomaly {
                kind: AnomalyKind::NotLinearizable,
                description,
                ops: involved,
            })
        }
    }
}

/// Rewrites "op N" in the checker's report to the history's own operation indexes.
fn remap_violation(text: &str, origin: &[usize]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("op ") {
        out.push_str(&rest[..at + 3]);
        rest = &rest[at + 3..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<usize>().ok().and_then(|n| origin.get(n)) {
            Some(index) if !digits.is_empty() => {
                out.push_str(&index.to_string());
                rest = &rest[digits.len()..];
            }
            _ => {}
        }
    }
    out.push_str(rest);
    out
}
