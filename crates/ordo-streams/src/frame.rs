//! Kafka's framing: every request and every response is a 4-byte big-endian size followed
//! by that many bytes.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of the size prefix.
pub const SIZE_BYTES: usize = 4;

/// Why a request could not be read off the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The size prefix is above the listener's bound; nothing of the request was read.
    #[error("a request of {size} bytes refused: at most {max} bytes are read (request_bytes_max)")]
    TooLarge {
        /// The size the client sent.
        size: u32,
        /// The bound.
        max: usize,
    },
    /// The size prefix is negative.
    #[error("a request of negative size {size}")]
    NegativeSize {
        /// The size the client sent.
        size: i32,
    },
    /// The connection ended inside a request.
    #[error("the connection closed {read} bytes into a request of {size} bytes")]
    Truncated {
        /// Bytes of the request read, the size prefix included.
        read: usize,
        /// The request's size, the size prefix included (4 while the prefix itself was cut).
        size: usize,
    },
    /// Reading failed.
    #[error("reading a request failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the size prefix of the next request: `None` when the client closed the connection
/// between requests. Refuses a size above `max` before reading any of the request.
pub async fn read_size<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<usize>, FrameError> {
    let mut prefix = [0u8; SIZE_BYTES];
    let mut read = 0;
    while read < SIZE_BYTES {
        let n = reader.read(&mut prefix[read..]).await?;
        if n == 0 {
            return if read == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated {
                    read,
                    size: SIZE_BYTES,
                })
            };
        }
        read += n;
    }
    let size = i32::from_be_bytes(prefix);
    if size < 0 {
        return Err(FrameError::NegativeSize { size });
    }
    let size = size as u32;
    if size as usize > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(Some(size as usize))
}

/// Bytes of a request's buffer grown per read: memory follows the bytes that arrive, not
/// the size a client claims.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Reads a request's `size` bytes (after its prefix).
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> Result<Bytes, FrameError> {
    let mut body = BytesMut::with_capacity(size.min(READ_CHUNK_BYTES));
    while body.len() < size {
        let left = size - body.len();
        body.reserve(left.min(READ_CHUNK_BYTES));
        let n = (&mut *reader).take(left as u64).read_buf(&mut body).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                read: SIZE_BYTES + body.len(),
                size: SIZE_BYTES + size,
            });
        }
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_size_above_the_bound_is_refused_before_the_request_is_read() {
        // Only the prefix is there: the refusal cannot have waited for the body.
        let mut input: &[u8] = &200_000_000u32.to_be_bytes();
        let error = block_on(read_size(&mut input, 1 << 20)).unwrap_err();
        assert!(
            matches!(error, FrameError::TooLarge { size: 200_000_000, max } if max == 1 << 20),
            "{error}"
        );
    }

    #[test]
    fn a_negative_size_is_refused() {
        let mut input: &[u8] = &(-1i32).to_be_bytes();
        let error = block_on(read_size(&mut input, 1 << 20)).unwrap_err();
        assert!(
            matches!(error, FrameError::NegativeSize { size: -1 }),
            "{error}"
        );
    }

    #[test]
    fn a_close_between_requests_is_the_end_and_inside_one_is_truncation() {
        let mut empty: &[u8] = &[];
        assert!(block_on(read_size(&mut empty, 100)).unwrap().is_none());
        let mut cut_prefix: &[u8] = &[0, 0];
        assert!(matches!(
            block_on(read_size(&mut cut_prefix, 100)),
            Err(FrameError::Truncated { read: 2, size: 4 })
        ));
        let mut cut_body: &[u8] = &[1, 2, 3];
        assert!(matches!(
            block_on(read_body(&mut cut_body, 10)),
            Err(FrameError::Truncated { read: 7, size: 14 })
        ));
    }

    #[test]
    fn a_whole_request_is_read() {
        let mut input: &[u8] = &[0, 0, 0, 3, 7, 8, 9, 1];
        let size = block_on(read_size(&mut input, 100)).unwrap().unwrap();
        assert_eq!(size, 3);
        let body = block_on(read_body(&mut input, size)).unwrap();
        assert_eq!(&body[..], &[7, 8, 9]);
        assert_eq!(input, &[1]);
    }
}
