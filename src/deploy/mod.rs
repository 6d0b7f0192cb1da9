//! The deployment itself, above the [`Target`] trait: the live side of the environment lock,
//! the plan, the confirmation, the journalled apply, the health check, the automatic rollback,
//! the notifier, `status` and `rollback`. Shared by every target kind.
//!
//! Invariants:
//! - nothing is read from a target for a diff, and nothing is written, before its stamp and the
//!   `[identity] command` both say this environment's account ([`Deployment::verify_owner`]);
//! - every write happens under the target's lock, after a journal entry that says what is about
//!   to happen, so a crash at any instant is found and resolved by the next run ([`journal`]);
//! - a generation that fails its health check never stays live: the previous one is made live
//!   again and the command exits 4.

pub mod apply;
pub mod gate;
pub mod journal;
pub mod saved;
pub mod status;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::config::{Environment, TargetKind};
use crate::error::Failure;
use crate::output::{Printer, style};
use crate::plan::{Action, Plan};
use crate::process::{self, Spec};
use crate::repo::{CommitInfo, Repo};
use crate::target::{
    DirTarget, GenerationId, Holder, LockGuard, Stamp, StampState, Target, TargetError,
};

/// One deployment's context: the environment at one commit and its target.
pub struct Deployment<'a> {
    pub env: &'a Environment,
    pub commit: &'a CommitInfo,
    /// The repository's working tree: commands run here, relative paths start here.
    pub root: PathBuf,
    pub printer: &'a Printer,
    pub target: Box<dyn Target>,
    /// Set by SIGINT/SIGTERM once the deployment has started writing (see [`Self::arm_interrupts`]).
    pub interrupted: Arc<AtomicBool>,
    /// The environments of `after` (the promotion gate), resolved at the same commit.
    pub after: Vec<&'a Environment>,
    /// The checksum of the saved plan being applied (`deploy apply --plan`), for the log.
    pub plan_sha256: Option<String>,
}

/// The target implementation for an environment's `[target]`.
pub fn open_target(env: &Environment) -> Result<Box<dyn Target>> {
    match &env.target.kind {
        TargetKind::Dir { resolved, .. } => Ok(Box::new(DirTarget::new(resolved.clone()))),
        TargetKind::Etcd { .. } => open_etcd(env),
        TargetKind::Exec {
            command,
            options,
            state_resolved,
            state_display,
            timeout,
            root,
            ..
        } => Ok(Box::new(crate::target::ExecTarget::new(
            crate::target::exec::provider::Provider {
                argv: command.clone(),
                root: root.clone(),
                options: options.clone(),
                environment: env.name.clone(),
                account: env.account.value.clone(),
                timeout: *timeout,
            },
            state_resolved.clone(),
            state_display.clone(),
        ))),
    }
}

/// An `etcd` target: its TLS files and credentials are read here, before anything is sent.
fn open_etcd(env: &Environment) -> Result<Box<dyn Target>> {
    let TargetKind::Etcd {
        endpoints,
        prefix,
        timeout,
        ca,
        cert,
        key,
        username,
        password,
        lock_ttl,
        max_txn_ops,
        max_request_bytes,
        root,
    } = &env.target.kind
    else {
        unreachable!("open_etcd is called for etcd targets");
    };
    let read_file = |what: &str, path: &str| -> Result<Vec<u8>> {
        let full = crate::config::normalize(Some(root), std::path::Path::new(path));
        std::fs::read(&full).map_err(|e| {
            Failure::error(format!(
                "cannot read the etcd `{what}` file {} of `{}`: {e}",
                full.display(),
                env.name
            ))
            .hint("relative paths start at the repository's root; nothing was sent to etcd")
            .into()
        })
    };
    let mut security = crate::target::etcd::client::Security {
        ca: ca.as_deref().map(|p| read_file("ca", p)).transpose()?,
        ..Default::default()
    };
    match (cert, key) {
        (Some(c), Some(k)) => {
            security.identity = Some((read_file("cert", c)?, read_file("key", k)?))
        }
        (None, None) => {}
        _ => {
            return Err(Failure::error(format!(
                "`{}`: an etcd client certificate needs both `cert` and `key`",
                env.name
            ))
            .hint("set both in [target], or neither")
            .into());
        }
    }
    if let (Some(u), Some(p)) = (username, password) {
        let get = |r: &crate::config::node::SecretRef| {
            crate::secret::read(r, root).map_err(|(why, hint)| {
                anyhow::Error::from(
                    Failure::error(format!(
                        "the etcd credentials of `{}` (written at {}) cannot be read: {why}",
                        env.name, r.at
                    ))
                    .hint(format!("{hint}; nothing was sent to etcd")),
                )
            })
        };
        security.credentials = Some((get(u)?, get(p)?));
    }
    let target = crate::target::EtcdTarget::new(crate::target::etcd::EtcdSettings {
        endpoints: endpoints.iter().map(|e| e.value.clone()).collect(),
        prefix: prefix.value.clone(),
        timeout: *timeout,
        lock_ttl: *lock_ttl,
        max_txn_ops: *max_txn_ops,
        max_request_bytes: *max_request_bytes,
        keep: crate::config::DEFAULT_KEEP,
        security,
    })
    .map_err(Failure::from)?;
    Ok(Box::new(target))
}

/// When `branch` is set, the commit must be reachable from it (exit 3 otherwise).
pub fn check_branch(repo: &Repo, env: &Environment, commit: &CommitInfo) -> Result<()> {
    let Some(branch) = &env.branch else {
        return Ok(());
    };
    let branch = branch.value.as_str();
    match repo.reachable_from(commit.id, branch) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Failure::refused(format!(
            "commit {} is not on `{branch}`: `{}` deploys only commits reachable from `{branch}`",
            commit.short(),
            env.name
        ))
        .detail(format!(
            "{} is {} {}",
            if commit.rev == "HEAD" { "HEAD" } else { "the commit" },
            commit.short(),
            commit.summary
        ))
        .hint(format!(
            "merge the change into `{branch}` through review, check out `{branch}`, and run again; nothing was changed"
        ))
        .into()),
        Err(e) => Err(Failure::refused(format!(
            "cannot check that commit {} is on `{branch}`, which `{}` requires: {e}",
            commit.short(),
            env.name
        ))
        .hint(format!(
            "fetch or create `{branch}` in this clone (e.g. `git fetch origin {branch}:{branch}`)"
        ))
        .into()),
    }
}

/// Results of a health check, for messages and JSON.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub passed: bool,
    /// The generation it was run against (`None`: no generation live).
    pub generation: Option<GenerationId>,
    pub attempts: u32,
    /// How the last attempt ended, e.g. `exited with status 1`.
    pub result: String,
    /// The last lines the last attempt printed.
    pub output: Vec<String>,
    /// True when a Ctrl-C ended it.
    pub interrupted: bool,
}

impl HealthReport {
    /// One line for people.
    pub fn line(&self) -> String {
        let at = match self.generation {
            Some(id) => format!("generation {id}"),
            None => "no generation".to_owned(),
        };
        if self.passed {
            format!("health check passed on {at} (attempt {})", self.attempts)
        } else if self.interrupted {
            format!("health check on {at} was interrupted (Ctrl-C)")
        } else {
            format!(
                "health check failed on {at} after {} attempt{}: {}",
                self.attempts,
                if self.attempts == 1 { "" } else { "s" },
                self.result
            )
        }
    }
}

/// The event a notifier receives on stdin.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub environment: &'a str,
    pub account: &'a str,
    pub commit: String,
    pub target: String,
    /// `refused`, `failed` or `rolled-back`.
    pub outcome: &'a str,
    pub reason: String,
    pub exit_code: u8,
    pub time: String,
    pub operator: String,
}

/// `user@host` of this process.
pub fn operator() -> String {
    let h = Holder::this_process("");
    format!("{}@{}", h.user, h.host)
}

impl<'a> Deployment<'a> {
    pub fn new(
        repo: &Repo,
        env: &'a Environment,
        commit: &'a CommitInfo,
        printer: &'a Printer,
    ) -> Result<Self> {
        let root = repo
            .workdir()
            .map(Path::to_path_buf)
            .ok_or_else(|| Failure::error("deploy needs a repository with a working tree"))?;
        Ok(Deployment {
            env,
            commit,
            root,
            printer,
            target: open_target(env)?,
            interrupted: Arc::new(AtomicBool::new(false)),
            after: Vec::new(),
            plan_sha256: None,
        })
    }

    /// SHA-256 of the canonical resolved settings (resource -> table, keys sorted, compact
    /// JSON): what the log records as `config_sha256`.
    pub fn config_sha256(&self) -> String {
        let json = serde_json::to_vec(&self.env.settings_json()).unwrap_or_default();
        crate::target::sha256_hex(&json)
    }

    /// `prod` (account 222222222222).
    pub fn who(&self) -> String {
        format!("`{}` (account {})", self.env.name, self.env.account.value)
    }

    /// Take the deployment lock (exit 5 when another deployment holds it).
    /// Take the target's lock, then remove what interrupted runs left behind (a generation
    /// being written or pruned when they died): nobody else is writing now.
    pub fn lock(&self) -> Result<Box<dyn LockGuard>> {
        let holder = Holder::this_process(&self.env.name);
        let guard = self
            .target
            .lock(&holder)
            .map_err(|e| self.target_failure(e))?;
        match self.target.remove_leftovers() {
            Ok(gone) if !gone.is_empty() => self.say(&format!(
                "Removed leftover work files of an earlier run: {}",
                gone.join(", ")
            )),
            Ok(_) => {}
            Err(e) => self.warn(&format!(
                "could not remove leftover work files of an earlier run: {e}"
            )),
        }
        Ok(guard)
    }

    /// A target error as a failure that names the target.
    pub fn target_failure(&self, err: TargetError) -> anyhow::Error {
        let remote = matches!(err, TargetError::Remote(_));
        let provider = matches!(err, TargetError::Provider { .. });
        let mut f = Failure::from(err);
        f = f.detail(format!(
            "target of `{}`: {}",
            self.env.name,
            self.target.describe(),
        ));
        if f.hint.is_none() && remote {
            f = f.hint(format!(
                "check that [target] endpoints are etcd client URLs reachable from this machine \
                 (`etcdctl --endpoints=URL endpoint health`); if a deployment was under way, \
                 `deploy status --target {}` tells what is live once etcd answers",
                self.env.name
            ));
        }
        if f.hint.is_none() && provider {
            f = f.hint(
                "the provider's own words are above; run it by hand with a request on stdin \
                 (docs/providers.md shows each one) to see what it does",
            );
        }
        if f.hint.is_none() && f.exit == crate::error::Exit::Refused {
            f = f.hint("nothing was read from or written to the target");
        }
        f.into()
    }

    /// The live side of the environment lock: the account the target's own credentials reach
    /// (an `exec` provider's `identity`), the stamp, the identity command, and for a target not
    /// adopted yet, that it holds nothing envlock did not write.
    /// Returns the stamp state (`Absent` means the first apply adopts the target).
    pub fn verify_owner(&self) -> Result<StampState> {
        self.check_target_account()?;
        let mut state = self.target.stamp().map_err(|e| self.target_failure(e))?;
        if state == StampState::Absent {
            self.check_identity()?;
            if let Some((entries, total)) = self
                .target
                .unadopted_contents()
                .map_err(|e| self.target_failure(e))?
            {
                state = StampState::Unstamped { entries, total };
            }
        }
        let path = self.target.describe();
        match &state {
            StampState::Absent => return Ok(state),
            StampState::Stamped(stamp) => self.check_stamp(stamp)?,
            StampState::Unstamped { entries, total } => {
                let mut listed = entries.join(", ");
                if *total > entries.len() {
                    listed.push_str(&format!(", … ({total} entries)"));
                }
                return Err(Failure::refused(format!(
                    "refusing to adopt {path}: it is not empty and has no envlock stamp"
                ))
                .detail(format!("it holds: {listed}"))
                .hint(if matches!(self.env.target.kind, TargetKind::Exec { .. }) {
                    format!(
                        "envlock adopts only a scope that holds nothing yet, so that it never takes \
                         over resources it did not create: point [target.options] in \
                         environments/{}.toml at an empty scope, or remove what is there (nothing was written)",
                        self.env.name
                    )
                } else {
                    format!(
                        "envlock writes only into a target it adopted while empty; point [target] in \
                         environments/{}.toml at a new or empty directory (nothing was written)",
                        self.env.name
                    )
                })
                .into());
            }
        }
        self.check_identity()?;
        Ok(state)
    }

    /// The account the target's own credentials reach (an `exec` provider's `identity`) must be
    /// this environment's, before anything is read from the target.
    fn check_target_account(&self) -> Result<()> {
        let found = self.target.account().map_err(|e| {
            let mut f = Failure::from(e);
            f.exit = crate::error::Exit::Refused;
            f.message = format!(
                "cannot prove that the target's credentials belong to {}: {}",
                self.who(),
                f.message
            );
            anyhow::Error::from(
                f.detail(format!("target of `{}`: {}", self.env.name, self.target.describe()))
                    .hint("the provider must answer `identity` before anything else: check that it is installed and runs (its words are above), and that this environment's credentials are in place and not expired; nothing was read or written"),
            )
        })?;
        let Some((account, principal)) = found else {
            return Ok(());
        };
        if account == self.env.account.value {
            return Ok(());
        }
        let mut f = Failure::refused(format!(
            "the target's credentials reach account {account}, not {}",
            self.who()
        ))
        .detail(format!(
            "target of `{}`: {}",
            self.env.name,
            self.target.describe()
        ));
        if let Some(p) = principal {
            f = f.detail(format!("credentials: {p}"));
        }
        Err(f
            .hint(format!(
                "these are another account's credentials: log in to account {} and run again; nothing was read or written",
                self.env.account.value
            ))
            .into())
    }

    fn check_stamp(&self, stamp: &Stamp) -> Result<()> {
        let (env, account) = (&self.env.name, &self.env.account.value);
        if stamp.environment == *env && stamp.account == *account {
            return Ok(());
        }
        let path = self.target.describe();
        let f = if stamp.environment != *env {
            Failure::refused(format!(
                "{path} belongs to environment `{}` (account {}), not to {}",
                stamp.environment,
                stamp.account,
                self.who()
            ))
            .hint(format!(
                "[target] in environments/{env}.toml leads into another environment's target \
                 (a copied path or a symlink?); nothing was read or written"
            ))
        } else {
            Failure::refused(format!(
                "{path} is stamped for `{env}` with account {}, but `{env}` now says account {account}",
                stamp.account
            ))
            .hint(
                "a different account is a different target: give it a new, empty [target]; \
                 nothing was read or written",
            )
        };
        Err(f
            .detail(format!("stamp: {}", stamp_path_hint(&*self.target)))
            .into())
    }

    /// Run `[identity] command`; its trimmed stdout must be this environment's account.
    fn check_identity(&self) -> Result<()> {
        let Some(identity) = &self.env.identity else {
            return Ok(());
        };
        let shown = process::display_argv(&identity.command);
        let account = &self.env.account.value;
        let spec = Spec {
            argv: &identity.command,
            cwd: &self.root,
            env: vec![("DEPLOY_ENVIRONMENT".into(), self.env.name.clone())],
            stdin: None,
            timeout: identity.timeout,
            cancel: None,
            stdout_limit: process::OUTPUT_LIMIT,
        };
        let outcome = process::run(&spec).map_err(|e| {
            Failure::refused(format!(
                "cannot prove that these credentials belong to {}: {e}",
                self.who()
            ))
            .detail(format!("identity command: {shown}"))
            .hint("install the tool or fix [identity] command; nothing was read or written")
        })?;
        if !outcome.success() {
            let mut f = Failure::refused(format!(
                "cannot prove that these credentials belong to {}: the identity command {}",
                self.who(),
                outcome.describe()
            ))
            .detail(format!("identity command: {shown}"));
            for line in outcome.excerpt(10) {
                f = f.detail(line);
            }
            return Err(f
                .hint("log in with this environment's credentials (are they expired?), then run again; nothing was read or written")
                .into());
        }
        let got = outcome.stdout_text();
        if got == *account {
            return Ok(());
        }
        let mut f = Failure::refused(format!(
            "these credentials belong to account {}, not to {}",
            if got.is_empty() {
                "(nothing printed)".to_owned()
            } else {
                format!("`{}`", truncate(&got, 80))
            },
            self.who()
        ))
        .detail(format!("identity command: {shown}"));
        for line in outcome.excerpt(10) {
            f = f.detail(line);
        }
        Err(f
            .hint(format!(
                "this shell has another account's credentials; switch to {}'s (AWS_PROFILE, a new \
                 login...) and run again; nothing was read or written",
                self.env.name
            ))
            .into())
    }

    /// Run the health check against `generation`: up to `1 + retries` attempts, `interval`
    /// apart. `None` when the environment has no `[health]`.
    pub fn health(
        &self,
        generation: Option<GenerationId>,
        commit: &str,
        attempts_override: Option<u32>,
    ) -> Option<HealthReport> {
        let health = self.env.health.as_ref()?;
        let attempts = attempts_override.unwrap_or(health.retries.saturating_add(1));
        let mut env = vec![
            ("DEPLOY_ENVIRONMENT".to_owned(), self.env.name.clone()),
            (
                "DEPLOY_GENERATION".to_owned(),
                generation.map(|g| g.to_string()).unwrap_or_default(),
            ),
            ("DEPLOY_COMMIT".to_owned(), commit.to_owned()),
            ("DEPLOY_ACCOUNT".to_owned(), self.env.account.value.clone()),
        ];
        if let TargetKind::Etcd {
            endpoints, prefix, ..
        } = &self.env.target.kind
        {
            let eps: Vec<&str> = endpoints.iter().map(|e| e.value.as_str()).collect();
            env.push(("DEPLOY_ETCD_ENDPOINTS".to_owned(), eps.join(",")));
            env.push(("DEPLOY_ETCD_PREFIX".to_owned(), prefix.value.clone()));
        }
        if let TargetKind::Dir { resolved, .. } = &self.env.target.kind {
            env.push(("DEPLOY_DIR".to_owned(), resolved.display().to_string()));
        }
        let mut report = HealthReport {
            passed: false,
            generation,
            attempts: 0,
            result: String::new(),
            output: Vec::new(),
            interrupted: false,
        };
        for attempt in 1..=attempts.max(1) {
            if attempt > 1 && self.sleep_unless_interrupted(health.interval) {
                report.interrupted = true;
                break;
            }
            report.attempts = attempt;
            let spec = Spec {
                argv: &health.command,
                cwd: &self.root,
                env: env.clone(),
                stdin: None,
                timeout: health.timeout,
                cancel: Some(&self.interrupted),
                stdout_limit: process::OUTPUT_LIMIT,
            };
            match process::run(&spec) {
                Ok(outcome) => {
                    report.result = outcome.describe();
                    report.output = outcome.excerpt(10);
                    if outcome.success() {
                        report.passed = true;
                        break;
                    }
                    if matches!(outcome.ended, process::Ended::Cancelled) {
                        report.interrupted = true;
                        break;
                    }
                }
                Err(e) => {
                    report.result = e.to_string();
                    report.output.clear();
                }
            }
        }
        Some(report)
    }

    /// Sleep, waking early on Ctrl-C; true when interrupted.
    fn sleep_unless_interrupted(&self, total: Duration) -> bool {
        let step = Duration::from_millis(20);
        let mut left = total;
        while !left.is_zero() {
            if self.interrupted.load(Ordering::Relaxed) {
                return true;
            }
            let d = left.min(step);
            std::thread::sleep(d);
            left -= d;
        }
        self.interrupted.load(Ordering::Relaxed)
    }

    /// From here on Ctrl-C (SIGINT) and SIGTERM set [`Self::interrupted`] instead of killing
    /// the process, so that a started deployment finishes or rolls back; a second Ctrl-C kills
    /// it (the journal then lets the next run resolve it).
    pub fn arm_interrupts(&self) {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ =
                signal_hook::flag::register_conditional_default(sig, Arc::clone(&self.interrupted));
            let _ = signal_hook::flag::register(sig, Arc::clone(&self.interrupted));
        }
    }

    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Tell `[notify] command` about a refusal, failure or rollback. Its own failure is
    /// reported on stderr and changes nothing else.
    pub fn notify(&self, outcome: &str, reason: &str, exit_code: u8) {
        let Some(notify) = &self.env.notify else {
            return;
        };
        let event = Event {
            environment: &self.env.name,
            account: &self.env.account.value,
            commit: self.commit.id.to_string(),
            target: self.env.target.describe(),
            outcome,
            reason: reason.to_owned(),
            exit_code,
            time: crate::target::now_rfc3339(),
            operator: operator(),
        };
        let mut stdin = serde_json::to_vec(&event).unwrap_or_default();
        stdin.push(b'\n');
        let spec = Spec {
            argv: &notify.command,
            cwd: &self.root,
            env: vec![("DEPLOY_ENVIRONMENT".into(), self.env.name.clone())],
            stdin: Some(stdin),
            timeout: notify.timeout,
            cancel: None,
            stdout_limit: process::OUTPUT_LIMIT,
        };
        let shown = process::display_argv(&notify.command);
        let problem = match process::run(&spec) {
            Ok(o) if o.success() => None,
            Ok(o) => Some(format!("{} {}", shown, o.describe())),
            Err(e) => Some(e.to_string()),
        };
        match problem {
            None => self.say(&format!("notified: {shown} ({outcome})")),
            Some(p) => self.warn(&format!(
                "the notifier failed, so nobody may have been told: {p}"
            )),
        }
    }

    /// A progress line for people, on stderr.
    pub fn say(&self, text: &str) {
        self.printer.err(&format!("{text}\n"));
    }

    /// `warning: text`, on stderr: something went wrong that does not change the outcome.
    pub fn warn(&self, text: &str) {
        self.printer.err(&format!(
            "{} {text}\n",
            self.printer.paint(style::WARN, "warning:")
        ));
    }

    /// Ask on the terminal before changing the target. `Ok(())` means go ahead.
    pub fn confirm(&self, yes: bool, what: &str) -> Result<()> {
        if yes {
            return Ok(());
        }
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(Failure::error(format!(
                "not applying: nobody can confirm (stdin is not a terminal) the request to {what}"
            ))
            .not_notified()
            .hint(format!(
                "review the plan above, then run `deploy --target {} --yes` (--yes never skips a \
                 safety check)",
                self.env.name
            ))
            .into());
        }
        let name = &self.env.name;
        let prompt = if self.env.protected {
            format!(
                "`{name}` is protected. Type its name to {what} on account {}: ",
                self.env.account.value
            )
        } else {
            format!("{} on {}? [y/N] ", capitalise(what), self.who())
        };
        self.printer.err(&self.printer.paint(style::BOLD, &prompt));
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        let answer = answer.trim();
        let ok = if self.env.protected {
            answer == name
        } else {
            matches!(answer, "y" | "Y" | "yes" | "YES" | "Yes")
        };
        if ok {
            return Ok(());
        }
        Err(Failure::error("cancelled: nothing was changed")
            .not_notified()
            .hint(if self.env.protected {
                format!("type `{name}` exactly to confirm")
            } else {
                "answer `y` to apply".to_owned()
            })
            .into())
    }
}

/// Where a target keeps its stamp, for messages.
fn stamp_path_hint(target: &dyn Target) -> String {
    target.state_location(crate::target::StateItem::Stamp)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() <= max && !s.contains('\n') {
        return line.to_owned();
    }
    let mut out: String = line.chars().take(max).collect();
    out.push('…');
    out
}

/// The plan as text: one `+`/`~`/`-` line per resource with its diff, then the summary.
pub fn render_plan(printer: &Printer, plan: &Plan) -> String {
    let mut s = String::new();
    for change in &plan.changes {
        let (sty, word) = match change.action {
            Action::Add => (style::ADD, "add"),
            Action::Change => (style::CHANGE, "change"),
            Action::Remove => (style::REMOVE, "remove"),
        };
        s.push_str(&printer.paint_out(
            sty,
            &format!("{} {} ({word})", change.action.sign(), change.resource),
        ));
        s.push('\n');
        for line in change.diff.lines() {
            let painted = if line.starts_with("+++") || line.starts_with("---") {
                printer.paint_out(style::BOLD, line)
            } else if line.starts_with('+') {
                printer.paint_out(style::ADD, line)
            } else if line.starts_with('-') {
                printer.paint_out(style::REMOVE, line)
            } else if line.starts_with("@@") {
                printer.paint_out(style::HINT, line)
            } else {
                line.to_owned()
            };
            s.push_str("    ");
            s.push_str(&painted);
            s.push('\n');
        }
    }
    if !plan.changes.is_empty() {
        s.push('\n');
    }
    s.push_str(&printer.paint_out(style::BOLD, &plan.summary()));
    s.push('\n');
    s
}
