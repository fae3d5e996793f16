//! Connection limits: in all, per client address, and handshakes per second
//! per address; the counters of what they refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use estuary_core::address_key;
use estuary_core::sync::lock;

/// What the server refused, and what it holds: read them from
/// [`Server::stats`](crate::Server::stats) at any time (clones share the
/// counters).
///
/// ```
/// # async fn demo() -> std::io::Result<()> {
/// use estuary_server::Server;
///
/// let server = Server::bind("127.0.0.1:0".parse().unwrap()).await?;
/// let stats = server.stats();
/// assert_eq!(stats.connections(), 0);
/// assert_eq!(stats.refused_total(), 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServerStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicUsize,
    refused_total: AtomicU64,
    refused_per_ip: AtomicU64,
    refused_handshake_rate: AtomicU64,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ServerStats {
    /// Connections open now (HTTP and WebSocket; a WebSocket counts as the
    /// connection it was upgraded from).
    pub fn connections(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Connections refused because the server held
    /// [`ServerConfig::max_connections`](crate::ServerConfig::max_connections).
    pub fn refused_total(&self) -> u64 {
        self.inner.refused_total.load(Ordering::Relaxed)
    }

    /// Connections refused because their address held
    /// [`ServerConfig::max_connections_per_ip`](crate::ServerConfig::max_connections_per_ip).
    pub fn refused_per_ip(&self) -> u64 {
        self.inner.refused_per_ip.load(Ordering::Relaxed)
    }

    /// Handshakes refused by
    /// [`ServerConfig::handshake_rate`](crate::ServerConfig::handshake_rate).
    pub fn refused_handshake_rate(&self) -> u64 {
        self.inner.refused_handshake_rate.load(Ordering::Relaxed)
    }

    /// Client addresses with a connection open now.
    pub fn addresses(&self) -> usize {
        lock(&self.inner.per_ip).len()
    }

    pub(crate) fn count_handshake_refused(&self) {
        self.inner.refused_handshake_rate.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a slot in all: `None` when `max` are open.
    pub(crate) fn open(&self, max: Option<usize>) -> Option<Slot> {
        let taken = self
            .inner
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                max.is_none_or(|max| n < max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            self.inner.refused_total.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot {
            stats: self.clone(),
            address: None,
            counts_open: true,
        })
    }

    /// Takes a slot for `address` (counted by [`address_key`]): `None` when
    /// `max` are open for it.
    pub(crate) fn open_for(&self, address: IpAddr, max: usize) -> Option<Slot> {
        let key = address_key(address);
        let mut per_ip = lock(&self.inner.per_ip);
        let n = per_ip.entry(key).or_insert(0);
        if *n >= max {
            drop(per_ip);
            self.inner.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        Some(Slot {
            stats: self.clone(),
            address: Some(key),
            counts_open: false,
        })
    }
}

/// A held connection slot, given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    stats: ServerStats,
    address: Option<IpAddr>,
    counts_open: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.counts_open {
            self.stats.inner.open.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(key) = self.address {
            let mut per_ip = lock(&self.stats.inner.per_ip);
            if let Some(n) = per_ip.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&key);
                }
            }
        }
    }
}

/// The slots a connection holds, shared by its requests: an upgraded
/// WebSocket keeps them after the HTTP connection that carried it ends.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slots(pub(crate) Vec<Arc<Slot>>);

/// The open-file limit of this process (the soft `RLIMIT_NOFILE`), read from
/// `/proc/self/limits`; `None` where that cannot be read.
pub(crate) fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back() {
        let stats = ServerStats::default();
        let a = stats.open(Some(2)).unwrap();
        let _b = stats.open(Some(2)).unwrap();
        assert!(stats.open(Some(2)).is_none());
        assert_eq!(stats.refused_total(), 1);
        drop(a);
        assert!(stats.open(Some(2)).is_some());

        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let same: IpAddr = "2001:db8::2".parse().unwrap();
        let x = stats.open_for(ip, 1).unwrap();
        assert!(stats.open_for(same, 1).is_none(), "one /64");
        assert_eq!(stats.addresses(), 1);
        drop(x);
        assert_eq!(stats.addresses(), 0);
        assert!(stats.open_for(same, 1).is_some());
    }

    #[test]
    fn the_open_file_limit_is_read() {
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }
}
