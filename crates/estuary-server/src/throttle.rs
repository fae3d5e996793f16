//! Log lines for refusals an outsider can trigger, one a second at most.

use std::net::SocketAddr;
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

pub(crate) static PER_IP_REFUSED: Throttle = Throttle::new(Duration::from_secs(1));
static UNTRUSTED_FORWARDING: Throttle = Throttle::new(Duration::from_secs(60));

/// A peer that is not a trusted proxy sent `X-Forwarded-For`: either a
/// client lying about its address (ignored), or a proxy the operator forgot
/// to trust, whose clients then all count as one address in every
/// per-address limit. Said once a minute.
pub(crate) fn untrusted_forwarding(peer: Option<SocketAddr>) {
    if let Some(held_back) = UNTRUSTED_FORWARDING.allow(Instant::now()) {
        tracing::warn!(
            ?peer,
            held_back,
            "X-Forwarded-For from a peer not in trusted_proxies: ignored; if this is your reverse \
             proxy, add it to trusted_proxies, or all its clients count as one address in the \
             per-address limits"
        );
    }
}

pub(crate) static HANDSHAKES_REFUSED: Throttle = Throttle::new(Duration::from_secs(1));

pub(crate) fn refused_log(throttle: &Throttle, peer: Option<SocketAddr>, limit: &'static str) {
    if let Some(held_back) = throttle.allow(Instant::now()) {
        tracing::warn!(
            ?peer,
            limit,
            held_back,
            "connection refused: limit reached (if these clients are legitimate, raise the limit named, or the open-file limit for max_connections)"
        );
    }
}
