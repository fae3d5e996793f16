//! The names guests give themselves in a chat room: which are refused, and
//! when two names look the same.
//!
//! A guest (a connection nobody authenticated) names itself with
//! `?username=` or a frame's `username`. Such a name is refused when it holds
//! a character that changes how the text around it is shown (control
//! characters, bidirectional overrides and isolates, a byte-order mark, line
//! and paragraph separators, interlinear annotations), or when nothing of it
//! is visible (only white space and default-ignorable characters such as
//! U+200B ZERO WIDTH SPACE). Zero-width joiners inside a visible name are
//! kept: emoji sequences and several scripts need them.
//!
//! Two names are confusable when their [`fold`]s share a key: NFKC, then
//! lower case and the UTS #39 skeleton (which also drops default-ignorable
//! characters) in either order. `alice`, `ALICE`, `aIice`, `alice\u{200b}`,
//! `ａｌｉｃｅ` and a Cyrillic `аlice` all share a key.

use unicode_normalization::UnicodeNormalization;

/// The longest user name, in characters.
pub const MAX_USERNAME_CHARS: usize = 50;

/// Why a guest's name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// Over [`MAX_USERNAME_CHARS`] characters.
    TooLong,
    /// Holds a control, bidirectional-formatting or other forbidden
    /// character (the first one found).
    Forbidden(char),
    /// Nothing of it is visible: only white space and zero-width or other
    /// default-ignorable characters.
    Invisible,
}

impl std::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameProblem::TooLong => write!(f, "over {MAX_USERNAME_CHARS} characters"),
            NameProblem::Forbidden(c) => write!(
                f,
                "holds U+{:04X}: control and bidirectional characters are not allowed",
                u32::from(*c)
            ),
            NameProblem::Invisible => write!(f, "nothing in it is visible"),
        }
    }
}

/// True for a character no name may hold: it changes how the text around
/// it is shown (or hides what follows).
pub fn forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Bidirectional marks, embeddings, overrides and isolates.
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            // Deprecated format characters (symmetric swapping, shaping, digit shapes).
            | '\u{206A}'..='\u{206F}'
            // Line and paragraph separators.
            | '\u{2028}' | '\u{2029}'
            // Byte-order mark (zero-width no-break space).
            | '\u{FEFF}'
            // Interlinear annotation anchors, and the object replacement character.
            | '\u{FFF9}'..='\u{FFFC}'
        )
}

/// A guest's name, checked: `Ok(None)` when it is empty once trimmed (the
/// member is `Anonymous`), `Ok(Some(trimmed))` when it may be used, else why
/// not.
///
/// ```
/// use estuary_cli::usernames::{NameProblem, check};
///
/// assert_eq!(check("  alice "), Ok(Some("alice".to_owned())));
/// assert_eq!(check(""), Ok(None));
/// assert_eq!(check("\u{202e}ecila"), Err(NameProblem::Forbidden('\u{202e}')));
/// assert_eq!(check("\u{200b}\u{200b}"), Err(NameProblem::Invisible));
/// ```
pub fn check(raw: &str) -> Result<Option<String>, NameProblem> {
    let name = raw.trim();
    if name.is_empty() {
        return Ok(None);
    }
    if let Some(c) = name.chars().find(|&c| forbidden_char(c)) {
        return Err(NameProblem::Forbidden(c));
    }
    if name.chars().count() > MAX_USERNAME_CHARS {
        return Err(NameProblem::TooLong);
    }
    if unicode_security::skeleton(name).all(|c| c.is_whitespace() || c == '\u{2800}') {
        return Err(NameProblem::Invisible);
    }
    Ok(Some(name.to_owned()))
}

/// The keys under which names that look alike are equal: NFKC, then either
/// lower case before the UTS #39 skeleton or the skeleton before lower case
/// (each lower-cased again). Two names are confusable when any key of one
/// equals any key of the other. One order is not enough: lower case first
/// turns a capital `I` into `i` where the skeleton makes it the `l` it looks
/// like (`aIice`), and a Greek capital `Β` into `ß` where the skeleton makes
/// it `b`; the skeleton first loses what case folding alone makes equal.
///
/// ```
/// use estuary_cli::usernames::{confusable, fold};
///
/// for lookalike in ["ALICE", "alice\u{200b}", "\u{430}lice", "\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", "aIice"] {
///     assert!(confusable(&fold(lookalike), &fold("alice")), "{lookalike:?}");
/// }
/// assert!(confusable(&fold("\u{392}OB"), &fold("BOB"))); // a Greek capital Beta
/// assert!(!confusable(&fold("bob"), &fold("alice")));
/// ```
pub fn fold(name: &str) -> [String; 2] {
    let nfkc = name.trim().nfkc().collect::<String>();
    let skeleton_lower = |s: &str| unicode_security::skeleton(s).collect::<String>().to_lowercase();
    let lower_first = skeleton_lower(&nfkc.to_lowercase());
    let skeleton_first = skeleton_lower(&skeleton_lower(&nfkc));
    [lower_first, skeleton_first]
}

/// True when two names' [`fold`]s share a key.
pub fn confusable(a: &[String; 2], b: &[String; 2]) -> bool {
    a.iter().any(|key| b.contains(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_names() {
        for (name, problem) in [
            ("a\nb", NameProblem::Forbidden('\n')),
            ("\u{1b}[31mred", NameProblem::Forbidden('\u{1b}')),
            ("nul\0", NameProblem::Forbidden('\0')),
            ("\u{feff}bob", NameProblem::Forbidden('\u{feff}')),
            ("x\u{2066}y", NameProblem::Forbidden('\u{2066}')),
            ("\u{200b}", NameProblem::Invisible),
            ("\u{200d}\u{2060}\u{3164}", NameProblem::Invisible),
            ("\u{2800}", NameProblem::Invisible),
        ] {
            assert_eq!(check(name), Err(problem), "{name:?}");
        }
        assert_eq!(check(&"u".repeat(51)), Err(NameProblem::TooLong));
        assert_eq!(check(&"u".repeat(50)).map(|n| n.map(|n| n.len())), Ok(Some(50)));
    }

    #[test]
    fn accepted_names() {
        for name in [
            "alice",
            "Zoë",
            "\u{1f469}\u{200d}\u{1f4bb} dev",
            "李小龙",
            "o'brien",
        ] {
            assert_eq!(check(name), Ok(Some(name.to_owned())), "{name:?}");
        }
        assert_eq!(check("   "), Ok(None));
    }

    #[test]
    fn confusables_fold_together() {
        assert!(confusable(&fold("paypal"), &fold("\u{440}\u{430}ypal")));
        assert!(confusable(&fold("alice"), &fold("AlIce")));
        assert!(confusable(&fold("alice"), &fold("aIice")));
        assert!(confusable(&fold("bob"), &fold("\u{392}\u{39f}\u{392}")));
        assert!(!confusable(&fold("alice"), &fold("alicia")));
    }
}
