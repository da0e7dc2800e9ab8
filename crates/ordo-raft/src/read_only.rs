//! Pending ReadIndex requests (thesis §6.4): a read is answered once a quorum has
//! acknowledged a heartbeat sent after the read arrived, proving this node was still the
//! leader when it recorded the commit index.

use std::collections::{BTreeSet, HashMap, VecDeque};

use bytes::Bytes;

use crate::types::{Index, NodeId};

#[derive(Debug)]
pub(crate) struct ReadIndexStatus {
    /// The commit index when the request arrived.
    pub(crate) index: Index,
    /// Who asked (this node, or a follower that forwarded the request).
    pub(crate) from: NodeId,
    pub(crate) context: Bytes,
    pub(crate) acks: BTreeSet<NodeId>,
}

#[derive(Debug, Default)]
pub(crate) struct ReadOnly {
    pending: HashMap<Bytes, ReadIndexStatus>,
    queue: VecDeque<Bytes>,
}

impl ReadOnly {
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn contains(&self, context: &Bytes) -> bool {
        self.pending.contains_key(context)
    }

    pub(crate) fn add_request(&mut self, index: Index, from: NodeId, context: Bytes) {
        if self.pending.contains_key(&context) {
            return;
        }
        self.queue.push_back(context.clone());
        self.pending.insert(
            context.clone(),
            ReadIndexStatus {
                index,
                from,
                context,
                acks: BTreeSet::new(),
            },
        );
    }

    /// Records `from`'s acknowledgement of the heartbeat carrying `context`; returns the
    /// acknowledgers so far, or `None` for an unknown context.
    pub(crate) fn recv_ack(&mut self, from: NodeId, context: &[u8]) -> Option<&BTreeSet<NodeId>> {
        let status = self.pending.get_mut(context)?;
        status.acks.insert(from);
        Some(&status.acks)
    }

    /// Removes and returns every request queued up to and including `context`: a quorum
    /// acknowledging a later heartbeat confirms the earlier requests too.
    pub(crate) fn advance(&mut self, context: &[u8]) -> Vec<ReadIndexStatus> {
        let Some(pos) = self.queue.iter().position(|c| c.as_ref() == context) else {
            return Vec::new();
        };
        self.queue
            .drain(..=pos)
            .filter_map(|c| self.pending.remove(&c))
            .collect()
    }

    /// The newest pending context, to attach to the next heartbeat.
    pub(crate) fn last_pending(&self) -> Option<&Bytes> {
        self.queue.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledging_a_later_request_releases_earlier_ones() {
        let mut r = ReadOnly::default();
        r.add_request(5, 1, Bytes::from_static(b"a"));
        r.add_request(6, 2, Bytes::from_static(b"b"));
        r.add_request(7, 1, Bytes::from_static(b"c"));
        assert_eq!(r.recv_ack(2, b"b").map(|a| a.len()), Some(1));
        assert!(r.recv_ack(2, b"zzz").is_none());
        let done = r.advance(b"b");
        assert_eq!(done.iter().map(|s| s.index).collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(r.len(), 1);
        assert_eq!(r.last_pending().map(|b| b.as_ref()), Some(&b"c"[..]));
    }
}
