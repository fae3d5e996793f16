//! Django sessions as Estuary reads them (`estuary-django`): the cookie
//! header, Django's signed values (`Signer`, `TimestampSigner`, `loads`
//! with its compressed payloads) and the login fields of session data. A
//! hostile cookie or session value must never panic the server.
//!
//! Input: text, used three ways: as a `Cookie` header whose `sessionid` is
//! unsigned as a `signed_cookies` session; as a payload (what `dumps` puts
//! before the timestamp); and as a value signed here with the fuzz secret
//! and read back, so that the mutations reach the payload decoder behind a
//! valid signature.

use std::time::{Duration, SystemTime};

use estuary_django::signing::{Signer, b62_decode, b64_decode, b64_encode, decode_payload};
use estuary_django::{SIGNED_COOKIES_SALT, SessionAuth, cookie_value};

use crate::{Trail, text};

const SECRET: &str = "fuzz-secret-key";
const FALLBACK: &str = "fuzz-old-secret-key";

fn session_fields(trail: &mut Trail, value: &serde_json::Value) {
    let auth = SessionAuth::from_session_data(value);
    trail.note(auth.is_some());
}

/// Runs one input.
pub fn run(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let raw = text(data);
    let signer = Signer::new(SIGNED_COOKIES_SALT, [SECRET, FALLBACK]);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);

    // The cookie header, as a browser would send it.
    let cookie = cookie_value(&raw, "sessionid");
    trail.note(cookie.is_some());
    if let Some(value) = &cookie {
        let loaded = signer.loads(value, Some(Duration::from_secs(1_209_600)), now);
        trail.note(loaded.as_ref().map_err(std::mem::discriminant).err());
        if let Ok(data) = &loaded {
            session_fields(&mut trail, data);
        }
    }

    // The payload decoder on its own (base64, the `.` zlib prefix, JSON).
    match decode_payload(&raw) {
        Ok(value) => session_fields(&mut trail, &value),
        Err(e) => trail.note(std::mem::discriminant(&e)),
    }

    // A value signed with the secret reads back as itself; read as a
    // timestamped value it reaches the payload behind the signature.
    let signed = signer.sign_with_first(&raw);
    assert_eq!(
        signer.unsign(&signed).ok(),
        Some(raw.as_ref()),
        "a signed value unsigns"
    );
    match signer.loads(&signed, None, now) {
        Ok(value) => {
            trail.note("signed payload decoded");
            session_fields(&mut trail, &value);
        }
        Err(e) => trail.note(std::mem::discriminant(&e)),
    }
    // Another key's signature is refused.
    let forged = Signer::new(SIGNED_COOKIES_SALT, ["another key"]).sign_with_first(&raw);
    assert!(signer.unsign(&forged).is_err(), "a forged signature is refused");

    // The encodings round-trip.
    if let Some(bytes) = b64_decode(&raw) {
        assert_eq!(b64_decode(&b64_encode(&bytes)), Some(bytes), "base64 round-trips");
    }
    trail.note(b62_decode(&raw).is_some());
    trail.finish()
}

/// Tokens of cookies, Django's signed values and session data.
pub const DICTIONARY: &[&[u8]] = &[
    b"sessionid=",
    b"; ",
    b"\"",
    b":",
    b".",
    b"eJ",
    b"eyJ",
    b"_auth_user_id",
    b"_auth_user_backend",
    b"_auth_user_hash",
    b"django.contrib.auth.backends.ModelBackend",
    b"{\"_auth_user_id\":\"1\"}",
    b"1q2w3e",
    b"==",
    b"-_",
    b"\\054",
];
