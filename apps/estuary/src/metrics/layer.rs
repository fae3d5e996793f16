//! The channel layer's own counters, read through its concrete type.

use estuary::redis::{RedisChannelLayer, RedisPubSubChannelLayer};
use estuary::{ChannelLayerHandle, InMemoryChannelLayer};

use super::text::{Kind, Text};

/// The channel layer the server runs on, kept by its type to read its
/// counters (the server holds it erased, as a [`ChannelLayerHandle`]).
#[derive(Debug, Clone)]
pub enum LayerProbe {
    /// The in-memory layer.
    Memory(InMemoryChannelLayer),
    /// The Redis layer (channels_redis' core flavour).
    Redis(RedisChannelLayer),
    /// The Redis pub/sub layer.
    PubSub(RedisPubSubChannelLayer),
    /// A layer made elsewhere: only its availability is known.
    Other,
}

impl LayerProbe {
    /// Its backend's label value.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
            Self::PubSub(_) => "redis_pubsub",
            Self::Other => "other",
        }
    }

    /// The probe's layer as a handle (`None` for [`Other`](Self::Other)).
    pub fn handle(&self) -> Option<ChannelLayerHandle> {
        Some(match self {
            Self::Memory(l) => ChannelLayerHandle::new(l.clone()),
            Self::Redis(l) => ChannelLayerHandle::new(l.clone()),
            Self::PubSub(l) => ChannelLayerHandle::new(l.clone()),
            Self::Other => return None,
        })
    }

    pub(super) fn render(&self, text: &mut Text) {
        let backend = [("backend", self.backend())];
        let up = match self {
            Self::Memory(_) | Self::Other => true,
            Self::Redis(l) => l.is_healthy(),
            Self::PubSub(l) => l.is_healthy(),
        };
        text.family(
            "estuary_layer_up",
            Kind::Gauge,
            "1 while the channel layer is reachable (and, for Redis, this process's memberships are \
             written back after an outage), else 0; /healthz answers 503 meanwhile.",
        )
        .sample("estuary_layer_up", &backend, u8::from(up));
        let backlogged = match self {
            Self::Memory(l) => Some(l.backlogged_time()),
            Self::Redis(l) => Some(l.backlogged_time()),
            Self::PubSub(l) => Some(l.backlogged_time()),
            Self::Other => None,
        };
        if let Some((time, episodes)) = backlogged {
            text.family(
                "estuary_layer_backlogged_seconds_total",
                Kind::Counter,
                "Time the channel layer was backlogged (flow control: a live member held more than \
                 its capacity, or, over Redis, this process's queue there was deep, so sessions \
                 stopped reading their clients), in seconds.",
            )
            .sample(
                "estuary_layer_backlogged_seconds_total",
                &backend,
                time.as_secs_f64(),
            );
            text.family(
                "estuary_layer_backlog_episodes_total",
                Kind::Counter,
                "Times the channel layer became backlogged.",
            )
            .sample("estuary_layer_backlog_episodes_total", &backend, episodes);
        }
        let mut losses: Vec<(&str, u64)> = Vec::new();
        match self {
            Self::Memory(l) => {
                losses.push(("channel_full", l.dropped()));
                losses.push(("layer_full", l.refused()));
                text.family(
                    "estuary_layer_queued_messages",
                    Kind::Gauge,
                    "Messages held in the in-memory layer's queues now.",
                )
                .sample("estuary_layer_queued_messages", &backend, l.queued());
                text.family(
                    "estuary_layer_held_bytes",
                    Kind::Gauge,
                    "Bytes of the messages the in-memory layer holds now (bounded by layer.max_bytes).",
                )
                .sample("estuary_layer_held_bytes", &backend, l.held_bytes());
            }
            Self::Redis(l) => {
                losses.push(("channel_full", l.dropped()));
                losses.push(("redis_unreachable", l.failed_sends()));
                losses.push(("redis_lost_state", l.losses_reported()));
                losses.push(("undecodable", l.undecodable()));
                losses.push(("poisoned_key", l.poisoned()));
                text.family(
                    "estuary_layer_reconnects_total",
                    Kind::Counter,
                    "Times this process lost Redis and connected again (its memberships are written \
                     back before it reports itself up).",
                )
                .sample("estuary_layer_reconnects_total", &backend, l.outages());
                text.family(
                    "estuary_layer_memberships_repaired_total",
                    Kind::Counter,
                    "Group memberships written back to Redis after their key had lost them.",
                )
                .sample(
                    "estuary_layer_memberships_repaired_total",
                    &backend,
                    l.memberships_repaired(),
                );
            }
            Self::PubSub(l) => {
                losses.push(("channel_full", l.dropped()));
                text.family(
                    "estuary_layer_reconnects_total",
                    Kind::Counter,
                    "Redis subscriber connections lost (and made again once Redis answers).",
                )
                .sample(
                    "estuary_layer_reconnects_total",
                    &backend,
                    l.subscriber_reconnects(),
                );
            }
            Self::Other => {}
        }
        text.family(
            "estuary_layer_losses_total",
            Kind::Counter,
            "Messages the channel layer dropped or could not deliver, by reason: channel_full (a \
             member's queue held `capacity`), layer_full (max_bytes), redis_unreachable (a send \
             failed), redis_lost_state (Redis lost a membership or queue: connections are told), \
             undecodable, poisoned_key.",
        );
        for (reason, n) in losses {
            text.sample(
                "estuary_layer_losses_total",
                &[("backend", self.backend()), ("reason", reason)],
                n,
            );
        }
    }
}
