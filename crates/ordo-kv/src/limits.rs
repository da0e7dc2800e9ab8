//! Every bound the KV layer enforces, in one place.

/// Largest encoded command accepted for proposal (etcd's default `--max-request-bytes`).
pub const REQUEST_BYTES_MAX: usize = 1536 * 1024;
/// Largest gRPC message decoded by the services: a maximal request plus framing headroom.
pub const GRPC_MESSAGE_BYTES_MAX: usize = REQUEST_BYTES_MAX + 512 * 1024;
/// Most compares, and most operations per branch, in one txn (etcd's default `--max-txn-ops`).
pub const TXN_OPS_MAX: usize = 128;
/// Deepest nesting of txns inside txns; bounds recursion on untrusted input.
pub const TXN_DEPTH_MAX: usize = 16;
/// Most keys one range may return; a larger range must be paged with `limit`.
pub const RANGE_KEYS_MAX: usize = 100_000;
/// Largest lease time to live (etcd's `MaxLeaseTTL`).
pub const LEASE_TTL_MAX_SECONDS: i64 = 9_000_000_000;
/// Smallest lease time to live granted; shorter requests are raised to it so that a lease
/// cannot expire during an ordinary leader election.
pub const LEASE_TTL_MIN_SECONDS: i64 = 2;
/// Most leases that may exist at once.
pub const LEASES_MAX: usize = 1_000_000;
/// Most watches one watch stream may hold.
pub const WATCHES_PER_STREAM_MAX: usize = 1024;
/// Most events a watcher puts in one response (whole revisions are never split, so a single
/// large revision may exceed it).
pub const WATCH_EVENTS_PER_RESPONSE_MAX: usize = 1000;
/// Most stored revisions a watcher scans under the store lock in one catch-up step.
pub const WATCH_SCAN_RECORDS_MAX: usize = 10_000;
/// Responses buffered per watch stream before watchers wait for the client to read; a
/// watcher that waits falls behind and later catches up from history.
pub const WATCH_STREAM_BUFFER_RESPONSES: usize = 64;
/// Keep-alive responses buffered per lease keep-alive stream.
pub const KEEPALIVE_STREAM_BUFFER_RESPONSES: usize = 16;
