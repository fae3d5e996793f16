//! Await a condition with a deadline: the test waits on the condition, not
//! on the clock, and a timeout says what was awaited.

use std::future::Future;
use std::time::Duration;

/// How long [`eventually`] waits by default.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Awaits `wait` (a future that completes when the condition holds: a
/// receive, a watch channel's `wait_for`, a poll loop) for at most
/// `deadline`; panics naming `what` when it does not complete in time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use estuary_test_support::eventually;
///
/// let (tx, mut rx) = tokio::sync::watch::channel(0);
/// tokio::spawn(async move { tx.send(3).unwrap(); std::future::pending::<()>().await });
/// eventually("the counter to reach 3", Duration::from_secs(5), rx.wait_for(|n| *n >= 3)).await.unwrap();
/// # }
/// ```
pub async fn eventually<F: Future>(what: &str, deadline: Duration, wait: F) -> F::Output {
    match tokio::time::timeout(deadline, wait).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Calls `check` until it returns `Some`, sleeping `every` between calls, for
/// at most `deadline`; panics naming `what` when it never does. For state
/// that announces no event (a file, a process's table, another server's
/// counter); prefer [`eventually`] on an event when there is one.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use estuary_test_support::eventually::poll;
///
/// let mut tries = 0;
/// let n = poll("the third try", Duration::from_secs(5), Duration::from_millis(1), || {
///     tries += 1;
///     (tries == 3).then_some(tries)
/// })
/// .await;
/// assert_eq!(n, 3);
/// # }
/// ```
pub async fn poll<T>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    eventually(what, deadline, async {
        loop {
            if let Some(value) = check() {
                return value;
            }
            tokio::time::sleep(every).await;
        }
    })
    .await
}

/// [`poll`] for a check that has to wait itself (an HTTP request to another
/// process): awaits `check` until it returns `Some`, `every` apart, for at
/// most `deadline`; panics naming `what` when it never does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use estuary_test_support::eventually::poll_async;
///
/// let mut tries = 0;
/// let n = poll_async("the second try", Duration::from_secs(5), Duration::from_millis(1), || {
///     tries += 1;
///     let now = tries;
///     async move { (now == 2).then_some(now) }
/// })
/// .await;
/// assert_eq!(n, 2);
/// # }
/// ```
pub async fn poll_async<T, F, Fut>(what: &str, deadline: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually(what, deadline, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(every).await;
        }
    })
    .await
}
