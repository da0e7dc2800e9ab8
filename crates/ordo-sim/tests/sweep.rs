//! The CI sweep: fixed seeds across 3-, 5- and 7-node clusters with every fault, groups
//! created and removed at run time and crashes of nodes hosting several, which must find
//! nothing; and, for each rule-breaking switch in the core, proof that the same sweep finds
//! the broken rule.
//!
//! Any failure prints the seed and the command that replays it with a full trace.

use ordo_node::core::RuntimeMutation;
use ordo_raft::Mutation;
use ordo_sim::{run, RunReport, RunStats, SimConfig, SimMutation, ViolationKind};

/// Seeds per cluster size in the CI sweep: fewer than when each node hosted one group, as
/// every seed now runs several groups, for about the same time in CI.
const CI_SEEDS_PER_SIZE: u64 = 360;

/// Seeds a mutation sweep may take to find its broken rule.
const MUTATION_SEEDS_MAX: u64 = 300;

/// The counters of a sweep that prove its faults happened.
#[derive(Debug, Default)]
struct SweepCounts {
    ops_completed: u64,
    quiesces: u64,
    wakes: u64,
    groups_created: u64,
    groups_removed: u64,
    groups_removed_at_boot: u64,
    crashes_multi_group: u64,
    ops_completed_other_groups: u64,
    messages_for_unknown_groups: u64,
}

impl SweepCounts {
    fn add(&mut self, stats: &RunStats) {
        self.ops_completed += stats.ops_completed;
        self.quiesces += stats.quiesces;
        self.wakes += stats.wakes;
        self.groups_created += stats.groups_created;
        self.groups_removed += stats.groups_removed;
        self.groups_removed_at_boot += stats.groups_removed_at_boot;
        self.crashes_multi_group += stats.crashes_multi_group;
        self.ops_completed_other_groups += stats.ops_completed_other_groups;
        self.messages_for_unknown_groups += stats.messages_for_unknown_groups;
    }
}

fn sweep_clean(nodes: usize) {
    let mut failures = Vec::new();
    let mut counts = SweepCounts::default();
    for seed in 0..CI_SEEDS_PER_SIZE {
        let report = run(&SimConfig::new(seed, nodes));
        counts.add(&report.stats);
        if let Some(violation) = &report.violation {
            failures.push(format!(
                "seed {seed}: {violation}\n  replay: cargo run --release -p ordo-sim -- --seed {seed} --nodes {nodes}"
            ));
        }
        if let Some(reason) = &report.undecided {
            failures.push(format!(
                "seed {seed}: linearizability undecided: {reason}\n  replay: cargo run --release -p ordo-sim -- --seed {seed} --nodes {nodes}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{nodes} nodes: {counts:?}");
    // A sweep whose clients got nothing done would prove nothing.
    assert!(
        counts.ops_completed > CI_SEEDS_PER_SIZE * 100,
        "only {} client operations completed",
        counts.ops_completed
    );
    // Idle groups stop ticking and wake again under the same checks: a sweep in which
    // they never did would not have tried quiescence.
    assert!(
        counts.quiesces > CI_SEEDS_PER_SIZE && counts.wakes > CI_SEEDS_PER_SIZE,
        "groups quiesced {} times and woke {} times",
        counts.quiesces,
        counts.wakes
    );
    // Groups come and go, serve clients, and share the fate of the nodes hosting them: a
    // sweep in which none of it happened would not have tested groups sharing a disk.
    assert!(
        counts.groups_created > CI_SEEDS_PER_SIZE
            && counts.groups_removed > 0
            && counts.groups_removed_at_boot > 0
            && counts.crashes_multi_group > 0
            && counts.ops_completed_other_groups > 0
            && counts.messages_for_unknown_groups > 0,
        "groups were not exercised: {counts:?}"
    );
}

#[test]
fn ci_sweep_three_node_clusters_find_no_violation() {
    sweep_clean(3);
}

#[test]
fn ci_sweep_five_node_clusters_find_no_violation() {
    sweep_clean(5);
}

#[test]
fn ci_sweep_seven_node_clusters_find_no_violation() {
    sweep_clean(7);
}

/// Runs the mixed-size sweep with `mutation` until the first violation and checks its kind.
fn sweep_catches(mutation: SimMutation, expected: &[ViolationKind]) -> RunReport {
    for seed in 0..MUTATION_SEEDS_MAX {
        let nodes = [3, 5, 7][(seed % 3) as usize];
        let config = SimConfig {
            mutation: Some(mutation),
            ..SimConfig::new(seed, nodes)
        };
        let report = run(&config);
        if let Some(violation) = &report.violation {
            assert!(
                expected.contains(&violation.kind),
                "{mutation:?} broke a rule we did not expect first (seed {seed}): {violation}"
            );
            return report;
        }
    }
    panic!("the sweep never noticed {mutation:?} in {MUTATION_SEEDS_MAX} seeds");
}

#[test]
fn sweep_catches_votes_granted_without_the_log_check() {
    sweep_catches(
        SimMutation::Core(Mutation::GrantVoteWithoutLogCheck),
        &[
            ViolationKind::LeaderCompleteness,
            ViolationKind::AckedWriteLost,
        ],
    );
}

#[test]
fn sweep_catches_earlier_term_entries_committed_by_counting() {
    sweep_catches(
        SimMutation::Core(Mutation::CommitPreviousTermByCounting),
        &[
            ViolationKind::LeaderCompleteness,
            ViolationKind::AckedWriteLost,
        ],
    );
}

#[test]
fn sweep_catches_appends_acknowledged_before_they_are_durable() {
    sweep_catches(
        SimMutation::Core(Mutation::AckAppendBeforeDurable),
        &[ViolationKind::CommitNotDurable],
    );
}

#[test]
fn sweep_catches_appends_accepted_without_the_previous_term_check() {
    sweep_catches(
        SimMutation::Core(Mutation::SkipPrevTermCheck),
        &[
            ViolationKind::LogMatching,
            ViolationKind::StateMachineSafety,
        ],
    );
}

#[test]
fn sweep_catches_a_runtime_that_acknowledges_before_the_write_is_durable() {
    sweep_catches(
        SimMutation::Runtime(RuntimeMutation::AckBeforeDurable),
        &[ViolationKind::CommitNotDurable],
    );
}

#[test]
fn sweep_catches_a_runtime_that_applies_past_the_commit_index() {
    sweep_catches(
        SimMutation::Runtime(RuntimeMutation::ApplyPastCommit),
        // The checker counts an applied entry as committed: one applied too early and then
        // overwritten shows as a later leader missing a committed entry.
        &[
            ViolationKind::StateMachineSafety,
            ViolationKind::AckedWriteLost,
            ViolationKind::Linearizability,
            ViolationKind::LeaderCompleteness,
        ],
    );
}

#[test]
fn sweep_catches_a_runtime_that_answers_reads_before_applying_their_index() {
    sweep_catches(
        SimMutation::Runtime(RuntimeMutation::AnswerReadBeforeApplied),
        &[ViolationKind::Linearizability],
    );
}

#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig {
        trace: true,
        ..SimConfig::new(7, 5)
    };
    let first = run(&config);
    let second = run(&config);
    assert!(first.trace.len() > 100, "the trace records the run");
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.stats, second.stats);
}

#[test]
fn cluster_without_faults_completes_every_operation() {
    for nodes in [1, 3, 5] {
        let config = SimConfig {
            faults: ordo_sim::Faults::none(),
            ..SimConfig::new(11, nodes)
        };
        let report = run(&config);
        assert_eq!(report.violation, None, "{nodes} nodes");
        assert_eq!(report.stats.ops_unknown, 0, "{nodes} nodes");
        assert!(
            report.stats.ops_completed > 200,
            "{nodes} nodes: {:?}",
            report.stats
        );
    }
}

#[test]
fn liveness_checker_fires_when_the_cluster_has_no_time_to_recover() {
    // Faults until the last tick: nothing guarantees a leader or caught-up members at the end,
    // and the liveness checker must say so for some seeds.
    let caught = (0..30).any(|seed| {
        let config = SimConfig {
            quiet_ticks: 1,
            ..SimConfig::new(seed, 5)
        };
        run(&config)
            .violation
            .is_some_and(|violation| violation.kind == ViolationKind::Liveness)
    });
    assert!(
        caught,
        "no seed in 0..30 ended without a leader or with a member behind"
    );
}
