//! Topics: their names, with Kafka's rules for them; their record in the metadata group
//! (id, partitions with the group and replicas of each, configs) and its encoding; where a
//! new topic's replicas go; and the topic configs this node accepts.
//!
//! A record is a versioned big-endian encoding: version (1), the topic id (16 bytes), the
//! name (u16 length, bytes), the partition count (u32) and for each the group id (u64), the
//! replica count (u8) and the replicas' node ids (u64 each), then the config count (u16) and
//! for each a name (u16 length) and a value (u32 length). The decoder refuses another
//! version, counts and lengths over their limits, and short or trailing bytes.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ordo_node::NodeId;

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Why a topic name is refused (Kafka's `INVALID_TOPIC_EXCEPTION`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// The empty name.
    #[error("a topic name cannot be empty")]
    Empty,
    /// `.` or `..`.
    #[error("a topic name cannot be \".\" or \"..\"")]
    Dots,
    /// Longer than [`TOPIC_NAME_BYTES_MAX`].
    #[error("topic name of {len} characters; at most {TOPIC_NAME_BYTES_MAX}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A character other than ASCII letters, digits, `.`, `_` and `-`.
    #[error(
        "topic name {name:?} has a character other than ASCII letters, digits, '.', '_' and '-'"
    )]
    BadCharacter {
        /// The name.
        name: String,
    },
}

/// Checks a topic name against Kafka's rules: 1 to 249 characters of ASCII letters,
/// digits, `.`, `_` and `-`, and not `.` or `..`.
pub fn check_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Dots);
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(TopicNameError::TooLong { len: name.len() });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(TopicNameError::BadCharacter {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Most partitions a topic may have.
pub const PARTITIONS_MAX: usize = 10_000;
/// Most replicas a partition may have.
pub const REPLICAS_MAX: usize = 7;
/// Most configs a topic may set.
pub const CONFIGS_MAX: usize = 64;
/// Longest config value.
pub const CONFIG_VALUE_BYTES_MAX: usize = 4096;

const RECORD_VERSION: u8 = 1;

/// One partition of a topic: the Raft group holding its log, and the nodes holding a
/// replica (the group's voters; the first is the preferred leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    /// The partition's group.
    pub group: u64,
    /// The replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
}

/// A topic as the metadata group records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    /// The topic id (Kafka's topic UUID).
    pub id: [u8; 16],
    /// The name.
    pub name: String,
    /// The partitions, by index.
    pub partitions: Vec<PartitionRecord>,
    /// The configs set on the topic (the defaults are not recorded).
    pub configs: BTreeMap<String, String>,
}

/// Why a topic record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed topic record: {0}")]
pub struct RecordError(String);

impl TopicRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u8(RECORD_VERSION);
        buf.put_slice(&self.id);
        put_short(&mut buf, self.name.as_bytes());
        buf.put_u32(self.partitions.len() as u32);
        for p in &self.partitions {
            buf.put_u64(p.group);
            buf.put_u8(p.replicas.len() as u8);
            for &r in &p.replicas {
                buf.put_u64(r);
            }
        }
        buf.put_u16(self.configs.len() as u16);
        for (name, value) in &self.configs {
            put_short(&mut buf, name.as_bytes());
            buf.put_u32(value.len() as u32);
            buf.put_slice(value.as_bytes());
        }
        buf.freeze()
    }

    /// Decodes what [`TopicRecord::encode`] wrote.
    pub fn decode(mut data: &[u8]) -> Result<TopicRecord, RecordError> {
        let bad = |what: &str| RecordError(what.to_string());
        let version = take(&mut data, 1).ok_or_else(|| bad("empty"))?[0];
        if version != RECORD_VERSION {
            return Err(bad(&format!("unsupported version {version}")));
        }
        let id: [u8; 16] = take(&mut data, 16)
            .ok_or_else(|| bad("id cut short"))?
            .try_into()
            .map_err(|_| bad("id"))?;
        let name = short_string(&mut data, TOPIC_NAME_BYTES_MAX).ok_or_else(|| bad("name"))?;
        let count = u32_of(&mut data).ok_or_else(|| bad("partition count"))? as usize;
        if count == 0 || count > PARTITIONS_MAX {
            return Err(bad(&format!("{count} partitions")));
        }
        let mut partitions = Vec::new();
        for _ in 0..count {
            let group = u64_of(&mut data).ok_or_else(|| bad("group id"))?;
            let replicas = take(&mut data, 1).ok_or_else(|| bad("replica count"))?[0] as usize;
            if replicas == 0 || replicas > REPLICAS_MAX {
                return Err(bad(&format!("{replicas} replicas")));
            }
            let replicas = (0..replicas)
                .map(|_| u64_of(&mut data))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("replicas cut short"))?;
            partitions.push(PartitionRecord { group, replicas });
        }
        let configs_count = u16_of(&mut data).ok_or_else(|| bad("config count"))? as usize;
        if configs_count > CONFIGS_MAX {
            return Err(bad(&format!("{configs_count} configs")));
        }
        let mut configs = BTreeMap::new();
        for _ in 0..configs_count {
            let name = short_string(&mut data, 255).ok_or_else(|| bad("config name"))?;
            let len = u32_of(&mut data).ok_or_else(|| bad("config value length"))? as usize;
            if len > CONFIG_VALUE_BYTES_MAX {
                return Err(bad("config value too long"));
            }
            let value = take(&mut data, len)
                .and_then(|v| String::from_utf8(v.to_vec()).ok())
                .ok_or_else(|| bad("config value"))?;
            if configs.insert(name, value).is_some() {
                return Err(bad("a config given twice"));
            }
        }
        if !data.is_empty() {
            return Err(bad(&format!("{} trailing bytes", data.len())));
        }
        Ok(TopicRecord {
            id,
            name,
            partitions,
            configs,
        })
    }
}

fn put_short(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Some(head)
}

fn u16_of(data: &mut &[u8]) -> Option<u16> {
    take(data, 2).map(|mut b| b.get_u16())
}

fn u32_of(data: &mut &[u8]) -> Option<u32> {
    take(data, 4).map(|mut b| b.get_u32())
}

fn u64_of(data: &mut &[u8]) -> Option<u64> {
    take(data, 8).map(|mut b| b.get_u64())
}

fn short_string(data: &mut &[u8], max: usize) -> Option<String> {
    let len = u16_of(data)? as usize;
    if len > max {
        return None;
    }
    String::from_utf8(take(data, len)?.to_vec()).ok()
}

/// The replicas of `partitions` partitions with `replication_factor` replicas each over
/// `brokers` (sorted, distinct): partition `p`'s replicas are the brokers from position
/// `start + p` on, so the preferred leaders (first replicas) and the replicas spread evenly.
pub fn assign_replicas(
    brokers: &[NodeId],
    partitions: usize,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<NodeId>> {
    assert!(
        (1..=brokers.len()).contains(&replication_factor),
        "{replication_factor} replicas over {} brokers",
        brokers.len()
    );
    (0..partitions)
        .map(|p| {
            (0..replication_factor)
                .map(|r| brokers[(start + p + r) % brokers.len()])
                .collect()
        })
        .collect()
}

/// Why a topic config is refused (Kafka's `INVALID_CONFIG`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A name this node does not know.
    #[error("unknown topic config {name:?}")]
    Unknown {
        /// The name.
        name: String,
    },
    /// A value that is not valid for its config.
    #[error("invalid value {value:?} for {name}: {why}")]
    Invalid {
        /// The config.
        name: String,
        /// The value.
        value: String,
        /// What would be valid.
        why: String,
    },
}

/// Checks a config's value for a topic of the given replication factor, saying what would
/// be valid.
type ConfigCheck = fn(&str, usize) -> Result<(), String>;

/// What a topic config is when a topic does not set it, and its type as DescribeConfigs
/// reports it (Kafka's `ConfigType`: 1 boolean, 3 int, 5 long, 7 list).
pub const CONFIG_DEFAULTS: &[(&str, &str, i8)] = &[
    ("cleanup.policy", "delete", 7),
    ("max.message.bytes", "1048588", 3),
    ("min.insync.replicas", "1", 3),
    ("retention.bytes", "-1", 5),
    ("retention.ms", "604800000", 5),
    ("unclean.leader.election.enable", "false", 1),
];

/// The topic configs this node accepts, each with its check.
const CONFIGS: &[(&str, ConfigCheck)] = &[
    ("cleanup.policy", |v, _| match v {
        "delete" => Ok(()),
        "compact" | "compact,delete" | "delete,compact" => {
            Err("compacted topics are not served; only \"delete\" is".into())
        }
        _ => Err("must be \"delete\"".into()),
    }),
    ("retention.ms", |v, _| at_least(v, -1)),
    ("retention.bytes", |v, _| at_least(v, -1)),
    ("max.message.bytes", |v, _| at_least(v, 0)),
    ("min.insync.replicas", |v, replication_factor| {
        let n: i64 = v.parse().map_err(|_| "must be an integer".to_string())?;
        if n < 1 || n as usize > replication_factor {
            return Err(format!(
                "must be from 1 to the replication factor ({replication_factor})"
            ));
        }
        Ok(())
    }),
    ("unclean.leader.election.enable", |v, _| match v {
        "false" => Ok(()),
        "true" => Err(
            "unclean leader election is never done: a partition's leader is elected by a \
             majority of its replicas and always holds every committed record, so it has \
             nothing to trade for availability; a partition that lost its majority serves \
             again, with every acknowledged record, once a majority of its replicas is back"
                .into(),
        ),
        _ => Err("must be false".into()),
    }),
];

fn at_least(value: &str, min: i64) -> Result<(), String> {
    match value.parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        _ => Err(format!("must be an integer of at least {min}")),
    }
}

/// Checks a topic's configs for a topic of `replication_factor` replicas.
pub fn check_configs(
    configs: &BTreeMap<String, String>,
    replication_factor: usize,
) -> Result<(), ConfigError> {
    for (name, value) in configs {
        let Some((_, check)) = CONFIGS.iter().find(|(known, _)| known == name) else {
            return Err(ConfigError::Unknown { name: name.clone() });
        };
        check(value, replication_factor).map_err(|why| ConfigError::Invalid {
            name: name.clone(),
            value: value.clone(),
            why,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> TopicRecord {
        TopicRecord {
            id: [7; 16],
            name: "orders".into(),
            partitions: vec![
                PartitionRecord {
                    group: 1 << 40,
                    replicas: vec![1, 2, 3],
                },
                PartitionRecord {
                    group: (1 << 40) + 1,
                    replicas: vec![2, 3, 1],
                },
            ],
            configs: BTreeMap::from([("retention.ms".into(), "3600000".into())]),
        }
    }

    #[test]
    fn a_record_decodes_to_itself_and_damaged_bytes_are_refused() {
        let r = record();
        let bytes = r.encode();
        assert_eq!(TopicRecord::decode(&bytes), Ok(r));
        for n in 0..bytes.len() {
            assert!(TopicRecord::decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        assert!(TopicRecord::decode(&[&bytes[..], b"x"].concat()).is_err());
        assert!(TopicRecord::decode(&[&[2u8][..], &bytes[1..]].concat()).is_err());
    }

    #[test]
    fn replicas_and_preferred_leaders_spread_over_the_brokers() {
        let a = assign_replicas(&[1, 2, 3], 6, 3, 1);
        assert_eq!(a[0], vec![2, 3, 1]);
        assert_eq!(a[1], vec![3, 1, 2]);
        let leaders: Vec<u64> = a.iter().map(|r| r[0]).collect();
        assert_eq!(leaders, vec![2, 3, 1, 2, 3, 1]);
        let single = assign_replicas(&[1, 2, 3, 4, 5], 5, 1, 0);
        assert_eq!(single, vec![vec![1], vec![2], vec![3], vec![4], vec![5]]);
        for replicas in assign_replicas(&[1, 2, 3, 4, 5], 10, 3, 2) {
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
        }
    }

    #[test]
    fn every_accepted_config_has_a_default_that_passes_its_own_check() {
        let names: Vec<&str> = CONFIGS.iter().map(|(n, _)| *n).collect();
        let defaults: Vec<&str> = CONFIG_DEFAULTS.iter().map(|(n, _, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, defaults);
        for (name, value, _) in CONFIG_DEFAULTS {
            let one = BTreeMap::from([(name.to_string(), value.to_string())]);
            assert_eq!(check_configs(&one, 1), Ok(()), "{name}");
        }
    }

    #[test]
    fn configs_are_checked_and_unclean_election_is_refused_saying_why() {
        let configs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            check_configs(
                &configs(&[("retention.ms", "-1"), ("min.insync.replicas", "2")]),
                3
            ),
            Ok(())
        );
        assert!(matches!(
            check_configs(&configs(&[("min.insync.replicas", "4")]), 3),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            check_configs(&configs(&[("segment.jitter.ms", "1")]), 3),
            Err(ConfigError::Unknown { .. })
        ));
        let unclean = check_configs(&configs(&[("unclean.leader.election.enable", "true")]), 3)
            .unwrap_err()
            .to_string();
        assert!(unclean.contains("majority"), "{unclean}");
        assert_eq!(
            check_configs(&configs(&[("unclean.leader.election.enable", "false")]), 3),
            Ok(())
        );
    }

    #[test]
    fn names_follow_kafkas_rules() {
        assert_eq!(check_topic_name("orders"), Ok(()));
        assert_eq!(check_topic_name("a.b_c-D9"), Ok(()));
        assert_eq!(check_topic_name(&"x".repeat(249)), Ok(()));
        assert_eq!(check_topic_name(""), Err(TopicNameError::Empty));
        assert_eq!(check_topic_name(".."), Err(TopicNameError::Dots));
        assert_eq!(
            check_topic_name(&"x".repeat(250)),
            Err(TopicNameError::TooLong { len: 250 })
        );
        assert!(matches!(
            check_topic_name("a/b"),
            Err(TopicNameError::BadCharacter { .. })
        ));
        assert!(matches!(
            check_topic_name("é"),
            Err(TopicNameError::BadCharacter { .. })
        ));
    }
}
