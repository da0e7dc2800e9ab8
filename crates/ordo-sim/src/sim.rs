//! One simulated run: a cluster hosting several groups, its clients, a nemesis injecting
//! faults, and the checkers of every group, advanced tick by tick from a single seed.

use std::collections::{BTreeMap, BTreeSet};

use ordo_lincheck::{CheckError, CheckOptions, KvModel};
use ordo_node::GroupId;
use ordo_raft::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Config, Index,
    Mutation, NodeId, ReadOnlyOption, StateRole, Storage,
};

use crate::checker::{Checkers, Violation, ViolationKind};
use crate::client::{Client, ClientConfig, ClientEvent, Directory, Histories, Request};
use crate::groups::{members, GroupRegistry};
use crate::network::{Network, NetworkConfig};
use crate::node::{
    bootstrap_image, NodeTuning, Outbox, SimClock, SimNode, Wire, CLIENT_ADDRESS_BASE, MAIN_GROUP,
};
use crate::prng::{splitmix64, Prng};
use crate::trace::Trace;
use ordo_node::core::RuntimeMutation;

/// Which faults the nemesis may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Symmetric splits, one-way links, the isolated leader.
    pub partitions: bool,
    /// Power loss of one node or of all, and restarts from disk.
    pub crashes: bool,
    /// Random message loss.
    pub loss: bool,
    /// Duplicated messages.
    pub duplication: bool,
    /// Messages held back long enough to arrive far out of order.
    pub delay_spikes: bool,
    /// Adding learners, promoting, removing (the leader too), joint changes.
    pub membership: bool,
    /// Leadership transfers.
    pub transfers: bool,
    /// Nodes whose clocks tick at slightly different rates (never with lease reads).
    pub clock_skew: bool,
    /// A node's clock jumps ahead by many ticks at once, as after a pause of its process
    /// or its virtual machine (never with lease reads).
    pub clock_jumps: bool,
    /// One node's durable log is damaged (a bit flip, a cut) and the node must be replaced.
    pub disk_damage: bool,
    /// Groups created and removed at run time, beside the ones the run starts with.
    pub groups: bool,
}

impl Faults {
    /// The names accepted by [`Faults::parse`].
    pub const NAMES: [&'static str; 11] = [
        "partition",
        "crash",
        "loss",
        "duplication",
        "delay",
        "membership",
        "transfer",
        "skew",
        "jump",
        "disk",
        "groups",
    ];

    /// Every fault.
    pub fn all() -> Faults {
        Faults {
            partitions: true,
            crashes: true,
            loss: true,
            duplication: true,
            delay_spikes: true,
            membership: true,
            transfers: true,
            clock_skew: true,
            clock_jumps: true,
            disk_damage: true,
            groups: true,
        }
    }

    /// No fault at all: a calm network and nodes that never fail.
    pub fn none() -> Faults {
        Faults {
            partitions: false,
            crashes: false,
            loss: false,
            duplication: false,
            delay_spikes: false,
            membership: false,
            transfers: false,
            clock_skew: false,
            clock_jumps: false,
            disk_damage: false,
            groups: false,
        }
    }

    /// Parses `all`, `none`, or a comma-separated list of [`Faults::NAMES`].
    pub fn parse(text: &str) -> Result<Faults, String> {
        match text {
            "all" => return Ok(Faults::all()),
            "none" => return Ok(Faults::none()),
            _ => {}
        }
        let mut faults = Faults::none();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let flag = match name {
                "partition" => &mut faults.partitions,
                "crash" => &mut faults.crashes,
                "loss" => &mut faults.loss,
                "duplication" => &mut faults.duplication,
                "delay" => &mut faults.delay_spikes,
                "membership" => &mut faults.membership,
                "transfer" => &mut faults.transfers,
                "skew" => &mut faults.clock_skew,
                "jump" => &mut faults.clock_jumps,
                "disk" => &mut faults.disk_damage,
                "groups" => &mut faults.groups,
                other => {
                    return Err(format!(
                        "unknown fault {other:?}; expected all, none, or a list of {}",
                        Faults::NAMES.join(", ")
                    ))
                }
            };
            *flag = true;
        }
        Ok(faults)
    }
}

/// How reads are served in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Always ReadIndex.
    ReadIndex,
    /// Always the leader lease.
    Lease,
    /// Chosen per seed.
    Mixed,
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Everything random in the run derives from this.
    pub seed: u64,
    /// Voters at the start (3, 5 or 7 in the standard sweeps).
    pub nodes: usize,
    /// Groups created at the start beside the main one (which every node hosts).
    pub groups_at_start: usize,
    /// Length of the run in simulated ticks (a Raft tick is [`RAFT_TICK_TICKS`] of them).
    pub run_ticks: u64,
    /// Simulated ticks at the end of the run with no faults, to check liveness.
    pub quiet_ticks: u64,
    /// Faults injected before the quiet phase.
    pub faults: Faults,
    /// Concurrent client sessions.
    pub clients: u64,
    /// How reads are confirmed.
    pub read_mode: ReadMode,
    /// A rule-breaking switch in every node, to prove the checkers fire.
    pub mutation: Option<SimMutation>,
    /// Record a readable trace.
    pub trace: bool,
    /// Also trace every Raft message delivered to or from this node.
    pub watch_node: Option<NodeId>,
}

/// A rule deliberately broken in every node: in the Raft core, or in the runtime around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimMutation {
    /// A rule of the Raft core.
    Core(Mutation),
    /// A rule of the runtime (the group core, its durability gate).
    Runtime(RuntimeMutation),
}

impl SimMutation {
    /// Every mutation, with its command-line name.
    pub const ALL: [(&'static str, SimMutation); 7] = [
        (
            "grant-vote-without-log-check",
            SimMutation::Core(Mutation::GrantVoteWithoutLogCheck),
        ),
        (
            "commit-previous-term-by-counting",
            SimMutation::Core(Mutation::CommitPreviousTermByCounting),
        ),
        (
            "ack-append-before-durable",
            SimMutation::Core(Mutation::AckAppendBeforeDurable),
        ),
        (
            "skip-prev-term-check",
            SimMutation::Core(Mutation::SkipPrevTermCheck),
        ),
        (
            "runtime-ack-before-durable",
            SimMutation::Runtime(RuntimeMutation::AckBeforeDurable),
        ),
        (
            "runtime-apply-past-commit",
            SimMutation::Runtime(RuntimeMutation::ApplyPastCommit),
        ),
        (
            "runtime-answer-read-before-applied",
            SimMutation::Runtime(RuntimeMutation::AnswerReadBeforeApplied),
        ),
    ];

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<SimMutation, String> {
        SimMutation::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = SimMutation::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown mutation {name:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }

    fn core(self) -> Option<Mutation> {
        match self {
            SimMutation::Core(m) => Some(m),
            SimMutation::Runtime(_) => None,
        }
    }

    fn runtime(self) -> Option<RuntimeMutation> {
        match self {
            SimMutation::Runtime(m) => Some(m),
            SimMutation::Core(_) => None,
        }
    }
}

/// Simulated ticks per Raft tick: message delays and fsyncs are finer than the core's clock.
pub const RAFT_TICK_TICKS: u64 = 10;

/// Search budget of the linearizability check per run; beyond it the run is undecided.
const LINCHECK_STATES_MAX: u64 = 1_000_000;

/// Most node ids a run may create (initial voters plus nodes added by the nemesis).
const SPARE_NODES_MAX: usize = 4;

/// Most groups besides the main one that exist at once.
const EXTRA_GROUPS_MAX: usize = 3;

impl SimConfig {
    /// A run of `nodes` voters with every fault and the standard length.
    pub fn new(seed: u64, nodes: usize) -> SimConfig {
        SimConfig {
            seed,
            nodes,
            groups_at_start: 1,
            run_ticks: 12_000,
            quiet_ticks: 4_000,
            faults: Faults::all(),
            clients: 4,
            read_mode: ReadMode::Mixed,
            mutation: None,
            trace: false,
            watch_node: None,
        }
    }
}

/// Counters describing a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Distinct (term, leader) pairs seen.
    pub leaders_elected: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Configuration changes applied by a leader.
    pub conf_changes: u64,
    /// Leadership transfers requested.
    pub transfers: u64,
    /// Client operations that returned.
    pub ops_completed: u64,
    /// Client operations whose outcome stayed unknown.
    pub ops_unknown: u64,
    /// The highest index any node applied.
    pub applied_max: u64,
    /// Messages delivered.
    pub messages_delivered: u64,
    /// Times a node's group quiesced (stopped ticking, idle).
    pub quiesces: u64,
    /// Times a quiesced group woke.
    pub wakes: u64,
    /// Groups created (at the start and at run time) beside the main one.
    pub groups_created: u64,
    /// Groups removed at run time.
    pub groups_removed: u64,
    /// Crashes of a node hosting more than one group.
    pub crashes_multi_group: u64,
    /// Client operations that returned from a group other than the main one.
    pub ops_completed_other_groups: u64,
    /// Groups a node removed at boot, removed while it was down.
    pub groups_removed_at_boot: u64,
    /// Peer messages a running node dropped because it does not run their group (removed,
    /// or not started there yet).
    pub messages_for_unknown_groups: u64,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Voters at the start.
    pub nodes: usize,
    /// Whether reads used the leader lease.
    pub lease_reads: bool,
    /// The first broken guarantee, if any.
    pub violation: Option<Violation>,
    /// Set when the linearizability check ran out of budget: neither pass nor fail.
    pub undecided: Option<String>,
    /// Simulated ticks run.
    pub ticks: u64,
    /// Counters.
    pub stats: RunStats,
    /// The readable trace, when requested.
    pub trace: Vec<String>,
}

/// Runs one simulation to completion (or to its first violation).
pub fn run(config: &SimConfig) -> RunReport {
    let mut sim = Simulation::new(config.clone());
    let result = sim.run_to_end();
    sim.into_report(result)
}

struct Simulation {
    config: SimConfig,
    now_ticks: u64,
    prng: Prng,
    nemesis_prng: Prng,
    network: Network<Wire>,
    /// The calm network restored when faults stop.
    calm_network: NetworkConfig,
    nodes: BTreeMap<NodeId, SimNode>,
    next_tick_at: BTreeMap<NodeId, u64>,
    tick_interval_ticks: BTreeMap<NodeId, u64>,
    restart_at: BTreeMap<NodeId, u64>,
    crash_at: BTreeMap<NodeId, u64>,
    figure8: Figure8,
    append_bytes_max: u64,
    inflight_msgs_max: usize,
    /// Nodes shut down for good after their removal; never restarted, ids never reused.
    removed: BTreeSet<NodeId>,
    /// Nodes that were members of some configuration a leader applied.
    ever_member: BTreeSet<NodeId>,
    shutdown_at: BTreeMap<NodeId, u64>,
    heal_at: Option<u64>,
    next_nemesis_at: u64,
    next_node_id: NodeId,
    clients: Vec<Client>,
    /// The clients' operations, one history per group.
    histories: Histories,
    checkers: Checkers,
    /// The groups besides the main one.
    groups: GroupRegistry,
    /// Bumped whenever a node or a group comes or goes.
    topology_version: u64,
    /// Where clients may send requests, with the topology version it was built at.
    directory: Option<(u64, Directory)>,
    trace: Trace,
    lease_reads: bool,
    tuning: NodeTuning,
    /// Simulated time for the KV lease clocks.
    clock: SimClock,
    /// A disk was damaged in this run.
    disk_damaged: bool,
    /// When the operator next looks at a failed member.
    next_operator_at: u64,
    /// Each leader's (term, commit index) last checked for durability, per group and node.
    leader_commit_checked: BTreeMap<(GroupId, NodeId), (u64, u64)>,
    /// (group, term, leader) seen.
    leaders_seen: BTreeSet<(GroupId, u64, NodeId)>,
    stats: RunStats,
    faults_stopped: bool,
    leader_deadline_ticks: Option<u64>,
    undecided: Option<String>,
    /// The index of the latest configuration change applied anywhere.
    conf_index_seen: u64,
    /// Each leader's configuration at the start of the current step, per group and node.
    leader_conf_before: BTreeMap<(GroupId, NodeId), ConfState>,
}

/// The phases of the Figure 8 scenario of the Raft paper, played with partitions: a leader
/// replicates entries to a minority; a rival leader elected on the other side appends a
/// conflicting entry it cannot replicate; the first side elects a leader again, which
/// replicates the old entries to a majority and is cut off the moment it commits one of them;
/// then the rival, whose last entry has the higher term, may be elected and overwrite them.
/// With the §5.4.2 commit rule the old entries are never committed at that moment, so the
/// rival overwriting them is harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Figure8 {
    Idle,
    /// The old leader and a minority are cut off; waiting for a rival leader on the other
    /// side.
    AwaitRival {
        side: Vec<NodeId>,
        deadline_ticks: u64,
    },
    /// The rival is cut off right after its election; the old side reunites at `until_ticks`.
    RivalIsolated {
        rival: NodeId,
        until_ticks: u64,
    },
    /// Everyone but the rival talks; waiting for a leader to commit an earlier term's entry.
    AwaitFragileCommit {
        rival: NodeId,
        deadline_ticks: u64,
    },
    /// That leader is cut off and the rival is back; waiting for the rival to win.
    AwaitRivalWin {
        rival: NodeId,
        deadline_ticks: u64,
    },
}

fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut state = seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F);
    splitmix64(&mut state)
}

impl Simulation {
    fn new(config: SimConfig) -> Simulation {
        assert!(config.nodes >= 1, "a cluster needs a node");
        assert!(config.quiet_ticks < config.run_ticks);
        let mut prng = Prng::new(config.seed);
        let nemesis_prng = Prng::new(derive_seed(config.seed, 1));
        let faults = config.faults;

        let lease_reads = match config.read_mode {
            ReadMode::ReadIndex => false,
            ReadMode::Lease => true,
            ReadMode::Mixed => prng.chance(1, 3),
        };
        let calm_network = NetworkConfig {
            delay_ticks_min: 1,
            delay_ticks_max: prng.range(2, 8),
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            spike_per_mille: 0,
            spike_delay_ticks_max: 8,
            in_flight_max: 50_000,
        };
        let network_config = NetworkConfig {
            loss_per_mille: if faults.loss { prng.range(0, 60) } else { 0 },
            duplicate_per_mille: if faults.duplication {
                prng.range(0, 40)
            } else {
                0
            },
            spike_per_mille: if faults.delay_spikes {
                prng.range(0, 30)
            } else {
                0
            },
            spike_delay_ticks_max: 400,
            ..calm_network
        };
        let tuning = NodeTuning {
            fsync_ticks_min: 1,
            fsync_ticks_max: prng.range(1, 8),
            snapshot_every_entries: *prng.choose(&[16, 50, 200, 1000]).expect("non-empty"),
            snapshot_tail_entries: *prng.choose(&[5, 50, 500]).expect("non-empty"),
            snapshot_chunk_bytes: *prng.choose(&[64, 1024, 1 << 20]).expect("non-empty"),
            apply_batches_max: *prng.choose(&[1, 4, 16]).expect("non-empty"),
        };

        // Small messages and windows exercise batching, pipelining and flow control, and split
        // a backlog across several appends.
        let append_bytes_max = *prng.choose(&[100, 512, 64 * 1024]).expect("non-empty");
        let inflight_msgs_max = *prng.choose(&[1, 4, 64]).expect("non-empty");
        let mut sim = Simulation {
            now_ticks: 0,
            prng,
            nemesis_prng,
            network: Network::new(network_config),
            calm_network,
            nodes: BTreeMap::new(),
            next_tick_at: BTreeMap::new(),
            tick_interval_ticks: BTreeMap::new(),
            restart_at: BTreeMap::new(),
            crash_at: BTreeMap::new(),
            figure8: Figure8::Idle,
            append_bytes_max,
            inflight_msgs_max,
            removed: BTreeSet::new(),
            ever_member: BTreeSet::new(),
            shutdown_at: BTreeMap::new(),
            heal_at: None,
            next_nemesis_at: 0,
            next_node_id: config.nodes as NodeId + 1,
            clients: Vec::new(),
            histories: Histories::new(),
            checkers: Checkers::new(),
            groups: GroupRegistry::new(),
            topology_version: 0,
            directory: None,
            trace: Trace::new(config.trace),
            lease_reads,
            tuning,
            clock: SimClock::default(),
            disk_damaged: false,
            next_operator_at: 0,
            leader_commit_checked: BTreeMap::new(),
            leaders_seen: BTreeSet::new(),
            stats: RunStats::default(),
            faults_stopped: false,
            leader_deadline_ticks: None,
            undecided: None,
            conf_index_seen: 0,
            leader_conf_before: BTreeMap::new(),
            config,
        };
        sim.next_nemesis_at = sim.nemesis_prng.range(200, 800);
        let client_config = ClientConfig {
            keys: 3,
            attempt_timeout_ticks: 40 * RAFT_TICK_TICKS,
            attempts_max: 20,
            think_ticks_max: 30,
            backoff_ticks: 2 * RAFT_TICK_TICKS,
        };
        for id in 1..=sim.config.clients {
            let prng = Prng::new(derive_seed(sim.config.seed, 100 + id));
            sim.clients.push(Client::new(id, client_config, prng));
        }
        sim
    }

    fn raft_config(&mut self, id: NodeId) -> Config {
        let mut config = Config::new(id);
        config.seed = self.prng.next_u64();
        config.max_append_bytes = self.append_bytes_max;
        config.max_inflight_msgs = self.inflight_msgs_max;
        config.max_uncommitted_bytes = 16 * 1024;
        config.read_only = if self.lease_reads {
            ReadOnlyOption::LeaseBased
        } else {
            ReadOnlyOption::Safe
        };
        config.mutation = self.config.mutation.and_then(SimMutation::core);
        config
    }

    fn spawn(&mut self, id: NodeId, initial: Option<ConfState>) -> Result<(), Violation> {
        self.topology_version += 1;
        let image = initial.map_or_else(ordo_raft::MemStorage::new, |c| bootstrap_image(&c));
        let mutation = self.config.mutation.and_then(SimMutation::runtime);
        let mut node = SimNode::new(id, image, self.tuning, mutation, self.clock.clone());
        let config = self.raft_config(id);
        node.boot(
            self.now_ticks,
            config,
            self.groups.removed(),
            &mut self.checkers,
            &mut self.trace,
        )?;
        self.nodes.insert(id, node);
        let interval = if self.config.faults.clock_skew && !self.lease_reads {
            self.prng.range(RAFT_TICK_TICKS - 1, RAFT_TICK_TICKS + 1)
        } else {
            RAFT_TICK_TICKS
        };
        self.tick_interval_ticks.insert(id, interval);
        let phase = self.prng.range(0, interval - 1);
        self.next_tick_at.insert(id, self.now_ticks + phase + 1);
        Ok(())
    }

    fn live_member_ids(&self) -> Vec<NodeId> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| !self.removed.contains(id))
            .collect()
    }

    /// The main group's leader.
    fn leader(&self) -> Option<NodeId> {
        self.leader_of(MAIN_GROUP)
    }

    /// Every group that exists now: the main one, then the others in id order.
    fn group_ids(&self) -> Vec<GroupId> {
        std::iter::once(MAIN_GROUP)
            .chain(self.groups.live().keys().copied())
            .collect()
    }

    /// Where clients may send requests now: each group with the nodes that run it.
    fn build_directory(&self) -> Directory {
        let mut directory = Directory::from([(MAIN_GROUP, self.live_member_ids())]);
        for (&group, conf) in self.groups.live() {
            let nodes: Vec<NodeId> = members(conf)
                .into_iter()
                .filter(|id| !self.removed.contains(id))
                .collect();
            directory.insert(group, nodes);
        }
        directory
    }

    fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        // The leader of the highest term among up nodes.
        self.nodes
            .values()
            .filter_map(|node| {
                node.raw(group)
                    .map(|raw| (raw.term(), raw.role(), node.id()))
            })
            .filter(|(_, role, _)| *role == StateRole::Leader)
            .map(|(term, _, id)| (term, id))
            .max()
            .map(|(_, id)| id)
    }

    fn run_to_end(&mut self) -> Result<(), Violation> {
        let initial = ConfState::with_voters(1..=self.config.nodes as NodeId);
        for id in 1..=self.config.nodes as NodeId {
            self.spawn(id, Some(initial.clone()))?;
            self.ever_member.insert(id);
        }
        for _ in 0..self.config.groups_at_start {
            self.create_group()?;
        }
        self.trace.log(0, || {
            format!(
                "cluster of {} voters; reads by {}; network {:?}; {:?}",
                self.config.nodes,
                if self.lease_reads {
                    "lease"
                } else {
                    "read index"
                },
                self.network.config(),
                self.tuning
            )
        });
        let faults_stop_ticks = self.config.run_ticks - self.config.quiet_ticks;
        let clients_stop_ticks = self.config.run_ticks - self.config.quiet_ticks / 2;
        while self.now_ticks < self.config.run_ticks {
            self.now_ticks += 1;
            if !self.faults_stopped && self.now_ticks >= faults_stop_ticks {
                self.stop_faults();
            }
            if self.now_ticks == clients_stop_ticks {
                for client in &mut self.clients {
                    client.stop();
                }
            }
            self.step()?;
        }
        self.finish()
    }

    fn step(&mut self) -> Result<(), Violation> {
        let now = self.now_ticks;
        self.leader_conf_before = self.leader_confs();
        let mut outbox = Outbox::default();
        let mut client_requests: Vec<(u64, NodeId, Request)> = Vec::new();
        let mut client_events = Vec::new();
        let (built_at, directory) = match self.directory.take() {
            Some((version, directory)) if version == self.topology_version => (version, directory),
            _ => (self.topology_version, self.build_directory()),
        };

        // Deliveries.
        while let Some((from, to, wire)) = self.network.next_due(now) {
            match wire {
                Wire::Peer { group, payload } => {
                    if self
                        .config
                        .watch_node
                        .is_some_and(|watched| watched == from || watched == to)
                    {
                        let message = ordo_node::codec::WireMessage::decode(payload.clone());
                        self.trace.log(now, || {
                            format!("group {group}: deliver {from} -> {to}: {message:?}")
                        });
                    }
                    if let Some(node) = self.nodes.get_mut(&to) {
                        if node.is_up() && !node.on_peer(from, group, payload) {
                            self.stats.messages_for_unknown_groups += 1;
                        }
                    }
                }
                Wire::Request(request) => {
                    if let Some(node) = self.nodes.get_mut(&to) {
                        node.on_request(from, request);
                    }
                }
                Wire::Response(response) => {
                    let index = (to - CLIENT_ADDRESS_BASE - 1) as usize;
                    let mut requests = Vec::new();
                    self.clients[index].on_response(
                        now,
                        from,
                        response,
                        &directory,
                        &mut self.histories,
                        &mut requests,
                        &mut client_events,
                    );
                    let address = to;
                    client_requests.extend(requests.into_iter().map(|(n, r)| (address, n, r)));
                }
            }
        }
        self.clock.set_ms(now);

        // Clocks.
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            if self.next_tick_at[&id] <= now {
                let interval = self.tick_interval_ticks[&id];
                self.next_tick_at.insert(id, now + interval);
                if let Some(node) = self.nodes.get_mut(&id) {
                    node.tick();
                }
            }
        }

        // Faults.
        self.nemesis()?;

        // Clients.
        for client in &mut self.clients {
            let mut requests = Vec::new();
            client.poll(
                now,
                &directory,
                &mut self.histories,
                &mut requests,
                &mut client_events,
            );
            let address = CLIENT_ADDRESS_BASE + client.id();
            client_requests.extend(requests.into_iter().map(|(n, r)| (address, n, r)));
        }
        for (address, node, request) in client_requests {
            self.network.send_at_most_once(
                &mut self.prng,
                now,
                address,
                node,
                Wire::Request(request),
            );
        }
        for event in client_events {
            self.trace_client_event(event);
        }

        // Nodes carry out their Readys.
        for &id in &ids {
            let node = self.nodes.get_mut(&id).expect("listed above");
            node.drive(
                now,
                &mut self.prng,
                &mut self.checkers,
                &mut self.trace,
                &mut outbox,
            )?;
        }
        self.crash_fresh_leaders(&mut outbox)?;
        for ack in std::mem::take(&mut outbox.acked) {
            self.checkers
                .group(ack.group)
                .observe_ack(now, ack.node_term, ack.index, ack.term)
                .map_err(|v| v.in_group(ack.group))?;
        }
        for (from, to, wire) in std::mem::take(&mut outbox.wire) {
            self.network.send(&mut self.prng, now, from, to, wire);
        }
        self.observe_membership(&outbox.conf_applied);
        // Kept for the next step, which rebuilds it if a node or a group came or went.
        self.directory = Some((built_at, directory));

        self.check_step()
    }

    /// The main group's leaders' configurations now. The other groups never change
    /// configuration, so theirs before a step is theirs after it.
    fn leader_confs(&self) -> BTreeMap<(GroupId, NodeId), ConfState> {
        let mut confs = BTreeMap::new();
        for (&id, node) in &self.nodes {
            if let Some(raw) = node
                .raw(MAIN_GROUP)
                .filter(|raw| raw.role() == StateRole::Leader)
            {
                confs.insert((MAIN_GROUP, id), raw.conf_state());
            }
        }
        confs
    }

    /// Sometimes crashes a node the moment it becomes leader, before anything it decided
    /// leaves it: its no-op is written but unsynced and never sent. The previous terms'
    /// uncommitted entries elsewhere then decide who can win next, and commitment rules
    /// (Figure 8 of the Raft paper) are put to the test.
    fn crash_fresh_leaders(&mut self, outbox: &mut Outbox) -> Result<(), Violation> {
        if self.faults_stopped {
            return Ok(());
        }
        let now = self.now_ticks;
        let fresh: Vec<(NodeId, u64)> = self
            .nodes
            .iter()
            .filter_map(|(&id, node)| node.raw(MAIN_GROUP).map(|raw| (id, raw)))
            .filter(|(id, raw)| {
                raw.role() == StateRole::Leader
                    && !self.leaders_seen.contains(&(MAIN_GROUP, raw.term(), *id))
            })
            .map(|(id, raw)| (id, raw.term()))
            .collect();
        for &(id, term) in &fresh {
            let Figure8::AwaitRival { side, .. } = &self.figure8 else {
                continue;
            };
            if side.contains(&id) {
                continue;
            }
            // Cut off before anything it decided leaves: its no-op stays its own.
            let side = side.clone();
            let nodes = self.live_member_ids();
            self.network.partition(&[id], &nodes);
            let until_ticks = now + self.nemesis_prng.range(50, 300);
            self.figure8 = Figure8::RivalIsolated {
                rival: id,
                until_ticks,
            };
            self.trace.log(now, || {
                format!("figure 8: rival {id} (term {term}) isolated as it is elected; {side:?} still apart")
            });
        }
        if !self.config.faults.crashes {
            return Ok(());
        }
        for (id, term) in fresh {
            if matches!(self.figure8, Figure8::RivalIsolated { rival, .. } if rival == id) {
                continue;
            }
            if !self.nemesis_prng.chance(1, 4) {
                continue;
            }
            // It was leader, however briefly: the checkers must know.
            self.checkers
                .group(MAIN_GROUP)
                .observe_role(now, id, term, true)
                .map_err(|v| v.in_group(MAIN_GROUP))?;
            self.leaders_seen.insert((MAIN_GROUP, term, id));
            self.stats.leaders_elected += 1;
            outbox.wire.retain(|(from, _, _)| *from != id);
            outbox.acked.retain(|ack| ack.node != id);
            self.trace.log(now, || {
                format!("group 1: node {id} crashes as it becomes leader of term {term}")
            });
            self.crash(id);
            let down_ticks = self.nemesis_prng.range(20, 600);
            self.restart_at.insert(id, now + down_ticks);
        }
        Ok(())
    }

    fn trace_client_event(&mut self, event: ClientEvent) {
        match &event {
            ClientEvent::Completed { request, .. } => {
                self.stats.ops_completed += 1;
                if request.group != MAIN_GROUP {
                    self.stats.ops_completed_other_groups += 1;
                }
            }
            ClientEvent::GaveUp { .. } => self.stats.ops_unknown += 1,
            ClientEvent::Sent { .. } => {}
        }
        self.trace.log(self.now_ticks, || match event {
            ClientEvent::Sent {
                client_id,
                node,
                attempt,
                request,
            } => format!(
                "group {}: client {client_id} sends #{} to node {node} (attempt {attempt}): {:?}",
                request.group, request.request_id, request.op
            ),
            ClientEvent::Completed {
                client_id,
                request,
                reply,
            } => format!(
                "group {}: client {client_id} #{} done: {:?}",
                request.group, request.request_id, reply
            ),
            ClientEvent::GaveUp { client_id, request } => format!(
                "group {}: client {client_id} #{} gives up; outcome unknown",
                request.group, request.request_id
            ),
        });
    }

    /// Runs every per-step checker on what the nodes show now, group by group.
    fn check_step(&mut self) -> Result<(), Violation> {
        let mut fragile = Vec::new();
        for group in self.group_ids() {
            let found = self.check_group(group).map_err(|v| v.in_group(group))?;
            // The Figure 8 scenario and the crashes after fragile commits play in the main
            // group; the others are checked alike.
            if group == MAIN_GROUP {
                fragile = found;
            }
        }
        self.react_to_fragile_commits(fragile);
        self.check_leader_deadline()
    }

    /// Checks one group's nodes: roles, commit indexes, and that what its leaders commit is
    /// durable on a quorum. Returns the leaders whose commit index just moved onto an
    /// earlier term's entry.
    fn check_group(&mut self, group: GroupId) -> Result<Vec<NodeId>, Violation> {
        let now = self.now_ticks;
        let mut leader_commits = Vec::new();
        let mut new_leaders = Vec::new();
        let mut fragile = Vec::new();
        let checker = self.checkers.group(group);
        for (&id, node) in &self.nodes {
            let Some(raw) = node.raw(group) else {
                continue;
            };
            let is_leader = raw.role() == StateRole::Leader;
            let term = raw.term();
            checker.observe_role(now, id, term, is_leader)?;
            checker.observe_commit(now, id, raw.commit_index())?;
            if is_leader {
                if self.leaders_seen.insert((group, term, id)) {
                    self.stats.leaders_elected += 1;
                    new_leaders.push(id);
                }
                leader_commits.push((id, term, raw.commit_index()));
            }
        }
        // Leader churn: a leader that fails right after its election, while its log still
        // carries the previous terms' uncommitted tail, is where commitment rules are tested
        // (Figure 8 of the Raft paper).
        for id in new_leaders {
            if group != MAIN_GROUP {
                continue;
            }
            if !self.faults_stopped && self.config.faults.crashes && self.nemesis_prng.chance(1, 5)
            {
                let at = now + self.nemesis_prng.range(1, 4 * RAFT_TICK_TICKS);
                self.crash_at.entry(id).or_insert(at);
            }
        }
        for (id, term, commit) in leader_commits {
            if self.check_leader_commit(group, id, term, commit)? {
                fragile.push(id);
            }
        }
        Ok(fragile)
    }

    /// Checks that the commit index `commit` leader `id` of `term` reached in `group` is
    /// durable on a quorum, if it advanced it itself. True when it moved onto an entry of an
    /// earlier term.
    fn check_leader_commit(
        &mut self,
        group: GroupId,
        id: NodeId,
        term: u64,
        commit: u64,
    ) -> Result<bool, Violation> {
        let now = self.now_ticks;
        let checked = self
            .leader_commit_checked
            .insert((group, id), (term, commit));
        // Only a commit index this leader advanced itself was decided by counting; one it
        // inherited when elected was decided by an earlier leader and checked then.
        let advanced = checked.is_some_and(|(t, c)| t == term && c < commit);
        if !advanced {
            return Ok(false);
        }
        self.trace.log(now, || {
            format!("group {group}: leader {id} (term {term}) commits up to index {commit}")
        });
        let raw = self.nodes[&id].raw(group).expect("leaders are up");
        let Ok(entry_term) = raw.storage().term(commit) else {
            return Ok(false);
        };
        if commit == 0 {
            return Ok(false);
        }
        // The commit index moved onto an entry of an earlier term: the moment the leader's
        // own entry is not yet on a quorum, which Figure 8 of the Raft paper shows to be
        // fragile. A leader following §5.4.2 never gets here.
        let fragile = entry_term < term;
        let holders: BTreeSet<NodeId> = self
            .nodes
            .values()
            .filter(|node| node.durably_holds(group, commit, entry_term))
            .map(SimNode::id)
            .collect();
        // The entry just committed may be a configuration change that took effect when
        // applied in this same step: the quorum was counted in the configuration before.
        if let Some(before) = self.leader_conf_before.get(&(group, id)) {
            if crate::checker::is_quorum(before, &holders) {
                return Ok(fragile);
            }
        }
        let conf = raw.conf_state();
        self.checkers
            .group(group)
            .observe_leader_commit(now, id, commit, entry_term, &conf, &holders)?;
        Ok(fragile)
    }

    /// Main-group leaders that committed an earlier term's entry: cut off (Figure 8) or
    /// crashed.
    fn react_to_fragile_commits(&mut self, fragile: Vec<NodeId>) {
        let now = self.now_ticks;
        for id in fragile {
            if let Figure8::AwaitFragileCommit { rival, .. } = self.figure8 {
                if id != rival {
                    let nodes = self.live_member_ids();
                    self.network.heal();
                    self.network.partition(&[id], &nodes);
                    self.figure8 = Figure8::AwaitRivalWin {
                        rival,
                        deadline_ticks: now + 2000,
                    };
                    self.trace.log(now, || {
                        format!(
                            "figure 8: leader {id} committed an earlier term's entry; it is cut \
                             off and rival {rival} rejoins"
                        )
                    });
                    continue;
                }
            }
            if !self.faults_stopped && self.config.faults.crashes {
                self.trace.log(now, || {
                    format!("node {id} crashes right after committing an earlier term's entry")
                });
                self.crash(id);
                let down_ticks = self.nemesis_prng.range(200, 1500);
                self.restart_at.insert(id, now + down_ticks);
            }
        }
    }

    /// Once faults stopped long enough ago, every group must have a leader.
    fn check_leader_deadline(&mut self) -> Result<(), Violation> {
        let now = self.now_ticks;
        let Some(deadline) = self.leader_deadline_ticks else {
            return Ok(());
        };
        if now < deadline {
            return Ok(());
        }
        self.leader_deadline_ticks = None;
        for group in self.group_ids() {
            if self.leader_of(group).is_none() {
                return Err(Violation {
                    kind: ViolationKind::Liveness,
                    time_ticks: now,
                    detail: format!(
                        "group {group}: no leader {} ticks after faults stopped",
                        now - (self.config.run_ticks - self.config.quiet_ticks)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Learns membership from configurations applied by nodes: removed nodes are shut down
    /// for good a little later (after they had a chance to learn of their removal).
    fn observe_membership(&mut self, applied: &[(GroupId, u64, ConfState)]) {
        let main = applied
            .iter()
            .filter(|(group, _, _)| *group == MAIN_GROUP)
            .map(|(_, index, conf)| (index, conf));
        for (index, conf) in main {
            // Every node applies the same changes in the same order; the first to apply one
            // tells the membership from then on, and nodes catching up repeat history.
            if *index <= self.conf_index_seen {
                continue;
            }
            self.conf_index_seen = *index;
            assert!(
                !conf.voters.is_empty(),
                "a node applied a configuration change and was left with no voters: {conf:?}"
            );
            let members: BTreeSet<NodeId> = conf
                .voters
                .iter()
                .chain(&conf.learners)
                .chain(&conf.voters_outgoing)
                .chain(&conf.learners_next)
                .copied()
                .collect();
            for &id in &members {
                if self.ever_member.insert(id) {
                    self.stats.conf_changes += 1;
                }
            }
            for &id in self.nodes.keys() {
                if self.ever_member.contains(&id)
                    && !members.contains(&id)
                    && !self.removed.contains(&id)
                    && !self.shutdown_at.contains_key(&id)
                {
                    self.shutdown_at
                        .insert(id, self.now_ticks + 30 * RAFT_TICK_TICKS);
                    self.trace.log(self.now_ticks, || {
                        format!("node {id} is no longer a member; it shuts down soon")
                    });
                }
            }
        }
    }

    fn stop_faults(&mut self) {
        self.faults_stopped = true;
        self.figure8 = Figure8::Idle;
        self.network.heal();
        self.network.set_config(self.calm_network);
        self.heal_at = None;
        self.trace.log(self.now_ticks, || {
            "faults stop: network healed, crashed nodes restart".to_string()
        });
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, node)| !node.is_up() && !self.removed.contains(id))
            .map(|(&id, _)| id)
            .collect();
        for id in down {
            self.restart_at.insert(id, self.now_ticks);
        }
        self.leader_deadline_ticks = Some(self.now_ticks + 150 * RAFT_TICK_TICKS);
    }

    fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.is_up() {
            return;
        }
        let groups_hosted = node.groups_hosted();
        node.crash(&mut self.prng);
        self.network.drop_in_flight_to(id);
        // The process is gone, so its peers' connections to it close: each transport
        // reports it unreachable (how a quiesced follower learns its leader died).
        for (&other, node) in &mut self.nodes {
            if other != id {
                node.on_unreachable(id);
            }
        }
        self.stats.crashes += 1;
        if groups_hosted > 1 {
            self.stats.crashes_multi_group += 1;
        }
        self.leader_commit_checked
            .retain(|&(_, node), _| node != id);
        self.trace.log(self.now_ticks, || {
            format!("node {id} crashes, losing power to the {groups_hosted} groups it hosts")
        });
    }

    fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        if self.removed.contains(&id) {
            return Ok(());
        }
        let config = self.raft_config(id);
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if node.is_up() {
            return Ok(());
        }
        node.boot(
            self.now_ticks,
            config,
            self.groups.removed(),
            &mut self.checkers,
            &mut self.trace,
        )
    }

    /// Scheduled restarts, shutdowns and heals, then (before faults stop) a new fault now and
    /// then.
    fn nemesis(&mut self) -> Result<(), Violation> {
        let now = self.now_ticks;
        let due: Vec<NodeId> = self
            .restart_at
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.restart_at.remove(&id);
            self.restart(id)?;
        }
        let due: Vec<NodeId> = self
            .crash_at
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.crash_at.remove(&id);
            if self.faults_stopped || !self.nodes.get(&id).is_some_and(SimNode::is_up) {
                continue;
            }
            self.trace
                .log(now, || format!("node {id} crashes soon after its election"));
            self.crash(id);
            let down_ticks = self.nemesis_prng.range(20, 600);
            self.restart_at.insert(id, now + down_ticks);
        }
        let due: Vec<NodeId> = self
            .shutdown_at
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.shutdown_at.remove(&id);
            self.crash(id);
            self.removed.insert(id);
            self.topology_version += 1;
            self.restart_at.remove(&id);
            self.trace
                .log(now, || format!("node {id} shut down after removal"));
        }
        self.figure8_advance();
        self.replace_failed();
        self.retire_groups_of_lost_nodes();
        if self.heal_at.is_some_and(|at| at <= now) {
            self.heal_at = None;
            self.network.heal();
            self.trace.log(now, || "network healed".to_string());
        }
        if self.faults_stopped || now < self.next_nemesis_at {
            return Ok(());
        }
        self.next_nemesis_at = now + self.nemesis_prng.range(50, 500);
        let faults = self.config.faults;
        let mut options: Vec<u8> = Vec::new();
        if faults.partitions {
            options.extend([0, 0, 0]);
        }
        if faults.crashes {
            options.extend([1, 1, 1]);
        }
        if faults.membership {
            options.extend([2, 2]);
        }
        if faults.transfers {
            options.push(3);
        }
        if faults.partitions {
            options.push(5);
        }
        if faults.loss || faults.duplication || faults.delay_spikes {
            options.push(4);
        }
        if faults.clock_jumps && !self.lease_reads {
            options.push(6);
        }
        if faults.disk_damage {
            options.push(7);
        }
        if faults.groups {
            options.extend([8, 9]);
        }
        let Some(&choice) = self.nemesis_prng.choose(&options) else {
            return Ok(());
        };
        if self.figure8 != Figure8::Idle && matches!(choice, 0 | 5) {
            return Ok(());
        }
        match choice {
            0 => self.nemesis_partition(),
            5 => self.figure8_start(),
            1 => self.nemesis_crash(),
            2 => self.nemesis_membership()?,
            3 => self.nemesis_transfer(),
            6 => self.nemesis_clock_jump(),
            7 => self.nemesis_disk_damage(),
            8 => self.nemesis_create_group()?,
            9 => self.nemesis_remove_group(),
            _ => self.nemesis_weather(),
        }
        Ok(())
    }

    fn nemesis_partition(&mut self) {
        let now = self.now_ticks;
        let nodes = self.live_member_ids();
        if nodes.len() < 2 {
            return;
        }
        self.network.heal();
        let leader = self.leader();
        let description = match (self.nemesis_prng.below(4), leader) {
            (1, Some(leader)) => {
                self.network.partition(&[leader], &nodes);
                format!("leader {leader} isolated")
            }
            (2, Some(leader)) => {
                // The leader still sends but hears nothing back, or the reverse.
                let inbound = self.nemesis_prng.chance(1, 2);
                for &other in nodes.iter().filter(|&&other| other != leader) {
                    if inbound {
                        self.network.block(other, leader);
                    } else {
                        self.network.block(leader, other);
                    }
                }
                format!(
                    "leader {leader} {} (one-way)",
                    if inbound {
                        "hears nobody"
                    } else {
                        "reaches nobody"
                    }
                )
            }
            (3, _) => {
                let links = self.nemesis_prng.range(1, nodes.len() as u64 * 2);
                let mut blocked = Vec::new();
                for _ in 0..links {
                    let from = *self.nemesis_prng.choose(&nodes).expect("non-empty");
                    let to = *self.nemesis_prng.choose(&nodes).expect("non-empty");
                    if from != to {
                        self.network.block(from, to);
                        blocked.push((from, to));
                    }
                }
                format!("one-way links blocked: {blocked:?}")
            }
            _ => {
                let mut shuffled = nodes.clone();
                self.nemesis_prng.shuffle(&mut shuffled);
                let side_len = self.nemesis_prng.range(1, (nodes.len() as u64 - 1).max(1)) as usize;
                let side = &shuffled[..side_len];
                self.network.partition(side, &nodes);
                format!("partition {side:?} | rest")
            }
        };
        self.stats.partitions += 1;
        self.heal_at = Some(now + self.nemesis_prng.range(100, 2000));
        self.trace.log(now, || description);
    }

    fn figure8_start(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        let conf = self.nodes[&leader]
            .raw(MAIN_GROUP)
            .expect("leader is up")
            .conf_state();
        if conf.is_joint() || conf.voters.len() < 3 || !conf.voters.contains(&leader) {
            return;
        }
        // The leader plus followers short of a majority by one: they replicate, never commit.
        let majority = conf.voters.len() / 2 + 1;
        let mut others: Vec<NodeId> = conf
            .voters
            .iter()
            .copied()
            .filter(|&id| id != leader)
            .collect();
        self.nemesis_prng.shuffle(&mut others);
        let mut side = vec![leader];
        side.extend(others.into_iter().take(majority - 2));
        let nodes = self.live_member_ids();
        self.network.heal();
        self.heal_at = None;
        self.network.partition(&side, &nodes);
        self.stats.partitions += 1;
        self.figure8 = Figure8::AwaitRival {
            side: side.clone(),
            deadline_ticks: self.now_ticks + 1500,
        };
        self.trace.log(self.now_ticks, || {
            format!("figure 8: {side:?} cut off from the rest")
        });
    }

    /// Moves the Figure 8 scenario along on timeouts; gives up (healing) when a phase takes
    /// too long.
    fn figure8_advance(&mut self) {
        let now = self.now_ticks;
        match self.figure8.clone() {
            Figure8::Idle => {}
            Figure8::AwaitRival { deadline_ticks, .. }
            | Figure8::AwaitFragileCommit { deadline_ticks, .. } => {
                if now >= deadline_ticks {
                    self.figure8_end("gave up waiting");
                }
            }
            Figure8::RivalIsolated { rival, until_ticks } => {
                if now >= until_ticks {
                    let nodes = self.live_member_ids();
                    self.network.heal();
                    self.network.partition(&[rival], &nodes);
                    self.figure8 = Figure8::AwaitFragileCommit {
                        rival,
                        deadline_ticks: now + 1500,
                    };
                    self.trace.log(now, || {
                        format!("figure 8: everyone but rival {rival} reunites")
                    });
                }
            }
            Figure8::AwaitRivalWin {
                rival,
                deadline_ticks,
            } => {
                if self.leader() == Some(rival) || now >= deadline_ticks {
                    self.figure8_end("rival's chance is over");
                }
            }
        }
    }

    fn figure8_end(&mut self, why: &str) {
        self.figure8 = Figure8::Idle;
        self.network.heal();
        self.trace.log(self.now_ticks, || {
            format!("figure 8 ends ({why}); network healed")
        });
    }

    fn nemesis_crash(&mut self) {
        let now = self.now_ticks;
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, node)| node.is_up() && !self.removed.contains(id))
            .map(|(&id, _)| id)
            .collect();
        if up.is_empty() {
            return;
        }
        let victims: Vec<NodeId> = if self.nemesis_prng.chance(1, 25) {
            self.trace
                .log(now, || "power loss: every node crashes".to_string());
            up
        } else if let (true, Some(leader)) = (self.nemesis_prng.chance(1, 3), self.leader()) {
            vec![leader]
        } else {
            vec![*self.nemesis_prng.choose(&up).expect("non-empty")]
        };
        for id in victims {
            self.crash(id);
            let down_ticks = self.nemesis_prng.range(20, 1500);
            self.restart_at.insert(id, now + down_ticks);
        }
    }

    fn nemesis_membership(&mut self) -> Result<(), Violation> {
        let now = self.now_ticks;
        // While a failed member awaits its removal, the operator's change comes first.
        if self.failed_member().is_some() {
            return Ok(());
        }
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let conf = self.nodes[&leader]
            .raw(MAIN_GROUP)
            .expect("leader is up")
            .conf_state();
        let change = if conf.is_joint() {
            if conf.auto_leave {
                return Ok(());
            }
            ConfChange::leave_joint()
        } else {
            let spare_ok = (self.next_node_id as usize) <= self.config.nodes + SPARE_NODES_MAX;
            let voters_max = self.config.nodes + 1;
            let voters_min = self.config.nodes.min(3);
            let learner = conf.learners.first().copied();
            let choice = self.nemesis_prng.below(4);
            let single = |kind, node_id| ConfChangeSingle { kind, node_id };
            match (choice, learner) {
                (0, Some(learner)) => ConfChange::single(ConfChangeKind::AddVoter, learner),
                (1, Some(learner)) if conf.voters.len() > 1 => {
                    // Replace a voter (perhaps the leader) with the learner in one joint step.
                    let out = *self.nemesis_prng.choose(&conf.voters).expect("non-empty");
                    ConfChange {
                        transition: if self.nemesis_prng.chance(1, 2) {
                            ConfChangeTransition::JointImplicit
                        } else {
                            ConfChangeTransition::JointExplicit
                        },
                        changes: vec![
                            single(ConfChangeKind::AddVoter, learner),
                            single(ConfChangeKind::Remove, out),
                        ],
                        context: bytes::Bytes::new(),
                    }
                }
                (2, _) if conf.voters.len() > voters_min => {
                    let out = *self.nemesis_prng.choose(&conf.voters).expect("non-empty");
                    ConfChange::single(ConfChangeKind::Remove, out)
                }
                _ if learner.is_none() && spare_ok && conf.voters.len() <= voters_max => {
                    let id = self.next_node_id;
                    self.next_node_id += 1;
                    // A joining node knows the cluster's bootstrap configuration, as every
                    // original member does; the log or a snapshot brings it up to date.
                    let bootstrap = ConfState::with_voters(1..=self.config.nodes as NodeId);
                    self.spawn(id, Some(bootstrap))?;
                    self.trace
                        .log(now, || format!("node {id} starts empty, to be added"));
                    ConfChange::single(ConfChangeKind::AddLearner, id)
                }
                _ => return Ok(()),
            }
        };
        let node = self.nodes.get_mut(&leader).expect("leader is up");
        node.propose_conf_change(MAIN_GROUP, &change);
        self.trace.log(now, || {
            format!(
                "group 1: nemesis proposes to leader {leader}: {:?} {:?}",
                change.transition, change.changes
            )
        });
        Ok(())
    }

    /// Asks the leader of a random group to hand leadership to another of its voters.
    fn nemesis_transfer(&mut self) {
        let groups = self.group_ids();
        let Some(&group) = self.nemesis_prng.choose(&groups) else {
            return;
        };
        let Some(leader) = self.leader_of(group) else {
            return;
        };
        let conf = self.nodes[&leader]
            .raw(group)
            .expect("leader is up")
            .conf_state();
        let others: Vec<NodeId> = conf
            .voters
            .iter()
            .copied()
            .filter(|&id| id != leader)
            .collect();
        let Some(&target) = self.nemesis_prng.choose(&others) else {
            return;
        };
        let node = self.nodes.get_mut(&leader).expect("leader is up");
        let result = node.transfer_leader(group, target);
        self.stats.transfers += 1;
        self.trace.log(self.now_ticks, || {
            format!(
                "group {group}: nemesis asks leader {leader} to transfer to {target}: {result:?}"
            )
        });
    }

    /// Nodes a new group may be placed on: running or not, but neither removed, failed nor
    /// about to shut down.
    fn group_candidates(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(id, node)| {
                !self.removed.contains(id)
                    && !self.shutdown_at.contains_key(id)
                    && node.failed().is_none()
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// Creates a group, unless the most that may exist do.
    fn nemesis_create_group(&mut self) -> Result<(), Violation> {
        if self.groups.live().len() >= EXTRA_GROUPS_MAX {
            return Ok(());
        }
        self.create_group()
    }

    /// Creates a group with a fresh id on a random subset of the nodes, bootstrapped on each
    /// member as the main group was; a member that is down starts it at its next boot.
    fn create_group(&mut self) -> Result<(), Violation> {
        let candidates = self.group_candidates();
        let Some(conf) = GroupRegistry::pick_conf(&mut self.nemesis_prng, &candidates) else {
            return Ok(());
        };
        let group = self.groups.create(conf.clone());
        self.topology_version += 1;
        self.stats.groups_created += 1;
        self.trace.log(self.now_ticks, || {
            format!(
                "group {group}: created with voters {:?}, learners {:?}",
                conf.voters, conf.learners
            )
        });
        for id in members(&conf) {
            let config = self.raft_config(id);
            let node = self.nodes.get_mut(&id).expect("candidates exist");
            node.create_group(
                self.now_ticks,
                group,
                bootstrap_image(&conf),
                &config,
                &mut self.checkers,
                &mut self.trace,
            )?;
        }
        Ok(())
    }

    /// Removes a random group besides the main one.
    fn nemesis_remove_group(&mut self) {
        let groups: Vec<GroupId> = self.groups.live().keys().copied().collect();
        if let Some(&group) = self.nemesis_prng.choose(&groups) {
            self.remove_group(group, "nemesis");
        }
    }

    /// Removes `group` from the cluster and from every member that is up; one that is down
    /// removes it at its next boot. Messages still in flight for it are dropped on arrival.
    fn remove_group(&mut self, group: GroupId, why: &str) {
        let Some(conf) = self.groups.remove(group) else {
            return;
        };
        self.topology_version += 1;
        self.stats.groups_removed += 1;
        self.trace
            .log(self.now_ticks, || format!("group {group}: removed ({why})"));
        for id in members(&conf) {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.remove_group(group);
            }
            self.leader_commit_checked.remove(&(group, id));
        }
    }

    /// The operator's part for groups besides the main one, which never change membership: a
    /// group that lost a member for good (its disk failed, or it left the cluster) is
    /// removed.
    fn retire_groups_of_lost_nodes(&mut self) {
        // The operator looks once per Raft tick, not at every simulated tick.
        if !self.now_ticks.is_multiple_of(RAFT_TICK_TICKS) {
            return;
        }
        let lost = |id: &NodeId| {
            self.removed.contains(id) || self.nodes.get(id).is_some_and(|n| n.failed().is_some())
        };
        let retired: Vec<GroupId> = self
            .groups
            .live()
            .iter()
            .filter(|(_, conf)| members(conf).iter().any(lost))
            .map(|(&group, _)| group)
            .collect();
        for group in retired {
            self.remove_group(group, "a member was lost for good");
        }
    }

    /// The member whose disk failed, if one did and is still a member.
    fn failed_member(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(id, node)| node.failed().is_some() && !self.removed.contains(id))
            .map(|(&id, _)| id)
    }

    /// Damages the durable log of one voter: bits flipped in one committed entry, or the log
    /// cut short inside its committed part. Once per run, and only while a majority of at
    /// least three voters stays whole. The node stops when it reads the damage (or refuses to
    /// start); the operator then removes it (see [`Simulation::replace_failed`]).
    fn nemesis_disk_damage(&mut self) {
        if self.disk_damaged {
            return;
        }
        let Some(leader) = self.leader() else {
            return;
        };
        let conf = self.nodes[&leader]
            .raw(MAIN_GROUP)
            .expect("leader is up")
            .conf_state();
        if conf.is_joint() || conf.voters.len() < 3 {
            return;
        }
        let Some(&victim) = self.nemesis_prng.choose(&conf.voters) else {
            return;
        };
        let groups: Vec<GroupId> = self
            .group_ids()
            .into_iter()
            .filter(|&group| self.nodes.get(&victim).is_some_and(|n| n.hosts(group)))
            .collect();
        let Some(&group) = self.nemesis_prng.choose(&groups) else {
            return;
        };
        let Some(node) = self.nodes.get_mut(&victim) else {
            return;
        };
        let Some((first, commit)) = node.durable_range(group) else {
            return;
        };
        if commit < first {
            return;
        }
        let at = self.nemesis_prng.range(first, commit);
        let damage = if self.nemesis_prng.chance(1, 2) {
            crate::disk::Damage {
                from: at,
                to: at,
                what: "checksum mismatch",
            }
        } else {
            crate::disk::Damage {
                from: at,
                to: Index::MAX,
                what: "log cut short",
            }
        };
        self.trace.log(self.now_ticks, || {
            format!(
                "group {group}: node {victim}'s disk is damaged: {} from entry {at}",
                damage.what
            )
        });
        node.damage_disk(group, damage);
        self.disk_damaged = true;
    }

    /// The operator's part: a member whose disk failed is removed from the configuration,
    /// as `etcdctl member remove` would, before anything else about membership changes.
    fn replace_failed(&mut self) {
        let Some(failed) = self.failed_member() else {
            return;
        };
        if self.now_ticks < self.next_operator_at {
            return;
        }
        self.next_operator_at = self.now_ticks + 5 * RAFT_TICK_TICKS;
        let Some(leader) = self.leader() else {
            return;
        };
        let conf = self.nodes[&leader]
            .raw(MAIN_GROUP)
            .expect("leader is up")
            .conf_state();
        let change = if conf.is_joint() {
            if conf.auto_leave {
                return;
            }
            ConfChange::leave_joint()
        } else if conf.voters.contains(&failed) || conf.learners.contains(&failed) {
            ConfChange::single(ConfChangeKind::Remove, failed)
        } else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&leader) {
            node.propose_conf_change(MAIN_GROUP, &change);
        }
        self.trace.log(self.now_ticks, || {
            format!(
                "group 1: operator asks leader {leader} to remove failed node {failed}: {:?}",
                change.changes
            )
        });
    }

    /// A node's clock jumps ahead: the ticks of a long pause arrive at once.
    fn nemesis_clock_jump(&mut self) {
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, node)| node.is_up() && !self.removed.contains(id))
            .map(|(&id, _)| id)
            .collect();
        let Some(&id) = self.nemesis_prng.choose(&up) else {
            return;
        };
        let ticks = self.nemesis_prng.range(5, 60);
        if let Some(node) = self.nodes.get_mut(&id) {
            for _ in 0..ticks {
                node.tick();
            }
        }
        self.trace.log(self.now_ticks, || {
            format!("node {id}'s clock jumps ahead by {ticks} Raft ticks")
        });
    }

    fn nemesis_weather(&mut self) {
        let faults = self.config.faults;
        let config = NetworkConfig {
            loss_per_mille: if faults.loss {
                self.nemesis_prng.range(0, 150)
            } else {
                0
            },
            duplicate_per_mille: if faults.duplication {
                self.nemesis_prng.range(0, 60)
            } else {
                0
            },
            spike_per_mille: if faults.delay_spikes {
                self.nemesis_prng.range(0, 60)
            } else {
                0
            },
            ..self.network.config()
        };
        self.network.set_config(config);
        self.trace.log(self.now_ticks, || {
            format!(
                "network weather: loss {}‰, duplication {}‰, delay spikes {}‰",
                config.loss_per_mille, config.duplicate_per_mille, config.spike_per_mille
            )
        });
    }

    /// End-of-run checks, for every group: liveness after the quiet phase, acknowledged
    /// writes, and the linearizability of the clients' history (of a removed group too, up
    /// to its removal).
    fn finish(&mut self) -> Result<(), Violation> {
        for group in self.group_ids() {
            self.check_caught_up(group).map_err(|v| v.in_group(group))?;
        }
        let histories = std::mem::take(&mut self.histories);
        for (&group, history) in &histories {
            if !self.groups.is_removed(group) {
                self.check_completed(history)
                    .map_err(|v| v.in_group(group))?;
            }
        }
        let now = self.now_ticks;
        for (group, checker) in self.checkers.iter() {
            checker
                .check_acked_applied(now)
                .map_err(|v| v.in_group(group))?;
        }
        self.stats.applied_max = self.applied_max();
        for (&group, history) in &histories {
            self.check_linearizable(group, history)
                .map_err(|v| v.in_group(group))?;
        }
        self.histories = histories;
        Ok(())
    }

    /// The group has a leader, and every member of its configuration that did not fail
    /// applied everything the leader committed.
    fn check_caught_up(&self, group: GroupId) -> Result<(), Violation> {
        let now = self.now_ticks;
        let leader = self.leader_of(group).ok_or_else(|| Violation {
            kind: ViolationKind::Liveness,
            time_ticks: now,
            detail: "no leader at the end of the quiet phase".to_string(),
        })?;
        let raw = self.nodes[&leader].raw(group).expect("leader is up");
        let commit = raw.commit_index();
        let conf = raw.conf_state();
        for id in conf.voters.iter().chain(&conf.learners) {
            let Some(node) = self.nodes.get(id) else {
                return Err(Violation {
                    kind: ViolationKind::Liveness,
                    time_ticks: now,
                    detail: format!("member {id} of the final configuration was never started"),
                });
            };
            if node.failed().is_some() {
                // Its disk failed: it is replaced, not caught up.
                continue;
            }
            let applied = node.raw(group).map(|raw| raw.applied_index());
            if applied != Some(commit) {
                return Err(Violation {
                    kind: ViolationKind::Liveness,
                    time_ticks: now,
                    detail: format!(
                        "member {id} applied {applied:?} at the end, the leader {leader} \
                         committed {commit}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Requests started well after faults stopped must have finished.
    fn check_completed(
        &self,
        history: &ordo_lincheck::History<ordo_lincheck::KvInput, ordo_lincheck::KvOutput>,
    ) -> Result<(), Violation> {
        let quiet_start = self.config.run_ticks - self.config.quiet_ticks;
        let settle_ticks = 150 * RAFT_TICK_TICKS;
        for (index, op) in history.operations().iter().enumerate() {
            if op.call_time >= quiet_start + settle_ticks && op.return_time().is_none() {
                return Err(Violation {
                    kind: ViolationKind::Liveness,
                    time_ticks: self.now_ticks,
                    detail: format!(
                        "operation {index} of client {} ({:?}), called at {} after faults \
                         stopped at {quiet_start}, never completed",
                        op.client_id, op.input, op.call_time
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks one group's history with `ordo-lincheck`; a search out of budget leaves the
    /// run undecided (the first such group says why).
    fn check_linearizable(
        &mut self,
        group: GroupId,
        history: &ordo_lincheck::History<ordo_lincheck::KvInput, ordo_lincheck::KvOutput>,
    ) -> Result<(), Violation> {
        let options = CheckOptions {
            states_explored_max: LINCHECK_STATES_MAX,
        };
        match ordo_lincheck::check_with(&KvModel, history, options) {
            Ok(()) => Ok(()),
            Err(CheckError::NotLinearizable(violation)) => Err(Violation {
                kind: ViolationKind::Linearizability,
                time_ticks: self.now_ticks,
                detail: violation.to_string(),
            }),
            Err(undecided @ CheckError::Undecided { .. }) => {
                self.undecided
                    .get_or_insert_with(|| format!("group {group}: {undecided}"));
                Ok(())
            }
        }
    }

    /// The highest index any node applied, in any group.
    fn applied_max(&self) -> u64 {
        self.checkers
            .iter()
            .map(|(_, checker)| checker.applied_max())
            .max()
            .unwrap_or(0)
    }

    fn into_report(self, result: Result<(), Violation>) -> RunReport {
        let applied_max = self.applied_max();
        let mut trace = self.trace;
        let violation = result.err();
        if let Some(violation) = &violation {
            trace.log(violation.time_ticks, || violation.to_string());
        }
        let mut stats = self.stats;
        stats.messages_delivered = self.network.stats().delivered;
        stats.applied_max = applied_max;
        for node in self.nodes.values() {
            stats.groups_removed_at_boot += node.removed_at_boot();
            let (quiesces, wakes) = node.quiescence();
            stats.quiesces += quiesces;
            stats.wakes += wakes;
        }
        RunReport {
            seed: self.config.seed,
            nodes: self.config.nodes,
            lease_reads: self.lease_reads,
            violation,
            undecided: self.undecided,
            ticks: self.now_ticks,
            stats,
            trace: trace.into_lines(),
        }
    }
}
