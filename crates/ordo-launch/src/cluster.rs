//! A local cluster of `ordo server` processes on 127.0.0.1.
//!
//! Every process is a child of this one, started with [`EXIT_WITH_PARENT_ENV`] so it exits
//! when this process is gone, and killed when the [`LocalCluster`] is dropped, on every path
//! out (errors and panics included), so nothing is left running.
//!
//! Each node names every node (itself included) in `--peers` by its *dialed* peer address:
//! its peer listener, unless a caller put something in front of it
//! ([`LocalCluster::set_dialed_peer_addr`]; the checker puts a fault-injecting proxy
//! there). A node advertises its own entry to peers in the snapshots it sends, so its own
//! entry must be the dialed address too, never the real listener. Nodes come and go: a node
//! planned with [`LocalCluster::plan_node`] gets its ports, is added with
//! [`LocalCluster::add_node`] once the cluster gave it an id, and its first start passes
//! `--join`; a removed node leaves the set with [`LocalCluster::remove_node`].

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::http;
use crate::parent::EXIT_WITH_PARENT_ENV;
use crate::ports::PortAllocator;

/// How often conditions are polled while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Most nodes one cluster may be planned with.
pub const NODES_MAX: u64 = 9;

/// Largest `/status` answer read.
const STATUS_BYTES_MAX: usize = 64 * 1024;

/// Longest one `/status` request may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Ports for local clusters, below the kernel's ephemeral range (see [`PortAllocator`]): a
/// node restarted mid-run rebinds its old ports.
static PORTS: PortAllocator = PortAllocator::new(5_000..32_000);

/// Finds `n` loopback ports that are free now and were never handed out before by this
/// process.
pub fn free_ports(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    PORTS.free_ports(n)
}

/// Why a cluster could not be planned, started or waited for.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The `ordo` binary is not where it was looked for.
    #[error("the ordo binary {path} does not exist; build it with `cargo build -p ordo` or give its path")]
    MissingBinary {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A node count outside 1..=NODES_MAX.
    #[error("a local cluster has between 1 and {NODES_MAX} nodes, not {0}")]
    NodeCount(u64),
    /// An I/O failure (ports, directories, processes).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A node is not part of this cluster.
    #[error("node {0} is not part of this cluster")]
    UnknownNode(u64),
    /// A condition did not hold in time.
    #[error("{what} within {timeout:?}: {last}; see the nodes' logs in {root}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        timeout: Duration,
        /// What was seen last.
        last: String,
        /// Where the logs are.
        root: PathBuf,
    },
}

/// A wrapper for I/O errors that says what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// Whether node `id` is started with a Kafka listener: the ids `member add` gives nodes
/// added at run time are above Kafka's 32-bit broker ids, and such a node is refused one.
fn has_kafka_listener(id: u64) -> bool {
    i32::try_from(id).is_ok()
}

/// The addresses, directory and log of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node id.
    pub id: u64,
    /// Its etcd API address.
    pub client_addr: SocketAddr,
    /// Its peer listener.
    pub peer_addr: SocketAddr,
    /// The address every node (itself included) dials for it: its peer listener, or what a
    /// caller put in front of it.
    pub dialed_peer_addr: SocketAddr,
    /// Its admin address.
    pub admin_addr: SocketAddr,
    /// Its Kafka API address (not listened on by a node whose id is above Kafka's broker
    /// ids).
    pub kafka_addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
    /// Whether its next start is its first as a member added at run time, which passes
    /// `--join` (later starts do not, as an operator restarts a joined node).
    pub joins: bool,
}

/// Ports reserved for a node about to be added: its id comes from the membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedNode {
    /// Its etcd API address.
    pub client_addr: SocketAddr,
    /// Its peer listener.
    pub peer_addr: SocketAddr,
    /// Its admin address.
    pub admin_addr: SocketAddr,
    /// Its Kafka API address.
    pub kafka_addr: SocketAddr,
    /// The address the other nodes will dial for it: its peer listener unless the caller
    /// puts something in front of it.
    pub dialed_peer_addr: SocketAddr,
}

/// What `/status` reports, the fields a launcher looks at.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node.
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `pre-candidate`.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// The leader it knows, or 0.
    pub leader: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
}

/// A running node's process, and whether it was stopped with SIGSTOP.
struct Process {
    child: Child,
    paused: bool,
}

/// `ordo server` processes started from one binary.
pub struct LocalCluster {
    binary: PathBuf,
    root: PathBuf,
    specs: BTreeMap<u64, NodeSpec>,
    processes: BTreeMap<u64, Process>,
    extra_args: Vec<String>,
    /// How to reach admin ports that serve TLS.
    admin_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    _temp: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Adds arguments for every `ordo server` started from now on (as `extra_args` of
    /// [`LocalCluster::new`]): for settings that need the cluster's directory.
    pub fn add_server_args(&mut self, args: impl IntoIterator<Item = String>) {
        self.extra_args.extend(args);
    }

    /// Reaches the nodes' admin ports over TLS with `config` (for servers started with
    /// `--admin-cert-file`).
    pub fn set_admin_tls(&mut self, config: std::sync::Arc<rustls::ClientConfig>) {
        self.admin_tls = Some(config);
    }

    /// Plans `nodes` nodes (ids 1 to `nodes`) with free ports, with data under `root` (a new
    /// temporary directory, removed on drop, when `None`). `extra_args` are passed to every
    /// `ordo server`, with `{id}` in them replaced by the node's id (a certificate file per
    /// node, say). Starts nothing.
    pub fn new(
        binary: impl Into<PathBuf>,
        nodes: u64,
        root: Option<PathBuf>,
        extra_args: Vec<String>,
    ) -> Result<LocalCluster, LaunchError> {
        let binary = binary.into();
        if !binary.is_file() {
            return Err(LaunchError::MissingBinary { path: binary });
        }
        if nodes == 0 || nodes > NODES_MAX {
            return Err(LaunchError::NodeCount(nodes));
        }
        let (root, temp) = match root {
            Some(root) => {
                std::fs::create_dir_all(&root).map_err(io(format!("create {}", root.display())))?;
                (root, None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("ordo-")
                    .tempdir()
                    .map_err(io("create a temporary directory"))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut cluster = LocalCluster {
            binary,
            root,
            specs: BTreeMap::new(),
            processes: BTreeMap::new(),
            extra_args,
            admin_tls: None,
            _temp: temp,
        };
        for id in 1..=nodes {
            let planned = cluster.plan_node()?;
            cluster.insert_spec(id, planned, false);
        }
        Ok(cluster)
    }

    fn insert_spec(&mut self, id: u64, planned: PlannedNode, joins: bool) {
        let spec = NodeSpec {
            id,
            client_addr: planned.client_addr,
            peer_addr: planned.peer_addr,
            dialed_peer_addr: planned.dialed_peer_addr,
            admin_addr: planned.admin_addr,
            kafka_addr: planned.kafka_addr,
            data_dir: self.root.join(format!("node-{id}")),
            log_path: self.root.join(format!("node-{id}.log")),
            joins,
        };
        let previous = self.specs.insert(id, spec);
        assert!(previous.is_none(), "node {id} is already planned");
    }

    /// The directory holding every node's data directory and log file.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.specs.keys().copied().collect()
    }

    /// One node's addresses. Panics for a node that is not part of the cluster.
    pub fn spec(&self, id: u64) -> &NodeSpec {
        &self.specs[&id]
    }

    /// The file a node's output goes to.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}.log"))
    }

    /// Every node's etcd API address, as `host:port`.
    pub fn client_endpoints(&self) -> Vec<String> {
        self.specs
            .values()
            .map(|s| s.client_addr.to_string())
            .collect()
    }

    /// The Kafka API address of every node with one, as `host:port`: a bootstrap server
    /// list.
    pub fn kafka_endpoints(&self) -> Vec<String> {
        self.specs
            .values()
            .filter(|s| has_kafka_listener(s.id))
            .map(|s| s.kafka_addr.to_string())
            .collect()
    }

    /// Makes every node dial `addr` for node `id` from their next start on.
    pub fn set_dialed_peer_addr(&mut self, id: u64, addr: SocketAddr) -> Result<(), LaunchError> {
        let spec = self
            .specs
            .get_mut(&id)
            .ok_or(LaunchError::UnknownNode(id))?;
        spec.dialed_peer_addr = addr;
        Ok(())
    }

    /// Reserves the ports of a node about to be added.
    pub fn plan_node(&self) -> Result<PlannedNode, LaunchError> {
        let ports = free_ports(4).map_err(io("reserve loopback ports"))?;
        Ok(PlannedNode {
            client_addr: ports[0],
            peer_addr: ports[1],
            admin_addr: ports[2],
            kafka_addr: ports[3],
            dialed_peer_addr: ports[1],
        })
    }

    /// Makes a planned node member `id` of this cluster (its first start joins); starts
    /// nothing.
    pub fn add_node(&mut self, id: u64, planned: PlannedNode) {
        self.insert_spec(id, planned, true);
    }

    /// SIGKILLs node `id` and forgets it (its data directory and log stay for inspection).
    pub fn remove_node(&mut self, id: u64) {
        self.kill(id);
        self.specs.remove(&id);
    }

    /// The `ordo server` arguments of a node's next start.
    pub fn server_args(&self, id: u64) -> Vec<String> {
        let spec = &self.specs[&id];
        let peers = self
            .specs
            .values()
            .map(|s| format!("{}={}", s.id, s.dialed_peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec![
            "server".to_string(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            spec.data_dir.display().to_string(),
            "--client-addr".into(),
            spec.client_addr.to_string(),
            "--peer-addr".into(),
            spec.peer_addr.to_string(),
            "--admin-addr".into(),
            spec.admin_addr.to_string(),
            "--peers".into(),
            peers,
        ];
        if has_kafka_listener(id) {
            args.extend(["--kafka-addr".into(), spec.kafka_addr.to_string()]);
        }
        if spec.joins {
            args.push("--join".into());
        }
        let id = id.to_string();
        args.extend(self.extra_args.iter().map(|a| a.replace("{id}", &id)));
        args
    }

    /// Starts a node's process (again, after a stop, on the same data directory); a no-op
    /// when it runs.
    pub fn start(&mut self, id: u64) -> Result<(), LaunchError> {
        if self.processes.contains_key(&id) {
            return Ok(());
        }
        let spec = self.specs.get(&id).ok_or(LaunchError::UnknownNode(id))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(io(format!("open {}", spec.log_path.display())))?;
        let log_err = log.try_clone().map_err(io("duplicate a log handle"))?;
        let child = Command::new(&self.binary)
            .env(EXIT_WITH_PARENT_ENV, std::process::id().to_string())
            .args(self.server_args(id))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io(format!("start {}", self.binary.display())))?;
        self.processes.insert(
            id,
            Process {
                child,
                paused: false,
            },
        );
        if let Some(spec) = self.specs.get_mut(&id) {
            spec.joins = false;
        }
        Ok(())
    }

    /// Starts every node that does not run.
    pub fn start_all(&mut self) -> Result<(), LaunchError> {
        for id in self.ids() {
            self.start(id)?;
        }
        Ok(())
    }

    /// Whether node `id` was started by this cluster and not stopped by it since (it may
    /// have exited by itself; see [`LocalCluster::is_running`]).
    pub fn is_started(&self, id: u64) -> bool {
        self.processes.contains_key(&id)
    }

    /// Whether node `id` was started by this cluster and its process has not exited.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.processes
            .get_mut(&id)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }

    /// The process id of a started node.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.processes.get(&id).map(|p| p.child.id())
    }

    /// If node `id` was started and has exited by itself, forgets it and returns its exit
    /// status.
    pub fn reap(&mut self, id: u64) -> Option<ExitStatus> {
        let status = self.processes.get_mut(&id)?.child.try_wait().ok()??;
        self.processes.remove(&id);
        Some(status)
    }

    /// Kills a node with SIGKILL, as a crash would, and reaps it (a no-op when it does not
    /// run). SIGKILL also ends a stopped process.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut process) = self.processes.remove(&id) {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, …) to a started node's process.
    pub fn signal(&self, id: u64, signal: &str) -> Result<(), LaunchError> {
        let pid = self.pid(id).ok_or(LaunchError::UnknownNode(id))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(io(format!("run kill -{signal} {pid}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(LaunchError::Io {
                what: format!("kill -{signal} {pid}"),
                source: std::io::Error::other(format!("exited with {status}")),
            })
        }
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) -> Result<(), LaunchError> {
        self.signal(id, "STOP")?;
        if let Some(process) = self.processes.get_mut(&id) {
            process.paused = true;
        }
        Ok(())
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) -> Result<(), LaunchError> {
        self.signal(id, "CONT")?;
        if let Some(process) = self.processes.get_mut(&id) {
            process.paused = false;
        }
        Ok(())
    }

    /// Whether node `id` is paused.
    pub fn is_paused(&self, id: u64) -> bool {
        self.processes.get(&id).is_some_and(|p| p.paused)
    }

    /// Stops a node with SIGTERM and waits up to `timeout` for it to exit (then kills it).
    /// Returns its exit code, if it exited by itself.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> Option<i32> {
        let _ = self.signal(id, "CONT");
        let _ = self.signal(id, "TERM");
        let mut process = self.processes.remove(&id)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match process.child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
                Err(_) => break,
            }
        }
        let _ = process.child.kill();
        let _ = process.child.wait();
        None
    }

    /// Waits until a started node's process exits by itself; returns its exit code, or
    /// `None` when it still runs after `timeout`.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.reap(id) {
                return Some(status.code());
            }
            if !self.processes.contains_key(&id) {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        None
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// A node's `/status`, if it answers in time.
    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        self.status_as(id).await
    }

    /// A node's `/status` decoded as `T` (the server's full report, say), if it answers in
    /// time.
    pub async fn status_as<T: serde::de::DeserializeOwned>(&self, id: u64) -> Option<T> {
        let addr = self.specs.get(&id)?.admin_addr;
        let tls = self.admin_tls.as_ref();
        let response = http::get_over(addr, "/status", STATUS_TIMEOUT, STATUS_BYTES_MAX, tls)
            .await
            .ok()?;
        if response.status != 200 {
            return None;
        }
        serde_json::from_str(&response.body).ok()
    }

    /// The node that says it leads, among the started and unpaused ones (the highest term
    /// wins), if any.
    pub async fn leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for id in self.ids() {
            if !self.is_started(id) || self.is_paused(id) {
                continue;
            }
            if let Some(status) = self.status(id).await {
                if status.role == "leader" && best.is_none_or(|(term, _)| status.term > term) {
                    best = Some((status.term, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    fn timeout(&self, what: String, timeout: Duration, last: String) -> LaunchError {
        LaunchError::Timeout {
            what,
            timeout,
            last,
            root: self.root.clone(),
        }
    }

    /// Waits until some started, unpaused node says it leads; returns it.
    pub async fn wait_any_leader(&self, timeout: Duration) -> Result<u64, LaunchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                let last = "no node said it leads".to_string();
                return Err(self.timeout("no leader".into(), timeout, last));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every started node (except those in `ignore`) names the same leader,
    /// which is one of them and says it leads; returns its status.
    pub async fn wait_leader(
        &self,
        ignore: &[u64],
        timeout: Duration,
    ) -> Result<NodeStatus, LaunchError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no node answered /status");
        let asked: Vec<u64> = self
            .ids()
            .into_iter()
            .filter(|id| self.is_started(*id) && !ignore.contains(id))
            .collect();
        while Instant::now() < deadline {
            let mut statuses = Vec::new();
            for &id in &asked {
                match self.status(id).await {
                    Some(s) => statuses.push(s),
                    None => last = format!("node {id} did not answer /status"),
                }
            }
            if let Some(leader) = agreed_leader(&statuses, asked.len()) {
                return Ok(leader.clone());
            }
            if statuses.len() == asked.len() {
                last = statuses
                    .iter()
                    .map(|s| format!("node {} says {} (leader {})", s.id, s.role, s.leader))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Err(self.timeout("no agreed leader".into(), timeout, last))
    }

    /// Waits until a node's applied index reaches `index`.
    pub async fn wait_applied(
        &self,
        id: u64,
        index: u64,
        timeout: Duration,
    ) -> Result<NodeStatus, LaunchError> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(s) = self.status(id).await {
                if s.applied_index >= index {
                    return Ok(s);
                }
                last = Some(s.applied_index);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let what = format!("node {id} did not apply index {index}");
        Err(self.timeout(what, timeout, format!("last applied {last:?}")))
    }
}

/// The leader every one of `expected` statuses names, when all answered and it is one of
/// them saying it leads.
fn agreed_leader(statuses: &[NodeStatus], expected: usize) -> Option<&NodeStatus> {
    if expected == 0 || statuses.len() != expected {
        return None;
    }
    let leader = statuses[0].leader;
    if leader == 0 || statuses.iter().any(|s| s.leader != leader) {
        return None;
    }
    statuses
        .iter()
        .find(|s| s.id == leader && s.role == "leader")
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, role: &str, leader: u64) -> NodeStatus {
        NodeStatus {
            id,
            role: role.into(),
            term: 2,
            leader,
            commit_index: 5,
            applied_index: 5,
        }
    }

    #[test]
    fn a_leader_is_agreed_only_when_everyone_answered_and_names_it() {
        let all = [
            status(1, "follower", 2),
            status(2, "leader", 2),
            status(3, "follower", 2),
        ];
        assert_eq!(agreed_leader(&all, 3).map(|s| s.id), Some(2));
        assert!(agreed_leader(&all[..2], 3).is_none(), "one did not answer");
        let split = [status(1, "follower", 3), status(2, "leader", 2)];
        assert!(agreed_leader(&split, 2).is_none(), "they disagree");
        let absent = [status(1, "follower", 3), status(2, "follower", 3)];
        assert!(
            agreed_leader(&absent, 2).is_none(),
            "the leader is not among them"
        );
        assert!(agreed_leader(&[], 0).is_none());
    }

    #[test]
    fn free_ports_never_hands_out_a_port_twice() {
        let a = free_ports(4).expect("ports");
        let b = free_ports(4).expect("ports");
        let mut all: Vec<SocketAddr> = a.into_iter().chain(b).collect();
        let len = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), len);
        assert!(all.iter().all(|a| (5_000..32_000).contains(&a.port())));
    }

    #[test]
    fn a_planned_cluster_names_every_node_by_its_dialed_address_and_an_added_node_joins() {
        let binary = std::env::current_exe().expect("this test's binary stands in");
        let mut cluster = LocalCluster::new(binary, 2, None, vec!["--x".into()]).expect("plan");
        let proxy: SocketAddr = "127.0.0.1:9".parse().expect("address");
        cluster.set_dialed_peer_addr(2, proxy).expect("node 2");
        let args = cluster.server_args(1);
        let peers = &args[args.iter().position(|a| a == "--peers").expect("--peers") + 1];
        assert_eq!(peers, &format!("1={},2={proxy}", cluster.spec(1).peer_addr));
        assert!(!args.contains(&"--join".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("--x"));
        let planned = cluster.plan_node().expect("ports");
        cluster.add_node(7, planned);
        assert!(cluster.server_args(7).contains(&"--join".to_string()));
        assert!(matches!(
            cluster.set_dialed_peer_addr(8, proxy),
            Err(LaunchError::UnknownNode(8))
        ));
    }
}
