//! Client histories against a real cluster, checked for linearizability by `ordo-lincheck`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::{leader_of, start_group_on_nodes};
use ordo_lincheck::{History, Operation, Outcome, RegisterInput, RegisterModel, RegisterOutput};
use ordo_node::{Group, Index, ProposeError, RestoreError, StateMachine};

/// One replicated `u64` register with write and compare-and-set.
#[derive(Default)]
struct Register {
    value: u64,
    applied: Index,
}

fn encode(input: RegisterInput) -> Bytes {
    let mut b = BytesMut::new();
    match input {
        RegisterInput::Write(v) => {
            b.put_u8(0);
            b.put_u64(v);
        }
        RegisterInput::Cas { expected, new } => {
            b.put_u8(1);
            b.put_u64(expected);
            b.put_u64(new);
        }
        RegisterInput::Read => unreachable!("reads are not proposed"),
    }
    b.freeze()
}

impl StateMachine for Register {
    type Output = RegisterOutput;

    fn apply(&mut self, index: Index, mut data: &[u8]) -> RegisterOutput {
        self.applied = index;
        match (data.len(), data.first()) {
            (9, Some(0)) => {
                data.advance(1);
                self.value = data.get_u64();
                RegisterOutput::Written
            }
            (17, Some(1)) => {
                data.advance(1);
                let (expected, new) = (data.get_u64(), data.get_u64());
                let matched = self.value == expected;
                if matched {
                    self.value = new;
                }
                RegisterOutput::Cas(matched)
            }
            _ => panic!("malformed register command at {index}"),
        }
    }

    fn note_applied(&mut self, index: Index) {
        self.applied = index;
    }

    fn snapshot(&self) -> Bytes {
        Bytes::copy_from_slice(&self.value.to_be_bytes())
    }

    fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError> {
        let raw: [u8; 8] = data
            .try_into()
            .map_err(|_| RestoreError::new("register snapshot is not 8 bytes"))?;
        self.value = u64::from_be_bytes(raw);
        self.applied = index;
        Ok(())
    }

    fn applied_index(&self) -> Index {
        self.applied
    }
}

type Op = Operation<RegisterInput, RegisterOutput>;

/// A small deterministic generator per client.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn client(id: u64, group: Group<Register>, start: Instant, ops: usize) -> Vec<Op> {
    let now = || start.elapsed().as_nanos() as u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ id;
    let mut history = Vec::new();
    for i in 0..ops as u64 {
        let input = match next(&mut rng) % 3 {
            0 => RegisterInput::Read,
            1 => RegisterInput::Write(id * 1_000 + i),
            _ => RegisterInput::Cas {
                expected: next(&mut rng) % 4,
                new: id * 1_000 + i,
            },
        };
        let call_time = now();
        let outcome = match input {
            RegisterInput::Read => group
                .linearizable_read(|r| r.value)
                .await
                .map(RegisterOutput::Read)
                .map_err(|e| e.to_string()),
            _ => group
                .propose(encode(input))
                .await
                .map_err(|e| e.to_string()),
        };
        let shut = matches!(&outcome, Err(e) if e == &ProposeError::ShuttingDown.to_string());
        history.push(Operation {
            client_id: id,
            input,
            call_time,
            outcome: match outcome {
                Ok(output) => Outcome::Returned {
                    output,
                    return_time: now(),
                },
                // Timed out, dropped, node stopped: it may or may not have taken effect.
                Err(_) => Outcome::Unknown,
            },
        });
        if shut {
            break;
        }
    }
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn register_operations_from_every_node_across_a_leader_crash_are_linearizable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, groups) = start_group_on_nodes(
        dir.path(),
        3,
        |c| c.request_timeout_ms = 2_000,
        Register::default,
    )
    .await;
    let (leader, _) = leader_of(&groups).await;

    let start = Instant::now();
    let mut tasks = Vec::new();
    for (node, g) in &groups {
        for k in 0..2 {
            let client_id = node * 10 + k;
            tasks.push(tokio::spawn(client(client_id, g.clone(), start, 25)));
        }
    }
    // Crash the leader once the clients are under way.
    let watched = Arc::new(groups[&leader].clone());
    watched
        .wait_applied(watched.applied_index() + 10, Duration::from_secs(30))
        .await
        .unwrap();
    nodes.remove(&leader).unwrap().crash().await;

    let mut history = History::new();
    for t in tasks {
        let ops = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("clients finish")
            .unwrap();
        for op in ops {
            history.push(op).unwrap();
        }
    }
    let returned = history
        .operations()
        .iter()
        .filter(|o| o.return_time().is_some())
        .count();
    assert!(returned >= 50, "too few operations completed: {returned}");
    if let Err(e) = ordo_lincheck::check(&RegisterModel::default(), &history) {
        panic!("history is not linearizable: {e}");
    }
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
