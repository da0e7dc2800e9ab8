//! The etcd services' backend over the replicated group that runs the KV store's
//! [`KvMachine`] (see `ordo_kv::machine`).
//!
//! Writes are proposed through the node's group handle (a follower forwards them to the
//! leader) and resolve with the result the local state machine computed. Linearizable reads
//! wait for a ReadIndex. Lease time is kept by the leader's [`LeaseClock`]; followers forward
//! keep-alives to the leader's client address, and expiries travel through the log so every
//! replica deletes the same keys at the same revision.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ordo_kv::command::{self, ApplyResponse, Command};
use ordo_kv::proto::etcdserverpb::lease_client::LeaseClient;
use ordo_kv::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseTimeToLiveRequest};
use ordo_kv::proto::internal::LeaseExpireRequest;
use ordo_kv::{KvBackend, KvError, KvMachine, KvState, LeaseClock, MemberInfo, NodeStatus};
use ordo_node::{Group, GroupStatus, NodeId, ProposeError, ReadError, StateRole};

/// Most leases expired in one lessor round, so one round's proposals stay bounded.
pub const LEASE_EXPIRIES_PER_ROUND_MAX: usize = 1000;

/// How long a forwarded lease request may take on the leader.
const LEASE_FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent, so a panic elsewhere does not
    // make it unsafe to keep using.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One member of the cluster as configured on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddrs {
    /// Its peer address.
    pub peer_addr: SocketAddr,
    /// Its client address, when known.
    pub client_addr: Option<SocketAddr>,
}

/// The etcd services' backend over a replicated group.
pub struct ReplicatedBackend {
    group: Group<KvMachine>,
    state: Arc<KvState>,
    leases: Arc<LeaseClock>,
    node_id: NodeId,
    cluster_id: u64,
    members: BTreeMap<NodeId, MemberAddrs>,
    status: Mutex<Option<GroupStatus>>,
    next_request_id: AtomicU64,
    // The connection forwarded lease requests take to the leader.
    leader_leases: LeaderLeases,
}

fn propose_error(error: ProposeError) -> KvError {
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

fn read_error(error: ReadError) -> KvError {
    match error {
        ReadError::NoLeader => KvError::NoLeader,
        ReadError::ShuttingDown => KvError::Stopped,
        ReadError::Timeout { .. } | ReadError::TooManyPending { .. } | ReadError::Rejected(_) => {
            KvError::Timeout
        }
    }
}

impl ReplicatedBackend {
    /// A backend over `group`, whose state machine shares `state` and `leases`.
    pub fn new(
        group: Group<KvMachine>,
        state: Arc<KvState>,
        leases: Arc<LeaseClock>,
        node_id: NodeId,
        cluster_id: u64,
        members: BTreeMap<NodeId, MemberAddrs>,
    ) -> ReplicatedBackend {
        ReplicatedBackend {
            group,
            state,
            leases,
            node_id,
            cluster_id,
            members,
            status: Mutex::new(None),
            next_request_id: AtomicU64::new(1),
            leader_leases: LeaderLeases::default(),
        }
    }

    /// The group handle.
    pub fn group(&self) -> &Group<KvMachine> {
        &self.group
    }

    /// The last status read by [`ReplicatedBackend::refresh_status`].
    pub fn cached_status(&self) -> Option<GroupStatus> {
        lock(&self.status).clone()
    }

    /// Reads the group's status, remembers it for the synchronous accessors, and restarts
    /// every lease deadline when this node just became leader (a new leader cannot know
    /// how much time the old one had left, so it grants a full time to live).
    pub async fn refresh_status(&self) -> Result<GroupStatus, ReadError> {
        let status = self.group.status().await?;
        let previous = lock(&self.status).replace(status.clone());
        let was_leader =
            previous.is_some_and(|p| p.role == StateRole::Leader && p.term == status.term);
        if status.role == StateRole::Leader && !was_leader {
            self.leases.restart_deadlines(&self.state);
            tracing::info!(
                node = self.node_id,
                term = status.term,
                "leading: lease deadlines restarted"
            );
        }
        Ok(status)
    }

    fn is_leader(&self) -> bool {
        lock(&self.status)
            .as_ref()
            .is_some_and(|s| s.role == StateRole::Leader)
    }

    fn leader(&self) -> Option<NodeId> {
        lock(&self.status)
            .as_ref()
            .map(|s| s.leader)
            .filter(|&l| l != 0)
    }

    /// On the leader, proposes the expiry of every lease past its deadline; returns how
    /// many were proposed. Followers do nothing.
    pub async fn expire_leases(&self) -> usize {
        if !self.is_leader() {
            return 0;
        }
        let expired = self.leases.expired(LEASE_EXPIRIES_PER_ROUND_MAX);
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

    /// The leader's lease service, when another node leads and its address was configured.
    fn leader_leases(&self) -> Result<&LeaderLeases, KvError> {
        let leader = self.leader().ok_or(KvError::NoLeader)?;
        let Some(addr) = self.members.get(&leader).and_then(|m| m.client_addr) else {
            tracing::warn!(
                node = self.node_id,
                leader,
                "cannot forward a lease request: the leader's client address is not configured (set --peer-client-addrs)"
            );
            return Err(KvError::NoLeader);
        };
        self.leader_leases.connect(leader, addr)?;
        Ok(&self.leader_leases)
    }
}

/// Lease requests forwarded to the leader, which alone keeps lease deadlines: one lazily
/// connected channel to the current leader's client address, replaced when the leader changes.
#[derive(Default)]
pub(crate) struct LeaderLeases {
    channel: Mutex<Option<(NodeId, tonic::transport::Channel)>>,
}

impl LeaderLeases {
    /// Points the channel at `leader`, listening on `addr` (a no-op if it already does).
    pub(crate) fn connect(&self, leader: NodeId, addr: SocketAddr) -> Result<(), KvError> {
        let mut cached = lock(&self.channel);
        if cached.as_ref().is_some_and(|(id, _)| *id == leader) {
            return Ok(());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| KvError::NoLeader)?
            .connect_timeout(LEASE_FORWARD_TIMEOUT)
            .timeout(LEASE_FORWARD_TIMEOUT);
        // Connects on first use and reconnects by itself after a failure.
        *cached = Some((leader, endpoint.connect_lazy()));
        Ok(())
    }

    fn client(&self) -> Result<LeaseClient<tonic::transport::Channel>, KvError> {
        lock(&self.channel)
            .as_ref()
            .map(|(_, channel)| LeaseClient::new(channel.clone()))
            .ok_or(KvError::NoLeader)
    }

    /// Forwards a keep-alive of lease `id`: its new TTL, or `None` if it does not exist.
    pub(crate) async fn keep_alive(&self, id: i64) -> Result<Option<i64>, KvError> {
        let request = tokio_stream::once(LeaseKeepAliveRequest { id });
        let mut responses = self
            .client()?
            .lease_keep_alive(request)
            .await
            .map_err(forwarded_status)?
            .into_inner();
        match responses.message().await.map_err(forwarded_status)? {
            Some(reply) if reply.ttl > 0 => Ok(Some(reply.ttl)),
            Some(_) => Ok(None),
            None => Err(KvError::NoLeader),
        }
    }

    /// Asks for the seconds lease `id` has left, or `None` if it does not exist.
    pub(crate) async fn remaining(&self, id: i64) -> Result<Option<i64>, KvError> {
        let reply = self
            .client()?
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
            .await
            .map_err(forwarded_status)?
            .into_inner();
        Ok((reply.ttl >= 0).then_some(reply.ttl))
    }
}

/// A forwarded lease request's failure, as the error the client gets.
fn forwarded_status(status: tonic::Status) -> KvError {
    match status.code() {
        tonic::Code::NotFound => KvError::LeaseNotFound,
        tonic::Code::Unavailable => KvError::NoLeader,
        _ => KvError::Timeout,
    }
}

impl KvBackend for ReplicatedBackend {
    fn state(&self) -> &KvState {
        &self.state
    }

    async fn propose(&self, command: Command) -> Result<ApplyResponse, KvError> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let bytes = command::encode(request_id, command)?;
        self.group.propose(bytes).await.map_err(propose_error)?
    }

    async fn read_barrier(&self) -> Result<(), KvError> {
        // A deliberately broken build for proving `ordo check` catches stale reads: a node that
        // believes it leads answers "linearizable" reads from local state without ReadIndex,
        // so a deposed or paused leader serves old values. Never enable it in a real build.
        #[cfg(feature = "planted-stale-reads")]
        if self.is_leader() {
            return Ok(());
        }
        // `read_index` returns once the runtime's applied index reaches the read index; the
        // runtime applies through `KvMachine`, so the store then holds every entry up to it.
        self.group.read_index().await.map_err(read_error)?;
        Ok(())
    }

    async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>, KvError> {
        if self.is_leader() {
            return Ok(self.leases.keep_alive(id));
        }
        self.leader_leases()?.keep_alive(id).await
    }

    async fn lease_remaining(&self, id: i64) -> Result<Option<i64>, KvError> {
        if self.is_leader() {
            return Ok(self.leases.remaining_seconds(id));
        }
        self.leader_leases()?.remaining(id).await
    }

    fn members(&self) -> Vec<MemberInfo> {
        let status = lock(&self.status).clone();
        let learners: Vec<NodeId> = status
            .as_ref()
            .map(|s| s.conf_state.learners.to_vec())
            .unwrap_or_default();
        self.members
            .iter()
            .map(|(&id, addrs)| MemberInfo {
                id,
                name: format!("ordo-{id}"),
                peer_urls: vec![format!("http://{}", addrs.peer_addr)],
                client_urls: addrs
                    .client_addr
                    .map(|a| vec![format!("http://{a}")])
                    .unwrap_or_default(),
                is_learner: learners.contains(&id),
            })
            .collect()
    }

    fn status(&self) -> NodeStatus {
        // Every response header reads this: borrow the cached status rather than copy its
        // member lists.
        let applied_index = self.group.applied_index();
        let status = lock(&self.status);
        match status.as_ref() {
            Some(s) => NodeStatus {
                cluster_id: self.cluster_id,
                member_id: self.node_id,
                leader_id: (s.leader != 0).then_some(s.leader),
                raft_term: s.term,
                commit_index: s.commit_index.max(applied_index),
                applied_index,
                is_learner: s.conf_state.learners.contains(&self.node_id),
            },
            None => NodeStatus {
                cluster_id: self.cluster_id,
                member_id: self.node_id,
                leader_id: None,
                raft_term: 0,
                commit_index: applied_index,
                applied_index,
                is_learner: false,
            },
        }
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
