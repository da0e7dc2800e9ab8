//! etcd's own command-line client (`etcdctl`, API v3) against an in-process Ordo KV server.
//!
//! When `etcdctl` is not installed these tests print "skipped: etcdctl not installed" and pass,
//! unless `ORDO_REQUIRE_ETCDCTL=1`, in which case they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{guard, start, start_default, TestServer};
use ordo_kv::ServiceConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use ordo_launch::tools::etcdctl_or_skip;

struct Ctl {
    bin: PathBuf,
    endpoint: String,
}

struct Run {
    stdout: String,
    stderr: String,
    success: bool,
}

impl Ctl {
    fn new(bin: &Path, server: &TestServer) -> Ctl {
        Ctl {
            bin: bin.to_path_buf(),
            endpoint: server.addr.to_string(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&self.endpoint)
            .arg("--dial-timeout=5s")
            .arg("--command-timeout=10s")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    async fn run_with_stdin(&self, args: &[&str], input: Option<&str>) -> Run {
        let mut cmd = self.command(args);
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn etcdctl");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.as_bytes()).await.unwrap();
            drop(stdin);
        }
        let out = guard(child.wait_with_output()).await.unwrap();
        Run {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            success: out.status.success(),
        }
    }

    /// Runs etcdctl, requires success, returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run_with_stdin(args, None).await;
        assert!(
            run.success,
            "etcdctl {args:?} failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        run.stdout
    }
}

#[tokio::test]
async fn etcdctl_put_get_prefix_and_past_revision() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let server = start_default().await;
    let ctl = Ctl::new(&bin, &server);
    assert_eq!(ctl.ok(&["put", "foo", "bar"]).await, "OK\n");
    assert_eq!(ctl.ok(&["put", "foo/a", "1"]).await, "OK\n");
    assert_eq!(ctl.ok(&["put", "foo", "baz"]).await, "OK\n");
    assert_eq!(ctl.ok(&["get", "foo"]).await, "foo\nbaz\n");
    assert_eq!(
        ctl.ok(&["get", "foo", "--prefix"]).await,
        "foo\nbaz\nfoo/a\n1\n"
    );
    assert_eq!(
        ctl.ok(&["get", "foo", "--prefix", "--keys-only"]).await,
        "foo\n\nfoo/a\n\n"
    );
    assert_eq!(ctl.ok(&["get", "foo", "--rev=2"]).await, "foo\nbar\n");
    assert_eq!(
        ctl.ok(&["get", "", "--from-key"]).await,
        "foo\nbaz\nfoo/a\n1\n"
    );
    let json = ctl.ok(&["get", "foo", "-w", "json"]).await;
    assert!(json.contains("\"revision\":4"), "{json}");
    assert!(
        json.contains("\"create_revision\":2,\"mod_revision\":4,\"version\":2"),
        "{json}"
    );
}

#[tokio::test]
async fn etcdctl_del_removes_keys_and_reports_the_count() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let server = start_default().await;
    let ctl = Ctl::new(&bin, &server);
    ctl.ok(&["put", "d/1", "a"]).await;
    ctl.ok(&["put", "d/2", "b"]).await;
    assert_eq!(
        ctl.ok(&["del", "d/", "--prefix", "--prev-kv"]).await,
        "2\nd/1\na\nd/2\nb\n"
    );
    assert_eq!(ctl.ok(&["get", "d/", "--prefix"]).await, "");
    assert_eq!(ctl.ok(&["del", "d/1"]).await, "0\n");
}

#[tokio::test]
async fn etcdctl_interactive_txn_takes_the_branch_its_compare_selects() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let server = start_default().await;
    let ctl = Ctl::new(&bin, &server);
    ctl.ok(&["put", "k1", "v1"]).await;
    let script = "value(\"k1\") = \"v1\"\n\nput k2 yes\nput k3 x\n\nput k2 no\n\n";
    let run = ctl.run_with_stdin(&["txn", "-i"], Some(script)).await;
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout.ends_with("SUCCESS\n\nOK\n\nOK\n"),
        "{}",
        run.stdout
    );
    assert_eq!(ctl.ok(&["get", "k2"]).await, "k2\nyes\n");
    let script = "mod(\"k1\") > \"100\"\n\nput k2 yes\n\nput k2 no\nget k3\n\n";
    let run = ctl.run_with_stdin(&["txn", "-i"], Some(script)).await;
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout.ends_with("FAILURE\n\nOK\n\nk3\nx\n"),
        "{}",
        run.stdout
    );
    assert_eq!(ctl.ok(&["get", "k2"]).await, "k2\nno\n");
}

/// Starts `etcdctl watch`, reads `lines` lines of output, then stops it.
async fn watch_lines(
    ctl: &Ctl,
    args: &[&str],
    lines: usize,
    then: impl std::future::Future<Output = ()>,
) -> Vec<String> {
    let mut child = ctl.command(args).spawn().expect("spawn etcdctl watch");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    then.await;
    let mut seen = Vec::new();
    while seen.len() < lines {
        match guard(out.next_line()).await.unwrap() {
            Some(line) => seen.push(line),
            None => break,
        }
    }
    child.kill().await.unwrap();
    seen
}

#[tokio::test]
async fn etcdctl_watch_prints_put_and_delete_events_in_order() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let server = start_default().await;
    let ctl = Ctl::new(&bin, &server);
    ctl.ok(&["put", "unrelated", "1"]).await; // revision 2
                                              // Watching from the next revision makes the output independent of when the watch is
                                              // established relative to the writes below.
    let writes = async {
        ctl.ok(&["put", "w/1", "a"]).await;
        ctl.ok(&["put", "x", "ignored"]).await;
        ctl.ok(&["del", "w/1"]).await;
    };
    let lines = watch_lines(&ctl, &["watch", "w/", "--prefix", "--rev=3"], 5, writes).await;
    assert_eq!(lines, ["PUT", "w/1", "a", "DELETE", "w/1"]);
}

#[tokio::test]
async fn etcdctl_watch_from_a_past_revision_replays_history_with_prev_kv() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let server = start_default().await;
    let ctl = Ctl::new(&bin, &server);
    ctl.ok(&["put", "h", "1"]).await; // 2
    ctl.ok(&["put", "h", "2"]).await; // 3
    let lines = watch_lines(&ctl, &["watch", "h", "--rev=2", "--prev-kv"], 8, async {}).await;
    assert_eq!(lines, ["PUT", "h", "1", "PUT", "h", "1", "h", "2"]);
}

#[tokio::test]
async fn etcdctl_lease_grant_keepalive_timetolive_and_revoke() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let server = start_default().await;
    let ctl = Ctl::new(&bin, &server);
    let granted = ctl.ok(&["lease", "grant", "60"]).await;
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert_eq!(granted, format!("lease {id} granted with TTL(60s)\n"));
    ctl.ok(&["put", "--lease", &id, "eph", "1"]).await;
    assert_eq!(
        ctl.ok(&["lease", "keep-alive", "--once", &id]).await,
        format!("lease {id} keepalived with TTL(60)\n")
    );
    let ttl = ctl.ok(&["lease", "timetolive", &id, "--keys"]).await;
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.ends_with("s), attached keys([eph])\n"), "{ttl}");
    assert_eq!(
        ctl.ok(&["lease", "list"]).await,
        format!("found 1 leases\n{id}\n")
    );
    assert_eq!(
        ctl.ok(&["lease", "revoke", &id]).await,
        format!("lease {id} revoked\n")
    );
    assert_eq!(ctl.ok(&["get", "eph"]).await, "");
    assert_eq!(
        ctl.ok(&["lease", "timetolive", &id]).await,
        format!("lease {id} already expired\n")
    );
    let revoke_again = ctl.run_with_stdin(&["lease", "revoke", &id], None).await;
    assert!(!revoke_again.success);
    assert!(
        revoke_again
            .stderr
            .contains("etcdserver: requested lease not found"),
        "{}",
        revoke_again.stderr
    );
}

#[tokio::test]
async fn etcdctl_member_list_endpoint_status_and_health() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let server = start_default().await;
    let ctl = Ctl::new(&bin, &server);
    ctl.ok(&["put", "a", "1"]).await;
    assert_eq!(
        ctl.ok(&["member", "list"]).await,
        "6f72646f00000001, started, ordo, http://127.0.0.1:2380, http://127.0.0.1:2379, false\n"
    );
    let status = ctl.ok(&["endpoint", "status"]).await;
    let fields: Vec<&str> = status.trim_end().split(',').map(str::trim).collect();
    assert_eq!(fields[0], server.addr.to_string());
    assert_eq!(fields[1], "6f72646f00000001");
    assert_eq!(fields[2], "3.4.0");
    // is leader, is learner, raft term, raft index, raft applied index
    assert_eq!(&fields[4..9], ["true", "false", "1", "1", "1"], "{status}");
    let health = ctl.run_with_stdin(&["endpoint", "health"], None).await;
    assert!(health.success, "{}", health.stderr);
    let said = format!("{}{}", health.stdout, health.stderr);
    assert!(
        said.contains(&format!("{} is healthy", server.addr)),
        "{said}"
    );
}

#[tokio::test]
async fn etcdctl_sees_etcds_errors_for_compacted_revisions() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let server = start_default().await;
    let ctl = Ctl::new(&bin, &server);
    ctl.ok(&["put", "c", "1"]).await;
    ctl.ok(&["put", "c", "2"]).await;
    assert_eq!(ctl.ok(&["compact", "3"]).await, "compacted revision 3\n");
    let old = ctl.run_with_stdin(&["get", "c", "--rev=2"], None).await;
    assert!(!old.success);
    assert!(
        old.stderr
            .contains("Error: etcdserver: mvcc: required revision has been compacted"),
        "{}",
        old.stderr
    );
    let watch = ctl.run_with_stdin(&["watch", "c", "--rev=2"], None).await;
    assert!(!watch.success);
    assert!(
        watch.stderr.contains(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
        ),
        "{}",
        watch.stderr
    );
}

#[tokio::test]
async fn etcdctl_watch_and_txn_are_checked_against_the_users_permissions() {
    let Some(bin) = etcdctl_or_skip() else { return };
    let server = start(ServiceConfig {
        bcrypt_cost: 4,
        ..ServiceConfig::default()
    })
    .await;
    let ctl = Ctl::new(&bin, &server);
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "watcher"],
        &[
            "role",
            "grant-permission",
            "watcher",
            "read",
            "/w/",
            "--prefix=true",
        ],
        &["user", "add", "bob:bobpw"],
        &["user", "grant-role", "bob", "watcher"],
        &["auth", "enable"],
    ] {
        ctl.ok(args).await;
    }
    let watch = ctl
        .run_with_stdin(&["--user", "bob:bobpw", "watch", "/secret"], None)
        .await;
    assert!(!watch.success);
    assert!(
        watch
            .stderr
            .contains("watch was canceled (etcdserver: permission denied)"),
        "{}",
        watch.stderr
    );
    // A txn whose compare reads a key bob may not read is refused as a whole.
    let txn = ctl
        .run_with_stdin(
            &["--user", "bob:bobpw", "txn"],
            Some("value(\"/secret\") = \"x\"\n\nget /w/a\n\n\n"),
        )
        .await;
    assert!(!txn.success);
    assert!(
        txn.stderr.contains("etcdserver: permission denied"),
        "{}",
        txn.stderr
    );
    let status = ctl
        .run_with_stdin(&["--user", "bob:bobpw", "user", "list"], None)
        .await;
    assert!(
        status.stderr.contains("etcdserver: permission denied"),
        "{}",
        status.stderr
    );
    assert_eq!(
        ctl.ok(&["--user", "root:rootpw", "user", "list"]).await,
        "bob\nroot\n"
    );
}
