//! Small checksummed files replaced atomically: the one writer (and reader) of every file
//! that Ordo rewrites whole, such as the hard state, the log-start marker, the truncation
//! intent, and the runtime's identity, peer and member files.
//!
//! # Layout
//!
//! A file is an 8-byte magic (what the file is, and which version of its layout), the body
//! (the caller's encoding), and a CRC32C of magic and body, in the byte order its
//! [`Format`] names (the log's own files use little-endian, the runtime's big-endian; both
//! are kept so that existing data directories read unchanged):
//!
//! ```text
//! magic (8 bytes) | body | CRC32C of magic and body (4 bytes)
//! ```
//!
//! # Crash safety
//!
//! [`Format::write`] (and [`replace`], for a file without magic and checksum) goes through
//! four steps; a crash at each leaves:
//!
//! 1. **Write `name.tmp`** (created or emptied first). A crash leaves the old `name`
//!    untouched and a partial `name.tmp`, which no reader looks at: the next write empties
//!    it and [`Wal::open`](crate::Wal::open) deletes it.
//! 2. **Fsync `name.tmp`.** Until this returns, the same as step 1. After it, the new
//!    contents are on disk, but under a name no reader uses: still the old file.
//! 3. **Rename `name.tmp` over `name`.** A rename within one directory replaces the name
//!    atomically, so `name` is always a complete file, old or new, never a mixture. After a
//!    process crash it is the new one. After a machine crash before step 4 it is either:
//!    the rename may not have reached the disk, but if it did, so did the contents it
//!    points to (step 2 came first).
//! 4. **Fsync the directory.** Makes the rename durable: from here on, only the new file.
//!    The write returns after this step, so a caller that was told it succeeded never sees
//!    the old contents again.
//!
//! A write that fails returns the error. Before step 3 the old file stands; a failure of
//! step 4 leaves the new file in place, but whether it survives a machine crash is unknown,
//! so callers treat the write as not done (the hard state keeps its old value in memory).
//!
//! The checksum is not what makes the replacement atomic; the rename is. It catches damage
//! after the fact (a flipped bit on the medium, a file cut short or overwritten by hand, a
//! file that is not this one): [`Format::read`] refuses any of that with
//! [`Error::Corrupt`] naming the file and what is wrong, and never returns a body that does
//! not match its checksum. It reads nothing larger than [`Format::file_bytes_max`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::files::{sync_dir, TMP_SUFFIX};

/// Bytes of the magic that starts a file.
pub const MAGIC_BYTES: usize = 8;

/// Bytes of the checksum that ends a file.
pub const CHECKSUM_BYTES: usize = 4;

/// Byte order of the checksum at the end of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Least significant byte first (the log's files: hard state, start, truncate).
    Little,
    /// Most significant byte first (the runtime's files: identity, peers, members).
    Big,
}

/// What one kind of file looks like on disk: its magic, the byte order of its checksum,
/// and the largest file its reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// The first bytes of the file. A new layout of a body gets a new magic, so that a
    /// reader can tell the versions apart.
    pub magic: [u8; MAGIC_BYTES],
    /// Byte order of the CRC32C at the end.
    pub checksum_order: ByteOrder,
    /// The largest file, magic and checksum included, that [`read`](Self::read) reads and
    /// [`write`](Self::write) writes: a bound on memory whatever is on disk.
    pub file_bytes_max: u64,
}

impl Format {
    /// Bytes of a file with a `body_bytes` body.
    pub const fn file_bytes(body_bytes: usize) -> u64 {
        (MAGIC_BYTES + body_bytes + CHECKSUM_BYTES) as u64
    }

    /// The file's bytes for `body`: magic, body, checksum.
    pub fn encode(&self, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(MAGIC_BYTES + body.len() + CHECKSUM_BYTES);
        bytes.extend_from_slice(&self.magic);
        bytes.extend_from_slice(body);
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&match self.checksum_order {
            ByteOrder::Little => crc.to_le_bytes(),
            ByteOrder::Big => crc.to_be_bytes(),
        });
        bytes
    }

    /// Checks the magic and checksum of `bytes`, the contents of `path`, and returns the
    /// body. Damage is [`Error::Corrupt`] naming `path`, the byte offset and what is wrong.
    pub fn decode(&self, path: &Path, mut bytes: Vec<u8>) -> Result<Vec<u8>> {
        let len = bytes.len() as u64;
        if len > self.file_bytes_max {
            return Err(self.too_large(path, len));
        }
        if bytes.len() < MAGIC_BYTES + CHECKSUM_BYTES {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "the file is {len} bytes, too short for its magic number and checksum \
                     ({} bytes)",
                    MAGIC_BYTES + CHECKSUM_BYTES
                ),
            ));
        }
        if bytes[..MAGIC_BYTES] != self.magic {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "bad magic number: expected {:?}, found {:?}",
                    String::from_utf8_lossy(&self.magic),
                    String::from_utf8_lossy(&bytes[..MAGIC_BYTES])
                ),
            ));
        }
        let body_end = bytes.len() - CHECKSUM_BYTES;
        let mut stored = [0u8; CHECKSUM_BYTES];
        stored.copy_from_slice(&bytes[body_end..]);
        let stored = match self.checksum_order {
            ByteOrder::Little => u32::from_le_bytes(stored),
            ByteOrder::Big => u32::from_be_bytes(stored),
        };
        let computed = crc32c::crc32c(&bytes[..body_end]);
        if stored != computed {
            return Err(Error::corrupt(
                path,
                body_end as u64,
                format!(
                    "checksum mismatch: the file says {stored:#010x}, its {body_end} bytes \
                     before it give {computed:#010x}"
                ),
            ));
        }
        bytes.truncate(body_end);
        bytes.drain(..MAGIC_BYTES);
        Ok(bytes)
    }

    fn too_large(&self, path: &Path, len_bytes: u64) -> Error {
        Error::corrupt(
            path,
            self.file_bytes_max,
            format!(
                "the file is {len_bytes} bytes, more than the {} it may hold",
                self.file_bytes_max
            ),
        )
    }

    /// Replaces `dir/name` with `body` framed by magic and checksum, atomically and durably
    /// (see the [module documentation](self)). A file larger than
    /// [`file_bytes_max`](Self::file_bytes_max) is refused with [`Error::FileTooLarge`] and
    /// nothing is written: its reader would refuse it.
    pub fn write(&self, dir: &Path, name: &str, body: &[u8]) -> Result<()> {
        let bytes = self.encode(body);
        if bytes.len() as u64 > self.file_bytes_max {
            return Err(Error::FileTooLarge {
                path: dir.join(name),
                bytes: bytes.len() as u64,
                max: self.file_bytes_max,
            });
        }
        replace(dir, name, &bytes)
    }

    /// Reads `dir/name` and returns its body; `None` if the file does not exist (a
    /// `name.tmp` left by a crash is not looked at). The size is checked before anything
    /// is read; damage is [`Error::Corrupt`] naming the file.
    pub fn read(&self, dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
        let path = dir.join(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len > self.file_bytes_max {
            return Err(self.too_large(&path, len));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        // One byte past the limit, so that a file grown since its length was taken is
        // refused by `decode` rather than read whole.
        file.take(self.file_bytes_max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&path, e))?;
        self.decode(&path, bytes).map(Some)
    }
}

/// Replaces `dir/name` with `bytes` as they are, atomically and durably: write `name.tmp`,
/// fsync it, rename it over `name`, fsync `dir` (see the [module documentation](self) for
/// what a crash at each step leaves). For files whose presence is what counts; a file read
/// back for its contents carries a checksum and goes through [`Format::write`].
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LITTLE: Format = Format {
        magic: *b"ORDOTEST",
        checksum_order: ByteOrder::Little,
        file_bytes_max: 64,
    };
    const BIG: Format = Format {
        checksum_order: ByteOrder::Big,
        ..LITTLE
    };

    fn corrupt_path(err: &Error) -> &Path {
        match err {
            Error::Corrupt { path, .. } => path,
            other => panic!("not corruption: {other}"),
        }
    }

    #[test]
    fn bodies_round_trip_in_both_byte_orders_and_an_absent_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        for format in [LITTLE, BIG] {
            assert_eq!(format.read(dir.path(), "f").unwrap(), None);
            for body in [&b""[..], b"a", &[7u8; 52]] {
                format.write(dir.path(), "f", body).unwrap();
                assert_eq!(format.read(dir.path(), "f").unwrap().as_deref(), Some(body));
            }
            fs::remove_file(dir.path().join("f")).unwrap();
        }
        assert!(!dir.path().join(format!("f{TMP_SUFFIX}")).exists());
    }

    #[test]
    fn the_layout_is_magic_body_and_a_crc32c_of_both_in_the_given_order() {
        let crc = crc32c::crc32c(b"ORDOTESTbody");
        let mut little = b"ORDOTESTbody".to_vec();
        little.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(LITTLE.encode(b"body"), little);
        let mut big = b"ORDOTESTbody".to_vec();
        big.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(BIG.encode(b"body"), big);
        // A checksum in the other order is a mismatch, not a silent misreading.
        assert!(LITTLE.decode(Path::new("f"), big).is_err());
    }

    #[test]
    fn a_crash_before_the_rename_leaves_the_old_file_read() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(format!("f{TMP_SUFFIX}"));
        // Before the first write ever renamed: there is no file yet.
        fs::write(&tmp, LITTLE.encode(b"new")).unwrap();
        assert_eq!(LITTLE.read(dir.path(), "f").unwrap(), None);
        LITTLE.write(dir.path(), "f", b"old").unwrap();
        let new = LITTLE.encode(b"new");
        // Cut while the temporary file was written, and complete but not yet renamed.
        for cut in [0, 3, new.len() - 1, new.len()] {
            fs::write(&tmp, &new[..cut]).unwrap();
            assert_eq!(
                LITTLE.read(dir.path(), "f").unwrap().as_deref(),
                Some(&b"old"[..])
            );
        }
        // The next write replaces the leftover.
        LITTLE.write(dir.path(), "f", b"newer").unwrap();
        assert_eq!(
            LITTLE.read(dir.path(), "f").unwrap().as_deref(),
            Some(&b"newer"[..])
        );
        assert!(!tmp.exists());
    }

    #[test]
    fn any_flipped_bit_is_corruption_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for format in [LITTLE, BIG] {
            format.write(dir.path(), "f", b"some body").unwrap();
            let good = fs::read(&path).unwrap();
            for bit in 0..good.len() * 8 {
                let mut bad = good.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                fs::write(&path, &bad).unwrap();
                let err = format.read(dir.path(), "f").unwrap_err();
                assert_eq!(corrupt_path(&err), path, "bit {bit}: {err}");
            }
        }
    }

    #[test]
    fn a_file_cut_short_at_any_length_is_corruption_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        LITTLE.write(dir.path(), "f", b"some body").unwrap();
        let good = fs::read(&path).unwrap();
        for len in 0..good.len() {
            fs::write(&path, &good[..len]).unwrap();
            let err = LITTLE.read(dir.path(), "f").unwrap_err();
            assert_eq!(corrupt_path(&err), path, "length {len}: {err}");
            let text = err.to_string();
            assert!(
                text.contains("too short") || text.contains("magic") || text.contains("checksum"),
                "length {len}: {text}"
            );
        }
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_it_is_read_and_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut big = LITTLE.encode(&[1u8; 52]);
        assert_eq!(big.len() as u64, LITTLE.file_bytes_max);
        big.push(0);
        fs::write(&path, &big).unwrap();
        let err = LITTLE.read(dir.path(), "f").unwrap_err();
        assert_eq!(corrupt_path(&err), path);
        assert!(err.to_string().contains("more than the 64"), "{err}");

        LITTLE.write(dir.path(), "f", b"kept").unwrap();
        let err = LITTLE.write(dir.path(), "f", &[1u8; 53]).unwrap_err();
        assert!(
            matches!(&err, Error::FileTooLarge { path: p, bytes: 65, max: 64 } if *p == path),
            "{err}"
        );
        assert_eq!(
            LITTLE.read(dir.path(), "f").unwrap().as_deref(),
            Some(&b"kept"[..])
        );
    }

    #[test]
    fn a_plain_replacement_writes_the_bytes_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        replace(dir.path(), "mark", b"first").unwrap();
        replace(dir.path(), "mark", b"second").unwrap();
        assert_eq!(fs::read(dir.path().join("mark")).unwrap(), b"second");
        assert!(!dir.path().join(format!("mark{TMP_SUFFIX}")).exists());
    }
}
