//! The handshake's headers as a scope keeps them: one compact buffer, with
//! the `HeaderMap` built only for a caller that asks for one.
//!
//! Every open connection keeps its scope, and almost none reads its headers
//! after the handshake: a `HeaderMap` (about 100 bytes inline, an index
//! table, 100-byte buckets and a buffer for the values) took some 360 bytes
//! per connection for the one or two headers a handshake keeps. The buffer
//! here takes the headers' own length plus six bytes each.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers in order, each as `[name length: u16][value length: u32][name][value]`
/// (lengths little-endian; names lowercase, as `HeaderName` keeps them).
#[derive(Clone, Default)]
pub(super) struct Headers {
    raw: Box<[u8]>,
    /// Built on the first [`Headers::map`]; boxed, so that an unused one
    /// takes a pointer.
    map: OnceLock<Box<HeaderMap>>,
}

const NAME_LEN: usize = 2;
const VALUE_LEN: usize = 4;

impl Headers {
    /// Keeps `headers` in order. A value longer than 4 GiB (which no server
    /// accepts) is left out.
    pub(super) fn from_pairs<'a>(
        headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    ) -> Self {
        let mut raw = Vec::new();
        for (name, value) in headers {
            let name = name.as_str().as_bytes();
            // A `HeaderName` is at most 65,535 bytes long.
            let (Ok(name_len), Ok(value_len)) = (u16::try_from(name.len()), u32::try_from(value.len()))
            else {
                continue;
            };
            raw.reserve_exact(NAME_LEN + VALUE_LEN + name.len() + value.len());
            raw.extend_from_slice(&name_len.to_le_bytes());
            raw.extend_from_slice(&value_len.to_le_bytes());
            raw.extend_from_slice(name);
            raw.extend_from_slice(value.as_bytes());
        }
        Self {
            raw: raw.into_boxed_slice(),
            map: OnceLock::new(),
        }
    }

    /// Every header, in order: its lowercase name and its value's bytes.
    pub(super) fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.raw }
    }

    /// The first value of header `name` (any case).
    pub(super) fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// The headers as a `HeaderMap`, built on the first call.
    pub(super) fn map(&self) -> &HeaderMap {
        self.map.get_or_init(|| {
            let mut map = HeaderMap::with_capacity(self.iter().count());
            for (name, value) in self.iter() {
                // Both were valid when kept.
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(value),
                ) {
                    map.append(name, value);
                }
            }
            Box::new(map)
        })
    }
}

/// The text of a header value, when it is visible ASCII (as
/// `HeaderValue::to_str` says).
pub(super) fn visible_ascii(value: &[u8]) -> Option<&str> {
    if value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// The headers of a scope, in order: lowercase names and values' bytes.
#[derive(Debug, Clone)]
pub(super) struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (lengths, rest) = self.rest.split_at_checked(NAME_LEN + VALUE_LEN)?;
        let (name_len, value_len) = lengths.split_at(NAME_LEN);
        let name_len = usize::from(u16::from_le_bytes(name_len.try_into().ok()?));
        let value_len = usize::try_from(u32::from_le_bytes(value_len.try_into().ok()?)).ok()?;
        let (name, rest) = rest.split_at_checked(name_len)?;
        let (value, rest) = rest.split_at_checked(value_len)?;
        self.rest = rest;
        // Written from a `HeaderName`: ASCII.
        Some((std::str::from_utf8(name).ok()?, value))
    }
}

impl std::iter::FusedIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_their_order_and_every_value() {
        let mut map = HeaderMap::new();
        map.insert("host", HeaderValue::from_static("example.com"));
        map.append("cookie", HeaderValue::from_static("a=1"));
        map.append("cookie", HeaderValue::from_static("b=2"));
        map.insert("x-bin", HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        let headers = Headers::from_pairs(&map);
        let pairs: Vec<_> = headers.iter().collect();
        assert_eq!(
            pairs,
            [
                ("host", &b"example.com"[..]),
                ("cookie", b"a=1"),
                ("cookie", b"b=2"),
                ("x-bin", "café".as_bytes())
            ]
        );
        assert_eq!(headers.get("HOST"), Some(&b"example.com"[..]));
        assert_eq!(headers.get("cookie"), Some(&b"a=1"[..]));
        assert_eq!(headers.get("nope"), None);
        assert_eq!(visible_ascii(headers.get("x-bin").unwrap()), None);
        assert_eq!(headers.map(), &map);
        assert_eq!(
            headers.raw.len(),
            pairs.iter().map(|(n, v)| 6 + n.len() + v.len()).sum::<usize>()
        );
        let empty = Headers::default();
        assert_eq!(empty.iter().count(), 0);
        assert!(empty.map().is_empty());
    }
}
