//! The etcd v3 gRPC services (KV, Watch, Lease, Cluster, Maintenance; Auth in
//! `auth_service`) over a [`KvBackend`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Access, AuthInfo, TokenKind};
use crate::backend::{KvBackend, MemberError};
use crate::command::{ApplyResponse, Command};
use crate::error::KvError;
use crate::limits::{
    GRPC_MESSAGE_BYTES_MAX, KEEPALIVE_STREAM_BUFFER_RESPONSES, LEASE_TTL_MAX_SECONDS,
};
use crate::proto::etcdserverpb::{
    alarm_request, auth_server, cluster_server, kv_server, lease_server, maintenance_server,
    request_op, response_op, watch_server, AlarmRequest, AlarmResponse, CompactionRequest,
    CompactionResponse, DefragmentRequest, DefragmentResponse, DeleteRangeRequest,
    DeleteRangeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, Member, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
    MoveLeaderRequest, MoveLeaderResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse, TxnRequest,
    TxnResponse,
};
use crate::store::{check_put_static, check_txn_static, txn_has_writes};

/// The etcd protocol version reported by `Status`: the API level these services implement.
pub const ETCD_API_VERSION: &str = "3.4.0";

/// Tunables of the services.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How often a watcher created with `progress_notify` receives a progress notification
    /// while idle.
    pub watch_progress_interval: Duration,
    /// How long a write may wait to be applied before the client is told
    /// `etcdserver: request timed out` (its outcome is then unknown).
    pub request_timeout: Duration,
    /// How long a token from `Authenticate` stays valid (etcd's `--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// The bcrypt cost of password hashes (etcd's `--bcrypt-cost`), 4 to 31.
    pub bcrypt_cost: u32,
    /// The kind of token `Authenticate` answers (etcd's `--auth-token`).
    pub auth_token: TokenKind,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            watch_progress_interval: Duration::from_secs(600),
            request_timeout: Duration::from_secs(7),
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
            auth_token: TokenKind::Simple,
        }
    }
}

/// The etcd API over one backend; implements every served gRPC service.
pub struct EtcdApi<B> {
    pub(crate) backend: Arc<B>,
    pub(crate) config: ServiceConfig,
}

impl<B> Clone for EtcdApi<B> {
    fn clone(&self) -> Self {
        EtcdApi {
            backend: Arc::clone(&self.backend),
            config: self.config.clone(),
        }
    }
}

/// The gRPC metadata key etcd's clients send their token under.
pub const TOKEN_METADATA: &str = "token";

/// What a listener knows of the client at the other end of a connection, handed to every
/// request on it (a TLS listener's `Connected::ConnectInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The common name of the client certificate the listener verified, if it required
    /// one: the user of requests without a token, as in etcd with `--client-cert-auth`.
    pub common_name: Option<String>,
}

fn unexpected(response: &ApplyResponse) -> Status {
    Status::internal(format!(
        "ordo: state machine answered with the wrong kind: {response:?}"
    ))
}

fn unserved(what: &str) -> Status {
    Status::unimplemented(format!("ordo: {what} is not supported by this server"))
}

fn stamp_txn(resp: &mut TxnResponse, header: &ResponseHeader) {
    resp.header = Some(*header);
    for op in &mut resp.responses {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(r)) => r.header = Some(*header),
            Some(response_op::Response::ResponsePut(r)) => r.header = Some(*header),
            Some(response_op::Response::ResponseDeleteRange(r)) => r.header = Some(*header),
            Some(response_op::Response::ResponseTxn(t)) => stamp_txn(t, header),
            None => {}
        }
    }
}

fn txn_is_serializable(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            Some(request_op::Request::RequestRange(r)) => r.serializable,
            Some(request_op::Request::RequestTxn(nested)) => txn_is_serializable(nested),
            _ => true,
        })
}

fn revision_of(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

impl<B: KvBackend> EtcdApi<B> {
    /// The API over `backend`.
    pub fn new(backend: Arc<B>, config: ServiceConfig) -> EtcdApi<B> {
        EtcdApi { backend, config }
    }

    /// A response header at `revision` carrying this member's identity and term.
    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        let status = self.backend.status();
        ResponseHeader {
            cluster_id: status.cluster_id,
            member_id: status.member_id,
            revision,
            raft_term: status.raft_term,
        }
    }

    pub(crate) fn current_revision(&self) -> i64 {
        self.backend.state().progress().revision
    }

    pub(crate) async fn propose(&self, command: Command) -> Result<ApplyResponse, Status> {
        match tokio::time::timeout(self.config.request_timeout, self.backend.propose(command)).await
        {
            Ok(result) => result.map_err(Status::from),
            Err(_) => Err(KvError::Timeout.into()),
        }
    }

    /// Who sent `request`: nobody while authentication is disabled (a token is then
    /// ignored, as etcd does), else the user its token names (a token this cluster did not
    /// issue, or issued before users, roles or permissions last changed, is refused), else
    /// the common name of its verified client certificate, else nobody.
    pub(crate) fn sender<T>(&self, request: &Request<T>) -> Result<AuthInfo, Status> {
        let token = request
            .metadata()
            .get(TOKEN_METADATA)
            .map(|value| value.to_str().unwrap_or(""));
        let common_name = request
            .extensions()
            .get::<ClientIdentity>()
            .and_then(|c| c.common_name.as_deref());
        let ttl = self.config.auth_token_ttl;
        self.backend.state().read(|store| {
            let auth = store.auth();
            match (token, common_name) {
                _ if !auth.is_enabled() => Ok(AuthInfo::default()),
                (Some(token), _) => auth
                    .check_token_of(&self.config.auth_token, token, ttl, SystemTime::now())
                    .map_err(Status::from),
                // A certificate names its holder for as long as it is valid: it is as
                // current as the auth state it is checked against.
                (None, Some(name)) => Ok(AuthInfo {
                    user: name.to_string(),
                    revision: auth.revision(),
                }),
                (None, None) => Ok(AuthInfo::default()),
            }
        })
    }

    /// Checks that `by` may read `[key, range_end)`, on this member's applied state.
    pub(crate) fn check_read(
        &self,
        by: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Status> {
        self.backend
            .state()
            .read(|store| store.auth().check_keys(by, Access::Read, key, range_end))
            .map_err(Status::from)
    }

    /// Checks that `by` may administer the cluster (holds the root role), while
    /// authentication is enabled.
    pub(crate) fn check_admin(&self, by: &AuthInfo) -> Result<(), Status> {
        self.backend
            .state()
            .read(|store| store.auth().check_admin(by))
            .map_err(Status::from)
    }

    pub(crate) async fn barrier(&self) -> Result<(), Status> {
        match tokio::time::timeout(self.config.request_timeout, self.backend.read_barrier()).await {
            Ok(result) => result.map_err(Status::from),
            Err(_) => Err(KvError::Timeout.into()),
        }
    }

    /// Serves the KV, Watch, Lease, Cluster, Maintenance and Auth services on `listener` until
    /// `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        // Small responses must not wait for a delayed ACK (Nagle): without TCP_NODELAY
        // every unary read costs tens of milliseconds.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        self.serve_incoming(incoming, shutdown).await
    }

    /// Serves as [`EtcdApi::serve`] does, on connections from `incoming` (TLS connections
    /// once their handshake completed, say).
    pub async fn serve_incoming<I, IO, IE>(
        self,
        incoming: I,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error>
    where
        I: tokio_stream::Stream<Item = Result<IO, IE>>,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected
            + Unpin
            + Send
            + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let max = GRPC_MESSAGE_BYTES_MAX;
        const SERVED: [&str; 6] = [
            kv_server::SERVICE_NAME,
            watch_server::SERVICE_NAME,
            lease_server::SERVICE_NAME,
            cluster_server::SERVICE_NAME,
            auth_server::SERVICE_NAME,
            maintenance_server::SERVICE_NAME,
        ];
        tonic::transport::Server::builder()
            .layer(crate::grpc_status::EtcdStatusLayer::new(&SERVED))
            .add_service(kv_server::KvServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(
                watch_server::WatchServer::new(self.clone()).max_decoding_message_size(max),
            )
            .add_service(
                lease_server::LeaseServer::new(self.clone()).max_decoding_message_size(max),
            )
            .add_service(
                cluster_server::ClusterServer::new(self.clone()).max_decoding_message_size(max),
            )
            .add_service(auth_server::AuthServer::new(self.clone()).max_decoding_message_size(max))
            .add_service(
                maintenance_server::MaintenanceServer::new(self).max_decoding_message_size(max),
            )
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// Binds `addr` and serves in a background task; returns the bound address and the task.
    pub async fn spawn(
        self,
        addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(
        SocketAddr,
        tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    )> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(self.serve(listener, shutdown));
        Ok((local, task))
    }
}

#[tonic::async_trait]
impl<B: KvBackend> kv_server::Kv for EtcdApi<B> {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let by = self.sender(&request)?;
        let req = request.into_inner();
        if req.key.is_empty() {
            return Err(KvError::EmptyKey.into());
        }
        if !req.serializable {
            self.barrier().await?;
        }
        self.check_read(&by, &req.key, &req.range_end)?;
        let mut resp = self.backend.state().read(|store| store.range(&req))?;
        resp.header = Some(self.header(revision_of(&resp.header)));
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let by = self.sender(&request)?;
        let req = request.into_inner();
        check_put_static(&req)?;
        match self
            .propose(Command::sent_by(by, Command::Put(req)))
            .await?
        {
            ApplyResponse::Put(mut resp) => {
                resp.header = Some(self.header(revision_of(&resp.header)));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let by = self.sender(&request)?;
        let req = request.into_inner();
        if req.key.is_empty() {
            return Err(KvError::EmptyKey.into());
        }
        match self
            .propose(Command::sent_by(by, Command::DeleteRange(req)))
            .await?
        {
            ApplyResponse::DeleteRange(mut resp) => {
                resp.header = Some(self.header(revision_of(&resp.header)));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let by = self.sender(&request)?;
        let req = request.into_inner();
        check_txn_static(&req)?;
        let mut resp = if txn_has_writes(&req) {
            match self
                .propose(Command::sent_by(by, Command::Txn(req)))
                .await?
            {
                ApplyResponse::Txn(resp) => resp,
                other => return Err(unexpected(&other)),
            }
        } else {
            // A txn without writes needs no log entry: a read barrier orders it.
            if !txn_is_serializable(&req) {
                self.barrier().await?;
            }
            self.backend.state().read(|store| {
                store.check_txn(&by, &req)?;
                store.read_only_txn(&req)
            })?
        };
        let header = self.header(revision_of(&resp.header));
        stamp_txn(&mut resp, &header);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let by = self.sender(&request)?;
        match self
            .propose(Command::sent_by(
                by,
                Command::Compaction(request.into_inner()),
            ))
            .await?
        {
            ApplyResponse::Compaction(mut resp) => {
                resp.header = Some(self.header(revision_of(&resp.header)));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }
}

#[tonic::async_trait]
impl<B: KvBackend> lease_server::Lease for EtcdApi<B> {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        if req.ttl > LEASE_TTL_MAX_SECONDS {
            return Err(KvError::LeaseTtlTooLarge.into());
        }
        match self.propose(Command::LeaseGrant(req)).await? {
            ApplyResponse::LeaseGrant(mut resp) => {
                resp.header = Some(self.header(revision_of(&resp.header)));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let by = self.sender(&request)?;
        match self
            .propose(Command::sent_by(
                by,
                Command::LeaseRevoke(request.into_inner()),
            ))
            .await?
        {
            ApplyResponse::LeaseRevoke(mut resp) => {
                resp.header = Some(self.header(revision_of(&resp.header)));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(KEEPALIVE_STREAM_BUFFER_RESPONSES);
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = requests.message() => next,
                    () = tx.closed() => return,
                };
                let req = match next {
                    Ok(Some(req)) => req,
                    Ok(None) | Err(_) => return,
                };
                let reply = match api.backend.lease_keep_alive(req.id).await {
                    // etcd answers an unknown or expired lease with a zero TTL, not an error.
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: Some(api.header(api.current_revision())),
                        id: req.id,
                        ttl: ttl.unwrap_or(0),
                    }),
                    Err(error) => Err(Status::from(error)),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        self.barrier().await?;
        let (lease, revision) = self
            .backend
            .state()
            .read(|store| (store.lease(req.id), store.current_revision()));
        let header = Some(self.header(revision));
        let Some((granted_ttl, keys)) = lease else {
            // etcd reports a missing lease as already expired: TTL -1.
            let resp = LeaseTimeToLiveResponse {
                header,
                id: req.id,
                ttl: -1,
                ..Default::default()
            };
            return Ok(Response::new(resp));
        };
        let remaining = self
            .backend
            .lease_remaining(req.id)
            .await?
            .unwrap_or(granted_ttl);
        Ok(Response::new(LeaseTimeToLiveResponse {
            header,
            id: req.id,
            ttl: remaining,
            granted_ttl,
            keys: if req.keys { keys } else { Vec::new() },
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.barrier().await?;
        let (ids, revision) = self
            .backend
            .state()
            .read(|store| (store.lease_ids(), store.current_revision()));
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.header(revision)),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}

fn to_members(members: Vec<crate::backend::MemberInfo>) -> Vec<Member> {
    members
        .into_iter()
        .map(|m| Member {
            id: m.id,
            name: m.name,
            peer_ur_ls: m.peer_urls,
            client_ur_ls: m.client_urls,
            is_learner: m.is_learner,
        })
        .collect()
}

impl<B: KvBackend> EtcdApi<B> {
    async fn member_list(&self) -> Vec<Member> {
        to_members(self.backend.members().await)
    }

    /// Bounds a membership request by the request timeout: its outcome is then unknown.
    async fn membership<T>(
        &self,
        request: impl Future<Output = Result<T, MemberError>>,
    ) -> Result<T, Status> {
        match tokio::time::timeout(self.config.request_timeout, request).await {
            Ok(result) => result.map_err(Status::from),
            Err(_) => Err(MemberError::Unknown(format!(
                "no outcome within {} ms",
                self.config.request_timeout.as_millis()
            ))
            .into()),
        }
    }
}

#[tonic::async_trait]
impl<B: KvBackend> cluster_server::Cluster for EtcdApi<B> {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.check_admin(&self.sender(&request)?)?;
        let request = request.into_inner();
        if request.peer_ur_ls.is_empty() {
            return Err(MemberError::InvalidPeerUrl {
                url: String::new(),
                problem: "a member needs a peer URL (for example http://127.0.0.1:2390)".into(),
            }
            .into());
        }
        let changed = self
            .membership(
                self.backend
                    .member_add(request.peer_ur_ls, request.is_learner),
            )
            .await?;
        Ok(Response::new(MemberAddResponse {
            header: Some(self.header(self.current_revision())),
            member: to_members(vec![changed.member]).pop(),
            members: to_members(changed.members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.check_admin(&self.sender(&request)?)?;
        let id = request.into_inner().id;
        let changed = self.membership(self.backend.member_remove(id)).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.header(self.current_revision())),
            members: to_members(changed.members),
        }))
    }

    async fn member_update(
        &self,
        _request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(unserved(
            "changing a member's peer URLs (remove the member and add it again with the new URLs)",
        ))
    }

    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: Some(self.header(self.current_revision())),
            members: self.member_list().await,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.check_admin(&self.sender(&request)?)?;
        let id = request.into_inner().id;
        let changed = self.membership(self.backend.member_promote(id)).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.header(self.current_revision())),
            members: to_members(changed.members),
        }))
    }
}

#[tonic::async_trait]
impl<B: KvBackend> maintenance_server::Maintenance for EtcdApi<B> {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        match request.into_inner().action() {
            // No alarm is ever raised, so the list is truthfully empty.
            alarm_request::AlarmAction::Get => Ok(Response::new(AlarmResponse {
                header: Some(self.header(self.current_revision())),
                alarms: Vec::new(),
            })),
            alarm_request::AlarmAction::Activate | alarm_request::AlarmAction::Deactivate => {
                Err(unserved("raising or clearing alarms"))
            }
        }
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let status = self.backend.current_status().await;
        let (revision, size_bytes) = self
            .backend
            .state()
            .read(|store| (store.current_revision(), store.size_bytes()));
        let db_size = i64::try_from(size_bytes).unwrap_or(i64::MAX);
        let errors = match status.leader_id {
            Some(_) => Vec::new(),
            None => vec![KvError::NoLeader.to_string()],
        };
        Ok(Response::new(StatusResponse {
            header: Some(self.header(revision)),
            version: ETCD_API_VERSION.to_string(),
            db_size,
            leader: status.leader_id.unwrap_or(0),
            raft_index: status.commit_index,
            raft_term: status.raft_term,
            raft_applied_index: status.applied_index,
            errors,
            db_size_in_use: db_size,
            is_learner: status.is_learner,
        }))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.check_admin(&self.sender(&request)?)?;
        // Compaction frees memory immediately; there is no file to defragment.
        Ok(Response::new(DefragmentResponse {
            header: Some(self.header(self.current_revision())),
        }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.check_admin(&self.sender(&request)?)?;
        let (hash, revision) = self
            .backend
            .state()
            .read(|store| (store.hash_kv(0), store.current_revision()));
        Ok(Response::new(HashResponse {
            header: Some(self.header(revision)),
            hash: hash?,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.check_admin(&self.sender(&request)?)?;
        let req = request.into_inner();
        let (hash, revision, compact_revision) = self.backend.state().read(|store| {
            (
                store.hash_kv(req.revision),
                store.current_revision(),
                store.compact_revision(),
            )
        });
        Ok(Response::new(HashKvResponse {
            header: Some(self.header(revision)),
            hash: hash?,
            compact_revision,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        // etcdctl expects a bbolt database file; an Ordo snapshot is not one.
        Err(unserved("streaming an etcd-format (bbolt) snapshot"))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.check_admin(&self.sender(&request)?)?;
        let target = request.into_inner().target_id;
        self.membership(self.backend.move_leader(target)).await?;
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.header(self.current_revision())),
        }))
    }
}
