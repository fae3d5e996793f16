//! What a route knows about an HTTP request when it chooses its groups.

use axum::extract::{FromRequestParts, RawPathParams};
use estuary_core::User;
use http::request::Parts;
use http::{Extensions, HeaderMap, Uri};

use estuary_core::Admission;

/// The request an [`SseRoute`](super::SseRoute) (or a long-poll) is
/// choosing groups for: its route parameters, query, headers, and the
/// [`Admission`] an authentication middleware left in its extensions.
///
/// ```
/// use estuary_server::sse::SseRequest;
///
/// let request = http::Request::get("/events/lobby?since=3")
///     .header("last-event-id", "a-1-7")
///     .body(())
///     .unwrap();
/// let (parts, ()) = request.into_parts();
/// let request = SseRequest::new(parts, vec![("room".into(), "lobby".into())]);
/// assert_eq!(request.param("room"), Some("lobby"));
/// assert_eq!(request.query("since").as_deref(), Some("3"));
/// assert_eq!(request.last_event_id(), Some("a-1-7"));
/// assert!(request.user().is_none());
/// ```
#[derive(Debug)]
pub struct SseRequest {
    parts: Parts,
    params: Vec<(String, String)>,
}

impl SseRequest {
    /// A request from its head and its route parameters (decoded), as a
    /// handler or a test has them.
    pub fn new(parts: Parts, params: Vec<(String, String)>) -> Self {
        Self { parts, params }
    }

    /// The request's head with the route parameters axum matched.
    pub(crate) async fn from_parts(mut parts: Parts) -> Self {
        // Outside an axum router there are no parameters: none, then.
        let params = match RawPathParams::from_request_parts(&mut parts, &()).await {
            Ok(raw) => raw.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            Err(_) => Vec::new(),
        };
        Self { parts, params }
    }

    /// A route parameter (`/events/{room}` → `param("room")`), decoded.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter called `name`, decoded; `None` when absent
    /// or when the query is not `application/x-www-form-urlencoded`.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.parts.uri.query()?;
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The request's URI.
    pub fn uri(&self) -> &Uri {
        &self.parts.uri
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// The request's extensions (what middleware left there).
    pub fn extensions(&self) -> &Extensions {
        &self.parts.extensions
    }

    /// What an authentication middleware decided, when one ran and put an
    /// [`Admission`] in the request's extensions. Its groups are joined
    /// besides the ones the route chooses.
    pub fn admission(&self) -> Option<&Admission> {
        self.parts.extensions.get::<Admission>()
    }

    /// The user of the [`admission`](Self::admission), if any.
    pub fn user(&self) -> Option<&User> {
        self.admission().and_then(|a| a.user.as_ref())
    }

    /// The `Last-Event-ID` header a reconnecting `EventSource` sends (the
    /// id of the last event it received); `None` when absent, empty or not
    /// text.
    pub fn last_event_id(&self) -> Option<&str> {
        self.parts
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    }
}
