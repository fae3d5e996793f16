//! Connect-callback answers as Estuary reads them (`estuary-callback`):
//! whatever an application (or something posing as it) answers must be
//! either one of the documented shapes or a bad answer, never a panic and
//! never an admission that breaks the rules a handshake relies on.
//!
//! Input: text, read as an answer's body by `parse_answer`. An accepted
//! answer's user has an id and a name and its groups are valid names; the
//! same admission written back in the documented shape reads the same. A
//! refusal has a client-error status or an application close code. The
//! input is also signed, which must give `sha256=` and 64 hex digits.

use estuary_callback::{Decision, Rejection, parse_answer, sign};
use estuary_core::GroupName;
use estuary_server::AuthError;

use crate::{Trail, text};

/// Runs one input.
pub fn run(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let raw = text(data);
    let signature = sign(b"fuzz-callback-secret", data);
    assert_eq!(signature.len(), 71, "sha256= and 64 hex digits");
    match parse_answer(raw.as_bytes()) {
        Ok(Decision::Accept(admission)) => {
            trail.note((
                "accept",
                admission.user.is_some(),
                admission.groups.len(),
                admission.data.len(),
            ));
            for group in &admission.groups {
                assert!(
                    GroupName::new(group.as_str()).is_ok(),
                    "an admitted group is a valid name"
                );
            }
            let user = admission.user.as_ref().map(|u| {
                assert!(
                    !u.id().is_empty() && !u.name().is_empty(),
                    "an admitted user has an id and a name"
                );
                let expires_at = u
                    .expires_at()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs());
                serde_json::json!({
                    "id": u.id(),
                    "name": u.name(),
                    "attributes": u.attributes(),
                    "expires_at": expires_at,
                })
            });
            let groups: Vec<&str> = admission.groups.iter().map(GroupName::as_str).collect();
            let written = serde_json::json!({"user": user, "groups": groups, "data": admission.data});
            match parse_answer(written.to_string().as_bytes()) {
                Ok(Decision::Accept(again)) => {
                    assert_eq!(again, admission, "an admission reads back the same")
                }
                other => panic!("an admission written back does not read back: {other:?}"),
            }
        }
        Ok(Decision::Reject(rejection)) => {
            match &rejection {
                Rejection::Status(status, reason) => {
                    assert!(status.is_client_error(), "a refusal status is a client error");
                    assert!(!reason.is_empty(), "a status refusal has a reason");
                    assert!(reason.as_str().len() <= estuary_core::CloseReason::MAX_LEN);
                    trail.note(("status", status.as_u16()));
                }
                Rejection::Close(code, _) => {
                    let code = u16::from(*code);
                    assert!(
                        (4000..=4999).contains(&code) || code == 1008,
                        "an application close code"
                    );
                    trail.note(("close", code));
                }
            }
            match AuthError::from(rejection) {
                AuthError::Refused { .. } | AuthError::Closed { .. } => {}
                other => panic!("a refusal became {other:?}"),
            }
        }
        Err(error) => trail.note(error.to_string()),
    }
    trail.finish()
}

/// Tokens of connect answers.
pub const DICTIONARY: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"user\":",
    b"\"id\":",
    b"\"name\":",
    b"\"attributes\":",
    b"\"expires_at\":",
    b"\"groups\":",
    b"\"data\":",
    b"\"reject\":",
    b"\"status\":",
    b"\"close_code\":",
    b"\"reason\":",
    b"null",
    b"true",
    b"4403",
    b"1008",
    b"403",
    b"18446744073709551615",
    b"-1",
    b"1e400",
    b"\"user.42\"",
    b"\"a!b\"",
    b"\"\\u0000\"",
];
