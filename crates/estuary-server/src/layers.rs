//! Several channel layers in one router (Channels' `CHANNEL_LAYERS` with
//! more than one alias), chosen by consumers by name.

use estuary_core::{ChannelLayerHandle, DEFAULT_CHANNEL_LAYER};

use crate::router::Router;

/// A consumer names a channel layer
/// ([`Consumer::CHANNEL_LAYER_ALIAS`](estuary_core::Consumer::CHANNEL_LAYER_ALIAS))
/// that the router was not given: found when the router is built
/// ([`Router::try_into_service`]), before any connection.
///
/// ```
/// use estuary_core::{Consumer, NoEvent};
/// use estuary_server::Router;
///
/// struct Metrics;
/// impl Consumer for Metrics {
///     type Event = NoEvent;
///     const CHANNEL_LAYER_ALIAS: &'static str = "metrics";
/// }
///
/// let error = Router::new().websocket("ws/metrics/", || Metrics).try_into_service().unwrap_err();
/// assert_eq!(error.alias, "metrics");
/// assert!(error.consumer.ends_with("Metrics"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "consumer {consumer} uses channel layer {alias:?}, which the router was not given (with_named_channel_layer)"
)]
pub struct UnknownChannelLayer {
    /// The alias the consumer names.
    pub alias: &'static str,
    /// The consumer's type name.
    pub consumer: &'static str,
}

impl Router {
    /// Adds a channel layer under `alias`, for the consumers whose
    /// [`CHANNEL_LAYER_ALIAS`](estuary_core::Consumer::CHANNEL_LAYER_ALIAS)
    /// names it (Channels' `CHANNEL_LAYERS` entries and a consumer's
    /// `channel_layer_alias`). A consumer's channel, its groups and the
    /// events it receives all live on its layer: a `group_send` on one
    /// layer reaches no consumer on another, even for the same group name.
    /// The alias [`"default"`](DEFAULT_CHANNEL_LAYER) sets the default
    /// layer, as [`with_channel_layer`](Self::with_channel_layer) does; a
    /// second call with the same alias replaces the layer.
    ///
    /// Over Redis, give each alias its own
    /// [`RedisChannelLayer`](https://docs.rs/estuary-redis) (as each
    /// `CHANNEL_LAYERS` entry has its own `CONFIG`): another server or
    /// database, or the same server with another key `prefix`, which is
    /// what keeps their groups apart; Django processes reach a layer through
    /// the `CHANNEL_LAYERS` alias with the same hosts and prefix.
    ///
    /// ```
    /// use estuary_core::{ChannelLayerHandle, Consumer, InMemoryChannelLayer, NoEvent};
    /// use estuary_server::Router;
    ///
    /// struct Chat;
    /// impl Consumer for Chat { type Event = NoEvent; }
    ///
    /// struct Telemetry;
    /// impl Consumer for Telemetry {
    ///     type Event = NoEvent;
    ///     const CHANNEL_LAYER_ALIAS: &'static str = "metrics";
    /// }
    ///
    /// let metrics = ChannelLayerHandle::new(InMemoryChannelLayer::default());
    /// let router = Router::new()
    ///     .with_named_channel_layer("metrics", metrics.clone())
    ///     .websocket("ws/chat/", || Chat)           // on the default layer
    ///     .websocket("ws/telemetry/", || Telemetry); // on "metrics"
    /// // HTTP handlers push to either layer.
    /// assert!(router.named_channel_layer("metrics").is_some());
    /// assert!(router.named_channel_layer("default").is_some());
    /// let service = router.try_into_service().expect("every alias is known");
    /// # let _ = service;
    /// ```
    pub fn with_named_channel_layer(mut self, alias: impl Into<String>, layer: ChannelLayerHandle) -> Self {
        let alias = alias.into();
        if alias == DEFAULT_CHANNEL_LAYER {
            self.layer = layer;
        } else {
            self.named_layers.insert(alias, layer);
        }
        self
    }

    /// The channel layer under `alias` (`"default"`: the default layer).
    pub fn named_channel_layer(&self, alias: &str) -> Option<&ChannelLayerHandle> {
        if alias == DEFAULT_CHANNEL_LAYER {
            Some(&self.layer)
        } else {
            self.named_layers.get(alias)
        }
    }

    /// Finds every route's channel layer by its consumer's alias (the
    /// default layer needs no lookup): the check
    /// [`try_into_service`](Self::try_into_service) makes.
    pub(crate) fn resolve_channel_layers(&mut self) -> Result<(), UnknownChannelLayer> {
        for route in &mut self.routes {
            let alias = route.endpoint.channel_layer_alias();
            route.layer = if alias == DEFAULT_CHANNEL_LAYER {
                None
            } else {
                let layer = self.named_layers.get(alias).ok_or(UnknownChannelLayer {
                    alias,
                    consumer: route.endpoint.consumer_name(),
                })?;
                Some(layer.clone())
            };
        }
        Ok(())
    }
}
