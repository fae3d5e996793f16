//! The push API's OpenAPI document stays true: it is served, it lists exactly
//! the routes the server mounts, and real answers have the statuses, content
//! types, headers and bodies it documents. (Schemathesis, in
//! `scripts/test.sh`, then fuzzes the server against it.)

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::{Client, TestServer, WAIT};
use estuary_cli::config::Config;
use estuary_cli::push::{OPENAPI_JSON, ROUTES};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret";
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One HTTP answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type, without parameters.
    fn media_type(&self) -> Option<&str> {
        self.header("content-type")
            .map(|v| v.split(';').next().unwrap_or_default().trim())
    }
}

/// Sends one request (`headers`: lines each ending in `\r\n`) with `host`
/// as `Host`, and reads the answer until the server closes.
async fn send(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<&str>,
) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let length = body.map_or(String::new(), |b| format!("content-length: {}\r\n", b.len()));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{headers}{length}connection: close\r\n\r\n{}",
        body.unwrap_or_default()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    read_answer(&mut s).await
}

async fn read_answer(s: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")),
        "the API answers with a length: {head}"
    );
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// `method path` as the document's `(METHOD, path)` pairs.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            METHODS
                .iter()
                .filter(|m| item.contains_key(**m))
                .map(move |m| (m.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references: {reference}"));
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling reference {reference}"));
            resolve(doc, target)
        }
        None => node,
    }
}

/// Checks `value` against an OpenAPI 3.0 schema. Covers the keywords the
/// document's answers use and refuses any other, so that a schema the
/// checker does not understand fails loudly instead of passing.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    let rules = schema.as_object().expect("a schema is an object");
    for key in rules.keys() {
        let known = [
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "enum",
            "minimum",
            "nullable",
            "description",
            "example",
        ];
        if !known.contains(&key.as_str()) {
            return Err(format!("{at}: the checker does not know the keyword {key:?}"));
        }
    }
    if value.is_null() && schema["nullable"] == true {
        return Ok(());
    }
    if let Some(kind) = schema["type"].as_str() {
        let fits = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => return Err(format!("{at}: unknown type {other}")),
        };
        if !fits {
            return Err(format!("{at}: expected {kind}, got {value}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(min) = schema["minimum"].as_f64()
        && value.as_f64().is_some_and(|v| v < min)
    {
        return Err(format!("{at}: {value} is under {min}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("a property name");
            if !object.contains_key(name) {
                return Err(format!("{at}: missing {name:?}"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check(doc, sub, field, &format!("{at}.{name}"))?,
                None if schema["additionalProperties"] == false => {
                    return Err(format!("{at}: {name:?} is not documented"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Asserts that `answer` is one the document gives for `method path`: a
/// listed status, a listed content type, the required headers, and a body
/// that fits the schema.
fn assert_documented(doc: &Value, method: &str, path: &str, answer: &Answer) {
    let operation = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(operation.is_object(), "{method} {path} is not documented");
    let response = operation["responses"]
        .get(answer.status.to_string())
        .map(|r| resolve(doc, r))
        .unwrap_or_else(|| {
            panic!(
                "{method} {path}: status {} is not documented: {answer:?}",
                answer.status
            )
        });
    let media = answer.media_type().expect("a content type");
    let content = &response["content"][media];
    assert!(
        content.is_object(),
        "{method} {path}: {} with {media} is not documented",
        answer.status
    );
    for (name, header) in response["headers"].as_object().into_iter().flatten() {
        let value = answer.header(&name.to_ascii_lowercase());
        if resolve(doc, header)["required"] == true {
            let value = value.unwrap_or_else(|| panic!("{method} {path}: no {name} header"));
            check(doc, &header["schema"], &json!(value), name)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        }
    }
    let body: Value = if media == "application/json" {
        serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e})"))
    } else {
        Value::String(answer.body.clone())
    };
    check(doc, &content["schema"], &body, "body")
        .unwrap_or_else(|e| panic!("{method} {path} {}: {e}", answer.status));
}

/// A concrete path for `template`, with each parameter's documented example.
fn example_path(doc: &Value, method: &str, template: &str) -> String {
    let operation = &doc["paths"][template][method.to_ascii_lowercase()];
    let mut path = template.to_owned();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let parameter = resolve(doc, parameter);
        let name = parameter["name"].as_str().unwrap();
        let example = parameter["example"]
            .as_str()
            .unwrap_or_else(|| panic!("parameter {name} of {template} has no example"));
        path = path.replace(&format!("{{{name}}}"), example);
    }
    assert!(
        !path.contains('{'),
        "every parameter of {template} has an example"
    );
    path
}

fn token_config() -> Config {
    Config {
        push_token: Some(TOKEN.into()),
        ..Config::default()
    }
}

fn auth() -> String {
    format!("authorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n")
}

#[tokio::test]
async fn the_served_document_lists_exactly_the_mounted_routes() {
    let server = TestServer::with_config(token_config()).await;
    let host = server.addr.to_string();
    let answer = send(server.addr, &host, "GET", "/api/openapi.json", "", None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.media_type(), Some("application/json"));
    let doc: Value = serde_json::from_str(&answer.body).expect("the document is JSON");
    assert_eq!(doc, serde_json::from_str::<Value>(OPENAPI_JSON).unwrap());
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
    assert_documented(&doc, "GET", "/api/openapi.json", &answer);

    let mounted: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|&(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(documented_operations(&doc), mounted);

    // Every reference in the document resolves.
    fn refs<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
        match node {
            Value::Object(map) if map.contains_key("$ref") => out.push(node),
            Value::Object(map) => map.values().for_each(|v| refs(v, out)),
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    for node in found {
        resolve(&doc, node);
    }
    server.stop().await;
}

/// Each documented operation, called as documented (the parameters' and
/// bodies' examples, the token), is served and succeeds, with a documented
/// answer; and methods the document leaves out are refused.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let server = TestServer::with_config(token_config()).await;
    let host = server.addr.to_string();
    for (method, template) in documented_operations(&doc) {
        let path = example_path(&doc, &method, &template);
        let operation = &doc["paths"][&template][method.to_ascii_lowercase()];
        let body = operation["requestBody"]["content"]["application/json"]["schema"]
            .as_object()
            .map(|schema| resolve(&doc, &Value::Object(schema.clone()))["example"].to_string());
        let answer = send(server.addr, &host, &method, &path, &auth(), body.as_deref()).await;
        assert!((200..300).contains(&answer.status), "{method} {path}: {answer:?}");
        assert_documented(&doc, &method, &template, &answer);
        let other = if method == "GET" { "DELETE" } else { "GET" };
        let refused = send(server.addr, &host, other, &path, &auth(), None).await;
        assert_eq!(refused.status, 405, "{other} {path} is not served");
    }
    server.stop().await;
}

/// The failures the document lists, provoked one by one: each answer has
/// the documented status, content type, headers and body.
#[tokio::test]
async fn failures_are_answered_as_documented() {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let mut config = token_config();
    config.layer.capacity = 1;
    config.websocket.max_event_size = 1024;
    config.server.body_timeout = 1;
    let server = TestServer::with_config(config).await;
    let addr = server.addr;
    let host = addr.to_string();
    let json = "content-type: application/json\r\n";
    let room = "/api/rooms/{room}/messages";
    let group = "/api/groups/{group}/send";
    let channel = "/api/channels/{channel}/send";
    let a = auth();
    let no_token = json.to_owned();
    let wrong_token = format!("authorization: Bearer nope\r\n{json}");
    let form = format!("authorization: Bearer {TOKEN}\r\ncontent-type: text/plain\r\n");
    let long_name = format!(r#"{{"message": "x", "username": "{}"}}"#, "u".repeat(51));
    let oversized = "x".repeat(2000);
    // (documented path, request path, headers, body, status)
    let cases = [
        (
            room,
            "/api/rooms/lobby/messages",
            &no_token,
            r#"{"message": "x"}"#,
            401,
        ),
        (
            room,
            "/api/rooms/lobby/messages",
            &wrong_token,
            r#"{"message": "x"}"#,
            401,
        ),
        (
            room,
            "/api/rooms/lobby/messages",
            &form,
            r#"{"message": "x"}"#,
            415,
        ),
        (room, "/api/rooms/lobby/messages", &a, "{", 400),
        (room, "/api/rooms/lobby/messages", &a, r#"{"text": "x"}"#, 400),
        (room, "/api/rooms/a.b/messages", &a, r#"{"message": "x"}"#, 404),
        (
            room,
            "/api/rooms/lobby/messages",
            &a,
            r#"{"message": " \u0085 "}"#,
            422,
        ),
        (room, "/api/rooms/lobby/messages", &a, &long_name, 422),
        (room, "/api/rooms/lobby/messages", &a, &oversized, 413),
        (group, "/api/groups/a%20b/send", &a, r#"{"type": "x"}"#, 400),
        (group, "/api/groups/chat_lobby/send", &a, "[1]", 422),
        (group, "/api/groups/chat_lobby/send", &a, r#"{"type": 1}"#, 422),
        (
            group,
            "/api/groups/chat_lobby/send",
            &a,
            r#"{"type": "x", "__asgi_channel__": "y"}"#,
            422,
        ),
        (channel, "/api/channels/a!b!c/send", &a, r#"{"type": "x"}"#, 400),
        (channel, "/api/channels/full/send", &a, r#"{"type": "x"}"#, 202),
        (channel, "/api/channels/full/send", &a, r#"{"type": "x"}"#, 429),
    ];
    for (template, path, headers, body, expected) in cases {
        let answer = send(addr, &host, "POST", path, headers, Some(body)).await;
        assert_eq!(answer.status, expected, "POST {path}: {answer:?}");
        assert_documented(&doc, "POST", template, &answer);
    }
    let room_presence = "/api/rooms/{room}/presence";
    let group_presence = "/api/groups/{group}/presence";
    for (template, path, headers, expected) in [
        (room_presence, "/api/rooms/a.b/presence", "", 404),
        (group_presence, "/api/groups/chat_lobby/presence", "", 401),
        (
            group_presence,
            "/api/groups/chat_lobby/presence",
            wrong_token.as_str(),
            401,
        ),
        (group_presence, "/api/groups/a%20b/presence", a.as_str(), 400),
    ] {
        let answer = send(addr, &host, "GET", path, headers, None).await;
        assert_eq!(answer.status, expected, "GET {path}: {answer:?}");
        assert_documented(&doc, "GET", template, &answer);
    }

    // The body timeout: a length announced, no body sent.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/groups/g/send HTTP/1.1\r\nhost: {host}\r\n{}content-length: 10\r\nconnection: close\r\n\r\n",
        auth()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut s).await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_documented(&doc, "POST", group, &answer);

    // A foreign Host is refused before the API, in plain text.
    for (method, path, template) in [
        ("GET", "/healthz", "/healthz"),
        ("GET", "/api/rooms", "/api/rooms"),
        ("POST", "/api/groups/g/send", group),
    ] {
        let answer = send(addr, "rebind.test", method, path, &auth(), Some("{}")).await;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert_documented(&doc, method, template, &answer);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_closed_api_and_an_occupied_room_are_answered_as_documented() {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    let server = TestServer::with_config(Config::default()).await;
    let host = server.addr.to_string();
    let mut member = Client::join(&server.url("/ws/chat/lobby/")).await;
    let answer = send(server.addr, &host, "GET", "/api/rooms", "", None).await;
    assert_documented(&doc, "GET", "/api/rooms", &answer);
    let rooms: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(rooms, json!({"rooms": [{"room": "lobby", "members": 1}]}));
    let mut named = Client::join(&server.url("/ws/chat/lobby/?username=ann")).await;
    named.recv_type("user_join").await;
    member.recv_type("user_join").await;
    let answer = send(server.addr, &host, "GET", "/api/rooms/lobby/presence", "", None).await;
    assert_documented(&doc, "GET", "/api/rooms/{room}/presence", &answer);
    let presence: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        presence,
        json!({"room": "lobby", "members": 2, "online": 1, "users": [{"username": "ann", "connections": 1}]})
    );
    let answer = send(
        server.addr,
        &host,
        "GET",
        "/api/groups/chat_lobby/presence",
        "",
        None,
    )
    .await;
    assert_eq!(answer.status, 403, "the push API is closed: {answer:?}");
    assert_documented(&doc, "GET", "/api/groups/{group}/presence", &answer);
    let answer = send(server.addr, &host, "GET", "/healthz", "", None).await;
    assert_eq!(answer.status, 200);
    assert_documented(&doc, "GET", "/healthz", &answer);
    for (template, path, body) in [
        (
            "/api/rooms/{room}/messages",
            "/api/rooms/lobby/messages",
            r#"{"message": "x"}"#,
        ),
        (
            "/api/groups/{group}/send",
            "/api/groups/chat_lobby/send",
            r#"{"type": "x"}"#,
        ),
        (
            "/api/channels/{channel}/send",
            "/api/channels/c/send",
            r#"{"type": "x"}"#,
        ),
    ] {
        let json = "content-type: application/json\r\n";
        let answer = send(server.addr, &host, "POST", path, json, Some(body)).await;
        assert_eq!(answer.status, 403, "{answer:?}");
        assert_documented(&doc, "POST", template, &answer);
    }
    member.assert_no_message().await;
    member.close().await;
    named.close().await;
    server.stop().await;
}
