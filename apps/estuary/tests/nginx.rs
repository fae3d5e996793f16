//! Debian's nginx in front of `estuary serve`, with the configuration of
//! docs/DEPLOY.md (read from the page, so that the two cannot drift): the
//! chat protocol through it over a TCP and a Unix-socket upstream, and the
//! client's own address arriving at Estuary through `X-Forwarded-For`.
//!
//! Needs nginx (`scripts/install-nginx.sh`; scripts/test.sh installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::served::Served;
use common::{Client, chat_protocol};
use estuary_test_support::{eventually, process};

const WAIT: Duration = Duration::from_secs(20);

/// The marker before the fenced block the test runs.
const MARKER: &str = "<!-- deploy-test: nginx -->";

/// The nginx block of docs/DEPLOY.md.
fn documented_config() -> String {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/DEPLOY.md"))
        .expect("docs/DEPLOY.md");
    let after = page
        .split_once(MARKER)
        .expect("docs/DEPLOY.md has the marked nginx block")
        .1;
    let body = after
        .split_once("```nginx\n")
        .expect("a ```nginx block after the marker")
        .1;
    body.split_once("\n```").expect("the block ends").0.to_owned()
}

/// Replaces `from` (which must be in `text`) by `to`.
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "docs/DEPLOY.md's nginx block no longer has {from:?}"
    );
    text.replace(from, to)
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is not installed: run scripts/install-nginx.sh")
}

/// nginx running the documented configuration on a free port, in front of
/// `upstream` (`127.0.0.1:PORT` or `unix:PATH`); stopped on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Nginx {
    async fn start(upstream: &str) -> Self {
        let port = process::free_port();
        let dir = std::env::temp_dir().join(format!("estuary-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let block = swap(
            &documented_config(),
            "listen 80;",
            &format!("listen 127.0.0.1:{port};"),
        );
        let block = swap(&block, "server 127.0.0.1:8000;", &format!("server {upstream};"));
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{block}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let check = Command::new(nginx_binary())
            .args(["-t", "-q", "-e"])
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(nginx_binary())
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx starts");
        let nginx = Self { child, port, dir };
        eventually::poll_async("nginx listening", WAIT, Duration::from_millis(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        nginx
    }

    fn target(&self) -> chat_protocol::ChatTarget {
        chat_protocol::ChatTarget {
            addr: ([127, 0, 0, 1], self.port).into(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A WebSocket to `url` over a TCP connection from `source` (a loopback
/// address other than 127.0.0.1: a client nginx sees as itself).
async fn connect_from(source: [u8; 4], url: &str, port: u16) -> Result<Client, u16> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("handshake in time")
    {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[tokio::test]
#[ignore = "needs nginx (scripts/install-nginx.sh)"]
async fn the_chat_protocol_runs_through_the_documented_nginx() {
    let estuary = Served::start(&["--trusted-proxies", "127.0.0.1"]);
    let nginx = Nginx::start(&format!("127.0.0.1:{}", estuary.port())).await;
    let target = nginx.target();
    chat_protocol::two_clients_in_a_room_receive_in_order_and_other_rooms_do_not(&target).await;
    chat_protocol::join_and_leave_events_for_named_members(&target).await;
    chat_protocol::default_username_is_anonymous(&target).await;
    chat_protocol::bad_input_gets_an_error_frame_and_the_connection_stays_open(&target).await;
    chat_protocol::oversize_message_closes_with_1009(&target).await;
    chat_protocol::invalid_utf8_closes_with_1007(&target).await;
    chat_protocol::one_bad_client_does_not_affect_another(&target).await;
    chat_protocol::unknown_paths_and_bad_rooms_are_refused_before_upgrade(&target).await;
    chat_protocol::cross_site_origins_are_refused(&target).await;
    assert!(
        estuary.warnings().iter().all(|l| !l.contains("X-Forwarded-For")),
        "nginx is trusted: {:?}",
        estuary.warnings()
    );
}

/// An oversized message is closed with 1009 through nginx every time, not
/// 1006 now and then: Estuary closes while the rest of the message is still
/// arriving, and once dropped the socket with those bytes unread, so its
/// kernel answered with a reset and nginx dropped the 1009 close frame it
/// had not yet passed on (about one close in four). The transport now
/// lingers: it shuts its write side after the close frame and reads the
/// rest until nginx ends the connection.
#[tokio::test]
#[ignore = "needs nginx (scripts/install-nginx.sh)"]
async fn oversized_messages_close_with_1009_through_nginx_every_time() {
    let estuary = Served::start(&["--trusted-proxies", "127.0.0.1", "--handshake-rate", "0"]);
    let nginx = Nginx::start(&format!("127.0.0.1:{}", estuary.port())).await;
    let target = nginx.target();
    for _ in 0..40 {
        chat_protocol::oversize_message_closes_with_1009(&target).await;
    }
}

/// Through nginx, Estuary counts each client on its own address (from
/// `X-Forwarded-For`), not nginx's: with one connection allowed per
/// address, 127.0.0.2 and 127.0.0.3 each get one, a second from 127.0.0.2
/// is refused, and Estuary's log names 127.0.0.2.
#[tokio::test]
#[ignore = "needs nginx (scripts/install-nginx.sh)"]
async fn the_clients_own_address_arrives_at_estuary() {
    let estuary = Served::start(&["--trusted-proxies", "127.0.0.1", "--max-connections-per-ip", "1"]);
    let nginx = Nginx::start(&format!("127.0.0.1:{}", estuary.port())).await;
    let url = nginx.url("/ws/chat/addresses/");
    let _first = connect_from([127, 0, 0, 2], &url, nginx.port)
        .await
        .expect("127.0.0.2's first connection");
    let _other = connect_from([127, 0, 0, 3], &url, nginx.port)
        .await
        .expect("127.0.0.3 is another client, though nginx carries both");
    let refused = connect_from([127, 0, 0, 2], &url, nginx.port).await.err();
    assert_eq!(refused, Some(429), "127.0.0.2's second connection");
    let said = eventually::poll("the refusal in the log", WAIT, Duration::from_millis(20), || {
        estuary
            .log()
            .into_iter()
            .find(|l| l.contains("max_connections_per_ip"))
    })
    .await;
    assert!(said.contains("127.0.0.2"), "{said}");
}

/// The Unix-socket upstream of the same block: `estuary serve --bind
/// unix:PATH --trusted-proxies unix`.
#[tokio::test]
#[ignore = "needs nginx (scripts/install-nginx.sh)"]
async fn the_chat_runs_through_nginx_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("estuary-nginx-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("estuary.sock");
    let _estuary = serve_unix(&socket);
    let nginx = Nginx::start(&format!("unix:{}", socket.display())).await;
    chat_protocol::two_clients_in_a_room_receive_in_order_and_other_rooms_do_not(&nginx.target()).await;
    let mut alice = Client::join(&nginx.url("/ws/chat/unix/?username=alice")).await;
    alice
        .send_json(&serde_json::json!({"message": "over a Unix socket"}))
        .await;
    let echoed = chat_protocol::recv_chat(&mut alice).await;
    assert_eq!(echoed["message"], "over a Unix socket", "{echoed}");
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `estuary serve` on a Unix socket, killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_unix(socket: &Path) -> Killed {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_estuary"));
    cmd.args([
        "serve",
        "--trusted-proxies",
        "unix",
        "--allowed-hosts",
        "127.0.0.1",
    ])
    .arg("--bind")
    .arg(format!("unix:{}", socket.display()))
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1")
    .stderr(Stdio::inherit());
    Killed(process::spawn_ready(cmd, "listening", WAIT).0)
}
