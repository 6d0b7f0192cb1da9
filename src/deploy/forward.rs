//! Forward only: a deployment never takes a target back to older settings without saying so.
//! Before anything is written, the commit being deployed is compared with the commit of the
//! live generation ([`Repo::ancestry`]): equal or ahead proceeds; behind, diverged, or a live
//! commit this clone does not have is a refusal (exit 3). Going back is `deploy rollback`.

use anyhow::Result;
use serde::Serialize;

use super::Deployment;
use super::apply::short;
use crate::error::Failure;
use crate::repo::{Ancestry, Repo};

/// Why deploying this commit would not move the target forward.
#[derive(Debug, Clone, Serialize)]
pub struct Backwards {
    /// `behind`, `diverged` or `unknown` (this clone does not have the live commit).
    pub relation: &'static str,
    /// The commit live on the target, and who made it live when.
    pub live_commit: String,
    pub live_by: Option<String>,
    pub live_since: String,
    /// The commit being deployed.
    pub commit: String,
    /// Commits the live one has that this one lacks (`unknown`: 0).
    pub behind: usize,
    /// Commits this one has that the live one lacks.
    pub ahead: usize,
    /// The clone is shallow (`unknown`: `git fetch --unshallow` brings the history).
    pub shallow: bool,
}

/// The finding for `d.commit` against what is live on `d.target`; `None` when it moves
/// forward, or nothing is live, or the live generation records no commit id (a warning).
pub fn finding(d: &Deployment<'_>) -> Result<Option<Backwards>> {
    let Some(id) = d
        .target
        .live_generation()
        .map_err(|e| d.target_failure(e))?
    else {
        return Ok(None);
    };
    let Some(live) = d.target.generation(id).map_err(|e| d.target_failure(e))? else {
        return Ok(None);
    };
    // A generation that does not record a commit id (written by hand or by another tool) gives
    // nothing to compare with: no fetch could find it, so a refusal would have no way out.
    if !is_commit_id(&live.commit) {
        d.warn(&unrecorded(&d.env.name, id, &live.commit));
        return Ok(None);
    }
    let found = |relation, behind, ahead| {
        Some(Backwards {
            relation,
            live_commit: live.commit.clone(),
            live_by: live
                .meta
                .get("operator")
                .and_then(|o| o.as_str())
                .map(str::to_owned),
            live_since: live.created.clone(),
            commit: d.commit.id.to_string(),
            behind,
            ahead,
            shallow: d.repo.is_shallow(),
        })
    };
    Ok(match relation(d.repo, d.commit.id, &live.commit)? {
        Ancestry::Same | Ancestry::Ahead(_) => None,
        Ancestry::Behind(n) => found("behind", n, 0),
        Ancestry::Diverged { ahead, behind } => found("diverged", behind, ahead),
        Ancestry::Missing => found("unknown", 0, 0),
    })
}

fn relation(repo: &Repo, new: git2::Oid, live: &str) -> Result<Ancestry> {
    repo.ancestry(new, live).map_err(|e| {
        Failure::error(format!(
            "cannot compare commit {} with the live commit {}: {e}",
            short(&new.to_string()),
            short(live)
        ))
        .into()
    })
}

impl Backwards {
    /// The one-line statement: what is live, and how this clone relates to it.
    pub fn message(&self, env: &str) -> String {
        let by = self
            .live_by
            .as_ref()
            .map(|o| format!("deployed by {o} at {}", self.live_since))
            .unwrap_or_else(|| format!("deployed at {}", self.live_since));
        let live = format!("`{env}` is live at {} ({by})", short(&self.live_commit));
        let new = short(&self.commit);
        match self.relation {
            "behind" => format!(
                "{live}; this clone is {} behind it (commit {new} is an ancestor of the live one): pull, then deploy",
                commits(self.behind)
            ),
            "diverged" => format!(
                "{live}; this clone's commit {new} has diverged from it ({} not live, and the live one has {} this clone lacks): deploying would drop what is live",
                commits(self.ahead),
                commits(self.behind)
            ),
            _ => format!(
                "{live}, a commit this clone does not have, so deploying commit {new} could take `{env}` backwards"
            ),
        }
    }

    /// What to do about it.
    pub fn hint(&self, env: &str) -> String {
        let what = match self.relation {
            "behind" => "`git pull`, then deploy again".to_owned(),
            "diverged" => format!(
                "fetch and merge {} into this branch (`git pull`), so that the deployment includes what is live, then deploy",
                short(&self.live_commit)
            ),
            _ => format!(
                "fetch ({}), then merge or pull so that this clone has {} and builds on it, then deploy",
                if self.shallow {
                    "`git fetch --unshallow`: this clone is shallow, and a plain `git fetch` does not bring older commits"
                } else {
                    "`git fetch`"
                },
                short(&self.live_commit)
            ),
        };
        format!(
            "{what}; to go back to an older generation on purpose, use `deploy rollback --target {env}`"
        )
    }

    /// The refusal (exit 3).
    pub fn refusal(&self, env: &str) -> anyhow::Error {
        Failure::refused(self.message(env))
            .detail(format!("live commit:       {}", self.live_commit))
            .detail(format!("this deployment's: {}", self.commit))
            .hint(format!("{}; nothing was changed", self.hint(env)))
            .into()
    }
}

/// A full hexadecimal commit id, as envlock records it.
fn is_commit_id(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The warning for a live generation that records no commit id.
fn unrecorded(env: &str, id: crate::target::GenerationId, commit: &str) -> String {
    let recorded = if commit.is_empty() {
        "no commit".to_owned()
    } else {
        format!("`{commit}`, not a commit id")
    };
    format!(
        "`{env}`'s live generation {id} records {recorded}, so this deployment cannot be shown to move `{env}` forward: read the diff before going on"
    )
}

/// "1 commit", "3 commits".
fn commits(n: usize) -> String {
    format!("{n} commit{}", if n == 1 { "" } else { "s" })
}

/// The forward-only phase of `apply`: a refusal when `d.commit` would not move the target
/// forward.
pub fn check(d: &Deployment<'_>) -> Result<()> {
    match finding(d)? {
        Some(b) => Err(b.refusal(&d.env.name)),
        None => Ok(()),
    }
}
