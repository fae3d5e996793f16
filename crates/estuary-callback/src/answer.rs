//! What the application answers to a connect callback, read strictly: an
//! answer that is not exactly one of the documented shapes is a bad answer
//! (the handshake gets 502 and the operator a log line), never a guess.

use std::time::{Duration, SystemTime};

use estuary_core::auth::{Admission, AuthError};
use estuary_core::{CloseCode, CloseReason, GroupName, User};
use http::StatusCode;
use serde::Deserialize;

/// The largest answer read; a longer one is a bad answer.
pub const MAX_ANSWER_SIZE: usize = 64 * 1024;

/// The answer's JSON. Unknown fields are refused: a misspelt `group` must
/// not silently join nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    user: Option<WireUser>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    data: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    reject: Option<WireReject>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireUser {
    id: Id,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    attributes: serde_json::Map<String, serde_json::Value>,
    /// Unix seconds.
    #[serde(default)]
    expires_at: Option<u64>,
}

/// A user id as Django gives it: a string, or a number (an integer primary key).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(u64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReject {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    close_code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

/// Why an answer is not one.
///
/// Opaque, like [`std::io::Error`]: [`kind`](Self::kind) says what is
/// wrong, [`group`](Self::group) names a group that is not a valid name,
/// and the JSON parser's, the name check's or the user bounds' error is the
/// [`source`](std::error::Error::source).
///
/// ```
/// use estuary_callback::{AnswerErrorKind, parse_answer};
///
/// let error = parse_answer(br#"{"groups": ["news", "a b"]}"#).unwrap_err();
/// assert_eq!((error.kind(), error.group()), (AnswerErrorKind::Group, Some("a b")));
/// assert!(error.to_string().starts_with(r#"group "a b" is not a valid group name: "#));
/// let error = parse_answer(br#"{"reject": {"status": 500}}"#).unwrap_err();
/// assert_eq!(error.kind(), AnswerErrorKind::Status);
/// assert_eq!(error.to_string(), "reject status 500 is not a client error (400-499)");
/// ```
#[derive(Debug)]
pub struct AnswerError(Box<Repr>);

/// An [`AnswerError`]'s parts, boxed: the error is one pointer wide.
#[derive(Debug)]
struct Repr {
    kind: AnswerErrorKind,
    /// The group name as answered (`Group`).
    group: Option<Box<str>>,
    /// The expiry, status or close code as answered.
    number: u64,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// What is wrong with an answer ([`AnswerError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AnswerErrorKind {
    /// Not JSON of the documented shape (the parser's error is the source).
    Json,
    /// JSON, but not an object.
    NotAnObject,
    /// A group name that is not a valid one ([`AnswerError::group`]; the
    /// name check's error is the source).
    Group,
    /// An `expires_at` after the year 9999.
    Expiry,
    /// An empty user id.
    EmptyId,
    /// A user id or name out of bounds (see
    /// [`CallbackConfig::with_max_name_chars`](crate::CallbackConfig::with_max_name_chars);
    /// the bounds' error is the source).
    User,
    /// A refusal that also names a user, groups or data.
    Mixed,
    /// A refusal with neither or both of `status` and `close_code`.
    RejectHow,
    /// A refusal status outside 400-499.
    Status,
    /// A refusal close code outside 4000-4999 and not 1008.
    CloseCode,
}

impl AnswerError {
    fn with(
        kind: AnswerErrorKind,
        group: Option<&str>,
        number: u64,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self(Box::new(Repr {
            kind,
            group: group.map(Box::from),
            number,
            source,
        }))
    }

    fn new(kind: AnswerErrorKind) -> Self {
        Self::with(kind, None, 0, None)
    }

    fn number(kind: AnswerErrorKind, number: u64) -> Self {
        Self::with(kind, None, number, None)
    }

    fn group_name(name: &str, error: estuary_core::NameError) -> Self {
        Self::with(AnswerErrorKind::Group, Some(name), 0, Some(Box::new(error)))
    }

    pub(crate) fn user(error: estuary_core::auth::UserBoundsError) -> Self {
        Self::with(AnswerErrorKind::User, None, 0, Some(Box::new(error)))
    }

    /// What is wrong.
    pub fn kind(&self) -> AnswerErrorKind {
        self.0.kind
    }

    /// The group name that is not a valid one, as answered
    /// ([`Group`](AnswerErrorKind::Group) only).
    pub fn group(&self) -> Option<&str> {
        self.0.group.as_deref()
    }
}

impl From<serde_json::Error> for AnswerError {
    fn from(error: serde_json::Error) -> Self {
        Self::with(AnswerErrorKind::Json, None, 0, Some(Box::new(error)))
    }
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = |f: &mut std::fmt::Formatter<'_>| match &self.0.source {
            Some(source) => write!(f, ": {source}"),
            None => Ok(()),
        };
        let number = self.0.number;
        match self.0.kind {
            AnswerErrorKind::Json => {
                f.write_str("not a connect answer")?;
                source(f)
            }
            AnswerErrorKind::NotAnObject => f.write_str("the answer is not a JSON object"),
            AnswerErrorKind::Group => {
                write!(
                    f,
                    "group {:?} is not a valid group name",
                    self.group().unwrap_or_default()
                )?;
                source(f)
            }
            AnswerErrorKind::Expiry => write!(f, "expires_at {number} is out of range"),
            AnswerErrorKind::EmptyId => f.write_str("the user's id is empty"),
            AnswerErrorKind::User => match &self.0.source {
                Some(source) => write!(f, "{source}: shorten it in the callback view's answer"),
                None => f.write_str("the user is out of bounds: shorten it in the callback view's answer"),
            },
            AnswerErrorKind::Mixed => f.write_str("a reject cannot also carry a user, groups or data"),
            AnswerErrorKind::RejectHow => f.write_str("a reject needs exactly one of status and close_code"),
            AnswerErrorKind::Status => write!(f, "reject status {number} is not a client error (400-499)"),
            AnswerErrorKind::CloseCode => write!(
                f,
                "reject close_code {number} is not an application code (4000-4999) or 1008"
            ),
        }
    }
}

impl std::error::Error for AnswerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The decision an answer carries.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Let the handshake in.
    Accept(Admission),
    /// Refuse it: [`AuthError::Refused`] or [`AuthError::Closed`].
    Reject(Rejection),
}

/// A refusal, before it becomes an [`AuthError`]. The answer's `reason` is
/// for the client, so it is a [`CloseReason`]: cut to 123 bytes as it is
/// read.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// An HTTP status (400-499) before the upgrade.
    Status(StatusCode, CloseReason),
    /// A close code after the upgrade.
    Close(CloseCode, CloseReason),
}

impl From<Rejection> for AuthError {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Status(status, reason) => AuthError::Refused { status, reason },
            Rejection::Close(code, reason) => AuthError::Closed { code, reason },
        }
    }
}

/// Reads an answer's body.
///
/// ```
/// use estuary_callback::{Decision, parse_answer};
///
/// let answer = br#"{"user": {"id": 42, "name": "alice"}, "groups": ["user.42"], "data": {"plan": "pro"}}"#;
/// let Ok(Decision::Accept(admission)) = parse_answer(answer) else { panic!() };
/// assert_eq!(admission.user.unwrap().id(), "42");
/// assert_eq!(admission.groups[0].as_str(), "user.42");
///
/// assert!(matches!(parse_answer(br#"{"reject": {"close_code": 4403}}"#), Ok(Decision::Reject(_))));
/// assert!(parse_answer(br#"{"group": ["user.42"]}"#).is_err(), "a misspelt field is refused");
/// ```
pub fn parse_answer(body: &[u8]) -> Result<Decision, AnswerError> {
    // An object, not a sequence serde would read field by field.
    let value: serde_json::Value = serde_json::from_slice(body)?;
    if !value.is_object() {
        return Err(AnswerError::new(AnswerErrorKind::NotAnObject));
    }
    let wire: Wire = serde_json::from_value(value)?;
    if let Some(reject) = wire.reject {
        if wire.user.is_some() || !wire.groups.is_empty() || !wire.data.is_empty() {
            return Err(AnswerError::new(AnswerErrorKind::Mixed));
        }
        let reason = reject.reason.unwrap_or_default();
        return match (reject.status, reject.close_code) {
            (Some(status), None) => match StatusCode::from_u16(status) {
                Ok(s) if s.is_client_error() => {
                    let reason = if reason.is_empty() {
                        CloseReason::from(s.canonical_reason().unwrap_or("refused"))
                    } else {
                        CloseReason::from(reason)
                    };
                    Ok(Decision::Reject(Rejection::Status(s, reason)))
                }
                _ => Err(AnswerError::number(AnswerErrorKind::Status, status.into())),
            },
            (None, Some(code)) if (4000..=4999).contains(&code) || code == 1008 => Ok(Decision::Reject(
                Rejection::Close(CloseCode::from(code), reason.into()),
            )),
            (None, Some(code)) => Err(AnswerError::number(AnswerErrorKind::CloseCode, code.into())),
            _ => Err(AnswerError::new(AnswerErrorKind::RejectHow)),
        };
    }
    let mut admission = Admission::anonymous();
    if let Some(user) = wire.user {
        let id = match user.id {
            Id::Text(id) => id,
            Id::Number(id) => id.to_string(),
        };
        if id.is_empty() {
            return Err(AnswerError::new(AnswerErrorKind::EmptyId));
        }
        let name = user.name.filter(|n| !n.is_empty()).unwrap_or_else(|| id.clone());
        let mut u = User::new(id, name).with_attributes(user.attributes);
        if let Some(at) = user.expires_at {
            // As a JWT's NumericDate: no later than 9999-12-31T23:59:59Z.
            if at > 253_402_300_799 {
                return Err(AnswerError::number(AnswerErrorKind::Expiry, at));
            }
            let at = SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(at))
                .ok_or_else(|| AnswerError::number(AnswerErrorKind::Expiry, at))?;
            u = u.with_expiry(at);
        }
        admission.user = Some(u);
    }
    for name in wire.groups {
        match GroupName::new(&name) {
            Ok(group) => admission.groups.push(group),
            Err(error) => return Err(AnswerError::group_name(&name, error)),
        }
    }
    admission.data = wire.data;
    Ok(Decision::Accept(admission))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(body: &str) -> Admission {
        match parse_answer(body.as_bytes()) {
            Ok(Decision::Accept(admission)) => admission,
            other => panic!("{body}: {other:?}"),
        }
    }

    fn reject(body: &str) -> Rejection {
        match parse_answer(body.as_bytes()) {
            Ok(Decision::Reject(rejection)) => rejection,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn accepts_read_users_groups_data_and_expiry() {
        let a = accept(
            r#"{"user": {"id": "7", "name": "bob", "attributes": {"is_staff": true}, "expires_at": 2000000000},
                "groups": ["user.7", "news"], "data": {"tenant": "acme"}}"#,
        );
        let user = a.user.unwrap();
        assert_eq!((user.id(), user.name()), ("7", "bob"));
        assert_eq!(user.attribute("is_staff"), Some(&true.into()));
        assert_eq!(
            user.expires_at(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(a.groups.len(), 2);
        assert_eq!(a.data["tenant"], "acme");
        assert_eq!(
            accept(r#"{"user": {"id": 9}}"#).user.unwrap().name(),
            "9",
            "the id names a nameless user"
        );
        assert_eq!(accept("{}"), Admission::anonymous());
        assert_eq!(accept(r#"{"user": null, "groups": ["public"]}"#).groups.len(), 1);
    }

    #[test]
    fn rejects_carry_a_status_or_a_close_code() {
        assert_eq!(
            reject(r#"{"reject": {"status": 403, "reason": "banned"}}"#),
            Rejection::Status(StatusCode::FORBIDDEN, "banned".into())
        );
        assert_eq!(
            reject(r#"{"reject": {"status": 401}}"#),
            Rejection::Status(StatusCode::UNAUTHORIZED, "Unauthorized".into())
        );
        assert_eq!(
            reject(r#"{"reject": {"close_code": 4403, "reason": "log in"}}"#),
            Rejection::Close(CloseCode::from(4403), "log in".into())
        );
        assert_eq!(
            reject(r#"{"reject": {"close_code": 1008}}"#),
            Rejection::Close(CloseCode::POLICY_VIOLATION, CloseReason::default())
        );
    }

    #[test]
    fn anything_else_is_a_bad_answer() {
        for body in [
            "",
            "null",
            "[]",
            "not json",
            r#"{"user": "alice"}"#,
            r#"{"user": {"name": "no id"}}"#,
            r#"{"user": {"id": ""}}"#,
            r#"{"user": {"id": -1}}"#,
            r#"{"user": {"id": "1", "expires_at": 18446744073709551615}}"#,
            r#"{"user": {"id": "1", "expires_at": 253402300800}}"#,
            r#"{"user": {"id": "1", "expires_at": 1.5e9}}"#,
            r#"{"user": {"id": "1", "expires_at": -1}}"#,
            r#"{"user": {"id": "1", "is_staff": true}}"#,
            r#"{"group": ["a"]}"#,
            r#"{"groups": ["a b"]}"#,
            r#"{"groups": "a"}"#,
            r#"{"data": []}"#,
            r#"{"reject": {}}"#,
            r#"{"reject": {"status": 403, "close_code": 4403}}"#,
            r#"{"reject": {"status": 500}}"#,
            r#"{"reject": {"status": 200}}"#,
            r#"{"reject": {"status": 99999}}"#,
            r#"{"reject": {"close_code": 1000}}"#,
            r#"{"reject": {"close_code": 5000}}"#,
            r#"{"reject": {"status": 403}, "user": {"id": "1"}}"#,
            r#"{"reject": {"status": 403}, "groups": ["a"]}"#,
        ] {
            assert!(
                parse_answer(body.as_bytes()).is_err(),
                "{body:?} was taken for an answer"
            );
        }
    }

    #[test]
    fn a_bad_answer_names_its_kind() {
        use AnswerErrorKind::*;
        for (body, kind, text) in [
            ("[]", NotAnObject, "the answer is not a JSON object"),
            (r#"{"user": {"id": ""}}"#, EmptyId, "the user's id is empty"),
            (
                r#"{"user": {"id": "1", "expires_at": 253402300800}}"#,
                Expiry,
                "expires_at 253402300800 is out of range",
            ),
            (
                r#"{"reject": {"status": 403}, "groups": ["a"]}"#,
                Mixed,
                "a reject cannot also carry a user, groups or data",
            ),
            (
                r#"{"reject": {}}"#,
                RejectHow,
                "a reject needs exactly one of status and close_code",
            ),
            (
                r#"{"reject": {"status": 200}}"#,
                Status,
                "reject status 200 is not a client error (400-499)",
            ),
            (
                r#"{"reject": {"close_code": 1000}}"#,
                CloseCode,
                "reject close_code 1000 is not an application code (4000-4999) or 1008",
            ),
            (
                r#"{"groups": ["ok", "a b"]}"#,
                Group,
                "group \"a b\" is not a valid group name: name contains ' ' at byte 1; allowed are ASCII letters, digits, '-', '_' and '.'",
            ),
        ] {
            let error = parse_answer(body.as_bytes()).unwrap_err();
            assert_eq!(
                (error.kind(), error.to_string()),
                (kind, text.to_owned()),
                "{body}"
            );
            assert_eq!(error.group().is_some(), kind == Group, "{body}");
        }
        let json = parse_answer(b"not json").unwrap_err();
        assert_eq!(json.kind(), Json);
        assert!(json.to_string().starts_with("not a connect answer: "), "{json}");
        let source = std::error::Error::source(&json).expect("the parser's error");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
        let bounds = estuary_core::auth::UserBoundsError::EmptyId;
        let user = AnswerError::user(bounds.clone());
        assert_eq!(user.kind(), User);
        assert_eq!(
            user.to_string(),
            format!("{bounds}: shorten it in the callback view's answer")
        );
    }

    #[test]
    fn a_refusal_reason_is_cut_to_what_a_close_frame_carries() {
        let long = "x".repeat(500);
        let Rejection::Close(_, reason) = reject(&format!(
            r#"{{"reject": {{"close_code": 4403, "reason": "{long}"}}}}"#
        )) else {
            panic!("not a close refusal");
        };
        assert_eq!(reason.as_str(), &long[..CloseReason::MAX_LEN]);
    }
}
