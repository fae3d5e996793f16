//! WebSocket close codes, and the one place where reasons map to codes.

use std::borrow::Cow;
use std::fmt;

/// A WebSocket close code (RFC 6455 section 7.4), with the codes Estuary uses
/// as constants.
///
/// Application codes 4000–4999 are free for consumers to use, as in Channels.
///
/// ```
/// use estuary_core::CloseCode;
///
/// assert_eq!(CloseCode::GOING_AWAY.as_u16(), 1001);
/// assert_eq!(CloseCode::from(4404).as_u16(), 4404);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is going down, or the page navigated away.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: a WebSocket protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a kind of data the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no code was present in the close frame (never sent on the wire).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection dropped without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a text message that is not valid UTF-8.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: the peer broke a policy, such as a rate limit.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message or frame over the configured maximum size.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: the server hit an unexpected condition (a failing handler).
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1013: try again later: the server is overloaded, or the client too slow.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 4401: the user's credential expired while connected (a JWT's `exp`
    /// passed): authenticate again, then reconnect.
    pub const CREDENTIALS_EXPIRED: Self = Self(4401);

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// True for codes an endpoint may put in a close frame on the wire.
    ///
    /// ```
    /// use estuary_core::CloseCode;
    ///
    /// assert!(CloseCode::POLICY_VIOLATION.is_sendable());
    /// assert!(CloseCode::from(4001).is_sendable());
    /// assert!(!CloseCode::ABNORMAL.is_sendable()); // only reported locally
    /// assert!(!CloseCode::from(999).is_sendable());
    /// ```
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A close code with its (possibly empty) reason, as carried by a close frame.
///
/// ```
/// use estuary_core::{CloseCode, CloseFrame};
///
/// let frame = CloseFrame::new(CloseCode::POLICY_VIOLATION, "rate limit");
/// assert_eq!(frame.reason(), "rate limit");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    code: CloseCode,
    reason: String,
}

impl CloseFrame {
    /// The longest reason a close frame carries: 125 bytes of payload less the code.
    pub const MAX_REASON_LEN: usize = 123;

    /// A close frame; a reason over 123 bytes is cut at a character boundary.
    ///
    /// ```
    /// use estuary_core::{CloseCode, CloseFrame};
    ///
    /// let frame = CloseFrame::new(CloseCode::NORMAL, "x".repeat(200));
    /// assert_eq!(frame.reason().len(), CloseFrame::MAX_REASON_LEN);
    /// ```
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        reason.truncate(cut_len(&reason));
        Self { code, reason }
    }

    /// The close code.
    pub fn code(&self) -> CloseCode {
        self.code
    }

    /// The reason text.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// The length of the longest prefix of `reason` that fits a close frame,
/// ending on a character boundary.
fn cut_len(reason: &str) -> usize {
    let mut end = reason.len().min(CloseFrame::MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Why a connection is closed or a handshake refused, as the client is told:
/// at most [`MAX_LEN`](Self::MAX_LEN) (123) bytes, what a close frame
/// carries, cut at a character boundary when it is made.
///
/// It is data for the client, not a description of an error: the errors
/// that carry one ([`ConsumerError::Close`](crate::ConsumerError::Close),
/// [`AuthError::Refused`](crate::auth::AuthError::Refused) and
/// [`AuthError::Closed`](crate::auth::AuthError::Closed)) hold it in this
/// bounded type, so what they hold is what is sent. A `&'static str` is
/// kept without a copy.
///
/// ```
/// use estuary_core::CloseReason;
///
/// let reason = CloseReason::from("token expired");
/// assert_eq!(reason, "token expired");
/// assert_eq!(reason.to_string(), "token expired");
///
/// let long = CloseReason::from("é".repeat(100));
/// assert_eq!(long.as_str().len(), 122); // 61 two-byte characters fit in 123 bytes
/// assert!(long.as_str().chars().all(|c| c == 'é'));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct CloseReason(Cow<'static, str>);

impl CloseReason {
    /// The most bytes a reason holds: a close frame's 125 bytes of payload
    /// less the code.
    pub const MAX_LEN: usize = CloseFrame::MAX_REASON_LEN;

    /// A reason; text over [`MAX_LEN`](Self::MAX_LEN) bytes is cut at a
    /// character boundary.
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        let mut reason = reason.into();
        let end = cut_len(&reason);
        if end < reason.len() {
            match &mut reason {
                Cow::Borrowed(text) => *text = &text[..end],
                Cow::Owned(text) => text.truncate(end),
            }
        }
        Self(reason)
    }

    /// The reason's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when there is no text.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&'static str> for CloseReason {
    fn from(reason: &'static str) -> Self {
        Self::new(reason)
    }
}

impl From<String> for CloseReason {
    fn from(reason: String) -> Self {
        Self::new(reason)
    }
}

impl From<Cow<'static, str>> for CloseReason {
    fn from(reason: Cow<'static, str>) -> Self {
        Self::new(reason)
    }
}

impl From<CloseReason> for String {
    fn from(reason: CloseReason) -> String {
        reason.0.into_owned()
    }
}

impl AsRef<str> for CloseReason {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for CloseReason {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for CloseReason {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl fmt::Debug for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_reason_is_bounded_whether_borrowed_or_owned() {
        let borrowed = CloseReason::from(concat!(
            "0123456789012345678901234567890123456789012345678901234567890123456789",
            "0123456789012345678901234567890123456789012345678901234567890123456789"
        ));
        assert_eq!(borrowed.as_str().len(), CloseReason::MAX_LEN);
        assert!(
            matches!(borrowed.0, Cow::Borrowed(_)),
            "a static reason is not copied"
        );
        let owned = CloseReason::from("ü".repeat(70));
        assert_eq!(owned.as_str().len(), 122);
        assert_eq!(CloseReason::from("bye"), "bye");
        assert_eq!(format!("{:?}", CloseReason::from("bye")), "\"bye\"");
        assert!(CloseReason::default().is_empty());
        assert_eq!(String::from(CloseReason::from("bye")), "bye");
    }

    #[test]
    fn reason_is_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let frame = CloseFrame::new(CloseCode::NORMAL, long);
        assert!(frame.reason().len() <= CloseFrame::MAX_REASON_LEN);
        assert!(frame.reason().chars().all(|c| c == 'é'));
    }

    #[test]
    fn sendable_codes() {
        assert!(CloseCode::NORMAL.is_sendable());
        assert!(!CloseCode::NO_STATUS.is_sendable());
        assert!(!CloseCode::ABNORMAL.is_sendable());
        assert!(CloseCode::from(4404).is_sendable());
    }
}
