//! Applies committed log entries of arbitrary bytes to two KV replicas, which must end
//! equal and whose state must survive a snapshot. Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_kv::fuzzing::log_entries(data);
});
