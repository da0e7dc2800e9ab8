//! A development certificate authority, for `ordo cert` and for tests: a CA made on the spot
//! and the node and client certificates it signs (ECDSA P-256, with rcgen).
//!
//! Not for production: the CA's key is written next to the certificates, and the
//! certificates do not expire. A production cluster takes its certificates from the
//! operator's own CA and gives the files to `--cert-file`, `--key-file` and
//! `--trusted-ca-file`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters (a host name that is not a DNS name or an address).
    #[error("cannot make the certificate for {what}: {reason}")]
    Make {
        /// Which certificate.
        what: String,
        /// rcgen's reason.
        reason: rcgen::Error,
    },
    /// A file could not be written, or exists already.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        reason: std::io::Error,
    },
}

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// A node: it serves clients and peers, and dials peers.
    Node,
    /// A client of the etcd API.
    Client,
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// A certificate authority made on the spot.
pub struct DevCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

fn make_err(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
    move |reason| CertError::Make {
        what: what.to_string(),
        reason,
    }
}

impl DevCa {
    /// A new CA whose certificate names it `name`.
    pub fn new(name: &str) -> Result<DevCa, CertError> {
        let what = "the CA";
        let key = KeyPair::generate().map_err(make_err(what))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(make_err(what))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).map_err(make_err(what))?;
        Ok(DevCa { cert, key })
    }

    /// The CA's certificate: what `--trusted-ca-file` and clients' `--cacert` take.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for `common_name` (the user name, for a client), valid for `hosts` (DNS
    /// names or IP addresses; a node's certificate must name every address clients and peers
    /// reach it at).
    pub fn issue(
        &self,
        common_name: &str,
        hosts: &[String],
        usage: Usage,
    ) -> Result<Issued, CertError> {
        self.issue_with(common_name, hosts, usage, |_| {})
    }

    /// As [`DevCa::issue`], with the parameters adjusted by `adjust` first (a validity
    /// period that has ended, for a test of expired certificates).
    pub fn issue_with(
        &self,
        common_name: &str,
        hosts: &[String],
        usage: Usage,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Result<Issued, CertError> {
        let what = format!("`{common_name}`");
        let key = KeyPair::generate().map_err(make_err(&what))?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(make_err(&what))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match usage {
            Usage::Node => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        adjust(&mut params);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(make_err(&what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `contents` to a new file `dir/name` (refusing to replace one), readable by its
/// owner only when it holds a key.
pub fn write_new(
    dir: &Path,
    name: &str,
    contents: &str,
    secret: bool,
) -> Result<PathBuf, CertError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    let write_err = |reason| CertError::Write {
        path: path.clone(),
        reason,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&path)
        .map_err(write_err)?;
    file.write_all(contents.as_bytes()).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    Ok(path)
}
