//! `deploy status --target NAME`: which generation is live, from which commit, whether the
//! live files still are what envlock wrote (drift), and whether the repository moved on.
//! Reads only, after the same stamp and identity checks as a deployment.

use anyhow::Result;
use serde::Serialize;

use super::Deployment;
use super::apply::short;
use super::journal::{Journal, Phase};
use crate::config::TargetKind;
use crate::output::{Printer, style};
use crate::plan;
use crate::target::{Drift, GenerationId, GenerationInfo, Holder, Stamp, StampState};

#[derive(Debug, Serialize)]
pub struct Status {
    pub ok: bool,
    pub environment: String,
    pub account: String,
    pub target: String,
    /// Where the repository is: its working tree and `origin`'s URL.
    pub repository: crate::repo::Location,
    /// Uncommitted files under `environments/` and `schemas/` (not shown: status is of HEAD).
    pub dirty: Vec<DirtyFile>,
    /// The target's stamp; `None` while the target is empty (not adopted yet).
    pub stamp: Option<Stamp>,
    pub live: Option<LiveGeneration>,
    /// The commit HEAD resolves to.
    pub head: String,
    /// True when the live generation was written from exactly HEAD's configuration (drift
    /// aside): what deploying HEAD would change is then only the drift undone.
    pub head_is_live: bool,
    /// What deploying HEAD would change.
    pub pending: super::apply::Counts,
    /// The resources deploying HEAD would touch.
    pub pending_resources: Vec<String>,
    pub drift: Drift,
    /// HEAD is behind, or diverged from, the live commit (a deployment of HEAD is refused).
    pub backwards: Option<super::forward::Backwards>,
    pub generations: Vec<GenerationRow>,
    /// A deployment or rollback running now (another process holds the target's lock).
    pub in_progress: Option<InProgress>,
    /// An interrupted deployment (a journal, and nobody holds the lock) that the next deploy
    /// will resolve.
    pub interrupted: Option<String>,
    /// Work files of interrupted runs (relative to the target) that the next apply deletes.
    pub leftovers: Vec<String>,
}

/// A deployment running now: who holds the lock, and what its journal says it is doing.
#[derive(Debug, Serialize)]
pub struct InProgress {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// When it took the lock, RFC 3339 UTC.
    pub since: String,
    /// `apply` or `rollback`; `None` before its journal is written.
    pub action: Option<String>,
    /// `preparing`, `switching`, `verifying`, `rolling-back`, or `recovering` (it is resolving
    /// an earlier run's journal).
    pub phase: String,
    /// The commit it deploys (for a rollback, the commit of the generation made live).
    pub commit: Option<String>,
    /// The generation being made live (unverified until its health check passes).
    pub next: Option<GenerationId>,
    /// The generation live before it started.
    pub previous: Option<GenerationId>,
}

impl InProgress {
    fn new(holder: Holder, journal: Option<&Journal>) -> Self {
        let own = journal.filter(|j| j.holder.pid == holder.pid && j.holder.host == holder.host);
        let phase = match (journal, own) {
            (_, Some(j)) => match j.phase {
                Phase::Switching => "switching",
                Phase::Verifying => "verifying",
                Phase::RollingBack => "rolling-back",
            },
            (Some(_), None) => "recovering",
            (None, None) => "preparing",
        };
        InProgress {
            user: holder.user,
            host: holder.host,
            pid: holder.pid,
            since: holder.since,
            action: own.map(|j| j.action.clone()),
            phase: phase.to_owned(),
            commit: own.map(|j| j.commit.clone()),
            next: own.and_then(|j| j.next),
            previous: own.and_then(|j| j.previous),
        }
    }

    /// What it is doing, in words.
    pub fn doing(&self) -> String {
        let gen_ =
            |g: Option<GenerationId>| g.map_or("nothing".to_owned(), |g| format!("generation {g}"));
        match self.phase.as_str() {
            "switching" => format!(
                "writing a new generation and switching to it ({} is live until then)",
                gen_(self.previous)
            ),
            "verifying" => format!(
                "health-checking {}, which is live but not verified yet",
                gen_(self.next)
            ),
            "rolling-back" => format!(
                "{} failed; making {} live again",
                gen_(self.next),
                gen_(self.previous)
            ),
            "recovering" => "resolving an earlier interrupted deployment".to_owned(),
            _ => "checking and planning; nothing written yet (or health-checking an unchanged generation)"
                .to_owned(),
        }
    }

    /// `apply of commit abc123456789 by alice@host (pid 42) since 2026-…`.
    pub fn who(&self) -> String {
        let what = match (&self.action, &self.commit) {
            (Some(a), Some(c)) => format!("{a} of commit {} ", super::apply::short(c)),
            _ => String::new(),
        };
        format!(
            "{what}by {}@{} (pid {}) since {}",
            self.user, self.host, self.pid, self.since
        )
    }
}

/// A deployment running now (the lock is held), else the description of an interrupted one
/// (a journal nobody is working on).
pub fn activity(d: &Deployment<'_>) -> Result<(Option<InProgress>, Option<String>)> {
    let holder = d.target.lock_holder().map_err(|e| d.target_failure(e))?;
    let journal = d
        .target
        .read_journal()
        .map_err(|e| d.target_failure(e))?
        .map(|bytes| Journal::from_bytes(&bytes));
    if let Some(h) = holder {
        let j = journal.as_ref().and_then(|j| j.as_ref().ok());
        return Ok((Some(InProgress::new(h, j)), None));
    }
    let interrupted = journal.map(|j| match j {
        Ok(j) => j.describe(),
        Err(e) => format!("unreadable journal: {e}"),
    });
    Ok((None, interrupted))
}

/// An uncommitted file of the configuration.
#[derive(Debug, Serialize)]
pub struct DirtyFile {
    pub path: String,
    /// `modified`, `untracked`, `deleted`, `staged, not committed`.
    pub status: String,
}

#[derive(Debug, Serialize)]
pub struct LiveGeneration {
    pub id: GenerationId,
    pub commit: String,
    pub created: String,
    pub operator: Option<String>,
    /// SHA-256 of the configuration it was written from (as in the log).
    pub config_sha256: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GenerationRow {
    pub id: GenerationId,
    pub commit: String,
    pub created: String,
    pub live: bool,
    /// Why it failed its health check, when it did; a rollback never picks it by default.
    pub failed: Option<String>,
}

/// Gather the status (and print it in text mode).
pub fn status(d: &Deployment<'_>) -> Result<Status> {
    let stamp = d.verify_owner()?;
    let (in_progress, interrupted) = activity(d)?;
    let live = d.target.live().map_err(|e| d.target_failure(e))?;
    let gens = d.target.generations().map_err(|e| d.target_failure(e))?;
    let drift = d.target.drift().map_err(|e| d.target_failure(e))?;
    let plan = plan_head(d, &live)?;
    let live_gen = gens.iter().find(|g| g.live).map(live_generation);
    let head_is_live = live_gen
        .as_ref()
        .is_some_and(|l| l.config_sha256.as_deref() == Some(&plan.desired.config_sha256));
    let status = Status {
        ok: true,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        target: d.target.describe(),
        repository: d.location.clone(),
        dirty: d
            .dirty
            .iter()
            .map(|(path, what)| DirtyFile {
                path: path.clone(),
                status: (*what).to_owned(),
            })
            .collect(),
        stamp: match stamp {
            StampState::Stamped(s) => Some(s),
            _ => None,
        },
        live: live_gen,
        head: d.commit.id.to_string(),
        head_is_live,
        pending: super::apply::Counts::of(&plan),
        pending_resources: plan.changes.iter().map(|c| c.resource.clone()).collect(),
        drift,
        backwards: super::forward::finding(d)?,
        generations: gens.iter().map(generation_row).collect(),
        in_progress,
        interrupted,
        leftovers: d.target.leftovers().map_err(|e| d.target_failure(e))?,
    };
    if !d.printer.is_json() {
        d.printer.out(&render(d, &status, &plan))?;
    }
    Ok(status)
}

/// What deploying HEAD would change. `status` needs no secret values: without them, secrets
/// count as unchanged.
fn plan_head(d: &Deployment<'_>, live: &crate::target::Live) -> Result<plan::Plan> {
    let resolved = super::apply::resolve_secrets(d).unwrap_or_else(|e| {
        let assumed = crate::secret::Resolved::assume_live(d.env, &live.resources);
        d.printer.redact(assumed.values());
        d.warn(&format!(
            "{e}; changes to secret values are not counted below"
        ));
        assumed
    });
    let (_, key) = super::apply::secret_key(d)?;
    Ok(plan::compute(
        plan::desired(d.env, &resolved, &key),
        &live.resources,
        &super::apply::live_secrets(d, live)?,
        &key,
    ))
}

fn live_generation(g: &GenerationInfo) -> LiveGeneration {
    let text = |key: &str| g.meta.get(key).and_then(|o| o.as_str()).map(str::to_owned);
    LiveGeneration {
        id: g.id,
        commit: g.commit.clone(),
        created: g.created.clone(),
        operator: text("operator"),
        config_sha256: text("config_sha256"),
    }
}

fn generation_row(g: &GenerationInfo) -> GenerationRow {
    GenerationRow {
        id: g.id,
        commit: g.commit.clone(),
        created: g.created.clone(),
        live: g.live,
        failed: g.failed.clone(),
    }
}

/// HEAD is behind, or diverged from, the live commit: a deployment of it is refused.
fn render_backwards(p: &crate::output::Printer, s: &Status) -> String {
    let Some(b) = &s.backwards else {
        return String::new();
    };
    format!(
        "  {}      {}\n               {}\n",
        p.paint_out(style::ERROR, "BEHIND:"),
        b.message(&s.environment),
        b.hint(&s.environment)
    )
}

fn render(d: &Deployment<'_>, s: &Status, plan: &plan::Plan) -> String {
    let p = d.printer;
    let mut out = format!("Status of {}\n", d.who());
    out.push_str(&format!("  repository:  {}\n", s.repository));
    out.push_str(&render_target(s));
    out.push_str(&render_activity(p, s));
    out.push_str(&render_live(p, s));
    out.push_str(&render_head(d, s, plan));
    out.push_str(&render_backwards(p, s));
    out.push_str(&render_drift(d, s));
    out.push_str(&render_generations(s));
    if !s.leftovers.is_empty() {
        out.push_str(&format!(
            "  leftovers:   {} (work files of an interrupted run; the next apply deletes them)\n",
            s.leftovers.join(", ")
        ));
    }
    out
}

fn render_target(s: &Status) -> String {
    let stamp = match &s.stamp {
        Some(stamp) => format!(
            " — stamped for `{}` (account {}) since {}",
            stamp.environment, stamp.account, stamp.created
        ),
        None => format!(
            " — empty: not adopted yet (`deploy adopt --target {}` adopts it; a protected \
             environment is deployed only after that)",
            s.environment
        ),
    };
    format!("  target:      {}{stamp}\n", s.target)
}

/// A deployment running now, or one that was interrupted.
fn render_activity(p: &Printer, s: &Status) -> String {
    if let Some(run) = &s.in_progress {
        return format!(
            "  {}     a deployment is in progress: {}\n               now: {}\n               \
             what is live may still change; run `deploy status --target {}` again when it finishes\n",
            p.paint_out(style::WARN, "running:"),
            run.who(),
            run.doing(),
            s.environment
        );
    }
    match &s.interrupted {
        Some(i) => format!(
            "  {}     an interrupted deployment ({i}); nobody holds the lock, and the next deploy \
             resolves it\n",
            p.paint_out(style::WARN, "journal:")
        ),
        None => String::new(),
    }
}

fn render_live(p: &Printer, s: &Status) -> String {
    let Some(live) = &s.live else {
        return "  live:        nothing deployed\n".to_owned();
    };
    let unverified = s
        .in_progress
        .as_ref()
        .filter(|r| r.next == Some(live.id) && r.phase != "switching");
    format!(
        "  live:        generation {}, commit {}, applied {}{}{}\n",
        live.id,
        short(&live.commit),
        live.created,
        live.operator
            .as_ref()
            .map(|o| format!(" by {o}"))
            .unwrap_or_default(),
        match unverified {
            Some(_) => format!(
                " — {} (the deployment in progress is checking it)",
                p.paint_out(style::WARN, "NOT VERIFIED YET")
            ),
            None => String::new(),
        }
    )
}

/// HEAD compared with what is live.
fn render_head(d: &Deployment<'_>, s: &Status, plan: &plan::Plan) -> String {
    let p = d.printer;
    let head = short(&s.head);
    let running = if s.in_progress.is_some() {
        " (as things stand; a deployment is in progress)"
    } else {
        ""
    };
    let moved = s.live.as_ref().is_none_or(|l| l.commit != s.head);
    let mut out = if plan.is_empty() {
        format!(
            "               HEAD {head} — up to date{}{running}\n",
            if moved {
                " (the configuration is identical; only the commit differs)"
            } else {
                ""
            }
        )
    } else if s.head_is_live && !s.drift.is_clean() {
        format!(
            "               HEAD {head} — live (generation {}), but {}: the live {} differ from what \
             envlock wrote (below){running}\n",
            s.live.as_ref().map_or(0, |l| l.id),
            p.paint_out(style::WARN, "drifted"),
            things(&d.env.target.kind)
        )
    } else {
        format!(
            "               HEAD {head} — {} {}{running}\n               run `deploy plan --target {}` to see the diff\n",
            p.paint_out(style::WARN, "not deployed:"),
            plan.summary(),
            s.environment
        )
    };
    if !s.dirty.is_empty() {
        out.push_str(&format!(
            "               {} uncommitted change{} under environments/ and schemas/ (not shown: {})\n",
            s.dirty.len(),
            if s.dirty.len() == 1 { "" } else { "s" },
            s.dirty
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

/// `files`, `keys` or `resources`: what a target of this kind holds.
fn things(kind: &TargetKind) -> &'static str {
    match kind {
        TargetKind::Etcd { .. } => "keys",
        TargetKind::Exec { .. } => "resources",
        TargetKind::Dir { .. } => "files",
    }
}

fn render_drift(d: &Deployment<'_>, s: &Status) -> String {
    let d_ = &s.drift;
    let things = things(&d.env.target.kind);
    if s.live.is_none() {
        return "  drift:       -\n".to_owned();
    }
    if !d_.checked {
        return "  drift:       unknown (this generation has no checksums)\n".to_owned();
    }
    if d_.is_clean() {
        return format!("  drift:       none (the live {things} are exactly what envlock wrote)\n");
    }
    let mut out = format!(
        "  drift:       {} the live {things} differ from what envlock wrote:\n",
        d.printer.paint_out(style::ERROR, "DRIFT:")
    );
    for (what, n) in drift_lines(&d.env.target.kind, d_) {
        out.push_str(&format!("                 {what}: {n}\n"));
    }
    out.push_str(&format!(
        "               `deploy --target {}` replaces them with the reviewed configuration\n",
        s.environment
    ));
    out
}

/// One `(how, where)` per drifted resource: `edited by hand`, `current/worker.toml`.
pub fn drift_lines(kind: &TargetKind, drift: &Drift) -> Vec<(&'static str, String)> {
    // Remote stores are changed by other tools and people; local files by hand.
    let local = matches!(kind, TargetKind::Dir { .. });
    let where_ = |n: &str| match kind {
        TargetKind::Etcd { prefix, .. } => format!("{}{n}", prefix.value),
        TargetKind::Exec { .. } => format!("`{n}`"),
        TargetKind::Dir { .. } => format!("current/{n}.toml"),
    };
    let mut out = Vec::new();
    for (what, names) in [
        (drift_word(local, DriftKind::Edited), &drift.edited),
        (drift_word(local, DriftKind::Added), &drift.added),
        (drift_word(local, DriftKind::Removed), &drift.removed),
    ] {
        out.extend(names.iter().map(|n| (what, where_(n))));
    }
    out
}

/// How a resource drifted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriftKind {
    Edited,
    Added,
    Removed,
}

/// The words for a drift: `edited by hand` on a `dir` target, `edited outside envlock` on
/// stores that other tools and people write.
pub fn drift_word(local: bool, kind: DriftKind) -> &'static str {
    match (local, kind) {
        (true, DriftKind::Edited) => "edited by hand",
        (true, DriftKind::Added) => "added by hand",
        (true, DriftKind::Removed) => "removed by hand",
        (false, DriftKind::Edited) => "edited outside envlock",
        (false, DriftKind::Added) => "not managed by envlock",
        (false, DriftKind::Removed) => "deleted outside envlock",
    }
}

fn render_generations(s: &Status) -> String {
    if s.generations.is_empty() {
        return String::new();
    }
    let mut out = "  generations:\n".to_owned();
    for g in s.generations.iter().rev() {
        out.push_str(&format!(
            "    {}{:>4}  {}  {}{}\n",
            if g.live { "* " } else { "  " },
            g.id,
            short(&g.commit),
            g.created,
            g.failed
                .as_ref()
                .map(|why| format!("  FAILED: {why}"))
                .unwrap_or_default()
        ));
    }
    out
}
