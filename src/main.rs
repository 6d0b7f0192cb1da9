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
            ExitCode::from(exit_for(&err) as u8)
        }
    }
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
