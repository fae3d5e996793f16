//! Against a real Django project (Django 5.2 from PyPI): users log in through Django's
//! own `LoginView`, and the cookies it sets are read back here, with SQLite and with
//! PostgreSQL, for the `db` and `signed_cookies` engines.
//!
//! Python comes from `ESTUARY_DJANGO_PYTHON`, else `target/django-venv/bin/python`
//! (made by `scripts/install-django-test.sh`). PostgreSQL is the machine's, at
//! 127.0.0.1:5432 with trust auth; each test makes its own database and drops it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use estuary_django::{DatabaseUrl, DjangoConfig, DjangoSessions, SessionEngine};
use serde_json::Value;

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

/// A copy of tests/django_project in a fresh temporary directory, removed on drop.
struct Project {
    dir: PathBuf,
    engine: &'static str,
    db_env: String,
}

impl Project {
    fn new(engine: &'static str, db_env: impl FnOnce(&Path) -> String) -> Self {
        let dir = std::env::temp_dir().join(format!("estuary-django-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/django_project");
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "py") {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let db_env = db_env(&dir);
        Self { dir, engine, db_env }
    }

    /// Runs probe.py and waits for it to exit; its stdout is one JSON object.
    fn probe(&self, args: &[&str]) -> Value {
        let output = Command::new(python())
            .arg("probe.py")
            .args(args)
            .current_dir(&self.dir)
            .env("PYTHONPATH", &self.dir)
            .env("ESTUARY_DJANGO_SECRET", SECRET)
            .env("ESTUARY_DJANGO_FALLBACKS", OLD_SECRET)
            .env("ESTUARY_DJANGO_OLD_SECRET", OLD_SECRET)
            .env("ESTUARY_DJANGO_ENGINE", self.engine)
            .env("ESTUARY_DJANGO_DB", &self.db_env)
            .output()
            .expect("run the Django probe");
        assert!(
            output.status.success(),
            "probe.py {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("probe.py prints JSON")
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A database of its own on the machine's PostgreSQL, dropped on drop.
struct PgDatabase {
    name: String,
}

const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

async fn pg_admin(sql: String) {
    let (client, connection) = tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth)");
    let task = tokio::spawn(connection);
    client.batch_execute(&sql).await.expect(&sql);
    drop(client);
    let _ = task.await;
}

impl PgDatabase {
    async fn create() -> Self {
        let name = format!("estuary_django_{}", uuid::Uuid::new_v4().simple());
        pg_admin(format!("CREATE DATABASE {name}")).await;
        Self { name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime: use a runtime of its own on a thread.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(pg_admin(sql))
        })
        .join();
    }
}

async fn user_of(sessions: &DjangoSessions, cookie: &Value) -> Option<String> {
    let header = format!("csrftoken=x; sessionid={}; theme=dark", cookie.as_str().unwrap());
    sessions
        .user_from_cookie_header(&header)
        .await
        .expect("no infrastructure failure")
        .map(|user| user.username)
}

async fn scenario(project: &Project, database: DatabaseUrl, engine: SessionEngine) {
    let cookies = project.probe(&["prepare"]);
    let mut config = DjangoConfig::new(SECRET, database);
    config.secret_key_fallbacks = vec![OLD_SECRET.into()];
    config.engine = engine.clone();
    let sessions = DjangoSessions::connect(config.clone()).await.unwrap();

    // A user who logged in through Django's LoginView is that user.
    let alice = sessions
        .user_from_cookie_header(&format!("sessionid={}", cookies["alice"].as_str().unwrap()))
        .await
        .unwrap()
        .expect("alice's cookie is alice");
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.id, cookies["alice_id"].as_str().unwrap());
    assert!(alice.is_staff && !alice.is_superuser);
    assert_eq!(alice.attributes["email"], "alice@example.org");
    assert_eq!(alice.attributes["first_name"], "Alice");
    for name in ["carol", "dave", "frank"] {
        assert_eq!(user_of(&sessions, &cookies[name]).await.as_deref(), Some(name));
    }
    // Signed (data and auth hash) with the previous key, listed in SECRET_KEY_FALLBACKS.
    assert_eq!(
        user_of(&sessions, &cookies["erin"]).await.as_deref(),
        Some("erin")
    );

    // Anonymous: a visitor's session without a login, no cookie, garbage, a forged one.
    assert_eq!(user_of(&sessions, &cookies["visitor"]).await, None);
    assert_eq!(sessions.user_from_cookie_header("").await.unwrap(), None);
    assert_eq!(
        sessions.user_from_cookie_header("csrftoken=abc").await.unwrap(),
        None
    );
    for garbage in [
        "x",
        "0123456789abcdefghijklmnopqrstuv",
        ".:::",
        "eyJ9:1:2",
        "\"\\\\\"",
        "é:é",
    ] {
        assert_eq!(
            sessions.user_for_session_key(garbage).await.unwrap(),
            None,
            "{garbage:?}"
        );
    }
    assert_eq!(
        user_of(&sessions, &cookies["forged"]).await,
        None,
        "signed with another key"
    );
    if let Some(old) = cookies.get("old") {
        assert_eq!(
            user_of(&sessions, old).await,
            None,
            "older than SESSION_COOKIE_AGE"
        );
    }

    // Without the fallback, the old key's session is anonymous.
    let mut no_fallback = config.clone();
    no_fallback.secret_key_fallbacks.clear();
    let strict = DjangoSessions::connect(no_fallback).await.unwrap();
    assert_eq!(user_of(&strict, &cookies["erin"]).await, None);
    assert_eq!(
        user_of(&strict, &cookies["alice"]).await.as_deref(),
        Some("alice")
    );

    // A backend missing from AUTHENTICATION_BACKENDS: anonymous, as in Django.
    let mut other_backend = config.clone();
    other_backend.authentication_backends = vec!["myproject.auth.TokenBackend".into()];
    let other = DjangoSessions::connect(other_backend).await.unwrap();
    assert_eq!(user_of(&other, &cookies["alice"]).await, None);

    // Frank changes his password, Dave is deactivated, Carol's session expires.
    project.probe(&["mutate", &cookies.to_string()]);
    assert_eq!(
        user_of(&sessions, &cookies["frank"]).await,
        None,
        "password changed"
    );
    assert_eq!(user_of(&sessions, &cookies["dave"]).await, None, "inactive");
    if engine == SessionEngine::Db {
        assert_eq!(user_of(&sessions, &cookies["carol"]).await, None, "expired");
    }
    assert_eq!(
        user_of(&sessions, &cookies["alice"]).await.as_deref(),
        Some("alice")
    );
}

fn signed_cookies() -> SessionEngine {
    // The test project's SESSION_COOKIE_AGE.
    SessionEngine::SignedCookies {
        max_age: Duration::from_secs(3600),
    }
}

fn sqlite_project(engine: &'static str) -> (Project, DatabaseUrl) {
    let project = Project::new(engine, |dir| {
        format!("sqlite:{}", dir.join("db.sqlite3").display())
    });
    let url = format!("sqlite://{}", project.dir.join("db.sqlite3").display());
    (project, url.parse().unwrap())
}

#[tokio::test]
async fn sqlite_db_sessions() {
    let (project, url) = sqlite_project("db");
    scenario(&project, url, SessionEngine::Db).await;
}

#[tokio::test]
async fn sqlite_signed_cookie_sessions() {
    let (project, url) = sqlite_project("signed_cookies");
    scenario(&project, url, signed_cookies()).await;
}

#[tokio::test]
async fn postgres_db_sessions() {
    let db = PgDatabase::create().await;
    let project = Project::new("db", |_| format!("postgres:{}", db.name));
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
    scenario(&project, url.parse().unwrap(), SessionEngine::Db).await;
}

#[tokio::test]
async fn postgres_reconnects_after_the_server_drops_the_connection() {
    let db = PgDatabase::create().await;
    let project = Project::new("db", |_| format!("postgres:{}", db.name));
    let cookies = project.probe(&["prepare"]);
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
    let sessions = DjangoSessions::connect(DjangoConfig::new(SECRET, url.parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        user_of(&sessions, &cookies["alice"]).await.as_deref(),
        Some("alice")
    );
    // The server ends every connection to the project's database (a restart, a failover).
    pg_admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
        db.name
    ))
    .await;
    assert_eq!(
        user_of(&sessions, &cookies["alice"]).await.as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn postgres_signed_cookie_sessions() {
    let db = PgDatabase::create().await;
    let project = Project::new("signed_cookies", |_| format!("postgres:{}", db.name));
    let url = format!("postgres://postgres@127.0.0.1:5432/{}", db.name);
    scenario(&project, url.parse().unwrap(), signed_cookies()).await;
}

#[tokio::test]
async fn connect_reports_a_missing_database_clearly() {
    let missing: DatabaseUrl = "sqlite:///nonexistent/estuary/db.sqlite3".parse().unwrap();
    let err = DjangoSessions::connect(DjangoConfig::new(SECRET, missing))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sqlite"), "{err}");
    let down: DatabaseUrl = "postgres://postgres@127.0.0.1:1/none".parse().unwrap();
    let err = DjangoSessions::connect(DjangoConfig::new(SECRET, down))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("postgresql") && err.to_string().contains("connect"),
        "{err}"
    );
}
