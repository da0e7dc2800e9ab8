//! One replicated group as a face sees it: the group handle, who leads in which term, and the
//! commit and applied indexes a face puts in its response headers.
//!
//! Faces answer most requests without asking the runtime anything but the proposal or read
//! itself, so what they show of the group (leader, term, role, configuration) is the last
//! [`GroupStatus`] this replica read, kept fresh by [`follow_leadership`] once per tick and
//! at once after every change this node makes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ordo_node::{
    ConfState, Group, GroupStatus, Index, NodeId, ReadError, StateMachine, StateRole, Term,
};
use tokio::sync::watch;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The cached status is replaced whole, so a panic elsewhere cannot leave it half-written.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who leads the group, in which term, and this node's role in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    /// The leader this node knows of, or 0.
    pub leader: NodeId,
    /// The current term.
    pub term: Term,
    /// This node's role.
    pub role: StateRole,
}

impl Leadership {
    fn of(status: &GroupStatus) -> Leadership {
        Leadership {
            leader: status.leader,
            term: status.term,
            role: status.role,
        }
    }
}

/// What a response header reports of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogProgress {
    /// The commit index (never below the applied index).
    pub commit_index: Index,
    /// The index the state machine has applied.
    pub applied_index: Index,
}

/// What a face does when this node begins leading in a new term (a KV leader restarts its
/// lease deadlines, say), called with that term.
pub type OnElected = Box<dyn Fn(Term) + Send + Sync>;

/// One replicated group on this node, as its faces use it.
pub struct Replica<S: StateMachine> {
    group: Group<S>,
    node_id: NodeId,
    cluster_id: u64,
    last_status: Mutex<Option<GroupStatus>>,
    on_elected: OnElected,
}

impl<S: StateMachine> Replica<S> {
    /// The group `group` on node `node_id` of cluster `cluster_id`; nothing read yet.
    /// `on_elected` runs whenever a read finds this node leading in a term it did not lead
    /// in at the read before.
    pub fn new(
        group: Group<S>,
        node_id: NodeId,
        cluster_id: u64,
        on_elected: OnElected,
    ) -> Replica<S> {
        assert!(node_id != 0, "a node id is never 0");
        Replica {
            group,
            node_id,
            cluster_id,
            last_status: Mutex::new(None),
            on_elected,
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

    /// Reads the group's status, remembers it for the synchronous accessors, and runs the
    /// face's election hook when this node has just begun leading.
    pub async fn refresh(&self) -> Result<GroupStatus, ReadError> {
        let status = self.group.status().await?;
        assert_eq!(status.node_id, self.node_id, "a status of another node");
        let previous = lock(&self.last_status).replace(status.clone());
        let led_before =
            previous.is_some_and(|p| p.role == StateRole::Leader && p.term == status.term);
        if status.role == StateRole::Leader && !led_before {
            (self.on_elected)(status.term);
        }
        Ok(status)
    }

    /// The leadership as of the last read, if any.
    pub fn leadership(&self) -> Option<Leadership> {
        lock(&self.last_status).as_ref().map(Leadership::of)
    }

    /// Whether this node led at the last read.
    pub fn is_leader(&self) -> bool {
        self.leadership()
            .is_some_and(|l| l.role == StateRole::Leader)
    }

    /// The leader as of the last read, if one was known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leadership().map(|l| l.leader).filter(|&l| l != 0)
    }

    /// The configuration as of the last read, if any.
    pub fn conf_state(&self) -> Option<ConfState> {
        lock(&self.last_status)
            .as_ref()
            .map(|s| s.conf_state.clone())
    }

    /// Whether this node was a learner at the last read.
    pub fn is_learner(&self) -> bool {
        lock(&self.last_status)
            .as_ref()
            .is_some_and(|s| s.conf_state.learners.contains(&self.node_id))
    }

    /// The commit and applied indexes for a response header: the applied index is the state
    /// machine's own, the commit index the last one read, raised to the applied index (the
    /// status may be older than the last apply).
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

/// Reads the group's status every `tick` until `stop` turns true or the group stops, so
/// leadership changes reach the faces (and the election hook runs) within a tick.
pub async fn follow_leadership<S: StateMachine>(
    replica: Arc<Replica<S>>,
    tick: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        if replica.refresh().await.is_err() {
            return;
        }
    }
}
