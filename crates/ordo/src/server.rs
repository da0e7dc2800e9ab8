//! `ordo server`: one node serving the etcd v3 API over the replicated KV store, plus the
//! admin endpoints, until SIGTERM or SIGINT.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ordo_kv::{EtcdApi, KvState, KvStore, ServiceConfig};
use ordo_node::{GroupId, Node};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::membership::{ClusterBackend, MemberDirectory};
use crate::replicated::ReplicatedBackend;
use ordo_kv::{KvMachine, LeaseClock};

/// The Raft group holding the KV store.
pub const KV_GROUP: GroupId = GroupId(1);

/// How often MemberList's peer addresses are refreshed from the runtime's peer set.
const PEER_REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// How often the leader looks for expired leases.
const LEASE_ROUND_INTERVAL: Duration = Duration::from_millis(500);

async fn bind(addr: std::net::SocketAddr, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for {what} on {addr} (is another process using it? change --{flag})")
    })
}

/// Runs a node until `shutdown` resolves, then stops serving and shuts the node down.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let id = config.node.id;
    // Bind every listener first, so a taken port fails before the log is opened.
    let client = bind(config.client_addr, "clients", "client-addr").await?;
    let admin = bind(config.admin_addr, "the admin endpoints", "admin-addr").await?;
    let peer = bind(config.node.peer_addr, "peers", "peer-addr").await?;
    std::fs::create_dir_all(&config.node.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {} (check --data-dir and its permissions)",
            config.node.data_dir.display()
        )
    })?;

    let node = Node::start_on(config.node.clone(), peer).context("cannot start the node")?;
    let state = Arc::new(KvState::new(KvStore::new()));
    let leases = Arc::new(LeaseClock::default());
    let machine = KvMachine::new(Arc::clone(&state), Arc::clone(&leases));
    let group = match node.start_group(KV_GROUP, machine).await {
        Ok(group) => group,
        Err(error) => {
            node.shutdown().await;
            return Err(anyhow::Error::new(error).context(format!(
                "cannot open the log in {} (the cause below names the damaged file and offset; the other nodes keep serving without this one)",
                config.node.data_dir.display()
            )));
        }
    };
    let backend = Arc::new(ReplicatedBackend::new(
        group,
        state,
        leases,
        id,
        config.node.cluster_id,
        config.members.clone(),
    ));
    let _ = backend.refresh_status().await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let tick = Duration::from_millis(config.node.tick_interval_ms.max(10));
    let status_task = tokio::spawn(keep_status(Arc::clone(&backend), tick, stop_rx.clone()));
    let lease_task = tokio::spawn(expire_leases(Arc::clone(&backend), stop_rx.clone()));
    let admin_task = tokio::spawn(crate::admin::serve(
        admin,
        Arc::clone(&backend),
        stop_rx.clone(),
    ));
    let directory = Arc::new(MemberDirectory::new(config.members.clone()));
    let cluster_backend = Arc::new(ClusterBackend::new(
        Arc::clone(&backend),
        Arc::clone(&directory),
        config.client_addr,
    ));
    let announce_task = tokio::spawn(crate::membership::announce(
        Arc::clone(&cluster_backend),
        stop_rx.clone(),
    ));
    let api = EtcdApi::new(cluster_backend, ServiceConfig::default());
    let mut api_stop = stop_rx.clone();
    let api_task = tokio::spawn(api.serve(client, async move {
        let _ = api_stop.wait_for(|&stop| stop).await;
    }));
    tracing::info!(
        node = id,
        client_addr = %config.client_addr,
        peer_addr = %node.peer_addr(),
        admin_addr = %config.admin_addr,
        cluster_id = config.node.cluster_id,
        "serving"
    );

    let mut api_task = api_task;
    let mut shutdown = std::pin::pin!(shutdown);
    // Members added later are dialled by the runtime; MemberList reports their addresses
    // from its peer set.
    let mut peer_refresh = tokio::time::interval(PEER_REFRESH_INTERVAL);
    let served = loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!(node = id, "shutting down");
                break Ok(());
            }
            error = node.fatal_error() => break Err(anyhow::Error::new(error)),
            result = &mut api_task => break match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(anyhow::Error::new(error).context("the client API stopped")),
                Err(error) => Err(anyhow::Error::new(error).context("the client API task failed")),
            },
            _ = peer_refresh.tick() => {
                if let Some(transport) = node.transport() {
                    directory.learn_peers(&transport.peers());
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    // Bounded: a client stream that never ends must not keep the process alive.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = api_task.await;
        let _ = admin_task.await;
        let _ = status_task.await;
        let _ = lease_task.await;
        let _ = announce_task.await;
    })
    .await;
    drop(backend);
    node.shutdown().await;
    tracing::info!(node = id, "stopped");
    served
}

/// Keeps the backend's status (leader, term, role) fresh for response headers and the
/// lessor.
async fn keep_status(
    backend: Arc<ReplicatedBackend>,
    tick: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        if backend.refresh_status().await.is_err() {
            return;
        }
    }
}

/// The leader's lease clock: proposes expiries through the log.
async fn expire_leases(backend: Arc<ReplicatedBackend>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(LEASE_ROUND_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        tokio::select! {
            _ = backend.expire_leases() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
