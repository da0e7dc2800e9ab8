//! Bank: accounts with a fixed total. A transfer reads every account, then moves an amount
//! with one Txn that compares both accounts' mod revisions with what it read and puts both
//! new balances. Every read of all accounts (one linearizable Range over the prefix) must
//! show the initial total and no negative balance.

use std::collections::BTreeMap;

use ordo_kv::proto::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::{call, Anomaly, AnomalyKind, Context, Cursor, ERROR_BACKOFF};
use crate::client::{prefix_end, Rng};
use crate::history::{Completion, Input, OpRecord, Output};

/// Largest amount one transfer moves.
const TRANSFER_AMOUNT_MAX: u64 = 5;

/// How many times setting up the accounts is attempted before giving up.
const SETUP_ATTEMPTS_MAX: u32 = 100;

/// The bank's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BankConfig {
    /// Number of accounts.
    pub accounts: u32,
    /// Each account's initial balance.
    pub initial_balance: i64,
}

impl BankConfig {
    /// The sum every read must show.
    pub fn total(&self) -> i64 {
        i64::from(self.accounts) * self.initial_balance
    }
}

fn account_prefix(prefix: &str) -> String {
    format!("{prefix}/bank/")
}

fn account_key(prefix: &str, account: u32) -> String {
    format!("{prefix}/bank/{account:04}")
}

/// Creates every account with its initial balance in one Txn guarded by "account 0 does not
/// exist yet", retried until an answer says it is done.
pub async fn setup(ctx: &Context, config: BankConfig) -> Result<(), String> {
    let mut cursor = Cursor::new(&ctx.conns, 0);
    let mut last_error = String::new();
    for _ in 0..SETUP_ATTEMPTS_MAX {
        let puts = (0..config.accounts)
            .map(|account| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: account_key(&ctx.prefix, account).into_bytes(),
                    value: config.initial_balance.to_string().into_bytes(),
                    ..Default::default()
                })),
            })
            .collect();
        let request = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Create as i32,
                key: account_key(&ctx.prefix, 0).into_bytes(),
                target_union: Some(compare::TargetUnion::CreateRevision(0)),
                ..Default::default()
            }],
            success: puts,
            failure: vec![],
        };
        match call(ctx.op_timeout, true, cursor.conn().kv().txn(request)).await {
            Ok(_) => return Ok(()),
            Err(completion) => {
                last_error = format!("{completion:?}");
                cursor.rotate();
                tokio::time::sleep(ERROR_BACKOFF * 5).await;
            }
        }
    }
    Err(format!(
        "could not create the bank accounts in {SETUP_ATTEMPTS_MAX} attempts: {last_error}"
    ))
}

/// Balances and mod revisions read in one range.
type Accounts = BTreeMap<u32, (i64, i64)>;

/// Reads every account, recording the read; `None` when it failed.
async fn read_all(ctx: &Context, cursor: &Cursor, client: u64) -> Option<Option<Accounts>> {
    let conn = cursor.conn();
    let index = ctx.recorder.invoke(client, &conn.addr, Input::BankRead)?;
    let prefix = account_prefix(&ctx.prefix).into_bytes();
    let request = RangeRequest {
        range_end: prefix_end(&prefix),
        key: prefix,
        ..Default::default()
    };
    let result = call(ctx.op_timeout, false, conn.kv().range(request)).await;
    let (completion, accounts) = match result {
        Ok(response) => {
            let mut accounts = Accounts::new();
            let mut unparseable = None;
            for kv in &response.kvs {
                let key = String::from_utf8_lossy(&kv.key);
                let account = key.rsplit('/').next().and_then(|n| n.parse::<u32>().ok());
                let balance = std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|v| v.parse::<i64>().ok());
                match (account, balance) {
                    (Some(account), Some(balance)) => {
                        accounts.insert(account, (balance, kv.mod_revision));
                    }
                    _ => unparseable = Some(format!("unparseable account {key}: {:?}", kv.value)),
                }
            }
            match unparseable {
                Some(error) => (Completion::Fail { error }, None),
                None => {
                    let balances = accounts.iter().map(|(&a, &(b, _))| (a, b)).collect();
                    (
                        Completion::Ok {
                            output: Output::Balances { balances },
                        },
                        Some(accounts),
                    )
                }
            }
        }
        Err(completion) => (completion, None),
    };
    ctx.recorder.complete(index, completion);
    Some(accounts)
}

/// Runs one bank client until the deadline or its operation limit.
pub async fn client(ctx: Context, client: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut cursor = Cursor::new(&ctx.conns, client);
    let mut ops = 0u64;
    while ops < ctx.ops_per_client_max && tokio::time::Instant::now() < ctx.deadline {
        ops += 1;
        ctx.pace().await;
        let Some(read) = read_all(&ctx, &cursor, client).await else {
            return;
        };
        let Some(accounts) = read else {
            cursor.rotate();
            tokio::time::sleep(ERROR_BACKOFF).await;
            continue;
        };
        if rng.percent(40) || accounts.len() < 2 {
            continue;
        }
        let ids: Vec<u32> = accounts.keys().copied().collect();
        let from = ids[rng.below(ids.len() as u64) as usize];
        let to = loop {
            let to = ids[rng.below(ids.len() as u64) as usize];
            if to != from {
                break to;
            }
        };
        let amount = rng.between(1, TRANSFER_AMOUNT_MAX) as i64;
        let (from_balance, from_revision) = accounts[&from];
        let (to_balance, to_revision) = accounts[&to];
        if from_balance < amount {
            continue;
        }
        ops += 1;
        let conn = cursor.conn().clone();
        let Some(index) =
            ctx.recorder
                .invoke(client, &conn.addr, Input::BankTransfer { from, to, amount })
        else {
            return;
        };
        let guard = |account: u32, revision: i64| Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: account_key(&ctx.prefix, account).into_bytes(),
            target_union: Some(compare::TargetUnion::ModRevision(revision)),
            ..Default::default()
        };
        let put = |account: u32, balance: i64| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: account_key(&ctx.prefix, account).into_bytes(),
                value: balance.to_string().into_bytes(),
                ..Default::default()
            })),
        };
        let request = TxnRequest {
            compare: vec![guard(from, from_revision), guard(to, to_revision)],
            success: vec![
                put(from, from_balance - amount),
                put(to, to_balance + amount),
            ],
            failure: vec![],
        };
        let completion = match call(ctx.op_timeout, true, conn.kv().txn(request)).await {
            Ok(response) => Completion::Ok {
                output: Output::Applied {
                    succeeded: response.succeeded,
                },
            },
            Err(completion) => completion,
        };
        let failed = !matches!(completion, Completion::Ok { .. });
        ctx.recorder.complete(index, completion);
        if failed {
            cursor.rotate();
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
}

/// Checks every successful bank read: all accounts present, none negative, the total kept.
pub fn check(ops: &[OpRecord], config: BankConfig) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for op in ops {
        let (Input::BankRead, Some(Output::Balances { balances })) = (&op.input, op.output())
        else {
            continue;
        };
        let expected: Vec<u32> = (0..config.accounts).collect();
        let seen: Vec<u32> = balances.keys().copied().collect();
        if seen != expected {
            anomalies.push(Anomaly {
                kind: AnomalyKind::BankAccountsChanged,
                description: format!(
                    "bank read saw accounts {seen:?}, expected 0..{}: {}",
                    config.accounts,
                    op.describe()
                ),
                ops: vec![op.index],
            });
        }
        let total: i64 = balances.values().sum();
        if total != config.total() {
            anomalies.push(Anomaly {
                kind: AnomalyKind::BankTotalChanged,
                description: format!(
                    "bank read totals {total}, expected {}: {}",
                    config.total(),
                    op.describe()
                ),
                ops: vec![op.index],
            });
        }
        if let Some((account, balance)) = balances.iter().find(|(_, &b)| b < 0) {
            anomalies.push(Anomaly {
                kind: AnomalyKind::NegativeBalance,
                description: format!(
                    "bank read shows account {account} at {balance}: {}",
                    op.describe()
                ),
                ops: vec![op.index],
            });
        }
    }
    anomalies
}
