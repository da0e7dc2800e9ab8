//! Decodes arbitrary bytes as one transport payload (Raft message, forwarded proposal,
//! snapshot chunk, ...) and the entry data it carries. Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_node::fuzzing::wire_payload(data);
});
