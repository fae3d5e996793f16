//! The bounds every authenticator checks a user's id and name against.

/// The longest user id an authenticator of Estuary's lets in, in bytes: an
/// id is a key (groups such as `user.<id>`, rechecks, logs), and one that
/// is longer is refused, never cut (two cut ids could be the same).
pub const MAX_USER_ID_LEN: usize = 255;

/// The longest user name an authenticator of Estuary's lets in unless
/// configured otherwise, in characters: Django's `username` length (150),
/// so that no Django user is refused by default. A longer name refuses the
/// credential (a JWT, a connect callback's answer), with a reason for the
/// operator: a name is shown to others, and a cut one could pass for
/// someone else's.
pub const DEFAULT_MAX_USER_NAME_CHARS: usize = 150;

/// Why a user's id or name cannot be let in ([`check_user_bounds`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum UserBoundsError {
    /// The id is empty.
    #[error("the user id is empty")]
    EmptyId,
    /// The id is longer than [`MAX_USER_ID_LEN`] bytes.
    #[error("the user id is {len} bytes long, over the {max} allowed")]
    IdTooLong {
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The name is longer than the configured bound.
    #[error("the user name is {chars} characters long, over the {max} allowed")]
    NameTooLong {
        /// Its length in characters.
        chars: usize,
        /// The bound.
        max: usize,
    },
}

/// Checks a user's id (at most [`MAX_USER_ID_LEN`] bytes, not empty) and
/// name (at most `max_name_chars` characters) before they are let in.
///
/// ```
/// use estuary_core::auth::{UserBoundsError, check_user_bounds};
///
/// assert!(check_user_bounds("42", "alice", 50).is_ok());
/// assert_eq!(
///     check_user_bounds("42", &"a".repeat(51), 50),
///     Err(UserBoundsError::NameTooLong { chars: 51, max: 50 })
/// );
/// assert!(check_user_bounds(&"1".repeat(256), "bob", 50).is_err());
/// ```
pub fn check_user_bounds(id: &str, name: &str, max_name_chars: usize) -> Result<(), UserBoundsError> {
    if id.is_empty() {
        return Err(UserBoundsError::EmptyId);
    }
    if id.len() > MAX_USER_ID_LEN {
        return Err(UserBoundsError::IdTooLong {
            len: id.len(),
            max: MAX_USER_ID_LEN,
        });
    }
    let chars = name.chars().count();
    if chars > max_name_chars {
        return Err(UserBoundsError::NameTooLong {
            chars,
            max: max_name_chars,
        });
    }
    Ok(())
}
