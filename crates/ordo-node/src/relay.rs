//! A group's messages that wait for a durable write, released by whichever thread first
//! sees the write durable: the WAL's fsync thread, right after the round that made it so,
//! or the group's driver in its next turn.
//!
//! A follower's answer to an append waits for the append to be durable. Were only the
//! driver to send it, every append would cost the follower two turns: one to write, and
//! one, woken by the fsync thread, to send the answer. The fsync thread sends it instead,
//! and wakes the driver only when the core asked to hear of the write at once
//! ([`GroupCore::needs_durable_turn`](crate::core::GroupCore::needs_durable_turn)):
//! otherwise the core learns of it in the turn its next input brings.
//!
//! The rule of the [`DurabilityGate`] holds on both threads: a message leaves only once the
//! log's durable index, read under this relay's lock, covers the write it waits for. The
//! driver registers a write only after the log accepted it, so a durable index read before
//! then can release nothing of it (a follower's cut of its log lowers the durable index
//! before the write is registered).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ordo_raft::NodeId;

use crate::codec::WireMessage;
use crate::core::DurabilityGate;
use crate::driver::Doorbell;
use crate::group::{lock, GroupId};
use crate::metrics::GroupMetrics;
use crate::storage::{LogStore, WalStorage};
use crate::transport::{PeerMessage, Transport};

/// Shared by a group's driver and the WAL's durability listener.
pub(crate) struct DurableRelay {
    group_id: GroupId,
    storage: WalStorage,
    transport: Arc<Transport>,
    doorbell: Arc<Doorbell>,
    metrics: Arc<GroupMetrics>,
    state: Mutex<State>,
}

struct State {
    gate: DurabilityGate,
    /// The newest write the fsync thread saw durable and the core has not heard of.
    persisted: Option<u64>,
    /// Whether the driver wants a turn when a write becomes durable.
    turn_wanted: bool,
    /// When the write the gate waits for was made, for the fsync latency histogram.
    written_at: Option<Instant>,
}

impl DurableRelay {
    pub(crate) fn new(
        group_id: GroupId,
        storage: WalStorage,
        transport: Arc<Transport>,
        doorbell: Arc<Doorbell>,
        metrics: Arc<GroupMetrics>,
    ) -> DurableRelay {
        DurableRelay {
            group_id,
            storage,
            transport,
            doorbell,
            metrics,
            state: Mutex::new(State {
                gate: DurabilityGate::new(),
                persisted: None,
                turn_wanted: true,
                written_at: None,
            }),
        }
    }

    /// The driver carried out the write `seq`; it is durable once the log reaches
    /// `position` (`None`: durable already).
    pub(crate) fn written(&self, seq: u64, position: Option<u64>) {
        let mut state = lock(&self.state);
        if position.is_some() {
            state.written_at.get_or_insert_with(Instant::now);
        }
        state.gate.written(seq, position);
    }

    /// Holds `message` to `to` until the write `seq` is durable.
    pub(crate) fn hold(&self, seq: u64, to: NodeId, message: WireMessage) {
        lock(&self.state).gate.hold(seq, to, message);
    }

    /// Sends what the log's durable index now allows; returns the newest write durable
    /// since the core last heard, if any. For the driver, in a turn.
    pub(crate) fn release(&self) -> Option<u64> {
        let mut state = lock(&self.state);
        self.release_locked(&mut state);
        state.persisted.take()
    }

    /// Says whether the driver wants a turn as soon as a write becomes durable, before it
    /// waits for its next input. Returns true if news came meanwhile and it should turn
    /// again now instead.
    pub(crate) fn wait_for_turn(&self, wanted: bool) -> bool {
        let mut state = lock(&self.state);
        if wanted {
            self.release_locked(&mut state);
            if state.persisted.is_some() {
                return true;
            }
        }
        state.turn_wanted = wanted;
        false
    }

    /// The WAL's fsync thread saw the group's durable index rise.
    pub(crate) fn on_durable(&self) {
        let mut state = lock(&self.state);
        let ring = self.release_locked(&mut state) && state.turn_wanted;
        drop(state);
        if ring {
            self.doorbell.ring();
        }
    }

    /// Releases what the durable index allows, sending the messages in order under the
    /// lock (so that the two threads never reorder them), and notes the newest write now
    /// durable for the core; true if a write became durable.
    fn release_locked(&self, state: &mut State) -> bool {
        if !state.gate.is_waiting() {
            return false;
        }
        let released = state.gate.release(self.storage.durable_index());
        for (to, message) in released.messages {
            send_to_peer(&self.transport, self.group_id, to, message);
        }
        let Some(seq) = released.persisted else {
            return false;
        };
        state.persisted = state.persisted.max(Some(seq));
        if let Some(at) = state.written_at.take() {
            self.metrics
                .fsync_latency_us
                .record(at.elapsed().as_micros() as u64);
        }
        true
    }
}

/// Sends a message of group `group` to peer `to`; false (and a debug line) if the transport
/// refused it.
pub(crate) fn send_to_peer(
    transport: &Transport,
    group: GroupId,
    to: NodeId,
    message: WireMessage,
) -> bool {
    let message = PeerMessage {
        group_id: group.0,
        payload: message.encode(),
    };
    match transport.send(to, message) {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(group = %group, to, %error, "peer message not sent");
            false
        }
    }
}
