//! The journal in order: one [`Pin`] per journal record, saying which group it belongs to
//! and which of the group's indices it holds. The same queue serves the durability
//! watermark (popped, in effect, as the journal's durable index passes each record) and
//! collection (popped from the front as the oldest segment goes).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use super::group::Group;
use super::op::{KIND_APPEND, KIND_STATE};
use crate::lock;

/// What one journal record holds, as far as durability and collection care.
///
/// For an append (`KIND_APPEND`), `lo..lo + count` are the indices it appended (none for a
/// suffix truncation at `lo`); once the record is durable, so is every index of the group
/// up to `lo + count - 1`, unless a later truncation voided that. For a rewrite
/// (`KIND_REWRITE`) the indices it copied. For a state record (`KIND_STATE`), `lo` is one
/// past the group's last index then, for the same durability rule. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pin {
    pub(crate) group: u64,
    pub(crate) lo: u64,
    pub(crate) count: u32,
    pub(crate) kind: u8,
}

impl Pin {
    /// The group index this record makes durable, once it is: every index of the group up
    /// to it was written at or before this record.
    fn durable_through(&self) -> Option<u64> {
        match self.kind {
            KIND_APPEND | KIND_STATE => Some(self.lo + u64::from(self.count) - 1),
            _ => None,
        }
    }
}

/// The pins of every record in the journal, and the byte counts collection decides on.
#[derive(Debug)]
pub(crate) struct Order {
    /// `pins[k]` is the pin of the journal record with index `first_pinned + k`: every
    /// record from the journal's first index to its last has one.
    pins: VecDeque<Pin>,
    first_pinned: u64,
    /// Pins through this journal index have been applied to their groups' durable indices.
    durable_through: u64,
    /// Bytes of the journal's records (headers included) and segment headers.
    pub(crate) journal_bytes: u64,
    /// Bytes that would remain if the journal held only what is live: every live entry's
    /// encoding and one state record per group.
    pub(crate) live_bytes: u64,
    /// Bytes of journal records written for callers (appends, truncations, states, removes).
    pub(crate) appended_bytes: u64,
    /// Bytes of journal records written by collection (rewrites and their fresh states).
    pub(crate) rewritten_bytes: u64,
}

impl Order {
    /// The order of a journal whose records `first_pinned..` have `pins`, all durable.
    pub(crate) fn recovered(
        first_pinned: u64,
        pins: VecDeque<Pin>,
        journal_bytes: u64,
        live_bytes: u64,
    ) -> Order {
        let durable_through = first_pinned + pins.len() as u64 - 1;
        Order {
            pins,
            first_pinned,
            durable_through,
            journal_bytes,
            live_bytes,
            appended_bytes: 0,
            rewritten_bytes: 0,
        }
    }

    /// The journal index the next record gets.
    pub(crate) fn next_journal_index(&self) -> u64 {
        self.first_pinned + self.pins.len() as u64
    }

    /// Records the pin of the record just appended with `journal_index`.
    pub(crate) fn push(&mut self, journal_index: u64, pin: Pin) {
        assert_eq!(
            journal_index,
            self.next_journal_index(),
            "every journal record is pinned, in order"
        );
        self.pins.push_back(pin);
    }

    /// The pins of the records below journal index `end`, with their journal indices.
    pub(crate) fn pins_below(&self, end: u64) -> Vec<(u64, Pin)> {
        let n = end
            .saturating_sub(self.first_pinned)
            .min(self.pins.len() as u64);
        (0..n)
            .map(|k| (self.first_pinned + k, self.pins[k as usize]))
            .collect()
    }

    /// Forgets the pins below `end`: their records left the journal.
    pub(crate) fn forget_below(&mut self, end: u64) {
        assert!(
            self.durable_through + 1 >= end,
            "records leave the journal only once durable and applied"
        );
        while self.first_pinned < end && !self.pins.is_empty() {
            self.pins.pop_front();
            self.first_pinned += 1;
        }
        assert_eq!(
            self.first_pinned, end,
            "only pinned records leave the journal"
        );
    }

    /// Takes the pins that became durable with the journal durable through `durable`.
    fn take_durable(&mut self, durable: u64) -> Vec<(u64, Pin)> {
        let last = self.next_journal_index() - 1;
        let to = durable.min(last);
        if to <= self.durable_through {
            return Vec::new();
        }
        let from = self.durable_through + 1;
        self.durable_through = to;
        (from..=to)
            .map(|ji| (ji, self.pins[(ji - self.first_pinned) as usize]))
            .collect()
    }

    /// Adds `delta` to the live bytes.
    pub(crate) fn change_live(&mut self, delta: i64) {
        self.live_bytes = self
            .live_bytes
            .checked_add_signed(delta)
            .expect("live bytes are the sum of what is live, never below zero");
    }
}

/// What the journal's durability listener needs: it must not own the journal (the journal
/// owns the listener).
pub(crate) struct Core {
    /// The groups by id. Lock order: never a group's lock while holding this one.
    pub(crate) groups: RwLock<HashMap<u64, Arc<Group>>>,
    pub(crate) order: Mutex<Order>,
    /// Held while durability is applied to groups and their listeners are called, so that
    /// calls never overlap and a group's durable index never goes backwards among them.
    advancing: Mutex<()>,
}

impl Core {
    pub(crate) fn new(groups: HashMap<u64, Arc<Group>>, order: Order) -> Core {
        Core {
            groups: RwLock::new(groups),
            order: Mutex::new(order),
            advancing: Mutex::new(()),
        }
    }

    /// The journal is durable through `durable`: applies the pins that passes to their
    /// groups' durable indices and tells each advanced group's listeners. Work is per
    /// record passed, never per group.
    pub(crate) fn advance(&self, durable: u64) {
        let _one_at_a_time = lock(&self.advancing);
        let due = lock(&self.order).take_durable(durable);
        if due.is_empty() {
            return;
        }
        // The groups are looked up first and locked after the map's lock is released: no
        // group's lock is ever taken under the map's (a group being created is inserted
        // while its lock is held).
        let vouched: Vec<(u64, u64, Arc<Group>)> = {
            let groups = self
                .groups
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            due.into_iter()
                .filter_map(|(journal_index, pin)| {
                    let through = pin.durable_through()?;
                    let group = groups.get(&pin.group)?;
                    Some((journal_index, through, Arc::clone(group)))
                })
                .collect()
        };
        let mut advanced: Vec<Arc<Group>> = Vec::new();
        let mut seen = HashSet::new();
        for (journal_index, through, group) in vouched {
            if group.lock().record_durable(journal_index, through) && seen.insert(group.id) {
                advanced.push(group);
            }
        }
        for group in advanced {
            group.tell_listeners();
        }
    }
}
