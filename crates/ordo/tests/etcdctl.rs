//! etcd's own client, `etcdctl` 3.4, unchanged, against a three-node Ordo cluster.
//!
//! When `etcdctl` is not installed these tests print "skipped: etcdctl not installed" and pass,
//! unless `ORDO_REQUIRE_ETCDCTL=1`, in which case they fail.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{start, TestCluster, STEP};
use ordo_launch::tools::etcdctl_or_skip;

struct Ctl {
    bin: PathBuf,
    endpoints: String,
    /// Flags given to every command (TLS files, say).
    global: Vec<String>,
}

impl Ctl {
    fn new(bin: PathBuf, cluster: &TestCluster, nodes: &[u64]) -> Ctl {
        let endpoints = nodes
            .iter()
            .map(|&id| cluster.spec(id).client_addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        Ctl {
            bin,
            endpoints,
            global: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints))
            .args(["--dial-timeout=5s", "--command-timeout=10s"])
            .args(&self.global)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut cmd = self.command(args);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn etcdctl");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes()).expect("write stdin");
        }
        // etcdctl exits on its own: --command-timeout bounds every command used here.
        child.wait_with_output().expect("etcdctl output")
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    fn ok_with(&self, args: &[&str], input: Option<&str>) -> String {
        let out = self.run(args, input);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

/// Kills a long-running etcdctl (watch, keep-alive) when the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `etcdctl args` and returns its stdout lines as they come.
fn spawn_lines(ctl: &Ctl, args: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let mut child = ctl.command(args).spawn().expect("spawn etcdctl");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Running(child), rx)
}

fn next_lines(rx: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(STEP)
                .unwrap_or_else(|_| panic!("line {i} of {n} did not come"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_put_get_prefix_revision_del_and_txn_against_three_nodes() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let (cluster, _) = start(&[]).await;
    let ids = cluster.ids();
    let ctl = Ctl::new(bin.clone(), &cluster, &ids);
    assert_eq!(ctl.ok(&["put", "fruit/apple", "red"]).trim(), "OK");
    assert_eq!(ctl.ok(&["put", "fruit/banana", "yellow"]).trim(), "OK");
    let json = ctl.ok(&["put", "fruit/apple", "green", "-w", "json"]);
    let rev: i64 = json
        .split("\"revision\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .expect("revision in the put response");

    // Every node answers, each through its own endpoint.
    for &id in &ids {
        let one = Ctl::new(bin.clone(), &cluster, &[id]);
        assert_eq!(one.ok(&["get", "fruit/apple"]), "fruit/apple\ngreen\n");
        assert_eq!(
            one.ok(&["get", "--prefix", "fruit/"]),
            "fruit/apple\ngreen\nfruit/banana\nyellow\n"
        );
        assert_eq!(
            one.ok(&["get", "fruit/apple", &format!("--rev={}", rev - 1)]),
            "fruit/apple\nred\n"
        );
        assert_eq!(
            one.ok(&["get", "fruit/apple", "--consistency=s"])
                .lines()
                .count()
                % 2,
            0
        );
    }

    let txn =
        "value(\"fruit/apple\") = \"green\"\n\nput fruit/apple ripe\n\nput fruit/apple unripe\n\n";
    let out = ctl.ok_with(&["txn"], Some(txn));
    assert!(out.starts_with("SUCCESS"), "{out}");
    assert_eq!(
        ctl.ok(&["get", "fruit/apple", "--print-value-only"]).trim(),
        "ripe"
    );
    let out = ctl.ok_with(&["txn"], Some(txn));
    assert!(out.starts_with("FAILURE"), "{out}");
    assert_eq!(
        ctl.ok(&["get", "fruit/apple", "--print-value-only"]).trim(),
        "unripe"
    );

    assert_eq!(ctl.ok(&["del", "--prefix", "fruit/"]).trim(), "2");
    assert_eq!(ctl.ok(&["get", "--prefix", "fruit/"]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_on_one_node_sees_writes_made_through_another() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let (cluster, _) = start(&[]).await;
    let watcher = Ctl::new(bin.clone(), &cluster, &[1]);
    let writer = Ctl::new(bin, &cluster, &[3]);
    writer.ok(&["put", "w/seed", "0"]);
    // From revision 1 so the watch cannot miss writes made before it was registered.
    let (_watch, lines) = spawn_lines(&watcher, &["watch", "--prefix", "w/", "--rev=1"]);
    writer.ok(&["put", "w/a", "1"]);
    writer.ok(&["del", "w/a"]);
    let got = next_lines(&lines, 3 + 3 + 2);
    assert_eq!(
        got,
        ["PUT", "w/seed", "0", "PUT", "w/a", "1", "DELETE", "w/a"]
    );
}

/// The cluster is started as the README starts one: no node is told another's client
/// address. Every lease command goes to a follower, which asks the leader over the peer
/// transport (keep-alive, time to live) or proposes (grant, revoke).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_leases_through_a_follower_member_list_and_endpoint_status() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let (cluster, leader) = start(&[]).await;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader.id)
        .expect("a follower");
    let ctl = Ctl::new(bin.clone(), &cluster, &[follower]);
    let granted = ctl.ok(&["lease", "grant", "30"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert!(granted.contains("granted with TTL(30s)"), "{granted}");
    ctl.ok(&["put", "leased", "v", &format!("--lease={id}")]);
    let kept = ctl.ok(&["lease", "keep-alive", "--once", &id]);
    assert!(kept.contains("keepalived with TTL(30)"), "{kept}");
    let ttl = ctl.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(30s)") && ttl.contains("leased"),
        "{ttl}"
    );
    ctl.ok(&["lease", "revoke", &id]);
    assert_eq!(ctl.ok(&["get", "leased"]), "");

    // Every member's client URL, as each member advertised it to the follower when it
    // connected (a member whose first dial failed redials shortly).
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let members = ctl.ok(&["member", "list"]);
        assert_eq!(members.lines().count(), 3, "{members}");
        let all = cluster
            .ids()
            .iter()
            .all(|&id| members.contains(&cluster.spec(id).client_addr.to_string()));
        if all {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the follower never listed every client URL: {members}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let all = Ctl::new(bin, &cluster, &cluster.ids());
    let status = all.ok(&["endpoint", "status"]);
    assert_eq!(status.lines().count(), 3, "{status}");
    assert_eq!(
        status.matches(", true,").count(),
        1,
        "exactly one leader: {status}"
    );
    // etcdctl 3.4 prints health lines on stderr.
    let out = all.run(&["endpoint", "health"], None);
    let health =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{health}");
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_expires_through_the_log_on_every_node() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let (cluster, _) = start(&[]).await;
    let ctl = Ctl::new(bin.clone(), &cluster, &cluster.ids());
    let granted = ctl.ok(&["lease", "grant", "2"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ctl.ok(&["put", "ephemeral", "v", &format!("--lease={id}")]);
    // The leader's lessor proposes the expiry; every node deletes the key at one revision.
    for node in cluster.ids() {
        let one = Ctl::new(bin.clone(), &cluster, &[node]);
        let deadline = std::time::Instant::now() + STEP;
        while !one.ok(&["get", "ephemeral", "--consistency=s"]).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "node {node} kept the leased key"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// etcdctl's refusal of `args`: it fails, and its error names `expected`.
fn refused(ctl: &Ctl, args: &[&str], expected: &str) {
    let out = ctl.run(args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(expected),
        "etcdctl {args:?}: expected a refusal with {expected:?}, got: {stderr}{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_users_roles_and_permissions_once_auth_is_enabled() {
    let Some(bin) = etcdctl_or_skip() else {
        return;
    };
    let (cluster, _) = start(&["--bcrypt-cost", "4"]).await;
    let ctl = Ctl::new(bin, &cluster, &cluster.ids());
    let ok = |args: &[&str]| tokio::task::block_in_place(|| ctl.ok(args));

    assert!(ok(&["user", "add", "root:rootpw"]).contains("User root created"));
    assert!(
        ok(&["user", "grant-role", "root", "root"]).contains("Role root is granted to user root")
    );
    ok(&["role", "add", "reader"]);
    ok(&[
        "role",
        "grant-permission",
        "reader",
        "read",
        "/app/",
        "--prefix=true",
    ]);
    ok(&["role", "grant-permission", "reader", "readwrite", "/app/w"]);
    ok(&["user", "add", "alice:alicepw"]);
    ok(&["user", "grant-role", "alice", "reader"]);
    refused(
        &ctl,
        &["user", "add", "alice:again"],
        "etcdserver: user name already exists",
    );
    refused(
        &ctl,
        &["user", "grant-role", "alice", "nope"],
        "etcdserver: role name not found",
    );
    assert!(ok(&["auth", "enable"]).contains("Authentication Enabled"));

    let root = ["--user", "root:rootpw"];
    let alice = ["--user", "alice:alicepw"];
    let with = |who: &[&str], args: &[&str]| -> Vec<String> {
        who.iter().chain(args).map(|s| s.to_string()).collect()
    };
    let run_ok = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| ctl.ok(&args))
    };
    let run_refused = |args: Vec<String>, expected: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| refused(&ctl, &args, expected))
    };

    run_refused(
        with(&[], &["put", "/app/x", "1"]),
        "etcdserver: user name is empty",
    );
    run_ok(with(&root, &["put", "/app/x", "1"]));
    assert_eq!(run_ok(with(&alice, &["get", "/app/x"])), "/app/x\n1\n");
    assert_eq!(
        run_ok(with(&alice, &["get", "/app/", "--prefix"])),
        "/app/x\n1\n"
    );
    run_refused(
        with(&alice, &["put", "/app/x", "2"]),
        "etcdserver: permission denied",
    );
    run_refused(
        with(&alice, &["get", "/other"]),
        "etcdserver: permission denied",
    );
    run_refused(
        with(&alice, &["del", "/app/x"]),
        "etcdserver: permission denied",
    );
    run_refused(
        with(&alice, &["role", "add", "mine"]),
        "etcdserver: permission denied",
    );
    run_ok(with(&alice, &["put", "/app/w", "mine"]));
    run_refused(
        with(&["--user", "alice:wrong"], &["get", "/app/x"]),
        "etcdserver: authentication failed, invalid user ID or password",
    );
    run_refused(
        with(&["--user", "mallory:pw"], &["get", "/app/x"]),
        "etcdserver: authentication failed, invalid user ID or password",
    );
    run_refused(
        with(&root, &["user", "delete", "root"]),
        "etcdserver: invalid auth management",
    );

    // Nothing alice was refused took effect, on any member.
    for id in cluster.ids() {
        let one = Ctl::new(ctl.bin.clone(), &cluster, &[id]);
        assert!(ctl.global.is_empty());
        let args = with(&root, &["get", "/app/", "--prefix"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = tokio::task::block_in_place(|| one.ok(&args));
        assert_eq!(got, "/app/w\nmine\n/app/x\n1\n", "member {id}");
    }

    assert_eq!(run_ok(with(&root, &["user", "list"])), "alice\nroot\n");
    assert_eq!(run_ok(with(&root, &["role", "list"])), "reader\n");
    let user = run_ok(with(&alice, &["user", "get", "alice"]));
    assert!(
        user.contains("User: alice") && user.contains("Roles: reader"),
        "{user}"
    );
    let role = run_ok(with(&root, &["role", "get", "reader"]));
    assert!(role.contains("/app/") && role.contains("/app/w"), "{role}");

    // Revoking alice's permission stops her next read.
    run_ok(with(
        &root,
        &[
            "role",
            "revoke-permission",
            "reader",
            "/app/",
            "--prefix=true",
        ],
    ));
    run_refused(
        with(&alice, &["get", "/app/x"]),
        "etcdserver: permission denied",
    );

    assert!(run_ok(with(&root, &["auth", "disable"])).contains("Authentication Disabled"));
    ok(&["put", "/open", "again"]);
    assert_eq!(ok(&["get", "/open"]), "/open\nagain\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_client_certificate_names_its_user_once_auth_is_enabled() {
    let Some(bin) = etcdctl_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = common::DevCerts::write(
        dir.path().join("certs"),
        &["--clients", "root,alice,mallory"],
    );
    let file = |name: &str| certs.file(name);
    let (cert, key, ca) = (
        file("node-{id}.pem"),
        file("node-{id}-key.pem"),
        file("ca.pem"),
    );
    let (cluster, _) = start(&[
        "--bcrypt-cost",
        "4",
        "--cert-file",
        &cert,
        "--key-file",
        &key,
        "--trusted-ca-file",
        &ca,
        "--client-cert-auth",
    ])
    .await;
    let as_client = |name: &str| {
        let mut ctl = Ctl::new(bin.clone(), &cluster, &cluster.ids());
        ctl.global = vec![
            format!("--cacert={ca}"),
            format!("--cert={}", file(&format!("client-{name}.pem"))),
            format!("--key={}", file(&format!("client-{name}-key.pem"))),
        ];
        ctl
    };
    let (root, alice, mallory) = (as_client("root"), as_client("alice"), as_client("mallory"));
    let ok = |ctl: &Ctl, args: &[&str]| tokio::task::block_in_place(|| ctl.ok(args));
    let no = |ctl: &Ctl, args: &[&str], expected: &str| {
        tokio::task::block_in_place(|| refused(ctl, args, expected))
    };
    ok(&root, &["user", "add", "root", "--no-password"]);
    ok(&root, &["user", "grant-role", "root", "root"]);
    ok(&root, &["role", "add", "reader"]);
    ok(
        &root,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "/app/",
            "--prefix=true",
        ],
    );
    ok(&root, &["user", "add", "alice", "--no-password"]);
    ok(&root, &["user", "grant-role", "alice", "reader"]);
    ok(&root, &["auth", "enable"]);

    // With no token, the certificate's common name is the user.
    ok(&root, &["put", "/app/x", "1"]);
    assert_eq!(ok(&alice, &["get", "/app/x"]), "/app/x\n1\n");
    no(
        &alice,
        &["put", "/app/x", "2"],
        "etcdserver: permission denied",
    );
    no(
        &mallory,
        &["get", "/app/x"],
        "etcdserver: user name not found",
    );
    // A user without a password cannot authenticate with one.
    no(
        &alice,
        &["--user", "alice:anything", "get", "/app/x"],
        "etcdserver: authentication failed, invalid user ID or password",
    );
    assert_eq!(ok(&root, &["get", "/app/x"]), "/app/x\n1\n");
    ok(&root, &["auth", "disable"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_signed_with_the_operators_key_pair_are_accepted_by_every_member() {
    let Some(bin) = etcdctl_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let key = rcgen::KeyPair::generate().expect("a key pair");
    let (public, private) = (dir.path().join("jwt.pub"), dir.path().join("jwt.key"));
    std::fs::write(&public, key.public_key_pem()).expect("write");
    std::fs::write(&private, key.serialize_pem()).expect("write");
    let spec = format!(
        "jwt,pub-key={},priv-key={},sign-method=ES256,ttl=10m",
        public.display(),
        private.display()
    );
    let (cluster, _) = start(&["--bcrypt-cost", "4", "--auth-token", &spec]).await;
    let ctl = Ctl::new(bin, &cluster, &cluster.ids());
    let ok = |args: &[&str]| tokio::task::block_in_place(|| ctl.ok(args));
    ok(&["user", "add", "root:rootpw"]);
    ok(&["user", "grant-role", "root", "root"]);
    ok(&["auth", "enable"]);
    ok(&["--user", "root:rootpw", "put", "/jwt", "yes"]);

    // One member's token, a JWT, is accepted by every member.
    let mut auth = ordo_kv::proto::etcdserverpb::auth_client::AuthClient::new(cluster.channel(1));
    let token = auth
        .authenticate(ordo_kv::proto::etcdserverpb::AuthenticateRequest {
            name: "root".into(),
            password: "rootpw".into(),
        })
        .await
        .expect("authenticate")
        .into_inner()
        .token;
    assert_eq!(token.split('.').count(), 3, "{token}");
    for id in cluster.ids() {
        let mut request = tonic::Request::new(ordo_kv::proto::etcdserverpb::RangeRequest {
            key: b"/jwt".to_vec(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("token", token.parse().expect("ASCII token"));
        let got = cluster
            .kv(id)
            .range(request)
            .await
            .expect("a read with the token");
        assert_eq!(got.into_inner().kvs[0].value, b"yes", "member {id}");
        let mut forged = tonic::Request::new(ordo_kv::proto::etcdserverpb::RangeRequest {
            key: b"/jwt".to_vec(),
            ..Default::default()
        });
        // The signature's first character changed: six bits of it.
        let at = token.rfind('.').expect("a JWT has three parts") + 1;
        let swapped = if token[at..].starts_with('A') {
            "B"
        } else {
            "A"
        };
        let tampered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
        forged
            .metadata_mut()
            .insert("token", tampered.parse().expect("ASCII token"));
        let refused = cluster
            .kv(id)
            .range(forged)
            .await
            .expect_err("a forged token");
        assert_eq!(
            refused.message(),
            "etcdserver: invalid auth token",
            "member {id}"
        );
    }
    ok(&["--user", "root:rootpw", "auth", "disable"]);
}
