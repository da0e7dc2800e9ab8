//! Lease requests a follower passes on to the leader, which alone keeps lease deadlines.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ordo_kv::proto::etcdserverpb::lease_client::LeaseClient;
use ordo_kv::proto::etcdserverpb::{LeaseKeepAliveRequest, LeaseTimeToLiveRequest};
use ordo_kv::KvError;
use ordo_node::NodeId;

/// How long a forwarded lease request may take on the leader.
const LEASE_FORWARD_TIMEOUT: Duration = Duration::from_secs(3);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The channel is replaced whole, so a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One lazily connected channel to the current leader's client address, replaced when the
/// leader changes.
#[derive(Default)]
pub(super) struct LeaderLeases {
    channel: Mutex<Option<(NodeId, tonic::transport::Channel)>>,
}

impl LeaderLeases {
    /// Points the channel at `leader`, listening on `addr` (a no-op if it already does).
    pub(super) fn connect(&self, leader: NodeId, addr: SocketAddr) -> Result<(), KvError> {
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
    pub(super) async fn keep_alive(&self, id: i64) -> Result<Option<i64>, KvError> {
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
    pub(super) async fn remaining(&self, id: i64) -> Result<Option<i64>, KvError> {
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
