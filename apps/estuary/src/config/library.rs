//! The configuration as the library's settings types: what the server is
//! built with (the router's and the channel layer's are `[websocket]`'s and
//! `[layer]`'s own, `WebSocketSettings::ws_settings` and `LayerSettings`).

use anyhow::bail;
use estuary::server::{AllowedHosts, ServerConfig, TrustedProxies};

use super::{Bind, Config};

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

    /// The server-wide settings (timeouts, proxies, connection limits).
    pub fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let proxies = self.trusted_proxies()?;
        self.server
            .server_config(proxies)
            .map_err(|e| anyhow::anyhow!("server.{e}"))
    }
}
