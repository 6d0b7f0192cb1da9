//! `deploy log [--target NAME]` and `deploy log verify [--target NAME]`: read and check the
//! deployment logs of the environments whose targets this machine can reach.
//!
//! Reading a log needs no clean working tree and runs no identity command: it writes nothing.
//! The target's stamp must still say the environment, so that a log is never shown under
//! another environment's name.

use std::path::Path;

use anyhow::Result;
use envlock::audit;
use envlock::config::{Environment, Keep};
use envlock::deploy::{self, open_target};
use envlock::error::{Exit, Failure};
use envlock::log::{self, Problem, Record, SealedDamage};
use envlock::output::{Format, Printer, style};
use envlock::target::StampState;
use envlock::workspace;
use serde::Serialize;

use super::table;
use crate::cli::{LogArgs, LogCommand};

mod report;

/// One environment's log, as found.
#[derive(Serialize)]
struct EnvLog {
    environment: String,
    /// The target's name in a fleet (`[targets.NAME]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<String>,
    target: String,
    /// `ok`, `sealed` (verifies, around damage that `deploy log seal` set aside), `empty`
    /// (never deployed from here), `unreachable`, `foreign` (stamped for another environment or
    /// account), `broken` (does not verify).
    status: &'static str,
    /// Why it is unreachable, foreign or empty.
    reason: Option<String>,
    /// Records that verify.
    records: usize,
    /// The hash of the last record that verifies.
    head: Option<String>,
    problem: Option<Problem>,
    /// Damage set aside by seal records, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sealed: Vec<SealedDamage>,
    /// Records signed (of `records`), and whether any was judged under `allowed_signers`.
    signed: usize,
    signers_enforced: bool,
    /// Every record that parses, with its line, oldest first.
    #[serde(skip)]
    entries: Vec<(usize, Record)>,
}

#[derive(Serialize)]
struct LogDoc {
    ok: bool,
    /// Every record of the logs read, newest first.
    records: Vec<Record>,
    environments: Vec<EnvLog>,
}

#[derive(Serialize)]
struct VerifyDoc<'a> {
    ok: bool,
    environments: &'a [EnvLog],
}

pub fn run(dir: &Path, args: LogArgs, printer: &Printer) -> Result<Exit> {
    let LogArgs {
        target,
        environments,
        since,
        until,
        operator,
        outcomes,
        command,
    } = args;
    let mut names = environments;
    match command {
        Some(LogCommand::Verify(ref v)) => names.extend(v.target.clone().or(target)),
        Some(LogCommand::Seal(seal)) => return super::plan::seal(dir, seal, printer),
        None => names.extend(target),
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let wanted = Wanted::parse(since, until, operator, outcomes)?;
    if command.is_some() && wanted.filter.is_active() {
        return Err(Failure::usage(
            "`deploy log verify` checks whole logs: --since, --until, --operator and --outcome select records to show",
        )
        .hint("use them with `deploy log`; `deploy log verify --target NAME` checks one environment")
        .into());
    }
    let repo = workspace::open(dir)?;
    let (commit, config) = workspace::load(&repo, "HEAD", Keep::Nothing)?;
    // Read-only: it runs on a dirty tree and says what it does not show.
    workspace::warn_dirty(
        printer,
        &repo.dirty_config_files().unwrap_or_default(),
        &commit,
    );
    let envs: Vec<&Environment> = if names.is_empty() {
        config.environments.iter().collect()
    } else {
        names
            .iter()
            .map(|n| workspace::environment(&config, n))
            .collect::<Result<_>>()?
    };
    // `log verify` needs only the chain; parsing every record is for the table.
    let parse = command.is_none();
    let mut policy = |c: &str| deploy::signing::policy_at(&repo, c);
    // A fleet's targets each keep their own log (the first also holds the `rollout` records).
    let each_target: Vec<(Environment, Option<String>)> = envs
        .iter()
        .flat_map(|e| match &e.fleet {
            Some(f) => f
                .members
                .iter()
                .map(|m| (e.member(m), Some(m.name.clone())))
                .collect(),
            None => vec![((*e).clone(), None)],
        })
        .collect();
    let logs: Vec<EnvLog> = each_target
        .iter()
        .map(|(e, member)| EnvLog {
            member: member.clone(),
            ..read(e, parse, &mut policy)
        })
        .collect();
    // A named environment whose log cannot be read is an error, not a note.
    for l in logs.iter().filter(|l| names.contains(&l.environment)) {
        refuse_unreadable(&l.environment, l)?;
    }
    match (command, printer.format) {
        (Some(LogCommand::Verify(_)), _) => verify(logs, printer),
        (_, Format::Csv) => report::csv(&repo, logs, &wanted.filter, printer),
        (_, Format::Html) => report::html(&repo, &commit, logs, &wanted, printer),
        _ => show(logs, &wanted.filter, printer),
    }
}

/// The filters, parsed (a usage error, exit 64, for one that does not parse), and as given.
pub(crate) struct Wanted {
    filter: audit::Filter,
    /// `--since 2026-11-21` …, for the HTML report's heading.
    given: Vec<String>,
}

impl Wanted {
    fn parse(
        since: Option<String>,
        until: Option<String>,
        operator: Option<String>,
        outcomes: Vec<String>,
    ) -> Result<Wanted> {
        let time = |flag: &str, s: &str, end: bool| {
            audit::parse_time(s, end).map_err(|why| {
                Failure::usage(format!("{flag}: {why}")).hint(format!(
                    "write a date or an RFC 3339 timestamp, e.g. {flag} {}",
                    audit::TIME_EXAMPLE
                ))
            })
        };
        let mut given = Vec::new();
        let mut filter = audit::Filter::default();
        if let Some(s) = &since {
            filter.since = Some(time("--since", s, false)?.0);
            given.push(format!("--since {s}"));
        }
        if let Some(u) = &until {
            filter.until = Some(time("--until", u, true)?);
            given.push(format!("--until {u}"));
        }
        if let Some(o) = &operator {
            given.push(format!("--operator {o}"));
        }
        filter.operator = operator;
        for o in &outcomes {
            let outcome = audit::parse_outcome(o).map_err(|why| {
                Failure::usage(format!("--outcome: {why}"))
                    .hint("e.g. `deploy log --outcome rolled-back --outcome failed`")
            })?;
            filter.outcomes.push(outcome);
            given.push(format!("--outcome {o}"));
        }
        Ok(Wanted { filter, given })
    }
}

/// With `--target`, a log that cannot be read is an error, not a note.
fn refuse_unreadable(name: &str, l: &EnvLog) -> Result<()> {
    let reason = l.reason.clone().unwrap_or_default();
    match l.status {
        "foreign" => Err(Failure::refused(format!(
            "{} is not `{name}`'s target: {reason}",
            l.target
        ))
        .hint("[target] leads into another environment's target; nothing was read")
        .into()),
        "unreachable" => Err(Failure::error(format!(
            "cannot read `{name}`'s deployment log from this machine: {reason}"
        ))
        .into()),
        _ => Ok(()),
    }
}

fn read(env: &Environment, parse: bool, policy: &mut dyn FnMut(&str) -> log::Policy) -> EnvLog {
    let mut l = EnvLog {
        environment: env.name.clone(),
        member: None,
        target: env.target.describe(),
        status: "ok",
        reason: None,
        records: 0,
        head: None,
        problem: None,
        sealed: Vec::new(),
        signed: 0,
        signers_enforced: false,
        entries: Vec::new(),
    };
    let target = match open_target(env) {
        Ok(t) => t,
        Err(e) => {
            l.status = "unreachable";
            l.reason = Some(format!("{e}"));
            return l;
        }
    };
    l.target = target.describe();
    match target.stamp() {
        Ok(StampState::Stamped(s))
            if s.environment == env.name && s.account == env.account.value => {}
        Ok(StampState::Stamped(s)) => {
            l.status = "foreign";
            l.reason = Some(format!(
                "it is stamped for `{}` (account {})",
                s.environment, s.account
            ));
            return l;
        }
        Ok(StampState::Absent) => {
            l.status = "empty";
            l.reason = Some("never deployed to".into());
            return l;
        }
        Ok(StampState::Unstamped { .. }) => {
            l.status = "foreign";
            l.reason = Some("it holds data but no envlock stamp".into());
            return l;
        }
        Err(e) => {
            l.status = "unreachable";
            l.reason = Some(e.to_string());
            return l;
        }
    }
    let (mut v, sigs, entries) = match verified(&*target, env, parse, policy) {
        Ok(found) => found,
        Err(e) => {
            l.status = "unreachable";
            l.reason = Some(e.to_string());
            return l;
        }
    };
    l.signed = sigs.signed;
    l.signers_enforced = sigs.enforced;
    if let Some(p) = sigs.problem {
        v.records = p.line.saturating_sub(1).min(v.records);
        v.problem = Some(p);
    }
    l.records = v.records;
    l.head = Some(v.head);
    if v.problem.is_some() {
        l.status = "broken";
        l.problem = v.problem;
    } else if !v.sealed.is_empty() {
        l.status = "sealed";
    }
    l.sealed = v.sealed;
    l.entries = entries;
    l
}

/// A log's verification, its signatures, and its records (with their lines) when parsed.
type Found = (log::Verified, log::Signatures, Vec<(usize, Record)>);

/// The log's chain and every signature (against `allowed_signers` as of the commit each record
/// names), and with `parse` its records. Without, the log is streamed: memory holds one batch
/// of it, whatever its length.
fn verified(
    target: &dyn envlock::target::Target,
    env: &Environment,
    parse: bool,
    policy: &mut dyn FnMut(&str) -> log::Policy,
) -> Result<Found, envlock::target::TargetError> {
    if !parse {
        let reader = target
            .log_open()?
            .unwrap_or_else(|| Box::new(std::io::empty()));
        let s = log::verify_log(reader, &env.name, policy).map_err(log::read_error)?;
        // Records removed from the end leave a chain that verifies; the checkpoint knows.
        let removed = target.log_removed().ok().flatten();
        let mut v = s.verified;
        log::removed_problem(&mut v, s.newlines, removed);
        return Ok((v, s.signatures, Vec::new()));
    }
    let bytes = target.log_read()?.unwrap_or_default();
    let removed = target.log_removed().ok().flatten();
    let v = log::verify_removed(&bytes, removed);
    let sigs = log::verify_signatures(&bytes, &v, &env.name, policy);
    Ok((v, sigs, log::numbered_records(&bytes)))
}

/// The line shown under a record whose `[notify] url` notification was not delivered.
fn undelivered(r: &Record) -> Option<String> {
    r.notify.as_ref().filter(|n| !n.delivered).map(|n| {
        format!(
            "{} notification NOT delivered ({} attempt{}): {}",
            n.format,
            n.attempts,
            if n.attempts == 1 { "" } else { "s" },
            n.error.as_deref().unwrap_or_default()
        )
    })
}

/// Newest first: by time, then by environment, then by sequence within one log.
fn newest_first(a: &Record, b: &Record) -> std::cmp::Ordering {
    b.time
        .cmp(&a.time)
        .then_with(|| a.environment.cmp(&b.environment))
        .then_with(|| b.seq.cmp(&a.seq))
}

fn show(logs: Vec<EnvLog>, filter: &audit::Filter, printer: &Printer) -> Result<Exit> {
    let mut logs = logs;
    let mut records: Vec<Record> = logs
        .iter_mut()
        .flat_map(|l| std::mem::take(&mut l.entries))
        .map(|(_, r)| r)
        .filter(|r| filter.matches(r))
        .collect();
    records.sort_by(newest_first);
    if printer.is_json() {
        printer.json(&LogDoc {
            ok: true,
            records,
            environments: logs,
        })?;
        return Ok(Exit::Success);
    }
    // On a terminal a reason fits its width (after `    ↳ ` and the `…`); elsewhere (a file,
    // a pipe, CI logs) it is never cut.
    let reason_width = printer.out_width().map(|w| w.saturating_sub(7).max(20));
    if records.is_empty() && filter.is_active() {
        printer.err("No record matches the filters.\n");
    } else if records.is_empty() {
        printer.err("No deployment has been recorded in the logs this machine can reach.\n");
    } else {
        printer.out(&text_table(&records, reason_width))?;
    }
    notes(&logs, printer);
    Ok(Exit::Success)
}

/// The records as a table, each reason (and undelivered notification) on a line below.
fn text_table(records: &[Record], reason_width: Option<usize>) -> String {
    let header = [
        "TIME",
        "ENVIRONMENT",
        "SEQ",
        "ACTION",
        "OUTCOME",
        "COMMIT",
        "GEN",
        "CHANGES",
        "OPERATOR",
    ];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.time.clone(),
                r.environment.clone(),
                r.seq.to_string(),
                r.action.as_str().to_owned(),
                r.outcome.as_str().to_owned(),
                r.commit[..r.commit.len().min(12)].to_owned(),
                r.generation.map_or("-".into(), |g| g.to_string()),
                format!(
                    "+{} ~{} -{}",
                    r.changes.add, r.changes.change, r.changes.remove
                ),
                r.operator.display(),
            ]
        })
        .collect();
    let mut out = String::new();
    for (i, line) in table(&header, &rows).lines().enumerate() {
        out.push_str(line);
        out.push('\n');
        let Some(r) = i.checked_sub(1).map(|i| &records[i]) else {
            continue;
        };
        if let Some(reason) = &r.reason {
            out.push_str(&format!("    ↳ {}\n", one_line(reason, reason_width)));
        }
        // A notification that was not delivered is shown under its record, like a reason.
        if let Some(note) = undelivered(r) {
            out.push_str(&format!("    ↳ {}\n", one_line(&note, reason_width)));
        }
    }
    out
}

/// On stderr: damage sealed, logs that do not verify, and logs not read (and why).
fn notes(logs: &[EnvLog], printer: &Printer) {
    for l in logs {
        for s in &l.sealed {
            printer.err(&format!(
                "{} {}\n",
                printer.paint(style::WARN, "warning:"),
                sealed_note(&l.environment, s)
            ));
        }
        let note = match l.status {
            "ok" | "sealed" => continue,
            "broken" => format!(
                "{} the log of `{}` does not verify: {} (`deploy log verify --target {}`)",
                printer.paint(style::WARN, "warning:"),
                l.environment,
                l.problem.as_ref().map_or("", |p| p.message.as_str()),
                l.environment
            ),
            status => format!(
                "{}: `{}` ({}): {}",
                status,
                l.environment,
                l.target,
                l.reason.as_deref().unwrap_or("")
            ),
        };
        printer.err(&format!("{note}\n"));
    }
}

impl EnvLog {
    /// `prod`, or `prod target canary` for one target of a fleet.
    fn who(&self) -> String {
        match &self.member {
            Some(m) => format!("{} target {m}", self.environment),
            None => self.environment.clone(),
        }
    }
}

fn verify(logs: Vec<EnvLog>, printer: &Printer) -> Result<Exit> {
    let ok = logs.iter().all(|l| l.status != "broken");
    if printer.is_json() {
        printer.json(&VerifyDoc {
            ok,
            environments: &logs,
        })?;
    } else {
        let mut out = String::new();
        for l in &logs {
            let line = match l.status {
                "ok" | "sealed" => format!(
                    "{}: {} record{}, chain intact{}; head {}",
                    l.who(),
                    l.records,
                    if l.records == 1 { "" } else { "s" },
                    signed_note(l),
                    l.head.as_deref().unwrap_or("")
                ),
                "broken" => format!(
                    "{}: {} {}",
                    l.who(),
                    printer.paint_out(style::ERROR, "BROKEN:"),
                    l.problem.as_ref().map_or("", |p| p.message.as_str())
                ),
                status => format!(
                    "{}: not verified ({status}: {})",
                    l.who(),
                    l.reason.as_deref().unwrap_or("")
                ),
            };
            out.push_str(&line);
            out.push('\n');
            if matches!(l.status, "ok" | "sealed") && l.records > 0 && !l.signers_enforced {
                out.push_str(&format!(
                    "  {} the records of `{}` are not signed: the repository has no `allowed_signers`, so anyone who can write the log can rewrite it (README: \"Signed records and who may deploy\")\n",
                    printer.paint_out(style::WARN, "warning:"),
                    l.environment
                ));
            }
            for s in &l.sealed {
                out.push_str(&format!(
                    "  {} {}\n",
                    printer.paint_out(style::WARN, "SEALED DAMAGE:"),
                    sealed_note(&l.environment, s)
                ));
            }
        }
        printer.out(&out)?;
    }
    let Some(first) = logs.iter().find(|l| l.status == "broken") else {
        return Ok(Exit::Success);
    };
    let p = first.problem.as_ref();
    Err(Failure::error(format!(
        "the deployment log of `{}` does not verify: {}",
        first.environment,
        p.map_or("", |p| p.message.as_str())
    ))
    .detail(format!(
        "{} record{} before it verif{}",
        first.records,
        if first.records == 1 { "" } else { "s" },
        if first.records == 1 { "ies" } else { "y" }
    ))
    .hint("the log was altered or damaged after it was written; keep a copy of it for the audit and compare it with a backup or an earlier `deploy log verify` head")
    .json_printed(printer.is_json())
    .into())
}

/// `, 3 signed` after the chain's verdict, when records are signed.
fn signed_note(l: &EnvLog) -> String {
    if l.signed == 0 {
        return String::new();
    }
    let all = if l.signed == l.records {
        "all signatures verify".to_owned()
    } else {
        format!("{} signed, signatures verify", l.signed)
    };
    format!(", {all}")
}

/// `s` on one line; cut to `max` characters (and `…`) when `max` is given.
fn one_line(s: &str, max: Option<usize>) -> String {
    // Control characters (a terminal escape in a reason someone wrote) are shown, not obeyed.
    let flat = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(|c: char| c.is_control(), "\u{fffd}");
    let Some(max) = max.filter(|m| flat.chars().count() > *m) else {
        return flat;
    };
    let mut out: String = flat.chars().take(max).collect();
    out.push('…');
    out
}

/// One sealed damage, for people: where it is, what it was, who sealed it and why.
fn sealed_note(env: &str, s: &SealedDamage) -> String {
    let end = if s.seal_line > s.line + 1 {
        format!("lines {}-{}", s.line, s.seal_line - 1)
    } else {
        format!("line {}", s.line)
    };
    format!(
        "the log of `{env}` has sealed damage at line {} ({}: {}); the bytes of {end} are set aside (kept as they were) by seal record {} (line {}), {} at {}: {}",
        s.line,
        s.kind.as_str(),
        one_line(&s.problem, None),
        s.seal_seq,
        s.seal_line,
        one_line(&s.operator, None),
        one_line(&s.time, None),
        one_line(&s.reason, None)
    )
}
