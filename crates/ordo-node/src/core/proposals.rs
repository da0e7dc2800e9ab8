//! The proposals of this node waiting for their outcome: the one waiter table.
//!
//! A proposal is known by its ticket. Once the leader says where its entry landed it is
//! also known by that position; until then (a proposal forwarded to the leader, waiting
//! for the answer) it is unbound. When committed entries are handed out, each of this
//! node's entries takes its proposal out of the table (it is answered by the state
//! machine); a proposal bound at a position handed out to another entry lost its place.

use std::collections::BTreeMap;

use ordo_raft::{Index, Term};

use super::command::Ticket;

/// Where a waiting proposal's entry landed, once known.
pub(crate) type Position = Option<(Index, Term)>;

#[derive(Debug, Default)]
pub(crate) struct Proposals {
    by_ticket: BTreeMap<Ticket, Position>,
    by_index: BTreeMap<Index, Ticket>,
}

impl Proposals {
    pub(crate) fn len(&self) -> usize {
        self.by_ticket.len()
    }

    pub(crate) fn contains(&self, ticket: Ticket) -> bool {
        self.by_ticket.contains_key(&ticket)
    }

    /// Whether `ticket` waits with its position known.
    pub(crate) fn is_bound(&self, ticket: Ticket) -> bool {
        self.by_ticket.get(&ticket).is_some_and(Option::is_some)
    }

    /// Registers an unbound proposal.
    pub(crate) fn insert(&mut self, ticket: Ticket) {
        let previous = self.by_ticket.insert(ticket, None);
        assert!(previous.is_none(), "ticket {ticket:?} registered twice");
    }

    /// Records where `ticket`'s entry landed. Returns the proposal that held that index
    /// before, which a new leader's entry replaced.
    pub(crate) fn bind(&mut self, ticket: Ticket, index: Index, term: Term) -> Option<Ticket> {
        let position = self.by_ticket.get_mut(&ticket)?;
        if let Some((old, _)) = position.replace((index, term)) {
            if self.by_index.get(&old) == Some(&ticket) {
                self.by_index.remove(&old);
            }
        }
        let displaced = self.by_index.insert(index, ticket)?;
        if displaced == ticket {
            return None;
        }
        self.by_ticket.remove(&displaced);
        Some(displaced)
    }

    /// Removes `ticket`, wherever it waits.
    pub(crate) fn take(&mut self, ticket: Ticket) -> Option<Position> {
        let position = self.by_ticket.remove(&ticket)?;
        if let Some((index, _)) = position {
            if self.by_index.get(&index) == Some(&ticket) {
                self.by_index.remove(&index);
            }
        }
        Some(position)
    }

    /// Removes every proposal bound at or below `index`.
    pub(crate) fn take_through(&mut self, index: Index) -> Vec<Ticket> {
        let tickets: Vec<Ticket> = self.by_index.range(..=index).map(|(_, t)| *t).collect();
        for &ticket in &tickets {
            self.take(ticket);
        }
        tickets
    }

    /// Removes every proposal not yet bound to a position.
    pub(crate) fn take_unbound(&mut self) -> Vec<Ticket> {
        let tickets: Vec<Ticket> = self
            .by_ticket
            .iter()
            .filter(|(_, position)| position.is_none())
            .map(|(t, _)| *t)
            .collect();
        for &ticket in &tickets {
            self.by_ticket.remove(&ticket);
        }
        tickets
    }

    /// Removes every proposal.
    pub(crate) fn take_all(&mut self) -> Vec<Ticket> {
        self.by_index.clear();
        std::mem::take(&mut self.by_ticket).into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_whose_index_is_taken_by_another_is_displaced() {
        let mut p = Proposals::default();
        p.insert(Ticket(1));
        p.insert(Ticket(2));
        assert_eq!(p.bind(Ticket(1), 5, 2), None);
        // A new leader put another of our proposals at the same index.
        assert_eq!(p.bind(Ticket(2), 5, 3), Some(Ticket(1)));
        assert!(!p.contains(Ticket(1)));
        assert_eq!(p.take(Ticket(2)), Some(Some((5, 3))));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn proposals_bound_at_or_below_an_index_are_taken_and_later_ones_stay() {
        let mut p = Proposals::default();
        for t in 1..=3 {
            p.insert(Ticket(t));
        }
        p.bind(Ticket(1), 4, 1);
        p.bind(Ticket(2), 9, 1);
        assert_eq!(p.take_through(5), vec![Ticket(1)]);
        assert_eq!(p.take_unbound(), vec![Ticket(3)]);
        assert_eq!(p.take_all(), vec![Ticket(2)]);
    }
}

/// The proposals this node appended for followers, by request, so that a forward it
/// receives twice is appended once. Bounded: the transport delivers a message at most once,
/// so a second copy can only come from a network that duplicates, soon after the first.
#[derive(Debug, Default)]
pub(crate) struct Forwarded {
    by_request: std::collections::HashMap<crate::codec::RequestId, (Index, Term)>,
    order: std::collections::VecDeque<crate::codec::RequestId>,
}

/// Forwarded proposals remembered.
const FORWARDED_MAX: usize = 1024;

impl Forwarded {
    pub(crate) fn get(&self, request: &crate::codec::RequestId) -> Option<(Index, Term)> {
        self.by_request.get(request).copied()
    }

    pub(crate) fn insert(&mut self, request: crate::codec::RequestId, at: (Index, Term)) {
        if self.by_request.insert(request, at).is_none() {
            self.order.push_back(request);
        }
        while self.order.len() > FORWARDED_MAX {
            if let Some(old) = self.order.pop_front() {
                self.by_request.remove(&old);
            }
        }
    }
}
