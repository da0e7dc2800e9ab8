//! What the peer transport's test files share: starting a transport on a free port of
//! 127.0.0.1 and waiting for one of its events.
//!
//! Every wait is an awaited event under a generous timeout, which only guards against hangs.

use std::time::Duration;

use ordo_node::transport::{PeerEvent, Transport, TransportChannels, TransportConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The longest any single wait may take before the test fails instead of hanging.
pub const HANG_GUARD: Duration = Duration::from_secs(20);
/// Events skipped while waiting for a wanted one, at most.
pub const EVENTS_SKIPPED_MAX: usize = 10_000;

/// A listener on a free port of 127.0.0.1.
pub async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// A transport started with `config` on a free port.
pub async fn start(config: TransportConfig) -> (Transport, TransportChannels) {
    Transport::start(config, listener().await).unwrap()
}

/// Waits for the first event that `wanted` accepts, skipping others.
pub async fn expect_event(
    events: &mut mpsc::Receiver<PeerEvent>,
    what: &str,
    wanted: impl Fn(&PeerEvent) -> bool,
) -> PeerEvent {
    for _ in 0..EVENTS_SKIPPED_MAX {
        let event = timeout(HANG_GUARD, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no event {what}"))
            .expect("event channel closed");
        if wanted(&event) {
            return event;
        }
    }
    panic!("too many events without {what}");
}
