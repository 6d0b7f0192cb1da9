//! `deploy log seal --target NAME --reason "..."`: the recorded way out of a damaged log.
//!
//! A deployment never appends to a log that does not verify. Once a person has looked at the
//! damage, sealing appends one `seal` record that names the first record that does not verify,
//! the last good head and the SHA-256 of the damaged bytes, and chains to that head: the log
//! verifies again, with the damage reported as sealed, and deployments go on. Nothing is
//! rewritten or removed; a change to the sealed bytes later is damage again.
//!
//! Same lock, stamp and identity checks as a deployment; the environment's name is typed on a
//! terminal (or `--yes` in CI). A log that verifies has nothing to seal (exit 3).

use std::io::IsTerminal;

use anyhow::Result;
use serde::Serialize;

use super::Deployment;
use super::apply::LogRef;
use crate::error::Failure;
use crate::log::{self, Changes, Entry, Operator, Problem, Verified};
use crate::target::{StampState, StateItem};

/// What `deploy log seal` did.
#[derive(Debug, Serialize)]
pub struct SealReport {
    pub ok: bool,
    pub environment: String,
    pub target: String,
    /// The damage set aside: the first record that did not verify.
    pub damage: Problem,
    /// Records that verified before it, and the hash of the last one (the old head).
    pub records_before: usize,
    pub old_head: String,
    /// The `seal` record appended.
    pub log: LogRef,
}

/// Seal the first damage of `d`'s log, after the owner checks and a confirmation.
pub fn seal(d: &Deployment<'_>, reason: Option<&str>, yes: bool) -> Result<SealReport> {
    let reason = require_reason(d, reason)?;
    let stamp = d.verify_owner()?;
    if !matches!(stamp, StampState::Stamped(_)) {
        return Err(Failure::refused(format!(
            "`{}` has never been deployed to {}: there is no log to seal",
            d.env.name,
            d.target.describe()
        ))
        .hint("nothing was written")
        .into());
    }
    let seen = damaged(d)?;
    let problem = seen.problem.clone().expect("damaged");
    confirm(d, &seen, &problem, yes)?;
    let _lock = d.lock()?;
    crate::failpoint::hit("seal-after-lock");
    let (line, record, now) = prepared(d, reason)?;
    if now.problem != seen.problem || now.head != seen.head {
        return Err(Failure::refused(
            "the deployment log changed while this seal was being confirmed; nothing was written",
        )
        .hint(format!(
            "run `deploy log verify --target {}` and look again",
            d.env.name
        ))
        .into());
    }
    d.target
        .log_append(&line)
        .map_err(|e| d.target_failure(e))?;
    let after = damaged(d).err();
    if after.is_none() {
        return Err(Failure::error(format!(
            "the seal record {} was appended, but the deployment log of `{}` still does not verify",
            record.seq, d.env.name
        ))
        .hint(format!(
            "`deploy log verify --target {}` names what is still wrong",
            d.env.name
        ))
        .into());
    }
    d.notify("sealed", &format!("{} ({reason})", problem.message), 0);
    Ok(SealReport {
        ok: true,
        environment: d.env.name.clone(),
        target: d.target.describe(),
        damage: problem,
        records_before: seen.records,
        old_head: seen.head,
        log: LogRef {
            seq: record.seq,
            hash: record.hash,
        },
    })
}

/// Show the damage and ask for the environment's name (or `--yes`).
fn confirm(d: &Deployment<'_>, seen: &Verified, problem: &Problem, yes: bool) -> Result<()> {
    d.say(&format!(
        "The deployment log of `{}` does not verify: {}\n  {} record{} verify before it (head {}); the damaged bytes stay in the log as they are.",
        d.env.name,
        problem.message,
        seen.records,
        if seen.records == 1 { "" } else { "s" },
        seen.head
    ));
    if !yes && !std::io::stdin().is_terminal() {
        return Err(Failure::error(
            "not sealing: nobody can confirm (stdin is not a terminal)",
        )
        .not_notified()
        .hint(format!(
            "look at the damage first; then run `deploy log seal --target {} --reason \"...\" --yes`",
            d.env.name
        ))
        .into());
    }
    let again = format!(
        "deploy log seal --target {} --reason \"...\" --yes",
        d.env.name
    );
    d.ask(
        yes,
        &format!(
            "seal the damage at line {} of its deployment log",
            problem.line
        ),
        true,
        &again,
    )?;
    Ok(())
}

/// The reason is what the log keeps of the person's judgement: required, not blank.
fn require_reason<'r>(d: &Deployment<'_>, reason: Option<&'r str>) -> Result<&'r str> {
    match reason.map(str::trim) {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(Failure::refused(
            "a seal needs a reason: say what you found and why the log may go on (--reason \"...\")",
        )
        .hint(format!(
            "`deploy log seal --target {} --reason \"line 3 edited by hand during incident 42; backup compared\"`; nothing was written",
            d.env.name
        ))
        .into()),
    }
}

/// The log's verification when it does not verify; a refusal (exit 3) when it does.
fn damaged(d: &Deployment<'_>) -> Result<Verified> {
    let bytes = read(d)?;
    let v = log::verify_removed(&bytes, removed(d)?);
    if v.problem.is_some() {
        return Ok(v);
    }
    let sealed = match v.sealed.len() {
        0 => String::new(),
        n => format!(
            " (with {n} sealed damage{}, which stay{} sealed)",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" }
        ),
    };
    Err(Failure::refused(format!(
        "the deployment log of `{}` verifies{sealed}: there is nothing to seal",
        d.env.name
    ))
    .detail(format!(
        "{} record{}; head {}",
        v.records,
        if v.records == 1 { "" } else { "s" },
        v.head
    ))
    .hint("a seal is only for a log that does not verify; nothing was written")
    .into())
}

/// Under the lock: the seal record for the log as it is now, and that log's verification.
fn prepared(d: &Deployment<'_>, reason: &str) -> Result<(Vec<u8>, log::Record, Verified)> {
    let bytes = read(d)?;
    let live = d
        .target
        .live_generation()
        .map_err(|e| d.target_failure(e))?;
    let entry = Entry {
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        target: d.target.describe(),
        action: log::Action::Seal,
        outcome: log::Outcome::Sealed,
        commit: String::new(),
        config_sha256: String::new(),
        operator: Operator::current(),
        changes: Changes::default(),
        generation: live,
        previous_generation: live,
        reason: Some(reason.to_owned()),
        plan_sha256: None,
        notify: None,
        signing: d.signing.clone(),
        resources: None,
    };
    log::seal_for(&bytes, removed(d)?, entry)
        .ok_or_else(|| {
            Failure::refused(format!(
                "the deployment log of `{}` verifies now: there is nothing to seal",
                d.env.name
            ))
            .hint("another run changed it meanwhile; nothing was written")
        })?
        .map_err(|e| {
            Failure::error(format!("the seal record could not be signed: {e}"))
                .hint("nothing was written")
                .into()
        })
}

/// Records removed from the end of the log, as the target's checkpoint tells.
fn removed(d: &Deployment<'_>) -> Result<Option<String>> {
    d.target.log_removed().map_err(|e| d.target_failure(e))
}

fn read(d: &Deployment<'_>) -> Result<Vec<u8>> {
    let bytes = d.target.log_read().map_err(|e| {
        d.target_failure(e).context(format!(
            "cannot read the deployment log {}",
            d.target.state_location(StateItem::Log)
        ))
    })?;
    Ok(bytes.unwrap_or_default())
}
