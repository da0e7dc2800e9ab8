//! The store shared between the applier, readers and watchers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::command::Applied;
use crate::error::SnapshotError;
use crate::snapshot::{SnapshotCursor, SnapshotStep, SNAPSHOT_RECORDS_PER_STEP};
use crate::store::KvStore;

/// Where the local store stands; published after every apply and restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreProgress {
    /// Last log index applied.
    pub applied_index: u64,
    /// Newest revision.
    pub revision: i64,
    /// Compaction revision.
    pub compact_revision: i64,
}

/// The local replica's store behind a lock, with a notification for every change.
///
/// The runtime applies committed entries through [`KvState::apply`]; reads, watchers and
/// the lessor read through [`KvState::read`].
#[derive(Debug)]
pub struct KvState {
    store: RwLock<KvStore>,
    progress: watch::Sender<StoreProgress>,
    /// Restores made so far; changed only under the write lock, so a snapshot being
    /// taken in steps can tell the store under it was replaced.
    restores: AtomicU64,
}

fn progress_of(store: &KvStore) -> StoreProgress {
    StoreProgress {
        applied_index: store.applied_index(),
        revision: store.current_revision(),
        compact_revision: store.compact_revision(),
    }
}

impl KvState {
    /// Wraps a store.
    pub fn new(store: KvStore) -> KvState {
        let (progress, _) = watch::channel(progress_of(&store));
        KvState {
            store: RwLock::new(store),
            progress,
            restores: AtomicU64::new(0),
        }
    }

    // A poisoned lock means an apply panicked on a broken invariant; the state may be half
    // written, so every later access stops loudly rather than serving it.
    fn write(&self) -> RwLockWriteGuard<'_, KvStore> {
        self.store
            .write()
            .expect("KV store lock poisoned by a panic during apply")
    }

    fn read_guard(&self) -> RwLockReadGuard<'_, KvStore> {
        self.store
            .read()
            .expect("KV store lock poisoned by a panic during apply")
    }

    /// Applies one committed log entry and wakes watchers.
    pub fn apply(&self, index: u64, bytes: &[u8]) -> Applied {
        let mut store = self.write();
        let applied = store.apply(index, bytes);
        self.progress.send_replace(progress_of(&store));
        applied
    }

    /// Replaces the whole state with a snapshot; on error nothing changes.
    pub fn restore(&self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let restored = KvStore::restore(snapshot)?;
        let mut store = self.write();
        *store = restored;
        self.restores.fetch_add(1, Ordering::Relaxed);
        self.progress.send_replace(progress_of(&store));
        Ok(())
    }

    /// A snapshot of the current state.
    pub fn snapshot(&self) -> Vec<u8> {
        self.read_guard().snapshot()
    }

    /// Starts a snapshot of the current state, to be finished by
    /// [`KvState::finish_snapshot`] — typically on another thread, while this state keeps
    /// applying.
    pub fn begin_snapshot(&self) -> SnapshotCursor {
        let store = self.read_guard();
        SnapshotCursor::begin(&store, self.restores.load(Ordering::Relaxed))
    }

    /// Finishes a snapshot begun by [`KvState::begin_snapshot`], holding the store (shared)
    /// for [`SNAPSHOT_RECORDS_PER_STEP`] records at a time. `None` when a compaction or a
    /// restore changed the history the snapshot was reading; take a new one.
    pub fn finish_snapshot(&self, mut cursor: SnapshotCursor) -> Option<Vec<u8>> {
        loop {
            let step = {
                let store = self.read_guard();
                let restores = self.restores.load(Ordering::Relaxed);
                cursor.step(&store, restores, SNAPSHOT_RECORDS_PER_STEP)
            };
            match step {
                SnapshotStep::More(next) => {
                    cursor = next;
                    // Let a waiting applier in before the next step.
                    std::thread::yield_now();
                }
                SnapshotStep::Done(bytes) => return Some(bytes),
                SnapshotStep::Abandoned => return None,
            }
        }
    }

    /// Runs `f` with shared access to the store.
    pub fn read<R>(&self, f: impl FnOnce(&KvStore) -> R) -> R {
        f(&self.read_guard())
    }

    /// The current progress.
    pub fn progress(&self) -> StoreProgress {
        *self.progress.borrow()
    }

    /// A receiver that observes every later change of progress.
    pub fn subscribe(&self) -> watch::Receiver<StoreProgress> {
        self.progress.subscribe()
    }

    /// Waits until the applied index reaches `index` (the second half of a ReadIndex read).
    pub async fn wait_applied(&self, index: u64) {
        let mut rx = self.subscribe();
        // The sender lives as long as `self`, which outlives this borrow, so `wait_for` only
        // returns once the condition holds.
        let _ = rx.wait_for(|p| p.applied_index >= index).await;
    }
}
