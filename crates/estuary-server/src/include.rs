//! Nested routers (Django's `include`): one router's routes mounted under a
//! prefix of another.

use crate::route::{PathPattern, PatternError};
use crate::router::Router;

impl Router {
    /// Mounts `router`'s routes under `prefix` (Django's
    /// `path("chat/<room>/", include(...))`, Channels' nested `URLRouter`).
    ///
    /// `prefix` is a Django `path()` pattern matched against the start of
    /// the path, up to a `/` or the end; the rest of the path (from that
    /// `/`) is matched against the included router's WebSocket routes, in
    /// their order, at the place of this call among the outer router's
    /// routes. Parameters in the prefix reach the consumer's scope before
    /// its route's own ([`Scope::param`](estuary_core::Scope::param)). An
    /// empty prefix mounts the routes as they are.
    ///
    /// The included router's HTTP routes are nested under the prefix the
    /// axum way ([`axum::Router::nest`], the prefix in axum's syntax, with
    /// parameters but without their converters: `<int:id>` becomes `{id}`);
    /// under an empty prefix they are merged. Only routes come across: the
    /// included router's channel layers, settings and runtime are not used
    /// (its consumers' [`CHANNEL_LAYER_ALIAS`](estuary_core::Consumer::CHANNEL_LAYER_ALIAS)
    /// names are resolved on the outer router when it is built).
    ///
    /// ```
    /// use estuary_core::{Connect, Consumer, ConsumerError, Context, NoEvent};
    /// use estuary_server::Router;
    ///
    /// struct Room;
    /// impl Consumer for Room {
    ///     type Event = NoEvent;
    ///     async fn connect(&mut self, ctx: &mut Context) -> Result<Connect, ConsumerError> {
    ///         // `room` from the prefix, `kind` from the inner route.
    ///         let room: String = ctx.scope().param("room")?;
    ///         let kind: String = ctx.scope().param("kind")?;
    ///         # let _ = (room, kind);
    ///         Ok(Connect::accept())
    ///     }
    /// }
    ///
    /// let chat = Router::new()
    ///     .websocket("ws/", || Room)
    ///     .websocket("feeds/<slug:kind>/", || Room)
    ///     .route("/history", axum::routing::get(|| async { "[]" }));
    ///
    /// // `/chat/lobby/ws/` and `/chat/lobby/feeds/news/` reach `Room`;
    /// // `GET /chat/lobby/history` the HTTP handler.
    /// let router = Router::new().include("chat/<str:room>/", chat);
    /// # let _ = router.into_service();
    /// ```
    ///
    /// # Panics
    ///
    /// When the prefix does not compile, names a parameter that one of the
    /// included routes names too, or has a `path` converter while the
    /// included router has HTTP routes; use
    /// [`try_include`](Self::try_include) to handle it.
    pub fn include(self, prefix: &str, router: Router) -> Self {
        match self.try_include(prefix, router) {
            Ok(router) => router,
            Err(e) => panic!("invalid include {prefix:?}: {e}"),
        }
    }

    /// Like [`include`](Self::include), returning pattern errors.
    pub fn try_include(mut self, prefix: &str, router: Router) -> Result<Self, PatternError> {
        let pattern = PathPattern::prefix(prefix)?;
        let mut routes = router.routes;
        for route in &mut routes {
            if let Some(name) = route.names().find(|n| pattern.names().contains(n)) {
                return Err(PatternError::duplicate(name));
            }
            route.push_prefix(pattern.clone());
        }
        if router.http.has_routes() {
            self.http = match pattern.axum_prefix()? {
                Some(at) => self.http.nest(&at, router.http),
                None => self.http.merge(router.http),
            };
        }
        self.routes.extend(routes);
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use estuary_core::{Consumer, NoEvent};

    use super::*;
    use crate::route::{PatternErrorKind, WsRoute};

    struct Nothing;
    impl Consumer for Nothing {
        type Event = NoEvent;
    }

    fn params(router: &Router, path: &str) -> Option<Vec<(String, String)>> {
        router
            .find(path)
            .map(|(_, params, _)| params.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn prefix_parameters_come_first_and_the_rest_matches_inside() {
        let inner = Router::new()
            .websocket("ws/", || Nothing)
            .websocket("items/<int:id>/", || Nothing)
            .websocket_re(r"^raw/(?P<tail>[a-z]+)$", || Nothing);
        let router = Router::new()
            .websocket("chat/top/", || Nothing)
            .include("chat/<slug:room>/", inner);
        assert_eq!(
            params(&router, "/chat/top/"),
            Some(vec![]),
            "the outer route comes first"
        );
        assert_eq!(
            params(&router, "/chat/lobby/ws/"),
            Some(vec![kv("room", "lobby")])
        );
        assert_eq!(params(&router, "/chat/lobby/ws"), Some(vec![kv("room", "lobby")]));
        assert_eq!(
            params(&router, "/chat/lobby/items/7/"),
            Some(vec![kv("room", "lobby"), kv("id", "7")])
        );
        assert_eq!(
            params(&router, "/chat/lobby/raw/abc"),
            Some(vec![kv("room", "lobby"), kv("tail", "abc")])
        );
        assert_eq!(params(&router, "/chat/lobby/items/x/"), None);
        assert_eq!(params(&router, "/chat/lob.by/ws/"), None, "slug refuses dots");
        assert_eq!(params(&router, "/chatx/lobby/ws/"), None);
        assert_eq!(
            params(&router, "/chat/lobby/"),
            None,
            "no inner route for the bare prefix"
        );
    }

    #[test]
    fn includes_nest_and_an_empty_prefix_mounts_as_is() {
        let leaf = Router::new().websocket("", || Nothing);
        let middle = Router::new().include("<int:n>/", leaf);
        let router = Router::new().include("", Router::new().include("v1/", middle));
        assert_eq!(params(&router, "/v1/3/"), Some(vec![kv("n", "3")]));
        assert_eq!(params(&router, "/v1/3"), Some(vec![kv("n", "3")]));
        assert_eq!(params(&router, "/v1/x/"), None);
        let described: Vec<String> = router.routes.iter().map(WsRoute::describe).collect();
        assert_eq!(described, ["v1/ + <int:n>/"]);
    }

    #[test]
    fn bad_includes_are_errors() {
        let inner = || Router::new().websocket("<room>/", || Nothing);
        let twice = Router::new().try_include("chat/<room>/", inner()).err();
        assert_eq!(
            twice.as_ref().map(|e| (e.kind(), e.input())),
            Some((PatternErrorKind::Duplicate, Some("room")))
        );
        assert_eq!(
            Router::new()
                .try_include("chat/<float:x>/", inner())
                .err()
                .map(|e| e.kind()),
            Some(PatternErrorKind::UnknownConverter)
        );
        let with_http = Router::new().route("/h", axum::routing::get(|| async { "h" }));
        let wildcard = Router::new().try_include("files/<path:rest>/", with_http).err();
        assert_eq!(
            wildcard.as_ref().map(PatternError::kind),
            Some(PatternErrorKind::WildcardPrefix)
        );
        assert_eq!(wildcard.as_ref().map(PatternError::input), Some(None));
        // Without HTTP routes a wildcard prefix is fine; it takes all it
        // can, as in Django, so only an empty inner route follows it.
        let router = Router::new().include("files/<path:rest>/", Router::new().websocket("", || Nothing));
        assert_eq!(params(&router, "/files/a/b"), Some(vec![kv("rest", "a/b")]));
    }
}
