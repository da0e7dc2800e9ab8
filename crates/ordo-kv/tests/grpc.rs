//! The etcd v3 gRPC API through a real tonic client over 127.0.0.1.

mod common;

use common::{guard, start, start_default};
use ordo_kv::proto::etcdserverpb::{
    compare, request_op, response_op, watch_create_request, watch_request, CompactionRequest,
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, MemberListRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, StatusRequest, TxnRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use ordo_kv::proto::mvccpb::event::EventType;
use ordo_kv::ServiceConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

type Kv = ordo_kv::proto::etcdserverpb::kv_client::KvClient<Channel>;

async fn put(kv: &mut Kv, key: &str, value: &str) -> i64 {
    let resp = kv
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    resp.header.unwrap().revision
}

fn get_req(key: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn put_then_get_returns_the_value_with_revisions_and_a_full_header() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    assert_eq!(put(&mut kv, "greeting", "hello").await, 2);
    assert_eq!(put(&mut kv, "greeting", "world").await, 3);
    let resp = kv.range(get_req("greeting")).await.unwrap().into_inner();
    let header = resp.header.unwrap();
    assert_eq!(header.revision, 3);
    assert_ne!(header.cluster_id, 0);
    assert_ne!(header.member_id, 0);
    assert_eq!(header.raft_term, 1);
    let kv0 = &resp.kvs[0];
    assert_eq!(kv0.value, b"world");
    assert_eq!(
        (kv0.create_revision, kv0.mod_revision, kv0.version),
        (2, 3, 2)
    );
    assert_eq!(resp.count, 1);
}

#[tokio::test]
async fn prefix_range_and_past_revision_reads_over_grpc() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    put(&mut kv, "app/a", "1").await;
    put(&mut kv, "app/b", "1").await;
    put(&mut kv, "apq", "1").await;
    let rev = put(&mut kv, "app/a", "2").await;
    let prefix = kv
        .range(RangeRequest {
            key: b"app/".to_vec(),
            range_end: b"app0".to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = prefix.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [b"app/a".to_vec(), b"app/b".to_vec()]);
    let old = kv
        .range(RangeRequest {
            revision: rev - 1,
            ..get_req("app/a")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.kvs[0].value, b"1");
    let future = kv
        .range(RangeRequest {
            revision: rev + 1,
            ..get_req("app/a")
        })
        .await
        .unwrap_err();
    assert_eq!(future.code(), Code::OutOfRange);
    assert_eq!(
        future.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let empty = kv.range(RangeRequest::default()).await.unwrap_err();
    assert_eq!(
        (empty.code(), empty.message()),
        (Code::InvalidArgument, "etcdserver: key is not provided")
    );
}

#[tokio::test]
async fn txn_compare_and_swap_succeeds_once_then_takes_the_failure_branch() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    put(&mut kv, "lock", "free").await;
    let cas = || TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            key: b"lock".to_vec(),
            target_union: Some(compare::TargetUnion::Value(b"free".to_vec())),
            range_end: vec![],
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"lock".to_vec(),
                value: b"taken".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(get_req("lock"))),
        }],
    };
    let first = kv.txn(cas()).await.unwrap().into_inner();
    assert!(first.succeeded);
    assert_eq!(first.header.unwrap().revision, 3);
    let second = kv.txn(cas()).await.unwrap().into_inner();
    assert!(!second.succeeded);
    let Some(response_op::Response::ResponseRange(r)) = &second.responses[0].response else {
        panic!("{second:?}")
    };
    assert_eq!(r.kvs[0].value, b"taken");
    // A read-only txn does not create a revision.
    assert_eq!(second.header.unwrap().revision, 3);
    let dup = TxnRequest {
        success: vec![cas().success[0].clone(), cas().success[0].clone()],
        ..Default::default()
    };
    let err = kv.txn(dup).await.unwrap_err();
    assert_eq!(
        err.message(),
        "etcdserver: duplicate key given in txn request"
    );
}

#[tokio::test]
async fn delete_range_returns_deleted_count_and_previous_values() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    put(&mut kv, "d/1", "a").await;
    put(&mut kv, "d/2", "b").await;
    let resp = kv
        .delete_range(DeleteRangeRequest {
            key: b"d/".to_vec(),
            range_end: b"d0".to_vec(),
            prev_kv: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.deleted, 2);
    assert_eq!(resp.prev_kvs[1].value, b"b");
    let after = kv.range(get_req("d/1")).await.unwrap().into_inner();
    assert!(after.kvs.is_empty());
}

#[tokio::test]
async fn compaction_makes_older_revisions_fail_with_etcds_compacted_error() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    put(&mut kv, "c", "1").await;
    put(&mut kv, "c", "2").await;
    let rev = put(&mut kv, "c", "3").await;
    kv.compact(CompactionRequest {
        revision: rev - 1,
        physical: true,
    })
    .await
    .unwrap();
    let err = kv
        .range(RangeRequest {
            revision: rev - 2,
            ..get_req("c")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let again = kv
        .compact(CompactionRequest {
            revision: rev - 1,
            physical: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        again.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let ok = kv
        .range(RangeRequest {
            revision: rev - 1,
            ..get_req("c")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.kvs[0].value, b"2");
}

#[tokio::test]
async fn oversized_requests_are_refused_with_etcds_error() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    let err = refused_put(&mut kv, "big", ordo_kv::limits::REQUEST_BYTES_MAX).await;
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: request is too large")
    );
}

/// Puts a value of `value_bytes` under `key`, which must be refused; returns the refusal
/// once a read shows nothing was stored.
async fn refused_put(kv: &mut Kv, key: &str, value_bytes: usize) -> tonic::Status {
    let put = PutRequest {
        key: key.as_bytes().to_vec(),
        value: vec![7; value_bytes],
        ..Default::default()
    };
    let err = kv.put(put).await.unwrap_err();
    assert!(kv
        .range(get_req(key))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
    err
}

#[tokio::test]
async fn a_message_over_the_grpc_bound_is_refused_as_resource_exhausted() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    let err = refused_put(&mut kv, "huge", ordo_kv::limits::GRPC_MESSAGE_BYTES_MAX + 1).await;
    // gRPC's code for a message over the bound, as etcd answers it (tonic says OUT_OF_RANGE).
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("too large"), "{err}");
}

#[tokio::test]
async fn an_unknown_method_or_service_is_answered_saying_which() {
    let server = start_default().await;
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    for (path, expected) in [
        (
            "/etcdserverpb.KV/Nope",
            "unknown method Nope for service etcdserverpb.KV",
        ),
        (
            "/etcdserverpb.Nope/Range",
            "unknown service etcdserverpb.Nope",
        ),
    ] {
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<RangeRequest, RangeResponse>::default();
        let err = grpc
            .unary(
                tonic::Request::new(get_req("a")),
                http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await
            .unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::Unimplemented, expected));
    }
}

struct WatchStream {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
}

impl WatchStream {
    async fn open(server: &common::TestServer) -> WatchStream {
        let mut client = server.watch().await;
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .watch(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        WatchStream { tx, rx }
    }
    async fn send(&self, request: watch_request::RequestUnion) {
        self.tx
            .send(WatchRequest {
                request_union: Some(request),
            })
            .await
            .unwrap();
    }
    async fn create(&mut self, create: WatchCreateRequest) -> WatchResponse {
        self.send(watch_request::RequestUnion::CreateRequest(create))
            .await;
        let resp = self.next().await;
        assert!(resp.created, "{resp:?}");
        resp
    }
    async fn next(&mut self) -> WatchResponse {
        guard(self.rx.message())
            .await
            .unwrap()
            .expect("watch stream ended")
    }
    /// Collects events until `count` have arrived.
    async fn events(&mut self, count: usize) -> Vec<ordo_kv::proto::mvccpb::Event> {
        let mut events = Vec::new();
        while events.len() < count {
            let resp = self.next().await;
            assert!(!resp.canceled, "{resp:?}");
            events.extend(resp.events);
        }
        assert_eq!(events.len(), count);
        events
    }
}

fn watch_key(key: &str, start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        start_revision,
        ..Default::default()
    }
}

fn mod_revisions(events: &[ordo_kv::proto::mvccpb::Event]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect()
}

#[tokio::test]
async fn watch_from_a_past_revision_catches_up_from_history_then_streams_live_events() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    put(&mut kv, "w", "1").await; // 2
    put(&mut kv, "other", "x").await; // 3
    put(&mut kv, "w", "2").await; // 4
    let mut watch = WatchStream::open(&server).await;
    let created = watch.create(watch_key("w", 2)).await;
    assert_eq!(created.header.unwrap().revision, 4);
    let history = watch.events(2).await;
    assert_eq!(mod_revisions(&history), [2, 4]);
    kv.delete_range(DeleteRangeRequest {
        key: b"w".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap(); // 5
    let live = watch.events(1).await;
    assert_eq!(live[0].r#type, EventType::Delete as i32);
    assert_eq!(mod_revisions(&live), [5]);
}

#[tokio::test]
async fn watch_resumes_after_reconnect_from_the_last_seen_revision_without_gaps_or_duplicates() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    let mut first = WatchStream::open(&server).await;
    first
        .create(WatchCreateRequest {
            key: b"r/".to_vec(),
            range_end: b"r0".to_vec(),
            ..Default::default()
        })
        .await;
    for i in 0..5 {
        put(&mut kv, &format!("r/{i}"), "v").await; // revisions 2..=6
    }
    let seen = first.events(3).await;
    let last_seen = seen.last().unwrap().kv.as_ref().unwrap().mod_revision;
    drop(first);
    for i in 5..8 {
        put(&mut kv, &format!("r/{i}"), "v").await; // revisions 7..=9, while disconnected
    }
    let mut second = WatchStream::open(&server).await;
    second
        .create(WatchCreateRequest {
            key: b"r/".to_vec(),
            range_end: b"r0".to_vec(),
            start_revision: last_seen + 1,
            ..Default::default()
        })
        .await;
    let rest = second.events(5).await;
    let mut all = mod_revisions(&seen);
    all.extend(mod_revisions(&rest));
    assert_eq!(all, (2..=9).collect::<Vec<i64>>());
}

#[tokio::test]
async fn watch_at_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    for i in 0..4 {
        put(&mut kv, "k", &i.to_string()).await;
    }
    kv.compact(CompactionRequest {
        revision: 4,
        physical: false,
    })
    .await
    .unwrap();
    let mut watch = WatchStream::open(&server).await;
    let created = watch.create(watch_key("k", 2)).await;
    let resp = watch.next().await;
    assert_eq!(resp.watch_id, created.watch_id);
    assert!(resp.canceled);
    assert_eq!(resp.compact_revision, 4);
    assert_eq!(
        resp.cancel_reason,
        "etcdserver: mvcc: required revision has been compacted"
    );
    // Starting exactly at the compaction revision is still possible.
    watch.create(watch_key("k", 4)).await;
    assert_eq!(mod_revisions(&watch.events(2).await), [4, 5]);
}

#[tokio::test]
async fn watch_progress_is_sent_on_request_and_periodically_when_asked() {
    let config = ServiceConfig {
        watch_progress_interval: std::time::Duration::from_millis(50),
        ..ServiceConfig::default()
    };
    let server = start(config).await;
    let mut kv = server.kv().await;
    put(&mut kv, "p", "1").await; // 2
    let mut watch = WatchStream::open(&server).await;
    let created = watch
        .create(WatchCreateRequest {
            key: b"p".to_vec(),
            progress_notify: true,
            ..Default::default()
        })
        .await;
    put(&mut kv, "unrelated", "1").await; // 3
    watch
        .send(watch_request::RequestUnion::ProgressRequest(
            WatchProgressRequest {},
        ))
        .await;
    // The periodic notification may come first; both kinds carry no events.
    let mut saw_requested = false;
    let mut saw_periodic = false;
    while !(saw_requested && saw_periodic) {
        let resp = watch.next().await;
        assert!(resp.events.is_empty() && !resp.canceled, "{resp:?}");
        if resp.watch_id == -1 {
            saw_requested = true;
            assert_eq!(resp.header.unwrap().revision, 3);
        } else {
            assert_eq!(resp.watch_id, created.watch_id);
            saw_periodic = true;
        }
    }
}

#[tokio::test]
async fn watch_filters_prev_kv_and_cancel() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    put(&mut kv, "f", "old").await;
    let mut watch = WatchStream::open(&server).await;
    let created = watch
        .create(WatchCreateRequest {
            key: b"f".to_vec(),
            prev_kv: true,
            filters: vec![watch_create_request::FilterType::Noput as i32],
            ..Default::default()
        })
        .await;
    put(&mut kv, "f", "new").await;
    kv.delete_range(DeleteRangeRequest {
        key: b"f".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    let events = watch.events(1).await;
    assert_eq!(events[0].r#type, EventType::Delete as i32);
    assert_eq!(events[0].prev_kv.as_ref().unwrap().value, b"new");
    watch
        .send(watch_request::RequestUnion::CancelRequest(
            WatchCancelRequest {
                watch_id: created.watch_id,
            },
        ))
        .await;
    let cancelled = watch.next().await;
    assert!(cancelled.canceled);
    assert_eq!(cancelled.watch_id, created.watch_id);
}

#[tokio::test]
async fn a_watcher_whose_client_does_not_read_falls_behind_and_then_gets_every_event_once_in_order()
{
    let server = start_default().await;
    let mut kv = server.kv().await;
    let mut watch = WatchStream::open(&server).await;
    watch
        .create(WatchCreateRequest {
            key: b"s".to_vec(),
            ..Default::default()
        })
        .await;
    // Far more than the stream buffer and the HTTP/2 flow-control windows hold, written
    // while the client reads nothing.
    let writes = 3 * ordo_kv::limits::WATCH_STREAM_BUFFER_RESPONSES as i64 + 50;
    let value = vec![b'v'; 32 * 1024];
    for i in 0..writes {
        let mut value = value.clone();
        value[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let req = PutRequest {
            key: b"s".to_vec(),
            value,
            ..Default::default()
        };
        kv.put(req).await.unwrap();
    }
    let events = watch.events(writes as usize).await;
    assert_eq!(
        mod_revisions(&events),
        (2..2 + writes).collect::<Vec<i64>>()
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.kv.as_ref().unwrap().value[..8],
            (i as u64).to_be_bytes()
        );
    }
}

#[tokio::test]
async fn lease_grant_keepalive_ttl_and_revoke_deleting_attached_keys() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    let mut lease = server.lease().await;
    let granted = lease
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.ttl, 60);
    let id = granted.id;
    kv.put(PutRequest {
        key: b"eph".to_vec(),
        value: b"1".to_vec(),
        lease: id,
        ..Default::default()
    })
    .await
    .unwrap();
    let (tx, rx) = mpsc::channel(4);
    let mut replies = lease
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(LeaseKeepAliveRequest { id }).await.unwrap();
    let kept = guard(replies.message()).await.unwrap().unwrap();
    assert_eq!((kept.id, kept.ttl), (id, 60));
    let ttl = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.granted_ttl, 60);
    assert!(ttl.ttl > 0 && ttl.ttl <= 60, "{ttl:?}");
    assert_eq!(ttl.keys, [b"eph".to_vec()]);
    let listed = lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.leases.iter().map(|l| l.id).collect::<Vec<_>>(), [id]);
    lease.lease_revoke(LeaseRevokeRequest { id }).await.unwrap();
    assert!(kv
        .range(get_req("eph"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
    let gone = lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.ttl, -1);
    tx.send(LeaseKeepAliveRequest { id }).await.unwrap();
    assert_eq!(guard(replies.message()).await.unwrap().unwrap().ttl, 0);
    let err = lease
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
    let err = kv
        .put(PutRequest {
            key: b"x".to_vec(),
            lease: id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "etcdserver: requested lease not found");
}

#[tokio::test]
async fn expired_leases_are_revoked_through_the_log_by_the_lessor() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    let mut lease = server.lease().await;
    let id = lease
        .lease_grant(LeaseGrantRequest { ttl: 1, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    kv.put(PutRequest {
        key: b"tmp".to_vec(),
        lease: id,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut watch = WatchStream::open(&server).await;
    watch.create(watch_key("tmp", 0)).await;
    // The lessor clock runs in the background; the delete event is awaited, not slept for.
    let _ticker = server
        .backend
        .spawn_lease_expiry(std::time::Duration::from_millis(100));
    let events = watch.events(1).await;
    assert_eq!(events[0].r#type, EventType::Delete as i32);
    assert!(kv
        .range(get_req("tmp"))
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
}

#[tokio::test]
async fn member_list_and_status_describe_the_single_member() {
    let server = start_default().await;
    let members = server
        .cluster()
        .await
        .member_list(MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.members.len(), 1);
    let member = &members.members[0];
    let status = server
        .maintenance()
        .await
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.leader, member.id);
    assert_eq!(status.header.unwrap().member_id, member.id);
    assert_eq!(status.version, ordo_kv::service::ETCD_API_VERSION);
    let err = server
        .cluster()
        .await
        .member_add(ordo_kv::proto::etcdserverpb::MemberAddRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "no peer URL: {err}");
}

#[tokio::test]
async fn a_single_node_server_refuses_membership_changes_saying_why() {
    use ordo_kv::proto::etcdserverpb::{
        MemberAddRequest, MemberPromoteRequest, MemberRemoveRequest,
    };
    let server = start_default().await;
    let mut cluster = server.cluster().await;
    let add = cluster
        .member_add(MemberAddRequest {
            peer_ur_ls: vec!["http://127.0.0.1:2390".into()],
            is_learner: true,
        })
        .await
        .unwrap_err();
    let remove = cluster
        .member_remove(MemberRemoveRequest { id: 7 })
        .await
        .unwrap_err();
    let promote = cluster
        .member_promote(MemberPromoteRequest { id: 7 })
        .await
        .unwrap_err();
    for err in [add, remove, promote] {
        assert_eq!(err.code(), Code::Unimplemented, "{err}");
        assert!(err.message().contains("single-node"), "{err}");
    }
}

#[tokio::test]
async fn a_duplicate_client_chosen_watch_id_is_refused_on_the_same_stream() {
    let server = start_default().await;
    let mut watch = WatchStream::open(&server).await;
    let first = watch
        .create(WatchCreateRequest {
            key: b"a".to_vec(),
            watch_id: 7,
            ..Default::default()
        })
        .await;
    assert_eq!((first.watch_id, first.canceled), (7, false));
    let second = watch
        .create(WatchCreateRequest {
            key: b"b".to_vec(),
            watch_id: 7,
            ..Default::default()
        })
        .await;
    assert!(second.canceled);
    // Not 7: that id is the live watch's, which goes on.
    assert_eq!(second.watch_id, -1);
    assert_eq!(
        second.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    // Automatic ids start at zero, as etcd's do, independent of client-chosen ones.
    let auto = watch.create(watch_key("c", 0)).await;
    assert_eq!(auto.watch_id, 0);
}

#[tokio::test]
async fn a_watch_from_a_negative_revision_is_refused_saying_why() {
    let server = start_default().await;
    let mut watch = WatchStream::open(&server).await;
    let refused = watch
        .create(WatchCreateRequest {
            key: b"a".to_vec(),
            start_revision: -5,
            ..Default::default()
        })
        .await;
    assert!(refused.canceled, "{refused:?}");
    assert_eq!(refused.watch_id, -1);
    assert!(refused.cancel_reason.contains("negative"), "{refused:?}");
}

#[tokio::test]
async fn a_stream_refuses_watches_beyond_its_limit() {
    let server = start_default().await;
    let mut watch = WatchStream::open(&server).await;
    for _ in 0..ordo_kv::limits::WATCHES_PER_STREAM_MAX {
        let resp = watch.create(watch_key("k", 0)).await;
        assert!(!resp.canceled, "{resp:?}");
    }
    let refused = watch.create(watch_key("k", 0)).await;
    assert!(refused.canceled);
    assert!(
        refused.cancel_reason.contains("at most"),
        "{}",
        refused.cancel_reason
    );
}

/// A backend whose cluster has lost its leader: writes and linearizable reads fail, local
/// serializable reads still work.
struct Leaderless(ordo_kv::LocalBackend);

impl ordo_kv::KvBackend for Leaderless {
    fn state(&self) -> &ordo_kv::KvState {
        self.0.state()
    }
    async fn propose(
        &self,
        _command: ordo_kv::Command,
    ) -> Result<ordo_kv::ApplyResponse, ordo_kv::KvError> {
        Err(ordo_kv::KvError::NoLeader)
    }
    async fn read_barrier(&self) -> Result<(), ordo_kv::KvError> {
        Err(ordo_kv::KvError::NoLeader)
    }
    async fn lease_keep_alive(&self, _id: i64) -> Result<Option<i64>, ordo_kv::KvError> {
        Err(ordo_kv::KvError::NoLeader)
    }
    async fn lease_remaining(&self, _id: i64) -> Result<Option<i64>, ordo_kv::KvError> {
        Err(ordo_kv::KvError::NoLeader)
    }
    async fn members(&self) -> Vec<ordo_kv::MemberInfo> {
        self.0.members().await
    }
    fn status(&self) -> ordo_kv::NodeStatus {
        ordo_kv::NodeStatus {
            leader_id: None,
            ..self.0.status()
        }
    }
}

#[tokio::test]
async fn without_a_leader_writes_and_linearizable_reads_fail_with_etcds_no_leader_error() {
    let local =
        ordo_kv::LocalBackend::new(ordo_kv::KvStore::new(), ordo_kv::LocalConfig::default());
    local
        .apply_command(ordo_kv::Command::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))
        .unwrap();
    let backend = std::sync::Arc::new(Leaderless(local));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = ordo_kv::EtcdApi::new(backend, ServiceConfig::default());
    let (addr, _task) = api
        .spawn("127.0.0.1:0".parse().unwrap(), async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = Kv::new(channel.clone());
    let err = kv
        .put(PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "etcdserver: no leader")
    );
    let err = kv.range(get_req("k")).await.unwrap_err();
    assert_eq!(err.message(), "etcdserver: no leader");
    let local_read = kv
        .range(RangeRequest {
            serializable: true,
            ..get_req("k")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(local_read.kvs[0].value, b"v");
    let status = ordo_kv::proto::etcdserverpb::maintenance_client::MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.leader, 0);
    assert_eq!(status.errors, ["etcdserver: no leader"]);
    let _ = stop.send(());
}

#[tokio::test]
async fn an_empty_watch_key_with_nul_range_end_watches_every_key_and_auto_ids_are_not_reused() {
    let server = start_default().await;
    let mut kv = server.kv().await;
    let mut watch = WatchStream::open(&server).await;
    let first = watch
        .create(WatchCreateRequest {
            key: vec![],
            range_end: vec![0],
            ..Default::default()
        })
        .await;
    put(&mut kv, "a", "1").await;
    put(&mut kv, "zz", "1").await;
    let events = watch.events(2).await;
    let keys: Vec<_> = events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.clone())
        .collect();
    assert_eq!(keys, [b"a".to_vec(), b"zz".to_vec()]);
    watch
        .send(watch_request::RequestUnion::CancelRequest(
            WatchCancelRequest {
                watch_id: first.watch_id,
            },
        ))
        .await;
    assert!(watch.next().await.canceled);
    let second = watch.create(watch_key("a", 0)).await;
    assert_ne!(second.watch_id, first.watch_id);
}
