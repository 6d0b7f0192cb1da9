//! Run a configured external command (identity check, health check, notifier) with a timeout.
//!
//! Invariants:
//! - Never through a shell: `argv[0]` is the program and the other elements reach it verbatim.
//! - The child leads its own process group. However it ends (exit, timeout, cancel), the whole
//!   group is sent SIGKILL before [`run`] returns, so no grandchild outlives the call to keep
//!   working or to hold our pipes open.
//! - The group is signalled while the child is exited but not yet reaped (`waitid` with
//!   `WNOWAIT`), so its id cannot have been reused by an unrelated process.
//! - stdout and stderr are drained concurrently; at most [`OUTPUT_LIMIT`] bytes of each are kept
//!   and the rest is read and dropped, so a chatty child never blocks on a full pipe.
//! - [`run`] returns within about the timeout plus [`READ_GRACE`]: a process that left the group
//!   (`setsid`) and still holds a pipe is abandoned with what it wrote so far, not waited for.
//! - Nothing here prints; an early return or a panic still kills the group and reaps the child.
//!
//! Being in its own group, the child does not get the terminal's Ctrl-C: the caller's interrupt
//! handler sets [`Spec::cancel`] instead.

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};

/// The most bytes of stdout, and separately of stderr, that an [`Outcome`] keeps.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// How long [`run`] still waits for output after the child's group is gone.
pub const READ_GRACE: Duration = Duration::from_secs(2);

/// The longest pause between two checks of the child, the timeout and the cancel flag.
const MAX_POLL: Duration = Duration::from_millis(20);

/// The longest line, in characters, that [`Outcome::excerpt`] shows.
const EXCERPT_LINE_CHARS: usize = 200;

/// One command to run: what, where, with which input, and for how long at most.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// The program then its arguments; never interpreted by a shell.
    pub argv: &'a [String],
    /// The repository root: the child's working directory, and the base of a relative program
    /// path that contains `/` (a bare name is looked up on `PATH`).
    pub cwd: &'a Path,
    /// Variables added to the inherited environment (less those [`withhold`] names).
    pub env: Vec<(String, String)>,
    /// Bytes written to the child's stdin, which is then closed; `None` gives it `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// After this long the process group is killed and the result is [`Ended::TimedOut`].
    pub timeout: Duration,
    /// Polled while waiting: once true, the process group is killed and the result is
    /// [`Ended::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// The most bytes of stdout kept ([`OUTPUT_LIMIT`] for commands whose output is only shown;
    /// more for a provider's response). stderr always keeps [`OUTPUT_LIMIT`].
    pub stdout_limit: usize,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself with this status.
    Exited(i32),
    /// A signal that we did not send killed it.
    Signalled(i32),
    /// It ran past [`Spec::timeout`] (the value held here) and was killed.
    TimedOut(Duration),
    /// [`Spec::cancel`] was set and it was killed.
    Cancelled,
}

/// What a finished command did and printed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ended: Ended,
    /// The first [`OUTPUT_LIMIT`] bytes it wrote to stdout.
    pub stdout: Vec<u8>,
    /// The first [`OUTPUT_LIMIT`] bytes it wrote to stderr.
    pub stderr: Vec<u8>,
    /// From start until the child was reaped.
    pub elapsed: Duration,
}

impl Outcome {
    /// True when the command exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.ended == Ended::Exited(0)
    }

    /// How it ended, to follow the command's name: "exited with status 3", "timed out after 2s".
    pub fn describe(&self) -> String {
        match self.ended {
            Ended::Exited(code) => format!("exited with status {code}"),
            Ended::Signalled(signal) => format!("was killed by signal {signal}"),
            Ended::TimedOut(after) => {
                format!("timed out after {}", humantime::format_duration(after))
            }
            Ended::Cancelled => "was interrupted".to_owned(),
        }
    }

    /// stdout as text (invalid UTF-8 replaced), without surrounding whitespace.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_owned()
    }

    /// For error messages: the last `max_lines` non-empty lines of stdout followed by stderr,
    /// each prefixed `stdout: ` or `stderr: `, cut to 200 characters, control characters replaced.
    pub fn excerpt(&self, max_lines: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, bytes) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            lines.extend(
                text.lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(|line| format!("{name}: {}", clip(line))),
            );
        }
        let skip = lines.len().saturating_sub(max_lines);
        lines.split_off(skip)
    }
}

/// A line made safe and short enough to show in a terminal.
fn clip(line: &str) -> String {
    let line = line.trim_end();
    let mut out: String = line
        .chars()
        .take(EXCERPT_LINE_CHARS)
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => char::REPLACEMENT_CHARACTER,
            c => c,
        })
        .collect();
    if line.chars().nth(EXCERPT_LINE_CHARS).is_some() {
        out.pop();
        out.push('…');
    }
    out
}

/// Why a command could not be run at all (how it ended is in [`Outcome`], not here).
#[derive(thiserror::Error, Debug)]
pub enum ProcessError {
    /// The program could not be started: not found, not executable, bad working directory.
    #[error("could not start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// The command has no program.
    #[error("the command is empty")]
    Empty,
    /// Waiting for the child, or starting a thread to feed or read it, failed.
    #[error("could not run `{program}`")]
    Io {
        program: String,
        #[source]
        source: io::Error,
    },
}

impl ProcessError {
    /// A suggestion for the user, when the cause makes one obvious.
    pub fn hint(&self) -> Option<String> {
        let ProcessError::Spawn { program, source } = self else {
            return None;
        };
        match source.kind() {
            io::ErrorKind::NotFound if program.contains('/') => Some(format!(
                "`{program}` does not exist; a relative path is taken from the repository root"
            )),
            io::ErrorKind::NotFound => Some(format!(
                "`{program}` is not on PATH; install it or give its path"
            )),
            io::ErrorKind::PermissionDenied => {
                Some(format!("`{program}` is not executable; try `chmod +x`"))
            }
            _ => None,
        }
    }
}

/// Variables no command inherits: those the configuration's `env:` secret references name.
static WITHHELD: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// From now on, no command [`run`] starts inherits these variables (secret values read from the
/// deployer's environment). There is no way to pass one through: a command that needs a secret
/// reads it from where the deployment put it (e.g. the target's resource file).
pub fn withhold(names: impl IntoIterator<Item = String>) {
    let mut list = WITHHELD.write().unwrap_or_else(PoisonError::into_inner);
    list.extend(names);
    list.sort();
    list.dedup();
}

fn withheld() -> std::sync::RwLockReadGuard<'static, Vec<String>> {
    WITHHELD.read().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the program of `argv` can be started, without starting it: it exists (looked up on
/// `PATH` when it has no `/`, else from `cwd`) as a regular file this process may execute.
/// The error is the one [`run`] would give, so that [`ProcessError::hint`] says what to do.
pub fn check_program(argv: &[String], cwd: &Path) -> Result<PathBuf, ProcessError> {
    let program = argv.first().ok_or(ProcessError::Empty)?;
    let spawn = |kind: io::ErrorKind| ProcessError::Spawn {
        program: program.clone(),
        source: io::Error::from(kind),
    };
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![resolve(program, cwd)]
    } else {
        let path = crate::sysenv::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| {
                if dir.as_os_str().is_empty() {
                    cwd.to_path_buf()
                } else {
                    dir
                }
            })
            .map(|dir| dir.join(program))
            .collect()
    };
    let mut found = false;
    for candidate in candidates {
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        found = true;
        if rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok() {
            return Ok(candidate);
        }
    }
    Err(spawn(if found {
        io::ErrorKind::PermissionDenied
    } else {
        io::ErrorKind::NotFound
    }))
}

/// The command of `spec`: never through a shell, withheld variables removed, its own process
/// group, stdout and stderr piped.
fn command(spec: &Spec<'_>, program: &str, args: &[String], stdin: Stdio) -> Command {
    let mut command = Command::new(resolve(program, spec.cwd));
    for name in withheld().iter() {
        command.env_remove(name);
    }
    command
        .args(args)
        .current_dir(spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    command
}

/// Run `spec` to completion, timeout or cancellation, and collect its output.
///
/// An error means the command could not be run; a command that ran and failed is an
/// [`Outcome`] whose [`Outcome::success`] is false.
pub fn run(spec: &Spec<'_>) -> Result<Outcome, ProcessError> {
    let (program, args) = spec.argv.split_first().ok_or(ProcessError::Empty)?;
    let io_error = |source| ProcessError::Io {
        program: program.clone(),
        source,
    };
    let stdin = match spec.stdin {
        Some(_) => Stdio::piped(),
        None => Stdio::null(),
    };
    let mut command = command(spec, program, args, stdin);

    let start = Instant::now();
    let child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    // From here on, dropping `running` (error or panic) kills the group and reaps the child.
    let mut running = Running {
        child,
        reaped: false,
    };

    if let (Some(input), Some(pipe)) = (&spec.stdin, running.child.stdin.take()) {
        let input = input.clone();
        // Not joined: a process that escaped the group could keep it blocked forever. A child
        // that exits without reading everything makes it fail with EPIPE (Rust ignores SIGPIPE),
        // which is the child's business.
        spawn("stdin", move || {
            let mut pipe = pipe;
            let _ = pipe.write_all(&input);
        })
        .map_err(io_error)?;
    }
    // Each reader holds a sender that is never used: the channel disconnects when both are done.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let stdout = capture(
        "stdout",
        running.child.stdout.take(),
        spec.stdout_limit,
        done_tx.clone(),
    )
    .map_err(io_error)?;
    let stderr =
        capture("stderr", running.child.stderr.take(), OUTPUT_LIMIT, done_tx).map_err(io_error)?;

    let deadline = start.checked_add(spec.timeout);
    let mut pause = Duration::from_millis(1);
    let killed = loop {
        if running.has_exited().map_err(io_error)? {
            break None;
        }
        if spec.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            break Some(Ended::Cancelled);
        }
        let now = Instant::now();
        let left = deadline.map_or(pause, |d| d.saturating_duration_since(now));
        if left.is_zero() {
            break Some(Ended::TimedOut(spec.timeout));
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(MAX_POLL);
    };
    // Also after a normal exit: stray background processes must not keep the pipes open.
    running.kill_group();
    let status = running.reap().map_err(io_error)?;
    let elapsed = start.elapsed();
    let ended = killed.unwrap_or_else(|| ended_by(status));

    // Nothing is ever sent: this returns when both readers are done or the grace is over.
    let _ = done_rx.recv_timeout(READ_GRACE);
    let stdout = std::mem::take(&mut *lock(&stdout));
    let stderr = std::mem::take(&mut *lock(&stderr));
    Ok(Outcome {
        ended,
        stdout,
        stderr,
        elapsed,
    })
}

/// The program to execute: a relative path with a `/` is taken from `cwd`, a bare name is left
/// for the `PATH` search.
fn resolve(program: &str, cwd: &Path) -> PathBuf {
    let path = Path::new(program);
    if program.contains('/') && path.is_relative() {
        cwd.join(path)
    } else {
        path.to_path_buf()
    }
}

/// How a child that ended by itself ended.
fn ended_by(status: ExitStatus) -> Ended {
    match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(signal)) => Ended::Signalled(signal),
        // Neither exited nor signalled is impossible for a reaped child; keep it visible.
        (None, None) => Ended::Exited(-1),
    }
}

/// Start a named helper thread.
fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name(format!("process-{name}"))
        .spawn(body)
        .map(drop)
}

/// Start a thread that drains `pipe` into the returned buffer, then drops `done`.
fn capture(
    name: &str,
    pipe: Option<impl Read + Send + 'static>,
    limit: usize,
    done: mpsc::Sender<()>,
) -> io::Result<Arc<Mutex<Vec<u8>>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    if let Some(pipe) = pipe {
        let buf = Arc::clone(&buf);
        spawn(name, move || {
            drain(pipe, &buf, limit);
            drop(done);
        })?;
    }
    Ok(buf)
}

/// Read `pipe` to its end, keeping the first `limit` bytes in `buf`.
fn drain(mut pipe: impl Read, buf: &Mutex<Vec<u8>>, limit: usize) {
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                let mut buf = lock(buf);
                let room = limit.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A command that keeps running while the caller talks to it over its stdin and stdout (an
/// `exec` provider's session). Its stderr is drained into a buffer that keeps the last
/// [`OUTPUT_LIMIT`] bytes. Dropping it kills the whole process group and reaps the child.
#[derive(Debug)]
pub struct Session {
    running: Running,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Set once stderr reached its end.
    stderr_done: Arc<AtomicBool>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("pid", &self.child.id())
            .finish()
    }
}

/// Start `spec` (its `stdin`, `timeout` and `cancel` are ignored) for a conversation: the
/// child's stdin and stdout, and the session that owns the child.
pub fn start(
    spec: &Spec<'_>,
) -> Result<(Session, std::process::ChildStdin, std::process::ChildStdout), ProcessError> {
    let (program, args) = spec.argv.split_first().ok_or(ProcessError::Empty)?;
    let mut child = command(spec, program, args, Stdio::piped())
        .spawn()
        .map_err(|source| ProcessError::Spawn {
            program: program.clone(),
            source,
        })?;
    let (stdin, stdout, pipe) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let running = Running {
        child,
        reaped: false,
    };
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let stderr_done = Arc::new(AtomicBool::new(false));
    let io_error = |source| ProcessError::Io {
        program: program.clone(),
        source,
    };
    if let Some(pipe) = pipe {
        let (buf, done) = (Arc::clone(&stderr), Arc::clone(&stderr_done));
        spawn("stderr", move || {
            drain_tail(pipe, &buf, OUTPUT_LIMIT);
            done.store(true, Ordering::Release);
        })
        .map_err(io_error)?;
    }
    let missing = || io_error(io::Error::other("the child has no pipe"));
    let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(missing());
    };
    let session = Session {
        running,
        stderr,
        stderr_done,
    };
    Ok((session, stdin, stdout))
}

impl Session {
    /// The last bytes it wrote to stderr so far.
    pub fn stderr(&self) -> Vec<u8> {
        lock(&self.stderr).clone()
    }

    /// How it ended, if it has exited within `wait` (polled). Once it has, its group is killed
    /// and its stderr read to the end (for at most [`READ_GRACE`]), so that its last words are
    /// in [`Session::stderr`].
    pub fn ended_within(&mut self, wait: Duration) -> Option<Ended> {
        let deadline = Instant::now() + wait;
        loop {
            if self.running.has_exited().unwrap_or(true) {
                self.running.kill_group();
                let ended = self.running.reap().ok().map(ended_by);
                let read_by = Instant::now() + READ_GRACE;
                while !self.stderr_done.load(Ordering::Acquire) && Instant::now() < read_by {
                    thread::sleep(MAX_POLL);
                }
                return ended;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(MAX_POLL);
        }
    }
}

/// Read `pipe` to its end, keeping its last `limit` bytes in `buf`.
fn drain_tail(mut pipe: impl Read, buf: &Mutex<Vec<u8>>, limit: usize) {
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                let mut buf = lock(buf);
                buf.extend_from_slice(&chunk[..n]);
                let excess = buf.len().saturating_sub(limit);
                buf.drain(..excess);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The buffer even if a reader panicked while holding it (its bytes are still valid).
fn lock(buf: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    buf.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A started child and its process group, killed and reaped on drop unless already reaped.
struct Running {
    child: Child,
    reaped: bool,
}

impl Running {
    /// True once the child has exited. It stays unreaped, so its pid and group id stay taken.
    fn has_exited(&self) -> io::Result<bool> {
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        match waitid(WaitId::Pid(Pid::from_child(&self.child)), options) {
            Ok(status) => Ok(status.is_some()),
            Err(Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// SIGKILL every process in the child's group. Errors are ignored: ESRCH means none is left,
    /// and nothing better can be done about a member we may not signal.
    fn kill_group(&self) {
        let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
    }

    /// Wait for the child and release its pid. Call [`Running::kill_group`] first.
    fn reap(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

/// `argv` as one line for messages, quoted like a POSIX shell would need it:
/// `aws sts get-caller-identity --query Account`, `sh -c 'echo "$FOO"'`.
pub fn display_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(arg: &str) -> Cow<'_, str> {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        Cow::Borrowed(arg)
    } else {
        Cow::Owned(format!("'{}'", arg.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn spec<'a>(argv: &'a [String], cwd: &'a Path) -> Spec<'a> {
        Spec {
            argv,
            cwd,
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(60),
            cancel: None,
            stdout_limit: OUTPUT_LIMIT,
        }
    }

    fn run_ok(args: &[&str]) -> Outcome {
        let argv = strings(args);
        run(&spec(&argv, Path::new("/"))).unwrap()
    }

    /// True once `pid` has been killed (gone, or a zombie waiting for its new parent).
    #[cfg(target_os = "linux")]
    fn dead(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    /// Waits (up to 30 s, which no correct run comes near) for the process to die.
    #[cfg(target_os = "linux")]
    fn dies(pid: &str) -> bool {
        (0..3000).any(|_| {
            let gone = dead(pid);
            if !gone {
                thread::sleep(Duration::from_millis(10));
            }
            gone
        })
    }

    #[test]
    fn exit_status() {
        assert_eq!(run_ok(&["true"]).ended, Ended::Exited(0));
        assert!(run_ok(&["true"]).success());
        assert_eq!(run_ok(&["false"]).ended, Ended::Exited(1));
        let three = run_ok(&["sh", "-c", "exit 3"]);
        assert_eq!(three.ended, Ended::Exited(3));
        assert!(!three.success());
        assert_eq!(three.describe(), "exited with status 3");
    }

    #[test]
    fn signal() {
        let out = run_ok(&["sh", "-c", "kill -9 $$"]);
        assert_eq!(out.ended, Ended::Signalled(9));
        assert_eq!(out.describe(), "was killed by signal 9");
    }

    #[test]
    fn stdin_round_trip() {
        let argv = strings(&["cat"]);
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut spec = spec(&argv, Path::new("/"));
        spec.stdin = Some(input.clone());
        let out = run(&spec).unwrap();
        assert_eq!(out.ended, Ended::Exited(0));
        // More than the limit went in; the first OUTPUT_LIMIT bytes came back.
        assert_eq!(out.stdout, input[..OUTPUT_LIMIT]);
    }

    #[test]
    fn stdin_is_null_by_default() {
        let out = run_ok(&["cat"]);
        assert_eq!(out.ended, Ended::Exited(0));
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn env_and_stdout_text() {
        let argv = strings(&["sh", "-c", r#"printf '  %s\n' "$FOO""#]);
        let mut spec = spec(&argv, Path::new("/"));
        spec.env.push(("FOO".to_owned(), "bar baz".to_owned()));
        let out = run(&spec).unwrap();
        assert_eq!(out.ended, Ended::Exited(0));
        assert_eq!(out.stdout_text(), "bar baz");
    }

    #[test]
    fn timeout_kills_the_group() {
        // The background sleep would hold stdout open for 30 s if only `sh` were killed.
        let argv = strings(&["sh", "-c", "sleep 120 & echo $!; sleep 120"]);
        let mut spec = spec(&argv, Path::new("/"));
        spec.timeout = Duration::from_millis(200);
        let out = run(&spec).unwrap();
        assert_eq!(out.ended, Ended::TimedOut(Duration::from_millis(200)));
        assert_eq!(out.describe(), "timed out after 200ms");
        #[cfg(target_os = "linux")]
        assert!(
            dies(&out.stdout_text()),
            "grandchild {} survived",
            out.stdout_text()
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn normal_exit_kills_stray_background_processes() {
        let out = run_ok(&["sh", "-c", "sleep 120 & echo $!"]);
        assert_eq!(out.ended, Ended::Exited(0));
        assert!(
            dies(&out.stdout_text()),
            "background process {} survived",
            out.stdout_text()
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_process_that_left_the_group_is_not_waited_for() {
        // `head` returns once the escaped process (its own session, so not killed with the
        // group) has printed; it keeps our stderr open for 30 s after `sh` exits.
        let out = run_ok(&[
            "sh",
            "-c",
            "(setsid sh -c 'echo escaped; exec sleep 30' &) | head -n 1",
        ]);
        assert_eq!(out.ended, Ended::Exited(0));
        assert_eq!(out.stdout_text(), "escaped");
    }

    #[test]
    fn cancel_from_another_thread() {
        let cancel = AtomicBool::new(false);
        let argv = strings(&["sleep", "30"]);
        let mut spec = spec(&argv, Path::new("/"));
        spec.cancel = Some(&cancel);
        let out = thread::scope(|s| {
            s.spawn(|| {
                thread::sleep(Duration::from_millis(100));
                cancel.store(true, Ordering::Relaxed);
            });
            run(&spec).unwrap()
        });
        assert_eq!(out.ended, Ended::Cancelled);
        assert_eq!(out.describe(), "was interrupted");
    }

    #[test]
    fn output_is_capped_and_drained() {
        let out = run_ok(&[
            "sh",
            "-c",
            "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2",
        ]);
        assert_eq!(out.ended, Ended::Exited(0));
        assert_eq!(out.stdout.len(), OUTPUT_LIMIT);
        assert_eq!(out.stderr.len(), OUTPUT_LIMIT);
    }

    #[test]
    fn relative_program_is_taken_from_cwd() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script.sh");
        std::fs::write(&script, "#!/bin/sh\necho \"ran in $(pwd)\"\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().canonicalize().unwrap();
        let argv = strings(&["./script.sh"]);
        let spec = spec(&argv, &root);
        // Another test's fork can briefly hold the script open for writing (ETXTBSY).
        let out = (0..50)
            .find_map(|_| match run(&spec) {
                Err(ProcessError::Spawn { source, .. })
                    if source.raw_os_error() == Some(Errno::TXTBSY.raw_os_error()) =>
                {
                    thread::sleep(Duration::from_millis(20));
                    None
                }
                other => Some(other),
            })
            .unwrap()
            .unwrap();
        assert_eq!(out.ended, Ended::Exited(0));
        assert_eq!(out.stdout_text(), format!("ran in {}", root.display()));
    }

    #[test]
    fn missing_program_is_named() {
        let argv = strings(&["envlock-test-no-such-program", "--version"]);
        let err = run(&spec(&argv, Path::new("/"))).unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "could not start `envlock-test-no-such-program`"
        );
        assert!(err.hint().unwrap().contains("PATH"));

        let argv = strings(&["./no-such-script"]);
        let err = run(&spec(&argv, Path::new("/"))).unwrap_err();
        assert_eq!(err.to_string(), "could not start `./no-such-script`");
        assert!(err.hint().unwrap().contains("repository root"));
    }

    #[test]
    fn empty_argv() {
        let err = run(&spec(&[], Path::new("/"))).unwrap_err();
        assert!(matches!(err, ProcessError::Empty));
    }

    #[test]
    fn excerpt_keeps_the_last_lines() {
        let out = Outcome {
            ended: Ended::Exited(1),
            stdout: b"one\n\ntwo\n".to_vec(),
            stderr: format!("three\n  \r\nred \x1b[31m\tred\n{}\n", "x".repeat(300)).into_bytes(),
            elapsed: Duration::ZERO,
        };
        assert_eq!(
            out.excerpt(3),
            [
                "stderr: three".to_owned(),
                "stderr: red \u{fffd}[31m red".to_owned(),
                format!("stderr: {}…", "x".repeat(199)),
            ]
        );
        assert_eq!(out.excerpt(10)[..2], ["stdout: one", "stdout: two"]);
        assert_eq!(out.excerpt(10).len(), 5);
        assert!(out.excerpt(0).is_empty());
    }

    #[test]
    fn display_argv_quotes_like_a_shell() {
        assert_eq!(
            display_argv(&strings(&[
                "aws",
                "sts",
                "get-caller-identity",
                "--query",
                "Account"
            ])),
            "aws sts get-caller-identity --query Account"
        );
        assert_eq!(
            display_argv(&strings(&["sh", "-c", r#"printf %s "$FOO""#, "it's", ""])),
            r#"sh -c 'printf %s "$FOO"' 'it'\''s' ''"#
        );
    }
}
