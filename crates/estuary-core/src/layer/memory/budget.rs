//! The bytes the in-memory layer stores, against its `max_bytes`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::layer::ChannelLayerError;
use crate::message::{Charge, Message};

/// What a message costs besides its encoded bytes (the message itself, its
/// queue slots): so that a flood of empty messages is bounded too.
pub(super) const MESSAGE_OVERHEAD: usize = 128;

/// The bytes of messages the layer stores, against `max_bytes`. A message
/// keeps its charge ([`Charge`]) until its last clone is dropped, so one
/// shared by every member of a group is counted once.
pub(super) struct Budget {
    pub(super) held: Arc<AtomicUsize>,
    pub(super) limit: usize,
    pub(super) refused: AtomicU64,
}

impl Budget {
    /// Charges `message` before it is stored (nothing if it is charged
    /// already), or refuses it (counted, and logged at most once a second)
    /// when the layer would hold more than its limit.
    pub(super) fn charge(&self, message: &Message) -> Result<(), ChannelLayerError> {
        if message.is_charged() {
            return Ok(());
        }
        let bytes = message.as_bytes().len().saturating_add(MESSAGE_OVERHEAD);
        let before = self.held.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) <= self.limit {
            message.keep_charge(Charge::new(bytes, self.held.clone()));
            return Ok(());
        }
        self.held.fetch_sub(bytes, Ordering::AcqRel);
        self.refused.fetch_add(1, Ordering::Relaxed);
        crate::throttled!(
            warn,
            limit = self.limit,
            held = before,
            size = bytes,
            "channel layer full: a send was refused (max_bytes); its producer was told. Raise [layer] max_bytes, or find the channels that do not drain"
        );
        Err(ChannelLayerError::TooManyBytes { limit: self.limit })
    }
}
