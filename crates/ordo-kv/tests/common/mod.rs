//! A one-node Ordo KV server on 127.0.0.1 for tests, and clients for it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ordo_kv::proto::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use ordo_kv::{EtcdApi, KvStore, LocalBackend, LocalConfig, ServiceConfig};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

/// Guards every await that waits on the server so a bug fails the test instead of hanging.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

pub struct TestServer {
    pub addr: SocketAddr,
    pub backend: Arc<LocalBackend>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn start(config: ServiceConfig) -> TestServer {
    let backend = Arc::new(LocalBackend::new(KvStore::new(), LocalConfig::default()));
    let (tx, rx) = oneshot::channel::<()>();
    let api = EtcdApi::new(Arc::clone(&backend), config);
    let (addr, _task) = api
        .spawn("127.0.0.1:0".parse().unwrap(), async move {
            let _ = rx.await;
        })
        .await
        .expect("bind 127.0.0.1:0");
    TestServer {
        addr,
        backend,
        shutdown: Some(tx),
    }
}

pub async fn start_default() -> TestServer {
    start(ServiceConfig::default()).await
}

impl TestServer {
    pub async fn channel(&self) -> Channel {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr)).unwrap();
        tokio::time::timeout(HANG_GUARD, endpoint.connect())
            .await
            .unwrap()
            .unwrap()
    }
    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel().await)
    }
    pub async fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel().await)
    }
    pub async fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel().await)
    }
    pub async fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel().await)
    }
    pub async fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel().await)
    }
}

/// Awaits `fut` with the hang guard.
pub async fn guard<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, fut)
        .await
        .expect("timed out waiting on the server")
}
