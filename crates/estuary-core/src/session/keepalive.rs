//! Keepalive: pings at an interval, and when a silent peer counts as dead.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A connection's keepalive: when to ping, and whether the peer answered.
///
/// A peer is dead only when a ping went unanswered for the whole timeout:
/// anything heard from it (data, a pong, a close) counts as an answer, and
/// time spent not reading it (flow control) is excused.
///
/// The interval and the timeout are the route's (`SessionConfig`), passed
/// in rather than copied: every open connection holds its keepalive.
pub(super) struct Keepalive {
    /// The next tick; `None`: pings are disabled.
    timer: Option<Pin<Box<Sleep>>>,
    last_heard: Instant,
    /// When the unanswered ping went out.
    ping_sent: Option<Instant>,
}

/// What a keepalive tick calls for.
pub(super) enum Due {
    /// Send a ping.
    Ping,
    /// A ping is out and its timeout has not run yet.
    Waiting,
    /// A ping went unanswered for the whole timeout.
    Dead,
}

/// A tick this late is missed: the next one is an interval from now, not
/// from when it was due (as tokio's `MissedTickBehavior::Delay`).
const LATE: Duration = Duration::from_millis(5);

impl Keepalive {
    /// Ticks every `every` from now; never when `None` (or zero).
    pub(super) fn new(every: Option<Duration>) -> Self {
        let now = Instant::now();
        Self {
            timer: every
                .filter(|every| !every.is_zero())
                .map(|every| Box::pin(tokio::time::sleep_until(now + every))),
            last_heard: now,
            ping_sent: None,
        }
    }

    /// The peer was heard from: any outstanding ping is answered.
    pub(super) fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.ping_sent = None;
    }

    /// The session is not reading the peer (flow control): its silence
    /// meanwhile is the server's choice, not a sign of death. An
    /// outstanding ping is forgotten too (its answer may be unread), so that
    /// the next tick pings afresh; otherwise a peer that died meanwhile
    /// would never be found dead.
    pub(super) fn excuse(&mut self) {
        self.last_heard = Instant::now();
        self.ping_sent = None;
    }

    /// Completes at the next tick (`every` after the last one, or after a
    /// late one was seen); never when pings are disabled.
    pub(super) async fn tick(&mut self, every: Option<Duration>) {
        std::future::poll_fn(|cx| self.poll_tick(cx, every)).await
    }

    fn poll_tick(&mut self, cx: &mut std::task::Context<'_>, every: Option<Duration>) -> std::task::Poll<()> {
        let (Some(timer), Some(every)) = (self.timer.as_mut(), every) else {
            return std::task::Poll::Pending;
        };
        std::task::ready!(timer.as_mut().poll(cx));
        let due = timer.deadline();
        let now = Instant::now();
        let next = if now > due + LATE {
            now + every
        } else {
            due + every
        };
        timer.as_mut().reset(next);
        std::task::Poll::Ready(())
    }

    /// What this tick calls for, a ping being dead after `timeout`.
    pub(super) fn due(&self, timeout: Duration) -> Due {
        match self.ping_sent {
            Some(at) if at.elapsed() >= timeout && self.last_heard < at => Due::Dead,
            Some(_) => Due::Waiting,
            None => Due::Ping,
        }
    }

    /// A ping went out.
    pub(super) fn pinged(&mut self) {
        self.ping_sent = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_ping_makes_the_peer_dead_and_an_excuse_starts_afresh() {
        let second = Duration::from_secs(1);
        let mut k = Keepalive::new(Some(second));
        assert!(matches!(k.due(second), Due::Ping));
        // Pings go out at ticks, after the connection was last heard.
        tokio::time::advance(second / 10).await;
        k.pinged();
        tokio::time::advance(second / 2).await;
        assert!(matches!(k.due(second), Due::Waiting));
        tokio::time::advance(second).await;
        assert!(matches!(k.due(second), Due::Dead), "no answer within the timeout");

        let mut k = Keepalive::new(Some(second));
        tokio::time::advance(second / 10).await;
        k.pinged();
        tokio::time::advance(second / 2).await;
        // Reading paused by flow control: the ping's answer may be unread.
        k.excuse();
        assert!(
            matches!(k.due(second), Due::Ping),
            "a fresh ping, not a wait forever"
        );
        tokio::time::advance(second / 10).await;
        k.pinged();
        tokio::time::advance(2 * second).await;
        assert!(
            matches!(k.due(second), Due::Dead),
            "a peer that died meanwhile is found"
        );

        let mut k = Keepalive::new(Some(second));
        k.pinged();
        k.heard();
        assert!(matches!(k.due(second), Due::Ping));
    }
}
