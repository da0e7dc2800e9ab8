//! Topic names, with Kafka's rules for them.

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

#[cfg(test)]
mod tests {
    use super::*;

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
