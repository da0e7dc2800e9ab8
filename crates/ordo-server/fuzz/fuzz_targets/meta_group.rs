//! Applies entries and restores snapshots of arbitrary bytes on the metadata group's state
//! machine. Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_server::fuzzing::meta_group(data);
});
