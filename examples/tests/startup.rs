//! Every example says, when it starts, where it listens, which paths it
//! serves and a command to try.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The lines `bin` prints up to its `try:` line (at most 20 s).
fn startup_lines(bin: &str, args: &[&str]) -> Vec<String> {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.starts_with("try:");
            lines.push(line);
            if done {
                let _ = tx.send(lines);
                return;
            }
        }
    });
    let lines = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    lines.unwrap_or_else(|_| panic!("{bin} printed no `try:` line within 20 s"))
}

fn check(bin: &str, args: &[&str], path: &str) {
    let lines = startup_lines(bin, args);
    let address = lines[0]
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line {:?}", lines[0]));
    assert!(
        lines.iter().any(|l| l.starts_with("paths:") && l.contains(path)),
        "{lines:?}"
    );
    let sample = lines.last().expect("a try: line");
    assert!(
        sample.contains(address),
        "the sample request uses the real address: {lines:?}"
    );
}

#[test]
fn every_example_prints_its_address_paths_and_a_sample_request() {
    check(env!("CARGO_BIN_EXE_echo"), &["127.0.0.1:0"], "ws://");
    check(env!("CARGO_BIN_EXE_assistant"), &["127.0.0.1:0"], "/ws/<session>");
    check(
        env!("CARGO_BIN_EXE_dashboard"),
        &["127.0.0.1:0"],
        "/notify/<kind>",
    );
    check(env!("CARGO_BIN_EXE_auth"), &["127.0.0.1:0"], "/ws/private/");
    check(env!("CARGO_BIN_EXE_live"), &["127.0.0.1:0"], "/events/<topic>");
}

#[test]
#[ignore = "needs Redis at 127.0.0.1:6379"]
fn redis_chat_prints_its_address_paths_and_a_sample_request() {
    check(
        env!("CARGO_BIN_EXE_redis-chat"),
        &[
            "127.0.0.1:0",
            "redis://127.0.0.1:6379/0",
            "estuary-example-startup",
        ],
        "/ws/chat/<room>/",
    );
}
