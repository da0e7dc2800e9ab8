//! Opens a shared-log directory built from arbitrary bytes: groups written through the API,
//! then journal records holding arbitrary operations, then damaged files (layout, journal
//! segments, group snapshots). Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_wal::fuzzing::open_arbitrary_shared(data);
});
