//! Throughput of the peer transport between two nodes on loopback.
//!
//! ```sh
//! cargo run --release -p ordo-node --example transport_bench [seconds_per_size]
//! ```
//!
//! For each payload size, node 1 sends to node 2 for a bounded time (3 s by default) or a
//! bounded message count, whichever ends first, and the figures are printed. A window of
//! messages in flight keeps the sender from outrunning the receiver, so nothing is dropped
//! and the figures measure delivered messages only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_node::transport::{PeerMessage, SendError, Transport, TransportConfig};
use tokio::sync::Semaphore;

const CLUSTER: u64 = 1;
/// Messages sent but not yet received, at most.
const WINDOW_MESSAGES: usize = 4096;
/// Payload sizes measured, and the most messages sent for each.
const RUNS: [(usize, u64); 2] = [(64, 20_000_000), (4096, 2_000_000)];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds_per_size: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 3,
    };
    let duration_max = Duration::from_secs(seconds_per_size.clamp(1, 60));

    let config = |node_id| TransportConfig {
        queue_messages_max: WINDOW_MESSAGES,
        inbound_messages_max: WINDOW_MESSAGES,
        ..TransportConfig::new(CLUSTER, node_id)
    };
    let loopback = "127.0.0.1:0".parse()?;
    let (sender, _sender_channels) = Transport::bind(config(1), loopback).await?;
    let (receiver, mut receiver_channels) = Transport::bind(config(2), loopback).await?;
    sender.add_peer(2, receiver.local_addr())?;
    receiver.add_peer(1, sender.local_addr())?;
    let sender = Arc::new(sender);

    println!(
        "{:>8} {:>12} {:>8} {:>14} {:>10} {:>10}",
        "payload", "messages", "seconds", "messages/s", "MB/s", "msgs/frame"
    );
    for (payload_bytes, messages_max) in RUNS {
        let before = sender.metrics();
        let window = Arc::new(Semaphore::new(WINDOW_MESSAGES));
        let started = Instant::now();
        let sending = tokio::spawn({
            let sender = sender.clone();
            let window = window.clone();
            let payload = Bytes::from(vec![0xa5; payload_bytes]);
            async move {
                let mut sent = 0u64;
                while sent < messages_max {
                    if sent.is_multiple_of(1024) && started.elapsed() >= duration_max {
                        break;
                    }
                    window.acquire().await?.forget();
                    let message = PeerMessage {
                        group_id: sent % 16,
                        payload: payload.clone(),
                    };
                    match sender.send(2, message) {
                        Ok(()) => sent += 1,
                        Err(SendError::QueueFull(_)) => unreachable!("the window is the queue"),
                        Err(error) => {
                            return Err(Box::new(error) as Box<dyn std::error::Error + Send + Sync>)
                        }
                    }
                }
                Ok(sent)
            }
        });

        let mut received = 0u64;
        let mut sent_total = None;
        let mut sending = sending;
        while sent_total != Some(received) {
            tokio::select! {
                message = receiver_channels.messages.recv() => {
                    let (_, message) = message.ok_or("receiver channel closed")?;
                    debug_assert_eq!(message.payload.len(), payload_bytes);
                    received += 1;
                    window.add_permits(1);
                }
                sent = &mut sending, if sent_total.is_none() => {
                    sent_total = Some(sent?.map_err(|e| e.to_string())?);
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let after = sender.metrics();
        let frames = after.frames_sent - before.frames_sent;
        println!(
            "{:>7}B {:>12} {:>8.2} {:>14.0} {:>10.1} {:>10.1}",
            payload_bytes,
            received,
            seconds,
            received as f64 / seconds,
            (received * payload_bytes as u64) as f64 / seconds / 1e6,
            received as f64 / frames.max(1) as f64,
        );
        assert_eq!(after.messages_dropped, 0);
    }

    let sender = Arc::into_inner(sender).ok_or("sender still shared")?;
    sender.shutdown().await;
    receiver.shutdown().await;
    Ok(())
}
