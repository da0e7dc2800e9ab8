//! A storage that starts failing reads stops the node: it reports the storage's own
//! description of the failure, refuses further input, and never sends a message that
//! depends on what it could not read.

mod common;

use bytes::Bytes;
use common::{config, data, Cluster, FailingStorage, TestStorage};
use ordo_raft::{
    ConfState, Config, Error, Message, MessageBody, NodeId, StateRole, Storage, StorageError,
};

fn cluster() -> Cluster<FailingStorage> {
    Cluster::on_storage(&[1, 2, 3], &[], config)
}

/// The failure a node reports, which must be the storage's own description.
fn failure_of(c: &Cluster<FailingStorage>, id: NodeId) -> String {
    match c.node(id).storage_failure() {
        Some(StorageError::ReadFailed(text)) => {
            assert!(text.contains("checksum mismatch in"), "{text}");
            text.clone()
        }
        other => panic!("node {id} reports {other:?}, not the failed read"),
    }
}

/// Messages `from` sent that were delivered or are still queued, from position `since`
/// of the delivered list on.
fn sent_by(c: &Cluster<FailingStorage>, from: NodeId, since: usize) -> Vec<Message> {
    c.delivered[since..]
        .iter()
        .chain(c.queue.iter())
        .filter(|m| m.from == from)
        .cloned()
        .collect()
}

#[test]
fn a_leader_whose_entries_cannot_be_read_stops_replicating_instead_of_panicking() {
    let mut c = cluster();
    c.elect(1);
    c.propose(1, "a");
    c.stabilize();
    c.isolate(3);
    c.propose(1, "b");
    c.propose(1, "c");
    c.stabilize();
    // The leader holds a snapshot it could send in place of entries it cannot read; it
    // must not, as a failed read is not a compacted prefix.
    let cs = ConfState::with_voters([1, 2, 3]);
    c.node_mut(1)
        .storage_mut()
        .mem_mut()
        .create_snapshot(2, cs, Bytes::from_static(b"sm"))
        .unwrap();
    // Node 3 is probed from what it holds, so the leader must read entries to send.
    c.node_mut(1).report_unreachable(3);
    c.node(1).storage().fail_entries();
    c.heal();
    let since = c.delivered.len();
    for _ in 0..3 {
        c.tick(1);
        c.stabilize();
    }

    failure_of(&c, 1);
    assert!(c.node(1).storage().failed_reads() > 0, "the leader read");
    let to_3: Vec<Message> = sent_by(&c, 1, since)
        .into_iter()
        .filter(|m| {
            matches!(
                m.body,
                MessageBody::Append { .. } | MessageBody::Snapshot { .. }
            )
        })
        .collect();
    assert_eq!(
        to_3,
        Vec::new(),
        "no entries and no snapshot after the failure"
    );
    assert!(!c.node(1).has_ready());
    assert!(matches!(
        c.node_mut(1).propose(data("d")),
        Err(Error::Storage(StorageError::ReadFailed(_)))
    ));

    // The stopped leader sends no heartbeats: the others elect a leader that holds
    // everything committed, and node 3 catches up from it.
    let stopped_term = c.node(1).term();
    for _ in 0..100 {
        if [2, 3]
            .iter()
            .any(|&id| c.node(id).role() == StateRole::Leader)
        {
            break;
        }
        c.tick_all(1);
    }
    let leader = [2, 3]
        .into_iter()
        .find(|&id| c.node(id).role() == StateRole::Leader)
        .expect("a new leader among the nodes that can read");
    assert!(c.node(leader).term() > stopped_term);
    c.propose(leader, "e");
    c.stabilize();
    assert_eq!(c.applied_data(3), ["a", "b", "c", "e"]);
}

#[test]
fn a_follower_that_cannot_read_the_previous_entry_sends_no_acknowledgement() {
    let mut c = cluster();
    c.elect(1);
    c.propose(1, "a");
    c.stabilize();
    c.node(2).storage().fail_terms();
    let since = c.delivered.len();
    c.propose(1, "b");
    c.stabilize();

    failure_of(&c, 2);
    assert_eq!(
        sent_by(&c, 2, since),
        Vec::new(),
        "no acknowledgement, no rejection"
    );
    assert_eq!(c.node(2).last_index(), 2, "the append was not taken");
    // The leader commits with the follower that could check the append, and tells it so
    // with its next heartbeat (it held the notice for 2's answer).
    assert_eq!(c.applied_data(1), ["a", "b"]);
    c.tick_all(1);
    assert_eq!(c.applied_data(3), ["a", "b"]);
    assert_eq!(c.applied_data(2), ["a"]);
}

#[test]
fn a_voter_that_cannot_read_its_last_term_grants_no_vote() {
    for pre_vote in [false, true] {
        let mut c: Cluster<FailingStorage> =
            Cluster::on_storage(&[1, 2, 3], &[], move |id| Config {
                pre_vote,
                ..config(id)
            });
        c.elect(1);
        c.propose(1, "a");
        c.stabilize();
        // Only node 3's vote could elect node 2 now.
        c.crash(1);
        c.node(3).storage().fail_terms();
        let since = c.delivered.len();
        c.node_mut(2).campaign().unwrap();
        c.stabilize();

        failure_of(&c, 3);
        assert_eq!(sent_by(&c, 3, since), Vec::new(), "pre_vote {pre_vote}");
        assert_ne!(c.node(2).role(), StateRole::Leader, "pre_vote {pre_vote}");
    }
}

#[test]
fn a_candidate_that_cannot_read_its_last_term_asks_for_no_votes() {
    let mut c = cluster();
    c.elect(1);
    c.propose(1, "a");
    c.stabilize();
    c.crash(1);
    let term = c.node(2).term();
    c.node(2).storage().fail_terms();
    c.node(3).storage().fail_terms();
    let since = c.delivered.len();
    // Node 2 reaches its election timeout; node 3 is asked to campaign.
    for _ in 0..40 {
        c.tick(2);
    }
    let campaign = c.node_mut(3).campaign();
    c.stabilize();

    for id in [2, 3] {
        failure_of(&c, id);
        assert_eq!(c.node(id).term(), term, "node {id} started no term");
        assert_eq!(c.node(id).role(), StateRole::Follower);
    }
    assert_eq!(
        campaign,
        Err(Error::Storage(c.node(3).storage_failure().unwrap().clone()))
    );
    assert_eq!(sent_by(&c, 2, since), Vec::new());
    assert_eq!(sent_by(&c, 3, since), Vec::new());
}

#[test]
fn a_node_that_cannot_read_its_committed_entries_reports_the_failure_instead_of_panicking() {
    let mut c = cluster();
    c.elect(1);
    c.stabilize();
    c.propose(1, "a");
    // Node 2 makes the entry durable and acknowledges it before it is committed...
    assert_eq!(c.queue.front().map(|m| m.to), Some(2));
    c.deliver_one();
    assert_eq!(c.node(2).commit_index(), 1);
    // ...and cannot read it back when the commit index reaches it.
    c.node(2).storage().fail_entries();
    c.stabilize();

    failure_of(&c, 2);
    assert_eq!(
        c.node(2).commit_index(),
        2,
        "it learned the entry is committed"
    );
    assert_eq!(c.applied_data(2), Vec::<String>::new(), "nothing applied");
    assert!(!c.node(2).has_ready());
    assert_eq!(c.applied_data(1), ["a"]);
    assert_eq!(c.applied_data(3), ["a"]);
}

#[test]
fn a_leader_that_cannot_read_back_its_own_append_does_not_count_it() {
    let mut c = cluster();
    c.elect(1);
    c.stabilize();
    let commit = c.node(1).commit_index();
    c.node_mut(1).propose(data("a")).unwrap();
    let rd = c.node_mut(1).ready();
    // The appends in this Ready were decided before the failure and may be sent.
    c.queue.extend(rd.messages);
    c.node_mut(1)
        .storage_mut()
        .mem_mut()
        .append_owned(rd.entries);
    c.node(1).storage().fail_terms();
    c.node_mut(1).advance();
    c.stabilize();

    failure_of(&c, 1);
    let own = c.node(1).status().progress[&1].match_index;
    assert_eq!(own, commit, "the leader did not count its own copy");
    assert_eq!(c.node(1).commit_index(), commit, "nothing committed");
    assert!(!c.node(1).has_ready());
    // The followers hold the entry; it commits under the next leader.
    assert_eq!(c.node(2).last_index(), commit + 1);
    assert_eq!(c.node(3).last_index(), commit + 1);
}

#[test]
fn a_stopped_node_refuses_every_input_and_reads_nothing_more() {
    let mut c = cluster();
    c.elect(1);
    c.propose(1, "a");
    c.stabilize();
    c.node(2).storage().fail_terms();
    c.propose(1, "b");
    c.stabilize();
    let failure = c.node(2).storage_failure().cloned().unwrap();
    let reads = c.node(2).storage().failed_reads();
    let (term, commit, last) = (
        c.node(2).term(),
        c.node(2).commit_index(),
        c.node(2).last_index(),
    );

    let refused = Err(Error::Storage(failure.clone()));
    let n = c.node_mut(2);
    assert_eq!(n.propose(data("c")).map(drop), refused);
    assert_eq!(n.read_index(data("r")), refused);
    assert_eq!(n.transfer_leader(3), refused);
    assert_eq!(n.campaign(), refused);
    let heartbeat = Message {
        from: 1,
        to: 2,
        term: 9,
        body: MessageBody::Heartbeat {
            commit: 3,
            context: Bytes::new(),
            sent_tick: 0,
        },
    };
    assert_eq!(n.step(heartbeat), refused);
    for _ in 0..50 {
        n.tick();
    }
    n.report_unreachable(1);
    assert!(!n.has_ready());
    let rd = n.ready();
    assert!(rd.messages.is_empty() && rd.persisted_messages.is_empty());
    assert!(rd.entries.is_empty() && rd.hard_state.is_none() && !rd.must_sync());
    n.advance();

    assert_eq!(
        (n.term(), n.commit_index(), n.last_index()),
        (term, commit, last)
    );
    assert_eq!(
        n.storage_failure(),
        Some(&failure),
        "the first failure stays"
    );
    assert_eq!(
        n.storage().failed_reads(),
        reads,
        "nothing was read after it"
    );
    assert_eq!(Storage::last_index(n.storage()), last);
}
