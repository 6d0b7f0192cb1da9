//! The promotion gate: `after = ["validation"]` lets a commit reach this environment only while
//! the configuration that commit gives `validation` is live and healthy there now: the
//! `config_sha256` of `validation` at the commit equals the live generation's, and the latest
//! record of that generation in `validation`'s log (which must verify) is a passed one.
//! Commit ids are not compared: a commit that changes only this environment needs no new
//! verification of `validation`, and a rollback of `validation` closes the gate.

use anyhow::Result;

use super::{Deployment, open_target};
use crate::config::Environment;
use crate::error::Failure;
use crate::log::{self, Outcome};
use crate::plan::{self, SecretUse};
use crate::target::{StampState, Target};

/// Why `commit` may not reach `d.env` yet, as a refusal (exit 3); `Ok` when every environment
/// of `after` has proven it.
pub fn check(d: &Deployment<'_>, commit: &str) -> Result<()> {
    for name in &d.env.after {
        let Some(before) = d.after.iter().find(|e| e.name == name.value) else {
            return Err(Failure::refused(format!(
                "promotion gate: `{}` deploys only what is live and healthy on `{}`, whose configuration does not resolve at commit {}",
                d.env.name,
                name.value,
                super::apply::short(commit)
            ))
            .hint("`deploy check` shows the problem; nothing was changed")
            .into());
        };
        match &before.fleet {
            None => proven_on(d, before, commit)?,
            // A fleet proves a commit on every target, and not while a rollout is under way.
            Some(fleet) => {
                for m in &fleet.members {
                    proven_on(d, &before.member(m), commit)?;
                }
                no_rollout_under_way(&before.member(&fleet.members[0]))?;
            }
        }
    }
    Ok(())
}

/// A rollout journal in a fleet's first target: its rollout is under way or was interrupted,
/// so what its targets hold is not proven yet.
fn no_rollout_under_way(first: &Environment) -> Result<()> {
    let target = open_target(first)?;
    if target.read_blob("rollout").ok().flatten().is_some() {
        return Err(Failure::refused(format!(
            "promotion gate: a rollout of `{}` is under way (or was interrupted), so what its targets hold is not proven yet",
            first.name
        ))
        .hint(format!(
            "wait for it to end (`deploy status --target {}`), or run `deploy --target {}` to undo an interrupted one; then run this again",
            first.name, first.name
        ))
        .into());
    }
    Ok(())
}

fn proven_on(d: &Deployment<'_>, before: &Environment, commit: &str) -> Result<()> {
    let name = &before.name;
    let short = &commit[..commit.len().min(12)];
    let refuse = |why: String| -> anyhow::Error {
        Failure::refused(format!(
            "promotion gate: `{}` deploys a commit only while the configuration it gives `{name}` is live and healthy there, and {why}",
            d.env.name
        ))
        .detail(format!(
            "`after = [\"{name}\"]` in environments/{}.toml",
            d.env.name
        ))
        .hint(format!(
            "deploy commit {short} to `{name}` first (`deploy --target {name}`, which records a verification even when nothing changes), then run this again"
        ))
        .into()
    };
    let target = open_target(before).map_err(|e| refuse(format!("its log cannot be read: {e}")))?;
    stamped_for(&*target, before, short).map_err(&refuse)?;
    let bytes = target
        .log_read()
        .map_err(|e| refuse(format!("`{name}`'s deployment log cannot be read: {e}")))?
        .unwrap_or_default();
    // A log cut after a whole record (its latest checks removed) verifies as a chain; the
    // target's checkpoint knows it was longer.
    let removed = target
        .log_removed()
        .map_err(|e| refuse(format!("`{name}`'s deployment log cannot be read: {e}")))?;
    let verified = log::verify_removed(&bytes, removed);
    if let Some(p) = verified.problem {
        return Err(Failure::refused(format!(
            "promotion gate: `{name}`'s deployment log does not verify, so it cannot prove commit {short}: {}",
            p.message
        ))
        .hint(format!(
            "`deploy log verify --target {name}` shows the problem; nothing was changed"
        ))
        .into());
    }
    signed(d, name, &bytes, &verified, short)?;
    let live = live_config(&*target, before).map_err(&refuse)?;
    let want = plan::config_sha256_with(before, &live.secrets);
    if want.as_deref() != Some(live.config_sha256.as_str()) {
        return Err(refuse(format!(
            "`{name}` runs another configuration: generation {} (commit {}) is live there, not what commit {short} gives `{name}`",
            live.id,
            super::apply::short(&live.commit)
        )));
    }
    untouched(&*target, name, live.id).map_err(&refuse)?;
    let last = log::trusted_records(&bytes, &verified)
        .into_iter()
        .rev()
        .find(|r| {
            r.environment == *name
                && r.account == before.account.value
                && r.generation == Some(live.id)
                && r.outcome != Outcome::Refused
        });
    if let Some(r) = &last {
        signed_by_allowed(d, name, r, short).map_err(&refuse)?;
    }
    match last {
        Some(r) if r.outcome.proves_healthy() => Ok(()),
        Some(r) => Err(refuse(format!(
            "the latest check of `{name}`'s live generation {} did not pass (log record {}: {})",
            live.id,
            r.seq,
            r.outcome.as_str()
        ))),
        None => Err(refuse(format!(
            "`{name}`'s deployment log has no passed health check of its live generation {}",
            live.id
        ))),
    }
}

/// Every signature of `name`'s log verifies against `allowed_signers` as of its record's commit.
fn signed(
    d: &Deployment<'_>,
    name: &str,
    bytes: &[u8],
    verified: &log::Verified,
    short: &str,
) -> Result<()> {
    let mut policy = |c: &str| super::signing::policy_at(d.repo, c);
    let Some(p) = log::verify_signatures(bytes, verified, name, &mut policy).problem else {
        return Ok(());
    };
    Err(Failure::refused(format!(
        "promotion gate: a signature in `{name}`'s deployment log does not verify, so it cannot prove commit {short}: {}",
        p.message
    ))
    .hint(format!(
        "`deploy log verify --target {name}` shows the problem; nothing was changed"
    ))
    .into())
}

/// With `allowed_signers` at the gate's commit, the record that proves the commit must be
/// signed by a key allowed for `name` (by the file at its own commit, else the gate's).
fn signed_by_allowed(
    d: &Deployment<'_>,
    name: &str,
    r: &log::Record,
    short: &str,
) -> Result<(), String> {
    use crate::log::Policy;
    let here = match super::signing::policy_at(d.repo, &d.commit.id.to_string()) {
        Policy::Absent => return Ok(()),
        Policy::Present(a) => a,
        Policy::Unreadable(why) | Policy::Missing(why) => return Err(why),
    };
    let commit = r.signers_commit.as_ref().unwrap_or(&r.commit);
    let allowed = match super::signing::policy_at(d.repo, commit) {
        Policy::Present(a) => a,
        Policy::Absent | Policy::Unreadable(_) | Policy::Missing(_) => here,
    };
    let (Some(signer), Some(signature)) = (&r.signer, &r.signature) else {
        return Err(format!(
            "its log record {} is not signed, and commit {short} has `allowed_signers`: only signed records prove a commit",
            r.seq
        ));
    };
    crate::signing::verify(&allowed, name, r.hash.as_bytes(), signer, signature)
        .map(|_| ())
        .map_err(|e| format!("its log record {}: {e}", r.seq))
}

/// The `after` environment's target is stamped for it and its account.
fn stamped_for(target: &dyn Target, before: &Environment, short: &str) -> Result<(), String> {
    let name = &before.name;
    let where_ = target.describe();
    match target.stamp() {
        Ok(StampState::Stamped(s))
            if s.environment == *name && s.account == before.account.value => {}
        Ok(StampState::Stamped(s)) => {
            return Err(format!(
                "`{name}`'s target {where_} is stamped for `{}` (account {}), so its log proves nothing about `{name}`",
                s.environment, s.account
            ));
        }
        Ok(_) => {
            return Err(format!(
                "`{name}` has never been deployed to ({where_} holds no stamp), so commit {short} is not proven there"
            ));
        }
        Err(e) => {
            return Err(format!(
                "`{name}`'s target {where_} cannot be read from here: {e}"
            ));
        }
    }
    Ok(())
}

/// The live generation's files (keys, values) are still what envlock wrote: a hand edit on
/// `name` means what runs there is not what the commit gives it, whatever its health says.
fn untouched(
    target: &dyn Target,
    name: &str,
    id: crate::target::GenerationId,
) -> Result<(), String> {
    let drift = target.drift().map_err(|e| {
        format!("`{name}`'s live generation {id} cannot be checked for hand edits: {e}")
    })?;
    if drift.is_clean() {
        return Ok(());
    }
    let changed: Vec<&str> = (drift.edited.iter())
        .chain(&drift.added)
        .chain(&drift.removed)
        .map(String::as_str)
        .collect();
    Err(format!(
        "`{name}`'s live generation {id} was changed by hand since it was deployed ({}), so what runs there is not what the commit gives it",
        changed.join(", ")
    ))
}

/// What is live on an `after` environment's target now.
struct LiveConfig {
    id: crate::target::GenerationId,
    commit: String,
    config_sha256: String,
    secrets: Vec<SecretUse>,
}

fn live_config(target: &dyn Target, before: &Environment) -> Result<LiveConfig, String> {
    let name = &before.name;
    let id = target
        .live_generation()
        .map_err(|e| format!("`{name}`'s live generation cannot be read: {e}"))?
        .ok_or_else(|| format!("nothing is live on `{name}`"))?;
    let g = target
        .generation(id)
        .map_err(|e| format!("`{name}`'s generation {id} cannot be read: {e}"))?
        .ok_or_else(|| format!("`{name}`'s live generation {id} is not kept"))?;
    Ok(LiveConfig {
        id,
        config_sha256: g.config_sha256(),
        secrets: SecretUse::from_meta(&g.meta),
        commit: g.commit,
    })
}
