//! Handshakes refused by a server limit before the application
//! (`max_connections` at accept, the handshake rate) still get an access
//! line (method, path, status, duration, client) and move
//! `estuary_handshakes_refused_total{reason}`, over real TCP.

mod common;

use std::time::Duration;

use common::served::Served;
use common::{Client, Refused};
use estuary_test_support::eventually::poll_async;
use estuary_test_support::http;
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);

/// The access line of the refusal of `path` with `status`, once written.
async fn access_line(server: &Served, path: &str, status: u16) -> String {
    poll_async(
        "the refusal's access line",
        LIMIT,
        Duration::from_millis(50),
        || async {
            server.log().into_iter().find(|l| {
                l.contains("estuary::access")
                    && l.contains(&format!("path=\"{path}\""))
                    && l.contains(&format!("status={status}"))
            })
        },
    )
    .await
}

/// The value of `line_start` (name and labels) in a scrape.
fn sample(scrape: &str, line_start: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
}

#[tokio::test]
async fn refusals_by_the_server_limits_are_logged_and_counted() {
    let dir = std::env::temp_dir().join(format!("estuary-early-refusals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("estuary.toml");
    // One handshake allowed per address (a burst of one, then one in 100 s);
    // two connections open at once.
    std::fs::write(
        &file,
        "[server]\nmax_connections = 2\nhandshake_rate = 0.01\nhandshake_burst = 1\n",
    )
    .unwrap();
    let server = Served::start(&["--config", file.to_str().unwrap()]);

    // max_connections: two connections held, a third is a handshake.
    let held = [
        TcpStream::connect(server.addr()).await.unwrap(),
        TcpStream::connect(server.addr()).await.unwrap(),
    ];
    let full = Client::try_connect(&server.url("/ws/chat/full/?x=1")).await;
    assert!(matches!(full, Err(Refused(503))), "{:?}", full.err());
    let line = access_line(&server, "/ws/chat/full/", 503).await;
    for field in [
        "method=GET",
        "kind=\"websocket\"",
        "client=127.0.0.1",
        "refused=\"max_connections\"",
        "duration_ms=",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    drop(held);

    // The handshake rate: the first handshake takes the one allowed, the
    // second is refused (its connection is answered once the held ones are
    // gone, so the limit met is the rate's).
    let member = poll_async(
        "a free connection slot",
        LIMIT,
        Duration::from_millis(50),
        || async { Client::try_connect(&server.url("/ws/chat/rate/")).await.ok() },
    )
    .await;
    let fast = Client::try_connect(&server.url("/ws/chat/again/")).await;
    assert!(matches!(fast, Err(Refused(429))), "{:?}", fast.err());
    let line = access_line(&server, "/ws/chat/again/", 429).await;
    for field in [
        "method=GET",
        "kind=\"websocket\"",
        "client=127.0.0.1",
        "refused=\"handshake_rate\"",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    drop(member);

    let scrape = poll_async("a scrape", LIMIT, Duration::from_millis(50), || async {
        let response = http::get(server.addr(), "/metrics").await;
        let body = response.split_once("\r\n\r\n")?.1.to_owned();
        (response.starts_with("HTTP/1.1 200")
            && sample(
                &body,
                r#"estuary_handshakes_refused_total{reason="handshake_rate"}"#,
            )
            .is_some())
        .then_some(body)
    })
    .await;
    for (line, at_least) in [
        (
            r#"estuary_handshakes_refused_total{reason="max_connections"}"#,
            1.0,
        ),
        (
            r#"estuary_handshakes_refused_total{reason="handshake_rate"}"#,
            1.0,
        ),
        (
            r#"estuary_http_requests_total{kind="websocket",status="503"}"#,
            1.0,
        ),
        (
            r#"estuary_http_requests_total{kind="websocket",status="429"}"#,
            1.0,
        ),
    ] {
        let value = sample(&scrape, line).unwrap_or(0.0);
        assert!(value >= at_least, "{line} = {value} in\n{scrape}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
