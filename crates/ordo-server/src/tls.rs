//! TLS on a listener, with rustls: the certificate, key and trusted CAs read from PEM files
//! (etcd's `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`), read
//! again when they change, and handshakes that run beside the accept loop.
//!
//! **Reloading.** Every accepted connection first looks at the files' metadata (length,
//! modification time, inode: a handful of `stat` calls, nothing read). When any changed,
//! the files are read and checked again, and connections from then on use the new
//! configuration; established connections keep theirs. A reload that fails (a key that no
//! longer matches its certificate while a rotation is half done, say) logs why once and
//! keeps serving with the previous configuration, and the next connection tries again.
//!
//! **Refusals.** A handshake that fails (a client speaking plain text to the TLS port, an
//! untrusted or expired client certificate, a client that trusts another CA and gives up)
//! or that does not finish within [`HANDSHAKE_TIMEOUT`] closes the connection with a WARN
//! line naming the client and the reason; a flood of them logs a few lines per window and
//! counts the rest. At most [`HANDSHAKES_IN_FLIGHT_MAX`] handshakes run at once: beyond
//! that the listener stops accepting until one ends, so slow clients cannot pile up tasks.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use ordo_node::LogThrottle;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes running at once, at most.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Refusal lines logged per window, and the window.
const REFUSALS_LOGGED_PER_WINDOW: u32 = 10;
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);
/// A pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Where a listener's certificate, key and trusted CAs are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The listener's certificate chain, PEM, its own certificate first.
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates, PEM, that a client certificate must chain to.
    pub trusted_ca_file: Option<PathBuf>,
    /// Clients must present a certificate that chains to `trusted_ca_file`.
    pub client_cert_auth: bool,
}

/// Why a TLS configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        reason: io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {problem}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Client certificate authentication without CAs to check them against.
    #[error("client certificate authentication needs --trusted-ca-file: the CAs client certificates must chain to")]
    ClientAuthWithoutCa,
    /// The trusted CA file holds nothing rustls accepts as a CA.
    #[error("trusted CA file {path}: {problem}")]
    TrustedCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the certificate and key together.
    #[error("certificate {cert} with key {key}: {reason}")]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason (a key that does not match the certificate, say).
        reason: rustls::Error,
    },
}

/// What identifies a version of a file without reading it.
type Stamp = Option<(u64, u64, SystemTime)>;

/// The TLS configuration new connections get, reloaded when its files change.
pub struct TlsAcceptor {
    files: TlsFiles,
    current: Mutex<Current>,
}

struct Current {
    config: Arc<ServerConfig>,
    /// The files' stamps when `config` was read.
    stamps: Vec<Stamp>,
    /// The stamps of a reload that failed, so it is logged once.
    failed: Option<Vec<Stamp>>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// Reads and checks the files.
    pub fn new(files: TlsFiles) -> Result<TlsAcceptor, TlsError> {
        let stamps = stamps(&files);
        let config = Arc::new(load(&files)?);
        Ok(TlsAcceptor {
            files,
            current: Mutex::new(Current {
                config,
                stamps,
                failed: None,
            }),
        })
    }

    /// The files this acceptor serves.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration for a connection accepted now: the files are read again first
    /// if they changed (see the module documentation).
    pub fn config(&self) -> Arc<ServerConfig> {
        let now = stamps(&self.files);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if now != current.stamps && current.failed.as_ref() != Some(&now) {
            match load(&self.files) {
                Ok(config) => {
                    tracing::info!(cert_file = %self.files.cert_file.display(), "TLS certificate files changed: reloaded");
                    current.config = Arc::new(config);
                    current.stamps = now;
                    current.failed = None;
                }
                Err(error) => {
                    tracing::warn!(%error, "TLS certificate files changed but cannot be used; serving with the previous ones");
                    current.failed = Some(now);
                }
            }
        }
        Arc::clone(&current.config)
    }
}

fn stamps(files: &TlsFiles) -> Vec<Stamp> {
    let stamp = |path: &Path| {
        fs::metadata(path).ok().map(|m| {
            (
                m.ino(),
                m.len(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            )
        })
    };
    let mut out = vec![stamp(&files.cert_file), stamp(&files.key_file)];
    if let Some(ca) = &files.trusted_ca_file {
        out.push(stamp(ca));
    }
    out
}

/// PEM files are small; anything larger than this is not one.
const PEM_BYTES_MAX: u64 = 1 << 20;

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |reason| TlsError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let len = fs::metadata(path).map_err(read_err)?.len();
    if len > PEM_BYTES_MAX {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            problem: format!("{len} bytes, more than a PEM file of certificates or a key holds"),
        });
    }
    fs::read(path).map_err(read_err)
}

fn pem_problem(path: &Path, error: pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        problem: format!("not valid PEM: {error}"),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_problem(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            problem: "no CERTIFICATE block in it".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Pem {
            path: path.to_path_buf(),
            problem: "no private key in it (PKCS#8, PKCS#1 or SEC1 PEM)".into(),
        },
        other => pem_problem(path, other),
    })
}

/// Reads the files into a rustls configuration that speaks HTTP/2 (gRPC).
pub fn load(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&files.cert_file)?;
    let key = read_key(&files.key_file)?;
    let roots = match &files.trusted_ca_file {
        Some(path) => Some((path, read_certs(path)?)),
        None => None,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions");
    let builder = match (roots, files.client_cert_auth) {
        (Some((path, cas)), true) => {
            let mut store = RootCertStore::empty();
            for ca in cas {
                store.add(ca).map_err(|e| TlsError::TrustedCa {
                    path: path.clone(),
                    problem: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .map_err(|e| TlsError::TrustedCa {
                    path: path.clone(),
                    problem: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, true) => return Err(TlsError::ClientAuthWithoutCa),
        (_, false) => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|reason| TlsError::CertKey {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            reason,
        })?;
    // gRPC clients insist on negotiating HTTP/2.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// An accepted connection once its handshake completed.
#[derive(Debug)]
pub struct TlsConnection(tokio_rustls::server::TlsStream<TcpStream>);

impl TlsConnection {
    /// The client's certificate chain, if it presented one (verified, with
    /// `client_cert_auth`).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.0.get_ref().1.peer_certificates()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

/// Accepts on `listener` and yields each connection once its TLS handshake completed;
/// connections whose handshake fails are closed and logged. Accepting stops once the
/// returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: Arc<TlsAcceptor>,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(HANDSHAKES_IN_FLIGHT_MAX);
    tokio::spawn(accept_loop(listener, acceptor, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Arc<TlsAcceptor>,
    tx: mpsc::Sender<Result<TlsConnection, io::Error>>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    let refusals = Arc::new(LogThrottle::new(
        REFUSALS_LOGGED_PER_WINDOW,
        REFUSAL_LOG_WINDOW,
    ));
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            permit = Arc::clone(&handshakes).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let (stream, client) = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if let Some(suppressed) = refusals.admit(Instant::now()) {
                        tracing::warn!(%error, suppressed, "accepting a TLS connection failed");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Small responses must not wait for a delayed ACK (Nagle).
        let _ = stream.set_nodelay(true);
        let config = acceptor.config();
        let tx = tx.clone();
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            let reason = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(connection)) => {
                    let _ = tx.send(Ok(TlsConnection(connection))).await;
                    return;
                }
                Ok(Err(error)) => refusal_reason(&error),
                Err(_) => format!("no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
            };
            if let Some(suppressed) = refusals.admit(Instant::now()) {
                tracing::warn!(%client, reason, suppressed, "TLS connection refused");
            }
        });
    }
}

/// Why a handshake failed, in words an operator can act on.
fn refusal_reason(error: &io::Error) -> String {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidMessage(_)) => {
            format!("{error}: the client does not speak TLS (plain text to a TLS port?)")
        }
        Some(rustls::Error::NoCertificatesPresented) => {
            "the client presented no certificate, and this port requires one (--client-cert-auth)"
                .to_string()
        }
        Some(rustls::Error::InvalidCertificate(why)) => {
            format!("the client's certificate is not accepted: {why:?}")
        }
        Some(other) => other.to_string(),
        None => error.to_string(),
    }
}
