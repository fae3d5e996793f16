//! Channel and group name validation: `ChannelName::new`, `GroupName::new`,
//! and the chat app's room names, whose groups must be valid.
//!
//! Input: the candidate name, as text.

use estuary_core::{ChannelName, GroupName, MAX_NAME_LEN, NameError};

use crate::{Trail, text};

fn check_valid(name: &str) {
    assert!(!name.is_empty() && name.len() <= MAX_NAME_LEN, "{name:?}");
    assert!(name.is_ascii(), "{name:?}");
}

/// Runs one input.
pub fn run(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let raw = text(data);
    let channel = ChannelName::new(&raw);
    let group = GroupName::new(&raw);
    trail.note((channel.is_ok(), group.is_ok()));
    for error in [channel.as_ref().err(), group.as_ref().err()]
        .into_iter()
        .flatten()
    {
        trail.note(std::mem::discriminant(error));
        if let NameError::InvalidChar { found, at } = error {
            assert_eq!(
                raw[*at..].chars().next(),
                Some(*found),
                "the error points at the character"
            );
        }
        let _ = error.to_string();
    }
    if let Ok(c) = &channel {
        check_valid(c.as_str());
        assert_eq!(c.as_str(), raw);
        assert_eq!(
            ChannelName::new(c.as_str()).as_ref(),
            Ok(c),
            "a valid name re-validates"
        );
        assert_eq!(raw.parse::<ChannelName>().as_ref(), Ok(c));
        let json = serde_json::to_string(c).expect("a name serializes");
        assert_eq!(serde_json::from_str::<ChannelName>(&json).ok().as_ref(), Some(c));
        let prefix = c.non_local_name();
        assert!(c.as_str().starts_with(prefix));
        assert_eq!(prefix.ends_with('!'), c.is_process_specific());
        trail.note(c.is_process_specific());
    }
    if let Ok(g) = &group {
        check_valid(g.as_str());
        assert_eq!(
            GroupName::new(g.as_str()).as_ref(),
            Ok(g),
            "a valid name re-validates"
        );
        assert!(channel.is_ok(), "every group name is a channel name: {raw:?}");
        let json = serde_json::to_string(g).expect("a name serializes");
        assert_eq!(serde_json::from_str::<GroupName>(&json).ok().as_ref(), Some(g));
    }
    // The chat app: a valid room always has a valid group.
    let room_ok = estuary_cli::chat::valid_room(&raw);
    trail.note(room_ok);
    if room_ok {
        let group = estuary_cli::chat::room_group(&raw);
        assert!(group.is_ok(), "room {raw:?} is valid but its group is not");
    }
    // The chat app's guest names: a checked name has no forbidden character
    // and something visible; folding never panics and ignores a trailing
    // invisible character.
    match estuary_cli::usernames::check(&raw) {
        Ok(Some(name)) => {
            trail.note("guest name");
            assert!(!name.chars().any(estuary_cli::usernames::forbidden_char));
            assert!(name.chars().count() <= estuary_cli::usernames::MAX_USERNAME_CHARS);
            let key = estuary_cli::usernames::fold(&name);
            assert!(key.iter().all(|k| !k.is_empty()), "{name:?} folds to nothing");
            assert_eq!(
                estuary_cli::usernames::fold(&format!("{name}\u{2060}")),
                key,
                "{name:?}"
            );
        }
        Ok(None) => trail.note("no guest name"),
        Err(problem) => trail.note(std::mem::discriminant(&problem)),
    }
    trail.finish()
}

/// Tokens of names.
pub const DICTIONARY: &[&[u8]] = &[
    b"!",
    b".",
    b"-",
    b"_",
    b"specific.",
    b"chat_",
    b"asgi",
    b" ",
    b"\x00",
    b"\xc3\xa9",
    b"\xe2\x80\x8b",
    b"\xef\xbc\xa1",
    b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];
