//! Quorum arithmetic: which index a configuration has committed and how an election
//! stands, for a single majority and for joint consensus (§6).

pub mod joint;
pub mod majority;

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided: missing votes could still go either way.
    Pending,
    /// A quorum refused.
    Lost,
    /// A quorum granted.
    Won,
}
