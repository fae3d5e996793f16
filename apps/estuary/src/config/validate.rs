//! What serde cannot check: ranges, and keys that depend on each other.

use estuary::relay::ConnectMode;

use super::{Config, Invalid};

fn invalid(key: impl Into<String>, message: impl std::fmt::Display) -> Invalid {
    Invalid {
        key: key.into(),
        error: anyhow::anyhow!("{message}"),
    }
}

impl Config {
    /// Checks every value against its range, and the keys that go together.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let key = |key: &'static str| {
            move |error: anyhow::Error| Invalid {
                key: key.into(),
                error,
            }
        };
        self.bind().map_err(key("bind"))?;
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(invalid("tls_key", "tls_cert needs tls_key (--tls-key)")),
            (None, Some(_)) => return Err(invalid("tls_cert", "tls_key needs tls_cert (--tls-cert)")),
            _ => {}
        }
        self.metrics.at().map_err(key("metrics.listen"))?;
        self.log.format().map_err(key("log.format"))?;
        self.allowed_hosts().map_err(key("allowed_hosts"))?;
        self.trusted_proxies().map_err(key("trusted_proxies"))?;
        self.auth.validate()?;
        let (w, s, l) = (&self.websocket, &self.server, &self.layer);
        w.check()
            .map_err(|e| invalid(format!("websocket.{}", e.key()), format_args!("websocket.{e}")))?;
        if l.max_bytes < w.max_event_size {
            return Err(invalid(
                "layer.max_bytes",
                "layer.max_bytes must be at least websocket.max_event_size (one event must fit)",
            ));
        }
        s.check()
            .map_err(|e| invalid(format!("server.{}", e.key()), format_args!("server.{e}")))?;
        l.check()
            .map_err(|e| invalid(format!("layer.{}", e.key()), format_args!("layer.{e}")))?;
        self.validate_chat()?;
        let handshake = std::time::Duration::from_secs(s.handshake_timeout);
        for (at, route) in self.routes.iter().enumerate() {
            route.relay().map_err(|e| {
                invalid(
                    format!("routes[{at}]"),
                    format_args!("routes[{at}] ({}): {e}", route.path),
                )
            })?;
            // The server's timeout covers the whole handshake: past it the
            // relay's own 504 (and its log line) would never come.
            if route.relay.connect == ConnectMode::Worker && route.relay.connect_timeout >= handshake {
                return Err(invalid(
                    format!("routes[{at}].connect_timeout"),
                    format_args!(
                        "routes[{at}] ({}): connect_timeout ({} s) must be less than \
                         server.handshake_timeout ({} s), which covers the whole handshake",
                        route.path,
                        route.relay.connect_timeout.as_secs_f64(),
                        s.handshake_timeout
                    ),
                ));
            }
        }
        Ok(())
    }
}
