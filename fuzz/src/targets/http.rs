//! The HTTP request head and the upgrade checks.
//!
//! `http-checks` parses a request head (leniently, by hand) and runs the
//! checks every handshake goes through: the upgrade test, the
//! `Sec-WebSocket-Key` check, the offered subprotocols, the scope's copy of
//! the headers, `AllowedHosts` and the origin check.
//!
//! `http-server` writes the bytes over a real TCP socket to `estuary serve`'s
//! own application (chat rooms, pages, push API, allowed hosts, origin
//! check) on an in-process server, reads the answer, and checks that the
//! server still answers a well-formed request. Bytes after a head that
//! upgrades reach the chat consumer as WebSocket frames.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use estuary_server::fuzzing::{
    compact_headers, is_websocket_upgrade, offered_subprotocols, valid_websocket_key,
};
use estuary_server::{AllowedHosts, OriginLayer, Server};
use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Trail, text};

/// Runs one input through the pure checks.
pub fn checks(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let head = text(data);
    let mut lines = head.split("\r\n").flat_map(|l| l.split('\n'));
    let request_line = lines.next().unwrap_or_default();
    let method = Method::from_bytes(request_line.split(' ').next().unwrap_or_default().as_bytes())
        .unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_bytes(value.trim().as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    trail.note(headers.len().min(8));

    let upgrade = is_websocket_upgrade(&headers, &method);
    trail.note(("upgrade", upgrade));
    if upgrade {
        assert_eq!(method, Method::GET);
    }
    for key in headers.get_all(header::SEC_WEBSOCKET_KEY) {
        let valid = valid_websocket_key(key.as_bytes());
        trail.note(("key", valid));
        if valid {
            assert_eq!(key.len(), 24);
        }
    }
    for protocol in offered_subprotocols(&headers) {
        assert!(!protocol.is_empty() && protocol.trim() == protocol && !protocol.contains(','));
    }
    // The scope keeps every header but the handshake's own, values intact.
    let copy = compact_headers(&headers);
    for name in headers.keys() {
        let handshake_only = matches!(
            name.as_str(),
            "sec-websocket-key"
                | "sec-websocket-version"
                | "sec-websocket-extensions"
                | "upgrade"
                | "connection"
                | "content-length"
        );
        assert_eq!(
            copy.contains_key(name),
            !handshake_only,
            "the scope's copy of {name}"
        );
        if !handshake_only {
            assert!(
                copy.get_all(name).iter().eq(headers.get_all(name).iter()),
                "the scope's copy of {name} differs"
            );
        }
    }
    assert!(copy.len() <= headers.len());

    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
    if let Some(host) = host {
        let exact = AllowedHosts::new(["example.com"]);
        if exact.allows(host) {
            trail.note("host allowed");
            assert!(host.to_ascii_lowercase().starts_with("example.com"), "{host:?}");
        }
        let sub = AllowedHosts::new([".example.com"]);
        if sub.allows(host) {
            let name = host.to_ascii_lowercase();
            let name = name
                .rsplit_once(':')
                .map_or(name.as_str(), |(n, _)| n)
                .trim_end_matches('.');
            assert!(
                name == "example.com" || name.ends_with(".example.com"),
                "{host:?}"
            );
        }
        trail.note(("loopback", AllowedHosts::loopback().allows(host)));
        assert!(AllowedHosts::any().allows(host));
    }
    let same_host = OriginLayer::same_host();
    trail.note(("same host", same_host.allows(origin, host)));
    let listed = OriginLayer::new(["https://chat.example.com", ".example.org", "http://localhost:*"])
        .or_allowed_hosts(&AllowedHosts::loopback());
    trail.note(("listed", listed.allows(origin, host)));
    if origin.is_none() {
        assert!(
            !listed.allows(None, host),
            "a missing origin is refused unless allowed"
        );
        assert!(listed.clone().allow_missing_origin().allows(None, host));
    }
    trail.finish()
}

/// Tokens of request heads.
pub const DICTIONARY: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"OPTIONS ",
    b" HTTP/1.1\r\n",
    b" HTTP/1.0\r\n",
    b" HTTP/2.0\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b": ",
    b"Host: ",
    b"localhost",
    b"127.0.0.1:8000",
    b"[::1]",
    b"example.com",
    b"Connection: ",
    b"Upgrade: ",
    b"upgrade",
    b"websocket",
    b"Sec-WebSocket-Key: ",
    b"dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
    b"Sec-WebSocket-Protocol: ",
    b"Origin: ",
    b"http://localhost:8000",
    b"null",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Cookie: ",
    b"Authorization: Bearer ",
    b"X-Forwarded-For: ",
    b"/ws/chat/lobby/",
    b"/chat/",
    b"/api/",
    b"?username=",
    b"%00",
    b"%ff",
    b",",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b"\x81\x85\x00\x00\x00\x00",
    b"\x88\x80\x00\x00\x00\x00",
    b"\x89\x80\x00\x00\x00\x00",
    b"{\"message\":\"hi\"}",
];

/// The token of the push API on the fuzzed server.
pub const PUSH_TOKEN: &str = "fuzz-token";

struct Harness {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fuzz-server")
            .enable_all()
            .build()
            .expect("a runtime");
        let addr = runtime.block_on(async {
            let config = estuary_cli::config::Config {
                push_token: Some(PUSH_TOKEN.to_owned()),
                ..Default::default()
            };
            let service = estuary_cli::serve::service(&config).expect("the app builds");
            let mut server_config = config.server_config().expect("the default server config");
            // Every input comes from one address, fast: no rate or per-address limit.
            server_config.handshake_rate = None;
            server_config.max_connections_per_ip = None;
            server_config.handshake_timeout = Duration::from_secs(2);
            let server = Server::bind("127.0.0.1:0".parse().expect("an address"))
                .await
                .expect("a port")
                .with_config(server_config);
            let addr = server.local_addr().expect("a TCP server");
            tokio::spawn(server.serve(service, std::future::pending()));
            addr
        });
        Harness { runtime, addr }
    })
}

/// Writes `data`, reads until the server closes, goes quiet, or half a second passes.
async fn exchange(addr: SocketAddr, data: &[u8]) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("the server accepts connections");
    let _ = stream.write_all(data).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut closed = false;
    while Instant::now() < deadline && answer.len() < 1 << 16 {
        match tokio::time::timeout(Duration::from_millis(25), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    (answer, closed)
}

const HEALTH: &[u8] = b"GET /chat/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// Runs one input against the live server.
pub fn server(data: &[u8]) -> u64 {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let h = harness();
    let mut trail = Trail::new();
    let (answer, closed) = h.runtime.block_on(exchange(h.addr, data));
    trail.note(closed);
    if !answer.is_empty() {
        assert!(
            answer.starts_with(b"HTTP/1."),
            "the server answered with something other than HTTP: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
        trail.note(&answer[..answer.len().min(12)]);
    }
    // The server stays up: a well-formed request still gets its page.
    if RUNS.fetch_add(1, Ordering::Relaxed) % 16 == 0 {
        let (page, _) = h.runtime.block_on(exchange(h.addr, HEALTH));
        assert!(
            page.starts_with(b"HTTP/1.1 200"),
            "the server stopped answering: {:?}",
            String::from_utf8_lossy(&page[..page.len().min(200)])
        );
    }
    trail.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(seed: &str) -> String {
        let data = std::fs::read(crate::driver::crate_dir().join("corpus/http-server").join(seed)).unwrap();
        let h = harness();
        let (answer, _) = h.runtime.block_on(exchange(h.addr, &data));
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// The seeds reach deep: the handshake is accepted and the chat consumer
    /// answers frames; the push API takes the token; a bad room is refused.
    #[test]
    fn seeds_reach_the_application() {
        let upgraded = answer("seed-upgrade-then-frames");
        assert!(upgraded.starts_with("HTTP/1.1 101"), "{upgraded}");
        assert!(upgraded.contains("connection_established"), "{upgraded}");
        assert!(upgraded.contains("Invalid JSON format"), "{upgraded}");
        let pushed = answer("seed-push");
        assert!(pushed.starts_with("HTTP/1.1 2"), "{pushed}");
        assert!(answer("seed-push-no-token").starts_with("HTTP/1.1 401"));
        assert!(answer("seed-evil-host").starts_with("HTTP/1.1 400"));
        assert!(answer("seed-evil-origin").starts_with("HTTP/1.1 403"));
    }
}
