//! Arbitrary messages from the network never make the core panic: stale, malformed or
//! hostile input is ignored or rejected.

mod common;

use common::Cluster;
use ordo_raft::{
    ConfState, ConflictHint, Entry, EntryKind, Message, MessageBody, Snapshot, SnapshotMeta,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn entry() -> impl Strategy<Value = Entry> {
    (
        0u64..6,
        0u64..12,
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(term, index, conf, data)| Entry {
            term,
            index,
            kind: if conf {
                EntryKind::ConfChange
            } else {
                EntryKind::Normal
            },
            data: data.into(),
        })
}

fn ids() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(0u64..6, 0..4)
}

fn body() -> impl Strategy<Value = MessageBody> {
    let small = 0u64..14;
    prop_oneof![
        (
            small.clone(),
            0u64..6,
            proptest::collection::vec(entry(), 0..4),
            small.clone()
        )
            .prop_map(
                |(prev_index, prev_term, entries, commit)| MessageBody::Append {
                    prev_index,
                    prev_term,
                    entries,
                    commit
                }
            ),
        (
            small.clone(),
            proptest::option::of((small.clone(), 0u64..6))
        )
            .prop_map(|(index, h)| {
                MessageBody::AppendResponse {
                    index,
                    reject: h.map(|(index, term)| ConflictHint { index, term }),
                }
            }),
        (small.clone(), 0u64..6, any::<bool>()).prop_map(|(i, t, x)| MessageBody::RequestVote {
            last_log_index: i,
            last_log_term: t,
            leadership_transfer: x
        }),
        any::<bool>().prop_map(|reject| MessageBody::RequestVoteResponse { reject }),
        (small.clone(), 0u64..6).prop_map(|(i, t)| MessageBody::RequestPreVote {
            last_log_index: i,
            last_log_term: t
        }),
        any::<bool>().prop_map(|reject| MessageBody::RequestPreVoteResponse { reject }),
        (small.clone(), any::<u8>()).prop_map(|(commit, c)| MessageBody::Heartbeat {
            commit,
            context: vec![c].into()
        }),
        any::<u8>().prop_map(|c| MessageBody::HeartbeatResponse {
            context: vec![c].into()
        }),
        (small.clone(), 0u64..6, ids(), ids(), ids()).prop_map(|(index, term, v, l, o)| {
            MessageBody::Snapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index,
                        term,
                        conf_state: ConfState {
                            voters: v,
                            learners: l,
                            voters_outgoing: o,
                            ..ConfState::default()
                        },
                    },
                    data: Default::default(),
                },
            }
        }),
        Just(MessageBody::TimeoutNow),
        any::<u8>().prop_map(|c| MessageBody::ReadIndex {
            context: vec![c].into()
        }),
        (small.clone(), any::<u8>()).prop_map(|(index, c)| MessageBody::ReadIndexResponse {
            index,
            context: vec![c].into()
        }),
        (0u64..6).prop_map(|target| MessageBody::TransferLeader { target }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (0u64..6, 1u64..4, 0u64..6, body()).prop_map(|(from, to, term, body)| Message {
        from,
        to,
        term,
        body,
    })
}

#[test]
fn arbitrary_messages_never_panic_the_core() {
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: std::env::var("ORDO_RAFT_CASES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(400),
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    runner
        .run(&proptest::collection::vec(message(), 1..40), |msgs| {
            let mut c = Cluster::new(3);
            c.elect(1);
            c.propose(1, "a");
            c.propose(1, "b");
            c.stabilize();
            for m in msgs {
                let to = m.to;
                c.node_mut(to).step(m).unwrap();
                c.process_ready(to);
                // Let the cluster react, dropping whatever it says to the hostile sender.
                c.stabilize();
            }
            Ok(())
        })
        .unwrap();
}
