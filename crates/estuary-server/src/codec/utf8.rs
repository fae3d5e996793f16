//! UTF-8 checked fragment by fragment, so that a text message that goes
//! wrong is refused at the frame where it does (fail fast), not at its end.

use super::CodecError;

/// Checks the bytes of `text` past `checked`, where the text so far may end
/// in the middle of a character (more fragments are coming); moves `checked`
/// past every complete character. An invalid sequence is an error at once.
///
/// `checked` never stops more than 3 bytes before the end: the start of a
/// character whose other bytes have not arrived.
pub(crate) fn check_prefix(text: &[u8], checked: &mut usize) -> Result<(), CodecError> {
    let rest = text.get(*checked..).unwrap_or_default();
    match std::str::from_utf8(rest) {
        Ok(_) => *checked = text.len(),
        // Cut short, not wrong: the character's last bytes are still to come.
        Err(e) if e.error_len().is_none() => *checked += e.valid_up_to(),
        Err(_) => return Err(CodecError::InvalidUtf8),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` in pieces of `step` bytes; the result of the first
    /// failing piece's check, or whether the whole is complete text.
    fn in_pieces(text: &[u8], step: usize) -> Result<bool, (usize, CodecError)> {
        let mut checked = 0;
        let mut end = 0;
        while end < text.len() {
            end = (end + step).min(text.len());
            check_prefix(&text[..end], &mut checked).map_err(|e| (end, e))?;
            assert!(end - checked <= 3);
        }
        Ok(checked == text.len())
    }

    #[test]
    fn text_cut_anywhere_is_accepted_and_complete_at_its_end() {
        let text = "h\u{e9}llo \u{3ba}\u{1f600} w\u{f6}rld".as_bytes();
        for step in 1..text.len() {
            assert_eq!(in_pieces(text, step), Ok(true), "step {step}");
        }
    }

    #[test]
    fn an_incomplete_end_is_not_complete_text() {
        assert_eq!(in_pieces(&[b'a', 0xF0, 0x9F], 1), Ok(false));
    }

    #[test]
    fn invalid_text_fails_at_the_piece_that_makes_it_invalid() {
        // Valid up to U+10FFFF's encoding; 0xF4 0x90 starts past it.
        let text = [b'a', b'b', 0xF4, 0x90, 0x80, 0x80, b'c'];
        assert_eq!(in_pieces(&text, 1), Err((4, CodecError::InvalidUtf8)));
        // A surrogate (0xED 0xA0 ..) fails at its second byte.
        assert_eq!(
            in_pieces(&[0xED, 0xA0, 0x80], 1),
            Err((2, CodecError::InvalidUtf8))
        );
        assert_eq!(in_pieces(&[0xFF], 1), Err((1, CodecError::InvalidUtf8)));
    }
}
