//! Opening the repository and loading the configuration of one commit: shared by all commands.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::{self, Config, Environment};
use crate::error::Failure;
use crate::repo::{CommitInfo, Repo, RepoError};

/// Open the repository containing `dir`.
pub fn open(dir: &Path) -> Result<Repo> {
    Repo::discover(dir).map_err(|e| match e {
        RepoError::NotARepository(_) => Failure::error(e.to_string())
            .hint("run deploy inside the configuration repository, or pass -C DIR")
            .into(),
        other => anyhow::Error::new(other),
    })
}

/// Resolve `rev` and load every environment at it.
pub fn load(repo: &Repo, rev: &str) -> Result<(CommitInfo, Config)> {
    let commit = repo.commit(rev).map_err(|e| match e {
        RepoError::BadRevision { .. } => anyhow::Error::new(
            Failure::error(e.to_string()).hint("name a commit, branch or tag, e.g. HEAD~1 or main"),
        ),
        RepoError::NoCommits => anyhow::Error::new(Failure::error(e.to_string()).hint(
            "commit environments/ and schemas/ first: configuration is read from commits only",
        )),
        other => anyhow::Error::new(other),
    })?;
    let input = repo.read_config(&commit).map_err(|e| match e {
        RepoError::NoEnvironments { .. } => anyhow::Error::new(
            Failure::error(e.to_string())
                .hint("environments live in environments/<name>.toml at the repository root"),
        ),
        other => anyhow::Error::new(other),
    })?;
    let config = config::load(input);
    Ok((commit, config))
}

/// Refuse (exit 3) when `environments/` or `schemas/` have uncommitted or untracked changes.
pub fn require_clean(repo: &Repo) -> Result<()> {
    let dirty = repo
        .dirty_config_files()
        .context("cannot read the working tree's status")?;
    if dirty.is_empty() {
        return Ok(());
    }
    let mut f = Failure::refused(format!(
        "the configuration has uncommitted changes ({} file{})",
        dirty.len(),
        if dirty.len() == 1 { "" } else { "s" }
    ));
    for (path, what) in &dirty {
        f = f.detail(format!("{what}: {path}"));
    }
    Err(f
        .hint("deploy reads configuration from commits only; commit (and review) these changes, or stash them, then run again")
        .into())
}

/// Find an environment by name; an unknown name is an error listing the valid ones.
pub fn environment<'a>(config: &'a Config, name: &str) -> Result<&'a Environment> {
    if let Some(env) = config.get(name) {
        return Ok(env);
    }
    let names = config.names();
    if names.iter().any(|n| n == name) {
        return Err(Failure::error(format!(
            "environment `{name}` has errors and cannot be used"
        ))
        .hint("fix the errors above; `deploy check` lists them all")
        .into());
    }
    let mut f = Failure::error(format!("unknown environment `{name}`"));
    f = f.hint(if names.is_empty() {
        "this commit defines no environments".to_owned()
    } else {
        format!("valid environments: {}", names.join(", "))
    });
    if name.starts_with('_') {
        f = f.detail(format!(
            "`{name}` is a shared layer, not a deployable environment"
        ));
    }
    Err(f.into())
}
