//! Group names made from a connection's scope: `chat_{room_name}`,
//! `user.{user.id}`, `orders.{query.order_id}`.

use estuary_core::{ConsumerError, GroupName, Scope, ScopeError};

/// Why a group template cannot be used: which check failed
/// ([`kind`](Self::kind)), the template ([`template`](Self::template)) and,
/// for an unknown placeholder, which ([`placeholder`](Self::placeholder)).
///
/// ```
/// use estuary_relay::{GroupTemplate, TemplateErrorKind};
///
/// let error = GroupTemplate::parse("chat_{room}", &["room_name"], &[]).unwrap_err();
/// assert_eq!(error.kind(), TemplateErrorKind::Unknown);
/// assert_eq!(error.placeholder(), Some("room"));
/// let unbalanced = GroupTemplate::parse("chat_{room", &[], &[]).unwrap_err();
/// assert_eq!(unbalanced.kind(), TemplateErrorKind::Unbalanced);
/// assert_eq!(unbalanced.template(), "chat_{room");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    kind: TemplateErrorKind,
    template: Box<str>,
    placeholder: Option<Box<str>>,
    /// The route's path parameters, comma-separated (for the message).
    known: Box<str>,
}

/// Which check a [`TemplateError`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TemplateErrorKind {
    /// A `{` without its `}`, or a `}` without its `{`.
    Unbalanced,
    /// A placeholder that names nothing the connection has.
    Unknown,
}

impl TemplateError {
    /// Which check failed.
    pub fn kind(&self) -> TemplateErrorKind {
        self.kind
    }

    /// The template, as given.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The unknown placeholder, without braces.
    pub fn placeholder(&self) -> Option<&str> {
        self.placeholder.as_deref()
    }
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let template = &self.template;
        match self.kind {
            TemplateErrorKind::Unbalanced => write!(f, "group template {template:?}: unbalanced braces"),
            TemplateErrorKind::Unknown => write!(
                f,
                "group template {template:?}: unknown placeholder {{{}}} (known: {}; \
                 user.id, user.name; query.<name> for a declared query parameter)",
                self.placeholder.as_deref().unwrap_or_default(),
                self.known
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Param(String),
    Query(String),
    UserId,
    UserName,
}

/// A group name with placeholders, rendered per connection from its
/// scope: `{name}` is a path parameter of the route, `{query.name}` a
/// query parameter the route declares (its default when the client left
/// it out), `{user.id}` and `{user.name}` the signed-in user.
///
/// Placeholders are checked when the template is made, against what the
/// route has; a rendered name that is not a valid group name refuses the
/// handshake with 400, and `{user...}` for an anonymous visitor with 403.
///
/// ```
/// use estuary_core::{Scope, User};
/// use estuary_relay::GroupTemplate;
///
/// let chat = GroupTemplate::parse("chat_{room_name}", &["room_name"], &[]).unwrap();
/// let scope = Scope::builder("/ws/chat/lobby/").param("room_name", "lobby").build();
/// assert_eq!(chat.render(&scope, &[]).unwrap().as_str(), "chat_lobby");
///
/// let mine = GroupTemplate::parse("user.{user.id}", &[], &[]).unwrap();
/// let signed_in = Scope::builder("/ws/").user(Some(User::new("42", "alice"))).build();
/// assert_eq!(mine.render(&signed_in, &[]).unwrap().as_str(), "user.42");
///
/// let orders = GroupTemplate::parse("orders.{query.order_id}", &[], &["order_id"]).unwrap();
/// let scope = Scope::builder("/ws/").query_string("order_id=7").build();
/// assert_eq!(orders.render(&scope, &[]).unwrap().as_str(), "orders.7");
///
/// assert!(GroupTemplate::parse("chat_{room}", &["room_name"], &[]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTemplate {
    source: String,
    parts: Vec<Part>,
}

impl GroupTemplate {
    /// Parses `template` for a route whose path parameters are
    /// `path_params` and whose declared query parameters are
    /// `query_params`.
    pub fn parse(template: &str, path_params: &[&str], query_params: &[&str]) -> Result<Self, TemplateError> {
        let unbalanced = || TemplateError {
            kind: TemplateErrorKind::Unbalanced,
            template: template.into(),
            placeholder: None,
            known: "".into(),
        };
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    break;
                }
                Some(at) if rest[at..].starts_with('}') => return Err(unbalanced()),
                Some(at) => {
                    if at > 0 {
                        parts.push(Part::Literal(rest[..at].to_owned()));
                    }
                    let after = &rest[at + 1..];
                    let end = after.find('}').ok_or_else(unbalanced)?;
                    let name = &after[..end];
                    if name.contains('{') {
                        return Err(unbalanced());
                    }
                    parts.push(placeholder(template, name, path_params, query_params)?);
                    rest = &after[end + 1..];
                }
            }
        }
        Ok(Self {
            source: template.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the name depends on the path or the query string:
    /// values the client chooses, so any client may join the group by
    /// choosing them (`{user...}` alone is the signed-in user's own).
    ///
    /// ```
    /// use estuary_relay::GroupTemplate;
    ///
    /// let room = GroupTemplate::parse("chat_{room}", &["room"], &[]).unwrap();
    /// let mine = GroupTemplate::parse("user.{user.id}", &[], &[]).unwrap();
    /// let fixed = GroupTemplate::parse("announcements", &[], &[]).unwrap();
    /// assert!(room.is_client_chosen());
    /// assert!(!mine.is_client_chosen() && !fixed.is_client_chosen());
    /// ```
    pub fn is_client_chosen(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Param(_) | Part::Query(_)))
    }

    /// The group name for `scope`; `query_defaults` are the route's
    /// declared query parameters with their defaults.
    pub fn render(
        &self,
        scope: &Scope,
        query_defaults: &[(String, String)],
    ) -> Result<GroupName, ConsumerError> {
        let mut name = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => name.push_str(text),
                Part::Param(param) => name.push_str(&scope.param::<String>(param)?),
                Part::Query(query) => {
                    let value = scope.query_param(query).or_else(|| {
                        query_defaults
                            .iter()
                            .find(|(n, _)| n == query)
                            .map(|(_, d)| d.as_str())
                    });
                    let Some(value) = value else {
                        return Err(ConsumerError::Scope(ScopeError::missing_query_param(query)));
                    };
                    name.push_str(value);
                }
                Part::UserId | Part::UserName => {
                    let Some(user) = scope.user() else {
                        return Err(ConsumerError::close(
                            estuary_core::CloseCode::POLICY_VIOLATION,
                            "this route needs a signed-in user",
                        ));
                    };
                    name.push_str(if *part == Part::UserId {
                        user.id()
                    } else {
                        user.name()
                    });
                }
            }
        }
        Ok(GroupName::new(&name)?)
    }
}

fn placeholder(
    template: &str,
    name: &str,
    path_params: &[&str],
    query_params: &[&str],
) -> Result<Part, TemplateError> {
    let part = match name.split_once('.') {
        Some(("user", "id")) => Some(Part::UserId),
        Some(("user", "name")) => Some(Part::UserName),
        Some(("query", query)) if query_params.contains(&query) => Some(Part::Query(query.to_owned())),
        None if path_params.contains(&name) => Some(Part::Param(name.to_owned())),
        _ => None,
    };
    part.ok_or_else(|| TemplateError {
        kind: TemplateErrorKind::Unknown,
        template: template.into(),
        placeholder: Some(name.into()),
        known: if path_params.is_empty() {
            "no path parameters".into()
        } else {
            path_params.join(", ").into()
        },
    })
}

#[cfg(test)]
mod tests {
    use estuary_core::User;
    use http::StatusCode;

    use super::*;

    #[test]
    fn literals_and_placeholders_in_any_order() {
        let t = GroupTemplate::parse("{a}-{user.name}.x", &["a"], &[]).unwrap();
        let scope = Scope::builder("/")
            .param("a", "one")
            .user(Some(User::new("1", "ann")))
            .build();
        assert_eq!(t.render(&scope, &[]).unwrap().as_str(), "one-ann.x");
        assert_eq!(
            GroupTemplate::parse("static", &[], &[]).unwrap().as_str(),
            "static"
        );
    }

    #[test]
    fn bad_templates_are_refused_when_made() {
        for bad in ["a{", "a}", "{a{b}}", "{}", "{user.email}", "{query.page}", "{b}"] {
            assert!(GroupTemplate::parse(bad, &["a"], &[]).is_err(), "{bad}");
        }
        let error = GroupTemplate::parse("chat_{room}", &["room_name"], &[]).unwrap_err();
        assert!(error.to_string().contains("room_name"), "{error}");
    }

    #[test]
    fn a_default_fills_a_missing_query_parameter() {
        let t = GroupTemplate::parse("feed.{query.lang}", &[], &["lang"]).unwrap();
        let defaults = [("lang".to_owned(), "en".to_owned())];
        assert_eq!(
            t.render(&Scope::builder("/").build(), &defaults)
                .unwrap()
                .as_str(),
            "feed.en"
        );
        let error = t.render(&Scope::builder("/").build(), &[]).unwrap_err();
        assert_eq!(error.http_status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_invalid_rendered_name_is_400_and_an_anonymous_user_403() {
        let t = GroupTemplate::parse("chat_{room}", &["room"], &[]).unwrap();
        let scope = Scope::builder("/").param("room", "a b").build();
        assert_eq!(
            t.render(&scope, &[]).unwrap_err().http_status(),
            StatusCode::BAD_REQUEST
        );
        let t = GroupTemplate::parse("user.{user.id}", &[], &[]).unwrap();
        let error = t.render(&Scope::builder("/").build(), &[]).unwrap_err();
        assert_eq!(error.http_status(), StatusCode::FORBIDDEN);
    }
}
