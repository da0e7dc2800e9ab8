//! The readable record of a run: elections, faults, commits, client operations.

/// Collects trace lines when enabled; costs nothing when not (lines are built lazily).
#[derive(Debug, Default)]
pub struct Trace {
    lines: Option<Vec<String>>,
    /// Lines kept at most; a run that produces more keeps its beginning and says so.
    lines_max: usize,
    dropped: u64,
}

impl Trace {
    /// A trace that records (`enabled`) or discards everything.
    pub fn new(enabled: bool) -> Trace {
        Trace {
            lines: enabled.then(Vec::new),
            lines_max: 2_000_000,
            dropped: 0,
        }
    }

    /// Whether lines are recorded.
    pub fn is_enabled(&self) -> bool {
        self.lines.is_some()
    }

    /// Records one line at simulated time `now_ticks`; `line` runs only when enabled.
    pub fn log(&mut self, now_ticks: u64, line: impl FnOnce() -> String) {
        if let Some(lines) = self.lines.as_mut() {
            if lines.len() >= self.lines_max {
                self.dropped += 1;
                return;
            }
            lines.push(format!("[{now_ticks:>7}] {}", line()));
        }
    }

    /// The recorded lines, plus a note of any that did not fit.
    pub fn into_lines(self) -> Vec<String> {
        let mut lines = self.lines.unwrap_or_default();
        if self.dropped > 0 {
            lines.push(format!("... {} more lines not recorded", self.dropped));
        }
        lines
    }
}
