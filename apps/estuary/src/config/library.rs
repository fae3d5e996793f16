//! The configuration as the library's settings types: what the router and
//! the server are built with (the channel layer's are `[layer]`'s own,
//! `LayerSettings`).

use std::time::Duration;

use anyhow::bail;
use estuary::server::{AllowedHosts, ServerConfig, TrustedProxies};
use estuary::{AddressRateLimiter, RateLimit, SlowClientPolicy, WsSettings};

use super::{Bind, Config, SlowClient};

impl Config {
    /// The host names the server answers to: `allowed_hosts`, or the
    /// loopback names when it is empty and the server is bound to a
    /// loopback address. An error when it is empty and the server is
    /// reachable from elsewhere (any other address, or a Unix socket behind
    /// a proxy), as Django refuses to run without `ALLOWED_HOSTS`.
    pub fn allowed_hosts(&self) -> anyhow::Result<AllowedHosts> {
        if !self.allowed_hosts.is_empty() {
            return Ok(AllowedHosts::new(&self.allowed_hosts));
        }
        match self.bind()? {
            Bind::Tcp(addr) if addr.ip().is_loopback() => Ok(AllowedHosts::loopback()),
            _ => bail!(
                "allowed_hosts must be set when bound to {}: list the host names clients use \
                 (--allowed-hosts chat.example.com or ESTUARY_ALLOWED_HOSTS), or \"*\" when a \
                 proxy in front checks Host",
                self.bind
            ),
        }
    }

    /// The parsed trusted proxies.
    pub fn trusted_proxies(&self) -> anyhow::Result<TrustedProxies> {
        Ok(TrustedProxies::new(&self.trusted_proxies)?)
    }

    /// `websocket.slow_client` and `websocket.slow_client_grace` as the
    /// library's policy.
    pub fn slow_client_policy(&self) -> SlowClientPolicy {
        match self.websocket.slow_client {
            SlowClient::Drop => SlowClientPolicy::Drop,
            SlowClient::Disconnect => SlowClientPolicy::Disconnect {
                grace: Duration::from_secs(self.websocket.slow_client_grace),
            },
        }
    }

    /// The WebSocket settings for the router.
    pub fn ws_settings(&self) -> WsSettings {
        let w = &self.websocket;
        let mut s = WsSettings {
            max_message_size: w.max_message_size,
            max_frame_size: w.max_message_size,
            read_buffer_size: w.read_buffer_size,
            ..WsSettings::default()
        };
        s.session.outbound_capacity = w.outbound_capacity;
        s.session.ping_interval = (w.ping_interval > 0).then(|| Duration::from_secs(w.ping_interval));
        s.session.ping_timeout = Duration::from_secs(w.ping_timeout);
        s.session.slow_client = self.slow_client_policy();
        s.session.rate_limit = (w.rate_limit > 0.0).then_some(RateLimit {
            per_second: w.rate_limit,
            burst: w.rate_burst.max(1),
        });
        s.session.address_rate_limit = (w.rate_limit_per_ip > 0.0).then(|| {
            AddressRateLimiter::new(RateLimit {
                per_second: w.rate_limit_per_ip,
                burst: w.rate_burst_per_ip.max(1),
            })
        });
        s.session.control_rate_limit = (w.control_rate_limit > 0.0).then_some(RateLimit {
            per_second: w.control_rate_limit,
            burst: (w.control_rate_limit * 4.0).ceil().max(1.0) as u32,
        });
        s.session.outbound_bytes = w.outbound_bytes;
        s.session.max_event_size = w.max_event_size;
        s.session.max_groups = w.max_groups.max(1);
        s
    }

    /// The server-wide settings (timeouts, proxies, connection limits).
    pub fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let proxies = self.trusted_proxies()?;
        self.server
            .server_config(proxies)
            .map_err(|e| anyhow::anyhow!("server.{e}"))
    }
}
