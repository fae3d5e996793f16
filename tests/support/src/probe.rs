//! Drives the real Python stack (Django settings → channels_redis) through
//! the repository's probe, `tests/interop/channels_probe.py`, for the
//! interop tests.
//!
//! The Python comes from `ESTUARY_INTEROP_PYTHON` (default
//! `target/interop-venv/bin/python`, made by `scripts/install-interop.sh`);
//! `ESTUARY_INTEROP_PROBE` names another probe script with the same
//! commands.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::workspace_root;

/// The probe and the Python that runs it.
#[derive(Debug, Clone)]
pub struct Probe {
    python: PathBuf,
    script: PathBuf,
    /// Layer options passed to every command (`--redis`, `--prefix`, keys).
    pub layer_args: Vec<String>,
}

/// One running `listen` or `receive`: its stdout lines are the messages.
#[derive(Debug)]
pub struct Listening {
    child: Child,
    /// What the ready line said (e.g. the listener's channel name).
    pub ready: Value,
    stderr: std::sync::mpsc::Receiver<Value>,
}

impl Probe {
    /// Finds the probe; panics with instructions when it is missing.
    pub fn new(redis: &str, prefix: &str, encryption_key: Option<&str>) -> Self {
        let root = workspace_root();
        let python = std::env::var_os("ESTUARY_INTEROP_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/interop-venv/bin/python"));
        let script = std::env::var_os("ESTUARY_INTEROP_PROBE")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("tests/interop/channels_probe.py"));
        assert!(
            python.exists() && script.exists(),
            "the interop Python ({}) or probe ({}) is missing: run scripts/install-interop.sh, \
             or set ESTUARY_INTEROP_PYTHON (and ESTUARY_INTEROP_PROBE for another probe)",
            python.display(),
            script.display()
        );
        let mut layer_args = vec!["--redis".into(), redis.into(), "--prefix".into(), prefix.into()];
        if let Some(key) = encryption_key {
            layer_args.extend(["--encryption-key".into(), key.into()]);
        }
        Self {
            python,
            script,
            layer_args,
        }
    }

    fn command(&self, sub: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script).arg(sub).args(&self.layer_args).args(args);
        cmd
    }

    /// Runs a command to completion; returns (exit code, stdout lines, stderr lines).
    pub fn run(&self, sub: &str, args: &[&str]) -> (i32, Vec<Value>, Vec<Value>) {
        let out = self.command(sub, args).output().expect("run the interop probe");
        let parse = |bytes: &[u8]| -> Vec<Value> {
            String::from_utf8_lossy(bytes)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        };
        (
            out.status.code().unwrap_or(-1),
            parse(&out.stdout),
            parse(&out.stderr),
        )
    }

    /// `group_send` from Python, as a Django view does.
    pub fn group_send(&self, group: &str, message: &Value) {
        let (code, _, err) = self.run("group-send", &["--group", group, "--json", &message.to_string()]);
        assert_eq!(code, 0, "python group_send failed: {err:?}");
    }

    /// `send` from Python; returns the exit code and status lines.
    pub fn send(&self, channel: &str, message: &Value, repeat: usize) -> (i32, Vec<Value>) {
        let (code, _, err) = self.run(
            "send",
            &[
                "--channel",
                channel,
                "--json",
                &message.to_string(),
                "--repeat",
                &repeat.to_string(),
            ],
        );
        (code, err)
    }

    /// Starts a command that prints messages, and waits for its ready line.
    pub fn start(&self, sub: &str, args: &[&str]) -> Listening {
        let mut child = self
            .command(sub, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the interop probe");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let ready = loop {
            let status = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("probe never said ready");
            match status["event"].as_str() {
                Some("ready") => break status,
                Some("error") => panic!("probe failed: {status}"),
                _ => continue,
            }
        };
        Listening {
            child,
            ready,
            stderr: rx,
        }
    }
}

impl Listening {
    /// Waits for the command to finish; returns its exit code and the
    /// messages it printed.
    pub fn finish(mut self) -> (i32, Vec<Value>) {
        let stdout = self.child.stdout.take().unwrap();
        let lines: Vec<Value> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let status = self.child.wait().expect("probe exit");
        let _ = &self.stderr;
        (status.code().unwrap_or(-1), lines)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
