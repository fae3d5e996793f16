//! Keepalive: pings at an interval, and when a silent peer counts as dead.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

/// A connection's keepalive: when to ping, and whether the peer answered.
///
/// A peer is dead only when a ping went unanswered for the whole timeout:
/// anything heard from it (data, a pong, a close) counts as an answer, and
/// time spent not reading it (flow control) is excused.
pub(super) struct Keepalive {
    /// `None`: pings are disabled.
    interval: Option<Interval>,
    timeout: Duration,
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

impl Keepalive {
    pub(super) fn new(every: Option<Duration>, timeout: Duration) -> Self {
        let interval = every.map(|every| {
            let mut interval = tokio::time::interval_at(Instant::now() + every, every);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        Self {
            interval,
            timeout,
            last_heard: Instant::now(),
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

    /// Completes at the next tick; never when pings are disabled.
    pub(super) async fn tick(&mut self) {
        match &mut self.interval {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// What this tick calls for.
    pub(super) fn due(&self) -> Due {
        match self.ping_sent {
            Some(at) if at.elapsed() >= self.timeout && self.last_heard < at => Due::Dead,
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
        let mut k = Keepalive::new(Some(second), second);
        assert!(matches!(k.due(), Due::Ping));
        // Pings go out at ticks, after the connection was last heard.
        tokio::time::advance(second / 10).await;
        k.pinged();
        tokio::time::advance(second / 2).await;
        assert!(matches!(k.due(), Due::Waiting));
        tokio::time::advance(second).await;
        assert!(matches!(k.due(), Due::Dead), "no answer within the timeout");

        let mut k = Keepalive::new(Some(second), second);
        tokio::time::advance(second / 10).await;
        k.pinged();
        tokio::time::advance(second / 2).await;
        // Reading paused by flow control: the ping's answer may be unread.
        k.excuse();
        assert!(matches!(k.due(), Due::Ping), "a fresh ping, not a wait forever");
        tokio::time::advance(second / 10).await;
        k.pinged();
        tokio::time::advance(2 * second).await;
        assert!(
            matches!(k.due(), Due::Dead),
            "a peer that died meanwhile is found"
        );

        let mut k = Keepalive::new(Some(second), second);
        k.pinged();
        k.heard();
        assert!(matches!(k.due(), Due::Ping));
    }
}
