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

pub mod adopt;
pub mod apply;
pub mod forward;
pub mod gate;
pub mod journal;
pub mod migrate;
mod page;
pub mod rollout;
pub mod saved;
pub mod seal;
pub mod signing;
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
use crate::progress::{self as progress_mod, Progress, Task};
use crate::repo::{CommitInfo, Repo, RepoError, Reviewed};
use crate::target::{
    DirTarget, GenerationId, Holder, LockGuard, Stamp, StampState, Target, TargetError, paths,
};

/// One deployment's context: the environment at one commit and its target.
pub struct Deployment<'a> {
    /// The configuration repository (commit ancestry for the forward-only rule and rollbacks).
    pub repo: &'a Repo,
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
    /// Told about long waits (health check attempts, the target, commands); never prints itself.
    pub progress: &'a dyn Progress,
    /// Set once Ctrl-C rolls back instead of killing ([`Self::arm_interrupts`]).
    armed: AtomicBool,
    /// Where the repository is (headings name it, so a run from the wrong clone shows).
    pub location: crate::repo::Location,
    /// Uncommitted files under `environments/` and `schemas/` (read-only commands run anyway
    /// and say so); what is deployed always comes from the commit.
    pub dirty: Vec<(String, &'static str)>,
    /// Which environment owns each account the repository names (for refusals that meet
    /// another environment's account).
    pub accounts: std::collections::BTreeMap<String, Vec<String>>,
    /// True when this run's last `[notify] url` notification (sent or tried) told of trouble;
    /// shared with the command, which then does not send the same failure again when it ends.
    pub paged: Arc<AtomicBool>,
    /// The key that signs this run's log records, when `allowed_signers` exists at the
    /// commit (set by [`signing::authorize`] before anything is written).
    pub signing: Option<Arc<crate::signing::Key>>,
    /// In a fleet's rollout: this target's name (`[targets.NAME]`), for messages, the health
    /// check's `DEPLOY_TARGET` and the signals' `$TARGET`.
    pub member: Option<String>,
    /// The lock a rollout took on this target before its first write and holds to its end:
    /// [`Self::lock`] then lends it instead of taking it again.
    held: std::cell::RefCell<Option<Box<dyn LockGuard>>>,
    /// False for a fleet's targets: the rollout pages once for all of them.
    pub pages: bool,
    /// Set once the `[identity] command` printed the account in this run (shared by a fleet's
    /// targets, which share the environment's credentials).
    identity_proven: Arc<AtomicBool>,
}

/// A lock held by the rollout around this deployment ([`Deployment::hold_lock`]).
#[derive(Debug)]
struct Lent(Holder);

impl LockGuard for Lent {
    fn holder(&self) -> &Holder {
        &self.0
    }
}

/// The target implementation for an environment's `[target]`.
pub fn open_target(env: &Environment) -> Result<Box<dyn Target>> {
    match &env.target.kind {
        TargetKind::Dir { resolved, .. } => {
            Ok(Box::new(DirTarget::new(real_target_path(env, resolved)?)))
        }
        TargetKind::Etcd { .. } => open_etcd(env),
        TargetKind::Exec { .. } => open_exec(env),
    }
}

/// An `exec` target: its provider, and the store its state lives in.
fn open_exec(env: &Environment) -> Result<Box<dyn Target>> {
    use crate::target::store::Store;
    let TargetKind::Exec { state, store, .. } = &env.target.kind else {
        unreachable!("open_exec is called for exec targets");
    };
    let provider = exec_provider(env);
    let (state, shown): (Box<dyn Store>, String) = match store.dir() {
        Some((resolved, display)) => (
            Box::new(DirTarget::new(real_target_path(env, resolved)?)),
            display.to_owned(),
        ),
        None => (Box::new(shared_store(env, &provider)?), state.value.clone()),
    };
    Ok(Box::new(crate::target::ExecTarget::new(
        provider, state, shown,
    )))
}

/// The provider of an `exec` environment.
fn exec_provider(env: &Environment) -> std::sync::Arc<crate::target::exec::provider::Provider> {
    let TargetKind::Exec {
        command,
        options,
        timeout,
        protocol,
        root,
        ..
    } = &env.target.kind
    else {
        unreachable!("exec_provider is called for exec targets");
    };
    std::sync::Arc::new(crate::target::exec::provider::Provider {
        argv: command.clone(),
        root: root.clone(),
        options: options.clone(),
        environment: env.name.clone(),
        account: env.account.value.clone(),
        timeout: *timeout,
        protocol: *protocol,
        session: std::sync::Mutex::new(None),
    })
}

/// The shared store (`[target.state]` of kind `etcd` or `provider`) of an `exec` environment;
/// refused for a directory state.
fn shared_store(
    env: &Environment,
    provider: &std::sync::Arc<crate::target::exec::provider::Provider>,
) -> Result<crate::target::store::Shared> {
    use crate::config::StateConfig;
    use crate::target::store::{Shared, etcd::EtcdBackend, provider::ProviderBackend};
    let fail = |e: TargetError| -> anyhow::Error {
        Failure::from(e)
            .detail(format!(
                "target of `{}`: {}",
                env.name,
                env.target.describe()
            ))
            .into()
    };
    let backend: std::sync::Arc<dyn crate::target::store::backend::Backend> = match &env.target.kind
    {
        TargetKind::Exec {
            store:
                StateConfig::Etcd {
                    endpoints,
                    prefix,
                    timeout,
                    ..
                },
            ..
        } => std::sync::Arc::new(
            EtcdBackend::new(endpoints.clone(), prefix.clone(), *timeout).map_err(fail)?,
        ),
        TargetKind::Exec {
            store: StateConfig::Provider { .. },
            ..
        } => std::sync::Arc::new(
            ProviderBackend::new(std::sync::Arc::clone(provider)).map_err(fail)?,
        ),
        _ => {
            return Err(Failure::refused(format!(
                "`{}` keeps its state in a directory on this machine, not in a shared store",
                env.name
            ))
            .hint("a shared store is named by a [target.state] table of kind \"etcd\" or \"provider\"")
            .into());
        }
    };
    let lock_ttl = match &env.target.kind {
        TargetKind::Exec {
            store: StateConfig::Etcd { lock_ttl, .. } | StateConfig::Provider { lock_ttl },
            ..
        } => *lock_ttl,
        _ => std::time::Duration::from_secs(30),
    };
    Ok(Shared::new(backend, lock_ttl))
}

/// Where `path` (a `dir` target or an `exec` target's state) really leads, refused (exit 3)
/// when that is inside an envlock target (`target::paths`).
fn real_target_path(env: &Environment, path: &Path) -> Result<PathBuf> {
    let fail = |e: TargetError| -> anyhow::Error {
        Failure::from(e)
            .detail(format!("target of `{}`: {}", env.name, env.target.describe()))
            .hint(
                "give the environment a path of real directories that no other target contains                  (in the repository or on this machine); nothing was read or written",
            )
            .into()
    };
    let real = paths::real_path(path).map_err(fail)?;
    paths::refuse_inside_a_target(path, &real).map_err(fail)?;
    Ok(real)
}

/// The resolved path where `env`'s target (or `exec` state) lies on this machine, if it has one.
fn resolved_dir(target: &crate::config::Target) -> Option<&Path> {
    match &target.kind {
        TargetKind::Dir { resolved, .. } => Some(resolved),
        TargetKind::Exec { store, .. } => store.dir().map(|(p, _)| p),
        TargetKind::Etcd { .. } => None,
    }
}

/// Each target of `env` (one, or a fleet's) with its name for messages.
fn targets_of(env: &Environment) -> Vec<(String, &crate::config::Target)> {
    match &env.fleet {
        Some(f) => f
            .members
            .iter()
            .map(|m| (format!("`{}` target `{}`", env.name, m.name), &m.target))
            .collect(),
        None => vec![(format!("`{}`", env.name), &env.target)],
    }
}

/// `env`'s resolved targets must not be, hold or lie inside another environment's resolved
/// target (what the lexical check of `safety` cannot see through symlinks); exit 3 otherwise.
pub fn check_target_paths(env: &Environment, all: &[Environment]) -> Result<()> {
    let theirs: Vec<(String, PathBuf)> = all
        .iter()
        .filter(|o| o.name != env.name)
        .flat_map(targets_of)
        .filter_map(|(who, t)| Some((who, paths::real_path(resolved_dir(t)?).ok()?)))
        .collect();
    for (who, target) in targets_of(env) {
        let Some(mine) = resolved_dir(target) else {
            continue;
        };
        let real = paths::real_path(mine).map_err(Failure::from)?;
        for (other, path) in &theirs {
            if let Some(how) = paths::overlap(&real, path) {
                return Err(Failure::refused(format!(
                    "the target of {who} ({}) leads to {}, which {how} the target of {other} ({})",
                    mine.display(),
                    real.display(),
                    path.display()
                ))
                .hint(
                    "a symlink on the way joins two environments' targets; give each a path of its \
                     own; nothing was read or written",
                )
                .into());
            }
        }
    }
    Ok(())
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
        let (user, pass) = (get(u)?, get(p)?);
        // Read like any secret: no exit of the process may carry them.
        crate::redact::register(vec![pass.clone()]);
        security.credentials = Some((user, pass));
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

/// The ref `env`'s `branch` is checked against ([`Repo::reviewed_ref`]); `None` without
/// `branch`. A remote without the tracking branch is a refusal (exit 3) that says what to fetch.
pub fn reviewed_ref(repo: &Repo, env: &Environment) -> Result<Option<Reviewed>> {
    let Some(branch) = &env.branch else {
        return Ok(None);
    };
    match repo.reviewed_ref(&branch.value) {
        Ok(r) => Ok(Some(r)),
        Err(RepoError::NoTrackingBranch {
            remote,
            tracking,
            known,
            ..
        }) => {
            let b = &branch.value;
            let f = Failure::refused(format!(
                "`{}` deploys only commits reachable from `branch = \"{b}\"`, which in a clone with a remote means the pushed (reviewed) branch `{}`, and this clone has no such branch",
                env.name,
                tracking.trim_start_matches("refs/remotes/")
            ))
            .detail(format!("`branch = \"{b}\"` in environments/{}.toml", env.name));
            let hint = if known {
                format!(
                    "fetch it (`git fetch {remote}`); if the remote has no branch `{b}`, fix `branch` in the configuration; nothing was changed"
                )
            } else {
                format!(
                    "this clone has no remote `{remote}`: set the upstream of `{b}` (`git branch --set-upstream-to=<remote>/{b} {b}`) or add `{remote}`, then fetch; nothing was changed"
                )
            };
            Err(f.hint(hint).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// When `branch` is set, the commit must be reachable from it, meaning its remote-tracking
/// branch when the clone has a remote (exit 3 otherwise).
pub fn check_branch(repo: &Repo, env: &Environment, commit: &CommitInfo) -> Result<()> {
    let Some(reviewed) = reviewed_ref(repo, env)? else {
        return Ok(());
    };
    let branch = reviewed.short();
    let named = env.branch.as_ref().map_or(branch, |b| b.value.as_str());
    match repo.reachable_from(commit.id, reviewed.rev()) {
        Ok(true) => Ok(()),
        Ok(false) => {
            let local_only = matches!(reviewed, Reviewed::Remote(_))
                && repo.reachable_from(commit.id, named).unwrap_or(false);
            let detail = format!(
                "{} is {} {}",
                if commit.rev == "HEAD" {
                    "HEAD"
                } else {
                    "the commit"
                },
                commit.short(),
                commit.summary
            );
            if local_only {
                return Err(Failure::refused(format!(
                    "commit {} is on the local `{named}` but not on `{branch}`: it was never pushed, so never reviewed, and `{}` deploys only commits reachable from `{branch}`",
                    commit.short(),
                    env.name
                ))
                .detail(detail)
                .hint(
                    "`git push` it (through review), then `git pull` and run again; nothing was changed",
                )
                .into());
            }
            Err(Failure::refused(format!(
                "commit {} is not on `{branch}`: `{}` deploys only commits reachable from `{branch}`",
                commit.short(),
                env.name
            ))
            .detail(detail)
            .hint(format!(
                "merge the change into `{named}` through review, check out `{named}`, and run again; nothing was changed"
            ))
            .into())
        }
        Err(e) => Err(Failure::refused(format!(
            "cannot check that commit {} is on `{branch}`, which `{}` requires: {e}",
            commit.short(),
            env.name
        ))
        .hint(format!(
            "fetch or create `{branch}` in this clone (e.g. `git fetch origin {named}:{named}`)"
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
    /// True when the last attempt's program could not be started: the command failed, not the
    /// generation (which was not checked at all).
    #[serde(skip)]
    pub not_started: bool,
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
        } else if self.not_started {
            format!(
                "the health command {}, so {at} was not checked",
                self.result
                    .strip_prefix("could not start")
                    .map_or(self.result.clone(), |r| format!("could not start:{r}"))
            )
        } else if self.interrupted {
            format!(
                "health check on {at} was stopped by Ctrl-C at attempt {} before it passed",
                self.attempts.max(1)
            )
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
        repo: &'a Repo,
        env: &'a Environment,
        commit: &'a CommitInfo,
        printer: &'a Printer,
    ) -> Result<Self> {
        let root = repo
            .workdir()
            .map(Path::to_path_buf)
            .ok_or_else(|| Failure::error("deploy needs a repository with a working tree"))?;
        Ok(Deployment {
            repo,
            env,
            commit,
            root,
            printer,
            target: open_target(env)?,
            interrupted: Arc::new(AtomicBool::new(false)),
            after: Vec::new(),
            plan_sha256: None,
            progress: printer,
            armed: AtomicBool::new(false),
            location: repo.location(),
            dirty: Vec::new(),
            accounts: std::collections::BTreeMap::new(),
            paged: Arc::new(AtomicBool::new(false)),
            signing: None,
            member: None,
            held: std::cell::RefCell::new(None),
            pages: true,
            identity_proven: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The deployment of one target of this fleet environment: the same commit, checks and
    /// signing key; `env` is the environment with that target ([`Environment::member`]).
    /// Ctrl-C and the notifier's state are shared with `self`.
    pub fn member<'b>(&'b self, env: &'b Environment, name: &str) -> Result<Deployment<'b>> {
        let mut d = Deployment::new(self.repo, env, self.commit, self.printer)?;
        d.interrupted = Arc::clone(&self.interrupted);
        d.after = self.after.clone();
        d.plan_sha256 = self.plan_sha256.clone();
        d.progress = self.progress;
        d.dirty = self.dirty.clone();
        d.accounts = self.accounts.clone();
        d.paged = Arc::clone(&self.paged);
        d.signing = self.signing.clone();
        d.member = Some(name.to_owned());
        d.pages = false;
        d.identity_proven = Arc::clone(&self.identity_proven);
        Ok(d)
    }

    /// Take this target's lock for the rest of a rollout: every later [`Self::lock`] lends it.
    pub fn hold_lock(&self) -> Result<()> {
        if self.held.borrow().is_none() {
            let guard = self.lock()?;
            *self.held.borrow_mut() = Some(guard);
        }
        Ok(())
    }

    /// Let go of the lock [`Self::hold_lock`] took.
    pub fn release_lock(&self) {
        self.held.borrow_mut().take();
    }

    /// SHA-256 of the canonical resolved settings (resource -> table, keys sorted, compact
    /// JSON): what the log records as `config_sha256`.
    pub fn config_sha256(&self) -> String {
        let json = serde_json::to_vec(&self.env.settings_json()).unwrap_or_default();
        crate::target::sha256_hex(&json)
    }

    /// `prod` (account 222222222222).
    pub fn who(&self) -> String {
        match &self.member {
            Some(m) => format!(
                "`{}` target `{m}` (account {})",
                self.env.name, self.env.account.value
            ),
            None => format!("`{}` (account {})", self.env.name, self.env.account.value),
        }
    }

    /// Take the target's lock (exit 5 when another deployment holds it), then remove what interrupted runs left behind (a generation
    /// being written or pruned when they died): nobody else is writing now.
    pub fn lock(&self) -> Result<Box<dyn LockGuard>> {
        if let Some(held) = self.held.borrow().as_ref() {
            return Ok(Box::new(Lent(held.holder().clone())));
        }
        let holder = Holder::this_process(&self.env.name);
        let task = self.wait_task(format!("the lock of {}", self.target.describe()), None);
        let guard = progress_mod::during(self.progress, task, || self.target.lock(&holder))
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
    /// Returns the stamp state (`Absent`: not adopted yet, see [`adopt`]).
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
                .hint(if let TargetKind::Exec { store, .. } = &self.env.target.kind {
                    let moved = if store.dir().is_none() {
                        format!(
                            "; if `{0}` kept its state in a directory until now, move it here with \
                             `deploy migrate --target {0} --from DIR`",
                            self.env.name
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "envlock adopts only a scope that holds nothing yet, so that it never takes \
                         over resources it did not create: point [target.options] in \
                         environments/{}.toml at an empty scope, or remove what is there{moved} \
                         (nothing was written)",
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
    pub(crate) fn check_target_account(&self) -> Result<()> {
        let task = self.wait_task(
            format!("the account {} reaches", self.target.describe()),
            None,
        );
        let found = progress_mod::during(self.progress, task, || self.target.account());
        let found = found.map_err(|e| {
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
        if let Some(owner) = self.account_owner(&account) {
            f = f.detail(owner);
        }
        Err(f
            .hint(format!(
                "these are another account's credentials: log in to account {} and run again; nothing was read or written",
                self.env.account.value
            ))
            .into())
    }

    /// `111111111111 is `validation`'s account`, when the repository names `account` for
    /// another environment: a refusal then says whose credentials or target these are.
    fn account_owner(&self, account: &str) -> Option<String> {
        let owners: Vec<String> = self
            .accounts
            .get(account)?
            .iter()
            .filter(|n| **n != self.env.name)
            .map(|n| format!("`{n}`"))
            .collect();
        match owners.as_slice() {
            [] => None,
            [one] => Some(format!("{account} is {one}'s account")),
            many => Some(format!("{account} is the account of {}", many.join(", "))),
        }
    }

    pub(crate) fn check_stamp(&self, stamp: &Stamp) -> Result<()> {
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
        let f = f.detail(format!("stamp: {}", stamp_path_hint(&*self.target)));
        // The stamp names this environment with another account: say whose account that is.
        let f = match self.account_owner(&stamp.account) {
            Some(owner) if stamp.environment == *env => f.detail(owner),
            _ => f,
        };
        Err(f.into())
    }

    /// What runs after the switch must be able to start before anything is written: the
    /// programs of `[health]` and `[notify]` exist and are executable (exit 3 otherwise, as
    /// for an identity command that cannot start), named at their `file:line:col`.
    pub fn check_programs(&self) -> Result<()> {
        let health = self
            .env
            .health
            .as_ref()
            .map(|h| ("[health]", &h.command, &h.command_at));
        let notify = self
            .env
            .notify
            .as_ref()
            .and_then(|n| n.command.as_ref().map(|c| ("[notify]", c, &n.command_at)));
        for (section, argv, at) in [health, notify].into_iter().flatten() {
            if let Err(e) = process::check_program(argv, &self.root) {
                let mut f = Failure::refused(format!(
                    "refusing to deploy {}: the {section} command cannot be started: {e}",
                    self.who()
                ))
                .detail(format!("{at}: command = {}", process::display_argv(argv)));
                if let Some(hint) = e.hint() {
                    f = f.detail(hint);
                }
                return Err(f
                    .hint(format!(
                        "fix the {section} command at {at} (or install the program) and run again; \
                         it would run after the switch, so nothing was written"
                    ))
                    .into());
            }
        }
        Ok(())
    }

    /// Run `[identity] command`; its trimmed stdout must be this environment's account.
    pub(crate) fn check_identity(&self) -> Result<()> {
        let Some(identity) = &self.env.identity else {
            return Ok(());
        };
        // A fleet's targets share the environment's credentials: proven once per run.
        if self.identity_proven.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.run_identity(identity)?;
        self.identity_proven.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn run_identity(&self, identity: &crate::config::Identity) -> Result<()> {
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
        let task = self.wait_task(
            format!("the identity command `{shown}`"),
            Some(identity.timeout),
        );
        let outcome = progress_mod::during(self.progress, task, || process::run(&spec));
        let outcome = outcome.map_err(|e| {
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
        if let Some(owner) = self.account_owner(&got) {
            f = f.detail(owner);
        }
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
    /// apart, each attempt told to [`Self::progress`]. `None` when the environment has no
    /// `[health]`.
    pub fn health(
        &self,
        generation: Option<GenerationId>,
        commit: &str,
        attempts_override: Option<u32>,
    ) -> Option<HealthReport> {
        let health = self.env.health.as_ref()?;
        let attempts = attempts_override
            .unwrap_or(health.retries.saturating_add(1))
            .max(1);
        let at = generation.map_or("no generation".to_owned(), |g| format!("generation {g}"));
        let limit =
            health.timeout.saturating_mul(attempts) + health.interval.saturating_mul(attempts - 1);
        let task = Task {
            what: format!("health check of {at}"),
            attempts,
            limit: Some(limit),
            ctrl_c: self.ctrl_c_meaning(attempts_override.is_none()),
            detail: Some(process::display_argv(&health.command)),
        };
        let env = self.health_env(generation, commit);
        Some(progress_mod::during(self.progress, task, || {
            self.health_attempts(health, &env, generation, attempts, limit)
        }))
    }

    /// What the health check's command finds in its environment.
    fn health_env(&self, generation: Option<GenerationId>, commit: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("DEPLOY_ENVIRONMENT".to_owned(), self.env.name.clone()),
            (
                "DEPLOY_GENERATION".to_owned(),
                generation.map(|g| g.to_string()).unwrap_or_default(),
            ),
            ("DEPLOY_COMMIT".to_owned(), commit.to_owned()),
            ("DEPLOY_ACCOUNT".to_owned(), self.env.account.value.clone()),
        ];
        if let Some(member) = &self.member {
            env.push(("DEPLOY_TARGET".to_owned(), member.clone()));
        }
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
        env
    }

    /// The attempts of one health check, until one passes, Ctrl-C, or none is left.
    fn health_attempts(
        &self,
        health: &crate::config::Health,
        env: &[(String, String)],
        generation: Option<GenerationId>,
        attempts: u32,
        limit: Duration,
    ) -> HealthReport {
        let started = std::time::Instant::now();
        let mut report = HealthReport {
            passed: false,
            generation,
            attempts: 0,
            result: String::new(),
            output: Vec::new(),
            interrupted: false,
            not_started: false,
        };
        for attempt in 1..=attempts {
            if attempt > 1 && self.sleep_unless_interrupted(health.interval) {
                report.interrupted = true;
                break;
            }
            report.attempts = attempt;
            let previous = (attempt > 1).then_some(report.result.as_str());
            self.progress
                .attempt(attempt, limit.saturating_sub(started.elapsed()), previous);
            let spec = Spec {
                argv: &health.command,
                cwd: &self.root,
                env: env.to_vec(),
                stdin: None,
                timeout: health.timeout,
                cancel: Some(&self.interrupted),
                stdout_limit: process::OUTPUT_LIMIT,
            };
            match process::run(&spec) {
                Ok(outcome) => {
                    report.not_started = false;
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
                    report.not_started = true;
                    report.result = match e.hint() {
                        Some(hint) => format!("{e} ({hint})"),
                        None => e.to_string(),
                    };
                    report.output.clear();
                }
            }
        }
        report
    }

    /// What Ctrl-C does at this point, for progress lines. `verdict`: this check decides
    /// whether the new generation stays (not the one-off check after a rollback).
    fn ctrl_c_meaning(&self, verdict: bool) -> String {
        match (self.armed.load(Ordering::Relaxed), verdict) {
            (true, true) => "Ctrl-C rolls back".to_owned(),
            (true, false) => "Ctrl-C stops the check".to_owned(),
            (false, _) => "Ctrl-C stops deploy".to_owned(),
        }
    }

    /// A single wait (a command, the target) for [`Self::progress`].
    pub fn wait_task(&self, what: String, limit: Option<Duration>) -> Task {
        Task {
            what,
            attempts: 0,
            limit,
            // Once armed, Ctrl-C is noted and acted on after this wait.
            ctrl_c: if self.armed.load(Ordering::Relaxed) {
                String::new()
            } else {
                self.ctrl_c_meaning(false)
            },
            detail: None,
        }
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
        self.armed.store(true, Ordering::Relaxed);
        // Once per flag: a fleet's targets share theirs, and a second pair of handlers would
        // see the flag the first pair just set and kill the process on the first Ctrl-C.
        static ARMED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
        let key = Arc::as_ptr(&self.interrupted) as usize;
        let mut armed = ARMED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if armed.contains(&key) {
            return;
        }
        armed.push(key);
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
        let Some((notify, command)) = self
            .env
            .notify
            .as_ref()
            .and_then(|n| n.command.as_ref().map(|c| (n, c)))
        else {
            return;
        };
        let event = Event {
            environment: &self.env.name,
            account: &self.env.account.value,
            commit: self.commit.id.to_string(),
            target: self.env.target_label(),
            outcome,
            reason: reason.to_owned(),
            exit_code,
            time: crate::target::now_rfc3339(),
            operator: operator(),
        };
        // The reason may quote a health check's output: scrubbed like every other exit.
        let mut stdin = crate::redact::to_json_vec(&event).unwrap_or_default();
        stdin.push(b'\n');
        let spec = Spec {
            argv: command,
            cwd: &self.root,
            env: vec![("DEPLOY_ENVIRONMENT".into(), self.env.name.clone())],
            stdin: Some(stdin),
            timeout: notify.timeout,
            cancel: None,
            stdout_limit: process::OUTPUT_LIMIT,
        };
        let shown = process::display_argv(command);
        let task = self.wait_task(format!("the notifier `{shown}`"), Some(notify.timeout));
        let problem = match progress_mod::during(self.progress, task, || process::run(&spec)) {
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

    /// Ask on the terminal before changing the target. `Ok(())` means go ahead. A protected
    /// environment's name must be typed; others answer `y`.
    pub fn confirm(&self, yes: bool, what: &str) -> Result<()> {
        let again = format!("deploy --target {} --yes", self.env.name);
        self.ask(yes, what, self.env.protected, &again)
    }

    /// [`Self::confirm`], with the environment's name to type when `typed` (as for a protected
    /// one), and `again`: the command that confirms up front, for the hint without a terminal.
    pub fn ask(&self, yes: bool, what: &str, typed: bool, again: &str) -> Result<()> {
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
                "review the above, then run `{again}` (--yes never skips a safety check)"
            ))
            .into());
        }
        let name = &self.env.name;
        let account = &self.env.account.value;
        let prompt = if typed && self.env.protected {
            format!("`{name}` is protected. Type its name to {what} on account {account}: ")
        } else if typed {
            format!("Type the environment's name (`{name}`) to {what} on account {account}: ")
        } else {
            format!("{} on {}? [y/N] ", capitalise(what), self.who())
        };
        self.printer.err(&self.printer.paint(style::BOLD, &prompt));
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if stdin.lock().read_line(&mut answer)? == 0 {
            // Ctrl-D: the cursor is still on the prompt line.
            self.printer.err("\n");
            return Err(Failure::error(
                "cancelled: no answer (end of input at the prompt); nothing was changed",
            )
            .not_notified()
            .into());
        }
        let answer = answer.trim();
        let ok = if typed {
            answer == name
        } else {
            matches!(answer, "y" | "Y" | "yes" | "YES" | "Yes")
        };
        if ok {
            return Ok(());
        }
        Err(Failure::error("cancelled: nothing was changed")
            .not_notified()
            .hint(if typed {
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

/// A resource that the plan changes and that was changed outside envlock since the live
/// generation was written: applying the plan reverts that edit.
#[derive(Debug, Clone, Serialize)]
pub struct Overwritten {
    pub resource: String,
    /// `edited`, `added` or `removed` (outside envlock).
    pub drift: &'static str,
    /// The live generation it drifted from.
    pub generation: GenerationId,
}

/// The resources `plan` changes that drifted from the live generation (`status`'s drift),
/// or why that could not be told. `live`: what the plan was computed against.
pub fn overwritten(
    target: &dyn Target,
    plan: &Plan,
    live: &crate::target::Live,
) -> Result<Vec<Overwritten>, TargetError> {
    let Some(generation) = live.generation.filter(|_| !plan.is_empty()) else {
        return Ok(Vec::new());
    };
    let names = plan.changes.iter().map(|c| c.resource.clone()).collect();
    let drift = target.drift_of(live, &names)?;
    let mut out = Vec::new();
    for (kind, names) in [
        ("edited", &drift.edited),
        ("added", &drift.added),
        ("removed", &drift.removed),
    ] {
        out.extend(
            names
                .iter()
                .filter(|n| plan.changes.iter().any(|c| c.resource == **n))
                .map(|n| Overwritten {
                    resource: n.clone(),
                    drift: kind,
                    generation,
                }),
        );
    }
    out.sort_by(|a, b| a.resource.cmp(&b.resource));
    Ok(out)
}

/// `Note: 2 resources were changed outside envlock ...`, before a plan that reverts them.
fn overwritten_note(printer: &Printer, over: &[Overwritten], local: bool) -> String {
    let Some(first) = over.first() else {
        return String::new();
    };
    format!(
        "{} {} resource{} changed {} since generation {} was deployed; this plan reverts \
         {} (marked below)\n\n",
        printer.paint_out(style::WARN, "Note:"),
        over.len(),
        if over.len() == 1 { " was" } else { "s were" },
        if local { "by hand" } else { "outside envlock" },
        first.generation,
        if over.len() == 1 {
            "that change"
        } else {
            "those changes"
        }
    )
}

/// The marker after a resource's plan line when the plan reverts a change made outside
/// envlock.
fn overwritten_mark(o: &Overwritten, local: bool) -> String {
    format!("  <- {}", overwritten_words(o, local))
}

/// What a plan says of a resource it changes that was changed outside envlock: `edited by
/// hand since generation 3: this reverts the edit`.
pub fn overwritten_words(o: &Overwritten, local: bool) -> String {
    use status::{DriftKind, drift_word};
    let (kind, verb) = match o.drift {
        "added" => (DriftKind::Added, "this removes it"),
        "removed" => (DriftKind::Removed, "this puts it back"),
        _ => (DriftKind::Edited, "this reverts the edit"),
    };
    let how = match (local, kind) {
        // `status` says "not managed by envlock" of a key someone else added; here it was added.
        (false, DriftKind::Added) => "added outside envlock",
        _ => drift_word(local, kind),
    };
    format!("{how} since generation {}: {verb}", o.generation)
}

/// The plan as text: one `+`/`~`/`-` line per resource with its diff, then the summary.
/// Resources in `over` (changed outside envlock, on a `local` dir target or elsewhere) are
/// marked.
pub fn render_plan(printer: &Printer, plan: &Plan, over: &[Overwritten], local: bool) -> String {
    let mut s = overwritten_note(printer, over, local);
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
        if let Some(o) = over.iter().find(|o| o.resource == change.resource) {
            s.push_str(&printer.paint_out(style::WARN, &overwritten_mark(o, local)));
        }
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
