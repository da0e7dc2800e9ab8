//! Answers arbitrary bytes as a Kafka request, on a node with topic auto-creation on.
//! Refusals are fine; panics and aborts are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_streams::fuzzing::kafka_request(data);
});
