//! The apply thread: applies committed entries to the state machine, off the consensus
//! task, resolves waiting proposals, and takes snapshots.
//!
//! A slow state machine delays only this thread. The driver hands it batches through a
//! bounded channel; when the channel is full the driver stops taking work from the core
//! until a batch is done, so memory stays bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ordo_raft::{ConfChange, ConfState, Entry, EntryKind, Index, NodeId, Snapshot, Term};
use tokio::sync::{mpsc, watch, Notify};

use crate::codec::RequestId;
use crate::driver::Event;
use crate::group::{lock, GroupId, ProposeError, Reply, Waiters};
use crate::metrics::{inc, GroupMetrics};
use crate::state_machine::{unwrap, StateMachine};
use crate::storage::WalStorage;

/// Work for the apply thread.
pub(crate) struct ApplyBatch {
    /// A snapshot to restore first.
    pub(crate) restore: Option<Snapshot>,
    /// Committed entries, in order.
    pub(crate) entries: Vec<Entry>,
    /// The configuration after these entries.
    pub(crate) conf_state: ConfState,
    /// Take a snapshot after this batch whatever the thresholds say.
    pub(crate) snapshot_now: bool,
}

pub(crate) struct Applier<S: StateMachine> {
    pub(crate) group_id: GroupId,
    pub(crate) node_id: NodeId,
    pub(crate) boot: u64,
    pub(crate) state_machine: Arc<Mutex<S>>,
    pub(crate) waiters: Arc<Mutex<Waiters<S::Output>>>,
    pub(crate) applied_tx: watch::Sender<Index>,
    pub(crate) progress: Arc<Notify>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) storage: WalStorage,
    pub(crate) metrics: Arc<GroupMetrics>,
    pub(crate) snapshot_entries: u64,
    pub(crate) snapshot_bytes: u64,
    pub(crate) stopped: Arc<AtomicBool>,
    /// Index and term of the last applied entry.
    pub(crate) applied: (Index, Term),
    pub(crate) last_snapshot_index: Index,
    pub(crate) bytes_since_snapshot: u64,
}

impl<S: StateMachine> Applier<S> {
    pub(crate) fn run(mut self, mut batches: mpsc::Receiver<ApplyBatch>) {
        while let Some(batch) = batches.blocking_recv() {
            if let Err(error) = self.apply_batch(batch) {
                tracing::error!(group = %self.group_id, %error, "apply stopped");
                break;
            }
            self.progress.notify_one();
        }
        self.stopped.store(true, Ordering::Release);
        self.progress.notify_one();
        lock(&self.waiters).fail_all(ProposeError::ShuttingDown);
    }

    fn apply_batch(&mut self, batch: ApplyBatch) -> Result<(), String> {
        let started = Instant::now();
        let mut conf = batch.conf_state;
        if let Some(snapshot) = batch.restore {
            let meta = &snapshot.meta;
            lock(&self.state_machine)
                .restore(meta.index, &snapshot.data)
                .map_err(|e| e.to_string())?;
            self.check_applied(meta.index);
            self.applied = (meta.index, meta.term);
            self.last_snapshot_index = meta.index;
            self.bytes_since_snapshot = 0;
            lock(&self.waiters).fail_through(meta.index, ProposeError::OutcomeUnknown);
            tracing::info!(group = %self.group_id, index = meta.index, term = meta.term, "state machine restored from snapshot");
            if batch.entries.is_empty() {
                conf = meta.conf_state.clone();
            }
        }
        if !batch.entries.is_empty() {
            let state_machine = Arc::clone(&self.state_machine);
            let mut sm = lock(&state_machine);
            for entry in batch.entries {
                assert_eq!(
                    entry.index,
                    self.applied.0 + 1,
                    "committed entries must be applied in order without gaps"
                );
                self.apply_entry(&mut *sm, entry, &conf);
            }
        }
        self.metrics
            .apply_batch_us
            .record(started.elapsed().as_micros() as u64);
        self.metrics
            .applied_index
            .store(self.applied.0, Ordering::Release);
        let _ = self.applied_tx.send(self.applied.0);
        let due = self.applied.0 - self.last_snapshot_index >= self.snapshot_entries
            || self.bytes_since_snapshot >= self.snapshot_bytes;
        if (due || batch.snapshot_now) && self.applied.0 > self.last_snapshot_index {
            self.take_snapshot(conf)?;
        }
        Ok(())
    }

    fn check_applied(&self, index: Index) {
        let reported = lock(&self.state_machine).applied_index();
        assert_eq!(
            reported, index,
            "the state machine reports applied index {reported} after applying {index}"
        );
    }

    fn apply_entry(&mut self, sm: &mut S, entry: Entry, conf: &ConfState) {
        let index = entry.index;
        self.bytes_since_snapshot += entry.data.len() as u64;
        inc(&self.metrics.entries_applied, 1);
        let mut resolved: Option<u64> = None;
        match entry.kind {
            EntryKind::Normal if entry.data.is_empty() => sm.note_applied(index),
            EntryKind::Normal => match unwrap(entry.data) {
                Ok((request, data)) => {
                    let output = sm.apply(index, &data);
                    if self.is_mine(&request) {
                        resolved = Some(request.seq);
                        if let Some(w) = lock(&self.waiters).take(request.seq) {
                            if let Reply::Output(tx) = w.reply {
                                let _ = tx.send(Ok(output));
                            }
                        }
                    }
                }
                Err(error) => {
                    // Every replica sees the same bytes and skips the same entry.
                    tracing::error!(group = %self.group_id, index, %error, "entry without a valid envelope skipped");
                    sm.note_applied(index);
                }
            },
            EntryKind::ConfChange => {
                sm.note_applied(index);
                sm.membership_changed(index, conf);
                if let Ok(cc) = ConfChange::decode(&entry.data) {
                    if let Some(request) = membership_request(&cc) {
                        if self.is_mine(&request) {
                            resolved = Some(request.seq);
                            if let Some(w) = lock(&self.waiters).take(request.seq) {
                                if let Reply::Membership(tx) = w.reply {
                                    let _ = tx.send(Ok(conf.clone()));
                                }
                            }
                        }
                    }
                }
            }
        }
        let reported = sm.applied_index();
        assert_eq!(
            reported, index,
            "the state machine reports applied index {reported} after applying {index}"
        );
        self.applied = (index, entry.term);
        // Anything else waiting at or below this index lost its place in the log.
        let mut waiters = lock(&self.waiters);
        if waiters.by_index.range(..=index).next().is_some() {
            if let Some(seq) = resolved {
                waiters.take(seq);
            }
            waiters.fail_through(index, ProposeError::Dropped);
        }
    }

    fn is_mine(&self, request: &RequestId) -> bool {
        request.node == self.node_id && request.boot == self.boot
    }

    fn take_snapshot(&mut self, conf: ConfState) -> Result<(), String> {
        let (index, term) = self.applied;
        let data = lock(&self.state_machine).snapshot();
        WalStorage::write_snapshot(self.storage.wal(), index, term, &conf, &data)
            .map_err(|e| e.to_string())?;
        self.last_snapshot_index = index;
        self.bytes_since_snapshot = 0;
        inc(&self.metrics.snapshots_taken, 1);
        tracing::info!(group = %self.group_id, index, term, bytes = data.len(), "snapshot taken");
        let meta = ordo_raft::SnapshotMeta {
            index,
            term,
            conf_state: conf,
        };
        // The driver compacts the log; if it is gone the group is stopping anyway.
        let _ = self.events.blocking_send(Event::SnapshotTaken(meta));
        Ok(())
    }
}

/// The request id a membership change carries in its context (the runtime puts it there).
pub(crate) fn membership_request(cc: &ConfChange) -> Option<RequestId> {
    let mut ctx = cc.context.clone();
    if ctx.len() < RequestId::BYTES {
        return None;
    }
    RequestId::get(&mut ctx).ok()
}
