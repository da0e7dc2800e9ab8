//! Replication (§5.3): forwarding errors, the uncommitted bound, batching, the in-flight
//! window, the persistence ordering of acknowledgements, and the §5.4.2 commit rule.

mod common;

use common::{config, data, Cluster};
use ordo_raft::{Config, Error, Message, MessageBody, ProgressState};

fn appends_to(msgs: &[ordo_raft::Message], to: u64) -> Vec<usize> {
    msgs.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } => Some(entries.len()),
            _ => None,
        })
        .collect()
}

#[test]
fn proposal_on_follower_fails_with_the_leader_id() {
    let mut c = Cluster::new(3);
    c.elect(2);
    assert_eq!(
        c.node_mut(1).propose(data("x")),
        Err(Error::NotLeader { leader_id: 2 })
    );
}

#[test]
fn proposal_without_a_known_leader_fails_with_no_leader() {
    let mut c = Cluster::new(3);
    assert_eq!(c.node_mut(1).propose(data("x")), Err(Error::NoLeader));
    c.node_mut(1).campaign().unwrap();
    assert_eq!(
        c.node_mut(1).propose(data("x")),
        Err(Error::NoLeader),
        "candidate"
    );
}

#[test]
fn proposals_beyond_max_uncommitted_bytes_are_rejected_until_entries_apply() {
    let mut c = Cluster::with_config(3, |id| Config {
        max_uncommitted_bytes: 100,
        ..config(id)
    });
    c.elect(1);
    c.isolate(1);
    let sixty = bytes::Bytes::from(vec![b'x'; 60]);
    c.node_mut(1).propose(sixty.clone()).unwrap();
    assert_eq!(
        c.node_mut(1).propose(sixty.clone()),
        Err(Error::UncommittedBytesExceeded { limit_bytes: 100 })
    );
    assert_eq!(c.node(1).uncommitted_bytes(), 60);
    c.heal();
    c.tick_all(2);
    assert_eq!(c.node(1).uncommitted_bytes(), 0);
    c.node_mut(1).propose(sixty).unwrap();
}

#[test]
fn many_proposals_share_one_append_message() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..100 {
        c.node_mut(1).propose(data(&format!("p{i}"))).unwrap();
    }
    let rd = c.node_mut(1).ready();
    assert_eq!(appends_to(&rd.messages, 2), vec![100]);
    assert_eq!(appends_to(&rd.messages, 3), vec![100]);
}

#[test]
fn append_messages_are_bounded_by_max_append_bytes() {
    let mut c = Cluster::with_config(3, |id| Config {
        max_append_bytes: 300,
        ..config(id)
    });
    c.elect(1);
    let entry = bytes::Bytes::from(vec![b'y'; 76]); // 100 bytes with overhead
    c.node_mut(1)
        .propose_batch(std::iter::repeat_n(entry, 10))
        .unwrap();
    let rd = c.node_mut(1).ready();
    let sizes = appends_to(&rd.messages, 2);
    assert!(sizes.iter().all(|&n| n <= 3), "{sizes:?}");
    assert_eq!(
        sizes.iter().sum::<usize>(),
        10,
        "the window streams all of them"
    );
}

#[test]
fn inflight_window_bounds_unacknowledged_appends() {
    let mut c = Cluster::with_config(3, |id| Config {
        max_inflight_msgs: 2,
        ..config(id)
    });
    c.elect(1);
    let mut sent = 0;
    for i in 0..5 {
        c.node_mut(1).propose(data(&format!("p{i}"))).unwrap();
        let rd = c.node_mut(1).ready();
        sent += appends_to(&rd.messages, 2).len();
        c.node_mut(1).storage_mut().append_owned(rd.entries);
        c.node_mut(1).advance();
    }
    assert_eq!(sent, 2, "no more than the window without acknowledgements");
    assert_eq!(
        c.node(1).status().progress[&2].state,
        ProgressState::Replicate
    );
}

#[test]
fn follower_acknowledges_appends_only_after_persisting() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).propose(data("x")).unwrap();
    let rd = c.node_mut(1).ready();
    let to2: Vec<_> = rd.messages.into_iter().filter(|m| m.to == 2).collect();
    c.node_mut(1).storage_mut().append_owned(rd.entries);
    c.node_mut(1).advance();
    for m in to2 {
        c.node_mut(2).step(m).unwrap();
    }
    let rd = c.node_mut(2).ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd
        .messages
        .iter()
        .all(|m| !matches!(m.body, MessageBody::AppendResponse { .. })));
    assert!(rd
        .persisted_messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::AppendResponse { reject: None, .. })));
}

#[test]
fn leader_counts_its_own_entry_only_once_durable() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let id = c.node_mut(1).propose(data("x")).unwrap();
    let rd = c.node_mut(1).ready();
    // Follower 2 persists and acknowledges while the leader's write is still in flight.
    for m in rd.messages.iter().filter(|m| m.to == 2).cloned() {
        c.node_mut(2).step(m).unwrap();
    }
    let rd2 = c.node_mut(2).ready();
    c.node_mut(2).storage_mut().append_owned(rd2.entries);
    c.node_mut(2).advance();
    for m in rd2.persisted_messages {
        c.node_mut(1).step(m).unwrap();
    }
    assert!(
        c.node(1).commit_index() < id.index,
        "one durable copy of three is no quorum"
    );
    c.node_mut(1).storage_mut().append_owned(rd.entries);
    c.node_mut(1).advance();
    assert_eq!(
        c.node(1).commit_index(),
        id.index,
        "leader's durable copy completes the quorum"
    );
}

#[test]
fn a_leader_knows_when_its_own_durable_copy_is_what_the_commit_waits_for() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).propose(data("x")).unwrap();
    let rd = c.node_mut(1).ready();
    assert!(
        !c.node(1).own_append_would_commit(),
        "no follower holds the entry yet: the leader's copy alone commits nothing"
    );
    assert!(!c.node(1).has_ready_behind(), "nothing new since the Ready");
    for m in rd.messages.iter().filter(|m| m.to == 2).cloned() {
        c.node_mut(2).step(m).unwrap();
    }
    let rd2 = c.node_mut(2).ready();
    assert!(!c.node(2).own_append_would_commit(), "a follower");
    c.node_mut(2).storage_mut().append_owned(rd2.entries);
    c.node_mut(2).advance();
    for m in rd2.persisted_messages {
        c.node_mut(1).step(m).unwrap();
    }
    assert!(
        c.node(1).own_append_would_commit(),
        "follower 2 holds it: the leader's copy completes the quorum"
    );
    c.node_mut(1).storage_mut().append_owned(rd.entries);
    c.node_mut(1).advance();
    assert!(!c.node(1).own_append_would_commit(), "committed");
}

#[test]
fn work_behind_an_outstanding_ready_is_seen_before_it_is_acknowledged() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(1).propose(data("x")).unwrap();
    let rd = c.node_mut(1).ready();
    assert!(!c.node(1).has_ready(), "a Ready is outstanding");
    assert!(!c.node(1).has_ready_behind());
    c.node_mut(1).propose(data("y")).unwrap();
    assert!(!c.node(1).has_ready());
    assert!(c.node(1).has_ready_behind(), "a new entry waits");
    c.node_mut(1).storage_mut().append_owned(rd.entries);
    c.node_mut(1).advance();
    assert!(c.node(1).has_ready());

    // A follower told of a commit covering what it is writing.
    let append = |prev_index, entries, commit| ordo_raft::Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index,
            prev_term: 1,
            entries,
            commit,
        },
    };
    let mut c = Cluster::new(3);
    c.elect(1);
    c.node_mut(2)
        .step(append(1, vec![ordo_raft::Entry::new(1, 2, data("x"))], 1))
        .unwrap();
    let rd = c.node_mut(2).ready();
    assert!(!c.node(2).has_ready_behind());
    c.node_mut(2).step(append(2, Vec::new(), 2)).unwrap();
    assert_eq!(c.node(2).commit_index(), 2);
    assert!(
        c.node(2).has_ready_behind(),
        "the new commit index and the answer to the append wait"
    );
    c.node_mut(2).storage_mut().append_owned(rd.entries);
    c.node_mut(2).advance();
    assert!(c.node(2).has_ready());
}

#[test]
fn committed_entries_are_never_handed_out_beyond_local_durability() {
    let mut c = Cluster::new(3);
    c.elect(1);
    // An append whose commit index already covers the entry it carries.
    let append = ordo_raft::Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![ordo_raft::Entry::new(1, 2, data("x"))],
            commit: 2,
        },
    };
    c.node_mut(2).step(append).unwrap();
    assert_eq!(c.node(2).commit_index(), 2);
    let rd = c.node_mut(2).ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(
        rd.committed_entries.iter().all(|e| e.index < 2),
        "entry 2 is not durable yet"
    );
    c.node_mut(2).storage_mut().append_owned(rd.entries);
    c.node_mut(2).advance();
    let rd = c.node_mut(2).ready();
    assert_eq!(
        rd.committed_entries.last().map(|e| e.index),
        Some(2),
        "durable now"
    );
}

/// §5.4.2 / Figure 8: a leader must not commit an entry of an earlier term just because a
/// majority holds it; only its own term's entries are committed by counting.
#[test]
fn leader_does_not_commit_previous_term_entry_by_counting_replicas() {
    let (c, old_index) = common_figure8::setup(config);
    assert_eq!(
        c.node(2).last_index(),
        old_index,
        "node 2 holds the old entry"
    );
    assert_eq!(c.node(1).status().progress[&2].match_index, old_index);
    assert!(
        c.node(1).commit_index() < old_index,
        "a term-1 entry on 2 of 3 is not committed"
    );
}

#[test]
fn stale_or_malformed_append_responses_are_ignored() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let commit = c.node(1).commit_index();
    let bogus = ordo_raft::Message {
        from: 2,
        to: 1,
        term: 1,
        body: MessageBody::AppendResponse {
            index: 1_000_000,
            reject: None,
        },
    };
    c.node_mut(1).step(bogus).unwrap();
    assert_eq!(c.node(1).commit_index(), commit);
    let unknown = ordo_raft::Message {
        from: 99,
        to: 1,
        term: 1,
        body: MessageBody::AppendResponse {
            index: 1,
            reject: None,
        },
    };
    c.node_mut(1).step(unknown).unwrap();
    let gap = ordo_raft::Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![ordo_raft::Entry::new(1, 5, data("gap"))],
            commit: 5,
        },
    };
    c.node_mut(2).step(gap).unwrap();
    assert_eq!(
        c.node(2).last_index(),
        1,
        "non-consecutive entries are dropped"
    );
}

mod common_figure8 {
    use super::common::Cluster;
    use ordo_raft::{Config, MessageBody, NodeId};
    use std::cell::Cell;

    /// Node 1 leads term 1 and appends entry 2 alone; after a restart it wins term 2 with
    /// node 2's vote and replicates entry 2 (term 1) to node 2, but every later append of
    /// its own no-op (entry 3, term 2) is lost. Returns the cluster and the old index.
    pub fn setup(cfg: fn(NodeId) -> Config) -> (Cluster, u64) {
        let mut c = Cluster::with_config(3, move |id| Config {
            max_append_bytes: 1,
            ..cfg(id)
        });
        c.elect(1);
        c.isolate(1);
        c.propose(1, "old");
        c.stabilize();
        c.crash(1);
        c.restart(1);
        c.heal();
        c.cut.insert((1, 3));
        c.cut.insert((3, 1));
        // The first append carrying the term-2 no-op is a probe that node 2 rejects (it
        // lacks entry 2); drop every later one.
        let seen = Cell::new(0u32);
        c.filter = Some(Box::new(move |m| match &m.body {
            MessageBody::Append { entries, .. } if entries.iter().any(|e| e.term >= 2) => {
                seen.set(seen.get() + 1);
                seen.get() > 1
            }
            _ => false,
        }));
        c.node_mut(1).campaign().unwrap();
        c.stabilize();
        assert_eq!(c.node(1).role(), ordo_raft::StateRole::Leader);
        (c, 2)
    }
}

#[test]
fn unreachable_follower_drops_from_streaming_to_probing() {
    let mut c = Cluster::new(3);
    c.elect(1);
    assert_eq!(
        c.node(1).status().progress[&2].state,
        ProgressState::Replicate
    );
    c.node_mut(1).report_unreachable(2);
    assert_eq!(c.node(1).status().progress[&2].state, ProgressState::Probe);
    c.propose(1, "x");
    c.stabilize();
    assert_eq!(
        c.node(1).status().progress[&2].state,
        ProgressState::Replicate
    );
    assert_eq!(c.applied_data(2), vec!["x"]);
}

#[test]
fn status_reports_each_followers_lag() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for i in 0..4 {
        c.propose(1, &format!("e{i}"));
    }
    c.stabilize();
    let st = c.node(1).status();
    let last = st.last_index;
    assert_eq!(st.progress[&2].match_index, last);
    assert_eq!(
        last - st.progress[&3].match_index,
        4,
        "node 3 is four entries behind"
    );
    assert!(
        c.node(2).status().progress.is_empty(),
        "only the leader tracks progress"
    );
}

#[test]
fn a_follower_that_lost_acknowledged_entries_is_brought_back_up_to_date() {
    // Under a relaxed fsync policy a machine crash can take entries a follower had
    // acknowledged. The leader must notice when the follower's log ends below its match
    // point and probe it again, rather than take its rejections for stale ones.
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..6 {
        c.propose(1, &format!("e{i}"));
    }
    c.stabilize();
    let last = c.node(1).last_index();
    assert_eq!(c.node(3).last_index(), last);
    c.crash(3);
    let kept = last - 4;
    let disk = c.crashed.remove(&3).unwrap();
    let mut lost = ordo_raft::MemStorage::new_with_conf_state(c.node(1).conf_state());
    let entries = ordo_raft::Storage::entries(&disk, 1, kept + 1, u64::MAX).unwrap();
    lost.append(&entries);
    let mut hs = disk.hard_state();
    hs.commit = hs.commit.min(kept);
    lost.set_hard_state(hs);
    c.crashed.insert(3, lost);
    c.restart(3);
    c.propose(1, "after");
    c.stabilize();
    c.tick_all(10);
    c.stabilize();
    assert_eq!(c.log_of(3), c.log_of(1));
    assert_eq!(c.applied_data(3), c.applied_data(1));
}

/// Once an entry commits, each follower is told so once: by a notice it does not answer
/// (the leader knows it holds the entry, so an answer would say nothing new), whether its
/// acknowledgement made the quorum or came after it.
#[test]
fn each_follower_is_told_a_commit_once_by_a_notice_it_does_not_answer() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize();
    c.delivered.clear();
    c.propose(1, "x");
    c.stabilize();
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), vec!["x"], "node {id}");
    }
    let mut notified: Vec<u64> = c
        .delivered
        .iter()
        .filter(|m| matches!(m.body, MessageBody::CommitNotice { .. }))
        .map(|m| m.to)
        .collect();
    notified.sort_unstable();
    assert_eq!(notified, vec![2, 3]);
    let answers = c
        .delivered
        .iter()
        .filter(|m| matches!(m.body, MessageBody::AppendResponse { .. }))
        .count();
    assert_eq!(
        answers, 2,
        "one acknowledgement per follower, of the entry itself"
    );
}

/// A follower whose answer to an append is lost still learns the commit from the notice:
/// the notice carries the leader's commit index, and the follower commits as far as the
/// append it accepted reaches (a member the entry removes hears nothing after it).
#[test]
fn a_follower_whose_answer_is_lost_commits_by_the_notice_as_far_as_it_accepted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.stabilize();
    c.propose(1, "x");
    let lost_answer =
        |m: &Message| m.from == 3 && matches!(m.body, MessageBody::AppendResponse { .. });
    for _ in 0..100 {
        c.process_all_readies();
        c.drop_queued(lost_answer);
        if !c.deliver_one() {
            break;
        }
    }
    c.process_all_readies();
    // The leader held the notice for 3's answer; its next heartbeat sends it.
    assert_eq!(c.applied_data(3), Vec::<String>::new());
    c.tick_all(1);
    assert_eq!(c.applied_data(3), vec!["x"]);
    assert_eq!(c.node(3).commit_index(), c.node(1).commit_index());
}
