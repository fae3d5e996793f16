//! `estuary serve` recognises the users of a real Django project (Django
//! 5.2 from PyPI, SQLite): a user who logs in through Django's own
//! `LoginView` and connects with that cookie is that user in the chat
//! room; a visitor, a forged cookie and an expired session are anonymous,
//! or refused where authentication is required; a spoofed username is
//! refused. The Django project and its probe are `estuary-django`'s test
//! project.

mod common;
#[path = "../../../tests/support/http.rs"]
mod http;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Client, Refused, TestServer};
use estuary_app::config::{CallbackSettings, Config, DjangoSettings};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "the current secret key of the test project";
const OLD_SECRET: &str = "the secret key the project had before";
const CALLBACK_SECRET: &str = "the secret the connect callback is signed with";

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("ESTUARY_DJANGO_PYTHON") {
        return python.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/django-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with Django: run scripts/install-django-test.sh or set ESTUARY_DJANGO_PYTHON"
    );
    venv
}

/// The test project in a temporary directory with its SQLite database.
struct Project {
    dir: PathBuf,
}

impl Project {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("estuary-app-django-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let source =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/estuary-django/tests/django_project");
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "py") {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        Self { dir }
    }

    fn database(&self) -> PathBuf {
        self.dir.join("db.sqlite3")
    }

    /// `python <script> <args>` in the project, with its environment.
    fn command(&self, script: &str, args: &[&str]) -> Command {
        let mut command = Command::new(python());
        command
            .arg(script)
            .args(args)
            .current_dir(&self.dir)
            .env("PYTHONPATH", &self.dir)
            .env("ESTUARY_DJANGO_SECRET", SECRET)
            .env("ESTUARY_DJANGO_FALLBACKS", OLD_SECRET)
            .env("ESTUARY_DJANGO_OLD_SECRET", OLD_SECRET)
            .env("ESTUARY_DJANGO_ENGINE", "db")
            .env("ESTUARY_CALLBACK_SECRET", CALLBACK_SECRET)
            .env(
                "ESTUARY_DJANGO_DB",
                format!("sqlite:{}", self.database().display()),
            );
        command
    }

    /// Runs probe.py (waits for it to exit); its stdout is one JSON object.
    fn probe(&self, args: &[&str]) -> Value {
        let output = self
            .command("probe.py", args)
            .output()
            .expect("run the Django probe");
        assert!(
            output.status.success(),
            "probe.py {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("probe.py prints JSON")
    }

    /// The project served over HTTP (serve.py), until dropped.
    fn serve(&self) -> Django {
        use std::io::BufRead;
        let mut child = self
            .command("serve.py", &[])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the Django server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("serve.py prints its port first, not {line:?}"));
        Django { child, port }
    }

    fn config(&self, required: bool) -> Config {
        let mut config = Config::default();
        config.auth.required = required;
        config.auth.django = Some(DjangoSettings {
            secret_key: SECRET.into(),
            secret_key_fallbacks: vec![OLD_SECRET.into()],
            database: format!("sqlite://{}", self.database().display()),
            session_engine: "db".into(),
            cookie_name: "sessionid".into(),
            cookie_age: 3600,
            user_table: "auth_user".into(),
            recheck_every: 1,
        });
        config
    }
}

/// The Django project's HTTP server.
struct Django {
    child: std::process::Child,
    port: u16,
}

impl Drop for Django {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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

#[tokio::test]
async fn django_users_are_the_chat_users() {
    let project = Project::new();
    let cookies = project.probe(&["prepare"]);
    let server = TestServer::with_config(project.config(false)).await;
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
async fn where_auth_is_required_anonymous_handshakes_get_401() {
    let project = Project::new();
    let cookies = project.probe(&["prepare"]);
    let server = TestServer::with_config(project.config(true)).await;
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

/// A password change, a deactivation and an expired session close the open
/// sockets of those users (4401) at the next recheck, as they log them out
/// of the site; another user's socket stays open.
#[tokio::test]
async fn a_password_change_logs_the_open_socket_out() {
    let project = Project::new();
    let cookies = project.probe(&["prepare"]);
    let server = TestServer::with_config(project.config(false)).await;
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

/// The connect callback answered by the project's own view
/// (`estuary_connect.py`, the one the documentation shows), over HTTP from
/// Django's WSGI handler: Django's session decides who alice is, the view
/// puts her in her own group, which a push then reaches; visitors without a
/// login are closed with the view's 4403.
#[tokio::test]
async fn django_answers_the_connect_callback() {
    let project = Project::new();
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
