//! The Django workers example (`examples/django-workers`) run for a test: a
//! copy of the project in a temporary directory (its own SQLite file), on
//! the machine's Redis with a key prefix of its own, its workers
//! (`manage.py runworker ...`) and its HTTP side (`manage.py runserver`,
//! for the connect callback and the views that push) as child processes
//! killed on drop.
//!
//! Python comes from [`django::python`](crate::django::python) (`target/django-venv`, which
//! `scripts/install-django-test.sh` fills with Django, channels and
//! channels_redis); the `django-estuary` package is imported from this
//! tree's `python/django-estuary/src`, whatever copy the venv installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::django::python;
use crate::process::free_port;
use crate::redis::{SHARED_REDIS, unique_prefix};
use crate::workspace_root;

/// The callback secret the example's settings read (`ESTUARY_CALLBACK_SECRET`).
pub const CALLBACK_SECRET: &str = "the callback secret of the workers example, for tests";
/// The token the example's push views want (`EXAMPLE_PUSH_TOKEN`).
pub const PUSH_TOKEN: &str = "the push token of the workers example";

/// How long Django may take to answer its first HTTP request.
const HTTP_READY: Duration = Duration::from_secs(60);

/// A copy of the example project, with its Redis prefix.
#[derive(Debug)]
pub struct WorkersProject {
    dir: PathBuf,
    prefix: String,
    env: Vec<(String, String)>,
}

/// A user of the project with a logged-in session: what a browser that
/// signed in at the admin's login holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The user's primary key.
    pub id: u64,
    /// The user's name.
    pub username: String,
    /// The value of the `sessionid` cookie.
    pub session_key: String,
}

impl SignedIn {
    /// The `Cookie` header a browser sends with the session.
    pub fn cookie(&self) -> String {
        format!("sessionid={}", self.session_key)
    }
}

/// Makes a user (named by `WORKERS_USERNAME`) and a logged-in session for
/// it, and prints `<id> <session key>`.
const SIGN_IN: &str = "\
import os
from django.contrib.auth import get_user_model
from django.test import Client
user = get_user_model().objects.create_user(username=os.environ['WORKERS_USERNAME'])
client = Client()
client.force_login(user)
print('signed-in', user.pk, client.cookies['sessionid'].value)
";

impl WorkersProject {
    /// Copies the example to a fresh directory and migrates its database.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("estuary-workers-{}", unique_prefix()));
        copy_tree(&workspace_root().join("examples/django-workers"), &dir);
        let project = Self {
            dir,
            prefix: unique_prefix(),
            env: Vec::new(),
        };
        let output = project
            .manage(&["migrate", "--noinput"])
            .output()
            .expect("run manage.py migrate");
        assert!(
            output.status.success(),
            "manage.py migrate failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        project
    }

    /// Sets an environment variable for every `manage.py` command run
    /// from now on (a setting the example reads from the environment, such
    /// as `ASSISTANT_CHUNK_DELAY`).
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Makes the user `username` and a logged-in session for it, as the
    /// admin's login would.
    pub fn sign_in(&self, username: &str) -> SignedIn {
        let output = self
            .manage(&["shell", "-c", SIGN_IN])
            .env("WORKERS_USERNAME", username)
            .output()
            .expect("run manage.py shell");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "signing in {username} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|line| line.strip_prefix("signed-in "))
            .unwrap_or_else(|| panic!("no session printed for {username}:\n{stdout}"));
        let mut fields = line.split_whitespace();
        let id = fields.next().and_then(|id| id.parse().ok());
        let key = fields.next();
        match (id, key) {
            (Some(id), Some(key)) => SignedIn {
                id,
                username: username.to_owned(),
                session_key: key.to_owned(),
            },
            _ => panic!("not an id and a session key: {line}"),
        }
    }

    /// The project's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The channel layer's key prefix (Estuary's `[layer] prefix` must be it).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis URL the project uses.
    pub fn redis_url(&self) -> String {
        SHARED_REDIS.to_owned()
    }

    /// `python manage.py <args>` in the project, with its environment.
    pub fn manage(&self, args: &[&str]) -> Command {
        let mut command = Command::new(python());
        command
            .arg("manage.py")
            .args(args)
            .current_dir(&self.dir)
            .env("DJANGO_SETTINGS_MODULE", "project.settings")
            .env("DJANGO_DEBUG", "0")
            .env("REDIS_URL", self.redis_url())
            .env("CHANNEL_LAYER_PREFIX", &self.prefix)
            .env("ESTUARY_CALLBACK_SECRET", CALLBACK_SECRET)
            .env("EXAMPLE_PUSH_TOKEN", PUSH_TOKEN)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONPATH", workspace_root().join("python/django-estuary/src"))
            .envs(self.env.iter().map(|(name, value)| (name, value)));
        command
    }

    /// `manage.py runworker <channels>`, until dropped. Events sent before
    /// it reads wait in Redis, so there is nothing to wait for here.
    pub fn runworker(&self, channels: &[&str]) -> Child {
        let mut args = vec!["runworker"];
        args.extend_from_slice(channels);
        self.manage(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start manage.py runworker")
    }

    /// `manage.py runserver` on a free port, once it answers HTTP.
    pub async fn runserver(&self) -> DjangoHttp {
        let port = free_port();
        let child = self
            .manage(&["runserver", "--noreload", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start manage.py runserver");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let server = DjangoHttp { child, addr };
        // runserver announces nothing machine-readable: try its port.
        crate::eventually::eventually("Django's runserver to accept connections", HTTP_READY, async {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        server
    }
}

impl Default for WorkersProject {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for WorkersProject {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The project's HTTP side, killed on drop.
#[derive(Debug)]
pub struct DjangoHttp {
    child: Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

impl DjangoHttp {
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for DjangoHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies `from` to `to`, leaving out databases and Python caches.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("make the project's directory");
    for entry in std::fs::read_dir(from).expect("read the example") {
        let entry = entry.expect("an entry");
        let name = entry.file_name();
        let skip = name == "__pycache__" || name == "db.sqlite3";
        if skip {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy a file of the example");
        }
    }
}
