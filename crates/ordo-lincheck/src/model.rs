//! Sequential specifications the history is checked against.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;

use bytes::Bytes;

/// A sequential specification: what a single copy of the object would do.
///
/// The model must be deterministic: from one state, one input leads to at most one next state.
pub trait Model {
    /// The object's state. Hashed to remember which (linearized set, state) pairs were explored.
    type State: Clone + Eq + Hash + Debug;
    /// An operation's request.
    type Input: Clone + Debug;
    /// An operation's response.
    type Output: Clone + Debug;
    /// The key that splits a history into independent parts (see [`Model::partition`]).
    type Key: Clone + Ord + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`.
    ///
    /// With `Some(output)` (the operation returned), returns the next state if the sequential
    /// object could have answered `output`, and `None` otherwise. With `None` (the outcome is
    /// unknown), returns the next state for whatever the object would have answered.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// The part of the history `input` belongs to, when operations on different keys never
    /// interact (each part is then checked alone, starting from [`Model::init`]). `None` for any
    /// operation means the history is checked as one.
    fn partition(&self, _input: &Self::Input) -> Option<Self::Key> {
        None
    }

    /// Whether `input` can change the state. An operation that cannot and whose outcome is
    /// unknown constrains nothing and is left out of the search.
    fn may_change_state(&self, _input: &Self::Input) -> bool {
        true
    }
}

/// A request to a single register holding a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    /// Returns the current value.
    Read,
    /// Replaces the value.
    Write(u64),
    /// Replaces the value with `new` if it equals `expected`.
    Cas {
        /// The value the client believes is there.
        expected: u64,
        /// The value to store on a match.
        new: u64,
    },
}

/// A register's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// The value read.
    Read(u64),
    /// The write was applied.
    Written,
    /// Whether the compare-and-set matched and stored its value.
    Cas(bool),
}

/// A single read/write/compare-and-set register.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegisterModel {
    /// The value before any write.
    pub initial: u64,
}

impl Model for RegisterModel {
    type State = u64;
    type Input = RegisterInput;
    type Output = RegisterOutput;
    type Key = ();

    fn init(&self) -> u64 {
        self.initial
    }

    fn step(
        &self,
        state: &u64,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Option<u64> {
        match (input, output) {
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Read, Some(RegisterOutput::Read(value))) => {
                (value == state).then_some(*state)
            }
            (RegisterInput::Write(value), None | Some(RegisterOutput::Written)) => Some(*value),
            (RegisterInput::Cas { expected, new }, None) => {
                Some(if expected == state { *new } else { *state })
            }
            (RegisterInput::Cas { expected, new }, Some(RegisterOutput::Cas(matched))) => {
                match (expected == state, *matched) {
                    (true, true) => Some(*new),
                    (false, false) => Some(*state),
                    _ => None,
                }
            }
            // A response of the wrong kind is never legal.
            (_, Some(_)) => None,
        }
    }

    fn may_change_state(&self, input: &RegisterInput) -> bool {
        !matches!(input, RegisterInput::Read)
    }
}

/// A request to a key-value map; every request names one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Returns the key's value, or nothing when absent.
    Get {
        /// The key.
        key: Bytes,
    },
    /// Sets the key's value.
    Put {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// Removes the key.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Sets the key to `new` if its current value equals `expected` (`None`: absent).
    Cas {
        /// The key.
        key: Bytes,
        /// The value the client believes is there.
        expected: Option<Bytes>,
        /// The value to store on a match.
        new: Bytes,
    },
}

impl KvInput {
    /// The key the request names.
    pub fn key(&self) -> &Bytes {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Delete { key }
            | KvInput::Cas { key, .. } => key,
        }
    }
}

/// A key-value map's response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// The value read (`None`: absent).
    Value(Option<Bytes>),
    /// The put or delete was applied.
    Done,
    /// Whether the compare-and-set matched and stored its value.
    Cas(bool),
}

/// A map from keys to values, every key starting absent. Operations on different keys are
/// independent, so the history is checked key by key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvModel;

impl Model for KvModel {
    // A map rather than a single value so the model stays correct when a caller checks a
    // history without partitioning it.
    type State = BTreeMap<Bytes, Bytes>;
    type Input = KvInput;
    type Output = KvOutput;
    type Key = Bytes;

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &KvInput,
        output: Option<&KvOutput>,
    ) -> Option<Self::State> {
        match (input, output) {
            (KvInput::Get { .. }, None) => Some(state.clone()),
            (KvInput::Get { key }, Some(KvOutput::Value(value))) => {
                (state.get(key) == value.as_ref()).then(|| state.clone())
            }
            (KvInput::Put { key, value }, None | Some(KvOutput::Done)) => {
                let mut next = state.clone();
                next.insert(key.clone(), value.clone());
                Some(next)
            }
            (KvInput::Delete { key }, None | Some(KvOutput::Done)) => {
                let mut next = state.clone();
                next.remove(key);
                Some(next)
            }
            (KvInput::Cas { key, expected, new }, output) => {
                let matches = state.get(key) == expected.as_ref();
                match output {
                    None | Some(KvOutput::Cas(_)) => {}
                    Some(_) => return None,
                }
                if let Some(KvOutput::Cas(matched)) = output {
                    if *matched != matches {
                        return None;
                    }
                }
                let mut next = state.clone();
                if matches {
                    next.insert(key.clone(), new.clone());
                }
                Some(next)
            }
            (_, Some(_)) => None,
        }
    }

    fn partition(&self, input: &KvInput) -> Option<Bytes> {
        Some(input.key().clone())
    }

    fn may_change_state(&self, input: &KvInput) -> bool {
        !matches!(input, KvInput::Get { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_cas_moves_only_on_match() {
        let model = RegisterModel { initial: 1 };
        let cas = RegisterInput::Cas {
            expected: 1,
            new: 2,
        };
        assert_eq!(
            model.step(&1, &cas, Some(&RegisterOutput::Cas(true))),
            Some(2)
        );
        assert_eq!(
            model.step(&1, &cas, Some(&RegisterOutput::Cas(false))),
            None
        );
        assert_eq!(
            model.step(&3, &cas, Some(&RegisterOutput::Cas(false))),
            Some(3)
        );
        assert_eq!(model.step(&3, &cas, None), Some(3));
        assert_eq!(model.step(&1, &cas, None), Some(2));
    }

    #[test]
    fn register_rejects_response_of_wrong_kind() {
        let model = RegisterModel::default();
        assert_eq!(
            model.step(&0, &RegisterInput::Read, Some(&RegisterOutput::Written)),
            None
        );
        assert_eq!(
            model.step(&0, &RegisterInput::Write(1), Some(&RegisterOutput::Read(1))),
            None
        );
    }

    #[test]
    fn kv_get_of_absent_key_reads_none() {
        let model = KvModel;
        let get = KvInput::Get {
            key: Bytes::from_static(b"k"),
        };
        let state = model.init();
        assert!(model
            .step(&state, &get, Some(&KvOutput::Value(None)))
            .is_some());
        assert!(model
            .step(
                &state,
                &get,
                Some(&KvOutput::Value(Some(Bytes::from_static(b"v"))))
            )
            .is_none());
    }

    #[test]
    fn kv_cas_on_absent_key_matches_expected_none() {
        let model = KvModel;
        let key = Bytes::from_static(b"k");
        let cas = KvInput::Cas {
            key: key.clone(),
            expected: None,
            new: Bytes::from_static(b"v"),
        };
        let next = model
            .step(&model.init(), &cas, Some(&KvOutput::Cas(true)))
            .expect("cas on absent key with expected None matches");
        assert_eq!(next.get(&key), Some(&Bytes::from_static(b"v")));
        assert!(model
            .step(&next, &cas, Some(&KvOutput::Cas(true)))
            .is_none());
    }
}
