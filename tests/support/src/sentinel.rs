//! A Redis primary, its replica and one `redis-sentinel` watching them, for
//! the failover tests: all on free ports, with their files in a temporary
//! directory, stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::process::{Process, free_port};

/// The name the sentinel knows the primary by.
pub const MASTER: &str = "mymaster";

/// Longest any step here may take.
const LIMIT: Duration = Duration::from_secs(30);

/// A `redis-server` on `port` with `args` after the defaults (no
/// persistence, an immediate replica sync), its files in `dir`, once it
/// printed `marker`.
fn redis(dir: &Path, port: u16, args: &[&str], marker: &'static str) -> Process {
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--dir",
        dir.to_str().expect("a UTF-8 temporary directory"),
        "--dbfilename",
        &format!("{port}.rdb"),
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        // A replica syncs at once rather than after 5 s.
        "--repl-diskless-sync-delay",
        "0",
    ])
    .args(args)
    .stderr(Stdio::null());
    Process::start(cmd, marker, LIMIT)
}

/// A primary, a replica in sync with it, and a sentinel (quorum 1, down
/// after 500 ms) that knows both.
#[derive(Debug)]
pub struct SentinelSetup {
    /// The first primary, until [`kill_primary`](Self::kill_primary).
    pub primary: Option<Process>,
    /// The replica, promoted at a failover.
    pub replica: Process,
    /// The first primary's port.
    pub primary_port: u16,
    /// The replica's port.
    pub replica_port: u16,
    /// The sentinel's port.
    pub sentinel_port: u16,
    sentinel: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Lines read by [`logged`](Self::logged) and not yet waited for.
    seen: Vec<String>,
    dir: PathBuf,
}

impl SentinelSetup {
    /// Starts the three and waits until the sentinel has found the replica.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("estuary-sentinel-{}", crate::redis::unique_prefix()));
        std::fs::create_dir_all(&dir).expect("a directory for the servers' files");
        let (primary_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
        let primary = redis(&dir, primary_port, &[], "Ready to accept connections");
        let replica = redis(
            &dir,
            replica_port,
            &["--replicaof", "127.0.0.1", &primary_port.to_string()],
            "sync: Finished with success",
        );
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel resolve-hostnames no\n\
                 sentinel monitor {MASTER} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {MASTER} 500\n\
                 sentinel failover-timeout {MASTER} 5000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                dir.display()
            ),
        )
        .expect("the sentinel's file");
        let mut sentinel = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel (scripts/install-sentinel.sh)");
        let stdout = sentinel.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut setup = Self {
            primary: Some(primary),
            replica,
            primary_port,
            replica_port,
            sentinel_port,
            sentinel,
            lines,
            seen: Vec::new(),
            dir,
        };
        setup.wait_for("+slave slave").await;
        setup
    }

    /// `redis+sentinel://127.0.0.1:<sentinel>/mymaster/0`.
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/{MASTER}/0", self.sentinel_port)
    }

    /// Waits (at most 30 s) for a sentinel log line containing `needle`;
    /// returns it.
    pub async fn wait_for(&mut self, needle: &str) -> String {
        if let Some(at) = self.seen.iter().position(|line| line.contains(needle)) {
            let line = self.seen.remove(at);
            self.seen.drain(..at);
            return line;
        }
        self.seen.clear();
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the sentinel exited before logging {needle:?}"),
                Err(_) => panic!("the sentinel did not log {needle:?} within {LIMIT:?}"),
            }
        }
    }

    /// Whether the sentinel has logged a line containing `needle` so far
    /// (without waiting; a later [`wait_for`](Self::wait_for) still finds it).
    pub fn logged(&mut self, needle: &str) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().any(|line| line.contains(needle))
    }

    /// `SENTINEL FAILOVER mymaster`: the replica is promoted, and the
    /// primary made its replica some seconds later (`+convert-to-slave`).
    /// Asked again (every 100 ms, at most 30 s) while the sentinel has no
    /// replica it may promote yet (it answers NOGOODSLAVE until it has
    /// heard from the replica itself).
    pub async fn failover(&self) {
        let port = self.sentinel_port;
        crate::eventually::poll_async(
            "the sentinel to accept SENTINEL FAILOVER",
            LIMIT,
            Duration::from_millis(100),
            || async move {
                let mut conn = connect(port).await;
                let answer: ::redis::RedisResult<String> = ::redis::cmd("SENTINEL")
                    .arg("FAILOVER")
                    .arg(MASTER)
                    .query_async(&mut conn)
                    .await;
                match answer {
                    Ok(ok) => Some(ok),
                    Err(error) if error.code() == Some("NOGOODSLAVE") => None,
                    Err(error) => panic!("SENTINEL FAILOVER: {error}"),
                }
            },
        )
        .await;
    }

    /// Kills the first primary; the sentinel promotes the replica once it
    /// has been down 500 ms.
    pub fn kill_primary(&mut self) {
        drop(self.primary.take());
    }
}

/// A plain connection to the Redis (or sentinel) on `port`.
pub async fn connect(port: u16) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("a loopback URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

impl Drop for SentinelSetup {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
        drop(self.primary.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
