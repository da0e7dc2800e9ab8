//! `ordo server`'s configuration: command-line flags, an optional TOML file, and the checks
//! that turn them into [`Settings`] before anything starts.
//!
//! Every flag has a key of the same name (with `_` for `-`) in the file; a flag given on the
//! command line wins over the file. Unknown keys in the file are an error naming the key, so
//! a misspelt option never silently falls back to its default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ordo_node::{FsyncPolicy, NodeConfig, NodeId};
use serde::Deserialize;

use ordo_kv::ServiceConfig;
use ordo_server::config::{KafkaAdvertised, KafkaConfig, KafkaListenerConfig};
use ordo_server::streams::broker_id;
use ordo_server::tls::TlsFiles;
use ordo_server::ServerConfig;

/// Largest configuration file read, so a wrong path (a device, a huge log) fails fast.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Most members a cluster may list.
pub const MEMBERS_MAX: usize = 64;

/// Largest application payload of one proposal: etcd's 1.5 MiB request limit plus room for
/// the command envelope.
const PROPOSAL_BYTES_MAX: usize = 2 << 20;

/// Why a configuration was refused; the message names the flag or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than [`CONFIG_FILE_BYTES_MAX`].
    #[error("the configuration file {path} is {bytes} bytes; at most {CONFIG_FILE_BYTES_MAX} are read (is this the right file?)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation, which names the key.
        message: String,
    },
    /// A required setting is missing.
    #[error("--{flag} is required (as a flag or `{key}` in the configuration file)")]
    Missing {
        /// The flag.
        flag: &'static str,
        /// The file key.
        key: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid --{flag}: {problem}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong and what would be right.
        problem: String,
    },
    /// The file sets a key that is no longer read.
    #[error("`{key}` in the configuration file is no longer read: {why}; remove it")]
    Removed {
        /// The key.
        key: &'static str,
        /// Why it went, and what replaced it.
        why: &'static str,
    },
    /// The settings do not fit together.
    #[error("{0}; check the flags and the configuration file")]
    Node(#[from] ordo_node::ConfigError),
}

/// The flags of `ordo server`. Every one may also be set in the `--config` file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServerArgs {
    /// TOML file with any of these settings (keys are the flag names with `_` for `-`);
    /// flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id: a positive integer, unique in the cluster, listed in --peers.
    #[arg(long)]
    pub id: Option<u64>,
    /// Directory for this node's log and snapshots (created if missing).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the etcd v3 gRPC API listens on [default: 127.0.0.1:2379].
    #[arg(long, value_name = "ADDR")]
    pub client_addr: Option<SocketAddr>,
    /// Address other nodes connect to [default: 127.0.0.1:2380].
    #[arg(long, value_name = "ADDR")]
    pub peer_addr: Option<SocketAddr>,
    /// Address of the HTTP admin endpoints /status, /metrics and /health
    /// [default: 127.0.0.1:9180].
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Every member's peer address, this node included: `1=127.0.0.1:2380,2=...`
    /// [default: this node alone].
    #[arg(long, value_name = "ID=ADDR,...")]
    pub peers: Option<String>,
    /// The cluster's id; nodes of another cluster are refused [default: from
    /// --cluster-token, else 1].
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// A name for the cluster, hashed into the cluster id when --cluster-id is not given.
    #[arg(long)]
    pub cluster_token: Option<String>,
    /// When log entries reach the disk: `always` (before acknowledging), `interval`
    /// (every --fsync-interval-ms) or `never` (left to the OS) [default: always].
    #[arg(long, value_name = "POLICY")]
    pub fsync: Option<String>,
    /// Milliseconds between fsyncs with `--fsync interval` [default: 10].
    #[arg(long)]
    pub fsync_interval_ms: Option<u64>,
    /// Milliseconds per Raft tick [default: 100].
    #[arg(long)]
    pub tick_interval_ms: Option<u64>,
    /// Ticks without hearing from a leader before a follower campaigns [default: 10].
    #[arg(long)]
    pub election_timeout_ticks: Option<u64>,
    /// Ticks between a leader's heartbeats [default: 1].
    #[arg(long)]
    pub heartbeat_interval_ticks: Option<u64>,
    /// Take a snapshot after this many applied entries, and once the last snapshot was
    /// larger than that log, not before the log since it is as large [default: 100000].
    #[arg(long)]
    pub snapshot_entries: Option<u64>,
    /// Take a snapshot after this many bytes of applied entries [default: 67108864].
    #[arg(long)]
    pub snapshot_bytes: Option<u64>,
    /// Entries kept behind a snapshot for slightly lagging followers [default: 10000].
    #[arg(long)]
    pub snapshot_tail_entries: Option<u64>,
    /// Log level: error, warn, info, debug or trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Start as a new member of a running cluster instead of bootstrapping one: the data
    /// directory must be empty, --peers lists the current members plus this node, and --id
    /// is the id `etcdctl member add` answered (it prints hex; give it in decimal, e.g.
    /// `--id $((16#<hex>))`). The node waits until the cluster adds it,
    /// then receives the log from the leader. Restart it later without --join.
    #[arg(long)]
    pub join: bool,
    /// Serve the etcd API over TLS with this certificate chain (PEM, the node's own
    /// certificate first); needs --key-file.
    #[arg(long, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,
    /// The private key of --cert-file (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to, with
    /// --client-cert-auth.
    #[arg(long, value_name = "FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require every client of the etcd API to present a certificate signed by
    /// --trusted-ca-file.
    #[arg(long)]
    pub client_cert_auth: bool,
    /// Mutual TLS between the nodes with this certificate chain (PEM, the node's own
    /// certificate first, usable for both server and client authentication and naming
    /// the node's peer address); needs --peer-key-file and --peer-trusted-ca-file. Every
    /// node of a cluster runs with peer TLS or none does.
    #[arg(long, value_name = "FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file.
    #[arg(long, value_name = "FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// CA certificates (PEM) every node's peer certificate must chain to: nodes with a
    /// certificate of another CA are refused before they say anything.
    #[arg(long, value_name = "FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Accepted for etcd's command lines; with peer TLS, Ordo always requires and checks
    /// the dialling node's certificate.
    #[arg(long)]
    pub peer_client_cert_auth: bool,
    /// Serve the admin endpoints (/status, /metrics, /health, /groups) over TLS with this
    /// certificate chain; needs --admin-key-file.
    #[arg(long, value_name = "FILE")]
    pub admin_cert_file: Option<PathBuf>,
    /// The private key of --admin-cert-file.
    #[arg(long, value_name = "FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// CA certificates (PEM) that admin clients' certificates must chain to, with
    /// --admin-client-cert-auth.
    #[arg(long, value_name = "FILE")]
    pub admin_trusted_ca_file: Option<PathBuf>,
    /// Require every admin client to present a certificate signed by
    /// --admin-trusted-ca-file.
    #[arg(long)]
    pub admin_client_cert_auth: bool,
    /// The kind of token `Authenticate` answers: `simple` (signed by a key of the cluster,
    /// which every member accepts) or, as etcd,
    /// `jwt,pub-key=FILE,priv-key=FILE,sign-method=ES256[,ttl=5m]` [default: simple].
    #[arg(long, value_name = "KIND")]
    pub auth_token: Option<String>,
    /// Seconds a token stays valid [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub auth_token_ttl: Option<u64>,
    /// The bcrypt cost of password hashes, 4 to 31 [default: 10].
    #[arg(long)]
    pub bcrypt_cost: Option<u32>,
    /// Address the Kafka API listens on [default: off].
    #[arg(long, value_name = "ADDR")]
    pub kafka_addr: Option<SocketAddr>,
    /// `host:port` Kafka clients are told to reach this node at (Kafka's
    /// `advertised.listeners`) [default: --kafka-addr, which must then not be a wildcard
    /// address].
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_advertised_addr: Option<String>,
    /// Largest Kafka request read, in bytes (Kafka's `socket.request.max.bytes`)
    /// [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    pub kafka_request_bytes_max: Option<usize>,
    /// Most Kafka connections served at once [default: 4096].
    #[arg(long, value_name = "N")]
    pub kafka_connections_max: Option<usize>,
    /// Create a topic a Kafka client asks for that does not exist, with one partition and
    /// three replicas (Kafka's `auto.create.topics.enable`) [default: off].
    #[arg(long)]
    pub kafka_auto_create_topics: bool,
}

/// The configuration file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    client_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    peers: Option<String>,
    /// Read only to refuse it by name: members learn each other's client URLs themselves.
    peer_client_addrs: Option<toml::Value>,
    cluster_id: Option<u64>,
    cluster_token: Option<String>,
    fsync: Option<String>,
    fsync_interval_ms: Option<u64>,
    tick_interval_ms: Option<u64>,
    election_timeout_ticks: Option<u64>,
    heartbeat_interval_ticks: Option<u64>,
    snapshot_entries: Option<u64>,
    snapshot_bytes: Option<u64>,
    snapshot_tail_entries: Option<u64>,
    log_level: Option<String>,
    join: Option<bool>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    trusted_ca_file: Option<PathBuf>,
    client_cert_auth: Option<bool>,
    peer_cert_file: Option<PathBuf>,
    peer_key_file: Option<PathBuf>,
    peer_trusted_ca_file: Option<PathBuf>,
    peer_client_cert_auth: Option<bool>,
    admin_cert_file: Option<PathBuf>,
    admin_key_file: Option<PathBuf>,
    admin_trusted_ca_file: Option<PathBuf>,
    admin_client_cert_auth: Option<bool>,
    auth_token: Option<String>,
    auth_token_ttl: Option<u64>,
    bcrypt_cost: Option<u32>,
    kafka_addr: Option<SocketAddr>,
    kafka_advertised_addr: Option<String>,
    kafka_request_bytes_max: Option<usize>,
    kafka_connections_max: Option<usize>,
    kafka_auto_create_topics: Option<bool>,
}

/// Everything `ordo server` runs with, checked: the node's configuration and the log level
/// of the process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What the node runs with.
    pub server: ServerConfig,
    /// The log level.
    pub log_level: tracing::Level,
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(read_err)?.len();
    if bytes > CONFIG_FILE_BYTES_MAX {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            bytes,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
    })
}

/// The names of one listener's TLS flags.
struct TlsFlags {
    cert_file: &'static str,
    key_file: &'static str,
    trusted_ca_file: &'static str,
    client_cert_auth: &'static str,
}

const CLIENT_TLS_FLAGS: TlsFlags = TlsFlags {
    cert_file: "cert-file",
    key_file: "key-file",
    trusted_ca_file: "trusted-ca-file",
    client_cert_auth: "client-cert-auth",
};

const ADMIN_TLS_FLAGS: TlsFlags = TlsFlags {
    cert_file: "admin-cert-file",
    key_file: "admin-key-file",
    trusted_ca_file: "admin-trusted-ca-file",
    client_cert_auth: "admin-client-cert-auth",
};

/// A listener's TLS files from their flags: a certificate and its key together or
/// neither; a trusted CA or client certificate authentication only with them.
fn listener_tls(
    flags: &TlsFlags,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    trusted_ca_file: Option<PathBuf>,
    client_cert_auth: bool,
) -> Result<Option<TlsFiles>, ConfigError> {
    let invalid = |flag, problem: String| Err(ConfigError::Invalid { flag, problem });
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => {
            if client_cert_auth && trusted_ca_file.is_none() {
                return invalid(
                    flags.client_cert_auth,
                    format!(
                        "needs --{}, the CAs client certificates must chain to",
                        flags.trusted_ca_file
                    ),
                );
            }
            Ok(Some(TlsFiles {
                cert_file,
                key_file,
                trusted_ca_file,
                client_cert_auth,
            }))
        }
        (Some(_), None) => invalid(
            flags.cert_file,
            format!("needs --{}, the certificate's private key", flags.key_file),
        ),
        (None, Some(_)) => invalid(
            flags.key_file,
            format!("needs --{}, the certificate of the key", flags.cert_file),
        ),
        (None, None) if client_cert_auth || trusted_ca_file.is_some() => invalid(
            if client_cert_auth {
                flags.client_cert_auth
            } else {
                flags.trusted_ca_file
            },
            format!(
                "checks client certificates over TLS: give --{} and --{} too",
                flags.cert_file, flags.key_file
            ),
        ),
        (None, None) => Ok(None),
    }
}

/// The etcd API's authentication settings from their flags.
fn etcd_config(
    auth_token: Option<&str>,
    auth_token_ttl: Option<u64>,
    bcrypt_cost: Option<u32>,
) -> Result<ServiceConfig, ConfigError> {
    let mut config = ServiceConfig::default();
    let invalid = |problem: String| ConfigError::Invalid {
        flag: "auth-token",
        problem,
    };
    match auth_token {
        None | Some("simple") => {}
        Some(jwt) if jwt == "jwt" || jwt.starts_with("jwt,") => {
            config.auth_token = jwt_tokens(jwt, auth_token_ttl).map_err(invalid)?;
        }
        Some(other) => {
            return Err(invalid(format!(
                "`{other}` is not a token kind: simple, or jwt,pub-key=FILE,priv-key=FILE,sign-method=ES256[,ttl=5m]"
            )))
        }
    }
    if let Some(seconds) = auth_token_ttl {
        if seconds == 0 {
            return Err(ConfigError::Invalid {
                flag: "auth-token-ttl",
                problem: "must be at least 1 second".into(),
            });
        }
        config.auth_token_ttl = std::time::Duration::from_secs(seconds);
    }
    if let Some(cost) = bcrypt_cost {
        if !(4..=ordo_kv::auth::BCRYPT_COST_MAX).contains(&cost) {
            return Err(ConfigError::Invalid {
                flag: "bcrypt-cost",
                problem: format!(
                    "{cost} is not between 4 and {}",
                    ordo_kv::auth::BCRYPT_COST_MAX
                ),
            });
        }
        config.bcrypt_cost = cost;
    }
    Ok(config)
}

/// etcd's `jwt,pub-key=FILE,priv-key=FILE,sign-method=METHOD[,ttl=DURATION]`: the keys
/// read and checked now. Without `ttl`, `--auth-token-ttl` (or 5 minutes, etcd's default).
fn jwt_tokens(spec: &str, auth_token_ttl: Option<u64>) -> Result<ordo_kv::auth::TokenKind, String> {
    let (mut public, mut private, mut method, mut ttl) = (None, None, None, None);
    for option in spec.split(',').skip(1) {
        let (name, value) = option
            .split_once('=')
            .ok_or_else(|| format!("`{option}` is not NAME=VALUE"))?;
        match name {
            "pub-key" => public = Some(PathBuf::from(value)),
            "priv-key" => private = Some(PathBuf::from(value)),
            "sign-method" => method = Some(value.to_string()),
            "ttl" => ttl = Some(parse_duration(value)?),
            other => {
                return Err(format!(
                    "unknown jwt option `{other}` (pub-key, priv-key, sign-method, ttl)"
                ))
            }
        }
    }
    let public = public.ok_or("jwt needs pub-key=FILE, the public key tokens are checked with")?;
    let method = method.ok_or("jwt needs sign-method=ES256 (or RS256, PS256, ES384, …)")?;
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
    };
    let public_pem = read("pub-key", &public)?;
    let private_pem = private
        .as_deref()
        .map(|p| read("priv-key", p))
        .transpose()?;
    let ttl = ttl.unwrap_or(std::time::Duration::from_secs(
        auth_token_ttl.unwrap_or(300),
    ));
    let tokens =
        ordo_kv::auth::JwtTokens::from_pem(&method, &public_pem, private_pem.as_deref(), ttl)?;
    Ok(ordo_kv::auth::TokenKind::Jwt(std::sync::Arc::new(tokens)))
}

/// A duration as etcd writes one: a number and `s`, `m` or `h` (`90s`, `5m`, `1h`).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("ttl `{text}` is not a duration such as 90s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => {
            return Err(format!(
                "ttl `{text}` is not a duration such as 90s, 5m or 1h"
            ))
        }
    };
    if seconds == 0 {
        return Err("ttl must be at least 1s".into());
    }
    Ok(std::time::Duration::from_secs(seconds))
}

/// The peer port's TLS files from their flags: all three files or none.
fn peer_tls(
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    trusted_ca_file: Option<PathBuf>,
    client_cert_auth: bool,
) -> Result<Option<TlsFiles>, ConfigError> {
    let invalid = |flag, problem: &str| {
        Err(ConfigError::Invalid {
            flag,
            problem: problem.into(),
        })
    };
    match (cert_file, key_file, trusted_ca_file) {
        (Some(cert_file), Some(key_file), Some(trusted_ca_file)) => Ok(Some(TlsFiles {
            cert_file,
            key_file,
            trusted_ca_file: Some(trusted_ca_file),
            client_cert_auth: true,
        })),
        (None, None, None) if client_cert_auth => invalid(
            "peer-client-cert-auth",
            "checks the other nodes' certificates over peer TLS: give --peer-cert-file, --peer-key-file and --peer-trusted-ca-file too",
        ),
        (None, None, None) => Ok(None),
        (None, _, _) => invalid(
            "peer-cert-file",
            "missing: peer TLS needs the node's certificate, its key and the cluster's CAs",
        ),
        (_, None, _) => invalid(
            "peer-key-file",
            "missing: peer TLS needs the node's certificate, its key and the cluster's CAs",
        ),
        (_, _, None) => invalid(
            "peer-trusted-ca-file",
            "missing: peer TLS needs the CAs every node's certificate must chain to",
        ),
    }
}

/// Parses `1=127.0.0.1:2380,2=...`.
pub fn parse_member_list(
    flag: &'static str,
    text: &str,
) -> Result<BTreeMap<NodeId, SocketAddr>, ConfigError> {
    let invalid = |problem: String| ConfigError::Invalid { flag, problem };
    let mut members = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((id, addr)) = item.split_once('=') else {
            return Err(invalid(format!(
                "`{item}` is not ID=ADDR (for example 1=127.0.0.1:2380)"
            )));
        };
        let id: NodeId = id
            .trim()
            .parse()
            .ok()
            .filter(|&id| id != 0)
            .ok_or_else(|| invalid(format!("`{id}` in `{item}` is not a positive node id")))?;
        let addr: SocketAddr = addr.trim().parse().map_err(|_| {
            invalid(format!(
                "`{addr}` in `{item}` is not an IP:PORT address (host names are not resolved)"
            ))
        })?;
        if members.insert(id, addr).is_some() {
            return Err(invalid(format!("node {id} is listed twice")));
        }
        if members.len() > MEMBERS_MAX {
            return Err(invalid(format!("more than {MEMBERS_MAX} members")));
        }
    }
    Ok(members)
}

/// A joining member starts from nothing; data in its directory means it is a member already
/// (restart it without --join) or the directory is the wrong one.
fn check_empty_for_join(data_dir: &Path) -> Result<(), ConfigError> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(ConfigError::Invalid {
                flag: "join",
                problem: format!("cannot read the data directory {}: {e}", data_dir.display()),
            })
        }
    };
    if let Some(entry) = entries.flatten().next() {
        return Err(ConfigError::Invalid {
            flag: "join",
            problem: format!(
                "the data directory {} is not empty (it holds {}); a joining member starts from an empty directory. If this node already joined, restart it without --join; otherwise give an empty --data-dir",
                data_dir.display(),
                entry.file_name().to_string_lossy()
            ),
        });
    }
    Ok(())
}

/// The Kafka listener's settings: none without `--kafka-addr`.
fn kafka_config(
    id: NodeId,
    addr: Option<SocketAddr>,
    advertised: Option<String>,
    request_bytes_max: Option<usize>,
    connections_max: Option<usize>,
    auto_create_topics: bool,
) -> Result<Option<KafkaConfig>, ConfigError> {
    let Some(addr) = addr else {
        let set = [
            ("kafka-advertised-addr", advertised.is_some()),
            ("kafka-request-bytes-max", request_bytes_max.is_some()),
            ("kafka-connections-max", connections_max.is_some()),
            ("kafka-auto-create-topics", auto_create_topics),
        ];
        if let Some((flag, _)) = set.iter().find(|(_, set)| *set) {
            return Err(ConfigError::Invalid {
                flag,
                problem: "needs --kafka-addr, the Kafka listener it configures".into(),
            });
        }
        return Ok(None);
    };
    if broker_id(id).is_none() {
        return Err(ConfigError::Invalid {
            flag: "kafka-addr",
            problem: format!(
                "node id {id} is not a Kafka broker id (1 to 2147483647), which a node with a \
                 Kafka listener needs"
            ),
        });
    }
    let advertised = match advertised {
        Some(text) => KafkaAdvertised::parse(&text).map_err(|problem| ConfigError::Invalid {
            flag: "kafka-advertised-addr",
            problem,
        })?,
        None if addr.ip().is_unspecified() => {
            return Err(ConfigError::Invalid {
                flag: "kafka-advertised-addr",
                problem: format!(
                    "--kafka-addr {addr} listens on every address, so clients must be told \
                     which one reaches this node: give --kafka-advertised-addr HOST:PORT"
                ),
            })
        }
        None => KafkaAdvertised {
            host: addr.ip().to_string(),
            port: addr.port(),
        },
    };
    let mut listener = KafkaListenerConfig::default();
    if let Some(bytes) = request_bytes_max {
        // Room for a request header and a little more; an i32 size on the wire.
        if !(1024..=i32::MAX as usize).contains(&bytes) {
            return Err(ConfigError::Invalid {
                flag: "kafka-request-bytes-max",
                problem: format!("{bytes} is not from 1024 to {}", i32::MAX),
            });
        }
        listener.request_bytes_max = bytes;
    }
    if let Some(n) = connections_max {
        if n == 0 {
            return Err(ConfigError::Invalid {
                flag: "kafka-connections-max",
                problem: "must be at least 1".into(),
            });
        }
        listener.connections_max = n;
    }
    Ok(Some(KafkaConfig {
        addr,
        advertised,
        listener,
        auto_create_topics,
    }))
}

/// FNV-1a: a stable hash, so every node derives the same cluster id from a token.
fn cluster_id_from_token(token: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in token.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash.max(1)
}

impl Settings {
    /// Merges the flags over the file (if any), applies defaults and checks the result.
    pub fn from_args(args: &ServerArgs) -> Result<Settings, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        macro_rules! pick {
            ($field:ident) => {
                args.$field.clone().or(file.$field.clone())
            };
        }
        let id = pick!(id).ok_or(ConfigError::Missing {
            flag: "id",
            key: "id",
        })?;
        if id == 0 {
            return Err(ConfigError::Invalid {
                flag: "id",
                problem: "must be a positive integer (0 means \"no node\")".into(),
            });
        }
        let data_dir = pick!(data_dir).ok_or(ConfigError::Missing {
            flag: "data-dir",
            key: "data_dir",
        })?;
        let client_addr = pick!(client_addr).unwrap_or(([127, 0, 0, 1], 2379).into());
        let peer_addr = pick!(peer_addr).unwrap_or(([127, 0, 0, 1], 2380).into());
        let admin_addr = pick!(admin_addr).unwrap_or(([127, 0, 0, 1], 9180).into());
        let peers = match pick!(peers) {
            Some(text) => parse_member_list("peers", &text)?,
            None => BTreeMap::from([(id, peer_addr)]),
        };
        if !peers.contains_key(&id) {
            return Err(ConfigError::Invalid {
                flag: "peers",
                problem: format!("this node ({id}) must be listed among the peers"),
            });
        }
        if file.peer_client_addrs.is_some() {
            return Err(ConfigError::Removed {
                key: "peer_client_addrs",
                why: "members now learn each other's client URLs from the members themselves, over the peer transport",
            });
        }
        let cluster_id = match (pick!(cluster_id), pick!(cluster_token)) {
            (Some(0), _) => {
                return Err(ConfigError::Invalid {
                    flag: "cluster-id",
                    problem: "must be a positive integer".into(),
                })
            }
            (Some(id), _) => id,
            (None, Some(token)) => cluster_id_from_token(&token),
            (None, None) => 1,
        };
        let fsync = match pick!(fsync).as_deref().unwrap_or("always") {
            "always" => FsyncPolicy::Always,
            "interval" => FsyncPolicy::Interval {
                interval_ms: pick!(fsync_interval_ms).unwrap_or(10),
            },
            "never" => FsyncPolicy::Never,
            other => {
                return Err(ConfigError::Invalid {
                    flag: "fsync",
                    problem: format!("`{other}` is not one of always, interval, never"),
                })
            }
        };
        let log_level = match pick!(log_level) {
            None => tracing::Level::INFO,
            Some(text) => text.parse().map_err(|_| ConfigError::Invalid {
                flag: "log-level",
                problem: format!("`{text}` is not one of error, warn, info, debug, trace"),
            })?,
        };

        let client_tls = listener_tls(
            &CLIENT_TLS_FLAGS,
            pick!(cert_file),
            pick!(key_file),
            pick!(trusted_ca_file),
            args.client_cert_auth || file.client_cert_auth.unwrap_or(false),
        )?;
        let admin_tls = listener_tls(
            &ADMIN_TLS_FLAGS,
            pick!(admin_cert_file),
            pick!(admin_key_file),
            pick!(admin_trusted_ca_file),
            args.admin_client_cert_auth || file.admin_client_cert_auth.unwrap_or(false),
        )?;
        let peer_tls = peer_tls(
            pick!(peer_cert_file),
            pick!(peer_key_file),
            pick!(peer_trusted_ca_file),
            args.peer_client_cert_auth || file.peer_client_cert_auth.unwrap_or(false),
        )?;

        let etcd = etcd_config(
            pick!(auth_token).as_deref(),
            pick!(auth_token_ttl),
            pick!(bcrypt_cost),
        )?;

        let kafka = kafka_config(
            id,
            pick!(kafka_addr),
            pick!(kafka_advertised_addr),
            pick!(kafka_request_bytes_max),
            pick!(kafka_connections_max),
            args.kafka_auto_create_topics || file.kafka_auto_create_topics.unwrap_or(false),
        )?;

        let join = args.join || file.join.unwrap_or(false);
        if join {
            check_empty_for_join(&data_dir)?;
        }

        let mut node = NodeConfig::new(id, data_dir, peer_addr, peers);
        node.join = join;
        node.peer_tls = peer_tls;
        node.cluster_id = cluster_id;
        node.fsync = fsync;
        node.proposal_bytes_max = PROPOSAL_BYTES_MAX;
        node.append_bytes_max = node.append_bytes_max.max(PROPOSAL_BYTES_MAX as u64);
        macro_rules! set {
            ($field:ident) => {
                if let Some(value) = pick!($field) {
                    node.$field = value;
                }
            };
        }
        set!(tick_interval_ms);
        set!(election_timeout_ticks);
        set!(heartbeat_interval_ticks);
        set!(snapshot_entries);
        set!(snapshot_bytes);
        set!(snapshot_tail_entries);
        node.validate()?;
        Ok(Settings {
            server: ServerConfig {
                node,
                client_addr,
                admin_addr,
                client_tls,
                admin_tls,
                etcd,
                kafka,
            },
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServerArgs {
        ServerArgs {
            id: Some(2),
            data_dir: Some("/tmp/ordo-test".into()),
            peers: Some("1=127.0.0.1:2380,2=127.0.0.1:2381,3=127.0.0.1:2382".into()),
            ..ServerArgs::default()
        }
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ordo.toml");
        std::fs::write(
            &path,
            "tick_interval_ms = 20\nelection_timeout_ticks = 30\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        a.election_timeout_ticks = Some(15);
        let config = Settings::from_args(&a).unwrap();
        assert_eq!(config.server.node.tick_interval_ms, 20);
        assert_eq!(config.server.node.election_timeout_ticks, 15);
        assert_eq!(config.server.node.fsync, FsyncPolicy::Always);
        assert_eq!(config.server.client_addr, "127.0.0.1:2379".parse().unwrap());
        assert_eq!(config.server.node.peers.len(), 3);
    }

    #[test]
    fn the_kafka_listener_is_off_by_default_and_set_from_the_flags_or_the_file() {
        assert!(Settings::from_args(&args()).unwrap().server.kafka.is_none());

        let mut a = args();
        a.kafka_addr = Some("127.0.0.1:9092".parse().unwrap());
        let kafka = Settings::from_args(&a).unwrap().server.kafka.unwrap();
        assert_eq!(kafka.addr, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(kafka.advertised.to_string(), "127.0.0.1:9092");
        assert_eq!(kafka.listener, KafkaListenerConfig::default());
        assert!(!kafka.auto_create_topics, "off unless asked for");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ordo.toml");
        std::fs::write(
            &path,
            "kafka_addr = \"0.0.0.0:19092\"\nkafka_advertised_addr = \"broker-2.example:19092\"\n\
             kafka_request_bytes_max = 1048576\nkafka_connections_max = 64\n\
             kafka_auto_create_topics = true\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        let kafka = Settings::from_args(&a).unwrap().server.kafka.unwrap();
        assert_eq!(kafka.addr, "0.0.0.0:19092".parse().unwrap());
        assert_eq!(
            kafka.advertised,
            KafkaAdvertised {
                host: "broker-2.example".into(),
                port: 19092
            }
        );
        assert_eq!(kafka.listener.request_bytes_max, 1 << 20);
        assert_eq!(kafka.listener.connections_max, 64);
        assert!(kafka.auto_create_topics);

        let refused = |a: ServerArgs| Settings::from_args(&a).unwrap_err().to_string();
        let mut a = args();
        a.kafka_addr = Some("127.0.0.1:9092".parse().unwrap());
        a.kafka_request_bytes_max = Some(10);
        assert!(refused(a).contains("--kafka-request-bytes-max"));
        let mut a = args();
        a.kafka_addr = Some("127.0.0.1:9092".parse().unwrap());
        a.kafka_connections_max = Some(0);
        assert!(refused(a).contains("--kafka-connections-max"));
    }

    #[test]
    fn client_tls_comes_from_the_flags_or_the_file_and_half_a_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ordo.toml");
        std::fs::write(
            &path,
            "cert_file = \"node.pem\"\nkey_file = \"node-key.pem\"\ntrusted_ca_file = \"ca.pem\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        a.client_cert_auth = true;
        let tls = Settings::from_args(&a).unwrap().server.client_tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("node.pem"));
        assert_eq!(tls.trusted_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(tls.client_cert_auth);
        assert!(Settings::from_args(&args())
            .unwrap()
            .server
            .client_tls
            .is_none());

        let refused = |a: ServerArgs| Settings::from_args(&a).unwrap_err().to_string();
        let mut a = args();
        a.cert_file = Some("node.pem".into());
        assert!(refused(a).contains("--key-file"));
        let mut a = args();
        a.key_file = Some("node-key.pem".into());
        assert!(refused(a).contains("--cert-file"));
        let mut a = args();
        a.client_cert_auth = true;
        assert!(refused(a).contains("--cert-file"));
        let mut a = args();
        a.cert_file = Some("node.pem".into());
        a.key_file = Some("node-key.pem".into());
        a.client_cert_auth = true;
        assert!(refused(a).contains("--trusted-ca-file"));
    }

    #[test]
    fn peer_tls_needs_all_three_files_and_always_checks_the_dialling_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ordo.toml");
        std::fs::write(
            &path,
            "peer_cert_file = \"node.pem\"\npeer_key_file = \"node-key.pem\"\npeer_trusted_ca_file = \"ca.pem\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path);
        let tls = Settings::from_args(&a)
            .unwrap()
            .server
            .node
            .peer_tls
            .unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("node.pem"));
        assert_eq!(tls.trusted_ca_file, Some(PathBuf::from("ca.pem")));
        assert!(tls.client_cert_auth);
        assert!(Settings::from_args(&args())
            .unwrap()
            .server
            .node
            .peer_tls
            .is_none());

        let refused = |a: ServerArgs| Settings::from_args(&a).unwrap_err().to_string();
        let mut a = args();
        a.peer_cert_file = Some("node.pem".into());
        a.peer_key_file = Some("node-key.pem".into());
        assert!(refused(a).contains("--peer-trusted-ca-file"));
        let mut a = args();
        a.peer_trusted_ca_file = Some("ca.pem".into());
        assert!(refused(a).contains("--peer-cert-file"));
        let mut a = args();
        a.peer_client_cert_auth = true;
        assert!(refused(a).contains("--peer-client-cert-auth"));
    }

    #[test]
    fn auth_token_kinds_and_their_options_are_checked() {
        let refused = |spec: &str| {
            let mut a = args();
            a.auth_token = Some(spec.into());
            Settings::from_args(&a).unwrap_err().to_string()
        };
        assert!(refused("opaque").contains("not a token kind"));
        assert!(refused("jwt,sign-method=ES256").contains("pub-key"));
        assert!(
            refused("jwt,pub-key=/nonexistent.pem,sign-method=ES256").contains("/nonexistent.pem")
        );
        assert!(refused("jwt,pub-key=x,colour=blue").contains("unknown jwt option `colour`"));
        assert!(refused("jwt,pub-key=x,sign-method=ES256,ttl=soon").contains("ttl `soon`"));
        assert_eq!(
            parse_duration("5m"),
            Ok(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("2h"),
            Ok(std::time::Duration::from_secs(7200))
        );
        let mut a = args();
        a.bcrypt_cost = Some(3);
        assert!(Settings::from_args(&a)
            .unwrap_err()
            .to_string()
            .contains("bcrypt-cost"));
    }

    #[test]
    fn unknown_key_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ordo.toml");
        std::fs::write(&path, "tick_intervl_ms = 20\n").unwrap();
        let mut a = args();
        a.config = Some(path);
        let error = Settings::from_args(&a).unwrap_err().to_string();
        assert!(error.contains("tick_intervl_ms"), "{error}");
    }

    #[test]
    fn a_file_that_still_sets_peer_client_addrs_is_refused_naming_the_key_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ordo.toml");
        std::fs::write(&path, "peer_client_addrs = \"1=127.0.0.1:2379\"\n").unwrap();
        let mut a = args();
        a.config = Some(path);
        let error = Settings::from_args(&a).unwrap_err().to_string();
        assert!(
            error.contains("peer_client_addrs") && error.contains("learn each other's client URLs"),
            "{error}"
        );
    }

    #[test]
    fn malformed_peer_list_names_the_item() {
        let mut a = args();
        a.peers = Some("1=127.0.0.1:2380,two=127.0.0.1:2381".into());
        let error = Settings::from_args(&a).unwrap_err().to_string();
        assert!(
            error.contains("--peers") && error.contains("two"),
            "{error}"
        );
    }

    #[test]
    fn node_missing_from_its_own_peer_list_is_refused() {
        let mut a = args();
        a.id = Some(4);
        let error = Settings::from_args(&a).unwrap_err().to_string();
        assert!(error.contains("must be listed"), "{error}");
    }

    #[test]
    fn unknown_fsync_policy_is_refused() {
        let mut a = args();
        a.fsync = Some("sometimes".into());
        let error = Settings::from_args(&a).unwrap_err().to_string();
        assert!(
            error.contains("--fsync") && error.contains("sometimes"),
            "{error}"
        );
    }

    #[test]
    fn join_with_an_empty_or_missing_directory_starts_a_joining_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args();
        a.join = true;
        a.data_dir = Some(dir.path().join("new"));
        assert!(Settings::from_args(&a).unwrap().server.node.join);
        a.data_dir = Some(dir.path().to_path_buf());
        assert!(Settings::from_args(&a).unwrap().server.node.join);
        a.join = false;
        assert!(!Settings::from_args(&a).unwrap().server.node.join);
    }

    #[test]
    fn join_with_a_non_empty_directory_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("group-1")).unwrap();
        let mut a = args();
        a.join = true;
        a.data_dir = Some(dir.path().to_path_buf());
        let error = Settings::from_args(&a).unwrap_err().to_string();
        assert!(
            error.contains("--join") && error.contains("not empty") && error.contains("group-1"),
            "{error}"
        );
    }

    #[test]
    fn cluster_token_gives_every_node_the_same_id() {
        let mut a = args();
        a.cluster_token = Some("bank".into());
        let one = Settings::from_args(&a).unwrap().server.node.cluster_id;
        a.id = Some(3);
        let other = Settings::from_args(&a).unwrap().server.node.cluster_id;
        assert_eq!(one, other);
        assert_ne!(one, 1);
    }
}
