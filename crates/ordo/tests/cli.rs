//! The `ordo` command line: bad flags are refused before anything starts, `status` and `kv`
//! talk to a live cluster, and the demo runs to its end.

mod common;

use std::process::{Command, Output, Stdio};

use common::start;

fn ordo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ordo")
}

#[test]
fn bad_flags_and_config_exit_with_code_2_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    let config = dir.path().join("ordo.toml");
    std::fs::write(&config, "id = 1\nelection_timeout = 5\n").expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let cases: &[(&[&str], &str)] = &[
        (&["server", "--data-dir", data], "--id is required"),
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--fsync",
                "maybe",
            ],
            "maybe",
        ),
        (
            &[
                "server",
                "--id",
                "4",
                "--data-dir",
                data,
                "--peers",
                "1=127.0.0.1:1,2=127.0.0.1:2",
            ],
            "must be listed",
        ),
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--peers",
                "1=localhost",
            ],
            "localhost",
        ),
        (
            &["server", "--config", config, "--data-dir", data],
            "election_timeout",
        ),
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--election-timeout-ticks",
                "1",
                "--heartbeat-interval-ticks",
                "1",
            ],
            "election_timeout_ticks",
        ),
        (&["server", "--id", "x"], "invalid value"),
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--kafka-addr",
                "0.0.0.0:9092",
            ],
            "give --kafka-advertised-addr HOST:PORT",
        ),
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--kafka-advertised-addr",
                "broker-1:9092",
            ],
            "needs --kafka-addr",
        ),
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--kafka-addr",
                "127.0.0.1:9092",
                "--kafka-advertised-addr",
                "broker-1",
            ],
            "is not host:port",
        ),
        (
            &[
                "server",
                "--id",
                "4294967296",
                "--data-dir",
                data,
                "--peers",
                "4294967296=127.0.0.1:2380",
                "--kafka-addr",
                "127.0.0.1:9092",
            ],
            "is not a Kafka broker id",
        ),
        // Members learn each other's client URLs over the peer transport.
        (
            &[
                "server",
                "--id",
                "1",
                "--data-dir",
                data,
                "--peer-client-addrs",
                "1=127.0.0.1:2379",
            ],
            "unexpected argument '--peer-client-addrs'",
        ),
        // The checker is a binary of its own (`ordo-check`), not linked into this one.
        (
            &["check", "--nodes", "3"],
            "unrecognized subcommand 'check'",
        ),
    ];
    for (args, needle) in cases {
        let out = ordo(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in {stderr}"
        );
    }
    assert!(
        !std::path::Path::new(data).exists(),
        "a refused configuration created the data directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_groups_print_every_node_kv_puts_gets_and_deletes_and_sigterm_stops_cleanly() {
    let (mut cluster, leader) = start(&[]).await;
    let admins = cluster.endpoints(|s| s.admin_addr);
    let out = ordo(&["status", "--endpoints", &admins]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_eq!(table.matches(" leader ").count(), 1, "{table}");
    assert!(table.contains(&format!(" {} ", leader.id)));

    // Every node hosts the metadata group (0) and the KV group (1), all three voting.
    let out = ordo(&["groups", "--endpoints", &admins]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 6, "{table}");
    for (i, row) in rows.iter().enumerate() {
        let group = if i % 2 == 0 { "0" } else { "1" };
        assert_eq!((row[2], row[8], row[9]), (group, "1,2,3", "-"), "{table}");
    }

    let clients = cluster.endpoints(|s| s.client_addr);
    let kv = |args: &[&str]| {
        let mut all = vec!["kv", "--endpoints", &clients];
        all.extend_from_slice(args);
        let out = ordo(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(kv(&["put", "city/oslo", "cold"]), "OK\n");
    assert_eq!(kv(&["put", "city/rome", "warm"]), "OK\n");
    assert_eq!(
        kv(&["get", "--prefix", "city/"]),
        "city/oslo\ncold\ncity/rome\nwarm\n"
    );
    assert_eq!(
        kv(&["watch", "--prefix", "city/", "--rev", "1", "--count", "2"]),
        "PUT\ncity/oslo\ncold\nPUT\ncity/rome\nwarm\n"
    );
    assert_eq!(kv(&["del", "--prefix", "city/"]), "2\n");
    assert_eq!(kv(&["get", "--prefix", "city/"]), "");

    let health = ordo_launch::http::get(
        cluster.spec(leader.id).admin_addr,
        "/health",
        std::time::Duration::from_secs(2),
    )
    .await
    .expect("health");
    assert_eq!(health.status, 200);
    let metrics = ordo_launch::http::get(
        cluster.spec(leader.id).admin_addr,
        "/metrics",
        std::time::Duration::from_secs(2),
    )
    .await
    .expect("metrics");
    for name in [
        "ordo_raft_term ",
        "ordo_proposals_total ",
        "ordo_wal_fsync_seconds_count ",
        "ordo_peer_round_trip_seconds_bucket",
    ] {
        assert!(metrics.body.contains(name), "{name} missing from /metrics");
    }
    cluster.stop_cleanly(&cluster.ids());
}

#[test]
fn demo_tells_the_story_and_exits_0_leaving_nothing_running_in_plain_text_and_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, flags) in [("demo", &[][..]), ("demo-tls", &["--tls"][..])] {
        let data = dir.path().join(name);
        let mut args = vec!["demo", "--data-dir", data.to_str().expect("utf-8 path")];
        args.extend_from_slice(flags);
        let out = ordo(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{stdout}");
        assert!(
            out.status.success(),
            "demo {flags:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("rejected for insufficient funds"),
            "{stdout}"
        );
        assert!(stdout.contains("writes resumed"), "{stdout}");
        assert!(stdout.contains("ledger matches"), "{stdout}");
        assert_eq!(
            stdout.contains("The etcd API and admin endpoints speak TLS"),
            !flags.is_empty(),
            "{stdout}"
        );
        // No process started by the demo is left: none has the demo's directory in its
        // command line.
        let needle = data.to_string_lossy().into_owned();
        let mut running = Vec::new();
        for entry in std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(Result::ok)
        {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                if String::from_utf8_lossy(&cmdline).contains(&needle) {
                    running.push(entry.file_name());
                }
            }
        }
        assert!(
            running.is_empty(),
            "demo processes still running: {running:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_runs_from_a_config_file_alone_as_a_single_node_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = ordo_launch::free_ports(3).expect("ports");
    let config = dir.path().join("ordo.toml");
    let text = format!(
        "id = 1\ndata_dir = {:?}\nclient_addr = \"{}\"\npeer_addr = \"{}\"\nadmin_addr = \"{}\"\n\
         tick_interval_ms = 25\nelection_timeout_ticks = 10\nfsync = \"interval\"\nfsync_interval_ms = 5\n",
        dir.path().join("data").display().to_string(),
        ports[0],
        ports[1],
        ports[2]
    );
    std::fs::write(&config, text).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(["server", "--config", config.to_str().expect("utf-8 path")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let deadline = std::time::Instant::now() + common::STEP;
    let status = loop {
        let answer =
            ordo_launch::http::get(ports[2], "/status", std::time::Duration::from_secs(1)).await;
        if let Ok(answer) = answer {
            let status: ordo_server::admin::StatusReport =
                serde_json::from_str(&answer.body).expect("json");
            if status.role == "leader" {
                break status;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the single node never led"
        );
        tokio::time::sleep(ordo_launch::cluster::POLL_INTERVAL).await;
    };
    assert_eq!((status.id, status.voters.clone()), (1, vec![1]));
    let out = ordo(&[
        "kv",
        "--endpoints",
        &ports[0].to_string(),
        "put",
        "solo",
        "yes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ordo(&["kv", "--endpoints", &ports[0].to_string(), "get", "solo"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "solo\nyes\n");
    drop(guard);
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[test]
fn a_server_told_to_exit_with_its_starter_exits_when_the_starter_is_killed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = ordo_launch::free_ports(3).expect("ports");
    // A starter that cannot clean up: a shell that starts the server in the background,
    // says its pid, and waits; it is then killed with SIGKILL.
    let script = format!(
        "ORDO_EXIT_WITH_PARENT=$$ \"$ORDO\" server --id 1 --data-dir {} --client-addr {} \
         --peer-addr {} --admin-addr {} >/dev/null 2>&1 & echo $!; wait",
        dir.path().join("data").display(),
        ports[0],
        ports[1],
        ports[2]
    );
    let mut starter = Command::new("sh")
        .args(["-c", &script])
        .env("ORDO", env!("CARGO_BIN_EXE_ordo"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the shell");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(starter.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the server's pid");
    let server: u32 = line.trim().parse().expect("a pid");
    // Up and serving: its admin port answers.
    let deadline = std::time::Instant::now() + common::STEP;
    while std::net::TcpStream::connect(ports[2]).is_err() {
        assert!(!process_ended(server), "the server exited before it served");
        assert!(
            std::time::Instant::now() < deadline,
            "the server never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    starter.kill().expect("SIGKILL the starter");
    starter.wait().expect("reap the starter");
    let deadline = std::time::Instant::now() + common::STEP;
    while !process_ended(server) {
        if std::time::Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-9", &server.to_string()])
                .status();
            panic!("the server outlived its starter by {:?}", common::STEP);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn cert_writes_a_ca_and_certificates_a_tls_server_starts_with_and_never_overwrites_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    let certs_arg = certs.to_str().expect("utf-8 path");
    let out = ordo(&[
        "cert",
        "--dir",
        certs_arg,
        "--nodes",
        "2",
        "--clients",
        "root,alice",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["ca", "node-1", "node-2", "client-root", "client-alice"] {
        let cert = std::fs::read_to_string(certs.join(format!("{name}.pem"))).expect("cert");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{name}");
        let key = certs.join(format!("{name}-key.pem"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).expect("key").permissions(),
        );
        assert_eq!(
            mode & 0o077,
            0,
            "{name}'s key is readable by its owner only"
        );
    }
    // The node certificates are what a TLS listener accepts.
    ordo_server::tls::TlsAcceptor::new(ordo_server::tls::TlsFiles {
        cert_file: certs.join("node-1.pem"),
        key_file: certs.join("node-1-key.pem"),
        trusted_ca_file: Some(certs.join("ca.pem")),
        client_cert_auth: true,
    })
    .expect("a usable TLS configuration");

    let before = std::fs::read(certs.join("ca.pem")).expect("ca");
    let again = ordo(&["cert", "--dir", certs_arg]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("ca.pem"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read(certs.join("ca.pem")).expect("ca"), before);

    let bad = ordo(&["cert", "--dir", certs_arg, "--clients", "../x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("../x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_speaks_tls_with_a_client_certificate_to_a_cluster_started_with_ordo_cert_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = common::DevCerts::write(dir.path().join("certs"), &[]);
    let file = |name: &str| certs.file(name);
    let (node_cert, node_key, ca) = (
        file("node-{id}.pem"),
        file("node-{id}-key.pem"),
        file("ca.pem"),
    );
    let mut cluster = common::plan(&[
        "--cert-file",
        &node_cert,
        "--key-file",
        &node_key,
        "--trusted-ca-file",
        &ca,
        "--client-cert-auth",
    ]);
    cluster.start_all().expect("start the servers");
    cluster
        .wait_leader(&[], common::STEP)
        .await
        .expect("a leader");
    let clients = cluster.endpoints(|s| s.client_addr);
    let (client_cert, client_key) = (file("client-root.pem"), file("client-root-key.pem"));
    let kv = |tls: &[&str], op: &[&str]| {
        let mut all = vec!["kv", "--endpoints", &clients];
        all.extend_from_slice(tls);
        all.extend_from_slice(op);
        tokio::task::block_in_place(|| ordo(&all))
    };
    let identity = [
        "--cacert",
        &ca,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
    ];
    let put = kv(&identity, &["put", "greeting", "hello"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = kv(&identity, &["get", "greeting"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout), "greeting\nhello\n");

    let anonymous = kv(&["--cacert", &ca], &["get", "greeting"]);
    // Refused: the client hears the server's alert (CertificateRequired), or a closed
    // connection when its request was on the way before the alert came.
    assert!(
        !anonymous.status.success(),
        "a client without a certificate is refused"
    );
    let plain = kv(&[], &["get", "greeting"]);
    assert!(!plain.status.success(), "plain text to a TLS port fails");
    let half = kv(&["--cert", &client_cert], &["get", "greeting"]);
    assert!(String::from_utf8_lossy(&half.stderr).contains("--cacert"));
    cluster.stop_cleanly(&cluster.ids());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_peer_tls_refuses_a_node_with_a_certificate_of_another_ca_and_keeps_serving()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = common::DevCerts::write(dir.path().join("certs"), &["--nodes", "3"]);
    let other = common::DevCerts::write(dir.path().join("other"), &["--nodes", "4"]);
    // Node 4's certificate and key come from another CA; it trusts the cluster's CA.
    for name in ["node-4.pem", "node-4-key.pem"] {
        std::fs::copy(other.file(name), certs.file(name)).expect("copy");
    }
    let file = |name: &str| certs.file(name);
    let (cert, key, ca) = (
        file("node-{id}.pem"),
        file("node-{id}-key.pem"),
        file("ca.pem"),
    );
    let mut cluster = common::plan(&[
        "--peer-cert-file",
        &cert,
        "--peer-key-file",
        &key,
        "--peer-trusted-ca-file",
        &ca,
    ]);
    cluster.start_all().expect("start the servers");
    // A leader means the nodes' votes and entries flowed over mutual TLS.
    let leader = cluster
        .wait_leader(&[], common::STEP)
        .await
        .expect("a leader");
    common::put(&cluster, &[leader.id], "before", "1").await;

    let planned = cluster.plan_node().expect("ports");
    cluster.add_node(4, planned);
    cluster.start(4).expect("start node 4");
    for id in 1..=3 {
        assert!(
            common::wait_for_log(&cluster.log_path(id), "certificate is not accepted").await,
            "node {id} did not log refusing node 4: {}",
            cluster.log_tail(id, 20)
        );
    }
    assert!(
        common::wait_for_log(&cluster.log_path(4), "TLS handshake failed").await,
        "node 4 did not log its refusal: {}",
        cluster.log_tail(4, 20)
    );
    common::put(&cluster, &[1, 2, 3], "after", "2").await;
    for id in 1..=3 {
        let got = common::get(&cluster, id, "after", false)
            .await
            .expect("read");
        assert_eq!(got.as_deref(), Some("2"), "node {id}");
        let status = cluster.status(id).await.expect("status");
        assert!((1..=3).contains(&status.leader), "node {id}: {status:?}");
    }
    cluster.kill(4);
    cluster.stop_cleanly(&[1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_over_tls_answer_ordo_status_with_a_client_certificate_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = common::DevCerts::write(dir.path().join("certs"), &[]);
    let file = |name: &str| certs.file(name);
    let (cert, key, ca) = (
        file("node-{id}.pem"),
        file("node-{id}-key.pem"),
        file("ca.pem"),
    );
    let mut cluster = common::plan(&[
        "--admin-cert-file",
        &cert,
        "--admin-key-file",
        &key,
        "--admin-trusted-ca-file",
        &ca,
        "--admin-client-cert-auth",
    ]);
    let (client_cert, client_key) = (file("client-root.pem"), file("client-root-key.pem"));
    let config = ordo_node::tls::client_config(
        std::path::Path::new(&ca),
        Some((
            std::path::Path::new(&client_cert),
            std::path::Path::new(&client_key),
        )),
        &[b"http/1.1"],
    )
    .expect("client TLS configuration");
    cluster.set_admin_tls(std::sync::Arc::new(config));
    cluster.start_all().expect("start the servers");
    // The cluster's own status reads go over TLS with the client certificate.
    let leader = cluster
        .wait_leader(&[], common::STEP)
        .await
        .expect("a leader");
    let admin = cluster.endpoints(|s| s.admin_addr);
    let status = |tls: &[&str]| {
        let mut all = vec!["status", "--endpoints", &admin];
        all.extend_from_slice(tls);
        tokio::task::block_in_place(|| ordo(&all))
    };
    let out = status(&[
        "--cacert",
        &ca,
        "--cert",
        &client_cert,
        "--key",
        &client_key,
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("leader"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains("follower")).count(),
        2,
        "{table}"
    );
    // Without a certificate, or in plain text, no node answers.
    for tls in [&["--cacert", ca.as_str()][..], &[]] {
        let out = status(tls);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{tls:?}: {text}");
        assert_eq!(text.matches("unreachable").count(), 3, "{tls:?}: {text}");
    }
    let groups = tokio::task::block_in_place(|| {
        ordo(&[
            "groups",
            "--endpoints",
            &admin,
            "--cacert",
            &ca,
            "--cert",
            &client_cert,
            "--key",
            &client_key,
        ])
    });
    assert!(
        groups.status.success(),
        "{}",
        String::from_utf8_lossy(&groups.stderr)
    );
    assert!(
        common::wait_for_log(&cluster.log_path(leader.id), "admin TLS connection refused").await,
        "{}",
        cluster.log_tail(leader.id, 20)
    );
    cluster.stop_cleanly(&cluster.ids());
}
