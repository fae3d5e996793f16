//! `echo`: the plainest consumer. Every text or binary message comes back
//! unchanged. It is also the Autobahn conformance target, so it takes
//! messages up to 16 MiB and sends no keepalive pings.
//!
//! Run: `cargo run -p estuary-examples --bin echo -- 127.0.0.1:9001`, then
//! connect to `ws://127.0.0.1:9001/` (any path), e.g. with
//! `websocat ws://127.0.0.1:9001/` and type a line.

use estuary::prelude::*;
use estuary::{Server, WsSettings};

struct Echo;

impl Consumer for Echo {
    type Event = NoEvent;

    async fn receive(&mut self, ctx: &mut Context, message: WsMessage) -> Result<(), ConsumerError> {
        ctx.send(message).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9001".into());
    let mut settings = WsSettings {
        max_message_size: 16 << 20,
        max_frame_size: 16 << 20,
        ..WsSettings::default()
    };
    settings.session.ping_interval = None;
    let router = Router::new()
        .with_settings(settings)
        .websocket("{*path}", || Echo)
        .websocket("/", || Echo);
    let server = Server::bind(addr.parse()?).await?;
    let addr = server.local_addr().expect("TCP");
    println!("listening on http://{addr}");
    println!("paths: ws://{addr}/ and every other path: each message comes back unchanged");
    println!("try:   websocat ws://{addr}/    then type a line");
    server.serve(router.into_service(), shutdown_signal()).await?;
    Ok(())
}
