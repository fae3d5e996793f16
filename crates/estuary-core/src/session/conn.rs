//! What the session loop holds while a connection runs.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::keepalive::Keepalive;
use super::rate::{AddressRateLimiter, Bucket};
use super::recheck::Rechecks;
use super::stats::Tally;
use crate::layer::{ChannelLayer, ChannelLayerHandle, ChannelReceiver, ReceiverState};
use crate::names::ChannelName;

/// What the session loop holds while a connection runs, besides the session.
pub(super) struct Conn<'a, T> {
    /// Borrowed: the future of `run` keeps its argument's place anyway, and
    /// a moved copy would take as much again.
    pub(super) transport: &'a mut T,
    pub(super) layer: &'a ChannelLayerHandle,
    pub(super) channel: &'a ChannelName,
    pub(super) shutdown: &'a CancellationToken,
    /// This connection's channel, bound once.
    pub(super) receiver: Box<dyn ChannelReceiver + 'a>,
    /// The layer failed: no receive until then.
    pub(super) layer_pause: Option<Instant>,
    pub(super) keepalive: Keepalive,
    pub(super) bucket: Option<Bucket>,
    /// Pings and pongs from the client.
    pub(super) control: Option<Bucket>,
    /// The limit shared by the client's address, and that address.
    pub(super) address: Option<(AddressRateLimiter, std::net::IpAddr)>,
    /// Layer messages dropped for their size.
    pub(super) oversized: u64,
    /// Client messages handled since the layer's last turn.
    pub(super) client_turns: u8,
    /// A layer turn fed frames straight to the transport (see
    /// `Session::feed_frame`), not yet flushed.
    pub(super) fed: bool,
    /// When the connection closes by itself: the user's credential expires
    /// (a JWT's `exp`) or it has lived its `max_lifetime`.
    pub(super) deadline: Option<super::Deadline>,
    /// The check that the user is still signed in (boxed: rare).
    pub(super) recheck: Option<Box<Rechecks>>,
    /// The route's settings (timeouts, the keepalive's interval), shared
    /// rather than copied.
    pub(super) config: std::sync::Arc<super::SessionConfig>,
    /// Messages and bytes since the last fold into the shared stats.
    pub(super) tally: Tally,
}

/// The connection's channel, for flow control while a handler waits.
pub(super) struct Flow<'a> {
    pub(super) layer: &'a ChannelLayerHandle,
    pub(super) channel: &'a ChannelName,
    /// Already marked stalled: nothing to tell the layer again.
    pub(super) stalled: bool,
}

impl Flow<'_> {
    pub(super) fn stall(&self) {
        if !self.stalled {
            self.layer.set_receiver(self.channel, ReceiverState::Stalled);
        }
    }
}
