//! TLS material for Ordo's listeners and peer connections, with rustls: a certificate, its
//! key and the trusted CAs read from PEM files (etcd's `--cert-file`, `--key-file`,
//! `--trusted-ca-file`, and their `--peer-` forms), checked when read, and read again
//! when they change.
//!
//! **Reloading.** A [`Reloading`] configuration looks at its files' metadata (inode,
//! length, modification time: a handful of `stat` calls, nothing read) each time a new
//! connection asks for it. When any changed, the files are read and checked again and
//! connections from then on get the new configuration; established connections keep
//! theirs. A reload that fails (a key that no longer matches its certificate while a
//! rotation is half done, say) logs why once and keeps the previous configuration, and the
//! next connection tries again.
//!
//! The peer port uses these with mutual TLS: a node presents its certificate both when it
//! accepts and when it dials, and each side checks the other's against the cluster's CAs
//! before a byte of Ordo's own protocol passes ([`peer_server_config`],
//! [`peer_client_config`]).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The ALPN protocol of the peer port, so a client of another protocol that offers ALPN
/// (gRPC offers `h2`) is refused in the TLS handshake.
pub const PEER_ALPN: &[u8] = b"ordo-peer";

/// Where a listener's or a node's certificate, key and trusted CAs are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, its own certificate first.
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates, PEM, that the other side's certificate must chain to.
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
    /// Peer TLS without CAs to check the other nodes' certificates against.
    #[error(
        "peer TLS needs --peer-trusted-ca-file: the CAs every node's certificate must chain to"
    )]
    PeerWithoutCa,
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

/// A TLS configuration built from files, rebuilt when they change (see the module
/// documentation).
pub struct Reloading<C> {
    files: TlsFiles,
    load: fn(&TlsFiles) -> Result<C, TlsError>,
    current: Mutex<Current<C>>,
}

struct Current<C> {
    config: Arc<C>,
    /// The files' stamps when `config` was read.
    stamps: Vec<Stamp>,
    /// The stamps of a reload that failed, so it is logged once.
    failed: Option<Vec<Stamp>>,
}

impl<C> std::fmt::Debug for Reloading<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl<C> Reloading<C> {
    /// Reads and checks the files with `load`.
    pub fn new(
        files: TlsFiles,
        load: fn(&TlsFiles) -> Result<C, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamps = stamps(&files);
        let config = Arc::new(load(&files)?);
        Ok(Reloading {
            files,
            load,
            current: Mutex::new(Current {
                config,
                stamps,
                failed: None,
            }),
        })
    }

    /// The files this configuration comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration for a connection made now: the files are read again first if
    /// they changed.
    pub fn config(&self) -> Arc<C> {
        let now = stamps(&self.files);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if now != current.stamps && current.failed.as_ref() != Some(&now) {
            match (self.load)(&self.files) {
                Ok(config) => {
                    tracing::info!(cert_file = %self.files.cert_file.display(), "TLS certificate files changed: reloaded");
                    current.config = Arc::new(config);
                    current.stamps = now;
                    current.failed = None;
                }
                Err(error) => {
                    tracing::warn!(%error, "TLS certificate files changed but cannot be used; going on with the previous ones");
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

fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for ca in read_certs(path)? {
        store.add(ca).map_err(|e| TlsError::TrustedCa {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cert_key_error<'a>(
    cert: &'a Path,
    key: &'a Path,
) -> impl FnOnce(rustls::Error) -> TlsError + 'a {
    |reason| TlsError::CertKey {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    }
}

/// Reads the files into a server configuration negotiating `alpn`, checking client
/// certificates against `trusted_ca_file` when `client_cert_auth` is set.
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&files.cert_file)?;
    let key = read_key(&files.key_file)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions");
    let builder = match (&files.trusted_ca_file, files.client_cert_auth) {
        (Some(path), true) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(read_roots(path)?, provider)
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
        .map_err(cert_key_error(&files.cert_file, &files.key_file))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The peer port's server side: the node's certificate, and every dialling node must
/// present one that chains to the trusted CAs (mutual TLS, whatever `client_cert_auth`
/// says: the peer port carries Raft's votes and entries).
pub fn peer_server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    if files.trusted_ca_file.is_none() {
        return Err(TlsError::PeerWithoutCa);
    }
    let files = TlsFiles {
        client_cert_auth: true,
        ..files.clone()
    };
    server_config(&files, &[PEER_ALPN])
}

/// The peer port's dialling side: the node presents its certificate, and the node it
/// dials must present one that chains to the trusted CAs and names the address dialled.
pub fn peer_client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let Some(ca) = &files.trusted_ca_file else {
        return Err(TlsError::PeerWithoutCa);
    };
    client_config(ca, Some((&files.cert_file, &files.key_file)), &[PEER_ALPN])
}

/// A client configuration trusting the CAs in `ca_file`, presenting the certificate chain
/// and key of `identity` if given, offering `alpn`: for tools that talk to a TLS port
/// (`ordo status` to an admin port, say).
pub fn client_config(
    ca_file: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(read_roots(ca_file)?);
    let mut config = match identity {
        Some((cert_file, key_file)) => {
            let certs = read_certs(cert_file)?;
            let key = read_key(key_file)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(cert_key_error(cert_file, key_file))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Why a TLS handshake with `other` ("client", "peer") failed, in words an operator can
/// act on.
pub fn handshake_failure(error: &io::Error, other: &str) -> String {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidMessage(_)) => {
            format!("{error}: the {other} does not speak TLS (plain text to a TLS port?)")
        }
        Some(rustls::Error::NoCertificatesPresented) => {
            format!("the {other} presented no certificate, and this port requires one")
        }
        Some(rustls::Error::InvalidCertificate(why)) => {
            format!("the {other}'s certificate is not accepted: {why:?}")
        }
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("the {other} refused the TLS handshake: alert {alert:?} (it does not accept this node's certificate?)")
        }
        Some(tls_error) => tls_error.to_string(),
        None if error.kind() == io::ErrorKind::UnexpectedEof => format!(
            "the {other} hung up during the TLS handshake (it may not trust this side's certificate)"
        ),
        None => error.to_string(),
    }
}
