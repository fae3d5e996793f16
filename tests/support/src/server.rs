//! A service served by Estuary's [`Server`] on a free loopback port.

use std::net::SocketAddr;

use estuary_server::Server;
use tokio_util::sync::CancellationToken;

/// A server on `127.0.0.1` at a port the system chose, stopped when
/// [`stop`](Served::stop) is cancelled (not on drop: a test keeps it running
/// by keeping or ignoring the token).
#[derive(Debug)]
pub struct Served {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancel to shut the server down (gracefully, as on SIGTERM).
    pub stop: CancellationToken,
}

impl Served {
    /// `ws://<addr><path>`.
    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

/// Serves `service` on a free port of `127.0.0.1` with the default
/// [`ServerConfig`](estuary_server::ServerConfig).
pub async fn serve<S, B>(service: S) -> Served
where
    S: tower::Service<http::Request<axum::body::Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    B: http_body::Body<Data = bytes::Bytes> + Default + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let server = Server::bind("127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind a free loopback port");
    let addr = server.local_addr().expect("the bound address");
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server.serve(service, async move { token.cancelled().await }));
    Served { addr, stop }
}
