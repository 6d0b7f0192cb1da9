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
    text_product(printer, &String::from_utf8_lossy(&buf))
}

pub fn man(printer: &Printer) -> Result<Exit> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
    text_product(printer, &String::from_utf8_lossy(&buf))
}

/// A product that is text (a script, roff): as is, or with `--format json` inside the one
/// document stdout holds.
fn text_product(printer: &Printer, text: &str) -> Result<Exit> {
    if printer.is_json() {
        printer.json(&serde_json::json!({ "ok": true, "text": text }))?;
    } else {
        printer.out(text)?;
    }
    Ok(Exit::Success)
}
