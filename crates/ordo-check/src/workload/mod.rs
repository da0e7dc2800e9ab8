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
    /// after an error. The nemesis changes the set when members come and go.
    pub conns: Endpoints,
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
    /// How long each client waits before each operation: paces a long run so that its
    /// history stays within what can be recorded and checked.
    pub op_interval: Duration,
}

impl Context {
    /// Waits [`Context::op_interval`] before a client's next operation.
    pub async fn pace(&self) {
        if !self.op_interval.is_zero() {
            tokio::time::sleep(self.op_interval).await;
        }
    }
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

/// The endpoints of the cluster's current members, shared by every client and changed by
/// the nemesis when members are added or removed.
#[derive(Clone, Debug)]
pub struct Endpoints {
    conns: Arc<std::sync::RwLock<Vec<Conn>>>,
}

impl Endpoints {
    /// The set `conns`, which must not be empty.
    pub fn new(conns: Vec<Conn>) -> Endpoints {
        assert!(!conns.is_empty(), "a workload needs at least one endpoint");
        Endpoints {
            conns: Arc::new(std::sync::RwLock::new(conns)),
        }
    }

    /// The endpoints now.
    pub fn current(&self) -> Vec<Conn> {
        // Every write leaves the list whole, so a poisoned lock still holds a valid list.
        self.conns
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adds `conn` (a member that joined).
    pub fn add(&self, conn: Conn) {
        let mut conns = self
            .conns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !conns.iter().any(|c| c.addr == conn.addr) {
            conns.push(conn);
        }
    }

    /// Removes the endpoint `addr` (a member that left), unless it is the last one.
    pub fn remove(&self, addr: &str) {
        let mut conns = self
            .conns
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if conns.len() > 1 {
            conns.retain(|c| c.addr != addr);
        }
    }
}

/// A client's position in the endpoint list.
#[derive(Debug)]
pub(crate) struct Cursor {
    endpoints: Endpoints,
    conns: Vec<Conn>,
    at: usize,
}

impl Cursor {
    pub(crate) fn new(endpoints: &Endpoints, client: u64) -> Cursor {
        let conns = endpoints.current();
        assert!(!conns.is_empty(), "a workload needs at least one endpoint");
        let at = (client as usize) % conns.len();
        Cursor {
            endpoints: endpoints.clone(),
            conns,
            at,
        }
    }

    pub(crate) fn conn(&self) -> &Conn {
        &self.conns[self.at]
    }

    /// Moves to the next endpoint of the current member set (after an error: that node may
    /// be down, partitioned or gone).
    pub(crate) fn rotate(&mut self) {
        let from = self.conns[self.at].addr.clone();
        self.conns = self.endpoints.current();
        assert!(!self.conns.is_empty(), "the endpoint set is never emptied");
        let here = self.conns.iter().position(|c| c.addr == from);
        self.at = here.map_or(self.at, |i| i + 1) % self.conns.len();
    }
}

/// Pause after an error before the next operation, so a client facing a dead cluster does
/// not spin.
pub(crate) const ERROR_BACKOFF: Duration = Duration::from_millis(20);
