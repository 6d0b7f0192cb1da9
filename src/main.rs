//! The `deploy` binary: parse arguments, run one command, map the outcome to an exit code.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod commands;

use std::io;
use std::process::ExitCode;

use clap::Parser;
use envlock::error::{Exit, Failure, exit_for};
use envlock::output::{Format, Printer};

use cli::{Cli, OutputFormat};

fn main() -> ExitCode {
    // Before anything is created: the modes envlock asks for are the modes it gets.
    envlock::target::perms::fix_umask();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => Exit::Usage as u8,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let printer = Printer::new(match cli.format {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
    });
    match commands::run(cli, &printer) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            report(&printer, &err);
            let exit = exit_for(&err);
            if printer.is_json() && !already_printed_json(&err) {
                // Programs still get one document on stdout.
                let _ = printer.json(&ErrorJson {
                    ok: false,
                    exit_code: exit as u8,
                    error: err.to_string(),
                    hint: err
                        .chain()
                        .find_map(|e| e.downcast_ref::<Failure>())
                        .and_then(|f| f.hint.clone()),
                });
            }
            ExitCode::from(exit as u8)
        }
    }
}

/// The document `--format json` prints when a command fails before producing its own.
#[derive(serde::Serialize)]
struct ErrorJson {
    ok: bool,
    exit_code: u8,
    error: String,
    hint: Option<String>,
}

/// Commands that already printed their JSON document mark their failure as reported.
fn already_printed_json(err: &anyhow::Error) -> bool {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .is_some_and(|f| f.json_printed)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Print an error: the message, `Caused by:` lines, details and a hint.
fn report(printer: &Printer, err: &anyhow::Error) {
    if let Some(f) = err.chain().find_map(|e| e.downcast_ref::<Failure>()) {
        let mut details = f.details.clone();
        // Context added on top of the failure comes first, as in anyhow's own rendering.
        let outer: Vec<String> = err
            .chain()
            .take_while(|e| e.downcast_ref::<Failure>().is_none())
            .map(|e| e.to_string())
            .collect();
        let message = if outer.is_empty() {
            f.message.clone()
        } else {
            details.insert(0, format!("Caused by: {}", f.message));
            outer.join(": ")
        };
        printer.error(&message, &details, f.hint.as_deref());
        return;
    }
    let causes: Vec<String> = err
        .chain()
        .skip(1)
        .map(|c| format!("Caused by: {c}"))
        .collect();
    printer.error(&err.to_string(), &causes, None);
}
