//! `ordo status`: the cluster as a table, from each node's `/status`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};

use ordo_server::admin::StatusReport;

/// Flags of `ordo status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Admin addresses of the nodes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:9180",
        value_name = "ADDR,..."
    )]
    pub endpoints: Vec<SocketAddr>,
    /// Milliseconds to wait for each node.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// TLS to admin ports that serve it.
    #[command(flatten)]
    pub tls: AdminTlsArgs,
}

/// How to reach admin ports that serve TLS (`ordo server --admin-cert-file`), with
/// etcdctl's flag names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AdminTlsArgs {
    /// Speak TLS, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Present this client certificate (PEM), with --key; needs --cacert.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

impl AdminTlsArgs {
    /// The client configuration the flags ask for: none without --cacert.
    pub fn config(&self) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
        let Some(cacert) = &self.cacert else {
            if self.cert.is_some() || self.key.is_some() {
                bail!("--cert and --key need --cacert, the CA the server's certificate is checked against");
            }
            return Ok(None);
        };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => bail!("--cert and --key go together: the client certificate and its key"),
        };
        let config = ordo_node::tls::client_config(cacert, identity, &[b"http/1.1"])
            .context("cannot use the TLS files")?;
        Ok(Some(Arc::new(config)))
    }
}

/// Formats the table; unreachable endpoints get a row saying why.
pub fn table(rows: &[(SocketAddr, Result<StatusReport, String>)]) -> String {
    let mut out = format!(
        "{:<22} {:>4} {:<13} {:>6} {:>6} {:>10} {:>10} {:>8}\n",
        "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG"
    );
    for (addr, row) in rows {
        match row {
            Ok(s) => {
                let lag = if s.peers.is_empty() {
                    "-".to_string()
                } else {
                    s.peers
                        .iter()
                        .filter(|p| p.id != s.id)
                        .map(|p| format!("{}:{}", p.id, p.lag))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                out += &format!(
                    "{:<22} {:>4} {:<13} {:>6} {:>6} {:>10} {:>10} {:>8}\n",
                    addr.to_string(),
                    s.id,
                    s.role,
                    s.term,
                    s.leader,
                    s.commit_index,
                    s.applied_index,
                    lag
                );
            }
            Err(error) => out += &format!("{:<22} unreachable: {error}\n", addr.to_string()),
        }
    }
    out
}

/// Runs `ordo status`: prints the table; fails when no node answers.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let tls = args.tls.config()?;
    let rows = fetch::<StatusReport>(&args.endpoints, "/status", args.timeout_ms, tls).await;
    print!("{}", table(&rows));
    any_answered(&rows)
}

/// Asks every admin endpoint for `path` and reads its JSON answer, or says why not.
pub(crate) async fn fetch<R: serde::de::DeserializeOwned>(
    endpoints: &[SocketAddr],
    path: &str,
    timeout_ms: u64,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Vec<(SocketAddr, Result<R, String>)> {
    let timeout = Duration::from_millis(timeout_ms);
    let max = ordo_launch::http::RESPONSE_BYTES_MAX;
    let mut rows = Vec::new();
    for &addr in endpoints {
        let got = ordo_launch::http::get_over(addr, path, timeout, max, tls.as_ref()).await;
        let row = match got {
            Ok(r) if r.status == 200 => serde_json::from_str::<R>(&r.body)
                .map_err(|e| format!("not an ordo {path} answer: {e}")),
            Ok(r) => Err(format!("HTTP {}: {}", r.status, r.body.trim())),
            Err(e) => Err(e.to_string()),
        };
        rows.push((addr, row));
    }
    rows
}

/// Fails when no endpoint answered.
pub(crate) fn any_answered<R>(rows: &[(SocketAddr, Result<R, String>)]) -> anyhow::Result<()> {
    if rows.iter().all(|(_, r)| r.is_err()) {
        bail!("no node answered; check --endpoints (the nodes' --admin-addr)");
    }
    Ok(())
}
