//! Decodes arbitrary bytes as one inbound peer connection: magic, preamble, handshake and
//! advertised values, then checksummed frames, and every delivered payload as a peer
//! message. Errors are fine; panics are bugs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordo_node::fuzzing::peer_stream(data);
});
