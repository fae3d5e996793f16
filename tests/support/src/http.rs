//! A minimal HTTP/1.1 client for tests: one request per connection, the
//! whole response read as text (status line, headers, body), every wait
//! bounded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a request may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// Sends one request (`method path`) with `Host` set to `host` (the address
/// connected to when `None`), extra header lines (each ending in `\r\n`) and
/// `body`; returns the whole response text.
///
/// ```no_run
/// # async fn demo() {
/// use estuary_test_support::http;
///
/// let response = http::request("127.0.0.1:8000", "GET", "/healthz", None, "", "").await;
/// assert!(response.starts_with("HTTP/1.1 200"));
/// # }
/// ```
pub async fn request(
    addr: impl tokio::net::ToSocketAddrs,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &str,
    body: &str,
) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let host = match host {
        Some(host) => host.to_owned(),
        None => s.peer_addr().expect("peer address").to_string(),
    };
    let length = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!("content-length: {}\r\n", body.len())
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{headers}{length}connection: close\r\n\r\n{body}"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .expect("no response in time")
        .expect("read");
    out
}

/// `GET path`, `Host` being the address connected to.
pub async fn get(addr: impl tokio::net::ToSocketAddrs, path: &str) -> String {
    request(addr, "GET", path, None, "", "").await
}

/// `GET path` with this `Host` header.
pub async fn get_with_host(addr: impl tokio::net::ToSocketAddrs, host: &str, path: &str) -> String {
    request(addr, "GET", path, Some(host), "", "").await
}

/// Sends `POST path` with `body` and extra header lines (each ending in
/// `\r\n`), `Host` being the address connected to; returns the whole
/// response text.
pub async fn post(addr: impl tokio::net::ToSocketAddrs, path: &str, headers: &str, body: &str) -> String {
    request(addr, "POST", path, None, headers, body).await
}

/// `POST` with a JSON body.
pub async fn post_json(addr: impl tokio::net::ToSocketAddrs, path: &str, body: &str) -> String {
    post(addr, path, "content-type: application/json\r\n", body).await
}
