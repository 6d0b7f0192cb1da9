//! `deploy envs`: list the environments of a commit.

use std::path::Path;

use anyhow::Result;
use envlock::config::{Environment, Keep};
use envlock::deploy::open_target;
use envlock::error::{Exit, Failure};
use envlock::log;
use envlock::output::Printer;
use envlock::target::StampState;
use envlock::workspace;
use serde::Serialize;

use crate::cli::RevArgs;

/// One row of `deploy envs --format json`.
#[derive(Serialize)]
struct EnvRow {
    name: String,
    account: String,
    schema: String,
    target: String,
    target_kind: String,
    protected: bool,
    branch: Option<String>,
    after: Vec<String>,
    resources: usize,
    /// The last record of the environment's deployment log, when its target is reachable
    /// from this machine and stamped for it.
    last_deployment: Option<LastDeployment>,
}

#[derive(Serialize)]
struct LastDeployment {
    time: String,
    action: String,
    outcome: String,
    commit: String,
    generation: Option<u64>,
}

/// The last log record of `env`'s target (never one of another environment's target).
fn last_deployment(env: &Environment) -> Option<LastDeployment> {
    let target = open_target(env).ok()?;
    match target.stamp().ok()? {
        StampState::Stamped(s) if s.environment == env.name && s.account == env.account.value => {}
        _ => return None,
    }
    let r = log::last_record(&*target).ok()??;
    Some(LastDeployment {
        time: r.time,
        action: r.action.as_str().to_owned(),
        outcome: r.outcome.as_str().to_owned(),
        commit: r.commit,
        generation: r.generation,
    })
}

pub fn run(dir: &Path, args: RevArgs, printer: &Printer) -> Result<Exit> {
    let RevArgs { rev } = args;
    let repo = workspace::open(dir)?;
    let (commit, config) = workspace::load(&repo, &rev, Keep::Nothing)?;
    // Read-only: it runs on a dirty tree and says what it does not show.
    workspace::warn_dirty(
        printer,
        &repo.dirty_config_files().unwrap_or_default(),
        &commit,
    );
    let rows: Vec<EnvRow> = config
        .environments
        .iter()
        .map(|e| EnvRow {
            name: e.name.clone(),
            account: e.account.value.clone(),
            schema: e.schema.value.clone(),
            target: e.target_label(),
            target_kind: if e.fleet.is_some() {
                "fleet".to_owned()
            } else {
                e.target.kind_name().to_owned()
            },
            protected: e.protected,
            branch: e.branch.as_ref().map(|b| b.value.clone()),
            after: e.after.iter().map(|a| a.value.clone()).collect(),
            resources: e.resource_count,
            last_deployment: last_deployment(e),
        })
        .collect();
    if printer.is_json() {
        printer.json(&rows)?;
    } else {
        let header = [
            "NAME",
            "ACCOUNT",
            "SCHEMA",
            "TARGET",
            "PROTECTED",
            "BRANCH",
            "LAST DEPLOYMENT",
        ];
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.account.clone(),
                    r.schema.clone(),
                    r.target.clone(),
                    if r.protected { "yes" } else { "no" }.to_owned(),
                    r.branch.clone().unwrap_or_else(|| "-".into()),
                    r.last_deployment.as_ref().map_or_else(
                        || "-".to_owned(),
                        |l| {
                            format!(
                                "{} {} {}",
                                &l.time[..l.time.len().min(19)],
                                l.outcome,
                                &l.commit[..l.commit.len().min(12)]
                            )
                        },
                    ),
                ]
            })
            .collect();
        let out = super::table(&header, &table);
        printer.out(&out)?;
        printer.diagnostics(&config.sources, &config.diagnostics);
    }
    if config.diagnostics.is_empty() {
        Ok(Exit::Success)
    } else {
        Err(Failure::error(format!(
            "the configuration at {rev} has {} problem(s); environments with errors are not listed",
            config.diagnostics.len()
        ))
        .json_printed(printer.is_json())
        .hint("`deploy check` explains every problem")
        .into())
    }
}
