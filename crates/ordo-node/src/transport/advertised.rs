//! What a node tells its peers about itself in every handshake: a few named values, such as
//! the URL a face of it listens on.
//!
//! The transport never interprets them; it carries the dialer's to the acceptor, which keeps
//! the last ones each peer presented. Names are short and plain so a newer node can add one
//! (a Kafka listener next to the etcd API, say) without another protocol version: a node
//! keeps names it does not know like any other.

use bytes::{Buf, BufMut};

use super::error::ProtocolError;

/// Most values one node advertises.
pub const ADVERTISED_ENTRIES_MAX: usize = 8;

/// Longest name, in bytes.
pub const ADVERTISED_NAME_BYTES_MAX: usize = 32;

/// Longest value, in bytes.
pub const ADVERTISED_VALUE_BYTES_MAX: usize = 256;

/// Bytes of one entry's name and value length fields.
const ENTRY_HEADER_BYTES: usize = 1 + 2;

/// Largest encoded block: every entry at its largest.
pub(crate) const ADVERTISED_BYTES_MAX: usize = ADVERTISED_ENTRIES_MAX
    * (ENTRY_HEADER_BYTES + ADVERTISED_NAME_BYTES_MAX + ADVERTISED_VALUE_BYTES_MAX);

/// Why a set of advertised values was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertisedError {
    /// More than [`ADVERTISED_ENTRIES_MAX`] values.
    #[error("{count} advertised values; at most {ADVERTISED_ENTRIES_MAX}")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A name is empty, too long, or has a character other than `a-z`, `0-9`, `-`, `_`, `.`.
    #[error(
        "advertised name {name:?}: 1 to {ADVERTISED_NAME_BYTES_MAX} characters of a-z, 0-9, '-', '_', '.'"
    )]
    BadName {
        /// The name.
        name: String,
    },
    /// A value is too long or has a control character.
    #[error(
        "advertised value of {name:?}: at most {ADVERTISED_VALUE_BYTES_MAX} bytes, no control characters"
    )]
    BadValue {
        /// The name it was given for.
        name: String,
    },
    /// Two values under one name.
    #[error("advertised name {name:?} given twice")]
    Duplicate {
        /// The name.
        name: String,
    },
}

fn name_is_plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= ADVERTISED_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

fn value_is_plain(value: &str) -> bool {
    value.len() <= ADVERTISED_VALUE_BYTES_MAX && !value.chars().any(char::is_control)
}

/// Named values a node presents to its peers, at most [`ADVERTISED_ENTRIES_MAX`], ordered
/// by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertised {
    entries: Vec<(String, String)>,
}

impl Advertised {
    /// Checks and orders `entries`.
    pub fn new(
        entries: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Advertised, AdvertisedError> {
        let mut entries: Vec<(String, String)> = entries.into_iter().collect();
        if entries.len() > ADVERTISED_ENTRIES_MAX {
            return Err(AdvertisedError::TooMany {
                count: entries.len(),
            });
        }
        entries.sort();
        for (i, (name, value)) in entries.iter().enumerate() {
            if !name_is_plain(name) {
                return Err(AdvertisedError::BadName { name: name.clone() });
            }
            if !value_is_plain(value) {
                return Err(AdvertisedError::BadValue { name: name.clone() });
            }
            if i > 0 && entries[i - 1].0 == *name {
                return Err(AdvertisedError::Duplicate { name: name.clone() });
            }
        }
        Ok(Advertised { entries })
    }

    /// The value advertised under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every name and value, ordered by name.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Whether nothing is advertised.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the encoded block (without its length field).
    pub(crate) fn encoded_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(n, v)| ENTRY_HEADER_BYTES + n.len() + v.len())
            .sum()
    }

    /// Appends the entries: per entry a name length (u8), the name, a value length (u16),
    /// the value.
    pub(crate) fn encode(&self, dst: &mut impl BufMut) {
        for (name, value) in &self.entries {
            // Both lengths were bounded by `new`, far below the field sizes.
            dst.put_u8(name.len() as u8);
            dst.put_slice(name.as_bytes());
            dst.put_u16(value.len() as u16);
            dst.put_slice(value.as_bytes());
        }
    }

    /// Decodes a whole block, refusing anything [`Advertised::new`] would refuse.
    pub(crate) fn decode(mut block: &[u8]) -> Result<Advertised, ProtocolError> {
        let malformed = ProtocolError::MalformedHandshake;
        if block.len() > ADVERTISED_BYTES_MAX {
            return Err(malformed("advertised values too long"));
        }
        let mut entries = Vec::new();
        while !block.is_empty() {
            if entries.len() == ADVERTISED_ENTRIES_MAX {
                return Err(malformed("too many advertised values"));
            }
            let name = take_text(&mut block, 1)?;
            let value = take_text(&mut block, 2)?;
            entries.push((name, value));
        }
        Advertised::new(entries).map_err(|error| match error {
            AdvertisedError::TooMany { .. } => malformed("too many advertised values"),
            AdvertisedError::BadName { .. } => malformed("an advertised name is not plain"),
            AdvertisedError::BadValue { .. } => malformed("an advertised value is not plain"),
            AdvertisedError::Duplicate { .. } => malformed("an advertised name given twice"),
        })
    }
}

/// Takes a length field of `length_bytes` (1 or 2) and that many bytes of UTF-8 text.
fn take_text(block: &mut &[u8], length_bytes: usize) -> Result<String, ProtocolError> {
    let malformed = ProtocolError::MalformedHandshake;
    if block.len() < length_bytes {
        return Err(malformed("advertised value cut short"));
    }
    let length = if length_bytes == 1 {
        usize::from(block.get_u8())
    } else {
        usize::from(block.get_u16())
    };
    if block.len() < length {
        return Err(malformed("advertised value cut short"));
    }
    let (text, rest) = block.split_at(length);
    *block = rest;
    String::from_utf8(text.to_vec()).map_err(|_| malformed("advertised text is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advertised(entries: &[(&str, &str)]) -> Result<Advertised, AdvertisedError> {
        Advertised::new(entries.iter().map(|(n, v)| (n.to_string(), v.to_string())))
    }

    fn encoded(a: &Advertised) -> Vec<u8> {
        let mut out = Vec::new();
        a.encode(&mut out);
        assert_eq!(out.len(), a.encoded_bytes());
        out
    }

    #[test]
    fn the_bound_on_the_block_is_the_one_the_wire_format_documents() {
        assert_eq!(ADVERTISED_BYTES_MAX, 2_328);
    }

    #[test]
    fn values_round_trip_ordered_by_name_and_unknown_names_are_kept() {
        let a = advertised(&[
            ("kafka-listener", "127.0.0.1:9092"),
            ("etcd-client-url", "http://127.0.0.1:2379"),
        ])
        .unwrap();
        let names: Vec<&str> = a.entries().map(|(n, _)| n).collect();
        assert_eq!(names, ["etcd-client-url", "kafka-listener"]);
        let decoded = Advertised::decode(&encoded(&a)).unwrap();
        assert_eq!(decoded, a);
        assert_eq!(decoded.get("kafka-listener"), Some("127.0.0.1:9092"));
        assert_eq!(Advertised::decode(&[]).unwrap(), Advertised::default());
    }

    #[test]
    fn bad_values_are_refused_naming_what_is_wrong() {
        let nine: Vec<(String, String)> = (0..9).map(|i| (format!("n{i}"), "v".into())).collect();
        assert_eq!(
            Advertised::new(nine),
            Err(AdvertisedError::TooMany { count: 9 })
        );
        for name in ["", "Upper", "sp ace", &"x".repeat(33)] {
            assert!(
                matches!(
                    advertised(&[(name, "v")]),
                    Err(AdvertisedError::BadName { .. })
                ),
                "{name:?}"
            );
        }
        for value in ["a\nb", &"v".repeat(257)] {
            assert!(
                matches!(
                    advertised(&[("n", value)]),
                    Err(AdvertisedError::BadValue { .. })
                ),
                "{value:?}"
            );
        }
        assert_eq!(
            advertised(&[("n", "1"), ("n", "2")]),
            Err(AdvertisedError::Duplicate { name: "n".into() })
        );
    }

    #[test]
    fn the_decoder_refuses_garbage_instead_of_guessing() {
        let good = encoded(&advertised(&[("n", "value")]).unwrap());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                good[..good.len() - 1].to_vec(),
                "advertised value cut short",
            ),
            (good[..2].to_vec(), "advertised value cut short"),
            (vec![1, b'n', 0, 1, 0xff], "advertised text is not UTF-8"),
            (vec![1, b'N', 0, 0], "an advertised name is not plain"),
            (
                vec![1, b'n', 0, 1, b'\n'],
                "an advertised value is not plain",
            ),
            (
                [good.clone(), good.clone()].concat(),
                "an advertised name given twice",
            ),
            (
                vec![0; ADVERTISED_BYTES_MAX + 1],
                "advertised values too long",
            ),
        ];
        for (bytes, why) in cases {
            assert_eq!(
                Advertised::decode(&bytes),
                Err(ProtocolError::MalformedHandshake(why)),
                "{bytes:?}"
            );
        }
        let mut nine = Vec::new();
        for i in 0..9u8 {
            nine.extend_from_slice(&[1, b'a' + i, 0, 0]);
        }
        assert_eq!(
            Advertised::decode(&nine),
            Err(ProtocolError::MalformedHandshake(
                "too many advertised values"
            ))
        );
    }
}
