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
