//! A minimal HTTP/1.1 client for tests: one request per connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `POST path` with `body` and extra header lines (each ending in
/// `\r\n`), `Host` being the address connected to; returns the whole
/// response text.
pub async fn post(addr: impl tokio::net::ToSocketAddrs, path: &str, headers: &str, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let host = s.peer_addr().expect("peer address");
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("no response in time")
        .expect("read");
    out
}

/// `POST` with a JSON body.
pub async fn post_json(addr: impl tokio::net::ToSocketAddrs, path: &str, body: &str) -> String {
    post(addr, path, "content-type: application/json\r\n", body).await
}
