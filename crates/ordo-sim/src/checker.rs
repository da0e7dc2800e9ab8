//! Safety checkers, fed what the simulator observes after every step.
//!
//! Each checker watches one of Raft's guarantees (Figure 3 of the Raft paper) or one of
//! Ordo's promises (DESIGN.md §1). They see only what a node shows its runtime — roles, the
//! entries it asks to write, the entries it hands out as committed, its commit index — and
//! what the simulated disks hold, never the core's private state. Every group of the cluster
//! has its own [`Checker`] (see [`Checkers`]): the guarantees hold per group.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use ordo_node::GroupId;
use ordo_raft::{ConfState, Entry, Index, NodeId, Term};

/// Which guarantee a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// Two leaders in one term (§5.2).
    ElectionSafety,
    /// A leader overwrote or deleted entries of its own log (§5.3).
    LeaderAppendOnly,
    /// Two logs hold an entry with the same index and term but differ at or before it (§5.3).
    LogMatching,
    /// A leader lacks an entry committed before its term (§5.4).
    LeaderCompleteness,
    /// Two nodes applied different entries at one index, or a node applied out of order
    /// (§5.4.3).
    StateMachineSafety,
    /// A node's commit index went backwards.
    CommitMonotonic,
    /// A leader advanced its commit index past what a quorum holds durably.
    CommitNotDurable,
    /// A write acknowledged to a client is missing from a later leader or from what was
    /// applied.
    AckedWriteLost,
    /// The clients' history has no linearization.
    Linearizability,
    /// After faults stopped, the cluster did not elect a leader or finish pending requests in
    /// time.
    Liveness,
}

impl ViolationKind {
    /// Every kind, for parsing and summaries.
    pub const ALL: [ViolationKind; 10] = [
        ViolationKind::ElectionSafety,
        ViolationKind::LeaderAppendOnly,
        ViolationKind::LogMatching,
        ViolationKind::LeaderCompleteness,
        ViolationKind::StateMachineSafety,
        ViolationKind::CommitMonotonic,
        ViolationKind::CommitNotDurable,
        ViolationKind::AckedWriteLost,
        ViolationKind::Linearizability,
        ViolationKind::Liveness,
    ];

    /// A short stable name.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::ElectionSafety => "election-safety",
            ViolationKind::LeaderAppendOnly => "leader-append-only",
            ViolationKind::LogMatching => "log-matching",
            ViolationKind::LeaderCompleteness => "leader-completeness",
            ViolationKind::StateMachineSafety => "state-machine-safety",
            ViolationKind::CommitMonotonic => "commit-monotonic",
            ViolationKind::CommitNotDurable => "commit-not-durable",
            ViolationKind::AckedWriteLost => "acked-write-lost",
            ViolationKind::Linearizability => "linearizability",
            ViolationKind::Liveness => "liveness",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A broken guarantee, with when it was seen and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which guarantee.
    pub kind: ViolationKind,
    /// Simulated time when it was detected.
    pub time_ticks: u64,
    /// What was observed, for a human.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VIOLATION {} at tick {}: {}",
            self.kind, self.time_ticks, self.detail
        )
    }
}

impl Violation {
    /// The violation, naming the group whose checker found it.
    pub fn in_group(self, group: GroupId) -> Violation {
        Violation {
            detail: format!("group {group}: {}", self.detail),
            ..self
        }
    }
}

/// One [`Checker`] per group: each group is its own Raft log with its own terms and indexes.
#[derive(Debug, Default)]
pub struct Checkers {
    groups: BTreeMap<GroupId, Checker>,
}

impl Checkers {
    /// Checkers that have seen nothing.
    pub fn new() -> Checkers {
        Checkers::default()
    }

    /// The checker of `group`, created when the group is first seen.
    pub fn group(&mut self, group: GroupId) -> &mut Checker {
        self.groups.entry(group).or_default()
    }

    /// Every group's checker, in group order.
    pub fn iter(&self) -> impl Iterator<Item = (GroupId, &Checker)> {
        self.groups.iter().map(|(&group, checker)| (group, checker))
    }
}

/// FNV-1a over bytes: a stable hash that does not depend on the platform or Rust version.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut hash = seed ^ 0xCBF2_9CE4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// The hash of an entry's content (term, kind and data; the index is the position).
pub fn entry_hash(entry: &Entry) -> u64 {
    let mut header = [0u8; 9];
    header[..8].copy_from_slice(&entry.term.to_be_bytes());
    header[8] = match entry.kind {
        ordo_raft::EntryKind::Normal => 0,
        ordo_raft::EntryKind::ConfChange => 1,
    };
    hash_bytes(hash_bytes(0, &header), &entry.data)
}

/// One node's log as a chain of hashes: the hash at index `i` covers every entry up to `i`, so
/// two logs agree on their whole prefix up to `i` exactly when their hashes at `i` agree.
#[derive(Debug, Clone)]
struct Chain {
    /// The index before `links[0]` (the snapshot point).
    offset: Index,
    /// The chain hash at `offset`; `None` when it is unknown (a snapshot of an entry no
    /// checker saw), in which case the links after it are not compared.
    offset_hash: Option<u64>,
    /// (term, chain hash) for `offset + 1 ..`.
    links: Vec<(Term, Option<u64>)>,
}

impl Default for Chain {
    /// An empty log: nothing before index 1, whose chain hash is known (zero).
    fn default() -> Chain {
        Chain {
            offset: 0,
            offset_hash: Some(0),
            links: Vec::new(),
        }
    }
}

impl Chain {
    fn last_index(&self) -> Index {
        self.offset + self.links.len() as u64
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index <= self.offset || index > self.last_index() {
            return None;
        }
        Some(self.links[(index - self.offset - 1) as usize].0)
    }

    fn hash(&self, index: Index) -> Option<u64> {
        if index == self.offset {
            return self.offset_hash;
        }
        if index < self.offset || index > self.last_index() {
            return None;
        }
        self.links[(index - self.offset - 1) as usize].1
    }
}

#[derive(Debug, Clone, Copy)]
struct LeaderWatch {
    term: Term,
    /// Indexes up to here were found in the leader's log.
    checked_upto: Index,
}

/// What is known about a committed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    /// The entry's term.
    term: Term,
    /// A term at least as high as the one in which it was committed: the current term of a
    /// node that knew it committed. Raft promises the entry only to leaders of later terms
    /// (§5.4.3); a leader of an earlier term, elected late, may rightly lack it.
    committed_by_term_max: Term,
}

/// The state of every checker for one run.
#[derive(Debug, Default)]
pub struct Checker {
    /// Term → its leader.
    leaders: BTreeMap<Term, NodeId>,
    /// Each node's written log.
    chains: BTreeMap<NodeId, Chain>,
    /// (index, term) → chain hash, over every log ever written.
    chain_hashes: HashMap<(Index, Term), u64>,
    /// Entries known committed (applied somewhere, or acknowledged).
    committed: BTreeMap<Index, Committed>,
    /// (index, term) of writes acknowledged to clients.
    acked: BTreeSet<(Index, Term)>,
    /// Index → (term, content hash) of the entry applied there, by whichever node first did.
    applied: BTreeMap<Index, (Term, u64)>,
    /// Each node's last applied index in its current incarnation.
    applied_index: BTreeMap<NodeId, Index>,
    /// Each node's commit index in its current incarnation.
    commit: BTreeMap<NodeId, Index>,
    /// Nodes currently leader, with what they must hold.
    watches: BTreeMap<NodeId, LeaderWatch>,
}

type Check = Result<(), Violation>;

fn violation(kind: ViolationKind, time_ticks: u64, detail: String) -> Check {
    Err(Violation {
        kind,
        time_ticks,
        detail,
    })
}

/// Whether `holders` contain a majority of `voters` (an empty set of voters needs nobody).
fn majority_of(voters: &[NodeId], holders: &BTreeSet<NodeId>) -> bool {
    let held = voters
        .iter()
        .filter(|voter| holders.contains(voter))
        .count();
    voters.is_empty() || held > voters.len() / 2
}

/// Whether `holders` form a quorum of `conf` (both halves of a joint configuration).
pub fn is_quorum(conf: &ConfState, holders: &BTreeSet<NodeId>) -> bool {
    !conf.voters.is_empty()
        && majority_of(&conf.voters, holders)
        && majority_of(&conf.voters_outgoing, holders)
}

impl Checker {
    /// A checker that has seen nothing.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// The highest index known committed.
    pub fn committed_max(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// The term of the committed entry at `index`, if known.
    pub fn committed_term(&self, index: Index) -> Option<Term> {
        self.committed.get(&index).map(|committed| committed.term)
    }

    /// Writes acknowledged to clients, as (index, term).
    pub fn acked_writes(&self) -> impl Iterator<Item = (Index, Term)> + '_ {
        self.acked.iter().copied()
    }

    /// `node` reports its role: leader of `term` or not.
    pub fn observe_role(
        &mut self,
        time_ticks: u64,
        node: NodeId,
        term: Term,
        is_leader: bool,
    ) -> Check {
        if !is_leader {
            self.watches.remove(&node);
            return Ok(());
        }
        match self.leaders.get(&term) {
            Some(&leader) if leader != node => {
                return violation(
                    ViolationKind::ElectionSafety,
                    time_ticks,
                    format!("nodes {leader} and {node} are both leader of term {term}"),
                );
            }
            Some(_) => {}
            None => {
                self.leaders.insert(term, node);
            }
        }
        let watch = self.watches.entry(node).or_insert(LeaderWatch {
            term,
            checked_upto: 0,
        });
        if watch.term != term {
            *watch = LeaderWatch {
                term,
                checked_upto: 0,
            };
        }
        self.check_leader_completeness(time_ticks, node)
    }

    /// Checks that leader `node` holds everything committed in earlier terms, as far as its
    /// written log reaches (entries it holds but has not written yet are checked later; a
    /// leader missing an entry altogether writes its own entry at that index, which differs).
    fn check_leader_completeness(&mut self, time_ticks: u64, node: NodeId) -> Check {
        let Some(mut watch) = self.watches.get(&node).copied() else {
            return Ok(());
        };
        let chain = self.chains.entry(node).or_default();
        let upto = chain.last_index();
        let from = watch.checked_upto + 1;
        let range = if from <= upto {
            self.committed.range(from..=upto)
        } else {
            self.committed.range(0..0)
        };
        for (&index, committed) in range {
            if committed.committed_by_term_max >= watch.term {
                continue;
            }
            let committed_term = committed.term;
            {
                let held = chain.term(index);
                // At or below the snapshot point the entry is in the snapshot.
                if index > chain.offset && held != Some(committed_term) {
                    let kind = if self.acked.contains(&(index, committed_term)) {
                        ViolationKind::AckedWriteLost
                    } else {
                        ViolationKind::LeaderCompleteness
                    };
                    return violation(
                        kind,
                        time_ticks,
                        format!(
                            "node {node}, leader of term {}, holds term {held:?} at index {index} \
                             where term {committed_term} was committed",
                            watch.term
                        ),
                    );
                }
            }
        }
        watch.checked_upto = watch.checked_upto.max(upto);
        if let Some(stored) = self.watches.get_mut(&node) {
            *stored = watch;
        }
        Ok(())
    }

    /// `node` wrote `entries` to its log (replacing any suffix from the first one). `leader_term`
    /// is its term if it is leader.
    pub fn observe_append(
        &mut self,
        time_ticks: u64,
        node: NodeId,
        entries: &[Entry],
        leader_term: Option<Term>,
    ) -> Check {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert!(
            entries
                .windows(2)
                .all(|pair| pair[1].index == pair[0].index + 1),
            "node {node} wrote entries that are not consecutive"
        );
        let chain = self.chains.entry(node).or_default();
        assert!(
            first.index <= chain.last_index() + 1,
            "node {node} wrote index {} past its last index {}",
            first.index,
            chain.last_index()
        );
        if let Some(term) = leader_term {
            if first.index <= chain.last_index() && first.index > chain.offset {
                return violation(
                    ViolationKind::LeaderAppendOnly,
                    time_ticks,
                    format!(
                        "node {node}, leader of term {term}, rewrote its log from index {} \
                         (last index {})",
                        first.index,
                        chain.last_index()
                    ),
                );
            }
        }
        for entry in entries {
            if entry.index <= chain.offset {
                continue;
            }
            let keep = (entry.index - chain.offset - 1) as usize;
            chain.links.truncate(keep);
            let previous = chain.hash(entry.index - 1);
            let hash = previous.map(|previous| {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&previous.to_be_bytes());
                bytes[8..].copy_from_slice(&entry_hash(entry).to_be_bytes());
                hash_bytes(entry.index, &bytes)
            });
            chain.links.push((entry.term, hash));
            if let Some(hash) = hash {
                let known = *self
                    .chain_hashes
                    .entry((entry.index, entry.term))
                    .or_insert(hash);
                if known != hash {
                    return violation(
                        ViolationKind::LogMatching,
                        time_ticks,
                        format!(
                            "node {node} holds an entry at index {} term {} whose log differs \
                             from another node's entry with the same index and term",
                            entry.index, entry.term
                        ),
                    );
                }
            }
        }
        self.check_leader_completeness(time_ticks, node)
    }

    /// `node`'s log was replaced by a snapshot ending at (`index`, `term`), received from a
    /// leader or restored at restart, followed by `entries`.
    pub fn observe_log_reset(
        &mut self,
        time_ticks: u64,
        node: NodeId,
        index: Index,
        term: Term,
        entries: &[Entry],
    ) -> Check {
        let offset_hash = if index == 0 {
            Some(0)
        } else {
            self.chain_hashes.get(&(index, term)).copied()
        };
        self.chains.insert(
            node,
            Chain {
                offset: index,
                offset_hash,
                links: Vec::new(),
            },
        );
        if let Some(committed_term) = self.committed_term(index) {
            if committed_term != term {
                return violation(
                    ViolationKind::StateMachineSafety,
                    time_ticks,
                    format!(
                        "node {node} holds a snapshot at index {index} term {term}, but term \
                         {committed_term} was committed there"
                    ),
                );
            }
        }
        self.observe_append(time_ticks, node, entries, None)
    }

    /// `node` restarted from its disk with commit index `durable_commit` and the state machine
    /// at `applied_index`.
    pub fn observe_restart(&mut self, node: NodeId, durable_commit: Index, applied_index: Index) {
        self.commit.insert(node, durable_commit);
        self.applied_index.insert(node, applied_index);
        self.watches.remove(&node);
    }

    /// `node` reports commit index `commit`.
    pub fn observe_commit(&mut self, time_ticks: u64, node: NodeId, commit: Index) -> Check {
        let previous = self.commit.entry(node).or_insert(0);
        if commit < *previous {
            return violation(
                ViolationKind::CommitMonotonic,
                time_ticks,
                format!("node {node}'s commit index went from {previous} back to {commit}"),
            );
        }
        *previous = commit;
        Ok(())
    }

    /// Leader `node` advanced its commit index to `commit`, whose entry has `term`; `holders`
    /// are the nodes whose disks hold that entry durably, `conf` the leader's configuration.
    pub fn observe_leader_commit(
        &mut self,
        time_ticks: u64,
        node: NodeId,
        commit: Index,
        term: Term,
        conf: &ConfState,
        holders: &BTreeSet<NodeId>,
    ) -> Check {
        if is_quorum(conf, holders) {
            return Ok(());
        }
        violation(
            ViolationKind::CommitNotDurable,
            time_ticks,
            format!(
                "leader {node} committed index {commit} (term {term}) but only {holders:?} hold it \
                 durably; voters {:?}, outgoing voters {:?}",
                conf.voters, conf.voters_outgoing
            ),
        )
    }

    /// `node`, in `node_term`, applied `entry` to its state machine.
    pub fn observe_apply(
        &mut self,
        time_ticks: u64,
        node: NodeId,
        node_term: Term,
        entry: &Entry,
    ) -> Check {
        let last = self.applied_index.entry(node).or_insert(0);
        if entry.index != *last + 1 {
            return violation(
                ViolationKind::StateMachineSafety,
                time_ticks,
                format!(
                    "node {node} applied index {} right after index {last}",
                    entry.index
                ),
            );
        }
        *last = entry.index;
        let hash = entry_hash(entry);
        match self.applied.get(&entry.index) {
            Some(&(term, known)) if known != hash => {
                return violation(
                    ViolationKind::StateMachineSafety,
                    time_ticks,
                    format!(
                        "node {node} applied term {} at index {}, another node applied term \
                         {term} with different content there",
                        entry.term, entry.index
                    ),
                );
            }
            Some(_) => {}
            None => {
                self.applied.insert(entry.index, (entry.term, hash));
            }
        }
        self.mark_committed(time_ticks, entry.index, entry.term, node_term)
    }

    /// `node`, in `node_term`, restored its state machine from a snapshot at (`index`, `term`).
    pub fn observe_restore(
        &mut self,
        time_ticks: u64,
        node: NodeId,
        node_term: Term,
        index: Index,
        term: Term,
    ) -> Check {
        let last = self.applied_index.entry(node).or_insert(0);
        if index < *last {
            return violation(
                ViolationKind::StateMachineSafety,
                time_ticks,
                format!("node {node} restored a snapshot at {index} after applying up to {last}"),
            );
        }
        *last = index;
        if let Some(&(applied_term, _)) = self.applied.get(&index) {
            if applied_term != term {
                return violation(
                    ViolationKind::StateMachineSafety,
                    time_ticks,
                    format!(
                        "node {node} restored a snapshot of term {term} at index {index}, where \
                         term {applied_term} was applied"
                    ),
                );
            }
        }
        if index == 0 {
            return Ok(());
        }
        self.mark_committed(time_ticks, index, term, node_term)
    }

    fn mark_committed(
        &mut self,
        time_ticks: u64,
        index: Index,
        term: Term,
        observer_term: Term,
    ) -> Check {
        match self.committed.get_mut(&index) {
            Some(known) if known.term != term => violation(
                ViolationKind::StateMachineSafety,
                time_ticks,
                format!(
                    "index {index} was committed with term {} and with term {term}",
                    known.term
                ),
            ),
            Some(known) => {
                known.committed_by_term_max = known.committed_by_term_max.min(observer_term);
                Ok(())
            }
            None => {
                self.committed.insert(
                    index,
                    Committed {
                        term,
                        committed_by_term_max: observer_term,
                    },
                );
                // Leaders already checked past this index must hold it too.
                for watch in self.watches.values_mut() {
                    watch.checked_upto = watch.checked_upto.min(index - 1);
                }
                Ok(())
            }
        }
    }

    /// A client was told by a node in `node_term` that its write at (`index`, `term`)
    /// succeeded.
    pub fn observe_ack(
        &mut self,
        time_ticks: u64,
        node_term: Term,
        index: Index,
        term: Term,
    ) -> Check {
        self.acked.insert((index, term));
        match self.committed_term(index) {
            Some(known) if known != term => violation(
                ViolationKind::AckedWriteLost,
                time_ticks,
                format!(
                    "a write at index {index} term {term} was acknowledged, but term {known} \
                     is committed there"
                ),
            ),
            _ => self.mark_committed(time_ticks, index, term, node_term),
        }
    }

    /// At the end of a run: every acknowledged write was applied where it was acknowledged.
    pub fn check_acked_applied(&self, time_ticks: u64) -> Check {
        for &(index, term) in &self.acked {
            match self.applied.get(&index) {
                Some(&(applied_term, _)) if applied_term == term => {}
                other => {
                    return violation(
                        ViolationKind::AckedWriteLost,
                        time_ticks,
                        format!(
                            "the write acknowledged at index {index} term {term} was not applied \
                             (applied there: {:?})",
                            other.map(|(term, _)| term)
                        ),
                    )
                }
            }
        }
        Ok(())
    }

    /// The highest index applied by any node.
    pub fn applied_max(&self) -> Index {
        self.applied.keys().next_back().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(index: Index, term: Term, data: &'static str) -> Entry {
        Entry::new(term, index, Bytes::from_static(data.as_bytes()))
    }

    fn kind(result: Check) -> ViolationKind {
        result.expect_err("the checker must fire").kind
    }

    #[test]
    fn election_safety_fires_on_two_leaders_in_one_term() {
        let mut checker = Checker::new();
        checker.observe_role(1, 1, 3, true).unwrap();
        checker.observe_role(2, 1, 3, true).unwrap();
        checker.observe_role(3, 2, 4, true).unwrap();
        assert_eq!(
            kind(checker.observe_role(4, 2, 3, true)),
            ViolationKind::ElectionSafety
        );
    }

    #[test]
    fn leader_append_only_fires_when_a_leader_rewrites_its_log() {
        let mut checker = Checker::new();
        checker.observe_role(1, 1, 2, true).unwrap();
        checker
            .observe_append(1, 1, &[entry(1, 1, "a"), entry(2, 2, "b")], Some(2))
            .unwrap();
        checker
            .observe_append(2, 1, &[entry(3, 2, "c")], Some(2))
            .unwrap();
        assert_eq!(
            kind(checker.observe_append(3, 1, &[entry(3, 2, "d")], Some(2))),
            ViolationKind::LeaderAppendOnly
        );
    }

    #[test]
    fn follower_may_overwrite_its_suffix() {
        let mut checker = Checker::new();
        checker
            .observe_append(1, 2, &[entry(1, 1, "a"), entry(2, 1, "b")], None)
            .unwrap();
        checker
            .observe_append(2, 2, &[entry(2, 2, "c")], None)
            .unwrap();
    }

    #[test]
    fn log_matching_fires_when_same_index_and_term_have_different_prefixes() {
        let mut checker = Checker::new();
        checker
            .observe_append(1, 1, &[entry(1, 1, "a"), entry(2, 2, "b")], None)
            .unwrap();
        // Same (2, 2) but a different entry at index 1.
        assert_eq!(
            kind(checker.observe_append(2, 2, &[entry(1, 1, "x"), entry(2, 2, "b")], None)),
            ViolationKind::LogMatching
        );
    }

    #[test]
    fn log_matching_accepts_identical_logs_and_snapshot_bases() {
        let mut checker = Checker::new();
        let log = [entry(1, 1, "a"), entry(2, 2, "b"), entry(3, 2, "c")];
        checker.observe_append(1, 1, &log, None).unwrap();
        checker.observe_append(1, 2, &log, None).unwrap();
        checker
            .observe_log_reset(2, 3, 2, 2, &[entry(3, 2, "c")])
            .unwrap();
        assert_eq!(
            kind(checker.observe_log_reset(3, 4, 2, 2, &[entry(3, 2, "z")])),
            ViolationKind::LogMatching
        );
    }

    #[test]
    fn leader_completeness_fires_when_a_new_leader_lacks_a_committed_entry() {
        let mut checker = Checker::new();
        checker
            .observe_append(1, 1, &[entry(1, 1, "a")], None)
            .unwrap();
        checker.observe_apply(2, 1, 1, &entry(1, 1, "a")).unwrap();
        // Node 2 holds a different entry at index 1 and becomes leader of term 2.
        checker
            .observe_append(3, 2, &[entry(1, 2, "b")], None)
            .unwrap();
        assert_eq!(
            kind(checker.observe_role(4, 2, 2, true)),
            ViolationKind::LeaderCompleteness
        );
    }

    #[test]
    fn leader_completeness_checks_entries_as_the_leader_writes_them() {
        let mut checker = Checker::new();
        checker.observe_apply(1, 1, 1, &entry(1, 1, "a")).unwrap();
        checker.observe_apply(1, 1, 1, &entry(2, 1, "b")).unwrap();
        checker.observe_role(2, 2, 2, true).unwrap();
        checker
            .observe_append(3, 2, &[entry(1, 1, "a")], Some(2))
            .unwrap();
        assert_eq!(
            kind(checker.observe_append(4, 2, &[entry(2, 2, "noop")], Some(2))),
            ViolationKind::LeaderCompleteness
        );
    }

    #[test]
    fn leader_of_an_earlier_term_elected_late_may_lack_a_later_commit() {
        let mut checker = Checker::new();
        // Committed by the leader of term 9 (node 5 applies it in term 9).
        checker.observe_apply(1, 5, 9, &entry(1, 6, "a")).unwrap();
        // Node 4 wins term 8 late, with votes cast before term 9 began; its log lacks the entry.
        checker
            .observe_append(2, 4, &[entry(1, 8, "noop")], None)
            .unwrap();
        checker.observe_role(3, 4, 8, true).unwrap();
        // A leader of term 10 must have it.
        checker
            .observe_append(4, 3, &[entry(1, 8, "noop")], None)
            .unwrap();
        assert_eq!(
            kind(checker.observe_role(5, 3, 10, true)),
            ViolationKind::LeaderCompleteness
        );
    }

    #[test]
    fn acked_write_missing_from_a_leader_is_reported_as_lost() {
        let mut checker = Checker::new();
        checker.observe_ack(1, 1, 1, 1).unwrap();
        checker
            .observe_append(2, 2, &[entry(1, 2, "other")], None)
            .unwrap();
        assert_eq!(
            kind(checker.observe_role(3, 2, 2, true)),
            ViolationKind::AckedWriteLost
        );
    }

    #[test]
    fn acked_write_never_applied_is_reported_at_the_end() {
        let mut checker = Checker::new();
        checker.observe_ack(1, 1, 5, 1).unwrap();
        assert_eq!(
            kind(checker.check_acked_applied(9)),
            ViolationKind::AckedWriteLost
        );
    }

    #[test]
    fn state_machine_safety_fires_on_different_entries_at_one_index() {
        let mut checker = Checker::new();
        checker.observe_apply(1, 1, 1, &entry(1, 1, "a")).unwrap();
        assert_eq!(
            kind(checker.observe_apply(2, 2, 1, &entry(1, 1, "b"))),
            ViolationKind::StateMachineSafety
        );
    }

    #[test]
    fn state_machine_safety_fires_on_a_gap_in_applied_indexes() {
        let mut checker = Checker::new();
        checker.observe_apply(1, 1, 1, &entry(1, 1, "a")).unwrap();
        assert_eq!(
            kind(checker.observe_apply(2, 1, 1, &entry(3, 1, "c"))),
            ViolationKind::StateMachineSafety
        );
    }

    #[test]
    fn commit_monotonic_fires_when_commit_goes_back_but_not_across_restart() {
        let mut checker = Checker::new();
        checker.observe_commit(1, 1, 5).unwrap();
        assert_eq!(
            kind(checker.observe_commit(2, 1, 4)),
            ViolationKind::CommitMonotonic
        );
        checker.observe_restart(1, 3, 3);
        checker.observe_commit(3, 1, 3).unwrap();
    }

    #[test]
    fn commit_not_durable_fires_without_a_quorum_of_holders() {
        let mut checker = Checker::new();
        let conf = ConfState::with_voters([1, 2, 3]);
        let holders: BTreeSet<NodeId> = [1].into_iter().collect();
        assert_eq!(
            kind(checker.observe_leader_commit(1, 1, 4, 1, &conf, &holders)),
            ViolationKind::CommitNotDurable
        );
        let holders: BTreeSet<NodeId> = [1, 3].into_iter().collect();
        checker
            .observe_leader_commit(1, 1, 4, 1, &conf, &holders)
            .unwrap();
    }

    #[test]
    fn joint_quorum_needs_both_majorities() {
        let conf = ConfState {
            voters: vec![1, 2, 3],
            voters_outgoing: vec![3, 4, 5],
            ..ConfState::default()
        };
        let holders: BTreeSet<NodeId> = [1, 2].into_iter().collect();
        assert!(!is_quorum(&conf, &holders));
        let holders: BTreeSet<NodeId> = [1, 2, 4, 5].into_iter().collect();
        assert!(is_quorum(&conf, &holders));
    }
}
