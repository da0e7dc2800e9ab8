//! The admin endpoints of a server running in this process.

use std::time::Duration;

use ordo_node::NodeConfig;
use ordo_server::admin::{GroupsReport, StatusReport};
use ordo_server::meta::META_GROUP;
use ordo_server::{ServerConfig, KV_GROUP};

/// A hang guard for awaits: generous, never a timing assertion.
const GUARD: Duration = Duration::from_secs(30);

/// A one-node cluster's configuration with short ticks, in `dir`.
fn single_node(dir: &std::path::Path) -> ServerConfig {
    let [client_addr, admin_addr, peer_addr] =
        ordo_launch::free_ports(3).unwrap().try_into().unwrap();
    let mut node = NodeConfig::new(1, dir.join("node-1"), peer_addr, [(1, peer_addr)].into());
    node.tick_interval_ms = 10;
    node.election_timeout_ticks = 20;
    node.heartbeat_interval_ticks = 2;
    ServerConfig {
        node,
        client_addr,
        admin_addr,
        client_tls: None,
        etcd: ordo_kv::ServiceConfig::default(),
        kafka: None,
        admin_tls: None,
    }
}

async fn get(addr: std::net::SocketAddr, path: &str) -> ordo_launch::http::HttpResponse {
    ordo_launch::http::get(addr, path, Duration::from_secs(5))
        .await
        .unwrap()
}

/// A server running in this process until the sender is used or dropped.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), ordo_server::ServerError>>,
}

fn start(config: ServerConfig) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ordo_server::run(config, async {
        let _ = stopped.await;
    }));
    Running { stop, server }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        let served = tokio::time::timeout(GUARD, self.server)
            .await
            .unwrap()
            .unwrap();
        assert!(served.is_ok(), "{served:?}");
    }
}

/// `/groups` once every group there has a leader.
async fn groups_led(admin: std::net::SocketAddr) -> GroupsReport {
    tokio::time::timeout(GUARD, async {
        loop {
            if let Ok(r) = ordo_launch::http::get(admin, "/groups", Duration::from_secs(5)).await {
                assert_eq!(r.status, 200, "{}", r.body);
                let report: GroupsReport = serde_json::from_str(&r.body).unwrap();
                if report.groups.len() == 2 && report.groups.iter().all(|g| g.role == "leader") {
                    return report;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("both groups elect this node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_lists_the_metadata_and_kv_groups_with_their_roles_and_members() {
    let dir = tempfile::tempdir().unwrap();
    let config = single_node(dir.path());
    let admin = config.admin_addr;
    let running = start(config.clone());
    let report = groups_led(admin).await;
    assert_eq!(report.id, 1);
    let ids: Vec<u64> = report.groups.iter().map(|g| g.id).collect();
    assert_eq!(ids, vec![META_GROUP.0, KV_GROUP.0]);
    for g in &report.groups {
        assert_eq!((g.leader, g.voters.clone()), (1, vec![1]), "{g:?}");
        assert!(g.learners.is_empty() && g.failure.is_none(), "{g:?}");
        assert!(g.term >= 2 && g.commit_index >= g.applied_index, "{g:?}");
    }

    // The KV group's own endpoint is as it was.
    let status = get(admin, "/status").await;
    assert_eq!(status.status, 200);
    let status: StatusReport = serde_json::from_str(&status.body).unwrap();
    assert_eq!((status.id, status.voters), (1, vec![1]));
    // The peer transport's counters are among the metrics.
    let metrics = get(admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    for name in [
        "ordo_peer_frames_sent_total",
        "ordo_peer_silent_connections_total",
        "ordo_peer_refusal_lines_suppressed_total",
    ] {
        assert!(
            metrics
                .body
                .lines()
                .any(|l| l.starts_with(&format!("{name} "))),
            "no {name} in {}",
            metrics.body
        );
    }
    let missing = get(admin, "/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("/groups"), "{}", missing.body);

    running.stop().await;
    assert!(dir.path().join("node-1/log/groups/0").is_dir());

    // Restarted on its directory, the node runs both groups from their state again.
    let running = start(config);
    let again = groups_led(admin).await;
    assert_eq!(again.groups.len(), 2);
    for (before, after) in report.groups.iter().zip(&again.groups) {
        assert_eq!((before.id, &before.voters), (after.id, &after.voters));
        assert!(after.term > before.term, "{after:?} after {before:?}");
    }
    running.stop().await;
}

/// Connects to `addr` from the loopback address `from` (all of 127/8 is this machine).
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    tokio::time::timeout(GUARD, socket.connect(addr))
        .await
        .unwrap()
        .unwrap()
}

/// Reads what the server sends until it closes the connection.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut got))
        .await
        .expect("the server closes the connection");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_of_one_client_cannot_starve_the_health_check() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let config = single_node(dir.path());
    let admin = config.admin_addr;
    let server = start(config);
    groups_led(admin).await;
    // More idle connections from one client than the server serves at once.
    let mut idle = Vec::new();
    for _ in 0..80 {
        idle.push(connect_from([127, 0, 0, 1], admin).await);
    }
    // Another client's health check is served while they are open.
    let mut check = connect_from([127, 0, 0, 2], admin).await;
    check
        .write_all(b"GET /health HTTP/1.1\r\nHost: ordo\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut check).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Those beyond the client's bound were closed as accepted, without an answer; the
    // others are answered 400 once they have not sent a request head in time.
    let (mut closed_silently, mut answered) = (0, 0);
    for mut stream in idle {
        let got = read_until_closed(&mut stream).await;
        if got.is_empty() {
            closed_silently += 1;
        } else {
            assert!(got.starts_with("HTTP/1.1 400"), "{got}");
            answered += 1;
        }
    }
    // At least the client's bound was let in; the rest unless slots freed meanwhile.
    assert!(
        answered >= 8 && closed_silently > 0,
        "{answered} answered, {closed_silently} closed"
    );
    server.stop().await;
}
