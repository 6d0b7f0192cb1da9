//! The promotion gate: `after = ["validation"]` lets a commit reach this environment only once
//! the deployment log of each environment named there holds a successful record of it
//! (applied, or a verified no-change run) and that log verifies.

use anyhow::Result;

use super::{Deployment, open_target};
use crate::config::Environment;
use crate::error::Failure;
use crate::log;
use crate::target::StampState;

/// Why `commit` may not reach `d.env` yet, as a refusal (exit 3); `Ok` when every environment
/// of `after` has proven it.
pub fn check(d: &Deployment<'_>, commit: &str) -> Result<()> {
    for before in &d.after {
        proven_on(d, before, commit)?;
    }
    Ok(())
}

fn proven_on(d: &Deployment<'_>, before: &Environment, commit: &str) -> Result<()> {
    let name = &before.name;
    let short = &commit[..commit.len().min(12)];
    let refuse = |why: String| -> anyhow::Error {
        Failure::refused(format!(
            "promotion gate: `{}` deploys only commits already live and healthy on `{name}`, and {why}",
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
    let where_ = target.describe();
    match target.stamp() {
        Ok(StampState::Stamped(s))
            if s.environment == *name && s.account == before.account.value => {}
        Ok(StampState::Stamped(s)) => {
            return Err(refuse(format!(
                "`{name}`'s target {where_} is stamped for `{}` (account {}), so its log proves nothing about `{name}`",
                s.environment, s.account
            )));
        }
        Ok(_) => {
            return Err(refuse(format!(
                "`{name}` has never been deployed to ({where_} holds no stamp), so commit {short} is not proven there"
            )));
        }
        Err(e) => {
            return Err(refuse(format!(
                "`{name}`'s target {where_} cannot be read from here: {e}"
            )));
        }
    }
    let bytes = target
        .log_read()
        .map_err(|e| refuse(format!("`{name}`'s deployment log cannot be read: {e}")))?
        .unwrap_or_default();
    let verified = log::verify(&bytes);
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
    let proven = log::records(&bytes).into_iter().any(|r| {
        r.commit == commit
            && r.environment == *name
            && r.account == before.account.value
            && r.outcome.proves_healthy()
    });
    if proven {
        return Ok(());
    }
    Err(refuse(format!(
        "`{name}`'s deployment log has no successful deployment of commit {short}"
    )))
}
