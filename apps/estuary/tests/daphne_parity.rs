//! `estuary serve` where daphne had a setting: the connection lifetime
//! (`websocket_timeout`) and `--root-path`, through the chat application.

mod common;

use common::{Client, TestServer};
use estuary_cli::config::{Config, ServeArgs};

/// `max_lifetime = 1`: the chat connection is closed with 1001 when its
/// second is up (waited on as the close frame).
#[tokio::test]
async fn max_lifetime_closes_the_connection_with_1001() {
    let mut config = Config::default();
    config.websocket.max_lifetime = 1;
    let server = TestServer::with_config(config).await;
    let mut client = Client::join(&server.url("/ws/chat/lifetime/")).await;
    assert_eq!(client.recv_close().await, 1001);
    server.stop().await;
}

/// `--root-path /realtime`: the chat room under the prefix is the room
/// without it.
#[tokio::test]
async fn the_chat_lives_under_the_root_path() {
    let args = ServeArgs::try_parse_from(["--root-path", "/realtime", "--max-lifetime", "3600"]).unwrap();
    let config = Config::from_layers(args.layers()).unwrap();
    assert_eq!(config.server.root_path, "/realtime");
    assert_eq!(config.websocket.max_lifetime, 3600);
    let server = TestServer::with_config(config).await;
    let mut under = Client::join(&server.url("/realtime/ws/chat/lobby/")).await;
    let mut plain = Client::join(&server.url("/ws/chat/lobby/")).await;
    under
        .send_json(&serde_json::json!({"message": "from under the prefix"}))
        .await;
    let seen = plain.recv_type("chat_message").await;
    assert_eq!(seen["message"], "from under the prefix", "{seen}");
    server.stop().await;
}

/// The two settings print back from `check-config` and read back.
#[test]
fn check_config_prints_them() {
    let args = ServeArgs::try_parse_from(["--root-path", "/rt/", "--max-lifetime", "60"]).unwrap();
    let config = Config::from_layers(args.layers()).unwrap();
    let text = config.to_toml(estuary_cli::config::Secrets::Show).unwrap();
    assert!(text.contains("root_path = \"/rt/\""), "{text}");
    assert!(text.contains("max_lifetime = 60"), "{text}");
}
