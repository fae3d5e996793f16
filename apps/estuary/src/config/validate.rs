//! What serde cannot check: ranges, and keys that depend on each other.

use super::{Config, Invalid};

fn invalid(key: &'static str, message: impl std::fmt::Display) -> Invalid {
    Invalid {
        key,
        error: anyhow::anyhow!("{message}"),
    }
}

impl Config {
    /// Checks every value against its range, and the keys that go together.
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let key = |key: &'static str| move |error: anyhow::Error| Invalid { key, error };
        self.bind().map_err(key("bind"))?;
        self.allowed_hosts().map_err(key("allowed_hosts"))?;
        self.trusted_proxies().map_err(key("trusted_proxies"))?;
        self.auth.validate()?;
        let (w, s, l) = (&self.websocket, &self.server, &self.layer);
        if w.max_message_size < 128 {
            return Err(invalid(
                "websocket.max_message_size",
                "websocket.max_message_size must be at least 128 bytes",
            ));
        }
        if !(256..=1024 * 1024).contains(&w.read_buffer_size) {
            return Err(invalid(
                "websocket.read_buffer_size",
                "websocket.read_buffer_size must be between 256 bytes and 1 MiB",
            ));
        }
        if w.outbound_capacity == 0 {
            return Err(invalid(
                "websocket.outbound_capacity",
                "websocket.outbound_capacity must be at least 1",
            ));
        }
        if w.max_event_size < 1024 {
            return Err(invalid(
                "websocket.max_event_size",
                "websocket.max_event_size must be at least 1024 bytes",
            ));
        }
        if w.outbound_bytes < 1024 {
            return Err(invalid(
                "websocket.outbound_bytes",
                "websocket.outbound_bytes must be at least 1024 bytes",
            ));
        }
        if l.max_bytes < w.max_event_size {
            return Err(invalid(
                "layer.max_bytes",
                "layer.max_bytes must be at least websocket.max_event_size (one event must fit)",
            ));
        }
        for (name, rate) in [
            ("websocket.rate_limit", w.rate_limit),
            ("websocket.rate_limit_per_ip", w.rate_limit_per_ip),
            ("websocket.control_rate_limit", w.control_rate_limit),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return Err(invalid(
                    name,
                    format_args!("{name} must be a number of at least 0 (0: no limit)"),
                ));
            }
        }
        s.check()
            .map_err(|e| invalid("server", format_args!("server.{e}")))?;
        l.check()
            .map_err(|e| invalid("layer", format_args!("layer.{e}")))?;
        Ok(())
    }
}
