//! Estuary's load generator for the chat protocol, and the pieces the
//! benchmark harness (`bench/run.py`) builds on.
//!
//! Four scenarios, each a module with its options and its report:
//!
//! - [`fanout`]: R rooms of M members, S of which send (closed loop with a
//!   window, or open loop at a rate); exact delivery accounting, latency
//!   percentiles, and the server's CPU per delivery. With a slow share it is
//!   the `slow` scenario: some members stop reading in a busy room.
//! - [`idle`]: N idle connections; the server's memory per connection.
//! - [`connect`]: handshakes per second and handshake latency.
//!
//! The load generator runs on one thread (pin it to a core of its own); it
//! measures its own CPU and reports when it, not the server, was the limit.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use estuary_bench::{client::Target, connect};
//!
//! let target = Target::new("ws://127.0.0.1:8000", "/ws/chat/{room}/", 1)?;
//! let opts = connect::ConnectOptions {
//!     concurrency: 16,
//!     warmup: Duration::from_secs(1),
//!     duration: Duration::from_secs(5),
//!     pids: vec![],
//!     room: "lobby".into(),
//! };
//! // Scenarios spawn local tasks: run them inside a `tokio::task::LocalSet`.
//! let report = tokio::task::LocalSet::new().run_until(connect::run(&target, &opts)).await?;
//! println!("{:.0} handshakes/s", report.handshakes_per_second);
//! # Ok(()) }
//! ```

pub mod client;
pub mod connect;
pub mod fanout;
pub mod idle;
pub mod proc;
pub mod stats;
