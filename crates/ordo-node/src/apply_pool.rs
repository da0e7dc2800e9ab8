//! The node's apply workers: a bounded pool of threads that applies every group's committed
//! work, instead of a thread per group.
//!
//! Each group has an inbox of [`ApplyBatch`]es that its driver fills without ever waiting
//! ([`ApplySender::send`]; the group core bounds how many wait, `apply_batches_max`, and
//! goes on with Raft meanwhile). A group with batches is *scheduled*: put once in the pool's
//! run queue. A worker takes it, applies up to [`BATCHES_PER_TURN_MAX`] of its batches in
//! order and puts it back at the end of the queue if more wait. A group is in the queue or
//! on a worker at most once at a time, so its batches run in order and never concurrently;
//! different groups run on different workers; a state machine that blocks holds one worker
//! while the others serve the other groups. An idle group costs no thread.
//!
//! When its driver goes (the group stops, or the node crashes and aborts it) the sender is
//! dropped and the inbox closes: a worker applies the batches already queued, waits for a
//! snapshot in progress, drops the group's applier (and with it the group's storage), marks
//! its applying stopped and signals [`ApplyDone`]. A batch the state machine fails on (a
//! snapshot it refuses, a snapshot that cannot be written) stops the group's applying for
//! good and drops the rest of its inbox; so does a panic in its state machine, and the
//! worker goes on with the other groups.
//!
//! A state machine that declares it applies quickly ([`StateMachine::APPLIES_QUICKLY`])
//! skips the hand-off where nothing can wait: when the group has nothing queued or on a
//! worker, no reader holds the state machine and the batch neither restores nor takes a
//! snapshot, its driver applies the batch itself ([`ApplySender::send`] answers
//! [`Sent::Applied`]). A worker would cost two thread wake-ups (the worker's, and the
//! proposer's task woken from another thread; the crate README gives what that was
//! measured to cost). Otherwise the batch goes to the inbox as above.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use ordo_raft::Index;
use tokio::sync::{oneshot, watch};

use crate::apply::{Applier, ApplyBatch, SnapshotOutcome, ThreadSnapshotter};
use crate::driver::{ApplyProgress, Reply};
use crate::group::{lock, GroupId};
use crate::state_machine::StateMachine;
use crate::storage::WalStorage;

/// Batches a worker applies for one group before the next group in the queue gets it.
const BATCHES_PER_TURN_MAX: usize = 8;

/// The node's apply workers. Dropping the pool lets its workers exit once the run queue is
/// empty; [`ApplyPool::shutdown`] also waits for them.
pub(crate) struct ApplyPool {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// What the workers share: the run queue.
struct Shared {
    run_queue: Mutex<RunQueue>,
    work: Condvar,
}

struct RunQueue {
    /// Groups with work, each at most once, in the order they got it.
    groups: VecDeque<Arc<dyn Scheduled>>,
    /// Workers exit once the queue is empty.
    stopping: bool,
    /// Workers waiting for work. A group scheduled while none waits is taken by a busy
    /// worker when it finishes its turn (each looks at the queue before it waits), so
    /// waking one costs a system call only when one sleeps.
    idle: usize,
}

/// A group as the workers see it.
trait Scheduled: Send + Sync {
    /// Applies some of the group's batches; true if it has more and goes back in the queue.
    fn run_turn(&self) -> bool;
}

/// A group as its driver sees it, when its state machine applies quickly
/// ([`StateMachine::APPLIES_QUICKLY`]).
trait ApplyHere<R>: Send + Sync {
    /// Applies `batch` on the calling thread if nothing there can wait: the state machine
    /// is free (no reader holds it) and the batch only applies entries. Gives the batch
    /// back otherwise. The caller holds the group as scheduled, so no worker runs it.
    fn try_apply_here(&self, batch: ApplyBatch<R>) -> Option<ApplyBatch<R>>;
}

impl Shared {
    fn schedule(&self, group: Arc<dyn Scheduled>) {
        let mut queue = lock(&self.run_queue);
        queue.groups.push_back(group);
        let sleeping = queue.idle > 0;
        drop(queue);
        if sleeping {
            self.work.notify_one();
        }
    }

    /// The next group to run, or `None` once stopping with nothing left.
    fn next(&self) -> Option<Arc<dyn Scheduled>> {
        let mut queue = lock(&self.run_queue);
        loop {
            if let Some(group) = queue.groups.pop_front() {
                return Some(group);
            }
            if queue.stopping {
                return None;
            }
            queue.idle += 1;
            queue = self
                .work
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
            queue.idle -= 1;
        }
    }

    fn stop(&self) {
        lock(&self.run_queue).stopping = true;
        self.work.notify_all();
    }
}

impl ApplyPool {
    /// Starts `workers` threads (at least one) for node `node_id`.
    pub(crate) fn start(node_id: u64, workers: usize) -> std::io::Result<ApplyPool> {
        assert!(workers >= 1, "an apply pool needs a worker");
        let shared = Arc::new(Shared {
            run_queue: Mutex::new(RunQueue {
                groups: VecDeque::new(),
                stopping: false,
                idle: 0,
            }),
            work: Condvar::new(),
        });
        let mut pool = ApplyPool {
            shared,
            workers: Vec::with_capacity(workers),
        };
        for i in 0..workers {
            let shared = Arc::clone(&pool.shared);
            let worker = std::thread::Builder::new()
                .name(format!("ordo-apply-{node_id}-{i}"))
                .spawn(move || {
                    while let Some(group) = shared.next() {
                        if group.run_turn() {
                            shared.schedule(group);
                        }
                    }
                })?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Takes on a group: returns its driver's end of the inbox, and what signals that the
    /// group's applying stopped for good.
    pub(crate) fn add_group<S: StateMachine>(
        &self,
        runner: ApplyRunner<S>,
    ) -> (ApplySender<Reply<S::Output>>, ApplyDone) {
        let inbox = Arc::new(Mutex::new(Inbox {
            batches: VecDeque::new(),
            closed: false,
            scheduled: false,
            stopped: false,
        }));
        let (done_tx, done_rx) = oneshot::channel();
        let group = Arc::new(GroupApply {
            group_id: runner.applier.group_id(),
            inbox: Arc::clone(&inbox),
            runner: Mutex::new(Some(runner)),
            done: Mutex::new(Some(done_tx)),
        });
        let here = S::APPLIES_QUICKLY.then(|| Arc::clone(&group) as Arc<dyn ApplyHere<_>>);
        let sender = ApplySender {
            inbox,
            group,
            here,
            shared: Arc::clone(&self.shared),
        };
        (sender, ApplyDone(done_rx))
    }

    /// Lets the workers exit once the run queue is empty and waits for them. Groups still
    /// running then are not applied any more: stop them first.
    pub(crate) async fn shutdown(&mut self) {
        self.shared.stop();
        let workers = std::mem::take(&mut self.workers);
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
    }
}

impl Drop for ApplyPool {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// A group's batches waiting for a worker.
struct Inbox<R> {
    batches: VecDeque<ApplyBatch<R>>,
    /// The driver is gone: no more batches come.
    closed: bool,
    /// The group is in the run queue or on a worker (or its applying stopped).
    scheduled: bool,
    /// Applying stopped for good: batches are refused.
    stopped: bool,
}

/// Applying stopped for good (the state machine failed or the group stopped).
#[derive(Debug)]
pub(crate) struct ApplyStopped;

/// Where [`ApplySender::send`] put a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// In the group's inbox, for a worker.
    Queued,
    /// Nowhere: it was applied on the sender's thread.
    Applied,
}

/// The driver's end of its group's inbox. Dropping it closes the inbox: the batches in it
/// are still applied.
pub(crate) struct ApplySender<R> {
    inbox: Arc<Mutex<Inbox<R>>>,
    group: Arc<dyn Scheduled>,
    /// Set when the state machine applies quickly.
    here: Option<Arc<dyn ApplyHere<R>>>,
    shared: Arc<Shared>,
}

impl<R> ApplySender<R> {
    /// Queues a batch, never waiting, or applies it at once when the state machine applies
    /// quickly and the batch is next in order; fails once the group's applying stopped.
    pub(crate) fn send(&self, mut batch: ApplyBatch<R>) -> Result<Sent, ApplyStopped> {
        let mut inbox = lock(&self.inbox);
        if inbox.stopped {
            return Err(ApplyStopped);
        }
        assert!(
            !inbox.closed,
            "a batch sent after its sender closed the inbox"
        );
        let mut handed_back = false;
        if let Some(here) = &self.here {
            if !inbox.scheduled {
                // Nothing is queued or on a worker, so this batch is next. The group counts
                // as scheduled while it applies here: no worker takes it meanwhile.
                inbox.scheduled = true;
                drop(inbox);
                match here.try_apply_here(batch) {
                    None => {
                        let mut inbox = lock(&self.inbox);
                        // A group whose applying stopped stays marked, as `stop` left it.
                        if !inbox.stopped {
                            inbox.scheduled = false;
                        }
                        return Ok(Sent::Applied);
                    }
                    Some(back) => {
                        batch = back;
                        handed_back = true;
                        inbox = lock(&self.inbox);
                    }
                }
            }
        }
        inbox.batches.push_back(batch);
        let schedule = !std::mem::replace(&mut inbox.scheduled, true) || handed_back;
        drop(inbox);
        if schedule {
            self.shared.schedule(Arc::clone(&self.group));
        }
        Ok(Sent::Queued)
    }
}

impl<R> Drop for ApplySender<R> {
    fn drop(&mut self) {
        let mut inbox = lock(&self.inbox);
        inbox.closed = true;
        // A worker that finds the inbox closed and empty finishes the group.
        let schedule = !std::mem::replace(&mut inbox.scheduled, true);
        drop(inbox);
        if schedule {
            self.shared.schedule(Arc::clone(&self.group));
        }
    }
}

/// Resolves once a group's applying stopped for good and its applier (with the group's
/// storage) is dropped.
pub(crate) struct ApplyDone(oneshot::Receiver<()>);

impl ApplyDone {
    pub(crate) async fn wait(self) {
        // An error means the sender is gone without a word, which only a stopped pool
        // leaves behind: nothing is applied any more either way.
        let _ = self.0.await;
    }
}

/// One group in the pool: its inbox and what applies it.
struct GroupApply<S: StateMachine> {
    group_id: GroupId,
    inbox: Arc<Mutex<Inbox<Reply<S::Output>>>>,
    /// `None` once applying stopped. Only the worker running the group locks it.
    runner: Mutex<Option<ApplyRunner<S>>>,
    done: Mutex<Option<oneshot::Sender<()>>>,
}

/// Why a turn found no batch in the inbox.
enum Drained {
    /// Empty for now: the group leaves the run queue until its next batch.
    ForNow,
    /// Closed and empty: the group is finished.
    ForGood,
}

impl<S: StateMachine> GroupApply<S> {
    fn next(&self) -> Result<ApplyBatch<Reply<S::Output>>, Drained> {
        let mut inbox = lock(&self.inbox);
        match inbox.batches.pop_front() {
            Some(batch) => Ok(batch),
            None if inbox.closed => Err(Drained::ForGood),
            None => {
                inbox.scheduled = false;
                Err(Drained::ForNow)
            }
        }
    }

    /// Applying stopped for good: refuse and drop what waits, drop the applier (waiting
    /// for its snapshot when it stopped cleanly), tell the driver and the node.
    fn stop(&self, runner: Option<ApplyRunner<S>>, clean: bool) {
        let dropped = {
            let mut inbox = lock(&self.inbox);
            inbox.stopped = true;
            inbox.scheduled = true;
            std::mem::take(&mut inbox.batches)
        };
        if !dropped.is_empty() {
            tracing::warn!(group = %self.group_id, batches = dropped.len(), "applying stopped; queued batches dropped");
        }
        drop(dropped);
        if let Some(mut runner) = runner {
            if clean {
                runner.finish();
            }
            let progress = Arc::clone(&runner.progress);
            drop(runner);
            progress.stopped.store(true, Ordering::Release);
            progress.doorbell.ring();
        }
        if let Some(done) = lock(&self.done).take() {
            let _ = done.send(());
        }
    }
}

impl<S: StateMachine> Scheduled for GroupApply<S> {
    fn run_turn(&self) -> bool {
        let mut slot = lock(&self.runner);
        for _ in 0..BATCHES_PER_TURN_MAX {
            let batch = match self.next() {
                Ok(batch) => batch,
                Err(Drained::ForNow) => return false,
                Err(Drained::ForGood) => {
                    self.stop(slot.take(), true);
                    return false;
                }
            };
            if !self.run_guarded(&mut slot, |runner| runner.apply(batch)) {
                return false;
            }
        }
        true
    }
}

impl<S: StateMachine> ApplyHere<Reply<S::Output>> for GroupApply<S> {
    fn try_apply_here(
        &self,
        batch: ApplyBatch<Reply<S::Output>>,
    ) -> Option<ApplyBatch<Reply<S::Output>>> {
        let Ok(mut slot) = self.runner.try_lock() else {
            return Some(batch);
        };
        let Some(runner) = slot.as_mut() else {
            return Some(batch);
        };
        if !runner.applier.only_applies(&batch) {
            return Some(batch);
        }
        let state_machine = Arc::clone(&runner.state_machine);
        let Ok(mut sm) = state_machine.try_lock() else {
            return Some(batch);
        };
        self.run_guarded(&mut slot, |runner| {
            let result = runner.applier.apply_batch(&mut *sm, batch);
            drop(sm);
            // The driver, applying on its own task, turns again for it without a ring.
            runner.publish(result, false)
        });
        None
    }
}

impl<S: StateMachine> GroupApply<S> {
    /// Runs `apply` on the group's runner; if it fails or panics, stops the group's
    /// applying for good and returns false.
    fn run_guarded(
        &self,
        slot: &mut Option<ApplyRunner<S>>,
        apply: impl FnOnce(&mut ApplyRunner<S>) -> bool,
    ) -> bool {
        let runner = slot
            .as_mut()
            .expect("a group whose applying stopped is never scheduled again");
        match catch_unwind(AssertUnwindSafe(|| apply(runner))) {
            Ok(true) => true,
            Ok(false) => {
                self.stop(slot.take(), true);
                false
            }
            Err(_) => {
                tracing::error!(group = %self.group_id, "the state machine panicked; applying stopped");
                self.stop(slot.take(), false);
                false
            }
        }
    }
}

/// What applies one group's batches and publishes its progress.
pub(crate) struct ApplyRunner<S: StateMachine> {
    pub(crate) applier: Applier<S, WalStorage, ThreadSnapshotter>,
    pub(crate) state_machine: Arc<Mutex<S>>,
    pub(crate) progress: Arc<ApplyProgress>,
    pub(crate) applied_tx: watch::Sender<Index>,
}

impl<S: StateMachine> ApplyRunner<S> {
    /// Applies one batch and publishes the progress; false if applying must stop.
    fn apply(&mut self, batch: ApplyBatch<Reply<S::Output>>) -> bool {
        let state_machine = Arc::clone(&self.state_machine);
        let result = self.applier.apply_batch(&mut *lock(&state_machine), batch);
        self.publish(result, true)
    }

    /// Publishes what applying a batch did, once the state machine is unlocked (whoever
    /// the progress wakes may read it at once), ringing the driver's doorbell if `ring`;
    /// false if applying must stop.
    fn publish(&mut self, result: Result<Option<SnapshotOutcome>, String>, ring: bool) -> bool {
        if let Err(error) = result {
            tracing::error!(group = %self.applier.group_id(), %error, "apply stopped");
            return false;
        }
        let applied = self.applier.applied_index();
        self.applier
            .metrics()
            .applied_index
            .store(applied, Ordering::Release);
        self.progress.batches_done.fetch_add(1, Ordering::AcqRel);
        let _ = self.applied_tx.send(applied);
        if ring {
            self.progress.doorbell.ring();
        }
        true
    }

    /// Waits for the snapshot in progress, if any.
    fn finish(&mut self) {
        if let Err(error) = self.applier.finish() {
            tracing::error!(group = %self.applier.group_id(), %error, "the last snapshot failed");
        }
    }
}
