//! Test tools for Estuary applications and channel layers.
//!
//! * [`Communicator`]: an in-process WebSocket client for your router, like
//!   Django's `WebsocketCommunicator`.
//! * [`conformance`]: the suite that every [`ChannelLayer`](estuary_core::ChannelLayer)
//!   implementation must pass.

mod communicator;
pub mod conformance;

pub use communicator::{Communicator, CommunicatorError};
