//! Kafka's own clients against a three-node cluster's Kafka listeners: kcat (librdkafka's
//! command line), kafka-python and confluent-kafka. Skipped when they are not installed,
//! unless `ORDO_REQUIRE_KCAT=1` / `ORDO_REQUIRE_PYTHON=1`.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestCluster, STEP};
use ordo_launch::tools::{kcat_or_skip, python_with_or_skip};

/// `id=host:port` of every node's Kafka listener, as Metadata must list them.
fn expected_brokers(cluster: &TestCluster) -> Vec<(u64, String)> {
    cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.spec(id).kafka_addr.to_string()))
        .collect()
}

/// What `kcat -L -J` prints for one node.
fn kcat_json(kcat: &Path, bootstrap: &str) -> Result<serde_json::Value, String> {
    let out = Command::new(kcat)
        .args(["-L", "-J", "-m", "5", "-b", bootstrap])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run kcat: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kcat failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "kcat printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `kcat -L -J` against a node of a cluster without topics: its brokers (id, `host:port`)
/// and controller.
fn kcat_metadata(kcat: &Path, bootstrap: &str) -> Result<(Vec<(u64, String)>, i64), String> {
    let json = kcat_json(kcat, bootstrap)?;
    let mut brokers: Vec<(u64, String)> = json["brokers"]
        .as_array()
        .ok_or("no brokers in kcat's output")?
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().unwrap_or(0),
                b["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    brokers.sort();
    if json["topics"].as_array().is_none_or(|t| !t.is_empty()) {
        return Err(format!("topics listed: {}", json["topics"]));
    }
    Ok((brokers, json["controllerid"].as_i64().unwrap_or(-1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_every_broker_and_the_controller_from_any_node() {
    let Some(kcat) = kcat_or_skip() else {
        return;
    };
    let (mut cluster, _) = common::start(&[]).await;
    let want = expected_brokers(&cluster);
    for id in cluster.ids() {
        let bootstrap = cluster.spec(id).kafka_addr.to_string();
        // A node lists a peer once that peer's handshake has told it the peer's Kafka
        // address; the peers connect as the cluster starts.
        let deadline = Instant::now() + STEP;
        let (brokers, controller) = loop {
            let got = tokio::task::block_in_place(|| kcat_metadata(&kcat, &bootstrap));
            match got {
                Ok((brokers, controller)) if brokers == want && controller > 0 => {
                    break (brokers, controller)
                }
                other if Instant::now() > deadline => {
                    panic!("node {id}: {other:?}, want brokers {want:?} and a controller")
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        assert_eq!(brokers, want);
        assert!(cluster.ids().contains(&(controller as u64)), "{controller}");
    }
    cluster.stop_cleanly(&cluster.ids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_and_confluent_kafka_read_the_cluster_metadata() {
    let Some(python) = python_with_or_skip(&["kafka", "confluent_kafka"]) else {
        return;
    };
    let (mut cluster, _) = common::start(&[]).await;
    let want = expected_brokers(&cluster)
        .into_iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",");
    let bootstrap = cluster.kafka_endpoints().join(",");
    // The script's clients may ask a node before every peer has connected to it: retried
    // until STEP passes.
    let deadline = Instant::now() + STEP;
    while let Err(failed) =
        common::python_script(&python, "kafka_metadata.py", &[&bootstrap, &want])
    {
        assert!(
            Instant::now() < deadline,
            "Kafka clients' metadata: {failed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.stop_cleanly(&cluster.ids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_kafka_port_closes_the_connection_and_the_node_serves_on() {
    let (mut cluster, _) = common::start(&[]).await;
    let addr = cluster.spec(1).kafka_addr;
    let cases: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        // Metadata v0 claiming 54,265,856 topics in 5 bytes.
        &[0, 0, 0, 9, 0, 3, 0, 0, 3, 0x3c, 0x0c, 0, 0xb6],
        // An unknown API key.
        &[0, 0, 0, 10, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 0xff, 0xff],
        // A request claiming 2 GiB.
        &[0x7f, 0xff, 0xff, 0xff, 0, 0],
    ];
    for bytes in cases {
        let closed = tokio::task::block_in_place(|| {
            let mut stream = TcpStream::connect(addr).expect("connect");
            stream.set_read_timeout(Some(STEP)).expect("read timeout");
            stream.write_all(bytes).expect("write");
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).map(|_| answer)
        });
        // Closed unanswered: an end of stream, or a reset when bytes were left unread.
        match closed {
            Ok(answer) => assert_eq!(answer, Vec::<u8>::new(), "{bytes:?}"),
            Err(error) => assert_eq!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset,
                "{bytes:?}: {error}"
            ),
        }
    }
    // Still serving: an ApiVersions v0 request is answered.
    let answer = tokio::task::block_in_place(|| {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 42, 0xff, 0xff])
            .expect("write");
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).expect("answered");
        head
    });
    // Size, then the correlation id.
    assert_eq!(&answer[4..], &[0, 0, 0, 42]);
    let metrics = ordo_launch::http::get(cluster.spec(1).admin_addr, "/metrics", STEP)
        .await
        .expect("metrics");
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l == format!("ordo_kafka_requests_refused_total {}", cases.len())),
        "{}",
        metrics.body
    );
    cluster.stop_cleanly(&cluster.ids());
}

/// Topic names and partition counts as `kcat -L -J` lists them.
fn kcat_topics(kcat: &Path, bootstrap: &str) -> Result<Vec<(String, usize)>, String> {
    let json = kcat_json(kcat, bootstrap)?;
    let mut topics: Vec<(String, usize)> = json["topics"]
        .as_array()
        .ok_or("no topics in kcat's output")?
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap_or("").to_string(),
                t["partitions"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    topics.sort();
    Ok(topics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_created_and_deleted_by_kafka_clients_are_replicated_and_survive_a_restart() {
    let Some(python) = python_with_or_skip(&["kafka", "confluent_kafka"]) else {
        return;
    };
    let Some(kcat) = kcat_or_skip() else {
        return;
    };
    let (mut cluster, _) = common::start(&[]).await;
    let (a, b) = (
        cluster.spec(1).kafka_addr.to_string(),
        cluster.spec(2).kafka_addr.to_string(),
    );
    if let Err(failed) = common::python_script(&python, "kafka_topics.py", &[&a, &b]) {
        panic!("Kafka clients' topics: {failed}");
    }
    let want = vec![("events".to_string(), 4), ("orders".to_string(), 3)];
    // Every node's copy of the metadata group holds them once it has applied the entries.
    for addr in cluster.kafka_endpoints() {
        wait_for_topics(&kcat, &addr, &want).await;
    }
    let ids = cluster.ids();
    cluster.stop_cleanly(&ids);
    cluster.start_all().expect("restart");
    cluster.wait_leader(&[], STEP).await.expect("a leader");
    for addr in cluster.kafka_endpoints() {
        wait_for_topics(&kcat, &addr, &want).await;
    }
    cluster.stop_cleanly(&cluster.ids());
}

/// Waits until kcat lists `want` on the node at `addr`, for at most `STEP`.
async fn wait_for_topics(kcat: &Path, addr: &str, want: &[(String, usize)]) {
    let deadline = Instant::now() + STEP;
    loop {
        let got = tokio::task::block_in_place(|| kcat_topics(kcat, addr));
        if got.as_deref() == Ok(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{addr}: {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `ordo topic ARGS --bootstrap BOOTSTRAP`: exit code, stdout, stderr.
fn ordo_topic(bootstrap: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .arg("topic")
        .args(args)
        .args(["--bootstrap", bootstrap])
        .stdin(Stdio::null())
        .output()
        .expect("run ordo topic");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_topic_creates_lists_describes_alters_and_deletes_and_names_kafkas_errors() {
    let (mut cluster, _) = common::start(&[]).await;
    let one = cluster.spec(1).kafka_addr.to_string();
    let two = cluster.spec(2).kafka_addr.to_string();
    let run = |bootstrap: &str, args: &[&str]| {
        tokio::task::block_in_place(|| ordo_topic(bootstrap, args))
    };
    let (code, out, err) = run(
        &one,
        &[
            "create",
            "orders",
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "retention.ms=60000",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("created topic orders (3 partitions, 3 replicas each"),
        "{out}"
    );

    let refused = [
        (vec!["create", "orders"], "TOPIC_ALREADY_EXISTS"),
        (
            vec!["create", "big", "--replication-factor", "4"],
            "INVALID_REPLICATION_FACTOR",
        ),
        (
            vec![
                "create",
                "unclean",
                "--config",
                "unclean.leader.election.enable=true",
            ],
            "INVALID_CONFIG",
        ),
        (vec!["create", "x", "--config", "no-equals"], "NAME=VALUE"),
        (vec!["delete", "nope"], "UNKNOWN_TOPIC_OR_PARTITION"),
    ];
    for (args, needle) in refused {
        let (code, _, err) = run(&one, &args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: expected {needle} in {err}");
    }

    // Another node has the topic once its copy of the metadata group applied it.
    let deadline = Instant::now() + STEP;
    loop {
        let (code, out, _) = run(&two, &["list"]);
        if code == Some(0) && out == "orders\n" {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 lists {out:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = run(&two, &["describe", "orders"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.matches("  partition ").count(), 3, "{out}");

    assert!(out.contains("  config retention.ms=60000\n"), "{out}");
    assert!(
        out.contains("  config min.insync.replicas=1 (default)\n"),
        "{out}"
    );
    let (code, out, err) = run(
        &two,
        &[
            "alter",
            "orders",
            "--config",
            "min.insync.replicas=2",
            "--delete-config",
            "retention.ms",
        ],
    );
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "altered topic orders\n"),
        "{err}"
    );
    let (code, out, err) = run(&one, &["alter", "orders", "--partitions", "5"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "topic orders has 5 partitions\n"),
        "{err}"
    );
    let (code, _, err) = run(&one, &["alter", "orders", "--partitions", "4"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("INVALID_PARTITIONS"), "{err}");
    let (code, _, err) = run(
        &one,
        &["alter", "orders", "--config", "min.insync.replicas=5"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("INVALID_CONFIG"), "{err}");
    // Node 1 shows node 2's change once it has applied it.
    let deadline = Instant::now() + STEP;
    loop {
        let (_, out, _) = run(&one, &["describe", "orders"]);
        if out.contains("  config min.insync.replicas=2\n")
            && out.contains("  config retention.ms=604800000 (default)\n")
            && out.contains("partitions 5\n")
        {
            break;
        }
        assert!(Instant::now() < deadline, "node 1 describes {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (code, out, err) = run(&two, &["delete", "orders"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "deleted topic orders\n"),
        "{err}"
    );
    let (code, _, err) = run(&two, &["describe", "orders"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");

    let closed = ordo_launch::free_ports(1).expect("a port")[0].to_string();
    let (code, _, err) = run(&closed, &["list"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no node answered on its Kafka port"), "{err}");
    cluster.stop_cleanly(&cluster.ids());
}

/// `kcat -L -J -t TOPIC` on one node: each partition's leader (-1 for none), in order.
fn kcat_leaders(kcat: &Path, bootstrap: &str, topic: &str) -> Result<Vec<i64>, String> {
    let out = Command::new(kcat)
        .args(["-L", "-J", "-m", "5", "-b", bootstrap, "-t", topic])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run kcat: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("kcat printed no JSON: {e}"))?;
    let partitions = json["topics"][0]["partitions"]
        .as_array()
        .ok_or_else(|| format!("no partitions in {json}"))?;
    Ok(partitions
        .iter()
        .map(|p| p["leader"].as_i64().unwrap_or(-1))
        .collect())
}

/// The partition groups (ids from 2^62) `/groups` lists on node `id`.
async fn partition_groups(cluster: &TestCluster, id: u64) -> Vec<u64> {
    let body = ordo_launch::http::get(cluster.spec(id).admin_addr, "/groups", STEP)
        .await
        .expect("/groups")
        .body;
    let report: ordo_server::admin::GroupsReport = serde_json::from_str(&body).expect("JSON");
    report
        .groups
        .iter()
        .map(|g| g.id)
        .filter(|&g| g >= ordo_server::partitions::PARTITION_GROUP_MIN)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_run_on_their_replicas_with_leaders_spread_and_go_with_their_topic() {
    let Some(kcat) = kcat_or_skip() else {
        return;
    };
    let (mut cluster, _) = common::start(&[]).await;
    let one = cluster.spec(1).kafka_addr.to_string();
    let run = |args: &[&str]| tokio::task::block_in_place(|| ordo_topic(&one, args));
    let (code, _, err) = run(&[
        "create",
        "orders",
        "--partitions",
        "6",
        "--replication-factor",
        "3",
    ]);
    assert_eq!(code, Some(0), "{err}");
    // Every node reports every partition's leader, each its preferred replica: every node
    // leads two of the six.
    let settled = |cluster: &TestCluster| {
        let kcat = kcat.clone();
        let addrs = cluster.kafka_endpoints();
        async move {
            let deadline = Instant::now() + STEP;
            loop {
                let mut views = Vec::new();
                for addr in &addrs {
                    views.push(tokio::task::block_in_place(|| {
                        kcat_leaders(&kcat, addr, "orders")
                    }));
                }
                let leaders = views[0].clone();
                if let Ok(leaders) = &leaders {
                    let mut per_node = [0; 4];
                    for &l in leaders {
                        if (1..=3).contains(&l) {
                            per_node[l as usize] += 1;
                        }
                    }
                    if leaders.len() == 6
                        && per_node[1..] == [2, 2, 2]
                        && views.iter().all(|v| v.as_ref() == Ok(leaders))
                    {
                        return;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "leaders as each node reports them: {views:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    settled(&cluster).await;
    for id in cluster.ids() {
        assert_eq!(partition_groups(&cluster, id).await.len(), 6, "node {id}");
    }
    // One replica each: every node reports the leaders of partitions it holds no replica
    // of, from the leaders' records in the metadata group.
    let (code, _, err) = run(&[
        "create",
        "solo",
        "--partitions",
        "3",
        "--replication-factor",
        "1",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let deadline = Instant::now() + STEP;
    loop {
        let views: Vec<_> = cluster
            .kafka_endpoints()
            .iter()
            .map(|addr| tokio::task::block_in_place(|| kcat_leaders(&kcat, addr, "solo")))
            .collect();
        let mut first = views[0].clone().unwrap_or_default();
        first.sort_unstable();
        if first == [1, 2, 3] && views.iter().all(|v| *v == views[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "solo's leaders as each node reports them: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A restart runs them again, on their state.
    let ids = cluster.ids();
    cluster.stop_cleanly(&ids);
    cluster.start_all().expect("restart");
    cluster.wait_leader(&[], STEP).await.expect("a leader");
    settled(&cluster).await;

    // Deleting the topics removes their partitions from every replica.
    for topic in ["orders", "solo"] {
        let (code, _, err) = run(&["delete", topic]);
        assert_eq!(code, Some(0), "{err}");
    }
    for id in cluster.ids() {
        let deadline = Instant::now() + STEP;
        while !partition_groups(&cluster, id).await.is_empty() {
            assert!(Instant::now() < deadline, "node {id} still runs partitions");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.stop_cleanly(&cluster.ids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_set_to_create_topics_creates_one_a_client_asks_for_and_ordo_topic_never_does() {
    let Some(kcat) = kcat_or_skip() else {
        return;
    };
    let (mut cluster, _) = common::start(&["--kafka-auto-create-topics"]).await;
    let one = cluster.spec(1).kafka_addr.to_string();
    // Describing is not creating.
    let (code, _, err) = tokio::task::block_in_place(|| ordo_topic(&one, &["describe", "nope"]));
    assert_eq!(code, Some(1));
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
    // librdkafka's metadata request for a topic allows its creation: the node creates it,
    // one partition, three replicas, and its partition gets a leader.
    let deadline = Instant::now() + STEP;
    loop {
        let leaders = tokio::task::block_in_place(|| kcat_leaders(&kcat, &one, "fresh"));
        if matches!(leaders.as_deref(), Ok([leader]) if (1..=3).contains(leader)) {
            break;
        }
        assert!(Instant::now() < deadline, "fresh: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, err) = tokio::task::block_in_place(|| ordo_topic(&one, &["list"]));
    assert_eq!((code, out.as_str()), (Some(0), "fresh\n"), "{err}");
    cluster.stop_cleanly(&cluster.ids());
}
