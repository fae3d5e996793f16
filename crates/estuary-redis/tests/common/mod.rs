//! Redis for tests: the shared server with a unique prefix, or a private
//! redis-server on a free port (for rings and fault tests).

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};

#[path = "../../../../tests/support/process.rs"]
pub mod process;
use std::time::Duration;

/// The Redis every machine runs; tests use a unique prefix and never flush others' keys.
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

/// A prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("estuarytest{}", uuid::Uuid::new_v4().simple())
}

/// A private redis-server, stopped on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(process::free_port())
    }

    /// Starts redis-server on `port` (no persistence) and waits for "Ready to accept connections".
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
