//! What the layer reads from Redis is written by other processes, and by
//! anyone else with access to that Redis: each value is checked alone, and
//! a bad one skips only itself.
//!
//! Group members are channel names that a channels_redis or Estuary
//! process wrote with `group_add`, scored with the time of writing. A
//! member that is not UTF-8, not a channel name by Django Channels' own
//! rule, or scored where no clock is (negative, infinite, far ahead) was
//! written by no such process: the layer removes it (that exact member),
//! counts it and logs it (throttled). A member Django accepts but Estuary
//! cannot address (Python's `\w` admits Unicode letters after the `!`) is
//! skipped and counted, and left in place: a Django process may own it.

use estuary_core::ChannelName;

/// What a group member read from Redis is.
#[derive(Debug)]
pub(super) enum Member {
    /// A channel to deliver to.
    Channel(ChannelName),
    /// A name Django Channels accepts but Estuary cannot hold: skipped.
    Foreign(String),
    /// A value no process could have written, and why: removed.
    Impossible(&'static str),
}

/// Classifies one raw group member.
pub(super) fn member(raw: &[u8]) -> Member {
    let Ok(name) = std::str::from_utf8(raw) else {
        return Member::Impossible("not UTF-8");
    };
    match ChannelName::new(name) {
        Ok(channel) => Member::Channel(channel),
        Err(_) if django_accepts(name) => Member::Foreign(name.to_owned()),
        Err(_) => Member::Impossible("not a channel name"),
    }
}

/// Django Channels' channel name rule, `^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$`
/// under 100 characters, with Python's Unicode `\d` and `\w` (taken a
/// little wider here, as numeric and alphanumeric: the rule only decides
/// whether a member may be removed, and doubt keeps it).
pub(super) fn django_accepts(name: &str) -> bool {
    if name.is_empty() || name.chars().count() >= 100 {
        return false;
    }
    let (head, tail) = match name.split_once('!') {
        Some((head, tail)) => (head, Some(tail)),
        None => (name, None),
    };
    let head_ok = !head.is_empty()
        && head
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c.is_numeric() || matches!(c, '-' | '_' | '.'));
    let tail_ok = tail.is_none_or(|t| {
        t.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
    });
    head_ok && tail_ok
}

/// A shortened, escaped form of a raw value for a log line.
pub(super) fn shown(raw: &[u8]) -> String {
    const MAX: usize = 64;
    let cut = &raw[..raw.len().min(MAX)];
    let mut out = cut.escape_ascii().to_string();
    if raw.len() > MAX {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_sorted_by_who_could_have_written_them() {
        assert!(matches!(member(b"specific.abc!def"), Member::Channel(_)));
        assert!(matches!(member(b"worker"), Member::Channel(_)));
        assert!(matches!(member(b"\xc3\x28"), Member::Impossible("not UTF-8")));
        for bad in [
            "",
            "two words",
            "a!b!c",
            "!x",
            "x".repeat(100).as_str(),
            "a\u{0}b",
        ] {
            assert!(matches!(member(bad.as_bytes()), Member::Impossible(_)), "{bad:?}");
        }
        // Python's `\w` after the `!`, and `\d` before it.
        assert!(matches!(
            member("specific.a!h\u{e9}llo".as_bytes()),
            Member::Foreign(_)
        ));
        assert!(matches!(member("w\u{661}".as_bytes()), Member::Foreign(_)));
        assert!(matches!(member("h\u{e9}llo!x".as_bytes()), Member::Impossible(_)));
    }

    #[test]
    fn shown_values_are_short_and_printable() {
        assert_eq!(shown(b"\xc3\x28"), "\\xc3(");
        let long = shown(&[b'a'; 200]);
        assert!(long.len() < 70 && long.ends_with("..."));
    }
}
