//! `deploy schema`, `deploy completions`, `deploy man`: generated from the same definitions.

use anyhow::Result;
use clap::CommandFactory;
use envlock::error::Exit;
use envlock::output::Printer;

use crate::cli::Cli;

/// The JSON Schema of environment files; `schemas/envlock-environment.schema.json` is a copy.
pub const ENVIRONMENT_SCHEMA: &str = include_str!("../config/environment.schema.json");

pub fn schema(printer: &Printer) -> Result<Exit> {
    printer.out(ENVIRONMENT_SCHEMA)?;
    Ok(Exit::Success)
}

pub fn completions(shell: clap_complete::Shell, printer: &Printer) -> Result<Exit> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "deploy", &mut buf);
    printer.out(&String::from_utf8_lossy(&buf))?;
    Ok(Exit::Success)
}

pub fn man(printer: &Printer) -> Result<Exit> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
    printer.out(&String::from_utf8_lossy(&buf))?;
    Ok(Exit::Success)
}
