//! Which host of a ring holds a key: channels_redis's consistent hash.

/// The index of the host for `name` among `hosts` hosts, exactly as
/// channels_redis computes it: `int((crc32(name) & 0xFFF) / (4096 / hosts))`,
/// in floating point. With one host it is always 0.
///
/// ```
/// use estuary_redis::shard_index;
///
/// assert_eq!(shard_index("chat_lobby", 1), 0);
/// assert_eq!(shard_index("chat_lobby", 3), 1);
/// ```
pub fn shard_index(name: &str, hosts: usize) -> usize {
    if hosts <= 1 {
        return 0;
    }
    let h = f64::from(crc32fast::hash(name.as_bytes()) & 0xFFF);
    let index = (h / (4096.0 / hosts as f64)) as usize;
    index.min(hosts - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vectors of the wire specification, section 4.
    #[test]
    fn spec_vectors() {
        let vectors: [(&str, u32, [usize; 4]); 6] = [
            ("chat_lobby", 0xcd99b86c, [1, 1, 2, 2]),
            ("asgi__group__chat_lobby", 0xdcd51131, [0, 0, 0, 0]),
            (
                "specific.e58a6c4c9a47404a84da9cd7379e7920!",
                0x3e8b1613,
                [0, 1, 1, 1],
            ),
            ("worker.tasks", 0x8c811f27, [1, 2, 3, 4]),
            ("a", 0xe8b7be43, [1, 2, 3, 4]),
            ("\u{e9}-utf8", 0x73671566, [0, 1, 1, 1]),
        ];
        for (name, crc, expected) in vectors {
            assert_eq!(crc32fast::hash(name.as_bytes()), crc, "crc32 of {name}");
            for (n, want) in (2..=5).zip(expected) {
                assert_eq!(shard_index(name, n), want, "{name} over {n} hosts");
            }
            assert_eq!(shard_index(name, 1), 0);
        }
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf43926);
    }
}
