//! `estuary serve` recognises the users of a real Django project (Django
//! 5.2 from PyPI, SQLite): a user who logs in through Django's own
//! `LoginView` and connects with that cookie is that user in the chat
//! room; a visitor, a forged cookie and an expired session are anonymous,
//! or refused where authentication is required; a spoofed username is
//! refused. The Django project and its probe are `estuary-django`'s test
//! project.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Client, Refused, TestServer};
use estuary_app::config::{Config, DjangoSettings};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "the current secret key of the test project";
const OLD_SECRET: &str = "the secret key the project had before";

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
        for file in ["settings.py", "urls.py", "probe.py"] {
            std::fs::copy(source.join(file), dir.join(file)).unwrap();
        }
        Self { dir }
    }

    fn database(&self) -> PathBuf {
        self.dir.join("db.sqlite3")
    }

    /// Runs probe.py (waits for it to exit); its stdout is one JSON object.
    fn probe(&self, args: &[&str]) -> Value {
        let output = Command::new(python())
            .arg("probe.py")
            .args(args)
            .current_dir(&self.dir)
            .env("PYTHONPATH", &self.dir)
            .env("ESTUARY_DJANGO_SECRET", SECRET)
            .env("ESTUARY_DJANGO_FALLBACKS", OLD_SECRET)
            .env("ESTUARY_DJANGO_OLD_SECRET", OLD_SECRET)
            .env("ESTUARY_DJANGO_ENGINE", "db")
            .env(
                "ESTUARY_DJANGO_DB",
                format!("sqlite:{}", self.database().display()),
            )
            .output()
            .expect("run the Django probe");
        assert!(
            output.status.success(),
            "probe.py {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("probe.py prints JSON")
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
