//! Decodes arbitrary bytes as the streams face's topic and leader records, and applies and
//! restores them on a partition's state machine. Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_server::fuzzing::stream_records(data);
});
