//! A channel made for one HTTP request and the groups it joined: left again
//! when the request is over, however it ends.

use estuary_core::{ChannelLayer, ChannelLayerError, ChannelLayerHandle, ChannelName, GroupName};

/// Owns a request's channel and its group memberships. [`release`](Self::release)
/// leaves the groups and closes the channel; dropping it unreleased (the
/// client went away, the response future was dropped) does the same on a
/// spawned task.
#[derive(Debug)]
pub(crate) struct Membership {
    layer: ChannelLayerHandle,
    channel: ChannelName,
    /// The groups joined; `None` once released (or handed to a cleanup task).
    groups: Option<Vec<GroupName>>,
}

impl Membership {
    /// Makes a channel and joins `groups` with it. On failure, what was
    /// joined is left before the error is returned.
    pub(crate) async fn join(
        layer: &ChannelLayerHandle,
        groups: Vec<GroupName>,
    ) -> Result<Self, ChannelLayerError> {
        let channel = layer.new_channel().await?;
        let mut membership = Self {
            layer: layer.clone(),
            channel,
            groups: Some(Vec::with_capacity(groups.len())),
        };
        for group in groups {
            if let Err(e) = layer.group_add(&group, &membership.channel).await {
                membership.release().await;
                return Err(e);
            }
            if let Some(joined) = &mut membership.groups {
                joined.push(group);
            }
        }
        Ok(membership)
    }

    pub(crate) fn layer(&self) -> &ChannelLayerHandle {
        &self.layer
    }

    pub(crate) fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// Leaves every group and closes the channel (once).
    pub(crate) async fn release(&mut self) {
        if let Some(groups) = self.groups.take() {
            leave(self.layer.clone(), self.channel.clone(), groups).await;
        }
    }

    /// The release as a future that owns what it needs, for a `Drop` to
    /// spawn; `self` is released. If that future is dropped before it is
    /// done (the runtime shuts down), nothing is spawned again.
    pub(crate) fn release_later(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let held = self
            .groups
            .take()
            .map(|groups| (self.layer.clone(), self.channel.clone(), groups));
        async move {
            if let Some((layer, channel, groups)) = held {
                leave(layer, channel, groups).await;
            }
        }
    }
}

/// A failure to leave (the backend is down) is logged: the membership then
/// lapses with the layer's `group_expiry`.
async fn leave(layer: ChannelLayerHandle, channel: ChannelName, groups: Vec<GroupName>) {
    for group in &groups {
        if let Err(error) = layer.group_discard(group, &channel).await {
            estuary_core::throttled!(warn, %error, %group, "could not leave a group after an HTTP stream ended; the membership lapses with group_expiry");
        }
    }
    layer.close_channel(&channel).await;
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.groups.is_some() {
            spawn_cleanup(self.release_later());
        }
    }
}

/// Runs `cleanup` on the current runtime; without one (the runtime is being
/// shut down) it cannot run, and says so.
pub(crate) fn spawn_cleanup(cleanup: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(cleanup)),
        Err(_) => {
            estuary_core::throttled!(
                warn,
                "no runtime to leave the groups of an HTTP stream (it was dropped outside a tokio runtime); the memberships lapse with group_expiry: drop streams inside the runtime"
            )
        }
    }
}
