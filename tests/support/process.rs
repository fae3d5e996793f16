//! Starts a program for a test and waits, on its output, until it is ready.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Spawns `cmd` with stdout piped and waits (at most `limit`) for a stdout
/// line containing `marker`; returns the child and that line. The rest of
/// stdout is drained in the background so the child never blocks on it.
pub fn spawn_ready(mut cmd: Command, marker: &'static str, limit: Duration) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(marker) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        }
    });
    match rx.recv_timeout(limit) {
        Ok(line) => (child, line),
        Err(_) => {
            let _ = child.kill();
            panic!("{cmd:?} did not print {marker:?} within {limit:?}");
        }
    }
}

/// A TCP port that was free a moment ago, for a program the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
