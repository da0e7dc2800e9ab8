//! Connections to the cluster's endpoints, error classification, and the seeded generator the
//! clients draw operations from.

use std::time::Duration;

use ordo_kv::proto::etcdserverpb::{kv_client::KvClient, watch_client::WatchClient};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::history::Completion;

/// Largest gRPC message a client accepts (a range of the whole append prefix can be large).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// One endpoint's lazily connected channel, shared by every client that uses it.
#[derive(Clone, Debug)]
pub struct Conn {
    /// `host:port`.
    pub addr: String,
    channel: Channel,
}

impl Conn {
    /// A channel to `addr` (`host:port`) that connects on first use and reconnects after
    /// failures by itself.
    pub fn new(addr: &str, connect_timeout: Duration) -> Result<Conn, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        Ok(Conn {
            addr: addr.to_string(),
            channel: endpoint.connect_lazy(),
        })
    }

    /// A KV client on this channel.
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
    }

    /// A Watch client on this channel.
    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone()).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
    }
}

/// How a failed request ended, for the history.
///
/// A read never changes state, so any failed read simply did not happen. A write refused with
/// a status that is only produced before the request is ordered did not happen either; every
/// other failure of a write (a timeout, a lost connection, a leader change, `Unavailable`,
/// which a connection reset also produces) may have taken effect — except a failure to
/// connect at all, after which the request was never sent.
pub fn classify(status: &tonic::Status, write: bool) -> Completion {
    let error = format!("{:?}: {}", status.code(), status.message());
    let never_sent = status.code() == Code::Unavailable && is_connect_error(status.message());
    let definite = never_sent
        || matches!(
            status.code(),
            Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::AlreadyExists
                | Code::NotFound
        );
    if !write || definite {
        Completion::Fail { error }
    } else {
        Completion::Info { error }
    }
}

/// Whether a transport error says the connection was never established (the channel could
/// not connect, so the request was not sent).
fn is_connect_error(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("tcp connect error") || message.contains("error trying to connect")
}

/// The completion of a request that did not answer within its timeout.
pub fn timed_out(timeout: Duration, write: bool) -> Completion {
    let error = format!("no answer within {timeout:?}");
    if write {
        Completion::Info { error }
    } else {
        Completion::Fail { error }
    }
}

/// A small seeded generator (SplitMix64): runs are reproducible from their seed without a
/// dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub use ordo_kv::keys::prefix_end;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible_from_its_seed() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..8).map(|_| a.below(1000)).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.below(1000)).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn failed_reads_are_definite_and_failed_writes_indeterminate() {
        let unavailable = tonic::Status::unavailable("connection reset");
        assert!(matches!(
            classify(&unavailable, false),
            Completion::Fail { .. }
        ));
        assert!(matches!(
            classify(&unavailable, true),
            Completion::Info { .. }
        ));
        let refused =
            tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert!(matches!(classify(&refused, true), Completion::Fail { .. }));
        let invalid = tonic::Status::invalid_argument("key is empty");
        assert!(matches!(classify(&invalid, true), Completion::Fail { .. }));
    }
}
