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
use crate::state_machine::{unwrap, SnapshotJob, StateMachine};
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
        let mut snapshots = Snapshots::default();
        while let Some(batch) = batches.blocking_recv() {
            if let Err(error) = self.apply_batch(batch, &mut snapshots) {
                tracing::error!(group = %self.group_id, %error, "apply stopped");
                break;
            }
            self.progress.notify_one();
        }
        if let Err(error) = self.settle_snapshot(&mut snapshots, true) {
            tracing::error!(group = %self.group_id, %error, "the last snapshot failed");
        }
        self.stopped.store(true, Ordering::Release);
        self.progress.notify_one();
        lock(&self.waiters).fail_all(ProposeError::ShuttingDown);
    }

    fn apply_batch(&mut self, batch: ApplyBatch, snapshots: &mut Snapshots) -> Result<(), String> {
        let started = Instant::now();
        let mut conf = batch.conf_state;
        if let Some(snapshot) = batch.restore {
            // A snapshot still reading the state must end before the state is replaced.
            self.settle_snapshot(snapshots, true)?;
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
        self.settle_snapshot(snapshots, false)?;
        if batch.snapshot_now {
            snapshots.requested = true;
        }
        if self.applied.0 == self.last_snapshot_index {
            snapshots.requested = false;
        }
        let due = snapshot_due(
            SinceSnapshot {
                entries: self.applied.0 - self.last_snapshot_index,
                bytes: self.bytes_since_snapshot,
                last_snapshot_bytes: snapshots.last_bytes,
            },
            self.snapshot_entries,
            self.snapshot_bytes,
        );
        if (due || snapshots.requested)
            && self.applied.0 > self.last_snapshot_index
            && snapshots.in_flight.is_none()
        {
            self.begin_snapshot(conf, snapshots)?;
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

    /// Begins a snapshot at the applied index and hands its serialisation and its write
    /// to a thread of its own, so applying goes on meanwhile.
    fn begin_snapshot(&mut self, conf: ConfState, snapshots: &mut Snapshots) -> Result<(), String> {
        assert!(
            snapshots.in_flight.is_none(),
            "one snapshot at a time per group"
        );
        let (index, term) = self.applied;
        let job = lock(&self.state_machine).begin_snapshot();
        let writer = SnapshotWriter {
            group_id: self.group_id,
            storage: self.storage.clone(),
            metrics: Arc::clone(&self.metrics),
            events: self.events.clone(),
            index,
            term,
            conf,
        };
        let thread = std::thread::Builder::new()
            .name(format!("ordo-snap-{}-{}", self.node_id, self.group_id))
            .spawn(move || writer.run(job))
            .map_err(|e| format!("cannot start the snapshot thread: {e}"))?;
        snapshots.in_flight = Some(SnapshotInFlight {
            thread,
            index,
            bytes_at_start: self.bytes_since_snapshot,
        });
        Ok(())
    }

    /// Collects the snapshot in flight if it is done (or, with `wait`, once it is done).
    /// A snapshot that failed to be written stops the apply thread, as a failed write
    /// always has; one whose state changed under it is simply begun again later.
    fn settle_snapshot(&mut self, snapshots: &mut Snapshots, wait: bool) -> Result<(), String> {
        let done = snapshots
            .in_flight
            .as_ref()
            .is_some_and(|f| wait || f.thread.is_finished());
        if !done {
            return Ok(());
        }
        let Some(flight) = snapshots.in_flight.take() else {
            return Ok(());
        };
        let outcome = flight
            .thread
            .join()
            .map_err(|_| "the snapshot thread panicked".to_string())??;
        if let SnapshotOutcome::Written { bytes } = outcome {
            self.last_snapshot_index = self.last_snapshot_index.max(flight.index);
            self.bytes_since_snapshot = self
                .bytes_since_snapshot
                .saturating_sub(flight.bytes_at_start);
            snapshots.last_bytes = bytes;
        }
        Ok(())
    }
}

/// Niceness of snapshot threads: the lowest priority there is.
#[cfg(target_os = "linux")]
const SNAPSHOT_NICENESS: i32 = 19;

/// Puts the calling thread at the lowest CPU priority, so that a snapshot (which reads
/// and encodes the whole state on every replica at about the same moment) takes only the
/// CPU that serving and applying leave over, instead of raising every request's latency
/// while it runs. Best effort: where it cannot, the snapshot runs at normal priority.
fn lower_this_threads_priority() {
    // On Linux, a niceness set for a thread id applies to that thread alone.
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), SNAPSHOT_NICENESS)
    {
        tracing::debug!(%error, "snapshot thread keeps its priority");
    }
}

/// What was applied since the last snapshot.
#[derive(Debug, Clone, Copy)]
struct SinceSnapshot {
    entries: u64,
    bytes: u64,
    last_snapshot_bytes: u64,
}

/// Whether a snapshot is due. A snapshot writes the whole state; once the state is larger
/// than the log the thresholds allow, a snapshot also waits until the log since the last
/// one is as large as that snapshot was. Snapshots then never write more than the log
/// does, instead of rewriting a large state every few thresholds' worth of writes.
fn snapshot_due(since: SinceSnapshot, entries_threshold: u64, bytes_threshold: u64) -> bool {
    (since.entries >= entries_threshold || since.bytes >= bytes_threshold)
        && since.bytes >= since.last_snapshot_bytes
}

/// The apply thread's view of its snapshots.
#[derive(Default)]
struct Snapshots {
    /// The snapshot being serialised and written, if any.
    in_flight: Option<SnapshotInFlight>,
    /// The driver asked for a snapshot that has not been taken yet.
    requested: bool,
    /// Size of the last snapshot this thread wrote (0 until it writes one).
    last_bytes: u64,
}

struct SnapshotInFlight {
    thread: std::thread::JoinHandle<Result<SnapshotOutcome, String>>,
    /// The applied index it was begun at.
    index: Index,
    /// Applied bytes counted towards the next snapshot when it was begun.
    bytes_at_start: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SnapshotOutcome {
    Written {
        /// The snapshot's size.
        bytes: u64,
    },
    /// The state machine could no longer read the state the snapshot began at.
    Abandoned,
}

/// Finishes a snapshot off the apply thread: serialises it, writes its file, and tells
/// the driver, which compacts the log behind it.
struct SnapshotWriter {
    group_id: GroupId,
    storage: WalStorage,
    metrics: Arc<GroupMetrics>,
    events: mpsc::Sender<Event>,
    index: Index,
    term: Term,
    conf: ConfState,
}

impl SnapshotWriter {
    fn run(self, job: SnapshotJob) -> Result<SnapshotOutcome, String> {
        lower_this_threads_priority();
        let started = Instant::now();
        let Some(data) = job.finish() else {
            tracing::info!(group = %self.group_id, index = self.index, "snapshot abandoned: the state changed under it; it will be taken again");
            return Ok(SnapshotOutcome::Abandoned);
        };
        let (index, term) = (self.index, self.term);
        WalStorage::write_snapshot(self.storage.wal(), index, term, &self.conf, &data)
            .map_err(|e| e.to_string())?;
        inc(&self.metrics.snapshots_taken, 1);
        tracing::info!(group = %self.group_id, index, term, bytes = data.len(), ms = started.elapsed().as_millis() as u64, "snapshot taken");
        let meta = ordo_raft::SnapshotMeta {
            index,
            term,
            conf_state: self.conf,
        };
        // The driver compacts the log; if it is gone the group is stopping anyway.
        let _ = self.events.blocking_send(Event::SnapshotTaken(meta));
        Ok(SnapshotOutcome::Written {
            bytes: data.len() as u64,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn since(entries: u64, bytes: u64, last_snapshot_bytes: u64) -> SinceSnapshot {
        SinceSnapshot {
            entries,
            bytes,
            last_snapshot_bytes,
        }
    }

    #[test]
    fn a_snapshot_is_due_at_either_threshold_while_snapshots_are_small() {
        assert!(!snapshot_due(since(99, 990, 0), 100, 1000));
        assert!(snapshot_due(since(100, 10, 0), 100, 1000));
        assert!(snapshot_due(since(1, 1000, 500), 100, 1000));
    }

    #[test]
    fn a_snapshot_larger_than_the_log_waits_until_the_log_is_as_large() {
        // The last snapshot was 5,000 bytes: 100 entries of 10 bytes are not enough.
        assert!(!snapshot_due(since(100, 1000, 5000), 100, 1_000_000));
        assert!(!snapshot_due(since(499, 4990, 5000), 100, 1_000_000));
        assert!(snapshot_due(since(500, 5000, 5000), 100, 1_000_000));
    }
}
