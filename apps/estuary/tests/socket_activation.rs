//! Socket activation for real: `estuary serve` on a listening socket it
//! inherited (systemd's protocol, `--fd`), and a restart on that socket
//! while a client keeps connecting, with no connection refused.
//!
//! The socket reaches the child as fd 3 without `unsafe`: it is handed over
//! as the child's standard input, and a one-line shell moves it to fd 3
//! (`exec 3<&0`) before it runs `estuary`, as systemd would lay it out.

use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use estuary_test_support::process;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// A server process, killed on drop (a failed test leaves none behind).
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `estuary serve --fd 3` with `socket` as its fd 3 and `LISTEN_FDS=1`,
/// once it says it is listening.
fn serve_on(socket: OwnedFd, extra: &[&str]) -> Running {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"exec 3<&0 0</dev/null; exec "$0" serve --fd 3 --shutdown-timeout 5 "$@""#)
        .arg(env!("CARGO_BIN_EXE_estuary"))
        .args(extra)
        .stdin(Stdio::from(socket))
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::inherit());
    Running(Some(process::spawn_ready(cmd, "listening", WAIT).0))
}

/// SIGTERM, then the exit status (in time).
async fn terminate(mut running: Running) -> std::process::ExitStatus {
    let child = running.0.take().expect("running");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = child;
    tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || child.wait()))
        .await
        .expect("exits in time")
        .unwrap()
        .unwrap()
}

/// One `GET /healthz` on a fresh connection: its status line.
async fn healthz(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// Waits until the count of answers reaches `at_least`.
async fn reach(answers: &mut tokio::sync::watch::Receiver<u64>, at_least: u64, what: &str) {
    let reached = tokio::time::timeout(WAIT, answers.wait_for(|n| *n >= at_least))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(reached, "{what}: only {} in time", *answers.borrow());
}

#[tokio::test]
async fn a_restart_on_an_inherited_socket_refuses_no_connection() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let first = serve_on(OwnedFd::from(listener.try_clone().unwrap()), &[]);

    // A client that keeps connecting, one fresh connection after another.
    let (ok, mut answers) = tokio::sync::watch::channel(0u64);
    let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let client = {
        let (failed, stop) = (failed.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                match tokio::time::timeout(WAIT, healthz(addr)).await {
                    Ok(Ok(line)) if line.contains(" 200 ") => ok.send_modify(|n| *n += 1),
                    other => failed.lock().unwrap().push(format!("{other:?}")),
                }
            }
        })
    };
    reach(&mut answers, 20, "answers from the first process").await;

    // The next process on the same socket, then the first one drains.
    let second = serve_on(OwnedFd::from(listener.try_clone().unwrap()), &[]);
    let before = *answers.borrow();
    assert!(terminate(first).await.success());
    reach(&mut answers, before + 100, "answers after the first process left").await;
    stop.cancel();
    client.await.unwrap();
    assert_eq!(*failed.lock().unwrap(), Vec::<String>::new(), "refused or failed");
    assert!(terminate(second).await.success());
}

#[tokio::test]
async fn an_inherited_unix_socket_is_served() {
    let dir = std::env::temp_dir().join(format!("estuary-activation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("estuary.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let child = serve_on(OwnedFd::from(listener), &["--trusted-proxies", "unix"]);
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    let status = terminate(child).await;
    assert!(status.success(), "{status:?}");
    assert!(
        path.exists(),
        "an inherited socket's file is left for the next process"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_fd_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_estuary"))
        .args(["serve", "--fd", "5"])
        .env_remove("LISTEN_FDS")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--fd 5") && stderr.contains("LISTEN_FDS"),
        "{stderr}"
    );
}
