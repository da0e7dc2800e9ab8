//! A local cluster of `ordo server` processes on loopback, for the demo and the tests.
//!
//! Every process is a child of this one and is killed when the [`LocalCluster`] is dropped,
//! on every path out (errors and panics included), so nothing is left running.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ordo_check::ports::PortAllocator;
use ordo_kv::proto::etcdserverpb::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

use ordo_server::admin::StatusReport;

/// How often conditions are polled while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The addresses and directory of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The node id.
    pub id: u64,
    /// Its etcd API address.
    pub client_addr: SocketAddr,
    /// Its peer address.
    pub peer_addr: SocketAddr,
    /// Its admin address.
    pub admin_addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
}

/// `ordo server` processes started from one binary.
pub struct LocalCluster {
    binary: PathBuf,
    root: PathBuf,
    specs: BTreeMap<u64, NodeSpec>,
    children: BTreeMap<u64, Child>,
    extra_args: Vec<String>,
    _temp: Option<tempfile::TempDir>,
}

/// Ports for local clusters, below the kernel's ephemeral range (see [`PortAllocator`]).
static PORTS: PortAllocator = PortAllocator::new(12_000..32_000);

/// Finds `n` loopback ports that are free now and were never handed out before by this
/// process.
pub fn free_ports(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    PORTS.free_ports(n)
}

impl LocalCluster {
    /// Plans `nodes` nodes with free ports, with data under `root` (a new temporary
    /// directory when `None`). `extra_args` are passed to every `ordo server`. Starts
    /// nothing.
    pub fn new(
        binary: impl Into<PathBuf>,
        nodes: u64,
        root: Option<PathBuf>,
        extra_args: &[&str],
    ) -> std::io::Result<LocalCluster> {
        let (root, temp) = match root {
            Some(root) => {
                std::fs::create_dir_all(&root)?;
                (root, None)
            }
            None => {
                let temp = tempfile::Builder::new().prefix("ordo-").tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let ports = free_ports(3 * nodes as usize)?;
        let specs = (1..=nodes)
            .map(|id| {
                let i = 3 * (id - 1) as usize;
                let spec = NodeSpec {
                    id,
                    client_addr: ports[i],
                    peer_addr: ports[i + 1],
                    admin_addr: ports[i + 2],
                    data_dir: root.join(format!("node-{id}")),
                };
                (id, spec)
            })
            .collect();
        Ok(LocalCluster {
            binary: binary.into(),
            root,
            specs,
            children: BTreeMap::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _temp: temp,
        })
    }

    /// The directory holding every node's data directory and log file.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.specs.keys().copied().collect()
    }

    /// One node's addresses.
    pub fn spec(&self, id: u64) -> &NodeSpec {
        &self.specs[&id]
    }

    /// The file a node's output goes to.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.root.join(format!("node-{id}.log"))
    }

    /// Whether a node's process was started and not stopped by this cluster.
    pub fn is_running(&self, id: u64) -> bool {
        self.children.contains_key(&id)
    }

    /// The process id of a running node.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children.get(&id).map(Child::id)
    }

    /// The `ordo server` arguments of a node.
    pub fn server_args(&self, id: u64) -> Vec<String> {
        let spec = &self.specs[&id];
        let list = |f: fn(&NodeSpec) -> SocketAddr| {
            self.specs
                .values()
                .map(|s| format!("{}={}", s.id, f(s)))
                .collect::<Vec<_>>()
                .join(",")
        };
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
            list(|s| s.peer_addr),
            "--peer-client-addrs".into(),
            list(|s| s.client_addr),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts a node's process (again, after a stop, on the same data directory).
    pub fn start(&mut self, id: u64) -> std::io::Result<()> {
        assert!(!self.is_running(id), "node {id} is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))?;
        let child = Command::new(&self.binary)
            .env(
                ordo_check::cluster::EXIT_WITH_PARENT_ENV,
                std::process::id().to_string(),
            )
            .args(self.server_args(id))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.children.insert(id, child);
        Ok(())
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> std::io::Result<()> {
        for id in self.ids() {
            if !self.is_running(id) {
                self.start(id)?;
            }
        }
        Ok(())
    }

    /// Kills a node with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, …) to a running node's process.
    pub fn signal(&self, id: u64, signal: &str) -> std::io::Result<()> {
        let pid = self
            .pid(id)
            .ok_or_else(|| std::io::Error::other(format!("node {id} is not running")))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill -{signal} {pid} failed"
            )))
        }
    }

    /// Stops a node with SIGTERM and waits up to `timeout` for it to exit (then kills it).
    /// Returns its exit code, if it exited by itself.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> Option<i32> {
        let _ = self.signal(id, "CONT");
        let _ = self.signal(id, "TERM");
        let mut child = self.children.remove(&id)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) => std::thread::sleep(POLL_INTERVAL),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Waits until a started node's process exits by itself; returns its exit code.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let child = self.children.get_mut(&id)?;
            if let Ok(Some(status)) = child.try_wait() {
                self.children.remove(&id);
                return Some(status.code());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        None
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    /// A node's `/status`, if it answers within a second.
    pub async fn status(&self, id: u64) -> Option<StatusReport> {
        let addr = self.specs.get(&id)?.admin_addr;
        let response = crate::http::get(addr, "/status", Duration::from_secs(1))
            .await
            .ok()?;
        if response.status != 200 {
            return None;
        }
        serde_json::from_str(&response.body).ok()
    }

    /// Waits until every running node (except those in `ignore`) names the same leader,
    /// which is one of them and says it leads; returns its status.
    pub async fn wait_leader(
        &self,
        ignore: &[u64],
        timeout: Duration,
    ) -> Result<StatusReport, String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no node answered /status");
        while Instant::now() < deadline {
            let mut statuses = Vec::new();
            for id in self.ids() {
                if self.is_running(id) && !ignore.contains(&id) {
                    match self.status(id).await {
                        Some(s) => statuses.push(s),
                        None => last = format!("node {id} did not answer /status"),
                    }
                }
            }
            let expected = self
                .ids()
                .iter()
                .filter(|id| self.is_running(**id) && !ignore.contains(id))
                .count();
            if statuses.len() == expected && expected > 0 {
                let leader = statuses[0].leader;
                let agreed = leader != 0 && statuses.iter().all(|s| s.leader == leader);
                match statuses
                    .iter()
                    .find(|s| s.id == leader && s.role == "leader")
                {
                    Some(s) if agreed => return Ok(s.clone()),
                    _ => {
                        last = statuses
                            .iter()
                            .map(|s| format!("node {} says {} (leader {})", s.id, s.role, s.leader))
                            .collect::<Vec<_>>()
                            .join(", ");
                    }
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Err(format!(
            "no agreed leader within {timeout:?}: {last}; see the nodes' logs in {}",
            self.root.display()
        ))
    }

    /// Waits until a node's applied index reaches `index`.
    pub async fn wait_applied(
        &self,
        id: u64,
        index: u64,
        timeout: Duration,
    ) -> Result<StatusReport, String> {
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
        Err(format!(
            "node {id} did not apply index {index} within {timeout:?} (last seen {last:?})"
        ))
    }

    /// A gRPC channel to a node's client address (connected lazily).
    pub fn channel(&self, id: u64) -> Channel {
        let addr = self.specs[&id].client_addr;
        // The address is a socket address this cluster formatted, so the URI is valid.
        Endpoint::from_shared(format!("http://{addr}"))
            .expect("a socket address forms a valid URI")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy()
    }

    /// A KV client of a node.
    pub fn kv(&self, id: u64) -> KvClient<Channel> {
        KvClient::new(self.channel(id))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
