//! One node from start to shutdown: the runtime, the metadata and KV groups, the etcd v3 API
//! and the admin endpoints, until the caller's shutdown signal or an error the node cannot
//! run past.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ordo_kv::{EtcdApi, KvMachine, KvState, KvStore, LeaseClock, ServiceConfig};
use ordo_node::transport::{Advertised, AdvertisedError};
use ordo_node::{Group, GroupId, GroupOptions, InitialMembers, LostState, Node, NodeError};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::etcd::members::MemberDirectory;
use crate::etcd::{EtcdBackend, KvReplica, CLIENT_URL_ADVERTISED};
use crate::meta::{MetaMachine, META_GROUP};
use crate::partitions::PartitionGroups;
use crate::streams::{KafkaCluster, KAFKA_ADDR_ADVERTISED};
use crate::tls::{TlsAcceptor, TlsError};

/// The Raft group holding the KV store. (The metadata group is [`META_GROUP`].)
pub const KV_GROUP: GroupId = GroupId(1);

/// How often MemberList's peer addresses are refreshed from the runtime's peer set.
const PEER_REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// How often the partition groups are checked against the topics (retrying what failed)
/// and the leaders of the led ones recorded.
const PARTITIONS_ROUND_INTERVAL: Duration = Duration::from_secs(1);

/// How often the leader looks for expired leases.
const LEASE_ROUND_INTERVAL: Duration = Duration::from_millis(500);

/// How long the serving tasks get to finish after the node is told to stop: a client stream
/// that never ends must not keep the process alive.
const STOP_TASKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Which of a node's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The etcd v3 API.
    Client,
    /// The admin endpoints.
    Admin,
    /// The peer transport.
    Peer,
    /// The Kafka API.
    Kafka,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Listener::Client => "clients",
            Listener::Admin => "the admin endpoints",
            Listener::Peer => "peers",
            Listener::Kafka => "Kafka clients",
        })
    }
}

/// Why a node could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen for {listener} on {addr} (is another process using it?)")]
    Bind {
        /// Which listener.
        listener: Listener,
        /// Its address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path} (check its path and permissions)")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The runtime did not start.
    #[error("cannot start the node")]
    Node(#[source] NodeError),
    /// The KV group's log could not be opened or recovered.
    #[error(
        "cannot open the log in {path} (the cause below names the damaged file and offset; \
         the other nodes keep serving without this one)"
    )]
    OpenLog {
        /// The data directory.
        path: PathBuf,
        /// The cause.
        source: NodeError,
    },
    /// The node hit an error it cannot run past while serving.
    #[error("the node stopped")]
    Stopped(#[source] NodeError),
    /// The etcd API's server failed.
    #[error("the client API stopped")]
    Api(#[source] tonic::transport::Error),
    /// This node's client URL cannot be advertised to its peers.
    #[error("cannot advertise this node's client URL to its peers")]
    Advertised(#[source] AdvertisedError),
    /// A listener's TLS certificate, key or trusted CAs cannot be used.
    #[error("cannot serve TLS to {listener}: {problem}")]
    Tls {
        /// Which listener.
        listener: Listener,
        /// What is wrong with its files.
        problem: TlsError,
    },
    /// The node's id is not a Kafka broker id, which a Kafka listener needs.
    #[error(
        "node id {id} is not a Kafka broker id (1 to 2147483647): a node with a Kafka listener \
         needs one"
    )]
    BrokerId {
        /// The node's id.
        id: u64,
    },
    /// The etcd API's task ended abnormally.
    #[error("the client API task failed")]
    ApiTask(#[source] tokio::task::JoinError),
}

impl ServerError {
    /// The state the node lost, when that is why it could not start or stopped: such a
    /// node must be replaced, not restarted.
    pub fn lost_state(&self) -> Option<&LostState> {
        match self {
            ServerError::Node(NodeError::LostState(lost))
            | ServerError::OpenLog {
                source: NodeError::LostState(lost),
                ..
            }
            | ServerError::Stopped(NodeError::LostState(lost)) => Some(lost),
            _ => None,
        }
    }
}

async fn bind(addr: SocketAddr, listener: Listener) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            listener,
            addr,
            source,
        })
}

/// The listeners of a node, bound before anything else starts.
struct Listeners {
    client: TcpListener,
    admin: TcpListener,
    peer: TcpListener,
    kafka: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener first, so a taken port fails before the log is opened.
    async fn bind(config: &ServerConfig) -> Result<Listeners, ServerError> {
        Ok(Listeners {
            client: bind(config.client_addr, Listener::Client).await?,
            admin: bind(config.admin_addr, Listener::Admin).await?,
            peer: bind(config.node.peer_addr, Listener::Peer).await?,
            kafka: match &config.kafka {
                Some(kafka) => Some(bind(kafka.addr, Listener::Kafka).await?),
                None => None,
            },
        })
    }
}

/// A started node and the groups every server runs on it.
struct Started {
    node: Node,
    /// The etcd face's backend over the KV group.
    backend: Arc<EtcdBackend>,
    /// The metadata group, all configured nodes voting.
    meta: Group<MetaMachine>,
    /// What this node's copy of the metadata group has applied.
    meta_view: crate::meta::MetaView,
}

/// Starts the runtime, the KV and metadata groups on it, and builds the etcd face's backend.
async fn start_node(config: &ServerConfig, peer: TcpListener) -> Result<Started, ServerError> {
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| ServerError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let mut node_config = config.node.clone();
    node_config.advertised = advertised(config)?;
    let node = Node::start_on(node_config, peer).map_err(ServerError::Node)?;
    let Some(peer_advertised) = node.peer_advertised() else {
        node.shutdown().await;
        return Err(ServerError::Node(NodeError::ShuttingDown));
    };
    let state = Arc::new(KvState::new(KvStore::new()));
    let leases = Arc::new(LeaseClock::default());
    let machine = KvMachine::new(Arc::clone(&state), Arc::clone(&leases));
    let (leader_service, backend_slot) = crate::etcd::leader_service();
    let options = GroupOptions {
        leader_service: Some(leader_service),
        ..GroupOptions::default()
    };
    let meta_options = GroupOptions {
        members: meta_members(&node),
        ..GroupOptions::default()
    };
    let meta_machine = MetaMachine::default();
    let meta_view = meta_machine.view();
    let opened = match node.start_group_with(KV_GROUP, machine, options).await {
        Ok(group) => node
            .start_group_with(META_GROUP, meta_machine, meta_options)
            .await
            .map(|meta| (group, meta)),
        Err(source) => Err(source),
    };
    let (group, meta) = match opened {
        Ok(groups) => groups,
        Err(source) => {
            node.shutdown().await;
            return Err(ServerError::OpenLog {
                path: data_dir.clone(),
                source,
            });
        }
    };
    let directory = MemberDirectory::new(
        config.node.id,
        client_url(config),
        &config.node.peers,
        peer_advertised,
    );
    let kv = KvReplica { state, leases };
    let backend = Arc::new(EtcdBackend::new(
        group,
        kv,
        config.node.cluster_id,
        directory,
    ));
    backend_slot.fill(&backend);
    let _ = backend.refresh().await;
    Ok(Started {
        node,
        backend,
        meta,
        meta_view,
    })
}

/// Who the metadata group is made of should this node have no state of it: every
/// configured node, but only on a node that starts a new cluster (its KV group is not
/// listed yet, so it is bootstrapped now or joined now). A node that took part before
/// waits to be added instead: one that joined restarts without `join` and with peers other
/// than the first nodes', and must not bootstrap the group with another configuration than
/// theirs. (A node of the first ones whose metadata group is missing is sent its state by
/// the leader, as a member; a cluster made before the metadata group existed has none.)
fn meta_members(node: &Node) -> InitialMembers {
    if node.listed_groups().contains(&KV_GROUP) {
        InitialMembers::Join
    } else {
        InitialMembers::Configured
    }
}

/// Where clients reach this node's etcd API: `https://` with TLS on its port.
fn client_url(config: &ServerConfig) -> String {
    let scheme = if config.client_tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", config.client_addr)
}

/// What this node tells every peer about itself: where its etcd API listens, and its Kafka
/// listener when it has one.
fn advertised(config: &ServerConfig) -> Result<Advertised, ServerError> {
    let mut entries = vec![(CLIENT_URL_ADVERTISED.to_string(), client_url(config))];
    if let Some(kafka) = &config.kafka {
        entries.push((
            KAFKA_ADDR_ADVERTISED.to_string(),
            kafka.advertised.to_string(),
        ));
    }
    Advertised::new(entries).map_err(ServerError::Advertised)
}

/// What the Kafka listener serves with.
struct KafkaServing {
    listener: TcpListener,
    cluster: Arc<KafkaCluster>,
    config: ordo_streams::KafkaListenerConfig,
    auto_create_topics: bool,
    metrics: Arc<ordo_streams::KafkaMetrics>,
}

/// The tasks that serve a started node, all told to stop by one signal.
struct Serving {
    stop: watch::Sender<bool>,
    api: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    others: Vec<tokio::task::JoinHandle<()>>,
}

impl Serving {
    fn start(
        backend: &Arc<EtcdBackend>,
        node: crate::admin::NodeViews,
        client: TcpListener,
        client_tls: Option<Arc<TlsAcceptor>>,
        admin: (TcpListener, Option<Arc<TlsAcceptor>>),
        etcd: ServiceConfig,
        kafka: Option<KafkaServing>,
    ) -> Serving {
        let (admin, admin_tls) = admin;
        let (stop, stop_rx) = watch::channel(false);
        let mut others = vec![
            tokio::spawn(crate::replica::follow_leadership(
                Arc::clone(backend.replica()),
                stop_rx.clone(),
            )),
            tokio::spawn(expire_leases(Arc::clone(backend), stop_rx.clone())),
            tokio::spawn(crate::admin::serve(
                admin,
                Arc::clone(backend),
                node,
                stop_rx.clone(),
                admin_tls,
            )),
        ];
        if let Some(kafka) = kafka {
            others.push(tokio::spawn(ordo_streams::serve(
                kafka.listener,
                Arc::new(
                    ordo_streams::KafkaService::new(kafka.cluster)
                        .with_auto_create_topics(kafka.auto_create_topics),
                ),
                kafka.config,
                kafka.metrics,
                stop_rx.clone(),
            )));
        }
        let api = EtcdApi::new(Arc::clone(backend), etcd);
        let mut api_stop = stop_rx;
        let api_stopped = async move {
            let _ = api_stop.wait_for(|&stop| stop).await;
        };
        let api = match client_tls {
            Some(tls) => {
                tokio::spawn(api.serve_incoming(crate::tls::incoming(client, tls), api_stopped))
            }
            None => tokio::spawn(api.serve(client, api_stopped)),
        };
        Serving { stop, api, others }
    }

    /// Tells every task to stop and waits for them, within [`STOP_TASKS_TIMEOUT`].
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(STOP_TASKS_TIMEOUT, async {
            let _ = self.api.await;
            for task in self.others {
                let _ = task.await;
            }
        })
        .await;
    }
}

/// Runs a node until `shutdown` resolves, then stops serving and shuts the node down.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let id = config.node.id;
    // Unusable certificate files fail before anything binds or opens the log.
    let client_tls = match &config.client_tls {
        Some(files) => Some(Arc::new(TlsAcceptor::new(files.clone()).map_err(
            |problem| ServerError::Tls {
                listener: Listener::Client,
                problem,
            },
        )?)),
        None => None,
    };
    let admin_tls = match &config.admin_tls {
        Some(files) => Some(Arc::new(TlsAcceptor::for_http1(files.clone()).map_err(
            |problem| ServerError::Tls {
                listener: Listener::Admin,
                problem,
            },
        )?)),
        None => None,
    };
    if config.kafka.is_some() && ordo_streams::broker_id(id).is_none() {
        return Err(ServerError::BrokerId { id });
    }
    let listeners = Listeners::bind(&config).await?;
    let Started {
        node,
        backend,
        meta,
        meta_view,
    } = start_node(&config, listeners.peer).await?;
    let partitions = PartitionGroups::default();
    let kafka = match (listeners.kafka, &config.kafka, node.peer_advertised()) {
        (Some(listener), Some(kafka), Some(peers)) => Some(KafkaServing {
            listener,
            cluster: KafkaCluster::new(
                config.node.cluster_id,
                id,
                kafka.advertised.clone(),
                peers,
                meta.clone(),
                meta_view.clone(),
                partitions.clone(),
            ),
            config: kafka.listener.clone(),
            auto_create_topics: kafka.auto_create_topics,
            metrics: Arc::default(),
        }),
        _ => None,
    };
    let mut serving = Serving::start(
        &backend,
        crate::admin::NodeViews {
            groups: node.hosted_groups(),
            peers: node.transport().map(|t| t.counters()),
            kafka: kafka.as_ref().map(|k| Arc::clone(&k.metrics)),
        },
        listeners.client,
        client_tls,
        (listeners.admin, admin_tls),
        config.etcd.clone(),
        kafka,
    );
    tracing::info!(
        node = id,
        client_addr = %config.client_addr,
        client_tls = config.client_tls.is_some(),
        admin_tls = config.admin_tls.is_some(),
        peer_addr = %node.peer_addr(),
        admin_addr = %config.admin_addr,
        kafka_addr = config.kafka.as_ref().map(|k| k.addr.to_string()).unwrap_or_else(|| "off".into()),
        cluster_id = config.node.cluster_id,
        "serving"
    );
    let mut shutdown = std::pin::pin!(shutdown);
    // Members added later are dialled by the runtime; MemberList reports their peer
    // addresses from its peer set (and their client URLs from what they advertised).
    let mut peer_refresh = tokio::time::interval(PEER_REFRESH_INTERVAL);
    // The partitions this node holds a replica of follow the metadata group's topics.
    let mut meta_changes = meta_view.changes();
    let mut partitions_round = tokio::time::interval(PARTITIONS_ROUND_INTERVAL);
    let served = loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!(node = id, "shutting down");
                break Ok(());
            }
            error = node.fatal_error() => break Err(ServerError::Stopped(error)),
            result = &mut serving.api => break match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(ServerError::Api(error)),
                Err(error) => Err(ServerError::ApiTask(error)),
            },
            _ = peer_refresh.tick() => {
                if let Some(transport) = node.transport() {
                    backend.learn_peers(&transport.peers());
                }
            }
            changed = meta_changes.changed() => {
                if changed.is_ok() {
                    partitions.reconcile(&node, &meta_view).await;
                }
            }
            _ = partitions_round.tick() => {
                partitions.reconcile(&node, &meta_view).await;
                partitions.record_leaders(&meta, &meta_view).await;
            }
        }
    };
    serving.stop().await;
    drop((backend, meta));
    node.shutdown().await;
    tracing::info!(node = id, "stopped");
    served
}

/// The leader's lease clock: proposes expiries through the log.
async fn expire_leases(backend: Arc<EtcdBackend>, mut stop: watch::Receiver<bool>) {
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
