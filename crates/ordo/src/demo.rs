//! `ordo demo`: the bank account of the seed story, told live on a three-node cluster.
//!
//! Each withdrawal is one transaction: "if the balance is still the one I read, write the
//! new balance and append a ledger entry". Two withdrawals that race see one of them fail
//! its compare; that one reads again and is rejected for insufficient funds. The ledger is
//! then read from every replica, the leader is killed, and the old leader comes back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use ordo_kv::proto::etcdserverpb::kv_client::KvClient;
use ordo_kv::proto::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use ordo_server::dev_certs::{write_new, DevCa, Usage};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use ordo_launch::cluster::POLL_INTERVAL;
use ordo_launch::LocalCluster;

/// Flags of the demo's servers. The Raft timings are the defaults (100 ms ticks, elections
/// after 1–2 s without a leader), so the failover the demo shows is the one users get.
pub const DEMO_SERVER_ARGS: &[&str] = &["--log-level", "warn"];

const BALANCE_KEY: &[u8] = b"bank/balance";
const LEDGER_PREFIX: &[u8] = b"bank/ledger/";
/// Attempts of one banking operation before giving up.
const ATTEMPTS_MAX: usize = 20;
/// Time one request may take before another node is tried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Time one request may take while the leader is down: short, so the moment writes resume
/// is seen within about this much.
const FAILOVER_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(250);
/// Time for the cluster to reach each milestone.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// One entry of the ledger, as read from a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLine {
    /// The revision that wrote it.
    pub revision: i64,
    /// What happened.
    pub text: String,
}

/// The outcome of a banking operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the money moved.
    pub approved: bool,
    /// The balance after it.
    pub balance: i64,
    /// The revision of its ledger entry.
    pub revision: i64,
    /// Times its compare failed because the balance changed under it.
    pub conflicts: usize,
}

fn end_of_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn put_op(key: &[u8], value: String) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value: value.into_bytes(),
            ..Default::default()
        })),
    }
}

async fn get(
    client: &mut KvClient<Channel>,
    key: &[u8],
    timeout: Duration,
) -> anyhow::Result<Option<(Vec<u8>, i64)>> {
    let request = RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    let response = tokio::time::timeout(timeout, client.range(request))
        .await
        .context("timed out")??
        .into_inner();
    Ok(response
        .kvs
        .first()
        .map(|kv| (kv.value.clone(), kv.mod_revision)))
}

fn parse_amount(value: &[u8]) -> anyhow::Result<i64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| {
            format!(
                "the stored balance {:?} is not a number",
                String::from_utf8_lossy(value)
            )
        })
}

/// Moves `delta` dollars (negative: a withdrawal) as `who`, recording it under
/// `ledger_key`. Idempotent: if an earlier attempt whose answer was lost did apply, its
/// ledger entry is found and reported. Each request may take `timeout`.
pub async fn transact(
    client: &mut KvClient<Channel>,
    who: &str,
    delta: i64,
    ledger_key: &[u8],
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    for conflicts in 0..ATTEMPTS_MAX {
        if let Some((text, revision)) = get(client, ledger_key, timeout).await? {
            let text = String::from_utf8_lossy(&text).into_owned();
            let balance = get(client, BALANCE_KEY, timeout)
                .await?
                .map(|(v, _)| parse_amount(&v))
                .transpose()?
                .unwrap_or(0);
            return Ok(Outcome {
                approved: !text.contains("rejected"),
                balance,
                revision,
                conflicts,
            });
        }
        let (balance, seen) = match get(client, BALANCE_KEY, timeout).await? {
            Some((value, mod_revision)) => (parse_amount(&value)?, mod_revision),
            None => (0, 0),
        };
        let new_balance = balance + delta;
        let approved = new_balance >= 0;
        let verb = if delta < 0 { "withdraws" } else { "deposits" };
        let amount = delta.abs();
        let text = if approved {
            format!("{who} {verb} ${amount}: approved, balance ${balance} -> ${new_balance}")
        } else {
            format!("{who} {verb} ${amount}: rejected, insufficient funds (balance ${balance})")
        };
        let mut success = vec![put_op(ledger_key, text)];
        if approved {
            success.push(put_op(BALANCE_KEY, new_balance.to_string()));
        }
        let txn = TxnRequest {
            compare: vec![
                // Only if nobody changed the balance since it was read…
                Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Mod as i32,
                    key: BALANCE_KEY.to_vec(),
                    target_union: Some(compare::TargetUnion::ModRevision(seen)),
                    ..Default::default()
                },
                // …and this operation is not recorded yet.
                Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Create as i32,
                    key: ledger_key.to_vec(),
                    target_union: Some(compare::TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
            ],
            success,
            failure: Vec::new(),
        };
        let response = tokio::time::timeout(timeout, client.txn(txn))
            .await
            .context("timed out")??
            .into_inner();
        if response.succeeded {
            let revision = response.header.map_or(0, |h| h.revision);
            return Ok(Outcome {
                approved,
                balance: if approved { new_balance } else { balance },
                revision,
                conflicts,
            });
        }
    }
    bail!("{who}: the balance kept changing for {ATTEMPTS_MAX} attempts")
}

/// Reads the ledger and balance from one node without asking the leader (a serializable
/// read), once that node has applied at least `revision`.
pub async fn read_replica(
    cluster: &LocalCluster,
    tls: Option<&ClientTlsConfig>,
    id: u64,
    revision: i64,
) -> anyhow::Result<(Vec<LedgerLine>, i64)> {
    let mut client = kv(cluster, tls, id);
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let request = RangeRequest {
            key: LEDGER_PREFIX.to_vec(),
            range_end: end_of_prefix(LEDGER_PREFIX),
            serializable: true,
            ..Default::default()
        };
        let attempt = tokio::time::timeout(REQUEST_TIMEOUT, client.range(request)).await;
        if let Ok(Ok(response)) = attempt {
            let response = response.into_inner();
            if response.header.map_or(0, |h| h.revision) >= revision {
                let mut lines: Vec<LedgerLine> = response
                    .kvs
                    .iter()
                    .map(|kv| LedgerLine {
                        revision: kv.mod_revision,
                        text: String::from_utf8_lossy(&kv.value).into_owned(),
                    })
                    .collect();
                lines.sort_by_key(|l| l.revision);
                let balance_request = RangeRequest {
                    key: BALANCE_KEY.to_vec(),
                    serializable: true,
                    ..Default::default()
                };
                let balance = client.range(balance_request).await?.into_inner();
                let balance = match balance.kvs.first() {
                    Some(kv) => parse_amount(&kv.value)?,
                    None => 0,
                };
                return Ok((lines, balance));
            }
        }
        if Instant::now() >= deadline {
            bail!("node {id} did not reach revision {revision} within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A KV client of one node of the cluster (connected lazily), over TLS with `tls`.
fn kv(cluster: &LocalCluster, tls: Option<&ClientTlsConfig>, id: u64) -> KvClient<Channel> {
    let addr = cluster.spec(id).client_addr;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // A socket address always forms a valid URI.
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .expect("a socket address forms a valid URI")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .expect("an https endpoint takes a TLS configuration");
    }
    KvClient::new(endpoint.connect_lazy())
}

/// Writes a development CA and certificates into `<root>/certs`, has every node serve its
/// client and admin ports with its own certificate and require client certificates, runs
/// the peer port with mutual TLS from the same CA, and returns the demo client's TLS
/// configuration (the cluster reaches the admin ports with the same client certificate).
fn tls_cluster(cluster: &mut LocalCluster) -> anyhow::Result<ClientTlsConfig> {
    let dir = cluster.root().join("certs");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = DevCa::new("Ordo demo CA")?;
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    write_new(&dir, "ca.pem", &ca.cert_pem(), false)?;
    for id in cluster.ids() {
        let node = ca.issue(&format!("node-{id}"), &hosts, Usage::Node)?;
        write_new(&dir, &format!("node-{id}.pem"), &node.cert_pem, false)?;
        write_new(&dir, &format!("node-{id}-key.pem"), &node.key_pem, true)?;
    }
    let path = |name: &str| dir.join(name).display().to_string();
    cluster.add_server_args([
        "--cert-file".to_string(),
        path("node-{id}.pem"),
        "--key-file".to_string(),
        path("node-{id}-key.pem"),
        "--trusted-ca-file".to_string(),
        path("ca.pem"),
        "--client-cert-auth".to_string(),
        "--peer-cert-file".to_string(),
        path("node-{id}.pem"),
        "--peer-key-file".to_string(),
        path("node-{id}-key.pem"),
        "--peer-trusted-ca-file".to_string(),
        path("ca.pem"),
        "--admin-cert-file".to_string(),
        path("node-{id}.pem"),
        "--admin-key-file".to_string(),
        path("node-{id}-key.pem"),
        "--admin-trusted-ca-file".to_string(),
        path("ca.pem"),
        "--admin-client-cert-auth".to_string(),
    ]);
    let client = ca.issue("demo", &[], Usage::Client)?;
    write_new(&dir, "client-demo.pem", &client.cert_pem, false)?;
    write_new(&dir, "client-demo-key.pem", &client.key_pem, true)?;
    let admin = ordo_node::tls::client_config(
        &dir.join("ca.pem"),
        Some((
            &dir.join("client-demo.pem"),
            &dir.join("client-demo-key.pem"),
        )),
        &[b"http/1.1"],
    )?;
    cluster.set_admin_tls(std::sync::Arc::new(admin));
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .identity(Identity::from_pem(client.cert_pem, client.key_pem))
        .domain_name("localhost"))
}

fn say(text: impl AsRef<str>) {
    println!("{}", text.as_ref());
}

fn print_ledger(lines: &[LedgerLine]) {
    for line in lines {
        say(format!("      rev {:>3}  {}", line.revision, line.text));
    }
}

/// Runs the demo; `binary` is the `ordo` executable to start servers from.
/// With `tls`, every client connection of the demo is TLS with client certificates, from
/// a CA it makes on the spot, the admin endpoints too, and the nodes talk to each other over
/// mutual TLS.
pub async fn run(binary: PathBuf, data_dir: Option<PathBuf>, tls: bool) -> anyhow::Result<()> {
    if let Some(dir) = &data_dir {
        let used = std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if used {
            bail!(
                "{} is not empty; give the demo an empty or new directory (it creates a fresh cluster)",
                dir.display()
            );
        }
    }
    let started = Instant::now();
    let mut cluster = LocalCluster::new(
        binary,
        3,
        data_dir,
        DEMO_SERVER_ARGS.iter().map(|a| a.to_string()).collect(),
    )
    .context("cannot prepare the cluster's directories and ports")?;
    let tls = if tls {
        Some(tls_cluster(&mut cluster)?)
    } else {
        None
    };
    say("Ordo demo: one bank account, three replicas, one ordered log.\n");
    if tls.is_some() {
        say(format!(
            "The etcd API and admin endpoints speak TLS with client certificates, and the nodes\nmutual TLS with each other, from a CA made for this run ({}); the Kafka port is\nplain text.\n",
            cluster.root().join("certs").display()
        ));
    }
    say(format!(
        "Starting three nodes on this machine (data in {}):",
        cluster.root().display()
    ));
    let admin_scheme = if tls.is_some() { "https" } else { "http" };
    for id in cluster.ids() {
        let spec = cluster.spec(id);
        say(format!(
            "  node {id}: clients {}, Kafka clients {}, peers {}, admin {admin_scheme}://{}/status",
            spec.client_addr, spec.kafka_addr, spec.peer_addr, spec.admin_addr
        ));
    }
    cluster.start_all().context("cannot start the servers")?;
    let leader = cluster
        .wait_leader(&[], STEP_TIMEOUT)
        .await
        .map_err(anyhow::Error::msg)?;
    say(format!(
        "Node {} was elected leader (term {}).\n",
        leader.id, leader.term
    ));

    let mut client = kv(&cluster, tls.as_ref(), leader.id);
    let opening = transact(
        &mut client,
        "The bank",
        1000,
        b"bank/ledger/0-open",
        REQUEST_TIMEOUT,
    )
    .await?;
    say(format!(
        "The account opens with ${} (revision {}).",
        opening.balance, opening.revision
    ));

    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != leader.id)
        .collect();
    let (atm_node, app_node) = (followers[0], followers[1]);
    say(format!(
        "\nAt the same moment the ATM asks node {atm_node} to withdraw $800 and the mobile app asks node {app_node} to withdraw $600."
    ));
    say("Both nodes are followers: they forward the writes to the leader, which puts them in one order.");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let (mut atm_client, mut app_client) = (
        kv(&cluster, tls.as_ref(), atm_node),
        kv(&cluster, tls.as_ref(), app_node),
    );
    let (b1, b2) = (barrier.clone(), barrier.clone());
    let atm = async move {
        b1.wait().await;
        transact(
            &mut atm_client,
            "ATM",
            -800,
            b"bank/ledger/1-atm",
            REQUEST_TIMEOUT,
        )
        .await
    };
    let app = async move {
        b2.wait().await;
        transact(
            &mut app_client,
            "Mobile app",
            -600,
            b"bank/ledger/1-app",
            REQUEST_TIMEOUT,
        )
        .await
    };
    let (atm, app) = tokio::join!(atm, app);
    let (atm, app) = (atm?, app?);
    for (who, node, amount, outcome) in [
        ("ATM", atm_node, 800, &atm),
        ("Mobile app", app_node, 600, &app),
    ] {
        let retried = if outcome.conflicts > 0 {
            " after finding the balance changed under it and reading it again"
        } else {
            ""
        };
        let verdict = if outcome.approved {
            format!("approved, balance now ${}", outcome.balance)
        } else {
            format!(
                "rejected for insufficient funds (balance ${})",
                outcome.balance
            )
        };
        say(format!(
            "  {who} via node {node}: withdraw ${amount} {verdict}{retried} (revision {}).",
            outcome.revision
        ));
    }
    if atm.approved == app.approved {
        bail!(
            "exactly one withdrawal should have been approved, but ATM={} and app={}",
            atm.approved,
            app.approved
        );
    }

    let revision = atm.revision.max(app.revision);
    say(format!(
        "\nEvery replica, read locally once it has applied revision {revision}:"
    ));
    let mut reference: Option<(Vec<LedgerLine>, i64)> = None;
    for id in cluster.ids() {
        let (lines, balance) = read_replica(&cluster, tls.as_ref(), id, revision).await?;
        say(format!("  node {id}: balance ${balance}"));
        print_ledger(&lines);
        match &reference {
            None => reference = Some((lines, balance)),
            Some(r) if *r == (lines.clone(), balance) => {}
            Some(_) => bail!("node {id} disagrees with node {}", cluster.ids()[0]),
        }
    }
    let (history, balance) = reference.context("no replica was read")?;
    say(format!(
        "All three replicas applied the same entries in the same order: balance ${balance}.\n"
    ));

    say(format!(
        "Killing the leader, node {}, with SIGKILL.",
        leader.id
    ));
    let killed = leader.id;
    let kill_at = Instant::now();
    cluster.kill(killed);
    let survivors: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != killed)
        .collect();
    // Keep trying the survivors until one accepts a write: the time this takes is the time
    // clients could not write.
    let deposit = loop {
        if kill_at.elapsed() > STEP_TIMEOUT {
            bail!("no write succeeded within {STEP_TIMEOUT:?} of killing the leader");
        }
        let mut done = None;
        for &id in &survivors {
            let mut client = kv(&cluster, tls.as_ref(), id);
            if let Ok(outcome) = transact(
                &mut client,
                "Payroll",
                250,
                b"bank/ledger/2-payroll",
                FAILOVER_ATTEMPT_TIMEOUT,
            )
            .await
            {
                done = Some(outcome);
                break;
            }
        }
        match done {
            Some(outcome) => break outcome,
            None => tokio::time::sleep(POLL_INTERVAL).await,
        }
    };
    let resumed_ms = kill_at.elapsed().as_millis();
    let new_leader = cluster
        .wait_leader(&[killed], STEP_TIMEOUT)
        .await
        .map_err(anyhow::Error::msg)?;
    say(format!(
        "Node {} was elected leader (term {}); writes resumed {resumed_ms} ms after the kill.",
        new_leader.id, new_leader.term
    ));
    say(format!(
        "  Payroll deposits $250: balance ${} (revision {}).",
        deposit.balance, deposit.revision
    ));
    let (after, _) = read_replica(&cluster, tls.as_ref(), new_leader.id, deposit.revision).await?;
    if after.len() != history.len() + 1 || after[..history.len()] != history[..] {
        bail!("the committed history changed after the leader was killed");
    }
    say("The committed history is intact on the new leader:");
    print_ledger(&after);

    say(format!(
        "\nNode {killed} comes back on its data directory and catches up."
    ));
    cluster
        .start(killed)
        .context("cannot restart the old leader")?;
    let target = cluster
        .status(new_leader.id)
        .await
        .context("the new leader stopped answering /status")?
        .applied_index;
    let back = cluster
        .wait_applied(killed, target, STEP_TIMEOUT)
        .await
        .map_err(anyhow::Error::msg)?;
    say(format!(
        "  node {killed}: applied index {} (the leader had applied {target}), role {}, leader {}",
        back.applied_index, back.role, back.leader
    ));
    let (lines, balance) = read_replica(&cluster, tls.as_ref(), killed, deposit.revision).await?;
    if lines != after {
        bail!("node {killed}'s ledger does not match the leader's after catching up");
    }
    say(format!(
        "  node {killed}'s ledger matches, balance ${balance}:"
    ));
    print_ledger(&lines);

    for id in cluster.ids() {
        cluster.terminate(id, Duration::from_secs(10));
    }
    say(format!(
        "\nDone in {:.1} s. One order everywhere, nothing acknowledged was lost, and every node has stopped.",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
