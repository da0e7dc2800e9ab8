//! Linearizable reads: batched into one read index request per turn, then held until the
//! local state machine has applied the index the leader confirmed.
//!
//! Every read of a batch was made before the batch's request, so the index the leader
//! confirms for the request is at least the commit index at some moment after each read
//! began: one heartbeat round serves the whole batch. A read is answered only once this
//! node has applied that index, so what it then reads locally includes every write
//! acknowledged before the read began.

use std::collections::BTreeMap;

use bytes::Bytes;
use ordo_raft::Index;

use super::command::Ticket;

#[derive(Debug, Default)]
pub(crate) struct Reads {
    /// Reads made this turn, not yet requested.
    batch: Vec<Ticket>,
    /// Reads requested under a context, waiting for the leader's confirmation.
    requested: BTreeMap<Bytes, Vec<Ticket>>,
    /// Reads confirmed at an index, waiting for the state machine to apply it.
    confirmed: BTreeMap<Index, Vec<Ticket>>,
    /// Reads anywhere in the three stages.
    len: usize,
}

impl Reads {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether reads wait for an index to be applied.
    pub(crate) fn has_confirmed(&self) -> bool {
        !self.confirmed.is_empty()
    }

    pub(crate) fn add(&mut self, ticket: Ticket) {
        self.batch.push(ticket);
        self.len += 1;
    }

    /// The batch made this turn, to request under one context.
    pub(crate) fn take_batch(&mut self) -> Vec<Ticket> {
        let batch = std::mem::take(&mut self.batch);
        self.len -= batch.len();
        batch
    }

    pub(crate) fn requested(&mut self, context: Bytes, batch: Vec<Ticket>) {
        self.len += batch.len();
        let previous = self.requested.insert(context, batch);
        assert!(previous.is_none(), "read context requested twice");
    }

    /// The leader confirmed `context` at `index`: its reads wait for that index.
    pub(crate) fn confirmed(&mut self, context: &Bytes, index: Index) {
        if let Some(tickets) = self.requested.remove(context) {
            self.confirmed.entry(index).or_default().extend(tickets);
        }
    }

    /// Removes and returns the reads whose index is applied.
    pub(crate) fn take_applied(&mut self, applied: Index) -> Vec<(Ticket, Index)> {
        if self
            .confirmed
            .first_key_value()
            .is_none_or(|(&index, _)| index > applied)
        {
            return Vec::new();
        }
        let later = self.confirmed.split_off(&(applied + 1));
        let ready = std::mem::replace(&mut self.confirmed, later);
        let out: Vec<(Ticket, Index)> = ready
            .into_iter()
            .flat_map(|(index, tickets)| tickets.into_iter().map(move |t| (t, index)))
            .collect();
        self.len -= out.len();
        out
    }

    /// Forgets one read (its caller gave up).
    pub(crate) fn forget(&mut self, ticket: Ticket) -> bool {
        let mut found = false;
        let mut drop_from = |tickets: &mut Vec<Ticket>| {
            let before = tickets.len();
            tickets.retain(|t| *t != ticket);
            found |= tickets.len() != before;
        };
        drop_from(&mut self.batch);
        self.requested.values_mut().for_each(&mut drop_from);
        self.confirmed.values_mut().for_each(&mut drop_from);
        self.requested.retain(|_, t| !t.is_empty());
        self.confirmed.retain(|_, t| !t.is_empty());
        if found {
            self.len -= 1;
        }
        found
    }

    /// Removes every read.
    pub(crate) fn take_all(&mut self) -> Vec<Ticket> {
        let mut all = std::mem::take(&mut self.batch);
        all.extend(std::mem::take(&mut self.requested).into_values().flatten());
        all.extend(std::mem::take(&mut self.confirmed).into_values().flatten());
        self.len = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wait_for_their_confirmed_index_to_be_applied() {
        let mut r = Reads::default();
        r.add(Ticket(1));
        r.add(Ticket(2));
        let batch = r.take_batch();
        r.requested(Bytes::from_static(b"a"), batch);
        r.add(Ticket(3));
        let batch = r.take_batch();
        r.requested(Bytes::from_static(b"b"), batch);
        r.confirmed(&Bytes::from_static(b"a"), 7);
        r.confirmed(&Bytes::from_static(b"b"), 9);
        assert_eq!(r.len(), 3);
        assert!(r.take_applied(6).is_empty());
        assert_eq!(r.take_applied(8), vec![(Ticket(1), 7), (Ticket(2), 7)]);
        assert!(r.forget(Ticket(3)));
        assert_eq!(r.len(), 0);
        assert!(r.take_applied(100).is_empty());
    }
}
