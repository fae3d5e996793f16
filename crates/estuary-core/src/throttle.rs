//! A log line that cannot flood: at most one per interval, counting the rest.
//!
//! One bad group message reaches every member of its group; without this, a
//! room of 1,000 members logs the same warning 1,000 times, and a producer
//! that sends such messages in a loop fills the disk.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one event through per `interval` and counts the ones it holds back:
/// for log lines an outsider can trigger (a refused handshake, a bad
/// message), so that an attack cannot fill the disk.
///
/// ```
/// use std::time::{Duration, Instant};
/// use estuary_core::Throttle;
///
/// static REFUSED: Throttle = Throttle::new(Duration::from_secs(1));
///
/// let now = Instant::now();
/// assert_eq!(REFUSED.allow(now), Some(0)); // log it
/// assert_eq!(REFUSED.allow(now), None); // hold it back
/// assert_eq!(REFUSED.allow(now + Duration::from_secs(1)), Some(1)); // log, "1 more"
/// ```
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// At most one event per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when the event at `now` should be logged, `n` being how many
    /// were held back since the last one logged; `None` to hold it back.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = crate::sync::lock(&self.state);
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

/// Logs through [`tracing`] at the given level, at most once a second from
/// this call site, adding a `held_back` field: how many lines it held back
/// since the last one. For every warning an outsider or a failing backend
/// can repeat per request, per connection or per message.
///
/// ```
/// use estuary_core::throttled;
///
/// for attempt in 0..1000 {
///     let error = "connection refused";
///     // One line now, then at most one a second with the count of the rest.
///     throttled!(warn, attempt, %error, "backend unreachable; check that it runs");
/// }
/// ```
#[macro_export]
macro_rules! throttled {
    ($level:ident, $($rest:tt)+) => {{
        static THROTTLE: $crate::Throttle = $crate::Throttle::new(::std::time::Duration::from_secs(1));
        if let ::std::option::Option::Some(held_back) = THROTTLE.allow(::std::time::Instant::now()) {
            $crate::__private::tracing::$level!(held_back, $($rest)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_the_count_of_the_rest() {
        let t = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(t.allow(start), Some(0));
        for _ in 0..999 {
            assert_eq!(t.allow(start + Duration::from_millis(10)), None);
        }
        assert_eq!(t.allow(start + Duration::from_secs(1)), Some(999));
        assert_eq!(t.allow(start + Duration::from_millis(1500)), None);
        assert_eq!(t.allow(start + Duration::from_secs(3)), Some(1));
    }
}
