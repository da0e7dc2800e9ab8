//! The workloads: concurrent clients that issue operations over the etcd v3 API and record
//! them, and the checkers that judge what they recorded.

pub mod append;
pub mod bank;
pub mod register;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{classify, timed_out, Conn};
use crate::history::{Completion, Recorder};

/// What every workload client needs.
#[derive(Clone, Debug)]
pub struct Context {
    /// The cluster's endpoints; client `c` starts on endpoint `c % len` and moves to the next
    /// after an error.
    pub conns: Vec<Conn>,
    /// Where operations are recorded.
    pub recorder: Arc<Recorder>,
    /// Every key this run touches starts with it, so runs never see each other's keys.
    pub prefix: String,
    /// Clients stop invoking new operations at this instant.
    pub deadline: Instant,
    /// How long a client waits for one answer before recording it as timed out.
    pub op_timeout: Duration,
    /// Most operations one client invokes.
    pub ops_per_client_max: u64,
}

/// One anomaly kind a checker can find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    /// The register history has no linearization (stale read, lost or phantom write, ...).
    NotLinearizable,
    /// A bank read whose balances do not add up to the initial total.
    BankTotalChanged,
    /// A bank read with a negative balance.
    NegativeBalance,
    /// A bank read that is missing accounts or has extra ones.
    BankAccountsChanged,
    /// An acknowledged append is absent from the final read, or disappeared after being read.
    LostAppend,
    /// A read that began after an append was acknowledged does not contain it.
    StaleAppendRead,
    /// The same append seen at two revisions, or a revision shared by two keys.
    AppendRevisionMismatch,
    /// A watch stream skipped a revision it should have delivered.
    WatchGap,
    /// A watch stream delivered the same revision twice.
    WatchDuplicate,
    /// A watch stream delivered revisions out of order.
    WatchReorder,
    /// A watch event for a key no read or acknowledgement explains, or a delete.
    WatchUnexplainedEvent,
    /// A watcher never caught up with the final read's revision.
    WatchIncomplete,
}

/// One violation, with the operations involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Its kind.
    pub kind: AnomalyKind,
    /// What was seen, in words.
    pub description: String,
    /// Indexes of the operations involved.
    pub ops: Vec<usize>,
}

/// Awaits one request with the operation timeout and turns the result into a completion.
/// `write` says whether a failure may have taken effect.
pub(crate) async fn call<T>(
    timeout: Duration,
    write: bool,
    request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Completion> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(classify(&status, write)),
        Err(_) => Err(timed_out(timeout, write)),
    }
}

/// A client's position in the endpoint list.
#[derive(Debug)]
pub(crate) struct Cursor {
    conns: Vec<Conn>,
    at: usize,
}

impl Cursor {
    pub(crate) fn new(conns: &[Conn], client: u64) -> Cursor {
        assert!(!conns.is_empty(), "a workload needs at least one endpoint");
        let at = (client as usize) % conns.len();
        Cursor {
            conns: conns.to_vec(),
            at,
        }
    }

    pub(crate) fn conn(&self) -> &Conn {
        &self.conns[self.at]
    }

    /// Moves to the next endpoint (after an error: that node may be down or partitioned).
    pub(crate) fn rotate(&mut self) {
        self.at = (self.at + 1) % self.conns.len();
    }
}

/// Pause after an error before the next operation, so a client facing a dead cluster does
/// not spin.
pub(crate) const ERROR_BACKOFF: Duration = Duration::from_millis(20);
