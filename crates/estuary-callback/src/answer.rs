//! What the application answers to a connect callback, read strictly: an
//! answer that is not exactly one of the documented shapes is a bad answer
//! (the handshake gets 502 and the operator a log line), never a guess.

use std::time::{Duration, SystemTime};

use estuary_core::auth::{Admission, AuthError};
use estuary_core::{CloseCode, GroupName, User};
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
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Not JSON of the documented shape.
    #[error("not a connect answer: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not an object.
    #[error("the answer is not a JSON object")]
    NotAnObject,
    /// A group name that is not a valid one.
    #[error("group {name:?} is not a valid group name: {error}")]
    Group {
        /// The name as answered.
        name: String,
        /// What is wrong with it.
        error: estuary_core::NameError,
    },
    /// An `expires_at` after the year 9999.
    #[error("expires_at {0} is out of range")]
    Expiry(u64),
    /// An empty user id.
    #[error("the user's id is empty")]
    EmptyId,
    /// A user id or name out of bounds (see
    /// [`CallbackConfig::with_max_name_chars`](crate::CallbackConfig::with_max_name_chars)).
    #[error("{0}: shorten it in the callback view's answer")]
    User(#[from] estuary_core::auth::UserBoundsError),
    /// A refusal that also names a user, groups or data.
    #[error("a reject cannot also carry a user, groups or data")]
    Mixed,
    /// A refusal with neither or both of `status` and `close_code`.
    #[error("a reject needs exactly one of status and close_code")]
    RejectHow,
    /// A refusal status outside 400-499.
    #[error("reject status {0} is not a client error (400-499)")]
    Status(u16),
    /// A refusal close code outside 4000-4999 and not 1008.
    #[error("reject close_code {0} is not an application code (4000-4999) or 1008")]
    CloseCode(u16),
}

/// The decision an answer carries.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Let the handshake in.
    Accept(Admission),
    /// Refuse it: [`AuthError::Refused`] or [`AuthError::Closed`].
    Reject(Rejection),
}

/// A refusal, before it becomes an [`AuthError`].
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// An HTTP status (400-499) before the upgrade.
    Status(StatusCode, String),
    /// A close code after the upgrade.
    Close(CloseCode, String),
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
        return Err(AnswerError::NotAnObject);
    }
    let wire: Wire = serde_json::from_value(value)?;
    if let Some(reject) = wire.reject {
        if wire.user.is_some() || !wire.groups.is_empty() || !wire.data.is_empty() {
            return Err(AnswerError::Mixed);
        }
        let reason = reject.reason.unwrap_or_default();
        return match (reject.status, reject.close_code) {
            (Some(status), None) => match StatusCode::from_u16(status) {
                Ok(s) if s.is_client_error() => {
                    let reason = if reason.is_empty() {
                        s.canonical_reason().unwrap_or("refused").to_owned()
                    } else {
                        reason
                    };
                    Ok(Decision::Reject(Rejection::Status(s, reason)))
                }
                _ => Err(AnswerError::Status(status)),
            },
            (None, Some(code)) if (4000..=4999).contains(&code) || code == 1008 => {
                Ok(Decision::Reject(Rejection::Close(CloseCode::from(code), reason)))
            }
            (None, Some(code)) => Err(AnswerError::CloseCode(code)),
            _ => Err(AnswerError::RejectHow),
        };
    }
    let mut admission = Admission::anonymous();
    if let Some(user) = wire.user {
        let id = match user.id {
            Id::Text(id) => id,
            Id::Number(id) => id.to_string(),
        };
        if id.is_empty() {
            return Err(AnswerError::EmptyId);
        }
        let name = user.name.filter(|n| !n.is_empty()).unwrap_or_else(|| id.clone());
        let mut u = User::new(id, name).with_attributes(user.attributes);
        if let Some(at) = user.expires_at {
            // As a JWT's NumericDate: no later than 9999-12-31T23:59:59Z.
            if at > 253_402_300_799 {
                return Err(AnswerError::Expiry(at));
            }
            let at = SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_secs(at))
                .ok_or(AnswerError::Expiry(at))?;
            u = u.with_expiry(at);
        }
        admission.user = Some(u);
    }
    for name in wire.groups {
        match GroupName::new(&name) {
            Ok(group) => admission.groups.push(group),
            Err(error) => return Err(AnswerError::Group { name, error }),
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
            Rejection::Close(CloseCode::POLICY_VIOLATION, String::new())
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
}
