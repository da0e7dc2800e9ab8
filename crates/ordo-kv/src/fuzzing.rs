//! The harnesses of the fuzz targets in `fuzz/`: what the KV face decodes from its clients,
//! from the log and from snapshot files, built from arbitrary bytes. A request or entry
//! may be refused, but nothing may panic, and the state it leaves must survive a snapshot
//! and be the same on every replica. Public only for the fuzz crate and the tests that run
//! each harness on seeded inputs.
//!
//! - [`grpc_calls`]: a run of etcd gRPC calls, each message body arbitrary bytes, through
//!   the services as the server builds them (tonic's decoding, the services' checks, the
//!   one-node backend that encodes, applies and answers), with no socket.
//! - [`log_entries`]: committed entries of arbitrary bytes applied by the state machine the
//!   runtime drives, on two replicas that must end equal.
//! - [`snapshot`]: a snapshot of arbitrary bytes restored, then written to.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use ordo_node::StateMachine;
use prost::Message;
use tower::{Layer, ServiceExt};

use crate::backend::{KvBackend, LocalBackend, LocalConfig};
use crate::command::{self, Command};
use crate::grpc_status::EtcdStatusLayer;
use crate::limits::GRPC_MESSAGE_BYTES_MAX;
use crate::machine::{KvMachine, LeaseClock};
use crate::proto::etcdserverpb::{
    cluster_server, kv_server, lease_server, maintenance_server, watch_server, CompactionRequest,
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    TxnRequest,
};
use crate::proto::internal::LeaseExpireRequest;
use crate::service::{EtcdApi, ServiceConfig};
use crate::state::KvState;
use crate::store::{EventFilter, KeySpan, KvStore};

use ordo_node::fuzzing::Input;

/// The gRPC methods [`grpc_calls`] calls, by path; the streaming ones take several messages.
const METHODS: [&str; 22] = [
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.KV/DeleteRange",
    "/etcdserverpb.KV/Txn",
    "/etcdserverpb.KV/Compact",
    "/etcdserverpb.Watch/Watch",
    "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Lease/LeaseKeepAlive",
    "/etcdserverpb.Lease/LeaseTimeToLive",
    "/etcdserverpb.Lease/LeaseLeases",
    "/etcdserverpb.Cluster/MemberAdd",
    "/etcdserverpb.Cluster/MemberRemove",
    "/etcdserverpb.Cluster/MemberList",
    "/etcdserverpb.Cluster/MemberPromote",
    "/etcdserverpb.Maintenance/Alarm",
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/Defragment",
    "/etcdserverpb.Maintenance/Hash",
    "/etcdserverpb.Maintenance/HashKV",
    "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.Maintenance/MoveLeader",
];

/// Services served as [`EtcdApi::serve_incoming`] serves them, minus the transport.
struct Services {
    api: EtcdApi<LocalBackend>,
}

impl Services {
    /// Answers one call; the response body is read to its end (trailers included).
    async fn call(&self, path: &str, body: Bytes) {
        const SERVED: [&str; 5] = [
            kv_server::SERVICE_NAME,
            watch_server::SERVICE_NAME,
            lease_server::SERVICE_NAME,
            cluster_server::SERVICE_NAME,
            maintenance_server::SERVICE_NAME,
        ];
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://ordo{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(body))
            .expect("a request from constant parts");
        let layer = EtcdStatusLayer::new(&SERVED);
        let api = self.api.clone();
        let max = GRPC_MESSAGE_BYTES_MAX;
        let response = match path.split('/').nth(1) {
            Some("etcdserverpb.KV") => {
                let service = kv_server::KvServer::new(api).max_decoding_message_size(max);
                layer.layer(service).oneshot(request).await
            }
            Some("etcdserverpb.Watch") => {
                let service = watch_server::WatchServer::new(api).max_decoding_message_size(max);
                layer.layer(service).oneshot(request).await
            }
            Some("etcdserverpb.Lease") => {
                let service = lease_server::LeaseServer::new(api).max_decoding_message_size(max);
                layer.layer(service).oneshot(request).await
            }
            Some("etcdserverpb.Cluster") => {
                let service =
                    cluster_server::ClusterServer::new(api).max_decoding_message_size(max);
                layer.layer(service).oneshot(request).await
            }
            _ => {
                let service =
                    maintenance_server::MaintenanceServer::new(api).max_decoding_message_size(max);
                layer.layer(service).oneshot(request).await
            }
        };
        let Ok(response) = response;
        let _ = response.into_body().collect().await;
    }
}

/// One gRPC message frame: not compressed, a length, the message.
fn grpc_frame(body: &mut BytesMut, message: &[u8]) {
    body.put_u8(0);
    body.put_u32(message.len() as u32);
    body.put_slice(message);
}

/// Calls the etcd services with requests from `data`: per call a method, a flag for
/// whether the body is sent as it is (testing the gRPC framing) or framed as messages, and
/// the message bytes (several for the streaming methods). Afterwards the state must
/// survive a snapshot.
pub fn grpc_calls(data: &[u8]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let backend = Arc::new(LocalBackend::new(KvStore::new(), LocalConfig::default()));
    let services = Services {
        api: EtcdApi::new(Arc::clone(&backend), ServiceConfig::default()),
    };
    let mut input = Input(data);
    runtime.block_on(async {
        while !input.0.is_empty() {
            let method = METHODS[usize::from(input.u8()) % METHODS.len()];
            let shape = input.u8();
            let mut body = BytesMut::new();
            if shape & 0x80 != 0 {
                body.put_slice(input.chunk(512));
            } else {
                for _ in 0..=shape % 4 {
                    grpc_frame(&mut body, input.chunk(512));
                }
            }
            services.call(method, body.freeze()).await;
        }
    });
    drop(services);
    drop(runtime);
    backend.state().read(check_snapshot_round_trip);
}

/// A store written to a snapshot and restored is the same store.
fn check_snapshot_round_trip(store: &KvStore) {
    let restored = KvStore::restore(&store.snapshot());
    assert_eq!(restored.as_ref(), Ok(store), "snapshot round trip");
}

/// A replica: the state machine the runtime applies committed entries to.
struct Replica {
    state: Arc<KvState>,
    machine: KvMachine,
}

impl Replica {
    fn new() -> Replica {
        let state = Arc::new(KvState::new(KvStore::new()));
        let machine = KvMachine::new(Arc::clone(&state), Arc::new(LeaseClock::default()));
        Replica { state, machine }
    }
}

/// The bytes of one committed entry from the input: arbitrary bytes, or a command of the
/// kind the input names whose request is decoded from arbitrary bytes and encoded as the
/// face encodes it (so that the fuzzer reaches the state machine past the envelope).
fn entry_bytes(input: &mut Input<'_>) -> Vec<u8> {
    let kind = input.u8();
    let bytes = input.chunk(512);
    let command = match kind % 8 {
        0 => PutRequest::decode(bytes).map(Command::Put),
        1 => DeleteRangeRequest::decode(bytes).map(Command::DeleteRange),
        2 => TxnRequest::decode(bytes).map(Command::Txn),
        3 => CompactionRequest::decode(bytes).map(Command::Compaction),
        4 => LeaseGrantRequest::decode(bytes).map(Command::LeaseGrant),
        5 => LeaseRevokeRequest::decode(bytes).map(Command::LeaseRevoke),
        6 => LeaseExpireRequest::decode(bytes).map(Command::LeaseExpire),
        _ => return bytes.to_vec(),
    };
    command
        .ok()
        .and_then(|command| command::encode(u64::from(kind), command).ok())
        .unwrap_or_else(|| bytes.to_vec())
}

/// Applies entries from `data` to two replicas, one of which also restores from its own
/// snapshot now and then; both must end with equal stores, and the store must survive a
/// snapshot.
pub fn log_entries(data: &[u8]) {
    let mut input = Input(data);
    let (mut a, mut b) = (Replica::new(), Replica::new());
    let mut index = 0;
    while !input.0.is_empty() {
        let step = input.u8();
        // Entries without KV data (a leader's no-op) leave gaps the store never sees.
        index += 1 + u64::from(step.is_multiple_of(3));
        let entry = entry_bytes(&mut input);
        let from_a = a.machine.apply(index, &entry);
        let from_b = b.machine.apply(index, &entry);
        assert_eq!(from_a, from_b, "replicas answered entry {index} alike");
        if step % 16 == 15 {
            let snapshot = a.machine.snapshot();
            let restored = a.machine.restore(index, &snapshot);
            assert!(restored.is_ok(), "own snapshot refused: {restored:?}");
        }
    }
    a.state.read(|store_a| {
        b.state
            .read(|store_b| assert_eq!(store_a, store_b, "replicas diverged"));
        check_snapshot_round_trip(store_a);
    });
}

/// A snapshot's frame around `body`: magic, version, length and checksum all right.
fn framed_snapshot(body: &[u8]) -> Vec<u8> {
    let mut bytes = KvStore::new().snapshot();
    let header_bytes = bytes.len()
        - crate::proto::internal::SnapshotBody {
            current_revision: 1,
            next_lease_id: 1,
            ..Default::default()
        }
        .encoded_len();
    bytes.truncate(header_bytes);
    bytes[12..20].copy_from_slice(&(body.len() as u64).to_le_bytes());
    bytes[20..24].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// Restores a snapshot from `data` (the first byte says whether the rest is framed with a
/// right header and checksum, so that the fuzzer reaches the body's checks), then, if it
/// restores, serves the commands the rest of the input makes on it and checks that the
/// result survives a snapshot.
pub fn snapshot(data: &[u8]) {
    let mut input = Input(data);
    let framed = input.u8().is_multiple_of(2);
    let bytes = input.chunk(4096);
    let bytes = if framed {
        framed_snapshot(bytes)
    } else {
        bytes.to_vec()
    };
    let Ok(store) = KvStore::restore(&bytes) else {
        return;
    };
    let mut replica = Replica::new();
    let index = store.applied_index().max(1);
    let restored = replica.machine.restore(index, &bytes);
    assert!(
        restored.is_ok(),
        "a snapshot that restores once: {restored:?}"
    );
    check_snapshot_round_trip(&store);
    let keys: Vec<Vec<u8>> = (0..4).map(|k| vec![b'k', k]).collect();
    let backend = LocalBackend::new(store, LocalConfig::default());
    for step in 0..8u8 {
        let key = keys[usize::from(input.u8() % 4)].clone();
        let lease = backend.state().read(|s| s.lease_ids().first().copied());
        let command = match input.u8() % 6 {
            0 => Command::Put(PutRequest {
                key: key.clone(),
                value: vec![step],
                prev_kv: true,
                ..Default::default()
            }),
            1 => Command::Put(PutRequest {
                key: key.clone(),
                ignore_value: true,
                lease: lease.unwrap_or(0),
                ..Default::default()
            }),
            2 => Command::DeleteRange(DeleteRangeRequest {
                key: vec![0],
                range_end: vec![0],
                prev_kv: true,
            }),
            3 => Command::Compaction(CompactionRequest {
                revision: backend.state().read(KvStore::current_revision),
                physical: false,
            }),
            4 => Command::LeaseRevoke(LeaseRevokeRequest {
                id: lease.unwrap_or(1),
            }),
            _ => Command::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 0 }),
        };
        let _ = backend.apply_command(command);
        backend.state().read(|s| {
            let range = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                sort_order: 2,
                sort_target: i32::from(step % 5),
                ..Default::default()
            };
            let _ = s.range(&range);
            let filter = EventFilter {
                span: KeySpan::new(&key, &[]),
                no_put: false,
                no_delete: false,
                prev_kv: true,
            };
            let _ = s.events_since(s.compact_revision().max(1), &filter, 100, 1000);
            let _ = s.hash_kv(0);
        });
    }
    let _ = backend.expire_leases();
    backend.state().read(check_snapshot_round_trip);
}

#[cfg(test)]
mod tests {
    use ordo_wal::fuzzing::{damaged_copies, run_each, run_seeded};

    use super::*;
    use crate::proto::etcdserverpb::{request_op, Compare, RequestOp};

    const SEED: &str = "ORDO_KV_FUZZ_SEED";

    fn put(key: &[u8], value: &[u8]) -> PutRequest {
        PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        }
    }

    /// A txn that compares, puts and ranges, nested once.
    fn txn() -> TxnRequest {
        let nested = TxnRequest {
            compare: vec![],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(put(b"n", b"1"))),
            }],
            failure: vec![],
        };
        TxnRequest {
            compare: vec![Compare {
                key: b"a".to_vec(),
                result: 0,
                target: 0,
                ..Default::default()
            }],
            success: vec![
                RequestOp {
                    request: Some(request_op::Request::RequestTxn(nested)),
                },
                RequestOp {
                    request: Some(request_op::Request::RequestRange(RangeRequest {
                        key: b"a".to_vec(),
                        ..Default::default()
                    })),
                },
            ],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(put(b"f", b"0"))),
            }],
        }
    }

    /// `(method, message)` as [`grpc_calls`] reads one call of a single framed message.
    fn call(method: &str, message: &[u8]) -> Vec<u8> {
        let method = METHODS.iter().position(|m| *m == method).expect("a method");
        let mut data = vec![method as u8, 0];
        data.extend_from_slice(&(message.len() as u16).to_be_bytes());
        data.extend_from_slice(message);
        data
    }

    fn valid_calls() -> Vec<u8> {
        let grant = LeaseGrantRequest { ttl: 60, id: 7 };
        let leased = PutRequest {
            lease: 7,
            ..put(b"l", b"v")
        };
        [
            call("/etcdserverpb.KV/Put", &put(b"a", b"1").encode_to_vec()),
            call("/etcdserverpb.Lease/LeaseGrant", &grant.encode_to_vec()),
            call("/etcdserverpb.KV/Put", &leased.encode_to_vec()),
            call("/etcdserverpb.KV/Txn", &txn().encode_to_vec()),
            call("/etcdserverpb.KV/Range", &[0x0a, 1, b'a', 0x12, 1, 0]),
            call("/etcdserverpb.Watch/Watch", &[0x0a, 3, 0x0a, 1, b'a']),
        ]
        .concat()
    }

    #[test]
    fn the_grpc_harness_serves_calls_through_the_services() {
        let backend = Arc::new(LocalBackend::new(KvStore::new(), LocalConfig::default()));
        let services = Services {
            api: EtcdApi::new(Arc::clone(&backend), ServiceConfig::default()),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut input = Input(&valid_calls());
        runtime.block_on(async {
            while !input.0.is_empty() {
                let method = METHODS[usize::from(input.u8())];
                let _ = input.u8();
                let mut body = BytesMut::new();
                grpc_frame(&mut body, input.chunk(512));
                services.call(method, body.freeze()).await;
            }
        });
        let range = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        let keys: Vec<Vec<u8>> = backend.state().read(|s| {
            let kvs = s.range(&range).unwrap().kvs;
            kvs.into_iter().map(|kv| kv.key).collect()
        });
        // The txn's compare (version of "a" is 0) fails: its failure branch puts "f".
        assert_eq!(keys, [b"a".to_vec(), b"f".to_vec(), b"l".to_vec()]);
    }

    #[test]
    fn arbitrary_and_damaged_grpc_calls_never_panic() {
        run_seeded(SEED, 200, 300, grpc_calls);
        run_each(damaged_copies(&valid_calls()).step_by(7), grpc_calls);
    }

    fn valid_entries() -> Vec<u8> {
        let mut data = Vec::new();
        for (kind, request) in [
            (0u8, put(b"a", b"1").encode_to_vec()),
            (4, LeaseGrantRequest { ttl: 60, id: 7 }.encode_to_vec()),
            (2, txn().encode_to_vec()),
            (5, LeaseRevokeRequest { id: 7 }.encode_to_vec()),
            (
                3,
                CompactionRequest {
                    revision: 2,
                    physical: false,
                }
                .encode_to_vec(),
            ),
        ] {
            data.extend_from_slice(&[1, kind]);
            data.extend_from_slice(&(request.len() as u16).to_be_bytes());
            data.extend_from_slice(&request);
        }
        data
    }

    #[test]
    fn arbitrary_and_damaged_log_entries_never_panic() {
        run_seeded(SEED, 300, 300, log_entries);
        run_each(damaged_copies(&valid_entries()).step_by(3), log_entries);
    }

    /// The bytes [`snapshot`] reads for a store with keys, a lease and history: unframed.
    fn valid_snapshot() -> Vec<u8> {
        let mut store = KvStore::new();
        let _ = store.lease_grant(&LeaseGrantRequest { ttl: 60, id: 7 });
        let _ = store.put(&put(b"a", b"1"));
        let _ = store.put(&PutRequest {
            lease: 7,
            ..put(b"b", b"2")
        });
        let _ = store.put(&put(b"a", b"3"));
        let bytes = store.snapshot();
        let mut data = vec![1];
        data.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        data.extend_from_slice(&bytes);
        data.extend_from_slice(&[0, 0, 1, 1, 2, 5, 3, 4]);
        data
    }

    #[test]
    fn arbitrary_and_damaged_snapshots_never_panic() {
        run_seeded(SEED, 300, 300, snapshot);
        run_each(damaged_copies(&valid_snapshot()), snapshot);
        // The same body framed by the harness, so that damage reaches the body's checks.
        let mut framed = valid_snapshot();
        framed[0] = 0;
        let body_at = 3 + 24;
        framed.drain(3..body_at);
        let body_bytes = (framed.len() - 3 - 8) as u16;
        framed[1..3].copy_from_slice(&body_bytes.to_be_bytes());
        run_each(damaged_copies(&framed), snapshot);
    }
}
