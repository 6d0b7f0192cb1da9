//! Adopting a target (writing its first stamp) is an explicit act: `deploy adopt --target NAME`.
//!
//! A missing or empty target may be the real one unreachable (a volume not mounted, the wrong
//! machine, a moved directory, a wrong prefix or scope): deploying there would silently start a
//! new, empty history beside the real one. So a `protected` environment's target is adopted only
//! by [`adopt`], which proves the owner as a deploy does, says what it will stamp and asks for
//! the environment's name (or `--yes`); every writing path refuses an unadopted protected target
//! before writing anything ([`refuse_unadopted_protected`]). Other environments are still
//! adopted by their first deployment, which says so in one line ([`notice`]).

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::Deployment;
use super::apply::LogRef;
use crate::config::TargetKind;
use crate::error::Failure;
use crate::log::{self, Changes, Entry, Operator, Outcome};
use crate::target::{Live, Stamp, StampState};

/// What `deploy adopt` found and did, for `--format json`.
#[derive(Debug, Serialize)]
pub struct AdoptReport {
    pub ok: bool,
    pub environment: String,
    pub account: String,
    pub commit: String,
    pub target: String,
    /// `adopted` (this run wrote the stamp) or `already-adopted` (nothing was written).
    pub outcome: &'static str,
    /// What the target was before: `missing`, `empty` or `stamped`.
    pub found: &'static str,
    /// The log record this run appended (`adopt`), if any.
    pub log: Option<LogRef>,
}

/// How a target that has no stamp yet looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NewTarget {
    /// A `dir` target whose directory does not exist (or cannot be reached).
    Missing,
    /// A directory, prefix or scope that holds nothing.
    Empty,
}

impl NewTarget {
    /// What `d`'s target, which has no stamp, looks like.
    pub fn of(d: &Deployment<'_>) -> Self {
        match &d.env.target.kind {
            TargetKind::Dir { resolved, .. } if std::fs::metadata(resolved).is_err() => {
                NewTarget::Missing
            }
            _ => NewTarget::Empty,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NewTarget::Missing => "missing",
            NewTarget::Empty => "empty",
        }
    }
}

/// `dir targets/local does not exist` / `etcd … is empty and has no stamp`. A missing
/// directory whose parent is missing too names the highest missing one (an unmounted volume
/// shows as its mount point missing).
fn found_words(d: &Deployment<'_>) -> String {
    let what = match (NewTarget::of(d), &d.env.target.kind) {
        (NewTarget::Missing, TargetKind::Dir { resolved, .. }) => match highest_missing(resolved) {
            Some(top) => format!(
                "does not exist, nor does {} (adopting creates it)",
                top.display()
            ),
            None => "does not exist".to_owned(),
        },
        (NewTarget::Missing, _) => "does not exist".to_owned(),
        (NewTarget::Empty, _) => "is empty and has no stamp".to_owned(),
    };
    format!("{} {what}", d.target.describe())
}

/// The highest ancestor of `path` that does not exist, when that is not `path` itself.
fn highest_missing(path: &Path) -> Option<&Path> {
    let mut top = None;
    for dir in path.ancestors().skip(1) {
        if std::fs::metadata(dir).is_ok() {
            break;
        }
        top = Some(dir);
    }
    top
}

/// The one line that says a deployment adopts a new, empty target (non-protected only).
pub fn notice(d: &Deployment<'_>) -> String {
    format!(
        "new target: {}; deploying adopts it for {} as a new, empty target (a new history)",
        found_words(d),
        d.who()
    )
}

/// What to check before adopting, by target kind.
fn what_to_check(d: &Deployment<'_>) -> &'static str {
    match &d.env.target.kind {
        TargetKind::Dir { .. } => {
            "the directory (is the volume mounted? is this the right machine?)"
        }
        TargetKind::Etcd { .. } => "the etcd endpoints and prefix",
        TargetKind::Exec { .. } => {
            "the provider's scope ([target.options]) and the state directory"
        }
    }
}

/// A protected environment whose target has no stamp yet: refused (exit 3) before anything is
/// written, saying what to check and to run `deploy adopt`. `Ok` for any other case.
pub fn refuse_unadopted_protected(d: &Deployment<'_>, stamp: &StampState) -> Result<()> {
    match unadopted_protected(d, stamp) {
        Some(f) => Err(f.into()),
        None => Ok(()),
    }
}

/// The finding behind [`refuse_unadopted_protected`] (`plan` shows it as a warning).
pub fn unadopted_protected(d: &Deployment<'_>, stamp: &StampState) -> Option<Failure> {
    if !d.env.protected || !matches!(stamp, StampState::Absent) {
        return None;
    }
    let name = &d.env.name;
    Some(Failure::refused(format!(
        "refusing to deploy `{name}`: its target {}, and `{name}` is protected: a protected \
         environment's target is adopted only by `deploy adopt`",
        found_words(d)
    ))
    .detail(
        "a missing or empty target may be the real one out of reach (a volume not mounted, the \
         wrong machine, a moved directory, a wrong prefix or scope); deploying would start a new, \
         empty history beside it",
    )
    .hint(format!(
        "check {}; if this really is a new target, run `deploy adopt --target {name}`, then deploy \
         again; nothing was written",
        what_to_check(d)
    )))
}

/// `deploy adopt --target NAME`: prove the owner, show what will be stamped, confirm (the
/// environment's name typed, or `yes`), then under the lock write the stamp and an `adopt`
/// record. A target already stamped for this environment is left as it is.
pub fn adopt(d: &Deployment<'_>, yes: bool) -> Result<AdoptReport> {
    let stamp = d.verify_owner()?;
    let mut report = AdoptReport {
        ok: true,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        commit: d.commit.id.to_string(),
        target: d.target.describe(),
        outcome: "already-adopted",
        found: "stamped",
        log: None,
    };
    if let StampState::Stamped(s) = &stamp {
        d.say(&format!(
            "{} is already adopted for {} (stamped {}); nothing was written.",
            d.target.describe(),
            d.who(),
            s.created
        ));
        return Ok(report);
    }
    report.found = NewTarget::of(d).as_str();
    d.say(&format!(
        "Adopting: {}.\nThis writes its stamp (environment `{}`, account {}) and an `adopt` record \
         in its log; nothing is deployed.\nCheck {} first: adopting starts a new, empty history.",
        found_words(d),
        d.env.name,
        d.env.account.value,
        what_to_check(d)
    ));
    let again = format!("deploy adopt --target {} --yes", d.env.name);
    d.ask(yes, &format!("adopt {}", d.target.describe()), true, &again)?;
    let _lock = d.lock()?;
    // Under the lock, the target must still be what was shown: no stamp, and (`exec`) an
    // empty scope.
    let now = d.target.stamp().map_err(|e| d.target_failure(e))?;
    let filled = d
        .target
        .unadopted_contents()
        .map_err(|e| d.target_failure(e))?;
    if now != StampState::Absent || filled.is_some() {
        return Err(Failure::refused(format!(
            "{} changed while the adoption was being confirmed (a stamp or data appeared)",
            d.target.describe()
        ))
        .hint(format!(
            "run `deploy adopt --target {}` again to see what is there now; nothing was written",
            d.env.name
        ))
        .into());
    }
    d.target
        .write_stamp(&Stamp::new(&d.env.name, &d.env.account.value))
        .map_err(|e| d.target_failure(e))?;
    report.outcome = "adopted";
    report.log = Some(record(d, report.found)?);
    d.say(&format!(
        "Adopted {} for {}; deploy with `deploy --target {}`.",
        d.target.describe(),
        d.who(),
        d.env.name
    ));
    Ok(report)
}

/// The `adopt` record (the caller holds the lock).
fn record(d: &Deployment<'_>, found: &str) -> Result<LogRef> {
    let entry = Entry {
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        target: d.target.describe(),
        action: log::Action::Adopt,
        outcome: Outcome::Applied,
        commit: d.commit.id.to_string(),
        config_sha256: crate::plan::settings_sha256(d.env),
        operator: Operator::current(),
        changes: Changes::default(),
        generation: None,
        previous_generation: None,
        reason: Some(format!(
            "deploy adopt: the target was {found}; stamped, nothing deployed"
        )),
        plan_sha256: None,
        notify: None,
        signing: d.signing.clone(),
        resources: None,
    };
    let r = log::append(&*d.target, entry).map_err(|e| {
        Failure::error(format!(
            "{} was stamped, but its `adopt` record could not be written to the deployment log: {e}",
            d.target.describe()
        ))
        .hint(format!(
            "the target is adopted; `deploy log verify --target {}` shows the log's state",
            d.env.name
        ))
    })?;
    Ok(LogRef {
        seq: r.seq,
        hash: r.hash,
    })
}

/// A stamped target that holds none of the resources its live generation wrote: the stamp is
/// kept apart from the resources (an `exec` target's state directory, an `etcd` target's
/// `.envlock/` beside its prefix), so a provider pointed at the wrong region, profile or scope,
/// or an emptied prefix, looks adopted and empty. Deploying would silently write everything
/// again into whatever it reaches. `None` when the target holds anything, or nothing was ever
/// deployed there.
pub(super) fn vanished(d: &Deployment<'_>, live: &Live) -> Result<Option<Failure>> {
    let Some(id) = live.generation else {
        return Ok(None);
    };
    if !live.resources.is_empty() {
        return Ok(None);
    }
    let recorded = d.target.resources(id).map_err(|e| d.target_failure(e))?;
    if recorded.is_empty() {
        return Ok(None);
    }
    let n = recorded.len();
    let f = Failure::refused(format!(
        "{} holds none of the {n} resource{} that generation {id} of `{}` deployed there: \
         the target may not be the one deployed to (a wrong region, profile, scope or prefix, \
         a volume not mounted) or everything was deleted outside envlock",
        d.target.describe(),
        if n == 1 { "" } else { "s" },
        d.env.name
    ));
    Ok(Some(if d.env.protected {
        f.hint(format!(
            "check what the target reaches (the credentials' region and profile, the \
             provider's scope, the prefix); if everything really was deleted there, run \
             `deploy --target {}` on a terminal without --yes, read the plan, and type the name \
             to write it all again; nothing was written",
            d.env.name
        ))
    } else {
        f.hint("deploying writes every resource again into what the target reaches now")
    }))
}
