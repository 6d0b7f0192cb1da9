//! Opening the repository and loading the configuration of one commit: shared by all commands.

use std::path::{Component, Path};

use anyhow::{Context, Result};

use crate::config::{self, Config, Environment, Keep};
use crate::diagnostic::Diagnostic;
use crate::error::Failure;
use crate::output::{Printer, style};
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
pub fn load(repo: &Repo, rev: &str, keep: Keep) -> Result<(CommitInfo, Config)> {
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
    let mut config = config::load_keeping(input, keep);
    let symlinked = committed_symlinks(repo, &commit, &config);
    config.diagnostics.extend(symlinked);
    // Every environment's, not only the one deployed: no command sees any secret's variable.
    crate::process::withhold(
        config
            .environments
            .iter()
            .flat_map(|e| e.secret_vars.clone()),
    );
    blame_changed(repo, &commit, &mut config);
    Ok((commit, config))
}

/// The environments `names` at `commit` with their resources (the promotion gate hashes them):
/// loaded from their own files and the layers only, so the cost does not grow with the other
/// environments.
pub fn load_only(repo: &Repo, commit: &CommitInfo, names: &[String]) -> Result<Config> {
    let mut input = repo.read_config(commit)?;
    input.environments.retain(|f| {
        f.path
            .strip_prefix("environments/")
            .and_then(|p| p.strip_suffix(".toml"))
            .is_some_and(|stem| stem.starts_with('_') || names.iter().any(|n| n == stem))
    });
    Ok(config::load_keeping(input, Keep::All))
}

/// A target path (a `dir` target's `path`, an `exec` target's `state`) inside the repository that
/// goes through a symlink committed in the tree: a safety problem at `file:line:col` of the path,
/// since the symlink can lead it into another environment's target or generation. (Symlinks
/// outside the repository are resolved and re-checked when the target is opened.)
fn committed_symlinks(repo: &Repo, commit: &CommitInfo, config: &Config) -> Vec<Diagnostic> {
    let Some(root) = repo.workdir() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for env in &config.environments {
        let (written, resolved) = match &env.target.kind {
            config::TargetKind::Dir { path, resolved, .. } => (path, resolved.as_path()),
            config::TargetKind::Exec { state, store, .. } => match store.dir() {
                Some((resolved, _)) => (state, resolved),
                None => continue,
            },
            config::TargetKind::Etcd { .. } => continue,
        };
        let Ok(rel) = resolved.strip_prefix(root) else {
            continue;
        };
        let Ok(Some((link, dest))) = repo.committed_symlink(commit, rel) else {
            continue;
        };
        out.push(
            Diagnostic::new(
                "symlinked-target",
                format!(
                    "the target path `{}` of `{}` goes through `{}`, a symlink committed in the \
                     repository (to `{dest}`)",
                    written.value,
                    env.name,
                    link.display()
                ),
            )
            .safety()
            .env(env.name.clone())
            .at(written.loc.clone(), "through a committed symlink")
            .hint(
                "a target path must be made of real directories: a symlink can lead it into \
                 another environment's target or generation; write the real path",
            ),
        );
    }
    out
}

/// Tell a clash between two files (two environments with one target) from the side of the
/// file this commit changed, so the marker lands on the new copy, not on the file it copied.
fn blame_changed(repo: &Repo, commit: &CommitInfo, config: &mut Config) {
    if config.diagnostics.iter().all(|d| d.other_side.is_none()) {
        return;
    }
    let Ok(changed) = repo.changed_config_files(commit) else {
        return;
    };
    crate::diagnostic::prefer_changed(&mut config.diagnostics, &config.sources, &|path| {
        changed.iter().any(|c| c == path)
    });
}

/// Refuse (exit 3) when `environments/` or `schemas/` have uncommitted or untracked changes.
pub fn require_clean(repo: &Repo) -> Result<()> {
    refuse_dirty(repo.dirty_config_files())
}

/// What [`require_clean`] does with the status of `environments/` and `schemas/`
/// ([`Repo::dirty_config_files`]), for a caller that read it beforehand.
pub fn refuse_dirty(status: Result<Vec<(String, &'static str)>, RepoError>) -> Result<()> {
    let dirty = status.context("cannot read the working tree's status")?;
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

/// The uncommitted files under `environments/` and `schemas/`, for a command that only reads
/// (it shows the commit and says the tree is dirty); a status that cannot be read is an error.
pub fn read_dirty(
    status: Result<Vec<(String, &'static str)>, RepoError>,
) -> Result<Vec<(String, &'static str)>> {
    status.context("cannot read the working tree's status")
}

/// `warning: uncommitted changes ... are not shown`, on stderr, for a read-only command.
pub fn warn_dirty(printer: &Printer, dirty: &[(String, &'static str)], commit: &CommitInfo) {
    if dirty.is_empty() {
        return;
    }
    let mut text = format!(
        "{} the configuration has uncommitted changes ({} file{}); this shows commit {} ({}), not them:\n",
        printer.paint(style::WARN, "warning:"),
        dirty.len(),
        if dirty.len() == 1 { "" } else { "s" },
        commit.short(),
        commit.rev
    );
    for (path, what) in dirty {
        text.push_str(&format!("  {what}: {path}\n"));
    }
    text.push_str(
        "  deploy reads configuration from commits only; commit (and review) them to deploy them\n",
    );
    printer.err(&text);
}

/// Refuse (exit 3) when a command the environment runs from inside the repository (a relative
/// argv[0] such as `./hooks/health.sh`) is not exactly as committed: what runs must have been
/// reviewed like the configuration that names it.
pub fn require_committed_commands(repo: &Repo, env: &Environment) -> Result<()> {
    let mut specs = Vec::new();
    let sections = [
        ("identity", env.identity.as_ref().map(|i| &i.command)),
        ("health", env.health.as_ref().map(|h| &h.command)),
        (
            "notify",
            env.notify.as_ref().and_then(|n| n.command.as_ref()),
        ),
    ];
    for (section, argv) in sections {
        let Some(program) = argv.and_then(|a| a.first()) else {
            continue;
        };
        if !program.contains('/') || program.starts_with('/') {
            continue;
        }
        // Only paths that stay inside the repository can be compared with a commit.
        let path = Path::new(program);
        if path.components().any(|c| c == Component::ParentDir) {
            continue;
        }
        let parts: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        let rel = parts.join("/");
        specs.push((section, rel));
    }
    let paths: Vec<String> = specs.iter().map(|(_, p)| p.clone()).collect();
    let dirty = repo
        .dirty_files(&paths, true)
        .context("cannot read the working tree's status")?;
    if dirty.is_empty() {
        return Ok(());
    }
    let mut f = Failure::refused(format!(
        "a command that `{}` runs is not as committed ({} file{})",
        env.name,
        dirty.len(),
        if dirty.len() == 1 { "" } else { "s" }
    ));
    for (path, what) in &dirty {
        let section = specs
            .iter()
            .find(|(_, p)| p == path)
            .map_or("", |(s, _)| *s);
        f = f.detail(format!("{what}: {path} ([{section}] command)"));
    }
    Err(f
        .hint("commands inside the repository run as committed and reviewed; commit them, or restore them with `git checkout -- <file>`")
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
    let close = names
        .iter()
        .filter(|n| !n.starts_with('_') && edit_distance(n, name) <= 2)
        .min_by_key(|n| edit_distance(n, name));
    let mut f = Failure::error(match close {
        Some(c) => format!("unknown environment `{name}` (did you mean `{c}`?)"),
        None => format!("unknown environment `{name}`"),
    });
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

/// Levenshtein distance, for "did you mean" (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn edit_distance_counts_single_edits() {
        use super::edit_distance;
        assert_eq!(edit_distance("prod", "prod"), 0);
        assert_eq!(edit_distance("prdo", "prod"), 2);
        assert_eq!(edit_distance("prod", "prd"), 1);
        assert_eq!(edit_distance("validation", "prod"), 9);
    }
}
