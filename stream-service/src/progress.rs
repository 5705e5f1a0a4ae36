//! Progress of long work (making the demo, ingesting a video, warming the cache): a bar with rate
//! and time left on a terminal (indicatif), plain lines every few seconds otherwise (on stderr,
//! or in the service's log), nothing when hidden.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Seconds between plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// How long work reports its progress.
pub struct Progress {
    what: String,
    /// What is counted ("frames", "segments").
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    shown: Shown,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").finish_non_exhaustive()
    }
}

enum Shown {
    Bar(ProgressBar),
    Lines { last: Instant },
    Log { last: Instant },
    Hidden,
}

impl Progress {
    /// On stderr: a bar when it is a terminal, lines when not. `total` 0 means unknown.
    pub fn on_stderr(what: &str, total: u64) -> Self {
        let shown = if std::io::stderr().is_terminal() {
            let bar = if total > 0 {
                ProgressBar::new(total)
            } else {
                ProgressBar::new_spinner()
            };
            let style = ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} frames, {per_sec}, {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(what.to_string());
            Shown::Bar(bar)
        } else {
            Shown::Lines {
                last: Instant::now(),
            }
        };
        Self::with(what, total, shown)
    }

    /// As lines in the log (tracing, at info) every few seconds; for work inside a service.
    pub fn in_log(what: &str, total: u64, unit: &'static str) -> Self {
        let mut progress = Self::with(
            what,
            total,
            Shown::Log {
                last: Instant::now(),
            },
        );
        progress.unit = unit;
        progress
    }

    /// Reports nothing (library callers, tests).
    pub fn hidden() -> Self {
        Self::with("", 0, Shown::Hidden)
    }

    fn with(what: &str, total: u64, shown: Shown) -> Self {
        Self {
            what: what.to_string(),
            unit: "frames",
            total,
            done: 0,
            started: Instant::now(),
            shown,
        }
    }

    /// `n` more frames done.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        match &mut self.shown {
            Shown::Bar(bar) => bar.inc(n),
            Shown::Lines { last } if last.elapsed() >= LINE_EVERY => {
                *last = Instant::now();
                eprintln!("{}", self.line());
            }
            Shown::Log { last } if last.elapsed() >= LINE_EVERY => {
                *last = Instant::now();
                tracing::info!("{}", self.line());
            }
            _ => {}
        }
    }

    /// Whether everything counted is done.
    pub fn is_done(&self) -> bool {
        self.total > 0 && self.done >= self.total
    }

    /// One line: done of total, rate, and time left.
    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        if self.total == 0 || rate <= 0.0 {
            let (what, done, unit) = (&self.what, self.done, self.unit);
            return format!("{what}: {done} {unit}, {rate:.0} {unit}/s");
        }
        let left = self.total.saturating_sub(self.done) as f64 / rate;
        let unit = self.unit;
        format!(
            "{}: {}/{} {unit} ({:.0}%), {rate:.1} {unit}/s, {left:.0} s left",
            self.what,
            self.done,
            self.total,
            100.0 * self.done as f64 / self.total as f64
        )
    }

    fn summary(&self) -> String {
        format!(
            "{}: {} {} in {:.1} s",
            self.what,
            self.done,
            self.unit,
            self.started.elapsed().as_secs_f64()
        )
    }

    /// Ends the report (the bar is cleared; a last line says how long it took).
    pub fn finish(self) {
        match self.shown {
            Shown::Bar(bar) => bar.finish_and_clear(),
            Shown::Lines { .. } => eprintln!("{}", self.summary()),
            Shown::Log { .. } => tracing::info!("{}", self.summary()),
            Shown::Hidden => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gives_share_rate_and_time_left() {
        let mut p = Progress::with("make-demo", 300, Shown::Hidden);
        p.started = Instant::now() - Duration::from_secs(2);
        p.advance(100);
        let line = p.line();
        assert!(
            line.starts_with("make-demo: 100/300 frames (33%), "),
            "{line}"
        );
        assert!(line.contains("frames/s"), "{line}");
        assert!(line.ends_with("s left"), "{line}");
        let unknown = Progress::with("ingest", 0, Shown::Hidden);
        assert!(unknown.line().starts_with("ingest: 0 frames"));
    }
}
