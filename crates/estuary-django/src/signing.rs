//! Django's `django.core.signing` and `django.utils.crypto.salted_hmac`, verify side only.
//!
//! Every function here is pure and total: it returns an error for any input it cannot
//! accept and never panics, so a fuzz target can call it with arbitrary bytes.
//!
//! The formats, as written by Django 5.2 (`django/core/signing.py`):
//!
//! * `Signer.sign(value)` is `value + ":" + b64(HMAC(key, value))`, where the HMAC is
//!   [`salted_hmac`] with key salt `salt + "signer"` and SHA-256.
//! * `TimestampSigner.sign(value)` signs `value + ":" + base62(unix seconds)`.
//! * `signing.dumps(obj, salt, compress)` signs, with a `TimestampSigner`, the URL-safe
//!   base64 (padding stripped) of the compact JSON of `obj`; when zlib made the JSON
//!   shorter the payload is the compressed bytes and the base64 starts with `.`.
//! * Unsigning tries the current secret, then each fallback (`SECRET_KEY_FALLBACKS`),
//!   comparing signatures in constant time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// Decompressed session payloads larger than this are refused (a zip bomb is signed
/// data only if the secret leaked, but a bound costs nothing).
const MAX_DECOMPRESSED: u64 = 1 << 20;

const BASE62_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The digest behind a [`salted_hmac`]: Django's `algorithm` argument.
///
/// ```
/// use estuary_django::signing::Algorithm;
/// assert_ne!(Algorithm::Sha1, Algorithm::Sha256);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `"sha1"`: `salted_hmac`'s default, used by legacy formats.
    Sha1,
    /// `"sha256"`: what `Signer` and the session auth hash use.
    Sha256,
}

/// Why a signed value was refused.
///
/// ```
/// use estuary_django::signing::{BadSignature, Signer};
/// let signer = Signer::new("django.core.signing", ["secret"]);
/// assert_eq!(signer.unsign("no separator"), Err(BadSignature::Malformed));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSignature {
    /// The value is not of the shape `value:signature` (or `value:timestamp:signature`).
    #[error("the signed value is malformed")]
    Malformed,
    /// No secret (current or fallback) produced this signature.
    #[error("the signature does not match any secret")]
    Mismatch,
    /// The signature is good but older than `max_age`.
    #[error("the signature is {age_secs} s old, more than the {max_age_secs} s allowed")]
    Expired {
        /// Seconds since the value was signed.
        age_secs: u64,
        /// The allowed age.
        max_age_secs: u64,
    },
    /// The signature is good but the payload is not base64, zlib or JSON as expected.
    #[error("the signed payload cannot be decoded")]
    BadPayload,
}

/// Django's `salted_hmac(key_salt, value, secret, algorithm=...)`, returning the digest.
///
/// The HMAC key is `hash(key_salt + secret)`, the message is `value`.
///
/// ```
/// use estuary_django::signing::{salted_hmac, Algorithm};
/// let mac = salted_hmac(Algorithm::Sha256, "salt", b"value", b"secret");
/// assert_eq!(mac.len(), 32);
/// assert_eq!(salted_hmac(Algorithm::Sha1, "salt", b"value", b"secret").len(), 20);
/// ```
pub fn salted_hmac(algorithm: Algorithm, key_salt: &str, value: &[u8], secret: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    match algorithm {
        Algorithm::Sha1 => {
            let mut hasher = sha1::Sha1::new();
            hasher.update(key_salt.as_bytes());
            hasher.update(secret);
            let key = hasher.finalize();
            // A 20-byte key is always accepted by HMAC.
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&key) else {
                return Vec::new();
            };
            mac.update(value);
            mac.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha256 => {
            let mut hasher = sha2::Sha256::new();
            hasher.update(key_salt.as_bytes());
            hasher.update(secret);
            let key = hasher.finalize();
            let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&key) else {
                return Vec::new();
            };
            mac.update(value);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

/// Compares two byte strings in constant time (for equal lengths), as Django's
/// `constant_time_compare`.
///
/// ```
/// use estuary_django::signing::constant_time_eq;
/// assert!(constant_time_eq(b"abc", b"abc"));
/// assert!(!constant_time_eq(b"abc", b"abd"));
/// assert!(!constant_time_eq(b"abc", b"ab"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Django's `b64_encode`: URL-safe base64 with the `=` padding stripped.
///
/// ```
/// assert_eq!(estuary_django::signing::b64_encode(b"\xff\xfe"), "__4");
/// ```
pub fn b64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Django's `b64_decode`: URL-safe base64, padding optional.
///
/// Python's decoder skips characters outside the alphabet; this one refuses them,
/// which only matters for values that were not produced by Django.
///
/// ```
/// assert_eq!(estuary_django::signing::b64_decode("__4").unwrap(), b"\xff\xfe");
/// assert_eq!(estuary_django::signing::b64_decode("__4=").unwrap(), b"\xff\xfe");
/// assert!(estuary_django::signing::b64_decode("*").is_none());
/// ```
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// Django's `b62_decode` (timestamps of `TimestampSigner`), with a leading `-` for
/// negatives. `None` for an empty string, a foreign digit or an overflow.
///
/// ```
/// use estuary_django::signing::b62_decode;
/// assert_eq!(b62_decode("0"), Some(0));
/// assert_eq!(b62_decode("z"), Some(61));
/// assert_eq!(b62_decode("10"), Some(62));
/// assert_eq!(b62_decode("-1"), Some(-1));
/// assert_eq!(b62_decode("!"), None);
/// ```
pub fn b62_decode(text: &str) -> Option<i64> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => (-1i64, rest),
        None => (1i64, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for byte in digits.bytes() {
        let digit = BASE62_ALPHABET.iter().position(|&c| c == byte)?;
        value = value.checked_mul(62)?.checked_add(digit as i64)?;
    }
    Some(sign * value)
}

/// Django's `Signer` (unsign side): a salt and the secrets to try, newest first.
///
/// ```
/// use estuary_django::signing::Signer;
/// // Django: Signer(key="secret", salt="my-salt").sign("hello")
/// let signer = Signer::new("my-salt", ["secret"]);
/// let signed = signer.sign_with_first("hello");
/// assert_eq!(signer.unsign(&signed).unwrap(), "hello");
/// assert!(Signer::new("my-salt", ["other"]).unsign(&signed).is_err());
/// // A fallback secret is accepted too.
/// assert!(Signer::new("my-salt", ["new", "secret"]).unsign(&signed).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Signer {
    salt: String,
    secrets: Vec<Vec<u8>>,
}

impl Signer {
    /// A signer with `salt` trying each of `secrets` in order (`SECRET_KEY`, then
    /// `SECRET_KEY_FALLBACKS`).
    pub fn new<S: AsRef<[u8]>>(salt: impl Into<String>, secrets: impl IntoIterator<Item = S>) -> Self {
        Self {
            salt: salt.into(),
            secrets: secrets.into_iter().map(|s| s.as_ref().to_vec()).collect(),
        }
    }

    fn signature(&self, value: &str, secret: &[u8]) -> String {
        let key_salt = format!("{}signer", self.salt);
        b64_encode(&salted_hmac(
            Algorithm::Sha256,
            &key_salt,
            value.as_bytes(),
            secret,
        ))
    }

    /// Signs `value` with the first secret, as Django's `Signer.sign` (handy in tests).
    pub fn sign_with_first(&self, value: &str) -> String {
        let secret = self.secrets.first().map(Vec::as_slice).unwrap_or_default();
        format!("{value}:{}", self.signature(value, secret))
    }

    /// Django's `Signer.unsign`: the value if one of the secrets signed it.
    pub fn unsign<'a>(&self, signed: &'a str) -> Result<&'a str, BadSignature> {
        let (value, signature) = signed.rsplit_once(':').ok_or(BadSignature::Malformed)?;
        // Every secret is tried, so the time taken does not tell which one matched.
        let mut matched = false;
        for secret in &self.secrets {
            matched |= constant_time_eq(signature.as_bytes(), self.signature(value, secret).as_bytes());
        }
        if matched {
            Ok(value)
        } else {
            Err(BadSignature::Mismatch)
        }
    }

    /// Django's `TimestampSigner.unsign(value, max_age)`: the value and when it was
    /// signed, refusing signatures older than `max_age` (when given) at time `now`.
    pub fn unsign_timestamped<'a>(
        &self,
        signed: &'a str,
        max_age: Option<Duration>,
        now: SystemTime,
    ) -> Result<(&'a str, i64), BadSignature> {
        let inner = self.unsign(signed)?;
        let (value, stamp) = inner.rsplit_once(':').ok_or(BadSignature::Malformed)?;
        let timestamp = b62_decode(stamp).ok_or(BadSignature::Malformed)?;
        if let Some(max_age) = max_age {
            let now_secs = now
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let age = now_secs - timestamp as f64;
            if age > max_age.as_secs_f64() {
                return Err(BadSignature::Expired {
                    age_secs: age as u64,
                    max_age_secs: max_age.as_secs(),
                });
            }
        }
        Ok((value, timestamp))
    }

    /// Django's `signing.loads(signed, salt=..., max_age=...)`: unsigns with a
    /// timestamp, then decodes the payload with [`decode_payload`].
    ///
    /// ```
    /// use estuary_django::signing::Signer;
    /// use std::time::SystemTime;
    /// // Made by Django 5.2:
    /// // signing.dumps({"a": 1}, key="secret", salt="s")
    /// let signed = "eyJhIjoxfQ:1xXnKX:EJSdIsalizyJJwlPJreQ53uaNPKU41zCUTqiGdTM73g";
    /// let signer = Signer::new("s", ["secret"]);
    /// let value = signer.loads(signed, None, SystemTime::now()).unwrap();
    /// assert_eq!(value["a"], 1);
    /// ```
    pub fn loads(
        &self,
        signed: &str,
        max_age: Option<Duration>,
        now: SystemTime,
    ) -> Result<serde_json::Value, BadSignature> {
        let (payload, _) = self.unsign_timestamped(signed, max_age, now)?;
        decode_payload(payload)
    }
}

/// Decodes the payload of `signing.dumps` once its signature is checked: optional `.`
/// (zlib), URL-safe base64, JSON read as Latin-1 (Django's `JSONSerializer`).
///
/// Pure and total: any input gives a value or [`BadSignature::BadPayload`].
///
/// ```
/// use estuary_django::signing::decode_payload;
/// assert_eq!(decode_payload("eyJhIjoxfQ").unwrap()["a"], 1);
/// assert!(decode_payload(".garbage").is_err());
/// ```
pub fn decode_payload(payload: &str) -> Result<serde_json::Value, BadSignature> {
    let (compressed, b64) = match payload.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, payload),
    };
    let mut data = b64_decode(b64).ok_or(BadSignature::BadPayload)?;
    if compressed {
        use std::io::Read as _;
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(data.as_slice())
            .take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out)
            .map_err(|_| BadSignature::BadPayload)?;
        if out.len() as u64 > MAX_DECOMPRESSED {
            return Err(BadSignature::BadPayload);
        }
        data = out;
    }
    // Django decodes the bytes as Latin-1 before parsing the JSON.
    let text: String = data.iter().map(|&b| b as char).collect();
    serde_json::from_str(&text).map_err(|_| BadSignature::BadPayload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b62_rejects_overflow_and_empty() {
        assert_eq!(b62_decode(""), None);
        assert_eq!(b62_decode("-"), None);
        assert_eq!(b62_decode("zzzzzzzzzzzzzzzzzzzzzz"), None);
        // Django: b62_encode(1764608520) == "1vQ7Hk"
        assert_eq!(b62_decode("1vQ7Hk"), Some(1_764_608_520));
    }

    #[test]
    fn unsign_never_panics_on_odd_input() {
        let signer = Signer::new("s", ["k"]);
        for input in ["", ":", "::", "a:b:c", ".:", "\u{0}:\u{ffff}", "é:é:é"] {
            let _ = signer.unsign(input);
            let _ = signer.loads(input, Some(Duration::from_secs(1)), SystemTime::now());
            let _ = decode_payload(input);
        }
    }

    #[test]
    fn salted_hmac_matches_django() {
        // Django 5.2: salted_hmac("salt", "value", "secret").hexdigest()
        let hex: String = salted_hmac(Algorithm::Sha1, "salt", b"value", b"secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "a82be9ba6efe61405ee8d2e8a3781c37e103360a");
    }

    #[test]
    fn signer_without_secrets_accepts_nothing() {
        let signer = Signer::new("s", Vec::<String>::new());
        let signed = Signer::new("s", ["k"]).sign_with_first("v");
        assert_eq!(signer.unsign(&signed), Err(BadSignature::Mismatch));
    }
}
