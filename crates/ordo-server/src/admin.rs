//! The admin HTTP endpoints: `/status` (JSON), `/metrics` (Prometheus text), `/health` and
//! `/groups` (JSON: every group this node hosts).
//!
//! A deliberately small HTTP/1.1 server: `GET` only, one request per connection, request
//! heads bounded in size and time, so a stuck or hostile client costs one short-lived task,
//! and connections bounded per client address, so that one client's idle connections cannot
//! take the slots a health check needs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ordo_node::transport::{TransportCounters, TransportMetrics};
use ordo_node::LogThrottle;
use ordo_node::{role_name, GroupStatus, HistogramSnapshot, HostedGroups, MetricsSnapshot};
use ordo_streams::KafkaMetrics;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::etcd::EtcdBackend;
use crate::tls::TlsAcceptor;

/// Largest request head read.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Time a client has to send its request head; a health check or a scraper sends it at once.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more wait to be accepted.
const CONNECTIONS_MAX: usize = 64;
/// Connections one client address holds at once; more are closed as they are accepted.
const CONNECTIONS_PER_CLIENT_MAX: usize = 8;
/// Refused TLS handshakes logged per window, and the window.
const TLS_REFUSALS_LOGGED_PER_WINDOW: u32 = 10;
const TLS_REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// How many connections each client address holds.
#[derive(Debug, Default)]
struct ClientSlots {
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place among its client's; released when dropped.
struct ClientSlot {
    slots: Arc<ClientSlots>,
    client: IpAddr,
}

impl ClientSlots {
    /// A slot for one more connection of `client`, or `None` if it holds its bound.
    fn take(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(client).or_insert(0);
        if *count >= CONNECTIONS_PER_CLIENT_MAX {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: Arc::clone(self),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = held
            .get_mut(&self.client)
            .expect("a slot taken is counted until released");
        *count -= 1;
        if *count == 0 {
            held.remove(&self.client);
        }
    }
}

/// One member's replication progress as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The member.
    pub id: u64,
    /// Highest index known replicated on it.
    pub match_index: u64,
    /// Entries it lags behind the leader's last index.
    pub lag: u64,
    /// Whether it is a learner.
    pub is_learner: bool,
    /// Whether the leader heard from it recently.
    pub recent_active: bool,
}

/// The body of `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node.
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `pre-candidate`.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of, or 0.
    pub leader: u64,
    /// The commit index.
    pub commit_index: u64,
    /// The index applied to the KV store.
    pub applied_index: u64,
    /// The first index still in the log.
    pub first_index: u64,
    /// The last index of the log.
    pub last_index: u64,
    /// The newest snapshot's index.
    pub snapshot_index: u64,
    /// The KV store's newest revision.
    pub revision: i64,
    /// The voters.
    pub voters: Vec<u64>,
    /// Per-member progress; empty unless this node leads.
    pub peers: Vec<PeerReport>,
}

async fn status_report(backend: &EtcdBackend) -> Option<StatusReport> {
    let status = backend.refresh().await.ok()?;
    Some(StatusReport {
        id: status.node_id,
        role: role_name(status.role).to_string(),
        term: status.term,
        leader: status.leader,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        first_index: status.first_index,
        last_index: status.last_index,
        snapshot_index: status.snapshot_index,
        revision: ordo_kv::KvBackend::state(backend).progress().revision,
        voters: status.conf_state.voters.clone(),
        peers: status
            .peers
            .iter()
            .map(|p| PeerReport {
                id: p.id,
                match_index: p.match_index,
                lag: p.lag,
                is_learner: p.is_learner,
                recent_active: p.recent_active,
            })
            .collect(),
    })
}

/// One group this node hosts, in `/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The group.
    pub id: u64,
    /// `leader`, `follower`, `candidate`, `pre-candidate` or `learner`; `stopped` for a
    /// group that stopped on its own, `unknown` for one that did not answer in time.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of, or 0.
    pub leader: u64,
    /// The commit index.
    pub commit_index: u64,
    /// The index applied to the group's state machine.
    pub applied_index: u64,
    /// The voters.
    pub voters: Vec<u64>,
    /// The learners.
    pub learners: Vec<u64>,
    /// Why the group stopped, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// The body of `/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsReport {
    /// This node.
    pub id: u64,
    /// Every group it hosts, in order of id.
    pub groups: Vec<GroupReport>,
}

impl GroupReport {
    fn of(status: &GroupStatus) -> GroupReport {
        let role = if status.is_learner() {
            "learner"
        } else {
            role_name(status.role)
        };
        GroupReport {
            id: status.group_id.0,
            role: role.to_string(),
            term: status.term,
            leader: status.leader,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            voters: status.conf_state.voters.clone(),
            learners: status.conf_state.learners.clone(),
            failure: None,
        }
    }

    /// A group that gave no status: stopped on its own (saying why), or too busy to answer.
    fn silent(id: u64, failure: Option<String>) -> GroupReport {
        GroupReport {
            id,
            role: if failure.is_some() {
                "stopped"
            } else {
                "unknown"
            }
            .to_string(),
            term: 0,
            leader: 0,
            commit_index: 0,
            applied_index: 0,
            voters: Vec::new(),
            learners: Vec::new(),
            failure,
        }
    }
}

async fn groups_report(node_id: u64, groups: &HostedGroups) -> GroupsReport {
    let ids = groups.ids();
    let statuses = groups.statuses().await;
    let reports = ids
        .into_iter()
        .map(|id| match statuses.iter().find(|s| s.group_id == id) {
            Some(status) => GroupReport::of(status),
            None => GroupReport::silent(id.0, groups.failure(id)),
        })
        .collect();
    GroupsReport {
        id: node_id,
        groups: reports,
    }
}

/// What the admin endpoints read of the node beyond the KV face: its groups and its peer
/// transport.
#[derive(Clone)]
pub struct NodeViews {
    /// Every group the node hosts, for `/groups`.
    pub groups: HostedGroups,
    /// The peer transport's counters, for `/metrics`; `None` once it has stopped.
    pub peers: Option<TransportCounters>,
    /// The Kafka port's counters, for `/metrics`; `None` without a Kafka listener.
    pub kafka: Option<Arc<KafkaMetrics>>,
}

/// The peer transport's counters in Prometheus text, appended to `/metrics`.
pub fn render_transport(out: &mut String, t: &TransportMetrics) {
    let counters: [(&str, &str, u64); 19] = [
        (
            "batches_sent",
            "Writes to peer connections carrying messages.",
            t.batches_sent,
        ),
        (
            "frames_sent",
            "Frames written to peers, keepalives included.",
            t.frames_sent,
        ),
        (
            "messages_sent",
            "Messages written to peers.",
            t.messages_sent,
        ),
        (
            "bytes_sent",
            "Bytes written to peers in frames.",
            t.bytes_sent,
        ),
        (
            "frames_received",
            "Frames received from peers and accepted.",
            t.frames_received,
        ),
        (
            "messages_received",
            "Messages received from peers.",
            t.messages_received,
        ),
        (
            "bytes_received",
            "Bytes of accepted frames received from peers.",
            t.bytes_received,
        ),
        (
            "messages_dropped",
            "Messages refused because a peer's queue was full.",
            t.messages_dropped,
        ),
        (
            "messages_unsent",
            "Messages lost with a broken connection or a removed peer.",
            t.messages_unsent,
        ),
        ("connects", "Outbound connections established.", t.connects),
        (
            "reconnects",
            "Outbound connections re-established to a peer.",
            t.reconnects,
        ),
        (
            "dial_failures",
            "Outbound connection attempts that failed.",
            t.dial_failures,
        ),
        (
            "handshake_failures",
            "Handshakes refused, by this node or by the peer.",
            t.handshake_failures,
        ),
        (
            "frame_errors",
            "Inbound connections closed for a frame that broke the protocol.",
            t.frame_errors,
        ),
        (
            "inbound_connections_refused",
            "Inbound connections closed at once for the connection limit.",
            t.inbound_connections_refused,
        ),
        (
            "events_dropped",
            "Peer events dropped because the runtime's channel was full.",
            t.events_dropped,
        ),
        (
            "keepalives_sent",
            "Keepalive frames written to idle connections.",
            t.keepalives_sent,
        ),
        (
            "silent_connections",
            "Inbound connections closed because the peer went silent.",
            t.silent_connections,
        ),
        (
            "refusal_lines_suppressed",
            "Log lines about refused connections left out by the rate limit.",
            t.refusal_lines_suppressed,
        ),
    ];
    for (name, help, value) in counters {
        counter(
            out,
            &format!("ordo_peer_{name}_total"),
            help,
            "counter",
            value,
        );
    }
}

/// The Kafka port's counters in Prometheus text, appended to `/metrics`.
pub fn render_kafka(out: &mut String, k: &KafkaMetrics) {
    let read = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let counters = [
        (
            "ordo_kafka_connections_accepted_total",
            "Kafka connections accepted and served.",
            "counter",
            read(&k.connections_accepted),
        ),
        (
            "ordo_kafka_connections_refused_total",
            "Kafka connections closed at once because connections_max were open.",
            "counter",
            read(&k.connections_refused),
        ),
        (
            "ordo_kafka_connections_open",
            "Kafka connections open.",
            "gauge",
            read(&k.connections_open),
        ),
        (
            "ordo_kafka_requests_answered_total",
            "Kafka requests answered.",
            "counter",
            read(&k.requests_answered),
        ),
        (
            "ordo_kafka_requests_refused_total",
            "Kafka connections closed for what the client sent (bytes that are not a served request, a request over the size bound, cut short or too slow).",
            "counter",
            read(&k.requests_refused),
        ),
    ];
    for (name, help, kind, value) in counters {
        counter(out, name, help, kind, value);
    }
}

fn counter(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Writes a power-of-two histogram in microseconds as a Prometheus histogram in seconds.
fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for &(bound_us, n) in &h.buckets {
        cumulative += n;
        if bound_us == u64::MAX {
            break;
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            bound_us as f64 / 1e6
        );
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// Renders the group's counters in the Prometheus text format.
pub fn render_metrics(m: &MetricsSnapshot, status: Option<&StatusReport>) -> String {
    let mut out = String::new();
    render_counters(&mut out, m);
    if let Some(s) = status {
        render_status(&mut out, s);
    }
    render_histograms(&mut out, m);
    out
}

/// The group's counters and gauges, one line each.
fn render_counters(out: &mut String, m: &MetricsSnapshot) {
    let rows: [(&str, &str, &str, u64); 14] = [
        ("ordo_raft_term", "The current Raft term.", "gauge", m.term),
        (
            "ordo_raft_elections_total",
            "Elections this node started.",
            "counter",
            m.elections,
        ),
        (
            "ordo_raft_leader_changes_total",
            "Times the known leader changed.",
            "counter",
            m.leader_changes,
        ),
        (
            "ordo_proposals_total",
            "Proposals made on this node.",
            "counter",
            m.proposals,
        ),
        (
            "ordo_proposals_failed_total",
            "Proposals that failed.",
            "counter",
            m.proposals_failed,
        ),
        (
            "ordo_proposals_forwarded_total",
            "Proposals forwarded to the leader.",
            "counter",
            m.proposals_forwarded,
        ),
        (
            "ordo_entries_committed_total",
            "Entries this node saw committed.",
            "counter",
            m.entries_committed,
        ),
        (
            "ordo_entries_applied_total",
            "Entries applied to the state machine.",
            "counter",
            m.entries_applied,
        ),
        (
            "ordo_linearizable_reads_total",
            "Linearizable reads served.",
            "counter",
            m.reads,
        ),
        (
            "ordo_peer_messages_undecodable_total",
            "Peer messages that failed to decode.",
            "counter",
            m.messages_decode_failed,
        ),
        (
            "ordo_peer_messages_dropped_total",
            "Peer messages dropped on a full queue.",
            "counter",
            m.messages_dropped,
        ),
        (
            "ordo_snapshots_taken_total",
            "Snapshots taken.",
            "counter",
            m.snapshots_taken,
        ),
        (
            "ordo_snapshots_sent_total",
            "Snapshots streamed to followers.",
            "counter",
            m.snapshots_sent,
        ),
        (
            "ordo_snapshots_received_total",
            "Snapshots received and installed.",
            "counter",
            m.snapshots_received,
        ),
    ];
    for (name, help, kind, value) in rows {
        counter(out, name, help, kind, value);
    }
}

/// What the node's status adds: its indexes, its role, each member's lag.
fn render_status(out: &mut String, s: &StatusReport) {
    counter(
        out,
        "ordo_raft_commit_index",
        "The commit index.",
        "gauge",
        s.commit_index,
    );
    counter(
        out,
        "ordo_raft_applied_index",
        "The applied index.",
        "gauge",
        s.applied_index,
    );
    counter(
        out,
        "ordo_apply_lag_entries",
        "Committed entries not yet applied.",
        "gauge",
        s.commit_index.saturating_sub(s.applied_index),
    );
    counter(
        out,
        "ordo_is_leader",
        "1 if this node leads.",
        "gauge",
        u64::from(s.role == "leader"),
    );
    if !s.peers.is_empty() {
        let name = "ordo_peer_lag_entries";
        let _ = writeln!(
            out,
            "# HELP {name} Entries a member lags behind the leader.\n# TYPE {name} gauge"
        );
        for p in &s.peers {
            let _ = writeln!(out, "{name}{{peer=\"{}\"}} {}", p.id, p.lag);
        }
    }
}

/// The latency histograms.
fn render_histograms(out: &mut String, m: &MetricsSnapshot) {
    histogram(
        out,
        "ordo_wal_fsync_seconds",
        "Time from a WAL append until it was durable.",
        &m.fsync_latency_us,
    );
    histogram(
        out,
        "ordo_apply_batch_seconds",
        "Time to apply one batch of committed entries.",
        &m.apply_batch_us,
    );
    histogram(
        out,
        "ordo_peer_round_trip_seconds",
        "Heartbeat round trips to peers.",
        &m.peer_round_trip_us,
    );
}

/// Serves the admin endpoints on `listener` until `shutdown` turns true: the KV group's
/// through `backend`, and `/groups` of every group the node hosts.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<EtcdBackend>,
    node: NodeViews,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<Arc<TlsAcceptor>>,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let clients = Arc::new(ClientSlots::default());
    let refusals = Arc::new(LogThrottle::new(
        TLS_REFUSALS_LOGGED_PER_WINDOW,
        TLS_REFUSAL_LOG_WINDOW,
    ));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|&stop| stop) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "admin accept failed");
                continue;
            }
        };
        let Some(slot) = clients.take(peer.ip()) else {
            tracing::debug!(%peer, limit = CONNECTIONS_PER_CLIENT_MAX, "admin connection closed: too many from this client");
            continue;
        };
        let backend = Arc::clone(&backend);
        let node = node.clone();
        let tls = tls.as_ref().map(|tls| tls.config());
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            let served = match tls {
                None => handle(stream, &backend, &node).await,
                Some(config) => {
                    // The handshake shares the request head's deadline: a client that
                    // neither finishes it nor sends a head in time holds no slot longer.
                    match crate::tls::handshake(config, stream, REQUEST_HEAD_TIMEOUT).await {
                        Ok(stream) => handle(stream, &backend, &node).await,
                        Err(reason) => {
                            if let Some(suppressed) = refusals.admit(std::time::Instant::now()) {
                                tracing::warn!(%peer, reason, suppressed, "admin TLS connection refused");
                            }
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "admin connection ended");
            }
            drop(slot);
            drop(permit);
        });
    }
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(None);
        }
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    backend: &EtcdBackend,
    node: &NodeViews,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => None,
    };
    let Some(head) = head else {
        return respond(
            &mut stream,
            400,
            "text/plain",
            "bad request: send a GET with a complete head\n",
        )
        .await;
    };
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET is served\n").await;
    }
    let failure = backend.replica().group().failure();
    match path.split('?').next().unwrap_or("") {
        "/status" | "/health" if failure.is_some() => {
            // The group stopped rather than serve what it could not read; say why (the
            // reason names the file and byte offset) instead of "shutting down".
            let reason = failure.unwrap_or_default();
            let body = serde_json::json!({
                "health": "false",
                "reason": format!("the key-value group stopped: {reason}"),
            });
            let body = serde_json::to_string_pretty(&body).unwrap_or_default() + "\n";
            respond(&mut stream, 503, "application/json", &body).await
        }
        "/status" => match status_report(backend).await {
            Some(report) => {
                let body = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
                respond(&mut stream, 200, "application/json", &body).await
            }
            None => {
                respond(
                    &mut stream,
                    503,
                    "text/plain",
                    "the node is shutting down\n",
                )
                .await
            }
        },
        "/groups" => {
            let report = groups_report(backend.replica().node_id(), &node.groups).await;
            let body = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
            respond(&mut stream, 200, "application/json", &body).await
        }
        "/metrics" => {
            let report = status_report(backend).await;
            let mut body = render_metrics(&backend.replica().group().metrics(), report.as_ref());
            if let Some(peers) = &node.peers {
                render_transport(&mut body, &peers.snapshot());
            }
            if let Some(kafka) = &node.kafka {
                render_kafka(&mut body, kafka);
            }
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        "/health" => match status_report(backend).await {
            Some(report) if report.leader != 0 => {
                respond(
                    &mut stream,
                    200,
                    "application/json",
                    "{\"health\":\"true\"}\n",
                )
                .await
            }
            Some(_) => {
                let body = "{\"health\":\"false\",\"reason\":\"no leader\"}\n";
                respond(&mut stream, 503, "application/json", body).await
            }
            None => {
                let body = "{\"health\":\"false\",\"reason\":\"shutting down\"}\n";
                respond(&mut stream, 503, "application/json", body).await
            }
        },
        _ => {
            respond(
                &mut stream,
                404,
                "text/plain",
                "not found: try /status, /metrics, /health or /groups\n",
            )
            .await
        }
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_node::Histogram;

    #[test]
    fn histogram_buckets_are_cumulative_and_in_seconds() {
        let h = Histogram::default();
        for us in [1, 3, 3, 1000] {
            h.record(us);
        }
        let mut out = String::new();
        histogram(&mut out, "x_seconds", "help", &h.snapshot());
        assert!(
            out.contains("x_seconds_bucket{le=\"0.000002\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{le=\"0.000004\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_count 4\n"), "{out}");
        assert!(out.contains("x_seconds_sum 0.001007\n"), "{out}");
    }

    #[test]
    fn metrics_report_apply_lag_and_per_peer_lag_from_the_status() {
        let status = StatusReport {
            id: 1,
            role: "leader".into(),
            term: 3,
            leader: 1,
            commit_index: 10,
            applied_index: 7,
            first_index: 1,
            last_index: 10,
            snapshot_index: 0,
            revision: 5,
            voters: vec![1, 2],
            peers: vec![PeerReport {
                id: 2,
                match_index: 8,
                lag: 2,
                is_learner: false,
                recent_active: true,
            }],
        };
        let out = render_metrics(&MetricsSnapshot::default(), Some(&status));
        assert!(out.contains("ordo_apply_lag_entries 3\n"), "{out}");
        assert!(
            out.contains("ordo_peer_lag_entries{peer=\"2\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("ordo_is_leader 1\n"), "{out}");
    }
}
