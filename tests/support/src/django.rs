//! Drives the real Django test project (`crates/estuary-django/tests/django_project`,
//! Django 5.2 from PyPI) for the tests: a copy of it in a temporary directory, on
//! SQLite (a file in that directory) or PostgreSQL (a database of its own), with the
//! `db` or `signed_cookies` session engine; `probe.py` run to completion, `serve.py`
//! run until dropped.
//!
//! Python comes from `ESTUARY_DJANGO_PYTHON`, else `target/django-venv/bin/python`
//! (made by `scripts/install-django-test.sh`). PostgreSQL is the machine's, at
//! 127.0.0.1:5432 as user postgres with trust auth; each project makes its own
//! database and drops it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::workspace_root;

/// The project's `SECRET_KEY`.
pub const SECRET: &str = "the current secret key of the test project";
/// The project's previous key, listed in `SECRET_KEY_FALLBACKS`.
pub const OLD_SECRET: &str = "the secret key the project had before";
/// The secret the connect callback is signed with (`estuary_connect.py`).
pub const CALLBACK_SECRET: &str = "the secret the connect callback is signed with";

/// How long `serve.py` may take to print its port.
const SERVE_READY: Duration = Duration::from_secs(60);

/// Which database the project runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file in the project's directory.
    Sqlite,
    /// A fresh database on the machine's PostgreSQL.
    Postgres,
}

/// The project's `SESSION_ENGINE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `django.contrib.sessions.backends.db`.
    Db,
    /// `django.contrib.sessions.backends.signed_cookies`.
    SignedCookies,
}

impl Engine {
    /// The backend's module name, as settings.py takes it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Db => "db",
            Engine::SignedCookies => "signed_cookies",
        }
    }
}

/// The Python with Django that runs the project.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("ESTUARY_DJANGO_PYTHON") {
        return python.into();
    }
    let venv = workspace_root().join("target/django-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with Django: run scripts/install-django-test.sh or set ESTUARY_DJANGO_PYTHON"
    );
    venv
}

/// Where the project's data lives.
#[derive(Debug)]
enum Backing {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// The PostgreSQL database, dropped with the project.
    Postgres(PgDatabase),
}

/// A copy of the test project in a fresh temporary directory, removed on drop
/// (its PostgreSQL database too).
#[derive(Debug)]
pub struct Project {
    dir: PathBuf,
    engine: Engine,
    backing: Backing,
    /// The Redis URL and key prefix of the project's channel layer.
    redis: Option<(String, String)>,
}

impl Project {
    /// Copies the project and gives it its database, empty: `probe(&["prepare"])`
    /// migrates it.
    pub async fn new(database: Database, engine: Engine) -> Self {
        let dir = std::env::temp_dir().join(format!("estuary-django-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = workspace_root().join("crates/estuary-django/tests/django_project");
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "py") {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let backing = match database {
            Database::Sqlite => Backing::Sqlite(dir.join("db.sqlite3")),
            Database::Postgres => Backing::Postgres(PgDatabase::create().await),
        };
        Self {
            dir,
            engine,
            backing,
            redis: None,
        }
    }

    /// Gives the project a channels_redis channel layer on `url` with the key
    /// prefix `prefix` (Estuary's `[layer]` must name the same ones).
    pub fn with_redis(mut self, url: &str, prefix: &str) -> Self {
        self.redis = Some((url.to_owned(), prefix.to_owned()));
        self
    }

    /// The project's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The project's database as Estuary takes it: `sqlite:///path/db.sqlite3`
    /// or `postgres://postgres@127.0.0.1:5432/<name>`.
    pub fn database_url(&self) -> String {
        match &self.backing {
            Backing::Sqlite(file) => format!("sqlite://{}", file.display()),
            Backing::Postgres(db) => db.url(),
        }
    }

    /// The project's database as settings.py takes it (`ESTUARY_DJANGO_DB`).
    fn database_env(&self) -> String {
        match &self.backing {
            Backing::Sqlite(file) => format!("sqlite:{}", file.display()),
            Backing::Postgres(db) => format!("postgres:{}", db.name),
        }
    }

    /// Ends every server connection to the project's PostgreSQL database, as a
    /// restart or a failover would. Panics on SQLite.
    pub async fn terminate_postgres_connections(&self) {
        let Backing::Postgres(db) = &self.backing else {
            panic!("the project is not on PostgreSQL");
        };
        pg_admin(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ))
        .await;
    }

    /// `python <script> <args>` in the project, with its environment.
    pub fn command(&self, script: &str, args: &[&str]) -> Command {
        let mut command = Command::new(python());
        command
            .arg(script)
            .args(args)
            .current_dir(&self.dir)
            .env("PYTHONPATH", &self.dir)
            .env("ESTUARY_DJANGO_SECRET", SECRET)
            .env("ESTUARY_DJANGO_FALLBACKS", OLD_SECRET)
            .env("ESTUARY_DJANGO_OLD_SECRET", OLD_SECRET)
            .env("ESTUARY_DJANGO_ENGINE", self.engine.name())
            .env("ESTUARY_CALLBACK_SECRET", CALLBACK_SECRET)
            .env("ESTUARY_DJANGO_DB", self.database_env());
        if let Some((url, prefix)) = &self.redis {
            command
                .env("ESTUARY_DJANGO_REDIS", url)
                .env("ESTUARY_DJANGO_REDIS_PREFIX", prefix);
        }
        command
    }

    /// Runs probe.py and waits for it to exit; its stdout is one JSON object.
    pub fn probe(&self, args: &[&str]) -> Value {
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

    /// The project served over HTTP (serve.py), until dropped. Waits for the
    /// port serve.py prints on its first line.
    pub fn serve(&self) -> Django {
        let mut child = self
            .command("serve.py", &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Django server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Drain the rest so serve.py never blocks on a full pipe.
            lines.map_while(Result::ok).for_each(drop);
        });
        let mut django = Django { child, port: 0 };
        let line = match rx.recv_timeout(SERVE_READY) {
            Ok(Some(Ok(line))) => line,
            Ok(other) => panic!("serve.py ended before printing its port: {other:?}"),
            Err(_) => panic!("serve.py did not print its port within {SERVE_READY:?}"),
        };
        django.port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("serve.py prints its port first, not {line:?}"));
        django
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Django project's HTTP server, killed on drop.
#[derive(Debug)]
pub struct Django {
    child: Child,
    /// The loopback port it listens on.
    pub port: u16,
}

impl Drop for Django {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database of its own on the machine's PostgreSQL (127.0.0.1:5432, user
/// `postgres`, trust auth), dropped on drop.
#[derive(Debug)]
pub struct PgDatabase {
    /// Its name (`estuary_django_<uuid>`).
    pub name: String,
}

/// The maintenance database, to create and drop the tests' databases from.
const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// Runs `sql` on the maintenance database.
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
    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    /// Creates a database with a fresh name; panics when PostgreSQL is not
    /// reachable.
    pub async fn create() -> Self {
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
