//! Direct TLS for real: `estuary serve --tls-cert --tls-key` with a
//! certificate made here (rcgen), the chat over `wss://` with a client that
//! trusts it, and a reload on SIGHUP (the next handshake sees the new
//! certificate; a connection already open goes on).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::served::Served;
use estuary_test_support::eventually;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

type Wss = WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A self-signed certificate for `localhost` and its key, as PEM files in
/// `dir` (named `cert.pem` and `key.pem`, replacing what is there); its DER.
fn certificate(dir: &Path) -> CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    // Written beside, then renamed: the server never reads half a file.
    std::fs::write(dir.join("cert.new"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.new"), key.serialize_pem()).unwrap();
    std::fs::rename(dir.join("key.new"), dir.join("key.pem")).unwrap();
    std::fs::rename(dir.join("cert.new"), dir.join("cert.pem")).unwrap();
    cert.der().clone()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("estuary-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A WebSocket over TLS to `path`, trusting `roots`; with the certificate
/// the server presented.
async fn connect(port: u16, path: &str, roots: &[CertificateDer<'static>]) -> (Wss, CertificateDer<'static>) {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    // ring, as the server (see crates/estuary-server/src/tls.rs).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("the server's certificate is trusted");
    let presented = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    let url = format!("wss://localhost:{port}{path}");
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tls))
        .await
        .expect("WebSocket handshake in time")
        .expect("accepted");
    (ws, presented)
}

/// The next JSON frame of a chat type other than presence.
async fn recv(ws: &mut Wss) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time");
        if let Some(Ok(Message::Text(text))) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            if !matches!(
                value["type"].as_str(),
                Some("user_join" | "user_leave" | "presence")
            ) {
                return value;
            }
        } else if !matches!(frame, Some(Ok(Message::Ping(_) | Message::Pong(_)))) {
            panic!("connection ended: {frame:?}");
        }
    }
}

async fn say(ws: &mut Wss, text: &str) {
    ws.send(Message::text(json!({"message": text}).to_string()))
        .await
        .unwrap();
}

fn serve(dir: &Path) -> Served {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    Served::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
}

#[tokio::test]
async fn the_chat_runs_over_wss() {
    let dir = temp_dir("chat");
    let root = certificate(&dir);
    let server = serve(&dir);
    let roots = [root.clone()];
    let (mut alice, presented) = connect(server.port(), "/ws/chat/tls/?username=alice", &roots).await;
    assert_eq!(presented, root);
    assert_eq!(recv(&mut alice).await["type"], "connection_established");
    let (mut bob, _) = connect(server.port(), "/ws/chat/tls/?username=bob", &roots).await;
    assert_eq!(recv(&mut bob).await["type"], "connection_established");
    say(&mut alice, "over TLS").await;
    for ws in [&mut alice, &mut bob] {
        let seen = recv(ws).await;
        assert_eq!(
            (seen["type"].as_str(), seen["message"].as_str()),
            (Some("chat_message"), Some("over TLS"))
        );
    }
    // Plain HTTP on the TLS port gets no answer it could mistake for one.
    let plain =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/chat/tls/", server.port())).await;
    assert!(plain.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_open_connections_go_on() {
    let dir = temp_dir("reload");
    let first = certificate(&dir);
    let server = serve(&dir);
    let (mut before, presented) =
        connect(server.port(), "/ws/chat/reload/", std::slice::from_ref(&first)).await;
    assert_eq!(presented, first);
    assert_eq!(recv(&mut before).await["type"], "connection_established");

    let second = certificate(&dir);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually::poll("the reload in the log", WAIT, Duration::from_millis(20), || {
        server
            .log()
            .into_iter()
            .find(|l| l.contains("TLS certificate and key reloaded"))
    })
    .await;

    let (mut after, presented) = connect(server.port(), "/ws/chat/reload/", &[first, second.clone()]).await;
    assert_eq!(presented, second, "the next handshake sees the new certificate");
    assert_eq!(recv(&mut after).await["type"], "connection_established");
    say(&mut before, "still here").await;
    assert_eq!(
        recv(&mut before).await["message"],
        "still here",
        "the open connection goes on"
    );
    assert_eq!(recv(&mut after).await["message"], "still here");

    // A broken pair on the next SIGHUP: logged, and the second stays.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually::poll(
        "the failed reload in the log",
        WAIT,
        Duration::from_millis(20),
        || server.log().into_iter().find(|l| l.contains("TLS reload failed")),
    )
    .await;
    let (_, presented) = connect(server.port(), "/ws/chat/reload/", std::slice::from_ref(&second)).await;
    assert_eq!(presented, second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_key_is_a_clear_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_estuary"))
        .args(["check-config", "--tls-cert", "/etc/ssl/cert.pem"])
        .env("RUST_BACKTRACE", "0")
        .env_remove("ESTUARY_TLS_KEY")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tls_key"), "{stderr}");
}
