//! The signals that stop a server.

use std::future::Future;

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
///
/// The handlers are installed when this is called (inside the runtime),
/// not when the future is first polled: a SIGTERM that comes between the
/// "listening" line and the accept loop's first turn (a supervisor's
/// restart, a test) is a shutdown, not the default action's sudden death.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        // Outside a runtime the handlers could not be installed above:
        // installed now, on the first poll.
        let mut interrupt = interrupt.or_else(|_| signal(SignalKind::interrupt())).ok();
        let mut terminate = terminate.or_else(|_| signal(SignalKind::terminate())).ok();
        let int = async {
            match &mut interrupt {
                Some(s) => drop(s.recv().await),
                None => std::future::pending::<()>().await,
            }
        };
        let term = async {
            match &mut terminate {
                Some(s) => drop(s.recv().await),
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = int => tracing::info!("SIGINT received"),
            () = term => tracing::info!("SIGTERM received"),
        }
    }
}
