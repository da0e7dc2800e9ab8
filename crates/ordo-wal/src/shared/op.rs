//! The operations the journal holds, one per journal record, and their encoding.
//!
//! A journal record is an ordinary record of the journal's [`Wal`](crate::Wal): its index is
//! its sequence number in the journal, its term 0 and its kind one of the `KIND_*` codes
//! below. Its payload, all integers little-endian:
//!
//! | kind | payload |
//! |---|---|
//! | `KIND_APPEND` (1) | group (8), first index (8), entry count (4), the entries |
//! | `KIND_STATE` (2) | group (8), first index (8), term (8), vote flag (1), vote (8), commit (8) |
//! | `KIND_REWRITE` (3) | as `KIND_APPEND` (at least one entry) |
//! | `KIND_REMOVE` (4) | group (8) |
//!
//! An entry inside a payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | index |
//! | 8..16 | term |
//! | 16 | kind |
//! | 17..21 | payload length `n` |
//! | 21..25 | CRC32C of bytes 0..21, then of the payload |
//! | 25..25+n | payload |
//!
//! The entry's own checksum lets a read of one entry fetch and verify just its bytes; the
//! journal record's checksum covers the whole payload again for recovery. Entries of one
//! record carry consecutive indices from the first index; an append with no entries is a
//! suffix truncation at its first index.

use bytes::Bytes;

use crate::{Entry, HardState, INDEX_MAX};

/// "Drop the group's entries at or after the first index, then append these."
pub(crate) const KIND_APPEND: u8 = 1;
/// "The group's log starts at this index and its hard state is this."
pub(crate) const KIND_STATE: u8 = 2;
/// "Set these indices of the group to these entries": copies written by collection.
pub(crate) const KIND_REWRITE: u8 = 3;
/// "The group is gone."
pub(crate) const KIND_REMOVE: u8 = 4;

/// Bytes of an entry's encoding before its payload.
pub(crate) const ENTRY_HEADER_BYTES: usize = 8 + 8 + 1 + 4 + 4;
/// Bytes of an append or rewrite payload before its entries: group, first index, count.
pub(crate) const RUN_HEADER_BYTES: usize = 8 + 8 + 4;
/// Bytes of a state payload.
pub(crate) const STATE_BYTES: usize = 8 + 8 + 8 + 1 + 8 + 8;
/// Bytes of a remove payload.
const REMOVE_BYTES: usize = 8;

/// One entry of a decoded run: where its encoding lies in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntrySpan {
    pub(crate) index: u64,
    pub(crate) term: u64,
    /// Byte offset of the entry's encoding in the payload.
    pub(crate) at: usize,
    /// Bytes of the entry's encoding, header included.
    pub(crate) len: usize,
}

/// A decoded journal operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// [`KIND_APPEND`] (`rewrite: false`) or [`KIND_REWRITE`] (`rewrite: true`).
    Run {
        rewrite: bool,
        group: u64,
        from: u64,
        entries: Vec<EntrySpan>,
    },
    State {
        group: u64,
        first_index: u64,
        hard_state: HardState,
    },
    Remove {
        group: u64,
    },
}

/// Why a payload does not decode: the byte offset in the payload and what is wrong.
pub(crate) type DecodeError = (usize, String);

/// Appends the encoding of `e` to `buf`.
pub(crate) fn encode_entry(buf: &mut Vec<u8>, e: &Entry) {
    let start = buf.len();
    let len = u32::try_from(e.payload.len()).expect("payload size is checked before encoding");
    buf.extend_from_slice(&e.index.to_le_bytes());
    buf.extend_from_slice(&e.term.to_le_bytes());
    buf.push(e.kind);
    buf.extend_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[start..]), &e.payload);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&e.payload);
}

/// The bytes of a run header.
pub(crate) fn run_header(group: u64, from: u64, count: usize) -> Vec<u8> {
    let count = u32::try_from(count).expect("a run's entries fit in one segment");
    let mut buf = Vec::with_capacity(RUN_HEADER_BYTES);
    buf.extend_from_slice(&group.to_le_bytes());
    buf.extend_from_slice(&from.to_le_bytes());
    buf.extend_from_slice(&count.to_le_bytes());
    buf
}

/// The payload of an append of `entries` (consecutive from `from`; none: a suffix
/// truncation at `from`).
pub(crate) fn encode_append(group: u64, from: u64, entries: &[Entry]) -> Vec<u8> {
    let bytes: usize = entries
        .iter()
        .map(|e| ENTRY_HEADER_BYTES + e.payload.len())
        .sum();
    let mut buf = run_header(group, from, entries.len());
    buf.reserve(bytes);
    for e in entries {
        encode_entry(&mut buf, e);
    }
    buf
}

/// The payload of a state record.
pub(crate) fn encode_state(group: u64, first_index: u64, hs: &HardState) -> Vec<u8> {
    let mut buf = Vec::with_capacity(STATE_BYTES);
    buf.extend_from_slice(&group.to_le_bytes());
    buf.extend_from_slice(&first_index.to_le_bytes());
    buf.extend_from_slice(&hs.term.to_le_bytes());
    buf.push(u8::from(hs.vote.is_some()));
    buf.extend_from_slice(&hs.vote.unwrap_or(0).to_le_bytes());
    buf.extend_from_slice(&hs.commit.to_le_bytes());
    buf
}

/// The payload of a remove record.
pub(crate) fn encode_remove(group: u64) -> Vec<u8> {
    group.to_le_bytes().to_vec()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Decodes the payload of a journal record of `kind`. Never panics: any bytes that are not
/// an operation give the offset in the payload and the reason.
pub(crate) fn decode(kind: u8, payload: &[u8]) -> Result<Op, DecodeError> {
    let exact = |want: usize, what: &str| {
        if payload.len() == want {
            Ok(())
        } else {
            Err((
                0,
                format!("{what} record of {} bytes, expected {want}", payload.len()),
            ))
        }
    };
    match kind {
        KIND_APPEND | KIND_REWRITE => decode_run(kind == KIND_REWRITE, payload),
        KIND_STATE => {
            exact(STATE_BYTES, "state")?;
            let vote = match payload[24] {
                0 => None,
                1 => Some(u64_at(payload, 25)),
                flag => return Err((24, format!("vote flag {flag} is neither 0 nor 1"))),
            };
            let first_index = u64_at(payload, 8);
            if first_index == 0 || first_index >= INDEX_MAX {
                return Err((8, format!("impossible first index {first_index}")));
            }
            Ok(Op::State {
                group: u64_at(payload, 0),
                first_index,
                hard_state: HardState {
                    term: u64_at(payload, 16),
                    vote,
                    commit: u64_at(payload, 33),
                },
            })
        }
        KIND_REMOVE => {
            exact(REMOVE_BYTES, "remove")?;
            Ok(Op::Remove {
                group: u64_at(payload, 0),
            })
        }
        other => Err((0, format!("unknown journal record kind {other}"))),
    }
}

fn decode_run(rewrite: bool, payload: &[u8]) -> Result<Op, DecodeError> {
    if payload.len() < RUN_HEADER_BYTES {
        return Err((
            0,
            format!("{} bytes, too short for a run header", payload.len()),
        ));
    }
    let group = u64_at(payload, 0);
    let from = u64_at(payload, 8);
    let count = u32_at(payload, 16) as usize;
    if from == 0 || from >= INDEX_MAX {
        return Err((8, format!("impossible first index {from}")));
    }
    if rewrite && count == 0 {
        return Err((16, "a rewrite of no entries".into()));
    }
    // Every entry takes at least a header: a count the payload cannot hold is refused before
    // anything is allocated for it.
    if count > (payload.len() - RUN_HEADER_BYTES) / ENTRY_HEADER_BYTES {
        return Err((
            16,
            format!(
                "{count} entries cannot fit in {} bytes",
                payload.len() - RUN_HEADER_BYTES
            ),
        ));
    }
    let mut entries = Vec::with_capacity(count);
    let mut at = RUN_HEADER_BYTES;
    for k in 0..count {
        let span = entry_span(payload, at)?;
        let expected = from + k as u64;
        if span.index != expected {
            return Err((
                at,
                format!("entry index {} where {expected} should be", span.index),
            ));
        }
        if span.index >= INDEX_MAX {
            return Err((at, format!("impossible entry index {}", span.index)));
        }
        at += span.len;
        entries.push(span);
    }
    if at != payload.len() {
        return Err((
            at,
            format!("{} bytes after the last entry", payload.len() - at),
        ));
    }
    Ok(Op::Run {
        rewrite,
        group,
        from,
        entries,
    })
}

/// The entry whose encoding starts at `at` of `payload`: its header is read and its length
/// checked against the payload (its checksum is not: the journal record's covers it).
fn entry_span(payload: &[u8], at: usize) -> Result<EntrySpan, DecodeError> {
    let rest = payload.len() - at;
    if rest < ENTRY_HEADER_BYTES {
        return Err((at, format!("{rest} bytes, too short for an entry header")));
    }
    let n = u32_at(payload, at + 17) as usize;
    if n > rest - ENTRY_HEADER_BYTES {
        return Err((
            at + 17,
            format!(
                "entry payload of {n} bytes runs past the record ({} left)",
                rest - ENTRY_HEADER_BYTES
            ),
        ));
    }
    Ok(EntrySpan {
        index: u64_at(payload, at),
        term: u64_at(payload, at + 8),
        at,
        len: ENTRY_HEADER_BYTES + n,
    })
}

/// Decodes and verifies one entry read back on its own (`bytes` is exactly its encoding),
/// which must be the entry `index` of term `term`. Never panics.
pub(crate) fn decode_entry(bytes: Bytes, index: u64, term: u64) -> Result<Entry, DecodeError> {
    if bytes.len() < ENTRY_HEADER_BYTES {
        return Err((0, format!("{} bytes, too short for an entry", bytes.len())));
    }
    let n = u32_at(&bytes, 17) as usize;
    if n != bytes.len() - ENTRY_HEADER_BYTES {
        return Err((
            17,
            format!(
                "entry payload length {n}, but the index says {}",
                bytes.len() - ENTRY_HEADER_BYTES
            ),
        ));
    }
    let stored = u32_at(&bytes, 21);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..21]), &bytes[ENTRY_HEADER_BYTES..]);
    if stored != crc {
        return Err((0, "entry checksum mismatch".into()));
    }
    let (found_index, found_term) = (u64_at(&bytes, 0), u64_at(&bytes, 8));
    if (found_index, found_term) != (index, term) {
        return Err((
            0,
            format!(
                "entry of index {found_index} term {found_term} where index {index} term \
                 {term} should be"
            ),
        ));
    }
    Ok(Entry {
        index,
        term,
        kind: bytes[16],
        payload: bytes.slice(ENTRY_HEADER_BYTES..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(from: u64, n: u64) -> Vec<Entry> {
        (from..from + n)
            .map(|i| Entry::new(i, 3, (i % 2) as u8, vec![i as u8; i as usize % 5]))
            .collect()
    }

    #[test]
    fn every_operation_round_trips() {
        let es = entries(7, 4);
        let payload = encode_append(9, 7, &es);
        let Op::Run {
            rewrite,
            group,
            from,
            entries: spans,
        } = decode(KIND_APPEND, &payload).unwrap()
        else {
            panic!("not a run");
        };
        assert_eq!((rewrite, group, from, spans.len()), (false, 9, 7, 4));
        for (span, e) in spans.iter().zip(&es) {
            let bytes = Bytes::copy_from_slice(&payload[span.at..span.at + span.len]);
            assert_eq!(&decode_entry(bytes, e.index, e.term).unwrap(), e);
        }
        assert!(matches!(
            decode(KIND_REWRITE, &payload),
            Ok(Op::Run { rewrite: true, .. })
        ));
        let truncation = encode_append(9, 5, &[]);
        assert_eq!(
            decode(KIND_APPEND, &truncation).unwrap(),
            Op::Run {
                rewrite: false,
                group: 9,
                from: 5,
                entries: vec![]
            }
        );
        assert!(decode(KIND_REWRITE, &truncation).is_err());
        let hs = HardState {
            term: 4,
            vote: Some(2),
            commit: 6,
        };
        assert_eq!(
            decode(KIND_STATE, &encode_state(9, 3, &hs)).unwrap(),
            Op::State {
                group: 9,
                first_index: 3,
                hard_state: hs
            }
        );
        assert_eq!(
            decode(KIND_REMOVE, &encode_remove(9)).unwrap(),
            Op::Remove { group: 9 }
        );
    }

    #[test]
    fn every_bit_flip_in_an_entry_read_alone_is_caught() {
        let e = &entries(12, 1)[0];
        let mut buf = Vec::new();
        encode_entry(&mut buf, e);
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_entry(Bytes::from(b), e.index, e.term).is_err(),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn arbitrary_payloads_decode_to_errors_never_panics() {
        let mut x: u64 = 0x5eed_0f5a;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let valid = encode_append(1, 1, &entries(1, 3));
        for case in 0..4000 {
            let kind = (next() % 6) as u8;
            let mut payload = if case % 2 == 0 {
                valid.clone()
            } else {
                (0..next() % 120).map(|_| next() as u8).collect()
            };
            if !payload.is_empty() {
                let at = (next() as usize) % payload.len();
                payload[at] = next() as u8;
                payload.truncate(payload.len() - (next() as usize % 3).min(payload.len()));
            }
            let _ = decode(kind, &payload);
            let _ = decode_entry(Bytes::from(payload), 1, 3);
        }
    }
}
