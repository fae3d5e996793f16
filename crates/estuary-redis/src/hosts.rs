//! `redis` of [`LayerSettings`](crate::LayerSettings) as channels_redis's
//! `hosts` holds it: URLs, and Sentinel tables written as
//! `redis+sentinel://` URLs.

use serde::{Deserialize, Deserializer};

use crate::sentinel::{SCHEME, escape};

/// A sentinel as channels_redis lists it: `("10.0.0.1", 26379)` (an array
/// here) or `"10.0.0.1:26379"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Address {
    Text(String),
    Pair(String, u16),
}

/// channels_redis's `sentinel_kwargs`: how to log in to the sentinels.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SentinelKwargs {
    username: Option<String>,
    password: Option<String>,
}

/// A `hosts` entry with `sentinels` and `master_name`, and the primary's
/// `username`, `password` and `db` beside them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SentinelTable {
    sentinels: Vec<Address>,
    master_name: String,
    #[serde(default)]
    sentinel_kwargs: SentinelKwargs,
    username: Option<String>,
    password: Option<String>,
    #[serde(default)]
    db: u32,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Host {
    Url(String),
    Sentinel(SentinelTable),
}

impl SentinelTable {
    /// The same host as a `redis+sentinel://` URL.
    fn url(&self) -> String {
        let mut url = String::from(SCHEME);
        if self.username.is_some() || self.password.is_some() {
            url.push_str(&escape(self.username.as_deref().unwrap_or("")));
            if let Some(password) = &self.password {
                url.push(':');
                url.push_str(&escape(password));
            }
            url.push('@');
        }
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|address| match address {
                Address::Text(text) => text.clone(),
                Address::Pair(host, port) => format!("{host}:{port}"),
            })
            .collect();
        url.push_str(&sentinels.join(","));
        url.push('/');
        url.push_str(&escape(&self.master_name));
        url.push_str(&format!("/{}", self.db));
        let mut query = Vec::new();
        if let Some(user) = &self.sentinel_kwargs.username {
            query.push(format!("sentinel_username={}", escape(user)));
        }
        if let Some(password) = &self.sentinel_kwargs.password {
            query.push(format!("sentinel_password={}", escape(password)));
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }
}

/// Reads `redis`: each entry a URL, or a Sentinel table made its URL.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    use serde::de::Error;
    let hosts = Vec::<Host>::deserialize(deserializer).map_err(|_| {
        D::Error::custom(
            "expected a list of hosts, each a URL or a table with sentinels and master_name \
             (and optionally sentinel_kwargs = { username, password }, username, password, db)",
        )
    })?;
    Ok(hosts
        .into_iter()
        .map(|host| match host {
            Host::Url(url) => url,
            Host::Sentinel(table) => table.url(),
        })
        .collect())
}
