//! Query strings into typed parameters (`Scope::query`, `query_pairs`),
//! route parameters into types (`Scope::param`), and `Cookie` headers.
//!
//! Input: text lines. The first is the query string; the second, a `Cookie`
//! header value; the third, the value of a route parameter.

use std::net::IpAddr;

use estuary_core::{Scope, empty_as_none};
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;

use crate::{Trail, text};

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Text,
    Voice,
}

/// The kinds of fields applications declare: numbers, flags, optional
/// text, enums, defaults.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Read only through Debug: the parse is what is under test.
struct Typed {
    #[serde(default)]
    page: u32,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    ratio: Option<f64>,
    #[serde(default)]
    verbose: bool,
    #[serde(default, deserialize_with = "empty_as_none")]
    token: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    limit: Option<u8>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default = "default_llm")]
    llm: String,
}

fn default_llm() -> String {
    "ernie".to_owned()
}

/// Lists: serde_urlencoded cannot read them, which must be an error.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct WithList {
    #[serde(default)]
    tag: Vec<String>,
}

/// Every parameter as text, in a map.
type AnyParams = std::collections::HashMap<String, String>;

/// Runs one input.
pub fn run(data: &[u8]) -> u64 {
    let mut trail = Trail::new();
    let input = text(data);
    let mut lines = input.splitn(3, '\n');
    let query = lines.next().unwrap_or_default();
    let cookie = lines.next();
    let param = lines.next().unwrap_or_default();

    let mut headers = HeaderMap::new();
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_bytes(c.as_bytes()).ok()) {
        headers.append(header::COOKIE, value);
        trail.note("cookie header");
    }
    let scope = Scope::builder("/ws/fuzz/")
        .query_string(query)
        .headers(headers)
        .param("p", param)
        .build();

    let typed = scope.query::<Typed>();
    trail.note(("typed", typed.is_ok()));
    if let Err(e) = &typed {
        let _ = e.to_string();
    }
    trail.note(("list", scope.query::<WithList>().is_ok()));
    let any = scope.query::<AnyParams>();
    trail.note(("any", any.is_ok()));

    // The pairs round-trip: encoding them and reading them back gives them again.
    let pairs = scope.query_pairs().to_vec();
    trail.note(pairs.len().min(4));
    let encoded = serde_urlencoded::to_string(&pairs).expect("pairs of text encode");
    let again: Vec<(String, String)> = serde_urlencoded::from_str(&encoded).expect("encoded pairs decode");
    assert_eq!(
        pairs, again,
        "query pairs of {query:?} do not round-trip through {encoded:?}"
    );
    if let Some((name, value)) = pairs.first() {
        assert_eq!(
            scope.query_param(name),
            Some(value.as_str()),
            "the first value wins"
        );
    }
    if let (Ok(map), false) = (&any, pairs.is_empty()) {
        for (name, _) in &pairs {
            assert!(map.contains_key(name), "{name:?} missing from the map");
        }
    }

    // Route parameters into types.
    trail.note(("u32", scope.param::<u32>("p").is_ok()));
    trail.note(("i64", scope.param::<i64>("p").is_ok()));
    trail.note(("f64", scope.param::<f64>("p").is_ok()));
    trail.note(("bool", scope.param::<bool>("p").is_ok()));
    trail.note(("ip", scope.param::<IpAddr>("p").is_ok()));
    trail.note(("uuid", scope.param::<uuid::Uuid>("p").is_ok()));
    assert_eq!(scope.param::<String>("p").ok().as_deref(), Some(param));
    assert!(scope.param::<String>("missing").is_err());

    // Cookies: every parsed name reads back, trimmed, values unquoted at both ends.
    let cookies = scope.cookies().clone();
    trail.note(cookies.len().min(4));
    for (name, value) in &cookies {
        assert_eq!(name.trim(), name);
        assert_eq!(scope.cookie(name), Some(value.as_str()));
    }
    trail.finish()
}

/// Tokens of query strings, cookies and parameter values.
pub const DICTIONARY: &[&[u8]] = &[
    b"page=",
    b"offset=",
    b"ratio=",
    b"verbose=",
    b"token=",
    b"limit=",
    b"mode=",
    b"llm=",
    b"tag=",
    b"&",
    b"=",
    b"%",
    b"%00",
    b"%ff",
    b"%zz",
    b"%c3%a9",
    b"+",
    b";",
    b"\"",
    b"true",
    b"false",
    b"voice",
    b"text",
    b"\n",
    b"sessionid=",
    b"; ",
    b"::1",
    b"127.0.0.1",
    b"0c6d7f5e-1b2a-4c3d-8e9f-0a1b2c3d4e5f",
    b"1e400",
    b"\xff",
    b"\xc3\xa9",
];
