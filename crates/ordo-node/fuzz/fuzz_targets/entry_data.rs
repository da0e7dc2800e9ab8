//! Decodes arbitrary bytes as a log entry's data (request envelope, membership change and
//! its context) or a snapshot's configuration. Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_node::fuzzing::entry_data(data);
});
