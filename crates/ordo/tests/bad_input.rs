//! Bad input against a live three-node cluster: each gets a clear error, changes nothing,
//! and the cluster keeps serving without losing an acknowledged write.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{get, keys_with_prefix, put, start, wait_for_log, STEP};
use ordo_kv::proto::etcdserverpb::PutRequest;

/// Kills a process this test started when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_value_is_refused_with_a_clear_error_and_changes_nothing() {
    let (cluster, leader) = start(&[]).await;
    put(&cluster, &[leader.id], "big", "small").await;
    for bytes in [(3 << 19) + 1, 3 << 20] {
        let request = PutRequest {
            key: b"big".to_vec(),
            value: vec![b'x'; bytes],
            ..Default::default()
        };
        let status = cluster
            .kv(leader.id)
            .put(request)
            .await
            .expect_err("an oversized put must be refused");
        let message = status.message().to_lowercase();
        assert!(
            message.contains("too large") || message.contains("larger than max"),
            "unclear error for {bytes} bytes: {status}"
        );
        for id in cluster.ids() {
            assert_eq!(
                get(&cluster, id, "big", false)
                    .await
                    .expect("read")
                    .as_deref(),
                Some("small")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_client_and_peer_ports_is_refused_and_the_cluster_keeps_serving() {
    let (cluster, leader) = start(&[]).await;
    put(&cluster, &cluster.ids(), "before", "garbage").await;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for id in cluster.ids() {
        let spec = cluster.spec(id).clone();
        // A malformed gRPC request: an HTTP/2 preface followed by noise, then plain noise.
        for payload in [
            [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(), &garbage].concat(),
            garbage.clone(),
        ] {
            for addr in [spec.client_addr, spec.peer_addr] {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                let _ = stream.write_all(&payload);
                // The server answers with an error or closes; either way it must not hang.
                let mut sink = [0u8; 1024];
                let _ = stream.read(&mut sink);
            }
        }
    }
    let leader_now = cluster.wait_leader(&[], STEP).await.expect("a leader");
    assert!(leader_now.term >= leader.term);
    put(&cluster, &cluster.ids(), "after", "garbage").await;
    for id in cluster.ids() {
        assert_eq!(
            get(&cluster, id, "before", false)
                .await
                .expect("read")
                .as_deref(),
            Some("garbage")
        );
        assert_eq!(
            get(&cluster, id, "after", false)
                .await
                .expect("read")
                .as_deref(),
            Some("garbage")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_cluster_id_is_refused() {
    let (cluster, _) = start(&["--cluster-id", "7"]).await;
    put(&cluster, &cluster.ids(), "k", "v").await;
    // An impostor claiming to be node 3 of another cluster dials nodes 1 and 2.
    let ports = ordo_launch::free_ports(3).expect("ports");
    let data = tempfile::tempdir().expect("temp dir");
    let peers = format!(
        "1={},2={},3={}",
        cluster.spec(1).peer_addr,
        cluster.spec(2).peer_addr,
        ports[1]
    );
    let mut impostor = Command::new(env!("CARGO_BIN_EXE_ordo"));
    impostor
        .args([
            "server",
            "--id",
            "3",
            "--cluster-id",
            "8",
            "--peers",
            &peers,
        ])
        .args(["--tick-interval-ms", "25", "--election-timeout-ticks", "10"])
        .arg("--data-dir")
        .arg(data.path().join("node"))
        .args([
            "--client-addr",
            &ports[0].to_string(),
            "--peer-addr",
            &ports[1].to_string(),
        ])
        .args(["--admin-addr", &ports[2].to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _impostor = ChildGuard(impostor.spawn().expect("start the impostor"));
    let refused = wait_for_log(&cluster.log_path(1), "cluster id mismatch").await
        || wait_for_log(&cluster.log_path(2), "cluster id mismatch").await;
    assert!(refused, "no node logged the refused handshake");
    put(&cluster, &[1, 2], "still", "serving").await;
    let impostor_status = ordo_launch::http::get(ports[2], "/status", Duration::from_secs(2))
        .await
        .expect("impostor status");
    let impostor_status: ordo_server::admin::StatusReport =
        serde_json::from_str(&impostor_status.body).expect("json");
    assert_eq!(impostor_status.leader, 0, "the impostor joined the cluster");
    assert_eq!(
        get(&cluster, 1, "k", false).await.expect("read").as_deref(),
        Some("v")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_with_a_corrupt_segment_refuses_to_start_naming_file_and_offset_and_nothing_is_lost(
) {
    let (mut cluster, leader) = start(&[]).await;
    let ids = cluster.ids();
    for i in 0..30 {
        put(&cluster, &ids, &format!("c/{i:03}"), &"v".repeat(64)).await;
    }
    let follower = ids
        .iter()
        .copied()
        .find(|&id| id != leader.id)
        .expect("a follower");
    let applied = cluster
        .status(leader.id)
        .await
        .expect("status")
        .applied_index;
    cluster
        .wait_applied(follower, applied, STEP)
        .await
        .expect("follower caught up");
    cluster.kill(follower);

    let group_dir = cluster.spec(follower).data_dir.join("log/journal");
    let segment = std::fs::read_dir(&group_dir)
        .expect("group dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    // An early record's payload: valid records follow it, so this is corruption inside the
    // committed prefix, not a torn tail.
    let at = 60.min(bytes.len() / 4);
    bytes[at] ^= 0xff;
    std::fs::write(&segment, &bytes).expect("write segment");

    cluster.start(follower).expect("spawn");
    let code = cluster
        .wait_exit(follower, STEP)
        .expect("the node must refuse to start");
    assert_ne!(code, Some(0));
    let log = std::fs::read_to_string(cluster.log_path(follower)).expect("log");
    let name = segment
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        log.contains(&name),
        "the error does not name the file:\n{log}"
    );
    assert!(
        log.contains("byte"),
        "the error does not give the offset:\n{log}"
    );
    if let Some(line) = log.lines().find(|l| l.contains(&name)) {
        println!("node {follower} refused to start: {line}");
    }

    let others: Vec<u64> = ids.iter().copied().filter(|&id| id != follower).collect();
    put(&cluster, &others, "c/after", "v").await;
    for &id in &others {
        assert_eq!(keys_with_prefix(&cluster, id, "c/").await.len(), 31);
    }
}
