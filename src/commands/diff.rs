//! `deploy diff REV1 REV2`: how each environment's resolved configuration changes (PR review);
//! `--format markdown` writes it as a merge-request comment, one diff per resource.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use envlock::config::Config;
use envlock::config::Keep;
use envlock::error::{Exit, Failure};
use envlock::markdown;
use envlock::output::{Format, Printer, style};
use envlock::render;
use envlock::workspace;
use serde::Serialize;
use similar::TextDiff;

use crate::cli::DiffArgs;

#[derive(Serialize)]
struct DiffJson {
    from: String,
    to: String,
    environments: Vec<EnvDiff>,
}

#[derive(Serialize)]
struct EnvDiff {
    name: String,
    /// added, removed, changed, unchanged, or invalid (does not resolve at one of the commits).
    change: &'static str,
    /// Unified diff of the canonical resolved configuration (empty when unchanged).
    diff: String,
}

pub fn run(dir: &Path, args: DiffArgs, printer: &Printer) -> Result<Exit> {
    let DiffArgs { from, to } = args;
    let repo = workspace::open(dir)?;
    let (c1, old) = workspace::load(&repo, &from, Keep::All)?;
    let (c2, new) = workspace::load(&repo, &to, Keep::All)?;
    let render_all = |config: &envlock::config::Config| -> BTreeMap<String, Option<String>> {
        let mut m: BTreeMap<String, Option<String>> = config
            .environments
            .iter()
            .map(|e| (e.name.clone(), Some(render::environment_toml(e))))
            .collect();
        for b in &config.broken {
            m.insert(b.clone(), None);
        }
        m
    };
    let (a, b) = (render_all(&old), render_all(&new));
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    let mut envs = Vec::new();
    let mut invalid = Vec::new();
    for name in names {
        let (before, after) = (a.get(name), b.get(name));
        let (change, old_text, new_text) = match (before, after) {
            (Some(None), _) | (_, Some(None)) => {
                invalid.push(name.clone());
                ("invalid", "", "")
            }
            (None, Some(Some(n))) => ("added", "", n.as_str()),
            (Some(Some(o)), None) => ("removed", o.as_str(), ""),
            (Some(Some(o)), Some(Some(n))) if o == n => ("unchanged", o.as_str(), n.as_str()),
            (Some(Some(o)), Some(Some(n))) => ("changed", o.as_str(), n.as_str()),
            (None, None) => continue,
        };
        let diff = if matches!(change, "unchanged" | "invalid") {
            String::new()
        } else {
            unified(name, old_text, new_text, &c1.short(), &c2.short())
        };
        envs.push(EnvDiff {
            name: name.clone(),
            change,
            diff,
        });
    }
    if printer.format == Format::Markdown {
        let revs = (
            (from.as_str(), &c1.short()[..]),
            (to.as_str(), &c2.short()[..]),
        );
        printer.out(&markdown_body(&old, &new, &envs, revs))?;
    } else if printer.is_json() {
        printer.json(&DiffJson {
            from: c1.id.to_string(),
            to: c2.id.to_string(),
            environments: envs,
        })?;
    } else {
        let mut out = String::new();
        for e in &envs {
            let (sign, st) = match e.change {
                "added" => ("+", style::ADD),
                "removed" => ("-", style::REMOVE),
                "changed" => ("~", style::CHANGE),
                "invalid" => ("!", style::ERROR),
                _ => continue,
            };
            out.push_str(&printer.paint_out(st, &format!("{sign} {} ({})", e.name, e.change)));
            out.push('\n');
            for line in e.diff.lines() {
                let st = if line.starts_with("+++") || line.starts_with("---") {
                    style::BOLD
                } else if line.starts_with('+') {
                    style::ADD
                } else if line.starts_with('-') {
                    style::REMOVE
                } else if line.starts_with("@@") {
                    style::HINT
                } else {
                    anstyle::Style::new()
                };
                out.push_str(&printer.paint_out(st, line));
                out.push('\n');
            }
        }
        let changed = envs.iter().filter(|e| e.change != "unchanged").count();
        out.push_str(&format!(
            "{changed} of {} environment{} differ between {} ({from}) and {} ({to})\n",
            envs.len(),
            if envs.len() == 1 { "" } else { "s" },
            c1.short(),
            c2.short()
        ));
        printer.out(&out)?;
    }
    if invalid.is_empty() {
        Ok(Exit::Success)
    } else {
        Err(Failure::error(format!(
            "cannot diff {} because {} not resolve at one of the commits",
            invalid.join(", "),
            if invalid.len() == 1 {
                "it does"
            } else {
                "they do"
            }
        ))
        .hint(format!(
            "`deploy check --rev {from}` and `deploy check --rev {to}` show why"
        ))
        .json_printed(printer.is_json())
        .into())
    }
}

/// The unified diff of one environment's canonical resolved configuration between two commits
/// (`deploy diff`, and each deployment in `deploy log --format html`).
pub(crate) fn unified(name: &str, old: &str, new: &str, from: &str, to: &str) -> String {
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("{name} @ {from}"), &format!("{name} @ {to}"))
        .to_string()
}

/// `--format markdown`: each environment's parts (`render::environment_parts`) diffed one by
/// one between the two configurations. `revs`: (as given, short commit id) of each side.
fn markdown_body(
    old: &Config,
    new: &Config,
    envs: &[EnvDiff],
    revs: ((&str, &str), (&str, &str)),
) -> String {
    let parts = |config: &Config, name: &str| {
        config
            .get(name)
            .map(render::environment_parts)
            .unwrap_or_default()
    };
    let (from, to) = revs;
    let environments: Vec<markdown::EnvDiff> = envs
        .iter()
        .map(|e| markdown::EnvDiff {
            name: e.name.clone(),
            change: e.change,
            changes: match e.change {
                "unchanged" | "invalid" => Vec::new(),
                _ => markdown::changes_between(
                    &parts(old, &e.name),
                    &parts(new, &e.name),
                    from.1,
                    to.1,
                ),
            },
        })
        .collect();
    markdown::diff(
        &markdown::DiffInput {
            from,
            to,
            environments: &environments,
        },
        markdown::BUDGET,
    )
}
