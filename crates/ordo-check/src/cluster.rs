//! A cluster of `ordo server` processes on 127.0.0.1 started by the checker, every peer link
//! running through a [`LinkProxy`].
//!
//! The processes are `ordo_launch`'s [`LocalCluster`], which this type dereferences to
//! (start, SIGKILL, SIGSTOP/SIGCONT, `/status`, leaders). Every node `b` has one proxy in
//! front of its peer listener, which tells senders apart by the transport's handshake; every
//! node's `--peers` gives that proxy's address for `b` (the launcher's dialed peer address),
//! itself included, so a partition is made in the network between unmodified nodes. A node
//! planned with [`Cluster::plan_node`] gets its proxy first (its address is the peer URL a
//! membership change announces) and joins with `--join` once the cluster added it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};

use ordo_launch::{LaunchError, LocalCluster};

use crate::proxy::{LinkMode, LinkProxy};

/// Why the cluster could not be managed.
pub type ClusterError = LaunchError;

fn proxy_error(source: std::io::Error) -> ClusterError {
    LaunchError::Io {
        what: "start a link proxy".into(),
        source,
    }
}

/// A node planned but not yet part of the cluster: its ports and its proxy, waiting for
/// the id a membership change gives it.
#[derive(Debug)]
pub struct PlannedNode {
    ports: ordo_launch::PlannedNode,
    proxy: LinkProxy,
}

impl PlannedNode {
    /// The address every other node will reach it at (its proxy): the peer URL to announce.
    pub fn peer_url(&self) -> String {
        format!("http://{}", self.proxy.listen_addr())
    }

    /// Its etcd API address.
    pub fn client_addr(&self) -> SocketAddr {
        self.ports.client_addr
    }
}

/// The processes, proxies and directories of a checker-started cluster.
pub struct Cluster {
    nodes: LocalCluster,
    /// The proxy in front of each node's peer listener.
    links: BTreeMap<u64, LinkProxy>,
}

impl Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.nodes
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.nodes
    }
}

impl Cluster {
    /// Plans `nodes` nodes and starts a proxy in front of each; starts no process. Data goes
    /// under `root`, or a temporary directory removed on drop.
    pub async fn new(
        binary: PathBuf,
        nodes: u64,
        root: Option<PathBuf>,
        extra_args: Vec<String>,
    ) -> Result<Cluster, ClusterError> {
        let mut nodes = LocalCluster::new(binary, nodes, root, extra_args)?;
        let mut links = BTreeMap::new();
        for id in nodes.ids() {
            let proxy = LinkProxy::start(nodes.spec(id).peer_addr)
                .await
                .map_err(proxy_error)?;
            nodes.set_dialed_peer_addr(id, proxy.listen_addr())?;
            links.insert(id, proxy);
        }
        Ok(Cluster { nodes, links })
    }

    /// Reserves ports and starts the proxy of a node that is about to be added.
    pub async fn plan_node(&self) -> Result<PlannedNode, ClusterError> {
        let mut ports = self.nodes.plan_node()?;
        let proxy = LinkProxy::start(ports.peer_addr)
            .await
            .map_err(proxy_error)?;
        ports.dialed_peer_addr = proxy.listen_addr();
        Ok(PlannedNode { ports, proxy })
    }

    /// Makes a planned node member `id` of this cluster (its first start joins); starts
    /// nothing.
    pub fn add_node(&mut self, id: u64, planned: PlannedNode) {
        self.nodes.add_node(id, planned.ports);
        self.links.insert(id, planned.proxy);
    }

    /// SIGKILLs node `id` and forgets it (its data directory and log stay for inspection).
    pub fn remove_node(&mut self, id: u64) {
        self.nodes.remove_node(id);
        self.links.remove(&id);
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
}
