//! Restores a KV snapshot from arbitrary bytes and, if it restores, writes to the store.
//! Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_kv::fuzzing::snapshot(data);
});
