//! What the gRPC services need from the node, and the single-replica implementation.

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::command::{self, ApplyResponse, Command};
use crate::error::KvError;
use crate::lessor::Lessor;
use crate::proto::internal::LeaseExpireRequest;
use crate::state::KvState;
use crate::store::KvStore;

/// A cluster member as reported by `MemberList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member id.
    pub id: u64,
    /// Human-readable name.
    pub name: String,
    /// URLs peers reach it on.
    pub peer_urls: Vec<String>,
    /// URLs clients reach it on.
    pub client_urls: Vec<String>,
    /// Whether it is a non-voting learner.
    pub is_learner: bool,
}

/// Why a membership request (add, remove, promote) was refused or failed. The texts of the
/// etcd-defined cases are etcd's, so tools that match on them keep working.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// This server cannot change its membership (a single-node server, or a backend without
    /// a replicated configuration).
    #[error("ordo: {0}")]
    Unsupported(String),
    /// No member has this id.
    #[error("etcdserver: member not found")]
    NotFound {
        /// The id asked for.
        id: u64,
    },
    /// A peer URL is malformed or not an `IP:PORT` address.
    #[error("ordo: invalid peer URL `{url}`: {problem}")]
    InvalidPeerUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Another member already uses this peer URL.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists {
        /// The URL.
        url: String,
    },
    /// Promotion asked for a member that is already a voter.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner {
        /// The member.
        id: u64,
    },
    /// Promotion asked for a learner that has not caught up with the leader's log.
    #[error("etcdserver: can only promote a learner member which is in sync with leader (member {id:x} has acknowledged the log up to index {match_index}, {lag} entries behind the leader; retry once it has caught up)")]
    LearnerNotReady {
        /// The learner.
        id: u64,
        /// The highest index it has acknowledged.
        match_index: u64,
        /// Entries it lags behind the leader.
        lag: u64,
    },
    /// The leader refused the change (another change is still in progress, or the change
    /// would leave the cluster without voters, ...).
    #[error("ordo: the membership change was refused: {0}")]
    Rejected(String),
    /// The leader, to which the request was passed on, refused it; its words are kept.
    #[error("{message}")]
    LeaderRefused {
        /// The leader's explanation.
        message: String,
    },
    /// No leader is known, or the leader could not be reached to decide the request.
    #[error("etcdserver: no leader ({0})")]
    NoLeader(String),
    /// The change was proposed but its outcome is unknown (timeout, leader change); list
    /// the members to see whether it took effect.
    #[error("etcdserver: request timed out ({0}); list the members to see whether the change took effect")]
    Unknown(String),
}

impl MemberError {
    /// The gRPC status code etcd uses for this error.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            MemberError::Unsupported(_) => Code::Unimplemented,
            MemberError::NotFound { .. } => Code::NotFound,
            MemberError::InvalidPeerUrl { .. } => Code::InvalidArgument,
            MemberError::PeerUrlExists { .. }
            | MemberError::NotLearner { .. }
            | MemberError::LearnerNotReady { .. }
            | MemberError::LeaderRefused { .. }
            | MemberError::Rejected(_) => Code::FailedPrecondition,
            MemberError::NoLeader(_) | MemberError::Unknown(_) => Code::Unavailable,
        }
    }
}

impl From<MemberError> for tonic::Status {
    fn from(error: MemberError) -> tonic::Status {
        tonic::Status::new(error.code(), error.to_string())
    }
}

/// What a successful membership change answers: the member it concerned and the members
/// after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChanged {
    /// The member added, removed or promoted.
    pub member: MemberInfo,
    /// Every member after the change, ascending by id.
    pub members: Vec<MemberInfo>,
}

/// The local node's view of consensus, for response headers and `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    /// Cluster id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// The leader this member follows, if it knows one.
    pub leader_id: Option<u64>,
    /// Current Raft term.
    pub raft_term: u64,
    /// Raft commit index.
    pub commit_index: u64,
    /// Index applied to the KV state machine.
    pub applied_index: u64,
    /// Whether this member is a learner.
    pub is_learner: bool,
}

/// What the KV services need from the node runtime.
///
/// Writes go through [`KvBackend::propose`], which resolves once the command is committed
/// and applied locally, with the result the state machine computed for it. Reads are served
/// from [`KvBackend::state`]: linearizable ones after [`KvBackend::read_barrier`],
/// serializable ones directly.
pub trait KvBackend: Send + Sync + 'static {
    /// The local replica's store.
    fn state(&self) -> &KvState;

    /// Orders `command` through the log (forwarding to the leader when needed) and resolves
    /// with its result once applied locally. Errors before ordering are `NoLeader`,
    /// `RequestTooLarge`; an unknown outcome is `LeaderChanged` or `Timeout`.
    fn propose(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<ApplyResponse, KvError>> + Send;

    /// Resolves once the local store reflects every write committed before the call
    /// (ReadIndex, then waiting until applied index >= read index).
    fn read_barrier(&self) -> impl Future<Output = Result<(), KvError>> + Send;

    /// Renews a lease on the leader's lessor; `Ok(None)` when the lease is unknown or
    /// expired, else its time to live in seconds.
    fn lease_keep_alive(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<i64>, KvError>> + Send;

    /// A lease's remaining seconds according to the leader's lessor; `Ok(None)` if unknown.
    fn lease_remaining(&self, id: i64)
        -> impl Future<Output = Result<Option<i64>, KvError>> + Send;

    /// The cluster's members, ascending by id, in the configuration as this member knows it
    /// now.
    fn members(&self) -> impl Future<Output = Vec<MemberInfo>> + Send;

    /// The local node's consensus status as it can be told at once, for response headers:
    /// identity and term are current, the rest may lag.
    fn status(&self) -> NodeStatus;

    /// The local node's consensus status read from the consensus layer now, for the
    /// Maintenance Status call. The default is [`KvBackend::status`].
    fn current_status(&self) -> impl Future<Output = NodeStatus> + Send {
        std::future::ready(self.status())
    }

    /// Adds a member reachable by peers at `peer_urls`, as a learner or a voter, and answers
    /// with its new id. Backends that cannot change membership refuse with
    /// [`MemberError::Unsupported`].
    fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> impl Future<Output = Result<MemberChanged, MemberError>> + Send {
        let _ = (peer_urls, is_learner);
        std::future::ready(Err(MemberError::Unsupported(
            "this server cannot change its membership".into(),
        )))
    }

    /// Removes member `id` (the leader included); an unknown id is
    /// [`MemberError::NotFound`].
    fn member_remove(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<MemberChanged, MemberError>> + Send {
        let _ = id;
        std::future::ready(Err(MemberError::Unsupported(
            "this server cannot change its membership".into(),
        )))
    }

    /// Hands leadership to voter `target` and resolves once it leads (etcd's MoveLeader).
    fn move_leader(&self, target: u64) -> impl Future<Output = Result<(), MemberError>> + Send {
        let _ = target;
        std::future::ready(Err(MemberError::Unsupported(
            "this server cannot move leadership".into(),
        )))
    }

    /// Makes learner `id` a voter, only once it has caught up with the leader.
    fn member_promote(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<MemberChanged, MemberError>> + Send {
        let _ = id;
        std::future::ready(Err(MemberError::Unsupported(
            "this server cannot change its membership".into(),
        )))
    }
}

/// Identity of a single-replica deployment.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Cluster id reported in headers.
    pub cluster_id: u64,
    /// The member.
    pub member: MemberInfo,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            cluster_id: 0x6f72_646f_6b76_0001,
            member: MemberInfo {
                id: 0x6f72_646f_0000_0001,
                name: "ordo".to_string(),
                peer_urls: vec!["http://127.0.0.1:2380".to_string()],
                client_urls: vec!["http://127.0.0.1:2379".to_string()],
                is_learner: false,
            },
        }
    }
}

struct LocalInner {
    last_index: u64,
    next_request_id: u64,
    lessor: Lessor,
}

/// A one-node deployment: commands are applied directly, in order, under a lock. It is its
/// own leader, so its log is its apply order and every read is linearizable without a
/// barrier.
pub struct LocalBackend {
    state: KvState,
    inner: Mutex<LocalInner>,
    clock_origin: Instant,
    config: LocalConfig,
}

/// Most leases expired per lessor tick, so one tick's proposals stay bounded.
pub const LEASE_EXPIRIES_PER_TICK_MAX: usize = 1000;

impl LocalBackend {
    /// A backend over `store` (e.g. restored from a snapshot).
    pub fn new(store: KvStore, config: LocalConfig) -> LocalBackend {
        let last_index = store.applied_index();
        let backend = LocalBackend {
            state: KvState::new(store),
            inner: Mutex::new(LocalInner {
                last_index,
                next_request_id: 1,
                lessor: Lessor::new(),
            }),
            clock_origin: Instant::now(),
            config,
        };
        let now_ms = backend.now_ms();
        {
            // Lock order everywhere: the backend's lock, then the store's.
            let mut inner = backend.lock();
            backend.state.read(|store| inner.lessor.sync(store, now_ms));
        }
        backend
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalInner> {
        self.inner
            .lock()
            .expect("local backend lock poisoned by a panic during apply")
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock_origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Orders and applies one command.
    pub fn apply_command(&self, command: Command) -> Result<ApplyResponse, KvError> {
        let now_ms = self.now_ms();
        let mut inner = self.lock();
        self.apply_locked(&mut inner, command, now_ms)
    }

    fn apply_locked(
        &self,
        inner: &mut LocalInner,
        command: Command,
        now_ms: u64,
    ) -> Result<ApplyResponse, KvError> {
        let request_id = inner.next_request_id;
        let revoked = match &command {
            Command::LeaseRevoke(r) => Some(r.id),
            Command::LeaseExpire(r) => Some(r.id),
            _ => None,
        };
        let bytes = command::encode(request_id, command)?;
        inner.next_request_id += 1;
        inner.last_index += 1;
        let applied = self.state.apply(inner.last_index, &bytes);
        assert_eq!(
            applied.request_id,
            Some(request_id),
            "applied entry lost its request id"
        );
        // Keep the lessor in step with the applied command, without a full resync.
        match (&applied.result, revoked) {
            (Ok(ApplyResponse::LeaseGrant(granted)), _) => {
                inner.lessor.grant(granted.id, granted.ttl, now_ms);
            }
            (Ok(ApplyResponse::LeaseRevoke(_)), Some(id)) => inner.lessor.revoke(id),
            _ => {}
        }
        applied.result
    }

    /// Proposes expiry of every lease past its deadline; returns the ids expired.
    pub fn expire_leases(&self) -> Vec<i64> {
        let now_ms = self.now_ms();
        // One critical section from choosing to applying, so no keep-alive can renew a lease
        // between the decision that it expired and its expiry.
        let mut inner = self.lock();
        self.state.read(|store| inner.lessor.sync(store, now_ms));
        let expired = inner.lessor.expired(now_ms, LEASE_EXPIRIES_PER_TICK_MAX);
        let mut revoked = Vec::with_capacity(expired.len());
        for id in expired {
            let command = Command::LeaseExpire(LeaseExpireRequest { id });
            match self.apply_locked(&mut inner, command, now_ms) {
                Ok(_) => {
                    tracing::debug!(lease_id = id, "lease expired");
                    revoked.push(id);
                }
                // A store out of revisions can apply no write: the lease stays, and is
                // found expired again at the next tick.
                Err(KvError::RevisionsExhausted { .. }) => {}
                Err(error) => {
                    panic!("lease {id} tracked by the lessor is missing from the store: {error}")
                }
            }
        }
        revoked
    }

    /// Spawns the lessor's clock: every `interval`, expire leases whose time ran out. The task
    /// ends when the backend is dropped.
    pub fn spawn_lease_expiry(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<LocalBackend> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(backend) = weak.upgrade() else {
                    return;
                };
                backend.expire_leases();
            }
        })
    }
}

fn single_node_refusal() -> MemberError {
    MemberError::Unsupported(
        "this is a single-node server without replication, so it cannot add, remove or promote members; run `ordo server` with --peers for a cluster"
            .into(),
    )
}

impl KvBackend for LocalBackend {
    fn state(&self) -> &KvState {
        &self.state
    }

    async fn propose(&self, command: Command) -> Result<ApplyResponse, KvError> {
        self.apply_command(command)
    }

    async fn read_barrier(&self) -> Result<(), KvError> {
        // Every write is applied before its proposal returns, so the store is never behind.
        Ok(())
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>, KvError> {
        let now_ms = self.now_ms();
        Ok(self.lock().lessor.keep_alive(id, now_ms))
    }

    async fn lease_remaining(&self, id: i64) -> Result<Option<i64>, KvError> {
        let now_ms = self.now_ms();
        Ok(self.lock().lessor.remaining_seconds(id, now_ms))
    }

    async fn members(&self) -> Vec<MemberInfo> {
        vec![self.config.member.clone()]
    }

    async fn member_add(
        &self,
        _peer_urls: Vec<String>,
        _is_learner: bool,
    ) -> Result<MemberChanged, MemberError> {
        Err(single_node_refusal())
    }

    async fn member_remove(&self, _id: u64) -> Result<MemberChanged, MemberError> {
        Err(single_node_refusal())
    }

    async fn member_promote(&self, _id: u64) -> Result<MemberChanged, MemberError> {
        Err(single_node_refusal())
    }

    fn status(&self) -> NodeStatus {
        let applied_index = self.state.progress().applied_index;
        NodeStatus {
            cluster_id: self.config.cluster_id,
            member_id: self.config.member.id,
            leader_id: Some(self.config.member.id),
            raft_term: 1,
            commit_index: applied_index,
            applied_index,
            is_learner: false,
        }
    }
}
