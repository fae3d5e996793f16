//! Log lines for refusals an outsider can trigger, one a second at most.

use std::time::{Duration, Instant};

use estuary_core::Throttle;

static HOST: Throttle = Throttle::new(Duration::from_secs(1));

/// A request refused for its `Host` header.
pub(crate) fn refused_host(host: Option<&str>) {
    if let Some(held_back) = HOST.allow(Instant::now()) {
        tracing::warn!(
            host = host.unwrap_or("<missing>"),
            held_back,
            "request refused: Host not in allowed_hosts (add the name to allowed_hosts if this server should answer to it)"
        );
    }
}
