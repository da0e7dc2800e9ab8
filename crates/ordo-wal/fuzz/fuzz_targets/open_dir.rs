//! Opens a log directory built from arbitrary bytes: segments, log-start and truncate
//! markers, hard state and snapshots, valid and damaged. Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_wal::fuzzing::open_arbitrary_dir(data);
});
