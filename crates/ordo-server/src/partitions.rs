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
//! For Metadata, the node reports for each partition it holds a replica of the leader its
//! group knows and the term as the leader epoch, and on the leader the in-sync replicas: the
//! leader and every follower that acknowledged the leader's log within
//! [`ISR_LAG_ENTRIES_MAX`] entries and was heard from recently. A leader that is not its
//! partition's preferred replica (the first) hands the leadership to it once it is in sync.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use ordo_node::{Group, GroupId, GroupOptions, InitialMembers, Node, NodeId, StateRole};
use ordo_streams::partition::PartitionMachine;
use ordo_streams::{PartitionState, TopicRecord};

use crate::meta::MetaView;
use crate::streams::TOPIC_PREFIX;

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
    /// The in-sync replicas the last status of this group showed while it led.
    in_sync: Vec<NodeId>,
}

impl PartitionGroups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        // Each critical section is one map operation.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What this node knows of partition group `group`: `None` unless it runs it.
    pub fn state(&self, group: u64) -> Option<PartitionState> {
        let running = self.lock();
        let r = running.get(&group)?;
        let leadership = *r.group.leadership().borrow();
        let leads = leadership.role == StateRole::Leader;
        Some(PartitionState {
            leader: (leadership.leader != 0).then_some(leadership.leader),
            epoch: leadership.term,
            in_sync: if leads { r.in_sync.clone() } else { Vec::new() },
        })
    }

    /// Brings the groups this node runs in line with the topics of `view`.
    pub async fn reconcile(&self, node: &Node, view: &MetaView) {
        let me = node.id();
        let mut wanted: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
        for (_, value) in view.with_prefix(TOPIC_PREFIX) {
            let Ok(topic) = TopicRecord::decode(&value) else {
                continue;
            };
            for p in topic.partitions {
                if p.replicas.contains(&me) {
                    wanted.insert(p.group, p.replicas);
                }
            }
        }
        let gone: Vec<u64> = self
            .lock()
            .keys()
            .filter(|g| !wanted.contains_key(g))
            .copied()
            .collect();
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
        // Groups on disk from topics deleted while this node was down.
        for group in node.listed_groups() {
            if group.0 >= PARTITION_GROUP_MIN
                && !wanted.contains_key(&group.0)
                && !self.lock().contains_key(&group.0)
            {
                match node.remove_group(group).await {
                    Ok(()) => tracing::info!(%group, "partition removed: its topic was deleted"),
                    Err(error) => {
                        tracing::warn!(%group, %error, "removing a deleted topic's partition failed")
                    }
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
                            in_sync: Vec::new(),
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(group = %GroupId(group), %error, "starting a partition failed; retried")
                }
            }
        }
    }

    /// Refreshes the in-sync replicas of the partitions this node leads, and hands the
    /// leadership of each to its preferred replica (the first) when that one is in sync,
    /// so that leaders spread over the nodes as the replicas were placed (Kafka's preferred
    /// leader election). The preferred replica never hands it on, so it settles there.
    pub async fn refresh_in_sync(&self) {
        let led: Vec<(u64, Group<PartitionMachine>, Vec<NodeId>)> = self
            .lock()
            .iter()
            .filter(|(_, r)| r.group.leadership().borrow().role == StateRole::Leader)
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
            let preferred = replicas[0];
            if preferred != status.node_id && in_sync.contains(&preferred) {
                if let Err(error) = handle.transfer_leader(preferred).await {
                    tracing::debug!(group = %GroupId(group), preferred, %error, "handing a partition to its preferred leader failed; retried");
                }
            }
            if let Some(r) = self.lock().get_mut(&group) {
                r.in_sync = in_sync;
            }
        }
    }
}
