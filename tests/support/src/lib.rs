//! Fixtures the workspace's tests share (not published).
//!
//! - [`server`], a service served on a free loopback port;
//! - [`ws`], a WebSocket client whose every receive has a timeout;
//! - [`auth`], the who-am-I consumer and the auth harness (an
//!   [`Authenticator`](estuary_server::Authenticator) in front of an optional
//!   and a required route);
//! - [`eventually()`], await a condition with a deadline and a clear message;
//! - [`process`], programs (the `estuary` binary, `redis-server`, examples)
//!   started for a test and awaited on their output;
//! - [`redis`], the shared Redis with unique prefixes, or a private
//!   `redis-server` on a free port;
//! - [`django`], the real Django test project on SQLite or PostgreSQL;
//! - [`probe`], the real Python channels_redis stack;
//! - [`http`], a minimal HTTP/1.1 client;
//! - [`workers`], the Django workers example (runworker, runserver) on Redis.
//!
//! # Tests that need an outside service
//!
//! A test that needs something beyond Rust and a loopback interface is
//! marked `#[ignore = "needs <service>"]` with one of the reasons below, so
//! that a plain `cargo test` passes on a machine with only Rust and shows
//! every such test as ignored, with its reason. `scripts/test.sh` runs them
//! all (`cargo nextest run --run-ignored all`).
//!
//! ```text
//! #[test]
//! #[ignore = "needs Redis at 127.0.0.1:6379"]
//! fn talks_to_redis() {
//!     // Uses estuary_test_support::redis::SHARED_REDIS.
//! }
//! ```
//!
//! The reasons in use: [`NEEDS_REDIS`], [`NEEDS_REDIS_SERVER`],
//! [`NEEDS_POSTGRES`], [`NEEDS_DJANGO`], [`NEEDS_INTEROP_PYTHON`]
//! (`#[ignore]` takes a literal, so these constants document the wording
//! rather than being used in the attribute).

use std::path::PathBuf;

pub mod auth;
pub mod django;
pub mod eventually;
pub mod http;
pub mod probe;
pub mod process;
pub mod redis;
pub mod sentinel;
pub mod server;
pub mod workers;
pub mod ws;

pub use eventually::eventually;

/// The reason for a test that needs the machine's Redis.
pub const NEEDS_REDIS: &str = "needs Redis at 127.0.0.1:6379";
/// The reason for a test that starts its own `redis-server` (on `PATH`).
pub const NEEDS_REDIS_SERVER: &str = "needs the redis-server binary";
/// The reason for a test that needs the machine's PostgreSQL.
pub const NEEDS_POSTGRES: &str = "needs PostgreSQL at 127.0.0.1:5432";
/// The reason for a test that runs the Django test project
/// (`scripts/install-django-test.sh`, or `ESTUARY_DJANGO_PYTHON`).
pub const NEEDS_DJANGO: &str = "needs Python with Django (ESTUARY_DJANGO_PYTHON)";
/// The reason for a test that runs the channels_redis probe
/// (`scripts/install-interop.sh`, or `ESTUARY_INTEROP_PYTHON`).
pub const NEEDS_INTEROP_PYTHON: &str = "needs Python with channels_redis (ESTUARY_INTEROP_PYTHON)";

/// The workspace's root: the nearest folder above this crate with a
/// `Cargo.lock`.
pub fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() {
        if !dir.pop() {
            break;
        }
    }
    dir
}
