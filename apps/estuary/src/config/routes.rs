//! `[[routes]]`: WebSocket routes whose logic runs in the application (Django
//! workers on a named channel, or an HTTP endpoint), relayed by Estuary as
//! `docs/WORKERS.md` specifies. No Rust is written for them.
//!
//! ```toml
//! [[routes]]
//! path = "ws/orders/<int:order_id>/"   # Django path() syntax and converters
//! channel = "orders"                   # the worker channel; or http = "..." with secret = "..."
//! auth = "required"                    # anonymous handshakes get 401
//! groups = ["orders.{order_id}", "user.{user.id}"]
//! callback = false                     # do not ask [auth.callback] for this route
//! ```
//!
//! Every other key is the relay's ([`RelaySettings`]): `connect`,
//! `connect_timeout`, `reply_timeout`, `max_pending`, `max_pending_bytes`,
//! `max_in_flight`, `max_state_bytes`, `busy_frame`, `query`.
//!
//! **`connect = "accept"` lets the client pick its groups.** Estuary joins
//! the route's `groups` before `websocket.connect`, and with `connect =
//! "accept"` it accepts at once: a group named from the path or the query
//! (`chat_{room}`, `orders.{query.id}`) then delivers its broadcasts to
//! whoever asks for that path, before your code has decided anything. Keep
//! `connect = "worker"` (the default) where a group is private, or name it
//! from `{user.id}` only; `estuary serve` warns at startup about such a
//! route. With `connect = "worker"`, `connect_timeout` must be less than
//! `server.handshake_timeout` (the server would give up first), and a
//! `channel` route needs the Redis layer that your Django workers share
//! (on the in-memory layer nothing outside the process reads it; `estuary
//! serve` warns).

use estuary::relay::{ConnectMode, Relay, RelaySettings};
use estuary::server::PathPattern;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Who may open a relayed route's WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    /// Anyone (the application sees `user: null` for an anonymous visitor).
    #[default]
    Optional,
    /// A signed-in user only: an anonymous handshake gets 401.
    Required,
}

/// One `[[routes]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// The path pattern, in Django's `path()` syntax (`ws/chat/<str:room>/`).
    pub path: String,
    /// Whether a signed-in user is required.
    pub auth: RouteAuth,
    /// Groups every connection joins before the application's `connect`,
    /// templated from path parameters (`{room}`), declared query
    /// parameters (`{query.name}`) and the user (`{user.id}`, `{user.name}`).
    pub groups: Vec<String>,
    /// Whether `[auth.callback]` is asked for this route's handshakes
    /// (unset: asked, when a callback is configured).
    pub callback: Option<bool>,
    /// Where the events go and the relay's bounds.
    pub relay: RelaySettings,
}

impl RouteConfig {
    /// The path pattern, compiled.
    pub fn pattern(&self) -> anyhow::Result<PathPattern> {
        PathPattern::path(&self.path).map_err(|e| anyhow::anyhow!("path {:?}: {e}", self.path))
    }

    /// Whether the connect callback is asked for this route.
    pub fn asks_callback(&self) -> bool {
        self.callback.unwrap_or(true)
    }

    /// The route's relay, checked: its target, bounds, group templates
    /// against the path's parameters and the declared query parameters.
    pub fn relay(&self) -> anyhow::Result<Relay> {
        self.pattern()?;
        let relay = self
            .relay
            .builder()
            .and_then(|builder| {
                builder
                    .route(self.path.clone())
                    .name(self.path.clone())
                    .groups(self.groups.iter().cloned())
                    .build()
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(relay)
    }
}

impl RouteConfig {
    /// What `estuary serve` warns about at startup for this route (the
    /// `at`th): a `channel` route on the in-memory layer (`in_memory`),
    /// which no Django worker can read, and `connect = "accept"` with
    /// groups named from the path or query, which any client joins by
    /// choosing them before the application decides.
    ///
    /// ```
    /// use estuary_cli::config::RouteConfig;
    ///
    /// let route: RouteConfig = toml::from_str(
    ///     "path = \"ws/chat/<room>/\"\nchannel = \"chat\"\nconnect = \"accept\"\ngroups = [\"chat_{room}\"]",
    /// )
    /// .unwrap();
    /// let warnings = route.warnings(0, true);
    /// assert_eq!(warnings.len(), 2, "{warnings:?}");
    /// assert!(warnings[0].contains("in-memory") && warnings[1].contains("chat_{room}"));
    /// ```
    pub fn warnings(&self, at: usize, in_memory: bool) -> Vec<String> {
        let mut warnings = Vec::new();
        let Ok(relay) = self.relay() else {
            return warnings;
        };
        let route = format!("routes[{at}] ({})", self.path);
        if in_memory && let Some(channel) = &self.relay.channel {
            warnings.push(format!(
                "{route}: channel = {channel:?} is on the in-memory channel layer, which no Django \
                 worker can read: handshakes will get 504. Set [layer] redis to the Redis your \
                 workers share"
            ));
        }
        let chosen: Vec<&str> = relay
            .groups()
            .iter()
            .filter(|g| g.is_client_chosen())
            .map(|g| g.as_str())
            .collect();
        if relay.connect_mode() == ConnectMode::Accept && !chosen.is_empty() {
            warnings.push(format!(
                "{route}: connect = \"accept\" with groups named from the path or query ({}): any \
                 client joins them, and hears their broadcasts, by choosing those values, before \
                 your code decides. Use connect = \"worker\" to check in connect(), or name \
                 private groups from {{user.id}}",
                chosen.join(", ")
            ));
        }
        warnings
    }
}

/// The keys of a route that are not the relay's.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteKeys {
    path: String,
    #[serde(default)]
    auth: RouteAuth,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    callback: Option<bool>,
}

const ROUTE_KEYS: [&str; 4] = ["path", "auth", "groups", "callback"];

impl<'de> Deserialize<'de> for RouteConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let mut own = toml::Table::new();
        for key in ROUTE_KEYS {
            if let Some(value) = table.remove(key) {
                own.insert(key.to_owned(), value);
            }
        }
        let keys: RouteKeys = own.try_into().map_err(D::Error::custom)?;
        // The rest are the relay's; an unknown key is an error there, with
        // the route's own keys named too.
        let relay: RelaySettings = table.try_into().map_err(|e: toml::de::Error| {
            D::Error::custom(format!(
                "{} (a route also takes {})",
                e.message(),
                ROUTE_KEYS.join(", ")
            ))
        })?;
        Ok(Self {
            path: keys.path,
            auth: keys.auth,
            groups: keys.groups,
            callback: keys.callback,
            relay,
        })
    }
}

impl Serialize for RouteConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let keys = RouteKeys {
            path: self.path.clone(),
            auth: self.auth,
            groups: self.groups.clone(),
            callback: self.callback,
        };
        let mut table = toml::Table::try_from(&keys).map_err(S::Error::custom)?;
        let relay = toml::Table::try_from(&self.relay).map_err(S::Error::custom)?;
        table.extend(relay);
        table.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RouteConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn a_route_reads_its_own_keys_and_the_relays() {
        let route = parse(
            r#"
            path = "ws/orders/<int:order_id>/"
            channel = "orders"
            auth = "required"
            groups = ["orders.{order_id}"]
            callback = false
            reply_timeout = 5
            query = { lang = "en" }
            "#,
        )
        .unwrap();
        assert_eq!(route.auth, RouteAuth::Required);
        assert!(!route.asks_callback());
        assert_eq!(route.relay.channel.as_deref(), Some("orders"));
        assert_eq!(route.relay.reply_timeout, std::time::Duration::from_secs(5));
        assert_eq!(route.relay().unwrap().name(), "ws/orders/<int:order_id>/");
        let again: RouteConfig = toml::from_str(&toml::to_string(&route).unwrap()).unwrap();
        assert_eq!(again, route, "it round-trips");
    }

    #[test]
    fn a_channel_on_the_in_memory_layer_and_client_chosen_groups_at_accept_are_warned_of() {
        let route = |text: &str| parse(&format!("path = \"ws/chat/<room>/\"\n{text}")).unwrap();
        let quiet = route("channel = \"chat\"\ngroups = [\"chat_{room}\"]");
        assert!(quiet.warnings(0, false).is_empty());
        let memory = quiet.warnings(0, true);
        assert!(
            memory.len() == 1
                && memory[0].contains("routes[0] (ws/chat/<room>/)")
                && memory[0].contains("in-memory"),
            "{memory:?}"
        );
        let open =
            route("channel = \"chat\"\nconnect = \"accept\"\ngroups = [\"chat_{room}\", \"user.{user.id}\"]");
        let warned = open.warnings(3, false);
        assert!(
            warned.len() == 1 && warned[0].contains("routes[3]") && warned[0].contains("chat_{room}"),
            "{warned:?}"
        );
        assert!(
            !warned[0].contains("user.{user.id}"),
            "the user's own group is fine"
        );
        let own = route("channel = \"chat\"\nconnect = \"accept\"\ngroups = [\"user.{user.id}\"]");
        assert!(own.warnings(0, false).is_empty());
    }

    #[test]
    fn mistakes_are_named() {
        let unknown = parse("path = \"ws/\"\nchanel = \"x\"").unwrap_err().to_string();
        assert!(
            unknown.contains("chanel") && unknown.contains("path, auth"),
            "{unknown}"
        );
        let template = parse("path = \"ws/<room>/\"\nchannel = \"c\"\ngroups = [\"chat_{rom}\"]")
            .unwrap()
            .relay()
            .unwrap_err()
            .to_string();
        assert!(template.contains("rom"), "{template}");
        let neither = parse("path = \"ws/\"").unwrap().relay().unwrap_err().to_string();
        assert!(neither.contains("channel"), "{neither}");
        let pattern = parse("path = \"ws/<bad:x>/\"\nchannel = \"c\"")
            .unwrap()
            .relay()
            .unwrap_err()
            .to_string();
        assert!(pattern.contains("ws/<bad:x>/"), "{pattern}");
    }
}
