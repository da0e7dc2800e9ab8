//! Key-range helpers shared by every etcd v3 client in Ordo.

/// The smallest key greater than every key that starts with `prefix`: etcd's "prefix end",
/// the `range_end` that makes a range cover the prefix. When no such key exists (the prefix is
/// empty or every byte is `0xff`) it is `"\0"`, which etcd reads as "to the end of the key space".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a/b"), b"a/c");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }

    #[test]
    fn prefix_end_of_all_ff_or_empty_is_the_end_of_the_key_space() {
        assert_eq!(prefix_end(b"\xff"), b"\0");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
