//! The values the core exchanges with its runtime: log entries, persistent state,
//! configurations and snapshots.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Error;

/// A node's identifier. Zero is reserved for "no node".
pub type NodeId = u64;
/// A Raft term (§5.1): a logical clock that only moves forward.
pub type Term = u64;
/// A position in the replicated log. The first entry has index 1; 0 means "before the log".
pub type Index = u64;

/// The reserved "no node" identifier.
pub const INVALID_ID: NodeId = 0;

/// Bytes counted for an entry's fixed fields when bounding messages and batches, so that
/// empty entries still consume budget and a limit on bytes is also a limit on entries.
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Application data. A new leader's no-op (§8) is a `Normal` entry with empty data.
    Normal,
    /// An encoded [`ConfChange`]; the core applies it when the entry is applied.
    ConfChange,
}

/// One record of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
    /// Application data or configuration change.
    pub kind: EntryKind,
    /// The payload; for `ConfChange` entries, [`ConfChange::encode`]'s output.
    pub data: Bytes,
}

impl Entry {
    /// A normal entry.
    pub fn new(term: Term, index: Index, data: Bytes) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data,
        }
    }

    /// The size counted against byte limits: payload plus fixed overhead.
    #[inline]
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// The state that must be durable before the node speaks (§5.1, Figure 2 "persistent state").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate voted for in `term`, or [`INVALID_ID`].
    pub vote: NodeId,
    /// The highest index known committed. Persisting it is an optimisation (fewer entries to
    /// re-learn after restart), not a safety requirement.
    pub commit: Index,
}

/// A cluster configuration: who votes and who only learns.
///
/// During joint consensus (§6 of the Raft paper, "Cluster membership changes") decisions need
/// a majority of `voters` *and* a majority of `voters_outgoing`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfState {
    /// Voters of the incoming (or only) configuration, sorted and unique.
    pub voters: Vec<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: Vec<NodeId>,
    /// Voters of the outgoing configuration; non-empty exactly while joint.
    pub voters_outgoing: Vec<NodeId>,
    /// Nodes that become learners when the joint configuration is left. They are voters of
    /// the outgoing configuration until then, and a node must never be voter and learner at
    /// once.
    pub learners_next: Vec<NodeId>,
    /// Whether the leader leaves the joint configuration on its own once it is applied.
    pub auto_leave: bool,
}

impl ConfState {
    /// A configuration with the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> ConfState {
        let mut voters: Vec<NodeId> = voters.into_iter().collect();
        voters.sort_unstable();
        voters.dedup();
        ConfState {
            voters,
            ..ConfState::default()
        }
    }

    /// Whether the configuration is joint (an outgoing set of voters exists).
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }
}

/// What a snapshot stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The configuration in force at `index`.
    pub conf_state: ConfState,
}

/// A state machine snapshot taken by the runtime (§7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Position and configuration.
    pub meta: SnapshotMeta,
    /// The state machine's serialised state; opaque to the core.
    pub data: Bytes,
}

impl Snapshot {
    /// Whether this is the empty snapshot (index 0).
    pub fn is_empty(&self) -> bool {
        self.meta.index == 0
    }
}

/// One membership operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfChangeKind {
    /// Make the node a voter (promoting it if it is a learner).
    AddVoter,
    /// Make the node a learner (demoting it if it is a voter).
    AddLearner,
    /// Remove the node from the configuration.
    Remove,
}

/// A single membership operation on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConfChangeSingle {
    /// The operation.
    pub kind: ConfChangeKind,
    /// The node it applies to.
    pub node_id: NodeId,
}

/// How a [`ConfChange`] moves between configurations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConfChangeTransition {
    /// A change of at most one voter is applied directly; anything larger goes through a
    /// joint configuration that the leader leaves on its own.
    #[default]
    Auto,
    /// Always enter a joint configuration; the leader leaves it on its own once applied.
    JointImplicit,
    /// Always enter a joint configuration; it is left only by proposing an empty change.
    JointExplicit,
}

/// A membership change proposal. An empty `changes` list means "leave the joint
/// configuration".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConfChange {
    /// How to transition.
    pub transition: ConfChangeTransition,
    /// The operations, applied in order.
    pub changes: Vec<ConfChangeSingle>,
    /// Opaque data for the runtime (for example the new node's address).
    pub context: Bytes,
}

/// Upper bound on operations in one [`ConfChange`], so decoding is bounded.
pub const MAX_CONF_CHANGES: usize = 64;

impl ConfChange {
    /// A change of one node, applied directly.
    pub fn single(kind: ConfChangeKind, node_id: NodeId) -> ConfChange {
        ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: vec![ConfChangeSingle { kind, node_id }],
            context: Bytes::new(),
        }
    }

    /// The request to leave a joint configuration.
    pub fn leave_joint() -> ConfChange {
        ConfChange::default()
    }

    /// Whether this change leaves a joint configuration.
    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether applying this change enters a joint configuration, and if so whether the
    /// leader leaves it automatically.
    pub fn enters_joint(&self) -> Option<bool> {
        let voter_changes = self
            .changes
            .iter()
            .filter(|c| c.kind == ConfChangeKind::AddVoter || c.kind == ConfChangeKind::Remove)
            .count();
        match self.transition {
            ConfChangeTransition::Auto if self.changes.len() <= 1 || voter_changes <= 1 => None,
            ConfChangeTransition::Auto | ConfChangeTransition::JointImplicit => Some(true),
            ConfChangeTransition::JointExplicit => Some(false),
        }
    }

    /// Encodes the change as the data of a `ConfChange` entry.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(6 + self.changes.len() * 9 + self.context.len());
        buf.put_u8(match self.transition {
            ConfChangeTransition::Auto => 0,
            ConfChangeTransition::JointImplicit => 1,
            ConfChangeTransition::JointExplicit => 2,
        });
        buf.put_u8(self.changes.len() as u8);
        for c in &self.changes {
            buf.put_u8(match c.kind {
                ConfChangeKind::AddVoter => 0,
                ConfChangeKind::AddLearner => 1,
                ConfChangeKind::Remove => 2,
            });
            buf.put_u64(c.node_id);
        }
        buf.put_u32(self.context.len() as u32);
        buf.put_slice(&self.context);
        buf.freeze()
    }

    /// Decodes an entry's data; rejects anything [`ConfChange::encode`] would not produce.
    pub fn decode(data: &[u8]) -> Result<ConfChange, Error> {
        let bad = |why: &'static str| Error::MalformedConfChange(why);
        let mut buf = data;
        if buf.remaining() < 2 {
            return Err(bad("shorter than its header"));
        }
        let transition = match buf.get_u8() {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::JointImplicit,
            2 => ConfChangeTransition::JointExplicit,
            _ => return Err(bad("unknown transition")),
        };
        let count = buf.get_u8() as usize;
        if count > MAX_CONF_CHANGES {
            return Err(bad("too many changes"));
        }
        if buf.remaining() < count * 9 + 4 {
            return Err(bad("truncated changes"));
        }
        let mut changes = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = match buf.get_u8() {
                0 => ConfChangeKind::AddVoter,
                1 => ConfChangeKind::AddLearner,
                2 => ConfChangeKind::Remove,
                _ => return Err(bad("unknown change kind")),
            };
            let node_id = buf.get_u64();
            if node_id == INVALID_ID {
                return Err(bad("node id 0"));
            }
            changes.push(ConfChangeSingle { kind, node_id });
        }
        let context_len = buf.get_u32() as usize;
        if buf.remaining() != context_len {
            return Err(bad("context length does not match"));
        }
        Ok(ConfChange {
            transition,
            changes,
            context: Bytes::copy_from_slice(buf),
        })
    }
}

/// The answer to a read request (§6.4): once the state machine has applied `index`, a read
/// tagged with `context` reflects every write acknowledged before the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index the read must wait for.
    pub index: Index,
    /// The caller's request identifier.
    pub context: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_round_trips_through_encoding() {
        let cc = ConfChange {
            transition: ConfChangeTransition::JointExplicit,
            changes: vec![
                ConfChangeSingle {
                    kind: ConfChangeKind::AddVoter,
                    node_id: 4,
                },
                ConfChangeSingle {
                    kind: ConfChangeKind::Remove,
                    node_id: 1,
                },
                ConfChangeSingle {
                    kind: ConfChangeKind::AddLearner,
                    node_id: 9,
                },
            ],
            context: Bytes::from_static(b"addr"),
        };
        assert_eq!(ConfChange::decode(&cc.encode()).unwrap(), cc);
    }

    #[test]
    fn conf_change_decode_rejects_truncated_or_garbage_input() {
        let enc = ConfChange::single(ConfChangeKind::AddVoter, 3).encode();
        for cut in 0..enc.len() {
            assert!(ConfChange::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        assert!(ConfChange::decode(&[7, 0, 0, 0, 0, 0]).is_err());
        assert!(ConfChange::decode(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn auto_transition_is_simple_only_for_one_voter_change() {
        assert_eq!(
            ConfChange::single(ConfChangeKind::AddVoter, 2).enters_joint(),
            None
        );
        let two = ConfChange {
            changes: vec![
                ConfChangeSingle {
                    kind: ConfChangeKind::AddVoter,
                    node_id: 2,
                },
                ConfChangeSingle {
                    kind: ConfChangeKind::Remove,
                    node_id: 3,
                },
            ],
            ..ConfChange::default()
        };
        assert_eq!(two.enters_joint(), Some(true));
    }
}
