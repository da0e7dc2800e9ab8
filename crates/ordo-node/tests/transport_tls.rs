//! The peer transport with mutual TLS, over real sockets on 127.0.0.1: nodes holding
//! certificates of the cluster's CA talk; a node with a certificate of another CA, a
//! node speaking plain text to a TLS port and a TLS node dialling a plain one are each
//! refused, with a reason on both sides, and the cluster's own links keep working.
//!
//! Every wait on the network is an awaited event under a generous `timeout`, which only
//! guards against hangs.

mod transport_support;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use ordo_node::tls::TlsFiles;
use ordo_node::transport::{
    NodeId, PeerEvent, PeerMessage, ProtocolError, RejectCode, StartError, Transport,
    TransportChannels, TransportConfig,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio::time::timeout;
use transport_support::{expect_event, start, HANG_GUARD};

const CLUSTER: u64 = 9;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Writes `ca.pem`, `<name>.pem` and `<name>-key.pem` into `dir` for a node
    /// certificate naming 127.0.0.1, and returns the files.
    fn node_files(&self, dir: &Path, name: &str) -> TlsFiles {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let write = |file: &str, text: String| -> PathBuf {
            let path = dir.join(file);
            std::fs::write(&path, text).unwrap();
            path
        };
        TlsFiles {
            cert_file: write(&format!("{name}.pem"), cert.pem()),
            key_file: write(&format!("{name}-key.pem"), key.serialize_pem()),
            trusted_ca_file: Some(write("ca.pem", self.cert.pem())),
            client_cert_auth: true,
        }
    }
}

fn config(node_id: NodeId, tls: Option<TlsFiles>) -> TransportConfig {
    TransportConfig {
        backoff_ms_min: 5,
        backoff_ms_max: 50,
        handshake_timeout_ms: 5_000,
        tls,
        ..TransportConfig::new(CLUSTER, node_id)
    }
}

fn message(seq: u8) -> PeerMessage {
    PeerMessage {
        group_id: 3,
        payload: Bytes::from(vec![seq; 64]),
    }
}

async fn delivers(from: &Transport, to: &mut TransportChannels, to_id: NodeId, seq: u8) {
    from.send(to_id, message(seq)).unwrap();
    let (sender, got) = timeout(HANG_GUARD, to.messages.recv())
        .await
        .expect("message not delivered")
        .expect("message channel closed");
    assert_eq!(sender, from.config().node_id);
    assert_eq!(got, message(seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_one_ca_talk_and_a_node_of_another_ca_is_refused_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let (a, mut a_rx) = start(config(
        1,
        Some(ca.node_files(&dir.path().join("a"), "node-1")),
    ))
    .await;
    let (b, mut b_rx) = start(config(
        2,
        Some(ca.node_files(&dir.path().join("b"), "node-2")),
    ))
    .await;
    a.add_peer(2, b.local_addr()).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    delivers(&a, &mut b_rx, 2, 1).await;
    delivers(&b, &mut a_rx, 1, 2).await;

    // Node 3 trusts the cluster's CA but holds a certificate of another one.
    let other = Ca::new("another CA");
    let mut files = other.node_files(&dir.path().join("c"), "node-3");
    let cluster_ca = dir.path().join("a").join("ca.pem");
    files.trusted_ca_file = Some(cluster_ca);
    let (c, mut c_rx) = start(config(3, Some(files))).await;
    a.add_peer(3, c.local_addr()).unwrap();
    c.add_peer(1, a.local_addr()).unwrap();
    a.send(3, message(3)).unwrap();
    c.send(1, message(4)).unwrap();

    // C dials A: A refuses C's certificate before reading a byte of the handshake...
    let refused = expect_event(&mut a_rx.events, "A refusing C", |e| {
        matches!(
            e,
            PeerEvent::InboundError {
                peer: None,
                error: ProtocolError::Tls(_),
                ..
            }
        )
    })
    .await;
    let PeerEvent::InboundError { error, .. } = refused else {
        unreachable!()
    };
    assert!(
        error.to_string().contains("certificate is not accepted"),
        "{error}"
    );
    // ...and C hears that its certificate was refused.
    let told = expect_event(&mut c_rx.events, "C told of the refusal", |e| {
        matches!(e, PeerEvent::OutboundError { peer: 1, .. })
    })
    .await;
    let PeerEvent::OutboundError { error, .. } = told else {
        unreachable!()
    };
    assert!(matches!(error, ProtocolError::Tls(_)), "{error}");
    // A dials C: A does not accept C's certificate as the node it dialled.
    let dialled = expect_event(&mut a_rx.events, "A refusing to talk to C", |e| {
        matches!(e, PeerEvent::OutboundError { peer: 3, .. })
    })
    .await;
    let PeerEvent::OutboundError { error, .. } = dialled else {
        unreachable!()
    };
    assert!(
        error.to_string().contains("certificate is not accepted"),
        "{error}"
    );
    assert_eq!(error.reject_code(), RejectCode::Tls);

    // Nothing of C's reached A, nothing of A's reached C, and A and B still talk.
    assert!(a_rx.messages.try_recv().is_err());
    assert!(c_rx.messages.try_recv().is_err());
    assert_eq!(c.metrics().messages_received, 0);
    delivers(&a, &mut b_rx, 2, 5).await;
    delivers(&b, &mut a_rx, 1, 6).await;
    assert!(a.metrics().handshake_failures >= 1);
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_and_tls_peers_refuse_each_other_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let (secure, mut secure_rx) = start(config(1, Some(ca.node_files(dir.path(), "node-1")))).await;
    let (plain, mut plain_rx) = start(config(2, None)).await;
    secure.add_peer(2, plain.local_addr()).unwrap();
    plain.add_peer(1, secure.local_addr()).unwrap();
    secure.send(2, message(1)).unwrap();
    plain.send(1, message(2)).unwrap();

    // The plain node dials the TLS port: told in plain text that the port requires TLS.
    let told = expect_event(&mut plain_rx.events, "plain dialer refused", |e| {
        matches!(e, PeerEvent::OutboundError { peer: 1, .. })
    })
    .await;
    let PeerEvent::OutboundError { error, .. } = told else {
        unreachable!()
    };
    let ProtocolError::RejectedByPeer { code, reason } = &error else {
        panic!("unexpected {error}");
    };
    assert_eq!(*code, RejectCode::TlsRequired);
    assert!(reason.contains("requires TLS"), "{reason}");
    expect_event(&mut secure_rx.events, "TLS port refusing plain text", |e| {
        matches!(
            e,
            PeerEvent::InboundError {
                error: ProtocolError::TlsRequired,
                ..
            }
        )
    })
    .await;

    // The TLS node dials the plain port: the plain node sees a TLS handshake where the
    // magic should be, and the TLS node an answer that is not TLS.
    let seen = expect_event(&mut plain_rx.events, "plain port seeing TLS", |e| {
        matches!(
            e,
            PeerEvent::InboundError {
                error: ProtocolError::BadMagic { .. },
                ..
            }
        )
    })
    .await;
    let PeerEvent::InboundError { error, .. } = seen else {
        unreachable!()
    };
    assert!(
        error
            .to_string()
            .contains("runs with peer TLS and this node without"),
        "{error}"
    );
    let answered = expect_event(&mut secure_rx.events, "TLS dialer refused", |e| {
        matches!(e, PeerEvent::OutboundError { peer: 2, .. })
    })
    .await;
    let PeerEvent::OutboundError { error, .. } = answered else {
        unreachable!()
    };
    assert!(error.to_string().contains("does not speak TLS"), "{error}");
    assert!(secure_rx.messages.try_recv().is_err());
    assert!(plain_rx.messages.try_recv().is_err());
    secure.shutdown().await;
    plain.shutdown().await;
}

#[tokio::test]
async fn unusable_peer_tls_files_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let mut files = ca.node_files(dir.path(), "node-1");
    files.key_file = dir.path().join("missing-key.pem");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = Transport::start(config(1, Some(files)), listener).unwrap_err();
    assert!(matches!(error, StartError::Tls(_)), "{error}");
    assert!(error.to_string().contains("missing-key.pem"), "{error}");

    let mut files = ca.node_files(dir.path(), "node-1");
    files.trusted_ca_file = None;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = Transport::start(config(1, Some(files)), listener).unwrap_err();
    assert!(
        error.to_string().contains("--peer-trusted-ca-file"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_replaced_on_disk_is_used_by_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let a_dir = dir.path().join("a");
    let (a, mut a_rx) = start(config(1, Some(ca.node_files(&a_dir, "node-1")))).await;
    let (b, mut b_rx) = start(config(
        2,
        Some(ca.node_files(&dir.path().join("b"), "node-2")),
    ))
    .await;
    a.add_peer(2, b.local_addr()).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    delivers(&a, &mut b_rx, 2, 1).await;

    // Node 1's certificate is rotated to one of another CA that node 2 does not trust:
    // node 1's next connection presents it and is refused, which shows it was read.
    let other = Ca::new("another CA");
    let rotated = other.node_files(&dir.path().join("rotated"), "node-1");
    std::fs::copy(&rotated.cert_file, a_dir.join("node-1.pem")).unwrap();
    std::fs::copy(&rotated.key_file, a_dir.join("node-1-key.pem")).unwrap();
    // Drop the established connection by removing and re-adding the peer.
    a.remove_peer(2).await.unwrap();
    a.add_peer(2, b.local_addr()).unwrap();
    a.send(2, message(2)).unwrap();
    let refused = expect_event(
        &mut b_rx.events,
        "B refusing the rotated certificate",
        |e| {
            matches!(
                e,
                PeerEvent::InboundError {
                    error: ProtocolError::Tls(_),
                    ..
                }
            )
        },
    )
    .await;
    let PeerEvent::InboundError { error, .. } = refused else {
        unreachable!()
    };
    assert!(
        error.to_string().contains("certificate is not accepted"),
        "{error}"
    );
    let _ = a_rx.events.try_recv();
    a.shutdown().await;
    b.shutdown().await;
}
