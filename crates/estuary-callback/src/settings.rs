//! [`CallbackSettings`]: the callback's configuration as a file holds it
//! (`[auth.callback]` of `estuary serve`), and [`CallbackConfig`]'s serde
//! form.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{CallbackConfig, ConfigError, ConfigErrorKind};

/// A [`CallbackConfig`] as plain values, the form serde reads and writes
/// (`[auth.callback]` of `estuary serve`'s TOML file). Turned into a
/// `CallbackConfig` by [`TryFrom`], which runs the constructor's checks;
/// `CallbackConfig` deserializes through it, so that an invalid value is an
/// error naming its key.
///
/// ```
/// use estuary_callback::{CallbackConfig, CallbackSettings};
///
/// let config: CallbackConfig = toml::from_str(
///     r#"
///     url = "http://127.0.0.1:8000/estuary/connect/"
///     secret = "a secret of 16+ bytes"
///     timeout_ms = 1500
///     cookies = ["sessionid", "csrftoken"]
///     "#,
/// )?;
/// assert_eq!(config.timeout().as_millis(), 1500);
///
/// let bad = r#"url = "http://127.0.0.1:8000/c/"
/// secret = "a secret of 16+ bytes"
/// headers = ["x-forwarded-for"]"#;
/// let error = toml::from_str::<CallbackConfig>(bad).unwrap_err().to_string();
/// assert!(error.contains("headers: header \"x-forwarded-for\" cannot be forwarded"), "{error}");
///
/// // The same values, as plain data.
/// let settings = CallbackSettings::new("http://127.0.0.1:8000/c/", "a secret of 16+ bytes");
/// assert_eq!(settings.timeout_ms, 2000);
/// let config = CallbackConfig::try_from(settings)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackSettings {
    /// The view's URL (`http://`).
    pub url: String,
    /// The shared secret the request is signed with (at least
    /// [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN) bytes).
    pub secret: String,
    /// Milliseconds a handshake may wait for a slot, and then the exchange
    /// may take (default 2000, at least 1); past either, the handshake gets
    /// 503.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Handshake headers forwarded (default `["origin", "user-agent"]`).
    #[serde(default = "default_headers")]
    pub headers: Vec<String>,
    /// Cookies forwarded (default `["sessionid"]`).
    #[serde(default = "default_cookies")]
    pub cookies: Vec<String>,
    /// Callbacks in flight at once (default 256).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Of those, how many the handshakes of one client address may hold or
    /// wait for (an IPv6 address by its /64); one more gets 429 at once, so
    /// that a few addresses cannot starve the others while the application
    /// is slow. Default `max_in_flight / 32` (8), at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_client: Option<usize>,
    /// Seconds between asking again about an open connection's user (a
    /// user no longer admitted is closed with 4401); 0: at the handshake
    /// only (default).
    #[serde(default)]
    pub recheck_every: u64,
}

fn default_timeout_ms() -> u64 {
    2000
}

fn default_headers() -> Vec<String> {
    vec!["origin".into(), "user-agent".into()]
}

fn default_cookies() -> Vec<String> {
    vec!["sessionid".into()]
}

fn default_in_flight() -> usize {
    256
}

impl std::fmt::Debug for CallbackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSettings")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("headers", &self.headers)
            .field("cookies", &self.cookies)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_per_client", &self.max_in_flight_per_client)
            .field("recheck_every", &self.recheck_every)
            .finish()
    }
}

impl CallbackSettings {
    /// A callback to `url` signed with `secret`, the rest by default.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            timeout_ms: default_timeout_ms(),
            headers: default_headers(),
            cookies: default_cookies(),
            max_in_flight: default_in_flight(),
            max_in_flight_per_client: None,
            recheck_every: 0,
        }
    }
}

/// Why [`CallbackSettings`] do not make a [`CallbackConfig`]: the key, and
/// the constructor's error.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {source}")]
pub struct CallbackSettingsError {
    /// The key whose value is wrong (`url`, `secret`, `headers` ...).
    pub key: &'static str,
    /// What is wrong with it.
    #[source]
    pub source: ConfigError,
}

impl TryFrom<CallbackSettings> for CallbackConfig {
    type Error = CallbackSettingsError;

    fn try_from(s: CallbackSettings) -> Result<Self, Self::Error> {
        let at = |key: &'static str| move |source: ConfigError| CallbackSettingsError { key, source };
        if s.timeout_ms == 0 {
            return Err(at("timeout_ms")(ConfigError::zero()));
        }
        if s.max_in_flight == 0 {
            return Err(at("max_in_flight")(ConfigError::zero()));
        }
        if s.max_in_flight_per_client == Some(0) {
            return Err(at("max_in_flight_per_client")(ConfigError::zero()));
        }
        let mut config = CallbackConfig::new(&s.url, &s.secret)
            .map_err(|e| match e.kind() {
                ConfigErrorKind::ShortSecret => at("secret")(e),
                _ => at("url")(e),
            })?
            .with_timeout(Duration::from_millis(s.timeout_ms))
            .forward_headers(&s.headers)
            .map_err(at("headers"))?
            .forward_cookies(s.cookies)
            .map_err(at("cookies"))?
            .with_max_in_flight(s.max_in_flight)
            .with_recheck_every((s.recheck_every > 0).then(|| Duration::from_secs(s.recheck_every)));
        if let Some(max) = s.max_in_flight_per_client {
            config = config.with_max_in_flight_per_client(max);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "url = \"http://127.0.0.1:8000/c/\"\nsecret = \"a secret of 16+ bytes\"\n";

    /// The error of `BASE` with `extra` lines, as text.
    fn error(extra: &str) -> String {
        match toml::from_str::<CallbackConfig>(&format!("{BASE}{extra}")) {
            Ok(_) => panic!("{extra:?} was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn an_invalid_value_names_its_key() {
        assert!(toml::from_str::<CallbackConfig>(BASE).is_ok());
        let short = toml::from_str::<CallbackConfig>("url = \"http://h/\"\nsecret = \"short\"\n");
        assert!(
            short
                .unwrap_err()
                .to_string()
                .contains("secret: the callback secret must be")
        );
        let https =
            toml::from_str::<CallbackConfig>("url = \"https://h/\"\nsecret = \"a secret of 16+ bytes\"\n");
        assert!(https.unwrap_err().to_string().contains("url: callback URL"));
        assert!(error("timeout_ms = 0").contains("timeout_ms: must be at least 1"));
        assert!(error("max_in_flight = 0").contains("max_in_flight: must be at least 1"));
        assert!(
            error("max_in_flight_per_client = 0").contains("max_in_flight_per_client: must be at least 1")
        );
        assert!(error("cookies = [\"a b\"]").contains("cookies: \"a b\" is not a cookie name"));
        assert!(error("headers = [\"host\"]").contains("headers: header \"host\""));
        assert!(error("timeout = 3").contains("unknown field `timeout`"));
    }

    #[test]
    fn settings_round_trip_and_become_the_config() {
        let mut settings = CallbackSettings::new("http://127.0.0.1:8000/c/", "a secret of 16+ bytes");
        settings.max_in_flight = 16;
        settings.max_in_flight_per_client = Some(4);
        settings.recheck_every = 30;
        let text = toml::to_string(&settings).unwrap();
        assert_eq!(toml::from_str::<CallbackSettings>(&text).unwrap(), settings);
        let config = CallbackConfig::try_from(settings).unwrap();
        assert_eq!(config.max_in_flight_per_client(), 4);
        assert_eq!(config.recheck_every, Some(Duration::from_secs(30)));
        assert_eq!(config.timeout(), Duration::from_secs(2));
    }
}
