//! What a decoded Django session says about its user, and the session auth hash.

use crate::signing::{Algorithm, salted_hmac};

/// The salt of `AbstractBaseUser.get_session_auth_hash` (Django 5.2).
const SESSION_AUTH_HASH_SALT: &str = "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash";

/// The salt the `db` engine signs `session_data` with: `"django.contrib.sessions." +
/// SessionStore.__qualname__`.
pub const DB_SESSION_SALT: &str = "django.contrib.sessions.SessionStore";

/// The salt of the `signed_cookies` engine.
pub const SIGNED_COOKIES_SALT: &str = "django.contrib.sessions.backends.signed_cookies";

/// The login recorded in a session: `_auth_user_id`, `_auth_user_backend` and
/// `_auth_user_hash`, as `django.contrib.auth.login` writes them.
///
/// ```
/// use estuary_django::SessionAuth;
/// let data = serde_json::json!({
///     "_auth_user_id": "7",
///     "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
///     "_auth_user_hash": "ab12",
/// });
/// let auth = SessionAuth::from_session_data(&data).unwrap();
/// assert_eq!(auth.user_id, "7");
/// assert_eq!(auth.hash.as_deref(), Some("ab12"));
/// // A visitor who never logged in:
/// assert!(SessionAuth::from_session_data(&serde_json::json!({"cart": [1]})).is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAuth {
    /// `_auth_user_id`: the primary key as text (Django writes a string; a number is
    /// accepted too).
    pub user_id: String,
    /// `_auth_user_backend`: the dotted path of the authentication backend.
    pub backend: String,
    /// `_auth_user_hash`, if present (without it Django logs the session out).
    pub hash: Option<String>,
}

impl SessionAuth {
    /// Reads the login out of decoded session data. `None` when the session holds no
    /// login (Django's `KeyError`). Pure and total.
    pub fn from_session_data(data: &serde_json::Value) -> Option<Self> {
        let user_id = match data.get("_auth_user_id")? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let backend = data.get("_auth_user_backend")?.as_str()?.to_owned();
        let hash = data
            .get("_auth_user_hash")
            .and_then(|h| h.as_str())
            .map(str::to_owned);
        Some(Self {
            user_id,
            backend,
            hash,
        })
    }
}

/// Django's `AbstractBaseUser._get_session_auth_hash(secret)`: the hex HMAC-SHA256 of
/// the password hash, salted with the class path and keyed by `secret`.
///
/// ```
/// // Django 5.2: salted_hmac("django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash",
/// //     "pbkdf2_sha256$x", "secret", algorithm="sha256").hexdigest()
/// assert_eq!(
///     estuary_django::session_auth_hash("pbkdf2_sha256$x", "secret"),
///     "6db45790f96e4d0b6b9c83c9890bd13dfdf13aa80d9cf88a5a2c7c8e9c701649",
/// );
/// ```
pub fn session_auth_hash(password_hash: &str, secret: &str) -> String {
    salted_hmac(
        Algorithm::Sha256,
        SESSION_AUTH_HASH_SALT,
        password_hash.as_bytes(),
        secret.as_bytes(),
    )
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect()
}

/// Django's `_validate_session_key` plus the shape of keys it makes: 8 to 40 ASCII
/// letters and digits (the `session_key` column is 40 wide). Anything else is never
/// looked up.
pub(crate) fn plausible_session_key(key: &str) -> bool {
    (8..=40).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric())
}
