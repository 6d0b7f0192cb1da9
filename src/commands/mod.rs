//! One module per subcommand: arguments -> options -> library call -> output.

mod adopt;
mod check;
mod diff;
mod envs;
mod fleet;
mod log;
mod meta;
mod plan;

use std::path::{Path, PathBuf};

use anyhow::Result;
use envlock::error::{Exit, Failure};
use envlock::output::Printer;

use crate::cli::{Cli, Command, OutputFormat};

/// Run the command `cli` asks for.
pub fn run(cli: Cli, printer: &Printer) -> Result<Exit> {
    let Cli {
        directory,
        format,
        deploy,
        command,
    } = cli;
    require_format(command.as_ref(), format)?;
    if let Some(dir) = &directory {
        require_directory(dir)?;
    }
    let dir = directory.unwrap_or_else(|| PathBuf::from("."));
    if command.is_some() && (deploy.target.is_some() || deploy.yes || deploy.plan.is_some()) {
        return Err(Failure::usage(
            "--target, --yes and --plan before a command belong to the bare `deploy --target NAME`",
        )
        .hint("put them after the command, e.g. `deploy plan --target prod`")
        .into());
    }
    match command {
        Some(Command::Check(args)) => check::run(&dir, args, printer),
        Some(Command::Envs(args)) => envs::run(&dir, args, printer),
        Some(Command::Diff(args)) => diff::run(&dir, args, printer),
        Some(Command::Plan(args)) => plan::plan(&dir, args, printer),
        Some(Command::Apply(args)) => plan::apply(&dir, args, printer),
        Some(Command::Status(args)) => plan::status(&dir, args, printer),
        Some(Command::Rollback(args)) => plan::rollback(&dir, args, printer),
        Some(Command::Adopt(args)) => adopt::run(&dir, args, printer),
        Some(Command::Migrate(args)) => adopt::migrate(&dir, args, printer),
        Some(Command::Log(args)) => log::run(&dir, args, printer),
        Some(Command::Schema) => meta::schema(printer),
        Some(Command::Completions { shell }) => meta::completions(shell, printer),
        Some(Command::Man) => meta::man(printer),
        None => match deploy.target {
            Some(_) => plan::apply(&dir, deploy, printer),
            None => Err(Failure::usage("nothing to do: name an environment with --target NAME, or a command")
                .hint("`deploy --target prod` deploys prod; `deploy check` validates every environment; `deploy --help` lists the rest")
                .into()),
        },
    }
}

/// `--format sarif` is for `check`, `--format markdown` for `diff` and `plan`, `--format csv`
/// and `--format html` for `log` (not `log verify`): any other command refuses them (exit 64)
/// rather than print something else.
fn require_format(command: Option<&Command>, format: OutputFormat) -> Result<()> {
    let (word, for_whom) = match format {
        OutputFormat::Text | OutputFormat::Json => return Ok(()),
        OutputFormat::Sarif => ("sarif", "`deploy check`"),
        OutputFormat::Markdown => (
            "markdown",
            "`deploy diff REV1 REV2` and `deploy plan --target NAME`",
        ),
        OutputFormat::Csv => ("csv", "`deploy log`"),
        OutputFormat::Html => ("html", "`deploy log`"),
    };
    let auditor = matches!(format, OutputFormat::Csv | OutputFormat::Html);
    let (supported, name) = match command {
        Some(Command::Check(_)) => (format == OutputFormat::Sarif, "check"),
        Some(Command::Diff(_)) => (format == OutputFormat::Markdown, "diff"),
        Some(Command::Plan(_)) => (format == OutputFormat::Markdown, "plan"),
        Some(Command::Envs(_)) => (false, "envs"),
        Some(Command::Apply(_)) | None => (false, "apply"),
        Some(Command::Status(_)) => (false, "status"),
        Some(Command::Rollback(_)) => (false, "rollback"),
        Some(Command::Adopt(_)) => (false, "adopt"),
        Some(Command::Migrate(_)) => (false, "migrate"),
        Some(Command::Log(args)) => match &args.command {
            None => (auditor, "log"),
            Some(crate::cli::LogCommand::Verify(_)) => (false, "log verify"),
            Some(crate::cli::LogCommand::Seal(_)) => (false, "log seal"),
        },
        Some(Command::Schema) => (false, "schema"),
        Some(Command::Completions { .. }) => (false, "completions"),
        Some(Command::Man) => (false, "man"),
    };
    if supported {
        return Ok(());
    }
    Err(Failure::usage(format!(
        "`deploy {name}` cannot write --format {word}: only {for_whom} can"
    ))
    .hint(format!(
        "use --format text or --format json with `deploy {name}`"
    ))
    .into())
}

/// `-C DIR` must name a directory that exists (as `git -C` requires), before anything looks
/// for a repository there.
fn require_directory(dir: &Path) -> Result<()> {
    let problem = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => "is not a directory".to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        Err(e) => format!("cannot be read: {e}"),
    };
    Err(
        Failure::usage(format!("cannot run in {}: it {problem}", dir.display()))
            .hint("-C DIR names the directory to run in (the configuration repository or a directory inside it), as `git -C` does")
            .into(),
    )
}

/// A plain-text table: a header row and aligned columns, two spaces apart.
pub(crate) fn table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.as_ref().chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        let cells: Vec<&str> = cells.collect();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(AsRef::as_ref)));
    }
    out
}
