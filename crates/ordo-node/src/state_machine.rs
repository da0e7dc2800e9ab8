//! The library face: the trait a user's replicated state machine implements, and the
//! envelope the runtime wraps around each proposal.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ordo_raft::{ConfState, Index};

use crate::codec::{DecodeError, RequestId};

/// A deterministic state machine replicated by a Raft group.
///
/// The runtime calls these methods from the node's apply workers (one at a time for a
/// group, possibly a different worker from one batch to the next; or from the group's own
/// task, for one that [applies quickly](StateMachine::APPLIES_QUICKLY)), in log order, never
/// concurrently with each other; [`Group::read`](crate::Group::read) takes the same lock to
/// give readers a consistent view. A method that blocks holds up its own group's applying
/// and one worker, nothing else. Every replica calls `apply` with the same
/// entries in the same order, so the state machine must be deterministic: the same
/// entries must produce the same state and outputs on every node (no clocks, no
/// randomness, no iteration over hash maps with per-process seeds in the output).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use ordo_node::{RestoreError, StateMachine};
/// use ordo_raft::Index;
///
/// #[derive(Default)]
/// struct Counter { total: u64, applied: Index }
///
/// impl StateMachine for Counter {
///     type Output = u64;
///     fn apply(&mut self, index: Index, data: &[u8]) -> u64 {
///         self.applied = index;
///         self.total += data.len() as u64;
///         self.total
///     }
///     fn note_applied(&mut self, index: Index) { self.applied = index; }
///     fn snapshot(&self) -> Bytes { Bytes::copy_from_slice(&self.total.to_be_bytes()) }
///     fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError> {
///         let raw: [u8; 8] = data.try_into().map_err(|_| RestoreError::new("not 8 bytes"))?;
///         self.total = u64::from_be_bytes(raw);
///         self.applied = index;
///         Ok(())
///     }
///     fn applied_index(&self) -> Index { self.applied }
/// }
/// ```
pub trait StateMachine: Send + 'static {
    /// What applying an entry returns to the proposer.
    type Output: Send + 'static;

    /// `true` promises that [`apply`](StateMachine::apply) and
    /// [`note_applied`](StateMachine::note_applied) return quickly and never wait (no I/O,
    /// no lock that another thread may hold for long): a structure in memory. The runtime
    /// may then apply a batch of committed entries on the group's own task, when no batch
    /// is queued before it, no reader holds the state machine and the batch needs no
    /// snapshot, instead of handing it to an apply worker; that saves two thread wake-ups
    /// per batch (the crate README says what they cost over many groups). A method
    /// that blocks anyway then holds up its group's Raft (heartbeats, elections) on this
    /// node and one runtime thread. The default, `false`, always uses the apply workers.
    const APPLIES_QUICKLY: bool = false;

    /// Applies the committed entry at `index` carrying the proposer's `data`, and returns
    /// the proposer's answer. Called exactly once per entry and node, in index order
    /// (after a restart, from the snapshot on). Must be deterministic.
    fn apply(&mut self, index: Index, data: &[u8]) -> Self::Output;

    /// The entry at `index` carried nothing for the state machine (a new leader's no-op
    /// or a membership change). A state machine that tracks its applied index records it.
    fn note_applied(&mut self, index: Index);

    /// Serialises the whole state as of [`applied_index`](StateMachine::applied_index).
    /// Two replicas at the same index must produce data that restores to the same state.
    fn snapshot(&self) -> Bytes;

    /// Begins a snapshot of the state as of [`applied_index`](StateMachine::applied_index)
    /// that the runtime finishes on another thread, so applying goes on while a large
    /// state is serialised. The default serialises at once with
    /// [`snapshot`](StateMachine::snapshot); a state machine that can read a consistent
    /// past view of itself while it keeps changing overrides it.
    fn begin_snapshot(&self) -> SnapshotJob {
        SnapshotJob::ready(self.snapshot())
    }

    /// Replaces the whole state with a snapshot taken at `index` (by this node before a
    /// restart, or by the leader). Data that does not decode is an error, and the state
    /// must then be left as it was.
    fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError>;

    /// The index of the last entry applied or noted, or the index of the snapshot
    /// restored last. The runtime checks it after every call, to catch a state machine
    /// that lost track.
    fn applied_index(&self) -> Index;

    /// The group's configuration changed at `index` (after
    /// [`note_applied`](StateMachine::note_applied) for that index). The default ignores it;
    /// the KV layer's member list uses it.
    fn membership_changed(&mut self, index: Index, conf_state: &ConfState) {
        let _ = (index, conf_state);
    }
}

/// A snapshot begun by [`StateMachine::begin_snapshot`]: work that produces the
/// snapshot's bytes on a thread of the runtime's, while the state machine keeps applying.
pub struct SnapshotJob(Box<dyn FnOnce() -> Option<Bytes> + Send>);

impl SnapshotJob {
    /// A snapshot whose bytes are already made.
    pub fn ready(data: Bytes) -> SnapshotJob {
        SnapshotJob(Box::new(move || Some(data)))
    }

    /// A snapshot made by `finish`, which runs on another thread than the one applying.
    /// It returns the bytes of the state as of the moment the job was begun, or `None`
    /// when that state can no longer be read (for example a restore replaced it); the
    /// runtime then begins a new snapshot later.
    pub fn deferred(finish: impl FnOnce() -> Option<Bytes> + Send + 'static) -> SnapshotJob {
        SnapshotJob(Box::new(finish))
    }

    /// Runs the job (the runtime does, on a snapshot thread of its own).
    pub fn finish(self) -> Option<Bytes> {
        (self.0)()
    }
}

impl std::fmt::Debug for SnapshotJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotJob")
    }
}

/// A state machine refused a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("state machine refused the snapshot: {reason}")]
pub struct RestoreError {
    /// Why.
    pub reason: String,
}

impl RestoreError {
    /// An error with a reason.
    pub fn new(reason: impl Into<String>) -> RestoreError {
        RestoreError {
            reason: reason.into(),
        }
    }
}

/// The version byte of a proposal envelope.
const ENVELOPE_VERSION: u8 = 1;

/// Bytes the envelope adds to a proposal.
pub const ENVELOPE_BYTES: usize = 1 + RequestId::BYTES;

/// Wraps application data with the id of the request waiting for it, so the node that
/// proposed the entry resolves its waiter when it applies the entry — whether it proposed
/// it as leader or forwarded it.
pub(crate) fn wrap(request: RequestId, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(ENVELOPE_BYTES + data.len());
    buf.put_u8(ENVELOPE_VERSION);
    request.put(&mut buf);
    buf.put_slice(data);
    buf.freeze()
}

/// Splits an entry into its request id and application data (sharing the entry's buffer).
pub(crate) fn unwrap(mut entry_data: Bytes) -> Result<(RequestId, Bytes), DecodeError> {
    if entry_data.is_empty() {
        return Err(DecodeError::Empty);
    }
    let version = entry_data.get_u8();
    if version != ENVELOPE_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let request = RequestId::get(&mut entry_data)?;
    Ok((request, entry_data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_refuses_short_data() {
        let id = RequestId {
            node: 3,
            boot: 9,
            seq: 77,
        };
        let wrapped = wrap(id, b"withdraw 800");
        assert_eq!(wrapped.len(), ENVELOPE_BYTES + 12);
        let (got, data) = unwrap(wrapped.clone()).unwrap();
        assert_eq!(got, id);
        assert_eq!(&data[..], b"withdraw 800");
        for cut in 0..ENVELOPE_BYTES {
            assert!(unwrap(wrapped.slice(..cut)).is_err());
        }
    }
}
