//! The chat pages, compiled into the binary: plain HTML, CSS and JavaScript.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::chat::valid_room;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const ROOM_HTML: &str = include_str!("../assets/room.html");
const CHAT_CSS: &str = include_str!("../assets/chat.css");
const CHAT_JS: &str = include_str!("../assets/chat.js");
const ROOMS_JS: &str = include_str!("../assets/rooms.js");
const NOT_FOUND_HTML: &str = include_str!("../assets/notfound.html");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// What a page may load and who may frame it: its own scripts, styles and
/// socket, nothing inline, no framing (clickjacking), no foreign form
/// targets. The pages use no inline script or style, so nothing is relaxed.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                        connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    }
    response
}

/// A room name that is none: a page saying so, with a way back to the
/// room picker.
fn no_such_room() -> Response {
    let mut response = asset(NOT_FOUND_HTML, "text/html; charset=utf-8");
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

async fn room_page(Path(room): Path<String>) -> Response {
    if valid_room(&room) {
        asset(ROOM_HTML, "text/html; charset=utf-8")
    } else {
        no_such_room()
    }
}

async fn room_without_slash(Path(room): Path<String>) -> Response {
    if valid_room(&room) {
        Redirect::permanent(&format!("/chat/{room}/")).into_response()
    } else {
        no_such_room()
    }
}

/// `/`, `/chat/`, `/chat/{room}/`, `/static/*` and the icon.
pub fn routes() -> axum::Router {
    let icon = || async { asset(FAVICON_SVG, "image/svg+xml") };
    axum::Router::new()
        .route("/", get(|| async { Redirect::temporary("/chat/") }))
        .route("/chat", get(|| async { Redirect::permanent("/chat/") }))
        .route(
            "/chat/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route("/chat/{room}/", get(room_page))
        .route("/chat/{room}", get(room_without_slash))
        .route(
            "/static/chat.css",
            get(|| async { asset(CHAT_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/static/chat.js",
            get(|| async { asset(CHAT_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/static/rooms.js",
            get(|| async { asset(ROOMS_JS, "text/javascript; charset=utf-8") }),
        )
        .route("/static/favicon.svg", get(icon))
        // Browsers ask for it whatever the page says.
        .route("/favicon.ico", get(icon))
}
