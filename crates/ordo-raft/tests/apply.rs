//! Applying committed entries apart from persisting them (`advance_append` and
//! `advance_apply_to`), for runtimes that apply on another thread.

use bytes::Bytes;
use ordo_raft::{ConfChange, ConfChangeKind, ConfState, MemStorage, RawNode, Ready, StateRole};

fn persist(n: &mut RawNode<MemStorage>, rd: &mut Ready) {
    if let Some(hs) = rd.hard_state {
        n.storage_mut().set_hard_state(hs);
    }
    n.storage_mut()
        .append_owned(std::mem::take(&mut rd.entries));
}

fn leader() -> RawNode<MemStorage> {
    let storage = MemStorage::new_with_conf_state(ConfState::with_voters([1]));
    let mut n = RawNode::new(ordo_raft::Config::new(1), storage).unwrap();
    n.campaign().unwrap();
    for _ in 0..4 {
        let mut rd = n.ready();
        persist(&mut n, &mut rd);
        n.advance();
    }
    assert_eq!(n.role(), StateRole::Leader);
    n
}

#[test]
fn committed_entries_are_handed_out_once_while_applying_lags() {
    let mut n = leader();
    let a = n.propose(Bytes::from_static(b"a")).unwrap();
    let mut rd = n.ready();
    persist(&mut n, &mut rd);
    n.advance_append();
    let mut rd = n.ready();
    assert_eq!(rd.committed_entries.last().map(|e| e.index), Some(a.index));
    persist(&mut n, &mut rd);
    n.advance_append();
    // Not applied yet: a new proposal's Ready does not repeat the committed entries.
    let b = n.propose(Bytes::from_static(b"b")).unwrap();
    let mut rd = n.ready();
    assert!(rd.committed_entries.iter().all(|e| e.index > a.index));
    persist(&mut n, &mut rd);
    n.advance_append();
    assert!(n.applied_index() < a.index);
    n.advance_apply_to(a.index);
    assert_eq!(n.applied_index(), a.index);
    let mut rd = n.ready();
    assert_eq!(
        rd.committed_entries
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![b.index]
    );
    persist(&mut n, &mut rd);
    n.advance();
    assert_eq!(n.applied_index(), b.index);
}

#[test]
fn configuration_change_takes_effect_when_reported_applied() {
    let mut n = leader();
    let cc = n
        .propose_conf_change(&ConfChange::single(ConfChangeKind::AddLearner, 2))
        .unwrap();
    let mut rd = n.ready();
    persist(&mut n, &mut rd);
    n.advance_append();
    let mut rd = n.ready();
    assert!(rd.committed_entries.iter().any(|e| e.index == cc.index));
    persist(&mut n, &mut rd);
    n.advance_append();
    assert!(
        n.conf_state().learners.is_empty(),
        "handed out is not applied"
    );
    n.advance_apply_to(cc.index);
    assert_eq!(n.conf_state().learners, vec![2]);
}
