//! `ordo-node`: the runtime that turns Ordo's consensus core and write-ahead log into a
//! networked node.
//!
//! A node hosts many Raft groups. The runtime feeds each group's `RawNode` with ticks, peer
//! messages and proposals, carries out the `Ready` it returns — persist through `ordo-wal`,
//! send to peers, apply committed entries — and advances it.
//!
//! - [`transport`]: the peer transport. One long-lived TCP connection per peer and
//!   direction, a versioned handshake that checks cluster and node ids, checksummed batch
//!   frames, bounded queues that drop rather than block, reconnect with backoff.

pub mod transport;
