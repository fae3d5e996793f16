//! The Django workers example (`examples/django-workers`) through Estuary:
//! `estuary serve` with the example's `estuary.toml` (its `[[routes]]`),
//! the example's consumers in a real `manage.py runworker` on the
//! machine's Redis, and real WebSocket clients over TCP.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Client, TestServer, chat_protocol};
use estuary_cli::config::{Config, Layers, RouteConfig};
use estuary_test_support::workers::{CALLBACK_SECRET, DjangoHttp, PUSH_TOKEN, SignedIn, WorkersProject};
use estuary_test_support::{http, ws};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The example's `estuary.toml` on the project's Redis prefix, with its
/// connect callback at `callback` (Django's runserver), on a free port.
fn example_config(project: &WorkersProject, callback: Option<String>) -> Config {
    example_config_edited(project, callback, |text| text)
}

/// [`example_config`] from the example's `estuary.toml` as `edit` changes it.
fn example_config_edited(
    project: &WorkersProject,
    callback: Option<String>,
    edit: impl FnOnce(String) -> String,
) -> Config {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("examples/django-workers/estuary.toml");
    let text = edit(std::fs::read_to_string(&path).expect("the example's estuary.toml"));
    let mut config = Config::from_layers(Layers {
        file: Some((path, text)),
        env: vec![("ESTUARY_CALLBACK_SECRET".into(), CALLBACK_SECRET.into())],
        ..Layers::default()
    })
    .expect("the example's configuration loads");
    config.layer.redis = vec![project.redis_url()];
    config.layer.prefix = project.prefix().to_owned();
    match callback {
        Some(url) => {
            if let Some(cb) = config.auth.callback.as_mut() {
                cb.url = url;
            }
        }
        None => config.auth.callback = None,
    }
    config
}

/// The tutorial chat, served by a Django worker through Estuary, passes the
/// chat protocol's checks (the same suite as the built-in chat).
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn the_tutorial_chat_served_by_a_django_worker_speaks_the_chat_protocol() {
    let project = WorkersProject::new();
    let _worker = KillOnDrop(project.runworker(&["chat"]));
    let server = TestServer::with_config(example_config(&project, None)).await;
    let target = server.target();
    chat_protocol::two_clients_in_a_room_receive_in_order_and_other_rooms_do_not(&target).await;
    chat_protocol::join_and_leave_events_for_named_members(&target).await;
    chat_protocol::default_username_is_anonymous(&target).await;
    chat_protocol::bad_input_gets_an_error_frame_and_the_connection_stays_open(&target).await;
    chat_protocol::oversize_message_closes_with_1009(&target).await;
    chat_protocol::invalid_utf8_closes_with_1007(&target).await;
    chat_protocol::one_bad_client_does_not_affect_another(&target).await;
    chat_protocol::unknown_paths_and_bad_rooms_are_refused_before_upgrade(&target).await;
    chat_protocol::cross_site_origins_are_refused(&target).await;
    // Estuary's own limits hold in front of the worker.
    let mut c = Client::join(&server.url("/ws/chat/after/")).await;
    c.send_text(r#"{"message": "still here"}"#).await;
    assert_eq!(c.recv_type("chat_message").await["message"], "still here");
}

/// With no worker reading its channel, a handshake gets 504 once the
/// route's connect timeout passes: the client is told, not left hanging.
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn with_django_down_a_handshake_gets_504() {
    let project = WorkersProject::new();
    let mut config = example_config(&project, None);
    config.routes[0].relay.connect_timeout = std::time::Duration::from_millis(500);
    let server = TestServer::with_config(config).await;
    let refused = Client::try_connect(&server.url("/ws/chat/lobby/")).await.err();
    assert_eq!(refused.map(|r| r.0), Some(504));
}

/// The example's route for `path`, to change a key for a test.
fn route<'a>(config: &'a mut Config, path: &str) -> &'a mut RouteConfig {
    config
        .routes
        .iter_mut()
        .find(|route| route.path == path)
        .unwrap_or_else(|| panic!("the example has no route {path}"))
}

/// Many messages from one client and one address: Estuary's rate limits
/// off, so that only the relay's bounds speak.
fn unlimited(mut config: Config) -> Config {
    config.websocket.rate_limit = 0.0;
    config.websocket.rate_limit_per_ip = 0.0;
    config
}

/// Opens `url` with the browser's session cookie of `user`.
async fn connect_as(url: &str, user: &SignedIn) -> Result<Client, u16> {
    let mut request = url.into_client_request().expect("a WebSocket URL");
    request
        .headers_mut()
        .insert("cookie", user.cookie().parse().expect("a cookie header"));
    ws::handshake(request).await.map(|ws| Client { ws })
}

/// `POST path` to Django's push views with the example's push token;
/// the response's status and JSON body.
async fn push(django: &DjangoHttp, path: &str, body: &Value) -> (u16, Value) {
    push_with(
        django,
        path,
        &format!("authorization: Bearer {PUSH_TOKEN}\r\n"),
        body,
    )
    .await
}

/// `POST path` to Django with these extra header lines.
async fn push_with(django: &DjangoHttp, path: &str, headers: &str, body: &Value) -> (u16, Value) {
    let headers = format!("content-type: application/json\r\n{headers}");
    let response = http::post(django.addr, path, &headers, &body.to_string()).await;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Notifications (`auth = "required"`, `groups = ["user.{user.id}"]`): an
/// anonymous handshake gets 401 from Estuary; a signed-in user, known to
/// Estuary through Django's session cookie and the connect callback, is in
/// `user.<id>`, so `POST /notify/<id>/` reaches both of its tabs and no
/// other user's socket.
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn a_notification_reaches_every_socket_of_its_user_and_no_other() {
    let project = WorkersProject::new();
    let alice = project.sign_in("alice");
    let bob = project.sign_in("bob");
    let django = project.runserver().await;
    let _worker = KillOnDrop(project.runworker(&["notifications"]));
    let config = example_config(&project, Some(django.url("/estuary/connect/")));
    let server = TestServer::with_config(config).await;
    let url = server.url("/ws/notifications/");

    // Anonymous, or with a session Django does not know: 401 from Estuary.
    assert_eq!(Client::try_connect(&url).await.err().map(|r| r.0), Some(401));
    let forged = SignedIn {
        session_key: "notasessionkeyofthisproject00000".into(),
        ..alice.clone()
    };
    assert_eq!(connect_as(&url, &forged).await.err(), Some(401));

    let mut tabs = Vec::new();
    for _ in 0..2 {
        let mut tab = connect_as(&url, &alice).await.expect("alice connects");
        let ready = tab.recv_json().await;
        assert_eq!(
            ready,
            json!({"type": "ready", "user": "alice", "user_id": alice.id})
        );
        tabs.push(tab);
    }
    let mut other = connect_as(&url, &bob).await.expect("bob connects");
    assert_eq!(other.recv_json().await["user_id"], bob.id);

    let for_alice = json!({"title": "Your order shipped", "body": "#1234"});
    let (status, sent) = push(&django, &format!("/notify/{}/", alice.id), &for_alice).await;
    assert_eq!(status, 202, "{sent}");
    for tab in &mut tabs {
        let notification = tab.recv_json().await;
        assert_eq!(notification["type"], "notification", "{notification}");
        assert_eq!(notification["title"], "Your order shipped");
        assert_eq!(notification["body"], "#1234");
        assert_eq!(notification["id"], sent["id"]);
    }
    // Bob's first frame is his own notification: alice's never reached him.
    let (status, _) = push(
        &django,
        &format!("/notify/{}/", bob.id),
        &json!({"title": "For bob"}),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(other.recv_json().await["title"], "For bob");
    // Without the push token, nothing is sent.
    let (status, _) = push_with(&django, &format!("/notify/{}/", alice.id), "", &for_alice).await;
    assert_eq!(status, 401);
    for tab in &mut tabs {
        tab.assert_no_message().await;
    }
    other.assert_no_message().await;
}

/// The frames of one assistant reply: its chunks' texts, then the `done`.
async fn assistant_reply(client: &mut Client) -> (Vec<String>, Value) {
    let mut chunks = Vec::new();
    loop {
        let frame = client.recv_json().await;
        match frame["type"].as_str() {
            Some("chunk") => chunks.push(frame["text"].as_str().expect("a chunk's text").to_owned()),
            Some("done") => return (chunks, frame),
            _ => panic!("expected a chunk or done, got {frame}"),
        }
    }
}

/// The assistant: the route's query defaults (`llm = "gpt-4o"`,
/// `character_id = "1"`) reach the worker when the client leaves them out;
/// a reply comes as chunks then `done`, in order; while one connection's
/// reply streams, another connection's request is answered.
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn the_assistant_gets_the_routes_query_defaults_and_streams_without_holding_up_others() {
    let project = WorkersProject::new();
    let _worker = KillOnDrop(project.runworker(&["assistant"]));
    let server = TestServer::with_config(example_config(&project, None)).await;

    for (query, llm, character_id, character) in [
        ("", "gpt-4o", 1, "Ada"),
        ("?llm=claude", "claude", 1, "Ada"),
        ("?character_id=3", "gpt-4o", 3, "Cleo"),
        ("?llm=llama3&character_id=2", "llama3", 2, "Blaise"),
    ] {
        let mut client = Client::connect(&server.url(&format!("/ws/assistant/{query}"))).await;
        let ready = client.recv_json().await;
        assert_eq!(ready["type"], "ready", "{query}: {ready}");
        assert_eq!(ready["llm"], llm, "{query}: {ready}");
        assert_eq!(ready["character_id"], character_id, "{query}: {ready}");
        assert_eq!(ready["character"], character, "{query}: {ready}");
    }
    // The worker refuses what it does not know: 403 before the upgrade.
    for query in ["?llm=eliza", "?character_id=9"] {
        let refused = Client::try_connect(&server.url(&format!("/ws/assistant/{query}"))).await;
        assert_eq!(refused.err().map(|r| r.0), Some(403), "{query}");
    }

    // A reply in chunks, then done; the defaults reached the model too.
    let mut first = Client::connect(&server.url("/ws/assistant/")).await;
    assert_eq!(first.recv_json().await["type"], "ready");
    first.send_json(&json!({"message": "the tides"})).await;
    let (chunks, done) = assistant_reply(&mut first).await;
    assert!(chunks.len() > 2, "{chunks:?}");
    let text = chunks.concat();
    assert!(
        text.starts_with("Ada here, a patient tutor, answering through gpt-4o. You asked about the tides."),
        "{text}"
    );
    assert!(text.ends_with("while other sockets carry on."), "{text}");
    assert_eq!(done["turn"], 1);

    // While the first connection's second reply streams, another
    // connection's request is answered: its frames come between the
    // first's chunks, not after its done.
    let mut second = Client::connect(&server.url("/ws/assistant/?llm=ernie")).await;
    assert_eq!(second.recv_json().await["type"], "ready");
    first.send_json(&json!({"message": "a long question"})).await;
    assert_eq!(first.recv_json().await["type"], "chunk", "the stream started");
    second.send_json(&json!({"message": "a quick one"})).await;
    let mut order = Vec::new();
    let (mut first_done, mut second_done) = (false, false);
    let mut second_text = String::new();
    while !(first_done && second_done) {
        tokio::select! {
            frame = first.recv_json(), if !first_done => {
                first_done = frame["type"] == "done";
                order.push(("first", frame));
            }
            frame = second.recv_json(), if !second_done => {
                second_done = frame["type"] == "done";
                second_text.push_str(frame["text"].as_str().unwrap_or_default());
                order.push(("second", frame));
            }
        }
    }
    let at = |who: &str, kind: &str| {
        order
            .iter()
            .position(|(w, frame)| *w == who && frame["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} for {who}: {order:?}"))
    };
    assert!(
        at("second", "chunk") < at("first", "done"),
        "the second connection waited for the first's stream: {order:?}"
    );
    assert!(second_text.contains("answering through ernie"), "{second_text}");
    assert_eq!(
        order[at("first", "done")].1["turn"],
        2,
        "the state kept the turns"
    );
    assert_eq!(order[at("second", "done")].1["turn"], 1);
}

/// Talks to the dashboard at `server`: typed requests and replies, an
/// error for each bad request, a metric pushed through Django reaching its
/// subscriber and no one else.
async fn dashboard_speaks_its_protocol(server: &TestServer, django: &DjangoHttp) {
    let url = server.url("/ws/dashboard/");
    let mut subscriber = Client::connect(&url).await;
    let mut bystander = Client::connect(&url).await;
    for client in [&mut subscriber, &mut bystander] {
        assert_eq!(
            client.recv_json().await,
            json!({"type": "ready", "requests": ["subscribe", "unsubscribe", "get"]})
        );
    }
    let ask = async |client: &mut Client, request: Value| {
        client.send_json(&request).await;
        client.recv_json().await
    };
    assert_eq!(
        ask(&mut subscriber, json!({"type": "get", "metric": "sales"})).await,
        json!({"type": "value", "metric": "sales", "last": null})
    );
    assert_eq!(
        ask(&mut subscriber, json!({"type": "subscribe", "metric": "sales"})).await,
        json!({"type": "subscribed", "metric": "sales", "last": null})
    );
    // Each bad request is answered with an error naming its type.
    for (request, message, request_type) in [
        (
            json!({"type": "launch", "metric": "sales"}),
            "unknown request type",
            json!("launch"),
        ),
        (
            json!({"type": "get", "metric": "Not A Metric!"}),
            "metric must be 1-50 of a-z 0-9 _ . -",
            json!("get"),
        ),
        (
            json!({"type": "unsubscribe", "metric": "visits"}),
            "not subscribed to visits",
            json!("unsubscribe"),
        ),
        (
            json!(["subscribe", "sales"]),
            "send a JSON object with a type",
            Value::Null,
        ),
    ] {
        assert_eq!(
            ask(&mut subscriber, request).await,
            json!({"type": "error", "message": message, "request_type": request_type})
        );
    }
    subscriber.send_text("not JSON").await;
    assert_eq!(subscriber.recv_json().await["type"], "error");

    // A pushed value reaches the subscriber, rendered by Estuary.
    let (status, sent) = push(django, "/dashboard/metrics/sales/", &json!({"value": 42})).await;
    assert_eq!(status, 202, "{sent}");
    let update = subscriber.recv_json().await;
    assert_eq!(update["type"], "update", "{update}");
    assert_eq!(
        (&update["metric"], &update["value"]),
        (&json!("sales"), &json!(42))
    );
    assert_eq!(update["ts"], sent["ts"]);
    // The bystander's next frame is its own answer, with the stored value.
    let value = ask(&mut bystander, json!({"type": "get", "metric": "sales"})).await;
    assert_eq!(value["type"], "value", "{value}");
    assert_eq!(value["last"]["value"], 42);
    // Bad pushes are refused by Django and reach no one.
    let (status, _) = push(django, "/dashboard/metrics/sales/", &json!({"value": "many"})).await;
    assert_eq!(status, 400);
    let (status, _) = push_with(django, "/dashboard/metrics/sales/", "", &json!({"value": 1})).await;
    assert_eq!(status, 401);
    // Unsubscribed, the next push reaches no one.
    assert_eq!(
        ask(&mut subscriber, json!({"type": "unsubscribe", "metric": "sales"})).await,
        json!({"type": "unsubscribed", "metric": "sales"})
    );
    let (status, _) = push(django, "/dashboard/metrics/sales/", &json!({"value": 43})).await;
    assert_eq!(status, 202);
    let value = ask(&mut subscriber, json!({"type": "get", "metric": "sales"})).await;
    assert_eq!(value["last"]["value"], 43, "{value}");
    subscriber.assert_no_message().await;
    bystander.assert_no_message().await;
}

/// The dashboard over a worker (`channel = "dashboard"`).
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn the_dashboard_answers_typed_requests_and_pushes_metrics_through_a_worker() {
    let project = WorkersProject::new();
    let django = project.runserver().await;
    let _worker = KillOnDrop(project.runworker(&["dashboard"]));
    let server = TestServer::with_config(example_config(&project, None)).await;
    dashboard_speaks_its_protocol(&server, &django).await;
}

/// The same dashboard over the HTTP transport, as the example's
/// `estuary.toml` says: its commented `http =` and `secret =` lines in place
/// of `channel = "dashboard"` (here Django's runserver, and the test's
/// secret); no worker runs.
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn the_dashboard_answers_typed_requests_and_pushes_metrics_over_http() {
    let project = WorkersProject::new();
    let django = project.runserver().await;
    let mut config = example_config_edited(&project, None, |text| {
        let swapped = text
            .replace("channel = \"dashboard\"\n", "")
            .replace("# http = ", "http = ")
            .replace("# secret = ", "secret = ");
        assert_ne!(
            swapped, text,
            "the example's estuary.toml changed: update this test"
        );
        swapped
    });
    let dashboard = route(&mut config, "ws/dashboard/");
    assert_eq!(dashboard.relay.channel, None);
    assert!(dashboard.relay.http.is_some() && dashboard.relay.secret.is_some());
    dashboard.relay.http = Some(django.url("/estuary/events/dashboard/"));
    // Django's events_secret(): ESTUARY_EVENTS_SECRET, else the callback's.
    dashboard.relay.secret = Some(CALLBACK_SECRET.to_owned());
    let server = TestServer::with_config(config).await;
    dashboard_speaks_its_protocol(&server, &django).await;
}

/// A connection's events are handled in order even when two worker
/// processes read the channel: each client's many quick messages come back
/// in the order sent.
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn two_workers_on_one_channel_keep_each_connections_order() {
    const CLIENTS: usize = 3;
    const MESSAGES: usize = 40;
    let project = WorkersProject::new();
    let _workers = [
        KillOnDrop(project.runworker(&["chat"])),
        KillOnDrop(project.runworker(&["chat"])),
    ];
    let mut config = unlimited(example_config(&project, None));
    // All of them sent at once wait their turn: none is refused as busy.
    route(&mut config, "ws/chat/<str:room_name>/").relay.max_pending = MESSAGES;
    let server = TestServer::with_config(config).await;

    let runs = (0..CLIENTS).map(|n| {
        let url = server.url(&format!("/ws/chat/order{n}/"));
        async move {
            let mut client = Client::join(&url).await;
            for i in 0..MESSAGES {
                client.send_json(&json!({"message": format!("{n}.{i}")})).await;
            }
            let mut received = Vec::new();
            for _ in 0..MESSAGES {
                let frame = client.recv_json().await;
                assert_eq!(frame["type"], "chat_message", "client {n}: {frame}");
                received.push(frame["message"].as_str().unwrap_or_default().to_owned());
            }
            let sent: Vec<String> = (0..MESSAGES).map(|i| format!("{n}.{i}")).collect();
            assert_eq!(received, sent, "client {n}: the messages came back out of order");
            client.assert_no_message().await;
        }
    });
    futures_util::future::join_all(runs).await;
}

/// The assistant's test configuration: short reply timeouts, and the
/// route's `busy_frame` when given.
fn assistant_config(project: &WorkersProject, reply_timeout: Duration, busy_frame: Option<&str>) -> Config {
    let mut config = unlimited(example_config(project, None));
    let assistant = route(&mut config, "ws/assistant/");
    assistant.relay.reply_timeout = reply_timeout;
    assistant.relay.busy_frame = busy_frame.map(str::to_owned);
    config
}

const BUSY: &str = r#"{"type": "busy"}"#;

/// A worker killed while an event is in flight: once `reply_timeout`
/// passes, a client of a route with a `busy_frame` gets it and keeps its
/// connection, one without is closed with 1013; with a worker started
/// again, the next message is answered.
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn a_worker_killed_mid_event_is_reported_to_the_client_and_a_new_worker_answers() {
    // A reply streams in about 1.4 s (14 pauses of 0.1 s): time to kill the
    // worker mid-stream, and within the 3 s an event is given.
    let project = WorkersProject::new().with_env("ASSISTANT_CHUNK_DELAY", "0.1");
    let mut worker = KillOnDrop(project.runworker(&["assistant"]));
    let timeout = Duration::from_secs(3);
    let with_busy = TestServer::with_config(assistant_config(&project, timeout, Some(BUSY))).await;
    let without = TestServer::with_config(assistant_config(&project, timeout, None)).await;

    let mut told = Client::connect(&with_busy.url("/ws/assistant/")).await;
    let mut closed = Client::connect(&without.url("/ws/assistant/")).await;
    for client in [&mut told, &mut closed] {
        assert_eq!(client.recv_json().await["type"], "ready");
        client.send_json(&json!({"message": "a question"})).await;
        assert_eq!(client.recv_json().await["type"], "chunk", "the stream started");
    }
    // Both events are in flight (no done yet): the worker dies.
    worker.0.kill().expect("kill the worker");
    worker.0.wait().expect("reap the worker");

    // The stream's frames already sent may come; then the client is told.
    loop {
        let frame = told.recv_json().await;
        match frame["type"].as_str() {
            Some("chunk") => continue,
            Some("busy") => break,
            _ => panic!("expected chunks then the busy frame, got {frame}"),
        }
    }
    assert_eq!(closed.recv_close().await, 1013);

    // A new worker: the connection that was told carries on.
    let _worker = KillOnDrop(project.runworker(&["assistant"]));
    // Its handshake completes once the new worker reads the channel.
    let mut fresh = Client::connect(&without.url("/ws/assistant/")).await;
    assert_eq!(fresh.recv_json().await["type"], "ready");
    for client in [&mut told, &mut fresh] {
        client.send_json(&json!({"message": "again"})).await;
        let (chunks, done) = assistant_reply(client).await;
        assert!(chunks.concat().contains("You asked about again."), "{chunks:?}");
        // The lost event was never acknowledged: its turn did not count.
        assert_eq!(done["turn"], 1);
    }
}

/// More client messages than `max_pending` while the worker is busy: each
/// one refused gets the busy frame, each one kept is answered; every
/// message is accounted for (sent = answered + busy), so what Estuary holds
/// for a connection stays within its bound.
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn a_busy_worker_gets_at_most_max_pending_messages_and_the_rest_are_told_busy() {
    const SENT: usize = 12;
    const MAX_PENDING: usize = 3;
    let project = WorkersProject::new().with_env("ASSISTANT_CHUNK_DELAY", "0.05");
    let _worker = KillOnDrop(project.runworker(&["assistant"]));
    let mut config = assistant_config(&project, Duration::from_secs(10), Some(BUSY));
    route(&mut config, "ws/assistant/").relay.max_pending = MAX_PENDING;
    let server = TestServer::with_config(config).await;

    let mut client = Client::connect(&server.url("/ws/assistant/")).await;
    assert_eq!(client.recv_json().await["type"], "ready");
    client.send_json(&json!({"message": "q0"})).await;
    assert_eq!(client.recv_json().await["type"], "chunk", "the worker is busy");
    for i in 1..SENT {
        client.send_json(&json!({"message": format!("q{i}")})).await;
    }
    let (mut answered, mut busy) = (Vec::new(), 0);
    let mut text = String::new();
    while answered.len() + busy < SENT {
        let frame = client.recv_json().await;
        match frame["type"].as_str() {
            Some("chunk") => text.push_str(frame["text"].as_str().unwrap_or_default()),
            Some("done") => answered.push(std::mem::take(&mut text)),
            Some("busy") => busy += 1,
            _ => panic!("unexpected {frame}"),
        }
    }
    // The one in flight and the max_pending kept were answered, in order.
    assert_eq!(answered.len(), 1 + MAX_PENDING, "{answered:?}");
    assert_eq!(busy, SENT - answered.len());
    for (i, reply) in answered.iter().enumerate() {
        assert!(
            reply.contains(&format!("You asked about q{i}.")),
            "reply {i}: {reply}"
        );
    }
    // Nothing more comes, and the connection still works.
    client.assert_no_message().await;
    client.send_json(&json!({"message": "after"})).await;
    let (chunks, done) = assistant_reply(&mut client).await;
    assert!(chunks.concat().contains("You asked about after."));
    assert_eq!(done["turn"], 1 + MAX_PENDING + 1);
}

/// A child process killed (and reaped) on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
