//! `deploy plan`, `deploy apply` / `deploy --target NAME`, `deploy status`,
//! `deploy rollback` and (through `adopt.rs`) `deploy adopt`: everything that looks at a target.
//!
//! All start the same way: configuration from HEAD, a clean working tree, the named environment
//! valid, the repository side of the environment lock intact, HEAD on `branch`. Then the
//! library's [`envlock::deploy`] does the live side. Failures of `apply` and `rollback` after
//! the environment is known are told to its `[notify] command`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use envlock::config::{Config, Keep};
use envlock::deploy::saved::SavedPlan;
use envlock::deploy::{self, Deployment};
use envlock::diagnostic::Class;
use envlock::error::{Exit, Failure, exit_for};
use envlock::markdown;
use envlock::output::{Format, Printer};
use envlock::repo::{CommitInfo, Repo, RepoError};
use envlock::workspace;

use crate::cli::{ApplyArgs, LogSealArgs, PlanArgs, RollbackArgs, StatusArgs};

/// The status of `environments/` and `schemas/` in the working tree
/// ([`Repo::dirty_config_files`]).
type ConfigStatus = Result<Vec<(String, &'static str)>, RepoError>;

/// Everything that must hold before a target is even looked at. `status`: the working tree's,
/// read while the configuration loaded. A `job` that writes refuses uncommitted
/// configuration; the others (they show the commit) get the dirty files back, to say so.
fn prepare(
    repo: &Repo,
    status: ConfigStatus,
    job: &Job,
    config: &Config,
    commit: &CommitInfo,
    name: &str,
    printer: &Printer,
) -> Result<Vec<(String, &'static str)>> {
    let dirty = if matches!(
        job,
        Job::Apply { .. } | Job::Rollback { .. } | Job::Adopt { .. } | Job::Migrate { .. }
    ) {
        workspace::refuse_dirty(status)?;
        Vec::new()
    } else {
        workspace::read_dirty(status)?
    };
    // The lock is a property of the whole repository: any cross-environment problem means
    // someone confused environments, so nothing is deployed from this commit.
    let safety: Vec<_> = config
        .diagnostics
        .iter()
        .filter(|d| d.class == Class::Safety)
        .cloned()
        .collect();
    if !safety.is_empty() {
        printer.diagnostics(&config.sources, &safety);
        return Err(Failure::refused(format!(
            "refusing to deploy `{name}`: commit {} breaks the environment lock ({} problem{})",
            commit.short(),
            safety.len(),
            if safety.len() == 1 { "" } else { "s" }
        ))
        .hint("fix the configuration and merge it through review; `deploy check` must pass first")
        .into());
    }
    let own: Vec<_> = config
        .diagnostics
        .iter()
        .filter(|d| d.environment.as_deref() == Some(name))
        .cloned()
        .collect();
    if !own.is_empty() {
        printer.diagnostics(&config.sources, &own);
        return Err(Failure::error(format!(
            "environment `{name}` is invalid at {} ({} problem{})",
            commit.short(),
            own.len(),
            if own.len() == 1 { "" } else { "s" }
        ))
        .hint("`deploy check` lists every problem")
        .into());
    }
    let env = workspace::environment(config, name)?;
    workspace::require_committed_commands(repo, env)?;
    Ok(dirty)
}

/// Which command is running, for what happens after `prepare`.
pub(super) enum Job {
    Plan {
        out: Option<PathBuf>,
        detailed_exitcode: bool,
    },
    Apply {
        yes: bool,
        /// `--plan FILE` and the plan read from it.
        saved: Option<Box<(PathBuf, SavedPlan)>>,
    },
    Status,
    Rollback {
        to: Option<u64>,
        yes: bool,
    },
    Adopt {
        yes: bool,
    },
    /// `deploy migrate --from DIR`.
    Migrate {
        from: PathBuf,
        yes: bool,
    },
    /// `deploy log seal`.
    Seal {
        reason: Option<String>,
        yes: bool,
    },
}

pub(super) fn run(dir: &Path, name: &str, job: Job, printer: &Printer) -> Result<Exit> {
    let repo = workspace::open(dir)?;
    // A saved plan is applied from its own commit, whatever HEAD is now.
    let rev = match &job {
        Job::Apply {
            saved: Some(saved), ..
        } => {
            let (path, plan) = &**saved;
            if repo.commit(&plan.commit).is_err() {
                return Err(Failure::refused(format!(
                    "the plan {} is for commit {}, which this clone does not have",
                    path.display(),
                    plan.commit
                ))
                .hint(
                    "fetch it (`git fetch origin`), then apply the plan again; nothing was changed",
                )
                .into());
            }
            plan.commit.clone()
        }
        _ => "HEAD".to_owned(),
    };
    // The clean-tree check (`git status`, which re-hashes a file whose index entry is racily
    // clean) does not depend on the configuration: it runs on another core while that loads,
    // with its own handle on the repository (a handle is not shared between threads).
    let (loaded, status) = std::thread::scope(|s| {
        let status = s.spawn(|| Repo::discover(dir).map(|r| r.dirty_config_files()));
        (
            workspace::load(&repo, &rev, Keep::Only(name)),
            status.join(),
        )
    });
    let (commit, config) = loaded?;
    let status = match status {
        Ok(Ok(status)) => status,
        // Not expected (the same repository opened a moment ago): read it here after all.
        Ok(Err(_)) | Err(_) => repo.dirty_config_files(),
    };
    let notifies = matches!(
        job,
        Job::Apply { .. }
            | Job::Rollback { .. }
            | Job::Adopt { .. }
            | Job::Seal { .. }
            | Job::Migrate { .. }
    );
    let action = match job {
        Job::Rollback { .. } => "rollback",
        Job::Adopt { .. } => "adopt",
        Job::Seal { .. } => "seal",
        Job::Migrate { .. } => "migrate",
        _ => "apply",
    };
    // Whether this run's last `[notify] url` notification (with a log record) told of trouble.
    let paged = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let result = prepare(&repo, status, &job, &config, &commit, name, printer).and_then(|dirty| {
        let env = workspace::environment(&config, name)?;
        deploy::check_target_paths(env, &config.environments)?;
        if let Job::Apply {
            saved: Some(saved), ..
        } = &job
        {
            let (path, plan) = &**saved;
            plan.check_owner(env, path)?;
        }
        // A plan may be made anywhere (a pull request is not on `branch` yet); only what
        // writes must be on `branch`.
        match (&job, deploy::check_branch(&repo, env, &commit)) {
            (_, Ok(())) => {}
            // A seal deploys nothing: the commit only names the environment.
            (Job::Seal { .. }, Err(_)) => {}
            (Job::Plan { .. } | Job::Status, Err(e)) => printer.err(&format!(
                "{} {e:#}; `deploy apply` will refuse it until then\n",
                printer.paint(envlock::output::style::WARN, "warning:")
            )),
            (_, Err(e)) => return Err(e),
        }
        if let (Job::Plan { .. }, Some(b), Ok(Some(r))) =
            (&job, &env.branch, deploy::reviewed_ref(&repo, env))
        {
            printer.err(&format!(
                "Branch: `branch = \"{}\"` is checked against `{}` ({}).\n",
                b.value,
                r.short(),
                r.why()
            ));
        }
        // The gate hashes the `after` environments' resources, which the load above let go.
        let after_config = match &job {
            Job::Plan { .. } | Job::Apply { .. } if !env.after.is_empty() => {
                let names: Vec<String> = env.after.iter().map(|a| a.value.clone()).collect();
                Some(workspace::load_only(&repo, &commit, &names)?)
            }
            _ => None,
        };
        let mut d = Deployment::new(&repo, env, &commit, printer)?;
        d.paged = std::sync::Arc::clone(&paged);
        if let Some(after) = &after_config {
            d.after = env
                .after
                .iter()
                .filter_map(|a| after.get(&a.value))
                .collect();
        }
        d.accounts = config.accounts();
        workspace::warn_dirty(printer, &dirty, &commit);
        d.dirty = dirty;
        if let Job::Apply {
            saved: Some(saved), ..
        } = &job
        {
            d.plan_sha256 = Some(saved.1.id().to_owned());
        }
        // Who may deploy where: refused before anything is written.
        if !matches!(job, Job::Plan { .. } | Job::Status) {
            d.signing = deploy::signing::authorize(&d)?;
        }
        run_job(&d, job, printer)
    });
    // Tell the environment's notifier (from the reviewed commit) about every refusal, failure
    // and rollback, once the environment is known; not about a cancelled prompt.
    if notifies
        && let Err(err) = &result
        && let Some(env) = config.get(name)
        && !is_cancellation(err)
    {
        let exit = exit_for(err);
        let outcome = match exit {
            Exit::Refused => "refused",
            Exit::RolledBack => "rolled-back",
            Exit::Locked => "locked",
            _ => "failed",
        };
        if exit != Exit::Locked {
            let mut reason = err.to_string();
            if let Some(f) = err.chain().find_map(|e| e.downcast_ref::<Failure>()) {
                for d in &f.details {
                    reason.push_str("\n  ");
                    reason.push_str(d);
                }
            }
            if let Ok(mut d) = Deployment::new(&repo, env, &commit, printer) {
                d.paged = paged;
                d.notify(outcome, &reason, exit as u8);
                d.page_unrecorded(action, outcome, &reason);
            }
        }
    }
    // The process ends right after this, as after `check`: freeing every node of a large
    // configuration one by one only delays the exit.
    std::mem::forget(config);
    result
}

fn is_cancellation(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<Failure>())
        .any(|f| !f.notify)
}

fn run_job(d: &Deployment<'_>, job: Job, printer: &Printer) -> Result<Exit> {
    if let Some(fleet) = &d.env.fleet {
        return super::fleet::run_job(d, fleet, job, printer);
    }
    match job {
        Job::Plan {
            out,
            detailed_exitcode,
        } => {
            let report = deploy::apply::plan(d, out.is_some())?;
            if let (Some(path), Some(saved)) = (&out, &report.saved) {
                saved.write(path)?;
                d.say(&format!(
                    "Saved the plan to {} (checksum {}); apply it with `deploy apply --target {} --plan {}`.",
                    path.display(),
                    &saved.checksum[..12],
                    d.env.name,
                    path.display()
                ));
            }
            if printer.is_json() {
                printer.json(&report)?;
            } else if printer.format == Format::Markdown {
                printer.out(&plan_markdown(d, &report, markdown::BUDGET))?;
            }
            if detailed_exitcode && !report.changes.is_empty() {
                return Ok(Exit::ChangesPending);
            }
            Ok(Exit::Success)
        }
        Job::Apply { yes, saved } => finish(
            deploy::apply::apply(d, yes, saved.as_deref().map(|(_, p)| p))?,
            printer,
        ),
        Job::Rollback { to, yes } => finish(deploy::apply::rollback(d, to, yes)?, printer),
        Job::Adopt { yes } => {
            let report = deploy::adopt::adopt(d, yes)?;
            if printer.is_json() {
                printer.json(&report)?;
            }
            Ok(Exit::Success)
        }
        Job::Migrate { from, yes } => {
            let report = deploy::migrate::migrate(d, &from, yes)?;
            if printer.is_json() {
                printer.json(&report)?;
            }
            Ok(Exit::Success)
        }
        Job::Seal { reason, yes } => {
            let report = deploy::seal::seal(d, reason.as_deref(), yes)?;
            d.say(&format!(
                "Sealed: record {} of `{}`'s deployment log sets aside the damage at line {} and continues the chain from head {}; `deploy log verify` reports it as sealed.",
                report.log.seq, report.environment, report.damage.line, report.old_head
            ));
            if printer.is_json() {
                printer.json(&report)?;
            }
            Ok(Exit::Success)
        }
        Job::Status => {
            let status = deploy::status::status(d)?;
            if printer.is_json() {
                printer.json(&status)?;
            }
            Ok(Exit::Success)
        }
    }
}

/// `deploy plan --format markdown`: the report as a merge-request comment.
pub(super) fn plan_markdown(
    d: &Deployment<'_>,
    report: &deploy::apply::Report,
    budget: usize,
) -> String {
    let local = matches!(d.env.target.kind, envlock::config::TargetKind::Dir { .. });
    let drift: Vec<(String, String)> = report
        .overwrites_drift
        .iter()
        .map(|o| (o.resource.clone(), deploy::overwritten_words(o, local)))
        .collect();
    markdown::plan(
        &markdown::PlanInput {
            environment: &report.environment,
            account: &report.account,
            target: &report.target,
            commit: &report.commit,
            live: report.generation,
            unadopted: report.adopted.then_some(d.env.protected),
            changes: &report.changes,
            drift: &drift,
        },
        budget,
    )
}

/// Print the JSON report; a rollback becomes exit 4. The run happened whether or not stdout
/// still has a reader, so a closed stdout does not change the exit code.
pub(super) fn finish(report: deploy::apply::Report, printer: &Printer) -> Result<Exit> {
    if printer.is_json()
        && let Err(e) = printer.json(&report)
        && !printer.stdout_closed()
    {
        return Err(e.into());
    }
    if report.outcome == "rolled-back" {
        return Err(report
            .rolled_back_failure()
            .json_printed(printer.is_json())
            .into());
    }
    Ok(Exit::Success)
}

pub fn plan(dir: &Path, args: PlanArgs, printer: &Printer) -> Result<Exit> {
    let PlanArgs {
        target,
        out,
        detailed_exitcode,
    } = args;
    run(
        dir,
        &target,
        Job::Plan {
            out,
            detailed_exitcode,
        },
        printer,
    )
}

pub fn apply(dir: &Path, args: ApplyArgs, printer: &Printer) -> Result<Exit> {
    let ApplyArgs { target, yes, plan } = args;
    let Some(target) = target else {
        return Err(Failure::usage("`deploy apply` needs --target NAME").into());
    };
    // Relative to where deploy was started, like any file argument (not to -C).
    let saved = match plan {
        Some(path) => {
            let plan = SavedPlan::read(&path)?;
            Some(Box::new((path, plan)))
        }
        None => None,
    };
    run(dir, &target, Job::Apply { yes, saved }, printer)
}

pub fn status(dir: &Path, args: StatusArgs, printer: &Printer) -> Result<Exit> {
    let StatusArgs { target } = args;
    run(dir, &target, Job::Status, printer)
}

pub fn rollback(dir: &Path, args: RollbackArgs, printer: &Printer) -> Result<Exit> {
    let RollbackArgs { target, to, yes } = args;
    run(dir, &target, Job::Rollback { to, yes }, printer)
}

pub fn seal(dir: &Path, args: LogSealArgs, printer: &Printer) -> Result<Exit> {
    let LogSealArgs {
        target,
        reason,
        yes,
    } = args;
    run(dir, &target, Job::Seal { reason, yes }, printer)
}
