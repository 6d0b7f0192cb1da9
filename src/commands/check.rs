//! `deploy check [--rev REV]`: validate every environment at one commit (the CI merge gate);
//! `--format sarif` reports the problems for code scanning.

use std::path::Path;

use anyhow::Result;
use envlock::config::Keep;
use envlock::diagnostic::DiagnosticJson;
use envlock::error::{Exit, Failure};
use envlock::output::{Format, Printer, style};
use envlock::{sarif, workspace};
use serde::Serialize;

use crate::cli::CheckArgs;

/// `--format json` output of `deploy check`.
#[derive(Serialize)]
struct CheckJson {
    ok: bool,
    commit: String,
    rev: String,
    environments: Vec<EnvStatus>,
    errors: Vec<DiagnosticJson>,
    /// Uncommitted files under `environments/` and `schemas/`: check reads the commit, so
    /// these were not checked.
    unchecked: Vec<Unchecked>,
}

#[derive(Serialize)]
struct Unchecked {
    path: String,
    /// `modified`, `untracked`, `deleted`, `staged, not committed`.
    status: &'static str,
}

#[derive(Serialize)]
struct EnvStatus {
    name: String,
    valid: bool,
}

pub fn run(dir: &Path, args: CheckArgs, printer: &Printer) -> Result<Exit> {
    let CheckArgs { rev } = args;
    let repo = workspace::open(dir)?;
    // The working tree's status (not checked, but named) is read on another core meanwhile.
    let (loaded, dirty) = std::thread::scope(|s| {
        let dirty = s.spawn(|| {
            envlock::repo::Repo::discover(dir)
                .and_then(|r| r.dirty_config_files())
                .unwrap_or_default()
        });
        let loaded = workspace::load(&repo, &rev, Keep::Nothing);
        (loaded, dirty.join().unwrap_or_default())
    });
    let (commit, config) = loaded?;
    let signers = signers_problem(&repo, &commit.id.to_string());
    let ok = config.diagnostics.is_empty();
    let names = config.names();
    let invalid: Vec<&String> = names
        .iter()
        .filter(|n| {
            config.broken.contains(n)
                || config
                    .diagnostics
                    .iter()
                    .any(|d| d.environment.as_deref() == Some(n.as_str()))
        })
        .collect();
    if printer.format == Format::Sarif {
        // The problems for the CI log too; the document is for the code-scanning upload.
        printer.diagnostics(&config.sources, &config.diagnostics);
        printer.json(&sarif::log(&sarif::Input {
            commit: &commit.id.to_string(),
            repository: sarif::repository_uri(repo.remote_url().as_deref(), repo.root()),
            root: repo.workdir().map(sarif::file_uri),
            sources: &config.sources,
            diagnostics: &config.diagnostics,
            unchecked: &dirty,
        }))?;
    } else if printer.is_json() {
        printer.json(&CheckJson {
            ok,
            commit: commit.id.to_string(),
            rev: rev.clone(),
            environments: names
                .iter()
                .map(|n| EnvStatus {
                    name: n.clone(),
                    valid: !invalid.contains(&n),
                })
                .collect(),
            errors: config
                .diagnostics
                .iter()
                .map(|d| d.to_json(&config.sources))
                .collect(),
            unchecked: dirty
                .iter()
                .map(|(path, status)| Unchecked {
                    path: path.clone(),
                    status,
                })
                .collect(),
        })?;
    } else {
        printer.diagnostics(&config.sources, &config.diagnostics);
        if ok && signers.is_none() {
            printer.out(&format!(
                "{} {} environment{} valid at {} ({}): {}\n",
                printer.paint_out(style::OK, "ok:"),
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                commit.short(),
                rev,
                names.join(", ")
            ))?;
        }
        if !dirty.is_empty() {
            printer.out(&unchecked_line(printer, &dirty, &commit.short()))?;
        }
    }
    let n = config.diagnostics.len();
    // The process ends right after this: freeing every node of a large configuration one by
    // one only delays the exit (measured at 4% of `check`).
    std::mem::forget(config);
    if let Some(f) = signers {
        return Err(f.json_printed(printer.is_json()).into());
    }
    if ok {
        return Ok(Exit::Success);
    }
    let list: Vec<&str> = invalid.iter().map(|s| s.as_str()).collect();
    Err(Failure::error(format!(
        "{n} problem{} at {} ({rev}){}",
        if n == 1 { "" } else { "s" },
        commit.short(),
        if list.is_empty() {
            String::new()
        } else {
            format!("; invalid: {}", list.join(", "))
        }
    ))
    .json_printed(printer.is_json())
    .into())
}

/// `allowed_signers` at the commit, when it exists and does not parse: `file:line:col`, the
/// line, and a caret under the column.
fn signers_problem(repo: &envlock::repo::Repo, commit: &str) -> Option<Failure> {
    use envlock::signing::ALLOWED_SIGNERS;
    let bytes = match repo.root_file(commit, ALLOWED_SIGNERS) {
        Ok(b) => b?,
        Err(e) => {
            return Some(Failure::error(format!(
                "{ALLOWED_SIGNERS} cannot be read: {e}"
            )));
        }
    };
    let e = envlock::deploy::signing::parse(&bytes).err()?;
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().nth(e.line - 1).unwrap_or_default();
    Some(
        Failure::error(e.to_string())
            .detail(format!("{:>4} | {line}", e.line))
            .detail(format!("     | {}^", " ".repeat(e.col.saturating_sub(1))))
            .hint("allowed_signers says who may deploy where: `principals namespaces=\"envlock-log@<environment>,…\" ssh-ed25519 <key>` per line (README: \"Signed records and who may deploy\")"),
    )
}

/// `note: not checked (uncommitted): environments/prod.toml (modified)`: check reads a commit,
/// so an edit not committed yet is neither valid nor invalid to it.
fn unchecked_line(printer: &Printer, dirty: &[(String, &'static str)], commit: &str) -> String {
    let files: Vec<String> = dirty
        .iter()
        .map(|(path, what)| format!("{path} ({what})"))
        .collect();
    format!(
        "{} not checked, because not committed (check reads commit {commit}): {}\n",
        printer.paint_out(style::WARN, "note:"),
        files.join(", ")
    )
}
