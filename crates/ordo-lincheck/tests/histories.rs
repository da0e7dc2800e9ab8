//! Known linearizable and non-linearizable histories, and randomized histories whose answer is
//! known by construction or by brute force.

use bytes::Bytes;
use ordo_lincheck::{
    check, check_with, CheckError, CheckOptions, History, KvInput, KvModel, KvOutput, Model,
    Operation, Outcome, RegisterInput, RegisterModel, RegisterOutput,
};

use RegisterInput::{Cas, Read, Write};

fn done<I, O>(
    client_id: u64,
    input: I,
    call_time: u64,
    return_time: u64,
    output: O,
) -> Operation<I, O> {
    Operation {
        client_id,
        input,
        call_time,
        outcome: Outcome::Returned {
            output,
            return_time,
        },
    }
}

fn pending<I, O>(client_id: u64, input: I, call_time: u64) -> Operation<I, O> {
    Operation {
        client_id,
        input,
        call_time,
        outcome: Outcome::Unknown,
    }
}

fn register_history(
    ops: Vec<Operation<RegisterInput, RegisterOutput>>,
) -> History<RegisterInput, RegisterOutput> {
    let mut history = History::new();
    for op in ops {
        history.push(op).expect("test history is well formed");
    }
    history
}

fn check_register(ops: Vec<Operation<RegisterInput, RegisterOutput>>) -> Result<(), CheckError> {
    check(&RegisterModel::default(), &register_history(ops))
}

fn expect_violation(result: Result<(), CheckError>) -> ordo_lincheck::Violation {
    match result {
        Err(CheckError::NotLinearizable(violation)) => *violation,
        other => panic!("expected a violation, got {other:?}"),
    }
}

const WRITTEN: RegisterOutput = RegisterOutput::Written;

fn read(value: u64) -> RegisterOutput {
    RegisterOutput::Read(value)
}

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(check_register(vec![]), Ok(()));
}

#[test]
fn sequential_write_then_read_of_written_value_is_linearizable() {
    assert_eq!(
        check_register(vec![
            done(1, Write(1), 0, 10, WRITTEN),
            done(2, Read, 20, 30, read(1)),
        ]),
        Ok(())
    );
}

#[test]
fn stale_read_after_completed_write_is_a_violation() {
    let violation = expect_violation(check_register(vec![
        done(1, Write(1), 0, 10, WRITTEN),
        done(2, Read, 20, 30, read(0)),
    ]));
    assert_eq!(violation.stuck.op.0, 1);
    assert_eq!(violation.prefix_end_time, 30);
    assert_eq!(violation.linearized.len(), 1);
    assert_eq!(violation.linearized[0].0.op.0, 0);
    let text = violation.to_string();
    assert!(text.contains("Read -> Read(0)"), "{text}");
    assert!(text.contains("must be placed"), "{text}");
}

#[test]
fn read_concurrent_with_write_may_see_old_or_new_value() {
    for seen in [0, 1] {
        assert_eq!(
            check_register(vec![
                done(1, Write(1), 0, 10, WRITTEN),
                done(2, Read, 5, 15, read(seen)),
            ]),
            Ok(()),
            "read of {seen}"
        );
    }
}

#[test]
fn lost_write_is_a_violation() {
    expect_violation(check_register(vec![
        done(1, Write(1), 0, 10, WRITTEN),
        done(1, Write(2), 20, 30, WRITTEN),
        done(2, Read, 40, 50, read(1)),
    ]));
}

#[test]
fn concurrent_writes_may_take_effect_in_either_order() {
    for last in [1, 2] {
        assert_eq!(
            check_register(vec![
                done(1, Write(1), 0, 10, WRITTEN),
                done(2, Write(2), 0, 10, WRITTEN),
                done(3, Read, 20, 30, read(last)),
                done(3, Read, 40, 50, read(last)),
            ]),
            Ok(()),
            "last write {last}"
        );
    }
}

#[test]
fn reads_disagreeing_on_order_of_finished_concurrent_writes_is_a_violation() {
    expect_violation(check_register(vec![
        done(1, Write(1), 0, 10, WRITTEN),
        done(2, Write(2), 0, 10, WRITTEN),
        done(3, Read, 20, 30, read(1)),
        done(3, Read, 40, 50, read(2)),
    ]));
}

#[test]
fn two_concurrent_cas_from_same_value_cannot_both_succeed() {
    expect_violation(check_register(vec![
        done(
            1,
            Cas {
                expected: 0,
                new: 1,
            },
            0,
            10,
            RegisterOutput::Cas(true),
        ),
        done(
            2,
            Cas {
                expected: 0,
                new: 2,
            },
            0,
            10,
            RegisterOutput::Cas(true),
        ),
    ]));
    assert_eq!(
        check_register(vec![
            done(
                1,
                Cas {
                    expected: 0,
                    new: 1
                },
                0,
                10,
                RegisterOutput::Cas(true)
            ),
            done(
                2,
                Cas {
                    expected: 0,
                    new: 2
                },
                0,
                10,
                RegisterOutput::Cas(false)
            ),
            done(3, Read, 20, 30, read(1)),
        ]),
        Ok(())
    );
}

#[test]
fn cas_succeeding_against_a_different_value_is_a_violation() {
    expect_violation(check_register(vec![
        done(1, Write(5), 0, 10, WRITTEN),
        done(
            2,
            Cas {
                expected: 0,
                new: 1,
            },
            20,
            30,
            RegisterOutput::Cas(true),
        ),
    ]));
}

#[test]
fn cas_failing_against_its_expected_value_is_a_violation() {
    expect_violation(check_register(vec![
        done(1, Write(5), 0, 10, WRITTEN),
        done(
            2,
            Cas {
                expected: 5,
                new: 1,
            },
            20,
            30,
            RegisterOutput::Cas(false),
        ),
    ]));
}

#[test]
fn chained_cas_ordered_by_values_not_by_call_times() {
    // Both are concurrent; only the order 0->1 then 1->2 explains both successes.
    assert_eq!(
        check_register(vec![
            done(
                2,
                Cas {
                    expected: 1,
                    new: 2
                },
                0,
                20,
                RegisterOutput::Cas(true)
            ),
            done(
                1,
                Cas {
                    expected: 0,
                    new: 1
                },
                5,
                15,
                RegisterOutput::Cas(true)
            ),
            done(3, Read, 30, 40, read(2)),
        ]),
        Ok(())
    );
}

#[test]
fn pending_write_may_have_taken_effect() {
    assert_eq!(
        check_register(vec![
            pending(1, Write(1), 0),
            done(2, Read, 10, 20, read(1)),
        ]),
        Ok(())
    );
}

#[test]
fn pending_write_may_never_have_taken_effect() {
    assert_eq!(
        check_register(vec![
            pending(1, Write(1), 0),
            done(2, Read, 10, 20, read(0)),
            done(2, Read, 1000, 1010, read(0)),
        ]),
        Ok(())
    );
}

#[test]
fn pending_write_may_take_effect_long_after_its_call() {
    assert_eq!(
        check_register(vec![
            pending(1, Write(1), 0),
            done(2, Read, 10, 20, read(0)),
            done(2, Read, 1000, 1010, read(1)),
        ]),
        Ok(())
    );
}

#[test]
fn pending_write_cannot_be_undone_once_observed() {
    expect_violation(check_register(vec![
        pending(1, Write(1), 0),
        done(2, Read, 10, 20, read(1)),
        done(2, Read, 30, 40, read(0)),
    ]));
}

#[test]
fn pending_write_cannot_take_effect_before_its_call() {
    expect_violation(check_register(vec![
        done(2, Read, 10, 20, read(1)),
        pending(1, Write(1), 50),
    ]));
}

#[test]
fn operations_touching_at_one_instant_are_concurrent() {
    assert_eq!(
        check_register(vec![
            done(1, Write(1), 0, 10, WRITTEN),
            done(2, Read, 10, 20, read(0)),
        ]),
        Ok(())
    );
}

#[test]
fn response_of_wrong_kind_is_a_violation() {
    expect_violation(check_register(vec![done(1, Read, 0, 10, WRITTEN)]));
}

#[test]
fn exhausted_budget_is_undecided_never_linearizable() {
    let ops = (0..12)
        .map(|client| done(client, Write(client), 0, 100, WRITTEN))
        .chain([done(99, Read, 200, 210, read(3))])
        .collect();
    let result = check_with(
        &RegisterModel::default(),
        &register_history(ops),
        CheckOptions {
            states_explored_max: 5,
        },
    );
    assert!(
        matches!(
            result,
            Err(CheckError::Undecided {
                states_explored_max: 5,
                ..
            })
        ),
        "{result:?}"
    );
}

fn key(name: &'static str) -> Bytes {
    Bytes::from_static(name.as_bytes())
}

fn value(number: u64) -> Bytes {
    Bytes::from(number.to_string())
}

#[test]
fn kv_violation_names_the_key_it_is_on() {
    let mut history = History::new();
    let ops = vec![
        done(
            1,
            KvInput::Put {
                key: key("a"),
                value: value(1),
            },
            0,
            10,
            KvOutput::Done,
        ),
        done(
            2,
            KvInput::Get { key: key("a") },
            20,
            30,
            KvOutput::Value(Some(value(1))),
        ),
        done(
            1,
            KvInput::Put {
                key: key("b"),
                value: value(2),
            },
            0,
            10,
            KvOutput::Done,
        ),
        done(
            2,
            KvInput::Get { key: key("b") },
            20,
            30,
            KvOutput::Value(None),
        ),
    ];
    for op in ops {
        history.push(op).unwrap();
    }
    let violation = expect_violation(check(&KvModel, &history));
    assert_eq!(violation.partition.as_deref(), Some("b\"b\""));
    assert_eq!(violation.ops_in_partition, 2);
    assert_eq!(violation.stuck.op.0, 3);
}

#[test]
fn kv_keys_are_independent() {
    // Per key this is fine; a checker mixing keys into one register would reject it.
    let mut history = History::new();
    let ops = vec![
        done(
            1,
            KvInput::Put {
                key: key("a"),
                value: value(1),
            },
            0,
            10,
            KvOutput::Done,
        ),
        done(
            2,
            KvInput::Put {
                key: key("b"),
                value: value(2),
            },
            0,
            10,
            KvOutput::Done,
        ),
        done(
            3,
            KvInput::Get { key: key("a") },
            20,
            30,
            KvOutput::Value(Some(value(1))),
        ),
        done(
            3,
            KvInput::Get { key: key("b") },
            40,
            50,
            KvOutput::Value(Some(value(2))),
        ),
        done(4, KvInput::Delete { key: key("a") }, 60, 70, KvOutput::Done),
        done(
            4,
            KvInput::Get { key: key("a") },
            80,
            90,
            KvOutput::Value(None),
        ),
        done(
            4,
            KvInput::Cas {
                key: key("b"),
                expected: Some(value(2)),
                new: value(3),
            },
            80,
            90,
            KvOutput::Cas(true),
        ),
    ];
    for op in ops {
        history.push(op).unwrap();
    }
    assert_eq!(check(&KvModel, &history), Ok(()));
}

/// splitmix64: a tiny seeded generator so every randomized case replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// A history produced by a real sequential execution of the KV model, each operation's
/// interval stretched around the instant it took effect: linearizable by construction.
fn generate_kv_history(
    rng: &mut Rng,
    ops_count: u64,
    overlap_max: u64,
    pending_allowed: bool,
) -> History<KvInput, KvOutput> {
    let model = KvModel;
    let keys = [key("x"), key("y"), key("z")];
    let mut state = model.init();
    let mut history = History::new();
    let mut next_value = 1u64;
    for index in 0..ops_count {
        let point = 1_000 + index * 10;
        let key = keys[rng.below(keys.len() as u64) as usize].clone();
        let input = match rng.below(10) {
            0..=3 => KvInput::Get { key },
            4..=6 => {
                next_value += 1;
                KvInput::Put {
                    key,
                    value: value(next_value),
                }
            }
            7 => KvInput::Delete { key },
            _ => {
                next_value += 1;
                let expected = if rng.below(2) == 0 {
                    state.get(&key).cloned()
                } else {
                    Some(value(rng.below(next_value)))
                };
                KvInput::Cas {
                    key,
                    expected,
                    new: value(next_value),
                }
            }
        };
        let call_time = point - rng.below(overlap_max + 1);
        let fate = if pending_allowed { rng.below(20) } else { 2 };
        if fate == 0 {
            // Timed out and never took effect.
            history.push(pending(index, input, call_time)).unwrap();
            continue;
        }
        let output = match &input {
            KvInput::Get { key } => KvOutput::Value(state.get(key).cloned()),
            KvInput::Put { .. } | KvInput::Delete { .. } => KvOutput::Done,
            KvInput::Cas { key, expected, .. } => {
                KvOutput::Cas(state.get(key) == expected.as_ref())
            }
        };
        state = model
            .step(&state, &input, Some(&output))
            .expect("generator follows the model");
        if fate == 1 {
            // Timed out after taking effect.
            history.push(pending(index, input, call_time)).unwrap();
        } else {
            let return_time = point + rng.below(overlap_max + 1);
            history
                .push(done(index, input, call_time, return_time, output))
                .unwrap();
        }
    }
    history
}

#[test]
fn randomized_histories_from_sequential_executions_are_linearizable() {
    for seed in 0..300 {
        let mut rng = Rng(seed);
        let overlap_max = [0, 5, 30, 80][(seed % 4) as usize];
        let history = generate_kv_history(&mut rng, 60, overlap_max, true);
        assert_eq!(check(&KvModel, &history), Ok(()), "seed {seed}");
    }
}

#[test]
fn randomized_histories_with_an_impossible_result_are_rejected() {
    for seed in 0..300 {
        let mut rng = Rng(seed);
        let overlap_max = [0, 5, 30, 80][(seed % 4) as usize];
        let history = generate_kv_history(&mut rng, 60, overlap_max, true);
        let mut ops = history.operations().to_vec();
        let candidates: Vec<usize> = (0..ops.len())
            .filter(|&index| {
                matches!(
                    (&ops[index].input, ops[index].output()),
                    (KvInput::Get { .. }, Some(_)) | (KvInput::Cas { .. }, Some(_))
                )
            })
            .collect();
        let Some(&target) = candidates.get(rng.below(candidates.len().max(1) as u64) as usize)
        else {
            continue;
        };
        let operation = &mut ops[target];
        let Outcome::Returned { output, .. } = &mut operation.outcome else {
            unreachable!("candidates returned");
        };
        // A value nobody wrote, or a compare-and-set matching a value nobody wrote.
        match &mut operation.input {
            KvInput::Get { .. } => *output = KvOutput::Value(Some(value(u64::MAX))),
            KvInput::Cas { expected, .. } => {
                *expected = Some(value(u64::MAX));
                *output = KvOutput::Cas(true);
            }
            _ => unreachable!("candidates are gets and cas"),
        }
        let mut mutated = History::new();
        for op in ops {
            mutated.push(op).unwrap();
        }
        let violation = expect_violation_seeded(check(&KvModel, &mutated), seed);
        // The impossible operation is among those that could not be placed.
        assert!(
            violation.candidates.iter().any(|op| op.op.0 == target),
            "seed {seed}: {violation}"
        );
    }
}

fn expect_violation_seeded(result: Result<(), CheckError>, seed: u64) -> ordo_lincheck::Violation {
    match result {
        Err(CheckError::NotLinearizable(violation)) => *violation,
        other => panic!("seed {seed}: expected a violation, got {other:?}"),
    }
}

#[test]
fn stale_read_in_a_sequential_history_is_rejected() {
    let mut judged = 0;
    for seed in 0..200 {
        let mut rng = Rng(seed);
        let history = generate_kv_history(&mut rng, 40, 0, false);
        let mut ops = history.operations().to_vec();
        // Make the first read that can be made stale return a value its key held earlier.
        let mut mutated_any = false;
        for target in 0..ops.len() {
            let (KvInput::Get { key }, Some(KvOutput::Value(current))) =
                (&ops[target].input, ops[target].output())
            else {
                continue;
            };
            let earlier =
                ops[..target]
                    .iter()
                    .rev()
                    .find_map(|op| match (&op.input, op.output()) {
                        (KvInput::Put { key: k, value }, Some(_))
                            if k == key && Some(value) != current.as_ref() =>
                        {
                            Some(value.clone())
                        }
                        _ => None,
                    });
            if let Some(stale) = earlier {
                if let Outcome::Returned { output, .. } = &mut ops[target].outcome {
                    *output = KvOutput::Value(Some(stale));
                }
                mutated_any = true;
                break;
            }
        }
        if !mutated_any {
            continue;
        }
        // The generator may have left operations pending; a pending write of the stale value
        // could explain the read, so only fully completed histories are judged.
        if ops.iter().any(|op| op.output().is_none()) {
            continue;
        }
        let mut mutated = History::new();
        for op in ops {
            mutated.push(op).unwrap();
        }
        expect_violation_seeded(check(&KvModel, &mutated), seed);
        judged += 1;
    }
    assert!(judged > 20, "only {judged} histories judged");
}

/// Brute force: some subset of the unknown-outcome operations plus every returned one, in some
/// order respecting real time, replays on the model.
fn brute_force_linearizable(history: &History<RegisterInput, RegisterOutput>) -> bool {
    let ops = history.operations();
    let pending: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].output().is_none())
        .collect();
    let returned: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].output().is_some())
        .collect();
    for subset in 0u32..(1 << pending.len()) {
        let mut chosen = returned.clone();
        for (bit, &index) in pending.iter().enumerate() {
            if subset & (1 << bit) != 0 {
                chosen.push(index);
            }
        }
        if permutations_replay(history, &mut chosen, 0) {
            return true;
        }
    }
    false
}

fn permutations_replay(
    history: &History<RegisterInput, RegisterOutput>,
    chosen: &mut Vec<usize>,
    fixed: usize,
) -> bool {
    if fixed == chosen.len() {
        let ops = history.operations();
        let ordered_in_time = (0..chosen.len()).all(|a| {
            (a + 1..chosen.len()).all(|b| {
                // b comes after a, so b must not have returned before a was called.
                ops[chosen[b]]
                    .return_time()
                    .map_or(true, |ret| ret >= ops[chosen[a]].call_time)
            })
        });
        if !ordered_in_time {
            return false;
        }
        let model = RegisterModel::default();
        let mut state = model.init();
        for &index in chosen.iter() {
            match model.step(&state, &ops[index].input, ops[index].output()) {
                Some(next) => state = next,
                None => return false,
            }
        }
        return true;
    }
    for swap in fixed..chosen.len() {
        chosen.swap(fixed, swap);
        if permutations_replay(history, chosen, fixed + 1) {
            chosen.swap(fixed, swap);
            return true;
        }
        chosen.swap(fixed, swap);
    }
    false
}

#[test]
fn checker_agrees_with_brute_force_on_small_random_histories() {
    let mut violations = 0;
    for seed in 0..1500 {
        let mut rng = Rng(seed);
        let ops_count = 1 + rng.below(6);
        let mut history = History::new();
        for client in 0..ops_count {
            let input = match rng.below(3) {
                0 => Read,
                1 => Write(rng.below(3)),
                _ => Cas {
                    expected: rng.below(3),
                    new: rng.below(3),
                },
            };
            let call_time = rng.below(40);
            let op = if rng.below(6) == 0 {
                pending(client, input, call_time)
            } else {
                let output = match input {
                    Read => read(rng.below(3)),
                    Write(_) => WRITTEN,
                    Cas { .. } => RegisterOutput::Cas(rng.below(2) == 0),
                };
                done(client, input, call_time, call_time + rng.below(20), output)
            };
            history.push(op).unwrap();
        }
        let expected = brute_force_linearizable(&history);
        let result = check(&RegisterModel::default(), &history);
        match (&result, expected) {
            (Ok(()), true) => {}
            (Err(CheckError::NotLinearizable(_)), false) => violations += 1,
            _ => panic!(
                "seed {seed}: checker said {result:?}, brute force said {expected}\n{history:?}"
            ),
        }
    }
    // The generator must exercise both answers for the comparison to mean anything.
    assert!(
        violations > 100 && violations < 1400,
        "{violations} violations"
    );
}
