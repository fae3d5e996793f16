//! A connect callback for Estuary's WebSocket handshakes: Estuary asks your
//! application who is connecting, and your application answers, with its
//! own sessions, user model and rules (the pattern of Centrifugo's connect
//! proxy and AnyCable's RPC). [`ConnectCallback`] is an
//! [`Authenticator`](estuary_core::auth::Authenticator) for
//! estuary-server's `AuthLayer`; `estuary serve` configures it
//! under `[auth.callback]`.
//!
//! # The request
//!
//! For each handshake, `POST <url>` with `Content-Type: application/json`
//! and this body:
//!
//! ```json
//! {
//!   "event": "connect",
//!   "path": "/ws/chat/lobby/",
//!   "query": "token=abc",
//!   "headers": {"origin": "https://example.org", "user-agent": "..."},
//!   "cookies": {"sessionid": "..."},
//!   "client": {"host": "203.0.113.5", "port": 51234},
//!   "time": 1764460000
//! }
//! ```
//!
//! `path` is as requested (percent-encoded), `query` the raw query string,
//! `headers` and `cookies` only the forwarded ones
//! ([`CallbackConfig::forward_headers`], [`CallbackConfig::forward_cookies`];
//! by default `Origin`, `User-Agent` and `sessionid`), `client` the
//! visitor's address (`null` when unknown), `time` Unix seconds, `event`
//! `"connect"`, or `"recheck"` when an open connection is asked about again
//! ([`CallbackConfig::with_recheck_every`]). The forwarded headers and
//! cookies are also sent as the request's own headers, so the application's
//! middleware (Django's `SessionMiddleware` and `AuthenticationMiddleware`)
//! sees the visitor as it would on a page: `request.user` is who is
//! connecting.
//!
//! The request carries `X-Estuary-Signature: sha256=<hex>`, the HMAC-SHA256
//! of the body under the shared secret ([`sign`]). The application must
//! check it (with a constant-time comparison) and should refuse a `time`
//! more than a minute off, so that a captured request cannot be replayed.
//! The question may be asked twice for one handshake (once more when a
//! kept-alive connection fails under it): answering must only read.
//!
//! # The answer
//!
//! Only `200` with a JSON body decides. To let the visitor in:
//!
//! ```json
//! {
//!   "user": {"id": "42", "name": "alice", "attributes": {"is_staff": false}, "expires_at": 1764463600},
//!   "groups": ["user.42"],
//!   "data": {"plan": "pro"}
//! }
//! ```
//!
//! Every field is optional: `{}` (or `"user": null`) admits an anonymous
//! visitor, which a route that requires authentication refuses with 401.
//! `user.id` is a string or an integer (at most 255 bytes), `name` defaults
//! to the id (at most [`CallbackConfig::with_max_name_chars`] characters),
//! `attributes` are what a consumer reads with
//! [`User::attribute`](estuary_core::User::attribute), `expires_at` (Unix
//! seconds, an integer no later than the year 9999; anything else is a bad
//! answer) closes the connection with 4401 at that moment. `groups` are
//! joined before the consumer's `connect` and left when the connection
//! ends; `data` is [`Scope::data`](estuary_core::Scope::data).
//!
//! To refuse, exactly one of:
//!
//! ```json
//! {"reject": {"status": 403, "reason": "banned"}}
//! {"reject": {"close_code": 4403, "reason": "log in first"}}
//! ```
//!
//! A `status` (400-499) refuses the handshake with it. A `close_code`
//! (4000-4999, or 1008) completes the handshake and closes at once with it,
//! which a browser's `CloseEvent` shows (a refused handshake's status is
//! hidden from page scripts).
//!
//! Anything else never lets anyone in. The application unreachable, silent
//! past the timeout, or failing with a 5xx: the handshake gets 503. Another
//! status, a body that is not one of the shapes above (unknown fields
//! included: a misspelt `group` must not silently join nothing), an
//! invalid group name, a user id longer than 255 bytes or a name longer
//! than [`CallbackConfig::with_max_name_chars`] (150 characters unless
//! set), or more than 64 KiB: 502, and an error line for the operator that
//! says what was wrong (at most one a second, with the count held back).
//!
//! # Many handshakes at once
//!
//! At most [`CallbackConfig::with_max_in_flight`] callbacks run at once
//! (256); a handshake waits for a slot within the timeout, 503 past it.
//! One client address (an IPv6 address by its /64) holds or waits for at
//! most [`CallbackConfig::with_max_in_flight_per_client`] of them (8 unless
//! set); its next handshake gets 429 with `Retry-After: 1` at once, without
//! asking the application, so that a few addresses cannot starve the others
//! while the application is slow.
//!
//! # A Django view that answers it
//!
//! ```python
//! import hashlib, hmac, json, time
//! from django.conf import settings
//! from django.http import HttpResponseForbidden, JsonResponse
//! from django.views.decorators.csrf import csrf_exempt
//!
//! @csrf_exempt
//! def estuary_connect(request):
//!     expected = "sha256=" + hmac.new(settings.ESTUARY_CALLBACK_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
//!     signed = hmac.compare_digest(request.headers.get("X-Estuary-Signature", ""), expected)
//!     if request.method != "POST" or not signed or abs(time.time() - json.loads(request.body)["time"]) > 60:
//!         return HttpResponseForbidden()  # not Estuary's, or a replay
//!     user = request.user  # the visitor, from the forwarded session cookie
//!     if not user.is_authenticated:
//!         return JsonResponse({"reject": {"close_code": 4403, "reason": "log in first"}})
//!     return JsonResponse({"user": {"id": user.pk, "name": user.get_username(), "attributes": {"is_staff": user.is_staff}},
//!                          "groups": [f"user.{user.pk}"]})
//! ```
//!
//! Route it (`path("estuary/connect/", estuary_connect)`) and give Estuary
//! its URL and the same secret. A consumer can then push to one user from
//! anywhere in Django: `group_send(f"user.{pk}", ...)`.

mod answer;
mod callback;
mod config;
#[cfg(feature = "serde")]
mod settings;

pub use answer::{AnswerError, AnswerErrorKind, Decision, MAX_ANSWER_SIZE, Rejection, parse_answer};
pub use callback::{CallbackError, ConnectCallback, sign};
pub use config::{
    CallbackConfig, ConfigError, ConfigErrorKind, DEFAULT_IN_FLIGHT_PER_CLIENT_SHARE, MIN_SECRET_LEN,
    SIGNATURE_HEADER,
};
#[cfg(feature = "serde")]
pub use settings::{CallbackSettings, CallbackSettingsError};
