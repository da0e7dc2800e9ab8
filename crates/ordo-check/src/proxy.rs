//! A fault-injecting TCP proxy in front of one node's peer listener.
//!
//! Ordo's transport dials one connection per ordered pair of nodes and writes messages only
//! from the dialling side, so a connection into node `b` carries exactly the messages of one
//! sender `a`. The proxy learns `a` from the connection's first bytes, the transport's
//! fixed-layout handshake (magic `ORDO`, version, reserved, cluster id, then the sender's id
//! as a big-endian u64 at byte 16), and applies the mode set for `a -> b`. Every node thus
//! names `b` by one address, the proxy's, which is also the address a membership change
//! carries: members added at run time sit behind a proxy like the others. Blocking `a -> b`
//! drops that direction; blocking both directions of a pair cuts the link. The nodes run
//! unmodified: the fault is in the network between them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes read per chunk.
const CHUNK_BYTES: usize = 16 * 1024;

/// Most connections one proxy carries at once; more are closed on accept.
const CONNECTIONS_MAX: usize = 64;

/// Longest the proxy waits to dial its target.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// What a link does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Forwards everything.
    Pass,
    /// Accepts and reads, forwards nothing: a blackhole, as a partitioned network behaves.
    Drop,
    /// Forwards every chunk after this delay.
    Delay(Duration),
}

/// The transport handshake's magic, and where the sender's id sits in the handshake.
const HANDSHAKE_MAGIC: &[u8; 4] = b"ORDO";
const SENDER_ID_BYTES: std::ops::Range<usize> = 16..24;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Control {
    /// The mode of connections whose sender has no mode of its own (or is not known).
    mode: LinkMode,
    /// Modes of single senders.
    by_sender: std::collections::BTreeMap<u64, LinkMode>,
    /// Bumped to close every open connection.
    cut_generation: u64,
}

impl Control {
    fn mode_for(&self, sender: Option<u64>) -> LinkMode {
        sender
            .and_then(|s| self.by_sender.get(&s).copied())
            .unwrap_or(self.mode)
    }
}

/// A running proxy; its tasks and connections end when it is dropped.
#[derive(Debug)]
pub struct LinkProxy {
    listen_addr: SocketAddr,
    control: watch::Sender<Control>,
    dropped_bytes: Arc<AtomicU64>,
    accept_task: JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen_addr = listener.local_addr()?;
        let (control, _) = watch::channel(Control {
            mode: LinkMode::Pass,
            by_sender: std::collections::BTreeMap::new(),
            cut_generation: 0,
        });
        let control_rx = control.subscribe();
        let dropped_bytes = Arc::new(AtomicU64::new(0));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            target,
            control_rx,
            Arc::clone(&dropped_bytes),
        ));
        Ok(LinkProxy {
            listen_addr,
            control,
            dropped_bytes,
            accept_task,
        })
    }

    /// The address the dialling node is given for the target.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// Sets what the proxy does with every sender's bytes from now on, for open connections
    /// too (forgetting modes set for single senders).
    pub fn set_mode(&self, mode: LinkMode) {
        self.control.send_modify(|c| {
            c.mode = mode;
            c.by_sender.clear();
        });
    }

    /// Sets what the proxy does with the bytes node `sender` sends through it.
    pub fn set_sender_mode(&self, sender: u64, mode: LinkMode) {
        self.control.send_modify(|c| {
            c.by_sender.insert(sender, mode);
        });
    }

    /// The mode of senders without a mode of their own.
    pub fn mode(&self) -> LinkMode {
        self.control.borrow().mode
    }

    /// Whether every sender's bytes pass unchanged.
    pub fn is_passing_everything(&self) -> bool {
        let control = self.control.borrow();
        control.mode == LinkMode::Pass && control.by_sender.values().all(|m| *m == LinkMode::Pass)
    }

    /// Bytes read and not forwarded since the proxy started.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes.load(Ordering::Relaxed)
    }

    /// Closes every open connection (the dialling node sees a reset and redials).
    pub fn cut(&self) {
        self.control
            .send_modify(|c| c.cut_generation = c.cut_generation.wrapping_add(1));
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Connection tasks hold a receiver: cutting ends them.
        self.cut();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    control: watch::Receiver<Control>,
    dropped_bytes: Arc<AtomicU64>,
) {
    let open = Arc::new(());
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Each connection task holds a clone: the count of clones is the open connections.
        if Arc::strong_count(&open) > CONNECTIONS_MAX {
            drop(inbound);
            continue;
        }
        let token = Arc::clone(&open);
        let control = control.clone();
        let dropped_bytes = Arc::clone(&dropped_bytes);
        tokio::spawn(async move {
            connection(inbound, target, control, dropped_bytes).await;
            drop(token);
        });
    }
}

/// Reads the start of a connection until it is known whether it is an Ordo handshake, and
/// returns the bytes read (to be forwarded) and the sender it names, if any.
async fn read_sender(inbound: &mut TcpStream) -> std::io::Result<(Vec<u8>, Option<u64>)> {
    let mut head = Vec::with_capacity(SENDER_ID_BYTES.end);
    let mut buffer = [0u8; 64];
    while head.len() < SENDER_ID_BYTES.end {
        let seen = head.len().min(HANDSHAKE_MAGIC.len());
        if head[..seen] != HANDSHAKE_MAGIC[..seen] {
            return Ok((head, None));
        }
        let n = inbound.read(&mut buffer).await?;
        if n == 0 {
            return Ok((head, None));
        }
        head.extend_from_slice(&buffer[..n]);
    }
    if head[..HANDSHAKE_MAGIC.len()] != HANDSHAKE_MAGIC[..] {
        return Ok((head, None));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&head[SENDER_ID_BYTES]);
    Ok((head, Some(u64::from_be_bytes(id))))
}

async fn connection(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut control: watch::Receiver<Control>,
    dropped_bytes: Arc<AtomicU64>,
) {
    let generation = control.borrow().cut_generation;
    // A dialler that sends nothing within the dial timeout is not a node worth carrying.
    let Ok(Ok((head, sender))) =
        tokio::time::timeout(DIAL_TIMEOUT, read_sender(&mut inbound)).await
    else {
        return;
    };
    let outbound = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => stream,
        // The target is down: closing the inbound side tells the dialler, as a refused
        // connection would.
        _ => return,
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, mut out_write) = outbound.into_split();
    let head_mode = control.borrow().mode_for(sender);
    let forward_head = async {
        match head_mode {
            LinkMode::Drop => {
                dropped_bytes.fetch_add(head.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            LinkMode::Pass | LinkMode::Delay(_) => out_write.write_all(&head).await,
        }
    };
    if forward_head.await.is_err() {
        return;
    }
    let forward = pump(
        in_read,
        out_write,
        sender,
        control.clone(),
        Arc::clone(&dropped_bytes),
    );
    let backward = pump(out_read, in_write, sender, control.clone(), dropped_bytes);
    let cut = async move {
        loop {
            if control.changed().await.is_err() {
                return;
            }
            if control.borrow().cut_generation != generation {
                return;
            }
        }
    };
    tokio::select! {
        () = forward => {}
        () = backward => {}
        () = cut => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    sender: Option<u64>,
    control: watch::Receiver<Control>,
    dropped_bytes: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mode = control.borrow().mode_for(sender);
        match mode {
            LinkMode::Pass => {}
            LinkMode::Drop => {
                dropped_bytes.fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
            LinkMode::Delay(delay) => tokio::time::sleep(delay).await,
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    const GUARD: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn proxy_forwards_in_pass_mode_and_blackholes_in_drop_mode() {
        let proxy = LinkProxy::start(echo_server().await).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.listen_addr()).await.expect("dial");
        stream.write_all(b"ping").await.expect("write");
        let mut reply = [0u8; 4];
        tokio::time::timeout(GUARD, stream.read_exact(&mut reply))
            .await
            .expect("echo within the guard")
            .expect("read");
        assert_eq!(&reply, b"ping");

        proxy.set_mode(LinkMode::Drop);
        stream.write_all(b"lost").await.expect("write");
        // Wait until the proxy has swallowed "lost"; "back", sent in pass mode afterwards,
        // must then be the first thing echoed.
        tokio::time::timeout(GUARD, async {
            while proxy.dropped_bytes() < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the proxy read the bytes sent in drop mode");
        proxy.set_mode(LinkMode::Pass);
        stream.write_all(b"back").await.expect("write");
        tokio::time::timeout(GUARD, stream.read_exact(&mut reply))
            .await
            .expect("echo within the guard")
            .expect("read");
        assert_eq!(&reply, b"back");
    }

    /// The first bytes of a connection from node `from`, as Ordo's transport writes them.
    fn handshake(from: u64) -> Vec<u8> {
        let mut hello = Vec::new();
        hello.extend_from_slice(b"ORDO");
        hello.extend_from_slice(&[0, 1, 0, 0]);
        hello.extend_from_slice(&7u64.to_be_bytes());
        hello.extend_from_slice(&from.to_be_bytes());
        hello.extend_from_slice(&2u64.to_be_bytes());
        hello
    }

    async fn echoed(stream: &mut TcpStream, bytes: &[u8]) -> Option<Vec<u8>> {
        stream.write_all(bytes).await.expect("write");
        let mut reply = vec![0u8; bytes.len()];
        match tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut reply)).await
        {
            Ok(Ok(_)) => Some(reply),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_sender_mode_applies_only_to_connections_from_that_sender() {
        let proxy = LinkProxy::start(echo_server().await).await.expect("proxy");
        proxy.set_sender_mode(5, LinkMode::Drop);
        let mut from_five = TcpStream::connect(proxy.listen_addr()).await.expect("dial");
        let mut from_six = TcpStream::connect(proxy.listen_addr()).await.expect("dial");
        let six = handshake(6);
        assert_eq!(echoed(&mut from_six, &six).await, Some(six.clone()));
        assert_eq!(echoed(&mut from_five, &handshake(5)).await, None);
        assert!(!proxy.is_passing_everything());
        proxy.set_mode(LinkMode::Pass);
        assert!(proxy.is_passing_everything());
        assert_eq!(
            echoed(&mut from_five, b"again").await,
            Some(b"again".to_vec())
        );
    }

    #[tokio::test]
    async fn cut_closes_open_connections() {
        let proxy = LinkProxy::start(echo_server().await).await.expect("proxy");
        let mut stream = TcpStream::connect(proxy.listen_addr()).await.expect("dial");
        stream.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        tokio::time::timeout(GUARD, stream.read_exact(&mut byte))
            .await
            .expect("echo within the guard")
            .expect("read");
        proxy.cut();
        let read = tokio::time::timeout(GUARD, stream.read(&mut byte))
            .await
            .expect("closed within the guard");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "connection still open: {read:?}"
        );
    }
}
