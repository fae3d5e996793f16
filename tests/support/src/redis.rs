//! Redis for tests: the machine's server with a unique key prefix per test,
//! or a private `redis-server` on a free port (for rings and fault tests).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process;

/// The Redis every test machine runs; tests use a [`unique_prefix`] and
/// never flush others' keys.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("estuarytest{}", uuid::Uuid::new_v4().simple())
}

/// A private `redis-server` (from `PATH`), without persistence, stopped on
/// drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// The loopback port it listens on.
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> Self {
        Self::start_on(process::free_port())
    }

    /// Starts one on `port` and waits (at most 20 s) for "Ready to accept
    /// connections".
    pub fn start_on(port: u16) -> Self {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stderr(Stdio::null());
        let (child, _) = process::spawn_ready(cmd, "Ready to accept connections", Duration::from_secs(20));
        Self {
            child: Some(child),
            port,
        }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
