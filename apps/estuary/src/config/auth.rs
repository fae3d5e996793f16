//! `[auth]`: who is connecting (a JWT, Django's session, or the
//! application's connect callback). Each table is the library's own serde
//! form ([`JwtSettings`], [`DjangoSettings`], [`CallbackSettings`]).

use estuary_callback::{CallbackConfig, CallbackSettings};
use estuary_django::{DjangoConfig, DjangoSettings};
use estuary_jwt::{JwtConfig, JwtSettings};
use serde::{Deserialize, Serialize};

use super::Invalid;

/// `[auth]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Every WebSocket route needs an authenticated user (401 without one);
    /// otherwise anonymous visitors connect without a user, as in Django.
    pub required: bool,
    /// Reads Django's session cookie (`[auth.django]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub django: Option<DjangoSettings>,
    /// Reads a JWT (`[auth.jwt]`); tried before Django's session or the
    /// callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
    /// Asks the application (`[auth.callback]`); not with `[auth.django]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackSettings>,
}

impl AuthSettings {
    /// Checks what can be checked without connecting anywhere (the JWT key
    /// files are read).
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let key = |key: &'static str| {
            move |error: anyhow::Error| Invalid {
                key: key.into(),
                error,
            }
        };
        if let Some(django) = &self.django {
            DjangoConfig::try_from(django.clone())
                .map_err(|e| key("auth.django")(anyhow::anyhow!("auth.django.{e}")))?;
        }
        if let Some(jwt) = &self.jwt {
            JwtConfig::try_from(jwt.clone()).map_err(|e| key("auth.jwt")(auth_jwt(e)))?;
        }
        if let Some(callback) = &self.callback {
            CallbackConfig::try_from(callback.clone())
                .map_err(|e| key("auth.callback")(anyhow::anyhow!("auth.callback.{e}")))?;
        }
        if self.django.is_some() && self.callback.is_some() {
            return Err(key("auth.callback")(anyhow::anyhow!(
                "[auth.django] and [auth.callback] are two ways to recognise the same visitors: configure one (the callback can answer from Django's own sessions)"
            )));
        }
        if self.required && self.django.is_none() && self.jwt.is_none() && self.callback.is_none() {
            return Err(key("auth.required")(anyhow::anyhow!(
                "auth.required needs a way to authenticate: configure [auth.django], [auth.jwt] or [auth.callback]"
            )));
        }
        Ok(())
    }
}

/// A JWT settings error, under its key in the file.
fn auth_jwt(error: estuary_jwt::JwtSettingsError) -> anyhow::Error {
    match error {
        estuary_jwt::JwtSettingsError::NoKey => anyhow::anyhow!("[auth.jwt] needs a key: {error}"),
        error => anyhow::anyhow!("auth.jwt.{error}"),
    }
}
