//! The metadata group: a small replicated map from key bytes to value bytes that every
//! server runs besides the KV group, with every configured node as a voter. It is where the
//! cluster will record which groups exist and on which nodes their replicas live (topics,
//! partition assignments, producer ids).
//!
//! Group ids: [`META_GROUP`] is `GroupId(0)` and the KV group is `GroupId(1)`
//! ([`crate::KV_GROUP`]); groups created at run time (stream partitions) take other ids.
//! A server started with `join` waits to be added to the metadata group, as to the KV group.
//!
//! Commands and snapshots are small versioned encodings, big-endian: a command is version
//! (1), kind (1 put, 2 delete, 3 insert), and for a put or a delete key length (u32) and
//! key, and for a put value length (u32) and value; an insert is an entry count (u32) and
//! that many keys and values, added together only if none of the keys is there yet (how a
//! topic and the groups of its partitions are claimed at once, whoever else claims them); a
//! replace (4) is a key, the value expected and the new value, set only if the key holds the
//! expected value (how a topic's record is changed without losing another change made
//! meanwhile). A snapshot is version (1), entry count (u32), then per entry in ascending key
//! order key length, key, value length, value. Decoders refuse other versions, unknown
//! kinds, sizes over the limits, unsorted keys and short or trailing bytes. A command that
//! does not decode changes nothing and is answered with the same error on every replica.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ordo_node::{GroupId, Index, RestoreError, StateMachine};

/// The metadata group.
pub const META_GROUP: GroupId = GroupId(0);

/// Longest key.
pub const KEY_BYTES_MAX: usize = 4096;
/// Longest value.
pub const VALUE_BYTES_MAX: usize = 256 * 1024;
/// Most keys the map holds.
pub const ENTRIES_MAX: usize = 1 << 20;

const VERSION: u8 = 1;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_INSERT: u8 = 3;
const KIND_REPLACE: u8 = 4;

/// Most entries one insert adds.
pub const INSERT_ENTRIES_MAX: usize = 1 << 16;

/// A change to the metadata map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaCommand {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
    /// Adds every entry, or none if any key is already there (or given twice).
    Insert {
        /// The keys and values.
        entries: Vec<(Bytes, Bytes)>,
    },
    /// Sets `key` to `value` if it holds `expected`.
    Replace {
        /// The key.
        key: Bytes,
        /// The value it must hold.
        expected: Bytes,
        /// The new value.
        value: Bytes,
    },
}

/// Why a command or snapshot of the metadata map was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The bytes are not a command or snapshot of this encoding.
    #[error("malformed metadata {what}: {problem}")]
    Malformed {
        /// A command or a snapshot.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A key or value is over its limit.
    #[error("metadata {what} of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// A key or a value.
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The map holds as many keys as it may.
    #[error("the metadata map holds {max} keys, the most it may")]
    Full {
        /// [`ENTRIES_MAX`].
        max: usize,
    },
    /// An insert named a key that is already there, or one key twice.
    #[error("metadata key {key:?} exists")]
    Exists {
        /// The key, lossily as text.
        key: String,
    },
    /// A replace found the key missing or holding another value than expected.
    #[error("metadata key {key:?} changed")]
    Changed {
        /// The key, lossily as text.
        key: String,
    },
}

impl MetaCommand {
    /// The command as proposal bytes. Keys and values over their limits are encoded all
    /// the same; applying such a command refuses it.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(VERSION);
        match self {
            MetaCommand::Put { key, value } => {
                buf.put_u8(KIND_PUT);
                put_bytes(&mut buf, key);
                put_bytes(&mut buf, value);
            }
            MetaCommand::Delete { key } => {
                buf.put_u8(KIND_DELETE);
                put_bytes(&mut buf, key);
            }
            MetaCommand::Insert { entries } => {
                buf.put_u8(KIND_INSERT);
                let count = u32::try_from(entries.len()).expect("an insert's entries fit a u32");
                buf.put_u32(count);
                for (key, value) in entries {
                    put_bytes(&mut buf, key);
                    put_bytes(&mut buf, value);
                }
            }
            MetaCommand::Replace {
                key,
                expected,
                value,
            } => {
                buf.put_u8(KIND_REPLACE);
                put_bytes(&mut buf, key);
                put_bytes(&mut buf, expected);
                put_bytes(&mut buf, value);
            }
        }
        buf.freeze()
    }

    /// Decodes what [`MetaCommand::encode`] wrote, checking the limits.
    pub fn decode(data: &[u8]) -> Result<MetaCommand, MetaError> {
        let mut reader = Reader::new("command", data);
        let version = reader.u8()?;
        if version != VERSION {
            return Err(reader.malformed(format!("unsupported version {version}")));
        }
        let command = match reader.u8()? {
            KIND_PUT => MetaCommand::Put {
                key: reader.bytes("key", KEY_BYTES_MAX)?,
                value: reader.bytes("value", VALUE_BYTES_MAX)?,
            },
            KIND_DELETE => MetaCommand::Delete {
                key: reader.bytes("key", KEY_BYTES_MAX)?,
            },
            KIND_INSERT => {
                let count = reader.u32()? as usize;
                if count > INSERT_ENTRIES_MAX {
                    return Err(MetaError::TooLarge {
                        what: "insert",
                        bytes: count,
                        max: INSERT_ENTRIES_MAX,
                    });
                }
                let mut entries = Vec::new();
                for _ in 0..count {
                    let key = reader.bytes("key", KEY_BYTES_MAX)?;
                    let value = reader.bytes("value", VALUE_BYTES_MAX)?;
                    entries.push((key, value));
                }
                MetaCommand::Insert { entries }
            }
            KIND_REPLACE => MetaCommand::Replace {
                key: reader.bytes("key", KEY_BYTES_MAX)?,
                expected: reader.bytes("value", VALUE_BYTES_MAX)?,
                value: reader.bytes("value", VALUE_BYTES_MAX)?,
            },
            kind => return Err(reader.malformed(format!("unknown kind {kind}"))),
        };
        reader.end()?;
        Ok(command)
    }
}

fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a metadata key or value fits in 4 GiB");
    buf.put_u32(len);
    buf.put_slice(bytes);
}

/// Reads one encoding, naming what it reads in its errors.
struct Reader<'a> {
    what: &'static str,
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, data: &'a [u8]) -> Reader<'a> {
        Reader { what, data }
    }

    fn malformed(&self, problem: String) -> MetaError {
        MetaError::Malformed {
            what: self.what,
            problem,
        }
    }

    fn u8(&mut self) -> Result<u8, MetaError> {
        if self.data.remaining() < 1 {
            return Err(self.malformed("truncated".into()));
        }
        Ok(self.data.get_u8())
    }

    fn u32(&mut self) -> Result<u32, MetaError> {
        if self.data.remaining() < 4 {
            return Err(self.malformed("truncated".into()));
        }
        Ok(self.data.get_u32())
    }

    fn bytes(&mut self, what: &'static str, max: usize) -> Result<Bytes, MetaError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(MetaError::TooLarge {
                what,
                bytes: len,
                max,
            });
        }
        if self.data.remaining() < len {
            return Err(self.malformed(format!("{what} cut short")));
        }
        let bytes = Bytes::copy_from_slice(&self.data[..len]);
        self.data.advance(len);
        Ok(bytes)
    }

    fn end(&self) -> Result<(), MetaError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(format!("{} trailing bytes", self.data.len())))
        }
    }
}

/// What a node's metadata group has applied, readable by the node's faces while the group
/// applies: cheap to clone, one map behind a lock, and a count of its changes to wait on.
#[derive(Debug, Clone)]
pub struct MetaView {
    entries: Arc<RwLock<BTreeMap<Bytes, Bytes>>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for MetaView {
    fn default() -> MetaView {
        MetaView {
            entries: Arc::default(),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }
}

impl MetaView {
    /// Changes as they are applied: the receiver sees a new count after each (a snapshot
    /// restored counts as one).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Bytes, Bytes>> {
        // Every writer replaces or edits the map in one step that cannot panic halfway.
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.read().get(key).cloned()
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub fn with_prefix(&self, prefix: &[u8]) -> Vec<(Bytes, Bytes)> {
        self.read()
            .range(Bytes::copy_from_slice(prefix)..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The metadata group's state machine: the replicated map.
#[derive(Debug, Default)]
pub struct MetaMachine {
    view: MetaView,
    applied: Index,
}

impl MetaMachine {
    /// What this machine has applied, as the node's faces read it.
    pub fn view(&self) -> MetaView {
        self.view.clone()
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.view.get(key)
    }

    /// The keys and values in key order.
    pub fn entries(&self) -> Vec<(Bytes, Bytes)> {
        self.view.with_prefix(b"")
    }

    /// How many keys the map holds.
    pub fn len(&self) -> usize {
        self.view.read().len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn execute(&mut self, command: MetaCommand) -> Result<Option<Bytes>, MetaError> {
        let mut entries = self
            .view
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match command {
            MetaCommand::Put { key, value } => {
                if !entries.contains_key(&key) && entries.len() >= ENTRIES_MAX {
                    return Err(MetaError::Full { max: ENTRIES_MAX });
                }
                Ok(entries.insert(key, value))
            }
            MetaCommand::Delete { key } => Ok(entries.remove(&key)),
            MetaCommand::Insert { entries: new } => {
                let mut seen = std::collections::BTreeSet::new();
                for (key, _) in &new {
                    if entries.contains_key(key) || !seen.insert(key) {
                        return Err(MetaError::Exists {
                            key: String::from_utf8_lossy(key).into_owned(),
                        });
                    }
                }
                if entries.len() + new.len() > ENTRIES_MAX {
                    return Err(MetaError::Full { max: ENTRIES_MAX });
                }
                entries.extend(new);
                Ok(None)
            }
            MetaCommand::Replace {
                key,
                expected,
                value,
            } => {
                if entries.get(&key) != Some(&expected) {
                    return Err(MetaError::Changed {
                        key: String::from_utf8_lossy(&key).into_owned(),
                    });
                }
                Ok(entries.insert(key, value))
            }
        }
    }
}

impl StateMachine for MetaMachine {
    /// The key's previous value, or why the command was refused (the map is then
    /// unchanged).
    type Output = Result<Option<Bytes>, MetaError>;

    fn apply(&mut self, index: Index, data: &[u8]) -> Self::Output {
        assert!(
            index > self.applied,
            "entry {index} applied after {}",
            self.applied
        );
        self.applied = index;
        let result = self.execute(MetaCommand::decode(data)?);
        if result.is_ok() {
            self.view.changed();
        }
        result
    }

    fn note_applied(&mut self, index: Index) {
        assert!(
            index > self.applied,
            "entry {index} noted after {}",
            self.applied
        );
        self.applied = index;
    }

    fn snapshot(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(VERSION);
        let count = u32::try_from(self.len()).expect("ENTRIES_MAX fits in a u32");
        buf.put_u32(count);
        for (key, value) in self.view.read().iter() {
            put_bytes(&mut buf, key);
            put_bytes(&mut buf, value);
        }
        buf.freeze()
    }

    fn restore(&mut self, index: Index, data: &[u8]) -> Result<(), RestoreError> {
        let entries = decode_snapshot(data).map_err(|e| RestoreError::new(e.to_string()))?;
        *self
            .view
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner) = entries;
        self.view.changed();
        self.applied = index;
        Ok(())
    }

    fn applied_index(&self) -> Index {
        self.applied
    }
}

/// Decodes a snapshot whole before anything is replaced, so a refused one leaves the map
/// as it was.
fn decode_snapshot(data: &[u8]) -> Result<BTreeMap<Bytes, Bytes>, MetaError> {
    let mut reader = Reader::new("snapshot", data);
    let version = reader.u8()?;
    if version != VERSION {
        return Err(reader.malformed(format!("unsupported version {version}")));
    }
    let count = reader.u32()? as usize;
    if count > ENTRIES_MAX {
        return Err(MetaError::Full { max: ENTRIES_MAX });
    }
    let mut entries = BTreeMap::new();
    let mut last: Option<Bytes> = None;
    for _ in 0..count {
        let key = reader.bytes("key", KEY_BYTES_MAX)?;
        let value = reader.bytes("value", VALUE_BYTES_MAX)?;
        if last.as_ref().is_some_and(|last| *last >= key) {
            return Err(reader.malformed("keys out of order".into()));
        }
        last = Some(key.clone());
        entries.insert(key, value);
    }
    reader.end()?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Bytes {
        MetaCommand::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
        .encode()
    }

    fn delete(key: &str) -> Bytes {
        MetaCommand::Delete {
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
        .encode()
    }

    #[test]
    fn puts_and_deletes_answer_the_previous_value() {
        let mut m = MetaMachine::default();
        assert_eq!(m.apply(2, &put("topic/a", "3 partitions")), Ok(None));
        assert_eq!(
            m.apply(3, &put("topic/a", "6 partitions")),
            Ok(Some(Bytes::from_static(b"3 partitions")))
        );
        m.note_applied(4);
        assert_eq!(
            m.apply(5, &delete("topic/a")),
            Ok(Some(Bytes::from_static(b"6 partitions")))
        );
        assert_eq!(m.apply(6, &delete("topic/a")), Ok(None));
        assert!(m.is_empty());
        assert_eq!(m.applied_index(), 6);
    }

    #[test]
    fn a_command_that_does_not_decode_is_refused_and_changes_nothing() {
        let mut m = MetaMachine::default();
        m.apply(1, &put("k", "v")).unwrap();
        let good = put("k", "w");
        let mut bad: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        bad.push([&good[..], b"x"].concat());
        bad.push([&[9u8][..], &good[1..]].concat());
        bad.push([&good[..1], &[7u8][..], &good[2..]].concat());
        for (i, data) in bad.iter().enumerate() {
            let index = 2 + i as u64;
            assert!(
                matches!(m.apply(index, data), Err(MetaError::Malformed { .. })),
                "{data:?}"
            );
        }
        assert_eq!(m.get(b"k"), Some(Bytes::from_static(b"v")));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn keys_and_values_over_their_limits_are_refused() {
        let mut m = MetaMachine::default();
        let long_key = MetaCommand::Put {
            key: Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]),
            value: Bytes::new(),
        };
        assert_eq!(
            m.apply(1, &long_key.encode()),
            Err(MetaError::TooLarge {
                what: "key",
                bytes: KEY_BYTES_MAX + 1,
                max: KEY_BYTES_MAX
            })
        );
        let long_value = MetaCommand::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from(vec![0; VALUE_BYTES_MAX + 1]),
        };
        assert!(matches!(
            m.apply(2, &long_value.encode()),
            Err(MetaError::TooLarge { what: "value", .. })
        ));
        assert!(m.is_empty());
    }

    #[test]
    fn a_snapshot_restores_the_same_map_and_a_damaged_one_changes_nothing() {
        let mut m = MetaMachine::default();
        m.apply(1, &put("b", "2")).unwrap();
        m.apply(2, &put("a", "1")).unwrap();
        m.apply(3, &put("c", "")).unwrap();
        let snapshot = m.snapshot();
        let mut copy = MetaMachine::default();
        copy.restore(3, &snapshot).unwrap();
        assert_eq!(copy.entries(), m.entries());
        assert_eq!(copy.applied_index(), 3);
        assert_eq!(copy.snapshot(), snapshot, "one encoding per state");

        let mut other = MetaMachine::default();
        other.apply(1, &put("kept", "yes")).unwrap();
        let mut damaged: Vec<Vec<u8>> = (0..snapshot.len())
            .map(|n| snapshot[..n].to_vec())
            .collect();
        damaged.push([&snapshot[..], b"x"].concat());
        // Keys "b" then "a": out of order.
        let mut unsorted = BytesMut::new();
        unsorted.put_u8(VERSION);
        unsorted.put_u32(2);
        for key in [b"b", b"a"] {
            put_bytes(&mut unsorted, key);
            put_bytes(&mut unsorted, b"");
        }
        damaged.push(unsorted.to_vec());
        for data in damaged {
            assert!(other.restore(9, &data).is_err(), "{data:?}");
            assert_eq!(other.get(b"kept"), Some(Bytes::from_static(b"yes")));
            assert_eq!(other.applied_index(), 1);
        }
    }

    fn insert(entries: &[(&str, &str)]) -> Bytes {
        MetaCommand::Insert {
            entries: entries
                .iter()
                .map(|(k, v)| {
                    (
                        Bytes::copy_from_slice(k.as_bytes()),
                        Bytes::copy_from_slice(v.as_bytes()),
                    )
                })
                .collect(),
        }
        .encode()
    }

    #[test]
    fn an_insert_adds_every_entry_or_none_when_a_key_is_taken() {
        let mut m = MetaMachine::default();
        let view = m.view();
        assert_eq!(m.apply(1, &insert(&[("t/a", "1"), ("g/7", "a")])), Ok(None));
        assert_eq!(
            m.apply(2, &insert(&[("t/b", "2"), ("g/7", "b")])),
            Err(MetaError::Exists { key: "g/7".into() })
        );
        assert_eq!(
            m.apply(3, &insert(&[("t/c", "3"), ("t/c", "3")])),
            Err(MetaError::Exists { key: "t/c".into() })
        );
        assert_eq!(view.get(b"t/b"), None, "a refused insert adds nothing");
        assert_eq!(
            view.with_prefix(b"t/"),
            vec![(Bytes::from_static(b"t/a"), Bytes::from_static(b"1"))]
        );
        assert_eq!(m.apply(4, &insert(&[])), Ok(None));
        assert_eq!(view.with_prefix(b"").len(), 2);
        // Two inserts took effect; the refused ones are no change.
        assert_eq!(*view.changes().borrow(), 2);
    }

    #[test]
    fn a_replace_sets_the_value_only_over_the_one_expected() {
        let mut m = MetaMachine::default();
        m.apply(1, &put("t/a", "v1")).unwrap();
        let replace = |expected: &str, value: &str| {
            MetaCommand::Replace {
                key: Bytes::from_static(b"t/a"),
                expected: Bytes::copy_from_slice(expected.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
            }
            .encode()
        };
        assert_eq!(
            m.apply(2, &replace("v1", "v2")),
            Ok(Some(Bytes::from_static(b"v1")))
        );
        let changed = Err(MetaError::Changed { key: "t/a".into() });
        assert_eq!(m.apply(3, &replace("v1", "v3")), changed);
        assert_eq!(m.get(b"t/a"), Some(Bytes::from_static(b"v2")));
        m.apply(4, &delete("t/a")).unwrap();
        assert_eq!(m.apply(5, &replace("v2", "v4")), changed);
        assert!(m.is_empty());
    }

    #[test]
    fn the_command_layout_is_unchanged() {
        assert_eq!(
            &put("k", "vv")[..],
            &[1, 1, 0, 0, 0, 1, b'k', 0, 0, 0, 2, b'v', b'v'][..]
        );
        assert_eq!(&delete("k")[..], &[1, 2, 0, 0, 0, 1, b'k'][..]);
        assert_eq!(
            &insert(&[("k", "v")])[..],
            &[1, 3, 0, 0, 0, 1, 0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v'][..]
        );
    }
}
