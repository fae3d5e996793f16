//! The sign-in recheck of a connection's user, run beside the session loop:
//! a slow check (a database, an application asked over HTTP) never holds up
//! the connection's reading, writing or keepalive.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep, sleep_until};

use super::step::{Closing, Step};
use crate::close::CloseCode;
use crate::names::ChannelName;
use crate::{BoxError, Recheck, RecheckFuture};

/// A connection's recheck: one timer, for the next check or for the end of
/// the one under way, and that check.
///
/// Polled by the session loop on every turn it runs, so polling costs a
/// field test and nothing is built per turn: the timer is made once and
/// reset.
pub(super) struct Rechecks {
    recheck: Recheck,
    /// When the next check is due, or (while one runs) when it is given up.
    timer: Pin<Box<Sleep>>,
    /// The check under way.
    running: Option<RecheckFuture>,
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
        let timer = Box::pin(sleep_until(now + jittered(&recheck)));
        Self {
            recheck,
            timer,
            running: None,
        }
    }

    /// Starts the check when it is due and says what it found once it
    /// answers (or takes its whole interval); the next is due one interval
    /// (give or take a tenth, so that the connections of one burst do not
    /// check in step) after it ends.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Verdict> {
        if self.running.is_none() {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            self.timer.as_mut().reset(now + self.recheck.every());
            self.running = Some(self.recheck.check());
        }
        let Some(check) = self.running.as_mut() else {
            return Poll::Pending;
        };
        let verdict = match check.as_mut().poll(cx) {
            Poll::Ready(Ok(true)) => Verdict::SignedIn,
            Poll::Ready(Ok(false)) => Verdict::SignedOut,
            Poll::Ready(Err(error)) => Verdict::Failed(error),
            Poll::Pending if self.timer.as_mut().poll(cx).is_ready() => Verdict::TimedOut,
            Poll::Pending => return Poll::Pending,
        };
        self.running = None;
        let next = Instant::now() + jittered(&self.recheck);
        self.timer.as_mut().reset(next);
        Poll::Ready(verdict)
    }
}

/// The recheck's interval, give or take a tenth.
fn jittered(recheck: &Recheck) -> std::time::Duration {
    recheck.every().mul_f64(rand::random_range(0.9..1.1))
}

/// What a [`Recheck`](crate::Recheck) of the user found: signed out
/// closes with 4401; a failed or timed-out check keeps the connection (the
/// next is due an interval later).
pub(super) fn on_recheck(channel: &ChannelName, verdict: Verdict) -> Step {
    match verdict {
        Verdict::SignedOut => {
            tracing::debug!(%channel, "user no longer signed in; closing");
            return Closing::server(CloseCode::CREDENTIALS_EXPIRED, "signed out", true);
        }
        Verdict::SignedIn => {}
        // Every open connection rechecks: with the backend down, one line
        // each per interval would flood the log. One a second at most.
        Verdict::Failed(error) => {
            crate::throttled!(warn, %channel, %error, "sign-in recheck failed; keeping the connection (is the authentication backend reachable?)")
        }
        Verdict::TimedOut => {
            crate::throttled!(warn, %channel, "sign-in recheck timed out; keeping the connection (is the authentication backend slow?)")
        }
    }
    Step::Continue
}
