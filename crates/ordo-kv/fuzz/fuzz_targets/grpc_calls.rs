//! Calls the etcd gRPC services (KV, Watch, Lease, Cluster, Maintenance) in-process with
//! message bodies of arbitrary bytes, on a one-node backend that applies what they
//! propose. Refusals are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_kv::fuzzing::grpc_calls(data);
});
