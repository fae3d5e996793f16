//! The sign-in recheck of a connection's user, run beside the session loop:
//! a slow check (a database, an application asked over HTTP) never holds up
//! the connection's reading, writing or keepalive.

use tokio::time::{Instant, sleep_until};

use crate::{BoxError, Recheck, RecheckFuture};

/// A connection's recheck: when it runs next, or the check under way.
pub(super) struct Rechecks {
    recheck: Recheck,
    next: Instant,
    /// The check under way, and when it is given up.
    running: Option<(RecheckFuture, Instant)>,
}

/// What a check found.
pub(super) enum Verdict {
    /// Still signed in.
    SignedIn,
    /// Signed out (a logout, a changed password, a deactivation).
    SignedOut,
    /// The check could not be made.
    Failed(BoxError),
    /// The check took its whole interval.
    TimedOut,
}

impl Rechecks {
    /// The first check one interval (give or take a tenth) from `now`.
    pub(super) fn new(recheck: Recheck, now: Instant) -> Self {
        let next = now + jittered(&recheck);
        Self {
            recheck,
            next,
            running: None,
        }
    }

    /// Waits for the next check's time, runs it, and says what it found;
    /// the next is due one interval (give or take a tenth, so that the
    /// connections of one burst do not check in step) after it ends.
    /// Cancel-safe: a check under way is kept and resumed by the next call.
    pub(super) async fn next(&mut self) -> Verdict {
        if self.running.is_none() {
            sleep_until(self.next).await;
            let deadline = Instant::now() + self.recheck.every();
            self.running = Some((self.recheck.check(), deadline));
        }
        let Some((check, deadline)) = &mut self.running else {
            return Verdict::TimedOut;
        };
        let verdict = tokio::select! {
            answer = check => match answer {
                Ok(true) => Verdict::SignedIn,
                Ok(false) => Verdict::SignedOut,
                Err(error) => Verdict::Failed(error),
            },
            () = sleep_until(*deadline) => Verdict::TimedOut,
        };
        self.running = None;
        self.next = Instant::now() + jittered(&self.recheck);
        verdict
    }
}

/// The recheck's interval, give or take a tenth.
fn jittered(recheck: &Recheck) -> std::time::Duration {
    recheck.every().mul_f64(rand::random_range(0.9..1.1))
}
