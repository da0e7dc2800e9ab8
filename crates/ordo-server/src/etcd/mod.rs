//! The etcd v3 face's backend over the replicated KV group, once: proposals, linearizable
//! reads, the leader's lease clock, members and their addresses, and membership changes.
//!
//! Writes are proposed through the group handle (a follower's runtime forwards them to the
//! leader) and resolve with the result the local [`KvMachine`] computed. Linearizable reads
//! wait for a ReadIndex. Lease time is kept by the leader's [`LeaseClock`]: keep-alives and
//! time-to-live questions are asked of the leader over the peer transport ([`questions`],
//! answered by [`leader_service`]), and expiries travel through the log so every replica
//! deletes the same keys at the same revision. A learner's promotion is decided by the
//! leader the same way. Members and their addresses are in [`members`].

pub mod members;
pub mod questions;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;

use ordo_kv::backend::{MemberChanged, MemberError};
use ordo_kv::command::{self, ApplyResponse, Command};
use ordo_kv::proto::internal::LeaseExpireRequest;
use ordo_kv::{KvBackend, KvError, KvMachine, KvState, LeaseClock, MemberInfo, NodeStatus};
use ordo_node::{AskError, Group, GroupStatus, LeaderService, NodeId, ProposeError, ReadError};

use crate::replica::Replica;

use members::MemberDirectory;
use questions::{Answer, Question};

/// The name under which every node advertises the URL of its etcd API to its peers, over
/// the peer transport.
pub const CLIENT_URL_ADVERTISED: &str = "etcd-client-url";

/// Most leases expired in one lessor round, so one round's proposals stay bounded.
pub const LEASE_EXPIRIES_PER_ROUND_MAX: usize = 1000;

/// A runtime proposal error in the words etcd clients understand.
pub fn propose_error(error: ProposeError) -> KvError {
    match error {
        ProposeError::NotLeader { .. } | ProposeError::NoLeader => KvError::NoLeader,
        ProposeError::Dropped | ProposeError::OutcomeUnknown | ProposeError::LeaderLost => {
            KvError::LeaderChanged
        }
        ProposeError::TooLarge { .. } => KvError::RequestTooLarge,
        ProposeError::ShuttingDown => KvError::Stopped,
        // The runtime's back-pressure has no etcd counterpart in `KvError`; "timed out"
        // tells the client the same thing: retry later, the outcome is not known.
        ProposeError::Timeout { .. }
        | ProposeError::TooManyPending { .. }
        | ProposeError::Rejected(_) => KvError::Timeout,
    }
}

/// A lease question the leader could not answer, in the words etcd clients understand.
fn lease_ask_error(error: AskError) -> KvError {
    match error {
        AskError::NoLeader | AskError::NotLeader { .. } | AskError::Refused(_) => KvError::NoLeader,
        AskError::LeaderChanged => KvError::LeaderChanged,
        AskError::ShuttingDown => KvError::Stopped,
        AskError::TooLarge { .. } => KvError::RequestTooLarge,
        AskError::NoService | AskError::Timeout { .. } | AskError::TooManyPending { .. } => {
            KvError::Timeout
        }
    }
}

/// A runtime read error in the words etcd clients understand.
pub fn read_error(error: ReadError) -> KvError {
    match error {
        ReadError::NoLeader => KvError::NoLeader,
        ReadError::ShuttingDown => KvError::Stopped,
        ReadError::Timeout { .. } | ReadError::TooManyPending { .. } | ReadError::Rejected(_) => {
            KvError::Timeout
        }
    }
}

/// The KV store this node replicates: the state the group's [`KvMachine`] applies to, and
/// the lease clock it keeps in step.
pub struct KvReplica {
    /// The store.
    pub state: Arc<KvState>,
    /// The lease deadlines.
    pub leases: Arc<LeaseClock>,
}

/// The etcd services' backend over the replicated KV group.
pub struct EtcdBackend {
    replica: Arc<Replica<KvMachine>>,
    kv: KvReplica,
    directory: MemberDirectory,
    next_request_id: AtomicU64,
}

impl EtcdBackend {
    /// A backend over `group`, whose [`KvMachine`] applies to `kv`, in cluster `cluster_id`,
    /// with the member addresses of `directory` (which names this node).
    pub fn new(
        group: Group<KvMachine>,
        kv: KvReplica,
        cluster_id: u64,
        directory: MemberDirectory,
    ) -> EtcdBackend {
        let node_id = directory.node_id();
        let on_elected = {
            let (state, leases) = (Arc::clone(&kv.state), Arc::clone(&kv.leases));
            Box::new(move |term| {
                leases.restart_deadlines(&state);
                tracing::info!(node = node_id, term, "leading: lease deadlines restarted");
            })
        };
        EtcdBackend {
            replica: Arc::new(Replica::new(group, node_id, cluster_id, on_elected)),
            kv,
            directory,
            next_request_id: AtomicU64::new(1),
        }
    }

    /// The replicated group underneath.
    pub fn replica(&self) -> &Arc<Replica<KvMachine>> {
        &self.replica
    }

    /// Reads the group's status (see [`Replica::refresh`]).
    pub async fn refresh(&self) -> Result<GroupStatus, ReadError> {
        self.replica.refresh().await
    }

    /// Records the runtime's peer set: members added later become known with the address
    /// this node dials.
    pub fn learn_peers(&self, peers: &[(NodeId, SocketAddr)]) {
        self.directory.learn_peers(peers);
    }

    /// On the leader, proposes the expiry of every lease past its deadline; returns how
    /// many were proposed. Followers do nothing.
    pub async fn expire_leases(&self) -> usize {
        if !self.replica.is_leader() {
            return 0;
        }
        let expired = self.kv.leases.expired(LEASE_EXPIRIES_PER_ROUND_MAX);
        for &id in &expired {
            match self
                .propose(Command::LeaseExpire(LeaseExpireRequest { id }))
                .await
            {
                Ok(_) => tracing::debug!(lease_id = id, "lease expired"),
                // Already revoked by a client, or the expiry raced a leadership change: the
                // next round decides again from the applied state.
                Err(error) => tracing::debug!(lease_id = id, %error, "lease expiry not applied"),
            }
        }
        expired.len()
    }

    /// Asks the leader (this node, or another over the peer transport) a lease question.
    async fn ask_lease(&self, question: Question) -> Result<Option<i64>, KvError> {
        let answer = self
            .replica
            .group()
            .ask_leader(question.encode())
            .await
            .map_err(lease_ask_error)?;
        match Answer::decode(&answer) {
            Ok(Answer::LeaseSeconds(seconds)) => Ok(seconds),
            other => {
                tracing::warn!(
                    node = self.replica.node_id(),
                    ?question,
                    answer = ?other,
                    "the leader answered a lease question with something else"
                );
                Err(KvError::Timeout)
            }
        }
    }

    /// Answers a question on the leader; a node that no longer leads refuses it (the asker
    /// asks again, of the new leader).
    async fn answer(&self, question: Question) -> Result<Answer, String> {
        if !self.replica.is_leader() {
            return Err("this node no longer leads".into());
        }
        Ok(match question {
            Question::LeaseKeepAlive { id } => Answer::LeaseSeconds(self.kv.leases.keep_alive(id)),
            Question::LeaseTimeToLive { id } => {
                Answer::LeaseSeconds(self.kv.leases.remaining_seconds(id))
            }
            Question::MemberPromote { id } => match self.promote_here(id).await {
                Ok(conf) => Answer::Promoted {
                    voters: conf.voters,
                    learners: conf.learners,
                },
                Err(error) => Answer::PromoteRefused(error),
            },
        })
    }
}

/// Where the leader service finds the backend, which is made after the group it serves.
#[derive(Default)]
pub struct BackendSlot(OnceLock<Weak<EtcdBackend>>);

impl BackendSlot {
    /// Points the service at `backend`; a slot is filled once.
    pub fn fill(&self, backend: &Arc<EtcdBackend>) {
        let filled = self.0.set(Arc::downgrade(backend)).is_ok();
        assert!(filled, "the leader service's backend was set twice");
    }
}

/// The etcd face's [`LeaderService`]: answers the [`questions`] asked of the leader.
pub fn leader_service() -> (Arc<dyn LeaderService>, Arc<BackendSlot>) {
    let slot = Arc::new(BackendSlot::default());
    let service = EtcdLeaderService {
        backend: Arc::clone(&slot),
    };
    (Arc::new(service), slot)
}

struct EtcdLeaderService {
    backend: Arc<BackendSlot>,
}

impl LeaderService for EtcdLeaderService {
    fn serve(&self, request: Bytes) -> Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>> {
        let backend = self.backend.0.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let backend = backend.ok_or("this node is starting or stopping")?;
            let question = Question::decode(&request)
                .map_err(|e| format!("not a question of the etcd face: {e}"))?;
            backend.answer(question).await.map(|a| a.encode())
        })
    }
}

impl KvBackend for EtcdBackend {
    fn state(&self) -> &KvState {
        &self.kv.state
    }

    async fn propose(&self, command: Command) -> Result<ApplyResponse, KvError> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let bytes = command::encode(request_id, command)?;
        self.replica
            .group()
            .propose(bytes)
            .await
            .map_err(propose_error)?
    }

    async fn read_barrier(&self) -> Result<(), KvError> {
        // A deliberately broken build for proving the checker catches stale reads: a node
        // that believes it leads answers "linearizable" reads from local state without
        // ReadIndex, so a deposed or paused leader serves old values. Never enable it in a
        // real build.
        #[cfg(feature = "planted-stale-reads")]
        if self.replica.is_leader() {
            return Ok(());
        }
        // `read_index` returns once the runtime's applied index reaches the read index; the
        // runtime applies through `KvMachine`, so the store then holds every entry up to it.
        self.replica
            .group()
            .read_index()
            .await
            .map_err(read_error)?;
        Ok(())
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>, KvError> {
        self.ask_lease(Question::LeaseKeepAlive { id }).await
    }

    async fn lease_remaining(&self, id: i64) -> Result<Option<i64>, KvError> {
        self.ask_lease(Question::LeaseTimeToLive { id }).await
    }

    async fn members(&self) -> Vec<MemberInfo> {
        // A failed read (the node is stopping) leaves the last configuration read.
        let _ = self.refresh().await;
        self.member_list()
    }

    fn status(&self) -> NodeStatus {
        let progress = self.replica.progress();
        let leadership = self.replica.leadership();
        NodeStatus {
            cluster_id: self.replica.cluster_id(),
            member_id: self.replica.node_id(),
            leader_id: self.replica.leader(),
            raft_term: leadership.term,
            commit_index: progress.commit_index,
            applied_index: progress.applied_index,
            is_learner: self.replica.is_learner(),
        }
    }

    async fn current_status(&self) -> NodeStatus {
        let _ = self.refresh().await;
        self.status()
    }

    async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberChanged, MemberError> {
        self.add_member(peer_urls, is_learner).await
    }

    async fn member_remove(&self, id: u64) -> Result<MemberChanged, MemberError> {
        self.remove_member(id).await
    }

    async fn move_leader(&self, target: u64) -> Result<(), MemberError> {
        self.hand_leadership_to(target).await
    }

    async fn member_promote(&self, id: u64) -> Result<MemberChanged, MemberError> {
        self.promote_member(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_map_to_etcd_errors_clients_understand() {
        assert_eq!(propose_error(ProposeError::NoLeader), KvError::NoLeader);
        assert_eq!(propose_error(ProposeError::Dropped), KvError::LeaderChanged);
        assert_eq!(
            propose_error(ProposeError::TooLarge { bytes: 9, max: 1 }),
            KvError::RequestTooLarge
        );
        assert_eq!(read_error(ReadError::NoLeader), KvError::NoLeader);
        assert_eq!(read_error(ReadError::ShuttingDown), KvError::Stopped);
    }
}
