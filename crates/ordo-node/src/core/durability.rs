//! Holding messages that promise durability until the write they promise is durable.
//!
//! Every runtime of the group core (the tokio driver, the simulator) carries out
//! [`Command::Persist`](super::Command::Persist) on its own disk and learns of durability
//! in its own way; this gate is where they all keep [`Command::SendAfterDurable`]
//! messages back, so the rule lives in one place.

use std::collections::VecDeque;

use ordo_raft::NodeId;

use crate::codec::WireMessage;

/// Writes carried out and messages waiting for them. A write's *position* is whatever its
/// runtime's disk makes durable in order (the last log index appended, for the WAL);
/// `None` means durable when the write returned.
#[derive(Debug, Default)]
pub struct DurabilityGate {
    /// Writes not yet known durable, oldest first: (seq, position).
    written: VecDeque<(u64, Option<u64>)>,
    /// The newest write known durable.
    durable_seq: u64,
    /// Messages waiting for a write: (seq, to, message).
    held: VecDeque<(u64, NodeId, WireMessage)>,
    #[cfg(feature = "mutations")]
    ack_before_durable: bool,
}

/// What became sendable.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Messages to send now, in order.
    pub messages: Vec<(NodeId, WireMessage)>,
    /// The newest write now durable, to report to the core, if it moved.
    pub persisted: Option<u64>,
}

impl DurabilityGate {
    /// A gate with every rule kept.
    pub fn new() -> DurabilityGate {
        DurabilityGate::default()
    }

    /// A gate that releases messages before their write is durable: the planted bug
    /// [`RuntimeMutation::AckBeforeDurable`](super::RuntimeMutation::AckBeforeDurable).
    #[cfg(feature = "mutations")]
    pub fn acking_before_durable() -> DurabilityGate {
        DurabilityGate {
            ack_before_durable: true,
            ..DurabilityGate::default()
        }
    }

    /// The write `seq` was carried out; it is durable once the disk reaches `position`.
    pub fn written(&mut self, seq: u64, position: Option<u64>) {
        assert!(
            self.written.back().is_none_or(|(s, _)| *s < seq) && seq > self.durable_seq,
            "writes are carried out in order"
        );
        self.written.push_back((seq, position));
    }

    /// Holds `message` until the write `seq` is durable.
    pub fn hold(&mut self, seq: u64, to: NodeId, message: WireMessage) {
        self.held.push_back((seq, to, message));
    }

    /// Whether any write is not yet known durable.
    pub fn is_waiting(&self) -> bool {
        !self.written.is_empty()
    }

    /// The disk is durable through `durable`: the writes it covers are durable, and the
    /// messages waiting for them may go.
    pub fn release(&mut self, durable: u64) -> Released {
        let mut persisted = None;
        while let Some(&(seq, position)) = self.written.front() {
            if position.is_some_and(|p| p > durable) {
                break;
            }
            self.written.pop_front();
            self.durable_seq = seq;
            persisted = Some(seq);
        }
        let mut messages = Vec::new();
        while self
            .held
            .front()
            .is_some_and(|(seq, _, _)| *seq <= self.durable_seq || self.acks_early())
        {
            if let Some((_, to, message)) = self.held.pop_front() {
                messages.push((to, message));
            }
        }
        Released {
            messages,
            persisted,
        }
    }

    fn acks_early(&self) -> bool {
        #[cfg(feature = "mutations")]
        {
            self.ack_before_durable
        }
        #[cfg(not(feature = "mutations"))]
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_raft::{Message, MessageBody};

    fn ack(to: NodeId) -> WireMessage {
        WireMessage::Raft(Message {
            from: 1,
            to,
            term: 1,
            body: MessageBody::AppendResponse {
                index: 5,
                reject: None,
            },
        })
    }

    #[test]
    fn a_message_waits_until_the_write_it_promises_is_durable() {
        let mut gate = DurabilityGate::new();
        gate.written(1, Some(5));
        gate.hold(1, 2, ack(2));
        gate.written(2, Some(9));
        gate.hold(2, 3, ack(3));
        assert_eq!(gate.release(4), Released::default());
        let released = gate.release(7);
        assert_eq!(released.persisted, Some(1));
        assert_eq!(released.messages, vec![(2, ack(2))]);
        assert!(gate.is_waiting());
        let released = gate.release(9);
        assert_eq!(released.persisted, Some(2));
        assert_eq!(released.messages, vec![(3, ack(3))]);
        assert!(!gate.is_waiting());
    }

    #[test]
    fn a_write_durable_on_return_releases_at_once() {
        let mut gate = DurabilityGate::new();
        gate.written(1, None);
        gate.hold(1, 2, ack(2));
        let released = gate.release(0);
        assert_eq!(released.persisted, Some(1));
        assert_eq!(released.messages.len(), 1);
    }
}
