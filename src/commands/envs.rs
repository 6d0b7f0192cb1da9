//! `deploy envs`: list the environments of a commit.

use std::path::Path;

use anyhow::Result;
use envlock::error::{Exit, Failure};
use envlock::output::Printer;
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
}

pub fn run(dir: &Path, args: RevArgs, printer: &Printer) -> Result<Exit> {
    let RevArgs { rev } = args;
    let repo = workspace::open(dir)?;
    let (_commit, config) = workspace::load(&repo, &rev)?;
    let rows: Vec<EnvRow> = config
        .environments
        .iter()
        .map(|e| EnvRow {
            name: e.name.clone(),
            account: e.account.value.clone(),
            schema: e.schema.value.clone(),
            target: e.target.describe(),
            target_kind: e.target.kind_name().to_owned(),
            protected: e.protected,
            branch: e.branch.as_ref().map(|b| b.value.clone()),
            after: e.after.iter().map(|a| a.value.clone()).collect(),
            resources: e.settings.len(),
        })
        .collect();
    if printer.is_json() {
        printer.json(&rows)?;
    } else {
        let header = ["NAME", "ACCOUNT", "SCHEMA", "TARGET", "PROTECTED", "BRANCH"];
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
