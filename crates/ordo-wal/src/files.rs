//! File naming and the small checksummed files written by atomic replacement.
//!
//! Atomic replacement: write `name.tmp`, fsync it, rename it over `name`, fsync the directory.
//! A crash before the rename leaves the old file (and a stray `.tmp`, removed on open); after
//! the directory fsync the new file is durable. The rename is the commit point.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Suffix of files being written; never read back, removed on open.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Name of the segment whose first record has `first_index`.
pub(crate) fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}.log")
}

/// The first index encoded in a segment file name, if `name` is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Fsyncs a directory, making renames, creations and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Atomically replaces `dir/name` with `bytes` (see the module docs).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
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

/// Removes `path` if it exists.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Bytes of the checksum that ends a small file.
const CRC_BYTES: usize = 4;

/// Encodes a small file: `magic`, `payload`, CRC32C over both.
pub(crate) fn encode_small(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(magic.len() + payload.len() + CRC_BYTES);
    v.extend_from_slice(magic);
    v.extend_from_slice(payload);
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Reads a small file written by [`encode_small`] and returns its payload, `None` if the file
/// does not exist. Any damage is an error naming the file.
pub(crate) fn read_small(
    path: &Path,
    magic: &[u8; 8],
    payload_bytes: usize,
) -> Result<Option<Vec<u8>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let want = magic.len() + payload_bytes + CRC_BYTES;
    let mut v = Vec::with_capacity(want);
    // Read one byte more than expected, so an overlong file is noticed without reading it all.
    Read::by_ref(&mut f)
        .take(want as u64 + 1)
        .read_to_end(&mut v)
        .map_err(|e| Error::io(path, e))?;
    if v.len() != want {
        return Err(Error::corrupt(
            path,
            0,
            format!(
                "expected {want} bytes, found {}{}",
                v.len().min(want),
                if v.len() > want { " or more" } else { "" }
            ),
        ));
    }
    if &v[..magic.len()] != magic {
        return Err(Error::corrupt(path, 0, "bad magic number"));
    }
    let body = want - CRC_BYTES;
    let mut crc = [0; CRC_BYTES];
    crc.copy_from_slice(&v[body..]);
    if u32::from_le_bytes(crc) != crc32c::crc32c(&v[..body]) {
        return Err(Error::corrupt(path, body as u64, "checksum mismatch"));
    }
    Ok(Some(v[magic.len()..body].to_vec()))
}

/// Reads a little-endian u64 from the first 8 bytes of `b`.
pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The paths of a directory's entries.
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((entry.path(), name));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_reject_others() {
        assert_eq!(segment_name(1), "00000000000000000001.log");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("0001.log"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.log"), None);
        assert_eq!(parse_segment_name("99999999999999999999.log"), None);
    }

    #[test]
    fn small_file_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "f", &encode_small(b"ORDOTEST", &[1, 2, 3])).unwrap();
        let path = dir.path().join("f");
        assert_eq!(
            read_small(&path, b"ORDOTEST", 3).unwrap(),
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            read_small(&dir.path().join("g"), b"ORDOTEST", 3).unwrap(),
            None
        );
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            let err = read_small(&path, b"ORDOTEST", 3).unwrap_err();
            assert!(
                matches!(&err, Error::Corrupt { path: p, .. } if *p == path),
                "{err}"
            );
        }
        fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(read_small(&path, b"ORDOTEST", 3).is_err());
    }
}
