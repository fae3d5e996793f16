//! Which peers may tell us the client's address.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

/// The reverse proxies (nginx, a load balancer) whose `X-Forwarded-For` and
/// `X-Real-IP` headers are believed. From any other peer they are ignored, so
/// a client cannot pick its own address.
///
/// ```
/// use estuary_server::TrustedProxies;
///
/// let proxies: TrustedProxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-forwarded-for", "203.0.113.9, 10.1.2.3".parse().unwrap());
/// let client = proxies.client("127.0.0.1:5000".parse().unwrap(), &headers);
/// assert_eq!(client.ip().to_string(), "203.0.113.9");
///
/// let direct = proxies.client("198.51.100.1:5000".parse().unwrap(), &headers);
/// assert_eq!(direct.ip().to_string(), "198.51.100.1");
///
/// // nginx on the same host, talking to a Unix socket:
/// let behind_unix: TrustedProxies = "unix".parse().unwrap();
/// assert_eq!(behind_unix.client_of(None, &headers).unwrap().ip().to_string(), "10.1.2.3");
/// assert_eq!(TrustedProxies::default().client_of(None, &headers), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    /// Trust peers on a Unix socket (entry `unix`): nginx in front of `--bind unix:...`.
    unix: bool,
}

/// A trusted-proxy entry is neither an IP address nor a CIDR network (nor
/// `unix`); [`entry`](Self::entry) is the entry as given.
///
/// ```
/// use estuary_server::TrustedProxies;
///
/// let error = "127.0.0.1, 10.0.0.0/33".parse::<TrustedProxies>().unwrap_err();
/// assert_eq!(error.entry(), "10.0.0.0/33");
/// assert_eq!(
///     error.to_string(),
///     r#"invalid trusted proxy "10.0.0.0/33": expected an IP address or a CIDR network"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trusted proxy {entry:?}: expected an IP address or a CIDR network")]
pub struct InvalidProxy {
    entry: Box<str>,
}

impl InvalidProxy {
    /// The entry that is not an address or a network.
    pub fn entry(&self) -> &str {
        &self.entry
    }
}

impl FromStr for TrustedProxies {
    type Err = InvalidProxy;

    /// Parses a comma-separated list of addresses and networks.
    fn from_str(s: &str) -> Result<Self, InvalidProxy> {
        Self::new(s.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }
}

impl TrustedProxies {
    /// Trusts the given addresses and networks; the entry `unix` trusts
    /// every peer on a Unix socket.
    pub fn new<I, S>(entries: I) -> Result<Self, InvalidProxy>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        let mut unix = false;
        for entry in entries {
            let entry = entry.as_ref();
            if entry == "unix" {
                unix = true;
                continue;
            }
            let net = match IpNet::from_str(entry) {
                Ok(net) => net,
                Err(_) => IpAddr::from_str(entry)
                    .map(IpNet::from)
                    .map_err(|_| InvalidProxy { entry: entry.into() })?,
            };
            nets.push(net);
        }
        Ok(Self { nets, unix })
    }

    /// True when peers on a Unix socket are trusted (the `unix` entry).
    pub(crate) fn trusts_unix(&self) -> bool {
        self.unix
    }

    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a connection from `peer` (`None`: a Unix
    /// socket, trusted only with the `unix` entry).
    pub fn client_of(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<SocketAddr> {
        match peer {
            Some(peer) => Some(self.client(peer, headers)),
            None if self.unix => self.forwarded(headers),
            None => None,
        }
    }

    /// The client's address: walking `X-Forwarded-For` from the right, the
    /// first hop that is not a trusted proxy; else `X-Real-IP`; else the peer.
    /// Only when the peer itself is trusted.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        self.forwarded(headers).unwrap_or(peer)
    }

    fn forwarded(&self, headers: &HeaderMap) -> Option<SocketAddr> {
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| IpAddr::from_str(s.trim()).ok())
            .collect();
        if let Some(ip) = forwarded
            .iter()
            .rev()
            .find(|ip| !self.trusts(**ip))
            .or(forwarded.first())
        {
            return Some(SocketAddr::new(*ip, 0));
        }
        headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| IpAddr::from_str(s.trim()).ok())
            .map(|ip| SocketAddr::new(ip, 0))
    }
}
