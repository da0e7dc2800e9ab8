//! The peer transport over real sockets on 127.0.0.1.
//!
//! Every wait on the network is an awaited event under a generous `timeout`, which only
//! guards against hangs; nothing here depends on how long anything takes.

mod transport_support;

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use ordo_node::transport::{
    Advertised, NodeId, PeerEvent, PeerMessage, ProtocolError, RejectCode, SendError, Transport,
    TransportChannels, TransportConfig, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use transport_support::{expect_event, listener, start, HANG_GUARD};

const CLUSTER: u64 = 7;

fn config(node_id: NodeId) -> TransportConfig {
    TransportConfig {
        backoff_ms_min: 5,
        backoff_ms_max: 50,
        handshake_timeout_ms: 5_000,
        ..TransportConfig::new(CLUSTER, node_id)
    }
}

fn message(group_id: u64, seq: u32, payload_bytes: usize) -> PeerMessage {
    let mut payload = BytesMut::with_capacity(payload_bytes.max(4));
    payload.put_u32(seq);
    payload.resize(payload_bytes.max(4), (seq % 251) as u8);
    PeerMessage {
        group_id,
        payload: payload.freeze(),
    }
}

async fn receive(
    messages: &mut mpsc::Receiver<(NodeId, PeerMessage)>,
    count: usize,
) -> Vec<(NodeId, PeerMessage)> {
    let mut received = Vec::with_capacity(count);
    for _ in 0..count {
        let next = timeout(HANG_GUARD, messages.recv())
            .await
            .expect("message not delivered")
            .expect("message channel closed");
        received.push(next);
    }
    received
}

/// Two started transports that know each other, nodes 1 and 2.
async fn pair() -> (
    (Transport, TransportChannels),
    (Transport, TransportChannels),
) {
    let a = start(config(1)).await;
    let b = start(config(2)).await;
    a.0.add_peer(2, b.0.local_addr()).unwrap();
    b.0.add_peer(1, a.0.local_addr()).unwrap();
    (a, b)
}

/// Checks a fresh message from `from` still reaches `to`.
async fn assert_delivers(
    from: &Transport,
    to: &mut TransportChannels,
    to_id: NodeId,
    group_id: u64,
) {
    let sent = message(group_id, 424_242, 16);
    from.send(to_id, sent.clone()).unwrap();
    let (sender, got) = receive(&mut to.messages, 1).await.remove(0);
    assert_eq!(sender, from.config().node_id);
    assert_eq!(got, sent);
}

#[tokio::test]
async fn two_transports_exchange_messages_in_order() {
    let ((a, mut a_rx), (b, mut b_rx)) = pair().await;
    let count = 2_000;
    let a_sent: Vec<_> = (0..count)
        .map(|i| message(u64::from(i % 5), i, 1 + i as usize % 300))
        .collect();
    let b_sent: Vec<_> = (0..count).map(|i| message(9, i, 64)).collect();
    let mut a_next = a_sent.iter();
    let mut b_next = b_sent.iter();
    let (mut at_b, mut at_a) = (Vec::new(), Vec::new());
    // Interleave sending and receiving so neither bounded queue has to hold everything.
    while at_b.len() < a_sent.len() || at_a.len() < b_sent.len() {
        for _ in 0..100 {
            if let Some(m) = a_next.next() {
                a.send(2, m.clone()).unwrap();
            }
            if let Some(m) = b_next.next() {
                b.send(1, m.clone()).unwrap();
            }
        }
        if at_b.len() < a_sent.len() {
            at_b.extend(receive(&mut b_rx.messages, 100).await);
        }
        if at_a.len() < b_sent.len() {
            at_a.extend(receive(&mut a_rx.messages, 100).await);
        }
    }
    assert!(at_b.iter().all(|(from, _)| *from == 1));
    assert!(at_a.iter().all(|(from, _)| *from == 2));
    assert_eq!(at_b.into_iter().map(|(_, m)| m).collect::<Vec<_>>(), a_sent);
    assert_eq!(at_a.into_iter().map(|(_, m)| m).collect::<Vec<_>>(), b_sent);

    let metrics = a.metrics();
    assert_eq!(metrics.messages_sent, u64::from(count));
    assert_eq!(metrics.messages_received, u64::from(count));
    assert_eq!(metrics.messages_dropped, 0);
    assert!(metrics.frames_sent >= 1 && metrics.bytes_sent > 0);
    assert_eq!(b.metrics().bytes_received, metrics.bytes_sent);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_transports_deliver_in_order_per_peer() {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(config(id)).await);
    }
    let addrs: Vec<_> = nodes.iter().map(|(t, _)| t.local_addr()).collect();
    for (i, (transport, _)) in nodes.iter().enumerate() {
        for (j, addr) in addrs.iter().enumerate() {
            if i != j {
                transport.add_peer(j as u64 + 1, *addr).unwrap();
            }
        }
    }
    let per_peer = 500u32;
    for (i, (transport, _)) in nodes.iter().enumerate() {
        for seq in 0..per_peer {
            for peer in (1..=3u64).filter(|p| *p != i as u64 + 1) {
                // Group id encodes the sender so order can be checked per sender.
                transport
                    .send(peer, message(i as u64 + 1, seq, 32))
                    .unwrap();
            }
        }
    }
    for (i, (_, channels)) in nodes.iter_mut().enumerate() {
        let received = receive(&mut channels.messages, 2 * per_peer as usize).await;
        for sender in (1..=3u64).filter(|p| *p != i as u64 + 1) {
            let from_sender: Vec<_> = received
                .iter()
                .filter(|(from, _)| *from == sender)
                .map(|(_, m)| m.clone())
                .collect();
            let expected: Vec<_> = (0..per_peer).map(|seq| message(sender, seq, 32)).collect();
            assert_eq!(from_sender, expected, "node {} from {sender}", i + 1);
        }
    }
    for (transport, _) in nodes {
        transport.shutdown().await;
    }
}

#[tokio::test]
async fn batch_larger_than_a_frame_is_split_and_coalesced() {
    // B's listener exists but B is not started: A connects and waits for the handshake reply
    // while every message below piles up in its queue, so they all go in one batch.
    let b_listener = listener().await;
    let b_addr = b_listener.local_addr().unwrap();
    let frame_bytes_max = 1024;
    let a_config = TransportConfig {
        frame_bytes_max,
        queue_messages_max: 1_000,
        ..config(1)
    };
    let (a, _a_rx) = start(a_config).await;
    a.add_peer(2, b_addr).unwrap();
    let sent: Vec<_> = (0..200).map(|i| message(3, i, 100)).collect();
    for m in &sent {
        a.send(2, m.clone()).unwrap();
    }

    let b_config = TransportConfig {
        frame_bytes_max,
        ..config(2)
    };
    let (b, mut b_rx) = Transport::start(b_config, b_listener).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    let received = receive(&mut b_rx.messages, sent.len()).await;
    assert_eq!(
        received.into_iter().map(|(_, m)| m).collect::<Vec<_>>(),
        sent
    );

    // 113 encoded bytes per message, 4 bytes of count: nine messages per 1024-byte frame,
    // all of them in one write.
    let a_metrics = a.metrics();
    assert_eq!(a_metrics.batches_sent, 1);
    assert_eq!(a_metrics.frames_sent, 23);
    assert_eq!(b.metrics().frames_received, 23);
    assert_eq!(b.metrics().frame_errors, 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn messages_of_many_groups_queued_together_go_out_in_one_write_and_one_frame() {
    // As above: A waits for B's handshake reply while 500 groups each queue a heartbeat
    // for B, as a node hosting many groups does every tick.
    let b_listener = listener().await;
    let b_addr = b_listener.local_addr().unwrap();
    let (a, _a_rx) = start(config(1)).await;
    a.add_peer(2, b_addr).unwrap();
    let sent: Vec<_> = (0..500).map(|group| message(group, 1, 30)).collect();
    for m in &sent {
        a.send(2, m.clone()).unwrap();
    }
    let (b, mut b_rx) = Transport::start(config(2), b_listener).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    let received = receive(&mut b_rx.messages, sent.len()).await;
    assert_eq!(
        received.into_iter().map(|(_, m)| m).collect::<Vec<_>>(),
        sent
    );
    let metrics = a.metrics();
    assert_eq!(
        (
            metrics.batches_sent,
            metrics.frames_sent,
            metrics.messages_sent
        ),
        (1, 1, 500)
    );
    assert_eq!(b.metrics().frames_received, 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn message_larger_than_a_frame_is_refused_by_send() {
    let ((a, _a_rx), (b, _b_rx)) = pair().await;
    let max = a.config().frame_bytes_max as usize - 4 - 13;
    let too_big = PeerMessage {
        group_id: 1,
        payload: Bytes::from(vec![0u8; max + 1]),
    };
    assert_eq!(
        a.send(2, too_big),
        Err(SendError::MessageTooLarge {
            bytes: max + 1,
            max
        })
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn frame_over_the_receivers_limit_closes_the_connection() {
    let (a, mut a_rx) = start(config(1)).await;
    let (b, mut b_rx) = start(TransportConfig {
        frame_bytes_max: 1024,
        ..config(2)
    })
    .await;
    a.add_peer(2, b.local_addr()).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    expect_event(&mut a_rx.events, "A connected to B", |e| {
        *e == PeerEvent::Connected(2)
    })
    .await;

    a.send(2, message(1, 1, 4000)).unwrap();
    let seen_by_b = expect_event(&mut b_rx.events, "B refusing the frame", |e| {
        matches!(e, PeerEvent::InboundError { .. })
    })
    .await;
    let PeerEvent::InboundError { peer, error, .. } = seen_by_b else {
        unreachable!()
    };
    assert_eq!(peer, Some(1));
    assert_eq!(
        error,
        ProtocolError::FrameTooLarge {
            bytes: 4 + 13 + 4000,
            max: 1024
        }
    );
    let seen_by_a = expect_event(&mut a_rx.events, "A told of the refusal", |e| {
        matches!(e, PeerEvent::OutboundError { .. })
    })
    .await;
    assert!(
        matches!(
            &seen_by_a,
            PeerEvent::OutboundError {
                peer: 2,
                error: ProtocolError::RejectedByPeer {
                    code: RejectCode::FrameTooLarge,
                    ..
                }
            }
        ),
        "{seen_by_a:?}"
    );
    assert!(
        b_rx.messages.try_recv().is_err(),
        "part of a refused frame was delivered"
    );
    assert_eq!(b.metrics().frame_errors, 1);

    // A reconnects and small messages flow again.
    assert_delivers(&a, &mut b_rx, 2, 5).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn wrong_cluster_id_is_rejected_on_both_sides() {
    let (a, mut a_rx) = start(config(1)).await;
    let (b, mut b_rx) = start(TransportConfig {
        cluster_id: CLUSTER + 1,
        ..config(2)
    })
    .await;
    a.add_peer(2, b.local_addr()).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    a.send(2, message(1, 1, 10)).unwrap();
    b.send(1, message(1, 1, 10)).unwrap();

    // A dials B: B refuses, and A hears why.
    expect_event(&mut b_rx.events, "B refusing A", |e| {
        matches!(
            e,
            PeerEvent::InboundError {
                peer: Some(1),
                error: ProtocolError::ClusterMismatch { ours, theirs: CLUSTER },
                ..
            } if *ours == CLUSTER + 1
        )
    })
    .await;
    let event = expect_event(&mut a_rx.events, "A told of the refusal", |e| {
        matches!(e, PeerEvent::OutboundError { peer: 2, .. })
    })
    .await;
    let PeerEvent::OutboundError {
        error: ProtocolError::RejectedByPeer { code, reason },
        ..
    } = event
    else {
        panic!("unexpected {event:?}");
    };
    assert_eq!(code, RejectCode::ClusterMismatch);
    assert!(reason.contains("cluster id mismatch"), "{reason}");

    // And the other way round.
    expect_event(&mut a_rx.events, "A refusing B", |e| {
        matches!(
            e,
            PeerEvent::InboundError {
                peer: Some(2),
                error: ProtocolError::ClusterMismatch {
                    ours: CLUSTER,
                    theirs
                },
                ..
            } if *theirs == CLUSTER + 1
        )
    })
    .await;

    assert!(a_rx.messages.try_recv().is_err());
    assert!(b_rx.messages.try_recv().is_err());
    assert_eq!(a.metrics().connects, 0);
    assert_eq!(b.metrics().messages_received, 0);
    assert!(b.metrics().handshake_failures >= 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn unknown_node_is_rejected_until_added() {
    let (a, mut a_rx) = start(config(1)).await;
    let (b, mut b_rx) = start(config(2)).await;
    a.add_peer(2, b.local_addr()).unwrap();
    a.send(2, message(4, 1, 10)).unwrap();

    expect_event(&mut b_rx.events, "B refusing unknown node 1", |e| {
        matches!(
            e,
            PeerEvent::InboundError {
                peer: Some(1),
                error: ProtocolError::UnknownNode { node_id: 1 },
                ..
            }
        )
    })
    .await;
    expect_event(&mut a_rx.events, "A told it is unknown", |e| {
        matches!(
            e,
            PeerEvent::OutboundError {
                peer: 2,
                error: ProtocolError::RejectedByPeer {
                    code: RejectCode::UnknownNode,
                    ..
                }
            }
        )
    })
    .await;
    assert!(b_rx.messages.try_recv().is_err());

    // Membership change: once B knows node 1, A's redial succeeds and its queue flows.
    b.add_peer(1, a.local_addr()).unwrap();
    let (from, got) = receive(&mut b_rx.messages, 1).await.remove(0);
    assert_eq!((from, got), (1, message(4, 1, 10)));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn handshake_for_another_node_is_rejected() {
    let (a, mut a_rx) = start(config(1)).await;
    let (b, mut b_rx) = start(config(2)).await;
    // A believes node 3 lives at B's address.
    a.add_peer(3, b.local_addr()).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    expect_event(
        &mut b_rx.events,
        "B refusing a handshake meant for 3",
        |e| {
            matches!(
                e,
                PeerEvent::InboundError {
                    error: ProtocolError::WrongReceiver {
                        expected: 3,
                        actual: 2
                    },
                    ..
                }
            )
        },
    )
    .await;
    expect_event(&mut a_rx.events, "A told of the refusal", |e| {
        matches!(
            e,
            PeerEvent::OutboundError {
                peer: 3,
                error: ProtocolError::RejectedByPeer {
                    code: RejectCode::WrongReceiver,
                    ..
                }
            }
        )
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

// ---- raw clients speaking (or failing to speak) the protocol ----

fn hello(version: u16, cluster_id: u64, from: NodeId, to: NodeId) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_slice(b"ORDO");
    out.put_u16(version);
    out.put_u16(0);
    out.put_u64(cluster_id);
    out.put_u64(from);
    out.put_u64(to);
    out.put_u64(1); // incarnation
    out.put_u16(0); // nothing advertised
    out
}

/// A frame with one message; `corrupt` flips a payload bit after the checksum is computed.
fn frame(payload: &[u8], corrupt: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_u32(1);
    body.put_u8(0);
    body.put_u64(1);
    body.put_u32(payload.len() as u32);
    body.put_slice(payload);
    let length = (body.len() as u32).to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&length), &body);
    if corrupt {
        let last = body.len() - 1;
        body[last] ^= 1;
    }
    let mut out = Vec::new();
    out.put_slice(&length);
    out.put_u32(crc);
    out.put_slice(&body);
    out
}

/// A reply as read off the wire: version, code byte and reason.
#[derive(Debug)]
struct RawReply {
    version: u16,
    code: u8,
    reason: String,
}

async fn read_raw_reply(stream: &mut TcpStream) -> RawReply {
    let mut header = [0u8; 26];
    timeout(HANG_GUARD, stream.read_exact(&mut header))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&header[..4], b"ORDO");
    let reason_bytes = u16::from_be_bytes([header[24], header[25]]) as usize;
    let mut reason = vec![0u8; reason_bytes];
    timeout(HANG_GUARD, stream.read_exact(&mut reason))
        .await
        .unwrap()
        .unwrap();
    RawReply {
        version: u16::from_be_bytes([header[4], header[5]]),
        code: header[6],
        reason: String::from_utf8(reason).unwrap(),
    }
}

/// Reads until the other side closes; returns how many bytes came before the close.
async fn read_to_close(stream: &mut TcpStream) -> usize {
    let mut rest = Vec::new();
    match timeout(HANG_GUARD, stream.read_to_end(&mut rest))
        .await
        .unwrap()
    {
        Ok(_) => rest.len(),
        // A reset also closes the connection.
        Err(error) => {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
            rest.len()
        }
    }
}

/// A raw connection to `to` (node 2) that has passed the handshake as node [`RAW`].
async fn raw_peer(to: &Transport) -> TcpStream {
    let mut raw = TcpStream::connect(to.local_addr()).await.unwrap();
    raw.write_all(&hello(PROTOCOL_VERSION, CLUSTER, RAW, 2))
        .await
        .unwrap();
    let accepted = read_raw_reply(&mut raw).await;
    assert_eq!(accepted.code, 0, "{accepted:?}");
    raw
}

/// Nodes 1 and 2, plus node 3 known to node 2 but never started: the raw clients below claim
/// to be node 3, so they never displace node 1's connection. Node 2 dials node 3 at a listener
/// that accepts and stays silent, kept alive by the returned value.
async fn listener_with_good_peer() -> (
    (Transport, TransportChannels),
    (Transport, TransportChannels),
    TcpListener,
) {
    let (a, b) = pair().await;
    let silent = listener().await;
    b.0.add_peer(RAW, silent.local_addr().unwrap()).unwrap();
    (a, b, silent)
}

/// The node id the raw clients claim.
const RAW: NodeId = 3;

async fn inbound_error(events: &mut mpsc::Receiver<PeerEvent>) -> (Option<NodeId>, ProtocolError) {
    match expect_event(events, "an inbound error", |e| {
        matches!(e, PeerEvent::InboundError { .. })
    })
    .await
    {
        PeerEvent::InboundError { peer, error, .. } => (peer, error),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn random_bytes_on_the_peer_port_are_refused_and_the_listener_keeps_serving() {
    let ((a, _a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..20 {
        let garbage: Vec<u8> = (0..64 + round * 37)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert_ne!(&garbage[..4], b"ORDO");
        let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
        raw.write_all(&garbage).await.unwrap();
        let reply = read_raw_reply(&mut raw).await;
        assert_eq!(reply.code, 1, "round {round}: {reply:?}");
        assert!(reply.reason.contains("bad magic"), "{reply:?}");
        read_to_close(&mut raw).await;
        let (peer, error) = inbound_error(&mut b_rx.events).await;
        assert_eq!(peer, None);
        let mut found = [0u8; 4];
        found.copy_from_slice(&garbage[..4]);
        assert_eq!(error, ProtocolError::BadMagic { found });
    }
    assert_eq!(b.metrics().handshake_failures, 20);
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn truncated_handshake_is_refused_and_the_listener_keeps_serving() {
    let ((a, _a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
    raw.write_all(&hello(PROTOCOL_VERSION, CLUSTER, RAW, 2)[..10])
        .await
        .unwrap();
    raw.shutdown().await.unwrap();
    let reply = read_raw_reply(&mut raw).await;
    assert_eq!(reply.code, 12, "{reply:?}");
    read_to_close(&mut raw).await;
    assert_eq!(
        inbound_error(&mut b_rx.events).await,
        (None, ProtocolError::Truncated { what: "handshake" })
    );
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn unknown_version_is_refused_naming_both_versions() {
    let ((a, _a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
    raw.write_all(&hello(PROTOCOL_VERSION + 1, CLUSTER, RAW, 2))
        .await
        .unwrap();
    let reply = read_raw_reply(&mut raw).await;
    assert_eq!(reply.code, 2, "{reply:?}");
    assert_eq!(reply.version, PROTOCOL_VERSION);
    assert!(
        reply
            .reason
            .contains(&format!("version {}", PROTOCOL_VERSION + 1))
            && reply
                .reason
                .contains(&format!("version {PROTOCOL_VERSION}")),
        "{reply:?}"
    );
    read_to_close(&mut raw).await;
    assert_eq!(
        inbound_error(&mut b_rx.events).await,
        (
            None,
            ProtocolError::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1
            }
        )
    );
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_of_the_previous_version_is_refused_with_a_reason_naming_both() {
    let ((a, _a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
    // Version 2's handshake: the same fixed fields, no advertised values.
    let mut old = hello(2, CLUSTER, RAW, 2);
    old.truncate(40);
    raw.write_all(&old).await.unwrap();
    let reply = read_raw_reply(&mut raw).await;
    assert_eq!(reply.code, 2, "{reply:?}");
    assert!(
        reply.reason.contains("version 2")
            && reply
                .reason
                .contains(&format!("version {PROTOCOL_VERSION}"))
            && reply.reason.contains("upgrade them together"),
        "{reply:?}"
    );
    read_to_close(&mut raw).await;
    assert_eq!(
        inbound_error(&mut b_rx.events).await,
        (
            None,
            ProtocolError::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: 2
            }
        )
    );
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_advertised_block_over_its_bound_is_refused_from_its_length() {
    let ((a, _a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
    let mut handshake = hello(PROTOCOL_VERSION, CLUSTER, RAW, 2);
    let length = handshake.len() - 2;
    handshake[length..].copy_from_slice(&u16::MAX.to_be_bytes());
    // Nothing of the block is sent: the length alone is refused.
    raw.write_all(&handshake).await.unwrap();
    let reply = read_raw_reply(&mut raw).await;
    assert_eq!(reply.code, 6, "{reply:?}");
    assert!(
        reply.reason.contains("advertised values too long"),
        "{reply:?}"
    );
    read_to_close(&mut raw).await;
    assert_eq!(
        inbound_error(&mut b_rx.events).await,
        (
            None,
            ProtocolError::MalformedHandshake("advertised values too long")
        )
    );
    assert_eq!(b.advertised(RAW), None);
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn garbage_advertised_values_are_refused_and_change_nothing_recorded() {
    let ((a, _a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
    let mut handshake = hello(PROTOCOL_VERSION, CLUSTER, RAW, 2);
    let length = handshake.len() - 2;
    // One entry whose name is not plain text.
    let entry = [3, b'U', b'R', b'L', 0, 1, b'x'];
    handshake[length..].copy_from_slice(&(entry.len() as u16).to_be_bytes());
    handshake.extend_from_slice(&entry);
    raw.write_all(&handshake).await.unwrap();
    let reply = read_raw_reply(&mut raw).await;
    assert_eq!(reply.code, 6, "{reply:?}");
    read_to_close(&mut raw).await;
    let (_, error) = inbound_error(&mut b_rx.events).await;
    assert_eq!(
        error,
        ProtocolError::MalformedHandshake("an advertised name is not plain")
    );
    assert_eq!(b.advertised(RAW), None);
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_acceptor_records_what_each_dialer_advertises_until_the_peer_is_removed() {
    let url = |port: u16| {
        Advertised::new([(
            "etcd-client-url".to_string(),
            format!("http://127.0.0.1:{port}"),
        )])
        .unwrap()
    };
    let (a, mut a_rx) = start(TransportConfig {
        advertised: url(12379),
        ..config(1)
    })
    .await;
    let (b, mut b_rx) = start(TransportConfig {
        advertised: url(22379),
        ..config(2)
    })
    .await;
    assert_eq!(a.advertised(2), None, "nothing before a handshake");
    a.add_peer(2, b.local_addr()).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    // A dialer hears it is connected only after the acceptor admitted (and recorded) it.
    expect_event(&mut a_rx.events, "A connected", |e| {
        *e == PeerEvent::Connected(2)
    })
    .await;
    expect_event(&mut b_rx.events, "B connected", |e| {
        *e == PeerEvent::Connected(1)
    })
    .await;
    assert_eq!(b.advertised(1), Some(url(12379)));
    assert_eq!(a.advertised(2), Some(url(22379)));
    b.remove_peer(1).await.unwrap();
    assert_eq!(b.advertised(1), None);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn bad_checksum_closes_the_connection_without_delivery() {
    let ((a, mut a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    expect_event(&mut a_rx.events, "A connected", |e| {
        *e == PeerEvent::Connected(2)
    })
    .await;
    let mut raw = raw_peer(&b).await;
    // A good frame first, then a corrupt one: only the good one is delivered.
    raw.write_all(&frame(b"good", false)).await.unwrap();
    raw.write_all(&frame(b"corrupt", true)).await.unwrap();
    let reply = read_raw_reply(&mut raw).await;
    assert_eq!(reply.code, 9, "{reply:?}");
    read_to_close(&mut raw).await;
    let (peer, error) = inbound_error(&mut b_rx.events).await;
    assert_eq!(peer, Some(RAW));
    assert!(
        matches!(error, ProtocolError::ChecksumMismatch { .. }),
        "{error:?}"
    );
    let (from, good) = receive(&mut b_rx.messages, 1).await.remove(0);
    assert_eq!((from, &good.payload[..]), (RAW, &b"good"[..]));
    assert!(b_rx.messages.try_recv().is_err(), "corrupt frame delivered");
    assert_eq!(b.metrics().frame_errors, 1);
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_refused_incarnation_is_not_told_the_one_on_record() {
    let ((a, _a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    // Node 3 as incarnation 1, recorded; then a caller claiming node 3 with another.
    drop(raw_peer(&b).await);
    let mut impostor = hello(PROTOCOL_VERSION, CLUSTER, RAW, 2);
    let at = impostor.len() - 10; // the incarnation, before the advertised block's length
    impostor[at..at + 8].copy_from_slice(&0x5EC2_E700u64.to_be_bytes());
    let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
    raw.write_all(&impostor).await.unwrap();
    let reply = read_raw_reply(&mut raw).await;
    assert_eq!(reply.code, 13, "{reply:?}");
    assert!(reply.reason.contains("lost its state"), "{reply:?}");
    assert!(
        !reply.reason.contains("0x0000000000000001"),
        "the refusal tells the incarnation on record: {reply:?}"
    );
    // This node's own report keeps both.
    let (peer, error) = inbound_error(&mut b_rx.events).await;
    assert_eq!(peer, Some(RAW));
    assert_eq!(
        error,
        ProtocolError::LostState {
            node_id: RAW,
            recorded: 1,
            presented: 0x5EC2_E700,
        }
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn truncated_frame_is_refused_without_delivery() {
    let ((a, _a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    let mut raw = raw_peer(&b).await;
    let whole = frame(b"never delivered", false);
    raw.write_all(&whole[..whole.len() - 3]).await.unwrap();
    raw.shutdown().await.unwrap();
    let reply = read_raw_reply(&mut raw).await;
    assert_eq!(reply.code, 12, "{reply:?}");
    assert_eq!(
        inbound_error(&mut b_rx.events).await,
        (Some(RAW), ProtocolError::Truncated { what: "frame" })
    );
    assert!(
        b_rx.messages.try_recv().is_err(),
        "truncated frame delivered"
    );
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn peer_restart_reconnects_and_delivery_continues() {
    let ((a, mut a_rx), (b, mut b_rx)) = pair().await;
    a.send(2, message(1, 1, 8)).unwrap();
    assert_eq!(receive(&mut b_rx.messages, 1).await[0].1, message(1, 1, 8));
    expect_event(&mut a_rx.events, "A connected", |e| {
        *e == PeerEvent::Connected(2)
    })
    .await;

    let b_addr = b.local_addr();
    b.shutdown().await;
    expect_event(&mut a_rx.events, "B unreachable", |e| {
        *e == PeerEvent::Unreachable(2)
    })
    .await;
    // Queued while B is down.
    for seq in 2..=50 {
        a.send(2, message(1, seq, 8)).unwrap();
    }

    let (b, mut b_rx) = Transport::bind(config(2), b_addr).await.unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    expect_event(&mut a_rx.events, "A reconnected", |e| {
        *e == PeerEvent::Connected(2)
    })
    .await;
    for seq in 51..=60 {
        a.send(2, message(1, seq, 8)).unwrap();
    }
    let received: Vec<_> = receive(&mut b_rx.messages, 59)
        .await
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let expected: Vec<_> = (2..=60).map(|seq| message(1, seq, 8)).collect();
    assert_eq!(received, expected);
    assert_eq!(a.metrics().reconnects, 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn full_outbound_queue_drops_and_counts_instead_of_blocking() {
    // A peer that accepts TCP connections but never answers the handshake: nothing leaves
    // A's queue.
    let silent = listener().await;
    let (a, _a_rx) = start(TransportConfig {
        queue_messages_max: 8,
        ..config(1)
    })
    .await;
    a.add_peer(2, silent.local_addr().unwrap()).unwrap();
    let results: Vec<_> = (0..100).map(|seq| a.send(2, message(1, seq, 16))).collect();
    assert!(results[..8].iter().all(Result::is_ok));
    assert!(results[8..]
        .iter()
        .all(|r| *r == Err(SendError::QueueFull(2))));
    assert_eq!(a.metrics().messages_dropped, 92);

    // The byte limit drops too: 113 encoded bytes each, 1000 bytes allowed.
    let (c, _c_rx) = start(TransportConfig {
        queue_bytes_max: 1000,
        ..config(3)
    })
    .await;
    c.add_peer(2, silent.local_addr().unwrap()).unwrap();
    let results: Vec<_> = (0..20).map(|seq| c.send(2, message(1, seq, 100))).collect();
    assert!(results[..8].iter().all(Result::is_ok));
    assert!(results[8..]
        .iter()
        .all(|r| *r == Err(SendError::QueueFull(2))));
    assert_eq!(c.metrics().messages_dropped, 12);

    // Once the peer answers, what was queued goes through, in order.
    let (b, mut b_rx) = Transport::start(config(2), silent).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    b.add_peer(3, c.local_addr()).unwrap();
    let mut from_a = Vec::new();
    let mut from_c = Vec::new();
    for (from, m) in receive(&mut b_rx.messages, 16).await {
        if from == 1 {
            from_a.push(m)
        } else {
            from_c.push(m)
        }
    }
    assert_eq!(
        from_a,
        (0..8).map(|seq| message(1, seq, 16)).collect::<Vec<_>>()
    );
    assert_eq!(
        from_c,
        (0..8).map(|seq| message(1, seq, 100)).collect::<Vec<_>>()
    );
    a.shutdown().await;
    b.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn slow_receiver_pushes_back_to_the_senders_queue() {
    let (a, _a_rx) = start(TransportConfig {
        queue_messages_max: 16,
        ..config(1)
    })
    .await;
    let (b, mut b_rx) = start(TransportConfig {
        inbound_messages_max: 4,
        ..config(2)
    })
    .await;
    a.add_peer(2, b.local_addr()).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();

    // B's runtime reads nothing. A keeps sending until its queue is full, which can only
    // happen once B stops reading its socket and the kernel buffers between them fill.
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    let mut accepted = 0u64;
    let mut dropped = false;
    for _ in 0..20_000 {
        match a.send(
            2,
            PeerMessage {
                group_id: accepted,
                payload: payload.clone(),
            },
        ) {
            Ok(()) => accepted += 1,
            Err(SendError::QueueFull(2)) => {
                dropped = true;
                break;
            }
            Err(other) => panic!("{other}"),
        }
        tokio::task::yield_now().await;
    }
    assert!(
        dropped,
        "the queue never filled: the receiver buffered without bound"
    );
    assert!(b.metrics().messages_received <= 4);
    assert_eq!(a.metrics().messages_dropped, 1);

    // Draining resumes the flow: everything accepted arrives, in order.
    let received = receive(&mut b_rx.messages, accepted as usize).await;
    let groups: Vec<u64> = received.iter().map(|(_, m)| m.group_id).collect();
    assert_eq!(groups, (0..accepted).collect::<Vec<_>>());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn removed_peer_is_disconnected_and_refused() {
    let ((a, mut a_rx), (b, mut b_rx)) = pair().await;
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    assert_delivers(&b, &mut a_rx, 1, 1).await;

    b.remove_peer(1).await.unwrap();
    assert_eq!(b.peers(), vec![]);
    assert_eq!(b.send(1, message(1, 1, 1)), Err(SendError::UnknownPeer(1)));
    assert_eq!(
        b.remove_peer(1).await,
        Err(ordo_node::transport::PeerError::UnknownPeer(1))
    );
    // A's connection to B is closed, and its redials are refused.
    expect_event(&mut a_rx.events, "A refused by B", |e| {
        matches!(
            e,
            PeerEvent::OutboundError {
                peer: 2,
                error: ProtocolError::RejectedByPeer {
                    code: RejectCode::UnknownNode,
                    ..
                }
            }
        )
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_every_task_and_closes_the_listener() {
    let ((a, mut a_rx), (b, mut b_rx)) = pair().await;
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    assert_delivers(&b, &mut a_rx, 1, 1).await;
    let a_addr = a.local_addr();

    timeout(HANG_GUARD, a.shutdown())
        .await
        .expect("shutdown hung");
    // Every task held the senders of these channels; both closing means none is left.
    timeout(HANG_GUARD, async {
        while a_rx.messages.recv().await.is_some() {}
        while a_rx.events.recv().await.is_some() {}
    })
    .await
    .expect("a task outlived shutdown");
    assert!(
        TcpStream::connect(a_addr).await.is_err(),
        "listener still open"
    );
    // B notices its connection to A is gone.
    expect_event(&mut b_rx.events, "A unreachable", |e| {
        *e == PeerEvent::Unreachable(1)
    })
    .await;
    b.shutdown().await;
}

#[tokio::test]
async fn dropping_the_transport_stops_its_tasks() {
    let ((a, mut a_rx), (b, mut b_rx)) = pair().await;
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    drop(a);
    timeout(HANG_GUARD, async {
        while a_rx.messages.recv().await.is_some() {}
        while a_rx.events.recv().await.is_some() {}
    })
    .await
    .expect("a task outlived the dropped transport");
    b.shutdown().await;
}

#[tokio::test]
async fn membership_rejects_self_and_duplicates() {
    let (a, _a_rx) = start(config(1)).await;
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    use ordo_node::transport::PeerError;
    assert_eq!(a.add_peer(1, addr), Err(PeerError::SelfPeer(1)));
    a.add_peer(2, addr).unwrap();
    assert_eq!(a.add_peer(2, addr), Err(PeerError::AlreadyPeer(2)));
    assert_eq!(a.peers(), vec![(2, addr)]);
    assert_eq!(a.send(5, message(1, 1, 1)), Err(SendError::UnknownPeer(5)));
    a.shutdown().await;
}

#[tokio::test]
async fn silent_connection_is_refused_after_the_handshake_timeout() {
    let (b, mut b_rx) = start(TransportConfig {
        handshake_timeout_ms: 100,
        ..config(2)
    })
    .await;
    let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
    let reply = read_raw_reply(&mut raw).await;
    assert_eq!(reply.code, 7, "{reply:?}");
    assert_eq!(
        inbound_error(&mut b_rx.events).await,
        (None, ProtocolError::HandshakeTimeout { timeout_ms: 100 })
    );
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_goes_silent_is_reported_unreachable_while_idle_peers_keep_alive() {
    // The handshake bound is far beyond the test's guard, so that node 2's own dial of the
    // raw peer (at a listener that never answers) reports nothing meanwhile.
    let quick = |id| TransportConfig {
        keepalive_ms: 20,
        silence_ms: 200,
        handshake_timeout_ms: 600_000,
        ..config(id)
    };
    let (a, mut a_rx) = start(quick(1)).await;
    let (b, mut b_rx) = start(quick(2)).await;
    a.add_peer(2, b.local_addr()).unwrap();
    b.add_peer(1, a.local_addr()).unwrap();
    let never_answers = listener().await;
    b.add_peer(RAW, never_answers.local_addr().unwrap())
        .unwrap();
    expect_event(&mut a_rx.events, "A connected", |e| {
        *e == PeerEvent::Connected(2)
    })
    .await;
    // A raw peer that handshakes, sends one frame and then nothing, as a peer does behind a
    // partition that drops packets without closing the socket.
    let mut raw = raw_peer(&b).await;
    raw.write_all(&frame(b"last words", false)).await.unwrap();
    let unreachable = expect_event(&mut b_rx.events, "the silent peer reported", |e| {
        matches!(e, PeerEvent::Unreachable(RAW) | PeerEvent::Unreachable(1))
    })
    .await;
    // Node 1 sent nothing either, for longer, but its keepalives kept it alive.
    assert_eq!(unreachable, PeerEvent::Unreachable(RAW));
    read_to_close(&mut raw).await;
    assert_eq!(b.metrics().silent_connections, 1);
    assert!(a.metrics().keepalives_sent > 0);
    let (from, last) = receive(&mut b_rx.messages, 1).await.remove(0);
    assert_eq!((from, &last.payload[..]), (RAW, &b"last words"[..]));
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (b, _b_rx) = start(TransportConfig {
        inbound_connections_max: 1,
        ..config(2)
    })
    .await;
    // The first connection holds the only slot while it sits in its handshake.
    let _first = TcpStream::connect(b.local_addr()).await.unwrap();
    let mut second = TcpStream::connect(b.local_addr()).await.unwrap();
    assert_eq!(read_to_close(&mut second).await, 0);
    assert_eq!(b.metrics().inbound_connections_refused, 1);
    b.shutdown().await;
}

#[tokio::test]
async fn newer_connection_from_the_same_peer_replaces_the_older() {
    let ((a, _a_rx), (b, mut b_rx), _silent) = listener_with_good_peer().await;
    let mut older = TcpStream::connect(b.local_addr()).await.unwrap();
    older
        .write_all(&hello(PROTOCOL_VERSION, CLUSTER, RAW, 2))
        .await
        .unwrap();
    assert_eq!(read_raw_reply(&mut older).await.code, 0);
    let mut newer = TcpStream::connect(b.local_addr()).await.unwrap();
    newer
        .write_all(&hello(PROTOCOL_VERSION, CLUSTER, RAW, 2))
        .await
        .unwrap();
    assert_eq!(read_raw_reply(&mut newer).await.code, 0);
    // The older connection is closed without a notice; the newer one carries messages.
    assert_eq!(read_to_close(&mut older).await, 0);
    newer.write_all(&frame(b"via newer", false)).await.unwrap();
    let (from, got) = receive(&mut b_rx.messages, 1).await.remove(0);
    assert_eq!((from, &got.payload[..]), (RAW, &b"via newer"[..]));
    assert_delivers(&a, &mut b_rx, 2, 1).await;
    a.shutdown().await;
    b.shutdown().await;
}
