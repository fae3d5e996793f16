//! The layered configuration: precedence (file < variables < flags), errors
//! that name their source, enum values, and `check-config`'s output read
//! back by `--config`.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use estuary_cli::config::{
    Config, Layers, RedisFlavour, SETTINGS, Secrets, ServeArgs, SessionEngineName, SlowClient,
};

fn file(text: &str) -> Option<(PathBuf, String)> {
    Some(("site.toml".into(), text.to_owned()))
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn flags(args: &[&str]) -> Vec<(&'static str, String)> {
    ServeArgs::try_parse_from(args).unwrap().flags
}

/// The whole error chain, as `estuary` prints it.
fn error(layers: Layers) -> String {
    format!("{:#}", Config::from_layers(layers).unwrap_err())
}

#[test]
fn a_flag_wins_over_a_variable_which_wins_over_the_file() {
    let text = "bind = \"127.0.0.1:7001\"\n[websocket]\nping_interval = 5\nrate_limit = 1.5\n\
                [layer]\nflavour = \"pubsub\"\nprefix = \"from_file\"\n";
    let only_file = Config::from_layers(Layers {
        file: file(text),
        ..Layers::default()
    })
    .unwrap();
    assert_eq!(only_file.bind, "127.0.0.1:7001");
    assert_eq!(only_file.websocket.ping_interval, 5);
    assert_eq!(only_file.layer.flavour, RedisFlavour::PubSub);
    assert_eq!(
        only_file.websocket.ping_timeout, 20,
        "a key no layer sets keeps its default"
    );

    let variables = env(&[
        ("ESTUARY_PING_INTERVAL", "6"),
        ("ESTUARY_REDIS_FLAVOUR", "core"),
        ("ESTUARY_REDIS_PREFIX", "from_env"),
        ("ESTUARY_NOT_A_SETTING", "ignored"),
    ]);
    let with_env = Config::from_layers(Layers {
        file: file(text),
        env: variables.clone(),
        flags: Vec::new(),
    })
    .unwrap();
    assert_eq!(with_env.websocket.ping_interval, 6);
    assert_eq!(with_env.layer.flavour, RedisFlavour::Core);
    assert_eq!(with_env.layer.prefix, "from_env");
    assert_eq!(
        with_env.websocket.rate_limit, 1.5,
        "the file's key the variables leave alone"
    );

    let all = Config::from_layers(Layers {
        file: file(text),
        env: variables,
        flags: flags(&[
            "--ping-interval",
            "7",
            "--bind",
            "127.0.0.1:7003",
            "--layer",
            "memory",
        ]),
    })
    .unwrap();
    assert_eq!(all.websocket.ping_interval, 7);
    assert_eq!(all.bind, "127.0.0.1:7003");
    assert_eq!(all.layer.prefix, "from_env");
    assert!(all.layer.redis.is_empty());
}

/// `[websocket]` is the library's form, whose rate limits are off by
/// default; the app's defaults (limits on) lie under the file, so a table
/// that sets one key keeps the app's others.
#[test]
fn a_table_the_file_holds_keeps_the_apps_defaults() {
    let config = Config::from_layers(Layers {
        file: file("[websocket]\nmax_message_size = 100000\n"),
        ..Layers::default()
    })
    .unwrap();
    assert_eq!(config.websocket.max_message_size, 100_000);
    let defaults = Config::default();
    assert_eq!(config.websocket.rate_limit, 20.0);
    assert_eq!(config.websocket.rate_limit_per_ip, 200.0);
    assert_eq!(
        config.websocket,
        estuary_cli::config::WebSocketSettings {
            max_message_size: 100_000,
            ..defaults.websocket.clone()
        }
    );
    assert_ne!(
        defaults.websocket,
        estuary_cli::config::WebSocketSettings::default(),
        "the app's defaults are not the library's"
    );
    let settings = config.websocket.ws_settings();
    assert_eq!(settings.max_frame_size, 100_000, "frames as large as messages");
    assert_eq!(settings.session.rate_limit.map(|r| r.burst), Some(40));
    assert_eq!(
        settings.session.address_rate_limit.map(|l| l.limit().burst),
        Some(400)
    );
    assert_eq!(settings.session.control_rate_limit.map(|r| r.burst), Some(20));

    // The other tables too: one key of `[server]` keeps the rest.
    let config = Config::from_layers(Layers {
        file: file("[server]\nbody_timeout = 3\n[auth]\nrequired = false\n"),
        ..Layers::default()
    })
    .unwrap();
    assert_eq!(config.server.body_timeout, 3);
    assert_eq!(config.server.handshake_timeout, defaults.server.handshake_timeout);
    assert_eq!(config.websocket, defaults.websocket);
}

#[test]
fn every_setting_has_one_flag_and_one_variable() {
    let mut flags: Vec<_> = SETTINGS.iter().map(|s| s.flag).collect();
    let mut vars: Vec<_> = SETTINGS.iter().map(|s| s.env).collect();
    let count = SETTINGS.len();
    flags.sort_unstable();
    flags.dedup();
    vars.sort_unstable();
    vars.dedup();
    assert_eq!((flags.len(), vars.len()), (count, count));
    // Each key is one the file takes: setting it alone loads.
    for setting in SETTINGS {
        assert!(
            !setting.key.is_empty() && setting.env.starts_with("ESTUARY_"),
            "{setting:?}"
        );
    }
}

#[test]
fn an_invalid_value_names_its_source() {
    // The file: its name, the line and the key.
    let message = error(Layers {
        file: file("[websocket]\nping_interval = \"soon\"\n"),
        ..Layers::default()
    });
    assert!(
        message.contains("site.toml") && message.contains("ping_interval"),
        "{message}"
    );
    assert!(message.contains("line 2"), "{message}");
    // A variable: its name.
    let message = error(Layers {
        env: env(&[("ESTUARY_PING_INTERVAL", "soon")]),
        ..Layers::default()
    });
    assert!(message.contains("ESTUARY_PING_INTERVAL"), "{message}");
    assert!(message.contains("whole number"), "{message}");
    // A flag: its name.
    let message = error(Layers {
        flags: flags(&["--rate-burst", "99999999999"]),
        ..Layers::default()
    });
    assert!(message.contains("--rate-burst"), "{message}");
    // A value of the right type out of its range, by source too.
    let message = error(Layers {
        file: file("[websocket]\nread_buffer_size = 10\n"),
        ..Layers::default()
    });
    assert!(
        message.contains("websocket.read_buffer_size") && message.contains("site.toml"),
        "{message}"
    );
    let message = error(Layers {
        file: file("[websocket]\nread_buffer_size = 10\n"),
        env: env(&[("ESTUARY_READ_BUFFER_SIZE", "20")]),
        ..Layers::default()
    });
    assert!(message.contains("ESTUARY_READ_BUFFER_SIZE"), "{message}");
    let message = error(Layers {
        env: env(&[("ESTUARY_READ_BUFFER_SIZE", "20")]),
        flags: flags(&["--read-buffer-size", "30"]),
        ..Layers::default()
    });
    assert!(message.contains("--read-buffer-size"), "{message}");
    // The key in error, not another of its table that a variable sets.
    for text in ["[websocket]\nmax_groups = 0\n", "[server]\nmax_headers = 0\n"] {
        let message = error(Layers {
            file: file(text),
            env: env(&[("ESTUARY_PING_INTERVAL", "5"), ("ESTUARY_BODY_TIMEOUT", "5")]),
            ..Layers::default()
        });
        assert!(
            message.contains("site.toml") && !message.contains("ESTUARY_"),
            "{text}: {message}"
        );
    }
    let message = error(Layers {
        env: env(&[("ESTUARY_PUSH_INSECURE", "maybe")]),
        ..Layers::default()
    });
    assert!(
        message.contains("ESTUARY_PUSH_INSECURE") && message.contains("true or false"),
        "{message}"
    );
    let message = error(Layers {
        file: file("unknown_key = 1\n"),
        ..Layers::default()
    });
    assert!(message.contains("unknown_key"), "{message}");
}

#[test]
fn a_choice_is_one_of_its_values() {
    let message = error(Layers {
        file: file("[websocket]\nslow_client = \"dorp\"\n"),
        ..Layers::default()
    });
    for word in ["slow_client", "dorp", "disconnect", "drop", "site.toml"] {
        assert!(message.contains(word), "{word}: {message}");
    }
    let message = error(Layers {
        env: env(&[("ESTUARY_REDIS_FLAVOUR", "fast")]),
        ..Layers::default()
    });
    for word in ["ESTUARY_REDIS_FLAVOUR", "layer.flavour", "core", "pubsub"] {
        assert!(message.contains(word), "{word}: {message}");
    }
    let message = error(Layers {
        flags: flags(&["--redis-flavour", "fast"]),
        ..Layers::default()
    });
    assert!(
        message.contains("--redis-flavour") && message.contains("pubsub"),
        "{message}"
    );
    let message = error(Layers {
        file: file(
            "[auth.django]\nsecret_key = \"k\"\ndatabase = \"sqlite:///tmp/x.sqlite3\"\nsession_engine = \"cache\"\n",
        ),
        ..Layers::default()
    });
    for word in ["session_engine", "cache", "db", "signed_cookies"] {
        assert!(message.contains(word), "{word}: {message}");
    }
    let ok = Config::from_layers(Layers {
        file: file(
            "[websocket]\nslow_client = \"drop\"\n[auth.django]\nsecret_key = \"k\"\n\
             database = \"sqlite:///tmp/x.sqlite3\"\nsession_engine = \"signed_cookies\"\n",
        ),
        ..Layers::default()
    })
    .unwrap();
    assert_eq!(ok.websocket.slow_client, SlowClient::Drop);
    assert_eq!(ok.websocket.slow_client_policy(), estuary::SlowClientPolicy::Drop);
    assert_eq!(
        ok.auth.django.unwrap().session_engine,
        SessionEngineName::SignedCookies
    );
}

/// A configuration with every kind of value and every kind of secret.
const FULL: &str = r#"
bind = "127.0.0.1:7100"
allowed_hosts = ["chat.example.com", "localhost"]
allowed_origins = [".example.com"]
trusted_proxies = ["10.0.0.0/8"]
push_token = "push-token-secret"

[websocket]
slow_client = "drop"
rate_limit = 2.5
ping_interval = 0

[layer]
redis = ["redis://:redis-password@127.0.0.1:6379/0", "redis://127.0.0.1:6379/1"]
flavour = "pubsub"
encryption_keys = ["key-one", "key-two"]
channel_capacity = [{ glob = "http.request*", capacity = 200 }, 're:^websocket\.send!.+=20']

[auth]
required = true

[auth.jwt]
hmac_secret = "jwt-secret-of-some-length"
audience = "chat"

[auth.django]
secret_key = "django-secret-key"
secret_key_fallbacks = ["old-django-secret"]
database = "postgres://reader:db-password@127.0.0.1:5432/site"
session_engine = "signed_cookies"

[presence]
interval_ms = 50
refresh_ms = 300
timeout_ms = 1000

[history]
groups = ["chat_*", "news.*"]
size = 20
ttl = 120

[chat]
leave_delay_ms = 500
recent_history = 10

[[routes]]
path = "ws/orders/<int:order_id>/"
channel = "orders"
auth = "required"
groups = ["orders.{order_id}", "user.{user.id}"]
query = { lang = "en" }

[[routes]]
path = "ws/dashboard/"
http = "http://127.0.0.1:8000/estuary/events/"
secret = "route-secret-of-some-length"
callback = false
connect = "accept"
busy_frame = '{"type": "busy"}'
"#;

const SECRETS: [&str; 9] = [
    "route-secret-of-some-length",
    "push-token-secret",
    "redis-password",
    "key-one",
    "key-two",
    "jwt-secret-of-some-length",
    "django-secret-key",
    "old-django-secret",
    "db-password",
];

/// `estuary ARGS` with no `ESTUARY_*` setting from the environment.
fn estuary(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_estuary"));
    command.args(args).env_remove("ESTUARY_CONFIG");
    for setting in SETTINGS {
        command.env_remove(setting.env);
    }
    command.output().expect("runs estuary")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Secrets: printed with `--show-secrets`, the output loads back to the same
/// configuration and prints the same; printed redacted, no secret appears
/// and the file refuses to load, naming the key.
#[test]
fn check_config_prints_a_file_that_loads_back() {
    let dir = std::env::temp_dir().join(format!("estuary-config-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let original = dir.join("original.toml");
    std::fs::write(&original, FULL).unwrap();
    let first = stdout(&estuary(&[
        "check-config",
        "--show-secrets",
        "--config",
        original.to_str().unwrap(),
        "--max-connections",
        "77",
    ]));
    let printed = dir.join("printed.toml");
    std::fs::write(&printed, &first).unwrap();
    let second = stdout(&estuary(&[
        "check-config",
        "--show-secrets",
        "--config",
        printed.to_str().unwrap(),
    ]));
    assert_eq!(first, second, "printing the printed file prints it again");

    let loaded = |text: &str| {
        Config::from_layers(Layers {
            file: Some(("f.toml".into(), text.to_owned())),
            ..Layers::default()
        })
        .unwrap()
    };
    let mut expected = loaded(FULL);
    expected.server.max_connections = 77;
    assert_eq!(loaded(&first), expected, "the printed file is the configuration");
    assert_eq!(
        expected.to_toml(Secrets::Show).unwrap(),
        first,
        "the binary prints what the library does"
    );

    let redacted = stdout(&estuary(&[
        "check-config",
        "--config",
        original.to_str().unwrap(),
    ]));
    for secret in SECRETS {
        assert!(!redacted.contains(secret), "{secret} printed:\n{redacted}");
    }
    assert!(
        redacted.contains("redis://:<redacted>@127.0.0.1:6379/0"),
        "{redacted}"
    );
    assert!(redacted.contains("chat.example.com"), "the rest is printed");
    let printed_redacted = dir.join("redacted.toml");
    std::fs::write(&printed_redacted, &redacted).unwrap();
    let refused = estuary(&["check-config", "--config", printed_redacted.to_str().unwrap()]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("push_token")
            && message.contains("<redacted>")
            && message.contains("--show-secrets"),
        "{message}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_defaults_print_and_load_back() {
    let printed = Config::default().to_toml(Secrets::Redact).unwrap();
    let loaded = Config::from_layers(Layers {
        file: Some(("defaults.toml".into(), printed.clone())),
        ..Layers::default()
    })
    .unwrap();
    assert_eq!(loaded, Config::default());
    assert_eq!(loaded.to_toml(Secrets::Redact).unwrap(), printed);
}

/// `estuary check-config | head -1`: the reader is gone before estuary
/// writes (its end of the pipe is closed first), and estuary exits 0
/// without a panic.
#[test]
fn check_config_into_a_closed_pipe_exits_cleanly() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = Command::new(env!("CARGO_BIN_EXE_estuary"));
    command.arg("check-config").env_remove("ESTUARY_CONFIG");
    for setting in SETTINGS {
        command.env_remove(setting.env);
    }
    let output = command
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn serve_help_states_the_precedence() {
    let help = stdout(&estuary(&["serve", "--help"]));
    assert!(
        help.contains("then ESTUARY_* environment variables, then flags"),
        "{help}"
    );
    assert!(help.contains("[env: ESTUARY_PING_INTERVAL]"), "{help}");
}

/// `--django-secret-key` and `--django-database` go together, from any
/// layers: the file may give one and a flag the other.
#[test]
fn a_pair_of_keys_completes_across_layers() {
    let config = Config::from_layers(Layers {
        file: file("[auth.django]\ndatabase = \"sqlite:///tmp/site.sqlite3\"\n"),
        env: Vec::new(),
        flags: flags(&["--django-secret-key", "from-a-flag"]),
    })
    .unwrap();
    assert_eq!(config.auth.django.unwrap().secret_key, "from-a-flag");
    let config = Config::from_layers(Layers {
        env: env(&[("ESTUARY_DJANGO_DATABASE", "sqlite:///tmp/site.sqlite3")]),
        flags: flags(&["--django-secret-key", "k"]),
        ..Layers::default()
    })
    .unwrap();
    assert!(config.auth.django.is_some());
    let message = error(Layers {
        flags: flags(&["--django-secret-key", "k"]),
        ..Layers::default()
    });
    assert!(
        message.contains("--django-secret-key") && message.contains("database"),
        "{message}"
    );
}

/// The TOML examples of the README and docs/ load (the documented format
/// keeps working); their secrets and paths are placeholders, so only the
/// keys and types are checked, not what needs a file or a connection.
/// Blocks of a Cargo manifest (how to add the crate) are skipped.
#[test]
fn the_documented_examples_load() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        pages.push(entry.unwrap().path());
    }
    let mut checked = 0;
    for page in pages.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let text = std::fs::read_to_string(page).unwrap();
        for block in text.split("```toml\n").skip(1) {
            let block = block.split("```").next().unwrap();
            // A Cargo manifest's lines (adding the crate) are not a config.
            let manifest = ["[dependencies]", "[package]", "[features]", "[workspace"];
            if manifest.iter().any(|table| block.trim_start().starts_with(table)) {
                continue;
            }
            if let Err(error) = toml::from_str::<Config>(block) {
                panic!("{}: {error}\n{block}", page.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} examples");
}

/// The Django workers example's file loads, with its routes.
#[test]
fn the_django_workers_example_loads() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("examples/django-workers/estuary.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::from_layers(Layers {
        file: Some((path, text)),
        env: env(&[("ESTUARY_CALLBACK_SECRET", "a callback secret of some length")]),
        ..Layers::default()
    })
    .unwrap();
    let paths: Vec<_> = config.routes.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "ws/chat/<str:room_name>/",
            "ws/notifications/",
            "ws/assistant/",
            "ws/dashboard/"
        ]
    );
}

/// A route's mistake names the route.
#[test]
fn a_bad_route_names_itself() {
    let message = error(Layers {
        file: file("[[routes]]\npath = \"ws/x/<room>/\"\nchannel = \"x\"\ngroups = [\"g.{rom}\"]\n"),
        ..Layers::default()
    });
    assert!(
        message.contains("routes[0]") && message.contains("rom"),
        "{message}"
    );
    let message = error(Layers {
        file: file("[[routes]]\npath = \"ws/x/\"\nchanel = \"x\"\n"),
        ..Layers::default()
    });
    assert!(message.contains("chanel"), "{message}");
}

/// A route waiting for its worker longer than the server waits for the
/// whole handshake would never give its own 504: refused when loaded.
#[test]
fn a_routes_connect_timeout_leaves_the_server_time() {
    let route = "[[routes]]\npath = \"ws/x/\"\nchannel = \"x\"\n";
    let message = error(Layers {
        file: file(&format!(
            "[server]\nhandshake_timeout = 5\n{route}connect_timeout = 5\n"
        )),
        ..Layers::default()
    });
    assert!(
        message.contains("routes[0]")
            && message.contains("connect_timeout")
            && message.contains("handshake_timeout"),
        "{message}"
    );
    for fine in [
        route.to_owned(),
        format!("{route}connect_timeout = 9.5\n"),
        format!("[server]\nhandshake_timeout = 2\n{route}connect = \"accept\"\n"),
    ] {
        Config::from_layers(Layers {
            file: file(&fine),
            ..Layers::default()
        })
        .unwrap_or_else(|e| panic!("{fine}: {e:#}"));
    }
}

/// `[auth.*]` are the libraries' own settings: an invalid value there is
/// an error naming its key and where it came from, without connecting.
#[test]
fn an_invalid_auth_value_names_its_key() {
    for (text, key) in [
        (
            "[auth.callback]\nurl = \"http://127.0.0.1:8000/c/\"\nsecret = \"short\"\n",
            "auth.callback.secret",
        ),
        (
            "[auth.callback]\nurl = \"http://127.0.0.1:8000/c/\"\nsecret = \"a secret of 16+ bytes\"\n\
             headers = [\"x-real-ip\"]\n",
            "auth.callback.headers",
        ),
        (
            "[auth.jwt]\nec_public_key_file = \"/nonexistent/key.pem\"\n",
            "auth.jwt.ec_public_key_file",
        ),
        ("[auth.jwt]\naudience = \"chat\"\n", "[auth.jwt] needs a key"),
        (
            "[auth.django]\nsecret_key = \"k\"\ndatabase = \"mysql://db/x\"\n",
            "auth.django.database",
        ),
    ] {
        let message = error(Layers {
            file: file(text),
            ..Layers::default()
        });
        assert!(message.contains(key), "{text}: {message}");
        assert!(message.contains("site.toml"), "{text}: {message}");
    }
}

/// `[presence]`, `[history]` and `[chat]` from every layer: each key from
/// the file, a variable or a flag; an empty list turns recording off; a
/// wrong value names its key and source; `check-config` prints them so that
/// they load back.
#[test]
fn presence_history_and_chat_keys_come_from_every_layer_and_print_back() {
    let config = Config::from_layers(Layers {
        file: file(
            "[history]\ngroups = [\"chat_*\", \"news.*\"]\nsize = 20\n[presence]\ntimeout_ms = 4000\n",
        ),
        env: env(&[
            ("ESTUARY_HISTORY_TTL", "120"),
            ("ESTUARY_PRESENCE_REFRESH_MS", "500"),
            ("ESTUARY_LEAVE_DELAY_MS", "0"),
            ("ESTUARY_HISTORY_SIZE", "25"),
        ]),
        flags: flags(&[
            "--history-size",
            "30",
            "--presence-interval-ms",
            "50",
            "--recent-history",
            "5",
            "--presence-timeout-ms",
            "2000",
        ]),
    })
    .unwrap();
    assert_eq!(config.history.groups, ["chat_*", "news.*"]);
    assert_eq!((config.history.size, config.history.ttl), (30, 120));
    assert_eq!(
        (
            config.presence.interval_ms,
            config.presence.refresh_ms,
            config.presence.timeout_ms
        ),
        (50, 500, 2000)
    );
    assert_eq!((config.chat.leave_delay_ms, config.chat.recent_history), (0, 5));
    let layer = config.layer_config().unwrap();
    assert_eq!(layer.presence().timeout(), std::time::Duration::from_secs(2));
    assert_eq!(layer.history_globs().collect::<Vec<_>>(), ["chat_*", "news.*"]);

    let defaults = Config::default();
    assert_eq!(
        defaults.history.groups,
        ["chat_*"],
        "the rooms are recorded by default"
    );
    let off = Config::from_layers(Layers {
        env: env(&[("ESTUARY_HISTORY_GROUPS", "")]),
        ..Layers::default()
    })
    .unwrap();
    assert!(off.history.groups.is_empty());
    assert_eq!(off.layer_config().unwrap().history_globs().count(), 0);

    for (layers, key, source) in [
        (
            Layers {
                flags: flags(&["--presence-refresh-ms", "20000"]),
                ..Layers::default()
            },
            "presence.refresh_ms",
            "--presence-refresh-ms",
        ),
        (
            Layers {
                file: file("[history]\nsize = 0\n"),
                ..Layers::default()
            },
            "history.size",
            "site.toml",
        ),
        (
            Layers {
                env: env(&[
                    ("ESTUARY_HISTORY_GROUPS", "chat_*,,x"),
                    ("ESTUARY_HISTORY_TTL", "0"),
                ]),
                ..Layers::default()
            },
            "history.ttl",
            "ESTUARY_HISTORY_TTL",
        ),
        (
            Layers {
                env: env(&[("ESTUARY_RECENT_HISTORY", "5000")]),
                ..Layers::default()
            },
            "chat.recent_history",
            "ESTUARY_RECENT_HISTORY",
        ),
        (
            Layers {
                file: file("[chat]\nleave_delay = 3\n"),
                ..Layers::default()
            },
            "leave_delay",
            "site.toml",
        ),
    ] {
        let message = error(layers);
        assert!(
            message.contains(key) && message.contains(source),
            "{key} from {source}: {message}"
        );
    }

    let printed = stdout(&estuary(&[
        "check-config",
        "--history-groups",
        "chat_*,news.*",
        "--history-size",
        "30",
        "--presence-timeout-ms",
        "2000",
        "--presence-refresh-ms",
        "600",
        "--leave-delay-ms",
        "250",
    ]));
    for line in [
        "groups = [\n    \"chat_*\",\n    \"news.*\",\n]",
        "size = 30",
        "timeout_ms = 2000",
        "leave_delay_ms = 250",
    ] {
        assert!(printed.contains(line), "{line:?} in\n{printed}");
    }
    let again = Config::from_layers(Layers {
        file: Some(("printed.toml".into(), printed)),
        ..Layers::default()
    })
    .unwrap();
    assert_eq!(again.history.groups, ["chat_*", "news.*"]);
    assert_eq!(
        (
            again.history.size,
            again.presence.timeout_ms,
            again.chat.leave_delay_ms
        ),
        (30, 2000, 250)
    );
}

/// channels_redis's `channel_capacity` from every layer: patterns in order
/// (globs, and regexes marked `re:`), the first match deciding; a variable
/// or a flag replaces the file's list; a bad entry names its source.
#[test]
fn channel_capacity_patterns_come_from_every_layer() {
    let text = "[layer]\ncapacity = 50\nchannel_capacity = [\n  { glob = \"http.request*\", capacity = 200 },\n  \
                { regex = '^websocket\\.send!.+', capacity = 20 },\n]\n";
    let from_file = Config::from_layers(Layers {
        file: file(text),
        ..Layers::default()
    })
    .unwrap();
    let layer = from_file.layer_config().unwrap();
    assert_eq!(layer.capacity_for("http.request.x"), 200);
    assert_eq!(layer.capacity_for("websocket.send!abc"), 20);
    assert_eq!(layer.capacity_for("websocket.send"), 50);

    let from_env = Config::from_layers(Layers {
        file: file(text),
        env: env(&[("ESTUARY_CHANNEL_CAPACITY", "worker.*=7, re:^chat[0-9]+=3")]),
        ..Layers::default()
    })
    .unwrap();
    let layer = from_env.layer_config().unwrap();
    assert_eq!(layer.capacity_for("worker.thumbnails"), 7);
    assert_eq!(layer.capacity_for("chat42"), 3);
    assert_eq!(
        layer.capacity_for("http.request.x"),
        50,
        "the variable replaced the file's list"
    );

    let from_flags = Config::from_layers(Layers {
        env: env(&[("ESTUARY_CHANNEL_CAPACITY", "worker.*=7")]),
        flags: flags(&["--channel-capacity", "a*=1", "--channel-capacity", "b*=2"]),
        ..Layers::default()
    })
    .unwrap();
    let layer = from_flags.layer_config().unwrap();
    assert_eq!(
        (
            layer.capacity_for("ax"),
            layer.capacity_for("bx"),
            layer.capacity_for("worker.x")
        ),
        (1, 2, 100)
    );
    let printed = from_flags.to_toml(Secrets::Show).unwrap();
    let back = Config::from_layers(Layers {
        file: file(&printed),
        ..Layers::default()
    })
    .unwrap();
    assert_eq!(
        back, from_flags,
        "check-config prints them so that they load back:\n{printed}"
    );

    for (layers, wanted) in [
        (
            Layers {
                env: env(&[("ESTUARY_CHANNEL_CAPACITY", "worker.*")]),
                ..Layers::default()
            },
            "ESTUARY_CHANNEL_CAPACITY",
        ),
        (
            Layers {
                flags: flags(&["--channel-capacity", "re:(=3"]),
                ..Layers::default()
            },
            "--channel-capacity",
        ),
        (
            Layers {
                file: file("[layer]\nchannel_capacity = [\"a=0\"]\n"),
                ..Layers::default()
            },
            "site.toml",
        ),
    ] {
        let message = error(layers);
        assert!(
            message.contains(wanted) && message.contains("channel_capacity"),
            "{wanted}: {message}"
        );
    }
}

/// A Sentinel host: channels_redis's table in the file, its
/// `redis+sentinel://` URL in a variable (its sentinels comma-separated
/// like the layer's hosts), both the same setting; printed with its
/// passwords redacted.
#[test]
fn sentinel_hosts_come_from_the_file_and_the_variables() {
    let text = "[layer]\nredis = [{ sentinels = [[\"10.0.0.1\", 26379], \"10.0.0.2:26379\"], \
                master_name = \"mymaster\", sentinel_kwargs = { password = \"sentinel-secret\" }, \
                password = \"primary-secret\" }]\n";
    let from_file = Config::from_layers(Layers {
        file: file(text),
        ..Layers::default()
    })
    .unwrap();
    let url = "redis+sentinel://:primary-secret@10.0.0.1:26379,10.0.0.2:26379/mymaster/0\
               ?sentinel_password=sentinel-secret";
    assert_eq!(from_file.layer.redis, [url]);
    let from_env = Config::from_layers(Layers {
        env: env(&[("ESTUARY_LAYER", &format!("{url},redis://10.0.0.9:6379/0"))]),
        ..Layers::default()
    })
    .unwrap();
    assert_eq!(from_env.layer.redis, [url, "redis://10.0.0.9:6379/0"]);
    let printed = from_file.to_toml(Secrets::Redact).unwrap();
    assert!(
        !printed.contains("primary-secret") && !printed.contains("sentinel-secret"),
        "{printed}"
    );
    let message = error(Layers {
        env: env(&[("ESTUARY_LAYER", "redis+sentinel://10.0.0.1:26379")]),
        ..Layers::default()
    });
    assert!(
        message.contains("ESTUARY_LAYER") && message.contains("master_name"),
        "{message}"
    );
}

/// channels_redis's `serializer_format` from the file, a variable or a
/// flag; an unknown format names its source.
#[test]
fn the_serializer_format_comes_from_every_layer() {
    use estuary_cli::config::SerializerFormat;
    let config = |layers: Layers| Config::from_layers(layers).unwrap().layer.serializer_format;
    assert_eq!(
        config(Layers::default()),
        SerializerFormat::Msgpack,
        "channels_redis's default"
    );
    let text = "[layer]\nserializer_format = \"json\"\n";
    assert_eq!(
        config(Layers {
            file: file(text),
            ..Layers::default()
        }),
        SerializerFormat::Json
    );
    assert_eq!(
        config(Layers {
            file: file(text),
            env: env(&[("ESTUARY_SERIALIZER_FORMAT", "msgpack")]),
            ..Layers::default()
        }),
        SerializerFormat::Msgpack
    );
    assert_eq!(
        config(Layers {
            env: env(&[("ESTUARY_SERIALIZER_FORMAT", "msgpack")]),
            flags: flags(&["--serializer-format", "json"]),
            ..Layers::default()
        }),
        SerializerFormat::Json
    );
    let with_json = Config::from_layers(Layers {
        file: file(text),
        ..Layers::default()
    })
    .unwrap();
    assert_eq!(
        with_json.layer.redis_config().serializer_format(),
        SerializerFormat::Json
    );
    let message = error(Layers {
        flags: flags(&["--serializer-format", "pickle"]),
        ..Layers::default()
    });
    assert!(message.contains("--serializer-format"), "{message}");
}
