//! Estuary's server: one port for WebSocket consumers and HTTP routes.
//!
//! * [`Router`]: WebSocket routes with Django's path converters, HTTP routes
//!   from axum, nested routers ([`Router::include`]), the channel layers
//!   (a default one and named ones), and the WebSocket limits.
//! * [`Server`]: HTTP/1.1 on TCP or a Unix socket, trusted proxies, handshake
//!   timeout, and a graceful shutdown that closes WebSockets with 1001.
//! * [`sse`]: HTTP consumers: server-sent events from groups, long-polls.
//! * [`AllowedHosts`]: the `Host` names the server answers to, and
//!   [`OriginLayer`]: handshake middleware, as tower layers.
//!
//! ```no_run
//! use estuary_core::{Consumer, ConsumerError, Context, NoEvent, WsMessage};
//! use estuary_server::{Router, Server, shutdown_signal};
//!
//! struct Echo;
//!
//! impl Consumer for Echo {
//!     type Event = NoEvent;
//!     async fn receive(&mut self, ctx: &mut Context, msg: WsMessage) -> Result<(), ConsumerError> {
//!         ctx.send(msg).await
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let router = Router::new().websocket("ws/echo/", || Echo);
//!     let server = Server::bind("127.0.0.1:8000".parse().unwrap()).await?;
//!     server.serve(router.into_service(), shutdown_signal()).await
//! }
//! ```

mod auth;
mod body;
mod codec;
mod connection;
mod forwarded;
mod hosts;
mod include;
mod layers;
mod limits;
mod origin;
mod proxy;
mod refusal;
mod report;
mod route;
mod router;
mod server;
mod server_config;
#[cfg(feature = "serde")]
mod server_settings;
mod service;
mod settings;
mod signal;
mod socket;
pub mod sse;
mod throttle;
#[cfg(feature = "tls")]
mod tls;
mod transport;
#[cfg(feature = "serde")]
mod websocket_settings;

pub use auth::{AuthLayer, AuthPolicy, AuthService};
pub use body::BodyTimeout;
/// Moved to [`estuary_core::auth`]; re-exported so that these paths keep working.
pub use estuary_core::auth::{
    Admission, AuthChain, AuthError, AuthFuture, Authenticator, DEFAULT_MAX_USER_NAME_CHARS, Handshake,
    MAX_USER_ID_LEN, ReadyFuture, UserBoundsError, check_user_bounds,
};
pub use forwarded::normalize_root_path;
pub use hosts::{AllowedHosts, AllowedHostsLayer, AllowedHostsService, LOOPBACK_HOSTS};
pub use layers::UnknownChannelLayer;
pub use limits::ServerStats;
pub use origin::{OriginLayer, OriginService};
pub use proxy::{InvalidProxy, TrustedProxies};
pub use refusal::EarlyRefusal;
pub use report::{AuthReport, HandshakeRefusal};
pub use route::{PathPattern, PatternError, PatternErrorKind};
pub use router::{ConnectionInfo, Router, Runtime};
pub use server::{DEFAULT_LISTEN_BACKLOG, Server};
pub use server_config::ServerConfig;
#[cfg(feature = "serde")]
pub use server_settings::{ServerSettings, ServerSettingsError};
pub use service::{InMemoryConnection, RouterService};
pub use settings::WsSettings;
pub use signal::shutdown_signal;
#[cfg(feature = "tls")]
pub use tls::{TlsError, TlsErrorKind, TlsFiles};
pub use transport::{AnyTransport, MemoryClient, MemoryTransport, ServerFrame, SocketTransport};
#[cfg(feature = "serde")]
pub use websocket_settings::{SlowClient, WebSocketSettings, WebSocketSettingsError};

/// The handshake's pure checks, reachable from the fuzz harness (`fuzz/`).
///
/// Not part of the API: it exists so that the harness can call the checks
/// every upgrade request goes through with hostile input, without a socket,
/// and may change at any time.
#[doc(hidden)]
pub mod fuzzing {
    use http::{HeaderMap, Method};

    /// RFC 6455's `Sec-WebSocket-Key` check (16 bytes, base64).
    pub fn valid_websocket_key(key: &[u8]) -> bool {
        crate::service::valid_websocket_key(key)
    }

    /// True when a request asks for a WebSocket upgrade.
    pub fn is_websocket_upgrade(headers: &HeaderMap, method: &Method) -> bool {
        crate::service::is_websocket_upgrade(headers, method)
    }

    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in order.
    pub fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
        crate::service::offered_subprotocols(headers)
    }

    /// The copy of the headers a scope keeps, as its `headers()` gives them.
    pub fn compact_headers(headers: &HeaderMap) -> HeaderMap {
        estuary_core::Scope::builder("/")
            .headers_from(crate::service::kept_headers(headers))
            .build()
            .headers()
            .clone()
    }

    /// What the WebSocket reader made of a client frame.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum FrameEvent {
        /// A complete text message.
        Text(String),
        /// A complete binary message.
        Binary(Vec<u8>),
        /// A ping and its payload.
        Ping(Vec<u8>),
        /// A pong.
        Pong,
        /// A close frame: its code and reason, if it had a code.
        Close(Option<(u16, String)>),
    }

    /// The server's WebSocket reader, fed socket reads by hand.
    #[derive(Debug)]
    pub struct FrameReader(crate::codec::read::Inbox);

    impl FrameReader {
        /// A reader taking messages up to `max_message` bytes and frames
        /// up to `max_frame`.
        pub fn new(max_message: usize, max_frame: usize) -> Self {
            Self(crate::codec::read::Inbox::new(crate::codec::read::Limits {
                max_message,
                max_frame,
            }))
        }

        /// Takes `bytes` as one socket read, and returns every event the
        /// bytes held so far complete, then the first error's close code
        /// (after which nothing more should be read).
        pub fn read(&mut self, bytes: &[u8]) -> (Vec<FrameEvent>, Option<u16>) {
            use crate::codec::read::Event;
            let mut events = Vec::new();
            let mut next = self.0.absorb(bytes);
            loop {
                let event = match next {
                    Ok(Some(event)) => event,
                    Ok(None) => return (events, None),
                    Err(e) => {
                        let code = estuary_core::TransportError::from(e).close_code().as_u16();
                        return (events, Some(code));
                    }
                };
                events.push(match event {
                    Event::Message(estuary_core::WsMessage::Text(t)) => FrameEvent::Text(t.to_string()),
                    Event::Message(estuary_core::WsMessage::Binary(b)) => FrameEvent::Binary(b.to_vec()),
                    Event::Ping(p) => FrameEvent::Ping(p.to_vec()),
                    Event::Pong => FrameEvent::Pong,
                    Event::Close(f) => {
                        FrameEvent::Close(f.map(|f| (f.code().as_u16(), f.reason().to_owned())))
                    }
                });
                next = self.0.next_held();
            }
        }
    }

    /// A client's frame: `first` is its first byte (FIN, reserved bits,
    /// opcode), the payload masked with `mask`.
    pub fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        crate::codec::frame::client_frame(first, payload, mask)
    }

    /// The bytes the server writes for the frames `(opcode, payload)`,
    /// through its write queue, into a sink taking at most `step` bytes a
    /// write.
    pub fn server_frames(frames: &[(u8, &[u8])], step: usize) -> Vec<u8> {
        crate::codec::write::write_all_to_vec(frames, step)
    }
}
