//! The Django workers example (`examples/django-workers`) through Estuary:
//! `estuary serve` with the example's `estuary.toml` (its `[[routes]]`),
//! the example's consumers in a real `manage.py runworker` on the
//! machine's Redis, and real WebSocket clients over TCP.

mod common;

use std::path::PathBuf;

use common::{Client, TestServer, chat_protocol};
use estuary_cli::config::{Config, Layers};
use estuary_test_support::workers::{CALLBACK_SECRET, WorkersProject};

/// The example's `estuary.toml` on the project's Redis prefix, with its
/// connect callback at `callback` (Django's runserver), on a free port.
fn example_config(project: &WorkersProject, callback: Option<String>) -> Config {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("examples/django-workers/estuary.toml");
    let text = std::fs::read_to_string(&path).expect("the example's estuary.toml");
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

/// A child process killed (and reaped) on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
