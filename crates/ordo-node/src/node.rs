//! A node: the peer transport, a router that hands each peer message to its group, and
//! the groups this node hosts, started and removed at run time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordo_raft::{ConfState, Config, Index, RawNode, SnapshotMeta, StateRole};
use ordo_wal::{Durability, GroupLog, Options, SharedLog, SharedOptions};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::apply::{
    Applier, ApplierIdentity, SnapshotThresholds, SnapshotWritten, ThreadSnapshotter,
};
use crate::apply_pool::{ApplyDone, ApplyPool, ApplyRunner, ApplySender};
use crate::codec::WireMessage;
use crate::config::{ConfigError, FsyncPolicy, NodeConfig};
use crate::core::{CoreConfig, GroupCore, Leadership};
use crate::driver::{
    ApplyProgress, Doorbell, Driver, Event, GroupError, Inputs, LeaderService, Outputs, Reply,
};
use crate::group::{boot_id, lock, Group, GroupId, GroupStatus, Request};
use crate::identity::{
    check_not_marked, mark_lost, IdentityError, IdentityFile, LostState, Opened, LOST_STATE_REMEDY,
    PEERS_FILE,
};
use crate::initial_members::{conf_state_of, members_of, InitialMembers, InitialMembersError};
use crate::members::MemberFile;
use crate::metrics::{inc, GroupMetrics};
use crate::peers::PeerNeeds;
use crate::relay::DurableRelay;
use crate::removal::{finish_removals, group_dir, has_state, remove_group_state, RemovalError};
use crate::state_machine::StateMachine;
use crate::storage::{StorageFailure, WalStorage};
use crate::transport::{
    NodeId, PeerError, PeerEvent, PeerIncarnations, ProtocolError, RejectCode, StartError,
    Transport, TransportChannels,
};

/// Why a node or group could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node lost state it had promised its peers it holds, so it must not take part:
    /// found at start, or learnt from a peer that refused it.
    #[error("{0}; {remedy}", remedy = LOST_STATE_REMEDY)]
    LostState(#[from] LostState),
    /// The data directory's identity file or peer record is unusable, or belongs to
    /// another node.
    #[error("data directory: {0}")]
    Identity(#[from] IdentityError),
    /// The peer transport could not start.
    #[error("peer transport: {0}")]
    Transport(#[from] StartError),
    /// A peer could not be added.
    #[error("peer: {0}")]
    Peer(#[from] PeerError),
    /// The group's data directory could not be opened or recovered; the error names the
    /// file and byte offset of any corruption.
    #[error("group {group}: cannot open its log: {source}")]
    Storage {
        /// The group.
        group: GroupId,
        /// The failure.
        source: StorageFailure,
    },
    /// The state machine refused the newest snapshot.
    #[error("group {group}: {source}")]
    Restore {
        /// The group.
        group: GroupId,
        /// The state machine's error.
        source: crate::RestoreError,
    },
    /// The Raft core refused its configuration or storage.
    #[error("group {group}: raft: {source}")]
    Raft {
        /// The group.
        group: GroupId,
        /// The core's error.
        source: ordo_raft::Error,
    },
    /// The node's log (every group's entries and hard state) could not be opened or
    /// recovered; the error names the file and byte offset of any corruption.
    #[error("cannot open the node's log: {0}")]
    Log(ordo_wal::Error),
    /// The group's member address file could not be read or written.
    #[error("group {group}: {source}")]
    Members {
        /// The group.
        group: GroupId,
        /// The failure.
        source: crate::members::MembersError,
    },
    /// A group with this id runs already.
    #[error("group {0} is already running on this node")]
    GroupExists(GroupId),
    /// The group is being started or removed on this node by another call.
    #[error("group {0} is being started or removed on this node; try again once that is done")]
    GroupBusy(GroupId),
    /// The group neither runs on this node nor has state here.
    #[error("group {0} is not hosted on this node and has no state here")]
    UnknownGroup(GroupId),
    /// The members given for a new group were refused; nothing was written.
    #[error("group {group}: invalid initial members: {source}")]
    InitialMembers {
        /// The group.
        group: GroupId,
        /// What is wrong with them.
        source: InitialMembersError,
    },
    /// This node is neither a voter nor a learner of the new group, so it does not host
    /// it; nothing was written.
    #[error(
        "group {group} does not have node {node} among its voters or learners, so node {node} \
         does not host it"
    )]
    NotAMember {
        /// The group.
        group: GroupId,
        /// This node.
        node: NodeId,
    },
    /// The state of a removed group could not be deleted.
    #[error(transparent)]
    Removal(#[from] RemovalError),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The apply worker threads could not be started.
    #[error("cannot start the apply workers: {0}")]
    ApplyWorkers(std::io::Error),
    /// The node was started outside a multi-threaded Tokio runtime.
    #[error("a node needs a multi-threaded Tokio runtime (it writes to disk with block_in_place)")]
    Runtime,
}

/// How a group is started beyond its id and state machine.
#[derive(Clone)]
pub struct GroupOptions {
    /// Answers [`Group::ask_leader`] on the leader; without one such questions are refused.
    pub leader_service: Option<Arc<dyn LeaderService>>,
    /// Who the group is made of if this node bootstraps it (it holds no state of it yet);
    /// by default every configured peer votes. A group with state here goes on with the
    /// configuration its state holds.
    pub members: InitialMembers,
    /// Whether the group quiesces when idle: its leader stops heartbeating and no member
    /// ticks until a request, a message or a lost peer wakes it, so that thousands of idle
    /// groups cost nothing. On by default. A peer is lost when its connection closes or
    /// when it sends nothing, not even the transport's keepalives, for an election timeout
    /// (a partition that drops packets): the followers of a quiesced group whose leader
    /// went silent then tick again and elect another.
    pub quiesce: bool,
}

impl Default for GroupOptions {
    fn default() -> GroupOptions {
        GroupOptions {
            leader_service: None,
            members: InitialMembers::default(),
            quiesce: true,
        }
    }
}

impl std::fmt::Debug for GroupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupOptions")
            .field("leader_service", &self.leader_service.is_some())
            .field("members", &self.members)
            .field("quiesce", &self.quiesce)
            .finish()
    }
}

/// A group whose log is open, not yet running: held between listing it and starting it.
struct OpenedGroup<'a> {
    group_id: GroupId,
    /// Keeps other starts and removals of the group away until it runs or fails.
    _changing: Changing<'a>,
    peers: Arc<PeerNeeds>,
    members: MemberFile,
    wal: GroupLog,
    listing: Listing,
}

/// Where a group being started stands in the identity file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Listed already.
    Listed,
    /// It has a hard state but is not listed: the caller lists it before it runs.
    BeforeRunning,
    /// No hard state yet (a joining node): listed by `list_group_once_written` once its
    /// first hard state arrives.
    OnceWritten,
}

/// What a group is started from, once its log is open.
struct GroupParts {
    group_id: GroupId,
    wal: GroupLog,
    storage: WalStorage,
    raw: RawNode<WalStorage>,
    snap: SnapshotMeta,
    members: MemberFile,
    peers: Arc<PeerNeeds>,
    options: GroupOptions,
}

struct GroupEntry {
    events: mpsc::Sender<Event>,
    /// Tells the driver to stop (on removal, or when the node shuts down).
    stop: Arc<Doorbell>,
    /// Asks the driver for the group's status.
    status: Box<dyn AskStatus>,
    metrics: Arc<GroupMetrics>,
    /// Why the group stopped on its own, once it has.
    failure: Arc<Mutex<Option<String>>>,
    driver: JoinHandle<Result<(), GroupError>>,
    applied_all: Option<ApplyDone>,
}

type Groups = Arc<Mutex<HashMap<GroupId, GroupEntry>>>;

/// How long [`HostedGroups::statuses`] waits for the groups' drivers to answer.
const STATUS_WAIT_MAX: Duration = Duration::from_secs(1);

/// Asks a group's driver for its status, whatever its state machine.
trait AskStatus: Send + Sync {
    /// Sends the question without waiting; `None` if the driver is gone or its queue full.
    fn ask_status(&self) -> Option<oneshot::Receiver<GroupStatus>>;
}

impl<O: Send + 'static> AskStatus for mpsc::Sender<Request<O>> {
    fn ask_status(&self) -> Option<oneshot::Receiver<GroupStatus>> {
        let (reply, answer) = oneshot::channel();
        self.try_send(Request::Status { reply }).ok()?;
        Some(answer)
    }
}

/// The groups a node hosts, for a caller that outlives its borrow of the node (an admin
/// endpoint). Cheap to clone.
#[derive(Clone)]
pub struct HostedGroups {
    groups: Groups,
}

impl HostedGroups {
    /// The ids of the groups hosted, in order.
    pub fn ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = lock(&self.groups).keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The status of every hosted group whose driver answers within a second, in order of
    /// id: role, term, leader, commit and applied index, configuration, and on the leader
    /// each member's progress. A group that stopped on its own is left out (see
    /// [`HostedGroups::failure`]).
    pub async fn statuses(&self) -> Vec<GroupStatus> {
        let asked: Vec<(Arc<GroupMetrics>, oneshot::Receiver<GroupStatus>)> = {
            let groups = lock(&self.groups);
            groups
                .values()
                .filter_map(|g| Some((Arc::clone(&g.metrics), g.status.ask_status()?)))
                .collect()
        };
        let deadline = tokio::time::Instant::now() + STATUS_WAIT_MAX;
        let mut statuses = Vec::with_capacity(asked.len());
        for (metrics, answer) in asked {
            if let Ok(Ok(mut status)) = tokio::time::timeout_at(deadline, answer).await {
                // The workers' applied index, read after the driver answered, may be past
                // the commit index the driver saw: the group went on committing and
                // applying meanwhile. An applied entry is a committed one, so the commit
                // index reported is at least the applied index read with it.
                status.applied_index = metrics.applied_index.load(Ordering::Acquire);
                status.commit_index = status.commit_index.max(status.applied_index);
                statuses.push(status);
            }
        }
        statuses.sort_unstable_by_key(|s| s.group_id);
        statuses
    }

    /// Why a hosted group stopped on its own (see [`Node::group_failure`]); `None` while it
    /// runs, or if it is not hosted here.
    pub fn failure(&self, group: GroupId) -> Option<String> {
        lock(&self.groups)
            .get(&group)
            .and_then(|g| lock(&g.failure).clone())
    }
}

/// Marks a group as being started or removed, so that no other start or removal of it
/// runs meanwhile; unmarked when dropped.
struct Changing<'a> {
    changing: &'a Mutex<HashSet<GroupId>>,
    group: GroupId,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        let removed = lock(self.changing).remove(&self.group);
        assert!(removed, "group {} was not marked as changing", self.group);
    }
}

/// A running Ordo node. Hosts any number of Raft groups over one peer transport.
///
/// Needs a multi-threaded Tokio runtime: disk writes run with `block_in_place`.
pub struct Node {
    config: NodeConfig,
    boot: u64,
    identity: Arc<Mutex<IdentityFile>>,
    /// Set once the node learns it lost state; it then takes no further part.
    fatal: watch::Sender<Option<LostState>>,
    transport: Option<Arc<Transport>>,
    /// The log every group of this node keeps its entries, hard state and snapshots in.
    log: SharedLog,
    /// Which groups need each peer; `None` once shut down.
    peers: Option<Arc<PeerNeeds>>,
    local_addr: SocketAddr,
    groups: Groups,
    /// Groups being started or removed.
    changing: Mutex<HashSet<GroupId>>,
    router: Option<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    apply_pool: ApplyPool,
}

impl Node {
    /// Validates the configuration, binds the peer listener and starts dialling peers.
    /// Groups are started with [`Node::start_group`].
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.peer_addr)
            .await
            .map_err(StartError::Io)?;
        Node::start_on(config, listener)
    }

    /// Like [`Node::start`], on a peer listener bound already (`config.peer_addr` is then
    /// ignored): lets a caller learn every node's address before any node starts.
    pub fn start_on(
        config: NodeConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let multi_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !multi_threaded {
            return Err(NodeError::Runtime);
        }
        tokio::task::block_in_place(|| check_not_marked(&config.data_dir))?;
        let (identity, opened) = tokio::task::block_in_place(|| {
            IdentityFile::open(&config.data_dir, config.id, config.cluster_id)
        })?;
        let incarnation = identity.identity().incarnation;
        match opened {
            Opened::Existing => {}
            Opened::Created => tracing::info!(
                node = config.id,
                incarnation = format_args!("{incarnation:#018x}"),
                path = %identity.path().display(),
                "new data directory: identity written"
            ),
            Opened::CreatedForOldDirectory => tracing::warn!(
                node = config.id,
                incarnation = format_args!("{incarnation:#018x}"),
                path = %identity.path().display(),
                "data directory from a version without an identity file: identity written; \
                 its groups are listed as they start"
            ),
        }
        let identity = Mutex::new(identity);
        let log = tokio::task::block_in_place(|| open_shared_log(&config))?;
        let finished =
            tokio::task::block_in_place(|| finish_removals(&config.data_dir, &log, &identity))?;
        if !finished.is_empty() {
            tracing::info!(node = config.id, groups = ?finished, "removals cut short by a stop finished");
        }
        let incarnations =
            tokio::task::block_in_place(|| PeerIncarnations::open(&config.data_dir, PEERS_FILE))?;
        let transport_config = crate::transport::TransportConfig {
            incarnation,
            ..config.transport_config()
        };
        let (transport, channels) =
            Transport::start_with(transport_config, listener, incarnations)?;
        let apply_pool =
            ApplyPool::start(config.id, config.apply_workers).map_err(NodeError::ApplyWorkers)?;
        let local_addr = transport.local_addr();
        let transport = Arc::new(transport);
        let peers = Arc::new(PeerNeeds::new(
            Arc::clone(&transport),
            config.id,
            &config.peers,
        )?);
        let groups: Groups = Arc::default();
        let (fatal, _) = watch::channel(None);
        let router = tokio::spawn(route(
            channels,
            Arc::clone(&groups),
            config.id,
            config.data_dir.clone(),
            fatal.clone(),
        ));
        let (shutdown, _) = watch::channel(false);
        tracing::info!(node = config.id, %local_addr, "node started");
        Ok(Node {
            boot: boot_id(),
            identity: Arc::new(identity),
            fatal,
            config,
            transport: Some(transport),
            log,
            peers: Some(peers),
            local_addr,
            groups,
            changing: Mutex::new(HashSet::new()),
            router: Some(router),
            shutdown,
            apply_pool,
        })
    }

    /// Figures of the node's shared log: fsyncs, journal and live bytes, bytes appended and
    /// rewritten by collection.
    pub fn log_stats(&self) -> ordo_wal::SharedStats {
        self.log.stats()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The address the peer listener is bound to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's incarnation: fixed when its data directory was first used, presented
    /// to peers in every handshake.
    pub fn incarnation(&self) -> u64 {
        lock(&self.identity).identity().incarnation
    }

    /// The groups listed in this node's identity file: those with a hard state on disk,
    /// whose loss the node detects at start.
    pub fn listed_groups(&self) -> Vec<GroupId> {
        let identity = lock(&self.identity);
        identity
            .identity()
            .groups
            .iter()
            .map(|&g| GroupId(g))
            .collect()
    }

    /// Why this node stopped taking part, if it did: a peer refused it because it knew
    /// another incarnation of it.
    pub fn lost_state(&self) -> Option<LostState> {
        self.fatal.borrow().clone()
    }

    /// Resolves once the node hits an error it cannot run past, and never otherwise: a
    /// peer refused it for lost state. By then every group has stopped; the caller should
    /// report the error and shut the node down.
    pub async fn fatal_error(&self) -> NodeError {
        let mut fatal = self.fatal.subscribe();
        let lost = match fatal.wait_for(Option::is_some).await {
            Ok(lost) => lost.clone(),
            // The sender lives as long as `self`.
            Err(_) => None,
        };
        match lost {
            Some(lost) => NodeError::LostState(lost),
            None => std::future::pending().await,
        }
    }

    /// Opens (or creates) the group's log under the data directory, recovers it, restores
    /// `state_machine` from the newest snapshot and starts the group. Committed entries
    /// after the snapshot are re-applied as the core hands them out.
    ///
    /// A new node of a new cluster (`join = false`, empty directory) bootstraps the group:
    /// it records a first snapshot at index 1 holding the initial voters (`peers`) and
    /// `state_machine`'s initial state, so every member starts from the same point and a
    /// node added later receives the configuration with a snapshot.
    ///
    /// A group this node took part in before (listed in its identity file) whose hard
    /// state is gone, or whose hard state says more was committed than its log holds, is
    /// refused with [`NodeError::LostState`].
    pub async fn start_group<S: StateMachine>(
        &self,
        group_id: GroupId,
        state_machine: S,
    ) -> Result<Group<S>, NodeError> {
        self.start_group_with(group_id, state_machine, GroupOptions::default())
            .await
    }

    /// Like [`Node::start_group`], with options: the face's [`LeaderService`] answering
    /// [`Group::ask_leader`] on the leader, and the members a new group is bootstrapped
    /// with ([`InitialMembers`]: its own voters and learners, a subset of the cluster).
    ///
    /// Explicit members are checked before anything is written: no voter, a node named
    /// twice or as both voter and learner, or a node whose address this node does not know
    /// is [`NodeError::InitialMembers`]; a node in neither list does not host the group
    /// ([`NodeError::NotAMember`]).
    pub async fn start_group_with<S: StateMachine>(
        &self,
        group_id: GroupId,
        state_machine: S,
        options: GroupOptions,
    ) -> Result<Group<S>, NodeError> {
        let opened = self.open_group(group_id, &state_machine, &options)?;
        if opened.listing == Listing::BeforeRunning {
            self.list_groups(&[group_id.0])?;
        }
        self.run_group(opened, state_machine, options)
    }

    /// Starts several groups, as [`Node::start_group_with`] does each, answering for each in
    /// order. The new groups are listed in the identity file in one write: a node starting
    /// thousands of new groups (a topic's partitions) pays one file write and its fsyncs,
    /// not one per group.
    pub async fn start_groups<S: StateMachine>(
        &self,
        groups: Vec<(GroupId, S, GroupOptions)>,
    ) -> Vec<Result<Group<S>, NodeError>> {
        let opened: Vec<_> = groups
            .into_iter()
            .map(|(id, machine, options)| {
                let opened = self.open_group(id, &machine, &options);
                (opened, machine, options)
            })
            .collect();
        let unlisted: Vec<u64> = opened
            .iter()
            .filter_map(|(o, _, _)| o.as_ref().ok())
            .filter(|o| o.listing == Listing::BeforeRunning)
            .map(|o| o.group_id.0)
            .collect();
        // Should the one write fail, each group tries its own and reports its own error.
        let listed_together = !unlisted.is_empty()
            && self
                .list_groups(&unlisted)
                .map_err(|error| tracing::warn!(node = self.config.id, %error, "listing the new groups together failed"))
                .is_ok();
        opened
            .into_iter()
            .map(|(opened, machine, options)| {
                let opened = opened?;
                if opened.listing == Listing::BeforeRunning && !listed_together {
                    self.list_groups(&[opened.group_id.0])?;
                }
                self.run_group(opened, machine, options)
            })
            .collect()
    }

    /// Lists `groups` in the identity file in one durable write: from then on the loss of
    /// any of them is detected at start.
    fn list_groups(&self, groups: &[u64]) -> Result<(), IdentityError> {
        tokio::task::block_in_place(|| lock(&self.identity).record_groups(groups))?;
        tracing::info!(
            node = self.config.id,
            ?groups,
            "groups listed in the identity file"
        );
        Ok(())
    }

    /// The first half of starting a group: its log opened (and bootstrapped if this node
    /// holds nothing of it and should), before it is listed in the identity file.
    fn open_group<S: StateMachine>(
        &self,
        group_id: GroupId,
        state_machine: &S,
        options: &GroupOptions,
    ) -> Result<OpenedGroup<'_>, NodeError> {
        let peers = self.peers.clone().ok_or(NodeError::ShuttingDown)?;
        if let Some(lost) = self.lost_state() {
            return Err(NodeError::LostState(lost));
        }
        let changing = self.mark_changing(group_id)?;
        if lock(&self.groups).contains_key(&group_id) {
            return Err(NodeError::GroupExists(group_id));
        }
        let dir = group_dir(&self.log, group_id);
        let members = tokio::task::block_in_place(|| MemberFile::load(&dir)).map_err(|source| {
            NodeError::Members {
                group: group_id,
                source,
            }
        })?;
        let bootstrap = self.bootstrap_conf(group_id, &options.members, &members, &peers)?;
        let (wal, listed) = self.open_log(group_id, state_machine, bootstrap.as_ref())?;
        let listing = if listed {
            Listing::Listed
        } else if wal.hard_state() != ordo_wal::HardState::default() {
            Listing::BeforeRunning
        } else {
            Listing::OnceWritten
        };
        Ok(OpenedGroup {
            group_id,
            _changing: changing,
            peers,
            members,
            wal,
            listing,
        })
    }

    /// The second half: the group's storage, state and Raft node made, and its driver run.
    fn run_group<S: StateMachine>(
        &self,
        opened: OpenedGroup<'_>,
        mut state_machine: S,
        options: GroupOptions,
    ) -> Result<Group<S>, NodeError> {
        let OpenedGroup {
            group_id,
            _changing,
            peers,
            mut members,
            wal,
            listing,
        } = opened;
        let storage = tokio::task::block_in_place(|| {
            WalStorage::open(wal.clone(), self.config.snapshot_bytes_max)
                .map(|s| s.with_log_cache_bytes(self.config.log_cache_bytes_max))
        })
        .map_err(|source| match source {
            StorageFailure::LostState(lost) => NodeError::LostState(lost),
            source => NodeError::Storage {
                group: group_id,
                source,
            },
        })?;
        let snap = restore(group_id, &storage, &mut state_machine)?;
        let raw = RawNode::new(self.raft_config(group_id, snap.index), storage.clone()).map_err(
            |source| NodeError::Raft {
                group: group_id,
                source,
            },
        )?;
        self.fill_members(group_id, &mut members, &raw.conf_state(), &peers)?;
        if listing == Listing::OnceWritten {
            tokio::spawn(list_group_once_written(
                group_id,
                wal.clone(),
                std::time::Duration::from_millis(self.config.tick_interval_ms),
                Arc::clone(&self.identity),
                self.shutdown.subscribe(),
            ));
        }
        let parts = GroupParts {
            group_id,
            wal,
            storage,
            raw,
            snap,
            members,
            peers: Arc::clone(&peers),
            options,
        };
        let launched = self.launch(parts, state_machine);
        if launched.is_err() {
            peers.release_group(group_id);
        }
        launched
    }

    /// Marks `group` as being started or removed; refused while another call does either.
    fn mark_changing(&self, group: GroupId) -> Result<Changing<'_>, NodeError> {
        if !lock(&self.changing).insert(group) {
            return Err(NodeError::GroupBusy(group));
        }
        Ok(Changing {
            changing: &self.changing,
            group,
        })
    }

    /// The configuration to bootstrap `group_id` with should this node hold no state of
    /// it, or `None` to wait to be added. Explicit members are checked here, before
    /// anything is written; `members` are the addresses recorded for the group already.
    fn bootstrap_conf(
        &self,
        group_id: GroupId,
        initial: &InitialMembers,
        members: &MemberFile,
        peers: &PeerNeeds,
    ) -> Result<Option<ConfState>, NodeError> {
        let config = &self.config;
        match initial {
            InitialMembers::Configured if config.join => Ok(None),
            InitialMembers::Configured => {
                Ok(Some(ConfState::with_voters(config.peers.keys().copied())))
            }
            InitialMembers::Join => Ok(None),
            InitialMembers::Members { voters, learners } => {
                let known = |id: NodeId| {
                    members.members().contains_key(&id)
                        || self.peer_addr_of(id, peers.transport()).is_some()
                };
                let conf = conf_state_of(voters, learners, known).map_err(|source| {
                    NodeError::InitialMembers {
                        group: group_id,
                        source,
                    }
                })?;
                if !members_of(&conf).contains(&config.id) {
                    return Err(NodeError::NotAMember {
                        group: group_id,
                        node: config.id,
                    });
                }
                Ok(Some(conf))
            }
        }
    }

    /// Where node `id` listens for peers, as far as this node knows: its own address, a
    /// configured peer's, or one the transport learned from a group's members.
    fn peer_addr_of(&self, id: NodeId, transport: &Transport) -> Option<SocketAddr> {
        let config = &self.config;
        if id == config.id {
            return Some(config.peers.get(&id).copied().unwrap_or(self.local_addr));
        }
        config.peers.get(&id).copied().or_else(|| {
            transport
                .peers()
                .into_iter()
                .find_map(|(peer, addr)| (peer == id).then_some(addr))
        })
    }

    /// Opens and recovers the group's log, checks it against what this node promised,
    /// bootstraps a new group with `bootstrap`, and lists the group in the identity file
    /// once it has a hard state. Returns the log and whether the group is listed.
    fn open_log<S: StateMachine>(
        &self,
        group_id: GroupId,
        state_machine: &S,
        bootstrap: Option<&ConfState>,
    ) -> Result<(GroupLog, bool), NodeError> {
        let config = &self.config;
        let storage_err = |source: StorageFailure| NodeError::Storage {
            group: group_id,
            source,
        };
        let wal = tokio::task::block_in_place(|| self.log.group(group_id.0))
            .map_err(|e| storage_err(e.into()))?;
        let dir = wal.dir();
        let no_hard_state = wal.hard_state() == ordo_wal::HardState::default();
        // A listed group had its hard state written before it was listed, and a hard state
        // is only ever replaced, never removed: without one, the directory lost it.
        let listed = lock(&self.identity).identity().groups.contains(&group_id.0);
        if listed && no_hard_state {
            return Err(NodeError::LostState(LostState::GroupMissing {
                group: group_id.0,
                dir: dir.to_path_buf(),
            }));
        }
        let fresh = wal.latest_snapshot().is_none() && wal.last_index() == 0 && no_hard_state;
        if let (true, Some(conf)) = (fresh, bootstrap) {
            let initial = state_machine.snapshot();
            tokio::task::block_in_place(|| bootstrap_log(&wal, conf, &initial))
                .map_err(storage_err)?;
            tracing::info!(group = %group_id, node = config.id, voters = ?conf.voters, learners = ?conf.learners, "group bootstrapped");
        }
        // Listed by the caller once it has a hard state (after bootstrapping, or as found on
        // disk), before it runs: from then on its loss is detected. A joining node's group
        // is listed by `list_group_once_written` when its first hard state arrives.
        Ok((wal, listed))
    }

    /// Fills in the addresses of the group's members (`conf`) that its member file lacks
    /// (those recorded, from membership changes and snapshots, take precedence), and tells
    /// the transport that the group needs every member. A node waiting to be added knows
    /// no configuration yet: the configured peers are the members it was told of.
    fn fill_members(
        &self,
        group_id: GroupId,
        members: &mut MemberFile,
        conf: &ConfState,
        peers: &PeerNeeds,
    ) -> Result<(), NodeError> {
        let config = &self.config;
        let mut wanted: BTreeSet<NodeId> = members_of(conf);
        if wanted.is_empty() {
            wanted = config.peers.keys().copied().collect();
        }
        let missing: Vec<_> = wanted
            .into_iter()
            .filter(|id| *id != config.id && !members.members().contains_key(id))
            .filter_map(|id| Some((id, Some(self.peer_addr_of(id, peers.transport())?))))
            .collect();
        tokio::task::block_in_place(|| members.update(missing)).map_err(|source| {
            NodeError::Members {
                group: group_id,
                source,
            }
        })?;
        for (&id, &addr) in members.members() {
            if id != config.id {
                peers.need(group_id, id, addr);
            }
        }
        Ok(())
    }

    fn raft_config(&self, group_id: GroupId, applied_index: Index) -> Config {
        let config = &self.config;
        Config {
            election_timeout_ticks: config.election_timeout_ticks,
            heartbeat_interval_ticks: config.heartbeat_interval_ticks,
            max_append_bytes: config.append_bytes_max,
            max_inflight_msgs: config.inflight_appends_max,
            max_uncommitted_bytes: config.uncommitted_bytes_max,
            max_pending_reads: config.pending_reads_max,
            max_committed_bytes_per_ready: config.apply_batch_bytes_max,
            applied_index,
            read_only: if config.lease_reads {
                ordo_raft::ReadOnlyOption::LeaseBased
            } else {
                ordo_raft::ReadOnlyOption::Safe
            },
            seed: config.id ^ self.boot ^ group_id.0.rotate_left(17),
            ..Config::new(config.id)
        }
    }

    fn core_config(&self, group_id: GroupId, quiesce: bool) -> CoreConfig {
        let config = &self.config;
        let ticks = |ms: u64| ms.div_ceil(config.tick_interval_ms.max(1)).max(1);
        CoreConfig {
            group_id,
            node_id: config.id,
            boot: self.boot,
            self_addr: config
                .peers
                .get(&config.id)
                .copied()
                .unwrap_or(self.local_addr),
            proposal_bytes_max: config.proposal_bytes_max,
            pending_proposals_max: config.pending_proposals_max,
            pending_reads_max: config.pending_reads_max,
            pending_asks_max: config.pending_proposals_max,
            snapshot_tail_entries: config.snapshot_tail_entries,
            snapshot_chunk_bytes: config.snapshot_chunk_bytes,
            snapshot_bytes_max: config.snapshot_bytes_max,
            snapshot_chunk_timeout_ticks: ticks(config.snapshot_chunk_timeout_ms),
            apply_batches_max: config.apply_queue_batches_max as u64,
            quiesce,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }

    /// Starts the group's applying on the node's workers, spawns its driver task and
    /// registers the group.
    fn launch<S: StateMachine>(
        &self,
        parts: GroupParts,
        state_machine: S,
    ) -> Result<Group<S>, NodeError> {
        let config = &self.config;
        let group_id = parts.group_id;
        let doorbell = Arc::new(Doorbell::default());
        let (requests_tx, requests_rx) = mpsc::channel(config.group_queue_max);
        let (events_tx, events_rx) = mpsc::channel(config.group_queue_max);
        let (applied_tx, applied_rx) = watch::channel(parts.snap.index);
        let (leadership_tx, leadership_rx) = watch::channel(Leadership::default());
        let state_machine = Arc::new(Mutex::new(state_machine));
        let metrics = Arc::new(GroupMetrics::default());
        let progress = Arc::new(ApplyProgress::new(Arc::clone(&doorbell)));
        metrics
            .applied_index
            .store(parts.snap.index, Ordering::Release);
        let failure = Arc::new(Mutex::new(None));
        let (apply_tx, applied_all) = self.start_applying(
            &parts,
            Arc::clone(&state_machine),
            &metrics,
            (&progress, applied_tx),
            events_tx.clone(),
        );
        let member_addrs = parts.members.members().clone();
        let core = GroupCore::new(
            self.core_config(group_id, parts.options.quiesce),
            parts.raw,
            parts.snap.index,
            member_addrs,
            Arc::clone(&metrics),
        );
        let inputs = Inputs {
            requests: requests_rx,
            events: events_rx,
            events_tx: events_tx.clone(),
            doorbell: Arc::clone(&doorbell),
        };
        let outputs = Outputs {
            transport: Arc::clone(parts.peers.transport()),
            peers: parts.peers,
            storage: parts.storage,
            fsync: config.fsync,
            apply_tx,
            apply_progress: progress,
            members: parts.members,
            leadership: leadership_tx,
            leader_service: parts.options.leader_service,
            metrics: Arc::clone(&metrics),
            failure: Arc::clone(&failure),
        };
        // The driver never blocks on an fsync: it appends, keeps stepping, and learns of
        // durability from this listener. With a listener registered the WAL's fsync thread
        // starts a round as soon as entries are written (group commit across whatever
        // arrived meanwhile) rather than leaving it to a waiting caller. The listener sends
        // the messages that waited for the write and rings the doorbell only when the core
        // asked to hear of the write at once (see `relay.rs`).
        let relay = Arc::new(DurableRelay::new(
            group_id,
            outputs.storage.clone(),
            Arc::clone(&outputs.transport),
            Arc::clone(&doorbell),
            Arc::clone(&metrics),
        ));
        // Weak: the relay holds the group's log, whose listeners hold this closure.
        let listener = Arc::downgrade(&relay);
        parts.wal.on_durable(move |_| {
            if let Some(relay) = listener.upgrade() {
                relay.on_durable();
            }
        });
        let driver = Driver::new(
            group_id,
            core,
            inputs,
            outputs,
            relay,
            config.tick_interval_ms,
        );
        let driver = tokio::spawn(driver.run());
        let entry = GroupEntry {
            events: events_tx,
            stop: doorbell,
            status: Box::new(requests_tx.clone()),
            metrics: Arc::clone(&metrics),
            failure: Arc::clone(&failure),
            driver,
            applied_all: Some(applied_all),
        };
        self.register(group_id, entry)?;
        tracing::info!(group = %group_id, node = config.id, snapshot_index = parts.snap.index, "group started");
        Ok(Group {
            id: group_id,
            requests: requests_tx,
            state_machine,
            applied: applied_rx,
            leadership: leadership_rx,
            metrics,
            failure,
            request_timeout_ms: config.request_timeout_ms,
            tick_interval_ms: config.tick_interval_ms,
        })
    }

    fn start_applying<S: StateMachine>(
        &self,
        parts: &GroupParts,
        state_machine: Arc<Mutex<S>>,
        metrics: &Arc<GroupMetrics>,
        (progress, applied_tx): (&Arc<ApplyProgress>, watch::Sender<Index>),
        events: mpsc::Sender<Event>,
    ) -> (ApplySender<Reply<S::Output>>, ApplyDone) {
        let config = &self.config;
        let group_id = parts.group_id;
        // The driver compacts the log behind each snapshot; if it is gone the group is
        // stopping anyway.
        let on_written: SnapshotWritten = Arc::new(move |meta| {
            let _ = events.blocking_send(Event::SnapshotTaken(Box::new(meta)));
        });
        let snapshotter = ThreadSnapshotter::new(
            format!("ordo-snap-{}-{}", config.id, group_id.0),
            on_written,
        );
        let identity = ApplierIdentity {
            group_id,
            node_id: config.id,
            boot: self.boot,
            restored: (parts.snap.index, parts.snap.term),
        };
        let thresholds = SnapshotThresholds {
            entries: config.snapshot_entries,
            bytes: config.snapshot_bytes,
        };
        let applier = Applier::new(
            identity,
            parts.storage.clone(),
            Arc::clone(metrics),
            thresholds,
            snapshotter,
        );
        self.apply_pool.add_group(ApplyRunner {
            applier,
            state_machine,
            progress: Arc::clone(progress),
            applied_tx,
        })
    }

    fn register(&self, group_id: GroupId, entry: GroupEntry) -> Result<(), NodeError> {
        let mut groups = lock(&self.groups);
        // The router marks the node lost before it takes this lock to stop the groups:
        // either it finds this group, or this check sees the mark.
        let lost = self.lost_state();
        if lost.is_some() {
            entry.driver.abort();
        }
        groups.insert(group_id, entry);
        match lost {
            Some(lost) => Err(NodeError::LostState(lost)),
            None => Ok(()),
        }
    }

    /// Stops every group (each records its commit index), then the transport, and waits
    /// for all of it.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.stop_groups(false).await;
        self.apply_pool.shutdown().await;
        self.stop_transport().await;
    }

    /// Stops abruptly, as a crash would: group drivers are aborted wherever they are, so
    /// nothing is fsynced, no commit index recorded and no message sent after this call
    /// (the apply workers finish the batches already queued to them); connections are
    /// dropped. Returns once
    /// every task and thread has let go of the data directory, so a test can start a new
    /// node on it.
    pub async fn crash(mut self) {
        self.stop_groups(true).await;
        self.apply_pool.shutdown().await;
        self.stop_transport().await;
    }

    async fn stop_groups(&mut self, abort: bool) {
        let entries: Vec<(GroupId, GroupEntry)> = lock(&self.groups).drain().collect();
        // Every group is told first, so they stop side by side.
        for (_, entry) in &entries {
            if abort {
                entry.driver.abort();
            } else {
                entry.stop.stop();
            }
        }
        for (group, entry) in entries {
            stop_group(group, entry).await;
        }
    }

    /// Removes `group_id` from this node: stops its driver and apply thread (its handles
    /// answer [`ProposeError::ShuttingDown`](crate::ProposeError::ShuttingDown) and the like
    /// from then on), lets the transport go of the peers only this group needed, and deletes
    /// the group's state and its listing in the identity file, in an order that a crash at
    /// any point cannot turn into a claim of lost state (see `removal.rs`). It does not
    /// change the group's configuration on the other members: remove this node from it
    /// there first (`Group::change_membership`), or remove the group on every member.
    ///
    /// A group with state here that does not run (never started since the node started) is
    /// removed too; one that neither runs nor has state here is [`NodeError::UnknownGroup`].
    pub async fn remove_group(&self, group_id: GroupId) -> Result<(), NodeError> {
        let peers = self.peers.clone().ok_or(NodeError::ShuttingDown)?;
        let _changing = self.mark_changing(group_id)?;
        let entry = lock(&self.groups).remove(&group_id);
        let data_dir = &self.config.data_dir;
        if entry.is_none()
            && !tokio::task::block_in_place(|| has_state(&self.log, &self.identity, group_id))?
        {
            return Err(NodeError::UnknownGroup(group_id));
        }
        if let Some(entry) = entry {
            entry.stop.stop();
            stop_group(group_id, entry).await;
        }
        peers.release_group(group_id);
        tokio::task::block_in_place(|| {
            remove_group_state(data_dir, &self.log, &self.identity, group_id)
        })?;
        tracing::info!(group = %group_id, node = self.config.id, "group removed and its state deleted");
        Ok(())
    }

    async fn stop_transport(&mut self) {
        // The peer bookkeeping holds the transport too; the groups that used it are gone.
        drop(self.peers.take());
        if let Some(router) = self.router.take() {
            router.abort();
            let _ = router.await;
        }
        if let Some(transport) = self.transport.take() {
            match Arc::try_unwrap(transport) {
                Ok(transport) => transport.shutdown().await,
                Err(shared) => drop(shared),
            }
        }
    }

    /// The peer transport, for its metrics and peer list (and for tests that cut a node
    /// off by removing its peers). `None` once shut down.
    pub fn transport(&self) -> Option<&Transport> {
        self.transport.as_deref()
    }

    /// What every peer presented about itself when it last connected to this node (see
    /// [`Transport::advertised`]); `None` once shut down.
    pub fn peer_advertised(&self) -> Option<crate::transport::PeerAdvertised> {
        self.transport.as_ref().map(|t| t.peer_advertised())
    }

    /// The groups this node hosts.
    pub fn groups(&self) -> Vec<GroupId> {
        self.hosted_groups().ids()
    }

    /// The groups this node hosts, as a handle that outlives this borrow of the node.
    pub fn hosted_groups(&self) -> HostedGroups {
        HostedGroups {
            groups: Arc::clone(&self.groups),
        }
    }

    /// The status of every group this node hosts, in order of id (see
    /// [`HostedGroups::statuses`]).
    pub async fn group_statuses(&self) -> Vec<GroupStatus> {
        self.hosted_groups().statuses().await
    }

    /// Counters of a group hosted here.
    pub fn metrics(&self, group: GroupId) -> Option<crate::MetricsSnapshot> {
        lock(&self.groups).get(&group).map(|g| g.metrics.snapshot())
    }

    /// Why a group hosted here stopped on its own (its disk failed, its state machine
    /// refused a snapshot, …), naming the file and offset where the storage gave them; `None`
    /// while it runs.
    pub fn group_failure(&self, group: GroupId) -> Option<String> {
        self.hosted_groups().failure(group)
    }

    /// Whether a group's driver has stopped (on an error, or after shutdown).
    pub fn group_stopped(&self, group: GroupId) -> bool {
        lock(&self.groups)
            .get(&group)
            .is_none_or(|g| g.driver.is_finished())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for (_, entry) in lock(&self.groups).drain() {
            entry.driver.abort();
        }
        if let Some(router) = self.router.take() {
            router.abort();
        }
    }
}

/// Waits for a group told to stop (or aborted) to let go of everything: its driver, then its
/// queued batches on the apply workers.
async fn stop_group(group: GroupId, mut entry: GroupEntry) {
    match (&mut entry.driver).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%group, %error, "group had stopped"),
        Err(_) => {}
    }
    drop(entry.events);
    if let Some(applied_all) = entry.applied_all.take() {
        // The driver is gone, so its inbox is closed: a worker applies what is queued, then
        // lets go of the group.
        applied_all.wait().await;
    }
}

/// Opens the node's shared log under `<data_dir>/log`, moving the groups of a data
/// directory from the layout before it (a log per group) into it first.
fn open_shared_log(config: &NodeConfig) -> Result<SharedLog, NodeError> {
    let log = SharedLog::open(config.data_dir.join(LOG_DIR), shared_options(config)).map_err(
        |e| match e {
            ordo_wal::Error::Truncated {
                path,
                len_bytes,
                expected_bytes,
            } => NodeError::LostState(LostState::SegmentTruncated {
                path,
                len_bytes,
                expected_bytes,
            }),
            other => NodeError::Log(other),
        },
    )?;
    crate::migrate::move_group_logs(&config.data_dir, &log, &wal_options(config))?;
    Ok(log)
}

/// The directory of the node's shared log, under its data directory.
pub(crate) const LOG_DIR: &str = "log";

/// The shared log's options for this node.
fn shared_options(config: &NodeConfig) -> SharedOptions {
    SharedOptions {
        journal: wal_options(config),
        ..SharedOptions::default()
    }
}

/// The log's options for this node.
fn wal_options(config: &NodeConfig) -> Options {
    Options {
        segment_bytes_max: config.segment_bytes_max,
        record_bytes_max: (config.proposal_bytes_max + crate::ENVELOPE_BYTES + 4096) as u64,
        durability: match config.fsync {
            FsyncPolicy::Always => Durability::Always,
            FsyncPolicy::Interval { interval_ms } => {
                Durability::Interval(std::time::Duration::from_millis(interval_ms))
            }
            FsyncPolicy::Never => Durability::Never,
        },
        ..Options::default()
    }
}

/// Records a new group's first snapshot at index 1 holding its initial voters and learners
/// and the state machine's initial state, so every member starts from the same point and a
/// node added later receives the configuration with a snapshot.
fn bootstrap_log(wal: &GroupLog, conf: &ConfState, initial: &[u8]) -> Result<(), StorageFailure> {
    assert!(
        !conf.voters.is_empty() && !conf.is_joint(),
        "a group is bootstrapped with voters and no joint configuration: {conf:?}"
    );
    WalStorage::write_snapshot(wal, 1, 1, conf, initial)?;
    wal.truncate_prefix(1)?;
    wal.set_hard_state(ordo_wal::HardState {
        term: 1,
        vote: None,
        commit: 1,
    })?;
    Ok(())
}

/// Restores `state_machine` from the newest snapshot and checks it agrees where it is.
fn restore<S: StateMachine>(
    group: GroupId,
    storage: &WalStorage,
    state_machine: &mut S,
) -> Result<SnapshotMeta, NodeError> {
    let snap = storage.snapshot_meta();
    if snap.index > 0 {
        let data = tokio::task::block_in_place(|| storage.read_snapshot_data())
            .map_err(|source| NodeError::Storage { group, source })?;
        state_machine
            .restore(snap.index, &data)
            .map_err(|source| NodeError::Restore { group, source })?;
    }
    let applied: Index = state_machine.applied_index();
    if applied != snap.index {
        let reason = format!(
            "the state machine reports applied index {applied} but starts from the snapshot at {}",
            snap.index
        );
        return Err(NodeError::Restore {
            group,
            source: crate::RestoreError::new(reason),
        });
    }
    Ok(snap)
}

/// Lists a group in the identity file once its first hard state is on disk (a joining
/// node receives it from the leader, maybe with nothing else but a snapshot). Looks once
/// per tick: a lock and a comparison. Holds the log only weakly, so a stopped group's
/// directory is let go at once, and ends with it.
async fn list_group_once_written(
    group: GroupId,
    wal: GroupLog,
    every: std::time::Duration,
    identity: Arc<Mutex<IdentityFile>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if wal.is_removed() {
            return;
        }
        if wal.hard_state() != ordo_wal::HardState::default() {
            let recorded = tokio::task::spawn_blocking(move || {
                let mut identity = lock(&identity);
                // A removal marks the group removed in the log before it unlists it under
                // this lock: a group removed meanwhile must not be listed again.
                match wal.is_removed() {
                    false => identity.record_group(group.0).map(|()| true),
                    true => Ok(false),
                }
            })
            .await;
            match recorded {
                Ok(Ok(true)) => tracing::info!(%group, "group listed in the identity file"),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%group, %error, "listing the group in the identity file failed")
                }
                Err(error) => {
                    tracing::warn!(%group, %error, "listing the group in the identity file failed")
                }
            }
            return;
        }
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Moves peer messages from the transport to their groups. Never waits on a group: a
/// full group queue drops the message (Raft retransmits) and counts it.
///
/// A peer refusing this node for lost state is fatal: the node is marked lost and every
/// group driver stopped where it is, so it sends nothing more (a node that lost its state
/// must not vote or acknowledge), and whoever waits on [`Node::fatal_error`] learns why.
async fn route(
    mut channels: TransportChannels,
    groups: Groups,
    node_id: NodeId,
    data_dir: std::path::PathBuf,
    fatal: watch::Sender<Option<LostState>>,
) {
    loop {
        tokio::select! {
            message = channels.messages.recv() => {
                let Some((from, message)) = message else { return };
                let group = GroupId(message.group_id);
                let guard = lock(&groups);
                let Some(entry) = guard.get(&group) else {
                    tracing::debug!(node = node_id, %group, from, "message for an unknown group dropped");
                    continue;
                };
                match WireMessage::decode(message.payload) {
                    Ok(decoded) => {
                        if entry.events.try_send(Event::Peer(from, Box::new(decoded))).is_err() {
                            inc(&entry.metrics.messages_dropped, 1);
                        }
                    }
                    Err(error) => {
                        inc(&entry.metrics.messages_decode_failed, 1);
                        tracing::warn!(node = node_id, %group, from, %error, "undecodable peer message dropped");
                    }
                }
            }
            event = channels.events.recv() => {
                let Some(event) = event else { return };
                match event {
                    PeerEvent::Unreachable(peer) => {
                        for entry in lock(&groups).values() {
                            let _ = entry.events.try_send(Event::Unreachable(peer));
                        }
                    }
                    PeerEvent::OutboundError { peer, error }
                        if error.reject_code() == RejectCode::LostState =>
                    {
                        let reason = match error {
                            ProtocolError::RejectedByPeer { reason, .. } => reason,
                            other => other.to_string(),
                        };
                        let lost = LostState::RefusedByPeer {
                            node: node_id,
                            peer,
                            dir: data_dir.clone(),
                            reason,
                        };
                        if fatal.borrow().is_some() {
                            continue;
                        }
                        tracing::error!(node = node_id, peer, "{lost}; {LOST_STATE_REMEDY}");
                        // Stop taking part at once; then mark the directory, so it stays
                        // refused even when no peer is there to say so; then tell the
                        // waiters, who may end the process.
                        for entry in lock(&groups).values() {
                            entry.driver.abort();
                        }
                        let (dir, text) = (data_dir.clone(), lost.to_string());
                        match tokio::task::spawn_blocking(move || mark_lost(&dir, &text)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => tracing::error!(node = node_id, %error, "marking the data directory as lost failed"),
                            Err(error) => tracing::error!(node = node_id, %error, "marking the data directory as lost failed"),
                        }
                        fatal.send_replace(Some(lost));
                        // Groups started meanwhile saw no mark yet; every later one will.
                        for entry in lock(&groups).values() {
                            entry.driver.abort();
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The role a status reports, as text for logs and examples.
pub fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Follower => "follower",
        StateRole::PreCandidate => "pre-candidate",
        StateRole::Candidate => "candidate",
        StateRole::Leader => "leader",
    }
}
