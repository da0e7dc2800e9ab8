//! The harnesses of the fuzz targets in `fuzz/`: what the server decodes from its peers
//! and from the log, built from arbitrary bytes. Decoding may fail, but must never panic,
//! and what decodes must encode to the same value again. Public only for the fuzz crate and
//! the tests that run each harness on seeded inputs.
//!
//! - [`leader_questions`]: a question the etcd face asks the leader over the peer
//!   transport, or the leader's answer.
//! - [`meta_group`]: the metadata group's committed entries and snapshots, applied and
//!   restored by its state machine.
//! - [`stream_records`]: what the streams face keeps in the metadata group (topic records,
//!   partition leader records) and a partition group's entries and snapshots.

use ordo_node::StateMachine;

use crate::etcd::questions::{Answer, Question};
use crate::meta::{MetaCommand, MetaMachine};
use crate::partitions::LeaderRecord;
use ordo_streams::partition::PartitionMachine;
use ordo_streams::TopicRecord;

/// Decodes `data` as a question and as an answer; each that decodes must encode to
/// itself.
pub fn leader_questions(data: &[u8]) {
    if let Ok(question) = Question::decode(data) {
        assert_eq!(Question::decode(&question.encode()), Ok(question));
    }
    if let Ok(answer) = Answer::decode(data) {
        assert_eq!(Answer::decode(&answer.encode()).as_ref(), Ok(&answer));
    }
}

/// Applies entries from `data` to the metadata map: per entry a length (u16) and the
/// bytes, the first bit of the length choosing a snapshot to restore instead of an entry
/// to apply. After each step the map's own snapshot must restore to the same map.
pub fn meta_group(data: &[u8]) {
    let mut machine = MetaMachine::default();
    let mut rest = data;
    let mut index = 0;
    while let Some((head, tail)) = rest.split_first_chunk::<2>() {
        let head = u16::from_be_bytes(*head);
        let len = usize::from(head >> 1).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        index += 1;
        if head & 1 == 0 {
            let before = machine.snapshot();
            if machine.apply(index, bytes).is_err() {
                assert_eq!(
                    machine.snapshot(),
                    before,
                    "a refused entry changes nothing"
                );
            }
            if let Ok(command) = MetaCommand::decode(bytes) {
                assert_eq!(MetaCommand::decode(&command.encode()), Ok(command));
            }
        } else {
            let before = machine.snapshot();
            if machine.restore(index, bytes).is_err() {
                assert_eq!(
                    machine.snapshot(),
                    before,
                    "a refused snapshot changes nothing"
                );
            }
        }
        let snapshot = machine.snapshot();
        let mut again = MetaMachine::default();
        assert!(
            again.restore(index, &snapshot).is_ok(),
            "own snapshot refused"
        );
        assert_eq!(again.entries(), machine.entries(), "snapshot round trip");
    }
}

/// Decodes `data` as a topic record and as a leader record (each that decodes must encode
/// to itself), then applies it to a partition's state machine as an entry and restores it
/// as a snapshot: a refused one changes nothing, and the machine's own snapshot restores.
pub fn stream_records(data: &[u8]) {
    if let Ok(topic) = TopicRecord::decode(data) {
        assert_eq!(TopicRecord::decode(&topic.encode()), Ok(topic));
    }
    if let Some(leader) = LeaderRecord::decode(data) {
        assert_eq!(LeaderRecord::decode(&leader.encode()), Some(leader));
    }
    let mut machine = PartitionMachine::default();
    let before = machine.snapshot();
    if machine.apply(1, data).is_err() {
        assert_eq!(
            machine.snapshot(),
            before,
            "a refused entry changes nothing"
        );
    }
    let before = machine.snapshot();
    if machine.restore(2, data).is_err() {
        assert_eq!(
            machine.snapshot(),
            before,
            "a refused snapshot changes nothing"
        );
    }
    let mut again = PartitionMachine::default();
    assert!(
        again.restore(3, &machine.snapshot()).is_ok(),
        "own snapshot refused"
    );
    assert_eq!(again.next_offset(), machine.next_offset());
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ordo_node::StateMachine;
    use ordo_wal::fuzzing::{damaged_copies, run_each, run_seeded};

    use super::*;

    const SEED: &str = "ORDO_SERVER_FUZZ_SEED";

    #[test]
    fn arbitrary_and_damaged_questions_and_answers_never_panic() {
        run_seeded(SEED, 300, 64, leader_questions);
        let valid = [
            Question::LeaseKeepAlive { id: 7 }.encode(),
            Question::MemberPromote { id: 3 }.encode(),
            Answer::LeaseSeconds(Some(60)).encode(),
            Answer::Promoted {
                voters: vec![1, 2],
                learners: vec![3],
            }
            .encode(),
        ];
        for bytes in valid {
            run_each(damaged_copies(&bytes), leader_questions);
        }
    }

    #[test]
    fn arbitrary_and_damaged_meta_entries_never_panic() {
        run_seeded(SEED, 300, 200, meta_group);
        let put = MetaCommand::Put {
            key: Bytes::from_static(b"topic"),
            value: Bytes::from_static(b"3 partitions"),
        }
        .encode();
        let mut machine = MetaMachine::default();
        assert!(machine.apply(1, &put).is_ok());
        let snapshot = machine.snapshot();
        let mut data = Vec::new();
        for (bytes, restore) in [(&put[..], 0u16), (&snapshot[..], 1)] {
            data.extend_from_slice(&((bytes.len() as u16) << 1 | restore).to_be_bytes());
            data.extend_from_slice(bytes);
        }
        run_each(damaged_copies(&data), meta_group);
    }

    #[test]
    fn arbitrary_and_damaged_stream_records_never_panic() {
        run_seeded(SEED, 300, 200, stream_records);
        let topic = TopicRecord {
            id: [1; 16],
            name: "orders".into(),
            partitions: vec![ordo_streams::PartitionRecord {
                group: 1 << 62,
                replicas: vec![1, 2, 3],
            }],
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
        };
        let leader = LeaderRecord {
            term: 3,
            leader: 2,
            in_sync: vec![2, 3],
        };
        for bytes in [
            topic.encode(),
            leader.encode(),
            PartitionMachine::default().snapshot(),
        ] {
            run_each(damaged_copies(&bytes), stream_records);
        }
    }
}
