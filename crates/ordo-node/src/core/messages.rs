//! Peer messages into the group core: Raft messages, forwarded proposals and their
//! answers, snapshot chunks and their acknowledgements, questions for the leader.

use bytes::Bytes;
use ordo_raft::{ConfChange, Message, MessageBody, NodeId, SnapshotStatus, StateRole};

use super::transfers::{AckOutcome, ChunkShape, Incoming};
use super::{Answer, Asker, Command, GroupCore, Unsent};
use crate::codec::{
    ForwardKind, ForwardOutcome, ForwardProposal, ForwardReply, LeaderOutcome, LeaderReply,
    LeaderRequest, SnapshotAck, SnapshotChunk, WireMessage,
};
use crate::group::{AskError, ProposeError};
use crate::storage::LogStore;

impl<St: LogStore> GroupCore<St> {
    /// A decoded message from peer `from`.
    pub fn on_message(&mut self, from: NodeId, message: WireMessage) {
        self.note_heard_from(from);
        if !matches!(message, WireMessage::Quiesce(_)) {
            self.wake("a peer message");
        }
        match message {
            WireMessage::Quiesce(q) => self.on_quiesce(from, q),
            WireMessage::Raft(m) => self.on_raft(from, m),
            WireMessage::Forward(f) => self.on_forward(from, f),
            WireMessage::ForwardReply(r) => self.on_forward_reply(r),
            WireMessage::SnapshotChunk(c) => self.on_snapshot_chunk(from, c),
            WireMessage::SnapshotAck(a) => self.on_snapshot_ack(from, a),
            WireMessage::LeaderRequest(r) => self.on_leader_request(from, r),
            WireMessage::LeaderReply(r) => self.on_leader_reply(r),
        }
    }

    fn on_raft(&mut self, from: NodeId, m: Message) {
        if m.from != from || m.to != self.config.node_id {
            tracing::debug!(group = %self.config.group_id, from, "misaddressed message dropped");
            return;
        }
        if let Err(error) = self.raw.step(m) {
            tracing::debug!(group = %self.config.group_id, from, %error, "message refused by the Raft core");
        }
    }

    /// As leader, proposes a follower's proposal and tells it where the entry landed.
    fn on_forward(&mut self, from: NodeId, f: ForwardProposal) {
        let max = self.config.proposal_bytes_max + crate::ENVELOPE_BYTES;
        let outcome = if let Some((index, term)) = self.waiting.forwarded.get(&f.request) {
            // A second copy: the first was appended there, whatever became of it.
            ForwardOutcome::Accepted { index, term }
        } else if f.data.len() > max {
            ForwardOutcome::Rejected {
                reason: format!("proposal exceeds {} bytes", self.config.proposal_bytes_max),
            }
        } else {
            let result = match f.kind {
                ForwardKind::Normal => self.raw.propose(f.data),
                ForwardKind::ConfChange => match ConfChange::decode(&f.data) {
                    Ok(cc) => self.raw.propose_conf_change(&cc),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(id) => {
                    self.waiting
                        .forwarded
                        .insert(f.request, (id.index, id.term));
                    ForwardOutcome::Accepted {
                        index: id.index,
                        term: id.term,
                    }
                }
                Err(ordo_raft::Error::NotLeader { leader_id }) => {
                    ForwardOutcome::NotLeader { leader: leader_id }
                }
                Err(ordo_raft::Error::NoLeader) => ForwardOutcome::NotLeader { leader: 0 },
                Err(e) => ForwardOutcome::Rejected {
                    reason: e.to_string(),
                },
            }
        };
        let reply = ForwardReply {
            request: f.request,
            outcome,
        };
        self.send(from, WireMessage::ForwardReply(reply));
    }

    fn on_forward_reply(&mut self, r: ForwardReply) {
        let Some(ticket) = self.own_ticket(&r.request) else {
            return;
        };
        // Once the leader said where the entry landed, later answers (a second copy's) add
        // nothing: the entry's fate is decided by what is applied there.
        if !self.waiting.proposals.contains(ticket) || self.waiting.proposals.is_bound(ticket) {
            return;
        }
        let error = match r.outcome {
            ForwardOutcome::Accepted { index, term } => {
                if index > self.apply.handed_out {
                    self.bind(ticket, index, term);
                    return;
                }
                // Entries up to the position were handed out already and this proposal
                // was not among them: another entry took its place, or a snapshot covered
                // it and nobody can tell.
                if index <= self.apply.restored_through {
                    ProposeError::OutcomeUnknown
                } else {
                    ProposeError::Dropped
                }
            }
            ForwardOutcome::NotLeader { leader: 0 } => ProposeError::NoLeader,
            ForwardOutcome::NotLeader { leader } => ProposeError::NotLeader { leader },
            ForwardOutcome::Rejected { reason } => ProposeError::Rejected(reason),
        };
        self.waiting.proposals.take(ticket);
        self.answer(ticket, Answer::Failed(error));
    }

    fn on_snapshot_chunk(&mut self, from: NodeId, c: SnapshotChunk) {
        let transfer_id = c.transfer_id;
        let incoming = self.transfers.incoming.remove(&from);
        let max = self.config.snapshot_bytes_max;
        let (next_offset, ok) = match Incoming::accept(incoming, c, max) {
            Ok((incoming, None)) => {
                let next = incoming.received();
                self.transfers.incoming.insert(from, incoming);
                (next, true)
            }
            Ok((_, Some(done))) => {
                let next = done.snapshot.data.len() as u64;
                let snapshot = done.snapshot;
                tracing::info!(group = %self.config.group_id, from, index = snapshot.meta.index, term = snapshot.meta.term, "snapshot received");
                // Learn the members' addresses before the configuration names them.
                self.record_members(
                    done.members
                        .into_iter()
                        .map(|(id, a)| (id, Some(a)))
                        .collect(),
                );
                let m = Message {
                    from,
                    to: self.config.node_id,
                    term: done.term,
                    body: MessageBody::Snapshot { snapshot },
                };
                if let Err(error) = self.raw.step(m) {
                    tracing::debug!(group = %self.config.group_id, from, %error, "snapshot refused by the Raft core");
                }
                (next, true)
            }
            Err(error) => {
                tracing::warn!(group = %self.config.group_id, from, %error, "snapshot transfer refused");
                (0, false)
            }
        };
        let ack = SnapshotAck {
            transfer_id,
            next_offset,
            ok,
        };
        self.send(from, WireMessage::SnapshotAck(ack));
    }

    fn on_snapshot_ack(&mut self, from: NodeId, ack: SnapshotAck) {
        let shape = ChunkShape {
            chunk_bytes: self.config.snapshot_chunk_bytes,
            members: &self.members,
        };
        match self
            .transfers
            .outgoing
            .on_ack(from, &ack, self.ticks, shape)
        {
            AckOutcome::Stale => {}
            AckOutcome::Next(chunk) => self.push(Command::Send {
                to: from,
                message: WireMessage::SnapshotChunk(*chunk),
                if_unsent: Some(Unsent::Chunk {
                    to: from,
                    transfer_id: ack.transfer_id,
                }),
            }),
            AckOutcome::Ended(ok) => {
                tracing::info!(group = %self.config.group_id, to = from, ok, "snapshot transfer ended");
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(from, status);
            }
        }
    }

    fn on_leader_request(&mut self, from: NodeId, r: LeaderRequest) {
        if self.raw.role() == StateRole::Leader {
            self.push(Command::ServeLeaderRequest {
                asker: Asker::Peer {
                    from,
                    request: r.request,
                },
                data: r.data,
            });
            return;
        }
        let reply = LeaderReply {
            request: r.request,
            outcome: LeaderOutcome::NotLeader {
                leader: self.raw.leader_id(),
            },
        };
        self.send(from, WireMessage::LeaderReply(reply));
    }

    /// The face's leader service answered a question.
    pub fn on_leader_served(&mut self, asker: Asker, result: Result<Bytes, String>) {
        match asker {
            Asker::Local(ticket) => {
                let answer = result.map_err(AskError::Refused);
                self.answer(ticket, Answer::Asked(answer));
            }
            Asker::Peer { from, request } => {
                let outcome = match result {
                    Ok(data) if data.len() <= crate::codec::LEADER_REQUEST_BYTES_MAX => {
                        LeaderOutcome::Served(data)
                    }
                    Ok(data) => LeaderOutcome::Refused(format!(
                        "the answer of {} bytes exceeds the limit of {}",
                        data.len(),
                        crate::codec::LEADER_REQUEST_BYTES_MAX
                    )),
                    Err(reason) => LeaderOutcome::Refused(reason),
                };
                let reply = LeaderReply { request, outcome };
                self.send(from, WireMessage::LeaderReply(reply));
            }
        }
    }

    fn on_leader_reply(&mut self, r: LeaderReply) {
        let Some(ticket) = self.own_ticket(&r.request) else {
            return;
        };
        if self.waiting.asks.remove(&ticket).is_none() {
            return;
        }
        let answer = match r.outcome {
            LeaderOutcome::Served(data) => Ok(data),
            LeaderOutcome::Refused(reason) => Err(AskError::Refused(reason)),
            LeaderOutcome::NotLeader { leader } => Err(AskError::NotLeader { leader }),
        };
        self.answer(ticket, Answer::Asked(answer));
    }
}
