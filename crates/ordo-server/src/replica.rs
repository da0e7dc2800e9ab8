//! One replicated group as a face sees it: the group handle, who leads in which term, and the
//! commit and applied indexes a face reports.
//!
//! Who leads is pushed by the runtime ([`Group::leadership`]): a face reads it on every
//! response without asking the group anything. What changes rarely and is only shown (the
//! configuration, the commit index) is the last [`GroupStatus`] this replica read, read
//! again by whatever needs it fresh. A face's election hook runs once per term this node
//! leads in, before the face acts as that term's leader ([`Replica::is_leader`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ordo_node::{
    ConfState, Group, GroupStatus, Index, Leadership, NodeId, ReadError, StateMachine, StateRole,
    Term,
};
use tokio::sync::watch;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // What these locks guard is replaced whole, so a panic elsewhere cannot leave it
    // half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a face does when this node begins leading in a new term (a KV leader restarts its
/// lease deadlines, say), called with that term.
pub type OnElected = Box<dyn Fn(Term) + Send + Sync>;

/// What a response header reports of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogProgress {
    /// The commit index (never below the applied index).
    pub commit_index: Index,
    /// The index the state machine has applied.
    pub applied_index: Index,
}

/// The face's election hook and the last term it ran for.
struct Election {
    on_elected: OnElected,
    /// The term the hook last ran for (0: never). Read without the lock on every request a
    /// leader serves; written under it.
    elected_term: AtomicU64,
    running: Mutex<()>,
}

impl Election {
    /// Runs the hook for `term` unless it ran for it already; returns once it has run.
    fn ensure(&self, term: Term) {
        if self.elected_term.load(Ordering::Acquire) == term {
            return;
        }
        let _running = lock(&self.running);
        if self.elected_term.load(Ordering::Acquire) == term {
            return;
        }
        (self.on_elected)(term);
        self.elected_term.store(term, Ordering::Release);
    }
}

/// One replicated group on this node, as its faces use it.
pub struct Replica<S: StateMachine> {
    group: Group<S>,
    node_id: NodeId,
    cluster_id: u64,
    leadership: watch::Receiver<Leadership>,
    last_status: Mutex<Option<GroupStatus>>,
    election: Election,
}

impl<S: StateMachine> Replica<S> {
    /// The group `group` on node `node_id` of cluster `cluster_id`. `on_elected` runs once
    /// for every term this node leads in, before the face acts as that term's leader.
    pub fn new(
        group: Group<S>,
        node_id: NodeId,
        cluster_id: u64,
        on_elected: OnElected,
    ) -> Replica<S> {
        assert!(node_id != 0, "a node id is never 0");
        let leadership = group.leadership();
        Replica {
            group,
            node_id,
            cluster_id,
            leadership,
            last_status: Mutex::new(None),
            election: Election {
                on_elected,
                elected_term: AtomicU64::new(0),
                running: Mutex::new(()),
            },
        }
    }

    /// The group handle.
    pub fn group(&self) -> &Group<S> {
        &self.group
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Reads the group's status and remembers it (configuration, commit index).
    pub async fn refresh(&self) -> Result<GroupStatus, ReadError> {
        let status = self.group.status().await?;
        assert_eq!(status.node_id, self.node_id, "a status of another node");
        *lock(&self.last_status) = Some(status.clone());
        Ok(status)
    }

    /// Who leads, as the runtime last pushed it.
    pub fn leadership(&self) -> Leadership {
        *self.leadership.borrow()
    }

    /// Whether this node leads now. When it does, the face's election hook has run for
    /// the current term before this returns.
    pub fn is_leader(&self) -> bool {
        let now = self.leadership();
        if now.role != StateRole::Leader {
            return false;
        }
        self.election.ensure(now.term);
        true
    }

    /// The leader this node knows of, if any.
    pub fn leader(&self) -> Option<NodeId> {
        Some(self.leadership().leader).filter(|&l| l != 0)
    }

    /// The configuration as of the last status read, if any.
    pub fn conf_state(&self) -> Option<ConfState> {
        lock(&self.last_status)
            .as_ref()
            .map(|s| s.conf_state.clone())
    }

    /// Whether this node was a learner at the last status read.
    pub fn is_learner(&self) -> bool {
        lock(&self.last_status)
            .as_ref()
            .is_some_and(|s| s.conf_state.learners.contains(&self.node_id))
    }

    /// The commit and applied indexes: the applied index is the state machine's own, the
    /// commit index the one last read, raised to the applied index (the read may be older
    /// than the last apply).
    pub fn progress(&self) -> LogProgress {
        let applied_index = self.group.applied_index();
        let commit_index = lock(&self.last_status)
            .as_ref()
            .map_or(0, |s| s.commit_index);
        LogProgress {
            commit_index: commit_index.max(applied_index),
            applied_index,
        }
    }
}

/// Follows the leadership the runtime pushes until `stop` turns true or the group stops,
/// running the face's election hook as soon as this node leads in a new term (so a new
/// leader's duties, such as expiring leases, start without waiting for a request).
pub async fn follow_leadership<S: StateMachine>(
    replica: Arc<Replica<S>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut leadership = replica.group().leadership();
    loop {
        let _ = replica.is_leader();
        tokio::select! {
            changed = leadership.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|&s| s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting() -> (Election, Arc<Mutex<Vec<Term>>>) {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&ran);
        let election = Election {
            on_elected: Box::new(move |term| lock(&seen).push(term)),
            elected_term: AtomicU64::new(0),
            running: Mutex::new(()),
        };
        (election, ran)
    }

    #[test]
    fn the_election_hook_runs_once_for_each_term_led() {
        let (election, ran) = counting();
        election.ensure(3);
        election.ensure(3);
        election.ensure(5);
        election.ensure(5);
        assert_eq!(*lock(&ran), vec![3, 5]);
    }

    #[test]
    fn callers_racing_into_a_new_term_run_the_hook_once_and_all_see_it_done() {
        let (election, ran) = counting();
        let election = Arc::new(election);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let election = Arc::clone(&election);
                let ran = Arc::clone(&ran);
                std::thread::spawn(move || {
                    election.ensure(7);
                    // Whoever returns from `ensure` finds the hook done.
                    assert_eq!(*lock(&ran), vec![7]);
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
    }
}
