//! A bound on the log lines a flood of refused connections can write: anyone who reaches
//! a port (the peer port here, the servers' TLS ports) can open connections that are refused, and one WARN line each would let
//! them fill the disk and bury every other line.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines admitted per window, and the window.
pub(crate) const REFUSALS_LOGGED_PER_WINDOW: u32 = 10;
pub(crate) const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Admits at most `lines_per_window` lines per `window`; counts the rest.
#[derive(Debug)]
pub struct LogThrottle {
    lines_per_window: u32,
    window: Duration,
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    lines: u32,
    /// Lines refused since the last one admitted.
    suppressed: u64,
}

impl LogThrottle {
    /// A throttle admitting `lines_per_window` lines per `window` (both positive).
    pub fn new(lines_per_window: u32, window: Duration) -> LogThrottle {
        assert!(
            lines_per_window > 0 && !window.is_zero(),
            "a throttle that admits nothing"
        );
        LogThrottle {
            lines_per_window,
            window,
            state: Mutex::new(Window::default()),
        }
    }

    /// Whether a line may be logged at `now`: `Some(n)` if so, `n` being the lines
    /// suppressed since the last one admitted (for the admitted line to say), `None` if
    /// this one is suppressed.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = w
            .started
            .is_none_or(|started| now.saturating_duration_since(started) >= self.window);
        if expired {
            w.started = Some(now);
            w.lines = 0;
        }
        if w.lines >= self.lines_per_window {
            w.suppressed += 1;
            return None;
        }
        w.lines += 1;
        Some(std::mem::take(&mut w.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_few_lines_per_window_and_the_next_line_counts_the_rest() {
        let throttle = LogThrottle::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let admitted: Vec<_> = (0..100).map(|_| throttle.admit(t0)).collect();
        assert_eq!(&admitted[..3], &[Some(0), Some(0), Some(0)]);
        assert!(admitted[3..].iter().all(Option::is_none));
        // Still inside the window: suppressed.
        assert_eq!(throttle.admit(t0 + Duration::from_secs(9)), None);
        // A new window: the first line tells how many were left out.
        assert_eq!(throttle.admit(t0 + Duration::from_secs(10)), Some(98));
        assert_eq!(throttle.admit(t0 + Duration::from_secs(10)), Some(0));
    }
}
