//! One Raft group on this node: the handle users call, and the requests and errors it
//! speaks in.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use ordo_raft::{ConfState, Index, NodeId, StateRole, Term};
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::Leadership;
use crate::metrics::{inc, GroupMetrics, MetricsSnapshot};
use crate::state_machine::StateMachine;

/// Identifies a Raft group within a cluster; carried in every peer message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub u64);

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a proposal or membership change did not produce an outcome.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// The node this one forwarded to is no longer the leader; `leader` is the one that
    /// node knows of. [`Group::propose`] retries this itself until its timeout.
    #[error("not the leader; the leader is node {leader}")]
    NotLeader {
        /// The leader this node knows of.
        leader: NodeId,
    },
    /// No leader is known (an election is in progress); retry shortly.
    #[error("no leader is known; retry shortly")]
    NoLeader,
    /// The entry was overwritten by a new leader's log: it was not applied, and may be
    /// retried.
    #[error("the proposal was dropped by a leader change; it was not applied")]
    Dropped,
    /// This node installed a snapshot covering the entry's position, so it cannot tell
    /// whether the entry was applied.
    #[error("the outcome is unknown: a snapshot covered the entry")]
    OutcomeUnknown,
    /// The proposal was forwarded to a leader that lost leadership (or stopped answering
    /// and was replaced) before it said where the entry landed: it may or may not be
    /// applied. Not retried, since a retry could apply it twice.
    #[error("the leader changed before it confirmed the forwarded proposal; it may or may not be applied")]
    LeaderLost,
    /// No outcome within the request timeout; the entry may still be applied later.
    #[error("no outcome within {timeout_ms} ms; the proposal may still be applied")]
    Timeout {
        /// The timeout.
        timeout_ms: u64,
    },
    /// The group is shutting down or stopped.
    #[error("the group is shutting down")]
    ShuttingDown,
    /// The proposal is larger than `proposal_bytes_max`.
    #[error("proposal of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Too many proposals are waiting on this node.
    #[error("too many pending proposals (limit {limit})")]
    TooManyPending {
        /// The limit.
        limit: usize,
    },
    /// The leader refused the proposal (uncommitted bytes over the limit, a leadership
    /// transfer or a membership change in progress, an invalid membership change, …).
    #[error("refused by the leader: {0}")]
    Rejected(String),
}

/// Why a linearizable read did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known to confirm the read; retry shortly.
    #[error("no leader is known; retry shortly")]
    NoLeader,
    /// The read was not confirmed (or not applied locally) within the request timeout.
    #[error("the read was not confirmed within {timeout_ms} ms")]
    Timeout {
        /// The timeout.
        timeout_ms: u64,
    },
    /// Too many reads are waiting on this node.
    #[error("too many pending reads (limit {limit})")]
    TooManyPending {
        /// The limit.
        limit: usize,
    },
    /// The group is shutting down or stopped.
    #[error("the group is shutting down")]
    ShuttingDown,
    /// The core refused the read.
    #[error("refused: {0}")]
    Rejected(String),
}

/// Why a question for the group's leader ([`Group::ask_leader`]) got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// No leader is known; retry shortly.
    #[error("no leader is known; retry shortly")]
    NoLeader,
    /// The node asked does not lead; `leader` is the one it knows (0 if none).
    /// [`Group::ask_leader`] retries this itself until its timeout.
    #[error("not the leader; the leader is node {leader}")]
    NotLeader {
        /// The leader that node knows of.
        leader: NodeId,
    },
    /// The leader changed while the question was on its way; it may have been served.
    #[error("the leader changed before it answered")]
    LeaderChanged,
    /// The leader's face refused the question.
    #[error("refused by the leader: {0}")]
    Refused(String),
    /// The group's leader has no service for questions.
    #[error("the group serves no questions for its leader")]
    NoService,
    /// No answer within the request timeout.
    #[error("no answer within {timeout_ms} ms")]
    Timeout {
        /// The timeout.
        timeout_ms: u64,
    },
    /// The question is larger than the limit.
    #[error("question of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Too many questions are waiting on this node.
    #[error("too many pending questions (limit {limit})")]
    TooManyPending {
        /// The limit.
        limit: usize,
    },
    /// The group is shutting down or stopped.
    #[error("the group is shutting down")]
    ShuttingDown,
}

/// A membership operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a node that receives the log but does not vote; `addr` is its peer address.
    AddLearner {
        /// The node.
        id: NodeId,
        /// Its peer address.
        addr: SocketAddr,
    },
    /// Make a node a voter (a learner is promoted; a new node is added as a voter).
    AddVoter {
        /// The node.
        id: NodeId,
        /// Its peer address.
        addr: SocketAddr,
    },
    /// Remove a node.
    Remove {
        /// The node.
        id: NodeId,
    },
}

/// Replication state of one member, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The member.
    pub id: NodeId,
    /// The highest index known to be replicated on it.
    pub match_index: Index,
    /// Entries it lags behind the leader's last index.
    pub lag: u64,
    /// Whether it is a learner.
    pub is_learner: bool,
    /// Whether the leader heard from it in the current check-quorum round.
    pub recent_active: bool,
}

/// A snapshot of a group's state, for `/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group.
    pub group_id: GroupId,
    /// This node.
    pub node_id: NodeId,
    /// This node's role.
    pub role: StateRole,
    /// The current term.
    pub term: Term,
    /// The known leader, or 0.
    pub leader: NodeId,
    /// The commit index.
    pub commit_index: Index,
    /// The index the state machine has applied.
    pub applied_index: Index,
    /// The first index still in the log.
    pub first_index: Index,
    /// The last index of the log.
    pub last_index: Index,
    /// The newest snapshot's index.
    pub snapshot_index: Index,
    /// The configuration as of the core's applied index.
    pub conf_state: ConfState,
    /// Per-member progress; empty unless this node leads.
    pub peers: Vec<PeerStatus>,
    /// The group is idle and stopped ticking on this node until something happens.
    pub quiesced: bool,
}

impl GroupStatus {
    /// Whether this node receives the group's log without voting.
    pub fn is_learner(&self) -> bool {
        self.conf_state.learners.contains(&self.node_id)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Requests from handles to the group's driver.
pub(crate) enum Request<O> {
    Propose {
        data: Bytes,
        reply: oneshot::Sender<Result<O, ProposeError>>,
    },
    Membership {
        change: MembershipChange,
        reply: oneshot::Sender<Result<ConfState, ProposeError>>,
    },
    ReadIndex {
        reply: oneshot::Sender<Result<Index, ReadError>>,
    },
    Status {
        reply: oneshot::Sender<GroupStatus>,
    },
    TransferLeader {
        target: NodeId,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    Ask {
        data: Bytes,
        reply: oneshot::Sender<Result<Bytes, AskError>>,
    },
}

/// The handle on one Raft group hosted by this node. Cheap to clone.
///
/// Proposals and reads may be made on any node: a follower forwards proposals to the
/// leader and resolves them when it applies the entry itself; reads are confirmed by the
/// leader (ReadIndex) and served from the local state machine.
pub struct Group<S: StateMachine> {
    pub(crate) id: GroupId,
    pub(crate) requests: mpsc::Sender<Request<S::Output>>,
    pub(crate) state_machine: Arc<Mutex<S>>,
    pub(crate) applied: watch::Receiver<Index>,
    pub(crate) leadership: watch::Receiver<Leadership>,
    pub(crate) metrics: Arc<GroupMetrics>,
    /// Why the group stopped on its own, once it has.
    pub(crate) failure: Arc<Mutex<Option<String>>>,
    pub(crate) request_timeout_ms: u64,
    pub(crate) tick_interval_ms: u64,
}

impl<S: StateMachine> Clone for Group<S> {
    fn clone(&self) -> Self {
        Group {
            id: self.id,
            requests: self.requests.clone(),
            state_machine: Arc::clone(&self.state_machine),
            applied: self.applied.clone(),
            leadership: self.leadership.clone(),
            metrics: Arc::clone(&self.metrics),
            failure: Arc::clone(&self.failure),
            request_timeout_ms: self.request_timeout_ms,
            tick_interval_ms: self.tick_interval_ms,
        }
    }
}

impl<S: StateMachine> Group<S> {
    /// The group's id.
    pub fn id(&self) -> GroupId {
        self.id
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Proposes `data` and resolves to the state machine's output once this node has
    /// applied the entry. While no leader is known, or a forward reached a node that had
    /// just lost leadership, the proposal (which was then not appended anywhere) is
    /// retried until the request timeout.
    pub async fn propose(&self, data: impl Into<Bytes>) -> Result<S::Output, ProposeError> {
        let data = data.into();
        let deadline = tokio::time::Instant::now() + self.timeout();
        inc(&self.metrics.proposals, 1);
        let result = loop {
            let (reply, rx) = oneshot::channel();
            let sent = self.requests.send(Request::Propose {
                data: data.clone(),
                reply,
            });
            let outcome = match tokio::time::timeout_at(deadline, async {
                sent.await.map_err(|_| ProposeError::ShuttingDown)?;
                rx.await.map_err(|_| ProposeError::ShuttingDown)?
            })
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(ProposeError::Timeout {
                    timeout_ms: self.request_timeout_ms,
                }),
            };
            match outcome {
                Err(ProposeError::NoLeader | ProposeError::NotLeader { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    self.wait_a_tick(deadline).await;
                }
                other => break other,
            }
        };
        if result.is_err() {
            inc(&self.metrics.proposals_failed, 1);
        }
        result
    }

    async fn wait_a_tick(&self, deadline: tokio::time::Instant) {
        let next = tokio::time::Instant::now() + Duration::from_millis(self.tick_interval_ms);
        tokio::time::sleep_until(next.min(deadline)).await;
    }

    /// Changes the group's membership and resolves to the new configuration once this
    /// node has applied the change. One change may be in progress at a time.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<ConfState, ProposeError> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            let (reply, rx) = oneshot::channel();
            let outcome = tokio::time::timeout_at(deadline, async {
                self.requests
                    .send(Request::Membership {
                        change: change.clone(),
                        reply,
                    })
                    .await
                    .map_err(|_| ProposeError::ShuttingDown)?;
                rx.await.map_err(|_| ProposeError::ShuttingDown)?
            })
            .await
            .unwrap_or(Err(ProposeError::Timeout {
                timeout_ms: self.request_timeout_ms,
            }));
            match outcome {
                Err(ProposeError::NoLeader | ProposeError::NotLeader { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    self.wait_a_tick(deadline).await;
                }
                other => return other,
            }
        }
    }

    /// A linearizable read barrier: resolves to an index once this node's state machine
    /// has applied it, where the index was the leader's commit index at some moment after
    /// this call began. Everything acknowledged before the call is then visible through
    /// [`Group::read`].
    pub async fn read_index(&self) -> Result<Index, ReadError> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        let timeout = ReadError::Timeout {
            timeout_ms: self.request_timeout_ms,
        };
        loop {
            let (reply, rx) = oneshot::channel();
            let outcome = tokio::time::timeout_at(deadline, async {
                self.requests
                    .send(Request::ReadIndex { reply })
                    .await
                    .map_err(|_| ReadError::ShuttingDown)?;
                rx.await.map_err(|_| ReadError::ShuttingDown)?
            })
            .await
            .unwrap_or(Err(timeout.clone()));
            match outcome {
                Err(ReadError::NoLeader) if tokio::time::Instant::now() < deadline => {
                    self.wait_a_tick(deadline).await;
                }
                other => return other,
            }
        }
    }

    /// Asks the group's leader a question in the face's own encoding, answered by the
    /// [`LeaderService`](crate::LeaderService) the group was started with on the leader's
    /// node. From a follower the question travels over the peer transport; while no leader
    /// is known, or the node asked no longer leads, it is asked again until the request
    /// timeout. A question whose leader changed on its way is not asked again
    /// ([`AskError::LeaderChanged`]): it may have been served.
    pub async fn ask_leader(&self, data: impl Into<Bytes>) -> Result<Bytes, AskError> {
        let data = data.into();
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            let (reply, rx) = oneshot::channel();
            let outcome = tokio::time::timeout_at(deadline, async {
                self.requests
                    .send(Request::Ask {
                        data: data.clone(),
                        reply,
                    })
                    .await
                    .map_err(|_| AskError::ShuttingDown)?;
                rx.await.map_err(|_| AskError::ShuttingDown)?
            })
            .await
            .unwrap_or(Err(AskError::Timeout {
                timeout_ms: self.request_timeout_ms,
            }));
            match outcome {
                Err(AskError::NoLeader | AskError::NotLeader { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    self.wait_a_tick(deadline).await;
                }
                other => return other,
            }
        }
    }

    /// Who leads the group, as this node sees it: updated by the runtime on every change
    /// of leader, term or this node's role.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Reads the local state machine as it is now (a serializable read: it may miss
    /// writes acknowledged elsewhere that this node has not applied yet).
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&lock(&self.state_machine))
    }

    /// A linearizable read: [`Group::read_index`], then [`Group::read`].
    pub async fn linearizable_read<R>(&self, f: impl FnOnce(&S) -> R) -> Result<R, ReadError> {
        self.read_index().await?;
        Ok(self.read(f))
    }

    /// The index the local state machine has applied.
    pub fn applied_index(&self) -> Index {
        *self.applied.borrow()
    }

    /// Waits until the local state machine has applied `index` (or the timeout passes).
    pub async fn wait_applied(&self, index: Index, timeout: Duration) -> Result<(), ReadError> {
        let mut applied = self.applied.clone();
        let reached = tokio::time::timeout(timeout, async {
            applied.wait_for(|&a| a >= index).await.map(|_| ())
        })
        .await;
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(ReadError::ShuttingDown),
            Err(_) => Err(ReadError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Asks the leader to hand leadership to `target` (thesis §3.10); from a follower the
    /// request is forwarded. Resolves once the request is handed to the core, not when
    /// the transfer completes: watch [`Group::status`] for the new leader.
    pub async fn transfer_leader(&self, target: NodeId) -> Result<(), ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::TransferLeader { target, reply })
            .await
            .map_err(|_| ProposeError::ShuttingDown)?;
        rx.await.map_err(|_| ProposeError::ShuttingDown)?
    }

    /// The group's status.
    pub async fn status(&self) -> Result<GroupStatus, ReadError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Status { reply })
            .await
            .map_err(|_| ReadError::ShuttingDown)?;
        let mut status = rx.await.map_err(|_| ReadError::ShuttingDown)?;
        status.applied_index = self.applied_index();
        Ok(status)
    }

    /// Why the group stopped on its own, if it did: its log or snapshot could not be read
    /// (the reason names the file and byte offset), its state machine stopped. `None` while
    /// it runs or after a clean shutdown.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// The group's counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }
}

/// Numbers requests of this process.
pub(crate) static BOOT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number that differs between runs of a node's process (and between node instances
/// in one process), so request ids never repeat across restarts.
pub(crate) fn boot_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32) ^ BOOT_COUNTER.fetch_add(1, Ordering::Relaxed)
}
