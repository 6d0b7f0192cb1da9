//! `deploy adopt --target NAME`: the explicit adoption of a missing or empty target. It starts
//! as every command that looks at a target does (`plan.rs`), then calls
//! [`envlock::deploy::adopt::adopt`].

use std::path::Path;

use anyhow::Result;
use envlock::error::Exit;
use envlock::output::Printer;

use super::plan::{Job, run as run_on_target};
use crate::cli::{AdoptArgs, MigrateArgs};

pub fn run(dir: &Path, args: AdoptArgs, printer: &Printer) -> Result<Exit> {
    let AdoptArgs { target, yes } = args;
    run_on_target(dir, &target, Job::Adopt { yes }, printer)
}

/// `deploy migrate --target NAME --from DIR`: move an `exec` target's state from a directory
/// into the shared store its configuration names ([`envlock::deploy::migrate::migrate`]).
pub fn migrate(dir: &Path, args: MigrateArgs, printer: &Printer) -> Result<Exit> {
    let MigrateArgs { target, from, yes } = args;
    run_on_target(dir, &target, Job::Migrate { from, yes }, printer)
}
