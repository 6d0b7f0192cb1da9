//! `deploy --target NAME` / `deploy apply`, `deploy plan`, `deploy rollback`, and the recovery of
//! an interrupted deployment from its journal.
//!
//! Order, for every kind of target: stamp -> identity -> (lock and journal recovery, if an
//! earlier run was interrupted) -> live state -> plan -> confirmation -> lock -> the target is
//! still what the plan was computed from -> adopt -> journal -> apply (atomic switch) -> health
//! check -> keep, or switch back and exit 4. A refusal therefore never writes anything, not
//! even the lock file, and a prompt left open does not hold the lock.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::journal::{JOURNAL_VERSION, Journal, Phase};
use super::saved::{self, LiveState, SavedPlan};
use super::{Deployment, HealthReport, Overwritten, operator, render_plan};
use crate::config::TargetKind;
use crate::error::{Exit, Failure};
use crate::failpoint;
use crate::log::{self, AppendError, Changes, Entry, Operator, Outcome};
use crate::plan::{self, Action, Change, Plan, SecretUse};
use crate::progress;
use crate::secret::{self, Resolved};
use crate::target::{
    GenerationId, GenerationInfo, Holder, Live, LockGuard, Stamp, StampState, TargetError,
};

/// What a deployment did, for people (stderr) and `--format json` (stdout).
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub environment: String,
    pub account: String,
    pub commit: String,
    pub target: String,
    /// Where the repository is: its working tree and `origin`'s URL.
    pub repository: crate::repo::Location,
    /// `applied`, `unchanged`, `rolled-back`, `planned`.
    pub outcome: String,
    /// True when this run adopted (stamped) an empty target.
    pub adopted: bool,
    /// `missing` or `empty` when the target had no stamp when this run began (a new target:
    /// the run adopts it, or for a protected environment refuses); `null` otherwise.
    pub new_target: Option<super::adopt::NewTarget>,
    pub previous_generation: Option<GenerationId>,
    /// The generation live at the end.
    pub generation: Option<GenerationId>,
    pub summary: Counts,
    pub changes: Vec<Change>,
    /// The changed resources that were changed outside envlock since the live generation was
    /// written: applying reverts those edits.
    pub overwrites_drift: Vec<Overwritten>,
    pub health: Option<HealthReport>,
    /// The health check of the generation made live again by a rollback.
    pub rollback_health: Option<HealthReport>,
    /// What was found and done about an interrupted earlier deployment.
    pub recovered: Vec<String>,
    /// Why the deployment was rolled back.
    pub reason: Option<String>,
    /// SHA-256 of the canonical resolved settings deployed (as in the log).
    pub config_sha256: String,
    /// The deployment log record this run appended, if any.
    pub log: Option<LogRef>,
    /// What became of that record's `[notify] url` notification (only with a `url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<crate::log::Notified>,
    /// `apply` or `rollback`, for messages.
    #[serde(skip)]
    pub action: &'static str,
    /// What `deploy plan --out FILE` writes.
    #[serde(skip)]
    pub saved: Option<SavedPlan>,
    /// True when the operator's Ctrl-C (or SIGTERM) stopped the run before its verdict and
    /// caused the rollback: not a failure of the configuration.
    #[serde(skip)]
    pub cancelled: bool,
}

/// Resources added, changed and removed (the same shape as in the log).
pub type Counts = Changes;

impl Changes {
    pub fn of(plan: &Plan) -> Self {
        Changes {
            add: plan.count(Action::Add),
            change: plan.count(Action::Change),
            remove: plan.count(Action::Remove),
        }
    }
}

/// Which log record a run appended.
#[derive(Debug, Clone, Serialize)]
pub struct LogRef {
    pub seq: u64,
    pub hash: String,
}

impl Report {
    /// `config_sha256`: what the report says unless the run replaces it (a plan's own hash).
    fn new(d: &Deployment<'_>, outcome: &str, config_sha256: String) -> Self {
        Report {
            ok: true,
            environment: d.env.name.clone(),
            account: d.env.account.value.clone(),
            commit: d.commit.id.to_string(),
            target: d.target.describe(),
            repository: d.location.clone(),
            outcome: outcome.to_owned(),
            adopted: false,
            new_target: None,
            previous_generation: None,
            generation: None,
            summary: Counts::default(),
            changes: Vec::new(),
            overwrites_drift: Vec::new(),
            health: None,
            rollback_health: None,
            recovered: Vec::new(),
            reason: None,
            config_sha256,
            log: None,
            notify: None,
            action: "apply",
            saved: None,
            cancelled: false,
        }
    }

    fn set_plan(&mut self, plan: &Plan) {
        self.summary = Counts::of(plan);
        self.changes = plan.changes.clone();
    }

    /// The failure to exit with when the deployment was rolled back (exit 4).
    pub fn rolled_back_failure(&self) -> Failure {
        if self.cancelled {
            return self.cancelled_failure();
        }
        let mut f = Failure::new(
            Exit::RolledBack,
            if self.action == "rollback" {
                format!(
                    "the rollback of `{}` failed and was undone: {}",
                    self.environment,
                    self.reason.as_deref().unwrap_or("unknown reason")
                )
            } else {
                format!(
                    "deployment of `{}` failed and was rolled back: {}",
                    self.environment,
                    self.reason.as_deref().unwrap_or("unknown reason")
                )
            },
        );
        if let Some(h) = &self.health {
            if self.reason.as_deref() != Some(h.line().as_str()) {
                f = f.detail(h.line());
            }
            for line in &h.output {
                f = f.detail(format!("  {line}"));
            }
        }
        match self.generation {
            Some(id) => f = f.detail(format!("live again: generation {id}")),
            None => {
                f = f.detail("live again: nothing (the target is as before its first deployment)")
            }
        }
        if let Some(h) = &self.rollback_health {
            f = f.detail(format!("after the rollback: {}", h.line()));
            for line in &h.output {
                f = f.detail(format!("  {line}"));
            }
        }
        f.hint("the failed generation is kept for inspection; fix the configuration (or the service) and deploy again")
    }
}

impl Report {
    /// The operator cancelled (Ctrl-C) before the health check passed: say so, what is live
    /// now, and that it was not checked again, rather than call it a failure.
    fn cancelled_failure(&self) -> Failure {
        let (what, undone) = if self.action == "rollback" {
            ("the rollback of", "undone")
        } else {
            ("the deployment of", "rolled back")
        };
        let mut f = Failure::new(
            Exit::RolledBack,
            format!(
                "you cancelled {what} `{}` (Ctrl-C) before its health check passed, so it was {undone}",
                self.environment
            ),
        );
        if let Some(h) = &self.health {
            f = f.detail(h.line());
        }
        f = f.detail(match self.generation {
            Some(id) => format!(
                "live now: generation {id}, as before this run; not health-checked again after the cancel"
            ),
            None => "live now: nothing (the target is as before its first deployment)".to_owned(),
        });
        f.hint(cancelled_hint(&self.environment, self.action))
    }
}

/// The hint of a cancelled run: nothing says the configuration is wrong.
fn cancelled_hint(env: &str, action: &str) -> String {
    let again = if action == "rollback" {
        format!("deploy rollback --target {env}")
    } else {
        format!("deploy --target {env}")
    };
    format!(
        "the check was stopped, not failed: nothing says the configuration is wrong; to go ahead, run `{again}` again and let the health check finish; `deploy status --target {env}` shows what is live"
    )
}

/// How many generations a target keeps.
fn keep(d: &Deployment<'_>) -> usize {
    match &d.env.target.kind {
        TargetKind::Dir { keep, .. } => *keep,
        _ => crate::config::DEFAULT_KEEP,
    }
}

/// The commit recorded with a generation (empty when unknown).
fn generation_commit(d: &Deployment<'_>, id: Option<GenerationId>) -> String {
    let Some(id) = id else {
        return String::new();
    };
    d.target
        .generation(id)
        .ok()
        .flatten()
        .map(|g| g.commit)
        .unwrap_or_default()
}

/// The highest generation id the target keeps.
fn newest_generation(d: &Deployment<'_>) -> Result<Option<GenerationId>> {
    d.target
        .newest_generation()
        .map_err(|e| d.target_failure(e))
}

/// The first 12 hex digits of a commit id, as `CommitInfo::short` shows them.
pub(super) fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn describe_live(d: &Deployment<'_>, live: &Live, stamp: &StampState) -> String {
    match (live.generation, stamp) {
        (Some(id), _) => {
            let commit = generation_commit(d, Some(id));
            format!("generation {id} live (commit {})", short(&commit))
        }
        (None, StampState::Absent) => format!(
            "{}: not adopted yet (no stamp)",
            super::adopt::NewTarget::of(d).as_str()
        ),
        (None, _) => "stamped, nothing applied yet".to_owned(),
    }
}

/// Print the plan's header and body (stdout, text mode only). Returns the resources it
/// changes that were changed outside envlock since the live generation was written (marked).
fn show_plan(
    d: &Deployment<'_>,
    heading: &str,
    target_line: &str,
    live: &Live,
    plan: &Plan,
) -> Result<Vec<Overwritten>> {
    let over = super::overwritten(&*d.target, plan, live).unwrap_or_else(|e| {
        d.warn(&format!(
            "cannot tell whether the live state was changed outside envlock: {e}"
        ));
        Vec::new()
    });
    if !d.printer.is_text() {
        return Ok(over);
    }
    let mut s = format!(
        "{heading}\n  repository: {}\n  target:     {} — {target_line}\n\n",
        d.location,
        d.target.describe()
    );
    let local = matches!(d.env.target.kind, TargetKind::Dir { .. });
    s.push_str(&render_plan(d.printer, plan, &over, local));
    d.printer.out(&s)?;
    Ok(over)
}

/// Show the plan of a run that changes the target. A reader of stdout that went away (`| head`
/// exited, a pager was quit) did not see all of it: where a confirmation follows, that is a
/// refusal; `--yes` confirmed up front, so the run goes on, reporting on stderr only, and exits
/// by what happened. A run with nothing to change needs no confirmation and goes on too.
fn show_plan_to_confirm(
    d: &Deployment<'_>,
    yes: bool,
    heading: &str,
    target_line: &str,
    live: &Live,
    plan: &Plan,
) -> Result<Vec<Overwritten>> {
    match show_plan(d, heading, target_line, live, plan) {
        Err(_) if d.printer.stdout_closed() && (yes || plan.is_empty()) => {
            d.warn(
                "stdout was closed before the whole plan was written (its reader exited); \
                 going on without it: what happens is reported here and by the exit code",
            );
            Ok(Vec::new())
        }
        Err(_) if d.printer.stdout_closed() => Err(Failure::error(
            "not applying: stdout was closed before the whole plan was written (its reader \
             exited), so nobody can have reviewed it; nothing was changed",
        )
        .not_notified()
        .hint(
            "run again with stdout to a terminal or a pager read to the end (`deploy plan` shows \
             the same plan and writes nothing), or with --yes to confirm up front",
        )
        .into()),
        other => other,
    }
}

fn heading(d: &Deployment<'_>) -> String {
    let summary = if d.commit.summary.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", d.commit.summary)
    };
    format!("{} at commit {}{summary}", d.who(), d.commit.short())
}

/// Read the environment's secret values (after the owner checks: callers' order) and register
/// them with the printer's redaction net.
pub(super) fn resolve_secrets(d: &Deployment<'_>) -> Result<Resolved> {
    let resolved = secret::resolve(d.env, &d.root)?;
    d.printer.redact(resolved.values());
    Ok(resolved)
}

/// The target's secret key (`None` when it has none yet) and the key to hash with now: that
/// one, or a random key for this run only, since a plan writes nothing.
pub(super) fn secret_key(d: &Deployment<'_>) -> Result<(Option<Vec<u8>>, Vec<u8>)> {
    let stored = d.target.secret_key().map_err(|e| d.target_failure(e))?;
    let key = match &stored {
        Some(k) => k.clone(),
        None => secret::random_key()
            .map_err(|e| Failure::error(format!("cannot get random bytes: {e}")))?,
    };
    Ok((stored, key))
}

/// A plan against the live state, with what it was made from.
pub(super) struct Planned {
    pub live: Live,
    /// The target's secret key, `None` when it has none yet (see [`secret_key`]).
    pub stored_key: Option<Vec<u8>>,
    /// The key the desired state's secrets were hashed with.
    pub key: Vec<u8>,
    pub plan: plan::Plan,
}

/// Read the live state and plan the desired one against it. The desired files are rendered on
/// another core while the target is read; a failure to read the target is reported first, as
/// when one followed the other.
pub(super) fn plan_against_live(d: &Deployment<'_>, resolved: &Resolved) -> Result<Planned> {
    let key = secret_key(d);
    let env = d.env;
    let (live, desired) = std::thread::scope(|s| {
        let desired = key
            .as_ref()
            .ok()
            .map(|(_, key)| s.spawn(move || plan::desired(env, resolved, key)));
        let task = d.wait_task(format!("the live state of {}", d.target.describe()), None);
        let live = progress::during(d.progress, task, || d.target.live());
        (
            live,
            desired.map(|h| h.join().expect("rendering does not panic")),
        )
    });
    let live = live.map_err(|e| d.target_failure(e))?;
    let (stored_key, key) = key?;
    let desired = desired.expect("rendered once the key was read");
    let plan = plan::compute(desired, &live.resources, &live_secrets(d, &live)?, &key);
    Ok(Planned {
        live,
        stored_key,
        key,
        plan,
    })
}

/// The secrets that the live generation's metadata lists (masked in diffs).
pub(super) fn live_secrets(d: &Deployment<'_>, live: &Live) -> Result<Vec<SecretUse>> {
    let mut out = Vec::new();
    if let Some(id) = live.generation {
        out = d
            .target
            .generation(id)
            .map_err(|e| d.target_failure(e))?
            .map(|g| SecretUse::from_meta(&g.meta))
            .unwrap_or_default();
    }
    // A value the target stores as secret (an SSM SecureString someone else wrote) is masked
    // whole, key by key, whatever envlock's configuration says about it.
    for name in d.target.secret_resources() {
        let Some(table) = live
            .resources
            .get(&name)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| t.parse::<toml::Table>().ok())
        else {
            continue;
        };
        for key in table.keys() {
            out.push(SecretUse {
                resource: name.clone(),
                path: crate::config::node::path_text(&[crate::config::node::Seg::Key(key.clone())]),
                reference: "(stored as secret on the target)".into(),
                hmac: String::new(),
            });
        }
    }
    Ok(out)
}

/// `deploy plan --target NAME`: verify the owner, diff against live. Writes nothing.
///
/// With `save`, the report carries the [`SavedPlan`] that `deploy plan --out FILE` writes
/// (its hashes of every live and desired file are computed only then).
pub fn plan(d: &Deployment<'_>, save: bool) -> Result<Report> {
    let stamp = d.verify_owner()?;
    d.check_programs()?;
    say_new_target(d, &stamp, true);
    let resolved = resolve_secrets(d)?;
    match super::status::activity(d)? {
        (Some(run), _) => d.warn(&format!(
            "a deployment is in progress ({}; now {}): this plan is against the live state as \
             it is at this moment",
            run.who(),
            run.doing()
        )),
        (None, Some(what)) => d.warn(&format!(
            "an interrupted deployment was found ({what}); the next `deploy --target {}` \
             resolves it before doing anything else",
            d.env.name
        )),
        (None, None) => {}
    }
    if let Some(b) = super::forward::finding(d)? {
        d.warn(&format!(
            "{}; `deploy apply` will refuse this plan\nhint: {}",
            b.message(&d.env.name),
            b.hint(&d.env.name)
        ));
    }
    if let Err(err) = super::gate::check(d, &d.commit.id.to_string()) {
        d.warn(&format!(
            "{err:#}; `deploy apply` will refuse this plan until then"
        ));
    }
    let Planned {
        live,
        stored_key,
        key,
        plan,
    } = plan_against_live(d, &resolved)?;
    if let Some(f) = super::adopt::vanished(d, &live)? {
        d.warn(&format!(
            "{}\nhint: {}",
            f.message,
            f.hint.unwrap_or_default()
        ));
    }
    let mut report = Report::new(d, "planned", plan.desired.config_sha256.clone());
    // Secret values are bound by their keyed hashes, which only the target's own key makes
    // reproducible: a plan made before the target has one cannot bind them.
    let secrets_bound = stored_key.is_some() || plan.desired.secrets.is_empty();
    report.adopted = matches!(stamp, StampState::Absent);
    report.new_target = new_target(d, &stamp);
    report.previous_generation = live.generation;
    report.generation = live.generation;
    report.set_plan(&plan);
    report.saved = save.then(|| saved_plan(d, &report, &live, &plan, &key, secrets_bound));
    let shown = show_plan(
        d,
        &format!("Plan for {}", heading(d)),
        &describe_live(d, &live, &stamp),
        &live,
        &plan,
    );
    // A closed stdout ends a plan quietly, unless `--out FILE` still has its file to write.
    match shown {
        Err(_) if save && d.printer.stdout_closed() => d.warn(
            "stdout was closed before the whole plan was written (its reader exited); the plan \
             file is still written",
        ),
        other => report.overwrites_drift = other?,
    }
    if !plan.is_empty() {
        check_fits(d, &plan)?;
    }
    Ok(report)
}

/// What `deploy plan --out FILE` writes: the plan bound to the live state it was made against.
fn saved_plan(
    d: &Deployment<'_>,
    report: &Report,
    live: &Live,
    plan: &Plan,
    key: &[u8],
    secrets_bound: bool,
) -> SavedPlan {
    SavedPlan {
        format: saved::FORMAT.to_owned(),
        version: saved::VERSION,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        target: d.env.target.describe(),
        commit: d.commit.id.to_string(),
        config_sha256: report.config_sha256.clone(),
        live: LiveState {
            generation: live.generation,
            sha256: saved::live_sha256(live),
        },
        resources: saved::resource_hashes(&plan.desired, key),
        secrets_bound,
        new_target: report.adopted,
        summary: report.summary,
        changes: saved::reviewed_changes(&plan.changes),
        created: crate::target::now_rfc3339(),
        operator: operator(),
        checksum: String::new(),
    }
    .seal()
}

/// `missing`/`empty` for a target with no stamp yet ([`Report::new_target`]).
fn new_target(d: &Deployment<'_>, stamp: &StampState) -> Option<super::adopt::NewTarget> {
    matches!(stamp, StampState::Absent).then(|| super::adopt::NewTarget::of(d))
}

/// On stderr, for a target with no stamp yet: the one line saying that deploying adopts it
/// as a new, empty target, or (`plan` of a protected environment) the refusal `deploy` will
/// give.
fn say_new_target(d: &Deployment<'_>, stamp: &StampState, planning: bool) {
    if !matches!(stamp, StampState::Absent) {
        return;
    }
    match super::adopt::unadopted_protected(d, stamp) {
        Some(f) if planning => d.warn(&format!(
            "{}; `deploy apply` will refuse to deploy until then\nhint: {}",
            f.message,
            f.hint.unwrap_or_default()
        )),
        Some(_) => {}
        None => d.say(&super::adopt::notice(d)),
    }
}

/// A saved plan binds whether the target was new (no stamp): a target adopted, or one that
/// lost its stamp (another volume, another prefix), since the plan was made refuses it.
fn check_adoption(d: &Deployment<'_>, saved: &SavedPlan, stamp: &StampState) -> Result<()> {
    let new_now = matches!(stamp, StampState::Absent);
    if saved.new_target == new_now {
        return Ok(());
    }
    let (then, now) = if saved.new_target {
        (
            "a new target (no stamp)",
            format!("{} is stamped now", d.target.describe()),
        )
    } else {
        (
            "an adopted target",
            format!(
                "{} is now {}",
                d.target.describe(),
                super::adopt::NewTarget::of(d).as_str()
            ),
        )
    };
    Err(Failure::refused(format!(
        "the saved plan is stale: it was made against {then}, and {now}"
    ))
    .hint(format!(
        "check that [target] leads where it should, then plan again (`deploy plan --target {} --out FILE`), review it, and apply the new plan; nothing was changed",
        d.env.name
    ))
    .into())
}

/// The plan must be applicable in one step on this target (an etcd transaction has limits);
/// otherwise it is refused before anything is written.
fn check_fits(d: &Deployment<'_>, plan: &Plan) -> Result<()> {
    d.target.check_fits(&plan.desired.files).map_err(|e| {
        anyhow::Error::from(Failure::from(e).hint(
            "raise the server's limits (etcd --max-txn-ops / --max-request-bytes) and set the same \
             values as `max_txn_ops` / `max_request_bytes` in [target], or split the environment's \
             resources over two environments with their own prefixes; nothing was written",
        ))
    })
}

/// The main job. Returns the report; `outcome == "rolled-back"` means exit 4. With `expected`
/// (`deploy apply --plan FILE`), only exactly that plan is applied.
pub fn apply(d: &Deployment<'_>, yes: bool, expected: Option<&SavedPlan>) -> Result<Report> {
    match prepare(d, yes, expected)? {
        Start::Done(report) => Ok(*report),
        Start::Ready(mut prepared) => {
            show(d, yes, &mut prepared)?;
            execute(d, yes, *prepared)
        }
    }
}

/// How [`prepare`] ends: the run is over (an interrupted earlier run was resolved by rolling
/// back), or the plan is ready to show.
pub enum Start {
    Done(Box<Report>),
    Ready(Box<Prepared>),
}

/// A deployment planned against the live state, before its plan is shown and confirmed.
pub struct Prepared {
    stamp: StampState,
    /// Held when recovery took it.
    lock: Option<Box<dyn LockGuard>>,
    live: Live,
    stored_key: Option<Vec<u8>>,
    plan: Plan,
    resolved: Resolved,
    /// Stamped by [`adopt_early`] (the target was new): the apply records an adoption.
    adopted: bool,
    pub report: Report,
}

impl Prepared {
    /// The generation live when the plan was made.
    pub fn live_generation(&self) -> Option<GenerationId> {
        self.live.generation
    }

    /// The lock the recovery of an interrupted run took, for a rollout to hold to its end.
    pub fn take_lock(&mut self) -> Option<Box<dyn LockGuard>> {
        self.lock.take()
    }

    /// Whether applying it writes anything.
    pub fn changes(&self) -> bool {
        !self.plan.is_empty() || self.live.generation.is_none()
    }
}

/// Everything up to the plan: owner, recovery, forward-only rule, gate, live state, plan, and
/// the checks of what the live state says. Nothing is shown and nothing is written (but by
/// the recovery of an interrupted run).
pub fn prepare(d: &Deployment<'_>, yes: bool, expected: Option<&SavedPlan>) -> Result<Start> {
    let stamp = d.verify_owner()?;
    super::adopt::refuse_unadopted_protected(d, &stamp)?;
    d.check_programs()?;
    // Without its token a failure would page nobody (`plan` sends nothing, so needs none).
    d.page_token()?;
    say_new_target(d, &stamp, false);
    // A secret that cannot be read refuses before anything, even a recovery, is written.
    let resolved = resolve_secrets(d)?;
    // The plan's own hash replaces it below; only a run that ends in the recovery reports it.
    let mut report = Report::new(d, "applied", String::new());
    report.new_target = new_target(d, &stamp);
    let Some(lock) = resolve_interrupted(d, &mut report)? else {
        if report.config_sha256.is_empty() {
            report.config_sha256 = plan::settings_sha256(d.env);
        }
        return Ok(Start::Done(Box::new(report)));
    };
    // Forward only, then the promotion gate: both before the live state is read.
    if let Err(err) =
        super::forward::check(d).and_then(|()| super::gate::check(d, &d.commit.id.to_string()))
    {
        record_refusal(d, &stamp, lock.is_some(), &err);
        return Err(err);
    }
    let planned = plan_against_live(d, &resolved)?;
    check_planned(d, yes, expected, &stamp, lock.is_some(), &planned)?;
    let Planned {
        live,
        stored_key,
        plan,
        ..
    } = planned;
    report.config_sha256 = plan.desired.config_sha256.clone();
    report.set_plan(&plan);
    report.previous_generation = live.generation;
    report.generation = live.generation;
    Ok(Start::Ready(Box::new(Prepared {
        stamp,
        lock,
        live,
        stored_key,
        plan,
        resolved,
        adopted: false,
        report,
    })))
}

/// A rollout stamps its new targets under their locks before its first other write (its
/// journal lives in the first target's state): the apply then records the adoption.
pub fn adopt_early(d: &Deployment<'_>, p: &mut Prepared) -> Result<()> {
    if !matches!(p.stamp, StampState::Absent) {
        return Ok(());
    }
    require_unchanged(d, &p.stamp, &p.live)?;
    let stamp = Stamp::new(&d.env.name, &d.env.account.value);
    d.target
        .write_stamp(&stamp)
        .map_err(|e| d.target_failure(e))?;
    d.say(&format!("Adopted {} for {}.", d.target.describe(), d.who()));
    p.stamp = StampState::Stamped(stamp);
    p.adopted = true;
    p.report.adopted = true;
    Ok(())
}

/// Show the plan of a prepared deployment (what a confirmation is asked about).
pub fn show(d: &Deployment<'_>, yes: bool, p: &mut Prepared) -> Result<()> {
    p.report.overwrites_drift = show_plan_to_confirm(
        d,
        yes,
        &format!("Deploying {}", heading(d)),
        &describe_live(d, &p.live, &p.stamp),
        &p.live,
        &p.plan,
    )?;
    if !p.plan.is_empty() {
        check_fits(d, &p.plan)?;
    }
    Ok(())
}

/// From the confirmation to the end: lock, journal, apply, health check, and the record; or
/// the health check and record of a run with nothing to change.
pub fn execute(d: &Deployment<'_>, yes: bool, p: Prepared) -> Result<Report> {
    let Prepared {
        stamp,
        lock,
        live,
        stored_key,
        mut plan,
        resolved,
        adopted,
        mut report,
    } = p;
    if plan.is_empty() && live.generation.is_some() {
        return verify_unchanged(d, lock, &stamp, &live, report);
    }

    let adopt = matches!(stamp, StampState::Absent) || adopted;
    let _lock = take_over(d, yes, lock, &stamp, &live, &mut report)?;
    if !plan.desired.secrets.is_empty() && stored_key.is_none() {
        // The generation records hashes under the key that later runs compare with.
        plan.desired = plan::desired(d.env, &resolved, &create_secret_key(d)?);
        report.config_sha256 = plan.desired.config_sha256.clone();
    }
    let mut journal = apply_journal(d, &live, &report, adopt)?;
    // A target that journals atomically with its apply needs no journal before it: until its
    // one transaction commits, nothing happened.
    let atomic = d.target.atomic_bookkeeping();
    if !atomic {
        write_journal(d, &journal)?;
    }
    failpoint::hit("after-journal");
    let applied = write_generation(d, &journal, &plan, atomic);
    let id = match applied {
        Ok(id) => id,
        Err(err) => {
            // The switch is the last step of an apply, so the old generation is live unless the
            // switch itself happened; find out rather than assume.
            let now = d.target.live_generation().ok().flatten();
            if now == live.generation {
                return Err(failed_before_switch(d, &journal, &live, err, &mut report));
            }
            let failed = now.unwrap_or_default();
            journal.next = now;
            report.generation = now;
            roll_back(
                d,
                &mut journal,
                failed,
                &format!("the apply failed: {err}"),
                &mut report,
            )?;
            return Ok(report);
        }
    };
    failpoint::hit("after-switch");
    journal.phase = Phase::Verifying;
    journal.next = Some(id);
    if !atomic {
        write_journal(d, &journal)?;
    }
    report.generation = Some(id);
    d.say(&format!("Generation {id} is live."));
    failpoint::hit("after-journal-verifying");

    if let Some(why) = verify_new(d, id, &d.commit.id.to_string(), "deployment", &mut report) {
        failpoint::hit("before-rollback");
        roll_back(d, &mut journal, id, &why, &mut report)?;
        return Ok(report);
    }
    record_applied(d, &journal, id, atomic, &mut report)?;
    Ok(report)
}

/// Resolve what an interrupted run left on this target (its own journal), as a deployment
/// does before it plans; what was found is said on stderr.
pub fn settle_interrupted(d: &Deployment<'_>) -> Result<()> {
    let mut report = Report::new(d, "applied", String::new());
    resolve_interrupted(d, &mut report)?;
    Ok(())
}

/// A rollout's undo of this target: make `before` (what was live before the rollout; nothing
/// for a target it deployed first) live again, health-check it, and record a rollback with
/// `why`. Journalled like `deploy rollback`, so a crash half-way is finished by the next run.
pub fn restore(d: &Deployment<'_>, before: Option<GenerationId>, why: &str) -> Result<Report> {
    let mut report = Report::new(d, "unchanged", plan::settings_sha256(d.env));
    report.action = "rollback";
    let current = d
        .target
        .live_generation()
        .map_err(|e| d.target_failure(e))?;
    report.previous_generation = current;
    report.generation = current;
    let Some(failed) = current.filter(|c| Some(*c) != before) else {
        return Ok(report);
    };
    let _lock = d.lock()?;
    let mut journal = Journal {
        version: JOURNAL_VERSION,
        action: "rollback".into(),
        phase: Phase::RollingBack,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        commit: generation_commit(d, before),
        previous: before,
        next: Some(failed),
        newest: newest_generation(d)?,
        holder: Holder::this_process(&d.env.name),
        log_seq: Some(log::last_seq(&*d.target).map_err(|e| log_failure(d, e))?),
        config_sha256: plan::settings_sha256(d.env),
        changes: Changes::default(),
        plan_sha256: None,
        adopted: false,
    };
    roll_back(d, &mut journal, failed, why, &mut report)?;
    Ok(report)
}

/// What the live state read says before the plan is shown: a stamped target that holds none of
/// what it was given (refused under `--yes` for a protected environment), and, with `--plan`,
/// whether the saved plan is still exactly this one. A refusal is recorded.
fn check_planned(
    d: &Deployment<'_>,
    yes: bool,
    expected: Option<&SavedPlan>,
    stamp: &StampState,
    holding_lock: bool,
    planned: &Planned,
) -> Result<()> {
    let Planned {
        live,
        stored_key,
        key,
        plan,
    } = planned;
    if let Some(f) = super::adopt::vanished(d, live)? {
        // A protected environment writes everything again only after the name is typed.
        if d.env.protected && yes {
            let err = anyhow::Error::from(f);
            record_refusal(d, stamp, holding_lock, &err);
            return Err(err);
        }
        d.warn(&format!(
            "{}\nhint: {}",
            f.message,
            f.hint.unwrap_or_default()
        ));
    }
    if let Some(saved) = expected
        && let Err(err) = check_adoption(d, saved, stamp)
            .and_then(|()| matches_saved(d, saved, live, plan, stored_key.is_some(), key))
    {
        record_refusal(d, stamp, holding_lock, &err);
        return Err(err);
    }
    Ok(())
}

/// The target's first secret key, created under the lock.
fn create_secret_key(d: &Deployment<'_>) -> Result<Vec<u8>> {
    d.target
        .create_secret_key()
        .map_err(|e| d.target_failure(e))
}

/// The journal of an apply about to replace `live` (written before anything else).
fn apply_journal(d: &Deployment<'_>, live: &Live, report: &Report, adopt: bool) -> Result<Journal> {
    Ok(Journal {
        version: JOURNAL_VERSION,
        action: "apply".into(),
        phase: Phase::Switching,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        commit: d.commit.id.to_string(),
        previous: live.generation,
        next: None,
        newest: newest_generation(d)?,
        holder: Holder::this_process(&d.env.name),
        log_seq: Some(log::last_seq(&*d.target).map_err(|e| log_failure(d, e))?),
        config_sha256: report.config_sha256.clone(),
        changes: report.summary,
        plan_sha256: d.plan_sha256.clone(),
        adopted: adopt,
    })
}

/// Write the new generation and make it live, in one transaction with its journal where the
/// target can (`atomic`), with progress shown while the target takes it.
fn write_generation(
    d: &Deployment<'_>,
    journal: &Journal,
    plan: &Plan,
    atomic: bool,
) -> Result<GenerationId, TargetError> {
    let meta = serde_json::json!({
        "commit": d.commit.id.to_string(),
        "created": crate::target::now_rfc3339(),
        "environment": d.env.name,
        "account": d.env.account.value,
        "operator": operator(),
        "summary": d.commit.summary,
        "config_sha256": plan.desired.config_sha256,
        "secrets": plan.desired.secrets,
    });
    let mut task = d.wait_task(
        format!(
            "{} to take the new generation ({} resources)",
            d.target.describe(),
            plan.desired.files.len()
        ),
        None,
    );
    task.ctrl_c = "Ctrl-C rolls back once it is written".to_owned();
    d.progress.start(task);
    let applied = if atomic {
        let journal_for = |id: GenerationId| {
            let mut j = journal.clone();
            j.phase = Phase::Verifying;
            j.next = Some(id);
            j.to_bytes()
        };
        d.target.apply_journaled(
            &plan.desired.files,
            &plan.desired.private,
            &meta,
            &journal_for,
        )
    } else {
        d.target
            .apply(&plan.desired.files, &plan.desired.private, &meta)
    };
    d.progress.finish();
    applied
}

/// The deployment is live and healthy: its `applied` record (with the journal cleared in the
/// same write where the target can), old generations pruned, and the one line that says so.
fn record_applied(
    d: &Deployment<'_>,
    journal: &Journal,
    id: GenerationId,
    atomic: bool,
    report: &mut Report,
) -> Result<()> {
    failpoint::hit("before-record");
    let mut entry = journal_entry(journal, d, Outcome::Applied, Some(id), None);
    entry.resources = log::Resources::of(&report.changes);
    if atomic {
        let r = log::append_clearing_journal(&*d.target, d.page(entry))
            .map_err(|e| unrecorded(d, id, log_failure(d, e)))?;
        report.notify = r.notify.clone();
        report.log = Some(LogRef {
            seq: r.seq,
            hash: r.hash,
        });
    } else {
        record(d, report, entry).map_err(|e| unrecorded(d, id, e))?;
        failpoint::hit("before-clear-journal");
        clear_journal(d)?;
    }
    failpoint::hit("before-prune");
    prune(d);
    d.say(&format!(
        "{} {} is live at generation {id} (commit {}).",
        d.printer.paint(crate::output::style::OK, "Deployed:"),
        d.who(),
        d.commit.short()
    ));
    Ok(())
}

/// From the plan to the first write: confirmation, the lock (unless recovery already holds
/// it), a re-check under it that the target is what the plan saw, Ctrl-C armed, and, for a
/// target without a stamp, its adoption. Returns the lock, held until the run ends.
fn take_over(
    d: &Deployment<'_>,
    yes: bool,
    lock: Option<Box<dyn LockGuard>>,
    stamp: &StampState,
    live: &Live,
    report: &mut Report,
) -> Result<Box<dyn LockGuard>> {
    let adopt = matches!(stamp, StampState::Absent);
    let what = if adopt {
        "adopt the target and apply this"
    } else {
        "apply these changes"
    };
    d.confirm(yes, what)?;
    let lock = match lock {
        Some(held) => held,
        None => d.lock()?,
    };
    failpoint::hit("after-lock");
    if let Err(err) = require_unchanged(d, stamp, live) {
        record_refusal(d, stamp, true, &err);
        return Err(err);
    }
    d.arm_interrupts();
    failpoint::hit("after-confirm");
    if d.is_interrupted() {
        return Err(
            Failure::error("interrupted before anything was written; nothing changed").into(),
        );
    }
    if adopt {
        d.target
            .write_stamp(&Stamp::new(&d.env.name, &d.env.account.value))
            .map_err(|e| d.target_failure(e))?;
        report.adopted = true;
        d.say(&format!("Adopted {} for {}.", d.target.describe(), d.who()));
        failpoint::hit("after-adopt");
    }
    Ok(lock)
}

/// Nothing to change: the live generation is health-checked under the lock, against the
/// generation the plan saw, and the verification recorded (the promotion gate accepts it).
fn verify_unchanged(
    d: &Deployment<'_>,
    lock: Option<Box<dyn LockGuard>>,
    stamp: &StampState,
    live: &Live,
    mut report: Report,
) -> Result<Report> {
    report.outcome = "unchanged".into();
    d.say(&format!(
        "No changes: generation {} already holds exactly this configuration.",
        live.generation.unwrap_or_default()
    ));
    // The verification is recorded (the promotion gate accepts it), so it runs under the
    // lock against the generation the plan saw.
    let _lock = match lock {
        Some(held) => held,
        None => d.lock()?,
    };
    if let Err(err) = require_unchanged(d, stamp, live) {
        record_refusal(d, stamp, true, &err);
        return Err(err);
    }
    let health = d.health(live.generation, &d.commit.id.to_string(), None);
    let passed = health.as_ref().is_none_or(|h| h.passed);
    let entry = Entry {
        action: log::Action::Verify,
        outcome: if passed {
            Outcome::Unchanged
        } else {
            Outcome::Failed
        },
        reason: health
            .as_ref()
            .filter(|h| !h.passed)
            .map(|h| format!("nothing to change, but {}", h.line())),
        config_sha256: report.config_sha256.clone(),
        ..entry(d, live.generation)
    };
    record(d, &mut report, entry)?;
    if let Some(h) = health {
        d.say(&h.line());
        report.health = Some(h.clone());
        if !passed {
            let mut f = Failure::error(format!(
                "`{}` is unhealthy: generation {} is live and fails its health check (nothing was changed)",
                d.env.name,
                live.generation.unwrap_or_default()
            ));
            for line in &h.output {
                f = f.detail(line.clone());
            }
            return Err(f
                .hint(format!(
                    "the configuration is already live, so the problem is elsewhere; `deploy rollback --target {}` makes an earlier generation live",
                    d.env.name
                ))
                .into());
        }
    }
    Ok(report)
}

/// The apply failed and the previous generation is still live (the switch is its last step):
/// the failure, recorded, as the error to return. A stale plan (a compare of the target's own
/// transaction failed) is a refusal; a change too large for one transaction is an error;
/// anything else failed and left the previous generation live. A target that could not undo
/// its own partial changes (exec) failed, and says which resources are in which state; its
/// journals stay for the next run.
fn failed_before_switch(
    d: &Deployment<'_>,
    journal: &Journal,
    live: &Live,
    err: TargetError,
    report: &mut Report,
) -> anyhow::Error {
    // A generation it may have completed stays out of every later choice.
    discard_unswitched(d, journal);
    let partial = matches!(err, TargetError::Partial(_));
    let (exit, outcome) = match &err {
        TargetError::Refused(_) => (Exit::Refused, Outcome::Refused),
        TargetError::TooLarge(_) | TargetError::Partial(_) => (Exit::Error, Outcome::Failed),
        _ => (Exit::RolledBack, Outcome::Failed),
    };
    let mut f = Failure::from(err);
    f.exit = exit;
    f.message = if partial {
        format!("the apply FAILED half-way: {}", f.message)
    } else {
        format!(
            "{} before the switch, so {} is still live: {}",
            if exit == Exit::Refused {
                "the apply was refused"
            } else {
                "the apply failed"
            },
            live.generation
                .map_or("nothing".to_owned(), |g| format!("generation {g}")),
            f.message
        )
    };
    if partial {
        f = f.hint(format!(
            "fix what stopped the undo (the provider's words are above), then run `deploy --target {}`: it finishes the undo before anything else",
            d.env.name
        ));
    }
    if exit == Exit::Refused {
        f = f.hint(format!(
            "something else wrote to the target after the plan read it; run `deploy --target {}` again to see the new plan",
            d.env.name
        ));
    }
    let entry = journal_entry(
        journal,
        d,
        outcome,
        live.generation,
        Some(f.message.clone()),
    );
    if let Err(e) = record(d, report, entry) {
        d.warn(&format!(
            "the failure could not be recorded in the deployment log: {e}"
        ));
    }
    if !partial {
        let _ = d.target.clear_journal();
    }
    f.into()
}

/// Health-check the generation just made live (into `report.health`); why it must be rolled
/// back, if it must: a failed check or a Ctrl-C before the verdict.
fn verify_new(
    d: &Deployment<'_>,
    id: GenerationId,
    commit: &str,
    what: &str,
    report: &mut Report,
) -> Option<String> {
    let health = d.health(Some(id), commit, None);
    if let Some(h) = &health {
        d.say(&h.line());
    }
    let failure = match &health {
        _ if d.is_interrupted() => {
            report.cancelled = true;
            Some(format!(
                "cancelled by the operator (Ctrl-C) before the health check of generation {id} passed, so the {what} was not verified"
            ))
        }
        Some(h) if !h.passed => Some(h.line()),
        _ => None,
    };
    report.health = health;
    failure
}

/// A saved plan applies only to the live state it was computed from, only if its commit still
/// renders to exactly the files it hashed, and only if everything else it claims (what a
/// reviewer read: the changes with their diffs, the summary, `config_sha256`, whether secrets
/// are bound) is what that commit produces against that live state now. The checksum alone
/// binds nothing (anyone can recompute it), so every claim is recomputed here.
fn matches_saved(
    d: &Deployment<'_>,
    saved: &SavedPlan,
    live: &Live,
    plan: &Plan,
    key_stored: bool,
    key: &[u8],
) -> Result<()> {
    check_live(d, saved, live)?;
    check_secrets_bound(d, saved, plan, key_stored)?;
    check_resources(d, saved, plan, key_stored, key)?;
    check_claims(d, saved, plan, key_stored)
}

/// The live state hash must be the plan's (stale otherwise).
fn check_live(d: &Deployment<'_>, saved: &SavedPlan, live: &Live) -> Result<()> {
    let now = saved::live_sha256(live);
    if now != saved.live.sha256 {
        let what = if live.generation != saved.live.generation {
            format!(
                "{} is live now, the plan was computed against {}",
                live.generation
                    .map_or("no generation".to_owned(), |g| format!("generation {g}")),
                saved
                    .live
                    .generation
                    .map_or("no generation".to_owned(), |g| format!("generation {g}"))
            )
        } else {
            "the live files were changed by hand since the plan was made".to_owned()
        };
        return Err(Failure::refused(format!(
            "the saved plan is stale: {what}"
        ))
        .detail(format!("live state hash in the plan: {}", saved.live.sha256))
        .detail(format!("live state hash now:         {now}"))
        .hint(format!(
            "plan again (`deploy plan --target {} --out FILE`), review it, and apply the new plan; nothing was changed",
            d.env.name
        ))
        .into());
    }
    Ok(())
}

/// A plan binds secret values exactly when the target had a key or there are no secrets; a
/// plan claiming otherwise was edited (`false` would let any value through).
fn check_secrets_bound(
    d: &Deployment<'_>,
    saved: &SavedPlan,
    plan: &Plan,
    key_stored: bool,
) -> Result<()> {
    let bound = key_stored || plan.desired.secrets.is_empty();
    if saved.secrets_bound == bound {
        return Ok(());
    }
    let why = if plan.desired.secrets.is_empty() {
        "the configuration has no secrets, so nothing can be unbound"
    } else {
        "the target has a secret key, so a plan made against this live state binds the secrets"
    };
    Err(claims_differ(
        d,
        vec![format!(
            "secrets_bound: the plan says {}, but {why}",
            saved.secrets_bound
        )],
    ))
}

/// The resource files the commit renders must be the ones the plan hashed.
fn check_resources(
    d: &Deployment<'_>,
    saved: &SavedPlan,
    plan: &Plan,
    key_stored: bool,
    key: &[u8],
) -> Result<()> {
    let now = saved::resource_hashes(&plan.desired, key);
    let same = if saved.secrets_bound && key_stored {
        now == saved.resources
    } else {
        // Planned before the target had a secret key: the files without secrets must be the
        // same; those with secrets take the values read now.
        now.len() == saved.resources.len()
            && now.iter().all(|(name, hash)| {
                saved
                    .resources
                    .get(name)
                    .is_some_and(|h| plan.desired.private.contains(name) || h == hash)
            })
    };
    if !same {
        let differ: Vec<&String> = now
            .iter()
            .filter(|(name, hash)| saved.resources.get(*name) != Some(*hash))
            .map(|(name, _)| name)
            .collect();
        if !differ.is_empty() && differ.iter().all(|n| plan.desired.private.contains(*n)) {
            let refs: Vec<&str> = plan
                .desired
                .secrets
                .iter()
                .filter(|s| differ.contains(&&s.resource))
                .map(|s| s.reference.as_str())
                .collect();
            return Err(Failure::refused(format!(
                "a secret's value is not the one the saved plan was made with (the plan binds it by its keyed hash): {}",
                refs.join(", ")
            ))
            .hint(format!(
                "supply the value the plan was reviewed with, or plan again (`deploy plan --target {} --out FILE`); nothing was changed",
                d.env.name
            ))
            .into());
        }
        return Err(Failure::refused(format!(
            "commit {} no longer renders to the files the saved plan hashed (was the plan written by another envlock version?)",
            d.commit.short()
        ))
        .hint(format!(
            "plan again with this envlock (`deploy plan --target {} --out FILE`); nothing was changed",
            d.env.name
        ))
        .into());
    }
    Ok(())
}

/// What a reviewer read in the plan must be what the commit produces against the live state,
/// byte for byte: `config_sha256` (which hashes the secrets under the target's key, so only
/// when they are bound), the summary, and every change with its diff.
fn check_claims(
    d: &Deployment<'_>,
    saved: &SavedPlan,
    plan: &Plan,
    key_stored: bool,
) -> Result<()> {
    let mut differ = Vec::new();
    let comparable = key_stored || plan.desired.secrets.is_empty();
    if comparable && saved.config_sha256 != plan.desired.config_sha256 {
        differ.push(format!(
            "config_sha256: the plan says {}, the commit gives {}",
            saved.config_sha256, plan.desired.config_sha256
        ));
    }
    let summary = Counts::of(plan);
    if saved.summary != summary {
        let text = |c: &Counts| {
            format!(
                "{} to add, {} to change, {} to remove",
                c.add, c.change, c.remove
            )
        };
        differ.push(format!(
            "summary: the plan says {}, the commit gives {}",
            text(&saved.summary),
            text(&summary)
        ));
    }
    differ.extend(changes_differ(
        &saved.changes,
        &saved::reviewed_changes(&plan.changes),
    ));
    if differ.is_empty() {
        return Ok(());
    }
    Err(claims_differ(d, differ))
}

/// The most differing resources a refusal names one by one.
const MAX_DIFFERING: usize = 10;

/// One line per resource whose change the plan shows otherwise than the commit produces it.
fn changes_differ(claimed: &[Change], now: &[Change]) -> Vec<String> {
    if claimed == now {
        return Vec::new();
    }
    let by_name = |cs: &'_ [Change]| -> BTreeMap<String, Change> {
        cs.iter().map(|c| (c.resource.clone(), c.clone())).collect()
    };
    let (claimed_by, now_by) = (by_name(claimed), by_name(now));
    let names: std::collections::BTreeSet<&String> =
        claimed_by.keys().chain(now_by.keys()).collect();
    let mut out: Vec<String> = names
        .into_iter()
        .filter_map(|name| match (claimed_by.get(name), now_by.get(name)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) if a.action != b.action => Some(format!(
                "changes: `{name}`: the plan shows `{}`, the commit gives `{}`",
                a.action.sign(),
                b.action.sign()
            )),
            (Some(_), Some(_)) => Some(format!(
                "changes: `{name}`: the diff in the plan is not the one the commit gives"
            )),
            (Some(_), None) => Some(format!(
                "changes: `{name}` is in the plan, but the commit leaves it as it is"
            )),
            (None, _) => Some(format!(
                "changes: the commit changes `{name}`, which the plan does not show"
            )),
        })
        .collect();
    if out.is_empty() {
        out.push("changes: listed in another order, or one resource more than once".to_owned());
    }
    if out.len() > MAX_DIFFERING {
        let more = out.len() - MAX_DIFFERING;
        out.truncate(MAX_DIFFERING);
        out.push(format!("... and {more} more"));
    }
    out
}

/// The refusal of a plan whose claims are not what its commit produces (exit 3).
fn claims_differ(d: &Deployment<'_>, differ: Vec<String>) -> anyhow::Error {
    let mut f = Failure::refused(format!(
        "the saved plan was edited: what it shows is not what commit {} does to the live state ({} difference{})",
        d.commit.short(),
        differ.len(),
        if differ.len() == 1 { "" } else { "s" }
    ));
    for line in differ {
        f = f.detail(line);
    }
    f.hint(format!(
        "apply only a plan as `deploy plan` wrote it; plan again (`deploy plan --target {} --out FILE`) and review that; nothing was changed",
        d.env.name
    ))
    .into()
}

/// Nothing is written, not even the lock file, until a plan is confirmed; an interrupted
/// deployment is the exception: resolving it needs the lock first. `None`: the resolution was a
/// rollback, which ends this run; otherwise the lock if it was taken.
#[allow(clippy::type_complexity)]
fn resolve_interrupted(
    d: &Deployment<'_>,
    report: &mut Report,
) -> Result<Option<Option<Box<dyn LockGuard>>>> {
    if d.target
        .read_journal()
        .map_err(|e| d.target_failure(e))?
        .is_none()
    {
        // Without a journal nobody was writing the log, so an incomplete last record is
        // damage for a person to look at, not something to repair silently.
        require_intact_log(d)?;
        log::last_seq(&*d.target).map_err(|e| log_failure(d, e))?;
        return Ok(Some(None));
    }
    let lock = d.lock()?;
    // Recovery appends its record: the log must verify first, but for an incomplete last
    // line, which the journal proves was being written (recovery cuts it).
    require_intact_log_but_tail(d)?;
    if recover(d, report)? {
        return Ok(None);
    }
    require_intact_log(d)?;
    Ok(Some(Some(lock)))
}

/// A log that does not verify is never appended to: refuse (exit 3) before anything is
/// written, naming its first problem.
fn require_intact_log(d: &Deployment<'_>) -> Result<()> {
    let Some(v) = log::damage(&*d.target).map_err(|e| d.target_failure(e))? else {
        return Ok(());
    };
    Err(damaged_log(d, v))
}

/// [`require_intact_log`], allowing an incomplete last line (the only damage an interrupted
/// append leaves, which recovery cuts).
fn require_intact_log_but_tail(d: &Deployment<'_>) -> Result<()> {
    let Some(v) = log::damage(&*d.target).map_err(|e| d.target_failure(e))? else {
        return Ok(());
    };
    if v.problem
        .as_ref()
        .is_some_and(|p| p.kind == log::Broken::Truncated)
    {
        return Ok(());
    }
    Err(damaged_log(d, v))
}

/// The refusal of a deployment over a log that does not verify.
fn damaged_log(d: &Deployment<'_>, v: log::Verified) -> anyhow::Error {
    let problem = v.problem.expect("damage has a problem");
    Failure::refused(format!(
        "the deployment log of `{}` does not verify, so nothing is appended to it: {}",
        d.env.name, problem.message
    ))
    .detail(format!(
        "log: {}",
        d.target.state_location(crate::target::StateItem::Log)
    ))
    .detail(format!(
        "{} before it; head {}",
        if v.records == 1 {
            "1 record verifies".to_owned()
        } else {
            format!("{} records verify", v.records)
        },
        v.head
    ))
    .hint(format!(
        "nothing was written; keep a copy of the log for the audit and find out who changed it (`deploy log verify --target {}`); once you have, `deploy log seal --target {} --reason \"...\"` records that and lets deployments go on",
        d.env.name, d.env.name
    ))
    .into()
}

/// Under the lock: the target must still be what the confirmed plan was computed from.
fn require_unchanged(d: &Deployment<'_>, stamp: &StampState, live: &Live) -> Result<()> {
    let stale = |what: String| -> anyhow::Error {
        Failure::refused(format!(
            "the target changed while this deployment was being confirmed: {what}"
        ))
        .hint(format!(
            "another deployment ran meanwhile; run `deploy --target {}` again to see the new plan (nothing was written)",
            d.env.name
        ))
        .into()
    };
    let stamp_now = d.target.stamp().map_err(|e| d.target_failure(e))?;
    if stamp_now != *stamp {
        return Err(stale("its stamp is not the one checked".into()));
    }
    if d.target
        .read_journal()
        .map_err(|e| d.target_failure(e))?
        .is_some()
    {
        return Err(stale("an interrupted deployment left a journal".into()));
    }
    // Generations are immutable, so the live generation's id stands for its content; a hand
    // edit made meanwhile is replaced by the new generation like any other drift.
    let now = d
        .target
        .live_generation()
        .map_err(|e| d.target_failure(e))?;
    if now != live.generation {
        return Err(stale(format!(
            "generation {} is live now, the plan was for {}",
            now.map_or("none".into(), |g| g.to_string()),
            live.generation.map_or("none".into(), |g| g.to_string())
        )));
    }
    Ok(())
}

/// Switch back from `failed` to `journal.previous`, health-check it once, and finish.
fn roll_back(
    d: &Deployment<'_>,
    journal: &mut Journal,
    failed: GenerationId,
    why: &str,
    report: &mut Report,
) -> Result<()> {
    journal.phase = Phase::RollingBack;
    journal.next = Some(failed);
    write_journal(d, journal)?;
    let previous = journal.previous;
    d.say(&format!(
        "Rolling back: {why}; making {} live again.",
        previous.map_or("nothing".to_owned(), |p| format!("generation {p}"))
    ));
    failpoint::hit("rollback-before-switch");
    // An apply's automatic rollback restores exactly what it replaced; a failed `deploy
    // rollback` makes the generation it replaced live again.
    let switched = match (journal.action == "rollback", previous) {
        (false, _) => d.target.undo_apply(failed, previous),
        (true, Some(p)) => d.target.activate(p),
        (true, None) => d.target.deactivate(),
    };
    if let Err(err) = switched {
        // Keep the journal: the next run tries again. Never claim a rollback that did not happen.
        return Err(Failure::error(format!(
            "the rollback of `{}` FAILED: generation {failed} ({why}) may still be live: {err}",
            d.env.name
        ))
        .hint(format!(
            "run `deploy status --target {}`, then `deploy rollback --target {}`",
            d.env.name, d.env.name
        ))
        .into());
    }
    failpoint::hit("rollback-after-switch");
    if let Err(e) = d.target.mark_failed(failed, why) {
        d.warn(&format!(
            "could not mark generation {failed} as failed: {e}"
        ));
    }
    let commit = generation_commit(d, previous);
    // After a Ctrl-C the operator wants out: the generation made live again is not checked
    // (the check would be cancelled at once anyway), and the report says so.
    report.rollback_health = if previous.is_some() && !d.is_interrupted() {
        d.health(previous, &commit, Some(1))
    } else {
        None
    };
    if let Some(h) = &report.rollback_health {
        d.say(&format!("After the rollback: {}", h.line()));
    } else if let (Some(p), true) = (previous, d.is_interrupted()) {
        d.say(&format!(
            "Generation {p} is live again; not health-checked after the cancel."
        ));
    }
    let mut reason = why.to_owned();
    if let Some(h) = report.rollback_health.as_ref().filter(|h| !h.passed) {
        reason.push_str(&format!("; after the rollback: {}", h.line()));
    }
    let entry = journal_entry(journal, d, Outcome::RolledBack, previous, Some(reason));
    if let Err(e) = record(d, report, entry) {
        d.warn(&format!(
            "the rollback could not be recorded in the deployment log: {e}"
        ));
    }
    clear_journal(d)?;
    report.ok = false;
    report.outcome = "rolled-back".into();
    report.reason = Some(why.to_owned());
    report.generation = previous;
    Ok(())
}

/// A log entry for this run's environment and commit; callers set the action and outcome.
fn entry(d: &Deployment<'_>, generation: Option<GenerationId>) -> Entry {
    Entry {
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        target: d.target.describe(),
        action: log::Action::Apply,
        outcome: Outcome::Refused,
        commit: d.commit.id.to_string(),
        config_sha256: plan::settings_sha256(d.env),
        operator: Operator::current(),
        changes: Changes::default(),
        generation,
        previous_generation: generation,
        reason: None,
        plan_sha256: d.plan_sha256.clone(),
        notify: None,
        signing: d.signing.clone(),
        resources: None,
    }
}

/// The log entry of the deployment a journal describes.
fn journal_entry(
    journal: &Journal,
    d: &Deployment<'_>,
    outcome: Outcome,
    generation: Option<GenerationId>,
    reason: Option<String>,
) -> Entry {
    Entry {
        environment: journal.environment.clone(),
        account: journal.account.clone(),
        target: d.target.describe(),
        action: if journal.action == "rollback" {
            log::Action::Rollback
        } else if journal.adopted {
            log::Action::Adopt
        } else {
            log::Action::Apply
        },
        outcome,
        commit: journal.commit.clone(),
        config_sha256: journal.config_sha256.clone(),
        operator: Operator::current(),
        changes: journal.changes,
        generation,
        previous_generation: journal.previous,
        reason,
        plan_sha256: journal.plan_sha256.clone(),
        notify: None,
        signing: d.signing.clone(),
        resources: None,
    }
}

/// Append a record to the deployment log (the caller holds the lock).
/// The record tells what became of the `[notify] url` notification, which is delivered first.
fn record(d: &Deployment<'_>, report: &mut Report, mut entry: Entry) -> Result<()> {
    if entry.resources.is_none() && entry.changes != Changes::default() {
        entry.resources = log::Resources::of(&report.changes);
    }
    let r = log::append(&*d.target, d.page(entry)).map_err(|e| {
        let io = matches!(e, AppendError::Target(TargetError::Io { .. }));
        let err = log_failure(d, e);
        if io {
            err.context(format!(
                "this run's record could not be written to the deployment log of `{}`",
                d.env.name
            ))
        } else {
            err
        }
    })?;
    report.notify = r.notify.clone();
    report.log = Some(LogRef {
        seq: r.seq,
        hash: r.hash,
    });
    Ok(())
}

fn log_failure(d: &Deployment<'_>, err: AppendError) -> anyhow::Error {
    match err {
        AppendError::Target(e) => d.target_failure(e),
        other => Failure::error(format!(
            "cannot append to the deployment log of `{}`: {other}",
            d.env.name
        ))
        .detail(format!(
            "log: {}",
            d.target.state_location(crate::target::StateItem::Log)
        ))
        .hint(format!(
            "`deploy log verify --target {}` shows what is wrong; nothing was changed",
            d.env.name
        ))
        .into(),
    }
}

/// A deployment that is live and healthy but could not be recorded: the journal stays, so the
/// next run verifies it again and records it.
fn unrecorded(d: &Deployment<'_>, id: GenerationId, err: anyhow::Error) -> anyhow::Error {
    let mut f = Failure::error(format!(
        "generation {id} of `{}` is live and passed its health check, but the deployment log could not be written: {err:#}",
        d.env.name
    ));
    f = f.hint(format!(
        "fix the cause, then run `deploy --target {}` again: it finds the unfinished deployment and records it",
        d.env.name
    ));
    f.into()
}

/// Record a safety refusal in the log of a target proven to be this environment's (its stamp
/// and identity passed). Best effort: without the lock (another deployment holds it) or on an
/// I/O error, the refusal is only reported.
pub(super) fn record_refusal(
    d: &Deployment<'_>,
    stamp: &StampState,
    holding_lock: bool,
    err: &anyhow::Error,
) {
    record_refusal_as(d, stamp, holding_lock, err, log::Action::Apply);
}

/// [`record_refusal`] of an attempt of `action`.
fn record_refusal_as(
    d: &Deployment<'_>,
    stamp: &StampState,
    holding_lock: bool,
    err: &anyhow::Error,
    action: log::Action,
) {
    if !matches!(stamp, StampState::Stamped(_)) {
        return;
    }
    let _lock = if holding_lock {
        None
    } else {
        match d.lock() {
            Ok(l) => Some(l),
            Err(_) => return,
        }
    };
    let live = d.target.live_generation().ok().flatten();
    let entry = Entry {
        action,
        reason: Some(format!("{err:#}")),
        ..entry(d, live)
    };
    // Only its `log` is set, and it is not shown.
    let mut scratch = Report::new(d, "refused", String::new());
    if let Err(e) = record(d, &mut scratch, entry) {
        d.warn(&format!(
            "the refusal could not be recorded in the deployment log: {e:#}"
        ));
    }
}

fn write_journal(d: &Deployment<'_>, journal: &Journal) -> Result<()> {
    d.target
        .write_journal(&journal.to_bytes())
        .map_err(|e| d.target_failure(e))
}

fn clear_journal(d: &Deployment<'_>) -> Result<()> {
    d.target.clear_journal().map_err(|e| d.target_failure(e))
}

/// Delete old generations and leftovers; a failure here only warrants a warning.
fn prune(d: &Deployment<'_>) {
    if let Err(e) = d.target.prune(keep(d)) {
        d.warn(&format!("could not remove old generations: {e}"));
    }
}

/// Delete the generations an interrupted or failed apply wrote but never made live (newer than
/// the newest one before it); returns their ids. A failure here is only a warning.
fn discard_unswitched(d: &Deployment<'_>, journal: &Journal) -> Vec<GenerationId> {
    let mut done = Vec::new();
    let gens = match d.target.generations() {
        Ok(gens) => gens,
        Err(_) => return done,
    };
    for g in gens
        .iter()
        .filter(|g| !g.live && journal.newest.is_none_or(|n| g.id > n))
    {
        match d.target.discard(g.id) {
            Ok(()) => done.push(g.id),
            Err(e) => d.warn(&format!(
                "could not delete generation {}, which was never live: {e}",
                g.id
            )),
        }
    }
    done
}

/// Resolve a deployment that an earlier run left unfinished (see [`super::journal`]).
/// Returns true when the resolution was a rollback, which ends this run (exit 4).
fn recover(d: &Deployment<'_>, report: &mut Report) -> Result<bool> {
    let Some(mut journal) = own_journal(d)? else {
        return Ok(false);
    };
    let found = format!("Found an interrupted {}", journal.describe());
    // Half-done work inside the target itself (an exec target's steps) is undone first.
    if let Some(done) = d.target.settle().map_err(|e| d.target_failure(e))? {
        let note = format!("{found}: {done}.");
        d.say(&note);
        report.recovered.push(note);
    }
    let live = d.target.live().map_err(|e| d.target_failure(e))?.generation;
    if recorded_before_dying(d, &journal, &found, report)? {
        return Ok(false);
    }
    let interrupted_by = format!(
        "interrupted run of {}@{} (pid {}), resolved by the next run",
        journal.holder.user, journal.holder.host, journal.holder.pid
    );
    let mut phase = journal.phase;
    if phase == Phase::Switching && live != journal.previous {
        // It died between the switch and the journal update: the new generation is live.
        journal.next = live;
        phase = Phase::Verifying;
    }
    match phase {
        Phase::Switching => {
            resolve_before_switch(d, &journal, live, &found, &interrupted_by, report)?;
            Ok(false)
        }
        Phase::Verifying if live == journal.next && live.is_some() => {
            resolve_unverified(d, &mut journal, &found, &interrupted_by, report)
        }
        Phase::Verifying => {
            let note = format!("{found}: {} is live; nothing to resolve.", gen_name(live));
            d.say(&note);
            report.recovered.push(note);
            let entry = journal_entry(
                &journal,
                d,
                Outcome::Failed,
                live,
                Some(format!(
                    "{interrupted_by}: {} was live instead of the generation it made",
                    gen_name(live)
                )),
            );
            record(d, report, entry)?;
            clear_journal(d)?;
            Ok(false)
        }
        Phase::RollingBack => {
            let failed = journal.next.unwrap_or_default();
            let note = format!(
                "{found}: it was rolling back from generation {failed}; finishing the rollback."
            );
            d.say(&note);
            report.recovered.push(note);
            report.previous_generation = journal.next;
            roll_back(
                d,
                &mut journal,
                failed,
                &format!("interrupted deployment: generation {failed} had failed"),
                report,
            )?;
            Ok(true)
        }
    }
}

/// The journal an interrupted run left, if any: readable, and this environment's.
fn own_journal(d: &Deployment<'_>) -> Result<Option<Journal>> {
    let Some(bytes) = d.target.read_journal().map_err(|e| d.target_failure(e))? else {
        return Ok(None);
    };
    let journal_path = d.target.state_location(crate::target::StateItem::Journal);
    let journal = Journal::from_bytes(&bytes).map_err(|e| {
        Failure::error(format!(
            "an interrupted deployment left a journal that cannot be read: {e}"
        ))
        .detail(format!("journal: {journal_path}"))
        .hint("inspect the target with `deploy status`; remove the journal only once you know which generation should be live")
    })?;
    if journal.environment != d.env.name || journal.account != d.env.account.value {
        return Err(Failure::refused(format!(
            "the target's journal belongs to `{}` (account {}), not to {}",
            journal.environment,
            journal.account,
            d.who()
        ))
        .detail(format!("journal: {journal_path}"))
        .into());
    }
    Ok(Some(journal))
}

/// Whether the interrupted run had already recorded its outcome (a log record after the
/// journal's `log_seq`), so only its clean-up was left, now done. An incomplete last log line
/// is cut first: the journal proves a deployment was in flight, so that line is its record,
/// never acknowledged to anyone.
fn recorded_before_dying(
    d: &Deployment<'_>,
    journal: &Journal,
    found: &str,
    report: &mut Report,
) -> Result<bool> {
    let cut = log::cut_incomplete_tail(&*d.target).map_err(|e| d.target_failure(e))?;
    if cut > 0 {
        let note = format!(
            "{found}: it died while writing its log record; removed the {cut} bytes it had written."
        );
        d.say(&note);
        report.recovered.push(note);
    }
    let last = log::last_seq(&*d.target).map_err(|e| log_failure(d, e))?;
    if journal.log_seq.is_some_and(|seq| last > seq) {
        let note = format!(
            "{found}: it had finished and recorded its outcome (log record {last}); only its clean-up was left."
        );
        d.say(&note);
        report.recovered.push(note);
        clear_journal(d)?;
        prune(d);
        return Ok(true);
    }
    Ok(false)
}

/// It stopped before switching: the previous generation stayed live and nothing changed.
fn resolve_before_switch(
    d: &Deployment<'_>,
    journal: &Journal,
    live: Option<GenerationId>,
    found: &str,
    interrupted_by: &str,
    report: &mut Report,
) -> Result<()> {
    // A generation it wrote completely but never made live would otherwise look like
    // one that was live once: a rollback could pick it, and pruning could keep it
    // instead of one that really was.
    let unswitched = discard_unswitched(d, journal);
    let note = format!(
        "{found}: it stopped before switching, so {} stayed live and nothing changed{}.",
        gen_name(live),
        if unswitched.is_empty() {
            String::new()
        } else {
            format!(
                " (deleted the generation it had written: {})",
                unswitched
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    d.say(&note);
    report.recovered.push(note);
    let entry = journal_entry(
        journal,
        d,
        Outcome::Failed,
        live,
        Some(format!(
            "{interrupted_by}: it stopped before the switch; nothing changed"
        )),
    );
    record(d, report, entry)?;
    prune(d);
    clear_journal(d)?;
    Ok(())
}

/// The new generation was live but never verified: health-check it now; keep it if it passes,
/// roll back if not (`Ok(true)`: exit 4).
fn resolve_unverified(
    d: &Deployment<'_>,
    journal: &mut Journal,
    found: &str,
    interrupted_by: &str,
    report: &mut Report,
) -> Result<bool> {
    let live = journal.next;
    let id = live.unwrap_or_default();
    let health = d.health(live, &journal.commit, None);
    match health {
        Some(h) if !h.passed => {
            let note = format!(
                "{found}: generation {id} was live but never verified, and {}.",
                h.line()
            );
            d.say(&note);
            report.recovered.push(note);
            report.health = Some(h);
            report.generation = live;
            roll_back(
                d,
                journal,
                id,
                &format!("interrupted deployment: generation {id} fails its health check"),
                report,
            )?;
            Ok(true)
        }
        other => {
            let how = match &other {
                Some(h) => format!("it passes its health check now ({})", h.line()),
                None => "no health check is configured".to_owned(),
            };
            let note = format!(
                "{found}: generation {id} was left live and unverified; {how}, so it stays live."
            );
            d.say(&note);
            report.recovered.push(note);
            let entry = journal_entry(
                journal,
                d,
                Outcome::Applied,
                live,
                Some(format!("{interrupted_by}: verified after the interruption")),
            );
            record(d, report, entry)?;
            clear_journal(d)?;
            prune(d);
            Ok(false)
        }
    }
}

/// `generation N`, or `nothing` before the first.
fn gen_name(g: Option<GenerationId>) -> String {
    g.map_or("nothing".to_owned(), |g| format!("generation {g}"))
}

/// Why generation `g` must not be made live again: it failed its health check when it was
/// deployed, or its commit is not on the environment's reviewed `branch` ([`super::reviewed_ref`]).
fn unfit(d: &Deployment<'_>, g: &GenerationInfo) -> Option<String> {
    if let Some(why) = &g.failed {
        return Some(format!(
            "it FAILED its health check when it was deployed ({why})"
        ));
    }
    let reviewed = super::reviewed_ref(d.repo, d.env).ok().flatten()?;
    let Ok(id) = git2::Oid::from_str(&g.commit) else {
        return Some(format!(
            "it does not record its commit, so it cannot be shown to be on `{}`",
            reviewed.short()
        ));
    };
    match d.repo.reachable_from(id, reviewed.rev()) {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "its commit {} is not on `{}`, so it is not reviewed for `{}` (it was never pushed there, or was removed from it since)",
            short(&g.commit),
            reviewed.short(),
            d.env.name
        )),
        Err(_) => Some(format!(
            "its commit {} is not in this clone, so it cannot be shown to be on `{}` (`git fetch` first)",
            short(&g.commit),
            reviewed.short()
        )),
    }
}

fn exit_for_is_refusal(err: &anyhow::Error) -> bool {
    crate::error::exit_for(err) == Exit::Refused
}

/// The generation a rollback makes live: `--to ID` if it is kept and fit ([`unfit`]), else the
/// newest fit one older than the live one (each unfit one skipped is said).
fn choose<'g>(
    d: &Deployment<'_>,
    gens: &'g [GenerationInfo],
    current: &GenerationInfo,
    to: Option<GenerationId>,
) -> Result<&'g GenerationInfo> {
    let kept: Vec<String> = gens.iter().map(|g| g.id.to_string()).collect();
    let hint = format!(
        "`deploy status --target {}` lists the kept generations; to fix forward, deploy a reviewed commit (`deploy --target {}`); nothing was changed",
        d.env.name, d.env.name
    );
    if let Some(id) = to {
        let g = gens.iter().find(|g| g.id == id).ok_or_else(|| {
            Failure::error(format!("generation {id} is not kept on this target"))
                .hint(format!("kept generations: {}", kept.join(", ")))
        })?;
        if let Some(why) = (g.id != current.id).then(|| unfit(d, g)).flatten() {
            return Err(Failure::refused(format!(
                "generation {id} of `{}` may not be made live again: {why}",
                d.env.name
            ))
            .hint(hint)
            .into());
        }
        return Ok(g);
    }
    let mut skipped = Vec::new();
    for g in gens.iter().rev().filter(|g| g.id < current.id) {
        match unfit(d, g) {
            None => return Ok(g),
            Some(why) => {
                d.say(&format!("Skipping generation {}: {why}.", g.id));
                skipped.push(format!("generation {}: {why}", g.id));
            }
        }
    }
    if skipped.is_empty() {
        return Err(Failure::error(format!(
            "no generation older than the live one ({}) is kept; there is nothing to roll back to",
            current.id
        ))
        .hint(format!(
            "kept generations: {}; `--to ID` names one explicitly",
            kept.join(", ")
        ))
        .into());
    }
    // The reasons are in the message itself, so the log record and `--format json` say why.
    Err(Failure::refused(format!(
        "no generation older than the live one ({}) is fit to be made live again ({}); there is nothing to roll back to",
        current.id,
        skipped.join("; ")
    ))
    .hint(hint)
    .into())
}

/// `deploy rollback --target NAME [--to ID]`: make an earlier generation live again.
pub fn rollback(d: &Deployment<'_>, to: Option<GenerationId>, yes: bool) -> Result<Report> {
    let stamp = d.verify_owner()?;
    super::adopt::refuse_unadopted_protected(d, &stamp)?;
    d.check_programs()?;
    d.page_token()?;
    let mut report = Report::new(d, "applied", plan::settings_sha256(d.env));
    let Some(lock) = resolve_interrupted(d, &mut report)? else {
        return Ok(report);
    };
    report.action = "rollback";
    if matches!(stamp, StampState::Absent) {
        return Err(Failure::error(format!(
            "nothing to roll back: {} has never been deployed to",
            d.target.describe()
        ))
        .into());
    }
    let gens = d.target.generations().map_err(|e| d.target_failure(e))?;
    let Some(current) = gens.iter().find(|g| g.live) else {
        return Err(Failure::error(format!(
            "no generation of `{}` is live, so there is nothing to roll back from",
            d.env.name
        ))
        .hint(format!("`deploy --target {}` deploys HEAD", d.env.name))
        .into());
    };
    let wanted = match choose(d, &gens, current, to) {
        Ok(g) => g,
        Err(err) => {
            if exit_for_is_refusal(&err) {
                record_refusal_as(d, &stamp, lock.is_some(), &err, log::Action::Rollback);
            }
            return Err(err);
        }
    };
    report.previous_generation = Some(current.id);
    report.generation = Some(current.id);
    if wanted.id == current.id {
        report.outcome = "unchanged".into();
        d.say(&format!(
            "Generation {} is already live; nothing to do.",
            wanted.id
        ));
        return Ok(report);
    }
    let live = d.target.live().map_err(|e| d.target_failure(e))?;
    let plan = rollback_plan(d, current, wanted, &live)?;
    report.set_plan(&plan);
    let over = show_plan_to_confirm(
        d,
        yes,
        &format!(
            "Rolling back {} from generation {} (commit {}) to generation {} (commit {}, applied {})",
            d.who(),
            current.id,
            short(&current.commit),
            wanted.id,
            short(&wanted.commit),
            wanted.created
        ),
        &describe_live(d, &live, &stamp),
        &live,
        &plan,
    )?;
    report.overwrites_drift = over;
    // Without a terminal, the hint names the rollback itself, with the generation chosen.
    d.ask(
        yes,
        &format!("make generation {} live again", wanted.id),
        d.env.protected,
        &format!(
            "deploy rollback --target {} --to {} --yes",
            d.env.name, wanted.id
        ),
    )?;
    let _lock = match lock {
        Some(held) => held,
        None => d.lock()?,
    };
    if let Err(err) = require_unchanged(d, &stamp, &live) {
        record_refusal(d, &stamp, true, &err);
        return Err(err);
    }
    d.arm_interrupts();
    switch_back(d, current, wanted, &mut report)?;
    Ok(report)
}

/// Under the lock: journal, make `wanted` live, health-check it, and record the rollback (or
/// undo it when the check fails).
fn switch_back(
    d: &Deployment<'_>,
    current: &GenerationInfo,
    wanted: &GenerationInfo,
    report: &mut Report,
) -> Result<()> {
    let mut journal = rollback_journal(d, current, wanted, report)?;
    write_journal(d, &journal)?;
    d.target
        .activate(wanted.id)
        .map_err(|e| d.target_failure(e))?;
    journal.phase = Phase::Verifying;
    write_journal(d, &journal)?;
    report.generation = Some(wanted.id);
    d.say(&format!("Generation {} is live.", wanted.id));
    if let Some(why) = verify_new(d, wanted.id, &wanted.commit, "rollback", report) {
        return roll_back(d, &mut journal, wanted.id, &why, report);
    }
    let entry = journal_entry(&journal, d, Outcome::Applied, Some(wanted.id), None);
    report.config_sha256 = journal.config_sha256.clone();
    record(d, report, entry).map_err(|e| unrecorded(d, wanted.id, e))?;
    clear_journal(d)?;
    d.say(&format!(
        "{} {} is live at generation {} (commit {}).",
        d.printer.paint(crate::output::style::OK, "Rolled back:"),
        d.who(),
        wanted.id,
        short(&wanted.commit)
    ));
    Ok(())
}

/// The plan of making `wanted` live again: its recorded files against what is live now.
fn rollback_plan(
    d: &Deployment<'_>,
    current: &GenerationInfo,
    wanted: &GenerationInfo,
    live: &Live,
) -> Result<Plan> {
    let resources: BTreeMap<String, Vec<u8>> = d
        .target
        .resources(wanted.id)
        .map_err(|e| d.target_failure(e))?;
    let (_, key) = secret_key(d)?;
    let desired = plan::Desired::stored(
        resources,
        SecretUse::from_meta(&wanted.meta),
        &key,
        wanted.config_sha256(),
    );
    Ok(plan::compute(
        desired,
        &live.resources,
        &SecretUse::from_meta(&current.meta),
        &key,
    ))
}

/// The journal of a rollback from `current` to `wanted` (written before the switch).
fn rollback_journal(
    d: &Deployment<'_>,
    current: &GenerationInfo,
    wanted: &GenerationInfo,
    report: &Report,
) -> Result<Journal> {
    Ok(Journal {
        version: JOURNAL_VERSION,
        action: "rollback".into(),
        phase: Phase::Switching,
        environment: d.env.name.clone(),
        account: d.env.account.value.clone(),
        commit: wanted.commit.clone(),
        previous: Some(current.id),
        next: Some(wanted.id),
        newest: newest_generation(d)?,
        holder: Holder::this_process(&d.env.name),
        log_seq: Some(log::last_seq(&*d.target).map_err(|e| log_failure(d, e))?),
        config_sha256: wanted.config_sha256(),
        changes: report.summary,
        plan_sha256: None,
        adopted: false,
    })
}
