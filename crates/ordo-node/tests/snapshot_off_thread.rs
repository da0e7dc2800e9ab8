//! A snapshot is serialised and written off the apply thread: entries keep being applied
//! (and proposals answered) while a large state is still being snapshotted.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ordo_node::{
    GroupId, Index, Node, NodeConfig, RestoreError, SnapshotJob, StateMachine, StateRole,
};

/// Counts entries; its deferred snapshots wait for the test to release them, so the test
/// controls exactly when a snapshot is still in progress.
struct Gated {
    count: u64,
    applied: Index,
    /// Each snapshot job takes one release from here before it finishes.
    release: Arc<Mutex<mpsc::Receiver<()>>>,
    /// The counts snapshots were begun at.
    begun: Arc<Mutex<Vec<u64>>>,
}

impl StateMachine for Gated {
    type Output = u64;
    fn apply(&mut self, index: Index, _data: &[u8]) -> u64 {
        self.count += 1;
        self.applied = index;
        self.count
    }
    fn note_applied(&mut self, index: Index) {
        self.applied = index;
    }
    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.count.to_be_bytes())
    }
    fn begin_snapshot(&self) -> SnapshotJob {
        let data = self.snapshot();
        self.begun.lock().unwrap().push(self.count);
        let release = Arc::clone(&self.release);
        SnapshotJob::deferred(move || {
            // A closed channel (the test is over) releases too.
            let _ = release.lock().unwrap().recv();
            Some(data)
        })
    }
    fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError> {
        let raw: [u8; 8] = data
            .try_into()
            .map_err(|_| RestoreError::new("not 8 bytes"))?;
        self.count = u64::from_be_bytes(raw);
        self.applied = index;
        Ok(())
    }
    fn applied_index(&self) -> Index {
        self.applied
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_applied_while_a_snapshot_is_still_being_taken() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = NodeConfig::new(1, dir.path().join("n1"), addr, BTreeMap::from([(1, addr)]));
    config.tick_interval_ms = 10;
    config.snapshot_entries = 5;
    let (release_tx, release_rx) = mpsc::channel();
    let begun = Arc::new(Mutex::new(Vec::new()));
    let machine = Gated {
        count: 0,
        applied: 0,
        release: Arc::new(Mutex::new(release_rx)),
        begun: Arc::clone(&begun),
    };
    let node = Node::start_on(config, listener).unwrap();
    let group = node.start_group(GroupId(1), machine).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while group.status().await.unwrap().role != StateRole::Leader {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a single node elects itself");

    // Past the threshold a snapshot begins, and its job blocks until released.
    for i in 1..=5u64 {
        assert_eq!(group.propose(format!("e{i}")).await.unwrap(), i);
    }
    // Forty more entries are applied and answered while that snapshot is unfinished.
    for i in 6..=45u64 {
        assert_eq!(group.propose(format!("e{i}")).await.unwrap(), i);
    }
    assert_eq!(
        group.metrics().snapshots_taken,
        0,
        "no snapshot was released"
    );
    assert_eq!(
        begun.lock().unwrap().len(),
        1,
        "one snapshot at a time: later ones wait for the one in progress"
    );

    // Released, it is written; the next one then begins on a later batch.
    release_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while group.metrics().snapshots_taken == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the released snapshot is written");
    let first = begun.lock().unwrap()[0];
    // The leader's no-op entry counts towards the threshold too.
    assert!((4..45).contains(&first), "begun at count {first}");
    assert_eq!(group.propose("e46").await.unwrap(), 46);
    drop(release_tx);
    node.shutdown().await;
}
