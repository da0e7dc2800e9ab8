//! The record of what clients did: operations with their call and return times.

use thiserror::Error;

/// Index of an operation in its [`History`], in the order operations were recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub usize);

/// How an operation ended, as far as the client knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<O> {
    /// The operation returned `output` at `return_time`.
    Returned {
        /// What the system answered.
        output: O,
        /// When the client received the answer.
        return_time: u64,
    },
    /// The client never learned the result (timeout, crash, lost connection). The operation may
    /// have taken effect at any moment after its call, or never.
    Unknown,
}

/// One operation issued by one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Which client issued it; only used in reports.
    pub client_id: u64,
    /// What the client asked for.
    pub input: I,
    /// When the client sent the request.
    pub call_time: u64,
    /// How it ended.
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// The return time, or `None` when the outcome is unknown.
    pub fn return_time(&self) -> Option<u64> {
        match &self.outcome {
            Outcome::Returned { return_time, .. } => Some(*return_time),
            Outcome::Unknown => None,
        }
    }

    /// The output, or `None` when the outcome is unknown.
    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        }
    }
}

/// A history was recorded inconsistently; the recorder has a bug or was fed bad times.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HistoryError {
    /// An operation returned before it was called.
    #[error("operation {op} returned at {return_time}, before its call at {call_time}")]
    ReturnBeforeCall {
        /// Index of the operation.
        op: usize,
        /// Its call time.
        call_time: u64,
        /// Its return time.
        return_time: u64,
    },
    /// [`History::complete`] or [`History::abandon`] named an operation that does not exist.
    #[error("operation {op} does not exist")]
    UnknownOp {
        /// The index that was given.
        op: usize,
    },
    /// [`History::complete`] was called twice for one operation.
    #[error("operation {op} already returned")]
    AlreadyReturned {
        /// Index of the operation.
        op: usize,
    },
}

/// The operations of a run, in the order they were recorded.
///
/// Record with [`History::invoke`] when a client sends a request and [`History::complete`] when
/// it receives the answer; an operation never completed keeps an unknown outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History<I, O> {
    ops: Vec<Operation<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        Self { ops: Vec::new() }
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a finished operation (or one with unknown outcome) in one call.
    pub fn push(&mut self, op: Operation<I, O>) -> Result<OpId, HistoryError> {
        if let Some(return_time) = op.return_time() {
            if return_time < op.call_time {
                return Err(HistoryError::ReturnBeforeCall {
                    op: self.ops.len(),
                    call_time: op.call_time,
                    return_time,
                });
            }
        }
        self.ops.push(op);
        Ok(OpId(self.ops.len() - 1))
    }

    /// Records that `client_id` sent `input` at `call_time`; the outcome stays unknown until
    /// [`History::complete`] is called.
    pub fn invoke(&mut self, client_id: u64, input: I, call_time: u64) -> OpId {
        self.ops.push(Operation {
            client_id,
            input,
            call_time,
            outcome: Outcome::Unknown,
        });
        OpId(self.ops.len() - 1)
    }

    /// Records that operation `id` returned `output` at `return_time`.
    pub fn complete(&mut self, id: OpId, output: O, return_time: u64) -> Result<(), HistoryError> {
        let op = self
            .ops
            .get_mut(id.0)
            .ok_or(HistoryError::UnknownOp { op: id.0 })?;
        if matches!(op.outcome, Outcome::Returned { .. }) {
            return Err(HistoryError::AlreadyReturned { op: id.0 });
        }
        if return_time < op.call_time {
            return Err(HistoryError::ReturnBeforeCall {
                op: id.0,
                call_time: op.call_time,
                return_time,
            });
        }
        op.outcome = Outcome::Returned {
            output,
            return_time,
        };
        Ok(())
    }

    /// The operations, indexed by [`OpId`].
    pub fn operations(&self) -> &[Operation<I, O>] {
        &self.ops
    }

    /// Number of operations recorded.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_rejects_return_before_call() {
        let mut history: History<u8, u8> = History::new();
        let id = history.invoke(1, 0, 10);
        assert_eq!(
            history.complete(id, 0, 9),
            Err(HistoryError::ReturnBeforeCall {
                op: 0,
                call_time: 10,
                return_time: 9
            })
        );
        assert_eq!(history.complete(id, 0, 10), Ok(()));
        assert_eq!(
            history.complete(id, 0, 11),
            Err(HistoryError::AlreadyReturned { op: 0 })
        );
        assert_eq!(
            history.complete(OpId(5), 0, 11),
            Err(HistoryError::UnknownOp { op: 5 })
        );
    }

    #[test]
    fn invoked_operation_without_completion_has_unknown_outcome() {
        let mut history: History<u8, u8> = History::new();
        let id = history.invoke(1, 0, 10);
        assert_eq!(history.operations()[id.0].outcome, Outcome::Unknown);
        assert_eq!(history.operations()[id.0].return_time(), None);
    }
}
