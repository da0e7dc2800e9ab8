//! `ordo-raft`: the Raft consensus algorithm as a pure state machine.
//!
//! The core performs no I/O, reads no clock and spawns no threads: the runtime feeds it
//! ticks, messages and proposals, and carries out the `Ready` it returns.
