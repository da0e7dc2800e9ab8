//! What the etcd face asks the group's leader over the peer transport
//! (`Group::ask_leader`), and the leader's answers, in a small versioned encoding.
//!
//! Only the leader keeps lease deadlines and knows how far a learner has caught up, so a
//! follower asks it: renew a lease, tell a lease's remaining time, promote a learner. The
//! questions travel between members only (the transport checks the cluster first).
//!
//! Every question and answer starts with the encoding's version (currently 1) and a kind;
//! integers are big-endian. A decoder refuses another version, an unknown kind, a short or
//! long body, a list over its bound and text that is not UTF-8, naming what is wrong.
//!
//! | kind | question | body |
//! |---|---|---|
//! | 1 | renew lease | id (i64) |
//! | 2 | lease time to live | id (i64) |
//! | 3 | promote learner | member id (u64) |
//!
//! | kind | answer | body |
//! |---|---|---|
//! | 1 | a lease's seconds | known (u8: 0 or 1), seconds (i64) |
//! | 2 | promoted | voters count (u16), ids (u64 each), learners count (u16), ids |
//! | 3 | promotion refused | reason (u8), member id (u64), match index (u64), lag (u64), text length (u16), text |

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ordo_kv::backend::MemberError;
use ordo_node::NodeId;

/// The version of the encoding this build speaks.
pub const QUESTIONS_VERSION: u8 = 1;

/// Most ids in one list of a promotion's answer.
pub const MEMBERS_MAX: usize = 1024;

/// Longest text in a refusal, in bytes; longer texts are cut at a character boundary.
pub const REASON_BYTES_MAX: usize = 1024;

/// A question for the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// Renew lease `id`.
    LeaseKeepAlive {
        /// The lease.
        id: i64,
    },
    /// How many seconds lease `id` has left.
    LeaseTimeToLive {
        /// The lease.
        id: i64,
    },
    /// Make learner `id` a voter, once it has caught up.
    MemberPromote {
        /// The learner.
        id: NodeId,
    },
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A lease's time to live in seconds, or `None` when the leader knows no such lease.
    LeaseSeconds(Option<i64>),
    /// The learner was promoted; the members after the change.
    Promoted {
        /// The voters.
        voters: Vec<NodeId>,
        /// The learners.
        learners: Vec<NodeId>,
    },
    /// The leader refused or could not complete the promotion.
    PromoteRefused(MemberError),
}

/// Why bytes are not a question or an answer of this encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Nothing, or less than the version and kind.
    #[error("empty message")]
    Empty,
    /// Another version of the encoding.
    #[error(
        "version {found} of the leader questions; this node speaks version {QUESTIONS_VERSION}"
    )]
    Version {
        /// The version found.
        found: u8,
    },
    /// A kind this version does not define.
    #[error("unknown kind {found}")]
    Kind {
        /// The kind found.
        found: u8,
    },
    /// The body ends early or has bytes after its end.
    #[error("malformed body: {0}")]
    Body(&'static str),
}

const KIND_KEEP_ALIVE: u8 = 1;
const KIND_TIME_TO_LIVE: u8 = 2;
const KIND_PROMOTE: u8 = 3;

const ANSWER_LEASE: u8 = 1;
const ANSWER_PROMOTED: u8 = 2;
const ANSWER_REFUSED: u8 = 3;

const REFUSED_NOT_FOUND: u8 = 1;
const REFUSED_NOT_LEARNER: u8 = 2;
const REFUSED_NOT_READY: u8 = 3;
const REFUSED_NO_LEADER: u8 = 4;
const REFUSED_REJECTED: u8 = 5;
const REFUSED_UNKNOWN: u8 = 6;

fn header(kind: u8) -> BytesMut {
    let mut out = BytesMut::with_capacity(64);
    out.put_u8(QUESTIONS_VERSION);
    out.put_u8(kind);
    out
}

/// Splits off the version and kind, checking the version.
fn open(bytes: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    let [version, kind, body @ ..] = bytes else {
        return Err(DecodeError::Empty);
    };
    if *version != QUESTIONS_VERSION {
        return Err(DecodeError::Version { found: *version });
    }
    Ok((*kind, body))
}

fn take_u64(body: &mut &[u8]) -> Result<u64, DecodeError> {
    if body.len() < 8 {
        return Err(DecodeError::Body("ends inside a number"));
    }
    Ok(body.get_u64())
}

fn take_u8(body: &mut &[u8]) -> Result<u8, DecodeError> {
    if body.is_empty() {
        return Err(DecodeError::Body("ends inside a number"));
    }
    Ok(body.get_u8())
}

fn take_ids(body: &mut &[u8]) -> Result<Vec<NodeId>, DecodeError> {
    if body.len() < 2 {
        return Err(DecodeError::Body("ends inside a count"));
    }
    let count = usize::from(body.get_u16());
    if count > MEMBERS_MAX {
        return Err(DecodeError::Body("more members than allowed"));
    }
    if body.len() < count * 8 {
        return Err(DecodeError::Body("ends inside a list"));
    }
    Ok((0..count).map(|_| body.get_u64()).collect())
}

fn take_text(body: &mut &[u8]) -> Result<String, DecodeError> {
    if body.len() < 2 {
        return Err(DecodeError::Body("ends inside a text length"));
    }
    let length = usize::from(body.get_u16());
    if length > REASON_BYTES_MAX {
        return Err(DecodeError::Body("text longer than allowed"));
    }
    if body.len() < length {
        return Err(DecodeError::Body("ends inside a text"));
    }
    let (text, rest) = body.split_at(length);
    *body = rest;
    String::from_utf8(text.to_vec()).map_err(|_| DecodeError::Body("text is not UTF-8"))
}

fn finish<T>(value: T, body: &[u8]) -> Result<T, DecodeError> {
    if body.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::Body("bytes after the end"))
    }
}

fn put_ids(out: &mut BytesMut, ids: &[NodeId]) {
    assert!(
        ids.len() <= MEMBERS_MAX,
        "{} members in one list",
        ids.len()
    );
    // Bounded by MEMBERS_MAX, far below u16::MAX.
    out.put_u16(ids.len() as u16);
    for &id in ids {
        out.put_u64(id);
    }
}

fn put_text(out: &mut BytesMut, text: &str) {
    let mut end = text.len().min(REASON_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // Bounded by REASON_BYTES_MAX, far below u16::MAX.
    out.put_u16(end as u16);
    out.put_slice(&text.as_bytes()[..end]);
}

impl Question {
    /// The question's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = match *self {
            Question::LeaseKeepAlive { id } => {
                let mut out = header(KIND_KEEP_ALIVE);
                out.put_i64(id);
                out
            }
            Question::LeaseTimeToLive { id } => {
                let mut out = header(KIND_TIME_TO_LIVE);
                out.put_i64(id);
                out
            }
            Question::MemberPromote { id } => {
                let mut out = header(KIND_PROMOTE);
                out.put_u64(id);
                out
            }
        };
        out.split().freeze()
    }

    /// Decodes a question.
    pub fn decode(bytes: &[u8]) -> Result<Question, DecodeError> {
        let (kind, mut body) = open(bytes)?;
        let question = match kind {
            KIND_KEEP_ALIVE => Question::LeaseKeepAlive {
                id: take_u64(&mut body)? as i64,
            },
            KIND_TIME_TO_LIVE => Question::LeaseTimeToLive {
                id: take_u64(&mut body)? as i64,
            },
            KIND_PROMOTE => Question::MemberPromote {
                id: take_u64(&mut body)?,
            },
            found => return Err(DecodeError::Kind { found }),
        };
        finish(question, body)
    }
}

/// The reason code, member id, match index, lag and text of a refusal.
fn refusal_fields(error: &MemberError) -> (u8, u64, u64, u64, &str) {
    match error {
        MemberError::NotFound { id } => (REFUSED_NOT_FOUND, *id, 0, 0, ""),
        MemberError::NotLearner { id } => (REFUSED_NOT_LEARNER, *id, 0, 0, ""),
        MemberError::LearnerNotReady {
            id,
            match_index,
            lag,
        } => (REFUSED_NOT_READY, *id, *match_index, *lag, ""),
        MemberError::NoLeader(text) => (REFUSED_NO_LEADER, 0, 0, 0, text),
        MemberError::Rejected(text) => (REFUSED_REJECTED, 0, 0, 0, text),
        // A promotion at the leader ends in none of the others; should one appear, the
        // caller learns its text and that the outcome is not known.
        other => (REFUSED_UNKNOWN, 0, 0, 0, unknown_text(other)),
    }
}

fn unknown_text(error: &MemberError) -> &str {
    match error {
        MemberError::Unknown(text) => text,
        _ => "the leader could not complete the promotion",
    }
}

fn refusal(reason: u8, id: u64, match_index: u64, lag: u64, text: String) -> Option<MemberError> {
    Some(match reason {
        REFUSED_NOT_FOUND => MemberError::NotFound { id },
        REFUSED_NOT_LEARNER => MemberError::NotLearner { id },
        REFUSED_NOT_READY => MemberError::LearnerNotReady {
            id,
            match_index,
            lag,
        },
        REFUSED_NO_LEADER => MemberError::NoLeader(text),
        REFUSED_REJECTED => MemberError::Rejected(text),
        REFUSED_UNKNOWN => MemberError::Unknown(text),
        _ => return None,
    })
}

impl Answer {
    /// The answer's bytes.
    pub fn encode(&self) -> Bytes {
        let out = match self {
            Answer::LeaseSeconds(seconds) => {
                let mut out = header(ANSWER_LEASE);
                out.put_u8(u8::from(seconds.is_some()));
                out.put_i64(seconds.unwrap_or(0));
                out
            }
            Answer::Promoted { voters, learners } => {
                let mut out = header(ANSWER_PROMOTED);
                put_ids(&mut out, voters);
                put_ids(&mut out, learners);
                out
            }
            Answer::PromoteRefused(error) => {
                let (reason, id, match_index, lag, text) = refusal_fields(error);
                let mut out = header(ANSWER_REFUSED);
                out.put_u8(reason);
                out.put_u64(id);
                out.put_u64(match_index);
                out.put_u64(lag);
                put_text(&mut out, text);
                out
            }
        };
        out.freeze()
    }

    /// Decodes an answer.
    pub fn decode(bytes: &[u8]) -> Result<Answer, DecodeError> {
        let (kind, mut body) = open(bytes)?;
        let answer = match kind {
            ANSWER_LEASE => {
                let known = take_u8(&mut body)?;
                let seconds = take_u64(&mut body)? as i64;
                match known {
                    0 => Answer::LeaseSeconds(None),
                    1 => Answer::LeaseSeconds(Some(seconds)),
                    _ => return Err(DecodeError::Body("a flag that is neither 0 nor 1")),
                }
            }
            ANSWER_PROMOTED => Answer::Promoted {
                voters: take_ids(&mut body)?,
                learners: take_ids(&mut body)?,
            },
            ANSWER_REFUSED => {
                let reason = take_u8(&mut body)?;
                let (id, match_index, lag) = (
                    take_u64(&mut body)?,
                    take_u64(&mut body)?,
                    take_u64(&mut body)?,
                );
                let text = take_text(&mut body)?;
                let error = refusal(reason, id, match_index, lag, text)
                    .ok_or(DecodeError::Body("unknown refusal reason"))?;
                Answer::PromoteRefused(error)
            }
            found => return Err(DecodeError::Kind { found }),
        };
        finish(answer, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_round_trip() {
        for question in [
            Question::LeaseKeepAlive { id: -7 },
            Question::LeaseTimeToLive { id: i64::MAX },
            Question::MemberPromote { id: u64::MAX },
        ] {
            assert_eq!(Question::decode(&question.encode()), Ok(question));
        }
    }

    #[test]
    fn answers_round_trip() {
        let answers = [
            Answer::LeaseSeconds(None),
            Answer::LeaseSeconds(Some(30)),
            Answer::Promoted {
                voters: vec![1, 2, 1 << 50],
                learners: vec![],
            },
            Answer::PromoteRefused(MemberError::LearnerNotReady {
                id: 9,
                match_index: 40,
                lag: 2000,
            }),
            Answer::PromoteRefused(MemberError::NotFound { id: 9 }),
            Answer::PromoteRefused(MemberError::NotLearner { id: 9 }),
            Answer::PromoteRefused(MemberError::NoLeader("an election".into())),
            Answer::PromoteRefused(MemberError::Rejected("a change is in progress".into())),
            Answer::PromoteRefused(MemberError::Unknown("timed out".into())),
        ];
        for answer in answers {
            assert_eq!(Answer::decode(&answer.encode()), Ok(answer.clone()));
        }
    }

    #[test]
    fn a_long_refusal_text_is_cut_at_a_character_boundary() {
        let long = MemberError::Rejected("é".repeat(REASON_BYTES_MAX));
        let decoded = Answer::decode(&Answer::PromoteRefused(long).encode());
        assert_eq!(
            decoded,
            Ok(Answer::PromoteRefused(MemberError::Rejected(
                "é".repeat(REASON_BYTES_MAX / 2)
            )))
        );
    }

    #[test]
    fn garbage_is_refused_naming_what_is_wrong() {
        let keep_alive = Question::LeaseKeepAlive { id: 1 }.encode();
        assert_eq!(Question::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(Question::decode(&[1]), Err(DecodeError::Empty));
        assert_eq!(
            Question::decode(&[2, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::Version { found: 2 })
        );
        assert_eq!(
            Question::decode(&[1, 9]),
            Err(DecodeError::Kind { found: 9 })
        );
        assert_eq!(
            Question::decode(&keep_alive[..keep_alive.len() - 1]),
            Err(DecodeError::Body("ends inside a number"))
        );
        assert_eq!(
            Question::decode(&[keep_alive.as_ref(), &[0]].concat()),
            Err(DecodeError::Body("bytes after the end"))
        );
        assert_eq!(
            Answer::decode(&[1, ANSWER_LEASE, 2, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::Body("a flag that is neither 0 nor 1"))
        );
        assert_eq!(
            Answer::decode(&[1, ANSWER_PROMOTED, 0xff, 0xff]),
            Err(DecodeError::Body("more members than allowed"))
        );
        assert_eq!(
            Answer::decode(&[1, ANSWER_PROMOTED, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::Body("ends inside a list"))
        );
        let mut refused = vec![1, ANSWER_REFUSED, REFUSED_REJECTED];
        refused.extend_from_slice(&[0; 24]);
        refused.extend_from_slice(&[0, 1, 0xff]);
        assert_eq!(
            Answer::decode(&refused),
            Err(DecodeError::Body("text is not UTF-8"))
        );
        let mut unknown_reason = vec![1, ANSWER_REFUSED, 99];
        unknown_reason.extend_from_slice(&[0; 26]);
        assert_eq!(
            Answer::decode(&unknown_reason),
            Err(DecodeError::Body("unknown refusal reason"))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders() {
        // A small xorshift stream: the same bytes on every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..4000 {
            let len = round % 61;
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if let Some(first) = bytes.first_mut() {
                *first = QUESTIONS_VERSION;
            }
            let _ = Question::decode(&bytes);
            let _ = Answer::decode(&bytes);
        }
    }
}
