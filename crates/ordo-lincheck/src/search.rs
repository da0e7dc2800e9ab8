//! The Wing–Gong–Lowe search for a linearization.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use thiserror::Error;

use crate::history::{History, OpId};
use crate::model::Model;

/// Limits on one [`check_with`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// The most (linearized set, state) pairs the search may explore, summed over all parts of
    /// the history. Each costs one entry in the memo table, so this bounds memory too.
    pub states_explored_max: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            states_explored_max: 4_000_000,
        }
    }
}

/// Why a history was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckError {
    /// No order of the operations is both consistent with real time and a legal execution of
    /// the model.
    #[error("history is not linearizable: {0}")]
    NotLinearizable(Box<Violation>),
    /// The search ran out of budget before finding a linearization or proving there is none.
    /// This is not a pass: shorten the history, reduce concurrency or raise the budget.
    #[error(
        "could not decide linearizability of part {partition}: explored {states_explored} states \
         (limit {states_explored_max})"
    )]
    Undecided {
        /// The part of the history (the partition key, `Debug`-formatted) being searched.
        partition: String,
        /// States explored in total when the budget ran out.
        states_explored: u64,
        /// The budget.
        states_explored_max: u64,
    },
}

/// One operation as it appears in a [`Violation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpReport {
    /// Where the operation is in the checked history.
    pub op: OpId,
    /// The client that issued it.
    pub client_id: u64,
    /// When it was called.
    pub call_time: u64,
    /// When it returned; `None` when its outcome is unknown.
    pub return_time: Option<u64>,
    /// Its input and output, `Debug`-formatted.
    pub description: String,
}

impl fmt::Display for OpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let returned = match self.return_time {
            Some(time) => time.to_string(),
            None => "never".to_string(),
        };
        write!(
            f,
            "op {} client {} [{} .. {}] {}",
            self.op.0, self.client_id, self.call_time, returned, self.description
        )
    }
}

/// A proof sketch that a history is not linearizable.
///
/// The search found no order that gets past the return of [`Violation::stuck`]: the longest
/// legal linearization it built is [`Violation::linearized`], and none of
/// [`Violation::candidates`] (the operations called before `stuck` returned and not in that
/// linearization, `stuck` among them) could legally come next. The history up to
/// [`Violation::prefix_end_time`] is therefore already not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The part of the history (the partition key, `Debug`-formatted; `None` when the history
    /// was checked whole).
    pub partition: Option<String>,
    /// Number of operations in that part.
    pub ops_in_partition: usize,
    /// The longest legal linearization found, each operation with the model state after it.
    pub linearized: Vec<(OpReport, String)>,
    /// The operation that had returned but could not be linearized after `linearized`.
    pub stuck: OpReport,
    /// Operations that could have come next in time but none of which was legal.
    pub candidates: Vec<OpReport>,
    /// The return time of `stuck`: the end of the shortest non-linearizable prefix found.
    pub prefix_end_time: u64,
}

/// How many linearized operations a violation's `Display` shows before eliding.
const DISPLAY_LINEARIZED_TAIL_MAX: usize = 12;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.partition {
            Some(key) => write!(f, "in part {key} ({} ops)", self.ops_in_partition)?,
            None => write!(f, "({} ops)", self.ops_in_partition)?,
        }
        writeln!(
            f,
            ", the history up to time {} has no linearization",
            self.prefix_end_time
        )?;
        let skipped = self
            .linearized
            .len()
            .saturating_sub(DISPLAY_LINEARIZED_TAIL_MAX);
        writeln!(
            f,
            "  longest legal order found ({} ops{}):",
            self.linearized.len(),
            if skipped > 0 {
                format!(", first {skipped} elided")
            } else {
                String::new()
            }
        )?;
        for (op, state) in &self.linearized[skipped..] {
            writeln!(f, "    {op}  => state {state}")?;
        }
        writeln!(f, "  then none of these could come next:")?;
        for op in &self.candidates {
            let marker = if op.op == self.stuck.op {
                " <- returned, must be placed"
            } else {
                ""
            };
            writeln!(f, "    {op}{marker}")?;
        }
        Ok(())
    }
}

/// Checks `history` against `model` with the default budget.
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
) -> Result<(), CheckError> {
    check_with(model, history, CheckOptions::default())
}

/// Checks `history` against `model`.
///
/// Returns `Ok(())` only when a linearization was found for every part. A violation is preferred
/// over an undecided part: when one part runs out of budget the others are still searched.
pub fn check_with<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    options: CheckOptions,
) -> Result<(), CheckError> {
    let ops = history.operations();
    // Operations of unknown outcome that cannot change the state constrain nothing.
    let relevant: Vec<usize> = (0..ops.len())
        .filter(|&index| ops[index].output().is_some() || model.may_change_state(&ops[index].input))
        .collect();

    let keys: Option<Vec<M::Key>> = relevant
        .iter()
        .map(|&index| model.partition(&ops[index].input))
        .collect();
    let parts: Vec<(Option<String>, Vec<usize>)> = match keys {
        Some(keys) => {
            let mut by_key: BTreeMap<M::Key, Vec<usize>> = BTreeMap::new();
            for (key, &index) in keys.into_iter().zip(&relevant) {
                by_key.entry(key).or_default().push(index);
            }
            by_key
                .into_iter()
                .map(|(key, indexes)| (Some(format!("{key:?}")), indexes))
                .collect()
        }
        None => vec![(None, relevant)],
    };

    let mut budget = Budget {
        states_explored: 0,
        states_explored_max: options.states_explored_max,
    };
    let mut undecided = None;
    for (partition, indexes) in parts {
        match search_part(model, history, &indexes, &mut budget) {
            PartResult::Linearizable => {}
            PartResult::Violation(mut violation) => {
                violation.partition = partition;
                return Err(CheckError::NotLinearizable(violation));
            }
            PartResult::OutOfBudget => {
                if undecided.is_none() {
                    undecided = Some(partition.unwrap_or_else(|| "(whole history)".to_string()));
                }
            }
        }
    }
    match undecided {
        Some(partition) => Err(CheckError::Undecided {
            partition,
            states_explored: budget.states_explored,
            states_explored_max: budget.states_explored_max,
        }),
        None => Ok(()),
    }
}

struct Budget {
    states_explored: u64,
    states_explored_max: u64,
}

enum PartResult {
    Linearizable,
    Violation(Box<Violation>),
    OutOfBudget,
}

/// End of the event list.
const NIL: usize = usize::MAX;

#[derive(Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Call,
    Return,
}

/// One call or return in the doubly linked, time-ordered event list. Linearizing an operation
/// unlinks its events; backtracking links them back (the nodes keep their old neighbours).
struct Event {
    kind: EventKind,
    /// Index into the part's operations.
    op: usize,
    prev: usize,
    next: usize,
}

struct EventList {
    /// Node `events.len() - 1` is the head sentinel.
    events: Vec<Event>,
    /// For each operation of the part: its call node and, if it returned, its return node.
    nodes_of_op: Vec<(usize, Option<usize>)>,
}

impl EventList {
    fn head(&self) -> usize {
        self.events.len() - 1
    }

    fn first(&self) -> usize {
        self.events[self.head()].next
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.events[node].prev, self.events[node].next);
        self.events[prev].next = next;
        if next != NIL {
            self.events[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.events[node].prev, self.events[node].next);
        debug_assert_eq!(self.events[prev].next, next);
        self.events[prev].next = node;
        if next != NIL {
            self.events[next].prev = node;
        }
    }

    fn lift(&mut self, op: usize) {
        let (call, ret) = self.nodes_of_op[op];
        self.unlink(call);
        if let Some(ret) = ret {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, op: usize) {
        // Reverse order of `lift`, so every node's remembered neighbours are linked again.
        let (call, ret) = self.nodes_of_op[op];
        if let Some(ret) = ret {
            self.relink(ret);
        }
        self.relink(call);
    }
}

fn set_bit(bits: &mut [u64], index: usize, value: bool) {
    let mask = 1u64 << (index % 64);
    if value {
        bits[index / 64] |= mask;
    } else {
        bits[index / 64] &= !mask;
    }
}

/// Operations of a part in linearization order, each with the model state before it.
type Linearization<S> = Vec<(usize, S)>;

fn search_part<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    indexes: &[usize],
    budget: &mut Budget,
) -> PartResult {
    let ops = history.operations();
    let part_op = |op: usize| &ops[indexes[op]];

    // Calls sort before returns at equal times: closed intervals, so touching operations are
    // concurrent and either order is allowed.
    let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(indexes.len() * 2);
    for op in 0..indexes.len() {
        order.push((part_op(op).call_time, 0, op));
        if let Some(return_time) = part_op(op).return_time() {
            order.push((return_time, 1, op));
        }
    }
    order.sort_unstable();

    let mut list = EventList {
        events: Vec::with_capacity(order.len() + 1),
        nodes_of_op: vec![(NIL, None); indexes.len()],
    };
    for (position, &(_, kind, op)) in order.iter().enumerate() {
        let kind = if kind == 0 {
            list.nodes_of_op[op].0 = position;
            EventKind::Call
        } else {
            list.nodes_of_op[op].1 = Some(position);
            EventKind::Return
        };
        list.events.push(Event {
            kind,
            op,
            prev: if position == 0 {
                order.len()
            } else {
                position - 1
            },
            next: if position + 1 == order.len() {
                NIL
            } else {
                position + 1
            },
        });
    }
    list.events.push(Event {
        kind: EventKind::Call,
        op: NIL,
        prev: NIL,
        next: if order.is_empty() { NIL } else { 0 },
    });

    let mut returned_unlinearized = (0..indexes.len())
        .filter(|&op| part_op(op).return_time().is_some())
        .count();
    let mut linearized_bits = vec![0u64; indexes.len().div_ceil(64)];
    let mut memo: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut state = model.init();
    // (operation, state before it)
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut best: Option<(Linearization<M::State>, usize)> = None;

    let mut node = list.first();
    loop {
        if returned_unlinearized == 0 {
            // Every operation that returned is placed; the rest have unknown outcome and may
            // never have taken effect.
            return PartResult::Linearizable;
        }
        // A returned operation is still in the list, and the search never steps over a return.
        assert_ne!(node, NIL, "search ran off the event list");
        let event = &list.events[node];
        let op = event.op;
        match event.kind {
            EventKind::Call => {
                let operation = part_op(op);
                let mut advanced = false;
                if let Some(next_state) = model.step(&state, &operation.input, operation.output()) {
                    set_bit(&mut linearized_bits, op, true);
                    if memo.insert((linearized_bits.clone(), next_state.clone())) {
                        budget.states_explored += 1;
                        if budget.states_explored > budget.states_explored_max {
                            return PartResult::OutOfBudget;
                        }
                        let before = std::mem::replace(&mut state, next_state);
                        stack.push((op, before));
                        list.lift(op);
                        if operation.return_time().is_some() {
                            returned_unlinearized -= 1;
                        }
                        node = list.first();
                        advanced = true;
                    } else {
                        set_bit(&mut linearized_bits, op, false);
                    }
                }
                if !advanced {
                    node = list.events[node].next;
                }
            }
            EventKind::Return => {
                // `op` returned and is not linearized: everything linearized so far must be
                // undone in turn.
                if best
                    .as_ref()
                    .map_or(true, |(seq, _)| stack.len() > seq.len())
                {
                    best = Some((stack.clone(), op));
                }
                let Some((last, before)) = stack.pop() else {
                    let (sequence, stuck) = best.unwrap_or_else(|| (Vec::new(), op));
                    return PartResult::Violation(Box::new(build_violation(
                        model, history, indexes, &sequence, stuck,
                    )));
                };
                set_bit(&mut linearized_bits, last, false);
                state = before;
                list.unlift(last);
                if part_op(last).return_time().is_some() {
                    returned_unlinearized += 1;
                }
                node = list.events[list.nodes_of_op[last].0].next;
            }
        }
    }
}

fn report<I: fmt::Debug, O: fmt::Debug>(history: &History<I, O>, index: usize) -> OpReport {
    let operation = &history.operations()[index];
    let description = match operation.output() {
        Some(output) => format!("{:?} -> {:?}", operation.input, output),
        None => format!("{:?} -> ?", operation.input),
    };
    OpReport {
        op: OpId(index),
        client_id: operation.client_id,
        call_time: operation.call_time,
        return_time: operation.return_time(),
        description,
    }
}

fn build_violation<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    indexes: &[usize],
    sequence: &[(usize, M::State)],
    stuck: usize,
) -> Violation {
    let ops = history.operations();
    let stuck_index = indexes[stuck];
    let prefix_end_time = ops[stuck_index]
        .return_time()
        .expect("the search only gets stuck on a return");

    let mut linearized = Vec::with_capacity(sequence.len());
    let mut state = model.init();
    for (op, before) in sequence {
        debug_assert_eq!(&state, before);
        let operation = &ops[indexes[*op]];
        state = model
            .step(&state, &operation.input, operation.output())
            .expect("a linearization found by the search replays");
        linearized.push((report(history, indexes[*op]), format!("{state:?}")));
    }

    let mut placed = vec![false; indexes.len()];
    for (op, _) in sequence {
        placed[*op] = true;
    }
    let mut candidates: Vec<OpReport> = (0..indexes.len())
        .filter(|&op| !placed[op] && ops[indexes[op]].call_time <= prefix_end_time)
        .map(|op| report(history, indexes[op]))
        .collect();
    candidates.sort_by_key(|op| (op.call_time, op.op));

    Violation {
        partition: None,
        ops_in_partition: indexes.len(),
        linearized,
        stuck: report(history, stuck_index),
        candidates,
        prefix_end_time,
    }
}
