//! Listening sockets the process inherited: systemd's socket activation
//! (`LISTEN_FDS`, `LISTEN_PID`) and daphne's `--fd`.
//!
//! A socket that outlives the process is what makes a restart refuse no
//! connection: while one process drains and the next starts, the kernel
//! keeps queueing connections on it (docs/DEPLOY.md).

use anyhow::bail;
use estuary::server::Server;

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: u32 = 3;

/// The server on the socket the process inherited: fd `fd` when given,
/// else the first socket systemd passed; `None` when none was passed and
/// none asked for. Sockets are found by systemd's protocol: `LISTEN_FDS`
/// counts them from fd 3, and `LISTEN_PID`, when set, must be this
/// process's id. Must be called inside the runtime.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// // Under systemd with a .socket unit: LISTEN_FDS=1, the socket as fd 3.
/// let server = estuary_cli::activation::inherited(Some(3))?.expect("a socket");
/// # let _ = server; Ok(()) }
/// ```
pub fn inherited(fd: Option<u32>) -> anyhow::Result<Option<Server>> {
    let mut fds = listenfd::ListenFd::from_env();
    let count = fds.len();
    let index = match fd {
        Some(fd) => match fd.checked_sub(LISTEN_FDS_START).map(|i| i as usize) {
            Some(index) if index < count => index,
            _ => bail!(
                "--fd {fd}: the process inherited no such socket. Sockets are passed by systemd's \
                 protocol: LISTEN_FDS counts them from fd 3 (here {count}); a supervisor that \
                 passes fd {fd} without systemd must also set LISTEN_FDS (LISTEN_FDS={} for fd {fd})",
                fd.saturating_sub(LISTEN_FDS_START) + 1
            ),
        },
        None if count > 0 => 0,
        None => return Ok(None),
    };
    let number = index as u32 + LISTEN_FDS_START;
    if let Ok(Some(listener)) = fds.take_tcp_listener(index) {
        listener.set_nonblocking(true)?;
        return Ok(Some(Server::from_tcp(tokio::net::TcpListener::from_std(
            listener,
        )?)));
    }
    if let Ok(Some(listener)) = fds.take_unix_listener(index) {
        listener.set_nonblocking(true)?;
        return Ok(Some(Server::from_unix(tokio::net::UnixListener::from_std(
            listener,
        )?)));
    }
    bail!("fd {number} (from LISTEN_FDS) is not a TCP or Unix stream socket")
}
