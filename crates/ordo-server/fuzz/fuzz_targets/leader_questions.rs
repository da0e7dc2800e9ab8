//! Decodes arbitrary bytes as a question for the leader and as its answer (what the etcd
//! face sends over the peer transport). Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_server::fuzzing::leader_questions(data);
});
