//! Mutations: what turns one corpus input into the next one to try.
//!
//! Byte-level havoc in the manner of AFL and libFuzzer (bit flips, random and
//! "interesting" bytes, inserts, deletes, duplicated runs, numbers written as
//! text and as binary), plus per-target dictionary tokens and splices between
//! corpus entries. Each new input stacks one to eight of them.

use crate::rng::Rng;

/// Bytes that sit on boundaries: signs, limits, msgpack markers, separators.
const INTERESTING_BYTES: &[u8] = &[
    0x00, 0x01, 0x7f, 0x80, 0xff, 0xc0, 0xc1, 0xc4, 0xd9, 0xda, 0xdb, 0xdc, 0xde, 0xdf, 0x90, 0x9f, 0xa0,
    0xbf, b'\r', b'\n', b' ', b'%', b'&', b'=', b';', b':', b'/', b'"', b'\\', b'<', b'>', b'{', b'}', b'!',
];

/// Numbers as text: the edges of integer types, and strings that parse oddly.
const INTERESTING_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "127",
    "128",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1e309",
    "NaN",
    "inf",
    "-inf",
    "0x10",
    "+5",
    "00",
    "1.5",
    "99999999999999999999999999999999",
];

/// Binary integers, written big-endian (msgpack's byte order) by width.
const INTERESTING_INTS: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
    i64::MAX as u64,
];

/// The mutation engine for one target.
#[derive(Debug)]
pub struct Mutator<'a> {
    /// Tokens of the target's input language (keywords, markers, separators).
    pub dictionary: &'a [&'a [u8]],
    /// Longest input to produce.
    pub max_len: usize,
}

impl Mutator<'_> {
    /// Derives a new input from `base`, splicing from `others` at times.
    pub fn mutate(&self, rng: &mut Rng, base: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
        let mut data = base.to_vec();
        let rounds = 1 + rng.below(8);
        for _ in 0..rounds {
            self.once(rng, &mut data, others);
        }
        data.truncate(self.max_len);
        data
    }

    fn once(&self, rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
        let len = data.len();
        match rng.below(15) {
            // Flip one bit.
            0 if len > 0 => {
                let at = rng.below(len);
                data[at] ^= 1 << rng.below(8);
            }
            // A random byte.
            1 if len > 0 => {
                let at = rng.below(len);
                data[at] = rng.next_u64() as u8;
            }
            // An interesting byte, replacing or inserted.
            2 => {
                let b = *rng.pick(INTERESTING_BYTES);
                if len > 0 && rng.one_in(2) {
                    let at = rng.below(len);
                    data[at] = b;
                } else {
                    data.insert(rng.below(len + 1), b);
                }
            }
            // Insert a few random bytes.
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    data.insert(at, rng.next_u64() as u8);
                }
            }
            // Delete a run.
            4 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(16));
                data.drain(at..at + n);
            }
            // Duplicate a run, sometimes many times (length and nesting edges).
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(32));
                let run = data[at..at + n].to_vec();
                let times = if rng.one_in(8) { 1 + rng.below(64) } else { 1 };
                let to = rng.below(len + 1);
                for _ in 0..times {
                    data.splice(to..to, run.iter().copied());
                }
            }
            // A dictionary token, inserted or overwriting.
            6..=8 if !self.dictionary.is_empty() => {
                let token = *rng.pick(self.dictionary);
                let at = rng.below(len + 1);
                if rng.one_in(2) {
                    data.splice(at..at, token.iter().copied());
                } else {
                    let end = (at + token.len()).min(len);
                    data.splice(at..end, token.iter().copied());
                }
            }
            // A number as text, replacing a run of digits or inserted.
            9 => {
                let number = rng.pick(INTERESTING_NUMBERS).as_bytes();
                match data
                    .iter()
                    .position(|b| b.is_ascii_digit())
                    .filter(|_| rng.one_in(2))
                {
                    Some(start) => {
                        let end = data[start..]
                            .iter()
                            .position(|b| !b.is_ascii_digit())
                            .map_or(len, |n| start + n);
                        data.splice(start..end, number.iter().copied());
                    }
                    None => {
                        let at = rng.below(len + 1);
                        data.splice(at..at, number.iter().copied());
                    }
                }
            }
            // A binary integer (1, 2, 4 or 8 bytes, big-endian) overwriting.
            10 if len > 0 => {
                let value = *rng.pick(INTERESTING_INTS);
                let width = 1 << rng.below(4);
                let bytes = &value.to_be_bytes()[8 - width..];
                let at = rng.below(len);
                let end = (at + width).min(len);
                data.splice(at..end, bytes.iter().copied());
            }
            // Splice: our head, another entry's tail.
            11 | 12 if !others.is_empty() => {
                let other = rng.pick(others);
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            // Insert a chunk of another entry.
            13 if !others.is_empty() => {
                let other = rng.pick(others);
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - from).min(64));
                    let at = rng.below(len + 1);
                    data.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            // Truncate.
            14 if len > 0 => data.truncate(rng.below(len)),
            _ => {
                // The chosen mutation did not apply (empty input): grow instead.
                data.push(rng.next_u64() as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respects_the_length_limit_and_is_deterministic() {
        let m = Mutator {
            dictionary: &[b"token"],
            max_len: 64,
        };
        let others = vec![b"other entry".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut input = b"seed input 123".to_vec();
            let mut seen = Vec::new();
            for _ in 0..2_000 {
                input = m.mutate(&mut rng, &input, &others);
                assert!(input.len() <= 64);
                seen.push(input.clone());
            }
            seen
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
