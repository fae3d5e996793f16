//! `estuary serve` recognises the users of a real Django project (Django
//! 5.2 from PyPI, on SQLite and on PostgreSQL): a user who logs in through
//! Django's own `LoginView` and connects with that cookie is that user in
//! the chat room; a visitor, a forged cookie and an expired session are
//! anonymous, or refused where authentication is required; a spoofed
//! username is refused. The Django project and its probe are
//! `estuary-django`'s test project, driven by the shared harness
//! (tests/support/django.rs).

mod common;
use estuary_test_support::django;
use estuary_test_support::http;

use common::{Client, Refused, TestServer};
use django::{CALLBACK_SECRET, Database, Engine, OLD_SECRET, Project, SECRET};
use estuary_cli::config::{CallbackSettings, Config, DjangoSettings, SessionEngineName};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// `estuary serve`'s configuration reading `project`'s sessions (`db`
/// engine), rechecking open sockets every second.
fn config(project: &Project, required: bool) -> Config {
    let mut config = Config::default();
    config.auth.required = required;
    config.auth.django = Some(DjangoSettings {
        secret_key: SECRET.into(),
        secret_key_fallbacks: vec![OLD_SECRET.into()],
        database: project.database_url(),
        session_engine: SessionEngineName::Db,
        cookie_name: "sessionid".into(),
        cookie_age: 3600,
        user_table: "auth_user".into(),
        recheck_every: 1,
    });
    config
}

/// Joins `path` sending `cookie` as the session cookie.
async fn join_with(server: &TestServer, path: &str, cookie: Option<&str>) -> Result<Client, Refused> {
    let mut request = server.url(path).into_client_request().unwrap();
    if let Some(cookie) = cookie {
        request.headers_mut().insert(
            "cookie",
            format!("csrftoken=x; sessionid={cookie}").parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => {
            let mut client = Client { ws };
            assert_eq!(client.recv_json().await["type"], "connection_established");
            Ok(client)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(Refused(r.status().as_u16())),
        Err(e) => panic!("{e}"),
    }
}

/// Sends a chat message and returns the name it went out under, as another
/// member of the room sees it.
async fn sent_as(sender: &mut Client, listener: &mut Client, frame: Value) -> String {
    sender.send_json(&frame).await;
    let seen = listener.recv_type("chat_message").await;
    seen["username"].as_str().unwrap().to_owned()
}

/// alice and erin (logged in under the previous key) are themselves in the
/// chat room, and cannot pass for anyone else; visitors, forged cookies,
/// garbage, and after the world changes expired, deactivated and
/// password-changed users are anonymous.
async fn django_users_are_the_chat_users(database: Database) {
    let project = Project::new(database, Engine::Db).await;
    let cookies = project.probe(&["prepare"]);
    let server = TestServer::with_config(config(&project, false)).await;
    let mut listener = join_with(&server, "/ws/chat/lobby/", None).await.unwrap();

    // alice logged in through Django's LoginView: she is alice here.
    let mut alice = join_with(&server, "/ws/chat/lobby/", cookies["alice"].as_str())
        .await
        .unwrap();
    assert_eq!(listener.recv_type("user_join").await["username"], "alice");
    let text = json!({"message": "hello"});
    assert_eq!(sent_as(&mut alice, &mut listener, text).await, "alice");
    // A spoofed name in a frame is refused with an error frame.
    alice
        .send_json(&json!({"message": "hi", "username": "mallory"}))
        .await;
    let error = alice.recv_type("error").await;
    assert!(
        error["message"].as_str().unwrap().contains("signed-in user"),
        "{error}"
    );
    // ... and in the query string, before the upgrade.
    let spoof = join_with(
        &server,
        "/ws/chat/lobby/?username=mallory",
        cookies["alice"].as_str(),
    )
    .await;
    assert!(matches!(spoof, Err(Refused(403))));

    // erin logged in under the previous SECRET_KEY, now a fallback.
    let mut erin = join_with(&server, "/ws/chat/lobby/", cookies["erin"].as_str())
        .await
        .unwrap();
    assert_eq!(listener.recv_type("user_join").await["username"], "erin");
    assert_eq!(
        sent_as(&mut erin, &mut listener, json!({"message": "x"})).await,
        "erin"
    );

    // A visitor's session, a forged cookie and garbage are anonymous.
    for cookie in ["visitor", "forged"] {
        let mut anonymous = join_with(&server, "/ws/chat/lobby/", cookies[cookie].as_str())
            .await
            .unwrap();
        let frame = json!({"message": "who am I", "username": "guest"});
        assert_eq!(
            sent_as(&mut anonymous, &mut listener, frame).await,
            "guest",
            "{cookie}"
        );
    }
    let mut garbage = join_with(&server, "/ws/chat/lobby/", Some("not-a-session"))
        .await
        .unwrap();
    assert_eq!(
        sent_as(&mut garbage, &mut listener, json!({"message": "x"})).await,
        "Anonymous"
    );

    // The world changes behind the sessions: carol's session expires,
    // frank's password changes, dave is deactivated.
    project.probe(&["mutate", &cookies.to_string()]);
    for name in ["carol", "frank", "dave"] {
        let mut now_anonymous = join_with(&server, "/ws/chat/lobby/", cookies[name].as_str())
            .await
            .unwrap();
        let frame = json!({"message": "x"});
        assert_eq!(
            sent_as(&mut now_anonymous, &mut listener, frame).await,
            "Anonymous",
            "{name}"
        );
    }
}

#[tokio::test]
#[ignore = "needs Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn django_users_are_the_chat_users_on_sqlite() {
    django_users_are_the_chat_users(Database::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn django_users_are_the_chat_users_on_postgres() {
    django_users_are_the_chat_users(Database::Postgres).await;
}

/// With authentication required, no cookie, garbage, a forged cookie and a
/// visitor's session are refused with 401; alice gets in.
async fn where_auth_is_required_anonymous_handshakes_get_401(database: Database) {
    let project = Project::new(database, Engine::Db).await;
    let cookies = project.probe(&["prepare"]);
    let server = TestServer::with_config(config(&project, true)).await;
    for cookie in [
        None,
        Some("not-a-session"),
        cookies["forged"].as_str(),
        cookies["visitor"].as_str(),
    ] {
        let refused = join_with(&server, "/ws/chat/lobby/", cookie).await;
        assert!(matches!(refused, Err(Refused(401))), "{cookie:?}");
    }
    join_with(&server, "/ws/chat/lobby/", cookies["alice"].as_str())
        .await
        .expect("alice gets in");
}

#[tokio::test]
#[ignore = "needs Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn where_auth_is_required_anonymous_handshakes_get_401_on_sqlite() {
    where_auth_is_required_anonymous_handshakes_get_401(Database::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn where_auth_is_required_anonymous_handshakes_get_401_on_postgres() {
    where_auth_is_required_anonymous_handshakes_get_401(Database::Postgres).await;
}

/// A password change, a deactivation and an expired session close the open
/// sockets of those users (4401) at the next recheck, as they log them out
/// of the site; another user's socket stays open.
async fn a_password_change_logs_the_open_socket_out(database: Database) {
    let project = Project::new(database, Engine::Db).await;
    let cookies = project.probe(&["prepare"]);
    let server = TestServer::with_config(config(&project, false)).await;
    let mut alice = join_with(&server, "/ws/chat/lobby/", cookies["alice"].as_str())
        .await
        .unwrap();
    let mut open = Vec::new();
    for name in ["frank", "dave", "carol"] {
        open.push(
            join_with(&server, "/ws/chat/lobby/", cookies[name].as_str())
                .await
                .unwrap(),
        );
    }
    project.probe(&["mutate", &cookies.to_string()]);
    for client in &mut open {
        assert_eq!(client.recv_close().await, 4401);
    }
    alice.send_json(&json!({"message": "still here"})).await;
    assert_eq!(alice.recv_type("chat_message").await["message"], "still here");
}

#[tokio::test]
#[ignore = "needs Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn a_password_change_logs_the_open_socket_out_on_sqlite() {
    a_password_change_logs_the_open_socket_out(Database::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn a_password_change_logs_the_open_socket_out_on_postgres() {
    a_password_change_logs_the_open_socket_out(Database::Postgres).await;
}

/// The connect callback answered by the project's own view
/// (`estuary_connect.py`, the one the documentation shows), over HTTP from
/// Django's WSGI handler: Django's session decides who alice is, the view
/// puts her in her own group, which a push then reaches; visitors without a
/// login are closed with the view's 4403.
async fn django_answers_the_connect_callback(database: Database) {
    let project = Project::new(database, Engine::Db).await;
    let cookies = project.probe(&["prepare"]);
    let django = project.serve();
    let mut config = Config {
        push_insecure: true,
        ..Config::default()
    };
    config.auth.callback = Some(CallbackSettings::new(
        format!("http://127.0.0.1:{}/estuary/connect/", django.port),
        CALLBACK_SECRET,
    ));
    let server = TestServer::with_config(config).await;

    let mut carol = join_with(&server, "/ws/chat/lobby/", cookies["carol"].as_str())
        .await
        .expect("carol gets in");
    assert_eq!(carol.recv_type("user_join").await["username"], "carol");
    let mut alice = join_with(&server, "/ws/chat/lobby/", cookies["alice"].as_str())
        .await
        .expect("alice gets in");
    assert_eq!(carol.recv_type("user_join").await["username"], "alice");
    assert_eq!(
        sent_as(&mut alice, &mut carol, json!({"message": "hello"})).await,
        "alice"
    );
    assert_eq!(alice.recv_type("chat_message").await["message"], "hello");

    // The view put alice in her own group: a push to it reaches her only.
    let alice_id = cookies["alice_id"].as_str().unwrap();
    let event = json!({"type": "chat.message", "message": "just for you", "username": "site"});
    let answer = http::post_json(
        server.addr,
        &format!("/api/groups/user.{alice_id}/send"),
        &event.to_string(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(answer.contains(r#""delivered":1"#), "{answer}");
    assert_eq!(alice.recv_type("chat_message").await["message"], "just for you");
    // carol's next message is her own: the push did not reach her.
    carol.send_json(&json!({"message": "after"})).await;
    assert_eq!(carol.recv_type("chat_message").await["message"], "after");
    assert_eq!(alice.recv_type("chat_message").await["message"], "after");

    // A visitor's session, a forged cookie, garbage and no cookie at all:
    // the view closes them with 4403 after the handshake.
    for cookie in [
        cookies["visitor"].as_str(),
        cookies["forged"].as_str(),
        Some("garbage"),
        None,
    ] {
        let mut request = server.url("/ws/chat/lobby/").into_client_request().unwrap();
        if let Some(cookie) = cookie {
            request
                .headers_mut()
                .insert("cookie", format!("sessionid={cookie}").parse().unwrap());
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the handshake completes");
        assert_eq!(Client { ws }.recv_close().await, 4403, "{cookie:?}");
    }

    // Django gone: handshakes get 503, open sockets stay.
    drop(django);
    let refused = join_with(&server, "/ws/chat/lobby/", cookies["dave"].as_str()).await;
    assert!(matches!(refused, Err(Refused(503))));
    alice.send_json(&json!({"message": "still here"})).await;
    assert_eq!(alice.recv_type("chat_message").await["message"], "still here");
}

#[tokio::test]
#[ignore = "needs Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn django_answers_the_connect_callback_on_sqlite() {
    django_answers_the_connect_callback(Database::Sqlite).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn django_answers_the_connect_callback_on_postgres() {
    django_answers_the_connect_callback(Database::Postgres).await;
}

/// What a team moving its WebSocket tier gets: Django's own code pushes to
/// one user with channels' `group_send` (channels_redis, the project's
/// settings unchanged but for the URL), and it reaches that user's sockets
/// on Estuary, which the project's connect view put in `user.<pk>`.
#[tokio::test]
#[ignore = "needs Redis at 127.0.0.1:6379 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn a_django_view_pushes_to_one_user_on_estuary_through_channels_redis() {
    const REDIS: &str = "redis://127.0.0.1:6379/0";
    let prefix = format!("estuarytest{}", uuid::Uuid::new_v4().simple());
    let project = Project::new(Database::Sqlite, Engine::Db)
        .await
        .with_redis(REDIS, &prefix);
    let cookies = project.probe(&["prepare"]);
    let django = project.serve();
    let mut config = Config::default();
    config.layer.redis = vec![REDIS.to_owned()];
    config.layer.prefix = prefix.clone();
    config.auth.callback = Some(CallbackSettings::new(
        format!("http://127.0.0.1:{}/estuary/connect/", django.port),
        CALLBACK_SECRET,
    ));
    let server = TestServer::with_config(config).await;
    let mut alice = join_with(&server, "/ws/chat/alice-room/", cookies["alice"].as_str())
        .await
        .expect("alice gets in");
    let mut carol = join_with(&server, "/ws/chat/carol-room/", cookies["carol"].as_str())
        .await
        .expect("carol gets in");

    let alice_id = cookies["alice_id"].as_str().unwrap().to_owned();
    let message = json!({"type": "chat.message", "message": "your order shipped", "username": "shop"});
    let project = std::sync::Arc::new(project);
    let django_code = project.clone();
    let pushed = tokio::task::spawn_blocking(move || {
        django_code.probe(&["group_send", &format!("user.{alice_id}"), &message.to_string()])
    })
    .await
    .unwrap();
    assert_eq!(pushed["ok"], true);
    let got = alice.recv_type("chat_message").await;
    assert_eq!(
        (got["message"].as_str(), got["username"].as_str()),
        (Some("your order shipped"), Some("shop"))
    );
    // Not carol's: her next message is her own.
    carol.send_json(&json!({"message": "mine"})).await;
    assert_eq!(carol.recv_type("chat_message").await["message"], "mine");
    drop(django);
}
