//! `ordo-lincheck`: checks that a history of concurrent operations is linearizable.
//!
//! A history records, for every operation a client issued, its input, the time it was called,
//! and either the time it returned with its output or the fact that it never returned (a
//! timeout or a crash: its outcome is unknown, so it may or may not have taken effect at any
//! moment after its call). The history is linearizable when there is one total order of the
//! operations that (a) respects real time — an operation that returned before another was called
//! comes first — and (b) is a legal sequential execution of a [`Model`].
//!
//! The search is Wing and Gong's, with Lowe's improvements:
//!
//! - calls and returns form one time-ordered list; the search linearizes an operation whose call
//!   is in the list before every pending return, and backtracks when it meets the return of an
//!   operation it has not linearized yet;
//! - every (set of linearized operations, model state) pair is explored at most once;
//! - when the model is per key ([`Model::partition`]), the history is split by key and each part
//!   is checked alone, which linearizability's locality (P-compositionality) allows and which
//!   turns one exponential search into many small ones.
//!
//! The search is bounded ([`CheckOptions::states_explored_max`]); a search that runs out of budget
//! says so ([`CheckError::Undecided`]) instead of answering "linearizable".
//!
//! Times are plain `u64`s in whatever unit the recorder uses (simulated ticks, nanoseconds): the
//! checker only compares them. Intervals are closed, so an operation that returns at the same
//! time another is called is treated as concurrent with it, the permissive reading.

mod history;
mod model;
mod search;

pub use history::{History, HistoryError, OpId, Operation, Outcome};
pub use model::{KvInput, KvModel, KvOutput, Model, RegisterInput, RegisterModel, RegisterOutput};
pub use search::{check, check_with, CheckError, CheckOptions, OpReport, Violation};
