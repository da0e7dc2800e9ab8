//! Each rule-breaking switch changes the core's behaviour in exactly the way it claims, so
//! that the simulator's checkers have something real to catch.

mod common;

use common::{config, data, Cluster};
use ordo_raft::{Config, Message, MessageBody, Mutation, NodeId, StateRole};

fn with(m: Mutation) -> impl Fn(NodeId) -> Config {
    move |id| Config {
        mutation: Some(m),
        ..config(id)
    }
}

/// A cluster where node 3 lacks a committed entry and campaigns.
fn lagging_candidate(cfg: impl Fn(NodeId) -> Config + 'static) -> Cluster {
    let mut c = Cluster::with_config(3, cfg);
    c.elect(1);
    c.isolate(3);
    c.propose(1, "committed");
    c.stabilize();
    c.heal();
    c.crash(1);
    c.node_mut(3).campaign().unwrap();
    c.stabilize();
    c
}

#[test]
fn grant_vote_without_log_check_elects_a_candidate_missing_committed_entries() {
    let honest = lagging_candidate(config);
    assert_ne!(honest.node(3).role(), StateRole::Leader);
    let broken = lagging_candidate(with(Mutation::GrantVoteWithoutLogCheck));
    assert_eq!(broken.node(3).role(), StateRole::Leader);
    // A leader without a committed entry: leader completeness is broken, which the
    // simulator's checkers look for.
    assert!(!broken.log_data(3).contains(&"committed".to_string()));
}

/// Node 1 leads term 2 with a term-1 entry at index 2 on itself and node 2 (a majority)
/// but its term-2 no-op on no follower (the scenario of Figure 8).
fn previous_term_entry_on_majority(cfg: fn(NodeId) -> Config) -> Cluster {
    use std::cell::Cell;
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
    assert_eq!(c.node(1).role(), StateRole::Leader);
    assert_eq!(c.node(2).last_index(), 2);
    c
}

#[test]
fn commit_previous_term_by_counting_commits_an_old_term_entry() {
    let honest = previous_term_entry_on_majority(config);
    assert_eq!(honest.node(1).commit_index(), 1);
    fn broken_cfg(id: NodeId) -> Config {
        Config {
            mutation: Some(Mutation::CommitPreviousTermByCounting),
            ..config(id)
        }
    }
    let broken = previous_term_entry_on_majority(broken_cfg);
    assert_eq!(
        broken.node(1).commit_index(),
        2,
        "committed by counting, against §5.4.2"
    );
}

#[test]
fn ack_append_before_durable_sends_acknowledgements_early_and_counts_the_leader_early() {
    for (cfg, early) in [(config as fn(NodeId) -> Config, false), (broken_ack, true)] {
        let mut c = Cluster::with_config(3, cfg);
        c.elect(1);
        let id = c.node_mut(1).propose(data("x")).unwrap();
        let rd = c.node_mut(1).ready();
        for m in rd.messages.iter().filter(|m| m.to == 2).cloned() {
            c.node_mut(2).step(m).unwrap();
        }
        let rd2 = c.node_mut(2).ready();
        let ack_in_immediate = rd2
            .messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::AppendResponse { reject: None, .. }));
        assert_eq!(ack_in_immediate, early);
        // Deliver node 2's acknowledgement before the leader's own write is durable.
        let acks: Vec<Message> = rd2
            .messages
            .into_iter()
            .chain(rd2.persisted_messages)
            .collect();
        for m in acks {
            c.node_mut(1).step(m).unwrap();
        }
        assert_eq!(c.node(1).commit_index() == id.index, early);
        c.node_mut(1).storage_mut().append_owned(rd.entries);
        c.node_mut(1).advance();
    }
}

fn broken_ack(id: NodeId) -> Config {
    Config {
        mutation: Some(Mutation::AckAppendBeforeDurable),
        ..config(id)
    }
}

#[test]
fn skip_prev_term_check_accepts_an_append_that_does_not_follow_the_log() {
    for (m, accepted) in [(None, false), (Some(Mutation::SkipPrevTermCheck), true)] {
        let mut c = Cluster::with_config(3, move |id| Config {
            mutation: m,
            ..config(id)
        });
        c.elect(1);
        c.propose(1, "a");
        c.stabilize();
        // Entry 2 has term 1; claim it had term 7.
        let bad = Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Append {
                prev_index: 2,
                prev_term: 7,
                entries: vec![ordo_raft::Entry::new(1, 3, data("b"))],
                commit: 2,
            },
        };
        c.node_mut(2).step(bad).unwrap();
        c.process_ready(2);
        assert_eq!(c.node(2).last_index() == 3, accepted, "mutation {m:?}");
    }
}
