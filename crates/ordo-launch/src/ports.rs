//! Loopback ports for the servers a launcher starts.

use std::net::{SocketAddr, TcpListener};
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

/// Ports of the range tried in one call before giving up.
const PORT_ATTEMPTS_MAX: usize = 20_000;

/// Hands out loopback ports from one range, never the same port twice per process.
///
/// Ranges should lie below the kernel's ephemeral range (32768 and up on Linux): a node
/// restarted mid-run rebinds its old ports, and an outgoing connection's local port must never
/// have taken one meanwhile. Tests run in parallel threads, so no two clusters of one process
/// may share a port; each process starts at a point of the range chosen by its id, so
/// concurrent processes rarely meet.
pub struct PortAllocator {
    range: Range<u16>,
    next: Mutex<Option<u16>>,
}

impl PortAllocator {
    /// An allocator over `range` (which must not be empty).
    pub const fn new(range: Range<u16>) -> Self {
        assert!(range.start < range.end, "port range must not be empty");
        Self {
            range,
            next: Mutex::new(None),
        }
    }

    /// `n` loopback addresses whose ports are free now and were never handed out before.
    pub fn free_ports(&self, n: usize) -> std::io::Result<Vec<SocketAddr>> {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let Range { start, end } = self.range;
        let span = u32::from(end - start);
        let mut port = next.unwrap_or(start + (std::process::id() % span) as u16);
        let mut ports = Vec::with_capacity(n);
        for _ in 0..PORT_ATTEMPTS_MAX {
            if ports.len() == n {
                break;
            }
            let candidate = port;
            port = if port + 1 >= end { start } else { port + 1 };
            let addr = SocketAddr::from(([127, 0, 0, 1], candidate));
            if TcpListener::bind(addr).is_ok() {
                ports.push(addr);
            }
        }
        *next = Some(port);
        if ports.len() < n {
            return Err(std::io::Error::other(format!(
                "found only {} free loopback ports of {n} in {:?}",
                ports.len(),
                self.range
            )));
        }
        Ok(ports)
    }
}
