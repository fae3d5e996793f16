//! Against a real Django project (Django 5.2 from PyPI): users log in through Django's
//! own `LoginView`, and the cookies it sets are read back here, with SQLite and with
//! PostgreSQL, for the `db` and `signed_cookies` engines.
//!
//! The project is driven by the shared harness, tests/support/django.rs. Python comes
//! from `ESTUARY_DJANGO_PYTHON`, else `target/django-venv/bin/python` (made by
//! `scripts/install-django-test.sh`). PostgreSQL is the machine's, at 127.0.0.1:5432
//! with trust auth; each test makes its own database and drops it.

#[path = "../../../tests/support/django.rs"]
mod django;

use std::time::Duration;

use django::{Database, Engine, OLD_SECRET, Project, SECRET};
use estuary_django::{DatabaseUrl, DjangoConfig, DjangoSessions, SessionEngine};
use serde_json::Value;

async fn user_of(sessions: &DjangoSessions, cookie: &Value) -> Option<String> {
    let header = format!("csrftoken=x; sessionid={}; theme=dark", cookie.as_str().unwrap());
    sessions
        .user_from_cookie_header(&header)
        .await
        .expect("no infrastructure failure")
        .map(|user| user.username)
}

async fn scenario(project: &Project, engine: SessionEngine) {
    let cookies = project.probe(&["prepare"]);
    let mut config = DjangoConfig::new(SECRET, project.database_url().parse().unwrap());
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

#[tokio::test]
async fn sqlite_db_sessions() {
    let project = Project::new(Database::Sqlite, Engine::Db).await;
    scenario(&project, SessionEngine::Db).await;
}

#[tokio::test]
async fn sqlite_signed_cookie_sessions() {
    let project = Project::new(Database::Sqlite, Engine::SignedCookies).await;
    scenario(&project, signed_cookies()).await;
}

#[tokio::test]
async fn postgres_db_sessions() {
    let project = Project::new(Database::Postgres, Engine::Db).await;
    scenario(&project, SessionEngine::Db).await;
}

#[tokio::test]
async fn postgres_reconnects_after_the_server_drops_the_connection() {
    let project = Project::new(Database::Postgres, Engine::Db).await;
    let cookies = project.probe(&["prepare"]);
    let url = project.database_url();
    let sessions = DjangoSessions::connect(DjangoConfig::new(SECRET, url.parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        user_of(&sessions, &cookies["alice"]).await.as_deref(),
        Some("alice")
    );
    // The server ends every connection to the project's database (a restart, a failover).
    project.terminate_postgres_connections().await;
    assert_eq!(
        user_of(&sessions, &cookies["alice"]).await.as_deref(),
        Some("alice")
    );
}

#[tokio::test]
async fn postgres_signed_cookie_sessions() {
    let project = Project::new(Database::Postgres, Engine::SignedCookies).await;
    scenario(&project, signed_cookies()).await;
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
