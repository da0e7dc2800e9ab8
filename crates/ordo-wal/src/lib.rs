//! `ordo-wal`: the write-ahead log under every Ordo node.
//!
//! A log is a directory of segment files, each named by the index of its first record and
//! rolled by size. Every record carries a CRC32C over its header and payload; recovery
//! truncates a torn tail and refuses, naming file and byte offset, any corruption before it.
