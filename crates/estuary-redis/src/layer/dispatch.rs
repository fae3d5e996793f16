//! Handing what the receive loop popped to this process's channels.

use std::sync::atomic::Ordering;

use super::Inner;
use crate::codec::{check_target, decode_member};
use crate::local::{Held, lock, now};

impl Inner {
    /// Hands a popped member to the local channels it names, their
    /// wake-ups held back in `held` until the batch is over. Nothing in a
    /// stored member can stop the receive loop: a panic while decoding is
    /// caught, logged and counted.
    pub(super) fn dispatch(&self, member: &[u8], score: f64, held: &mut Held) {
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.dispatch_inner(member, score, held)
        }));
        if handled.is_err() {
            let total = self.undecodable.fetch_add(1, Ordering::Relaxed) + 1;
            estuary_core::throttled!(
                error,
                total,
                "decoding a stored message panicked; message dropped. A bug: please report it"
            );
        }
    }

    fn dispatch_inner(&self, member: &[u8], score: f64, held: &mut Held) {
        let decoded = match decode_member(member, self.crypto.as_ref()) {
            Ok(d) => d,
            Err(error) => {
                self.warn_undecodable(&error, &self.channel_key(&self.client_prefix));
                return;
            }
        };
        if decoded.has_no_target() {
            estuary_core::throttled!(
                warn,
                r#type = decoded.message.message_type(),
                "message without __asgi_channel__ in this process's queue; dropped. Something \
                 else writes to this Redis under the layer's prefix: find it"
            );
            return;
        }
        let expires = score + self.config.layer.expiry().as_secs_f64();
        // One clock read and one lock for every member the message names;
        // each gets the same message (its bytes, and the frame rendered
        // from them, shared).
        let now = now();
        if let Some(group) = decoded.group() {
            // This process's own group message: its members of the group
            // now, by its own record (a channel that joined after the send
            // began may get it, one that left does not).
            let memberships = lock(&self.memberships);
            let local = lock(&self.local);
            for channel in memberships.channels(group) {
                if let Some(queue) = local.get(channel)
                    && !queue.push_held(expires, decoded.message.clone(), now, held)
                {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%channel, "local buffer full; message dropped");
                }
            }
            return;
        }
        let local = lock(&self.local);
        for target in decoded.targets() {
            match local.get(target) {
                Some(queue) => {
                    if !queue.push_held(expires, decoded.message.clone(), now, held) {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(channel = %target, "local buffer full; message dropped");
                    }
                }
                None => {
                    check_target(target);
                    tracing::debug!(channel = %target, "message for a closed channel; dropped");
                }
            }
        }
    }

    /// Counts a stored message that could not be decoded, and warns.
    pub(super) fn warn_undecodable(&self, error: &crate::codec::DecodeError, key: &str) {
        let total = self.undecodable.fetch_add(1, Ordering::Relaxed) + 1;
        estuary_core::throttled!(
            warn,
            %error,
            %key,
            total,
            "undecodable message in Redis; dropped. Check that every process sharing this \
             Redis uses the same prefix and encryption keys"
        );
    }
}
