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
}

impl Ctl {
    fn new(bin: PathBuf, cluster: &TestCluster, nodes: &[u64]) -> Ctl {
        let endpoints = nodes
            .iter()
            .map(|&id| cluster.spec(id).client_addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        Ctl { bin, endpoints }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints))
            .args(["--dial-timeout=5s", "--command-timeout=10s"])
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
