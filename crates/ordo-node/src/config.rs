//! The node's configuration: identity, addresses, timing, durability and limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::transport::{Advertised, NodeId, TransportConfig};

/// When appended log entries are fsynced, and so what an acknowledgement promises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every entry is fsynced before this node acknowledges it or counts itself towards
    /// its commit quorum: an acknowledged write survives the simultaneous crash of every
    /// node. The default.
    #[default]
    Always,
    /// Entries are acknowledged once written to the OS and fsynced at most
    /// `interval_ms` later: a simultaneous power loss of a majority can lose about that
    /// much acknowledged data.
    Interval {
        /// Milliseconds between fsyncs.
        interval_ms: u64,
    },
    /// Entries are acknowledged once written to the OS and fsynced only when a segment
    /// fills: durability comes from replication alone.
    Never,
}

/// Most apply workers a node may have.
pub const APPLY_WORKERS_MAX: usize = 1024;

/// Why a [`NodeConfig`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid node configuration: {field}: {problem}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it and what would be right.
    pub problem: String,
}

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id: unique in the cluster, not 0.
    pub id: NodeId,
    /// The cluster's id: peers of another cluster are refused at the handshake.
    pub cluster_id: u64,
    /// The directory holding one sub-directory per Raft group.
    pub data_dir: PathBuf,
    /// The address the peer listener binds (port 0 picks a free port).
    pub peer_addr: SocketAddr,
    /// Peer addresses by node id; may include this node. For a new cluster these are the
    /// initial voters (every node must be given the same set); for a joining node the
    /// existing members it dials.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Start as a node that waits to be added by a membership change, instead of
    /// bootstrapping a new cluster from `peers`.
    pub join: bool,
    /// What this node tells every peer it dials about itself (where its faces listen).
    pub advertised: Advertised,
    /// Mutual TLS on the peer port and on every connection this node dials (see
    /// [`crate::tls`]); `None` for plain TCP. Every node of a cluster must agree.
    pub peer_tls: Option<crate::tls::TlsFiles>,
    /// Milliseconds per Raft tick.
    pub tick_interval_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomized up to twice this).
    pub election_timeout_ticks: u64,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_interval_ticks: u64,
    /// When appended entries are fsynced.
    pub fsync: FsyncPolicy,
    /// Serve linearizable reads from a leader lease instead of a heartbeat round: faster,
    /// but correct only while clocks advance at about the same rate on every node.
    pub lease_reads: bool,
    /// Take a snapshot once this many entries were applied since the last one (and, once
    /// snapshots are larger than the log since them, only when that log has grown to the
    /// size of the last snapshot: snapshots then write no more than the log does).
    pub snapshot_entries: u64,
    /// Take a snapshot once this many entry bytes were applied since the last one (with
    /// the same proviso as `snapshot_entries`).
    pub snapshot_bytes: u64,
    /// Entries kept in the log behind a snapshot, so a slightly lagging follower catches
    /// up from the log rather than by snapshot.
    pub snapshot_tail_entries: u64,
    /// Bytes of snapshot data in one chunk on the wire.
    pub snapshot_chunk_bytes: usize,
    /// Largest snapshot this node sends or accepts.
    pub snapshot_bytes_max: u64,
    /// Milliseconds to wait for a follower to acknowledge a snapshot chunk.
    pub snapshot_chunk_timeout_ms: u64,
    /// Largest proposal, in bytes of application data.
    pub proposal_bytes_max: usize,
    /// Proposals waiting for their outcome on this node, per group.
    pub pending_proposals_max: usize,
    /// Reads waiting for a read index, per group.
    pub pending_reads_max: usize,
    /// Milliseconds a proposal or read may wait before failing with a timeout.
    pub request_timeout_ms: u64,
    /// Batches of committed entries queued for the state machine, per group. When full,
    /// newly committed entries wait in the log until the state machine catches up;
    /// heartbeats, replication and elections go on. Memory for queued entries is bounded
    /// by `apply_queue_batches_max * apply_batch_bytes_max`.
    pub apply_queue_batches_max: usize,
    /// Threads that apply committed entries, for all groups of the node. A group's
    /// batches run in order on one worker at a time, so a slow state machine occupies at
    /// most one worker; different groups run in parallel. At least 1, at most
    /// [`APPLY_WORKERS_MAX`]; the number of CPUs by default.
    pub apply_workers: usize,
    /// Bytes of committed entries in one batch for the state machine (at least one entry).
    pub apply_batch_bytes_max: u64,
    /// Inputs (peer messages, requests) queued for a group's driver; peer messages beyond
    /// it are dropped and counted (Raft retransmits), requests wait.
    pub group_queue_max: usize,
    /// Size at which a WAL segment is closed and the next started.
    pub segment_bytes_max: u64,
    /// Payload bytes of each group's newest log entries kept in memory, so that applying
    /// them and sending them to followers does not read back what was just written.
    pub log_cache_bytes_max: u64,
    /// Bytes of entries in one append message.
    pub append_bytes_max: u64,
    /// Append messages in flight to one follower.
    pub inflight_appends_max: usize,
    /// Bytes of proposed and not yet applied entries on a leader.
    pub uncommitted_bytes_max: u64,
}

impl NodeConfig {
    /// Defaults for a local three-node cluster: 100 ms ticks, elections after 1–2 s,
    /// heartbeats every 100 ms, `fsync = always`.
    pub fn new(
        id: NodeId,
        data_dir: impl Into<PathBuf>,
        peer_addr: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> NodeConfig {
        NodeConfig {
            id,
            cluster_id: 1,
            data_dir: data_dir.into(),
            peer_addr,
            peers,
            join: false,
            advertised: Advertised::default(),
            peer_tls: None,
            tick_interval_ms: 100,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            fsync: FsyncPolicy::Always,
            lease_reads: false,
            snapshot_entries: 100_000,
            snapshot_bytes: 64 << 20,
            snapshot_tail_entries: 10_000,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_bytes_max: 1 << 30,
            snapshot_chunk_timeout_ms: 10_000,
            proposal_bytes_max: 1 << 20,
            pending_proposals_max: 10_000,
            pending_reads_max: 4_096,
            request_timeout_ms: 10_000,
            apply_queue_batches_max: 16,
            apply_batch_bytes_max: 4 << 20,
            apply_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            group_queue_max: 4_096,
            segment_bytes_max: 64 << 20,
            log_cache_bytes_max: crate::storage::LOG_CACHE_BYTES_DEFAULT,
            append_bytes_max: 1 << 20,
            inflight_appends_max: 256,
            uncommitted_bytes_max: 64 << 20,
        }
    }

    /// Checks every field and how they fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, problem: &str| {
            Err(ConfigError {
                field,
                problem: problem.to_string(),
            })
        };
        if self.id == 0 {
            return bad("id", "must not be 0 (0 means \"no node\")");
        }
        if self.peers.contains_key(&0) {
            return bad("peers", "node id 0 is reserved");
        }
        if !self.join && !self.peers.contains_key(&self.id) {
            return bad(
                "peers",
                "a node that bootstraps a cluster must list itself among the initial peers",
            );
        }
        if self.join && self.peers.keys().all(|&p| p == self.id) {
            return bad("peers", "a joining node needs the address of a member");
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must be set");
        }
        if self.tick_interval_ms == 0 || self.tick_interval_ms > 60_000 {
            return bad("tick_interval_ms", "must be in 1..=60000");
        }
        if self.heartbeat_interval_ticks == 0 {
            return bad("heartbeat_interval_ticks", "must be at least 1");
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return bad(
                "election_timeout_ticks",
                "must exceed heartbeat_interval_ticks (several times over is usual)",
            );
        }
        if let FsyncPolicy::Interval { interval_ms } = self.fsync {
            if interval_ms == 0 || interval_ms > 3_600_000 {
                return bad("fsync", "interval_ms must be in 1..=3600000");
            }
        }
        if self.snapshot_entries == 0 || self.snapshot_bytes == 0 {
            return bad(
                "snapshot_entries/snapshot_bytes",
                "must be at least 1 entry / 1 byte",
            );
        }
        // A chunk travels with the snapshot's configuration and member addresses in one
        // peer frame of 4 MiB; half of it leaves ample room for those.
        if self.snapshot_chunk_bytes < 1024 || self.snapshot_chunk_bytes > (2 << 20) {
            return bad(
                "snapshot_chunk_bytes",
                "must be between 1 KiB and 2 MiB (half the 4 MiB peer frame)",
            );
        }
        if self.snapshot_bytes_max == 0 || self.snapshot_chunk_timeout_ms == 0 {
            return bad(
                "snapshot_bytes_max/snapshot_chunk_timeout_ms",
                "must be positive",
            );
        }
        if self.proposal_bytes_max == 0 || self.proposal_bytes_max as u64 > self.append_bytes_max {
            return bad(
                "proposal_bytes_max",
                "must be positive and at most append_bytes_max",
            );
        }
        if self.pending_proposals_max == 0
            || self.pending_reads_max == 0
            || self.apply_queue_batches_max == 0
            || self.group_queue_max == 0
            || self.inflight_appends_max == 0
        {
            return bad("limits", "queue and pending limits must be at least 1");
        }
        if self.apply_batch_bytes_max == 0 {
            return bad("apply_batch_bytes_max", "must be positive");
        }
        if self.apply_workers == 0 || self.apply_workers > APPLY_WORKERS_MAX {
            let problem = format!(
                "must be between 1 and {APPLY_WORKERS_MAX} (the threads that apply committed \
                 entries for all groups)"
            );
            return bad("apply_workers", &problem);
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be positive");
        }
        if self.segment_bytes_max < 4096 {
            return bad("segment_bytes_max", "must be at least 4 KiB");
        }
        if self.uncommitted_bytes_max < self.proposal_bytes_max as u64 {
            return bad(
                "uncommitted_bytes_max",
                "must be at least proposal_bytes_max",
            );
        }
        Ok(())
    }

    /// The transport settings that follow from this configuration.
    pub fn transport_config(&self) -> TransportConfig {
        // Idle links carry a keepalive as often as a leader heartbeats, and a peer silent for
        // an election timeout is reported unreachable: what a follower of a ticking group
        // would notice by then, a quiesced group learns from the transport.
        let keepalive_ms = self.heartbeat_interval_ticks * self.tick_interval_ms;
        let election_ms = self.election_timeout_ticks * self.tick_interval_ms;
        TransportConfig {
            advertised: self.advertised.clone(),
            keepalive_ms,
            silence_ms: election_ms.max(2 * keepalive_ms),
            tls: self.peer_tls.clone(),
            ..TransportConfig::new(self.cluster_id, self.id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> NodeConfig {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        NodeConfig::new(1, "/tmp/x", addr, [(1, addr), (2, addr), (3, addr)].into())
    }

    #[test]
    fn defaults_validate() {
        assert_eq!(three().validate(), Ok(()));
    }

    #[test]
    fn validate_names_the_offending_field() {
        let mut c = three();
        c.election_timeout_ticks = 1;
        assert_eq!(c.validate().unwrap_err().field, "election_timeout_ticks");
        let mut c = three();
        c.id = 0;
        assert_eq!(c.validate().unwrap_err().field, "id");
        let mut c = three();
        c.peers.remove(&1);
        assert_eq!(c.validate().unwrap_err().field, "peers");
        let mut c = three();
        c.fsync = FsyncPolicy::Interval { interval_ms: 0 };
        assert_eq!(c.validate().unwrap_err().field, "fsync");
        let mut c = three();
        c.snapshot_chunk_bytes = 16 << 20;
        assert_eq!(c.validate().unwrap_err().field, "snapshot_chunk_bytes");
        let mut c = three();
        c.apply_workers = 0;
        let error = c.validate().unwrap_err();
        assert_eq!(error.field, "apply_workers");
        assert!(error
            .to_string()
            .contains("apply_workers: must be between 1"));
    }
}
