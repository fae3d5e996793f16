//! WebSocket route patterns: Django's `path()` converters and `re_path()` regexes.

use std::fmt;
use std::sync::Arc;

use estuary_core::ChannelLayerHandle;
use regex::Regex;

/// A route pattern could not be compiled.
///
/// Opaque, like [`std::io::Error`]: [`kind`](Self::kind) says what is
/// wrong, [`input`](Self::input) names the part of the pattern at fault,
/// and a regex that does not compile is the [`source`](std::error::Error::source).
///
/// ```
/// use estuary_server::{PathPattern, PatternErrorKind};
///
/// let error = PathPattern::path("ws/<float:x>/").unwrap_err();
/// assert_eq!(error.kind(), PatternErrorKind::UnknownConverter);
/// assert_eq!(error.input(), Some("float"));
/// assert_eq!(
///     error.to_string(),
///     r#"unknown path converter "float" (use str, int, slug, uuid or path)"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PatternError {
    kind: PatternErrorKind,
    /// The converter, the pattern or the parameter name at fault.
    input: Option<Box<str>>,
    /// The regex compiler's error, for `Regex`.
    source: Option<regex::Error>,
}

/// What is wrong with a route pattern ([`PatternError::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PatternErrorKind {
    /// `<conv:name>` names a converter Django does not have;
    /// [`input`](PatternError::input) is the converter's name.
    UnknownConverter,
    /// A `<...>` or `{...}` is not closed, or a parameter name is not an
    /// identifier; [`input`](PatternError::input) is the pattern.
    Malformed,
    /// The regex did not compile (its error is the source).
    Regex,
    /// Two parameters share a name (in one pattern, or in an included
    /// router's prefix and one of its routes); [`input`](PatternError::input)
    /// is the name.
    Duplicate,
    /// An included router with HTTP routes is mounted under a prefix with a
    /// `path` converter (`<path:rest>`, `{*rest}`), which axum cannot nest.
    WildcardPrefix,
}

impl PatternError {
    fn new(kind: PatternErrorKind, input: Option<&str>) -> Self {
        Self {
            kind,
            input: input.map(Box::from),
            source: None,
        }
    }

    pub(crate) fn unknown_converter(name: &str) -> Self {
        Self::new(PatternErrorKind::UnknownConverter, Some(name))
    }

    pub(crate) fn malformed(pattern: &str) -> Self {
        Self::new(PatternErrorKind::Malformed, Some(pattern))
    }

    pub(crate) fn duplicate(name: &str) -> Self {
        Self::new(PatternErrorKind::Duplicate, Some(name))
    }

    pub(crate) fn wildcard_prefix() -> Self {
        Self::new(PatternErrorKind::WildcardPrefix, None)
    }

    pub(crate) fn regex(error: regex::Error) -> Self {
        Self {
            kind: PatternErrorKind::Regex,
            input: None,
            source: Some(error),
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> PatternErrorKind {
        self.kind
    }

    /// The part of the pattern at fault: the unknown converter's name, the
    /// malformed pattern, or the parameter named twice (`None` for the
    /// other kinds).
    pub fn input(&self) -> Option<&str> {
        self.input.as_deref()
    }
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = self.input().unwrap_or_default();
        match self.kind {
            PatternErrorKind::UnknownConverter => {
                write!(
                    f,
                    "unknown path converter {input:?} (use str, int, slug, uuid or path)"
                )
            }
            PatternErrorKind::Malformed => write!(f, "malformed parameter in pattern {input:?}"),
            PatternErrorKind::Regex => match &self.source {
                Some(source) => write!(f, "invalid regex: {source}"),
                None => f.write_str("invalid regex"),
            },
            PatternErrorKind::Duplicate => write!(f, "parameter {input:?} appears twice"),
            PatternErrorKind::WildcardPrefix => {
                f.write_str("a prefix with a path wildcard cannot have HTTP routes nested under it")
            }
        }
    }
}

impl std::error::Error for PatternError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A compiled WebSocket route pattern.
///
/// Two forms, as in Django:
///
/// * [`PathPattern::path`]: `ws/chat/<str:room>/` with the converters `str`
///   (`[^/]+`, the default for `<room>`), `int` (`[0-9]+`), `slug`
///   (`[-a-zA-Z0-9_]+`), `uuid` (lowercase, dashed) and `path` (`.+`). The axum
///   spelling `{room}` means `<str:room>` and `{*rest}` means `<path:rest>`.
/// * [`PathPattern::regex`]: a `re_path` regex whose named groups
///   (`(?P<room>\w+)`) become parameters.
///
/// Leading slashes are optional, and a trailing slash is tolerated either way:
/// `ws/chat/<str:room>/` matches `/ws/chat/lobby/` and `/ws/chat/lobby`.
///
/// ```
/// use estuary_server::PathPattern;
///
/// let p = PathPattern::path("ws/items/<int:id>/").unwrap();
/// assert_eq!(p.matches("/ws/items/42"), Some(vec![("id".into(), "42".to_string())]));
/// assert_eq!(p.matches("/ws/items/x/"), None);
///
/// let r = PathPattern::regex(r"^ws/chat/(?P<room>\w+)/$").unwrap();
/// assert!(r.matches("/ws/chat/lobby/").is_some());
/// ```
#[derive(Clone)]
pub struct PathPattern {
    source: String,
    regex: Regex,
    names: Vec<Arc<str>>,
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PathPattern").field(&self.source).finish()
    }
}

const UUID: &str = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

fn converter(name: &str) -> Result<&'static str, PatternError> {
    Ok(match name {
        "str" => "[^/]+",
        "int" => "[0-9]+",
        "slug" => "[-a-zA-Z0-9_]+",
        "uuid" => UUID,
        "path" => ".+",
        other => return Err(PatternError::unknown_converter(other)),
    })
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A `path()` pattern parsed: a regex body (no anchors, no leading or
/// trailing slash), the same in axum's syntax, and its parameter names.
struct PathBody {
    regex: String,
    axum: String,
    names: Vec<Arc<str>>,
    /// A `path` converter appears.
    wildcard: bool,
}

fn path_body(pattern: &str) -> Result<PathBody, PatternError> {
    let body = pattern.trim_start_matches('/');
    let body = body.strip_suffix('/').unwrap_or(body);
    let mut parsed = PathBody {
        regex: String::new(),
        axum: String::new(),
        names: Vec::new(),
        wildcard: false,
    };
    let mut rest = body;
    while let Some(i) = rest.find(['<', '{']) {
        parsed.regex.push_str(&regex::escape(&rest[..i]));
        parsed.axum.push_str(&rest[..i]);
        let close = if rest.as_bytes()[i] == b'<' { '>' } else { '}' };
        let end = rest[i..]
            .find(close)
            .ok_or_else(|| PatternError::malformed(pattern))?
            + i;
        let inner = &rest[i + 1..end];
        let (conv, name) = if close == '>' {
            inner.split_once(':').unwrap_or(("str", inner))
        } else if let Some(name) = inner.strip_prefix('*') {
            ("path", name)
        } else {
            ("str", inner)
        };
        if !is_ident(name) {
            return Err(PatternError::malformed(pattern));
        }
        if parsed.names.iter().any(|n| &**n == name) {
            return Err(PatternError::duplicate(name));
        }
        parsed
            .regex
            .push_str(&format!("(?P<{name}>{})", converter(conv)?));
        parsed.axum.push_str(&format!("{{{name}}}"));
        parsed.wildcard |= conv == "path";
        parsed.names.push(Arc::from(name));
        rest = &rest[end + 1..];
    }
    parsed.regex.push_str(&regex::escape(rest));
    parsed.axum.push_str(rest);
    Ok(parsed)
}

impl PathPattern {
    /// Compiles a Django `path()` pattern (or its axum spelling).
    pub fn path(pattern: &str) -> Result<Self, PatternError> {
        let PathBody {
            regex: body, names, ..
        } = path_body(pattern)?;
        let re = format!("^/{body}/?$");
        let regex = Regex::new(&re).map_err(PatternError::regex)?;
        Ok(Self {
            source: pattern.to_owned(),
            regex,
            names,
        })
    }

    /// Compiles a Django `path()` pattern as the prefix of an included
    /// router: it matches the start of a path, up to a `/` or the end, and
    /// [`strip_prefix`](Self::strip_prefix) hands back the rest.
    pub(crate) fn prefix(pattern: &str) -> Result<Self, PatternError> {
        let PathBody {
            regex: body, names, ..
        } = path_body(pattern)?;
        // The last group holds the rest of the path (with its leading slash).
        let re = if body.is_empty() {
            "^(.*)$".to_owned()
        } else {
            format!("^/{body}(/.*)?$")
        };
        let regex = Regex::new(&re).map_err(PatternError::regex)?;
        Ok(Self {
            source: pattern.to_owned(),
            regex,
            names,
        })
    }

    /// For a [`prefix`](Self::prefix) pattern: its parameters, added to
    /// `params`, and the rest of `path` (`/` when nothing is left).
    pub(crate) fn strip_prefix<'p>(
        &self,
        path: &'p str,
        params: &mut Vec<(Arc<str>, String)>,
    ) -> Option<&'p str> {
        let caps = self.regex.captures(path)?;
        params.extend(
            self.names
                .iter()
                .filter_map(|n| caps.name(n).map(|m| (n.clone(), m.as_str().to_owned()))),
        );
        let rest = caps.get(self.regex.captures_len() - 1).map_or("", |m| m.as_str());
        Some(if rest.is_empty() { "/" } else { rest })
    }

    /// The parameter names, in order.
    pub(crate) fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The pattern in axum's syntax (`/chat/{room}`), for nesting HTTP
    /// routes under a [`prefix`](Self::prefix); `Ok(None)` for the empty
    /// prefix. A `path` converter has no counterpart in an axum nest.
    pub(crate) fn axum_prefix(&self) -> Result<Option<String>, PatternError> {
        let parsed = path_body(&self.source)?;
        if parsed.wildcard {
            return Err(PatternError::wildcard_prefix());
        }
        Ok((!parsed.axum.is_empty()).then(|| format!("/{}", parsed.axum)))
    }

    /// Compiles a Django `re_path()` regex. It is matched against the path
    /// without its leading slash, like Django; `^` and `$` anchor as usual, and
    /// a trailing slash is tolerated when the regex ends in `/$` or has none.
    pub fn regex(pattern: &str) -> Result<Self, PatternError> {
        let mut body = pattern.strip_prefix('^').unwrap_or(pattern).to_owned();
        let anchored_end = body.ends_with('$') && !body.ends_with("\\$");
        if anchored_end {
            body.pop();
            if body.ends_with('/') && !body.ends_with("\\/") {
                body.pop();
            }
        }
        let body = body.strip_prefix('/').unwrap_or(&body).to_owned();
        // On its own first: a body that closes a group it did not open
        // (`a)|(b`) would otherwise escape the anchoring group around it and
        // match paths the pattern never meant (Python's `re` refuses it too).
        Regex::new(&body).map_err(PatternError::regex)?;
        let tail = if anchored_end { "/?$" } else { "" };
        let re = format!("^/(?:{body}){tail}");
        let regex = Regex::new(&re).map_err(PatternError::regex)?;
        let names = regex.capture_names().flatten().map(Arc::from).collect();
        Ok(Self {
            source: pattern.to_owned(),
            regex,
            names,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches `path` (with its leading slash); returns the parameters in order.
    pub fn matches(&self, path: &str) -> Option<Vec<(Arc<str>, String)>> {
        let caps = self.regex.captures(path)?;
        Some(
            self.names
                .iter()
                .filter_map(|n| caps.name(n).map(|m| (n.clone(), m.as_str().to_owned())))
                .collect(),
        )
    }
}

/// Route parameters in the order the route names them (an included
/// router's prefixes first).
pub(crate) type RouteParams = Vec<(Arc<str>, String)>;

/// One WebSocket route: the prefixes of the routers it was included through
/// (outermost first), its own pattern, and what serves it (`E`: the
/// router's consumer factory).
#[derive(Clone)]
pub(crate) struct WsRoute<E> {
    prefixes: Vec<PathPattern>,
    pattern: PathPattern,
    pub(crate) endpoint: E,
    /// The consumer's named channel layer, resolved when the router is
    /// built; `None`: the router's default layer.
    pub(crate) layer: Option<ChannelLayerHandle>,
}

impl<E> WsRoute<E> {
    pub(crate) fn new(pattern: PathPattern, endpoint: E) -> Self {
        Self {
            prefixes: Vec::new(),
            pattern,
            endpoint,
            layer: None,
        }
    }

    /// The route's parameters for `path` (the prefixes' first), if it matches.
    pub(crate) fn matches(&self, path: &str) -> Option<RouteParams> {
        if self.prefixes.is_empty() {
            return self.pattern.matches(path);
        }
        let mut params = Vec::new();
        let mut rest = path;
        for prefix in &self.prefixes {
            rest = prefix.strip_prefix(rest, &mut params)?;
        }
        params.extend(self.pattern.matches(rest)?);
        Some(params)
    }

    /// The route as written, prefixes included (`chat/<room>/ + ws/`;
    /// empty parts left out).
    pub(crate) fn describe(&self) -> String {
        let parts: Vec<&str> = self
            .prefixes
            .iter()
            .chain([&self.pattern])
            .map(PathPattern::as_str)
            .filter(|p| !p.is_empty())
            .collect();
        parts.join(" + ")
    }

    /// Mounts the route under `prefix`, outside the prefixes it has.
    pub(crate) fn push_prefix(&mut self, prefix: PathPattern) {
        self.prefixes.insert(0, prefix);
    }

    /// Every parameter name the route takes, prefixes included.
    pub(crate) fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.prefixes
            .iter()
            .flat_map(PathPattern::names)
            .chain(self.pattern.names())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &PathPattern, path: &str) -> Option<Vec<(String, String)>> {
        p.matches(path)
            .map(|v| v.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn every_converter() {
        let p = PathPattern::path("a/<str:s>/<int:i>/<slug:g>/<uuid:u>/<path:rest>").unwrap();
        let u = "0c6d7f5e-1b2a-4c3d-8e9f-0a1b2c3d4e5f";
        assert_eq!(
            m(&p, &format!("/a/x.y/42/my-slug_1/{u}/deep/er/path")),
            Some(vec![
                kv("s", "x.y"),
                kv("i", "42"),
                kv("g", "my-slug_1"),
                kv("u", u),
                kv("rest", "deep/er/path")
            ])
        );
        assert_eq!(m(&p, &format!("/a/x/4a2/s/{u}/r")), None, "int refuses letters");
        assert_eq!(m(&p, &format!("/a/x/1/s.s/{u}/r")), None, "slug refuses dots");
        assert_eq!(
            m(&p, "/a/x/1/s/0C6D7F5E-1B2A-4C3D-8E9F-0A1B2C3D4E5F/r"),
            None,
            "uuid is lowercase"
        );
        assert_eq!(m(&p, &format!("/a/x/y/1/s/{u}/r")), None, "str stops at a slash");
    }

    #[test]
    fn default_converter_and_axum_spelling() {
        let p = PathPattern::path("/ws/{session}").unwrap();
        assert_eq!(m(&p, "/ws/abc"), Some(vec![kv("session", "abc")]));
        let p = PathPattern::path("ws/<room>/").unwrap();
        assert_eq!(m(&p, "/ws/r1/"), Some(vec![kv("room", "r1")]));
        let p = PathPattern::path("files/{*rest}").unwrap();
        assert_eq!(m(&p, "/files/a/b"), Some(vec![kv("rest", "a/b")]));
    }

    #[test]
    fn trailing_slash_is_tolerated() {
        for pattern in ["ws/chat/<str:room>/", "/ws/chat/<str:room>"] {
            let p = PathPattern::path(pattern).unwrap();
            assert!(p.matches("/ws/chat/lobby/").is_some(), "{pattern}");
            assert!(p.matches("/ws/chat/lobby").is_some(), "{pattern}");
            assert!(p.matches("/ws/chat/lobby//").is_none(), "{pattern}");
            assert!(p.matches("/ws/chat/").is_none(), "{pattern}");
        }
        let root = PathPattern::path("/").unwrap();
        assert!(root.matches("/").is_some());
    }

    #[test]
    fn literal_parts_are_escaped() {
        let p = PathPattern::path("v1.0/<int:n>").unwrap();
        assert!(p.matches("/v1.0/3").is_some());
        assert!(p.matches("/v1x0/3").is_none());
    }

    #[test]
    fn regex_routes() {
        let p = PathPattern::regex(r"^ws/chat/(?P<room>[A-Za-z0-9_-]{1,94})/$").unwrap();
        assert_eq!(m(&p, "/ws/chat/lobby/"), Some(vec![kv("room", "lobby")]));
        assert_eq!(m(&p, "/ws/chat/lobby"), Some(vec![kv("room", "lobby")]));
        assert_eq!(m(&p, "/ws/chat/lob by/"), None);
        assert_eq!(m(&p, "/xws/chat/lobby/"), None);
        let open = PathPattern::regex(r"^stream/").unwrap();
        assert!(
            open.matches("/stream/anything").is_some(),
            "no $: a prefix match, as in Django"
        );
        // A group closed that was never opened would escape the anchoring
        // group (`^/(?:a)|(b)`, matching any path with a `b`): refused.
        for escaping in [r"a)|(b", r"^ws/a)|(b$", r"a)|.*|(b"] {
            assert!(
                PathPattern::regex(escaping).map_err(|e| e.kind()).err() == Some(PatternErrorKind::Regex),
                "{escaping}"
            );
        }
    }

    #[test]
    fn bad_patterns() {
        let error = |pattern: &str| PathPattern::path(pattern).unwrap_err();
        let unknown = error("a/<float:x>");
        assert_eq!(
            (unknown.kind(), unknown.input()),
            (PatternErrorKind::UnknownConverter, Some("float"))
        );
        assert_eq!(
            unknown.to_string(),
            "unknown path converter \"float\" (use str, int, slug, uuid or path)"
        );
        for malformed in ["a/<int:x", "a/<int:1x>"] {
            let e = error(malformed);
            assert_eq!(
                (e.kind(), e.input()),
                (PatternErrorKind::Malformed, Some(malformed))
            );
            assert_eq!(
                e.to_string(),
                format!("malformed parameter in pattern {malformed:?}")
            );
        }
        let twice = error("<a>/<a>");
        assert_eq!(
            (twice.kind(), twice.input()),
            (PatternErrorKind::Duplicate, Some("a"))
        );
        assert_eq!(twice.to_string(), "parameter \"a\" appears twice");
        let unclosed = PathPattern::regex("(unclosed").unwrap_err();
        assert_eq!(
            (unclosed.kind(), unclosed.input()),
            (PatternErrorKind::Regex, None)
        );
        assert!(unclosed.to_string().starts_with("invalid regex: "), "{unclosed}");
        let source = std::error::Error::source(&unclosed).expect("a source");
        assert!(matches!(
            source.downcast_ref::<regex::Error>(),
            Some(regex::Error::Syntax(_))
        ));
        assert_eq!(
            PatternError::wildcard_prefix().to_string(),
            "a prefix with a path wildcard cannot have HTTP routes nested under it"
        );
    }
}
