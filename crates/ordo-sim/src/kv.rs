//! The simulated nodes' state machine: a key-value map applied from committed entries, with
//! client sessions so a retried write takes effect once (Raft thesis §6.3).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

/// A write as it travels in a log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The client session.
    pub client_id: u64,
    /// The request's number within the session; retries reuse it.
    pub request_id: u64,
    /// What to do.
    pub op: WriteOp,
}

/// A state-changing operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Set `key` to `new` if it holds `expected` (`None`: absent).
    Cas {
        /// The key.
        key: Bytes,
        /// The expected current value.
        expected: Option<Bytes>,
        /// The value to store on a match.
        new: Bytes,
    },
}

/// The result of a write, remembered per session to answer retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// The put was applied.
    Done,
    /// Whether the compare-and-set matched.
    Cas(bool),
}

/// Entry data or a snapshot that does not decode: a bug in the simulator, or corruption.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes ended early.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// An unknown tag.
    #[error("unknown tag {0}")]
    UnknownTag(u8),
    /// Bytes were left over.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Longest key or value the encoding accepts.
const FIELD_BYTES_MAX: usize = 1024;

fn put_field(buf: &mut BytesMut, field: &[u8]) {
    assert!(field.len() <= FIELD_BYTES_MAX);
    buf.put_u16(field.len() as u16);
    buf.put_slice(field);
}

fn get_field(buf: &mut Bytes, total: usize) -> Result<Bytes, DecodeError> {
    if buf.remaining() < 2 {
        return Err(DecodeError::Truncated(total - buf.remaining()));
    }
    let len = buf.get_u16() as usize;
    if buf.remaining() < len || len > FIELD_BYTES_MAX {
        return Err(DecodeError::Truncated(total - buf.remaining()));
    }
    Ok(buf.split_to(len))
}

fn get_u64(buf: &mut Bytes, total: usize) -> Result<u64, DecodeError> {
    if buf.remaining() < 8 {
        return Err(DecodeError::Truncated(total - buf.remaining()));
    }
    Ok(buf.get_u64())
}

fn get_u8(buf: &mut Bytes, total: usize) -> Result<u8, DecodeError> {
    if buf.remaining() < 1 {
        return Err(DecodeError::Truncated(total - buf.remaining()));
    }
    Ok(buf.get_u8())
}

impl Command {
    /// The entry data for this command.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u64(self.client_id);
        buf.put_u64(self.request_id);
        match &self.op {
            WriteOp::Put { key, value } => {
                buf.put_u8(1);
                put_field(&mut buf, key);
                put_field(&mut buf, value);
            }
            WriteOp::Cas { key, expected, new } => {
                buf.put_u8(2);
                put_field(&mut buf, key);
                match expected {
                    Some(expected) => {
                        buf.put_u8(1);
                        put_field(&mut buf, expected);
                    }
                    None => buf.put_u8(0),
                }
                put_field(&mut buf, new);
            }
        }
        buf.freeze()
    }

    /// Decodes entry data written by [`Command::encode`].
    pub fn decode(data: &Bytes) -> Result<Command, DecodeError> {
        let total = data.len();
        let mut buf = data.clone();
        let client_id = get_u64(&mut buf, total)?;
        let request_id = get_u64(&mut buf, total)?;
        let op = match get_u8(&mut buf, total)? {
            1 => WriteOp::Put {
                key: get_field(&mut buf, total)?,
                value: get_field(&mut buf, total)?,
            },
            2 => {
                let key = get_field(&mut buf, total)?;
                let expected = match get_u8(&mut buf, total)? {
                    0 => None,
                    1 => Some(get_field(&mut buf, total)?),
                    tag => return Err(DecodeError::UnknownTag(tag)),
                };
                WriteOp::Cas {
                    key,
                    expected,
                    new: get_field(&mut buf, total)?,
                }
            }
            tag => return Err(DecodeError::UnknownTag(tag)),
        };
        if buf.has_remaining() {
            return Err(DecodeError::Trailing(buf.remaining()));
        }
        Ok(Command {
            client_id,
            request_id,
            op,
        })
    }
}

/// The last request applied for one client session, and its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    request_id: u64,
    result: WriteResult,
}

/// The key-value map with its sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStore {
    data: BTreeMap<Bytes, Bytes>,
    sessions: BTreeMap<u64, Session>,
}

/// What applying one command produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The command ran now.
    Executed(WriteResult),
    /// The command is a retry of the session's last request: not run again, same result.
    Duplicate(WriteResult),
    /// The command is older than the session's last request: nobody waits for it.
    Stale,
}

impl Applied {
    /// The result to answer the client with, if any.
    pub fn result(self) -> Option<WriteResult> {
        match self {
            Applied::Executed(result) | Applied::Duplicate(result) => Some(result),
            Applied::Stale => None,
        }
    }
}

impl KvStore {
    /// An empty store.
    pub fn new() -> KvStore {
        KvStore::default()
    }

    /// Applies a committed command.
    pub fn apply(&mut self, command: &Command) -> Applied {
        if let Some(session) = self.sessions.get(&command.client_id) {
            if command.request_id == session.request_id {
                return Applied::Duplicate(session.result);
            }
            if command.request_id < session.request_id {
                return Applied::Stale;
            }
        }
        let result = match &command.op {
            WriteOp::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
                WriteResult::Done
            }
            WriteOp::Cas { key, expected, new } => {
                let matched = self.data.get(key) == expected.as_ref();
                if matched {
                    self.data.insert(key.clone(), new.clone());
                }
                WriteResult::Cas(matched)
            }
        };
        self.sessions.insert(
            command.client_id,
            Session {
                request_id: command.request_id,
                result,
            },
        );
        Applied::Executed(result)
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.data.get(key).cloned()
    }

    /// Serialises the whole store, sessions included (a restored node must still recognise
    /// retries).
    pub fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u64(self.data.len() as u64);
        for (key, value) in &self.data {
            put_field(&mut buf, key);
            put_field(&mut buf, value);
        }
        buf.put_u64(self.sessions.len() as u64);
        for (client_id, session) in &self.sessions {
            buf.put_u64(*client_id);
            buf.put_u64(session.request_id);
            match session.result {
                WriteResult::Done => buf.put_u8(0),
                WriteResult::Cas(false) => buf.put_u8(1),
                WriteResult::Cas(true) => buf.put_u8(2),
            }
        }
        buf.freeze()
    }

    /// Rebuilds a store from [`KvStore::snapshot`]'s output; empty data is the empty store.
    pub fn restore(data: &Bytes) -> Result<KvStore, DecodeError> {
        if data.is_empty() {
            return Ok(KvStore::new());
        }
        let total = data.len();
        let mut buf = data.clone();
        let mut store = KvStore::new();
        let keys = get_u64(&mut buf, total)?;
        for _ in 0..keys {
            let key = get_field(&mut buf, total)?;
            let value = get_field(&mut buf, total)?;
            store.data.insert(key, value);
        }
        let sessions = get_u64(&mut buf, total)?;
        for _ in 0..sessions {
            let client_id = get_u64(&mut buf, total)?;
            let request_id = get_u64(&mut buf, total)?;
            let result = match get_u8(&mut buf, total)? {
                0 => WriteResult::Done,
                1 => WriteResult::Cas(false),
                2 => WriteResult::Cas(true),
                tag => return Err(DecodeError::UnknownTag(tag)),
            };
            store
                .sessions
                .insert(client_id, Session { request_id, result });
        }
        if buf.has_remaining() {
            return Err(DecodeError::Trailing(buf.remaining()));
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(client_id: u64, request_id: u64, value: &'static str) -> Command {
        Command {
            client_id,
            request_id,
            op: WriteOp::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(value.as_bytes()),
            },
        }
    }

    #[test]
    fn commands_round_trip_and_garbage_is_rejected() {
        let cas = Command {
            client_id: 3,
            request_id: 9,
            op: WriteOp::Cas {
                key: Bytes::from_static(b"k"),
                expected: None,
                new: Bytes::from_static(b"v"),
            },
        };
        for command in [put(1, 2, "v"), cas] {
            let data = command.encode();
            assert_eq!(Command::decode(&data), Ok(command));
            for cut in 0..data.len() {
                assert!(Command::decode(&data.slice(..cut)).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn retried_write_is_applied_once() {
        let mut store = KvStore::new();
        assert_eq!(
            store.apply(&put(1, 1, "a")),
            Applied::Executed(WriteResult::Done)
        );
        assert_eq!(
            store.apply(&put(2, 1, "b")),
            Applied::Executed(WriteResult::Done)
        );
        // Client 1's retry of request 1 must not overwrite client 2's later write.
        assert_eq!(
            store.apply(&put(1, 1, "a")),
            Applied::Duplicate(WriteResult::Done)
        );
        assert_eq!(store.get(b"k"), Some(Bytes::from_static(b"b")));
        assert_eq!(
            store.apply(&put(1, 2, "c")),
            Applied::Executed(WriteResult::Done)
        );
        assert_eq!(store.apply(&put(1, 1, "a")), Applied::Stale);
        assert_eq!(store.get(b"k"), Some(Bytes::from_static(b"c")));
    }

    #[test]
    fn retried_cas_returns_its_first_result() {
        let mut store = KvStore::new();
        let cas = Command {
            client_id: 1,
            request_id: 1,
            op: WriteOp::Cas {
                key: Bytes::from_static(b"k"),
                expected: None,
                new: Bytes::from_static(b"v"),
            },
        };
        assert_eq!(store.apply(&cas), Applied::Executed(WriteResult::Cas(true)));
        assert_eq!(
            store.apply(&cas),
            Applied::Duplicate(WriteResult::Cas(true))
        );
    }

    #[test]
    fn snapshot_restores_data_and_sessions() {
        let mut store = KvStore::new();
        store.apply(&put(1, 5, "a"));
        let restored = KvStore::restore(&store.snapshot()).unwrap();
        assert_eq!(restored, store);
        let mut restored = restored;
        assert_eq!(
            restored.apply(&put(1, 5, "a")),
            Applied::Duplicate(WriteResult::Done)
        );
        assert!(KvStore::restore(&Bytes::from_static(b"\x00\x00")).is_err());
    }
}
