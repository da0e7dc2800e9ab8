//! A cluster of `ordo server` processes on 127.0.0.1 started by the checker, every peer link
//! running through a [`LinkProxy`].
//!
//! Every node `b` has one proxy in front of its peer listener, which tells senders apart by
//! the transport's handshake; node `a`'s `--peers` list gives that proxy's address for every
//! node, itself included (a node advertises its own entry to peers in the snapshots it
//! sends, so they too must learn the proxy, never the real listener). Nodes come and go: a node
//! planned with [`Cluster::plan_node`] gets its proxy first (its address is the peer URL a
//! membership change announces), joins with `--join` once the cluster added it, and a
//! removed node leaves the set with [`Cluster::remove_node`]. The processes are children
//! of the checker: SIGKILL with [`Cluster::kill`], SIGSTOP/SIGCONT with [`Cluster::pause`] and
//! [`Cluster::resume`], and every one is killed when the [`Cluster`] is dropped, on every path
//! out.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::http;
use crate::ports::PortAllocator;
use crate::proxy::{LinkMode, LinkProxy};

/// Most nodes a checker-started cluster may have.
pub const NODES_MAX: u64 = 9;

/// Largest `/status` answer read.
const STATUS_BYTES_MAX: usize = 64 * 1024;

/// Longest one `/status` request may take.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the cluster could not be managed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The `ordo` binary is not where it was looked for.
    #[error("the ordo binary {path} does not exist; build it with `cargo build -p ordo` or pass --ordo-bin")]
    MissingBinary {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A node count outside 1..=NODES_MAX.
    #[error("--nodes must be between 1 and {NODES_MAX}, not {0}")]
    NodeCount(u64),
    /// An I/O failure (ports, directories, processes).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No leader emerged in time.
    #[error("no leader among the running nodes within {0:?}")]
    NoLeader(Duration),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

/// Set on every server a checker or demo starts, to the starter's process id: the server
/// asks the kernel to kill it when that process dies (see `ordo server`), so a starter
/// killed by SIGKILL leaves no servers behind.
pub const EXIT_WITH_PARENT_ENV: &str = "ORDO_EXIT_WITH_PARENT";

/// One node's addresses and directory.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node id (1-based).
    pub id: u64,
    /// etcd API address.
    pub client_addr: SocketAddr,
    /// Real peer address (only proxies dial it).
    pub peer_addr: SocketAddr,
    /// Admin HTTP address (`/status`).
    pub admin_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
    /// Whether its next start is its first one as a member added at run time, which passes
    /// `--join` (later starts do not, as an operator restarts a joined node).
    pub joins: bool,
}

/// A node planned but not yet part of the cluster: its ports and its proxy, waiting for
/// the id a membership change gives it.
#[derive(Debug)]
pub struct PlannedNode {
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    admin_addr: SocketAddr,
    proxy: LinkProxy,
}

impl PlannedNode {
    /// The address every other node will reach it at (its proxy): the peer URL to announce.
    pub fn peer_url(&self) -> String {
        format!("http://{}", self.proxy.listen_addr())
    }

    /// Its etcd API address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }
}

/// What `/status` reports (the fields the nemesis uses).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node.
    pub id: u64,
    /// `leader`, `follower`, ...
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

/// The processes, proxies and directories of a checker-started cluster.
pub struct Cluster {
    binary: PathBuf,
    specs: BTreeMap<u64, NodeSpec>,
    children: BTreeMap<u64, Child>,
    paused: BTreeMap<u64, bool>,
    /// The proxy in front of each node's peer listener.
    links: BTreeMap<u64, LinkProxy>,
    extra_args: Vec<String>,
    root: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// Node ports: a node restarted mid-run rebinds its old ports (see [`PortAllocator`]).
static NODE_PORTS: PortAllocator = PortAllocator::new(5_000..12_000);

impl Cluster {
    /// Plans `nodes` nodes and starts a proxy for every ordered pair; starts no process.
    /// Data goes under `root`, or a temporary directory removed on drop.
    pub async fn new(
        binary: PathBuf,
        nodes: u64,
        root: Option<PathBuf>,
        extra_args: Vec<String>,
    ) -> Result<Cluster, ClusterError> {
        if !binary.is_file() {
            return Err(ClusterError::MissingBinary { path: binary });
        }
        if nodes == 0 || nodes > NODES_MAX {
            return Err(ClusterError::NodeCount(nodes));
        }
        let (root, temp) = match root {
            Some(root) => {
                std::fs::create_dir_all(&root).map_err(io(format!("create {}", root.display())))?;
                (root, None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("ordo-check-")
                    .tempdir()
                    .map_err(io("create a temporary directory"))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let ports = NODE_PORTS
            .free_ports(3 * nodes as usize)
            .map_err(io("reserve loopback ports"))?;
        let mut specs = BTreeMap::new();
        for id in 1..=nodes {
            let i = 3 * (id - 1) as usize;
            specs.insert(
                id,
                NodeSpec {
                    id,
                    client_addr: ports[i],
                    peer_addr: ports[i + 1],
                    admin_addr: ports[i + 2],
                    data_dir: root.join(format!("node-{id}")),
                    log_path: root.join(format!("node-{id}.log")),
                    joins: false,
                },
            );
        }
        let mut links = BTreeMap::new();
        for (&id, spec) in &specs {
            let proxy = LinkProxy::start(spec.peer_addr)
                .await
                .map_err(io("start a link proxy"))?;
            links.insert(id, proxy);
        }
        Ok(Cluster {
            binary,
            paused: specs.keys().map(|&id| (id, false)).collect(),
            specs,
            children: BTreeMap::new(),
            links,
            extra_args,
            root,
            _temp: temp,
        })
    }

    /// The node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.specs.keys().copied().collect()
    }

    /// One node's addresses.
    pub fn spec(&self, id: u64) -> &NodeSpec {
        &self.specs[&id]
    }

    /// The directory holding the nodes' data directories and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reserves ports and starts the proxy of a node that is about to be added.
    pub async fn plan_node(&self) -> Result<PlannedNode, ClusterError> {
        let ports = NODE_PORTS
            .free_ports(3)
            .map_err(io("reserve loopback ports"))?;
        let proxy = LinkProxy::start(ports[1])
            .await
            .map_err(io("start a link proxy"))?;
        Ok(PlannedNode {
            client_addr: ports[0],
            peer_addr: ports[1],
            admin_addr: ports[2],
            proxy,
        })
    }

    /// Makes a planned node member `id` of this cluster (its first start joins); starts
    /// nothing.
    pub fn add_node(&mut self, id: u64, planned: PlannedNode) {
        assert!(
            !self.specs.contains_key(&id),
            "member id {id} is already a node of this cluster"
        );
        let spec = NodeSpec {
            id,
            client_addr: planned.client_addr,
            peer_addr: planned.peer_addr,
            admin_addr: planned.admin_addr,
            data_dir: self.root.join(format!("node-{id}")),
            log_path: self.root.join(format!("node-{id}.log")),
            joins: true,
        };
        self.specs.insert(id, spec);
        self.links.insert(id, planned.proxy);
        self.paused.insert(id, false);
    }

    /// SIGKILLs node `id` and forgets it (its data directory and log stay for inspection).
    pub fn remove_node(&mut self, id: u64) {
        self.kill(id);
        self.specs.remove(&id);
        self.links.remove(&id);
        self.paused.remove(&id);
    }

    /// Every node's etcd API address, as `host:port`.
    pub fn client_endpoints(&self) -> Vec<String> {
        self.specs
            .values()
            .map(|s| s.client_addr.to_string())
            .collect()
    }

    /// Starts node `id` (a no-op when it runs).
    pub fn start(&mut self, id: u64) -> Result<(), ClusterError> {
        if self.children.contains_key(&id) {
            return Ok(());
        }
        let spec = &self.specs[&id];
        // Its own entry too is its proxy: a node advertises its own entry (in snapshots it
        // sends), and a peer that learned the real address would dial around the proxy.
        let peers: Vec<String> = self
            .specs
            .values()
            .map(|other| format!("{}={}", other.id, self.links[&other.id].listen_addr()))
            .collect();
        let join = spec.joins;
        let client_addrs: Vec<String> = self
            .specs
            .values()
            .map(|other| format!("{}={}", other.id, other.client_addr))
            .collect();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(io(format!("open {}", spec.log_path.display())))?;
        let log_err = log.try_clone().map_err(io("duplicate a log handle"))?;
        let child = Command::new(&self.binary)
            .env(EXIT_WITH_PARENT_ENV, std::process::id().to_string())
            .arg("server")
            .arg("--id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--client-addr")
            .arg(spec.client_addr.to_string())
            .arg("--peer-addr")
            .arg(spec.peer_addr.to_string())
            .arg("--admin-addr")
            .arg(spec.admin_addr.to_string())
            .arg("--peers")
            .arg(peers.join(","))
            .arg("--peer-client-addrs")
            .arg(client_addrs.join(","))
            .args(join.then_some("--join"))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io(format!("start {}", self.binary.display())))?;
        self.children.insert(id, child);
        self.paused.insert(id, false);
        if let Some(spec) = self.specs.get_mut(&id) {
            spec.joins = false;
        }
        Ok(())
    }

    /// Whether node `id`'s process was started by this cluster and has not exited.
    pub fn is_running(&mut self, id: u64) -> bool {
        match self.children.get_mut(&id) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// If node `id` was started and has exited by itself, forgets it and returns its exit
    /// status.
    pub fn reap(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let status = self.children.get_mut(&id)?.try_wait().ok()??;
        self.children.remove(&id);
        Some(status)
    }

    /// SIGKILLs node `id` and waits for it (a no-op when it does not run).
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children.remove(&id) {
            // SIGKILL also ends a stopped process.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused.insert(id, false);
    }

    fn signal(&self, id: u64, signal: &str) -> Result<(), ClusterError> {
        let Some(child) = self.children.get(&id) else {
            return Ok(());
        };
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .map_err(io(format!("run kill {signal}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(ClusterError::Io {
                what: format!("kill {signal} {}", child.id()),
                source: std::io::Error::other(format!("exited with {status}")),
            })
        }
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: u64) -> Result<(), ClusterError> {
        self.signal(id, "-STOP")?;
        self.paused.insert(id, true);
        Ok(())
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: u64) -> Result<(), ClusterError> {
        self.signal(id, "-CONT")?;
        self.paused.insert(id, false);
        Ok(())
    }

    /// Whether node `id` is paused.
    pub fn is_paused(&self, id: u64) -> bool {
        self.paused.get(&id).copied().unwrap_or(false)
    }

    /// Sets the mode of the link carrying `from`'s messages to `to`.
    pub fn set_link(&self, from: u64, to: u64, mode: LinkMode) {
        if let Some(link) = self.links.get(&to) {
            link.set_sender_mode(from, mode);
        }
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.set_link(x, y, LinkMode::Drop);
                self.set_link(y, x, LinkMode::Drop);
            }
        }
    }

    /// Restores every link to pass-through and closes their connections, so nodes redial
    /// without bytes a blackhole swallowed mid-frame.
    pub fn heal(&self) {
        for link in self.links.values() {
            if !link.is_passing_everything() {
                link.set_mode(LinkMode::Pass);
                link.cut();
            }
        }
    }

    /// One node's `/status`, if it answers in time.
    pub async fn status(&self, id: u64) -> Option<NodeStatus> {
        let addr = self.specs.get(&id)?.admin_addr;
        let response = http::get_bounded(addr, "/status", STATUS_TIMEOUT, STATUS_BYTES_MAX)
            .await
            .ok()?;
        if response.status != 200 {
            return None;
        }
        serde_json::from_str(&response.body).ok()
    }

    /// The leader as reported by a running, unpaused node that says it leads (highest term
    /// wins), if any.
    pub async fn leader(&mut self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for id in self.ids() {
            if !self.is_running(id) || self.is_paused(id) {
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

    /// Waits until some node leads, polling.
    pub async fn wait_leader(&mut self, timeout: Duration) -> Result<u64, ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::NoLeader(timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.specs[&id].log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILLs every node.
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Every WAL segment file (`<20 digits>.log`) under `dir`, sorted by path.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    // Bounded walk: a data directory holds a handful of levels and files.
    let mut visited = 0usize;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > 10_000 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                let stem = name.strip_suffix(".log").unwrap_or("");
                if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                    found.push(path);
                }
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_files_finds_only_wal_segments_at_any_depth() {
        let dir = tempfile::tempdir().expect("temp dir");
        let group = dir.path().join("group-1");
        std::fs::create_dir_all(&group).expect("mkdir");
        for name in ["00000000000000000001.log", "00000000000000000900.log"] {
            std::fs::write(group.join(name), b"x").expect("write");
        }
        std::fs::write(dir.path().join("node-1.log"), b"server output").expect("write");
        std::fs::write(group.join("hardstate"), b"x").expect("write");
        let found = segment_files(dir.path());
        assert_eq!(
            found,
            vec![
                group.join("00000000000000000001.log"),
                group.join("00000000000000000900.log")
            ]
        );
    }

    #[test]
    fn free_ports_never_hands_out_a_port_twice() {
        let a = NODE_PORTS.free_ports(4).expect("ports");
        let b = NODE_PORTS.free_ports(4).expect("ports");
        let mut all: Vec<SocketAddr> = a.into_iter().chain(b).collect();
        let len = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), len);
        assert!(all.iter().all(|a| (5_000..12_000).contains(&a.port())));
    }
}
