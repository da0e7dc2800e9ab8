//! `ordo kv`: a thin etcd v3 client (put, get, del, watch) over the generated gRPC types.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use ordo_kv::proto::etcdserverpb::kv_client::KvClient;
use ordo_kv::proto::etcdserverpb::watch_client::WatchClient;
use ordo_kv::proto::etcdserverpb::{
    watch_request, DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use ordo_kv::proto::mvccpb::event::EventType;
use tokio_stream::StreamExt as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Most events `ordo kv watch` prints before exiting.
pub const WATCH_EVENTS_MAX: u64 = 1_000_000;

/// Flags of `ordo kv`.
#[derive(Debug, Clone, clap::Args)]
pub struct KvArgs {
    /// Client addresses of the nodes, comma-separated; the first that answers is used.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        value_name = "ADDR,..."
    )]
    pub endpoints: Vec<String>,
    /// Milliseconds a request may take.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Speak TLS, trusting the CA certificates in this PEM file (etcdctl's flag).
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Present this client certificate (PEM), with --key; needs --cacert.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The operation.
    #[command(subcommand)]
    pub op: KvOp,
}

/// One `ordo kv` operation.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KvOp {
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key, or every key with a prefix.
    Get {
        /// The key (or prefix).
        key: String,
        /// Read every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Read as of this revision (0: the newest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Answer from the contacted node without asking the leader (may be stale).
        #[arg(long)]
        serializable: bool,
        /// Most keys to print (0: no limit).
        #[arg(long, default_value_t = 0)]
        limit: i64,
    },
    /// Delete a key, or every key with a prefix.
    Del {
        /// The key (or prefix).
        key: String,
        /// Delete every key starting with KEY.
        #[arg(long)]
        prefix: bool,
    },
    /// Print changes to a key or prefix as they happen, until COUNT events or Ctrl-C.
    Watch {
        /// The key (or prefix).
        key: String,
        /// Watch every key starting with KEY.
        #[arg(long)]
        prefix: bool,
        /// Start from this revision (0: from now).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Exit after this many events.
        #[arg(long, default_value_t = WATCH_EVENTS_MAX)]
        count: u64,
    },
}

pub use ordo_kv::keys::prefix_end;

fn read_pem(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("--{flag}: cannot read {}", path.display()))
}

/// The TLS settings the flags ask for: none without --cacert.
fn tls(args: &KvArgs) -> anyhow::Result<Option<ClientTlsConfig>> {
    let Some(cacert) = &args.cacert else {
        if args.cert.is_some() || args.key.is_some() {
            bail!("--cert and --key need --cacert, the CA the server's certificate is checked against");
        }
        return Ok(None);
    };
    let mut config =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem("cacert", cacert)?));
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read_pem("cert", cert)?,
                read_pem("key", key)?,
            ));
        }
        (None, None) => {}
        _ => bail!("--cert and --key go together: the client certificate and its key"),
    }
    Ok(Some(config))
}

async fn connect(args: &KvArgs) -> anyhow::Result<Channel> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let tls = tls(args)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut failures = Vec::new();
    for endpoint in &args.endpoints {
        let uri = if endpoint.contains("://") {
            endpoint.clone()
        } else {
            format!("{scheme}://{endpoint}")
        };
        let mut attempt = Endpoint::from_shared(uri)
            .with_context(|| format!("`{endpoint}` is not an address"))?
            .connect_timeout(timeout)
            .timeout(timeout);
        if let Some(tls) = &tls {
            attempt = attempt
                .tls_config(tls.clone())
                .with_context(|| format!("`{endpoint}`: cannot use TLS with it"))?;
        }
        let attempt = attempt.connect().await;
        match attempt {
            Ok(channel) => return Ok(channel),
            Err(error) => {
                // tonic's own words are only "transport error": say what failed below it
                // (a refused connection, an untrusted certificate, …).
                let mut text = format!("{endpoint}: {error}");
                let mut cause = std::error::Error::source(&error);
                while let Some(inner) = cause {
                    text.push_str(&format!(": {inner}"));
                    cause = inner.source();
                }
                failures.push(text);
            }
        }
    }
    bail!(
        "no endpoint answered ({}); check --endpoints (the nodes' --client-addr)",
        failures.join("; ")
    )
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    let mut text = format!("{} ({:?})", status.message(), status.code());
    // A connection refused by a TLS port shows only below the status.
    let mut cause = std::error::Error::source(&status);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    anyhow::anyhow!(text)
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs one `ordo kv` operation, printing like `etcdctl`.
pub async fn run(args: KvArgs) -> anyhow::Result<()> {
    let channel = connect(&args).await?;
    match args.op {
        KvOp::Put { key, value } => {
            let request = PutRequest {
                key: key.into_bytes(),
                value: value.into_bytes(),
                ..Default::default()
            };
            KvClient::new(channel)
                .put(request)
                .await
                .map_err(status_error)?;
            println!("OK");
        }
        KvOp::Get {
            key,
            prefix,
            rev,
            serializable,
            limit,
        } => {
            let range_end = if prefix {
                prefix_end(key.as_bytes())
            } else {
                Vec::new()
            };
            let request = RangeRequest {
                key: key.into_bytes(),
                range_end,
                revision: rev,
                serializable,
                limit,
                ..Default::default()
            };
            let response = KvClient::new(channel)
                .range(request)
                .await
                .map_err(status_error)?
                .into_inner();
            for kv in response.kvs {
                println!("{}\n{}", show(&kv.key), show(&kv.value));
            }
        }
        KvOp::Del { key, prefix } => {
            let range_end = if prefix {
                prefix_end(key.as_bytes())
            } else {
                Vec::new()
            };
            let request = DeleteRangeRequest {
                key: key.into_bytes(),
                range_end,
                ..Default::default()
            };
            let response = KvClient::new(channel)
                .delete_range(request)
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", response.deleted);
        }
        KvOp::Watch {
            key,
            prefix,
            rev,
            count,
        } => {
            let range_end = if prefix {
                prefix_end(key.as_bytes())
            } else {
                Vec::new()
            };
            let create = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: key.into_bytes(),
                        range_end,
                        start_revision: rev,
                        ..Default::default()
                    },
                )),
            };
            // The request stream stays open (never ends) so the server keeps the watch.
            let requests = tokio_stream::iter([create]).chain(tokio_stream::pending());
            let mut responses = WatchClient::new(channel)
                .watch(requests)
                .await
                .map_err(status_error)?
                .into_inner();
            let mut seen = 0;
            while seen < count.min(WATCH_EVENTS_MAX) {
                let next = tokio::select! {
                    next = responses.message() => next.map_err(status_error)?,
                    _ = tokio::signal::ctrl_c() => break,
                };
                let Some(response) = next else {
                    bail!("the server ended the watch");
                };
                if response.canceled {
                    bail!("the watch was cancelled: {}", response.cancel_reason);
                }
                for event in response.events {
                    let Some(kv) = event.kv else { continue };
                    match EventType::try_from(event.r#type) {
                        Ok(EventType::Delete) => println!("DELETE\n{}", show(&kv.key)),
                        _ => println!("PUT\n{}\n{}", show(&kv.key), show(&kv.value)),
                    }
                    seen += 1;
                    if seen >= count {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}
