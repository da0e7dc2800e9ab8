//! The same workloads against etcd itself (Debian's etcd 3.4, when installed): the tool
//! checks any etcd v3 endpoint list it did not start, without faults.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ordo_check::{CheckArgs, Verdict};

/// Kills etcd on every path out of the test.
struct EtcdGuard(Child);

impl Drop for EtcdGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcd_installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_find_nothing_against_etcd() {
    if !etcd_installed() {
        println!("skipped: etcd not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let ports: Vec<u16> = {
        let listeners: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect()
    };
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
    let child = Command::new("etcd")
        .args(["--name", "check"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("check={peer}")])
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let _guard = EtcdGuard(child);
    // Wait (bounded) until etcd accepts connections; the run's setup retries requests too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", ports[0])).is_err() {
        assert!(Instant::now() < deadline, "etcd did not listen within 30s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        check: CheckArgs,
    }
    let history = dir.path().join("history.jsonl");
    let args = Cli::parse_from([
        "ordo-check",
        "--endpoints",
        &format!("127.0.0.1:{}", ports[0]),
        "--duration-secs",
        "5",
        "--seed",
        "21",
        "--history",
        history.to_str().expect("utf-8 temp path"),
    ])
    .check;
    let summary = ordo_check::run(args).await.expect("the run completes");
    assert_eq!(summary.verdict(), Verdict::Valid, "{summary}");
    let appended = summary
        .ops
        .get(&("append".to_string(), "ok".to_string()))
        .copied()
        .unwrap_or(0);
    assert!(appended > 0, "{summary}");
}
