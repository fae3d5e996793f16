//! `estuary check-config`: the configuration as a file `--config` reads
//! back, its secrets redacted unless asked for.

use super::Config;
use super::Invalid;

/// What `estuary check-config` prints in place of a secret (and of the
/// password in a Redis or database URL). A file with it refuses to load,
/// naming the key, so that a printed configuration is never served with a
/// placeholder for a secret.
pub const REDACTED: &str = "<redacted>";

/// Whether [`Config::to_toml`] prints the secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Each secret as [`REDACTED`] (`check-config`'s default).
    Redact,
    /// The secrets as they are (`check-config --show-secrets`).
    Show,
}

/// How much of a secret field is secret.
#[derive(Clone, Copy)]
enum Shape {
    /// The whole value.
    Whole,
    /// The password of a URL (`redis://:PASSWORD@host`, `?password=`).
    UrlPassword,
}

/// `url` with its password (after `user:` before `@`, or a `password=`
/// query parameter) replaced by [`REDACTED`], for logs and printing.
///
/// ```
/// use estuary_cli::config::redact_url;
///
/// assert_eq!(redact_url("redis://:pw@10.0.0.1:6379/0"), "redis://:<redacted>@10.0.0.1:6379/0");
/// assert_eq!(redact_url("postgres://me:pw@db/x?password=pw"), "postgres://me:<redacted>@db/x?password=<redacted>");
/// assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
/// assert_eq!(
///     redact_url("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/0?sentinel_password=spw"),
///     "redis+sentinel://:<redacted>@s1:26379,s2:26379/mymaster/0?sentinel_password=<redacted>"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let start = scheme_end + 3 + colon + 1;
                out.replace_range(start..scheme_end + 3 + at, REDACTED);
            }
        }
    }
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let tail = tail
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => {
                    format!("{name}={REDACTED}")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{tail}");
    }
    out
}

impl Config {
    /// Every secret, with its key and how much of it is secret.
    fn secrets_mut(&mut self) -> Vec<(&'static str, Shape, &mut String)> {
        let mut secrets: Vec<(&'static str, Shape, &mut String)> = Vec::new();
        if let Some(token) = &mut self.push_token {
            secrets.push(("push_token", Shape::Whole, token));
        }
        for key in &mut self.layer.encryption_keys {
            secrets.push(("layer.encryption_keys", Shape::Whole, key));
        }
        for url in &mut self.layer.redis {
            secrets.push(("layer.redis", Shape::UrlPassword, url));
        }
        let auth = &mut self.auth;
        if let Some(secret) = auth.jwt.as_mut().and_then(|jwt| jwt.hmac_secret.as_mut()) {
            secrets.push(("auth.jwt.hmac_secret", Shape::Whole, secret));
        }
        if let Some(django) = &mut auth.django {
            secrets.push(("auth.django.secret_key", Shape::Whole, &mut django.secret_key));
            for key in &mut django.secret_key_fallbacks {
                secrets.push(("auth.django.secret_key_fallbacks", Shape::Whole, key));
            }
            secrets.push(("auth.django.database", Shape::UrlPassword, &mut django.database));
        }
        if let Some(callback) = &mut auth.callback {
            secrets.push(("auth.callback.secret", Shape::Whole, &mut callback.secret));
        }
        for route in &mut self.routes {
            if let Some(secret) = &mut route.relay.secret {
                secrets.push(("routes.secret", Shape::Whole, secret));
            }
        }
        secrets
    }

    /// A copy with every secret replaced by [`REDACTED`] (the passwords of
    /// URLs only), for printing.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for (_, shape, value) in copy.secrets_mut() {
            *value = match shape {
                Shape::Whole => REDACTED.to_owned(),
                Shape::UrlPassword => redact_url(value),
            };
        }
        copy
    }

    /// The configuration as TOML that `--config` reads back, after a
    /// comment saying what it is; with [`Secrets::Redact`] every secret is
    /// [`REDACTED`], and the file refuses to load until they are put back.
    ///
    /// ```
    /// use estuary_cli::config::{Config, Layers, Secrets};
    ///
    /// let config = Config { push_token: Some("s3cret".into()), ..Config::default() };
    /// let printed = config.to_toml(Secrets::Show)?;
    /// let file = Some(("printed.toml".into(), printed.clone()));
    /// let again = Config::from_layers(Layers { file, ..Layers::default() })?;
    /// assert_eq!(again, config);
    /// assert!(config.to_toml(Secrets::Redact)?.contains("push_token = \"<redacted>\""));
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn to_toml(&self, secrets: Secrets) -> anyhow::Result<String> {
        let config = match secrets {
            Secrets::Redact => self.redacted(),
            Secrets::Show => self.clone(),
        };
        let body = toml::to_string_pretty(&config)?;
        let note = match secrets {
            Secrets::Redact => {
                "# Secrets are shown as \"<redacted>\": put them back before loading this file\n\
                 # (it refuses to load until then), or print with --show-secrets.\n"
            }
            Secrets::Show => "# Secrets are shown: keep this file as private as they are.\n",
        };
        Ok(format!(
            "# The effective configuration of estuary serve (defaults, the file, ESTUARY_*\n\
             # variables, flags), as a file that --config reads back.\n{note}\n{body}"
        ))
    }

    /// An error naming the first secret that is [`REDACTED`] (a printed
    /// configuration loaded without its secrets put back).
    pub(crate) fn refuse_redacted(&self) -> Result<(), Invalid> {
        let mut copy = self.clone();
        for (key, _, value) in copy.secrets_mut() {
            if value.contains(REDACTED) {
                return Err(Invalid {
                    key: key.into(),
                    error: anyhow::anyhow!(
                        "{key} holds the placeholder {REDACTED:?} that `estuary check-config` prints in \
                         place of a secret: put the secret back, or print with --show-secrets"
                    ),
                });
            }
        }
        Ok(())
    }
}
