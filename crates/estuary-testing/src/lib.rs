//! Test tools for Estuary applications and channel layers.
//!
//! * [`Communicator`]: an in-process WebSocket client for your router, like
//!   Django's `WebsocketCommunicator`.
//! * [`HttpClient`]: an in-process HTTP client for your routes (push APIs,
//!   server-sent events, long-polls), like Django's test `Client`.
//! * [`conformance`]: the suite that every [`ChannelLayer`](estuary_core::ChannelLayer)
//!   implementation must pass.

mod communicator;
pub mod conformance;
mod http;

pub use communicator::{Communicator, CommunicatorError};
pub use http::{HttpClient, HttpClientError, SseRecord, SseStream, TestRequest, TestResponse};
