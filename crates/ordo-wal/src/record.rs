//! The on-disk record format and a cursor that decodes records with positioned reads.
//!
//! A record, all integers little-endian:
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 0..4 | `len` | total record length, header included (never 0: 0 marks the end of data) |
//! | 4..8 | `crc` | CRC32C over the payload, then bytes `0..4` and `8..33` |
//! | 8 | `kind` | opaque entry kind |
//! | 9..17 | `term` | Raft term |
//! | 17..25 | `index` | log index |
//! | 25..33 | `durable` | durability claim: every index up to this one was on stable storage when this record was appended |
//! | 33..len | payload | |
//!
//! The checksum takes the payload first so that the costly part is computed before the
//! append lock, and the durability claim, known only under the lock, is sealed in cheaply.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use crate::Entry;

/// Bytes of a record header.
pub(crate) const HEADER_BYTES: usize = 33;

/// Appends the encoding of `entry` to `buf`, without its durability claim and checksum
/// (see [`seal`]); returns the checksum of the payload.
pub(crate) fn encode(buf: &mut Vec<u8>, entry: &Entry) -> u32 {
    let len = HEADER_BYTES + entry.payload.len();
    let len = u32::try_from(len).expect("payload size is checked against record_bytes_max");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.push(entry.kind);
    buf.extend_from_slice(&entry.term.to_le_bytes());
    buf.extend_from_slice(&entry.index.to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&entry.payload);
    crc32c::crc32c(&entry.payload)
}

/// Writes the durability claim and the checksum into the encoded `record`.
pub(crate) fn seal(record: &mut [u8], payload_crc: u32, durable: u64) {
    record[25..33].copy_from_slice(&durable.to_le_bytes());
    let crc = header_checksum(payload_crc, record);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The length and term of the encoded record that `buf` starts with.
pub(crate) fn len_and_term(buf: &[u8]) -> (u64, u64) {
    (u64::from(u32_at(buf, 0)), u64_at(buf, 9))
}

fn header_checksum(payload_crc: u32, record: &[u8]) -> u32 {
    crc32c::crc32c_append(
        crc32c::crc32c_append(payload_crc, &record[..4]),
        &record[8..HEADER_BYTES],
    )
}

/// The checksum a complete encoded record must carry.
fn checksum(record: &[u8]) -> u32 {
    header_checksum(crc32c::crc32c(&record[HEADER_BYTES..]), record)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A decoded record and its encoded length.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) len: u64,
    pub(crate) entry: Entry,
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The length field is zero: zero-filled space, the end of written data.
    ZeroLength,
    /// The header or the record runs past the end of the data.
    Truncated,
    /// The length field is impossible (shorter than a header or longer than the maximum).
    BadLength(u32),
    /// The checksum does not match.
    Checksum,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::ZeroLength => write!(f, "zero record length"),
            Damage::Truncated => write!(f, "record cut short by the end of the file"),
            Damage::BadLength(len) => write!(f, "impossible record length {len}"),
            Damage::Checksum => write!(f, "record checksum mismatch"),
        }
    }
}

/// What the cursor found next.
#[derive(Debug)]
pub(crate) enum Step {
    Record(Record),
    /// The cursor reached the end of the data cleanly.
    End,
    /// The bytes at `offset` are not a valid record.
    Damaged {
        offset: u64,
        damage: Damage,
    },
}

/// Decodes consecutive records of one file in `[pos, end)` with positioned reads, a bounded
/// buffer at a time, so a reader never loads a whole segment.
pub(crate) struct Cursor<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    record_bytes_max: u64,
    chunk_bytes: usize,
    buf: Bytes,
    buf_offset: u64,
}

impl<'a> Cursor<'a> {
    /// `record_bytes_max` bounds the payload; `chunk_bytes` is the usual read size.
    pub(crate) fn new(
        file: &'a File,
        pos: u64,
        end: u64,
        record_bytes_max: u64,
        chunk_bytes: usize,
    ) -> Self {
        assert!(pos <= end);
        Cursor {
            file,
            pos,
            end,
            record_bytes_max,
            chunk_bytes: chunk_bytes.max(HEADER_BYTES),
            buf: Bytes::new(),
            buf_offset: pos,
        }
    }

    /// The offset of the next record.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Makes the buffer hold `[pos, pos + need)`; the caller guarantees it lies within `end`.
    fn fill(&mut self, need: usize) -> io::Result<()> {
        let want = self.pos + need as u64;
        debug_assert!(want <= self.end);
        if self.buf_offset <= self.pos && self.buf_offset + self.buf.len() as u64 >= want {
            return Ok(());
        }
        let read_end = self.end.min(self.pos + need.max(self.chunk_bytes) as u64);
        let mut v = vec![0; (read_end - self.pos) as usize];
        self.file.read_exact_at(&mut v, self.pos)?;
        self.buf = Bytes::from(v);
        self.buf_offset = self.pos;
        Ok(())
    }

    fn slice(&self, len: usize) -> Bytes {
        let at = (self.pos - self.buf_offset) as usize;
        self.buf.slice(at..at + len)
    }

    pub(crate) fn next_step(&mut self) -> io::Result<Step> {
        let remaining = self.end - self.pos;
        if remaining == 0 {
            return Ok(Step::End);
        }
        let offset = self.pos;
        let damaged = |damage| Ok(Step::Damaged { offset, damage });
        if remaining < 4 {
            return damaged(Damage::Truncated);
        }
        self.fill(4)?;
        let len = u32_at(&self.slice(4), 0);
        if len == 0 {
            return damaged(Damage::ZeroLength);
        }
        if (len as usize) < HEADER_BYTES
            || u64::from(len) > HEADER_BYTES as u64 + self.record_bytes_max
        {
            return damaged(Damage::BadLength(len));
        }
        if u64::from(len) > remaining {
            return damaged(Damage::Truncated);
        }
        self.fill(len as usize)?;
        let raw = self.slice(len as usize);
        if u32_at(&raw, 4) != checksum(&raw) {
            return damaged(Damage::Checksum);
        }
        let entry = Entry {
            kind: raw[8],
            term: u64_at(&raw, 9),
            index: u64_at(&raw, 17),
            payload: raw.slice(HEADER_BYTES..),
        };
        self.pos += u64::from(len);
        Ok(Step::Record(Record {
            len: u64::from(len),
            entry,
        }))
    }
}

/// The position of the first non-zero byte of `buf` at or after `from`.
fn next_nonzero(buf: &[u8], from: usize) -> Option<usize> {
    const BLOCK: usize = 256;
    const ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut at = from;
    // Whole blocks compare as slices (a `memcmp`), fast in every build profile.
    while at + BLOCK <= buf.len() && buf[at..at + BLOCK] == ZEROS {
        at += BLOCK;
    }
    buf[at..].iter().position(|&b| b != 0).map(|p| at + p)
}

/// Whether the bytes of `file` in `[from, end)` are all zero: space preallocated and never
/// written.
pub(crate) fn all_zero(file: &File, from: u64, end: u64) -> io::Result<bool> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let mut buf = Vec::new();
    let mut at = from;
    while at < end {
        // Holes read as zeros: skip them rather than read them (a segment is created sparse
        // at full length, so after its records there are usually megabytes of hole).
        let (data, hole) = match data_extent(file, at)? {
            None => return Ok(true),
            Some((data, hole)) => (data, hole.min(end)),
        };
        at = data;
        while at < hole {
            let n = (hole - at).min(CHUNK_BYTES);
            buf.resize(n as usize, 0);
            file.read_exact_at(&mut buf, at)?;
            if next_nonzero(&buf, 0).is_some() {
                return Ok(false);
            }
            at += n;
        }
    }
    Ok(true)
}

/// The first stretch of `file` at or after `from` that may hold data (`[start, end)`), or
/// `None` if only holes follow. A file system that cannot tell reports all of the file as
/// data, which costs a read but stays correct.
fn data_extent(file: &File, from: u64) -> io::Result<Option<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    use rustix::io::Errno;
    // Seeking moves the shared file offset, which nothing uses: all I/O here is positioned.
    let start = match seek(file, SeekFrom::Data(from)) {
        Ok(start) => start,
        // No data at or after `from`.
        Err(Errno::NXIO) => return Ok(None),
        Err(Errno::INVAL | Errno::NOTSUP) => {
            let len = file.metadata()?.len();
            return Ok((from < len).then_some((from, len)));
        }
        Err(e) => return Err(e.into()),
    };
    let end = seek(file, SeekFrom::Hole(start))?;
    Ok(Some((start, end)))
}

/// A valid record found by [`highest_claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) durable: u64,
    pub(crate) index: u64,
    pub(crate) offset: u64,
}

/// Finds, among all valid records with index at least `index_min` that start anywhere in
/// `[from, end)` (at any byte offset), the one with the highest durability claim.
///
/// Recovery uses it to judge damage at index `i`: a later record claiming `i` durable was
/// appended after `i` reached stable storage, so a crash cannot explain the damage.
pub(crate) fn highest_claim(
    file: &File,
    from: u64,
    end: u64,
    index_min: u64,
    record_bytes_max: u64,
) -> io::Result<Option<Claim>> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let header = HEADER_BYTES as u64;
    // No record can be shorter than a header, so at most this many can follow `from`.
    let index_max = index_min.saturating_add(end.saturating_sub(from) / header + 1);
    let mut best: Option<Claim> = None;
    let mut chunk_start = from;
    let mut buf = Vec::new();
    let mut record = Vec::new();
    while chunk_start + header <= end {
        let chunk_end = end.min(chunk_start + CHUNK_BYTES + header);
        buf.resize((chunk_end - chunk_start) as usize, 0);
        file.read_exact_at(&mut buf, chunk_start)?;
        let mut next = 0;
        while next + HEADER_BYTES <= buf.len() {
            let at = next;
            next += 1;
            if buf[at] == 0 {
                // Preallocated space is mostly zeros: jump to the next non-zero byte. A
                // record's non-zero length field has a non-zero byte among its first four, so
                // a record can start at most three bytes before it.
                match next_nonzero(&buf, at) {
                    Some(nz) if nz.saturating_sub(3) > at => {
                        next = nz - 3;
                        continue;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            let len = u64::from(u32_at(&buf, at));
            let offset = chunk_start + at as u64;
            if len < header || len > header + record_bytes_max || offset + len > end {
                continue;
            }
            let index = u64_at(&buf, at + 17);
            if index < index_min || index > index_max {
                continue;
            }
            record.resize(len as usize, 0);
            file.read_exact_at(&mut record, offset)?;
            if u32_at(&record, 4) != checksum(&record) {
                continue;
            }
            let durable = u64_at(&record, 25);
            if best.is_none_or(|b| durable > b.durable) {
                best = Some(Claim {
                    durable,
                    index,
                    offset,
                });
            }
        }
        chunk_start += CHUNK_BYTES + 1;
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn encode_sealed(buf: &mut Vec<u8>, e: &Entry, durable: u64) {
        let start = buf.len();
        let crc = encode(buf, e);
        seal(&mut buf[start..], crc, durable);
    }

    fn entry(index: u64, payload: &'static [u8]) -> Entry {
        Entry {
            index,
            term: 7,
            kind: 2,
            payload: Bytes::from_static(payload),
        }
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap().write_all(bytes).unwrap();
        (dir, File::open(&path).unwrap())
    }

    #[test]
    fn encoded_records_decode_back_in_order() {
        let mut buf = Vec::new();
        encode_sealed(&mut buf, &entry(1, b"hello"), 0);
        encode_sealed(&mut buf, &entry(2, b""), 1);
        let (_d, f) = file_with(&buf);
        let mut c = Cursor::new(&f, 0, buf.len() as u64, 100, 7);
        for (i, p) in [(1u64, &b"hello"[..]), (2, b"")] {
            match c.next_step().unwrap() {
                Step::Record(r) => {
                    assert_eq!(r.entry.index, i);
                    assert_eq!(r.entry.term, 7);
                    assert_eq!(r.entry.kind, 2);
                    assert_eq!(&r.entry.payload[..], p);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(c.next_step().unwrap(), Step::End));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_sealed(&mut buf, &entry(9, b"payload bytes"), 8);
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let (_d, f) = file_with(&b);
            let step = Cursor::new(&f, 0, b.len() as u64, 100, 64)
                .next_step()
                .unwrap();
            assert!(
                matches!(step, Step::Damaged { offset: 0, .. }),
                "bit {bit}: {step:?}"
            );
        }
    }

    #[test]
    fn zero_length_marks_end_of_data() {
        let (_d, f) = file_with(&[0; 64]);
        let step = Cursor::new(&f, 0, 64, 100, 64).next_step().unwrap();
        assert!(matches!(
            step,
            Step::Damaged {
                damage: Damage::ZeroLength,
                ..
            }
        ));
    }

    #[test]
    fn highest_claim_is_found_at_any_offset() {
        let mut buf = vec![0xAB; 11];
        encode_sealed(&mut buf, &entry(5, b"x"), 3);
        buf.extend_from_slice(&[0; 5]);
        encode_sealed(&mut buf, &entry(6, b"yy"), 4);
        let (_d, f) = file_with(&buf);
        let end = buf.len() as u64;
        let claim = highest_claim(&f, 0, end, 5, 100).unwrap().unwrap();
        assert_eq!(
            (claim.durable, claim.index, claim.offset),
            (4, 6, 11 + 34 + 5)
        );
        assert_eq!(highest_claim(&f, 0, end, 7, 100).unwrap(), None);
        assert_eq!(
            highest_claim(&f, 12, end, 5, 100).unwrap().unwrap().index,
            6
        );
    }

    #[test]
    fn all_zero_skips_holes_but_finds_any_byte_written_in_or_after_them() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("sparse"))
            .unwrap();
        let len = 64u64 << 20;
        f.set_len(len).unwrap();
        assert!(all_zero(&f, 0, len).unwrap(), "a file of holes");
        // Zeros written ahead of the records are data, but still zeros.
        f.write_all_at(&[0u8; 1 << 17], 4096).unwrap();
        assert!(all_zero(&f, 100, len).unwrap());
        // A byte deep in what was a hole, one at the very end, one before `from`.
        f.write_all_at(&[1], 40 << 20).unwrap();
        assert!(!all_zero(&f, 100, len).unwrap());
        assert!(all_zero(&f, (40 << 20) + 1, len).unwrap());
        assert!(
            all_zero(&f, 100, 40 << 20).unwrap(),
            "the range ends before it"
        );
        f.write_all_at(&[1], len - 1).unwrap();
        assert!(!all_zero(&f, (40 << 20) + 1, len).unwrap());
    }
}
