//! The command sequences of the group core, for the cases its persistence ordering
//! describes: asserted as the list of commands each call leaves.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ordo_raft::{
    ConfState, Config, Entry, HardState, Index, MemStorage, MessageBody, NodeId, RaftState,
    RawNode, Snapshot, SnapshotMeta, StateRole, Storage, StorageError, Term,
};

use super::*;
use crate::storage::StorageFailure;

/// An in-memory log whose appends become durable only when the test says so.
#[derive(Clone, Default)]
struct MemLog {
    inner: Arc<Mutex<MemLogInner>>,
}

#[derive(Default)]
struct MemLogInner {
    storage: MemStorage,
    durable: Index,
    snapshot_wanted: bool,
}

impl MemLog {
    fn with_voters(voters: &[NodeId]) -> MemLog {
        let log = MemLog::default();
        log.lock().storage =
            MemStorage::new_with_conf_state(ConfState::with_voters(voters.iter().copied()));
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemLogInner> {
        self.inner.lock().unwrap()
    }

    fn sync(&self) {
        let mut inner = self.lock();
        inner.durable = inner.storage.last_index();
    }
}

impl Storage for MemLog {
    fn initial_state(&self) -> RaftState {
        self.lock().storage.initial_state()
    }
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.lock().storage.entries(lo, hi, max_bytes)
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.lock().storage.term(index)
    }
    fn first_index(&self) -> Index {
        self.lock().storage.first_index()
    }
    fn last_index(&self) -> Index {
        self.lock().storage.last_index()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.lock().storage.snapshot()
    }
}

impl LogStore for MemLog {
    fn install_snapshot(&self, snapshot: &Snapshot) -> Result<(), StorageFailure> {
        let mut inner = self.lock();
        let _ = inner.storage.apply_snapshot(snapshot.clone());
        inner.durable = snapshot.meta.index;
        Ok(())
    }
    fn append(&self, entries: &[Entry]) -> Result<Option<Index>, StorageFailure> {
        let mut inner = self.lock();
        if let Some(first) = entries.first() {
            inner.durable = inner.durable.min(first.index - 1);
        }
        inner.storage.append(entries);
        Ok(entries.last().map(|e| e.index))
    }
    fn set_hard_state(&self, hs: HardState) -> Result<(), StorageFailure> {
        self.lock().storage.set_hard_state(hs);
        Ok(())
    }
    fn compact(&self, through: Index) -> Result<(), StorageFailure> {
        let _ = self.lock().storage.compact(through);
        Ok(())
    }
    fn write_snapshot(
        &self,
        index: Index,
        _term: Term,
        conf_state: &ConfState,
        data: &[u8],
    ) -> Result<(), StorageFailure> {
        let _ = self.lock().storage.create_snapshot(
            index,
            conf_state.clone(),
            Bytes::copy_from_slice(data),
        );
        Ok(())
    }
    fn durable_index(&self) -> Index {
        self.lock().durable
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.lock().storage.snapshot().unwrap_or_default().meta
    }
    fn note_snapshot_taken(&self, _meta: SnapshotMeta) {}
    fn set_conf_now(&self, _conf_state: ConfState) {}
    fn take_snapshot_wanted(&self) -> bool {
        std::mem::take(&mut self.lock().snapshot_wanted)
    }
    fn failure(&self) -> Option<String> {
        None
    }
}

fn addr(id: NodeId) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2380 + id as u16))
}

fn core(id: NodeId, voters: &[NodeId]) -> GroupCore<MemLog> {
    let log = MemLog::with_voters(voters);
    let config = Config {
        election_timeout_ticks: 10,
        heartbeat_interval_ticks: 1,
        seed: id,
        ..Config::new(id)
    };
    let raw = RawNode::new(config, log).unwrap();
    let config = CoreConfig {
        quiesce: true,
        group_id: GroupId(1),
        node_id: id,
        boot: 7,
        self_addr: addr(id),
        proposal_bytes_max: 1024,
        pending_proposals_max: 100,
        pending_reads_max: 100,
        pending_asks_max: 100,
        snapshot_tail_entries: 0,
        snapshot_chunk_bytes: 16,
        snapshot_bytes_max: 1 << 20,
        snapshot_chunk_timeout_ticks: 20,
        apply_batches_max: 4,
        #[cfg(feature = "mutations")]
        mutation: None,
    };
    let members = voters.iter().map(|&v| (v, addr(v))).collect();
    GroupCore::new(config, raw, 0, members, Arc::default())
}

/// A node of a test cluster: the core and a runtime that does what the commands say,
/// with writes durable only when the test syncs them.
struct TestNode {
    core: GroupCore<MemLog>,
    gate: DurabilityGate,
    applied: Vec<Entry>,
    batches_done: u64,
    /// Work handed out while the state machine is held (`Some`), not yet applied.
    held: Option<Vec<ApplyWork>>,
    /// Every command executed, in order.
    log: Vec<Command>,
}

impl TestNode {
    fn new(id: NodeId, voters: &[NodeId]) -> TestNode {
        TestNode {
            core: core(id, voters),
            gate: DurabilityGate::new(),
            applied: Vec::new(),
            batches_done: 0,
            held: None,
            log: Vec::new(),
        }
    }

    /// Ends the turn and carries out the commands; returns the messages to send and the
    /// commands of this turn.
    fn run(&mut self, outbox: &mut VecDeque<(NodeId, NodeId, WireMessage)>) -> Vec<Command> {
        self.core.end_turn();
        let mut turn = Vec::new();
        loop {
            let commands = self.core.take_commands();
            if commands.is_empty() {
                break;
            }
            for command in commands {
                self.execute(&command, outbox);
                turn.push(command);
            }
        }
        self.log.extend(turn.iter().cloned());
        turn
    }

    fn execute(&mut self, command: &Command, outbox: &mut VecDeque<(NodeId, NodeId, WireMessage)>) {
        let me = self.core.config.node_id;
        match command {
            Command::Send { to, message, .. } => outbox.push_back((me, *to, message.clone())),
            Command::Persist(p) => {
                let last = self.core.storage().persist(p).unwrap();
                self.gate.written(p.seq, last);
            }
            Command::SendAfterDurable { seq, to, message } => {
                self.gate.hold(*seq, *to, message.clone())
            }
            Command::Apply(work) if self.held.is_some() => {
                self.held.get_or_insert_with(Vec::new).push(work.clone());
            }
            Command::Apply(work) => {
                let commit = self.core.raw().commit_index();
                for e in &work.entries {
                    assert!(
                        e.index <= commit,
                        "entry {} applied past commit {commit}",
                        e.index
                    );
                }
                self.applied.extend(work.entries.iter().cloned());
                self.batches_done += 1;
                let applied = self.applied.last().map_or(0, |e| e.index);
                self.core.on_applied(self.batches_done, applied);
            }
            _ => {}
        }
    }

    /// Makes every write durable and releases what waited for it.
    fn sync(&mut self, outbox: &mut VecDeque<(NodeId, NodeId, WireMessage)>) {
        let me = self.core.config.node_id;
        self.core.storage().sync();
        let released = self.gate.release(self.core.storage().durable_index());
        for (to, m) in released.messages {
            outbox.push_back((me, to, m));
        }
        if let Some(seq) = released.persisted {
            self.core.on_persisted(seq);
        }
        self.run(outbox);
    }
}

struct TestCluster {
    nodes: BTreeMap<NodeId, TestNode>,
    outbox: VecDeque<(NodeId, NodeId, WireMessage)>,
    /// Nodes whose messages, both ways, are lost.
    isolated: std::collections::BTreeSet<NodeId>,
}

impl TestCluster {
    fn new(n: NodeId) -> TestCluster {
        let voters: Vec<NodeId> = (1..=n).collect();
        let nodes = voters
            .iter()
            .map(|&id| (id, TestNode::new(id, &voters)))
            .collect();
        TestCluster {
            nodes,
            outbox: VecDeque::new(),
            isolated: Default::default(),
        }
    }

    fn node(&mut self, id: NodeId) -> &mut TestNode {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Delivers messages and syncs every disk until nothing moves.
    fn stabilize(&mut self) {
        for _ in 0..1000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for &id in &ids {
                let node = self.nodes.get_mut(&id).unwrap();
                node.run(&mut self.outbox);
                node.sync(&mut self.outbox);
            }
            let Some((from, to, m)) = self.outbox.pop_front() else {
                return;
            };
            if self.isolated.contains(&from) || self.isolated.contains(&to) {
                continue;
            }
            let node = self.nodes.get_mut(&to).unwrap();
            node.core.on_message(from, m);
        }
        panic!("the cluster never settled");
    }

    fn elect(&mut self, id: NodeId) {
        let leader = self
            .nodes
            .values()
            .find(|n| n.core.raw().role() == StateRole::Leader)
            .map(|n| n.core.config.node_id);
        match leader {
            Some(leader) if leader == id => return,
            // Followers that hear from a leader refuse to pre-vote: hand leadership over.
            Some(leader) => self.node(leader).core.transfer_leader(id).unwrap(),
            None => self.node(id).core.raw.campaign().unwrap(),
        }
        self.stabilize();
        assert_eq!(self.node(id).core.raw().role(), StateRole::Leader);
    }

    /// Delivers the pending messages from `from` to `to` only.
    fn deliver(&mut self, from: NodeId, to: NodeId) {
        let mut kept = VecDeque::new();
        while let Some((f, t, m)) = self.outbox.pop_front() {
            if f == from && t == to {
                self.nodes.get_mut(&t).unwrap().core.on_message(f, m);
            } else {
                kept.push_back((f, t, m));
            }
        }
        self.outbox = kept;
    }

    fn clear_outbox(&mut self) {
        self.outbox.clear();
    }
}

fn is_append(m: &WireMessage) -> bool {
    matches!(m, WireMessage::Raft(r) if matches!(r.body, MessageBody::Append { .. }))
}

fn position(commands: &[Command], what: impl Fn(&Command) -> bool) -> Option<usize> {
    commands.iter().position(what)
}

#[test]
fn a_leader_sends_appends_before_its_own_write_is_durable_and_counts_itself_only_after() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    let commit_before = c.node(1).core.raw().commit_index();
    let ticket = c.node(1).core.propose(b"x");
    let mut outbox = VecDeque::new();
    let turn = c.node(1).run(&mut outbox);
    let appends: Vec<usize> = turn
        .iter()
        .enumerate()
        .filter(|(_, cmd)| matches!(cmd, Command::Send { message, .. } if is_append(message)))
        .map(|(i, _)| i)
        .collect();
    let persist = position(
        &turn,
        |cmd| matches!(cmd, Command::Persist(p) if !p.entries.is_empty()),
    )
    .expect("the leader writes its entry");
    assert_eq!(appends.len(), 2, "{turn:?}");
    assert!(
        appends.iter().all(|&i| i < persist),
        "appends go out first: {turn:?}"
    );
    assert!(!turn.iter().any(|cmd| matches!(cmd, Command::Apply(_))));
    c.outbox = outbox;
    // Follower 2 acknowledges; with only its own vote and the leader's, which is not yet
    // durable, nothing commits.
    c.deliver(1, 2);
    let mut from_two = VecDeque::new();
    c.node(2).run(&mut from_two);
    c.node(2).sync(&mut from_two);
    for (f, t, m) in from_two {
        if t == 1 {
            c.node(1).core.on_message(f, m);
        }
    }
    let mut sink = VecDeque::new();
    let turn = c.node(1).run(&mut sink);
    assert_eq!(
        c.node(1).core.raw().commit_index(),
        commit_before,
        "{turn:?}"
    );
    assert!(!turn.iter().any(|cmd| matches!(cmd, Command::Apply(_))));
    // The leader's own write becomes durable: now it counts, the entry commits and is
    // handed out with its proposer's ticket.
    c.node(1).sync(&mut sink);
    assert!(c.node(1).core.raw().commit_index() > commit_before);
    let applied = c.node(1).log.iter().rev().find_map(|cmd| match cmd {
        Command::Apply(work) => Some(work.clone()),
        _ => None,
    });
    let work = applied.expect("the entry is applied");
    assert_eq!(work.proposers.len(), 1);
    assert_eq!(work.proposers[0].1, ticket);
    assert_eq!(work.entries.last().unwrap().index, work.proposers[0].0);
}

#[test]
fn an_append_acknowledgement_waits_for_the_write_it_promises() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    c.clear_outbox();
    c.node(1).core.propose(b"x");
    let mut outbox = VecDeque::new();
    c.node(1).run(&mut outbox);
    c.outbox = outbox;
    c.deliver(1, 2);
    let mut out = VecDeque::new();
    let turn = c.node(2).run(&mut out);
    let persist = turn.iter().find_map(|cmd| match cmd {
        Command::Persist(p) if !p.entries.is_empty() => Some(p.seq),
        _ => None,
    });
    let seq = persist.expect("the follower writes the entry");
    let acks_now = turn.iter().any(|cmd| {
        matches!(cmd, Command::Send { message: WireMessage::Raft(m), .. }
            if matches!(m.body, MessageBody::AppendResponse { .. }))
    });
    assert!(!acks_now, "no acknowledgement before durability: {turn:?}");
    assert!(turn.iter().any(|cmd| matches!(cmd,
        Command::SendAfterDurable { seq: s, message: WireMessage::Raft(m), .. }
            if *s == seq && matches!(m.body, MessageBody::AppendResponse { .. }))));
    assert!(out.is_empty(), "nothing sent: {out:?}");
}

#[test]
fn a_vote_waits_for_the_durable_record_of_it() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    c.clear_outbox();
    // A leadership transfer makes node 2 ask for votes at once.
    c.node(1).core.transfer_leader(2).unwrap();
    let mut out = VecDeque::new();
    c.node(1).run(&mut out);
    c.outbox = out;
    c.deliver(1, 2);
    let mut out = VecDeque::new();
    c.node(2).run(&mut out);
    c.node(2).sync(&mut out);
    c.outbox = out;
    c.deliver(2, 3);
    let mut replies = VecDeque::new();
    let turn = c.node(3).run(&mut replies);
    let seq = turn.iter().find_map(|cmd| match cmd {
        Command::Persist(p) if p.hard_state.is_some_and(|hs| hs.vote == 2) => Some(p.seq),
        _ => None,
    });
    let seq = seq.expect("node 3 records its vote");
    let is_vote = |m: &WireMessage| matches!(m, WireMessage::Raft(r) if matches!(r.body, MessageBody::RequestVoteResponse { reject: false }));
    assert!(
        !turn
            .iter()
            .any(|cmd| matches!(cmd, Command::Send { message, .. } if is_vote(message))),
        "{turn:?}"
    );
    assert!(turn.iter().any(|cmd| matches!(cmd, Command::SendAfterDurable { seq: s, message, .. } if *s == seq && is_vote(message))));
}

#[test]
fn a_proposal_is_answered_only_through_the_application_of_its_entry() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    let ticket = c.node(2).core.propose(b"from a follower");
    c.stabilize();
    for id in 1..=3 {
        let answered = c
            .node(id)
            .log
            .iter()
            .any(|cmd| matches!(cmd, Command::Answer { ticket: t, .. } if *t == ticket));
        assert!(!answered, "node {id} answered the proposal outright");
    }
    let carried = c.node(2).log.iter().find_map(|cmd| match cmd {
        Command::Apply(work) => work
            .proposers
            .iter()
            .find(|(_, t)| *t == ticket)
            .map(|(i, _)| (*i, work.clone())),
        _ => None,
    });
    let (index, work) = carried.expect("the forwarded proposal's ticket travels with its entry");
    assert!(work.entries.iter().any(|e| e.index == index));
}

#[test]
fn a_read_is_answered_only_once_its_index_is_applied() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    c.stabilize();
    // Follower 3 applies nothing more for now: it only runs its core.
    let ticket = c.node(3).core.read();
    let mut out = VecDeque::new();
    c.node(3).run(&mut out);
    c.outbox = out;
    c.deliver(3, 1);
    let mut from_leader = VecDeque::new();
    c.node(1).run(&mut from_leader);
    c.node(1).sync(&mut from_leader);
    c.outbox = from_leader;
    // Heartbeat round for the read index.
    for _ in 0..4 {
        c.deliver(1, 2);
        c.deliver(1, 3);
        let mut replies = VecDeque::new();
        c.node(2).run(&mut replies);
        c.node(2).sync(&mut replies);
        c.node(3).run(&mut replies);
        c.node(3).sync(&mut replies);
        for (f, t, m) in replies.drain(..) {
            c.nodes.get_mut(&t).unwrap().core.on_message(f, m);
        }
        let mut more = VecDeque::new();
        c.node(1).run(&mut more);
        c.node(1).sync(&mut more);
        c.outbox = more;
    }
    let answer = c.node(3).log.iter().find_map(|cmd| match cmd {
        Command::Answer {
            ticket: t,
            answer: Answer::Read(r),
        } if *t == ticket => Some(r.clone()),
        _ => None,
    });
    let index = answer
        .expect("the read was answered")
        .expect("with an index");
    let applied = c.node(3).applied.last().map_or(0, |e| e.index);
    assert!(
        applied >= index,
        "answered at {index} with only {applied} applied"
    );
}

/// Ends a turn of a single-node group and makes its writes durable, leaving the work it
/// hands out unapplied: returns the commands.
fn turn_without_applying(node: &mut TestNode) -> Vec<Command> {
    node.core.end_turn();
    let mut all = Vec::new();
    loop {
        let commands = node.core.take_commands();
        if commands.is_empty() {
            return all;
        }
        for cmd in &commands {
            if let Command::Persist(p) = cmd {
                let last = node.core.storage().persist(p).unwrap();
                node.gate.written(p.seq, last);
            }
        }
        node.core.storage().sync();
        if let Some(seq) = node
            .gate
            .release(node.core.storage().durable_index())
            .persisted
        {
            node.core.on_persisted(seq);
        }
        all.extend(commands);
    }
}

#[test]
fn a_read_confirmed_beyond_the_applied_index_waits_for_the_state_machine() {
    let mut node = TestNode::new(1, &[1]);
    node.core.raw.campaign().unwrap();
    let mut out = VecDeque::new();
    while node.core.waiting_durable() || node.core.raw().role() != StateRole::Leader {
        node.run(&mut out);
        node.sync(&mut out);
    }
    // An entry commits; the state machine does not apply it yet.
    node.core.propose(b"x");
    let commands = turn_without_applying(&mut node);
    let handed_out: Vec<Index> = commands
        .iter()
        .filter_map(|c| match c {
            Command::Apply(w) => w.entries.last().map(|e| e.index),
            _ => None,
        })
        .collect();
    let last = *handed_out.last().expect("the entry is handed out");
    assert!(last > node.applied.last().map_or(0, |e| e.index));
    let ticket = node.core.read();
    let commands = turn_without_applying(&mut node);
    let answered = |cmds: &[Command]| {
        cmds.iter()
            .any(|cmd| matches!(cmd, Command::Answer { ticket: t, .. } if *t == ticket))
    };
    assert!(!answered(&commands), "{commands:?}");
    node.core
        .on_applied(node.batches_done + handed_out.len() as u64, last);
    let commands = node.core.take_commands();
    assert!(
        commands.contains(&Command::Answer {
            ticket,
            answer: Answer::Read(Ok(last))
        }),
        "{commands:?}"
    );
}

#[test]
fn nothing_past_the_commit_index_is_handed_out_through_leader_changes() {
    // TestNode::execute asserts every applied entry is at or below the commit index.
    let mut c = TestCluster::new(3);
    c.elect(1);
    for round in 0..5u64 {
        let leader = 1 + round % 3;
        c.elect(leader);
        for i in 0..5 {
            let via = 1 + (round + i) % 3;
            c.node(via).core.propose(format!("r{round}-{i}").as_bytes());
        }
        c.stabilize();
    }
    let reference: Vec<(Index, Bytes)> = c
        .node(1)
        .applied
        .iter()
        .map(|e| (e.index, e.data.clone()))
        .collect();
    assert!(reference.len() > 25);
    for id in 2..=3 {
        let applied: Vec<(Index, Bytes)> = c
            .node(id)
            .applied
            .iter()
            .map(|e| (e.index, e.data.clone()))
            .collect();
        assert_eq!(applied, reference, "node {id}");
    }
}

#[test]
fn a_snapshot_is_streamed_one_acknowledged_chunk_at_a_time() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    for i in 0..10 {
        c.node(1).core.propose(format!("entry {i}").as_bytes());
    }
    c.stabilize();
    // Node 3 falls behind a compacted log: a snapshot of 100 bytes goes in 16-byte chunks.
    let leader = c.node(1);
    let applied = leader.core.raw().applied_index();
    let conf = leader.core.raw().conf_state();
    leader
        .core
        .storage()
        .write_snapshot(applied, 1, &conf, &[7u8; 100])
        .unwrap();
    leader.core.storage().compact(applied).unwrap();
    let mut out = VecDeque::new();
    let term = c.node(1).core.raw().term();
    let snapshot = c.node(1).core.storage().snapshot().unwrap();
    c.node(1).core.send_snapshot(3, term, snapshot);
    c.node(1).run(&mut out);
    let chunks = |q: &VecDeque<(NodeId, NodeId, WireMessage)>| {
        q.iter()
            .filter(|(_, _, m)| matches!(m, WireMessage::SnapshotChunk(_)))
            .count()
    };
    assert_eq!(chunks(&out), 1, "one chunk in flight");
    let mut received = 0;
    for _ in 0..20 {
        let Some((f, t, m)) = out.pop_front() else {
            break;
        };
        if let WireMessage::SnapshotChunk(chunk) = &m {
            assert_eq!(chunk.offset, received);
            received += chunk.data.len() as u64;
        }
        c.nodes.get_mut(&t).unwrap().core.on_message(f, m);
        let mut next = VecDeque::new();
        c.node(t).run(&mut next);
        c.node(t).sync(&mut next);
        out.extend(next.into_iter().filter(|(_, _, m)| {
            matches!(
                m,
                WireMessage::SnapshotChunk(_) | WireMessage::SnapshotAck(_)
            )
        }));
        assert!(chunks(&out) <= 1);
    }
    assert_eq!(received, 100);
    assert!(!c.node(1).core.transfers.outgoing.is_sending_to(3));
}

#[test]
fn a_question_for_the_leader_travels_to_it_and_its_answer_back() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    let ticket = c
        .node(2)
        .core
        .ask_leader(Bytes::from_static(b"keep lease 7 alive"));
    let mut out = VecDeque::new();
    let turn = c.node(2).run(&mut out);
    assert!(turn.iter().any(|cmd| matches!(cmd, Command::Send { to: 1, message: WireMessage::LeaderRequest(_), if_unsent: Some(Unsent::Forward(t)) } if *t == ticket)));
    c.outbox = out;
    c.deliver(2, 1);
    let mut out = VecDeque::new();
    let turn = c.node(1).run(&mut out);
    let asker = turn.iter().find_map(|cmd| match cmd {
        Command::ServeLeaderRequest { asker, data } if &data[..] == b"keep lease 7 alive" => {
            Some(*asker)
        }
        _ => None,
    });
    let asker = asker.expect("the leader serves it");
    c.node(1)
        .core
        .on_leader_served(asker, Ok(Bytes::from_static(b"ttl 30")));
    c.node(1).run(&mut out);
    c.outbox = out;
    c.deliver(1, 2);
    let mut out = VecDeque::new();
    let turn = c.node(2).run(&mut out);
    assert!(turn.contains(&Command::Answer {
        ticket,
        answer: Answer::Asked(Ok(Bytes::from_static(b"ttl 30"))),
    }));
}

#[test]
fn a_proposal_displaced_by_a_new_leaders_entry_fails_as_dropped() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    c.clear_outbox();
    // Leader 1 appends a proposal nobody else receives, then is cut off.
    let ticket = c.node(1).core.propose(b"lost");
    let mut lost = VecDeque::new();
    c.node(1).run(&mut lost);
    c.node(1).sync(&mut lost);
    c.isolated.insert(1);
    // Nodes 2 and 3 lose it (the transport says so, which wakes their quiesced group),
    // elect 2 and commit another entry there.
    for id in [2, 3] {
        c.node(id).core.on_unreachable(1);
    }
    for _ in 0..40 {
        for id in [2, 3] {
            if !c.node(id).core.is_quiesced() {
                c.node(id).core.on_tick();
            }
        }
        c.stabilize();
        if c.node(2).core.raw().role() == StateRole::Leader
            || c.node(3).core.raw().role() == StateRole::Leader
        {
            break;
        }
    }
    let new_leader = if c.node(2).core.raw().role() == StateRole::Leader {
        2
    } else {
        3
    };
    c.node(new_leader).core.propose(b"kept");
    c.stabilize();
    // Back together, node 1's entry is overwritten.
    c.isolated.clear();
    for _ in 0..3 {
        c.tick_awake();
    }
    let failed = c.node(1).log.iter().find_map(|cmd| match cmd {
        Command::Answer {
            ticket: t,
            answer: Answer::Failed(e),
        } if *t == ticket => Some(e.clone()),
        _ => None,
    });
    assert_eq!(failed, Some(ProposeError::Dropped));
    assert!(!c.node(1).applied.iter().any(|e| e.data.ends_with(b"lost")));
}

#[test]
fn the_commit_of_a_membership_change_is_recorded_for_restarts() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    let change = MembershipChange::Remove { id: 3 };
    c.node(1).core.propose_membership(&change);
    c.stabilize();
    for id in 1..=2 {
        let recorded = c.node(id).log.iter().rev().find_map(|cmd| match cmd {
            Command::RecordCommit(hs) => Some(hs.commit),
            _ => None,
        });
        let conf_index = c
            .node(id)
            .applied
            .iter()
            .rev()
            .find(|e| e.kind == ordo_raft::EntryKind::ConfChange)
            .map(|e| e.index)
            .expect("the change was applied");
        assert!(
            recorded.is_some_and(|commit| commit >= conf_index),
            "node {id} recorded {recorded:?}, the change is at {conf_index}"
        );
    }
}

// ---- Quiescence -----------------------------------------------------------------------

impl TestCluster {
    /// Ticks every node that is not quiesced, then delivers everything.
    fn tick_awake(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if !self.node(id).core.is_quiesced() {
                self.node(id).core.on_tick();
            }
        }
        self.stabilize();
    }

    /// Ticks until every node is quiesced; panics if that takes more than `ticks_max`.
    fn tick_until_quiesced(&mut self, ticks_max: usize) {
        for _ in 0..ticks_max {
            if self.nodes.values().all(|n| n.core.is_quiesced()) {
                return;
            }
            self.tick_awake();
        }
        let awake: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.core.is_quiesced())
            .map(|(&id, _)| id)
            .collect();
        panic!("nodes {awake:?} still tick after {ticks_max} ticks");
    }

    fn quiesced(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.core.is_quiesced())
            .map(|(&id, _)| id)
            .collect()
    }
}

fn is_quiesce(m: &WireMessage) -> bool {
    matches!(m, WireMessage::Quiesce(_))
}

/// Three nodes, 1 leading, an entry applied everywhere, everyone quiesced.
fn quiesced_cluster() -> TestCluster {
    let mut c = TestCluster::new(3);
    c.elect(1);
    c.node(2).core.propose(b"x");
    c.stabilize();
    c.tick_until_quiesced(5);
    c
}

#[test]
fn a_leader_quiesces_its_group_as_soon_as_its_write_is_everywhere_and_applied() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    let quiesces = c.node(1).core.metrics.snapshot().quiesces;
    let logged = c.node(1).log.len();
    c.node(1).core.propose(b"x");
    // No tick: once the last answer is in and the entry applied, the leader quiesces.
    c.stabilize();
    assert_eq!(c.quiesced(), vec![1, 2, 3]);
    let last = c.node(1).core.raw().last_index();
    let term = c.node(1).core.raw().term();
    let quiesce = WireMessage::Quiesce(crate::codec::Quiesce { term, commit: last });
    let sent: Vec<NodeId> = c.node(1).log[logged..]
        .iter()
        .filter_map(|cmd| match cmd {
            Command::Send { to, message, .. } if is_quiesce(message) => {
                assert_eq!(*message, quiesce);
                Some(*to)
            }
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![2, 3]);
    // The commit index reached the followers with the quiesce alone: the notices held for
    // the last answer were dropped when the group quiesced in the turn that released them.
    let notices = c.node(1).log[logged..]
        .iter()
        .filter(|cmd| {
            matches!(cmd, Command::Send { message: WireMessage::Raft(m), .. }
                if matches!(m.body, MessageBody::CommitNotice { .. }))
        })
        .count();
    assert_eq!(notices, 0);
    for id in 2..=3 {
        let status = c.node(id).core.status();
        assert_eq!((status.commit_index, status.applied_index), (last, last));
        assert!(status.quiesced);
    }
    assert_eq!(c.node(1).core.metrics.snapshot().quiesces, quiesces + 1);
}

#[test]
fn a_lagging_follower_keeps_the_leader_from_quiescing_until_it_catches_up() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    c.isolated.insert(3);
    c.node(1).core.propose(b"x");
    c.stabilize();
    for _ in 0..5 {
        c.tick_awake();
        assert!(!c.node(1).core.is_quiesced(), "node 3 lacks the entry");
    }
    c.isolated.clear();
    // The next heartbeat's answer shows node 3 behind; the leader sends it the entry.
    c.tick_until_quiesced(10);
    let last = c.node(1).core.raw().last_index();
    assert_eq!(c.node(3).core.status().applied_index, last);
}

#[test]
fn a_follower_refuses_a_quiesce_for_another_log_term_or_leader_and_keeps_ticking() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    c.tick_until_quiesced(5);
    // Node 2 loses node 3 and wakes; the leader stays quiesced.
    c.node(2).core.on_unreachable(3);
    assert!(!c.node(2).core.is_quiesced());
    let term = c.node(1).core.raw().term();
    let last = c.node(2).core.raw().last_index();
    let stale = crate::codec::Quiesce {
        term,
        commit: last + 1,
    };
    c.node(2).core.on_message(1, WireMessage::Quiesce(stale));
    assert!(!c.node(2).core.is_quiesced());
    let wrong_term = crate::codec::Quiesce {
        term: term + 1,
        commit: last,
    };
    c.node(2)
        .core
        .on_message(1, WireMessage::Quiesce(wrong_term));
    assert!(!c.node(2).core.is_quiesced());
    let from_a_follower = crate::codec::Quiesce { term, commit: last };
    c.node(2)
        .core
        .on_message(3, WireMessage::Quiesce(from_a_follower));
    assert!(!c.node(2).core.is_quiesced());
}

#[test]
fn a_proposal_on_a_quiesced_follower_wakes_the_group_commits_and_it_quiesces_again() {
    let mut c = quiesced_cluster();
    let wakes = c.node(1).core.metrics.snapshot().wakes;
    let ticket = c.node(2).core.propose(b"after a while");
    assert!(!c.node(2).core.is_quiesced(), "the proposal wakes its node");
    c.stabilize();
    assert_eq!(
        c.node(1).core.metrics.snapshot().wakes,
        wakes + 1,
        "the forwarded proposal wakes the leader"
    );
    assert_eq!(
        c.quiesced(),
        vec![1, 2, 3],
        "and its commit quiesces the group"
    );
    let applied = |c: &mut TestCluster, id| {
        c.node(id)
            .applied
            .iter()
            .any(|e| e.data.ends_with(b"after a while"))
    };
    assert!((1..=3).all(|id| applied(&mut c, id)));
    assert!(c.node(2).log.iter().any(|cmd| matches!(cmd,
        Command::Apply(work) if work.proposers.iter().any(|(_, t)| *t == ticket))));
}

#[test]
fn a_read_on_a_quiesced_leader_wakes_it_and_is_confirmed_by_a_fresh_heartbeat_round() {
    let mut c = quiesced_cluster();
    let wakes = c.node(1).core.metrics.snapshot().wakes;
    let ticket = c.node(1).core.read();
    let mut out = VecDeque::new();
    let turn = c.node(1).run(&mut out);
    assert!(
        !turn.iter().any(|cmd| matches!(cmd, Command::Answer { .. })),
        "not answered before a quorum confirms: {turn:?}"
    );
    assert!(out.iter().any(|(_, _, m)| matches!(m,
        WireMessage::Raft(r) if matches!(r.body, MessageBody::Heartbeat { .. }))));
    c.outbox = out;
    c.stabilize();
    assert!(c.quiesced().is_empty(), "the heartbeats woke the followers");
    let last = c.node(1).core.raw().last_index();
    assert!(c.node(1).log.contains(&Command::Answer {
        ticket,
        answer: Answer::Read(Ok(last)),
    }));
    // A read writes nothing: the group pauses again on a tick, not at once.
    assert!(!c.node(1).core.is_quiesced());
    c.tick_until_quiesced(5);
    assert_eq!(c.node(1).core.metrics.snapshot().wakes, wakes + 1);
}

#[test]
fn a_follower_that_loses_its_quiesced_leader_campaigns_and_is_elected() {
    let mut c = quiesced_cluster();
    let term = c.node(2).core.raw().term();
    c.isolated.insert(1);
    for id in [2, 3] {
        c.node(id).core.on_unreachable(1);
        assert!(!c.node(id).core.is_quiesced());
    }
    let mut leader = None;
    for _ in 0..100 {
        for id in [2, 3] {
            c.node(id).core.on_tick();
        }
        c.stabilize();
        leader = [2, 3]
            .into_iter()
            .find(|&id| c.nodes[&id].core.raw().role() == StateRole::Leader);
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("nodes 2 and 3 elect a leader");
    assert!(c.node(leader).core.raw().term() > term);
}

#[test]
fn a_woken_follower_does_not_depose_its_quiesced_live_leader() {
    let mut c = quiesced_cluster();
    let term = c.node(1).core.raw().term();
    // Node 2 loses its connection to node 3, not to the leader: it wakes and ticks, hears
    // nothing, and asks for pre-votes, which wake the others.
    c.node(2).core.on_unreachable(3);
    assert_eq!(c.quiesced(), vec![1, 3]);
    for _ in 0..60 {
        c.tick_awake();
    }
    for id in 1..=3 {
        let raw = c.node(id).core.raw();
        assert_eq!((raw.leader_id(), raw.term()), (1, term), "node {id}");
    }
    c.tick_until_quiesced(10);
}

#[test]
fn a_member_the_transport_lost_keeps_the_leader_awake_until_it_hears_from_it() {
    let mut c = quiesced_cluster();
    c.isolated.insert(3);
    c.node(1).core.on_unreachable(3);
    assert!(!c.node(1).core.is_quiesced());
    for _ in 0..30 {
        c.tick_awake();
        assert!(!c.node(1).core.is_quiesced());
    }
    assert_eq!(c.node(1).core.raw().role(), StateRole::Leader);
    c.isolated.clear();
    c.tick_until_quiesced(10);
}

#[test]
fn a_quiesced_group_is_never_ticked() {
    let mut c = quiesced_cluster();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.node(2).core.on_tick();
    }));
    assert!(result.is_err(), "ticking a quiesced group is a runtime bug");
}

#[test]
fn a_full_apply_queue_holds_back_committed_entries_while_replication_and_heartbeats_go_on() {
    let mut c = TestCluster::new(3);
    c.elect(1);
    c.stabilize();
    // The leader's state machine takes nothing off its queue (four batches at most).
    c.node(1).held = Some(Vec::new());
    for i in 0..8 {
        c.node(1).core.propose(format!("e{i}").as_bytes());
        c.stabilize();
        let raw = c.node(1).core.raw();
        assert_eq!(raw.commit_index(), raw.last_index(), "entry {i} commits");
    }
    let held = c.node(1).held.clone().unwrap();
    assert_eq!(held.len(), 4, "no more batches than the queue holds");
    assert!(c.node(1).core.wants_apply_progress());
    // Heartbeats still leave.
    c.node(1).core.on_tick();
    let mut out = VecDeque::new();
    c.node(1).run(&mut out);
    assert!(out.iter().any(|(_, _, m)| matches!(m,
        WireMessage::Raft(r) if matches!(r.body, MessageBody::Heartbeat { .. }))));
    // The state machine catches up: the rest is handed out, in order.
    c.node(1).held = None;
    for work in held {
        c.node(1).execute(&Command::Apply(work), &mut out);
    }
    c.stabilize();
    let applied: Vec<Bytes> = c.node(1).applied.iter().map(|e| e.data.clone()).collect();
    let on_two: Vec<Bytes> = c.node(2).applied.iter().map(|e| e.data.clone()).collect();
    assert_eq!(applied, on_two);
    assert_eq!(
        c.node(1).applied.last().map(|e| e.index),
        Some(c.node(1).core.raw().commit_index())
    );
}
