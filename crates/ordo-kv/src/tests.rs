//! Unit tests of the state machine: MVCC semantics, txn rules, compaction, leases,
//! snapshots, command decoding and determinism.

use crate::command::{self, ApplyResponse, Command};
use crate::error::{KvError, SnapshotError};
use crate::lessor::Lessor;
use crate::proto::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, Compare,
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use crate::proto::internal::InternalRequest;
use crate::proto::mvccpb::{event::EventType, KeyValue};
use crate::store::{EventFilter, KeySpan, KvStore};
use prost::Message;

fn put(store: &mut KvStore, key: &str, value: &str) -> i64 {
    put_lease(store, key, value, 0)
}

fn put_lease(store: &mut KvStore, key: &str, value: &str, lease: i64) -> i64 {
    let req = PutRequest {
        key: key.into(),
        value: value.into(),
        lease,
        ..PutRequest::default()
    };
    match store.apply_command(&Command::Put(req)) {
        Ok(ApplyResponse::Put(resp)) => resp.header.unwrap().revision,
        other => panic!("put failed: {other:?}"),
    }
}

fn del(store: &mut KvStore, key: &str, range_end: &str) -> i64 {
    let req = DeleteRangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        prev_kv: false,
    };
    match store.apply_command(&Command::DeleteRange(req)) {
        Ok(ApplyResponse::DeleteRange(resp)) => resp.deleted,
        other => panic!("delete failed: {other:?}"),
    }
}

fn get(store: &KvStore, key: &str) -> Option<KeyValue> {
    let req = RangeRequest {
        key: key.into(),
        ..RangeRequest::default()
    };
    store.range(&req).unwrap().kvs.into_iter().next()
}

fn range(
    store: &KvStore,
    key: &str,
    range_end: &str,
    revision: i64,
) -> Result<RangeResponse, KvError> {
    store.range(&RangeRequest {
        key: key.into(),
        range_end: range_end.into(),
        revision,
        ..RangeRequest::default()
    })
}

fn keys(resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn txn(store: &mut KvStore, txn: TxnRequest) -> Result<TxnResponse, KvError> {
    match store.apply_command(&Command::Txn(txn)) {
        Ok(ApplyResponse::Txn(resp)) => Ok(resp),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => Err(e),
    }
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        })),
    }
}

fn op_del(key: &str, range_end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                prev_kv: false,
            },
        )),
    }
}

fn op_get(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        })),
    }
}

fn cmp(
    key: &str,
    target: compare::CompareTarget,
    result: compare::CompareResult,
    value: compare::TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.into(),
        target_union: Some(value),
        range_end: Vec::new(),
    }
}

fn grant(store: &mut KvStore, id: i64, ttl: i64) -> i64 {
    match store.apply_command(&Command::LeaseGrant(LeaseGrantRequest { ttl, id })) {
        Ok(ApplyResponse::LeaseGrant(resp)) => resp.id,
        other => panic!("grant failed: {other:?}"),
    }
}

fn compact(store: &mut KvStore, revision: i64) -> Result<(), KvError> {
    store
        .apply_command(&Command::Compaction(CompactionRequest {
            revision,
            physical: false,
        }))
        .map(|_| ())
}

#[test]
fn empty_store_is_at_revision_one_and_each_write_advances_by_one() {
    let mut s = KvStore::new();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(put(&mut s, "a", "1"), 2);
    assert_eq!(put(&mut s, "b", "1"), 3);
    assert_eq!(s.current_revision(), 3);
}

#[test]
fn put_tracks_create_and_mod_revision_and_version_and_delete_resets_them() {
    let mut s = KvStore::new();
    put(&mut s, "k", "v1");
    put(&mut s, "k", "v2");
    let kv = get(&s, "k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(kv.value, b"v2");
    assert_eq!(del(&mut s, "k", ""), 1);
    assert!(get(&s, "k").is_none());
    put(&mut s, "k", "v3");
    let kv = get(&s, "k").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn range_end_selects_prefix_or_all_keys_from_key_with_nul() {
    let mut s = KvStore::new();
    for k in ["a", "ab", "abc", "b", "c"] {
        put(&mut s, k, "x");
    }
    assert_eq!(keys(&range(&s, "ab", "ac", 0).unwrap()), ["ab", "abc"]);
    assert_eq!(keys(&range(&s, "b", "\0", 0).unwrap()), ["b", "c"]);
    assert_eq!(
        keys(&range(&s, "\0", "\0", 0).unwrap()),
        ["a", "ab", "abc", "b", "c"]
    );
    // An end at or before the start is an empty range, not a panic.
    assert!(range(&s, "c", "a", 0).unwrap().kvs.is_empty());
    assert_eq!(
        store_err(s.range(&RangeRequest::default())),
        KvError::EmptyKey
    );
}

fn store_err<T: std::fmt::Debug>(r: Result<T, KvError>) -> KvError {
    r.unwrap_err()
}

#[test]
fn range_at_past_revision_sees_old_state_and_rejects_future_and_compacted_revisions() {
    let mut s = KvStore::new();
    put(&mut s, "k", "old"); // 2
    put(&mut s, "k", "new"); // 3
    del(&mut s, "k", ""); // 4
    assert_eq!(range(&s, "k", "", 2).unwrap().kvs[0].value, b"old");
    assert_eq!(range(&s, "k", "", 3).unwrap().kvs[0].value, b"new");
    assert!(range(&s, "k", "", 4).unwrap().kvs.is_empty());
    assert_eq!(store_err(range(&s, "k", "", 5)), KvError::FutureRevision);
    compact(&mut s, 3).unwrap();
    assert_eq!(
        store_err(range(&s, "k", "", 2)),
        KvError::Compacted {
            compact_revision: 3
        }
    );
    assert_eq!(range(&s, "k", "", 3).unwrap().kvs[0].value, b"new");
    assert_eq!(
        KvError::Compacted {
            compact_revision: 3
        }
        .to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
}

#[test]
fn range_limit_sets_more_while_count_counts_the_whole_range() {
    let mut s = KvStore::new();
    for k in ["a", "b", "c", "d"] {
        put(&mut s, k, "x");
    }
    let resp = s
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            limit: 2,
            ..RangeRequest::default()
        })
        .unwrap();
    assert_eq!(keys(&resp), ["a", "b"]);
    assert!(resp.more);
    assert_eq!(resp.count, 4);
    let count_only = s
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            count_only: true,
            ..RangeRequest::default()
        })
        .unwrap();
    assert!(count_only.kvs.is_empty());
    assert_eq!(count_only.count, 4);
    let keys_only = s
        .range(&RangeRequest {
            key: b"a".to_vec(),
            keys_only: true,
            ..RangeRequest::default()
        })
        .unwrap();
    assert!(keys_only.kvs[0].value.is_empty());
}

#[test]
fn range_sorts_by_target_and_filters_by_mod_and_create_revision() {
    let mut s = KvStore::new();
    put(&mut s, "a", "3"); // 2
    put(&mut s, "b", "1"); // 3
    put(&mut s, "c", "2"); // 4
    put(&mut s, "a", "4"); // 5
    let by_value = s
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            sort_target: range_request::SortTarget::Value as i32,
            sort_order: range_request::SortOrder::Descend as i32,
            ..RangeRequest::default()
        })
        .unwrap();
    assert_eq!(keys(&by_value), ["a", "c", "b"]);
    // A non-key target without an order sorts ascending, as etcd does.
    let by_mod = s
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            sort_target: range_request::SortTarget::Mod as i32,
            ..RangeRequest::default()
        })
        .unwrap();
    assert_eq!(keys(&by_mod), ["b", "c", "a"]);
    let filtered = s
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            min_mod_revision: 4,
            max_create_revision: 3,
            ..RangeRequest::default()
        })
        .unwrap();
    assert_eq!(keys(&filtered), ["a"]);
}

#[test]
fn delete_returns_prev_kvs_and_deleting_nothing_keeps_the_revision() {
    let mut s = KvStore::new();
    put(&mut s, "a1", "x");
    put(&mut s, "a2", "y");
    let resp = s
        .apply_command(&Command::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            prev_kv: true,
        }))
        .unwrap();
    let ApplyResponse::DeleteRange(resp) = resp else {
        panic!("{resp:?}")
    };
    assert_eq!(resp.deleted, 2);
    assert_eq!(resp.prev_kvs.len(), 2);
    assert_eq!(resp.header.unwrap().revision, 4);
    assert_eq!(del(&mut s, "a", "b"), 0);
    assert_eq!(s.current_revision(), 4);
}

#[test]
fn put_returns_prev_kv_and_honours_ignore_value_and_ignore_lease() {
    let mut s = KvStore::new();
    let lease = grant(&mut s, 7, 100);
    put_lease(&mut s, "k", "v", lease);
    let resp = s
        .apply_command(&Command::Put(PutRequest {
            key: b"k".to_vec(),
            ignore_value: true,
            ignore_lease: true,
            prev_kv: true,
            ..PutRequest::default()
        }))
        .unwrap();
    let ApplyResponse::Put(resp) = resp else {
        panic!()
    };
    assert_eq!(resp.prev_kv.unwrap().value, b"v");
    let kv = get(&s, "k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v"[..], lease, 2)
    );
    let missing = PutRequest {
        key: b"nope".to_vec(),
        ignore_value: true,
        ..PutRequest::default()
    };
    assert_eq!(
        store_err(s.apply_command(&Command::Put(missing))),
        KvError::KeyNotFound
    );
    let both = PutRequest {
        key: b"k".to_vec(),
        value: b"x".to_vec(),
        ignore_value: true,
        ..PutRequest::default()
    };
    assert_eq!(
        store_err(s.apply_command(&Command::Put(both))),
        KvError::ValueProvided
    );
    let bad_lease = PutRequest {
        key: b"k".to_vec(),
        lease: 99,
        ..PutRequest::default()
    };
    assert_eq!(
        store_err(s.apply_command(&Command::Put(bad_lease))),
        KvError::LeaseNotFound
    );
}

#[test]
fn txn_is_one_revision_whose_changes_have_ascending_sub_revisions() {
    let mut s = KvStore::new();
    let resp = txn(
        &mut s,
        TxnRequest {
            compare: vec![],
            success: vec![op_put("a", "1"), op_put("b", "2"), op_get("a")],
            failure: vec![],
        },
    )
    .unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.header.unwrap().revision, 2);
    // The txn's own read sees its earlier write.
    let Some(response_op::Response::ResponseRange(r)) = &resp.responses[2].response else {
        panic!()
    };
    assert_eq!(r.kvs[0].value, b"1");
    let filter = EventFilter {
        span: KeySpan::new(b"\0", b"\0"),
        no_put: false,
        no_delete: false,
        prev_kv: false,
    };
    let batch = s.events_since(1, &filter, 100, 100).unwrap();
    let revs: Vec<i64> = batch
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, [2, 2]);
    assert_eq!(batch.scanned_through_revision, 2);
}

#[test]
fn txn_compares_version_create_mod_value_and_lease_and_missing_keys_compare_as_zero() {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let mut s = KvStore::new();
    let lease = grant(&mut s, 5, 100);
    put_lease(&mut s, "k", "v", lease); // 2
    put_lease(&mut s, "k", "w", lease); // 3
    let cases = [
        (cmp("k", T::Version, R::Equal, U::Version(2)), true),
        (cmp("k", T::Create, R::Equal, U::CreateRevision(2)), true),
        (cmp("k", T::Mod, R::Greater, U::ModRevision(2)), true),
        (cmp("k", T::Mod, R::Less, U::ModRevision(3)), false),
        (cmp("k", T::Value, R::Equal, U::Value(b"w".to_vec())), true),
        (
            cmp("k", T::Value, R::NotEqual, U::Value(b"w".to_vec())),
            false,
        ),
        (cmp("k", T::Lease, R::Equal, U::Lease(lease)), true),
        (cmp("missing", T::Version, R::Equal, U::Version(0)), true),
        (
            cmp("missing", T::Create, R::Equal, U::CreateRevision(0)),
            true,
        ),
        (
            cmp("missing", T::Value, R::NotEqual, U::Value(b"x".to_vec())),
            false,
        ),
    ];
    for (c, expected) in cases {
        let resp = txn(
            &mut s,
            TxnRequest {
                compare: vec![c.clone()],
                success: vec![op_get("k")],
                failure: vec![],
            },
        )
        .unwrap();
        assert_eq!(resp.succeeded, expected, "{c:?}");
    }
    // A compare over a range holds only if it holds for every key in it.
    put(&mut s, "k2", "v");
    let mut over_range = cmp("k", T::Version, R::Greater, U::Version(0));
    over_range.range_end = b"l".to_vec();
    assert!(
        txn(
            &mut s,
            TxnRequest {
                compare: vec![over_range.clone()],
                success: vec![],
                failure: vec![]
            }
        )
        .unwrap()
        .succeeded
    );
    over_range.target_union = Some(U::Version(1));
    assert!(
        !txn(
            &mut s,
            TxnRequest {
                compare: vec![over_range],
                success: vec![],
                failure: vec![]
            }
        )
        .unwrap()
        .succeeded
    );
}

#[test]
fn txn_rejects_writing_a_key_twice_or_putting_a_deleted_key_but_allows_it_in_exclusive_branches() {
    let mut s = KvStore::new();
    let dup = TxnRequest {
        compare: vec![],
        success: vec![op_put("a", "1"), op_put("a", "2")],
        failure: vec![],
    };
    assert_eq!(txn(&mut s, dup).unwrap_err(), KvError::DuplicateKey);
    let put_deleted = TxnRequest {
        compare: vec![],
        success: vec![op_del("a", "b"), op_put("a1", "2")],
        failure: vec![],
    };
    assert_eq!(txn(&mut s, put_deleted).unwrap_err(), KvError::DuplicateKey);
    let nested = TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest {
                compare: vec![],
                success: vec![op_put("a", "then")],
                failure: vec![op_put("a", "else")],
            })),
        }],
        failure: vec![],
    };
    let resp = txn(&mut s, nested).unwrap();
    assert!(resp.succeeded);
    assert_eq!(get(&s, "a").unwrap().value, b"then");
    // The failure branch of the outer txn is checked too, though it will not run.
    let dup_in_failure = TxnRequest {
        compare: vec![],
        success: vec![],
        failure: vec![op_put("x", "1"), op_put("x", "1")],
    };
    assert_eq!(
        txn(&mut s, dup_in_failure).unwrap_err(),
        KvError::DuplicateKey
    );
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn txn_with_more_ops_than_the_limit_is_rejected() {
    let mut s = KvStore::new();
    let ops = (0..=crate::limits::TXN_OPS_MAX)
        .map(|i| op_put(&format!("k{i}"), "v"))
        .collect();
    let too_many = TxnRequest {
        compare: vec![],
        success: ops,
        failure: vec![],
    };
    assert_eq!(txn(&mut s, too_many).unwrap_err(), KvError::TooManyOps);
    assert_eq!(
        KvError::TooManyOps.to_string(),
        "etcdserver: too many operations in txn request"
    );
}

#[test]
fn txn_that_fails_a_state_check_changes_nothing() {
    let mut s = KvStore::new();
    let bad = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"b".to_vec(),
                    lease: 42,
                    ..PutRequest::default()
                })),
            },
        ],
        failure: vec![],
    };
    let before = s.snapshot();
    assert_eq!(txn(&mut s, bad).unwrap_err(), KvError::LeaseNotFound);
    assert_eq!(s.snapshot(), before);
}

#[test]
fn nested_txn_branches_are_decided_against_the_state_before_the_txn() {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let mut s = KvStore::new();
    let resp = txn(
        &mut s,
        TxnRequest {
            compare: vec![],
            success: vec![
                op_put("a", "1"),
                RequestOp {
                    request: Some(request_op::Request::RequestTxn(TxnRequest {
                        // "a" does not exist before the txn, whatever the sibling put does.
                        compare: vec![cmp("a", T::Version, R::Equal, U::Version(0))],
                        success: vec![op_put("b", "nested-success")],
                        failure: vec![op_put("b", "nested-failure")],
                    })),
                },
            ],
            failure: vec![],
        },
    )
    .unwrap();
    let Some(response_op::Response::ResponseTxn(nested)) = &resp.responses[1].response else {
        panic!()
    };
    assert!(nested.succeeded);
    assert_eq!(get(&s, "b").unwrap().value, b"nested-success");
    assert_eq!(get(&s, "b").unwrap().mod_revision, 2);
}

#[test]
fn a_read_only_txn_answers_nested_branches_in_the_shape_of_the_request() {
    use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let mut s = KvStore::new();
    put(&mut s, "a", "1");
    put(&mut s, "b", "2");
    let range = |key: &str| RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        })),
    };
    let resp = s
        .read_only_txn(&TxnRequest {
            compare: vec![cmp("a", T::Version, R::Equal, U::Version(1))],
            success: vec![
                range("a"),
                RequestOp {
                    request: Some(request_op::Request::RequestTxn(TxnRequest {
                        compare: vec![cmp("b", T::Version, R::Equal, U::Version(7))],
                        success: vec![range("a")],
                        failure: vec![range("b"), range("missing")],
                    })),
                },
            ],
            failure: vec![],
        })
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.header.as_ref().unwrap().revision, 3);
    let ranged = |op: &ResponseOp| match &op.response {
        Some(response_op::Response::ResponseRange(r)) => keys(r),
        other => panic!("expected a range response, got {other:?}"),
    };
    assert_eq!(ranged(&resp.responses[0]), ["a"]);
    let Some(response_op::Response::ResponseTxn(nested)) = &resp.responses[1].response else {
        panic!("expected a nested txn response")
    };
    assert!(!nested.succeeded);
    assert_eq!(ranged(&nested.responses[0]), ["b"]);
    assert!(ranged(&nested.responses[1]).is_empty());
}

#[test]
fn compaction_removes_superseded_records_but_keeps_the_latest_of_each_live_key() {
    let mut s = KvStore::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "a", "2"); // 3
    put(&mut s, "b", "1"); // 4
    del(&mut s, "b", ""); // 5
    put(&mut s, "c", "1"); // 6
    assert_eq!(s.record_count(), 5);
    compact(&mut s, 5).unwrap();
    // a@2 and b@4 are superseded; b's tombstone at exactly the compaction revision stays,
    // so a watcher starting there still sees the delete.
    assert_eq!(s.record_count(), 3);
    compact(&mut s, 6).unwrap();
    assert_eq!(s.record_count(), 2);
    assert_eq!(get(&s, "a").unwrap().value, b"2");
    assert!(get(&s, "b").is_none());
    assert_eq!(
        compact(&mut s, 6).unwrap_err(),
        KvError::Compacted {
            compact_revision: 6
        }
    );
    assert_eq!(compact(&mut s, 7).unwrap_err(), KvError::FutureRevision);
    // Compaction does not create a revision.
    assert_eq!(s.current_revision(), 6);
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let mut s = KvStore::new();
    let lease = grant(&mut s, 0, 60);
    assert!(lease > 0);
    put_lease(&mut s, "x", "1", lease); // 2
    put_lease(&mut s, "y", "1", lease); // 3
    put(&mut s, "z", "1"); // 4
    put(&mut s, "y", "2"); // 5: y leaves the lease
    assert_eq!(s.lease(lease).unwrap().1, vec![b"x".to_vec()]);
    let resp = s
        .apply_command(&Command::LeaseRevoke(LeaseRevokeRequest { id: lease }))
        .unwrap();
    let ApplyResponse::LeaseRevoke(resp) = resp else {
        panic!()
    };
    assert_eq!(resp.header.unwrap().revision, 6);
    assert!(get(&s, "x").is_none());
    assert!(get(&s, "y").is_some());
    assert!(s.lease(lease).is_none());
    let again = s.apply_command(&Command::LeaseRevoke(LeaseRevokeRequest { id: lease }));
    assert_eq!(again.unwrap_err(), KvError::LeaseNotFound);
}

#[test]
fn lease_grant_picks_unused_ids_and_rejects_taken_ids_and_huge_ttls() {
    let mut s = KvStore::new();
    assert_eq!(grant(&mut s, 2, 10), 2);
    assert_eq!(grant(&mut s, 0, 10), 1);
    assert_eq!(grant(&mut s, 0, 10), 3);
    let taken = s.apply_command(&Command::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 2 }));
    assert_eq!(taken.unwrap_err(), KvError::LeaseExists);
    let huge = s.apply_command(&Command::LeaseGrant(LeaseGrantRequest {
        ttl: crate::limits::LEASE_TTL_MAX_SECONDS + 1,
        id: 0,
    }));
    assert_eq!(huge.unwrap_err(), KvError::LeaseTtlTooLarge);
    assert_eq!(s.lease_ids(), [1, 2, 3]);
}

#[test]
fn events_since_reports_puts_and_deletes_with_prev_kv_and_filters() {
    let mut s = KvStore::new();
    put(&mut s, "k", "1"); // 2
    put(&mut s, "k", "2"); // 3
    del(&mut s, "k", ""); // 4
    put(&mut s, "other", "x"); // 5
    let mut filter = EventFilter {
        span: KeySpan::new(b"k", b""),
        no_put: false,
        no_delete: false,
        prev_kv: true,
    };
    let batch = s.events_since(3, &filter, 100, 100).unwrap();
    assert_eq!(batch.events.len(), 2);
    assert_eq!(batch.events[0].r#type, EventType::Put as i32);
    assert_eq!(batch.events[0].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(batch.events[1].r#type, EventType::Delete as i32);
    assert_eq!(batch.events[1].kv.as_ref().unwrap().mod_revision, 4);
    assert_eq!(batch.events[1].prev_kv.as_ref().unwrap().value, b"2");
    assert_eq!(batch.scanned_through_revision, 5);
    filter.no_put = true;
    let deletes = s.events_since(1, &filter, 100, 100).unwrap();
    assert_eq!(deletes.events.len(), 1);
    // Batches end on revision boundaries.
    filter.no_put = false;
    let first = s.events_since(1, &filter, 1, 100).unwrap();
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.scanned_through_revision, 2);
    compact(&mut s, 4).unwrap();
    assert_eq!(
        s.events_since(3, &filter, 100, 100).unwrap_err(),
        KvError::Compacted {
            compact_revision: 4
        }
    );
}

fn sample_store() -> KvStore {
    let mut s = KvStore::new();
    let lease = grant(&mut s, 0, 30);
    put(&mut s, "a", "1");
    put_lease(&mut s, "b", "2", lease);
    put(&mut s, "a", "3");
    del(&mut s, "c", "d");
    put(&mut s, "c1", "x");
    del(&mut s, "c1", "");
    compact(&mut s, 3).unwrap();
    s
}

#[test]
fn snapshot_restore_round_trip_produces_identical_state_and_bytes() {
    let s = sample_store();
    let bytes = s.snapshot();
    let restored = KvStore::restore(&bytes).unwrap();
    assert_eq!(restored, s);
    assert_eq!(restored.snapshot(), bytes);
}

#[test]
fn snapshot_corruption_is_detected_and_named() {
    let bytes = sample_store().snapshot();
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(
        KvStore::restore(&flipped),
        Err(SnapshotError::ChecksumMismatch { .. })
    ));
    assert!(matches!(
        KvStore::restore(&bytes[..10]),
        Err(SnapshotError::Truncated { .. })
    ));
    assert!(matches!(
        KvStore::restore(&bytes[..bytes.len() - 1]),
        Err(SnapshotError::LengthMismatch { .. })
    ));
    let mut magic = bytes.clone();
    magic[0] = b'X';
    assert_eq!(KvStore::restore(&magic), Err(SnapshotError::BadMagic));
    let mut version = bytes.clone();
    version[8] = 9;
    assert!(matches!(
        KvStore::restore(&version),
        Err(SnapshotError::UnsupportedVersion { version: 9, .. })
    ));
    let message = SnapshotError::ChecksumMismatch {
        expected: 1,
        actual: 2,
    }
    .to_string();
    assert!(message.contains("corrupt"), "{message}");
}

/// A snapshot frame around `body`, as `KvStore::snapshot` frames its own.
fn framed_snapshot(body: &crate::proto::internal::SnapshotBody) -> Vec<u8> {
    let body = body.encode_to_vec();
    let mut bytes = b"ORDOKVSN".to_vec();
    bytes.extend_from_slice(&crate::snapshot::SNAPSHOT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// Found by the `snapshot` fuzz target: a body whose current revision was `i64::MAX` (and
/// then `i64::MAX - 4`, a few writes from it) restored, and the write that passed the last
/// revision overflowed computing its revision. Writes are refused instead; reads go on.
#[test]
fn writes_past_the_last_revision_are_refused_instead_of_overflowing() {
    use crate::proto::internal::{SnapshotBody, SnapshotLease};
    let body = SnapshotBody {
        current_revision: i64::MAX - 1,
        next_lease_id: 8,
        leases: vec![SnapshotLease {
            id: 7,
            ttl_seconds: 60,
        }],
        ..Default::default()
    };
    let mut store = KvStore::restore(&framed_snapshot(&body)).unwrap();
    assert_eq!(put(&mut store, "a", "1"), i64::MAX);
    let exhausted = KvError::RevisionsExhausted {
        current_revision: i64::MAX,
    };
    let before = store.clone();
    let put_b = PutRequest {
        key: b"b".to_vec(),
        value: b"2".to_vec(),
        ..Default::default()
    };
    assert_eq!(store.put(&put_b).unwrap_err(), exhausted);
    let delete_a = DeleteRangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    };
    assert_eq!(store.delete_range(&delete_a).unwrap_err(), exhausted);
    let t = TxnRequest {
        compare: vec![],
        success: vec![op_put("c", "3")],
        failure: vec![],
    };
    assert_eq!(txn(&mut store, t).unwrap_err(), exhausted);
    assert_eq!(store.lease_revoke(7).unwrap_err(), exhausted);
    assert_eq!(store, before, "a refused write changes nothing");
    assert_eq!(get(&store, "a").unwrap().mod_revision, i64::MAX);
    assert_eq!(store.lease_ids(), [7]);
}

/// The same kind of input as the one above, found reading the restore's checks after it: a
/// live record whose version was `i64::MAX` restored, and the next put of its key
/// overflowed adding one to it. A version above `mod - create + 1` (more puts than
/// revisions) or a create revision no put writes is refused, so a version always fits.
#[test]
fn a_snapshot_record_with_a_version_no_put_writes_is_refused() {
    use crate::proto::internal::{SnapshotBody, SnapshotRecord};
    let record = |version, create_revision| SnapshotRecord {
        main_revision: 2,
        sub_revision: 0,
        tombstone: false,
        kv: Some(KeyValue {
            key: b"k".to_vec(),
            create_revision,
            mod_revision: 2,
            version,
            value: b"v".to_vec(),
            lease: 0,
        }),
    };
    let body = |record| SnapshotBody {
        current_revision: 2,
        next_lease_id: 1,
        records: vec![record],
        ..Default::default()
    };
    for (version, create_revision) in [(i64::MAX, 2), (2, 2), (0, 2), (-1, 2), (1, 0), (1, 3)] {
        let restored = KvStore::restore(&framed_snapshot(&body(record(version, create_revision))));
        assert!(
            matches!(&restored, Err(SnapshotError::Invalid { reason }) if reason.contains("no put writes")),
            "version {version}, create revision {create_revision}: {restored:?}"
        );
    }
    let mut store = KvStore::restore(&framed_snapshot(&body(record(1, 2)))).unwrap();
    put(&mut store, "k", "w");
    assert_eq!(get(&store, "k").unwrap().version, 2);
}

#[test]
fn bad_command_bytes_yield_the_same_error_everywhere_and_still_advance_the_applied_index() {
    let mut a = KvStore::new();
    let mut b = KvStore::new();
    for (i, garbage) in [&b"\xff\xff\xff"[..], b"", b"\x0a\x05abc"]
        .iter()
        .enumerate()
    {
        let index = i as u64 + 1;
        let ra = a.apply(index, garbage);
        let rb = b.apply(index, garbage);
        assert!(ra.result.is_err(), "{ra:?}");
        assert_eq!(ra, rb);
    }
    assert_eq!(a.applied_index(), 3);
    assert_eq!(a.current_revision(), 1);
    assert_eq!(a.snapshot(), b.snapshot());
    let replay = a.apply(2, b"");
    assert_eq!(
        replay.result.unwrap_err(),
        KvError::AlreadyApplied {
            index: 2,
            applied_index: 3
        }
    );
}

#[test]
fn commands_from_a_newer_encoding_version_are_refused_by_name() {
    let mut s = KvStore::new();
    let future = InternalRequest {
        version: command::COMMAND_VERSION + 1,
        request_id: 9,
        request: None,
        ..InternalRequest::default()
    }
    .encode_to_vec();
    let applied = s.apply(1, &future);
    assert_eq!(applied.request_id, Some(9));
    assert!(matches!(
        applied.result,
        Err(KvError::UnsupportedCommandVersion { .. })
    ));
}

#[test]
fn encoded_commands_round_trip_and_oversized_ones_are_refused() {
    let cmd = Command::Put(PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    });
    let bytes = command::encode(77, cmd.clone()).unwrap();
    let (id, decoded) = command::decode(&bytes);
    assert_eq!((id, decoded.unwrap()), (Some(77), cmd));
    let huge = Command::Put(PutRequest {
        key: b"k".to_vec(),
        value: vec![0; crate::limits::REQUEST_BYTES_MAX],
        ..PutRequest::default()
    });
    assert_eq!(
        command::encode(1, huge).unwrap_err(),
        KvError::RequestTooLarge
    );
}

/// xorshift64*: a tiny deterministic generator so the test needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_command(rng: &mut Rng, revision_hint: i64) -> Vec<u8> {
    let key = |rng: &mut Rng| format!("k{}", rng.below(12)).into_bytes();
    let command = match rng.below(10) {
        0..=3 => Command::Put(PutRequest {
            key: key(rng),
            value: rng.next().to_le_bytes().to_vec(),
            lease: if rng.below(4) == 0 {
                rng.below(4) as i64
            } else {
                0
            },
            prev_kv: rng.below(2) == 0,
            ..PutRequest::default()
        }),
        4 => Command::DeleteRange(DeleteRangeRequest {
            key: key(rng),
            range_end: if rng.below(2) == 0 {
                key(rng)
            } else {
                Vec::new()
            },
            prev_kv: true,
        }),
        5 | 6 => {
            use compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
            let k = String::from_utf8(key(rng)).unwrap();
            Command::Txn(TxnRequest {
                compare: vec![cmp(
                    &k,
                    T::Version,
                    R::Greater,
                    U::Version(rng.below(3) as i64),
                )],
                success: vec![op_put(&k, "s"), op_get("k1")],
                failure: vec![op_del(&k, ""), op_put("k99", "f")],
            })
        }
        7 => Command::Compaction(CompactionRequest {
            revision: (revision_hint - rng.below(5) as i64).max(1),
            physical: false,
        }),
        8 => Command::LeaseGrant(LeaseGrantRequest {
            ttl: rng.below(100) as i64,
            id: rng.below(4) as i64,
        }),
        _ => Command::LeaseRevoke(LeaseRevokeRequest {
            id: rng.below(4) as i64,
        }),
    };
    if rng.below(50) == 0 {
        return vec![0xff; 3];
    }
    command::encode(rng.next(), command).unwrap()
}

#[test]
fn replicas_applying_the_same_random_log_hold_byte_identical_state() {
    let seed = std::env::var("ORDO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0000_0000_0001u64);
    println!("determinism seed: {seed} (set ORDO_TEST_SEED to replay)");
    let mut rng = Rng(seed | 1);
    let mut log = Vec::new();
    let mut hint = KvStore::new();
    for index in 1..=2000u64 {
        let entry = random_command(&mut rng, hint.current_revision());
        hint.apply(index, &entry);
        log.push(entry);
    }
    let mut a = KvStore::new();
    let mut b = KvStore::new();
    let mut c = KvStore::new();
    for (i, entry) in log.iter().enumerate() {
        let index = i as u64 + 1;
        let ra = a.apply(index, entry);
        let rb = b.apply(index, entry);
        assert_eq!(ra, rb, "replicas diverged at index {index} (seed {seed})");
        // A third replica restarts from a snapshot halfway and must converge too.
        if index == 1000 {
            c = KvStore::restore(&b.snapshot()).unwrap();
        } else if index > 1000 {
            assert_eq!(
                c.apply(index, entry),
                ra,
                "restored replica diverged at {index}"
            );
        }
    }
    assert_eq!(a.snapshot(), b.snapshot(), "seed {seed}");
    assert_eq!(a.snapshot(), c.snapshot(), "seed {seed}");
    assert!(
        a.current_revision() > 100,
        "the log should have made progress"
    );
}

#[test]
fn lessor_expires_leases_after_their_ttl_unless_kept_alive() {
    let mut s = KvStore::new();
    let a = grant(&mut s, 1, 10);
    let b = grant(&mut s, 2, 10);
    let mut lessor = Lessor::new();
    lessor.sync(&s, 0);
    assert_eq!(lessor.remaining_seconds(a, 0), Some(10));
    assert_eq!(lessor.keep_alive(b, 6_000), Some(10));
    assert_eq!(lessor.remaining_seconds(a, 6_500), Some(4));
    assert!(lessor.expired(9_999, 10).is_empty());
    assert_eq!(lessor.expired(10_000, 10), [a]);
    assert_eq!(lessor.keep_alive(a, 10_000), None);
    assert_eq!(lessor.expired(16_000, 10), [a, b]);
    // A new leader restarts every deadline.
    lessor.promote(20_000);
    assert!(lessor.expired(29_999, 10).is_empty());
    s.apply_command(&Command::LeaseRevoke(LeaseRevokeRequest { id: a }))
        .unwrap();
    lessor.sync(&s, 20_000);
    assert_eq!(lessor.len(), 1);
    assert_eq!(lessor.remaining_seconds(a, 20_000), None);
    // Incremental bookkeeping, as a leader applies grants and revokes.
    lessor.grant(9, 5, 20_000);
    assert_eq!(lessor.remaining_seconds(9, 20_000), Some(5));
    lessor.revoke(9);
    assert_eq!(lessor.keep_alive(9, 20_000), None);
}

#[tokio::test(flavor = "current_thread")]
async fn a_state_restored_from_a_snapshot_serves_the_same_reads_and_wakes_applied_waiters() {
    let source = crate::KvState::new(KvStore::new());
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        let entry = command::encode(
            i as u64,
            Command::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            }),
        )
        .unwrap();
        assert!(source.apply(i as u64 + 1, &entry).result.is_ok());
    }
    let target = crate::KvState::new(KvStore::new());
    assert!(target.restore(b"not a snapshot").is_err());
    assert_eq!(target.progress().applied_index, 0);
    let waiter = target.wait_applied(3);
    target.restore(&source.snapshot()).unwrap();
    waiter.await;
    assert_eq!(target.progress(), source.progress());
    let all = |state: &crate::KvState| state.read(|s| range(s, "\0", "\0", 0).unwrap().kvs);
    assert_eq!(all(&target), all(&source));
}

#[test]
fn a_txn_whose_range_is_too_large_is_rolled_back_completely() {
    let mut s = KvStore::new();
    let lease = grant(&mut s, 0, 100);
    for i in 0..crate::limits::RANGE_KEYS_MAX {
        let req = PutRequest {
            key: format!("k{i:06}").into_bytes(),
            ..PutRequest::default()
        };
        s.apply_command(&Command::Put(req)).unwrap();
    }
    let before = s.snapshot();
    let leased_put = RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b"k000000".to_vec(),
            value: b"changed".to_vec(),
            lease,
            ..PutRequest::default()
        })),
    };
    let bad = TxnRequest {
        compare: vec![],
        // The new key pushes the range over the limit only because of the txn's own write.
        success: vec![leased_put, op_put("k999999", "new"), op_get_all()],
        failure: vec![],
    };
    assert_eq!(
        txn(&mut s, bad).unwrap_err(),
        KvError::RangeTooLarge {
            max: crate::limits::RANGE_KEYS_MAX
        }
    );
    assert_eq!(s.snapshot(), before);
    assert_eq!(s.lease(lease).unwrap().1, Vec::<Vec<u8>>::new());
}

fn op_get_all() -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            ..RangeRequest::default()
        })),
    }
}

/// The snapshot body as prost writes it from owned messages: the format's definition.
fn snapshot_body_by_prost(s: &KvStore) -> Vec<u8> {
    use crate::proto::internal::{SnapshotBody, SnapshotLease, SnapshotRecord};
    SnapshotBody {
        auth: s.auth.to_snapshot(),
        applied_index: s.applied_index,
        current_revision: s.current_revision,
        compact_revision: s.compact_revision,
        next_lease_id: s.next_lease_id,
        records: s
            .records
            .iter()
            .map(|(rev, record)| SnapshotRecord {
                main_revision: rev.main,
                sub_revision: rev.sub,
                tombstone: record.tombstone,
                kv: Some(record.kv.clone()),
            })
            .collect(),
        leases: s
            .leases
            .iter()
            .map(|(id, lease)| SnapshotLease {
                id: *id,
                ttl_seconds: lease.ttl_seconds,
            })
            .collect(),
    }
    .encode_to_vec()
}

#[test]
fn snapshot_body_is_byte_for_byte_the_protobuf_encoding_of_the_state() {
    let mut s = sample_store();
    // A txn writes several records under one main revision (sub revisions above zero).
    let t = TxnRequest {
        compare: vec![],
        success: vec![op_put("t1", "1"), op_put("t2", ""), op_put("t3", "3")],
        failure: vec![],
    };
    txn(&mut s, t).unwrap();
    let bytes = s.snapshot();
    assert_eq!(&bytes[24..], snapshot_body_by_prost(&s).as_slice());
    assert_eq!(KvStore::restore(&bytes).unwrap(), s);
}

#[test]
fn a_snapshot_taken_in_steps_while_writes_continue_is_the_state_where_it_began() {
    let state = crate::KvState::new(sample_store());
    let expected = state.snapshot();
    let mut cursor = state.begin_snapshot();
    let mut steps = 0;
    let bytes = loop {
        // A write lands between every two steps; none of it may enter the snapshot.
        let entry = command::encode(
            0,
            Command::Put(PutRequest {
                key: format!("later{steps}").into_bytes(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            }),
        )
        .unwrap();
        let index = state.progress().applied_index + 1;
        assert!(state.apply(index, &entry).result.is_ok());
        let step = state.read(|s| cursor.step(s, 0, 1));
        steps += 1;
        match step {
            crate::snapshot::SnapshotStep::More(next) => cursor = next,
            crate::snapshot::SnapshotStep::Done(bytes) => break bytes,
            crate::snapshot::SnapshotStep::Abandoned => panic!("no compaction or restore ran"),
        }
    };
    assert!(steps > 3, "one record per step takes several steps");
    assert_eq!(bytes, expected);
    assert_ne!(state.snapshot(), expected);
}

#[test]
fn a_compaction_or_a_restore_during_a_stepped_snapshot_abandons_it() {
    let state = crate::KvState::new(sample_store());
    let compaction = command::encode(
        0,
        Command::Compaction(CompactionRequest {
            revision: 5,
            physical: false,
        }),
    )
    .unwrap();
    let cursor = state.begin_snapshot();
    let index = state.progress().applied_index + 1;
    assert!(state.apply(index, &compaction).result.is_ok());
    assert!(state.finish_snapshot(cursor).is_none());

    let cursor = state.begin_snapshot();
    state.restore(&sample_store().snapshot()).unwrap();
    assert!(state.finish_snapshot(cursor).is_none());
    let cursor = state.begin_snapshot();
    assert_eq!(state.finish_snapshot(cursor), Some(state.snapshot()));
}
