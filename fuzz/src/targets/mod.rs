//! The targets, one file per kind of input.

pub mod callback;
pub mod chat;
pub mod codec;
pub mod django;
pub mod http;
pub mod jwt;
pub mod names;
pub mod query;
pub mod route;
pub mod stored;

use crate::Target;

/// Every target, in the order `all` runs them.
pub const ALL: &[Target] = &[
    Target {
        name: "route",
        about: "route patterns (path() and re_path()) compiled, and paths matched",
        run: route::run,
        dictionary: route::DICTIONARY,
        max_len: 512,
    },
    Target {
        name: "query",
        about: "query strings into typed parameters, route parameters, cookies",
        run: query::run,
        dictionary: query::DICTIONARY,
        max_len: 1024,
    },
    Target {
        name: "chat",
        about: "chat client frames, and chat events as msgpack and JSON",
        run: chat::run,
        dictionary: chat::DICTIONARY,
        max_len: 2048,
    },
    Target {
        name: "names",
        about: "channel, group and room names",
        run: names::run,
        dictionary: names::DICTIONARY,
        max_len: 160,
    },
    Target {
        name: "stored",
        about: "stored layer messages: Message::from_msgpack and the Redis codec, plain and encrypted",
        run: stored::run,
        dictionary: stored::DICTIONARY,
        max_len: 4096,
    },
    Target {
        name: "django",
        about: "Django session cookies, signed values and session data (estuary-django)",
        run: django::run,
        dictionary: django::DICTIONARY,
        max_len: 2048,
    },
    Target {
        name: "jwt",
        about: "JWTs (header, claims, signature) and JWKS documents (estuary-jwt)",
        run: jwt::run,
        dictionary: jwt::DICTIONARY,
        max_len: 2048,
    },
    Target {
        name: "callback",
        about: "connect-callback answers and their signature (estuary-callback)",
        run: callback::run,
        dictionary: callback::DICTIONARY,
        max_len: 2048,
    },
    Target {
        name: "ws-read",
        about: "client WebSocket frames in any chunking through the server's frame reader",
        run: codec::read,
        dictionary: codec::DICTIONARY,
        max_len: 2048,
    },
    Target {
        name: "ws-roundtrip",
        about: "messages framed as a client and as the server, read back",
        run: codec::roundtrip,
        dictionary: codec::DICTIONARY,
        max_len: 2048,
    },
    Target {
        name: "http-checks",
        about: "request heads through the upgrade, key, host and origin checks",
        run: http::checks,
        dictionary: http::DICTIONARY,
        max_len: 2048,
    },
    Target {
        name: "http-server",
        about: "raw bytes over TCP to the estuary serve application, which must keep answering",
        run: http::server,
        dictionary: http::DICTIONARY,
        max_len: 4096,
    },
];
