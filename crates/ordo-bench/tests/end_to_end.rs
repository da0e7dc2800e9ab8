//! Runs every workload against an in-process one-node Ordo KV server on 127.0.0.1 and checks
//! the report against what the server holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ordo_bench::{BenchArgs, BenchError, Report, Workload};
use ordo_kv::proto::etcdserverpb::kv_client::KvClient;
use ordo_kv::proto::etcdserverpb::lease_server::LeaseServer;
use ordo_kv::proto::etcdserverpb::{
    kv_server, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use ordo_kv::{EtcdApi, KvStore, LocalBackend, LocalConfig, ServiceConfig};
use tokio::sync::oneshot;

/// Fails a test that hangs instead of letting it run forever.
const HANG_GUARD: Duration = Duration::from_secs(60);

struct Server {
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

async fn start_server() -> Server {
    let backend = Arc::new(LocalBackend::new(KvStore::new(), LocalConfig::default()));
    let (shutdown, stopped) = oneshot::channel::<()>();
    let api = EtcdApi::new(backend, ServiceConfig::default());
    let (addr, _task) = api
        .spawn("127.0.0.1:0".parse().unwrap(), async move {
            let _ = stopped.await;
        })
        .await
        .expect("bind 127.0.0.1:0");
    Server {
        addr,
        _shutdown: shutdown,
    }
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn args(addr: SocketAddr, extra: &[&str]) -> BenchArgs {
    let endpoint = addr.to_string();
    let mut argv = vec!["ordo-bench", "--endpoints", &endpoint];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).expect("valid arguments").bench
}

async fn bench(addr: SocketAddr, extra: &[&str]) -> Result<Report, BenchError> {
    tokio::time::timeout(HANG_GUARD, ordo_bench::run(args(addr, extra)))
        .await
        .expect("the run ends within the hang guard")
}

/// The keys under `prefix` with their versions, and the store's revision.
async fn server_keys(addr: SocketAddr, prefix: &str) -> (Vec<(String, i64)>, i64) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = KvClient::new(channel);
    let response = kv
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: ordo_bench::args::prefix_end(prefix.as_bytes()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let keys = response
        .kvs
        .iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.version))
        .collect();
    (keys, response.header.unwrap().revision)
}

fn assert_json_line_round_trips(report: &Report) {
    let line = report.to_json_line();
    assert_eq!(&Report::from_json_line(&line).unwrap(), report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_run_on_sequential_keys_writes_exactly_total_distinct_keys() {
    let server = start_server().await;
    let report = bench(
        server.addr,
        &[
            "--workload",
            "put",
            "--clients",
            "4",
            "--conns",
            "2",
            "--total",
            "200",
            "--key-space",
            "1000",
            "--sequential-keys",
            "--key-prefix",
            "p/",
        ],
    )
    .await
    .unwrap();
    assert_eq!((report.ops, report.writes, report.reads), (200, 200, 0));
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    assert_eq!(report.stopped_by, "total");
    assert!(report.latency_us_p50 > 0 && report.latency_us_p50 <= report.latency_us_max);
    assert!(report.ops_per_s > 0.0 && report.mb_per_s > 0.0);
    let (keys, revision) = server_keys(server.addr, "p/").await;
    assert_eq!(keys.len(), 200);
    assert_eq!(keys.first().unwrap().0, "p/000");
    assert_eq!(keys.last().unwrap().0, "p/199");
    assert_eq!(revision, 1 + 200, "one revision per put");
    assert_json_line_round_trips(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_run_reads_prefilled_keys_and_writes_nothing_more() {
    let server = start_server().await;
    for consistency in ["l", "s"] {
        let report = bench(
            server.addr,
            &[
                "--workload",
                "get",
                "--consistency",
                consistency,
                "--clients",
                "3",
                "--total",
                "60",
                "--key-space",
                "25",
                "--key-prefix",
                "g/",
            ],
        )
        .await
        .unwrap();
        assert_eq!((report.ops, report.reads, report.writes), (60, 60, 0));
        assert_eq!(report.keys_missing, 0, "every key was prefilled");
        assert_eq!(report.errors, 0, "{:?}", report.first_error);
        assert!(report.mb_per_s > 0.0);
        let json: serde_json::Value = serde_json::from_str(&report.to_json_line()).unwrap();
        assert_eq!(json["consistency"], consistency);
    }
    let (keys, revision) = server_keys(server.addr, "g/").await;
    assert_eq!(keys.len(), 25);
    assert_eq!(revision, 1 + 2 * 25, "only the two prefills wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_run_on_fresh_keys_succeeds_every_compare() {
    let server = start_server().await;
    let report = bench(
        server.addr,
        &[
            "--workload",
            "txn",
            "--clients",
            "4",
            "--total",
            "50",
            "--key-space",
            "100",
            "--sequential-keys",
            "--key-prefix",
            "t/",
        ],
    )
    .await
    .unwrap();
    assert_eq!((report.ops, report.writes), (50, 50));
    assert_eq!(report.txn_compare_failed, 0);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    let (keys, revision) = server_keys(server.addr, "t/").await;
    assert_eq!(keys.len(), 50);
    assert!(keys.iter().all(|(_, version)| *version == 1), "{keys:?}");
    assert_eq!(revision, 1 + 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_run_on_one_contended_key_counts_every_failed_compare() {
    let server = start_server().await;
    let report = bench(
        server.addr,
        &[
            "--workload",
            "txn",
            "--clients",
            "4",
            "--total",
            "60",
            "--key-space",
            "1",
            "--key-prefix",
            "c/",
        ],
    )
    .await
    .unwrap();
    assert_eq!(report.ops, 60);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    let succeeded = report.ops - report.txn_compare_failed;
    let (keys, revision) = server_keys(server.addr, "c/").await;
    assert_eq!(keys.len(), 1);
    assert_eq!(
        keys[0].1, succeeded as i64,
        "each successful compare-and-put is one version"
    );
    assert_eq!(revision, 1 + succeeded as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_run_reports_the_reads_and_writes_the_server_saw() {
    let server = start_server().await;
    let report = bench(
        server.addr,
        &[
            "--workload",
            "mixed",
            "--read-ratio",
            "0.5",
            "--clients",
            "4",
            "--conns",
            "2",
            "--total",
            "120",
            "--key-space",
            "20",
            "--key-prefix",
            "m/",
            "--seed",
            "3",
        ],
    )
    .await
    .unwrap();
    assert_eq!(report.workload, Workload::Mixed);
    assert_eq!(report.reads + report.writes, 120);
    assert!(report.reads > 0 && report.writes > 0, "{report:?}");
    assert_eq!(report.keys_missing, 0);
    assert_eq!(report.errors, 0, "{:?}", report.first_error);
    let (keys, revision) = server_keys(server.addr, "m/").await;
    assert_eq!(keys.len(), 20, "puts stay inside the prefilled key space");
    assert_eq!(revision, 1 + 20 + report.writes as i64);
    let versions: i64 = keys.iter().map(|(_, version)| version).sum();
    assert_eq!(versions, 20 + report.writes as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_run_completes_its_total_after_a_warmup() {
    let server = start_server().await;
    let report = bench(
        server.addr,
        &[
            "--workload",
            "put",
            "--clients",
            "2",
            "--rate",
            "1000",
            "--total",
            "40",
            "--warmup-s",
            "0.05",
            "--key-space",
            "1000000",
            "--sequential-keys",
            "--key-prefix",
            "r/",
        ],
    )
    .await
    .unwrap();
    assert_eq!(report.ops, 40);
    assert_eq!(report.rate_ops_per_s, Some(1000.0));
    assert_eq!(report.warmup_s, 0.05);
    let (keys, revision) = server_keys(server.addr, "r/").await;
    assert!(keys.len() >= 40, "measured puts plus any warmup puts");
    assert_eq!(revision, 1 + keys.len() as i64, "one put per key");
    assert!(
        keys.iter().all(|(_, version)| *version == 1),
        "sequential keys never repeat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_a_closed_port_fails_naming_the_endpoint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    match bench(addr, &["--total", "5"]).await {
        Err(BenchError::Connect { endpoint, message }) => {
            assert_eq!(endpoint, format!("http://{addr}"));
            assert!(!message.is_empty());
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_where_every_operation_fails_returns_the_first_error() {
    // A server without the KV service: every Put is answered `Unimplemented`.
    let backend = Arc::new(LocalBackend::new(KvStore::new(), LocalConfig::default()));
    let api = EtcdApi::new(backend, ServiceConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LeaseServer::new(api))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    let result = bench(addr, &["--clients", "2", "--total", "6"]).await;
    drop(shutdown);
    match result {
        Err(BenchError::AllFailed {
            errors,
            first_error,
        }) => {
            assert_eq!(errors, 6);
            assert!(first_error.contains("Unimplemented"), "{first_error}");
            let shown = BenchError::AllFailed {
                errors,
                first_error,
            }
            .to_string();
            assert!(shown.starts_with("all 6 operations failed"), "{shown}");
        }
        other => panic!("expected every operation to fail, got {other:?}"),
    }
}

/// A KV service whose first put stalls for `STALL` before answering; every later put answers
/// at once. Everything else is unimplemented.
struct StallingKv {
    puts: std::sync::atomic::AtomicU64,
}

const STALL: Duration = Duration::from_millis(300);

#[tonic::async_trait]
impl kv_server::Kv for StallingKv {
    async fn range(
        &self,
        _: tonic::Request<RangeRequest>,
    ) -> Result<tonic::Response<RangeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("range"))
    }
    async fn put(
        &self,
        _: tonic::Request<PutRequest>,
    ) -> Result<tonic::Response<PutResponse>, tonic::Status> {
        if self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(STALL).await;
        }
        Ok(tonic::Response::new(PutResponse::default()))
    }
    async fn delete_range(
        &self,
        _: tonic::Request<DeleteRangeRequest>,
    ) -> Result<tonic::Response<DeleteRangeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("delete_range"))
    }
    async fn txn(
        &self,
        _: tonic::Request<TxnRequest>,
    ) -> Result<tonic::Response<TxnResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("txn"))
    }
    async fn compact(
        &self,
        _: tonic::Request<CompactionRequest>,
    ) -> Result<tonic::Response<CompactionResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("compact"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_latency_counts_the_wait_behind_a_stalled_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(kv_server::KvServer::new(StallingKv {
                puts: Default::default(),
            }))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    // One client at 1000 ops/s: the 20 operations are due within the first 20 ms, but the
    // first answer takes at least STALL, so every later operation is sent late. Measured from
    // its due time, each one waited at least STALL minus 20 ms; measured from its send time
    // (coordinated omission) all but the first would look instant.
    let report = bench(
        addr,
        &["--workload", "put", "--rate", "1000", "--total", "20"],
    )
    .await
    .unwrap();
    drop(shutdown);
    assert_eq!(report.ops, 20);
    let floor_us = (STALL - Duration::from_millis(20)).as_micros() as u64;
    assert!(
        report.latency_us_p50 >= floor_us,
        "p50 {} µs should include the wait behind the stalled request (≥ {floor_us} µs)",
        report.latency_us_p50
    );
}
