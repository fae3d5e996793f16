//! Against a real Django project (Django 5.2 from PyPI): users log in through Django's
//! own `LoginView`, and the cookies it sets are read back here, with SQLite and with
//! PostgreSQL, for the `db` and `signed_cookies` engines.
//!
//! The project is driven by the shared harness, tests/support/django.rs. Python comes
//! from `ESTUARY_DJANGO_PYTHON`, else `target/django-venv/bin/python` (made by
//! `scripts/install-django-test.sh`). PostgreSQL is the machine's, at 127.0.0.1:5432
//! with trust auth; each test makes its own database and drops it.

use estuary_test_support::django;

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
#[ignore = "needs Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn sqlite_db_sessions() {
    let project = Project::new(Database::Sqlite, Engine::Db).await;
    scenario(&project, SessionEngine::Db).await;
}

#[tokio::test]
#[ignore = "needs Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn sqlite_signed_cookie_sessions() {
    let project = Project::new(Database::Sqlite, Engine::SignedCookies).await;
    scenario(&project, signed_cookies()).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn postgres_db_sessions() {
    let project = Project::new(Database::Postgres, Engine::Db).await;
    scenario(&project, SessionEngine::Db).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
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
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
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

/// Estuary sees the user Django itself sees (`django.contrib.auth.get_user`
/// behind `SessionMiddleware`, as a page view does) for every cookie: logins,
/// a login under the previous key (a fallback), a visitor, a forged, an
/// empty and a garbage cookie, and again after a password change, a
/// deactivation and an expired session. Channels' own `AuthMiddlewareStack`
/// (channels 4.3 from PyPI) agrees on every cookie but one: it does not try
/// `SECRET_KEY_FALLBACKS` on the session's auth hash (Django does since
/// 4.1), so after a key rotation it treats users logged in under the
/// previous key as anonymous, and flushes their session. Estuary follows
/// Django there: those users stay signed in on the site.
async fn agrees_with_django_and_channels(project: &Project, engine: SessionEngine) {
    let mut cookies = project.probe(&["prepare"]);
    let mut config = DjangoConfig::new(SECRET, project.database_url().parse().unwrap());
    config.secret_key_fallbacks = vec![OLD_SECRET.into()];
    config.engine = engine;
    let sessions = DjangoSessions::connect(config).await.unwrap();
    let named = cookies.as_object_mut().unwrap();
    named.remove("alice_id");
    named.insert("garbage".into(), "not-a-session".into());
    named.insert("empty".into(), "".into());
    named.insert("odd".into(), "eyJ9:1:2".into());
    let named = Value::Object(named.clone());

    let compare = |moment: &'static str| {
        let named = named.clone();
        let sessions = &sessions;
        async move {
            let mut estuary = serde_json::Map::new();
            for (name, cookie) in named.as_object().unwrap() {
                let header = format!("sessionid={}", cookie.as_str().unwrap());
                let user = sessions.user_from_cookie_header(&header).await.unwrap();
                estuary.insert(name.clone(), user.map(|u| u.username).into());
            }
            let verdicts = project.probe(&["verdicts", &named.to_string()]);
            assert_eq!(
                Value::Object(estuary.clone()),
                verdicts["django"],
                "Django, {moment}"
            );
            let mut channels = verdicts["channels"].clone();
            assert_eq!(
                channels["erin"],
                Value::Null,
                "Channels ignores the fallback keys"
            );
            channels["erin"] = estuary["erin"].clone();
            assert_eq!(Value::Object(estuary.clone()), channels, "Channels, {moment}");
            Value::Object(estuary)
        }
    };
    let before = compare("after the logins").await;
    assert_eq!(before["alice"], "alice", "the comparison is not vacuous");
    assert_eq!(before["erin"], "erin", "the comparison is not vacuous");
    assert_eq!(before["forged"], Value::Null, "the comparison is not vacuous");
    project.probe(&["mutate", &named.to_string()]);
    let after = compare("after a password change, a deactivation and an expiry").await;
    assert_eq!(after["frank"], Value::Null, "the comparison is not vacuous");
}

#[tokio::test]
#[ignore = "needs Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn estuary_sees_the_users_django_sees_with_db_sessions() {
    let project = Project::new(Database::Sqlite, Engine::Db).await;
    agrees_with_django_and_channels(&project, SessionEngine::Db).await;
}

#[tokio::test]
#[ignore = "needs Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn estuary_sees_the_users_django_sees_with_signed_cookies() {
    let project = Project::new(Database::Sqlite, Engine::SignedCookies).await;
    agrees_with_django_and_channels(&project, signed_cookies()).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL at 127.0.0.1:5432 and Python with Django (ESTUARY_DJANGO_PYTHON)"]
async fn estuary_sees_the_users_django_sees_on_postgres() {
    let project = Project::new(Database::Postgres, Engine::Db).await;
    agrees_with_django_and_channels(&project, SessionEngine::Db).await;
}
