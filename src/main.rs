//! The `deploy` binary: parse arguments, run one command, map the outcome to an exit code.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod commands;

use std::ffi::OsString;
use std::io;
use std::process::ExitCode;

use clap::Parser;
use envlock::error::{Exit, Failure, exit_for};
use envlock::output::{Format, Printer};

use cli::{Cli, OutputFormat};

fn main() -> ExitCode {
    // Before anything is created: the modes envlock asks for are the modes it gets.
    envlock::target::perms::fix_umask();
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(suggest_target(e), json_requested(&args)),
    };
    let printer = Printer::new(match cli.format {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
        OutputFormat::Sarif => Format::Sarif,
        OutputFormat::Markdown => Format::Markdown,
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Html => Format::Html,
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

/// Whether the command line asks for `--format json` (`--format json` or `--format=json`, the
/// last one wins, nothing after `--`), read before clap has parsed it: a usage error must be
/// one JSON document too.
fn json_requested(args: &[OsString]) -> bool {
    let mut json = false;
    let mut words = args.iter().skip(1).map(|a| a.to_str());
    while let Some(word) = words.next() {
        match word {
            Some("--") => break,
            Some("--format") => json = words.next().flatten() == Some("json"),
            Some(w) if w.starts_with("--format=") => json = w == "--format=json",
            _ => {}
        }
    }
    json
}

/// `deploy prod`: a word that is not a command but could be an environment's name gets a tip
/// naming `--target`, unless clap already suggests a similar command.
fn suggest_target(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::InvalidSubcommand || e.get(ContextKind::SuggestedSubcommand).is_some()
    {
        return e;
    }
    let Some(ContextValue::String(word)) = e.get(ContextKind::InvalidSubcommand) else {
        return e;
    };
    let name_like = word.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name_like {
        let tip =
            format!("to deploy an environment, name it with --target: `deploy --target {word}`");
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![tip.into()]),
        );
    }
    e
}

/// A command line clap refused (exit 64), or `--help`/`--version` (exit 0): clap's text on
/// stderr (help and version on stdout), and with `--format json` one document on stdout.
fn usage_error(e: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    let shown = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    let code = if shown { 0 } else { Exit::Usage as u8 };
    if !json {
        let _ = e.print();
        return ExitCode::from(code);
    }
    let text = e.render().to_string();
    let printer = Printer::new(Format::Json);
    if shown {
        printer.err(&text);
        let _ = printer.json(&ShownJson {
            ok: true,
            exit_code: 0,
            text,
        });
    } else {
        let _ = e.print();
        let _ = printer.json(&clap_error_json(&text, code));
    }
    ExitCode::from(code)
}

/// clap's rendered error as the failure document: its `error:` line, its tips as the hint.
fn clap_error_json(text: &str, code: u8) -> ErrorJson {
    let mut lines = text.lines().map(str::trim);
    let first = lines.next().unwrap_or_default();
    let error = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    let tips: Vec<&str> = lines.filter_map(|l| l.strip_prefix("tip: ")).collect();
    ErrorJson {
        ok: false,
        exit_code: code,
        error,
        hint: Some(if tips.is_empty() {
            "`deploy --help` lists the commands and their flags".to_owned()
        } else {
            tips.join("; ")
        }),
    }
}

/// What `--format json` prints for `--help` and `--version`: clap's text.
#[derive(serde::Serialize)]
struct ShownJson {
    ok: bool,
    exit_code: u8,
    text: String,
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
