//! The nemesis: faults injected into a checker-started cluster while the clients run.
//!
//! Faults come one at a time, round-robin over the kinds asked for (so a run long enough for
//! one round injects every kind), each held for the fault duration and then healed, with a
//! quiet interval between them. Disk faults always damage the same node (a minority of one),
//! so at most one node is ever down for lost state; a node that refuses to start on a damaged
//! disk is replaced as an operator would: removed from the cluster, its data deleted, and a
//! fresh member added under a new id.
//!
//! The membership fault changes members under load through the etcd Cluster API, sent to a
//! random member as a client would: a new node joins as a learner (its own port, data
//! directory and proxy), is promoted once it has caught up, and an old voter (the leader
//! half of the time) is removed and stopped, so the cluster keeps three voters with one new
//! face.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use ordo_kv::proto::etcdserverpb::cluster_client::ClusterClient;
use ordo_kv::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
};

use crate::client::{Conn, Rng};
use crate::cluster::{segment_files, Cluster};
use crate::history::{FaultRecord, Recorder};
use crate::proxy::LinkMode;
use crate::workload::Endpoints;

/// Longest one membership request may take.
const MEMBER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between attempts of a membership request that could not be decided yet.
const MEMBER_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// How long a client of a newly added member waits to connect.
const NEW_MEMBER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL the leader, restart it after the fault duration.
    KillLeader,
    /// SIGKILL a random node, restart it after the fault duration.
    KillRandom,
    /// SIGSTOP the leader, SIGCONT it after the fault duration.
    PauseLeader,
    /// SIGSTOP a random node, SIGCONT it after the fault duration.
    PauseRandom,
    /// Cut a random minority off from the majority.
    PartitionMajority,
    /// Cut the leader off from everyone.
    PartitionIsolateLeader,
    /// Split the others in two halves that only one bridge node connects.
    PartitionBridge,
    /// Drop only what the leader sends: it still hears everyone, no one hears it.
    PartitionLeaderMute,
    /// Delay every link of a random node.
    LinkDelay,
    /// SIGKILL every node at once, restart them all.
    CrashAll,
    /// Flip bits in the disk victim's newest segment file while it is down.
    DiskBitflip,
    /// Truncate the disk victim's newest segment file while it is down.
    DiskTruncate,
    /// Delete the disk victim's whole data directory while it is down.
    DiskWipe,
    /// Add and remove members under load.
    Membership,
}

impl FaultKind {
    /// Every kind, in the order a round injects them (disk faults last: they may leave a
    /// node down for the rest of the run).
    pub const ALL: [FaultKind; 14] = [
        FaultKind::KillLeader,
        FaultKind::PartitionMajority,
        FaultKind::PauseLeader,
        FaultKind::KillRandom,
        FaultKind::PartitionIsolateLeader,
        FaultKind::PauseRandom,
        FaultKind::PartitionBridge,
        FaultKind::PartitionLeaderMute,
        FaultKind::LinkDelay,
        FaultKind::CrashAll,
        FaultKind::Membership,
        FaultKind::DiskTruncate,
        FaultKind::DiskBitflip,
        FaultKind::DiskWipe,
    ];

    /// The kind's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillRandom => "kill-random",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::PauseRandom => "pause-random",
            FaultKind::PartitionMajority => "partition-majority",
            FaultKind::PartitionIsolateLeader => "partition-isolate-leader",
            FaultKind::PartitionBridge => "partition-bridge",
            FaultKind::PartitionLeaderMute => "partition-leader-mute",
            FaultKind::LinkDelay => "link-delay",
            FaultKind::CrashAll => "crash-all",
            FaultKind::DiskBitflip => "disk-bitflip",
            FaultKind::DiskTruncate => "disk-truncate",
            FaultKind::DiskWipe => "disk-wipe",
            FaultKind::Membership => "membership",
        }
    }

    /// Parses a comma-separated list of kinds and groups (`kill`, `pause`, `partition`,
    /// `disk`, `all`, `none`).
    pub fn parse_list(text: &str) -> Result<Vec<FaultKind>, String> {
        let mut kinds = BTreeSet::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let group: Vec<FaultKind> = match word {
                "all" => FaultKind::ALL.to_vec(),
                "none" => vec![],
                "kill" => vec![FaultKind::KillLeader, FaultKind::KillRandom],
                "pause" => vec![FaultKind::PauseLeader, FaultKind::PauseRandom],
                "partition" => vec![
                    FaultKind::PartitionMajority,
                    FaultKind::PartitionIsolateLeader,
                    FaultKind::PartitionBridge,
                    FaultKind::PartitionLeaderMute,
                ],
                "disk" => vec![
                    FaultKind::DiskBitflip,
                    FaultKind::DiskTruncate,
                    FaultKind::DiskWipe,
                ],
                name => match FaultKind::ALL.iter().find(|k| k.name() == name) {
                    Some(kind) => vec![*kind],
                    None => {
                        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                        return Err(format!(
                            "unknown fault `{name}`; use all, none, kill, pause, partition, disk or one of {}",
                            names.join(", ")
                        ));
                    }
                },
            };
            kinds.extend(group);
        }
        // Keep the round order of ALL.
        Ok(FaultKind::ALL
            .iter()
            .copied()
            .filter(|k| kinds.contains(k))
            .collect())
    }
}

/// How the nemesis behaves.
#[derive(Debug, Clone)]
pub struct NemesisConfig {
    /// The kinds to inject, round-robin.
    pub faults: Vec<FaultKind>,
    /// Quiet time between faults.
    pub interval: Duration,
    /// How long each fault is held.
    pub duration: Duration,
    /// How long a node restarted on a damaged disk is watched for rejoining or refusing.
    pub rejoin_timeout: Duration,
    /// Seed of its choices.
    pub seed: u64,
}

/// What the nemesis leaves behind for the summary.
#[derive(Debug, Default)]
pub struct NemesisReport {
    /// Kinds asked for that could not be injected, with why.
    pub unavailable: Vec<String>,
    /// Nodes left down because they refused to start.
    pub left_down: BTreeSet<u64>,
    /// Unexpected events (a node that exited by itself, ...).
    pub notes: Vec<String>,
}

struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    recorder: &'a Recorder,
    endpoints: &'a Endpoints,
    config: NemesisConfig,
    rng: Rng,
    disk_victim: Option<u64>,
    report: NemesisReport,
}

/// Injects faults until `deadline`, then heals everything and restarts every node not left
/// down. Each fault ends before `deadline`.
/// Clients find the cluster's current members in `endpoints`, which membership changes
/// update.
pub async fn run(
    cluster: &mut Cluster,
    recorder: &Recorder,
    endpoints: &Endpoints,
    config: NemesisConfig,
    deadline: Instant,
) -> NemesisReport {
    let rng = Rng::new(config.seed);
    let mut nemesis = Nemesis {
        cluster,
        recorder,
        endpoints,
        config,
        rng,
        disk_victim: None,
        report: NemesisReport::default(),
    };
    nemesis.run(deadline).await;
    nemesis.heal_all().await;
    nemesis.report
}

/// The operator's repair of node `id`, which refused to start: it is removed from the
/// cluster, its data directory deleted, and a fresh member (a new id) added that joins,
/// catches up within `rejoin_timeout` and is promoted. Returns what happened, starting with
/// `repaired:` when all of it succeeded.
pub async fn repair_refused(
    cluster: &mut Cluster,
    endpoints: &Endpoints,
    id: u64,
    rejoin_timeout: Duration,
    seed: u64,
) -> String {
    let recorder = Recorder::new(1);
    let mut nemesis = Nemesis {
        cluster,
        recorder: &recorder,
        endpoints,
        config: NemesisConfig {
            faults: Vec::new(),
            interval: Duration::ZERO,
            duration: Duration::ZERO,
            rejoin_timeout,
            seed,
        },
        rng: Rng::new(seed),
        disk_victim: Some(id),
        report: NemesisReport::default(),
    };
    nemesis.report.left_down.insert(id);
    nemesis.repair(id).await
}

impl Nemesis<'_> {
    async fn run(&mut self, deadline: Instant) {
        if self.config.faults.is_empty() {
            return;
        }
        // A bound on rounds in case every kind is unavailable and the loop would otherwise
        // only sleep; the deadline ends it far sooner in practice.
        for round in 0..100_000usize {
            let kind = self.config.faults[round % self.config.faults.len()];
            let needed = self.config.interval + self.config.duration;
            if Instant::now() + needed >= deadline {
                return;
            }
            tokio::time::sleep(self.config.interval).await;
            self.note_exits();
            let start_ns = self.recorder.now_ns();
            let (description, outcome) = self.inject(kind).await;
            self.recorder.fault(FaultRecord {
                kind: kind.name().to_string(),
                description,
                start_ns,
                end_ns: self.recorder.now_ns(),
                outcome,
            });
        }
    }

    /// Reports nodes that exited without the nemesis killing them.
    fn note_exits(&mut self) {
        for id in self.cluster.ids() {
            if self.report.left_down.contains(&id) {
                continue;
            }
            if let Some(status) = self.cluster.reap(id) {
                let tail = one_line(&self.cluster.log_tail(id, 5));
                self.report.notes.push(format!(
                    "node {id} exited by itself ({status}); restarted. Log tail: {tail}"
                ));
                let _ = self.cluster.start(id);
            }
        }
    }

    fn up_nodes(&mut self) -> Vec<u64> {
        let ids = self.cluster.ids();
        ids.into_iter()
            .filter(|id| !self.report.left_down.contains(id))
            .collect()
    }

    fn pick(&mut self, from: &[u64]) -> Option<u64> {
        if from.is_empty() {
            None
        } else {
            Some(from[self.rng.below(from.len() as u64) as usize])
        }
    }

    fn shuffled(&mut self, mut ids: Vec<u64>) -> Vec<u64> {
        for i in (1..ids.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            ids.swap(i, j);
        }
        ids
    }

    async fn leader_or_random(&mut self) -> Option<(u64, &'static str)> {
        if let Some(leader) = self.cluster.leader().await {
            return Some((leader, "leader"));
        }
        let up = self.up_nodes();
        self.pick(&up)
            .map(|id| (id, "no leader known; random node"))
    }

    async fn hold(&self) {
        tokio::time::sleep(self.config.duration).await;
    }

    async fn inject(&mut self, kind: FaultKind) -> (String, String) {
        match kind {
            FaultKind::KillLeader | FaultKind::KillRandom => {
                let target = if kind == FaultKind::KillLeader {
                    self.leader_or_random().await
                } else {
                    let up = self.up_nodes();
                    self.pick(&up).map(|id| (id, "random node"))
                };
                let Some((id, why)) = target else {
                    return ("no node to kill".into(), "skipped".into());
                };
                self.cluster.kill(id);
                self.hold().await;
                let outcome = match self.cluster.start(id) {
                    Ok(()) => "restarted".to_string(),
                    Err(e) => format!("restart failed: {e}"),
                };
                (format!("SIGKILL node {id} ({why})"), outcome)
            }
            FaultKind::PauseLeader | FaultKind::PauseRandom => {
                let target = if kind == FaultKind::PauseLeader {
                    self.leader_or_random().await
                } else {
                    let up = self.up_nodes();
                    self.pick(&up).map(|id| (id, "random node"))
                };
                let Some((id, why)) = target else {
                    return ("no node to pause".into(), "skipped".into());
                };
                if let Err(e) = self.cluster.pause(id) {
                    return (format!("SIGSTOP node {id} ({why})"), format!("failed: {e}"));
                }
                self.hold().await;
                let outcome = match self.cluster.resume(id) {
                    Ok(()) => "SIGCONT".to_string(),
                    Err(e) => format!("SIGCONT failed: {e}"),
                };
                (format!("SIGSTOP node {id} ({why})"), outcome)
            }
            FaultKind::PartitionMajority => {
                let ids = self.shuffled(self.cluster.ids());
                let minority_len = (ids.len() - 1) / 2;
                let (minority, majority) = ids.split_at(minority_len.max(1));
                self.cluster.partition(minority, majority);
                self.hold().await;
                self.cluster.heal();
                (
                    format!("cut {minority:?} off from {majority:?}"),
                    "healed".into(),
                )
            }
            FaultKind::PartitionIsolateLeader => {
                let Some((leader, why)) = self.leader_or_random().await else {
                    return ("no node to isolate".into(), "skipped".into());
                };
                let rest: Vec<u64> = self
                    .cluster
                    .ids()
                    .into_iter()
                    .filter(|&id| id != leader)
                    .collect();
                self.cluster.partition(&[leader], &rest);
                self.hold().await;
                self.cluster.heal();
                (
                    format!("cut node {leader} ({why}) off from {rest:?}"),
                    "healed".into(),
                )
            }
            FaultKind::PartitionBridge => {
                let ids = self.shuffled(self.cluster.ids());
                if ids.len() < 3 {
                    return ("a bridge needs at least 3 nodes".into(), "skipped".into());
                }
                let bridge = ids[0];
                let rest = &ids[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                self.cluster.partition(a, b);
                self.hold().await;
                self.cluster.heal();
                (
                    format!("cut {a:?} off from {b:?}; node {bridge} reaches both"),
                    "healed".into(),
                )
            }
            FaultKind::PartitionLeaderMute => {
                let Some((leader, why)) = self.leader_or_random().await else {
                    return ("no node to mute".into(), "skipped".into());
                };
                let others: Vec<u64> = self
                    .cluster
                    .ids()
                    .into_iter()
                    .filter(|&id| id != leader)
                    .collect();
                for &other in &others {
                    self.cluster.set_link(leader, other, LinkMode::Drop);
                }
                self.hold().await;
                self.cluster.heal();
                (
                    format!("dropped everything node {leader} ({why}) sends to {others:?}; it still hears them"),
                    "healed".into(),
                )
            }
            FaultKind::LinkDelay => {
                let up = self.up_nodes();
                let Some(id) = self.pick(&up) else {
                    return ("no node to slow".into(), "skipped".into());
                };
                let delay = Duration::from_millis(self.rng.between(20, 200));
                for other in self.cluster.ids() {
                    if other != id {
                        self.cluster.set_link(id, other, LinkMode::Delay(delay));
                        self.cluster.set_link(other, id, LinkMode::Delay(delay));
                    }
                }
                self.hold().await;
                self.cluster.heal();
                (
                    format!("delayed every link of node {id} by {delay:?}"),
                    "healed".into(),
                )
            }
            FaultKind::CrashAll => {
                let up = self.up_nodes();
                for &id in &up {
                    self.cluster.kill(id);
                }
                self.hold().await;
                let mut failures = Vec::new();
                for &id in &up {
                    if let Err(e) = self.cluster.start(id) {
                        failures.push(format!("node {id}: {e}"));
                    }
                }
                (
                    format!("SIGKILL every node {up:?} at once"),
                    if failures.is_empty() {
                        "restarted all".into()
                    } else {
                        format!("restart failed: {}", failures.join("; "))
                    },
                )
            }
            FaultKind::DiskBitflip | FaultKind::DiskTruncate | FaultKind::DiskWipe => {
                self.disk_fault(kind).await
            }
            FaultKind::Membership => self.membership().await,
        }
    }

    async fn disk_fault(&mut self, kind: FaultKind) -> (String, String) {
        let victim = match self.disk_victim {
            Some(victim) if self.cluster.ids().contains(&victim) => victim,
            _ => {
                let leader = self.cluster.leader().await;
                let candidates: Vec<u64> = self
                    .up_nodes()
                    .into_iter()
                    .filter(|&id| Some(id) != leader)
                    .collect();
                let Some(victim) = self.pick(&candidates) else {
                    return ("no follower to damage".into(), "skipped".into());
                };
                self.disk_victim = Some(victim);
                victim
            }
        };
        // What the cluster had committed before the damage: a node that rejoins must get back
        // at least this far, from its peers.
        let mut target_index = 0;
        for id in self.cluster.ids() {
            if id != victim {
                if let Some(status) = self.cluster.status(id).await {
                    target_index = target_index.max(status.commit_index);
                }
            }
        }
        self.cluster.kill(victim);
        let data_dir = self.cluster.spec(victim).data_dir.clone();
        let damage = match kind {
            FaultKind::DiskWipe => match std::fs::remove_dir_all(&data_dir) {
                Ok(()) => format!("wiped {}", data_dir.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    format!("{} was already gone", data_dir.display())
                }
                Err(e) => format!("could not wipe {}: {e}", data_dir.display()),
            },
            _ => self.damage_segment(kind, &data_dir),
        };
        let started = self.cluster.start(victim);
        let mut outcome = match started {
            Err(e) => format!("could not be started: {e}"),
            Ok(()) => self.watch_rejoin(victim, target_index).await,
        };
        if self.report.left_down.contains(&victim) {
            let repair = self.repair(victim).await;
            outcome = format!("{outcome}; {repair}");
        }
        (format!("node {victim} down; {damage}; restarted"), outcome)
    }

    fn damage_segment(&mut self, kind: FaultKind, data_dir: &Path) -> String {
        let segments = segment_files(data_dir);
        let Some(segment) = segments
            .iter()
            .rev()
            .find(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        else {
            return format!("no non-empty segment file under {}", data_dir.display());
        };
        let Ok(bytes) = std::fs::read(segment) else {
            return format!("could not read {}", segment.display());
        };
        let len = bytes.len() as u64;
        // Segments are created at full length and read as zeros past their records: aim at
        // the bytes that were written.
        let written = bytes
            .iter()
            .rposition(|&b| b != 0)
            .map_or(len, |at| at as u64 + 1);
        let result = if kind == FaultKind::DiskBitflip {
            let flips = self.rng.between(1, 4);
            let mut flipped = Vec::new();
            for _ in 0..flips {
                let offset = self.rng.below(written.max(1));
                let byte = bytes[offset as usize] ^ (1 << self.rng.below(8));
                flipped.push((offset, byte));
            }
            let offsets: Vec<u64> = flipped.iter().map(|&(offset, _)| offset).collect();
            std::fs::OpenOptions::new()
                .write(true)
                .open(segment)
                .and_then(|f| {
                    use std::os::unix::fs::FileExt;
                    flipped
                        .iter()
                        .try_for_each(|&(offset, byte)| f.write_all_at(&[byte], offset))
                })
                .map(|()| {
                    format!(
                        "flipped bits at offsets {offsets:?} of {} ({written} bytes written)",
                        segment.display()
                    )
                })
        } else {
            let keep = self.rng.between(written / 2, written.saturating_sub(1));
            std::fs::OpenOptions::new()
                .write(true)
                .open(segment)
                .and_then(|f| f.set_len(keep))
                .map(|()| {
                    format!(
                        "truncated {} from {len} to {keep} bytes ({written} written)",
                        segment.display()
                    )
                })
        };
        result.unwrap_or_else(|e| format!("could not damage {}: {e}", segment.display()))
    }

    /// Watches a node restarted on a damaged disk: it either exits (refuses) or catches up
    /// to `target_index`.
    async fn watch_rejoin(&mut self, id: u64, target_index: u64) -> String {
        let deadline = Instant::now() + self.config.rejoin_timeout;
        let mut applied = 0;
        loop {
            if let Some(status) = self.cluster.reap(id) {
                self.report.left_down.insert(id);
                let tail = one_line(&self.cluster.log_tail(id, 3));
                return format!("REFUSED to start ({status}); left down. Its last words: {tail}");
            }
            if let Some(status) = self.cluster.status(id).await {
                applied = status.applied_index;
                if applied >= target_index {
                    self.report.left_down.remove(&id);
                    return format!(
                        "rejoined: applied index {applied} >= {target_index} committed before the damage"
                    );
                }
            }
            if Instant::now() >= deadline {
                self.report.left_down.remove(&id);
                return format!(
                    "running but not caught up within {:?} (applied {applied}, target {target_index})",
                    self.config.rejoin_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn heal_all(&mut self) {
        self.cluster.heal();
        for id in self.cluster.ids() {
            if self.cluster.is_paused(id) {
                let _ = self.cluster.resume(id);
            }
        }
        self.note_exits();
        for id in self.up_nodes() {
            if !self.cluster.is_running(id) {
                if let Err(e) = self.cluster.start(id) {
                    self.report
                        .notes
                        .push(format!("node {id} could not be restarted: {e}"));
                }
            }
        }
    }
}

/// A Cluster-service client of node `addr`'s etcd API.
fn cluster_client(addr: std::net::SocketAddr) -> Option<ClusterClient<tonic::transport::Channel>> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).ok()?;
    Some(ClusterClient::new(
        endpoint
            .connect_timeout(MEMBER_REQUEST_TIMEOUT)
            .timeout(MEMBER_REQUEST_TIMEOUT)
            .connect_lazy(),
    ))
}

/// Whether a failed membership request may still succeed when retried: no leader, a change
/// still in progress, a learner still catching up, an unreachable member.
fn worth_retrying(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::FailedPrecondition
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    )
}

fn short(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), one_line(status.message()))
}

impl Nemesis<'_> {
    /// Running, unpaused members a request may be sent to.
    fn reachable_nodes(&mut self) -> Vec<u64> {
        let ids = self.up_nodes();
        ids.into_iter()
            .filter(|&id| self.cluster.is_running(id) && !self.cluster.is_paused(id))
            .collect()
    }

    /// A random reachable member other than `except` and its Cluster client.
    fn any_member(
        &mut self,
        except: Option<u64>,
    ) -> Option<(u64, ClusterClient<tonic::transport::Channel>)> {
        let nodes: Vec<u64> = self
            .reachable_nodes()
            .into_iter()
            .filter(|&id| Some(id) != except)
            .collect();
        let via = self.pick(&nodes)?;
        Some((via, cluster_client(self.cluster.spec(via).client_addr)?))
    }

    /// The member list as some reachable member reports it.
    async fn member_list(&mut self) -> Option<Vec<Member>> {
        let (_, mut client) = self.any_member(None)?;
        let answer = client
            .member_list(MemberListRequest {
                linearizable: false,
            })
            .await
            .ok()?;
        Some(answer.into_inner().members)
    }

    /// The membership fault: a new node joins as a learner, is promoted, and an old voter
    /// (a node left down, else the leader half of the time, else a random node) is removed.
    async fn membership(&mut self) -> (String, String) {
        let deadline = Instant::now() + self.config.rejoin_timeout;
        let (added, added_note) = match self.add_and_promote(deadline).await {
            Ok(done) => done,
            Err(why) => return ("add a member".into(), format!("failed: {why}")),
        };
        let leader = self.cluster.leader().await;
        let old: Vec<u64> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|&id| id != added)
            .collect();
        let down = self.report.left_down.iter().next().copied();
        let (victim, why) = if let Some(down) = down {
            (Some(down), "left down")
        } else if leader.is_some_and(|l| l != added) && self.rng.below(2) == 0 {
            (leader, "leader")
        } else {
            (self.pick(&old), "random node")
        };
        let Some(victim) = victim else {
            return (added_note, "no old member to remove".into());
        };
        let deadline = Instant::now() + self.config.rejoin_timeout;
        let outcome = match self.remove_member(victim, deadline).await {
            Ok(note) => format!(
                "{note}; the cluster keeps {} voters",
                self.cluster.ids().len()
            ),
            Err(why) => format!("removing node {victim} failed: {why}"),
        };
        (
            format!("{added_note}; then remove node {victim} ({why})"),
            outcome,
        )
    }

    /// Adds a new node as a learner, starts it with `--join`, and promotes it once it has
    /// caught up; returns its id and what happened. A learner that never catches up is
    /// removed again.
    async fn add_and_promote(&mut self, deadline: Instant) -> Result<(u64, String), String> {
        let planned = self
            .cluster
            .plan_node()
            .await
            .map_err(|e| format!("plan a node: {e}"))?;
        let peer_url = planned.peer_url();
        let client_addr = planned.client_addr();
        let started = Instant::now();
        let mut last = String::from("no reachable member");
        let mut id = None;
        // Bounded by the deadline; each attempt by the request timeout.
        while id.is_none() && Instant::now() < deadline {
            if let Some((via, mut client)) = self.any_member(None) {
                let request = MemberAddRequest {
                    peer_ur_ls: vec![peer_url.clone()],
                    is_learner: true,
                };
                match client.member_add(request).await {
                    Ok(answer) => {
                        let member = answer.into_inner().member;
                        id = member.map(|m| (m.id, via));
                        if id.is_none() {
                            return Err(format!(
                                "node {via} answered MemberAdd without the member"
                            ));
                        }
                    }
                    Err(status) if worth_retrying(&status) => {
                        last = format!("node {via}: {}", short(&status));
                        // The add may have been applied although the answer was lost: a
                        // member with this peer URL is the one asked for.
                        if let Some(members) = self.member_list().await {
                            if let Some(m) =
                                members.iter().find(|m| m.peer_ur_ls.contains(&peer_url))
                            {
                                id = Some((m.id, via));
                            }
                        }
                    }
                    Err(status) => return Err(format!("node {via}: {}", short(&status))),
                }
            }
            if id.is_none() {
                tokio::time::sleep(MEMBER_RETRY_INTERVAL).await;
            }
        }
        let Some((id, added_via)) = id else {
            return Err(format!("MemberAdd never succeeded: {last}"));
        };
        self.cluster.add_node(id, planned);
        if let Err(e) = self.cluster.start(id) {
            let _ = self.remove_member(id, deadline).await;
            return Err(format!("start node {id}: {e}"));
        }
        let mut last = String::from("no reachable member");
        let mut promoted_via = None;
        while promoted_via.is_none() && Instant::now() < deadline {
            // Not the learner itself: until it has applied its own addition it does not
            // know it is a member.
            if let Some((via, mut client)) = self.any_member(Some(id)) {
                match client.member_promote(MemberPromoteRequest { id }).await {
                    Ok(_) => promoted_via = Some(via),
                    // An earlier attempt whose answer was lost promoted it already.
                    Err(status)
                        if status.message().contains("only promote a learner member")
                            && !status.message().contains("in sync") =>
                    {
                        promoted_via = Some(via);
                    }
                    // A member that has not applied the addition yet does not know the
                    // learner; another (or the same one, later) will.
                    Err(status)
                        if worth_retrying(&status) || status.code() == tonic::Code::NotFound =>
                    {
                        last = format!("node {via}: {}", short(&status));
                    }
                    Err(status) => {
                        last = format!("node {via}: {}", short(&status));
                        break;
                    }
                }
            }
            if promoted_via.is_none() {
                tokio::time::sleep(MEMBER_RETRY_INTERVAL).await;
            }
        }
        let Some(promoted_via) = promoted_via else {
            let cleanup = self
                .remove_member(id, Instant::now() + self.config.rejoin_timeout)
                .await
                .unwrap_or_else(|e| format!("and could not be removed: {e}"));
            return Err(format!(
                "learner {id} was never promoted ({last}); {cleanup}"
            ));
        };
        match Conn::new(&client_addr.to_string(), NEW_MEMBER_CONNECT_TIMEOUT) {
            Ok(conn) => self.endpoints.add(conn),
            Err(e) => self
                .report
                .notes
                .push(format!("no client connection to new node {id}: {e}")),
        }
        Ok((
            id,
            format!(
                "node {id} added as a learner via node {added_via}, joined, promoted via node {promoted_via} after {:.1}s",
                started.elapsed().as_secs_f64()
            ),
        ))
    }

    /// Removes member `id` through a random member (possibly itself) and stops its process.
    async fn remove_member(&mut self, id: u64, deadline: Instant) -> Result<String, String> {
        let mut last = String::from("no reachable member");
        let mut removed_via = None;
        let mut attempts = 0u32;
        while removed_via.is_none() && Instant::now() < deadline {
            attempts += 1;
            if let Some((via, mut client)) = self.any_member(None) {
                match client.member_remove(MemberRemoveRequest { id }).await {
                    Ok(_) => removed_via = Some(via),
                    // After an attempt whose answer was lost, the member may be gone already.
                    Err(status) if status.code() == tonic::Code::NotFound && attempts > 1 => {
                        removed_via = Some(via);
                    }
                    Err(status) if worth_retrying(&status) => {
                        last = format!("node {via}: {}", short(&status));
                    }
                    Err(status) => return Err(format!("node {via}: {}", short(&status))),
                }
            }
            if removed_via.is_none() {
                tokio::time::sleep(MEMBER_RETRY_INTERVAL).await;
            }
        }
        let Some(via) = removed_via else {
            return Err(format!("MemberRemove never succeeded: {last}"));
        };
        self.endpoints
            .remove(&self.cluster.spec(id).client_addr.to_string());
        self.cluster.remove_node(id);
        self.report.left_down.remove(&id);
        if self.disk_victim == Some(id) {
            self.disk_victim = None;
        }
        Ok(format!("node {id} removed via node {via} and stopped"))
    }

    /// The operator's repair of a node that refused to start on lost state: remove it,
    /// delete its data, add a fresh member (a new id) that joins, catches up and is
    /// promoted.
    async fn repair(&mut self, id: u64) -> String {
        let data_dir = self.cluster.spec(id).data_dir.clone();
        let deadline = Instant::now() + self.config.rejoin_timeout;
        let removed = match self.remove_member(id, deadline).await {
            Ok(note) => note,
            Err(why) => return format!("repair failed: removing node {id}: {why}"),
        };
        // Whatever is at the path goes, a directory or (after worse damage) a file.
        let removed_data = match std::fs::symlink_metadata(&data_dir) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&data_dir),
            Ok(_) => std::fs::remove_file(&data_dir),
            Err(e) => Err(e),
        };
        let wiped = match removed_data {
            Ok(()) => format!("deleted {}", data_dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no data left".to_string(),
            Err(e) => format!("could not delete {}: {e}", data_dir.display()),
        };
        let deadline = Instant::now() + self.config.rejoin_timeout;
        match self.add_and_promote(deadline).await {
            Ok((_, added)) => format!("repaired: {removed}; {wiped}; {added}"),
            Err(why) => format!(
                "repair incomplete: {removed}; {wiped}; adding a fresh member failed: {why}"
            ),
        }
    }
}

/// Most characters of a node's log quoted in a report.
const LOG_QUOTE_CHARS_MAX: usize = 600;

/// Log lines joined into one bounded line for the summary.
fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let mut quoted: String = joined.chars().take(LOG_QUOTE_CHARS_MAX).collect();
    if quoted.len() < joined.len() {
        quoted.push_str(" ...");
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_lists_expand_groups_and_keep_round_order() {
        let kinds = FaultKind::parse_list("disk,kill-leader").expect("valid list");
        assert_eq!(
            kinds,
            vec![
                FaultKind::KillLeader,
                FaultKind::DiskTruncate,
                FaultKind::DiskBitflip,
                FaultKind::DiskWipe
            ]
        );
        assert_eq!(
            FaultKind::parse_list("all").expect("all").len(),
            FaultKind::ALL.len()
        );
        assert!(FaultKind::parse_list("none").expect("none").is_empty());
        let error = FaultKind::parse_list("kill,meteor").expect_err("unknown kind");
        assert!(error.contains("meteor"), "{error}");
    }
}
