//! Simulated clients: each runs one request at a time, to a random group among those that
//! exist, against whichever of the group's nodes it believes is leader; follows redirects,
//! retries with a bound, and records every operation in its group's history, which is checked
//! for linearizability on its own (groups are separate stores).
//!
//! The store, as etcd's, does not recognise a retried write: a client retries a write only
//! when the node said it was not applied (refused, or overwritten by a new leader's
//! entry). A write whose attempt timed out or whose fate the node could not tell is left
//! with an unknown outcome, which the linearizability check allows for; reads are
//! retried freely.

use std::collections::BTreeMap;

use bytes::Bytes;
use ordo_lincheck::{History, KvInput, KvOutput, OpId};
use ordo_node::GroupId;
use ordo_raft::{Index, NodeId, Term};

use crate::prng::Prng;

/// The histories of the clients' operations, one per group.
pub type Histories = BTreeMap<GroupId, History<KvInput, KvOutput>>;

/// The groups clients may use now, each with the nodes that run it.
pub type Directory = BTreeMap<GroupId, Vec<NodeId>>;

/// What a client asks a node to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// Read a key linearizably.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Write a key.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Compare-and-set a key.
    Cas {
        /// The key.
        key: Bytes,
        /// The value expected (`None`: absent).
        expected: Option<Bytes>,
        /// The value to store on a match.
        new: Bytes,
    },
}

impl ClientOp {
    /// The operation as the linearizability checker sees it.
    pub fn to_input(&self) -> KvInput {
        match self.clone() {
            ClientOp::Get { key } => KvInput::Get { key },
            ClientOp::Put { key, value } => KvInput::Put { key, value },
            ClientOp::Cas { key, expected, new } => KvInput::Cas { key, expected, new },
        }
    }
}

/// The result of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// The put was applied.
    Done,
    /// Whether the compare-and-set matched.
    Cas(bool),
}

/// A request on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The group asked.
    pub group: GroupId,
    /// The session.
    pub client_id: u64,
    /// The request's number in the session; a retry reuses it.
    pub request_id: u64,
    /// Which attempt at the request this is (1-based): the answer names it, so that a late
    /// refusal of an earlier attempt is not taken for the current one's.
    pub attempt: u32,
    /// What to do.
    pub op: ClientOp,
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The value read.
    Value(Option<Bytes>),
    /// The write was applied at (`index`, `term`) with `result`.
    Written {
        /// The write's result.
        result: WriteResult,
        /// Where it was committed.
        index: Index,
        /// The entry's term.
        term: Term,
    },
    /// This node did not do what was asked (a write was not applied); try `leader` (or
    /// anyone, when unknown).
    NotLeader {
        /// The leader the node knows of.
        leader: Option<NodeId>,
    },
    /// The node cannot tell whether the write was applied (its leader changed before it
    /// confirmed the write, or a snapshot covered it).
    Unknown,
}

/// A response on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The session.
    pub client_id: u64,
    /// The request answered.
    pub request_id: u64,
    /// The attempt answered.
    pub attempt: u32,
    /// The answer.
    pub reply: Reply,
}

/// How clients behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Keys the workload touches (`k0`, `k1`, ...); few keys make conflicts likely.
    pub keys: u64,
    /// How long to wait for one attempt's answer.
    pub attempt_timeout_ticks: u64,
    /// Attempts per request before giving up (the outcome is then unknown).
    pub attempts_max: u32,
    /// Longest pause between one request's end and the next one's start.
    pub think_ticks_max: u64,
    /// Pause after a "no leader known" answer, before trying a random node.
    pub backoff_ticks: u64,
}

/// What a client did, for the trace and for the acknowledged-write checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A request was sent to a node.
    Sent {
        /// The client.
        client_id: u64,
        /// The target.
        node: NodeId,
        /// The attempt number (1-based).
        attempt: u32,
        /// The request.
        request: Request,
    },
    /// A request finished with an answer.
    Completed {
        /// The client.
        client_id: u64,
        /// The request.
        request: Request,
        /// The answer.
        reply: Reply,
    },
    /// A request ran out of attempts; its outcome is unknown.
    GaveUp {
        /// The client.
        client_id: u64,
        /// The request.
        request: Request,
    },
}

#[derive(Debug, Clone)]
enum State {
    Thinking {
        until_ticks: u64,
    },
    Waiting {
        request: Request,
        op: OpId,
        attempt: u32,
        target: NodeId,
        deadline_ticks: u64,
    },
    /// Refused with no leader known: wait before the next attempt, so that attempts are not
    /// all spent during one election.
    Backoff {
        request: Request,
        op: OpId,
        attempt: u32,
        until_ticks: u64,
    },
    Stopped,
}

/// One client session.
#[derive(Debug, Clone)]
pub struct Client {
    id: u64,
    config: ClientConfig,
    prng: Prng,
    state: State,
    request_id_last: u64,
    /// The node believed to lead each group.
    leader_guess: BTreeMap<GroupId, NodeId>,
    /// The last value this client saw per group and key, used as the expectation of its CAS
    /// requests.
    seen: BTreeMap<(GroupId, Bytes), Option<Bytes>>,
    values_written: u64,
    stopping: bool,
}

impl Client {
    /// A client that starts after a random pause.
    pub fn new(id: u64, config: ClientConfig, mut prng: Prng) -> Client {
        assert!(config.keys >= 1 && config.attempts_max >= 1);
        assert!(config.attempt_timeout_ticks >= 1);
        let until_ticks = prng.range(0, config.think_ticks_max);
        Client {
            id,
            config,
            prng,
            state: State::Thinking { until_ticks },
            request_id_last: 0,
            leader_guess: BTreeMap::new(),
            seen: BTreeMap::new(),
            values_written: 0,
            stopping: false,
        }
    }

    /// The client's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether a request is outstanding.
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, State::Waiting { .. } | State::Backoff { .. })
    }

    /// Starts no new request after the current one.
    pub fn stop(&mut self) {
        self.stopping = true;
        if let State::Thinking { .. } = self.state {
            self.state = State::Stopped;
        }
    }

    /// A random node running `group`, if the group still exists.
    fn random_node(&mut self, group: GroupId, directory: &Directory) -> Option<NodeId> {
        let nodes = directory.get(&group)?;
        self.prng.choose(nodes).copied()
    }

    /// A random existing group; no draw when there is only one, so that a run of one group
    /// makes the same choices it always did.
    fn random_group(&mut self, directory: &Directory) -> Option<GroupId> {
        let groups: Vec<GroupId> = directory.keys().copied().collect();
        match groups.len() {
            0 => None,
            1 => Some(groups[0]),
            _ => self.prng.choose(&groups).copied(),
        }
    }

    fn next_op(&mut self, group: GroupId) -> ClientOp {
        let key = Bytes::from(format!("k{}", self.prng.below(self.config.keys)));
        match self.prng.below(10) {
            0..=3 => ClientOp::Get { key },
            4..=6 => {
                self.values_written += 1;
                let value = Bytes::from(format!("c{}v{}", self.id, self.values_written));
                ClientOp::Put { key, value }
            }
            _ => {
                self.values_written += 1;
                let new = Bytes::from(format!("c{}v{}", self.id, self.values_written));
                let expected = self.seen.get(&(group, key.clone())).cloned().flatten();
                ClientOp::Cas { key, expected, new }
            }
        }
    }

    fn send(
        &mut self,
        now_ticks: u64,
        request: Request,
        op: OpId,
        attempt: u32,
        target: NodeId,
        out: &mut Vec<(NodeId, Request)>,
        events: &mut Vec<ClientEvent>,
    ) {
        let request = Request { attempt, ..request };
        out.push((target, request.clone()));
        events.push(ClientEvent::Sent {
            client_id: self.id,
            node: target,
            attempt,
            request: request.clone(),
        });
        self.state = State::Waiting {
            request,
            op,
            attempt,
            target,
            deadline_ticks: now_ticks + self.config.attempt_timeout_ticks,
        };
    }

    /// Tries the outstanding request again elsewhere, or gives up after the last attempt.
    #[allow(clippy::too_many_arguments)]
    fn retry(
        &mut self,
        now_ticks: u64,
        target: Option<NodeId>,
        directory: &Directory,
        out: &mut Vec<(NodeId, Request)>,
        events: &mut Vec<ClientEvent>,
    ) {
        let State::Waiting {
            request,
            op,
            attempt,
            ..
        } = self.state.clone()
        else {
            return;
        };
        if attempt >= self.config.attempts_max {
            events.push(ClientEvent::GaveUp {
                client_id: self.id,
                request,
            });
            self.think(now_ticks);
            return;
        }
        let Some(target) = target.or_else(|| self.random_node(request.group, directory)) else {
            self.give_up(now_ticks, events);
            return;
        };
        self.send(now_ticks, request, op, attempt + 1, target, out, events);
    }

    fn give_up(&mut self, now_ticks: u64, events: &mut Vec<ClientEvent>) {
        let (State::Waiting { request, .. } | State::Backoff { request, .. }) = self.state.clone()
        else {
            return;
        };
        events.push(ClientEvent::GaveUp {
            client_id: self.id,
            request,
        });
        self.think(now_ticks);
    }

    fn back_off(&mut self, now_ticks: u64, events: &mut Vec<ClientEvent>) {
        let State::Waiting {
            request,
            op,
            attempt,
            ..
        } = self.state.clone()
        else {
            return;
        };
        if attempt >= self.config.attempts_max {
            events.push(ClientEvent::GaveUp {
                client_id: self.id,
                request,
            });
            self.think(now_ticks);
            return;
        }
        self.state = State::Backoff {
            request,
            op,
            attempt,
            until_ticks: now_ticks + self.config.backoff_ticks,
        };
    }

    fn think(&mut self, now_ticks: u64) {
        if self.stopping {
            self.state = State::Stopped;
            return;
        }
        let pause = self.prng.range(0, self.config.think_ticks_max);
        self.state = State::Thinking {
            until_ticks: now_ticks + pause,
        };
    }

    /// Advances the client to `now_ticks`: starts a request when its pause is over, retries one
    /// whose attempt timed out. Requests to send are pushed to `out`.
    pub fn poll(
        &mut self,
        now_ticks: u64,
        directory: &Directory,
        histories: &mut Histories,
        out: &mut Vec<(NodeId, Request)>,
        events: &mut Vec<ClientEvent>,
    ) {
        if let State::Waiting { request, .. } | State::Backoff { request, .. } = &self.state {
            if !directory.contains_key(&request.group) {
                // The group was removed: nobody will answer, and whether a write was applied
                // before it went cannot be known.
                self.give_up(now_ticks, events);
                return;
            }
        }
        match self.state {
            State::Thinking { until_ticks } if until_ticks <= now_ticks => {
                let Some(group) = self.random_group(directory) else {
                    return;
                };
                let op = self.next_op(group);
                self.request_id_last += 1;
                let request = Request {
                    group,
                    client_id: self.id,
                    request_id: self.request_id_last,
                    attempt: 1,
                    op,
                };
                let nodes = &directory[&group];
                let guess = self.leader_guess.get(&group).copied();
                let Some(target) = guess
                    .filter(|leader| nodes.contains(leader))
                    .or_else(|| self.random_node(group, directory))
                else {
                    return;
                };
                let history = histories.entry(group).or_default();
                let id = history.invoke(self.id, request.op.to_input(), now_ticks);
                self.send(now_ticks, request, id, 1, target, out, events);
            }
            State::Waiting {
                deadline_ticks,
                ref request,
                ..
            } if deadline_ticks <= now_ticks => {
                self.leader_guess.remove(&request.group);
                if matches!(request.op, ClientOp::Get { .. }) {
                    self.retry(now_ticks, None, directory, out, events);
                } else {
                    // It may still be applied: trying again could apply it twice.
                    self.give_up(now_ticks, events);
                }
            }
            State::Backoff {
                ref request,
                op,
                attempt,
                until_ticks,
            } if until_ticks <= now_ticks => {
                let request = request.clone();
                let Some(target) = self.random_node(request.group, directory) else {
                    return;
                };
                self.send(now_ticks, request, op, attempt + 1, target, out, events);
            }
            _ => {}
        }
    }

    /// Handles a node's response. Answers to anything but the outstanding request (late
    /// answers to earlier attempts are matched by request id, so they count) are ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn on_response(
        &mut self,
        now_ticks: u64,
        from: NodeId,
        response: Response,
        directory: &Directory,
        histories: &mut Histories,
        out: &mut Vec<(NodeId, Request)>,
        events: &mut Vec<ClientEvent>,
    ) {
        let State::Waiting {
            request,
            op,
            target,
            attempt,
            ..
        } = self.state.clone()
        else {
            return;
        };
        if response.request_id != request.request_id {
            return;
        }
        let group = request.group;
        let output = match (&request.op, &response.reply) {
            (ClientOp::Get { key }, Reply::Value(value)) => {
                self.seen.insert((group, key.clone()), value.clone());
                KvOutput::Value(value.clone())
            }
            (
                ClientOp::Put { key, value },
                Reply::Written {
                    result: WriteResult::Done,
                    ..
                },
            ) => {
                self.seen.insert((group, key.clone()), Some(value.clone()));
                KvOutput::Done
            }
            (
                ClientOp::Cas { key, new, .. },
                Reply::Written {
                    result: WriteResult::Cas(matched),
                    ..
                },
            ) => {
                if *matched {
                    self.seen.insert((group, key.clone()), Some(new.clone()));
                } else {
                    self.seen.remove(&(group, key.clone()));
                }
                KvOutput::Cas(*matched)
            }
            (_, Reply::Unknown) => {
                if response.attempt == attempt {
                    self.give_up(now_ticks, events);
                }
                return;
            }
            (_, Reply::NotLeader { leader }) => {
                // Only the current attempt may be redirected; a late refusal of an earlier
                // one (maybe sent by the same node) must not start a second copy.
                if response.attempt != attempt || from != target {
                    return;
                }
                match leader {
                    Some(leader) => self.leader_guess.insert(group, *leader),
                    None => self.leader_guess.remove(&group),
                };
                match leader {
                    Some(leader) if *leader != from => {
                        self.retry(now_ticks, Some(*leader), directory, out, events);
                    }
                    _ => self.back_off(now_ticks, events),
                }
                return;
            }
            (op, reply) => panic!(
                "client {} got reply {reply:?} to {op:?}: the node answered the wrong kind",
                self.id
            ),
        };
        self.leader_guess.insert(group, from);
        histories
            .get_mut(&group)
            .and_then(|history| history.complete(op, output, now_ticks).ok())
            .expect("a waiting request is open in its group's history");
        events.push(ClientEvent::Completed {
            client_id: self.id,
            request,
            reply: response.reply,
        });
        self.think(now_ticks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: GroupId = GroupId(1);

    /// One group, on `nodes`.
    fn directory(nodes: &[NodeId]) -> Directory {
        Directory::from([(G, nodes.to_vec())])
    }

    pub(super) fn config() -> ClientConfig {
        ClientConfig {
            keys: 2,
            attempt_timeout_ticks: 10,
            attempts_max: 3,
            think_ticks_max: 0,
            backoff_ticks: 5,
        }
    }

    /// A client whose first request is a read (`reads`) or a write.
    fn client_starting_with(reads: bool) -> Client {
        (0..100)
            .map(|seed| Client::new(1, config(), Prng::new(seed)))
            .find(|c| {
                let mut c = c.clone();
                matches!(c.next_op(G), ClientOp::Get { .. }) == reads
            })
            .expect("some seed starts with each kind")
    }

    #[test]
    fn a_read_retries_on_timeout_then_gives_up_with_unknown_outcome() {
        let mut client = client_starting_with(true);
        let mut history = Histories::new();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let nodes = directory(&[1, 2, 3]);
        client.poll(0, &nodes, &mut history, &mut out, &mut events);
        assert_eq!(out.len(), 1);
        for now in [10, 20] {
            client.poll(now, &nodes, &mut history, &mut out, &mut events);
        }
        assert_eq!(out.len(), 3, "three attempts");
        assert!(out.iter().all(|(_, request)| request.request_id == 1));
        client.poll(30, &nodes, &mut history, &mut out, &mut events);
        assert!(matches!(events.last(), Some(ClientEvent::GaveUp { .. })));
        assert_eq!(history[&G].operations()[0].return_time(), None);
    }

    #[test]
    fn a_write_that_times_out_is_not_retried_its_outcome_unknown() {
        let mut client = client_starting_with(false);
        let mut history = Histories::new();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let nodes = directory(&[1, 2, 3]);
        client.poll(0, &nodes, &mut history, &mut out, &mut events);
        client.poll(10, &nodes, &mut history, &mut out, &mut events);
        assert_eq!(out.len(), 1, "one attempt only");
        assert!(matches!(events.last(), Some(ClientEvent::GaveUp { .. })));
        assert_eq!(history[&G].operations()[0].return_time(), None);
    }

    #[test]
    fn redirect_goes_to_the_named_leader() {
        let mut client = Client::new(1, config(), Prng::new(2));
        let mut history = Histories::new();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let nodes = directory(&[1, 2, 3]);
        client.poll(0, &nodes, &mut history, &mut out, &mut events);
        let (target, request) = out[0].clone();
        let leader = if target == 3 { 2 } else { 3 };
        client.on_response(
            1,
            target,
            Response {
                client_id: 1,
                request_id: request.request_id,
                attempt: request.attempt,
                reply: Reply::NotLeader {
                    leader: Some(leader),
                },
            },
            &nodes,
            &mut history,
            &mut out,
            &mut events,
        );
        assert_eq!(out[1].0, leader);
        assert_eq!(
            out[1].1,
            Request {
                attempt: 2,
                ..request
            }
        );
    }

    #[test]
    fn refusal_without_a_leader_waits_before_retrying() {
        let mut client = Client::new(1, config(), Prng::new(4));
        let mut history = Histories::new();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let nodes = directory(&[1, 2, 3]);
        client.poll(0, &nodes, &mut history, &mut out, &mut events);
        let (target, request) = out[0].clone();
        client.on_response(
            1,
            target,
            Response {
                client_id: 1,
                request_id: request.request_id,
                attempt: request.attempt,
                reply: Reply::NotLeader { leader: None },
            },
            &nodes,
            &mut history,
            &mut out,
            &mut events,
        );
        assert_eq!(out.len(), 1, "no retry during the backoff");
        client.poll(5, &nodes, &mut history, &mut out, &mut events);
        assert_eq!(out.len(), 1, "backoff is 5 ticks from tick 1");
        client.poll(6, &nodes, &mut history, &mut out, &mut events);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[1].1,
            Request {
                attempt: 2,
                ..request
            }
        );
    }

    #[test]
    fn a_late_refusal_of_an_earlier_attempt_does_not_start_another() {
        let mut client = client_starting_with(false);
        let mut history = Histories::new();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        // One node: every attempt goes to it.
        let nodes = directory(&[1]);
        client.poll(0, &nodes, &mut history, &mut out, &mut events);
        let first = out[0].1.clone();
        let refuse = |attempt| Response {
            client_id: 1,
            request_id: first.request_id,
            attempt,
            reply: Reply::NotLeader { leader: None },
        };
        client.on_response(1, 1, refuse(1), &nodes, &mut history, &mut out, &mut events);
        client.poll(6, &nodes, &mut history, &mut out, &mut events);
        assert_eq!(out.len(), 2, "the second attempt after the backoff");
        // The first attempt's refusal arrives again, late: the second attempt still waits.
        client.on_response(7, 1, refuse(1), &nodes, &mut history, &mut out, &mut events);
        client.poll(12, &nodes, &mut history, &mut out, &mut events);
        assert_eq!(out.len(), 2, "no third copy of the write");
        assert!(client.is_waiting());
    }

    #[test]
    fn answer_completes_the_operation_in_the_history() {
        let mut client = Client::new(1, config(), Prng::new(3));
        let mut history = Histories::new();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let nodes = directory(&[1]);
        client.poll(0, &nodes, &mut history, &mut out, &mut events);
        let request = out[0].1.clone();
        let reply = match request.op {
            ClientOp::Get { .. } => Reply::Value(None),
            ClientOp::Put { .. } => Reply::Written {
                result: WriteResult::Done,
                index: 1,
                term: 1,
            },
            ClientOp::Cas { .. } => Reply::Written {
                result: WriteResult::Cas(false),
                index: 1,
                term: 1,
            },
        };
        client.on_response(
            4,
            1,
            Response {
                client_id: 1,
                request_id: request.request_id,
                attempt: request.attempt,
                reply,
            },
            &nodes,
            &mut history,
            &mut out,
            &mut events,
        );
        assert_eq!(history[&G].operations()[0].return_time(), Some(4));
        assert!(!client.is_waiting());
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;

    use super::tests::config;

    #[test]
    fn requests_name_their_group_and_go_to_its_nodes() {
        let directory = Directory::from([(GroupId(1), vec![1, 2, 3]), (GroupId(7), vec![4, 5])]);
        let mut histories = Histories::new();
        let mut groups_used = std::collections::BTreeSet::new();
        for seed in 0..40 {
            let mut client = Client::new(1, config(), Prng::new(seed));
            let (mut out, mut events) = (Vec::new(), Vec::new());
            client.poll(0, &directory, &mut histories, &mut out, &mut events);
            let (target, request) = out.pop().expect("a request");
            assert!(directory[&request.group].contains(&target), "seed {seed}");
            groups_used.insert(request.group);
        }
        assert_eq!(groups_used.len(), 2, "both groups are used");
        let operations: usize = histories.values().map(|h| h.operations().len()).sum();
        assert_eq!(operations, 40, "each operation is in its group's history");
    }

    #[test]
    fn a_request_to_a_removed_group_gives_up_with_unknown_outcome() {
        let mut directory = Directory::from([(GroupId(9), vec![1])]);
        let mut histories = Histories::new();
        let (mut out, mut events) = (Vec::new(), Vec::new());
        let mut client = Client::new(1, config(), Prng::new(1));
        client.poll(0, &directory, &mut histories, &mut out, &mut events);
        assert!(client.is_waiting());
        directory.clear();
        client.poll(1, &directory, &mut histories, &mut out, &mut events);
        assert!(matches!(events.last(), Some(ClientEvent::GaveUp { .. })));
        assert!(!client.is_waiting());
        assert_eq!(histories[&GroupId(9)].operations()[0].return_time(), None);
        assert_eq!(out.len(), 1, "nothing is sent to a group that is gone");
    }
}
