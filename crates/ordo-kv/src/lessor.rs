//! The leader-side lease clock.
//!
//! The replicated state knows which leases exist and their granted time to live, never how
//! much of it remains: time is not deterministic across replicas. The lessor, run by the
//! leader, keeps a deadline per lease from `now` values its caller supplies, renews deadlines
//! on keep-alive, and names the leases whose deadline passed so that the caller can propose
//! a [`crate::command::Command::LeaseExpire`] through the log. A new leader starts every
//! deadline afresh (a full time to live), so a lease never expires early because of a
//! leadership change.

use std::collections::BTreeMap;

use crate::store::KvStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadline {
    ttl_seconds: i64,
    expires_at_ms: u64,
}

/// Lease deadlines, driven by an external clock in milliseconds.
#[derive(Debug, Default, Clone)]
pub struct Lessor {
    deadlines: BTreeMap<i64, Deadline>,
}

fn deadline_ms(now_ms: u64, ttl_seconds: i64) -> u64 {
    now_ms.saturating_add(u64::try_from(ttl_seconds).unwrap_or(0).saturating_mul(1000))
}

impl Lessor {
    /// A lessor with no leases.
    pub fn new() -> Lessor {
        Lessor::default()
    }

    /// Aligns the tracked leases with the store: leases new to the lessor get a full time to
    /// live from `now_ms`; leases gone from the store are forgotten.
    pub fn sync(&mut self, store: &KvStore, now_ms: u64) {
        self.deadlines.retain(|id, _| store.leases.contains_key(id));
        for (id, lease) in &store.leases {
            self.deadlines.entry(*id).or_insert(Deadline {
                ttl_seconds: lease.ttl_seconds,
                expires_at_ms: deadline_ms(now_ms, lease.ttl_seconds),
            });
        }
    }

    /// Starts tracking a newly granted lease with a full time to live from `now_ms`.
    pub fn grant(&mut self, id: i64, ttl_seconds: i64, now_ms: u64) {
        let deadline = Deadline {
            ttl_seconds,
            expires_at_ms: deadline_ms(now_ms, ttl_seconds),
        };
        self.deadlines.insert(id, deadline);
    }

    /// Stops tracking a revoked or expired lease.
    pub fn revoke(&mut self, id: i64) {
        self.deadlines.remove(&id);
    }

    /// Restarts every deadline at `now_ms`: called on becoming leader.
    pub fn promote(&mut self, now_ms: u64) {
        for deadline in self.deadlines.values_mut() {
            deadline.expires_at_ms = deadline_ms(now_ms, deadline.ttl_seconds);
        }
    }

    /// Renews a lease; returns its time to live in seconds, or `None` if it is unknown or
    /// already past its deadline (its expiry is then on its way through the log).
    pub fn keep_alive(&mut self, id: i64, now_ms: u64) -> Option<i64> {
        let deadline = self.deadlines.get_mut(&id)?;
        if deadline.expires_at_ms <= now_ms {
            return None;
        }
        deadline.expires_at_ms = deadline_ms(now_ms, deadline.ttl_seconds);
        Some(deadline.ttl_seconds)
    }

    /// Remaining whole seconds of a lease (rounded up, as etcd reports), or `None` if unknown.
    pub fn remaining_seconds(&self, id: i64, now_ms: u64) -> Option<i64> {
        let deadline = self.deadlines.get(&id)?;
        let left_ms = deadline.expires_at_ms.saturating_sub(now_ms);
        Some(i64::try_from(left_ms.div_ceil(1000)).unwrap_or(i64::MAX))
    }

    /// Leases whose deadline is at or before `now_ms`, ascending by id, at most `max`.
    pub fn expired(&self, now_ms: u64, max: usize) -> Vec<i64> {
        self.deadlines
            .iter()
            .filter(|(_, d)| d.expires_at_ms <= now_ms)
            .map(|(id, _)| *id)
            .take(max)
            .collect()
    }

    /// Number of tracked leases.
    pub fn len(&self) -> usize {
        self.deadlines.len()
    }

    /// Whether no lease is tracked.
    pub fn is_empty(&self) -> bool {
        self.deadlines.is_empty()
    }
}
