//! Opens a data directory whose identity, peer-incarnation, member and lost-state files
//! are built from arbitrary bytes. Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_node::fuzzing::node_files(data);
});
