//! TLS on the etcd API's port: handshakes a client sees (with rustls as the client), the
//! refusals, certificate files replaced while serving, and etcd's own client over it.
//!
//! The etcdctl test prints "skipped: etcdctl not installed" and passes when etcdctl is not
//! on the PATH, unless `ORDO_REQUIRE_ETCDCTL=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ordo_node::NodeConfig;
use ordo_server::dev_certs::{DevCa, Issued, Usage};
use ordo_server::tls::{incoming, TlsAcceptor, TlsError, TlsFiles};
use ordo_server::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;

/// A hang guard for awaits: generous, never a timing assertion.
const GUARD: Duration = Duration::from_secs(30);

fn hosts() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

/// Writes `issued` as `name.pem` and `name-key.pem` in `dir`, replacing any earlier ones
/// by renaming new files over them, as certificate rotation does.
fn write_pair(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    replace(&cert, &issued.cert_pem);
    replace(&key, &issued.key_pem);
    (cert, key)
}

fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A rustls client trusting `ca`, presenting `identity` if given.
fn client(ca: &str, identity: Option<&Issued>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca)).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(issued) => builder
            .with_client_auth_cert(
                vec![der(&issued.cert_pem)],
                PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connects and completes a handshake: the server's certificate, or why it failed.
async fn handshake(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> Result<
    (
        CertificateDer<'static>,
        tokio_rustls::client::TlsStream<TcpStream>,
    ),
    String,
> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Ok((cert, tls))
}

/// Connects as a client the server must refuse, and returns how the refusal showed. In
/// TLS 1.3 a client learns that the server refused its certificate only when it next
/// reads: the server then sends an alert and closes.
async fn refused(addr: std::net::SocketAddr, connector: &tokio_rustls::TlsConnector) -> String {
    let mut tls = match handshake(addr, connector).await {
        Err(reason) => return reason,
        Ok((_, tls)) => tls,
    };
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    match tls.read(&mut buf).await {
        Ok(0) => "closed by the server".into(),
        Ok(n) => panic!("a refused client read {n} bytes"),
        Err(e) => e.to_string(),
    }
}

/// The listener's TLS files for `server`, trusting `ca` for client certificates.
fn files(dir: &Path, ca: &DevCa, server: &Issued, client_cert_auth: bool) -> TlsFiles {
    let (cert_file, key_file) = write_pair(dir, "server", server);
    let ca_file = dir.join("ca.pem");
    replace(&ca_file, &ca.cert_pem());
    TlsFiles {
        cert_file,
        key_file,
        trusted_ca_file: Some(ca_file),
        client_cert_auth,
    }
}

/// Serves `acceptor` on a fresh port: every connection whose handshake completes is
/// reported on the returned channel (and then dropped).
async fn serve(
    acceptor: Arc<TlsAcceptor>,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut connections = incoming(listener, acceptor);
        let mut kept = Vec::new();
        while let Some(connection) = connections.next().await {
            kept.push(connection.unwrap());
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_port_accepts_a_trusted_client_and_refuses_the_rest_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("ordo test CA").unwrap();
    let other_ca = DevCa::new("another cluster's CA").unwrap();
    let server = ca.issue("node-1", &hosts(), Usage::Node).unwrap();
    let alice = ca.issue("alice", &[], Usage::Client).unwrap();
    let mallory = other_ca.issue("mallory", &[], Usage::Client).unwrap();
    let expired = ca
        .issue_with("old", &[], Usage::Client, |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        })
        .unwrap();
    let acceptor = Arc::new(TlsAcceptor::new(files(dir.path(), &ca, &server, true)).unwrap());
    let (addr, mut accepted) = serve(acceptor).await;

    let (cert, _kept) = tokio::time::timeout(
        GUARD,
        handshake(addr, &client(&ca.cert_pem(), Some(&alice))),
    )
    .await
    .unwrap()
    .expect("a client with a certificate of the trusted CA is accepted");
    assert_eq!(cert, der(&server.cert_pem));
    tokio::time::timeout(GUARD, accepted.recv())
        .await
        .unwrap()
        .unwrap();

    for (who, identity, why) in [
        ("no certificate", None, "CertificateRequired"),
        ("a certificate of another CA", Some(&mallory), "UnknownCA"),
        (
            "an expired certificate",
            Some(&expired),
            "CertificateExpired",
        ),
    ] {
        let reason = tokio::time::timeout(GUARD, refused(addr, &client(&ca.cert_pem(), identity)))
            .await
            .unwrap_or_else(|_| panic!("a client with {who} hears of its refusal"));
        assert!(reason.contains(why), "{who}: {reason}");
    }
    // A client that does not trust the server's CA gives up itself.
    let distrust = handshake(addr, &client(&other_ca.cert_pem(), Some(&alice))).await;
    assert!(
        distrust
            .as_ref()
            .is_err_and(|e| e.contains("UnknownIssuer")),
        "{:?}",
        distrust.map(|(cert, _)| cert)
    );
    // Plain text to the TLS port: closed without an answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(GUARD, plain.read_to_end(&mut answer))
        .await
        .expect("the server closes a plain-text connection");
    assert!(
        !answer.starts_with(b"HTTP") && answer.len() < 64,
        "at most a TLS alert: {answer:?}"
    );
    // None of the refused connections was handed to the server.
    assert!(accepted.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_replaced_while_serving_are_used_by_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("ordo test CA").unwrap();
    let first = ca.issue("node-1", &hosts(), Usage::Node).unwrap();
    let acceptor = Arc::new(TlsAcceptor::new(files(dir.path(), &ca, &first, false)).unwrap());
    let (addr, _accepted) = serve(Arc::clone(&acceptor)).await;
    let connector = client(&ca.cert_pem(), None);
    let served = |connector| async move {
        let (cert, _) = tokio::time::timeout(GUARD, handshake(addr, connector))
            .await
            .unwrap()
            .expect("the handshake completes");
        cert
    };
    assert_eq!(served(&connector).await, der(&first.cert_pem));

    let second = ca.issue("node-1", &hosts(), Usage::Node).unwrap();
    write_pair(dir.path(), "server", &second);
    assert_eq!(served(&connector).await, der(&second.cert_pem));

    // Half a rotation (a new certificate whose key is not there yet) keeps the last good
    // pair; the completed rotation is picked up.
    let third = ca.issue("node-1", &hosts(), Usage::Node).unwrap();
    replace(&dir.path().join("server.pem"), &third.cert_pem);
    assert_eq!(served(&connector).await, der(&second.cert_pem));
    replace(&dir.path().join("server-key.pem"), &third.key_pem);
    assert_eq!(served(&connector).await, der(&third.cert_pem));
}

#[test]
fn unusable_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("ordo test CA").unwrap();
    let server = ca.issue("node-1", &hosts(), Usage::Node).unwrap();
    let other = ca.issue("node-2", &hosts(), Usage::Node).unwrap();
    let good = files(dir.path(), &ca, &server, true);

    let missing = TlsFiles {
        cert_file: dir.path().join("absent.pem"),
        ..good.clone()
    };
    let error = TlsAcceptor::new(missing).unwrap_err();
    assert!(matches!(error, TlsError::Read { .. }), "{error}");
    assert!(error.to_string().contains("absent.pem"), "{error}");

    let not_pem = dir.path().join("garbage.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let error = TlsAcceptor::new(TlsFiles {
        key_file: not_pem.clone(),
        ..good.clone()
    })
    .unwrap_err();
    assert!(error.to_string().contains("garbage.pem"), "{error}");
    assert!(error.to_string().contains("no private key"), "{error}");

    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let error = TlsAcceptor::new(TlsFiles {
        key_file: other_key,
        ..good.clone()
    })
    .unwrap_err();
    assert!(matches!(error, TlsError::CertKey { .. }), "{error}");

    let error = TlsAcceptor::new(TlsFiles {
        trusted_ca_file: None,
        ..good
    })
    .unwrap_err();
    assert!(matches!(error, TlsError::ClientAuthWithoutCa), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_puts_and_gets_over_tls_with_a_client_certificate_and_fails_without_one() {
    let Some(etcdctl) = ordo_launch::tools::etcdctl_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("ordo test CA").unwrap();
    let server = ca.issue("node-1", &hosts(), Usage::Node).unwrap();
    let client_cert = ca.issue("root", &[], Usage::Client).unwrap();
    let (client_file, client_key) = write_pair(dir.path(), "client", &client_cert);
    let tls = files(dir.path(), &ca, &server, true);
    let ca_file = tls.trusted_ca_file.clone().unwrap();

    let [client_addr, admin_addr, peer_addr] =
        ordo_launch::free_ports(3).unwrap().try_into().unwrap();
    let mut node = NodeConfig::new(
        1,
        dir.path().join("node-1"),
        peer_addr,
        [(1, peer_addr)].into(),
    );
    node.tick_interval_ms = 10;
    node.election_timeout_ticks = 20;
    node.heartbeat_interval_ticks = 2;
    let config = ServerConfig {
        node,
        client_addr,
        admin_addr,
        client_tls: Some(tls),
        etcd: ordo_kv::ServiceConfig::default(),
        kafka: None,
        admin_tls: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(ordo_server::run(config, async {
        let _ = stopped.await;
    }));

    let ctl = |args: &[&str], identity: bool, scheme: &str| {
        let mut cmd = Command::new(&etcdctl);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={scheme}://{client_addr}"))
            .args(["--dial-timeout=3s", "--command-timeout=10s"])
            .arg(format!("--cacert={}", ca_file.display()));
        if identity {
            cmd.arg(format!("--cert={}", client_file.display()))
                .arg(format!("--key={}", client_key.display()));
        }
        // etcdctl exits on its own: its timeouts bound every command used here.
        cmd.args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl")
    };
    let put = tokio::time::timeout(GUARD, async {
        loop {
            let out =
                tokio::task::block_in_place(|| ctl(&["put", "greeting", "hello"], true, "https"));
            if out.status.success() {
                break out;
            }
            // Until the node has a leader the put is refused; try again.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the put succeeds once the node leads");
    assert_eq!(String::from_utf8_lossy(&put.stdout).trim(), "OK");
    let get = tokio::task::block_in_place(|| {
        ctl(&["get", "greeting", "--print-value-only"], true, "https")
    });
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");

    let members = tokio::task::block_in_place(|| ctl(&["member", "list"], true, "https"));
    assert!(
        String::from_utf8_lossy(&members.stdout).contains(&format!("https://{client_addr}")),
        "the member list gives the TLS client URL: {}",
        String::from_utf8_lossy(&members.stdout)
    );
    let anonymous = tokio::task::block_in_place(|| ctl(&["get", "greeting"], false, "https"));
    assert!(
        !anonymous.status.success(),
        "a client without a certificate is refused"
    );
    let plain = tokio::task::block_in_place(|| ctl(&["get", "greeting"], false, "http"));
    assert!(
        !plain.status.success(),
        "plain text to the TLS port is refused"
    );

    stop.send(()).unwrap();
    let served = tokio::time::timeout(GUARD, server_task)
        .await
        .unwrap()
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
}
