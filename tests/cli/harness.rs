//! A real git repository in a temporary directory, and a way to run the real `deploy` binary in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A configuration repository made with the real `git` command.
pub struct Repo {
    pub dir: TempDir,
}

/// The result of one `deploy` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Assert the exit code, showing everything on failure.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout\n{}",
            self.stdout
        );
        self
    }
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let dest = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_tree(&entry.path(), &dest, skip);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

impl Repo {
    /// An empty repository on branch `main`.
    pub fn empty() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("envlock-test")
            .tempdir()
            .unwrap();
        let repo = Repo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    /// A repository holding the base fixture (validation + prod + a layer + a schema),
    /// committed, with the protected `prod`'s target adopted (`deploy adopt --target prod
    /// --yes`), as an operator does once before its first deployment (`adopt.rs`).
    pub fn base() -> Repo {
        let repo = Repo::base_unadopted();
        repo.adopt("prod");
        repo
    }

    /// The base fixture, committed; no target adopted yet.
    pub fn base_unadopted() -> Repo {
        let repo = Repo::empty();
        copy_tree(&fixtures().join("base"), repo.path(), &[]);
        repo.commit("base configuration");
        repo
    }

    /// [`Repo::ungated_unadopted`] with `prod`'s target adopted, as in [`Repo::base`].
    pub fn ungated() -> Repo {
        let repo = Repo::ungated_unadopted();
        repo.adopt("prod");
        repo
    }

    /// Run the real `deploy adopt --target ENV --yes`, which must succeed: the explicit
    /// adoption a protected environment needs before its first deployment.
    #[track_caller]
    pub fn adopt(&self, env: &str) -> &Self {
        self.deploy(&["adopt", "--target", env, "--yes"])
            .code(0)
            .stderr_has("Adopted");
        self
    }

    /// The base fixture without prod's promotion gate (`after = ["validation"]`), so that a
    /// test can deploy prod directly; the gate has its own tests (`log.rs`). No target is
    /// adopted yet.
    pub fn ungated_unadopted() -> Repo {
        let repo = Repo::empty();
        copy_tree(&fixtures().join("base"), repo.path(), &[]);
        let prod = repo.read("environments/prod.toml");
        assert!(prod.contains("after = [\"validation\"]\n"));
        repo.write(
            "environments/prod.toml",
            // A comment in its place keeps line numbers (messages cite them).
            prod.replace(
                "after = [\"validation\"]\n",
                "# no promotion gate in this test\n",
            ),
        );
        repo.commit("base configuration, prod without its promotion gate");
        repo
    }

    /// The base fixture with `overlay`'s files on top, committed.
    pub fn with_overlay(overlay: &Path) -> Repo {
        let repo = Repo::empty();
        copy_tree(&fixtures().join("base"), repo.path(), &[]);
        copy_tree(overlay, repo.path(), &["expected.stderr"]);
        repo.commit("fixture");
        repo
    }

    /// A bare repository on branch `main`: a real "remote" to push to and clone from.
    pub fn bare() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("envlock-remote")
            .tempdir()
            .unwrap();
        let repo = Repo { dir };
        repo.git(&["init", "-q", "--bare", "-b", "main"]);
        repo
    }

    /// A clone of `remote` made with `git clone` (its `origin`), on `main`.
    pub fn clone_of(remote: &Repo) -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("envlock-clone")
            .tempdir()
            .unwrap();
        let repo = Repo { dir };
        repo.git(&["clone", "-q", remote.path().to_str().unwrap(), "."]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> &Self {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    /// Replace text in a file; every `from` must be present, so a test cannot silently edit
    /// nothing when the fixture changes.
    #[track_caller]
    pub fn edit(&self, rel: &str, replacements: &[(&str, &str)]) -> &Self {
        let mut text = self.read(rel);
        for (from, to) in replacements {
            assert!(text.contains(from), "{rel} does not contain {from:?}");
            text = text.replace(from, to);
        }
        self.write(rel, text)
    }

    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.path().join(rel)).unwrap();
        self
    }

    /// Run git with a fixed identity and clock, so commit ids are reproducible.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.path())
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stage everything and commit; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Run `deploy -C <repo> ARGS...` with no terminal and no colour.
    pub fn deploy(&self, args: &[&str]) -> Run {
        deploy_in(self.path(), args)
    }
}

/// Run the real binary in `dir`.
pub fn deploy_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_deploy"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("deploy runs");
    Run::from(out)
}

impl Repo {
    /// Run `deploy` with extra environment variables (test-only ones such as
    /// `ENVLOCK_FAILPOINT`, or what a health script reads).
    pub fn deploy_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let out = deploy_command(self.path(), args, envs)
            .output()
            .expect("deploy runs");
        Run::from(out)
    }

    /// Run `deploy` under `umask` (set by `sh`, which then execs the real binary).
    pub fn deploy_umask(&self, umask: u32, args: &[&str]) -> Run {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask:03o} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_deploy"))
            .arg("-C")
            .arg(self.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("CLICOLOR_FORCE")
            .env_remove("ENVLOCK_FAILPOINT")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("deploy runs");
        Run::from(out)
    }

    /// Start `deploy` in the background with stderr piped (read it with [`wait_for_line`]).
    pub fn spawn_deploy(&self, args: &[&str], envs: &[(&str, &str)]) -> std::process::Child {
        deploy_command(self.path(), args, envs)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("deploy starts")
    }
}

/// Run `deploy -C dir ARGS` with its stdout a real pipe whose reader reads at most `keep`
/// bytes and then closes it, as `deploy ... | head -c KEEP` does. Returns what was read in
/// `stdout`.
pub fn deploy_into_short_reader(dir: &Path, args: &[&str], keep: usize) -> Run {
    use std::io::Read;
    let mut child = deploy_command(dir, args, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("deploy starts");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut read = vec![0u8; keep];
    let mut got = 0;
    while got < keep {
        match stdout.read(&mut read[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    drop(stdout);
    let out = child.wait_with_output().expect("deploy ends");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&read[..got]).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn deploy_command(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploy"));
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("ENVLOCK_FAILPOINT")
        .stdin(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Read `child`'s stderr until a line contains `needle`; returns everything read. Panics if
/// the child closes stderr (exits) first.
#[track_caller]
pub fn wait_for_line(child: &mut std::process::Child, needle: &str) -> String {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.as_mut().expect("stderr is piped");
    let mut reader = BufReader::new(stderr);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read stderr");
        assert!(
            n > 0,
            "deploy exited before printing {needle:?}; stderr:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains(needle) {
            return seen;
        }
    }
}

/// Everything under `dir`, without following symlinks: relative path -> `dir`, `file <bytes>`
/// or `link -> <target>`. A missing `dir` is an empty map. Two equal snapshots mean the tree
/// is byte-for-byte the same.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(base).unwrap().display().to_string();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                let dest = std::fs::read_link(&path).unwrap();
                out.insert(rel, format!("link -> {}", dest.display()));
            } else if kind.is_dir() {
                out.insert(rel, "dir".into());
                walk(base, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(rel, format!("file {}", String::from_utf8_lossy(&bytes)));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    if dir.symlink_metadata().is_ok() {
        out.insert(".".into(), "exists".into());
    }
    walk(dir, dir, &mut out);
    out
}

/// Poll until `path` exists; fails if `child` exits first.
pub fn wait_for_file(child: &mut std::process::Child, path: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!(
                "deploy exited ({status}) before {} appeared\n{stderr}",
                path.display()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A `deploy` started in the background that stops at failpoint `point` (test builds have the
/// `failpoints` feature); with `resume`, it goes on once that file exists. Its stderr goes to a
/// temporary file, read with [`Paused::stderr`].
pub struct Paused {
    child: std::process::Child,
    err: tempfile::NamedTempFile,
}

impl Paused {
    /// Start `deploy -C dir ARGS` with `env` added and wait until it reaches `point`.
    pub fn start(
        dir: &Path,
        args: &[&str],
        point: &str,
        resume: Option<&Path>,
        env: &[(String, String)],
    ) -> Paused {
        let err = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = deploy_command(dir, args, &[]);
        cmd.env("ENVLOCK_FAILPOINT", point)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(err.reopen().unwrap());
        if let Some(r) = resume {
            cmd.env("ENVLOCK_FAILPOINT_RESUME", r);
        }
        let mut paused = Paused {
            child: cmd.spawn().unwrap(),
            err,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !paused
            .stderr()
            .contains(&format!("failpoint {point} reached"))
        {
            if let Some(status) = paused.child.try_wait().unwrap() {
                panic!(
                    "deploy exited ({status}) before {point}:\n{}",
                    paused.stderr()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deploy never reached {point}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        paused
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.err.path()).unwrap_or_default()
    }

    /// Wait for it to exit; its exit code and stderr.
    pub fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap();
        (status.code().unwrap_or(-1), self.stderr())
    }

    /// SIGKILL it (no chance to release or clean up anything) and reap it.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// `(outcome, reason)` of every record of `env`'s deployment log, oldest first, after checking
/// that `deploy log verify` passes.
#[track_caller]
pub fn log_outcomes(repo: &Repo, env: &str) -> Vec<(String, String)> {
    repo.deploy(&["log", "verify", "--target", env]).code(0);
    let run = repo.deploy(&["log", "--target", env, "--format", "json"]);
    run.code(0);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let mut out: Vec<(u64, String, String)> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, o, r)| (o, r)).collect()
}

/// A small tmpfs mounted on a temporary directory (unmounted on drop), to fill a disk for
/// real. `None` (with the reason printed) where mounting is not allowed.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("envlock-tmpfs")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            Ok(o) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs (root is needed): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a file of zeros until the filesystem is full, then give back `pages` pages of
    /// 4 KiB; returns its path.
    pub fn fill(&self, pages: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = [0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        // Whatever is left below one page.
        while f.write_all(&chunk[..1]).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len((len / 4096).saturating_sub(pages) * 4096)
            .unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A loopback port nothing listens on now, never handed out before in this test process: the
/// kernel may give a port just released to the next `bind(0)`, and two servers started by
/// tests running at once would then collide ("address already in use").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Fail (never skip) unless `program arg` runs and succeeds: `why` says what needs it and how
/// to install it.
pub fn require_tool(program: &str, arg: &str, why: &str) {
    let ok = std::process::Command::new(program)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "`{program}` is not installed: {why}");
}
