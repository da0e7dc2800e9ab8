//! The partitions a node holds a replica of, kept running as the metadata group says.
//!
//! Whenever the metadata group applies a change (and once a second, to retry what failed),
//! the node compares the partitions whose replicas include it with the partition groups it
//! runs: it starts each missing one, its voters the partition's replicas, over a
//! [`PartitionMachine`], and removes each whose topic is gone (its log with it, as Kafka
//! deletes a deleted topic's partitions). A node restarted runs again the groups of its
//! partitions, on the state they have on its disk.
//!
//! Partition group ids are at least [`PARTITION_GROUP_MIN`], above the server's own groups,
//! so a group listed on disk in that range and in no topic is a deleted topic's.
//!
//! Leaders: once a second, each partition's leader records itself in the metadata group
//! under `kafka/leader/GROUP` (the group id in 16 hex digits): its term, its id and the
//! in-sync replicas as it sees them (the leader and every follower that acknowledged the
//! leader's log within [`ISR_LAG_ENTRIES_MAX`] entries and was heard from recently),
//! written only when they changed, with a compare-and-set so an older record never
//! overwrites a newer one. Metadata on any node reports that record, so every node answers
//! alike, whether or not it holds a replica; a node that does hold one reports the leader
//! its group knows as soon as the group knows it. A leader that is not its partition's
//! preferred replica (the first) hands the leadership to it once it is in sync.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ordo_node::{Group, GroupId, GroupOptions, InitialMembers, Node, NodeId, StateRole};
use ordo_streams::partition::PartitionMachine;
use ordo_streams::{PartitionState, TopicRecord};

use crate::meta::{MetaCommand, MetaMachine, MetaView};
use crate::streams::TOPIC_PREFIX;

/// Where partition leaders are recorded in the metadata group.
pub const LEADER_PREFIX: &[u8] = b"kafka/leader/";

/// The key of partition group `group`'s leader record.
pub fn leader_key(group: u64) -> Bytes {
    Bytes::from([LEADER_PREFIX, format!("{group:016x}").as_bytes()].concat())
}

const LEADER_RECORD_VERSION: u8 = 1;

/// A partition's leader as it recorded itself: version (1), term (u64), leader (u64), the
/// count of in-sync replicas (u8) and their ids (u64 each), big-endian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRecord {
    /// The leader's term.
    pub term: u64,
    /// The leader.
    pub leader: NodeId,
    /// The replicas in sync with it.
    pub in_sync: Vec<NodeId>,
}

impl LeaderRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(LEADER_RECORD_VERSION);
        buf.put_u64(self.term);
        buf.put_u64(self.leader);
        buf.put_u8(self.in_sync.len() as u8);
        for &r in &self.in_sync {
            buf.put_u64(r);
        }
        buf.freeze()
    }

    /// Decodes what [`LeaderRecord::encode`] wrote; `None` for anything else.
    pub fn decode(mut data: &[u8]) -> Option<LeaderRecord> {
        if data.len() < 18 || data.get_u8() != LEADER_RECORD_VERSION {
            return None;
        }
        let term = data.get_u64();
        let leader = data.get_u64();
        let count = data.get_u8() as usize;
        if data.len() != count * 8 {
            return None;
        }
        let in_sync = (0..count).map(|_| data.get_u64()).collect();
        Some(LeaderRecord {
            term,
            leader,
            in_sync,
        })
    }
}

/// The partition groups of every topic `view` holds, with their replicas.
fn partitions_of(view: &MetaView) -> BTreeMap<u64, Vec<NodeId>> {
    let mut partitions = BTreeMap::new();
    for (_, value) in view.with_prefix(TOPIC_PREFIX) {
        if let Ok(topic) = TopicRecord::decode(&value) {
            for p in topic.partitions {
                partitions.insert(p.group, p.replicas);
            }
        }
    }
    partitions
}

/// The smallest partition group id: every one has bit 62 set.
pub const PARTITION_GROUP_MIN: u64 = 1 << 62;

/// A follower this many entries or fewer behind the leader's log is in sync.
pub const ISR_LAG_ENTRIES_MAX: u64 = 1000;

/// The partition groups this node runs, by group id.
#[derive(Clone, Default)]
pub struct PartitionGroups {
    running: Arc<Mutex<HashMap<u64, Running>>>,
}

struct Running {
    group: Group<PartitionMachine>,
    replicas: Vec<NodeId>,
}

impl PartitionGroups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        // Each critical section is one map operation.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What this node knows of partition group `group`: the leader its own replica knows
    /// (with the recorded in-sync replicas when the record is of the same term), else the
    /// leader recorded in `view`; `None` when neither knows one.
    pub fn state(&self, group: u64, view: &MetaView) -> Option<PartitionState> {
        let recorded = view
            .get(&leader_key(group))
            .and_then(|v| LeaderRecord::decode(&v));
        let local = self
            .lock()
            .get(&group)
            .map(|r| *r.group.leadership().borrow())
            .filter(|l| l.leader != 0);
        match (local, recorded) {
            (Some(local), recorded) => Some(PartitionState {
                leader: Some(local.leader),
                epoch: local.term,
                in_sync: recorded
                    .filter(|r| r.term == local.term && r.leader == local.leader)
                    .map(|r| r.in_sync)
                    .unwrap_or_default(),
            }),
            (None, Some(recorded)) => Some(PartitionState {
                leader: Some(recorded.leader),
                epoch: recorded.term,
                in_sync: recorded.in_sync,
            }),
            (None, None) => None,
        }
    }

    /// Brings the groups this node runs in line with the topics of `view`.
    pub async fn reconcile(&self, node: &Node, view: &MetaView) {
        let me = node.id();
        let wanted: BTreeMap<u64, Vec<NodeId>> = partitions_of(view)
            .into_iter()
            .filter(|(_, replicas)| replicas.contains(&me))
            .collect();
        // Groups of deleted topics: running here, or left on disk by a topic deleted while
        // this node was down.
        let mut gone: BTreeSet<u64> = self.lock().keys().copied().collect();
        gone.extend(node.listed_groups().into_iter().map(|g| g.0));
        gone.retain(|g| *g >= PARTITION_GROUP_MIN && !wanted.contains_key(g));
        for group in gone {
            self.lock().remove(&group);
            match node.remove_group(GroupId(group)).await {
                Ok(()) => {
                    tracing::info!(group = %GroupId(group), "partition removed: its topic was deleted")
                }
                Err(error) => {
                    tracing::warn!(group = %GroupId(group), %error, "removing a deleted topic's partition failed")
                }
            }
        }
        for (group, replicas) in wanted {
            if self.lock().contains_key(&group) {
                continue;
            }
            let options = GroupOptions {
                members: InitialMembers::voters(replicas.iter().copied()),
                ..GroupOptions::default()
            };
            match node
                .start_group_with(GroupId(group), PartitionMachine::default(), options)
                .await
            {
                Ok(handle) => {
                    self.lock().insert(
                        group,
                        Running {
                            group: handle,
                            replicas,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(group = %GroupId(group), %error, "starting a partition failed; retried")
                }
            }
        }
    }

    /// Records this node as the leader of the partitions it leads (with their in-sync
    /// replicas) where the metadata group does not say so yet, and hands the leadership of
    /// each to its preferred replica (the first) when that one is in sync, so that leaders
    /// spread over the nodes as the replicas were placed (Kafka's preferred leader
    /// election). The preferred replica never hands it on, so it settles there.
    pub async fn record_leaders(&self, meta: &Group<MetaMachine>, view: &MetaView) {
        let live: BTreeSet<u64> = partitions_of(view).into_keys().collect();
        let led: Vec<(u64, Group<PartitionMachine>, Vec<NodeId>)> = self
            .lock()
            .iter()
            .filter(|(g, r)| {
                live.contains(g) && r.group.leadership().borrow().role == StateRole::Leader
            })
            .map(|(&g, r)| (g, r.group.clone(), r.replicas.clone()))
            .collect();
        for (group, handle, replicas) in led {
            let Ok(status) = handle.status().await else {
                continue;
            };
            let in_sync: Vec<NodeId> = replicas
                .iter()
                .copied()
                .filter(|&r| {
                    r == status.node_id
                        || status
                            .peers
                            .iter()
                            .any(|p| p.id == r && p.recent_active && p.lag <= ISR_LAG_ENTRIES_MAX)
                })
                .collect();
            let record = LeaderRecord {
                term: status.term,
                leader: status.node_id,
                in_sync: in_sync.clone(),
            };
            let key = leader_key(group);
            let current = view.get(&key);
            let command = match current.as_ref().map(|c| (c, LeaderRecord::decode(c))) {
                None => Some(MetaCommand::Insert {
                    entries: vec![(key, record.encode())],
                }),
                Some((_, Some(recorded))) if recorded == record || recorded.term > record.term => {
                    None
                }
                Some((current, _)) => Some(MetaCommand::Replace {
                    key,
                    expected: current.clone(),
                    value: record.encode(),
                }),
            };
            if let Some(command) = command {
                // A refusal (another record came first) or no leader: the next round
                // looks again.
                if let Err(error) = meta.propose(command.encode()).await {
                    tracing::debug!(group = %GroupId(group), %error, "recording a partition's leader failed; retried");
                }
            }
            let preferred = replicas[0];
            if preferred != status.node_id && in_sync.contains(&preferred) {
                if let Err(error) = handle.transfer_leader(preferred).await {
                    tracing::debug!(group = %GroupId(group), preferred, %error, "handing a partition to its preferred leader failed; retried");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_record_decodes_to_itself_and_nothing_else_does() {
        let record = LeaderRecord {
            term: 9,
            leader: 2,
            in_sync: vec![2, 3],
        };
        let bytes = record.encode();
        assert_eq!(LeaderRecord::decode(&bytes), Some(record));
        for n in 0..bytes.len() {
            assert_eq!(LeaderRecord::decode(&bytes[..n]), None, "cut at {n}");
        }
        assert_eq!(LeaderRecord::decode(&[&bytes[..], b"x"].concat()), None);
    }
}
