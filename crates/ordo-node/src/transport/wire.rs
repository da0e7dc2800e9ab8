//! The peer wire format: handshake, reply notice and checksummed batch frames.
//!
//! Everything here is pure: encoders append to a buffer, decoders look at bytes and either
//! return a value, ask for more bytes, or return a [`ProtocolError`]. No decoder panics or
//! allocates in proportion to a length field it has not bounded first. The layout is
//! described in the module documentation of [`transport`](super).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::advertised::{Advertised, ADVERTISED_BYTES_MAX};
use super::error::ProtocolError;
use super::{NodeId, PeerMessage};

/// The first four bytes of every handshake and reply.
pub(crate) const MAGIC: [u8; 4] = *b"ORDO";

/// The version of the encoding this build speaks.
pub const PROTOCOL_VERSION: u16 = 3;

/// Length of the dialer's handshake before its advertised values: the fixed fields and the
/// length of the advertised block.
pub(crate) const HELLO_HEADER_BYTES: usize = 42;

/// Length of a reply notice before its reason text.
pub(crate) const REPLY_HEADER_BYTES: usize = 26;

/// Upper bound on a reply's reason text, so a reply can be read into a small bounded buffer.
pub(crate) const REASON_BYTES_MAX: usize = 512;

/// Frame header: body length and checksum.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;

/// The message count at the start of every frame body.
pub(crate) const FRAME_COUNT_BYTES: usize = 4;

/// Per-message header inside a frame body: kind, group id, payload length.
pub(crate) const MESSAGE_HEADER_BYTES: usize = 13;

/// The only message kind: an opaque Raft message for one group.
pub(crate) const MESSAGE_KIND_RAFT: u8 = 0;

/// The reason code carried by a reply notice.
///
/// `Accepted` opens the connection; any other code explains why the sender of the notice is
/// closing it. Codes unknown to this build decode as [`RejectCode::Other`], so a newer peer
/// can add reasons without breaking older ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// The handshake was accepted.
    Accepted,
    /// The handshake did not start with the magic bytes.
    BadMagic,
    /// The handshake's version is not spoken by the receiver.
    UnsupportedVersion,
    /// The handshake's cluster id differs from the receiver's.
    ClusterMismatch,
    /// The handshake's sender is not a member known to the receiver.
    UnknownNode,
    /// The handshake is addressed to another node.
    WrongReceiver,
    /// A handshake field is malformed.
    MalformedHandshake,
    /// The handshake took too long.
    HandshakeTimeout,
    /// A frame exceeded the receiver's size limit.
    FrameTooLarge,
    /// A frame failed its checksum.
    ChecksumMismatch,
    /// A frame's contents did not parse.
    MalformedFrame,
    /// A message kind is not defined in the receiver's version.
    UnknownMessageKind,
    /// The stream ended in the middle of a unit.
    Truncated,
    /// The receiver knows the sender's node id with another incarnation: the sender lost
    /// the state it had promised and must not take part any more.
    LostState,
    /// The receiver could not durably record the sender's incarnation; the sender may
    /// retry.
    RecordFailed,
    /// The receiver's peer port requires TLS and the sender spoke plain text.
    TlsRequired,
    /// The TLS handshake failed; never sent (there is no channel to send it on), only
    /// reported locally.
    Tls,
    /// A code this build does not know.
    Other(u8),
}

impl RejectCode {
    fn to_byte(self) -> u8 {
        match self {
            RejectCode::Accepted => 0,
            RejectCode::BadMagic => 1,
            RejectCode::UnsupportedVersion => 2,
            RejectCode::ClusterMismatch => 3,
            RejectCode::UnknownNode => 4,
            RejectCode::WrongReceiver => 5,
            RejectCode::MalformedHandshake => 6,
            RejectCode::HandshakeTimeout => 7,
            RejectCode::FrameTooLarge => 8,
            RejectCode::ChecksumMismatch => 9,
            RejectCode::MalformedFrame => 10,
            RejectCode::UnknownMessageKind => 11,
            RejectCode::Truncated => 12,
            RejectCode::LostState => 13,
            RejectCode::RecordFailed => 14,
            RejectCode::TlsRequired => 15,
            RejectCode::Tls => 16,
            RejectCode::Other(byte) => byte,
        }
    }

    fn from_byte(byte: u8) -> RejectCode {
        match byte {
            0 => RejectCode::Accepted,
            1 => RejectCode::BadMagic,
            2 => RejectCode::UnsupportedVersion,
            3 => RejectCode::ClusterMismatch,
            4 => RejectCode::UnknownNode,
            5 => RejectCode::WrongReceiver,
            6 => RejectCode::MalformedHandshake,
            7 => RejectCode::HandshakeTimeout,
            8 => RejectCode::FrameTooLarge,
            9 => RejectCode::ChecksumMismatch,
            10 => RejectCode::MalformedFrame,
            11 => RejectCode::UnknownMessageKind,
            12 => RejectCode::Truncated,
            13 => RejectCode::LostState,
            14 => RejectCode::RecordFailed,
            15 => RejectCode::TlsRequired,
            16 => RejectCode::Tls,
            other => RejectCode::Other(other),
        }
    }
}

/// The dialer's handshake: who is calling, from which cluster, in which incarnation, for
/// whom, and what it advertises about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) version: u16,
    pub(crate) cluster_id: u64,
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
    /// The dialer's incarnation: a random number fixed when its data directory was first
    /// used, so a node that lost its directory comes back with another one.
    pub(crate) incarnation: u64,
    /// What the dialer tells its peers about itself (where its faces listen).
    pub(crate) advertised: Advertised,
}

impl Hello {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let block_bytes = self.advertised.encoded_bytes();
        assert!(
            block_bytes <= ADVERTISED_BYTES_MAX,
            "advertised values were bounded when made"
        );
        let mut out = Vec::with_capacity(HELLO_HEADER_BYTES + block_bytes);
        out.put_slice(&MAGIC);
        out.put_u16(self.version);
        out.put_u16(0); // reserved
        out.put_u64(self.cluster_id);
        out.put_u64(self.from);
        out.put_u64(self.to);
        out.put_u64(self.incarnation);
        // Bounded by ADVERTISED_BYTES_MAX, far below u16::MAX.
        out.put_u16(block_bytes as u16);
        self.advertised.encode(&mut out);
        out
    }

    /// Checks magic and version from the first six bytes, so garbage and other versions are
    /// refused before the rest (whose layout the version decides) is even read.
    pub(crate) fn check_preamble(preamble: &[u8; 6]) -> Result<(), ProtocolError> {
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&preamble[..4]);
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic { found: magic });
        }
        let theirs = u16::from_be_bytes([preamble[4], preamble[5]]);
        if theirs != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs,
            });
        }
        Ok(())
    }

    /// Decodes the fixed part; returns the handshake with nothing advertised yet and the
    /// length of the advertised block that follows, refused when over its bound before a
    /// byte of it is read.
    pub(crate) fn decode_header(
        bytes: &[u8; HELLO_HEADER_BYTES],
    ) -> Result<(Hello, usize), ProtocolError> {
        let mut preamble = [0u8; 6];
        preamble.copy_from_slice(&bytes[..6]);
        Hello::check_preamble(&preamble)?;
        let mut src = &bytes[6..];
        if src.get_u16() != 0 {
            return Err(ProtocolError::MalformedHandshake(
                "reserved field is not zero",
            ));
        }
        let hello = Hello {
            version: PROTOCOL_VERSION,
            cluster_id: src.get_u64(),
            from: src.get_u64(),
            to: src.get_u64(),
            incarnation: src.get_u64(),
            advertised: Advertised::default(),
        };
        if hello.incarnation == 0 {
            return Err(ProtocolError::MalformedHandshake("incarnation is 0"));
        }
        let block_bytes = usize::from(src.get_u16());
        if block_bytes > ADVERTISED_BYTES_MAX {
            return Err(ProtocolError::MalformedHandshake(
                "advertised values too long",
            ));
        }
        Ok((hello, block_bytes))
    }

    /// Decodes a whole handshake, which must be exactly `bytes`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Hello, ProtocolError> {
        let Some((header, block)) = bytes.split_first_chunk::<HELLO_HEADER_BYTES>() else {
            return Err(ProtocolError::Truncated { what: "handshake" });
        };
        let (mut hello, block_bytes) = Hello::decode_header(header)?;
        if block.len() != block_bytes {
            return Err(ProtocolError::MalformedHandshake(
                "advertised block length disagrees with the handshake",
            ));
        }
        hello.advertised = Advertised::decode(block)?;
        Ok(hello)
    }
}

/// The acceptor's answer to a handshake, and later its notice before closing a connection.
///
/// Its layout is the same in every version, so a peer of another version can still read why
/// it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) version: u16,
    pub(crate) code: RejectCode,
    pub(crate) cluster_id: u64,
    pub(crate) node_id: NodeId,
    pub(crate) reason: String,
}

impl Reply {
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        let mut reason = self.reason.as_bytes();
        if reason.len() > REASON_BYTES_MAX {
            // Cut at a character boundary so the text stays valid UTF-8.
            let mut end = REASON_BYTES_MAX;
            while !self.reason.is_char_boundary(end) {
                end -= 1;
            }
            reason = &reason[..end];
        }
        dst.reserve(REPLY_HEADER_BYTES + reason.len());
        dst.put_slice(&MAGIC);
        dst.put_u16(self.version);
        dst.put_u8(self.code.to_byte());
        dst.put_u8(0); // reserved
        dst.put_u64(self.cluster_id);
        dst.put_u64(self.node_id);
        // The cut above keeps the length within REASON_BYTES_MAX, far below u16::MAX.
        dst.put_u16(reason.len() as u16);
        dst.put_slice(reason);
    }

    /// Decodes a reply from the front of `src`: `Ok(None)` asks for more bytes, `Ok(Some)`
    /// gives the reply and how many bytes it took.
    pub(crate) fn decode(src: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
        if src.len() >= 4 && src[..4] != MAGIC {
            let mut found = [0u8; 4];
            found.copy_from_slice(&src[..4]);
            return Err(ProtocolError::BadMagic { found });
        }
        if src.len() < REPLY_HEADER_BYTES {
            return Ok(None);
        }
        let mut cursor = &src[4..REPLY_HEADER_BYTES];
        let version = cursor.get_u16();
        let code = RejectCode::from_byte(cursor.get_u8());
        let _reserved = cursor.get_u8();
        let cluster_id = cursor.get_u64();
        let node_id = cursor.get_u64();
        let reason_bytes = usize::from(cursor.get_u16());
        if reason_bytes > REASON_BYTES_MAX {
            return Err(ProtocolError::MalformedHandshake("reply reason too long"));
        }
        let total = REPLY_HEADER_BYTES + reason_bytes;
        if src.len() < total {
            return Ok(None);
        }
        let reason = String::from_utf8_lossy(&src[REPLY_HEADER_BYTES..total]).into_owned();
        Ok(Some((
            Reply {
                version,
                code,
                cluster_id,
                node_id,
                reason,
            },
            total,
        )))
    }
}

/// Bytes a message occupies inside a frame body.
pub(crate) fn message_encoded_bytes(message: &PeerMessage) -> usize {
    MESSAGE_HEADER_BYTES + message.payload.len()
}

/// The largest payload that fits in a frame whose body is at most `frame_bytes_max`.
pub(crate) fn payload_bytes_max(frame_bytes_max: u32) -> usize {
    (frame_bytes_max as usize).saturating_sub(FRAME_COUNT_BYTES + MESSAGE_HEADER_BYTES)
}

/// Appends `messages` to `dst` as frames whose bodies are each at most `frame_bytes_max`,
/// and returns how many frames were written.
///
/// Every message must fit alone (checked when it was queued); a message that does not fit in
/// the current frame starts the next one.
pub(crate) fn encode_frames(
    dst: &mut BytesMut,
    messages: &[PeerMessage],
    frame_bytes_max: u32,
) -> usize {
    let body_bytes_max = frame_bytes_max as usize;
    let mut frames = 0;
    let mut start = None;
    let mut count: u32 = 0;
    for message in messages {
        let message_bytes = message_encoded_bytes(message);
        assert!(
            FRAME_COUNT_BYTES + message_bytes <= body_bytes_max,
            "a message larger than a frame was queued"
        );
        if let Some(frame_start) = start {
            let body_bytes = dst.len() - frame_start - FRAME_HEADER_BYTES;
            if body_bytes + message_bytes > body_bytes_max {
                finish_frame(dst, frame_start, count);
                frames += 1;
                start = None;
            }
        }
        if start.is_none() {
            start = Some(begin_frame(dst));
            count = 0;
        }
        dst.put_u8(MESSAGE_KIND_RAFT);
        dst.put_u64(message.group_id);
        // Bounded by frame_bytes_max (a u32) through the assertion above.
        dst.put_u32(message.payload.len() as u32);
        dst.put_slice(&message.payload);
        count += 1;
    }
    if let Some(frame_start) = start {
        finish_frame(dst, frame_start, count);
        frames += 1;
    }
    frames
}

/// Encodes a keepalive: a frame of no messages. An idle writer sends one now and then so
/// that the peer's reader can tell a quiet link from a dead one.
pub(crate) fn encode_keepalive(dst: &mut BytesMut) {
    let frame_start = begin_frame(dst);
    finish_frame(dst, frame_start, 0);
}

/// Writes a frame's header and message count as placeholders, for [`finish_frame`] to
/// patch; returns where the frame starts.
fn begin_frame(dst: &mut BytesMut) -> usize {
    let frame_start = dst.len();
    dst.put_u32(0); // body length
    dst.put_u32(0); // checksum
    dst.put_u32(0); // message count
    frame_start
}

fn finish_frame(dst: &mut BytesMut, frame_start: usize, count: u32) {
    let body_start = frame_start + FRAME_HEADER_BYTES;
    let body_bytes = (dst.len() - body_start) as u32;
    dst[body_start..body_start + FRAME_COUNT_BYTES].copy_from_slice(&count.to_be_bytes());
    dst[frame_start..frame_start + 4].copy_from_slice(&body_bytes.to_be_bytes());
    let crc = frame_checksum(&body_bytes.to_be_bytes(), &dst[body_start..]);
    dst[frame_start + 4..body_start].copy_from_slice(&crc.to_be_bytes());
}

/// CRC32C over the length field and the body: a corrupted length then fails the checksum
/// instead of silently shifting the frame boundary.
fn frame_checksum(length: &[u8; 4], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(length), body)
}

/// Looks at the front of `src` and returns the total length of the first frame once all of
/// it is buffered. Oversized frames are refused from the header alone, before their body is
/// read.
pub(crate) fn frame_length(
    src: &[u8],
    frame_bytes_max: u32,
) -> Result<Option<usize>, ProtocolError> {
    if src.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let body_bytes = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
    if body_bytes > frame_bytes_max {
        return Err(ProtocolError::FrameTooLarge {
            bytes: u64::from(body_bytes),
            max: u64::from(frame_bytes_max),
        });
    }
    if (body_bytes as usize) < FRAME_COUNT_BYTES {
        return Err(ProtocolError::MalformedFrame(
            "body shorter than its message count",
        ));
    }
    let total = FRAME_HEADER_BYTES + body_bytes as usize;
    Ok((src.len() >= total).then_some(total))
}

/// Verifies and parses one whole frame (header included, as sized by [`frame_length`]).
///
/// All messages are parsed before any is returned, so a frame is delivered whole or not at
/// all. Each payload is copied out of `frame` into an allocation of its own: the entries a
/// group keeps (in its log cache, its state machine) would otherwise each hold the whole
/// read buffer the frame arrived in, and a node hosting thousands of groups would keep one
/// such buffer alive per group long after the frame was handled.
pub(crate) fn decode_frame(frame: Bytes) -> Result<Vec<PeerMessage>, ProtocolError> {
    if frame.len() < FRAME_HEADER_BYTES + FRAME_COUNT_BYTES {
        return Err(ProtocolError::Truncated { what: "frame" });
    }
    let length: [u8; 4] = [frame[0], frame[1], frame[2], frame[3]];
    if u32::from_be_bytes(length) as usize != frame.len() - FRAME_HEADER_BYTES {
        return Err(ProtocolError::MalformedFrame(
            "length field disagrees with frame size",
        ));
    }
    let expected = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let actual = frame_checksum(&length, &frame[FRAME_HEADER_BYTES..]);
    if expected != actual {
        return Err(ProtocolError::ChecksumMismatch { expected, actual });
    }
    let mut body = frame.slice(FRAME_HEADER_BYTES..);
    let count = body.get_u32() as usize;
    // Each message takes at least a header, so a count beyond this is a lie; checking it
    // first bounds the allocation below by the frame size, not by the count field.
    if count > body.len() / MESSAGE_HEADER_BYTES {
        return Err(ProtocolError::MalformedFrame(
            "message count exceeds frame size",
        ));
    }
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        if body.len() < MESSAGE_HEADER_BYTES {
            return Err(ProtocolError::MalformedFrame(
                "message header past end of frame",
            ));
        }
        let kind = body.get_u8();
        if kind != MESSAGE_KIND_RAFT {
            return Err(ProtocolError::UnknownMessageKind(kind));
        }
        let group_id = body.get_u64();
        let payload_bytes = body.get_u32() as usize;
        if payload_bytes > body.len() {
            return Err(ProtocolError::MalformedFrame("payload past end of frame"));
        }
        let payload = Bytes::copy_from_slice(&body[..payload_bytes]);
        body.advance(payload_bytes);
        messages.push(PeerMessage { group_id, payload });
    }
    if !body.is_empty() {
        return Err(ProtocolError::MalformedFrame(
            "bytes after the last message",
        ));
    }
    Ok(messages)
}

impl PeerMessage {
    /// Decodes `stream` as the reader of one inbound connection does (magic, preamble,
    /// handshake, advertised values, then frames of at most `frame_bytes_max` until the
    /// bytes end or one is refused), and reads the same bytes as the replies a dialer
    /// reads. Returns the messages of every frame that decoded. Every error is answered
    /// with the notice the listener would send, which must decode to the same code.
    ///
    /// The entry point of the `peer_stream` fuzz harness (`crate::fuzzing`), which cannot
    /// name this module; the readers themselves read sockets.
    pub(crate) fn decode_arbitrary_stream(stream: &[u8], frame_bytes_max: u32) -> Vec<PeerMessage> {
        let mut messages = Vec::new();
        match decode_stream(stream, frame_bytes_max, &mut messages) {
            Ok(()) => {}
            Err(error) => {
                let mut notice = BytesMut::new();
                let code = error.reject_code();
                Reply {
                    version: PROTOCOL_VERSION,
                    code,
                    cluster_id: 1,
                    node_id: 2,
                    reason: error.reason_for_peer(),
                }
                .encode(&mut notice);
                let decoded = Reply::decode(&notice).map(|r| r.map(|(r, len)| (r.code, len)));
                assert_eq!(decoded, Ok(Some((code, notice.len()))), "{error}");
            }
        }
        let mut rest = stream;
        while let Ok(Some((reply, len))) = Reply::decode(rest) {
            assert!(len >= REPLY_HEADER_BYTES && len <= rest.len());
            let mut again = BytesMut::new();
            reply.encode(&mut again);
            // The reason was read lossily and may be cut when written again; the rest is kept.
            let fields = |r: &Reply| (r.version, r.code, r.cluster_id, r.node_id);
            let decoded = Reply::decode(&again).ok().flatten();
            assert_eq!(decoded.map(|(r, _)| fields(&r)), Some(fields(&reply)));
            rest = &rest[len..];
        }
        if !messages.is_empty() {
            // What decoded encodes again into frames that decode to the same messages.
            let mut frames = BytesMut::new();
            encode_frames(&mut frames, &messages, frame_bytes_max);
            let mut again = Vec::new();
            while let Ok(Some(total)) = frame_length(&frames, frame_bytes_max) {
                again.extend(decode_frame(frames.split_to(total).freeze()).unwrap_or_default());
            }
            assert_eq!(again, messages, "frames re-encoded from decoded messages");
        }
        messages
    }
}

/// The steps of the inbound reader (`inbound::read_hello`, `inbound::read_frames`) over
/// bytes in memory.
fn decode_stream(
    stream: &[u8],
    frame_bytes_max: u32,
    messages: &mut Vec<PeerMessage>,
) -> Result<(), ProtocolError> {
    let truncated = ProtocolError::Truncated { what: "handshake" };
    let (header, rest) = stream
        .split_first_chunk::<HELLO_HEADER_BYTES>()
        .ok_or(truncated.clone())?;
    let mut preamble = [0u8; 6];
    preamble.copy_from_slice(&header[..6]);
    Hello::check_preamble(&preamble)?;
    let (mut hello, block_bytes) = Hello::decode_header(header)?;
    if rest.len() < block_bytes {
        return Err(truncated);
    }
    let (block, rest) = rest.split_at(block_bytes);
    hello.advertised = Advertised::decode(block)?;
    let encoded = hello.encode();
    assert_eq!(encoded.len(), HELLO_HEADER_BYTES + block_bytes);
    assert_eq!(Hello::decode(&encoded), Ok(hello), "handshake re-encoded");
    let mut buffer = BytesMut::from(rest);
    while let Some(total) = frame_length(&buffer, frame_bytes_max)? {
        messages.extend(decode_frame(buffer.split_to(total).freeze())?);
    }
    if buffer.is_empty() {
        Ok(())
    } else {
        Err(ProtocolError::Truncated { what: "frame" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(group_id: u64, payload: &[u8]) -> PeerMessage {
        PeerMessage {
            group_id,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn decode_all(mut buf: BytesMut, frame_bytes_max: u32) -> Vec<Vec<PeerMessage>> {
        let mut frames = Vec::new();
        while let Some(total) = frame_length(&buf, frame_bytes_max).unwrap() {
            frames.push(decode_frame(buf.split_to(total).freeze()).unwrap());
        }
        assert!(buf.is_empty(), "trailing bytes after the last frame");
        frames
    }

    #[test]
    fn frames_round_trip_in_order() {
        let messages = vec![message(1, b"a"), message(2, b""), message(u64::MAX, b"xyz")];
        let mut buf = BytesMut::new();
        assert_eq!(encode_frames(&mut buf, &messages, 1024), 1);
        assert_eq!(decode_all(buf, 1024), vec![messages]);
    }

    #[test]
    fn a_keepalive_is_a_valid_frame_of_no_messages() {
        let mut buf = BytesMut::new();
        encode_keepalive(&mut buf);
        assert_eq!(decode_all(buf, 1024), vec![Vec::<PeerMessage>::new()]);
    }

    #[test]
    fn decoded_payloads_hold_no_part_of_the_frame() {
        let messages = vec![message(1, &[7; 300]), message(2, &[9; 40])];
        let mut buf = BytesMut::new();
        assert_eq!(encode_frames(&mut buf, &messages, 4096), 1);
        let frame = buf.freeze();
        let frame_range = frame.as_ptr_range();
        let decoded = decode_frame(frame.clone()).unwrap();
        assert_eq!(decoded, messages);
        for m in &decoded {
            // A payload inside the frame's buffer would keep all of it alive.
            assert!(
                !frame_range.contains(&m.payload.as_ptr()),
                "payload of group {} points into the frame",
                m.group_id
            );
        }
    }

    #[test]
    fn batch_is_split_so_no_frame_exceeds_the_limit() {
        let messages: Vec<_> = (0..100).map(|i| message(i, &[i as u8; 50])).collect();
        let frame_bytes_max = 200;
        let mut buf = BytesMut::new();
        let frames = encode_frames(&mut buf, &messages, frame_bytes_max);
        // 63 bytes per message, 4 bytes of count: three messages per frame.
        assert_eq!(frames, 34);
        let decoded = decode_all(buf, frame_bytes_max);
        assert_eq!(decoded.len(), 34);
        assert_eq!(decoded.concat(), messages);
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut buf = BytesMut::new();
        encode_frames(&mut buf, &[message(1, &[0; 100])], 1024);
        let header = &buf[..FRAME_HEADER_BYTES];
        assert_eq!(
            frame_length(header, 64),
            Err(ProtocolError::FrameTooLarge {
                bytes: 117,
                max: 64
            })
        );
    }

    #[test]
    fn flipped_bit_anywhere_fails_the_checksum() {
        let mut buf = BytesMut::new();
        encode_frames(
            &mut buf,
            &[message(7, b"payload"), message(8, b"more")],
            1024,
        );
        for byte in 4..buf.len() {
            let mut corrupt = buf.clone();
            corrupt[byte] ^= 0x10;
            let result = decode_frame(corrupt.freeze());
            assert!(
                matches!(result, Err(ProtocolError::ChecksumMismatch { .. })),
                "byte {byte}: {result:?}"
            );
        }
    }

    #[test]
    fn corrupted_length_is_caught() {
        let mut buf = BytesMut::new();
        encode_frames(&mut buf, &[message(7, b"payload")], 1024);
        buf[3] -= 1;
        let total = frame_length(&buf, 1024).unwrap().unwrap();
        let result = decode_frame(buf.split_to(total).freeze());
        assert!(matches!(
            result,
            Err(ProtocolError::ChecksumMismatch { .. })
        ));
    }

    /// Builds a frame with a valid checksum around an arbitrary body.
    fn frame_with_body(body: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        let length = (body.len() as u32).to_be_bytes();
        buf.put_slice(&length);
        buf.put_u32(frame_checksum(&length, body));
        buf.put_slice(body);
        buf.freeze()
    }

    #[test]
    fn lying_count_and_lengths_are_malformed_not_panics() {
        let mut body = BytesMut::new();
        body.put_u32(u32::MAX);
        assert_eq!(
            decode_frame(frame_with_body(&body)),
            Err(ProtocolError::MalformedFrame(
                "message count exceeds frame size"
            ))
        );

        let mut body = BytesMut::new();
        body.put_u32(1);
        body.put_u8(MESSAGE_KIND_RAFT);
        body.put_u64(1);
        body.put_u32(1000);
        assert_eq!(
            decode_frame(frame_with_body(&body)),
            Err(ProtocolError::MalformedFrame("payload past end of frame"))
        );

        let mut body = BytesMut::new();
        body.put_u32(0);
        body.put_u8(9);
        assert_eq!(
            decode_frame(frame_with_body(&body)),
            Err(ProtocolError::MalformedFrame(
                "bytes after the last message"
            ))
        );

        let mut body = BytesMut::new();
        body.put_u32(1);
        body.put_u8(3);
        body.put_u64(1);
        body.put_u32(0);
        assert_eq!(
            decode_frame(frame_with_body(&body)),
            Err(ProtocolError::UnknownMessageKind(3))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders() {
        // A small xorshift stream: the same bytes on every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..2000 {
            let len = round % 97;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if let Ok(Some(total)) = frame_length(&bytes, 64) {
                let _ = decode_frame(Bytes::copy_from_slice(&bytes[..total]));
            }
            let _ = decode_frame(frame_with_body(&bytes));
            let _ = Reply::decode(&bytes);
            let _ = Hello::decode(&bytes);
            let mut handshake = hello_bytes();
            handshake.truncate(HELLO_HEADER_BYTES - 2);
            handshake.extend_from_slice(&bytes);
            let _ = Hello::decode(&handshake);
        }
    }

    fn hello() -> Hello {
        let advertised = Advertised::new([(
            "etcd-client-url".to_string(),
            "http://127.0.0.1:2379".to_string(),
        )])
        .unwrap();
        Hello {
            version: PROTOCOL_VERSION,
            cluster_id: 42,
            from: 1,
            to: 2,
            incarnation: 0xfeed,
            advertised,
        }
    }

    fn hello_bytes() -> Vec<u8> {
        hello().encode()
    }

    #[test]
    fn hello_round_trips_with_what_the_dialer_advertises() {
        let hello = hello();
        let bytes = hello.encode();
        assert_eq!(Hello::decode(&bytes), Ok(hello.clone()));
        let nothing = Hello {
            advertised: Advertised::default(),
            ..hello
        };
        let bytes = nothing.encode();
        assert_eq!(bytes.len(), HELLO_HEADER_BYTES);
        assert_eq!(Hello::decode(&bytes), Ok(nothing));
    }

    #[test]
    fn hello_keeps_the_fixed_layout_of_earlier_versions_up_to_the_incarnation() {
        // Tools that tell senders apart read the sender's id at byte 16.
        let bytes = hello_bytes();
        assert_eq!(&bytes[..4], b"ORDO");
        assert_eq!(&bytes[16..24], &1u64.to_be_bytes());
        assert_eq!(&bytes[32..40], &0xfeedu64.to_be_bytes());
    }

    #[test]
    fn hello_checks_magic_version_incarnation_and_the_advertised_block() {
        let bytes = hello_bytes();
        let mut other_version = bytes.clone();
        other_version[5] = 9;
        assert_eq!(
            Hello::decode(&other_version),
            Err(ProtocolError::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: 9
            })
        );
        let mut previous = bytes.clone();
        previous[5] = 2;
        assert_eq!(
            Hello::decode(&previous),
            Err(ProtocolError::UnsupportedVersion {
                ours: PROTOCOL_VERSION,
                theirs: 2
            })
        );

        let no_incarnation = Hello {
            incarnation: 0,
            ..hello()
        };
        assert_eq!(
            Hello::decode(&no_incarnation.encode()),
            Err(ProtocolError::MalformedHandshake("incarnation is 0"))
        );

        let mut garbage = bytes.clone();
        garbage[0] = b'X';
        assert_eq!(
            Hello::decode(&garbage),
            Err(ProtocolError::BadMagic { found: *b"XRDO" })
        );

        let mut oversized = bytes.clone();
        oversized[40..42].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            Hello::decode(&oversized),
            Err(ProtocolError::MalformedHandshake(
                "advertised values too long"
            ))
        );
        assert_eq!(
            Hello::decode(&bytes[..bytes.len() - 1]),
            Err(ProtocolError::MalformedHandshake(
                "advertised block length disagrees with the handshake"
            ))
        );
        assert_eq!(
            Hello::decode(&bytes[..HELLO_HEADER_BYTES - 1]),
            Err(ProtocolError::Truncated { what: "handshake" })
        );
    }

    #[test]
    fn reply_round_trips_and_waits_for_its_reason() {
        let reply = Reply {
            version: PROTOCOL_VERSION,
            code: RejectCode::ClusterMismatch,
            cluster_id: 7,
            node_id: 3,
            reason: "cluster id mismatch".to_string(),
        };
        let mut buf = BytesMut::new();
        reply.encode(&mut buf);
        for cut in 0..buf.len() {
            assert_eq!(Reply::decode(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(Reply::decode(&buf), Ok(Some((reply, buf.len()))));
    }

    #[test]
    fn reply_reason_is_capped_at_a_char_boundary() {
        let reply = Reply {
            version: PROTOCOL_VERSION,
            code: RejectCode::Other(200),
            cluster_id: 1,
            node_id: 1,
            reason: "é".repeat(REASON_BYTES_MAX),
        };
        let mut buf = BytesMut::new();
        reply.encode(&mut buf);
        let (decoded, _) = Reply::decode(&buf).unwrap().unwrap();
        assert_eq!(decoded.code, RejectCode::Other(200));
        assert_eq!(decoded.reason, "é".repeat(REASON_BYTES_MAX / 2));
    }
}
