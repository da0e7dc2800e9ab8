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
//!
//! **Identity.** Each connection hands its requests a [`ClientIdentity`]: the client's
//! address and, under client certificate authentication, the common name of the verified
//! certificate, which the etcd API takes as the user of requests without a token.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ordo_kv::ClientIdentity;
use ordo_node::tls::{handshake_failure, server_config, Reloading};
use ordo_node::LogThrottle;
use rustls::pki_types::CertificateDer;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes running at once, at most.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Refusal lines logged per window, and the window.
const REFUSALS_LOGGED_PER_WINDOW: u32 = 10;
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);
/// A pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub use ordo_node::tls::{TlsError, TlsFiles};

/// The TLS configuration new client connections get, reloaded when its files change.
#[derive(Debug)]
pub struct TlsAcceptor(Reloading<ServerConfig>);

impl TlsAcceptor {
    /// Reads and checks the files, for a gRPC listener (HTTP/2).
    pub fn new(files: TlsFiles) -> Result<TlsAcceptor, TlsError> {
        Reloading::new(files, load).map(TlsAcceptor)
    }

    /// Reads and checks the files, for an HTTP/1.1 listener (the admin port).
    pub fn for_http1(files: TlsFiles) -> Result<TlsAcceptor, TlsError> {
        Reloading::new(files, |files| server_config(files, &[b"http/1.1"])).map(TlsAcceptor)
    }

    /// The files this acceptor serves.
    pub fn files(&self) -> &TlsFiles {
        self.0.files()
    }

    /// The configuration for a connection accepted now: the files are read again first
    /// if they changed (see the module documentation).
    pub fn config(&self) -> Arc<ServerConfig> {
        self.0.config()
    }
}

/// Reads the files into a rustls configuration that speaks HTTP/2 (gRPC).
pub fn load(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    // gRPC clients insist on negotiating HTTP/2.
    server_config(files, &[b"h2"])
}

/// An accepted connection once its handshake completed.
#[derive(Debug)]
pub struct TlsConnection(tokio_rustls::server::TlsStream<TcpStream>, ClientIdentity);

impl TlsConnection {
    fn new(stream: tokio_rustls::server::TlsStream<TcpStream>) -> TlsConnection {
        let (tcp, session) = stream.get_ref();
        let identity = ClientIdentity {
            remote_addr: tcp.peer_addr().ok(),
            // rustls verified the chain when it asked for one (client certificate
            // authentication); without it, no certificate is requested.
            common_name: session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| common_name(cert)),
        };
        TlsConnection(stream, identity)
    }

    /// What the connection tells of its client: its address, and the common name of its
    /// verified certificate.
    pub fn identity(&self) -> &ClientIdentity {
        &self.1
    }

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
    type ConnectInfo = ClientIdentity;

    fn connect_info(&self) -> ClientIdentity {
        self.1.clone()
    }
}

/// The X.520 common name attribute (2.5.4.3).
const COMMON_NAME_OID: [u64; 4] = [2, 5, 4, 3];

/// The first common name in a certificate's subject, if it has one in UTF-8 (or a subset).
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let mut found = None;
    let parsed = yasna::parse_der(cert.as_ref(), |certificate| {
        certificate.read_sequence(|certificate| {
            certificate.next().read_sequence(|tbs| {
                // version [0] EXPLICIT, serialNumber, signature, issuer, validity.
                tbs.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_der()))?;
                for _ in 0..4 {
                    tbs.next().read_der()?;
                }
                tbs.next().read_sequence_of(|rdn| {
                    rdn.read_set_of(|attribute| {
                        attribute.read_sequence(|attribute| {
                            let oid = attribute.next().read_oid()?;
                            let value = attribute.next().read_tagged_der()?;
                            if found.is_none()
                                && oid.components().as_slice() == COMMON_NAME_OID.as_slice()
                            {
                                found = String::from_utf8(value.value().to_vec()).ok();
                            }
                            Ok(())
                        })
                    })
                })?;
                // subjectPublicKeyInfo, then the optional unique ids and extensions.
                tbs.next().read_der()?;
                while tbs.read_optional(|r| r.read_der())?.is_some() {}
                Ok(())
            })?;
            certificate.next().read_der()?;
            certificate.next().read_der()?;
            Ok(())
        })
    });
    parsed.ok().and(found)
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
            match handshake(config, stream, HANDSHAKE_TIMEOUT).await {
                Ok(connection) => {
                    let _ = tx.send(Ok(TlsConnection::new(connection))).await;
                }
                Err(reason) => {
                    if let Some(suppressed) = refusals.admit(Instant::now()) {
                        tracing::warn!(%client, reason, suppressed, "TLS connection refused");
                    }
                }
            }
        });
    }
}

/// The server side of a TLS handshake on an accepted connection, within `timeout`; why it
/// failed, in words an operator can act on, when it does not complete.
pub async fn handshake(
    config: Arc<ServerConfig>,
    stream: TcpStream,
    timeout: Duration,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(handshake_failure(&error, "client")),
        Err(_) => Err(format!("no TLS handshake within {} s", timeout.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_certs::{DevCa, Usage};
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn the_common_name_of_a_client_certificate_is_read_from_its_subject() {
        let ca = DevCa::new("test CA").unwrap();
        for name in ["alice", "root", "ünïcode user"] {
            let issued = ca.issue(name, &[], Usage::Client).unwrap();
            let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
            assert_eq!(common_name(&der).as_deref(), Some(name));
        }
        let node = ca
            .issue("node-1", &["127.0.0.1".to_string()], Usage::Node)
            .unwrap();
        let der = CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).unwrap();
        assert_eq!(common_name(&der).as_deref(), Some("node-1"));
        assert_eq!(
            common_name(&CertificateDer::from(vec![0x30, 0x03, 1, 1, 0])),
            None
        );
        assert_eq!(common_name(&CertificateDer::from(Vec::new())), None);
    }
}
