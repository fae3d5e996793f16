//! Programs started for a test (the `estuary` binary, `redis-server`, an
//! example), awaited on their output until ready.

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

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Process {
    /// The child.
    pub child: Child,
    /// The stdout line that said it was ready.
    pub ready: String,
}

impl Process {
    /// [`spawn_ready`], killed on drop.
    pub fn start(cmd: Command, marker: &'static str, limit: Duration) -> Self {
        let (child, ready) = spawn_ready(cmd, marker, limit);
        Self { child, ready }
    }

    /// The `estuary` binary at `bin` (`env!("CARGO_BIN_EXE_estuary")` in the
    /// app's tests) running `serve` on `127.0.0.1:<port>` with `args` after,
    /// its log at `info` on stderr, once it logged "listening".
    pub fn estuary_serve(bin: &str, port: u16, args: &[&str]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::inherit());
        Self::start(cmd, "listening", Duration::from_secs(30))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
