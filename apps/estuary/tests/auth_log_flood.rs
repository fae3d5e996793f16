//! `estuary serve` with `[auth.callback]` pointing nowhere, over TCP: a
//! flood of handshakes (each refused with 503) writes a log line a second
//! at most, each saying how many refusals it held back, not a line per
//! handshake. Its own file: the throttle is process-wide, and the log is
//! captured by a subscriber on this test's thread.

mod common;

use std::time::{Duration, Instant};

use common::{CapturedLog, Client, Refused, TestServer, assert_throttled};
use estuary_cli::config::{CallbackSettings, Config};

#[tokio::test]
async fn an_unreachable_callback_logs_a_line_a_second_with_the_count_held_back() {
    // The test's runtime has one thread: the server's tasks log here.
    let (captured, _guard) = CapturedLog::start();

    // A port nothing listens on.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = nowhere.local_addr().unwrap().port();
    drop(nowhere);
    let mut config = Config::default();
    config.server.handshake_rate = 0.0;
    config.server.max_connections_per_ip = 0;
    config.auth.callback = Some(CallbackSettings::new(
        format!("http://127.0.0.1:{port}/estuary/connect/"),
        "the callback secret of the tests",
    ));
    let server = TestServer::with_config(config).await;
    let url = server.url("/ws/chat/flood/");

    // Handshakes until a line reports what it held back (the second line,
    // a second after the first), and at least 500 of them.
    let started = Instant::now();
    let mut handshakes = 0;
    let refusals = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains("authentication unavailable"))
            .cloned()
            .collect()
    };
    loop {
        assert!(matches!(Client::try_connect(&url).await, Err(Refused(503))));
        handshakes += 1;
        let lines = refusals(&captured.lines());
        let held_back = lines
            .iter()
            .any(|l| l.contains("held_back=") && !l.contains("held_back=0"));
        if handshakes >= 500 && held_back {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{handshakes} handshakes: {lines:#?}"
        );
    }
    let elapsed = started.elapsed();
    let all = captured.lines();
    let lines = refusals(&all);
    eprintln!(
        "{handshakes} handshakes in {elapsed:?}: {} log lines in all, {} for the refusals:\n{}",
        all.len(),
        lines.len(),
        lines.join("\n")
    );
    // One a second, and the first; the held-back counts and the lines add
    // up to the refusals.
    assert!(lines.iter().all(|l| l.contains("held_back=")), "{lines:#?}");
    let counted = assert_throttled(&lines, elapsed, handshakes);
    assert!(all.len() <= lines.len() + 4, "{all:#?}");
    assert!(
        counted > handshakes / 2,
        "{counted} counted for {handshakes} handshakes"
    );
    assert!(
        lines[0].contains("check that the authentication backend"),
        "{}",
        lines[0]
    );
}
