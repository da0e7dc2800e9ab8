//! The KV store as the runtime's replicated state machine, and the lease clock it keeps in
//! step.
//!
//! Every node applies committed entries to its own [`KvState`] through a [`KvMachine`],
//! which wakes that node's watchers, so a watch on any node sees every write. Lease deadlines
//! are not replicated state (time is not the same on two replicas): every node's
//! [`LeaseClock`] tracks the leases it applies, and only the leader's decides. Its time comes
//! from a [`Clock`], the monotonic clock of the process unless another is injected (a
//! deterministic simulator injects simulated time).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use ordo_node::{Index, RestoreError, SnapshotJob, StateMachine};

use crate::command::ApplyResponse;
use crate::error::KvError;
use crate::lessor::Lessor;
use crate::state::KvState;
use crate::store::KvStore;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves the lessor consistent, so a panic elsewhere does
    // not make it unsafe to keep using.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since a fixed origin, never going back: the only time a [`LeaseClock`]
/// reads.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since this clock's origin.
    fn now_ms(&self) -> u64;
}

/// The process's monotonic clock, counted from when it was made.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Lease deadlines, kept by every node from the grants it applies and used by the leader.
pub struct LeaseClock {
    lessor: Mutex<Lessor>,
    clock: Box<dyn Clock>,
}

impl Default for LeaseClock {
    fn default() -> Self {
        LeaseClock::new(MonotonicClock::default())
    }
}

impl std::fmt::Debug for LeaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseClock")
            .field("leases", &lock(&self.lessor).len())
            .field("now_ms", &self.clock.now_ms())
            .finish()
    }
}

impl LeaseClock {
    /// A lease clock with no leases, reading time from `clock`.
    pub fn new(clock: impl Clock) -> LeaseClock {
        LeaseClock {
            lessor: Mutex::new(Lessor::new()),
            clock: Box::new(clock),
        }
    }

    /// The clock's current time.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Renews lease `id`: its time to live in seconds, or `None` when it is unknown or past
    /// its deadline.
    pub fn keep_alive(&self, id: i64) -> Option<i64> {
        let now_ms = self.now_ms();
        lock(&self.lessor).keep_alive(id, now_ms)
    }

    /// The whole seconds lease `id` has left, or `None` when it is unknown.
    pub fn remaining_seconds(&self, id: i64) -> Option<i64> {
        let now_ms = self.now_ms();
        lock(&self.lessor).remaining_seconds(id, now_ms)
    }

    /// At most `max` leases past their deadline, ascending by id.
    pub fn expired(&self, max: usize) -> Vec<i64> {
        let now_ms = self.now_ms();
        lock(&self.lessor).expired(now_ms, max)
    }

    /// Restarts every deadline with a full time to live: a new leader cannot know how much
    /// time the old one had left, so a lease never expires early for a leader change.
    pub fn restart_deadlines(&self, state: &KvState) {
        let now_ms = self.now_ms();
        let mut lessor = lock(&self.lessor);
        state.read(|store| lessor.sync(store, now_ms));
        lessor.promote(now_ms);
    }

    /// Number of leases tracked.
    pub fn len(&self) -> usize {
        lock(&self.lessor).len()
    }

    /// Whether no lease is tracked.
    pub fn is_empty(&self) -> bool {
        lock(&self.lessor).is_empty()
    }

    fn granted(&self, id: i64, ttl_seconds: i64) {
        let now_ms = self.now_ms();
        lock(&self.lessor).grant(id, ttl_seconds, now_ms);
    }

    /// Aligns the tracked leases with the store: new ones get a full time to live, gone ones
    /// are forgotten.
    fn sync(&self, state: &KvState) {
        let now_ms = self.now_ms();
        let mut lessor = lock(&self.lessor);
        state.read(|store| lessor.sync(store, now_ms));
    }
}

/// The KV store as a [`StateMachine`]: applies committed entries to the shared
/// [`KvState`] (waking its watchers) and keeps the lease clock in step.
pub struct KvMachine {
    state: Arc<KvState>,
    leases: Arc<LeaseClock>,
    // The store's applied index moves only with KV entries; the runtime also reports
    // entries without KV data (a new leader's no-op, membership changes), which only this
    // counter records.
    applied_index: Index,
}

impl KvMachine {
    /// A state machine over `state`, keeping `leases` in step with what it applies.
    pub fn new(state: Arc<KvState>, leases: Arc<LeaseClock>) -> KvMachine {
        let applied_index = state.progress().applied_index;
        KvMachine {
            state,
            leases,
            applied_index,
        }
    }
}

impl StateMachine for KvMachine {
    type Output = Result<ApplyResponse, KvError>;

    fn apply(&mut self, index: Index, data: &[u8]) -> Self::Output {
        assert!(
            index > self.applied_index,
            "entry {index} applied after {}",
            self.applied_index
        );
        self.applied_index = index;
        let applied = self.state.apply(index, data);
        match &applied.result {
            Ok(ApplyResponse::LeaseGrant(granted)) => {
                self.leases.granted(granted.id, granted.ttl);
            }
            // The response does not name the lease; dropping every deadline whose lease
            // left the store covers revokes and expiries alike.
            Ok(ApplyResponse::LeaseRevoke(_)) => self.leases.sync(&self.state),
            _ => {}
        }
        applied.result
    }

    fn note_applied(&mut self, index: Index) {
        self.applied_index = index;
    }

    fn snapshot(&self) -> Bytes {
        Bytes::from(self.state.snapshot())
    }

    fn begin_snapshot(&self) -> SnapshotJob {
        // The store's history below the snapshot's revision does not change while it is
        // encoded, so the encoding runs on the runtime's snapshot thread and holds the
        // store only a few thousand records at a time: applying goes on meanwhile.
        let cursor = self.state.begin_snapshot();
        let state = Arc::clone(&self.state);
        SnapshotJob::deferred(move || state.finish_snapshot(cursor).map(Bytes::from))
    }

    fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError> {
        // Validate before touching the live state, so a refused snapshot changes nothing.
        let restored = KvStore::restore(data).map_err(|e| RestoreError::new(e.to_string()))?;
        if restored.applied_index() > index {
            return Err(RestoreError::new(format!(
                "the KV snapshot is at log index {} but claims to be taken at {index}",
                restored.applied_index()
            )));
        }
        self.state
            .restore(data)
            .map_err(|e| RestoreError::new(e.to_string()))?;
        self.applied_index = index;
        self.leases.sync(&self.state);
        Ok(())
    }

    fn applied_index(&self) -> Index {
        self.applied_index
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::command::{self, Command};
    use crate::proto::etcdserverpb::{
        LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    };

    /// Time that moves only when a test says so.
    #[derive(Clone, Default)]
    struct ManualClock(Arc<AtomicU64>);

    impl ManualClock {
        fn advance_ms(&self, ms: u64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn machine_with(clock: ManualClock) -> (KvMachine, Arc<KvState>, Arc<LeaseClock>) {
        let state = Arc::new(KvState::new(KvStore::new()));
        let leases = Arc::new(LeaseClock::new(clock));
        let machine = KvMachine::new(Arc::clone(&state), Arc::clone(&leases));
        (machine, state, leases)
    }

    fn machine() -> (KvMachine, Arc<KvState>, Arc<LeaseClock>) {
        machine_with(ManualClock::default())
    }

    fn put(key: &str, value: &str) -> Vec<u8> {
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        };
        command::encode(1, Command::Put(request)).unwrap()
    }

    fn grant(id: i64, ttl: i64) -> Vec<u8> {
        command::encode(1, Command::LeaseGrant(LeaseGrantRequest { ttl, id })).unwrap()
    }

    fn value(state: &KvState, key: &str) -> Option<Vec<u8>> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        state
            .read(|s| s.range(&request))
            .unwrap()
            .kvs
            .first()
            .map(|kv| kv.value.clone())
    }

    #[test]
    fn entries_without_kv_data_advance_the_applied_index_and_later_entries_still_apply() {
        let (mut m, state, _) = machine();
        m.note_applied(1);
        m.note_applied(2);
        assert_eq!(m.applied_index(), 2);
        let result = m.apply(3, &put("a", "1"));
        assert!(matches!(result, Ok(ApplyResponse::Put(_))));
        assert_eq!(m.applied_index(), 3);
        assert_eq!(value(&state, "a"), Some(b"1".to_vec()));
    }

    #[test]
    fn snapshot_restores_on_another_replica_at_a_later_raft_index() {
        let (mut a, _, _) = machine();
        assert!(a.apply(2, &put("a", "1")).is_ok());
        a.note_applied(3);
        let snapshot = a.snapshot();
        let (mut b, state_b, _) = machine();
        b.restore(3, &snapshot).unwrap();
        assert_eq!(b.applied_index(), 3);
        assert_eq!(value(&state_b, "a"), Some(b"1".to_vec()));
        assert!(b.apply(4, &put("b", "2")).is_ok());
    }

    #[test]
    fn a_snapshot_begun_before_later_writes_holds_the_state_it_was_begun_at() {
        let (mut m, _, _) = machine();
        assert!(m.apply(2, &put("a", "1")).is_ok());
        let expected = m.snapshot();
        let job = m.begin_snapshot();
        assert!(m.apply(3, &put("b", "2")).is_ok());
        let taken = std::thread::spawn(move || job.finish())
            .join()
            .unwrap()
            .expect("nothing replaced the state");
        assert_eq!(taken, expected);
        let (mut other, state_other, _) = machine();
        other.restore(2, &taken).unwrap();
        assert_eq!(value(&state_other, "a"), Some(b"1".to_vec()));
        assert_eq!(value(&state_other, "b"), None);
    }

    #[test]
    fn refused_snapshot_leaves_the_state_as_it_was() {
        let (mut m, state, _) = machine();
        assert!(m.apply(2, &put("a", "1")).is_ok());
        assert!(m.restore(5, b"not a snapshot").is_err());
        assert_eq!(m.applied_index(), 2);
        assert_eq!(value(&state, "a"), Some(b"1".to_vec()));
        // A snapshot claiming a later KV index than the Raft index it arrived at.
        let snapshot = m.snapshot();
        let (mut other, _, _) = machine();
        assert!(other.restore(1, &snapshot).is_err());
        assert_eq!(other.applied_index(), 0);
    }

    #[test]
    fn applied_lease_grants_and_revokes_keep_the_lease_clock_in_step() {
        let (mut m, _, leases) = machine();
        assert!(matches!(
            m.apply(2, &grant(7, 30)),
            Ok(ApplyResponse::LeaseGrant(_))
        ));
        assert_eq!(leases.keep_alive(7), Some(30));
        let revoke = LeaseRevokeRequest { id: 7 };
        let entry = command::encode(2, Command::LeaseRevoke(revoke)).unwrap();
        assert!(matches!(
            m.apply(3, &entry),
            Ok(ApplyResponse::LeaseRevoke(_))
        ));
        assert!(leases.is_empty());
    }

    #[test]
    fn a_lease_expires_on_the_injected_clock_and_keep_alives_push_its_deadline() {
        let clock = ManualClock::default();
        let (mut m, _, leases) = machine_with(clock.clone());
        assert!(m.apply(1, &grant(7, 10)).is_ok());
        clock.advance_ms(9_000);
        assert_eq!(leases.remaining_seconds(7), Some(1));
        assert!(leases.expired(10).is_empty());
        assert_eq!(leases.keep_alive(7), Some(10));
        clock.advance_ms(9_999);
        assert!(leases.expired(10).is_empty(), "renewed 9.999 s ago");
        clock.advance_ms(1);
        assert_eq!(leases.expired(10), vec![7]);
        assert_eq!(leases.keep_alive(7), None, "past its deadline");
    }

    #[test]
    fn a_new_leader_restarts_every_deadline_with_a_full_time_to_live() {
        let clock = ManualClock::default();
        let (mut m, state, leases) = machine_with(clock.clone());
        assert!(m.apply(1, &grant(7, 10)).is_ok());
        clock.advance_ms(9_500);
        leases.restart_deadlines(&state);
        assert_eq!(leases.remaining_seconds(7), Some(10));
        clock.advance_ms(9_999);
        assert!(leases.expired(10).is_empty());
    }
}
