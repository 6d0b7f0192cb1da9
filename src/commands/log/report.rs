//! `deploy log --format csv` and `--format html`: the auditor's view of the logs read by
//! `deploy log`, with each record's signature status, its signer's principal and (HTML) the
//! diff of the configuration it deployed, as `deploy diff` shows it.

use std::collections::HashMap;

use anyhow::Result;
use envlock::audit::{self, Diff, Entry, EnvReport, Signature};
use envlock::error::Exit;
use envlock::log::{Policy, Record};
use envlock::output::Printer;
use envlock::repo::{CommitInfo, Repo};
use envlock::{deploy, render, workspace};

use super::{EnvLog, Wanted, newest_first, notes};

/// `allowed_signers` per commit, read once each.
struct Principals<'r> {
    repo: &'r Repo,
    policies: HashMap<String, Policy>,
}

impl Principals<'_> {
    /// The principals `allowed_signers` (at the commit that judged `r`) gives `r`'s signer.
    fn of(&mut self, r: &Record) -> Option<String> {
        let signer = r.signer.as_ref()?;
        let commit = r.signers_commit.as_ref().unwrap_or(&r.commit);
        let repo = self.repo;
        let policy = self
            .policies
            .entry(commit.clone())
            .or_insert_with(|| deploy::signing::policy_at(repo, commit));
        let Policy::Present(allowed) = policy else {
            return None;
        };
        allowed
            .signers
            .iter()
            .find(|s| &s.fingerprint == signer)
            .map(|s| s.principals.clone())
    }
}

/// One log's records as the auditor sees them (the filtered ones, newest first), with the
/// verification of the whole log.
fn env_report(l: &EnvLog, filter: &audit::Filter, principals: &mut Principals) -> EnvReport {
    let mut entries: Vec<Entry> = l
        .entries
        .iter()
        .filter(|(_, r)| filter.matches(r))
        .map(|(line, r)| Entry {
            signature: Signature::of(*line, r.signature.is_some(), l.problem.as_ref(), &l.sealed),
            principal: principals.of(r),
            record: r.clone(),
            line: *line,
            diff: None,
        })
        .collect();
    entries.sort_by(|a, b| newest_first(&a.record, &b.record));
    EnvReport {
        name: l.environment.clone(),
        member: l.member.clone(),
        target: l.target.clone(),
        status: l.status,
        reason: l.reason.clone(),
        problem: l.problem.clone(),
        sealed: l.sealed.clone(),
        signed: l.signed,
        enforced: l.signers_enforced,
        total: l.entries.len(),
        entries,
    }
}

/// `--format csv`: every selected record of every log, newest first.
pub(super) fn csv(
    repo: &Repo,
    logs: Vec<EnvLog>,
    filter: &audit::Filter,
    printer: &Printer,
) -> Result<Exit> {
    let mut principals = Principals {
        repo,
        policies: HashMap::new(),
    };
    let reports: Vec<EnvReport> = logs
        .iter()
        .map(|l| env_report(l, filter, &mut principals))
        .collect();
    let mut entries: Vec<&Entry> = reports.iter().flat_map(|e| &e.entries).collect();
    entries.sort_by(|a, b| newest_first(&a.record, &b.record));
    printer.out(&audit::csv::document(&entries))?;
    notes(&logs, printer);
    Ok(Exit::Success)
}

/// `--format html`: one page.
pub(super) fn html(
    repo: &Repo,
    head: &CommitInfo,
    logs: Vec<EnvLog>,
    wanted: &Wanted,
    printer: &Printer,
) -> Result<Exit> {
    let mut principals = Principals {
        repo,
        policies: HashMap::new(),
    };
    let mut configs = Configs {
        repo,
        texts: HashMap::new(),
    };
    let mut environments = Vec::new();
    let mut diffs = Vec::new();
    for l in &logs {
        let mut report = env_report(l, &wanted.filter, &mut principals);
        diffs.extend(link_diffs(l, &mut report, &mut configs));
        environments.push(report);
    }
    let report = audit::Report {
        generated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        commit: head.id.to_string(),
        summary: head.summary.clone(),
        filters: wanted.given.clone(),
        environments,
        diffs,
    };
    printer.out(&audit::html::document(&report))?;
    notes(&logs, printer);
    Ok(Exit::Success)
}

/// Each shown record that names a commit gets the anchor of the diff from the commit deployed
/// before it in the same log (the latest earlier record that made a generation of a commit live
/// and healthy) to its own;
/// each pair is embedded once. Returns the diffs made.
fn link_diffs(l: &EnvLog, report: &mut EnvReport, configs: &mut Configs) -> Vec<Diff> {
    let mut before: HashMap<usize, Option<String>> = HashMap::new();
    let mut deployed: Option<String> = None;
    for (line, r) in &l.entries {
        before.insert(*line, deployed.clone());
        // A commit made live: `deploy adopt` stamps (generation none) and deploys nothing.
        if r.outcome.proves_healthy() && r.generation.is_some() && !r.commit.is_empty() {
            deployed = Some(r.commit.clone());
        }
    }
    let mut diffs: Vec<Diff> = Vec::new();
    for e in report
        .entries
        .iter_mut()
        .filter(|e| !e.record.commit.is_empty())
    {
        let from = before.get(&e.line).cloned().flatten();
        let to = e.record.commit.clone();
        // One diff per (previous commit, configuration deployed): commits that resolve the
        // environment the same way share it.
        let text = configs.text(&report.name, &to);
        let same = diffs.iter_mut().find(|d| {
            d.from == from
                && (d.to == to || (text.is_ok() && configs.text(&report.name, &d.to) == text))
        });
        if let Some(d) = same {
            if d.to != to && !d.also.contains(&to) {
                d.also.push(to);
            }
            e.diff = Some(d.id.clone());
            continue;
        }
        let short = |c: &str| c.chars().take(12).collect::<String>();
        let id = format!(
            "diff-{}-{}-{}",
            report.name,
            from.as_deref().map_or("none".to_owned(), short),
            short(&to)
        );
        let body = configs.diff(&report.name, from.as_deref(), &to);
        e.diff = Some(id.clone());
        diffs.push(Diff {
            id,
            environment: report.name.clone(),
            from,
            to,
            also: Vec::new(),
            body,
        });
    }
    diffs
}

/// Each environment's resolved configuration per commit, rendered as `deploy diff` renders
/// it (secrets as their references, never values), read once each.
struct Configs<'r> {
    repo: &'r Repo,
    texts: HashMap<(String, String), Result<String, String>>,
}

impl Configs<'_> {
    fn text(&mut self, env: &str, commit: &str) -> Result<String, String> {
        let repo = self.repo;
        self.texts
            .entry((env.to_owned(), commit.to_owned()))
            .or_insert_with(|| resolved(repo, env, commit))
            .clone()
    }

    /// The unified diff `from` → `to` of `env`, or why there is none to show.
    fn diff(&mut self, env: &str, from: Option<&str>, to: &str) -> Result<String, String> {
        let new = self.text(env, to)?;
        let old = match from {
            Some(f) => self.text(env, f)?,
            None => String::new(),
        };
        let short = |c: &str| c.chars().take(12).collect::<String>();
        if old == new {
            return Err(format!(
                "the resolved configuration of `{env}` at {} is the same as at {}, deployed before it",
                short(to),
                short(from.unwrap_or(""))
            ));
        }
        let from_short = from.map_or("(nothing)".to_owned(), short);
        Ok(crate::commands::diff::unified(
            env,
            &old,
            &new,
            &from_short,
            &short(to),
        ))
    }
}

/// `env`'s canonical resolved configuration at `commit`, or why it cannot be shown.
fn resolved(repo: &Repo, env: &str, commit: &str) -> Result<String, String> {
    let short: String = commit.chars().take(12).collect();
    let Ok(c) = repo.commit(commit) else {
        return Err(format!(
            "commit {short} is not in this repository, so its configuration cannot be shown (fetch it and run again)"
        ));
    };
    let config = workspace::load_only(repo, &c, &[env.to_owned()])
        .map_err(|e| format!("the configuration at commit {short} cannot be read: {e}"))?;
    match config.get(env) {
        Some(e) => Ok(render::environment_toml(e)),
        None if config.broken.iter().any(|b| b == env) => Err(format!(
            "`{env}` does not resolve at commit {short} (`deploy check --rev {short}` shows why)"
        )),
        None => Err(format!("`{env}` does not exist at commit {short}")),
    }
}
