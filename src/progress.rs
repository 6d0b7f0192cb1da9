//! Progress of long waits (a health check's attempts, a provider, etcd, a large apply): a trait
//! the core calls and the CLI implements ([`crate::output::Printer`] with `indicatif` on a
//! terminal, plain lines otherwise), as uv's `Reporter`. The core never prints.

use std::time::Duration;

/// A wait that may take a while.
#[derive(Debug, Clone)]
pub struct Task {
    /// What is being waited for, e.g. "health check of generation 3 (`curl -fsS …`)".
    pub what: String,
    /// How many attempts it makes (0: one wait, not a series of attempts).
    pub attempts: u32,
    /// The longest it can take, when known.
    pub limit: Option<Duration>,
    /// What Ctrl-C does now, e.g. "Ctrl-C stops the check and rolls back".
    pub ctrl_c: String,
    /// Shown last, where a narrow terminal may cut it: the command that runs, if any.
    pub detail: Option<String>,
}

/// Told about long waits by the core.
pub trait Progress: Sync {
    /// `task` begins.
    fn start(&self, task: Task);
    /// Attempt `n` of the task begins, with at most `left` to go; `previous` says how the
    /// attempt before ended.
    fn attempt(&self, n: u32, left: Duration, previous: Option<&str>);
    /// The task ended (whatever the outcome).
    fn finish(&self);
}

/// Shows nothing (unit tests, library callers without a terminal).
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: Task) {}
    fn attempt(&self, _: u32, _: Duration, _: Option<&str>) {}
    fn finish(&self) {}
}

/// Run `f` as `task`: started before, finished after, whatever `f` returns.
pub fn during<T>(progress: &dyn Progress, task: Task, f: impl FnOnce() -> T) -> T {
    progress.start(task);
    let out = f();
    progress.finish();
    out
}

/// `1m8s`, `12s`, `800ms`: a duration at the precision a person waiting needs.
pub fn short(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations_read_like_people_say_them() {
        assert_eq!(short(Duration::from_millis(800)), "800ms");
        assert_eq!(short(Duration::from_secs(12)), "12s");
        assert_eq!(short(Duration::from_secs(68)), "1m8s");
        assert_eq!(short(Duration::from_secs(120)), "2m");
    }
}
