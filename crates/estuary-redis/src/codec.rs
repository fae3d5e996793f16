//! The stored form of a message, byte for byte as channels_redis writes it:
//! 12 random bytes, then msgpack of the message map with `__asgi_channel__`
//! added (optionally Fernet-encrypted).

use bytes::Bytes;
use estuary_core::{ChannelName, Message, RESERVED_KEY};
use rand::RngCore;

use crate::crypto::Crypto;

/// The key under which a group message in this process's own queue names
/// its group instead of its members (only this process reads that queue,
/// and delivers to its own members of the group by its own record).
pub(crate) const GROUP_KEY: &str = "__estuary_group__";

/// Length of the random prefix that keeps sorted-set members unique.
pub(crate) const RANDOM_PREFIX_LEN: usize = 12;

/// Where a stored message goes inside a process's shared queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// `send()` to a plain channel: no `__asgi_channel__`.
    None,
    /// `send()` to a process-specific channel: a string.
    One(&'a ChannelName),
    /// `group_send()`: an array, even of one.
    Many(&'a [&'a ChannelName]),
}

/// A stored member could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("member shorter than its random prefix")]
    Short,
    #[error(transparent)]
    Decrypt(#[from] crate::crypto::DecryptError),
    #[error("malformed msgpack: {0}")]
    Malformed(&'static str),
    #[error("invalid message: {0}")]
    Message(#[from] estuary_core::MessageError),
    #[error("invalid channel name in __asgi_channel__: {0}")]
    Name(#[from] estuary_core::NameError),
}

/// Encodes `message` for storage, adding `__asgi_channel__` for `target`.
/// The message's own bytes are copied once, never re-serialised.
pub(crate) fn encode_member(message: &Message, target: Target<'_>, crypto: Option<&Crypto>) -> Vec<u8> {
    let src = message.as_bytes();
    let mut body = Vec::with_capacity(src.len() + 32 + RANDOM_PREFIX_LEN);
    match target {
        Target::None => body.extend_from_slice(src),
        Target::One(_) | Target::Many(_) => {
            let mut rest: &[u8] = src;
            // A Message is always a well-formed map (checked when it was made).
            let len = rmp::decode::read_map_len(&mut rest).unwrap_or(0);
            let _ = rmp::encode::write_map_len(&mut body, len + 1);
            body.extend_from_slice(rest);
            let _ = rmp::encode::write_str(&mut body, RESERVED_KEY);
            match target {
                Target::One(name) => {
                    let _ = rmp::encode::write_str(&mut body, name.as_str());
                }
                Target::Many(names) => {
                    let _ = rmp::encode::write_array_len(&mut body, names.len() as u32);
                    for name in names {
                        let _ = rmp::encode::write_str(&mut body, name.as_str());
                    }
                }
                Target::None => {}
            }
        }
    }
    let mut member = vec![0u8; RANDOM_PREFIX_LEN];
    rand::rng().fill_bytes(&mut member);
    match crypto {
        Some(c) => member.extend_from_slice(&c.encrypt(&body)),
        None => member.extend_from_slice(&body),
    }
    member
}

/// A stored message, decoded: the message without `__asgi_channel__`, and
/// the channels it names (none when it names none), as they were stored:
/// the receiver looks them up among its own channels, so a name that is
/// not one of them (closed, or one Estuary cannot address) costs a lookup,
/// not a validation per target.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) message: Message,
    /// The stored body the target names point into.
    body: Vec<u8>,
    /// Byte ranges of the target names in `body` (valid UTF-8).
    targets: Vec<(usize, usize)>,
    /// The byte range of the group named under [`GROUP_KEY`] (valid UTF-8).
    group: Option<(usize, usize)>,
}

impl Decoded {
    /// The channel names the message is for, as stored.
    pub(crate) fn targets(&self) -> impl Iterator<Item = &str> {
        self.targets
            .iter()
            .map(|&(from, to)| std::str::from_utf8(&self.body[from..to]).unwrap_or_default())
    }

    /// The group the message is for, when it names one (this process's
    /// own group messages) rather than channels.
    pub(crate) fn group(&self) -> Option<&str> {
        self.group
            .and_then(|(from, to)| std::str::from_utf8(&self.body[from..to]).ok())
    }

    /// Whether the message names no channel and no group.
    pub(crate) fn has_no_target(&self) -> bool {
        self.targets.is_empty() && self.group.is_none()
    }
}

/// Decodes a stored member; accepts `__asgi_channel__` as a string or an array.
pub(crate) fn decode_member(member: &[u8], crypto: Option<&Crypto>) -> Result<Decoded, DecodeError> {
    let body = member.get(RANDOM_PREFIX_LEN..).ok_or(DecodeError::Short)?;
    let body: Vec<u8> = match crypto {
        Some(c) => c.decrypt(body)?,
        None => body.to_vec(),
    };
    split_channel(body)
}

/// Reads a string's byte range; `rd` is what is left of `body`.
fn read_str(body: &[u8], rd: &mut &[u8]) -> Result<(usize, usize), DecodeError> {
    let len =
        rmp::decode::read_str_len(rd).map_err(|_| DecodeError::Malformed("expected a string"))? as usize;
    if rd.len() < len {
        return Err(DecodeError::Malformed("truncated string"));
    }
    let from = body.len() - rd.len();
    *rd = &rd[len..];
    Ok((from, from + len))
}

/// Cuts the `__asgi_channel__` entry out of the top-level map.
fn split_channel(body: Vec<u8>) -> Result<Decoded, DecodeError> {
    let mut rd: &[u8] = &body;
    let len = rmp::decode::read_map_len(&mut rd).map_err(|_| DecodeError::Malformed("not a map"))?;
    let entries_start = body.len() - rd.len();
    let mut cut: Option<(usize, usize)> = None;
    let mut targets = Vec::new();
    let mut group = None;
    for _ in 0..len {
        let entry_start = body.len() - rd.len();
        let (from, to) = read_str(&body, &mut rd)?;
        if cut.is_none() && &body[from..to] == GROUP_KEY.as_bytes() {
            let named = read_str(&body, &mut rd)?;
            if std::str::from_utf8(&body[named.0..named.1]).is_err() {
                return Err(DecodeError::Malformed("group name is not UTF-8"));
            }
            group = Some(named);
            cut = Some((entry_start, body.len() - rd.len()));
        } else if cut.is_none() && &body[from..to] == RESERVED_KEY.as_bytes() {
            let mut peek = rd;
            match rmp::decode::read_array_len(&mut peek) {
                Ok(n) => {
                    rd = peek;
                    for _ in 0..n {
                        targets.push(read_str(&body, &mut rd)?);
                    }
                }
                Err(_) => targets.push(read_str(&body, &mut rd)?),
            }
            cut = Some((entry_start, body.len() - rd.len()));
        } else {
            skip(&mut rd)?;
        }
    }
    if !rd.is_empty() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    // A name that is not UTF-8 is no channel of anyone's: skipped alone; the
    // other targets still get the message.
    targets.retain(|&(from, to)| {
        let ok = std::str::from_utf8(&body[from..to]).is_ok();
        if !ok {
            invalid_target(&DecodeError::Malformed("channel name is not UTF-8"));
        }
        ok
    });
    let bytes = match cut {
        None => Bytes::copy_from_slice(&body),
        Some((from, to)) => {
            let mut out = Vec::with_capacity(body.len());
            let _ = rmp::encode::write_map_len(&mut out, len - 1);
            out.extend_from_slice(&body[entries_start..from]);
            out.extend_from_slice(&body[to..]);
            Bytes::from(out)
        }
    };
    Ok(Decoded {
        message: Message::from_msgpack(bytes)?,
        body,
        targets,
        group,
    })
}

/// A target name that is not one of this process's channels: when it is
/// not a name Estuary can address at all, says so (throttled).
pub(crate) fn check_target(name: &str) {
    if let Err(error) = ChannelName::new(name) {
        invalid_target(&DecodeError::Name(error));
    }
}

/// Logs a target name skipped, at most once a second: one stored message
/// names every member of a group, and a producer can send many.
fn invalid_target(error: &DecodeError) {
    estuary_core::throttled!(
        warn,
        %error,
        "skipping a target channel name Estuary cannot address (a Django name with non-ASCII \
         letters?); give channels ASCII names to reach them"
    );
}

fn skip(rd: &mut &[u8]) -> Result<(), DecodeError> {
    rmpv::decode::read_value_ref(rd)
        .map(|_| ())
        .map_err(|_| DecodeError::Malformed("bad value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const SPECIFIC: &str = "specific.e58a6c4c9a47404a84da9cd7379e7920!cc3b11a8c7af4524939d493707293338";

    /// The annotated member of the wire specification, section 3.4.
    #[test]
    fn group_send_member_matches_the_spec_bytes() {
        let msg = Message::from_msgpack(Bytes::from(hex(
            "82 a4 74797065 ac 636861742e6d657373616765 a7 6d657373616765 a2 6869",
        )))
        .unwrap();
        let ch = ChannelName::new(SPECIFIC).unwrap();
        let member = encode_member(&msg, Target::Many(&[&ch]), None);
        let mut expected = hex(
            "83 a4 74797065 ac 636861742e6d657373616765 a7 6d657373616765 a2 6869
             b0 5f5f617367695f6368616e6e656c5f5f 91 d9 4a",
        );
        expected.extend_from_slice(SPECIFIC.as_bytes());
        assert_eq!(&member[RANDOM_PREFIX_LEN..], &expected[..]);

        let direct = encode_member(&msg, Target::One(&ch), None);
        let mut expected = hex(
            "83 a4 74797065 ac 636861742e6d657373616765 a7 6d657373616765 a2 6869
             b0 5f5f617367695f6368616e6e656c5f5f d9 4a",
        );
        expected.extend_from_slice(SPECIFIC.as_bytes());
        assert_eq!(&direct[RANDOM_PREFIX_LEN..], &expected[..]);
        assert_ne!(
            &member[..RANDOM_PREFIX_LEN],
            &direct[..RANDOM_PREFIX_LEN],
            "random prefixes differ"
        );
    }

    #[test]
    fn decoding_removes_the_channel_key_and_keeps_types() {
        // The mixed-type message of section 3.4, as sent to a plain channel.
        let body = hex(
            "87 a4 74797065 a8 7461736b2e72756e a1 6e 01 a1 62 c4 02 0001 a1 66 cb 3ff8000000000000 a1 6c 92 01 a1 61 a4 6e6f6e65 c0 a1 74 c3",
        );
        let mut member = b"RUSTRUSTRUST".to_vec();
        member.extend_from_slice(&body);
        let d = decode_member(&member, None).unwrap();
        assert!(d.has_no_target());
        assert_eq!(
            &d.message.as_bytes()[..],
            &body[..],
            "untouched when there is no channel key"
        );

        let ch = ChannelName::new(SPECIFIC).unwrap();
        let other = ChannelName::new("specific.x!y").unwrap();
        let member = encode_member(&d.message, Target::Many(&[&ch, &other]), None);
        let back = decode_member(&member, None).unwrap();
        assert_eq!(back.targets().collect::<Vec<_>>(), [ch.as_str(), other.as_str()]);
        assert_eq!(
            back.message.as_bytes(),
            d.message.as_bytes(),
            "bin stays bin, float stays float64"
        );

        let member = encode_member(&d.message, Target::One(&ch), None);
        assert_eq!(
            decode_member(&member, None)
                .unwrap()
                .targets()
                .collect::<Vec<_>>(),
            [ch.as_str()]
        );
    }

    #[test]
    fn encrypted_round_trip() {
        let crypto = Crypto::new(&["secret"], Some(70)).unwrap();
        let msg = Message::from_json(&serde_json::json!({"type": "a.b", "x": 1})).unwrap();
        let ch = ChannelName::new("specific.p!q").unwrap();
        let member = encode_member(&msg, Target::One(&ch), Some(&crypto));
        assert!(member[RANDOM_PREFIX_LEN..].starts_with(b"gAAAAA"));
        let d = decode_member(&member, Some(&crypto)).unwrap();
        assert_eq!(d.message, msg);
        assert!(decode_member(&member, None).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"short",
            b"123456789012\xc1",
            b"123456789012\x81\xa4type",
            b"123456789012\x91\x01",
        ] {
            assert!(decode_member(bad, None).is_err(), "{bad:?}");
        }
        let mut member = b"123456789012".to_vec();
        member.extend_from_slice(&hex(
            "82 a4 74797065 a1 78 b0 5f5f617367695f6368616e6e656c5f5f a3 6e6f21",
        ));
        let d = decode_member(&member, None).unwrap();
        assert_eq!(d.targets().next(), Some("no!"));
    }

    #[test]
    fn one_bad_target_name_does_not_drop_the_others() {
        // {"type": "x", "__asgi_channel__": ["a!b", "bad name!", "c!d"]}
        let msg = Message::from_json(&serde_json::json!({"type": "x"})).unwrap();
        let good = ChannelName::new("a!b").unwrap();
        let mut body = encode_member(&msg, Target::Many(&[&good]), None);
        // Rewrite the one-element array into three, the middle one invalid.
        body.truncate(body.len() - 5); // drop "91 a3 a!b"

        body.extend_from_slice(&hex("93 a3 612162 a9 626164206e616d6521 a3 632164"));
        let d = decode_member(&body, None).unwrap();
        // The invalid one is skipped where it is looked up (no channel has
        // that name); the others are there.
        assert_eq!(d.targets().collect::<Vec<_>>(), ["a!b", "bad name!", "c!d"]);
    }
}
