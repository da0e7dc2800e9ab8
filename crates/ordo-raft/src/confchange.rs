//! Membership changes (§6 of the Raft paper; thesis §4.3): a change of one voter is
//! applied directly, larger changes pass through a joint configuration in which every
//! decision needs a majority of the old and of the new voters.

use crate::error::Error;
use crate::tracker::TrackerConfig;
use crate::types::{ConfChange, ConfChangeKind, ConfChangeSingle};

/// Computes the configuration that results from applying `cc` to `current`.
pub(crate) fn apply(current: &TrackerConfig, cc: &ConfChange) -> Result<TrackerConfig, Error> {
    let bad = |s: &str| Err(Error::InvalidConfChange(s.to_string()));
    if cc.is_leave_joint() {
        if !current.voters.is_joint() {
            return bad("cannot leave a joint configuration: not joint");
        }
        let mut next = current.clone();
        next.voters.outgoing = Default::default();
        let learners_next = std::mem::take(&mut next.learners_next);
        next.learners.extend(learners_next);
        next.auto_leave = false;
        return Ok(next);
    }
    if current.voters.is_joint() {
        return bad("configuration is joint; leave it first");
    }
    let mut next = current.clone();
    match cc.enters_joint() {
        None => {
            apply_changes(&mut next, &cc.changes, false)?;
            let before = current.voters.incoming.ids();
            let after = next.voters.incoming.ids();
            if before.symmetric_difference(after).count() > 1 {
                return bad("more than one voter changed without joint consensus");
            }
        }
        Some(auto_leave) => {
            next.voters.outgoing = next.voters.incoming.clone();
            apply_changes(&mut next, &cc.changes, true)?;
            next.auto_leave = auto_leave;
        }
    }
    if next.voters.incoming.is_empty() {
        return bad("removing every voter");
    }
    next.assert_invariants();
    Ok(next)
}

fn apply_changes(
    cfg: &mut TrackerConfig,
    changes: &[ConfChangeSingle],
    joint: bool,
) -> Result<(), Error> {
    for c in changes {
        if c.node_id == 0 {
            return Err(Error::InvalidConfChange("node id 0".to_string()));
        }
        let id = c.node_id;
        match c.kind {
            ConfChangeKind::AddVoter => {
                cfg.learners.remove(&id);
                cfg.learners_next.remove(&id);
                cfg.voters.incoming.ids_mut().insert(id);
            }
            ConfChangeKind::AddLearner => {
                cfg.voters.incoming.ids_mut().remove(&id);
                cfg.learners.remove(&id);
                cfg.learners_next.remove(&id);
                // A node may not be voter and learner at once: while it still votes in
                // the outgoing half it only becomes a learner on leaving.
                if joint && cfg.voters.outgoing.contains(id) {
                    cfg.learners_next.insert(id);
                } else {
                    cfg.learners.insert(id);
                }
            }
            ConfChangeKind::Remove => {
                cfg.voters.incoming.ids_mut().remove(&id);
                cfg.learners.remove(&id);
                cfg.learners_next.remove(&id);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ConfChangeTransition, ConfState};

    fn cfg(voters: &[u64], learners: &[u64]) -> TrackerConfig {
        TrackerConfig::from_conf_state(&ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            ..ConfState::default()
        })
    }

    fn ch(kind: ConfChangeKind, node_id: u64) -> ConfChangeSingle {
        ConfChangeSingle { kind, node_id }
    }

    #[test]
    fn simple_change_adds_one_voter() {
        let next = apply(
            &cfg(&[1, 2, 3], &[]),
            &ConfChange::single(ConfChangeKind::AddVoter, 4),
        )
        .unwrap();
        assert_eq!(next.to_conf_state().voters, vec![1, 2, 3, 4]);
        assert!(!next.voters.is_joint());
    }

    #[test]
    fn promoting_a_learner_removes_it_from_learners() {
        let next = apply(
            &cfg(&[1, 2, 3], &[4]),
            &ConfChange::single(ConfChangeKind::AddVoter, 4),
        )
        .unwrap();
        assert_eq!(next.to_conf_state().voters, vec![1, 2, 3, 4]);
        assert!(next.learners.is_empty());
    }

    #[test]
    fn replacing_a_voter_goes_through_joint_configuration() {
        let cc = ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: vec![
                ch(ConfChangeKind::AddVoter, 4),
                ch(ConfChangeKind::Remove, 1),
            ],
            ..ConfChange::default()
        };
        let joint = apply(&cfg(&[1, 2, 3], &[]), &cc).unwrap();
        let cs = joint.to_conf_state();
        assert_eq!(cs.voters, vec![2, 3, 4]);
        assert_eq!(cs.voters_outgoing, vec![1, 2, 3]);
        assert!(cs.auto_leave);
        assert!(apply(&joint, &ConfChange::single(ConfChangeKind::AddVoter, 5)).is_err());
        let left = apply(&joint, &ConfChange::leave_joint()).unwrap();
        assert_eq!(left.to_conf_state(), ConfState::with_voters([2, 3, 4]));
    }

    #[test]
    fn demoting_a_voter_in_joint_makes_it_a_learner_only_on_leaving() {
        let cc = ConfChange {
            transition: ConfChangeTransition::JointExplicit,
            changes: vec![ch(ConfChangeKind::AddLearner, 3)],
            ..ConfChange::default()
        };
        let joint = apply(&cfg(&[1, 2, 3], &[]), &cc).unwrap();
        assert_eq!(
            joint.learners_next.iter().copied().collect::<Vec<_>>(),
            vec![3]
        );
        assert!(joint.learners.is_empty());
        assert!(!joint.auto_leave);
        let left = apply(&joint, &ConfChange::leave_joint()).unwrap();
        assert_eq!(left.learners.iter().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(left.to_conf_state().voters, vec![1, 2]);
    }

    #[test]
    fn invalid_changes_are_refused() {
        let c = cfg(&[1], &[]);
        assert!(apply(&c, &ConfChange::single(ConfChangeKind::Remove, 1)).is_err());
        assert!(apply(&c, &ConfChange::leave_joint()).is_err());
        let two_voters_simple = ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: vec![
                ch(ConfChangeKind::AddVoter, 2),
                ch(ConfChangeKind::AddVoter, 3),
            ],
            ..ConfChange::default()
        };
        // Auto turns a two-voter change into a joint one rather than refusing it.
        assert!(apply(&c, &two_voters_simple).unwrap().voters.is_joint());
    }
}
