//! Applying committed work to the state machine: the [`Applier`], which the runtime runs on
//! the node's apply workers (`apply_pool.rs`: a slow state machine holds one worker, never a
//! driver) and the simulator runs inline.
//!
//! The group core hands out work through [`Command::Apply`](crate::core::Command::Apply);
//! the runtime swaps the tickets of this node's proposals for their callers
//! ([`Proposer`]s), and the applier answers each caller right after applying its entry —
//! never before. Snapshots are begun here, when enough was applied since the last one,
//! and finished by a [`Snapshotter`] off the applying thread.

use std::time::Instant;

use ordo_raft::{ConfChange, ConfState, Entry, EntryKind, Index, NodeId, Snapshot, Term};

use crate::codec::RequestId;
use crate::group::GroupId;
use crate::metrics::{inc, GroupMetrics};
use crate::state_machine::{unwrap, SnapshotJob, StateMachine};
use crate::storage::{LogStore, StorageFailure};

/// A caller waiting for its proposal's entry to be applied.
pub trait Proposer<O>: Send + 'static {
    /// Its entry was applied with this output.
    fn applied(self, output: O);
    /// Its membership change was applied; the configuration after it.
    fn membership_applied(self, conf_state: &ConfState);
}

/// Committed work with this node's callers in it.
#[derive(Debug)]
pub struct ApplyBatch<R> {
    /// A snapshot to restore first.
    pub restore: Option<Snapshot>,
    /// Committed entries, in order.
    pub entries: Vec<Entry>,
    /// The configuration after these entries.
    pub conf_state: ConfState,
    /// The callers of this node's entries among them, by index.
    pub proposers: Vec<(Index, R)>,
    /// Take a snapshot after this batch whatever the thresholds say.
    pub snapshot_now: bool,
}

impl<R> ApplyBatch<R> {
    /// The group core's [`ApplyWork`](crate::core::ApplyWork), with each proposal's ticket
    /// swapped for its caller by `caller` (`None`: the caller gave up).
    pub fn from_work(
        work: crate::core::ApplyWork,
        mut caller: impl FnMut(Index, crate::core::Ticket) -> Option<R>,
    ) -> ApplyBatch<R> {
        let proposers = work
            .proposers
            .into_iter()
            .filter_map(|(index, ticket)| Some((index, caller(index, ticket)?)))
            .collect();
        ApplyBatch {
            restore: work.restore,
            entries: work.entries,
            conf_state: work.conf_state,
            proposers,
            snapshot_now: work.snapshot_now,
        }
    }
}

/// A snapshot to finish: the state machine's job and where it belongs in the log.
pub struct SnapshotTask<St> {
    /// Serialises the state.
    pub job: SnapshotJob,
    /// The storage to write it to.
    pub storage: St,
    /// The group, for logs.
    pub group_id: GroupId,
    /// The applied index it was begun at.
    pub index: Index,
    /// That entry's term.
    pub term: Term,
    /// The configuration as of `index`.
    pub conf_state: ConfState,
    /// Counts the snapshot once written.
    pub metrics: std::sync::Arc<GroupMetrics>,
}

/// How a snapshot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// Written and installed; the log may be compacted behind it.
    Written {
        /// Its metadata.
        meta: ordo_raft::SnapshotMeta,
        /// Its size.
        bytes: u64,
    },
    /// The state machine could no longer read the state the snapshot began at.
    Abandoned,
}

impl<St: LogStore> SnapshotTask<St> {
    /// Serialises the snapshot and writes its file.
    pub fn run(self) -> Result<SnapshotOutcome, StorageFailure> {
        let started = Instant::now();
        let Some(data) = self.job.finish() else {
            tracing::info!(group = %self.group_id, index = self.index, "snapshot abandoned: the state changed under it; it will be taken again");
            return Ok(SnapshotOutcome::Abandoned);
        };
        let (index, term) = (self.index, self.term);
        self.storage
            .write_snapshot(index, term, &self.conf_state, &data)?;
        inc(&self.metrics.snapshots_taken, 1);
        tracing::info!(group = %self.group_id, index, term, bytes = data.len(), ms = started.elapsed().as_millis() as u64, "snapshot taken");
        let meta = ordo_raft::SnapshotMeta {
            index,
            term,
            conf_state: self.conf_state,
        };
        Ok(SnapshotOutcome::Written {
            meta,
            bytes: data.len() as u64,
        })
    }
}

/// Finishes snapshots off the applying thread, one at a time.
pub trait Snapshotter<St> {
    /// Starts finishing `task`.
    fn start(&mut self, task: SnapshotTask<St>) -> Result<(), String>;
    /// The outcome of the snapshot started last, once it is done; with `wait`, waits.
    fn poll(&mut self, wait: bool) -> Option<Result<SnapshotOutcome, String>>;
}

/// Applies committed work in order, answers callers, and begins snapshots.
pub struct Applier<S: StateMachine, St, Sn> {
    group_id: GroupId,
    node_id: NodeId,
    boot: u64,
    storage: St,
    metrics: std::sync::Arc<GroupMetrics>,
    thresholds: SnapshotThresholds,
    snapshotter: Sn,
    /// Index and term of the last applied entry.
    applied: (Index, Term),
    since: SinceSnapshot,
    /// The snapshot being finished: the applied index and bytes when it was begun.
    in_flight: Option<(Index, u64)>,
    /// A snapshot was asked for and not yet begun.
    requested: bool,
    _state_machine: std::marker::PhantomData<fn(&mut S)>,
}

/// When a snapshot is due.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotThresholds {
    /// Entries applied since the last snapshot.
    pub entries: u64,
    /// Entry bytes applied since the last snapshot.
    pub bytes: u64,
}

/// Who the applier is, and where it starts.
#[derive(Debug, Clone, Copy)]
pub struct ApplierIdentity {
    /// The group.
    pub group_id: GroupId,
    /// This node.
    pub node_id: NodeId,
    /// This run of the node: its proposals carry it.
    pub boot: u64,
    /// Index and term of the snapshot the state machine was restored from.
    pub restored: (Index, Term),
}

impl<S: StateMachine, St: LogStore + Clone, Sn: Snapshotter<St>> Applier<S, St, Sn> {
    /// An applier for a state machine restored at `identity.restored`.
    pub fn new(
        identity: ApplierIdentity,
        storage: St,
        metrics: std::sync::Arc<GroupMetrics>,
        thresholds: SnapshotThresholds,
        snapshotter: Sn,
    ) -> Applier<S, St, Sn> {
        Applier {
            group_id: identity.group_id,
            node_id: identity.node_id,
            boot: identity.boot,
            storage,
            metrics,
            thresholds,
            snapshotter,
            applied: identity.restored,
            since: SinceSnapshot {
                last_index: identity.restored.0,
                ..SinceSnapshot::default()
            },
            in_flight: None,
            requested: false,
            _state_machine: std::marker::PhantomData,
        }
    }

    /// The index applied last.
    pub fn applied_index(&self) -> Index {
        self.applied.0
    }

    /// The group.
    pub fn group_id(&self) -> GroupId {
        self.group_id
    }

    pub(crate) fn metrics(&self) -> &GroupMetrics {
        &self.metrics
    }

    /// Applies a batch to `sm` and begins a snapshot if one is due. Returns the snapshot
    /// finished meanwhile, if any. An error (a snapshot the state machine refused, a
    /// snapshot that could not be written) stops applying for good.
    pub fn apply_batch<R: Proposer<S::Output>>(
        &mut self,
        sm: &mut S,
        batch: ApplyBatch<R>,
    ) -> Result<Option<SnapshotOutcome>, String> {
        let started = Instant::now();
        let mut finished = None;
        let mut conf = batch.conf_state;
        if let Some(snapshot) = batch.restore {
            // A snapshot still reading the state must end before the state is replaced.
            finished = self.settle(true)?;
            self.restore(sm, &snapshot)?;
            if batch.entries.is_empty() {
                conf = snapshot.meta.conf_state.clone();
            }
        }
        let mut proposers = batch.proposers.into_iter().peekable();
        for entry in batch.entries {
            assert_eq!(
                entry.index,
                self.applied.0 + 1,
                "committed entries must be applied in order without gaps"
            );
            let index = entry.index;
            let proposer = proposers.next_if(|(i, _)| *i == index).map(|(_, r)| r);
            self.apply_entry(sm, entry, &conf, proposer);
        }
        assert!(
            proposers.next().is_none(),
            "every proposer's entry is in its batch"
        );
        self.metrics
            .apply_batch_us
            .record(started.elapsed().as_micros() as u64);
        if finished.is_none() {
            finished = self.settle(false)?;
        }
        self.requested |= batch.snapshot_now;
        if self.applied.0 == self.since.last_index {
            self.requested = false;
        }
        if self.snapshot_begins(self.applied.0, self.since, self.requested) {
            self.begin_snapshot(sm, conf)?;
        }
        Ok(finished)
    }

    /// Whether applying `batch` does no more than apply its entries: it restores no
    /// snapshot, and neither finishes nor begins one (which serialise the state or wait for
    /// a thread).
    pub fn only_applies<R>(&self, batch: &ApplyBatch<R>) -> bool {
        if batch.restore.is_some() || batch.snapshot_now || self.requested {
            return false;
        }
        if self.in_flight.is_some() {
            return false;
        }
        let applied = batch.entries.last().map_or(self.applied.0, |e| e.index);
        let bytes: u64 = batch.entries.iter().map(|e| e.data.len() as u64).sum();
        let since = SinceSnapshot {
            bytes: self.since.bytes + bytes,
            ..self.since
        };
        !self.snapshot_begins(applied, since, false)
    }

    /// Whether a snapshot begins once everything through `applied` is applied, with `since`
    /// applied since the last one: [`apply_batch`](Applier::apply_batch) decides with it,
    /// and [`only_applies`](Applier::only_applies) foresees the same decision.
    fn snapshot_begins(&self, applied: Index, since: SinceSnapshot, requested: bool) -> bool {
        applied > since.last_index
            && self.in_flight.is_none()
            && (requested || since.due(applied, self.thresholds))
    }

    /// Waits for the snapshot in flight, if any (the group is stopping).
    pub fn finish(&mut self) -> Result<Option<SnapshotOutcome>, String> {
        self.settle(true)
    }

    fn restore(&mut self, sm: &mut S, snapshot: &Snapshot) -> Result<(), String> {
        let meta = &snapshot.meta;
        sm.restore(meta.index, &snapshot.data)
            .map_err(|e| e.to_string())?;
        check_applied(sm, meta.index);
        self.applied = (meta.index, meta.term);
        self.since = SinceSnapshot {
            last_index: meta.index,
            last_bytes: self.since.last_bytes,
            bytes: 0,
        };
        tracing::info!(group = %self.group_id, index = meta.index, term = meta.term, "state machine restored from snapshot");
        Ok(())
    }

    fn apply_entry<R: Proposer<S::Output>>(
        &mut self,
        sm: &mut S,
        entry: Entry,
        conf: &ConfState,
        proposer: Option<R>,
    ) {
        let index = entry.index;
        self.since.bytes += entry.data.len() as u64;
        inc(&self.metrics.entries_applied, 1);
        match entry.kind {
            EntryKind::Normal if entry.data.is_empty() => sm.note_applied(index),
            EntryKind::Normal => match unwrap(entry.data) {
                Ok((request, data)) => {
                    let output = sm.apply(index, &data);
                    if let Some(proposer) = proposer {
                        debug_assert!(self.is_mine(&request));
                        proposer.applied(output);
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
                if let Some(proposer) = proposer {
                    debug_assert!(ConfChange::decode(&entry.data).is_ok());
                    proposer.membership_applied(conf);
                }
            }
        }
        check_applied(sm, index);
        self.applied = (index, entry.term);
    }

    fn is_mine(&self, request: &RequestId) -> bool {
        request.node == self.node_id && request.boot == self.boot
    }

    /// Begins a snapshot at the applied index and hands its serialisation and its write
    /// to the snapshotter, so applying goes on meanwhile.
    fn begin_snapshot(&mut self, sm: &S, conf_state: ConfState) -> Result<(), String> {
        let (index, term) = self.applied;
        let task = SnapshotTask {
            job: sm.begin_snapshot(),
            storage: self.storage.clone(),
            group_id: self.group_id,
            index,
            term,
            conf_state,
            metrics: std::sync::Arc::clone(&self.metrics),
        };
        self.snapshotter.start(task)?;
        // The snapshot asked for is this one: asking is not a standing order.
        self.requested = false;
        self.in_flight = Some((index, self.since.bytes));
        Ok(())
    }

    /// Collects the snapshot in flight if it is done (or, with `wait`, once it is done).
    fn settle(&mut self, wait: bool) -> Result<Option<SnapshotOutcome>, String> {
        let Some((index, bytes_at_start)) = self.in_flight else {
            return Ok(None);
        };
        let Some(outcome) = self.snapshotter.poll(wait) else {
            return Ok(None);
        };
        self.in_flight = None;
        let outcome = outcome?;
        if let SnapshotOutcome::Written { bytes, .. } = &outcome {
            self.since.last_index = self.since.last_index.max(index);
            self.since.bytes = self.since.bytes.saturating_sub(bytes_at_start);
            self.since.last_bytes = *bytes;
        }
        Ok(Some(outcome))
    }
}

fn check_applied<S: StateMachine>(sm: &S, index: Index) {
    let reported = sm.applied_index();
    assert_eq!(
        reported, index,
        "the state machine reports applied index {reported} after applying {index}"
    );
}

/// What was applied since the last snapshot.
#[derive(Debug, Clone, Copy, Default)]
struct SinceSnapshot {
    /// The last snapshot's index.
    last_index: Index,
    /// Entry bytes applied since it.
    bytes: u64,
    /// Its size (0 until this applier wrote one).
    last_bytes: u64,
}

impl SinceSnapshot {
    /// Whether a snapshot is due with `applied` the applied index. A snapshot writes the
    /// whole state; once the state is larger than the log the thresholds allow, a snapshot
    /// also waits until the log since the last one is as large as that snapshot was.
    /// Snapshots then never write more than the log does, instead of rewriting a large
    /// state every few thresholds' worth of writes.
    fn due(self, applied: Index, thresholds: SnapshotThresholds) -> bool {
        let entries = applied.saturating_sub(self.last_index);
        (entries >= thresholds.entries || self.bytes >= thresholds.bytes)
            && self.bytes >= self.last_bytes
    }
}

/// Called with each snapshot a [`ThreadSnapshotter`] wrote, from its thread.
pub type SnapshotWritten = std::sync::Arc<dyn Fn(ordo_raft::SnapshotMeta) + Send + Sync>;

/// A snapshotter that finishes each snapshot on a thread of its own, at the lowest CPU
/// priority, and reports it written from there (the applying thread may be idle).
pub struct ThreadSnapshotter {
    thread: Option<std::thread::JoinHandle<Result<SnapshotOutcome, String>>>,
    name: String,
    on_written: SnapshotWritten,
}

impl ThreadSnapshotter {
    /// Threads named `name`; `on_written` hears of every snapshot written.
    pub fn new(name: String, on_written: SnapshotWritten) -> ThreadSnapshotter {
        ThreadSnapshotter {
            thread: None,
            name,
            on_written,
        }
    }
}

impl<St: LogStore + Send + 'static> Snapshotter<St> for ThreadSnapshotter {
    fn start(&mut self, task: SnapshotTask<St>) -> Result<(), String> {
        assert!(self.thread.is_none(), "one snapshot at a time per group");
        let on_written = std::sync::Arc::clone(&self.on_written);
        let thread = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || {
                lower_this_threads_priority();
                let outcome = task.run().map_err(|e| e.to_string())?;
                if let SnapshotOutcome::Written { meta, .. } = &outcome {
                    on_written(meta.clone());
                }
                Ok(outcome)
            })
            .map_err(|e| format!("cannot start the snapshot thread: {e}"))?;
        self.thread = Some(thread);
        Ok(())
    }

    fn poll(&mut self, wait: bool) -> Option<Result<SnapshotOutcome, String>> {
        let done = self.thread.as_ref()?.is_finished();
        if !done && !wait {
            return None;
        }
        let thread = self.thread.take()?;
        Some(
            thread
                .join()
                .unwrap_or_else(|_| Err("the snapshot thread panicked".to_string())),
        )
    }
}

/// A snapshotter that finishes each snapshot at once, on the applying thread: for the
/// simulator, where nothing runs concurrently.
#[derive(Default)]
pub struct InlineSnapshotter {
    done: Option<Result<SnapshotOutcome, String>>,
}

impl<St: LogStore> Snapshotter<St> for InlineSnapshotter {
    fn start(&mut self, task: SnapshotTask<St>) -> Result<(), String> {
        assert!(self.done.is_none(), "one snapshot at a time per group");
        self.done = Some(task.run().map_err(|e| e.to_string()));
        Ok(())
    }

    fn poll(&mut self, _wait: bool) -> Option<Result<SnapshotOutcome, String>> {
        self.done.take()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn since(last_index: Index, bytes: u64, last_bytes: u64) -> SinceSnapshot {
        SinceSnapshot {
            last_index,
            bytes,
            last_bytes,
        }
    }

    const THRESHOLDS: SnapshotThresholds = SnapshotThresholds {
        entries: 100,
        bytes: 1000,
    };

    /// Counts entries; a snapshot is its count.
    #[derive(Default)]
    struct Counter {
        n: u64,
        applied: Index,
    }

    impl StateMachine for Counter {
        type Output = u64;
        fn apply(&mut self, index: Index, _: &[u8]) -> u64 {
            self.applied = index;
            self.n += 1;
            self.n
        }
        fn note_applied(&mut self, index: Index) {
            self.applied = index;
        }
        fn snapshot(&self) -> bytes::Bytes {
            bytes::Bytes::copy_from_slice(&self.n.to_be_bytes())
        }
        fn restore(&mut self, index: Index, _: &[u8]) -> Result<(), crate::RestoreError> {
            self.applied = index;
            Ok(())
        }
        fn applied_index(&self) -> Index {
            self.applied
        }
    }

    struct Nobody;
    impl Proposer<u64> for Nobody {
        fn applied(self, _: u64) {}
        fn membership_applied(self, _: &ConfState) {}
    }

    fn no_ops(range: std::ops::RangeInclusive<Index>) -> Vec<Entry> {
        range
            .map(|i| Entry::new(1, i, bytes::Bytes::new()))
            .collect()
    }

    #[test]
    fn a_requested_snapshot_is_taken_once_not_after_every_later_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = ordo_wal::SharedLog::open(dir.path(), ordo_wal::SharedOptions::default());
        let wal = log.unwrap().group(1).unwrap();
        let storage = crate::storage::WalStorage::open(wal, 1 << 20).unwrap();
        storage.append(&no_ops(1..=100)).unwrap();
        let identity = ApplierIdentity {
            group_id: GroupId(1),
            node_id: 1,
            boot: 1,
            restored: (0, 0),
        };
        let thresholds = SnapshotThresholds {
            entries: 1_000,
            bytes: u64::MAX,
        };
        let metrics = std::sync::Arc::<GroupMetrics>::default();
        let mut applier = Applier::<Counter, _, _>::new(
            identity,
            storage,
            std::sync::Arc::clone(&metrics),
            thresholds,
            InlineSnapshotter::default(),
        );
        let mut sm = Counter::default();
        let batch = |entries: Vec<Entry>, snapshot_now| ApplyBatch::<Nobody> {
            restore: None,
            entries,
            conf_state: ConfState::with_voters([1]),
            proposers: Vec::new(),
            snapshot_now,
        };
        applier
            .apply_batch(&mut sm, batch(no_ops(1..=10), true))
            .unwrap();
        for i in 11..=100 {
            applier
                .apply_batch(&mut sm, batch(no_ops(i..=i), false))
                .unwrap();
        }
        assert_eq!(metrics.snapshot().snapshots_taken, 1);
    }

    #[test]
    fn a_snapshot_is_due_at_either_threshold_while_snapshots_are_small() {
        assert!(!since(0, 990, 0).due(99, THRESHOLDS));
        assert!(since(0, 10, 0).due(100, THRESHOLDS));
        assert!(since(10, 1000, 500).due(11, THRESHOLDS));
    }

    #[test]
    fn a_snapshot_larger_than_the_log_waits_until_the_log_is_as_large() {
        let big = SnapshotThresholds {
            entries: 100,
            bytes: 1_000_000,
        };
        // The last snapshot was 5,000 bytes: 100 entries of 10 bytes are not enough.
        assert!(!since(0, 1000, 5000).due(100, big));
        assert!(!since(0, 4990, 5000).due(499, big));
        assert!(since(0, 5000, 5000).due(500, big));
    }
}
