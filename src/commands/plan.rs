//! `deploy plan --target NAME` and `deploy apply` / `deploy --target NAME`.
//!
//! Both start the same way: a clean working tree, configuration from HEAD, the named environment
//! valid, and the repository side of the environment lock intact.

use std::path::Path;

use anyhow::Result;
use envlock::config::Config;
use envlock::diagnostic::Class;
use envlock::error::{Exit, Failure};
use envlock::output::Printer;
use envlock::repo::CommitInfo;
use envlock::workspace;

use crate::cli::{ApplyArgs, PlanArgs};

/// Everything that must hold before a target is even looked at.
fn prepare(dir: &Path, name: &str, printer: &Printer) -> Result<(CommitInfo, Config)> {
    let repo = workspace::open(dir)?;
    workspace::require_clean(&repo)?;
    let (commit, config) = workspace::load(&repo, "HEAD")?;
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
    workspace::environment(&config, name)?;
    Ok((commit, config))
}

pub fn plan(dir: &Path, args: PlanArgs, printer: &Printer) -> Result<Exit> {
    let PlanArgs { target } = args;
    let (commit, config) = prepare(dir, &target, printer)?;
    not_yet(&config, &target, &commit)
}

pub fn apply(dir: &Path, args: ApplyArgs, printer: &Printer) -> Result<Exit> {
    let ApplyArgs { target, yes: _ } = args;
    let Some(target) = target else {
        return Err(Failure::usage("`deploy apply` needs --target NAME").into());
    };
    let (commit, config) = prepare(dir, &target, printer)?;
    not_yet(&config, &target, &commit)
}

/// The live side (stamp, identity, diff, apply) is the next milestone; say so plainly.
fn not_yet(config: &Config, name: &str, commit: &CommitInfo) -> Result<Exit> {
    let env = workspace::environment(config, name)?;
    Err(Failure::error(format!(
        "`{name}` resolves and passes every repository check at {}, but this build cannot read or \
         write {} targets yet",
        commit.short(),
        env.target.describe()
    ))
    .hint("nothing was read from or written to the target")
    .into())
}
