//! `nexus run`'s live progress: one status line on standard error, redrawn as the execution's
//! events arrive (ExecutePatternStream) and ten times a second, cleared when it ends; then the
//! same timeline as without it. On by default when standard error is a terminal (and not with
//! `--json`); `--progress always|never` overrides.

use std::{io::Write as _, time::Instant};

use nexus_core::pb;

/// Spinner frames.
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// Longest status line drawn (characters): terminals are at least this wide.
const WIDTH: usize = 78;

/// What the line shows: the steps done (with their mark) and the ones running.
pub struct Progress {
    started: Instant,
    pattern: String,
    done: Vec<(char, String)>,
    running: Vec<String>,
    frame: usize,
}

impl Progress {
    pub fn new(pattern: &str) -> Self {
        Self { started: Instant::now(), pattern: pattern.to_string(), done: Vec::new(), running: Vec::new(), frame: 0 }
    }

    /// Takes an event into account.
    pub fn apply(&mut self, e: &pb::ExecutionEvent) {
        use pb::execution_event::Event as E;
        let finish = |p: &mut Self, id: &str, mark: char| {
            p.running.retain(|r| r != id);
            p.done.push((mark, id.to_string()));
        };
        match e.event.as_ref() {
            Some(E::Started(s)) => self.pattern = format!("{}@{}", s.pattern_name, s.pattern_version),
            Some(E::StepStarted(s)) if !self.running.contains(&s.step_id) => self.running.push(s.step_id.clone()),
            Some(E::StepSucceeded(s)) => finish(self, &s.step_id, '✓'),
            Some(E::StepFailed(s)) => finish(self, &s.step_id, '✗'),
            Some(E::StepSkipped(s)) => finish(self, &s.step_id, '-'),
            Some(E::StepCompensated(s)) => finish(self, &s.step_id, '↶'),
            _ => {}
        }
    }

    /// The status line (no control characters), at most [`WIDTH`] characters.
    pub fn line(&mut self) -> String {
        self.frame = (self.frame + 1) % FRAMES.len();
        let elapsed = self.started.elapsed().as_secs_f64();
        let head = format!("{} {}  {} done", FRAMES[self.frame], self.pattern, self.done.len());
        let tail = format!("  {elapsed:.1}s");
        let mut parts: Vec<String> = self.done.iter().map(|(m, id)| format!("{m} {id}")).collect();
        parts.extend(self.running.iter().map(|id| format!("▸ {id}")));
        // The most recent steps are the interesting ones: drop the oldest until it fits.
        let budget = WIDTH.saturating_sub(head.chars().count() + tail.chars().count() + 2);
        let mut shown: Vec<&str> = Vec::new();
        let mut used = 0;
        for p in parts.iter().rev() {
            let n = p.chars().count() + 2;
            if used + n > budget {
                break;
            }
            used += n;
            shown.push(p);
        }
        shown.reverse();
        let hidden = parts.len() - shown.len();
        let middle = match (hidden, shown.is_empty()) {
            (0, true) => String::new(),
            (0, false) => format!("  {}", shown.join("  ")),
            (_, _) => {
                format!("  …{}", if shown.is_empty() { String::new() } else { format!("  {}", shown.join("  ")) })
            }
        };
        let line = format!("{head}{middle}{tail}");
        crate::render::terminal_safe(&line).chars().take(WIDTH).collect()
    }
}

/// Draws the line over the previous one.
pub fn draw(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}

/// Clears the line.
pub fn clear() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(e: pb::execution_event::Event) -> pb::ExecutionEvent {
        pb::ExecutionEvent { execution_id: "x".into(), event: Some(e), ..Default::default() }
    }

    fn step(id: &str) -> pb::StepEvent {
        pb::StepEvent { step_id: id.into(), ..Default::default() }
    }

    #[test]
    fn the_line_shows_steps_done_and_running_and_fits() {
        use pb::execution_event::Event as E;
        let mut p = Progress::new("user_creation");
        p.apply(&event(E::Started(pb::ExecutionStarted {
            pattern_name: "user_creation".into(),
            pattern_version: "1.0.0".into(),
        })));
        p.apply(&event(E::StepStarted(step("user"))));
        let line = p.line();
        assert!(line.contains("user_creation@1.0.0  0 done  ▸ user"), "{line}");
        p.apply(&event(E::StepSucceeded(step("user"))));
        p.apply(&event(E::StepStarted(step("notify"))));
        let line = p.line();
        assert!(line.contains("1 done  ✓ user  ▸ notify"), "{line}");
        for i in 0..40 {
            p.apply(&event(E::StepSucceeded(step(&format!("a_rather_long_step_name_{i}")))));
        }
        let line = p.line();
        assert!(line.chars().count() <= WIDTH && line.contains("41 done  …") && line.contains("▸ notify"), "{line}");
        // A step id cannot move the cursor.
        p.apply(&event(E::StepStarted(step("evil\x1b[2J"))));
        assert!(!p.line().contains('\x1b'));
    }
}
