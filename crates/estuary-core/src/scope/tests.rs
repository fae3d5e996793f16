//! The scope's accessors and parsers.

use super::*;
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
enum ChatMode {
    #[default]
    Text,
    Voice,
}

#[test]
fn a_raw_path_equal_to_the_path_is_not_kept_twice() {
    let plain = Scope::builder("/ws/a/").raw_path("/ws/a/").build();
    assert_eq!(plain.raw_path(), "/ws/a/");
    assert!(plain.rare.is_none(), "one copy of the path, and no box for it");
    let encoded = Scope::builder("/ws/a b/").raw_path("/ws/a%20b/").build();
    assert_eq!((encoded.path(), encoded.raw_path()), ("/ws/a b/", "/ws/a%20b/"));
}

#[test]
fn empty_rare_fields_take_no_box_and_set_ones_read_back() {
    let plain = Scope::builder("/ws/")
        .root_path("")
        .subprotocols(Vec::new())
        .data(serde_json::Map::new())
        .initial_groups(Vec::new())
        .build();
    assert!(plain.rare.is_none());
    assert_eq!(
        (
            plain.root_path(),
            plain.subprotocols(),
            plain.data().len(),
            plain.initial_groups()
        ),
        ("", &[][..], 0, &[][..])
    );
    let mut data = serde_json::Map::new();
    data.insert("tenant".into(), "acme".into());
    let group = crate::GroupName::new("room").unwrap();
    let full = Scope::builder("/ws/")
        .root_path("/rt")
        .subprotocols(vec!["v1".into()])
        .data(data)
        .initial_groups(vec![group.clone()])
        .raw_path("/ws/")
        .build();
    assert_eq!(full.root_path(), "/rt");
    assert_eq!(full.subprotocols(), ["v1"]);
    assert_eq!(full.data()["tenant"], "acme");
    assert_eq!(full.initial_groups(), [group]);
    assert_eq!(full.raw_path(), "/ws/");
    assert!(
        std::mem::size_of::<Scope>() <= 256,
        "{}",
        std::mem::size_of::<Scope>()
    );
}

fn default_llm() -> String {
    "ernie".into()
}
fn default_character() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default = "default_llm")]
    llm: String,
    #[serde(default = "default_character")]
    character_id: u32,
    #[serde(default)]
    chatmode: ChatMode,
    #[serde(default, deserialize_with = "empty_as_none")]
    token: Option<String>,
}

#[test]
fn typed_query_with_defaults() {
    let s = Scope::builder("/ws/x")
        .query_string("llm=chatgpt&character_id=2&chatmode=voice&token=")
        .build();
    let p: Params = s.query().unwrap();
    assert_eq!(p.llm, "chatgpt");
    assert_eq!(p.character_id, 2);
    assert_eq!(p.chatmode, ChatMode::Voice);
    assert_eq!(p.token, None);

    let p: Params = Scope::builder("/").build().query().unwrap();
    assert_eq!(
        (p.llm.as_str(), p.character_id, p.chatmode),
        ("ernie", 1, ChatMode::Text)
    );
}

#[test]
fn malformed_query_is_an_error() {
    let s = Scope::builder("/").query_string("character_id=two").build();
    let err = s.query::<Params>().unwrap_err();
    assert!(err.to_string().starts_with("invalid query string: "), "{err}");
    assert_eq!(
        (err.kind(), err.param(), err.value()),
        (ScopeErrorKind::Query, None, None)
    );
    let source = std::error::Error::source(&err).expect("a source");
    assert!(source.downcast_ref::<serde_urlencoded::de::Error>().is_some());
    let s = Scope::builder("/").query_string("chatmode=video").build();
    assert!(s.query::<Params>().is_err());
}

#[test]
fn cookies_and_params() {
    let mut headers = HeaderMap::new();
    headers.insert("cookie", "sessionid=abc; theme=\"dark\"".parse().unwrap());
    let s = Scope::builder("/")
        .headers(headers)
        .param("id", "12")
        .query_string("a=1&a=2&b=%20x")
        .build();
    assert_eq!(s.cookie("sessionid"), Some("abc"));
    assert_eq!(s.cookie("theme"), Some("dark"));
    assert_eq!(s.param::<i64>("id").unwrap(), 12);
    let missing = s.param::<i64>("nope").unwrap_err();
    assert_eq!(missing.kind(), ScopeErrorKind::MissingParam);
    assert_eq!((missing.param(), missing.value()), (Some("nope"), None));
    assert_eq!(missing.to_string(), "no route parameter named \"nope\"");
    assert!(std::error::Error::source(&missing).is_none());
    assert!(matches!(s.param::<u8>("id").map(|_| ()), Ok(())));
    // The parser's own error is the source, not a string.
    let invalid = s.param::<bool>("id").unwrap_err();
    assert_eq!(invalid.kind(), ScopeErrorKind::InvalidParam);
    assert_eq!((invalid.param(), invalid.value()), (Some("id"), Some("12")));
    assert_eq!(
        invalid.to_string(),
        "route parameter \"id\" = \"12\" is not valid: provided string was not `true` or `false`"
    );
    let source = std::error::Error::source(&invalid).expect("a source");
    assert!(source.downcast_ref::<std::str::ParseBoolError>().is_some());
    assert_eq!(s.query_param("a"), Some("1"));
    assert_eq!(s.query_param("b"), Some(" x"));
}
